"""The retry policy: capped exponential backoff with full jitter, and ``Retry-After``.

One policy object serves every safe call; whether a call may be retried at all
(a paid submit mostly may not) is decided by the caller in ``_api.py``.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import attrs

__all__ = ["RetryPolicy", "parse_retry_after"]

Sleep = Callable[[float], Awaitable[None]]


@attrs.frozen
class RetryPolicy:
    """How often, and how long apart, safe calls are retried.

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
    max_retry_after: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
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
