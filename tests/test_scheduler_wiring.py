"""The scheduler's wiring of the scale-free policy, on a virtual-time loop.

Queue-order verification (random and LIFO queues), budget-aware spreading and
additive increase, the in-flight-cap mode. Exact, not timed: the loop's clock
jumps to the next timer.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Sequence

import pytest
from test_policy_queue import serve
from vtime import FakeAPI, queue_starts, run_virtual, uniform_durations

from runcomfy_async import PollPolicy, Result
from runcomfy_async._limits import DEFAULT_MAX_RATE, RequestBudget, Ticket
from runcomfy_async._polling import PollScheduler, Tracked

KLING = "kling/kling-3.0/standard/image-to-video"
UNKNOWN = "acme/brand-new-model"


class BudgetedAPI(FakeAPI):
    """The fake server behind a real :class:`RequestBudget`, told of every answer."""

    def __init__(self, budget: RequestBudget, **kw: int) -> None:
        super().__init__(**kw)
        self.budget = budget

    async def reserve(self) -> Ticket:
        await self.budget.acquire()
        self.tickets += 1
        return Ticket()

    async def check(self, request_id: str, **kw: object) -> Result:
        result = await super().check(request_id, **kw)  # type: ignore[arg-type]
        self.budget.on_success()
        return result


def _rel_lags(api: FakeAPI, tracked: Sequence[Tracked]) -> list[float]:
    out = []
    for t in tracked:
        job = api.jobs[t.request_id]
        assert t.detected_at is not None
        out.append((t.detected_at - job.finish) / (job.finish - t.submitted))
    return out


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[94]


def _queued_run(model_id: str, order: str) -> tuple[FakeAPI, list[Tracked], PollScheduler]:
    async def main() -> tuple[FakeAPI, list[Tracked], PollScheduler]:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy())
        now = asyncio.get_running_loop().time()
        durations = uniform_durations(400, 60, 200, seed=5)
        starts = queue_starts(durations, 200, order, now=now, seed=5)
        tracked = []
        for i, d in enumerate(durations):
            api.add(f"j{i}", d, now=now, start=starts[i])
            tracked.append(sched.track(f"j{i}", model_id))
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        return api, tracked, sched

    return run_virtual(main)


@pytest.mark.parametrize("model_id", [KLING, UNKNOWN])
def test_a_fifo_queue_keeps_the_inference_on(model_id: str) -> None:
    api, tracked, sched = _queued_run(model_id, "fifo")
    assert sched.monitor(model_id).fifo
    assert _p95(_rel_lags(api, tracked)) <= 0.10


@pytest.mark.parametrize("model_id", [KLING, UNKNOWN])
@pytest.mark.parametrize("order", ["random", "lifo"])
def test_a_queue_out_of_submit_order_turns_the_inference_off_and_keeps_the_lag_bound(
    model_id: str, order: str
) -> None:
    api, tracked, sched = _queued_run(model_id, order)
    assert not sched.monitor(model_id).fifo
    lags = _rel_lags(api, tracked)
    assert _p95(lags) <= 0.10
    # Costs requests, never lag: every job within the bound (the 15 s cap aside).
    assert max(lags) <= 0.101
    assert api.checks / len(tracked) < 13


def test_turning_fifo_off_says_so_in_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="runcomfy_async"):
        _queued_run(KLING, "lifo")
    assert "queue-order inference is off" in caplog.text


def _budgeted_burst(
    rate: float | None, max_rate: float | None, *, n: int = 400, spread: bool = True
) -> tuple[float, float, float]:
    """(requests per job incl. submit, p95 lag/age, final rate) for ``n`` Kling jobs at once."""

    async def main() -> tuple[float, float, float]:
        budget = RequestBudget(rate, max_rate=max_rate)
        api = BudgetedAPI(budget)
        sched = PollScheduler(api, PollPolicy(), budget=budget)
        if not spread:
            sched._budget = None
        now = asyncio.get_running_loop().time()
        tracked = []
        for i, d in enumerate(uniform_durations(n, 60, 200, seed=5)):
            api.add(f"j{i}", d, now=now)
            tracked.append(sched.track(f"j{i}", KLING))
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        return 1 + api.checks / n, _p95(_rel_lags(api, tracked)), budget.rate

    return run_virtual(main)


def test_a_burst_under_the_default_budget_keeps_the_lag_bound_by_growing_the_rate() -> None:
    # Issue 10: 400 Kling jobs at once under 20 requests/s broke the bound
    # (p95 0.20 of age): ~8 checks a job over ~140 s is ~23/s. Slow start
    # finds the rate the server allows (here: any).
    fixed = _budgeted_burst(20.0, 20.0)
    grown = _budgeted_burst(20.0, None)
    unlimited = _budgeted_burst(None, None)
    assert fixed[1] > 0.15  # a fixed 20/s cannot serve it
    requests, p95, rate = grown
    assert p95 <= 0.10
    # The budget costs no request beyond the scheduler's own (~9.2 here; the
    # additive budget's 8.5 came from checks sent late, p95 at 0.098).
    assert requests <= unlimited[0]
    assert 20.0 < rate <= DEFAULT_MAX_RATE


def test_spreading_moves_checks_ahead_when_the_budget_binds() -> None:
    # Jobs submitted together come due together: 250 jobs of 61-70 s, a fixed
    # 10 requests/s. Their first checks all fall due at 66 s; the budget can
    # send 70 of them between the earliest completion (60 s) and then. Spread
    # ahead (never before 60 s, where no job can be done), fewer are late.
    async def main(spread: bool) -> tuple[float, float]:
        budget = RequestBudget(10.0, max_rate=10.0)
        api = BudgetedAPI(budget)
        sched = PollScheduler(api, PollPolicy(verify_probes_per_round=0), budget=budget)
        if not spread:
            sched._budget = None
        now = asyncio.get_running_loop().time()
        tracked = []
        for i, d in enumerate(uniform_durations(250, 61, 70, seed=3)):
            api.add(f"j{i}", d, now=now)
            tracked.append(sched.track(f"j{i}", KLING))
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        lags = _rel_lags(api, tracked)
        return statistics.mean(lags), 1 + api.checks / len(tracked)

    (spread_lag, spread_cost), (late_lag, late_cost) = (
        run_virtual(lambda: main(True)),
        run_virtual(lambda: main(False)),
    )
    assert spread_lag < late_lag
    assert spread_cost < late_cost + 1.0  # earlier costs at most a request a job


def test_jobs_waiting_for_a_slot_tighten_checks_near_the_likely_end() -> None:
    # While the in-flight cap binds, detection lag is idle slot time: the
    # policy's slot_lag_fraction (5%) replaces lag_fraction (10%).
    async def main(waiting: bool) -> float:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy(), slots_waiting=lambda: waiting)
        # A model seen before (as under a cap, where jobs finish all along):
        # its likely end (the longest duration seen) is known.
        for d in uniform_durations(50, 60, 200, seed=9):
            sched.latency(KLING).observe(d)
        now = asyncio.get_running_loop().time()
        tracked = []
        for i, d in enumerate(uniform_durations(300, 60, 200, seed=8)):
            api.add(f"j{i}", d, now=now)
            tracked.append(sched.track(f"j{i}", KLING))
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        return _p95(_rel_lags(api, tracked))

    tight, loose = run_virtual(lambda: main(True)), run_virtual(lambda: main(False))
    assert tight <= 0.055 < loose


def _capped_run(model_id: str, *, n: int, cap: int, workers: int) -> tuple[FakeAPI, list[Tracked]]:
    """``n`` jobs through an in-flight cap of ``cap`` (a slot refills when its job
    is detected done) on ``workers`` FIFO workers: past the first ``workers``,
    every job queues on the server, for a time the client is never told."""

    async def main() -> tuple[FakeAPI, list[Tracked]]:
        api = FakeAPI(workers=workers)
        pending = list(enumerate(uniform_durations(n, 60, 200, seed=7)))
        sched = PollScheduler(api, PollPolicy(), slots_waiting=lambda: bool(pending))
        loop = asyncio.get_running_loop()
        tracked: list[Tracked] = []
        all_done = loop.create_future()

        def submit() -> None:
            i, d = pending.pop(0)
            api.add(f"j{i}", d, now=loop.time())
            t = sched.track(f"j{i}", model_id)
            tracked.append(t)
            t.on_done = refill

        def refill(_: Tracked) -> None:
            if pending:
                submit()
            elif all(t.done for t in tracked) and not all_done.done():
                all_done.set_result(None)

        for _ in range(cap):
            submit()
        await all_done
        await sched.aclose()
        return api, tracked

    return run_virtual(main)


def test_jobs_queued_behind_the_cap_are_dated_by_the_frontier_search() -> None:
    # Issue 10's scenario 1: past the first 200, each job waits ~25 s on the
    # server before it starts, and the API never says when it starts. Dated
    # from its submit, a job pays ~2 checks before it could be done; the
    # frontier's boundary search dates each start within about a round, and
    # a job confirmed started (by a younger job's sighting) before its first
    # check keeps that dating. Measured: 8.85 requests a job; 10.10 without
    # keeping the dating, 10.5 before the search.
    api, tracked = _capped_run(KLING, n=1000, cap=250, workers=200)
    assert all(isinstance(t.outcome, Result) for t in tracked)
    requests_per_job = 1 + api.checks / len(tracked)
    assert requests_per_job <= 9.5, requests_per_job
    assert _p95(_rel_lags(api, tracked)) <= 0.10


def _staggered_run(
    model_id: str, order: str, *, gap: float
) -> tuple[FakeAPI, list[Tracked], PollScheduler]:
    """400 jobs submitted ``gap`` apart (as a real client's submits are) on 200
    workers serving their queue in ``order``."""

    async def main() -> tuple[FakeAPI, list[Tracked], PollScheduler]:
        api = FakeAPI()
        sched = PollScheduler(api, PollPolicy())
        loop = asyncio.get_running_loop()
        durations = uniform_durations(400, 60, 200, seed=5)
        submits = [loop.time() + i * gap for i in range(len(durations))]
        spans = serve(submits, durations, 200, order, seed=5)
        tracked = []
        for i, d in enumerate(durations):
            await asyncio.sleep(max(0.0, submits[i] - loop.time()))
            api.add(f"j{i}", d, now=loop.time(), start=spans[i][0])
            tracked.append(sched.track(f"j{i}", model_id))
        await asyncio.gather(*(t.waiter for t in tracked))
        await sched.aclose()
        return api, tracked, sched

    return run_virtual(main)


@pytest.mark.parametrize("order", ["random", "lifo"])
def test_the_frontier_search_audits_younger_jobs_so_a_queue_out_of_order_is_caught(
    order: str,
) -> None:
    # The search probes at the boundary, where a random or LIFO queue looks
    # FIFO (the oldest queued job stays queued for minutes) while its marks
    # hold every younger job late. An audit (a younger job probed before the
    # search's older ones) exposes the order. Without it: p95 lag 0.27 / 0.42
    # of age, and the inference never turned off on the random queue.
    api, tracked, sched = _staggered_run(KLING, order, gap=0.02)
    assert not sched.monitor(KLING).fifo
    lags = _rel_lags(api, tracked)
    assert _p95(lags) <= 0.10
    assert max(lags) <= 0.101
