"""Failed checks, exact in virtual time: backoff at the job's own scale, Retry-After
honoured, a retry keeps its place in line, a down server is spared and its
jobs come forward when it answers again.

Policies here turn the verify probes and the FIFO frontier probes off
(``verify_probes_per_round=0``, ``assume_fifo_queue=False``) so that every
check is one the test plans for."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from vtime import FakeAPI, run_virtual

from runcomfy_async import ClientStateError, RateLimitError, Result, ServerError
from runcomfy_async._limits import Ticket
from runcomfy_async._polling import PollScheduler, Tracked
from runcomfy_async._retry import MAX_RETRY_AFTER
from runcomfy_async._timing import PollPolicy

MODEL = "acme/video"
START = 1000.0  # the virtual loop's clock at start


def policy(**kw: object) -> PollPolicy:
    return PollPolicy(
        priors={MODEL: 60.0},
        verify_probes_per_round=0,
        assume_fifo_queue=False,
        **kw,  # type: ignore[arg-type]
    )


class LoggedAPI(FakeAPI):
    """FakeAPI that logs every check (time, id, outcome) and can fail by time window
    (``outage``: [start, end) in loop time, 503) or by script (``script[id]``: a list
    of exceptions the next checks of ``id`` raise)."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.log: list[tuple[float, str, str]] = []
        self.outage: tuple[float, float] | None = None
        self.script: dict[str, list[Exception]] = {}

    async def check(
        self, request_id: str, *, include_cost: bool = False, ticket: Ticket | None = None
    ) -> Result:
        now = asyncio.get_running_loop().time()
        try:
            if self.outage is not None and self.outage[0] <= now < self.outage[1]:
                self.checks += 1
                raise ServerError("down", status_code=503)
            queued = self.script.get(request_id)
            if queued:
                self.checks += 1
                raise queued.pop(0)
            result = await super().check(request_id, include_cost=include_cost, ticket=ticket)
        except Exception as exc:
            self.log.append((now, request_id, type(exc).__name__))
            raise
        self.log.append((now, request_id, result.status.value))
        return result

    def checks_of(self, request_id: str) -> list[tuple[float, str]]:
        return [(t - START, what) for t, rid, what in self.log if rid == request_id]


class SlowBudgetAPI(LoggedAPI):
    """One request token every ``every`` seconds (the scheduler reserves them one at a time)."""

    def __init__(self, every: float) -> None:
        super().__init__()
        self.every = every
        self.next_token = 0.0

    async def reserve(self) -> Ticket:
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self.next_token)
        self.next_token = at + self.every
        if at > now:
            await asyncio.sleep(at - now)
        return await super().reserve()


# -- the rule, as arithmetic ----------------------------------------------------------


def test_backoff_is_a_share_of_the_regular_interval_at_any_scale() -> None:
    p = PollPolicy(backoff_share=0.25)
    # The same age ratio at two scales: the backoff scales with the job.
    fast = p.backoff(1, age=2.0, minimum=1.0)
    slow = p.backoff(1, age=200.0, minimum=100.0)
    assert fast == pytest.approx(0.25 * 0.2)
    assert slow == pytest.approx(0.25 * 15.0)  # the interval is capped at max_lag
    assert p.backoff(1, age=100.0, minimum=100.0) == pytest.approx(0.25 * 10.0)
    # Ten times the scale, ten times the backoff.
    assert p.backoff(1, age=100.0, minimum=100.0) == pytest.approx(
        10 * p.backoff(1, age=10.0, minimum=10.0)
    )


def test_backoff_never_goes_below_the_server_floor() -> None:
    p = PollPolicy(server_floor=0.05, min_interval_share=0.02)
    assert p.backoff(1, age=0.0, minimum=None) == pytest.approx(0.05)
    assert p.backoff(1, age=0.01, minimum=60.0) == pytest.approx(1.2)  # 2% of the minimum


