"""Every retry decision of the library, on one screen.

The "never pay twice" rules
===========================

A **submit** is a paid, non-idempotent POST, and RunComfy documents no
idempotency key. RunComfy's own clients never retry it and treat any 5xx as
"outcome unknown". We retry a submit only when it *certainly did not land*:

===========================================  ==========================
what happened                                 submit decision
===========================================  ==========================
not sent (refused, DNS; no byte left)         RETRY
429 (rate or concurrency limit)               RETRY (after Retry-After)
503 carrying ``Retry-After``                  RETRY (explicit load shedding)
503 without ``Retry-After``, 500, 502, 504    UNKNOWN (SubmitOutcomeUnknown)
sent, then dropped / timed out / garbled      UNKNOWN
any other error answer (4xx)                  RAISE (nothing was created)
===========================================  ==========================

**Safe calls** (status, result, cancel) and **downloads** (a GET of an output
URL) are retried on transport failures, unreadable bodies and any status in
:data:`RETRYABLE_STATUS`; every other error is final.

**Scheduler checks** are single tries (never retried here as well: a retry
loop inside a check would hold a worker and a place in line for seconds that
mean nothing at the job's scale); the scheduler retries them on its own clock
(``PollPolicy.backoff``: a share of the job's regular check interval, or the
``Retry-After``), and :func:`classify_check` tells it how hard.

Everywhere a server's ``Retry-After`` is honoured, capped at one value,
:data:`MAX_RETRY_AFTER` (``RetryPolicy.max_retry_after`` may lower or raise
it for the calls that use that policy): one absurd header must not stall a
job, or the client, for a day.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import aiohttp
import attrs

from ._errors import (
    APIStatusError,
    AuthenticationError,
    MalformedResponseError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TransportError,
)

__all__ = [
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUS",
    "CheckDecision",
    "Decision",
    "RetryPolicy",
    "Verdict",
    "cap_retry_after",
    "classify_check",
    "classify_download",
    "classify_safe",
    "classify_submit",
    "parse_retry_after",
]

Sleep = Callable[[float], Awaitable[None]]

#: The one set of HTTP statuses worth another try of a safe call or a download.
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

#: The one cap on a server's ``Retry-After``, in seconds.
MAX_RETRY_AFTER = 120.0


class Verdict(enum.Enum):
    """What to do after a failed attempt."""

    RETRY = "retry"  # try again (after the delay hint, if any)
    RAISE = "raise"  # final: raise the error as it is
    UNKNOWN = "unknown"  # submit only: it may have landed; raise SubmitOutcomeUnknown


@attrs.frozen
class Decision:
    """A retry decision: the verdict, and the server's capped ``Retry-After`` if it sent one."""

    verdict: Verdict
    retry_after: float | None = None

    @property
    def retry(self) -> bool:
        """True if another attempt is allowed."""
        return self.verdict is Verdict.RETRY


# What a download may meet on the wire: worth another try.
_DOWNLOAD_TRANSIENT = (
    aiohttp.ClientError,  # includes ClientPayloadError (a body cut short)
    ConnectionError,
    TimeoutError,
    TransportError,
    MalformedResponseError,
)

_RAISE = Decision(Verdict.RAISE)
_UNKNOWN = Decision(Verdict.UNKNOWN)


def cap_retry_after(seconds: float | None, cap: float = MAX_RETRY_AFTER) -> float | None:
    """``seconds`` bounded to ``[0, cap]``; None stays None."""
    if seconds is None:
        return None
    return min(max(seconds, 0.0), cap)


def _hint(exc: BaseException) -> float | None:
    # RateLimitError and ServerError carry the parsed header.
    value = getattr(exc, "retry_after", None)
    return cap_retry_after(float(value)) if isinstance(value, (int, float)) else None


