"""The in-flight-cap-bound mode: while jobs wait for a slot, detection lag is
idle slot time, so checks near a job's likely end come tighter.

An exact discrete-event model (no clock): ``cap`` slots, each running one job
at a time; a slot frees when its job is *detected* done, and the next job is
submitted then. Checks follow ``PollPolicy.plan_next`` with a known minimum."""

from __future__ import annotations

import heapq
import random

import pytest

from runcomfy_async import PollPolicy


def durations(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(60.0, 200.0) for _ in range(n)]


def ideal_makespan(jobs: list[float], cap: int) -> float:
    """Makespan with zero detection lag, jobs started in order on ``cap`` slots."""
    free = [0.0] * cap
    for d in jobs:
        heapq.heapreplace(free, free[0] + d)
    return max(free)


def run(
    policy: PollPolicy, jobs: list[float], cap: int, *, tight: bool, likely: float = 200.0
) -> tuple[float, float]:
    """(makespan, checks per job) when slots are refilled at detection."""
    minimum = 60.0
    free = [0.0] * cap
    checks = 0
    end = 0.0
    for i, d in enumerate(jobs):
        submitted = heapq.heappop(free)
        finish = submitted + d
        # Jobs wait for a slot while any job is still unsubmitted after this one.
        waiting = tight and i + cap < len(jobs)
        t = policy.plan_next(
            now=submitted,
            submitted=submitted,
            earliest=submitted + minimum,
            minimum=minimum,
            slots_waiting=waiting,
            likely_end=submitted + likely,
        )
        checks += 1
        while t < finish:
            t = policy.plan_next(
                now=t,
                submitted=submitted,
                earliest=submitted + minimum,
                minimum=minimum,
                slots_waiting=waiting,
                likely_end=submitted + likely,
            )
            checks += 1
        heapq.heappush(free, t)
        end = max(end, t)
    return end, checks / len(jobs)


def test_tight_mode_cuts_makespan_when_the_cap_binds() -> None:
    jobs = durations(200, seed=1)
    ideal = ideal_makespan(jobs, 20)
    policy = PollPolicy()
    normal, normal_checks = run(policy, jobs, 20, tight=False)
    tight, tight_checks = run(policy, jobs, 20, tight=True)
    assert tight < normal
    # The target: makespan within 3% of the ideal for the cap.
    assert tight / ideal <= 1.03, (tight / ideal, normal / ideal)
    assert normal / ideal > 1.03  # what the normal lag fraction would cost
    # ... paid in checks: the tight fraction checks about twice as often.
    assert normal_checks < tight_checks < 2.5 * normal_checks


def test_tight_mode_is_off_when_slots_are_not_waiting() -> None:
    jobs = durations(20, seed=2)
    policy = PollPolicy()
    # As many slots as jobs: nobody waits, the mode never engages.
    assert run(policy, jobs, 20, tight=True) == run(policy, jobs, 20, tight=False)


def test_tight_mode_stops_at_the_likely_end() -> None:
    # Past the likely end, checks return to the normal fraction: a job that
    # outlives its model's likely end costs no more than in normal mode there.
    policy = PollPolicy(slot_lag_fraction=0.02)
    kw = {"submitted": 0.0, "earliest": 60.0, "minimum": 60.0, "slots_waiting": True}
    assert policy.plan_next(now=150.0, likely_end=200.0, **kw) == pytest.approx(153.0)
    assert policy.plan_next(now=200.0, likely_end=200.0, **kw) == pytest.approx(215.0)


def test_the_mode_can_be_switched_off() -> None:
    jobs = durations(100, seed=3)
    off = PollPolicy(slot_lag_fraction=None)
    assert run(off, jobs, 10, tight=True) == run(off, jobs, 10, tight=False)