def test_healthy_backoff_stops_at_the_regular_interval_and_down_doubles_to_the_cap() -> None:
    p = PollPolicy(backoff_share=0.25, backoff_max=60.0)
    healthy = [p.backoff(n, age=100.0, minimum=None) for n in range(1, 8)]
    assert healthy == pytest.approx([2.5, 5.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    down = [p.backoff(n, age=100.0, minimum=None, server_down=True) for n in range(1, 8)]
    assert down == pytest.approx([2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0])


# -- the scheduler ---------------------------------------------------------------------


def test_a_sporadic_failure_costs_the_job_a_quarter_interval() -> None:
    """A 5xx on the check that would have seen the job done: the retry comes
    ``backoff_share`` of the job's regular interval later, nowhere near a
    fixed second."""

    async def main() -> tuple[LoggedAPI, Tracked]:
        api = LoggedAPI()
        sched = PollScheduler(api, policy())
        api.add("j", 70.0, now=START)
        t = sched.track("j", MODEL)
        # First check at 66 (earliest 60 + 10% of 60): not done. Next at 72.6: fail it.
        api.script["j"] = []
        await asyncio.sleep(70.0)
        api.script["j"] = [ServerError("boom", status_code=500)]
        await t.waiter
        await sched.aclose()
        return api, t

    api, t = run_virtual(main)
    checks = api.checks_of("j")
    assert [w for _, w in checks] == ["in_progress", "ServerError", "succeeded"]
    assert checks[0][0] == pytest.approx(66.0)
    assert checks[1][0] == pytest.approx(72.6)
    # Retry: a quarter of the regular interval at age 72.6 (7.26 s).
    assert checks[2][0] == pytest.approx(72.6 + 0.25 * 7.26)
    assert isinstance(t.outcome, Result)


def test_retry_after_on_a_check_is_honoured_and_capped() -> None:
    async def main(retry_after: float) -> LoggedAPI:
        api = LoggedAPI()
        sched = PollScheduler(api, policy(time_scale=0.5))
        api.add("j", 31.0, now=START)
        api.script["j"] = [RateLimitError("slow down", status_code=429, retry_after=retry_after)]
        t = sched.track("j", MODEL)
        await t.waiter
        await sched.aclose()
        return api

    first = 0.5 * 60.0 + 0.1 * 0.5 * 60.0  # 33.0: the prior and the lag, scaled
    api = run_virtual(lambda: main(7.0))
    assert [c[0] for c in api.checks_of("j")] == pytest.approx([first, first + 7.0])
    # An absurd header waits the one cap, in the policy's time scale.
    api = run_virtual(lambda: main(86_400.0))
    assert [c[0] for c in api.checks_of("j")] == pytest.approx(
        [first, first + 0.5 * MAX_RETRY_AFTER]
    )


def test_a_retry_keeps_its_place_in_line_under_a_tight_budget() -> None:
    """Eleven jobs come due together, one token a second. The first one's check
    fails; when its backoff ends it goes before the jobs that came due after it,
    not behind every one of them."""

    async def main() -> SlowBudgetAPI:
        api = SlowBudgetAPI(every=1.0)
        sched = PollScheduler(api, policy())
        jobs = []
        for i in range(11):
            rid = f"j{i:02d}"
            api.add(rid, 500.0, now=START)
            jobs.append(sched.track(rid, MODEL, submitted=START + 0.01 * i))
        api.script["j00"] = [ServerError("boom", status_code=502)]
        await asyncio.sleep(80.0)
        await sched.aclose()
        return api

    api = run_virtual(main)
    order = [(round(t - START, 2), rid, what) for t, rid, what in api.log if t - START < 78]
    # Due at 66.00 (j00) .. 66.10 (j10); tokens at 66, 67, 68, ...
    assert order[0] == (66.0, "j00", "ServerError")
    assert order[1] == (67.0, "j01", "in_progress")
    # j00's backoff (a quarter of 6.6 s) ends at 67.65: next token is its own.
    assert order[2] == (68.0, "j00", "in_progress")
    assert [rid for _, rid, _ in order[3:12]] == [f"j{i:02d}" for i in range(2, 11)]


def test_a_job_failing_alone_is_checked_at_its_regular_pace_at_most() -> None:
    """While the server answers other checks, a job whose checks keep failing
    waits at most its regular interval between tries (never seconds that
    double past its scale), and gives up after max_check_failures."""

    async def main() -> tuple[LoggedAPI, Tracked]:
        api = LoggedAPI()
        sched = PollScheduler(api, policy(max_check_failures=8))
        api.add("bad", 100.0, now=START)
        api.add("good", 1000.0, now=START)
        api.fail_checks["bad"] = 100
        bad = sched.track("bad", MODEL)
        sched.track("good", MODEL, submitted=START + 0.5)
        await bad.waiter
        await sched.aclose()
        return api, bad

    api, bad = run_virtual(main)
    assert isinstance(bad.outcome, ServerError)
    times = [t for t, _ in api.checks_of("bad")]
    assert len(times) == 8
    for before, after in itertools.pairwise(times):
        regular = 0.1 * before  # the job's age at the failed check (submitted at 0)
        assert after - before <= regular + 1e-9
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] == pytest.approx(0.25 * 0.1 * times[0])  # a quarter interval first


def outage_run(
    outage: tuple[float, float] | None, *, jobs: int = 40, max_check_failures: int = 1000
) -> tuple[LoggedAPI, list[Tracked], float]:
    """``jobs`` jobs (60-140 s, staggered), a server down for ``outage`` (relative seconds)."""
    n = jobs

    async def main() -> tuple[LoggedAPI, list[Tracked], float]:
        api = LoggedAPI()
        if outage is not None:
            api.outage = (START + outage[0], START + outage[1])
        sched = PollScheduler(api, policy(max_check_failures=max_check_failures))
        jobs = []
        for i in range(n):
            rid = f"j{i:02d}"
            api.add(rid, 60.0 + 2.0 * i, now=START)
            jobs.append(sched.track(rid, MODEL))
        await asyncio.gather(*(t.waiter for t in jobs))
        await sched.aclose()
        return api, jobs, sched.check_failures

    return run_virtual(main)


def test_a_down_server_is_spared_and_its_jobs_come_forward_when_it_answers() -> None:
    down_from, down_to = 70.0, 400.0
    api, jobs, failures = outage_run((down_from, down_to))
    assert all(isinstance(t.outcome, Result) for t in jobs)
    assert failures > 0
    in_outage = [(t - START, rid) for t, rid, _ in api.log if down_from <= t - START < down_to]
    # Healthy, each job would be checked every 10-15 s (max_lag) across 330 s:
    # over 20 checks a job. Backed off (doubling to backoff_max = 60 s), far fewer;
    # one job (the canary) keeps its regular pace to notice the server is back.
    per_job: dict[str, int] = {}
    for _, rid in in_outage:
        per_job[rid] = per_job.get(rid, 0) + 1
    busiest = sorted(per_job.values(), reverse=True)
    assert busiest[1] <= 11, busiest
    assert len(in_outage) <= 40 * 11 + 30
    # The canary notices the server is back within its regular interval
    # (at most max_lag); every job finished by then is seen within a quarter
    # of its own interval after that (the first backoff, from the recovery).
    first_ok = min(t - START for t, _, what in api.log if t - START >= down_to)
    assert first_ok <= down_to + 15.0 + 1e-9
    for t in jobs:
        assert t.detected_at is not None
        finish = api.jobs[t.request_id].finish - START
        if finish < down_to:
            age = first_ok - 0.0
            assert t.detected_at - START <= first_ok + 0.25 * min(0.1 * age, 15.0) + 1e-6


def test_a_long_outage_fails_no_job_the_canary_included() -> None:
    """Down for 330 s at the default ``max_check_failures`` (20): the backed-off
    jobs fail about ten times each; the canary, at its regular pace, over twenty,
    but those are the server's failures, not its own."""
    api, jobs, _ = outage_run((70.0, 400.0), max_check_failures=20)
    assert all(isinstance(t.outcome, Result) for t in jobs), [t.outcome for t in jobs]
    per_job: dict[str, int] = {}
    for _, rid, what in api.log:
        if what == "ServerError":
            per_job[rid] = per_job.get(rid, 0) + 1
    assert max(per_job.values()) > 20  # the canary did fail that often


def test_a_server_down_for_good_fails_every_job_in_the_end() -> None:
    api, jobs, _ = outage_run((0.0, float("inf")), jobs=5, max_check_failures=6)
    assert all(isinstance(t.outcome, ServerError) for t in jobs)
    assert not any(what == "succeeded" for _, _, what in api.log)


def test_without_the_outage_the_same_jobs_are_seen_within_the_lag_bound() -> None:
    api, jobs, failures = outage_run(None)
    assert failures == 0
    for t in jobs:
        assert isinstance(t.outcome, Result) and t.detected_at is not None
        finish = api.jobs[t.request_id].finish
        assert t.detected_at - finish <= 0.1 * (finish - START) + 1e-6


def test_close_during_a_backoff_fails_the_job_and_leaves_no_timer() -> None:
    async def main() -> tuple[Tracked, PollScheduler]:
        api = LoggedAPI()
        sched = PollScheduler(api, policy())
        api.add("j", 100.0, now=START)
        api.fail_checks["j"] = 1
        t = sched.track("j", MODEL)
        await asyncio.sleep(66.5)  # the first check (at 66) failed; backing off
        assert sched._cooling
        await sched.aclose()
        await asyncio.sleep(30.0)  # a stray timer would fire here
        return t, sched

    t, sched = run_virtual(main)
    assert isinstance(t.outcome, ClientStateError)
    assert not sched._cooling


def test_check_soon_during_a_backoff_wins_over_the_timer() -> None:
    async def main() -> LoggedAPI:
        api = LoggedAPI()
        sched = PollScheduler(api, policy())
        api.add("j", 65.0, now=START)
        api.fail_checks["j"] = 1
        t = sched.track("j", MODEL)
        await asyncio.sleep(66.1)  # failed at 66; the backoff ends at 67.65
        sched.check_soon("j")
        await t.waiter
        await asyncio.sleep(5.0)
        await sched.aclose()
        return api

    api = run_virtual(main)
    assert [(round(t, 2), w) for t, w in api.checks_of("j")] == [
        (66.0, "ServerError"),
        (66.1, "succeeded"),
    ]


def test_not_found_is_confirmed_after_a_scale_free_backoff() -> None:
    async def main() -> tuple[LoggedAPI, Tracked]:
        api = LoggedAPI()
        sched = PollScheduler(api, policy(not_found_confirmations=2))
        api.add("j", 100.0, now=START)
        api.not_found["j"] = 1
        t = sched.track("j", MODEL)
        await asyncio.sleep(80.0)
        await sched.aclose()
        return api, t

    api, _ = run_virtual(main)
    checks = api.checks_of("j")
    assert [w for _, w in checks[:2]] == ["NotFoundError", "in_progress"]
    assert checks[1][0] - checks[0][0] == pytest.approx(0.25 * 6.6)
