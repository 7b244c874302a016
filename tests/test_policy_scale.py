"""Timing that follows the model's scale: a 2 s model is checked in tenths of a
second, a 2 minute model in seconds, by the same rule.

Pure: check schedules computed with PollPolicy.plan_next / first_probe /
probe_count on made-up times, exact."""

from __future__ import annotations

import itertools
import random

import pytest

from runcomfy_async import PollPolicy


def schedule(policy: PollPolicy, minimum: float, until: float) -> list[float]:
    """Check times of one job submitted at 0, up to ``until``."""
    t = policy.plan_next(now=0.0, submitted=0.0, earliest=minimum, minimum=minimum)
    times = [t]
    while t < until:
        t = policy.plan_next(now=t, submitted=0.0, earliest=minimum, minimum=minimum)
        times.append(t)
    return times


def test_the_schedule_scales_with_the_model() -> None:
    # A 2 s model (minimum 1 s) and a 2 minute one (minimum 60 s): the same
    # number of checks, every time scaled by 60 (no floor binds).
    policy = PollPolicy(max_lag=1e9)
    fast = schedule(policy, 1.0, 2.0)
    slow = schedule(policy, 60.0, 120.0)
    assert len(fast) == len(slow)
    assert slow == pytest.approx([60.0 * t for t in fast])
    gaps = [b - a for a, b in itertools.pairwise(fast)]
    assert min(gaps) >= 0.1 and max(gaps) <= 0.2  # tenths of a second


def test_lag_stays_within_the_fraction_of_age_for_a_fast_model() -> None:
    policy = PollPolicy()
    times = schedule(policy, 1.0, 4.0)
    rng = random.Random(0)
    for _ in range(1000):
        done = rng.uniform(1.0, 4.0)
        seen = next(t for t in times if t >= done)
        assert seen - done <= 0.1 * done + 1e-9


def test_the_server_floor_binds_only_for_very_fast_models() -> None:
    policy = PollPolicy(server_floor=0.05)
    # A 0.1 s model: gaps of 0.01 s would hammer the server; 0.05 s it is.
    t0 = policy.plan_next(now=0.0, submitted=0.0, earliest=0.1, minimum=0.1)
    assert t0 == pytest.approx(0.15)


def probe_search(policy: PollPolicy, durations: list[float]) -> tuple[float, int]:
    """(age at which a probe round first finds a job done, probes spent) for a
    cohort submitted together, of a model with nothing known."""
    n = len(durations)
    age, rounds, spent, pos = policy.first_probe(None), 0, 0, 0
    while True:
        for _ in range(policy.probe_count(n, rounds, unknown=True)):
            d = durations[pos % n]
            pos += 1
            spent += 1
            if d <= age:
                return age, spent
        rounds += 1
        age = policy.plan_next(now=age, submitted=0.0, earliest=None, minimum=None)


@pytest.mark.parametrize(
    ("n", "low", "high", "found_within", "probes_per_job"),
    [
        (400, 1.0, 4.0, 1.10, 0.35),  # an image model: found near its minimum, cheaply
        (400, 60.0, 200.0, 1.10, 2.1),  # a video model: the scale-free search costs more
        (1000, 60.0, 200.0, 1.20, 1.6),
    ],
)
def test_a_probe_search_from_a_tiny_floor_finds_any_scale(
    n: int, low: float, high: float, found_within: float, probes_per_job: float
) -> None:
    rng = random.Random(1)
    durations = [rng.uniform(low, high) for _ in range(n)]
    found, spent = probe_search(PollPolicy(), durations)
    assert low <= found <= found_within * low
    assert spent / n <= probes_per_job


def test_the_ramp_saves_probes_where_nothing_can_be_done_yet() -> None:
    rng = random.Random(1)
    durations = [rng.uniform(60.0, 200.0) for _ in range(1000)]
    _, ramped = probe_search(PollPolicy(probe_ramp_rounds=2), durations)
    _, flat = probe_search(PollPolicy(probe_ramp_rounds=0), durations)
    assert ramped < flat
