"""The client's limits: the request budget and the one in-flight limit.

Both are reached through :class:`Limits`, a small protocol: the client (and a
batch through the client) uses nothing else, so a shared implementation (one
backed by Redis, for many processes on one account) can replace the in-memory
default, :class:`MemoryLimits`, with ``RunComfyClient(limits=...)``.

The request budget
------------------

Every request the client sends takes a token first. Submits are served before
checks, so polling never starves new work. The rate adapts: a 429 halves it
and pauses everyone for the server's ``Retry-After``; successes win it back,
quickly up to 90% of the rate that last drew a 429 and slowly up to that rate,
so a client settles just under the server's limit instead of probing it every
few seconds (and quickly again once past it: that 429 was no rate limit).
Waiting costs no task: a single timer wakes the next waiters.

The in-flight limit
-------------------

Jobs submitted and not yet finished, at most ``max_in_flight``. A submit that
draws 429 after the API's own retries lowers it to what is in flight (the
account's concurrency limit is at most that); every few finished jobs win one
slot back. The client and every batch on it share this one limit.

Both wait on plain loop futures and one loop timer rather than anyio
primitives: anyio has no priority-ordered or resizable semaphore, and a
thousand waiting submits must cost a future each, not a task or a cancel
scope. Cancellation is handled where it matters (a granted but abandoned
token or slot is passed on), and ``close()`` fails waiters with
ClientStateError rather than cancelling them.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ._errors import ClientStateError

__all__ = [
    "Budget",
    "InFlightLimit",
    "Limits",
    "MemoryLimits",
    "Priority",
    "RequestBudget",
    "SlotLimit",
    "Ticket",
]


def _loop_clock() -> float:
    # The running loop's clock, so our pauses agree with its timers; outside a
    # loop (construction time) the same monotonic clock asyncio uses.
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


#: Seconds within which further 429s do not cut the rate again.
CUT_INTERVAL = 1.0


class Priority(enum.IntEnum):
    """Who goes first when tokens are short: lower values first."""

    SUBMIT = 0
    CANCEL = 1
    CHECK = 2


class Budget(Protocol):
    """The request budget as the API layer uses it (and what it reports)."""

    @property
    def rate(self) -> float:
        """The current rate in requests per second (``inf`` when unlimited)."""
        ...

    @property
    def granted(self) -> int:
        """Tokens granted so far."""
        ...

    @property
    def rate_limited(self) -> int:
        """429 answers recorded so far."""
        ...

    async def acquire(self, priority: Priority = Priority.CHECK) -> None:
        """Wait for one request token (raise ClientStateError once closed)."""
        ...

    def on_success(self) -> None:
        """An answer that was not a 429 came back."""
        ...

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429 came back, with the server's (capped) Retry-After."""
        ...

    def close(self) -> None:
        """Fail every waiter with ClientStateError; later acquires fail too."""
        ...


class InFlightLimit(Protocol):
    """The cap on jobs in flight, as the client uses it."""

    @property
    def in_flight(self) -> int:
        """Jobs holding a slot now."""
        ...

    @property
    def capacity(self) -> int:
        """Slots available now (adapts to 429s on submit)."""
        ...

    async def acquire(self) -> None:
        """Wait for a slot (raise ClientStateError once closed)."""
        ...

    def force_acquire(self) -> None:
        """Count a job already in flight (adopted), even past capacity."""
        ...

    def release(self) -> None:
        """Give a slot back."""
        ...

    def on_rate_limited(self) -> None:
        """A submit was still refused with 429 after retries: lower the capacity."""
        ...

    def on_job_finished(self) -> None:
        """A job ended: a step towards winning capacity back."""
        ...

    def close(self) -> None:
        """Fail every waiter with ClientStateError."""
        ...


@runtime_checkable
class Limits(Protocol):
    """What a client needs of its limits: one request budget, one in-flight limit."""

    @property
    def budget(self) -> Budget:
        """The request budget shared by every request of the client."""
        ...

    @property
    def slots(self) -> InFlightLimit:
        """The limit on jobs in flight shared by every submit of the client."""
        ...


class Ticket:
    """One request-budget token taken ahead of the request that will spend it.

    The scheduler takes its token before it picks the job to check (so the
    most overdue job at that moment gets it), then hands the ticket to the
    API call, which spends it instead of taking another. Spending twice is a bug.
    """

    __slots__ = ("spent",)

    def __init__(self) -> None:
        self.spent = False

    def __repr__(self) -> str:
        return f"<Ticket {'spent' if self.spent else 'held'}>"

    def spend(self) -> None:
        """Use the token; raise RuntimeError if it was used already."""
        if self.spent:
            raise RuntimeError("a request-budget ticket was spent twice")
        self.spent = True