def classify_submit(exc: BaseException) -> Decision:
    """May a submit that failed with ``exc`` be sent again? (See the table above.)"""
    if isinstance(exc, MalformedResponseError):
        return _UNKNOWN  # an answer came (unreadable): a job may exist
    if isinstance(exc, TransportError):
        return _UNKNOWN if exc.request_sent else Decision(Verdict.RETRY)
    if isinstance(exc, RateLimitError):
        return Decision(Verdict.RETRY, _hint(exc))
    if isinstance(exc, ServerError):
        if exc.status_code == 503 and exc.retry_after is not None:
            return Decision(Verdict.RETRY, _hint(exc))
        return _UNKNOWN
    return _RAISE


def classify_safe(exc: BaseException) -> Decision:
    """May a safe call (status, result, cancel) that failed with ``exc`` be retried?"""
    if isinstance(exc, APIStatusError):
        if exc.status_code in RETRYABLE_STATUS:
            return Decision(Verdict.RETRY, _hint(exc))
        return _RAISE
    if isinstance(exc, (TransportError, MalformedResponseError)):
        # A truncated or garbled body on a read is worth another try.
        return Decision(Verdict.RETRY)
    return _RAISE


def classify_download(
    outcome: int | BaseException, *, retry_after: float | None = None
) -> Decision:
    """May a download be retried after an answer with status ``outcome`` (or an exception)?

    An answer other than 200 is retried when its status is in
    :data:`RETRYABLE_STATUS` (after ``retry_after``, the parsed header, capped).
    Connection failures, timeouts and cut bodies are worth another try; any
    other exception (a full disk, a bug) is final.
    """
    if isinstance(outcome, int):
        if outcome in RETRYABLE_STATUS:
            return Decision(Verdict.RETRY, cap_retry_after(retry_after))
        return _RAISE
    if isinstance(outcome, _DOWNLOAD_TRANSIENT):
        return Decision(Verdict.RETRY)
    return _RAISE


class CheckDecision(enum.Enum):
    """How the scheduler treats a failed check of one job."""

    BACKOFF = "backoff"  # transient: back off and check again
    FEW_MORE = "few_more"  # probably final (4xx): a few more tries, then give up
    NOT_FOUND = "not_found"  # confirm a few times, then the job is gone


def classify_check(exc: BaseException) -> tuple[CheckDecision, float | None]:
    """The scheduler's rule for a failed check, and the capped Retry-After hint."""
    if isinstance(exc, NotFoundError):
        return CheckDecision.NOT_FOUND, None
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, APIStatusError) and exc.status_code not in RETRYABLE_STATUS
    ):
        return CheckDecision.FEW_MORE, _hint(exc)
    return CheckDecision.BACKOFF, _hint(exc)


@attrs.frozen
class RetryPolicy:
    """How often, and how long apart, safe calls, rejected submits and downloads are retried.

    ``attempts`` counts every try (1 disables retries). Delay ``n`` (from 0) is
    drawn uniformly from ``[0, min(max_delay, initial_delay * multiplier**n)]``
    (full jitter, so many clients do not retry in lockstep). A server's
    ``Retry-After`` replaces the drawn delay, capped at ``max_retry_after``.
    ``sleep`` is injectable so tests need not wait.
    """

    attempts: int = attrs.field(default=6, validator=attrs.validators.ge(1))
    initial_delay: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    max_delay: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    max_retry_after: float = attrs.field(default=MAX_RETRY_AFTER, validator=attrs.validators.ge(0))
    sleep: Sleep = attrs.field(default=asyncio.sleep, repr=False, eq=False)
    rng: random.Random = attrs.field(factory=random.Random, repr=False, eq=False)

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        cap = min(self.max_delay, self.initial_delay * self.multiplier**retry_number)
        return self.rng.uniform(0.0, cap)

    @classmethod
    def no_wait(cls, attempts: int = 6) -> RetryPolicy:
        """A policy that retries without sleeping: for tests."""

        async def _no_sleep(_: float) -> None:
            await asyncio.sleep(0)

        return cls(attempts=attempts, sleep=_no_sleep)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Read a ``Retry-After`` header: delta seconds or an HTTP date. None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # NaN and infinity ("nan", "inf", "1e999") are garbage, not a wait.
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.fromtimestamp(now(), timezone.utc)).total_seconds(), 0.0)
