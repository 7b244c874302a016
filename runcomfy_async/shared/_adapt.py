"""The client's ``Budget`` and ``InFlightLimit`` protocols over :class:`RedisLimits`.

The client calls ``on_success``, ``release`` and friends synchronously, from
inside its request path; a Redis round trip cannot happen there. So these
adapters only record what happened (a count, a lease to give back) and kick
the owning RedisLimits' flusher, a task of its task group that sends
everything recorded since its last round in one pipeline. Waiting is local
too: waiters are plain loop futures (as in the in-memory limits), and one
pump task per kind asks Redis for the head waiter, so a thousand waiting
submits cost one Redis call at a time, not a thousand polling loops.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
from typing import Protocol

from .._errors import ClientStateError
from .._limits import Priority

__all__ = ["SharedBudget", "SharedSlots"]


class Backend(Protocol):
    """What the adapters need of the shared store (``RedisLimits``): state and recorders."""

    key: str
    last_rate: float
    last_capacity: int

    def check_open(self) -> None: ...
    def kick_tokens(self) -> None: ...
    def kick_slots(self) -> None: ...
    def record_success(self) -> None: ...
    def record_rate_limited(self, retry_after: float | None) -> None: ...
    def record_slot_limited(self) -> None: ...
    def record_release(self, lease: str) -> None: ...
    def record_adopt(self) -> str: ...
    def record_finished(self) -> None: ...


class SharedBudget:
    """The request budget of one process, spending tokens of the shared Redis bucket.

    Implements the client's ``Budget`` protocol. ``rate`` is the shared rate as
    last seen in Redis; ``granted`` and ``rate_limited`` count this process only.
    """

    __slots__ = ("_closed", "_limits", "_seq", "_waiters", "granted", "rate_limited")

    def __init__(self, limits: Backend) -> None:
        self._limits = limits
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._closed = False
        self.granted = 0
        self.rate_limited = 0

    def __repr__(self) -> str:
        return (
            f"<SharedBudget key={self._limits.key!r} rate={self.rate:.2f}/s "
            f"waiting={self.waiting} limited={self.rate_limited}>"
        )

    @property
    def rate(self) -> float:
        """The shared rate in requests per second, as last seen in Redis."""
        return self._limits.last_rate

    @property
    def waiting(self) -> int:
        """How many callers of this process wait for a token."""
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    async def acquire(self, priority: Priority = Priority.CHECK) -> None:
        """Wait for a token of the shared bucket; submits before cancels before checks.

        Raises ClientStateError once closed, SharedLimitsError when Redis
        fails while a submit or cancel waits (checks wait for Redis to return).
        """
        if self._closed:
            raise ClientStateError("the client is closed")
        self._limits.check_open()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._seq), fut))
        self._limits.kick_tokens()
        # A granted token that its caller no longer wants is spent anyway: it
        # left the shared bucket, and handing it back would need a round trip.
        await fut
        self.granted += 1

    def head(self) -> int | None:
        """The priority of the next waiter to serve (None: nobody waits)."""
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        return self._waiters[0][0] if self._waiters else None

    def grant(self) -> None:
        """Give one token to the next waiter (lost if it went away meanwhile)."""
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                return

    def fail(self, exc: BaseException, *, below: int | None = None) -> None:
        """Fail the waiters (those with a priority value below ``below``, if given)."""
        keep = []
        for entry in self._waiters:
            prio, _, fut = entry
            if fut.done():
                continue
            if below is None or prio < below:
                fut.set_exception(exc)
            else:
                keep.append(entry)
        heapq.heapify(keep)
        self._waiters = keep

    def on_success(self) -> None:
        """Count an answer that was not a 429 (sent to Redis with the next flush)."""
        self._limits.record_success()

    def on_rate_limited(self, retry_after: float | None) -> None:
        """Record a 429: sent to Redis at once, where it halves the rate for every process."""
        self.rate_limited += 1
        self._limits.record_rate_limited(retry_after)

    def close(self) -> None:
        """Fail this process's waiters with ClientStateError; later acquires fail too."""
        self._closed = True
        self.fail(ClientStateError("the client was closed while this request waited"))


class SharedSlots:
    """The in-flight limit of one process, holding leases on the shared Redis slots.

    Implements the client's ``InFlightLimit`` protocol. ``in_flight`` counts
    this process's slots; ``capacity`` is the shared capacity as last seen.
    """

    __slots__ = ("_closed", "_limits", "_waiters", "held")

    def __init__(self, limits: Backend) -> None:
        self._limits = limits
        self._waiters: collections.deque[asyncio.Future[str]] = collections.deque()
        self._closed = False
        #: The leases this process's jobs hold (any one may be given back on release).
        self.held: list[str] = []

    def __repr__(self) -> str:
        return (
            f"<SharedSlots key={self._limits.key!r} {self.in_flight}/{self.capacity} "
            f"waiting={self.waiting}>"
        )

    @property
    def in_flight(self) -> int:
        """Slots held by this process's jobs."""
        return len(self.held)

    @property
    def capacity(self) -> int:
        """The shared capacity, as last seen in Redis."""
        return self._limits.last_capacity

    @property
    def waiting(self) -> int:
        """How many submits of this process wait for a slot."""
        return sum(1 for fut in self._waiters if not fut.done())

    async def acquire(self) -> None:
        """Wait for a shared slot, first come first served within this process.

        Raises ClientStateError once closed, SharedLimitsError when Redis fails.
        """
        if self._closed:
            raise ClientStateError("the client is closed")
        self._limits.check_open()
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._limits.kick_slots()
        try:
            lease = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._limits.record_release(fut.result())  # granted but unused
            raise
        self.held.append(lease)

    def has_waiter(self) -> bool:
        """True when a submit of this process waits for a slot."""
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
        return bool(self._waiters)

    def grant(self, lease: str) -> bool:
        """Hand ``lease`` to the next waiter; False if nobody waits any more."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(lease)
                return True
        return False

    def fail(self, exc: BaseException) -> None:
        """Fail every waiter with ``exc``."""
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()

    def force_acquire(self) -> None:
        """Count a job already in flight (adopted), even past the shared cap."""
        self.held.append(self._limits.record_adopt())

    def release(self) -> None:
        """Give a slot back (sent to Redis at once, batched with others)."""
        if self.held:
            self._limits.record_release(self.held.pop())

    def on_rate_limited(self) -> None:
        """A submit drew a 429: lower the shared capacity below what all processes hold."""
        self._limits.record_slot_limited()

    def on_job_finished(self) -> None:
        """Count a finished job towards winning shared capacity back (batched)."""
        self._limits.record_finished()

    def close(self) -> None:
        """Fail this process's waiters with ClientStateError."""
        self._closed = True
        self.fail(ClientStateError("the client was closed"))
