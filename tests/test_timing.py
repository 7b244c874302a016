"""The timing policy: pure arithmetic with made-up times, no clock, no sleeping."""

from __future__ import annotations

import itertools
import math

import pytest

from runcomfy_async import PollPolicy
from runcomfy_async._timing import DEFAULT_PRIORS, ModelLatency, spacing_margin


def test_first_check_comes_a_lag_fraction_after_the_earliest_completion() -> None:
    policy = PollPolicy()
    due = policy.plan_next(now=0.0, submitted=0.0, earliest=60.0, minimum=60.0)
    assert due == pytest.approx(66.0)


def test_checks_grow_geometrically_with_age() -> None:
    policy = PollPolicy()
    t = policy.plan_next(now=0.0, submitted=0.0, earliest=60.0, minimum=60.0)
    times = [t]
    for _ in range(5):
        t = policy.plan_next(now=t, submitted=0.0, earliest=60.0, minimum=60.0)
        times.append(t)
    ratios = [b / a for a, b in itertools.pairwise(times)]
    assert all(r == pytest.approx(1.1) for r in ratios)


def test_gap_is_capped_at_max_lag() -> None:
    policy = PollPolicy(max_lag=15.0)
    due = policy.plan_next(now=1000.0, submitted=0.0, earliest=60.0, minimum=60.0)
    assert due == pytest.approx(1015.0)


def test_gap_is_never_below_the_interval_floor_of_the_model() -> None:
    policy = PollPolicy(min_interval_share=0.02, server_floor=0.05)
    # A 60 s model: 2% of its minimum; nothing known: the server floor.
    due = policy.plan_next(now=1.0, submitted=0.0, earliest=None, minimum=60.0)
    assert due == pytest.approx(2.2)
    due = policy.plan_next(now=0.1, submitted=0.0, earliest=None, minimum=None)
    assert due == pytest.approx(0.15)


def test_time_scale_scales_cap_floor_and_backoff() -> None:
    policy = PollPolicy(time_scale=0.01, max_lag=15.0, server_floor=0.5, backoff_max=60.0)
    due = policy.plan_next(now=1000.0, submitted=0.0, earliest=None, minimum=None)
    assert due == pytest.approx(1000.15)
    due = policy.plan_next(now=0.0, submitted=0.0, earliest=None, minimum=None)
    assert due == pytest.approx(0.005)
    # The floor (server_floor) and the outage cap (backoff_max) are seconds: scaled.
    assert policy.backoff(1, age=0.0, minimum=None) == pytest.approx(0.005)
    assert policy.backoff(50, age=1e6, minimum=None, server_down=True) == pytest.approx(0.6)


def test_backoff_doubles_and_caps() -> None:
    # Regular interval at age 40: 4 s; the first backoff a quarter of it.
    policy = PollPolicy(backoff_share=0.25, backoff_max=10.0)
    healthy = [policy.backoff(n, age=40.0, minimum=None) for n in (1, 2, 3, 4, 50)]
    assert healthy == pytest.approx([1, 2, 4, 4, 4])
    down = [policy.backoff(n, age=40.0, minimum=None, server_down=True) for n in (1, 3, 4, 5, 50)]
    assert down == pytest.approx([1, 4, 8, 10, 10])


@pytest.mark.parametrize("done_at", [60.001, 61.0, 75.0, 99.9, 140.0, 149.0])
def test_detection_lag_bound_holds_for_any_completion_time(done_at: float) -> None:
    policy = PollPolicy()
    t = policy.plan_next(now=0.0, submitted=0.0, earliest=60.0, minimum=60.0)
    while t < done_at:
        t = policy.plan_next(now=t, submitted=0.0, earliest=60.0, minimum=60.0)
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
    # Learned (20 samples: too few for a 2% quantile bound): the smallest
    # seen less 3.55 mean spacings of the bottom ten (100, 100, 101 ... 108).
    assert model.minimum() == pytest.approx(100.0 - spacing_margin(9, 0.95) * 8.0 / 9.0)


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


def test_learned_minimum_converges_on_the_low_quantile_from_below() -> None:
    import random

    rng = random.Random(0)
    model = ModelLatency(prior=None, learn_after=3)
    for _ in range(500):
        model.observe(rng.uniform(60.0, 200.0))
    estimate = model.minimum()
    assert estimate is not None
    # The 2% quantile of uniform 60-200 is 62.8: below it, but barely.
    assert 60.0 <= estimate <= 62.8


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


def test_interval_floor_follows_the_model_scale() -> None:
    policy = PollPolicy()
    assert policy.interval_floor(60.0) == pytest.approx(1.2)  # 2% of a 60 s minimum
    assert policy.interval_floor(1.0) == pytest.approx(0.05)  # the server floor binds
    assert policy.interval_floor(None) == pytest.approx(0.05)
    assert PollPolicy(time_scale=0.1).interval_floor(None) == pytest.approx(0.005)


