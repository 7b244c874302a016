"""The timing policy: pure arithmetic with made-up times, no clock, no sleeping."""

from __future__ import annotations

import itertools
import math

import pytest

from runcomfy_async import PollPolicy
from runcomfy_async._timing import DEFAULT_PRIORS, ModelLatency


def test_first_check_comes_a_lag_fraction_after_the_earliest_completion() -> None:
    policy = PollPolicy()
    due = policy.next_check(now=0.0, submitted=0.0, earliest=60.0)
    assert due == pytest.approx(66.0)


def test_checks_grow_geometrically_with_age() -> None:
    policy = PollPolicy()
    t = policy.next_check(now=0.0, submitted=0.0, earliest=60.0)
    times = [t]
    for _ in range(5):
        t = policy.next_check(now=t, submitted=0.0, earliest=60.0)
        times.append(t)
    ratios = [b / a for a, b in itertools.pairwise(times)]
    assert all(r == pytest.approx(1.1) for r in ratios)


def test_gap_is_capped_at_max_lag() -> None:
    policy = PollPolicy(max_lag=15.0)
    due = policy.next_check(now=1000.0, submitted=0.0, earliest=60.0)
    assert due == pytest.approx(1015.0)


def test_gap_is_never_below_min_interval() -> None:
    policy = PollPolicy(min_interval=0.5)
    due = policy.next_check(now=1.0, submitted=0.0, earliest=None)
    assert due == pytest.approx(1.5)


def test_time_scale_scales_cap_interval_and_backoff() -> None:
    policy = PollPolicy(time_scale=0.01, max_lag=15.0, min_interval=0.5, backoff_initial=1.0)
    assert policy.next_check(now=1000.0, submitted=0.0, earliest=None) == pytest.approx(1000.15)
    assert policy.next_check(now=0.0, submitted=0.0, earliest=None) == pytest.approx(0.005)
    assert policy.backoff(1) == pytest.approx(0.01)


def test_backoff_doubles_and_caps() -> None:
    policy = PollPolicy(backoff_initial=1.0, backoff_max=10.0)
    assert [policy.backoff(n) for n in (1, 2, 3, 4, 5, 50)] == [1, 2, 4, 8, 10, 10]


@pytest.mark.parametrize("done_at", [60.001, 61.0, 75.0, 99.9, 140.0, 149.0])
def test_detection_lag_bound_holds_for_any_completion_time(done_at: float) -> None:
    policy = PollPolicy()
    t = policy.next_check(now=0.0, submitted=0.0, earliest=60.0)
    while t < done_at:
        t = policy.next_check(now=t, submitted=0.0, earliest=60.0)
    lag = t - done_at
    assert lag <= 0.1 * done_at + 1e-9
    assert lag <= 15.0


def test_expected_checks_matches_the_floor_arithmetic() -> None:
    # From 60 s to 200 s at ratio 1.1: 1 + ln(200/60)/ln(1.1) checks at most.
    assert PollPolicy().expected_checks(60, 200) == pytest.approx(
        1 + math.log(200 / 60) / math.log(1.1)
    )


def test_kling_models_have_priors() -> None:
    assert DEFAULT_PRIORS["kling/kling-3.0/standard/image-to-video"] == 60.0
    assert DEFAULT_PRIORS["kling/kling-3.0/pro/text-to-video"] == 60.0


def test_latency_uses_prior_until_learned_then_learned_minimum() -> None:
    model = ModelLatency(prior=60.0, learn_after=20)
    assert model.minimum() == 60.0
    model.observe(100.0)
    model.observe(120.0)
    assert model.minimum() == 60.0  # slower jobs than the prior confirm it, for now
    for i in range(18):
        model.observe(100.0 + i)
    # Learned: the smallest seen less the expected sampling gap (120-100)/(20-1).
    assert model.minimum() == pytest.approx(100.0 - 20.0 / 19.0)


def test_latency_learns_a_lower_minimum_at_once() -> None:
    model = ModelLatency(prior=60.0, learn_after=3)
    moved = model.observe(20.0)
    assert moved
    # One sample says nothing of the spread: half of it, to be safe.
    assert model.minimum() == pytest.approx(10.0)


def test_latency_without_prior_is_unknown_until_first_observation() -> None:
    model = ModelLatency(prior=None, learn_after=3)
    assert model.minimum() is None
    assert model.observe(50.0)
    assert model.minimum() == pytest.approx(25.0)


def test_learned_minimum_converges_on_the_true_minimum() -> None:
    import random

    rng = random.Random(0)
    model = ModelLatency(prior=None, learn_after=3)
    for _ in range(500):
        model.observe(rng.uniform(60.0, 200.0))
    estimate = model.minimum()
    assert estimate is not None
    assert 59.0 <= estimate <= 60.0  # below the true minimum, but barely


def test_few_samples_never_raise_the_minimum_above_a_margin_under_the_fastest() -> None:
    import random

    for seed in range(400):
        rng = random.Random(seed)
        model = ModelLatency(prior=None, learn_after=20)
        samples = [rng.uniform(60.0, 200.0) for _ in range(5)]
        for x in samples:
            model.observe(x)
        estimate = model.minimum()
        assert estimate is not None
        assert estimate <= 0.75 * min(samples)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        PollPolicy(lag_fraction=0)
    with pytest.raises(ValueError):
        PollPolicy(time_scale=-1)