class RequestBudget:
    """An adaptive token bucket shared by every request of one client.

    ``rate`` is the starting and highest rate in requests per second (None: no
    limit until the server answers 429, then the observed rate is the ceiling);
    ``min_rate`` the floor it never adapts below.
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_closed",
        "_last_cut",
        "_last_limited_rate",
        "_max_rate",
        "_min_rate",
        "_paused_until",
        "_peak_limited_rate",
        "_rate",
        "_seq",
        "_stamp",
        "_timer",
        "_tokens",
        "_waiters",
        "granted",
        "rate_limited",
    )

    def __init__(
        self,
        rate: float | None = 50.0,
        *,
        min_rate: float = 0.5,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._max_rate = rate
        self._rate = rate if rate is not None else float("inf")
        self._min_rate = min_rate
        self._clock = clock or _loop_clock
        self._stamp = self._clock()
        self._burst = self._burst_for(self._rate)
        self._tokens = self._burst
        self._paused_until = 0.0
        self._last_cut = float("-inf")
        self._last_limited_rate: float | None = None
        self._peak_limited_rate = 0.0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.granted = 0
        self.rate_limited = 0
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<RequestBudget rate={self._rate:.2f}/s tokens={self._tokens:.1f} "
            f"waiting={self.waiting} limited={self.rate_limited}>"
        )

    @property
    def rate(self) -> float:
        """The current rate in requests per second (``inf`` when unlimited)."""
        return self._rate

    @property
    def waiting(self) -> int:
        """How many callers are waiting for a token."""
        # Cancelled waiters stay in the heap until they reach its head: skip them.
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    @staticmethod
    def _burst_for(rate: float) -> float:
        # A second's worth of tokens, but at least one and never unbounded:
        # bursts are what draws 429s from a token-bucket server.
        return 1e9 if rate == float("inf") else max(1.0, min(rate, 100.0))

    def _refill(self, now: float) -> None:
        if self._rate == float("inf"):
            self._tokens = self._burst
        else:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self, priority: Priority = Priority.CHECK) -> None:
        """Wait for a token; higher priorities (lower values) are served first.

        Raises ClientStateError once the budget is closed.
        """
        if self._closed:
            raise ClientStateError("the client is closed")
        now = self._clock()
        if not self._waiters and now >= self._paused_until:
            self._refill(now)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                self.granted += 1
                return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._seq), fut))
        self._arm()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                # We were granted a token but will not use it: give it back.
                self._tokens = min(self._burst, self._tokens + 1.0)
                self.granted -= 1
            raise

    def _arm(self) -> None:
        if self._timer is not None or not self._waiters:
            return
        now = self._clock()
        self._refill(now)
        wait = max(self._paused_until - now, 0.0)
        if self._tokens < 1.0 and self._rate != float("inf"):
            wait = max(wait, (1.0 - self._tokens) / self._rate)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(wait, self._wake)

    def _wake(self) -> None:
        self._timer = None
        now = self._clock()
        if now >= self._paused_until:
            self._refill(now)
            while self._waiters and self._tokens >= 1.0:
                _, _, fut = heapq.heappop(self._waiters)
                if fut.done():  # cancelled while waiting
                    continue
                self._tokens -= 1.0
                self.granted += 1
                fut.set_result(None)
        # Drop cancelled waiters at the head so they do not keep the timer armed.
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        self._arm()

    def on_success(self) -> None:
        """Record an answer that was not a 429: win back rate, fast then slowly."""
        limit = self._last_limited_rate
        if limit is None:  # never limited: nothing to win back
            return
        # Without a configured rate, the highest rate that drew a 429 is the ceiling.
        ceiling = self._max_rate if self._max_rate is not None else self._peak_limited_rate
        if self._rate >= ceiling:
            return
        # Below 90% of the rate that drew the last 429, recover by 2% a request
        # (fast); up to that rate, by 0.1% (slow probing of a limit we hit).
        # Past it without a new 429, that 429 was no rate limit (a concurrency
        # limit, a hiccup): fast again, or sporadic 429s would ratchet the rate
        # down to min_rate for good.
        step = 0.001 if 0.9 * limit <= self._rate < limit else 0.02
        # At low rates a relative step alone would take minutes to recover.
        self._set_rate(min(ceiling, self._rate + max(self._rate * step, step)))

    def on_rate_limited(self, retry_after: float | None) -> None:
        """Record a 429: halve the rate (at most once a second) and pause for Retry-After."""
        self.rate_limited += 1
        now = self._clock()
        if now >= self._paused_until and now - self._last_cut >= CUT_INTERVAL:
            # A burst of 429s (from requests already in flight, or within a
            # second) is one signal, not many: cut once.
            self._last_cut = now
            observed = self._rate if self._rate != float("inf") else self._observed_rate()
            self._last_limited_rate = observed
            self._peak_limited_rate = max(self._peak_limited_rate, observed)
            self._set_rate(max(self._min_rate, observed * 0.5))
            self._tokens = min(self._tokens, 0.0)
        pause = retry_after if retry_after is not None else 1.0 / max(self._rate, 1e-9)
        self._paused_until = max(self._paused_until, now + pause)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiters:
            self._arm()

    def _observed_rate(self) -> float:
        # With no configured rate, the best guess of what drew the 429 is a
        # generous one; halving it from there converges in a few steps.
        return 100.0

    def _set_rate(self, rate: float) -> None:
        now = self._clock()
        self._refill(now)
        self._rate = rate
        self._burst = self._burst_for(rate)
        self._tokens = min(self._tokens, self._burst)

    def close(self) -> None:
        """Stop the timer and fail every waiter with ClientStateError: the client is closing.

        Later calls to :meth:`acquire` raise ClientStateError too.
        """
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, _, fut in self._waiters:
            if not fut.done():
                # Not fut.cancel(): that would raise CancelledError in a caller's
                # task that nobody cancelled.
                fut.set_exception(
                    ClientStateError("the client was closed while this request waited")
                )
        self._waiters.clear()


class SlotLimit:
    """The in-memory in-flight limit: a semaphore whose capacity adapts.

    Lowered on 429 to submits, regrown by one slot every ``grow_every``
    finished jobs up to the configured ceiling.
    """

    __slots__ = ("_capacity", "_ceiling", "_grow_every", "_in_flight", "_since_grow", "_waiters")

    def __init__(self, capacity: int, *, grow_every: int = 5) -> None:
        if capacity < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._ceiling = capacity
        self._capacity = capacity
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._since_grow = 0
        self._grow_every = grow_every

    def __repr__(self) -> str:
        return f"<SlotLimit {self._in_flight}/{self._capacity} waiting={len(self._waiters)}>"

    @property
    def in_flight(self) -> int:
        """Jobs holding a slot now."""
        return self._in_flight

    @property
    def capacity(self) -> int:
        """Slots available now (at most the configured ``max_in_flight``)."""
        return self._capacity

    async def acquire(self) -> None:
        """Wait for a slot, first come first served."""
        if self._in_flight < self._capacity and not self._waiters:
            self._in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release()  # granted but unused: pass it on
            raise

    def force_acquire(self) -> None:
        """Count a job that is already in flight (adopted), even past capacity."""
        self._in_flight += 1

    def release(self) -> None:
        """Give a slot back and wake the next waiter."""
        self._in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_flight < self._capacity:
            fut = self._waiters.popleft()
            if not fut.done():
                self._in_flight += 1
                fut.set_result(None)

    def on_rate_limited(self) -> None:
        """The account's concurrency limit is at most what is in flight now."""
        self._capacity = max(1, min(self._capacity, self._in_flight - 1))
        self._since_grow = 0

    def on_job_finished(self) -> None:
        """Every ``grow_every`` finished jobs, one slot back (up to the ceiling)."""
        if self._capacity < self._ceiling:
            self._since_grow += 1
            if self._since_grow >= self._grow_every:
                self._since_grow = 0
                self._capacity += 1
                self._wake()

    def close(self) -> None:
        """Fail every waiter with ClientStateError (not a CancelledError nobody asked for)."""
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(ClientStateError("the client was closed"))
        self._waiters.clear()


class MemoryLimits:
    """The default :class:`Limits`: a :class:`RequestBudget` and a :class:`SlotLimit` in memory.

    ``requests_per_second`` starts the budget (None: unlimited until the first
    429); ``max_in_flight`` caps jobs in flight. One process, one account.
    """

    __slots__ = ("_budget", "_slots")

    def __init__(
        self, *, requests_per_second: float | None = 20.0, max_in_flight: int = 64
    ) -> None:
        self._slots = SlotLimit(max_in_flight)
        self._budget = RequestBudget(requests_per_second)

    def __repr__(self) -> str:
        return f"<MemoryLimits {self._budget!r} {self._slots!r}>"

    @property
    def budget(self) -> Budget:
        """The in-memory request budget."""
        return self._budget

    @property
    def slots(self) -> InFlightLimit:
        """The in-memory in-flight limit."""
        return self._slots
