"""RedisLimits: one request budget and one in-flight cap for every process of an account."""

from __future__ import annotations

import enum
import logging
import os
import random
import secrets
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from .._errors import ClientStateError
from . import _scripts

try:
    import redis.asyncio as aioredis
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runcomfy_async.shared needs redis-py: pip install 'runcomfy-async[redis]'"
    ) from exc

__all__ = ["RedisLimits"]

logger = logging.getLogger("runcomfy_async")

#: Priority values as the client's budget numbers them: submits, cancels, checks.
_CHECK = 2
#: The share of tokens checks keep while submits wait (polling must not starve).
CHECK_SHARE = 0.2
#: How often successes are sent to Redis (batched: one round trip, not one per answer).
_FLUSH_SECONDS = 0.2
#: Polling a full in-flight cap: first and longest pause between tries.
_SLOT_POLL_MIN = 0.02
_SLOT_POLL_MAX = 0.25
#: Finished jobs per slot of capacity won back after a 429 to a submit.
_GROW_EVERY = 5


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class RedisLimits:
    """A request budget and an in-flight cap kept in Redis, shared by every process naming ``key``.

    Use it as ``async with RedisLimits(url, key="acct-1") as limits: ...``.
    Every process (and machine) naming the same ``key`` on the same Redis
    shares one token bucket of ``requests_per_second`` (adapted together: a
    429 seen by any process halves the rate for all, at most once a second,
    and pauses all for its ``Retry-After``) and one cap of ``max_in_flight``
    slots. Each slot is a lease that this object renews in the background
    every ``lease_seconds / 3``; a process that dies (even by SIGKILL) stops
    renewing and its slots come back after ``lease_seconds``.

    Updates are atomic (Lua scripts run inside Redis) and use Redis's clock.
    Redis errors (connection refused, timeouts) propagate as redis-py's
    exceptions. ``round_trips`` counts the commands sent.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str,
        requests_per_second: float = 50.0,
        min_rate: float = 0.5,
        max_in_flight: int = 64,
        lease_seconds: float = 30.0,
    ) -> None:
        if requests_per_second <= 0 or min_rate <= 0:
            raise ValueError("requests_per_second and min_rate must be positive")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._url = url
        self.key = key
        self._rate_arg = repr(float(requests_per_second))
        self._min_arg = repr(float(min_rate))
        self.max_in_flight = max_in_flight
        self.lease_seconds = lease_seconds
        # A hash tag keeps the keys of one account in one Redis Cluster slot.
        prefix = f"runcomfy:{{{key}}}:"
        self._bucket = prefix + "bucket"
        self._waiters = prefix + "submit-waiters"
        self._slots = prefix + "slots"
        self._cap = prefix + "capacity"
        self._id = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._seq = 0
        self._state = _State.UNOPENED
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._leases: set[str] = set()
        self._successes = 0
        self._finished = 0
        self._group: anyio.abc.TaskGroup | None = None
        self.round_trips = 0
        self.lost_leases = 0

    def __repr__(self) -> str:
        return (
            f"<RedisLimits key={self.key!r} {self._state.value} "
            f"leases={len(self._leases)}/{self.max_in_flight}>"
        )

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> RedisLimits:
        if self._state is not _State.UNOPENED:
            raise ClientStateError("a RedisLimits opens once; create a new one")
        client = aioredis.from_url(self._url)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self.round_trips += 1
        self._redis = client
        for name in _scripts.__all__:
            self._scripts[name] = client.register_script(getattr(_scripts, name))
        self._state = _State.OPEN
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._background)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            group, self._group = self._group, None
            if group is not None:
                await group.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Stop renewing, flush what was counted, release this process's slots. Idempotent.

        Counted successes and finished jobs are sent before closing. Calls
        waiting for a token or a slot then raise ClientStateError.
        """
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        if self._group is not None:
            self._group.cancel_scope.cancel()
        client, self._redis = self._redis, None
        assert client is not None
        with anyio.CancelScope(shield=True):
            try:
                await self._flush_successes(client)
                if self._leases:
                    await client.zrem(self._slots, *self._leases)
                    self.round_trips += 1
                self._leases.clear()
            finally:
                await client.aclose()

    def _client(self) -> aioredis.Redis:
        if self._state is _State.UNOPENED:
            raise ClientStateError("open it first: async with RedisLimits(...) as limits")
        if self._state is _State.CLOSED or self._redis is None:
            raise ClientStateError("these limits are closed")
        return self._redis

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        client = self._client()
        self.round_trips += 1
        try:
            return await self._scripts[name](keys=keys, args=args, client=client)
        except (OSError, aioredis.RedisError):
            if self._state is _State.CLOSED:
                # Closed under a call in progress: the caller learns why, not a socket error.
                raise ClientStateError("these limits were closed during the call") from None
            raise

    # -- the request budget ----------------------------------------------------------

    async def acquire_request(self, priority: int = _CHECK) -> None:
        """Wait for a token of the shared budget; submits (0) and cancels (1) before checks (2).

        While submitters of any process wait, checks still get their share
        (:data:`CHECK_SHARE` of the grants of each second), so polling never
        stops. Raises ClientStateError when the limits are (or get) closed.
        """
        self._seq += 1
        waiter = f"{self._id}:{self._seq}"
        prio = int(priority)
        try:
            while True:
                wait_us = await self._call(
                    "ACQUIRE",
                    [self._bucket, self._waiters],
                    [self._rate_arg, self._min_arg, prio, waiter, CHECK_SHARE],
                )
                if int(wait_us) == 0:
                    return
                # A little jitter keeps processes woken by one timer from colliding.
                await anyio.sleep(int(wait_us) / 1e6 * random.uniform(1.0, 1.1))
        except BaseException:
            if prio < _CHECK and self._redis is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await self._redis.zrem(self._waiters, waiter)
            raise

    async def on_success(self) -> None:
        """Count an answer that was not a 429 (sent to Redis in batches, a few times a second)."""
        self._client()
        self._successes += 1

    async def on_rate_limited(self, retry_after: float | None) -> None:
        """Record a 429 for every process: halve the rate (once a second at most), pause all."""
        await self._call(
            "RATE_LIMITED",
            [self._bucket],
            [self._rate_arg, self._min_arg, -1.0 if retry_after is None else float(retry_after)],
        )

    async def rate(self) -> float:
        """The shared rate in requests per second right now."""
        client = self._client()
        self.round_trips += 1
        raw = await client.hget(self._bucket, "rate")
        return float(raw) if raw is not None else float(self._rate_arg)

    async def counters(self) -> dict[str, int]:
        """Shared counters: tokens ``granted`` and answers ``rate_limited``, by all processes."""
        client = self._client()
        self.round_trips += 1
        granted, limited = await client.hmget(self._bucket, ["granted", "rate_limited"])
        return {"granted": int(granted or 0), "rate_limited": int(limited or 0)}

    async def _flush_successes(self, client: aioredis.Redis) -> None:
        n, self._successes = self._successes, 0
        if n:
            self.round_trips += 1
            await self._scripts["SUCCESS"](
                keys=[self._bucket], args=[self._rate_arg, self._min_arg, n], client=client
            )
        done, self._finished = self._finished, 0
        if done:
            self.round_trips += 1
            await self._scripts["SLOT_FINISHED"](
                keys=[self._cap], args=[self.max_in_flight, done, _GROW_EVERY], client=client
            )

    # -- the in-flight cap -----------------------------------------------------------

    async def acquire_slot(self) -> str:
        """Wait for one of the ``max_in_flight`` shared slots; return its lease id.

        The lease is renewed in the background until :meth:`release_slot`;
        if this process dies, the slot comes back after ``lease_seconds``.
        """
        return await self._take_slot(force=False)

    async def adopt_slot(self) -> str:
        """Take a slot for a job already in flight (resumed), even past the cap."""
        return await self._take_slot(force=True)

    async def _take_slot(self, *, force: bool) -> str:
        self._seq += 1
        lease = f"{self._id}:{self._seq}"
        lease_ms = max(1, int(self.lease_seconds * 1000))
        pause = _SLOT_POLL_MIN
        while True:
            got = await self._call(
                "ACQUIRE_SLOT",
                [self._slots, self._cap],
                [lease, lease_ms, self.max_in_flight, "1" if force else "0"],
            )
            if int(got) == 1:
                self._leases.add(lease)
                return lease
            await anyio.sleep(pause * random.uniform(0.8, 1.2))
            pause = min(_SLOT_POLL_MAX, pause * 1.5)

    async def release_slot(self, lease: str) -> None:
        """Give a slot back (a lease this object does not hold is ignored)."""
        if lease not in self._leases:
            return
        self._leases.discard(lease)
        client = self._client()
        self.round_trips += 1
        await client.zrem(self._slots, lease)

    async def on_slot_rate_limited(self) -> int:
        """A submit drew a 429: lower the shared capacity below what is in flight; return it.

        The account's concurrency limit is at most what all processes hold
        now; :meth:`on_job_finished` wins capacity back slowly.
        """
        return int(await self._call("SLOT_LIMITED", [self._slots, self._cap], [self.max_in_flight]))

    async def on_job_finished(self) -> None:
        """Count a finished job: one slot of lowered capacity back per 5 (sent in batches)."""
        self._client()
        self._finished += 1

    async def capacity(self) -> int:
        """The shared capacity now: ``max_in_flight``, or less after a 429 to a submit."""
        client = self._client()
        self.round_trips += 1
        raw = await client.hget(self._cap, "capacity")
        return min(self.max_in_flight, int(raw)) if raw is not None else self.max_in_flight

    async def in_flight(self) -> int:
        """Slots held by all processes right now (unexpired leases)."""
        return int(await self._call("IN_FLIGHT", [self._slots], []))

    @property
    def held(self) -> int:
        """Slots held by this object."""
        return len(self._leases)

    # -- background ------------------------------------------------------------------

    async def _background(self) -> None:
        renew_every = self.lease_seconds / 3
        since_renew = 0.0
        while True:
            await anyio.sleep(_FLUSH_SECONDS)
            since_renew += _FLUSH_SECONDS
            client = self._redis
            if client is None:
                return
            try:
                await self._flush_successes(client)
                if since_renew >= renew_every:
                    since_renew = 0.0
                    await self.renew()
            except (OSError, aioredis.RedisError) as exc:
                # Redis away for a moment: the next round tries again; leases
                # outlive a few missed renewals.
                logger.warning("shared limits: Redis call failed: %s", exc)

    async def renew(self) -> int:
        """Extend every lease this object holds now; return how many were already lost.

        Runs on its own every ``lease_seconds / 3``. A lost lease (this
        process stalled longer than ``lease_seconds``) is forgotten: its slot
        went back to the pool and may be in use elsewhere.
        """
        if not self._leases:
            return 0
        leases = list(self._leases)
        lease_ms = max(1, int(self.lease_seconds * 1000))
        lost = await self._call("RENEW", [self._slots], [lease_ms, *leases])
        for raw in lost:
            lease = raw.decode() if isinstance(raw, bytes) else str(raw)
            self._leases.discard(lease)
        if lost:
            self.lost_leases += len(lost)
            logger.warning("shared limits: %d slot lease(s) expired before renewal", len(lost))
        return len(lost)