def test_plan_next_checks_a_fast_model_in_tenths_of_a_second() -> None:
    policy = PollPolicy()
    # A 2 s model with a learned minimum of 1 s: first check 0.1 s after it.
    due = policy.plan_next(now=0.0, submitted=0.0, earliest=1.0, minimum=1.0)
    assert due == pytest.approx(1.1)
    due = policy.plan_next(now=due, submitted=0.0, earliest=1.0, minimum=1.0)
    assert due == pytest.approx(1.21)


def test_plan_next_is_the_age_rule_where_floors_do_not_bind() -> None:
    policy = PollPolicy()
    for now in (0.0, 70.0, 130.0, 1000.0):
        base = max(now, 60.0)
        expected = base + min(0.1 * base, 15.0)
        assert policy.plan_next(now=now, submitted=0.0, earliest=60.0, minimum=60.0) == expected


def test_plan_next_is_tighter_while_slots_are_waiting_up_to_the_likely_end() -> None:
    policy = PollPolicy(slot_lag_fraction=0.05)
    kw = {"submitted": 0.0, "earliest": 60.0, "minimum": 60.0}
    assert policy.plan_next(now=100.0, slots_waiting=True, likely_end=200.0, **kw) == (
        pytest.approx(105.0)
    )
    # Past the likely end, back to the normal fraction.
    assert policy.plan_next(now=210.0, slots_waiting=True, likely_end=200.0, **kw) == (
        pytest.approx(225.0)  # 21 s capped at max_lag 15
    )
    assert policy.plan_next(now=100.0, slots_waiting=False, **kw) == pytest.approx(110.0)
    off = PollPolicy(slot_lag_fraction=None)
    assert off.plan_next(now=100.0, slots_waiting=True, **kw) == pytest.approx(110.0)


def test_first_probe_is_a_share_of_the_minimum_or_a_tiny_floor() -> None:
    policy = PollPolicy()
    assert policy.first_probe(60.0) == pytest.approx(6.0)
    assert policy.first_probe(2.0) == pytest.approx(0.2)
    assert policy.first_probe(None) == pytest.approx(0.25)
    assert PollPolicy(time_scale=0.01).first_probe(None) == pytest.approx(0.0025)


def test_probe_count_ramps_up_for_an_unknown_model() -> None:
    policy = PollPolicy(probe_share=25, probes_per_round=32, probe_ramp_rounds=2)
    counts = [policy.probe_count(1000, r, unknown=True) for r in range(14)]
    assert counts == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 32, 32]
    assert policy.probe_count(100, 20, unknown=True) == 4  # one in 25
    assert policy.probe_count(10, 20, unknown=True) == 2  # at least 2
    assert policy.probe_count(1, 20, unknown=True) == 1  # no more than are waiting
    assert policy.probe_count(1000, 0, unknown=False) == policy.verify_probes_per_round
    # Near the prior, verification samples in proportion to the cohort.
    assert policy.probe_count(400, 0, unknown=False, near=True) == 16
    assert policy.probe_count(5000, 0, unknown=False, near=True) == 32
    assert policy.probe_count(10, 0, unknown=False, near=True) == 2
    assert policy.probe_count(1, 0, unknown=False, near=True) == 1
    assert PollPolicy(verify_probes_per_round=0).probe_count(400, 0, unknown=False, near=True) == 0
    flat = PollPolicy(probe_ramp_rounds=0)
    assert flat.probe_count(1000, 0, unknown=True) == 32
    assert policy.probe_count(0, 5, unknown=True) == 0


def test_frontier_interval_scales_with_the_minimum() -> None:
    policy = PollPolicy()
    assert policy.frontier_interval(60.0) == pytest.approx(3.0)  # frontier_share 0.05
    assert policy.frontier_interval(0.1) == pytest.approx(0.05)  # the server floor
    assert PollPolicy(frontier_share=0.1).frontier_interval(60.0) == pytest.approx(6.0)


def test_new_fields_reject_nonsense() -> None:
    for bad in (
        {"low_quantile": 0.0},
        {"low_quantile": 0.6},
        {"quantile_confidence": 1.0},
        {"probe_floor": 0.0},
        {"slot_lag_fraction": 0.0},
        {"probe_first_share": 2.0},
    ):
        with pytest.raises(ValueError):
            PollPolicy(**bad)  # type: ignore[arg-type]


def test_latency_model_carries_the_policy_settings() -> None:
    policy = PollPolicy(time_scale=0.5, learn_after=7, low_quantile=0.05, quantile_confidence=0.9)
    model = policy.latency_model("kling/kling-3.0/pro/text-to-video")
    assert model.prior == pytest.approx(30.0)
    assert (model.learn_after, model.quantile, model.confidence) == (7, 0.05, 0.9)
    assert policy.latency_model("acme/unknown").prior is None


def test_likely_max_is_known_once_learned() -> None:
    model = ModelLatency(prior=60.0, learn_after=3)
    model.observe(100.0)
    model.observe(150.0)
    assert model.likely_max() is None
    model.observe(120.0)
    assert model.likely_max() == 150.0
