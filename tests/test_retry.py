"""The retry policy (full-jitter backoff, Retry-After) and the Retry-After parser."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import aiohttp
import attrs
import pytest

from runcomfy_async import (
    APIStatusError,
    AuthenticationError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    RateLimitError,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
    TransportError,
)
from runcomfy_async._retry import (
    MAX_RETRY_AFTER,
    RETRYABLE_STATUS,
    CheckDecision,
    Verdict,
    cap_retry_after,
    classify_check,
    classify_download,
    classify_safe,
    classify_submit,
    parse_retry_after,
)

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


# -- the one-screen rules: classify per call kind ------------------------------------


def _server(status: int, retry_after: float | None = None) -> ServerError:
    return ServerError("down", status_code=status, retry_after=retry_after)


@pytest.mark.parametrize(
    ("exc", "verdict"),
    [
        (TransportError("refused", request_sent=False), Verdict.RETRY),
        (RequestTimeoutError("connect timeout", request_sent=False), Verdict.RETRY),
        (TransportError("dropped after sending"), Verdict.UNKNOWN),
        (RequestTimeoutError("read timeout"), Verdict.UNKNOWN),
        (MalformedResponseError("huge", status_code=200), Verdict.UNKNOWN),
        (RateLimitError("slow down", status_code=429), Verdict.RETRY),
        (_server(503, retry_after=5.0), Verdict.RETRY),
        (_server(503), Verdict.UNKNOWN),
        (_server(500), Verdict.UNKNOWN),
        (_server(502, retry_after=5.0), Verdict.UNKNOWN),
        (_server(504), Verdict.UNKNOWN),
        (InvalidRequestError("bad", status_code=422), Verdict.RAISE),
        (AuthenticationError("who", status_code=401), Verdict.RAISE),
    ],
)
def test_a_submit_is_retried_only_when_it_certainly_did_not_land(
    exc: BaseException, verdict: Verdict
) -> None:
    assert classify_submit(exc).verdict is verdict


def test_a_submit_retry_carries_the_servers_capped_retry_after() -> None:
    assert classify_submit(RateLimitError("x", status_code=429, retry_after=7.0)).retry_after == 7.0
    huge = classify_submit(_server(503, retry_after=86_400.0))
    assert huge.retry and huge.retry_after == MAX_RETRY_AFTER


@pytest.mark.parametrize("status", sorted(RETRYABLE_STATUS))
def test_safe_calls_retry_every_retryable_status(status: int) -> None:
    assert classify_safe(APIStatusError("x", status_code=status)).retry


@pytest.mark.parametrize(
    "exc",
    [
        NotFoundError("gone", status_code=404),
        InvalidRequestError("bad", status_code=400),
        AuthenticationError("who", status_code=403),
        ValueError("not ours"),
    ],
)
def test_safe_calls_do_not_retry_final_errors(exc: BaseException) -> None:
    assert classify_safe(exc).verdict is Verdict.RAISE


def test_safe_calls_retry_transport_failures_and_garbled_bodies() -> None:
    assert classify_safe(TransportError("dropped")).retry
    assert classify_safe(MalformedResponseError("cut", status_code=200)).retry


@pytest.mark.parametrize(("status", "retry"), [(503, True), (429, True), (408, True), (404, False)])
def test_downloads_retry_the_same_status_set(status: int, retry: bool) -> None:
    assert classify_download(status).retry is retry


def test_a_download_retry_after_is_capped_once() -> None:
    assert classify_download(503, retry_after=1e9).retry_after == MAX_RETRY_AFTER


def test_downloads_retry_connection_failures_but_not_our_own_bugs() -> None:
    assert classify_download(TimeoutError()).retry
    assert classify_download(ConnectionResetError()).retry
    assert classify_download(aiohttp.ClientPayloadError("cut")).retry
    assert not classify_download(KeyError("x")).retry
    assert not classify_download(OSError(28, "No space left on device")).retry


def test_scheduler_checks_back_off_transient_errors_and_give_up_early_on_4xx() -> None:
    assert classify_check(_server(502))[0] is CheckDecision.BACKOFF
    assert classify_check(TransportError("x"))[0] is CheckDecision.BACKOFF
    assert classify_check(RateLimitError("x", status_code=429, retry_after=3.0)) == (
        CheckDecision.BACKOFF,
        3.0,
    )
    assert classify_check(InvalidRequestError("x", status_code=400))[0] is CheckDecision.FEW_MORE
    assert classify_check(AuthenticationError("x", status_code=401))[0] is CheckDecision.FEW_MORE
    assert classify_check(NotFoundError("x", status_code=404))[0] is CheckDecision.NOT_FOUND


def test_cap_retry_after_bounds_both_ends() -> None:
    assert cap_retry_after(None) is None
    assert cap_retry_after(-3.0) == 0.0
    assert cap_retry_after(1e9) == MAX_RETRY_AFTER
    assert cap_retry_after(30.0, cap=10.0) == 10.0


def test_the_retry_policy_default_cap_is_the_one_cap() -> None:
    assert RetryPolicy().max_retry_after == MAX_RETRY_AFTER
