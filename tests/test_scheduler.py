"""The polling scheduler on a virtual-time loop with an in-memory fake server.

No test here sleeps: the loop's clock jumps to the next timer. Wall-clock speed
is never asserted; request counts and detection lags are, because they are
what the scheduler decides.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

import pytest
from vtime import FakeAPI, run_virtual, uniform_durations

from runcomfy_async import (
    ClientStateError,
    JobCancelledError,
    JobFailedError,
    JobState,
    MalformedResponseError,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    Result,
    ServerError,
)
from runcomfy_async._polling import JobEvent, PollScheduler, Tracked
from runcomfy_async._polling._due import DueQueue
from runcomfy_async._polling._frontier import QueueFrontier
from runcomfy_async._retry import MAX_RETRY_AFTER

KLING = "kling/kling-3.0/standard/image-to-video"
UNKNOWN = "acme/brand-new-model"


def _lags(api: FakeAPI, tracked: Sequence[Tracked]) -> list[tuple[float, float]]:
    """(lag, age at completion) per succeeded job."""
    out = []
    for t in tracked:
        job = api.jobs[t.request_id]
        assert t.detected_at is not None
        out.append((t.detected_at - job.finish, job.finish - t.submitted))
    return out


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[94]


async def _run_cohort(
    model_id: str,
    durations: list[float],
    *,
    policy: PollPolicy | None = None,
    workers: int | None = None,
) -> tuple[FakeAPI, list[Tracked], PollScheduler]:
    api = FakeAPI(workers=workers)
    sched = PollScheduler(api, policy or PollPolicy())
    loop = asyncio.get_running_loop()
    tracked = []
    for i, d in enumerate(durations):
        rid = f"job-{i:05d}"
        api.add(rid, d, now=loop.time())
        tracked.append(sched.track(rid, model_id))
    await asyncio.gather(*(t.waiter for t in tracked))
    await sched.aclose()
    return api, tracked, sched


@pytest.mark.parametrize("model_id", [KLING, UNKNOWN])
def test_requests_per_job_near_the_floor_with_bounded_lag(model_id: str) -> None:
    # The workload: 1,000 jobs, durations uniform in 60-200 s, all
    # submitted at once. Floor ~9.7 requests per job (submit included);
    # target <= 10.7 with p95 detection lag <= 10% of job age.
    durations = uniform_durations(1000, 60, 200, seed=1)
    api, tracked, _ = run_virtual(lambda: _run_cohort(model_id, durations))
    assert all(isinstance(t.outcome, Result) for t in tracked)
    requests_per_job = 1 + api.checks / len(tracked)
    assert requests_per_job <= 10.7, requests_per_job
    lags = _lags(api, tracked)
    assert _p95([lag / age for lag, age in lags]) <= 0.10
    assert max(lag for lag, _ in lags) <= 15.0 + 1e-6


def test_naive_fixed_tick_would_spend_far_more() -> None:
    # Sanity of the comparison the benchmark prints: a 2 s loop costs ~67.
    durations = uniform_durations(1000, 60, 200, seed=1)
    naive = statistics.mean(int(d // 2) + 1 for d in durations) + 1
    api, tracked, _ = run_virtual(lambda: _run_cohort(KLING, durations))
    assert naive > 5 * (1 + api.checks / len(tracked))


def test_lag_cap_holds_for_long_jobs() -> None:
    durations = uniform_durations(200, 300, 1200, seed=2)
    api, tracked, _ = run_virtual(lambda: _run_cohort(KLING, durations))
    assert max(lag for lag, _ in _lags(api, tracked)) <= 15.0 + 1e-6


def test_queued_jobs_are_not_polled_before_they_can_run() -> None:
    # 200 jobs on 20 server workers: most wait in the queue. While a job is
    # seen queued, it cannot finish before a full run from then on.
    durations = uniform_durations(200, 60, 200, seed=3)
    api, tracked, _ = run_virtual(lambda: _run_cohort(KLING, durations, workers=20))
    assert all(isinstance(t.outcome, Result) for t in tracked)
    lags = _lags(api, tracked)
    assert _p95([lag / age for lag, age in lags]) <= 0.10
    # Queue time makes ages long; checks stay at a few per job, not one per tick.
    assert api.checks / len(tracked) < 15


def test_unknown_model_parks_jobs_until_a_probe_succeeds() -> None:
    durations = [100.0] * 50

    async def main() -> tuple[FakeAPI, int]:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy(probes_per_round=5))
        loop = asyncio.get_running_loop()
        tracked = []
        for i, d in enumerate(durations):
            api.add(f"j{i}", d, now=loop.time())
            tracked.append(sched.track(f"j{i}", UNKNOWN))
        await asyncio.sleep(90)  # nothing can be done yet
        checks_before = api.checks
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        return api, checks_before

    api, checks_before = run_virtual(main)
    # Before anything finished only probe rounds ran, at most 2 jobs a round
    # (one in 25 waiting, at least 2; ramped from 1), not 50: geometric rounds
    # from the scale-free first probe (probe_floor) to 90 s.
    first = PollPolicy().first_probe(None)
    rounds = math.log(90 / first) / math.log(1.1) + 1
    assert 0 < checks_before <= 2 * rounds + 2
    assert api.checks < 50 * 10


def test_learning_a_lower_minimum_brings_waiting_jobs_forward() -> None:
    # The prior (60 s) is too high for this deployment: jobs take 10-20 s.
    durations = uniform_durations(300, 10, 20, seed=4)
    api, tracked, sched = run_virtual(lambda: _run_cohort(KLING, durations))
    lags = _lags(api, tracked)
    # The first jobs pay for the wrong prior; the rest are found promptly.
    late = [lag for lag, _ in lags if lag > 15.0]
    assert not late
    assert sched.latency(KLING).minimum() is not None
    assert sched.latency(KLING).minimum() < 20  # type: ignore[operator]


def _lognormal(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [min(400.0, max(30.0, rng.lognormvariate(math.log(110), 0.4))) for _ in range(n)]


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_a_prior_above_the_fast_tail_is_caught_in_time(seed: int) -> None:
    # Lognormal durations (median 110 s): 6-8% of jobs beat Kling's 60 s
    # prior. Two verify probes a round rarely meet one; sampling the cohort
    # near the prior finds one, and every job the lower minimum says may be
    # done is checked at once. Before: p95 lag 0.23 / 0.19 / 0.13 of age.
    durations = _lognormal(400, seed)
    assert sum(d < 60 for d in durations) > 0.05 * len(durations)
    api, tracked, _ = run_virtual(lambda: _run_cohort(KLING, durations))
    assert _p95([lag / age for lag, age in _lags(api, tracked)]) <= 0.10


def test_a_lower_minimum_checks_at_once_the_jobs_it_says_may_be_done() -> None:
    # A prior of 60 s; a verify probe finds one job done at 45 s. The others
    # that finished before then must not wait for a tenth of their age more.
    async def main() -> tuple[FakeAPI, list[Tracked]]:
        api = FakeAPI()
        policy = PollPolicy(verify_probes_per_round=1, verify_near=1.0, learn_after=2)
        sched = PollScheduler(api, policy)
        now = asyncio.get_running_loop().time()
        tracked = []
        for i, d in enumerate([40.0] * 30 + [150.0] * 10):
            api.add(f"j{i}", d, now=now)
            tracked.append(sched.track(f"j{i}", KLING))
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        return api, tracked

    _, tracked = run_virtual(main)
    detected = sorted(t.detected_at - t.submitted for t in tracked[:30])  # type: ignore[operator]
    first = detected[0]  # the probe that found one done
    assert 40.0 <= first < 60.0
    # Every other 40 s job is checked right then, not at first * 1.1 or later.
    assert detected[-1] - first < 0.01, (first, detected[-1])


def test_failed_and_cancelled_and_vanished_jobs_get_their_errors() -> None:
    async def main() -> dict[str, Tracked]:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy())
        now = asyncio.get_running_loop().time()
        outcomes = {"ok": "succeeded", "bad": "failed", "gone": "cancelled", "lost": "vanish"}
        tracked = {}
        for rid, outcome in outcomes.items():
            api.add(rid, 70.0, outcome=outcome, now=now)
            tracked[rid] = sched.track(rid, KLING)
        await asyncio.gather(*(t.waiter for t in tracked.values()))
        await sched.aclose()
        return tracked

    tracked = run_virtual(main)
    assert isinstance(tracked["ok"].outcome, Result)
    failed = tracked["bad"].outcome
    assert isinstance(failed, JobFailedError)
    assert failed.error == {"code": "E", "message": "generation failed"}
    assert isinstance(tracked["gone"].outcome, JobCancelledError)
    assert isinstance(tracked["lost"].outcome, NotFoundError)


def test_a_404_must_be_confirmed_before_the_job_fails() -> None:
    async def main() -> tuple[FakeAPI, Tracked]:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy(not_found_confirmations=2))
        api.add("fresh", 70.0, now=asyncio.get_running_loop().time())
        api.not_found["fresh"] = 1  # one transient 404, then known
        t = sched.track("fresh", KLING)
        await t.waiter
        await sched.aclose()
        return api, t

    _, t = run_virtual(main)
    assert isinstance(t.outcome, Result)


def test_check_faults_back_off_one_job_and_never_stop_the_scheduler() -> None:
    async def main() -> tuple[FakeAPI, dict[str, Tracked], PollScheduler]:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy(max_check_failures=50))
        now = asyncio.get_running_loop().time()
        tracked = {}
        for i in range(20):
            rid = f"j{i}"
            api.add(rid, 80.0, now=now)
            tracked[rid] = sched.track(rid, KLING)
        api.fail_checks["j0"] = 6  # six 502s in a row
        api.malformed.add("j1")  # one garbage body
        await asyncio.gather(*(t.waiter for t in tracked.values()))
        await sched.aclose()
        return api, tracked, sched

    api, tracked, sched = run_virtual(main)
    assert all(isinstance(t.outcome, Result) for t in tracked.values())
    assert sched.check_failures == 7
    # The faulty job was backed off, not hammered: its lag grew, the others' did not.
    lags = {rid: t.detected_at - api.jobs[rid].finish for rid, t in tracked.items()}  # type: ignore[operator]
    assert max(v for k, v in lags.items() if k not in ("j0", "j1")) <= 8.0 + 1e-6


def test_a_job_fails_after_too_many_failed_checks() -> None:
    async def main() -> Tracked:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy(max_check_failures=3))
        api.add("j", 70.0, now=asyncio.get_running_loop().time())
        api.fail_checks["j"] = 100
        t = sched.track("j", KLING)
        await t.waiter
        await sched.aclose()
        return t

    t = run_virtual(main)
    assert isinstance(t.outcome, ServerError)


def test_close_fails_every_pending_job_and_leaves_no_task() -> None:
    async def main() -> tuple[list[Tracked], set[asyncio.Task[object]]]:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy())
        now = asyncio.get_running_loop().time()
        tracked = []
        for i in range(100):
            api.add(f"j{i}", 100.0 + i, now=now)
            tracked.append(sched.track(f"j{i}", KLING))
        await asyncio.sleep(120)  # about a fifth have finished
        await sched.aclose()
        others = asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]
        return tracked, others  # type: ignore[return-value]

    tracked, others = run_virtual(main)
    assert not others
    done = [t for t in tracked if isinstance(t.outcome, Result)]
    cut = [t for t in tracked if isinstance(t.outcome, ClientStateError)]
    assert done and cut
    assert len(done) + len(cut) == 100
    assert "client.track" in str(cut[0].outcome)


def test_track_after_close_is_refused() -> None:
    async def main() -> None:
        sched = PollScheduler(FakeAPI(), PollPolicy())
        await sched.aclose()
        with pytest.raises(ClientStateError):
            sched.track("x", KLING)

    run_virtual(main)


def test_tracking_the_same_id_twice_returns_one_record() -> None:
    async def main() -> None:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy())
        api.add("x", 70.0, now=asyncio.get_running_loop().time())
        assert sched.track("x", KLING) is sched.track("x", KLING)
        await sched.aclose()

    run_virtual(main)


def test_listeners_see_state_changes_with_queue_position() -> None:
    async def main() -> list[JobEvent]:
        api = FakeAPI(workers=1)
        sched = PollScheduler(api, PollPolicy(fetch_queue_positions=True))
        events: list[JobEvent] = []
        sched.add_listener(events.append)
        now = asyncio.get_running_loop().time()
        a = (api.add("a", 70.0, now=now), sched.track("a", KLING))[1]
        b = (api.add("b", 70.0, now=now), sched.track("b", KLING))[1]
        await asyncio.gather(a.waiter, b.waiter)
        await sched.aclose()
        return events

    events = run_virtual(main)
    b_states = [e.state for e in events if e.request_id == "b"]
    assert b_states[0] is JobState.QUEUED
    assert JobState.RUNNING in b_states
    assert b_states[-1] is JobState.SUCCEEDED
    assert any(e.queue_position == 1 for e in events if e.request_id == "b")


def test_a_broken_listener_does_not_break_the_scheduler(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Tracked:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy())

        def broken(_: JobEvent) -> None:
            raise RuntimeError("listener bug")

        sched.add_listener(broken)
        api.add("x", 70.0, now=asyncio.get_running_loop().time())
        t = sched.track("x", KLING)
        await t.waiter
        await sched.aclose()
        return t

    t = run_virtual(main)
    assert isinstance(t.outcome, Result)
    assert "listener failed" in caplog.text


def test_check_soon_checks_a_job_right_away() -> None:
    async def main() -> float:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy(verify_probes_per_round=0, assume_fifo_queue=False))
        loop = asyncio.get_running_loop()
        api.add("x", 5.0, now=loop.time())  # far below the 60 s prior, unprobed
        t = sched.track("x", KLING)
        await asyncio.sleep(10)
        sched.check_soon("x")
        await t.waiter
        assert t.detected_at is not None
        await sched.aclose()
        return t.detected_at - api.jobs["x"].created

    assert run_virtual(main) == pytest.approx(10.0)


def test_malformed_bodies_are_our_error() -> None:
    # The fake's garbage body goes through the real parser.
    from runcomfy_async._models import parse_result

    with pytest.raises(MalformedResponseError):
        parse_result("not an object", "x")


def test_a_listener_never_traps_a_finished_job_on_the_status_route() -> None:
    # With a listener, queued jobs are checked on the status route (it has
    # queue_position); once it says terminal, the result route must follow.
    async def main() -> tuple[FakeAPI, Tracked]:
        api = FakeAPI(workers=1)
        sched = PollScheduler(api, PollPolicy(fetch_queue_positions=True))
        sched.add_listener(lambda _: None)
        now = asyncio.get_running_loop().time()
        api.add("a", 70.0, now=now)
        api.add("b", 1.0, now=now)  # queued behind a, then done before it is seen running
        sched.track("a", KLING)
        t = sched.track("b", KLING)
        await asyncio.wait_for(t.waiter, 1000)
        await sched.aclose()
        return api, t

    api, t = run_virtual(main)
    assert isinstance(t.outcome, Result)
    # Verify rounds (a's prior) and frontier rounds (b queues) cost ~25 status
    # checks over the 84 s; a job trapped on the status route would loop forever.
    assert api.status_checks < 35


def test_a_listener_alone_costs_no_request() -> None:
    # Without a policy asking for queue positions, a listener sees the same
    # states from the result route: no status checks, the same request count.
    async def main(listen: bool) -> tuple[FakeAPI, list[JobEvent]]:
        api = FakeAPI(workers=2)
        sched = PollScheduler(api, PollPolicy())
        events: list[JobEvent] = []
        if listen:
            sched.add_listener(events.append)
        now = asyncio.get_running_loop().time()
        tracked = []
        for i in range(6):
            api.add(f"j{i}", 70.0 + i, now=now)
            tracked.append(sched.track(f"j{i}", KLING))
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        return api, events

    quiet, _ = run_virtual(lambda: main(False))
    watched, events = run_virtual(lambda: main(True))
    assert watched.status_checks == 0
    assert watched.checks == quiet.checks
    assert {e.state for e in events} >= {JobState.QUEUED, JobState.SUCCEEDED}


def test_job_events_can_be_built_outside_a_loop() -> None:
    event = JobEvent("r", "m", JobState.RUNNING)
    assert event.at > 0


def test_an_unseen_model_learns_even_when_results_carry_no_timestamps() -> None:
    # Probed jobs are often done at their first check; with no server
    # timestamps the only bound is "fast". That must still end the probing
    # and free every parked job (it once left them parked forever).
    async def main() -> list[Tracked]:
        api = FakeAPI()
        api.timestamps = False
        sched = PollScheduler(api, PollPolicy())
        now = asyncio.get_running_loop().time()
        tracked = []
        for i in range(400):
            api.add(f"j{i}", 30.0 + i % 7, now=now)
            tracked.append(sched.track(f"j{i}", UNKNOWN))
        await asyncio.wait_for(asyncio.gather(*(t.waiter for t in tracked)), 10_000)
        await sched.aclose()
        return tracked

    tracked = run_virtual(main)
    assert all(isinstance(t.outcome, Result) for t in tracked)


def test_every_check_spends_exactly_one_budget_ticket() -> None:
    async def main() -> FakeAPI:
        api = FakeAPI(workers=4)
        sched = PollScheduler(api, PollPolicy(fetch_queue_positions=True))
        sched.add_listener(lambda event: None)  # queued jobs take the status route
        now = asyncio.get_running_loop().time()
        tracked = []
        for i in range(30):
            api.add(f"j{i}", 70.0, now=now)
            tracked.append(sched.track(f"j{i}", KLING))
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        return api

    api = run_virtual(main)
    assert api.status_checks > 0
    # The dispatcher may hold one ticket it never used when it closes.
    assert api.checks <= api.tickets <= api.checks + 1


class RateLimitedAPI(FakeAPI):
    """Answers the first check of each job with a 429 carrying an absurd Retry-After."""

    def __init__(self, retry_after: float) -> None:
        super().__init__()
        self.retry_after = retry_after
        self.limited: set[str] = set()
        self.check_times: list[float] = []

    async def check(self, request_id: str, **kw: Any) -> Result:
        self.check_times.append(asyncio.get_running_loop().time())
        if request_id not in self.limited:
            self.limited.add(request_id)
            kw["ticket"].spend()
            raise RateLimitError("slow down", status_code=429, retry_after=self.retry_after)
        return await super().check(request_id, **kw)


@pytest.mark.parametrize(("retry_after", "gap"), [(30.0, 30.0), (86_400.0, MAX_RETRY_AFTER)])
def test_a_checks_retry_after_is_honoured_up_to_the_one_cap(retry_after: float, gap: float) -> None:
    async def main() -> RateLimitedAPI:
        api = RateLimitedAPI(retry_after)
        sched = PollScheduler(api, PollPolicy(assume_fifo_queue=False, verify_probes_per_round=0))
        api.add("x", 1.0, now=asyncio.get_running_loop().time())
        t = sched.track("x", KLING)
        await t.waiter
        await sched.aclose()
        return api

    api = run_virtual(main)
    first, second = api.check_times[:2]
    assert second - first == pytest.approx(gap)


# -- the parts: due queue and frontier ------------------------------------------------


def test_the_due_queue_skips_stale_entries_of_rescheduled_and_dropped_jobs() -> None:
    async def main() -> None:
        queue = DueQueue()
        a, b, c = (Tracked(rid, KLING, 0.0) for rid in "abc")
        assert queue.push(a, 5.0) and queue.push(b, 3.0) and not queue.push(c, 4.0)
        queue.push(b, 9.0)  # rescheduled: its entry at 3.0 is stale
        queue.drop(c)  # parked: its entry at 4.0 is stale
        head = queue.peek(lambda t: False)
        assert head is a
        queue.pop()
        assert queue.peek(lambda t: False) is b
        queue.pop()
        assert queue.peek(lambda t: False) is None

    run_virtual(main)


def test_a_frontier_round_searches_for_the_oldest_queued_job_one_probe_at_a_time() -> None:
    async def main() -> None:
        frontier = QueueFrontier()
        jobs = [Tracked(f"j{i}", KLING, 0.0) for i in range(20)]
        for t in jobs:
            frontier.add(t)
        picked, due = frontier.round(0.0, 10.0, 3)
        assert picked == [] and due == 10.0  # the first round is one interval out
        frontier.note_queued(9.0)
        # Round 1 opens with an audit: the youngest job, probed before any older
        # one (on a queue that is not FIFO it runs while older ones still queue).
        picked, due = frontier.round(10.0, 10.0, 3)
        assert picked == [jobs[19]] and due == 20.0
        # One probe in flight at a time: nothing more until it is answered
        # (or for an interval after it went out).
        assert frontier.round(10.5, 10.0, 3) == ([], 20.0)
        # Its answer pops nothing: the older probes that follow must see the truth.
        assert frontier.seen_started(jobs[19]) == []
        # Then the search: no boundary known yet, the oldest job of unknown start.
        picked, _ = frontier.round(10.0, 10.0, 3)
        assert picked == [jobs[0]]
        assert frontier.probing(jobs[0])
        # Started: every older job has too; jump on by the step (1 job a round so far).
        assert frontier.seen_started(jobs[0]) == []
        picked, _ = frontier.round(11.0, 10.0, 3)
        assert picked == [jobs[1]]
        frontier.seen_queued(jobs[1], 11.0)
        # Queued: the oldest job of unknown start is queued, so the boundary is found.
        assert frontier.round(11.5, 10.0, 3) == ([], 20.0)
        assert frontier.queued_at(jobs[7]) == 11.0 and frontier.queued_at(jobs[0]) is None
        # Round 2: the boundary moved 6 jobs (seen at job 7 by the next round's bisection).
        frontier.seen_started(jobs[6])
        picked, _ = frontier.round(20.0, 10.0, 3)
        # From the last boundary (job 1) by the step (1): the oldest left, job 7.
        assert picked == [jobs[7]]
        frontier.seen_started(jobs[7])
        picked, _ = frontier.round(20.5, 10.0, 3)
        assert picked == [jobs[8]]
        frontier.seen_queued(jobs[12], 20.6)  # another check saw job 12 queued: bisect below it
        frontier.seen_started(jobs[8])
        picked, _ = frontier.round(21.0, 10.0, 3)
        assert picked == [jobs[10]]  # halfway between the head (job 9) and job 12
        frontier.seen_queued(jobs[10], 21.0)
        # The search spent its 3 probes: the rest of the round waits.
        assert frontier.round(21.5, 10.0, 3) == ([], 30.0)
        assert frontier.queued_at(jobs[11]) == 21.0 and frontier.queued_at(jobs[9]) == 11.0
        # Round 3 closes round 2's search: the boundary moved from job 1 to job 10.
        picked, _ = frontier.round(30.0, 10.0, 3)
        assert frontier._step == 5.0  # (1 + 9) / 2
        assert picked == [jobs[15]]  # from the last boundary (job 10) by the step (5)
        # Jobs popped by a younger job's start come back with their queued dating.
        # (job 12's own sighting at 20.6 gave way to job 10's at 21.0, which covers it.)
        assert frontier.seen_started(jobs[13]) == [
            (jobs[9], 11.0),
            (jobs[10], 21.0),
            (jobs[11], 21.0),
            (jobs[12], 21.0),
        ]
        frontier.seen_started(jobs[19])
        assert frontier.settled()
        assert frontier.round(40.0, 10.0, 3) == ([], None)

    run_virtual(main)


async def _run_slot_cohort(durations: list[float], *, workers: int | None, waiting: bool) -> int:
    api = FakeAPI(workers=workers)
    sched = PollScheduler(api, PollPolicy(), slots_waiting=lambda: waiting)
    loop = asyncio.get_running_loop()
    tracked = []
    for i, d in enumerate(durations):
        rid = f"job-{i:05d}"
        api.add(rid, d, now=loop.time())
        tracked.append(sched.track(rid, KLING))
    await asyncio.gather(*(t.waiter for t in tracked))
    await sched.aclose()
    return api.checks


def test_slot_mode_stands_down_while_the_server_queues_the_model() -> None:
    # With jobs queued on the server, a slot freed sooner only queues its next
    # job sooner there: tighter checks would cost requests and buy nothing.
    durations = uniform_durations(200, 60, 200, seed=4)

    def checks(workers: int | None, waiting: bool) -> int:
        return run_virtual(lambda: _run_slot_cohort(durations, workers=workers, waiting=waiting))

    # No server queue: the mode engages and pays for its tighter checks.
    assert checks(None, True) > 1.2 * checks(None, False)
    # A server queue (20 workers for 200 jobs): it stays out until the queue drains.
    assert checks(20, True) <= 1.05 * checks(20, False)
