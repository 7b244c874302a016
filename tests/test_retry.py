"""The retry policy (full-jitter backoff, Retry-After) and the Retry-After parser."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import attrs
import pytest

from runcomfy_async import RetryPolicy
from runcomfy_async._retry import parse_retry_after

NOW = 1_800_000_000.0  # a fixed "time.time()" for HTTP-date arithmetic


def http_date(seconds_from_now: float) -> str:
    moment = datetime.fromtimestamp(NOW, timezone.utc) + timedelta(seconds=seconds_from_now)
    return format_datetime(moment, usegmt=True)


# -- parse_retry_after ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 0.0), (" 2.5 ", 2.5), ("120", 120.0)],
)
def test_retry_after_in_seconds(header: str, expected: float) -> None:
    assert parse_retry_after(header, now=lambda: NOW) == expected


def test_retry_after_as_http_date_is_seconds_until_then() -> None:
    assert parse_retry_after(http_date(30), now=lambda: NOW) == pytest.approx(30.0)


def test_retry_after_http_date_without_zone_is_utc() -> None:
    moment = datetime.fromtimestamp(NOW + 10, timezone.utc)
    naive = moment.strftime("%a, %d %b %Y %H:%M:%S")  # no "GMT"
    assert parse_retry_after(naive, now=lambda: NOW) == pytest.approx(10.0)


def test_retry_after_http_date_in_the_past_means_now() -> None:
    assert parse_retry_after(http_date(-60), now=lambda: NOW) == 0.0


def test_negative_retry_after_seconds_clamp_to_zero() -> None:
    assert parse_retry_after("-5", now=lambda: NOW) == 0.0


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "soon", "1 minute", "Mon, 99 Foo 2020", "nan", "inf", "-inf", "1e999"],
)
def test_absent_or_garbage_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header, now=lambda: NOW) is None


# -- RetryPolicy ------------------------------------------------------------------------


def test_defaults_retry_safe_calls_several_times() -> None:
    policy = RetryPolicy()
    assert policy.attempts > 1
    assert policy.max_retry_after >= policy.max_delay


@pytest.mark.parametrize("retry_number", range(8))
def test_full_jitter_delay_stays_within_its_cap(retry_number: int) -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=10.0, rng=random.Random(7))
    cap = min(10.0, 0.5 * 2.0**retry_number)
    delays = [policy.delay(retry_number) for _ in range(500)]
    assert all(0.0 <= d <= cap for d in delays)
    # Full jitter spreads over the whole interval, not just near the cap.
    assert min(delays) < 0.1 * cap
    assert max(delays) > 0.9 * cap


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    a = RetryPolicy(rng=random.Random(3))
    b = RetryPolicy(rng=random.Random(3))
    assert [a.delay(n) for n in range(6)] == [b.delay(n) for n in range(6)]


def test_retry_after_replaces_the_drawn_delay() -> None:
    policy = RetryPolicy(max_delay=1.0)
    assert policy.delay(0, retry_after=7.0) == 7.0


def test_retry_after_is_capped_by_max_retry_after() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(0, retry_after=3600.0) == 60.0


def test_negative_retry_after_means_no_wait() -> None:
    assert RetryPolicy().delay(0, retry_after=-3.0) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"initial_delay": -1.0},
        {"multiplier": 0.5},
        {"max_delay": -1.0},
        {"max_retry_after": -1.0},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


async def test_no_wait_policy_does_not_sleep() -> None:
    policy = RetryPolicy.no_wait(attempts=3)
    assert policy.attempts == 3
    await policy.sleep(3600.0)  # returns at once, or the test times out


def test_injected_sleep_is_kept_out_of_repr_and_eq() -> None:
    async def fake_sleep(_: float) -> None:
        return None

    policy = RetryPolicy(sleep=fake_sleep)
    assert "fake_sleep" not in repr(policy)
    assert policy == RetryPolicy()
    assert attrs.evolve(policy, attempts=2).sleep is fake_sleep
