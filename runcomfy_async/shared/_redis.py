"""RedisLimits: one request budget and one in-flight cap for every process of an account."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import random
import secrets
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc

from .._errors import ClientStateError, SharedLimitsError
from .._limits import SLOW_START_DOUBLING, Budget, InFlightLimit
from . import _scripts
from ._adapt import SharedBudget, SharedSlots

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runcomfy_async.shared needs redis-py: pip install 'runcomfy-async[redis]'"
    ) from exc

__all__ = ["CHECK_SHARE", "RedisLimits", "safe_url"]

logger = logging.getLogger("runcomfy_async")

T = TypeVar("T")

#: Priority values as the client's budget numbers them: submits, cancels, checks.
_CHECK = 2
#: The share of tokens checks keep while submits wait (polling must not starve).
CHECK_SHARE = 0.2
#: How often counted successes and finished jobs are sent to Redis at the latest
#: (releases, adopts and 429s go at once: others wait for them).
_FLUSH_SECONDS = 0.2
#: Polling a full in-flight cap: first and longest pause between tries.
_SLOT_POLL_MIN = 0.02
_SLOT_POLL_MAX = 0.25
#: After a failed Redis call, the pumps wait this long (doubling) before trying again.
_RETRY_MIN = 0.1
_RETRY_MAX = 2.0
#: Finished jobs per slot of capacity won back after a 429 to a submit.
_GROW_EVERY = 5


def safe_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "(an unparsable Redis URL)"


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class RedisLimits:
    """A request budget and an in-flight cap kept in Redis, shared by every process naming ``key``.

    Open it, then hand it to clients::

        async with (
            RedisLimits("redis://cache:6379/0", key="acct-1") as limits,
            RunComfyClient(limits=limits) as client,
        ):
            ...

    It implements the client's ``Limits`` protocol (:attr:`budget`,
    :attr:`slots`). Every process (and machine) naming the same ``key`` on the
    same Redis shares one token bucket starting at ``requests_per_second``
    (adapted together: a 429 seen by any process halves the rate for all, at
    most once a second, and pauses all for its ``Retry-After``; answers that
    are not 429 win it back; while callers wait for tokens it grows as the
    in-memory budget does, doubling every quarter second until the first 429,
    additively after it, up to ``max_requests_per_second``: by default
    ``requests_per_second`` itself, the account's limit if you know it) and
    one cap of ``max_in_flight`` slots. Each slot is a lease
    this object renews in the background every ``lease_seconds / 3``; a
    process that dies (even by SIGKILL) stops renewing, and its slots come
    back after ``lease_seconds``.

    Updates are atomic (Lua scripts run inside Redis) and use Redis's clock.
    A Redis failure raises :class:`SharedLimitsError` naming the URL (without
    its password) to a caller waiting for a submit's token or slot; checks of
    jobs in flight wait for Redis to come back instead. ``round_trips``
    counts the commands and pipelines sent.
    """

    def __init__(
        self,
        url: str,
        *,
        key: str,
        requests_per_second: float = 20.0,
        min_rate: float = 0.5,
        max_in_flight: int = 64,
        lease_seconds: float = 30.0,
        max_requests_per_second: float | None = None,
    ) -> None:
        if requests_per_second <= 0 or min_rate <= 0:
            raise ValueError("requests_per_second and min_rate must be positive")
        if max_requests_per_second is not None and max_requests_per_second <= 0:
            raise ValueError("max_requests_per_second must be positive or None")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if not key:
            raise ValueError("key must name the account, e.g. key='acct-1'")
        self._url = url
        self.url = safe_url(url)
        self.key = key
        self._rate_arg = repr(float(requests_per_second))
        self._min_arg = repr(float(min_rate))
        # By default the configured rate is also the ceiling (unlike the
        # in-memory budget's DEFAULT_MAX_RATE): a shared budget is usually
        # given the account's known limit, and a probe past it draws 429s for
        # every process (measured: 1.6-1.9% of answers against a 30/s limit).
        ceiling = (
            requests_per_second if max_requests_per_second is None else max_requests_per_second
        )
        #: The ceiling of the shared rate's growth, requests per second.
        self.max_requests_per_second = float(ceiling)
        # Growth (slow start, additive increase) as the in-memory budget's.
        self._grow_args = [
            repr(self.max_requests_per_second),
            repr(0.25 * float(requests_per_second)),
            repr(SLOW_START_DOUBLING),
        ]
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
        self._group: anyio.abc.TaskGroup | None = None
        self._budget = SharedBudget(self)
        self._slot_limit = SharedSlots(self)
        # What the synchronous protocol calls recorded, for the flusher to send.
        self._successes = 0
        self._demand = 0  # successes that came while this process's callers waited
        self._finished = 0
        self._n429 = 0
        self._retry_after: float | None = None
        self._slot_limited = 0
        self._releases: list[str] = []
        self._adopts: list[str] = []
        self._paused_until = 0.0
        self._flush_kick = asyncio.Event()
        self._token_kick = asyncio.Event()
        self._slot_kick = asyncio.Event()
        #: The shared rate and capacity as last seen in Redis.
        self.last_rate = float(requests_per_second)
        self.last_capacity = max_in_flight
        self.round_trips = 0
        self.lost_leases = 0

    def __repr__(self) -> str:
        return (
            f"<RedisLimits {self.url} key={self.key!r} {self._state.value} "
            f"leases={len(self._leases)}/{self.last_capacity}>"
        )

    # -- the client's Limits protocol -------------------------------------------------

    @property
    def budget(self) -> Budget:
        """The request budget as the client uses it (``Budget`` protocol)."""
        return self._budget

    @property
    def slots(self) -> InFlightLimit:
        """The in-flight limit as the client uses it (``InFlightLimit`` protocol)."""
        return self._slot_limit

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> RedisLimits:
        if self._state is not _State.UNOPENED:
            raise ClientStateError("a RedisLimits opens once; create a new one")
        client = aioredis.from_url(self._url)
        try:
            await self._guard(client.ping())
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
        group.start_soon(self._flusher)
        group.start_soon(self._token_pump)
        group.start_soon(self._slot_pump)
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
        """Stop the background tasks, flush what was recorded, release this process's slots.

        Idempotent. Callers waiting for a token or a slot raise ClientStateError.
        """
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        closed = ClientStateError("the shared limits were closed while this call waited")
        self._budget.fail(closed)
        self._slot_limit.fail(closed)
        if self._group is not None:
            self._group.cancel_scope.cancel()
        client, self._redis = self._redis, None
        assert client is not None
        with anyio.CancelScope(shield=True):
            try:
                self._releases.extend(self._leases)
                self._leases.clear()
                await self._flush(client)
            except (SharedLimitsError, ClientStateError) as exc:
                # Our leases expire on their own after lease_seconds.
                cause = exc.__cause__ or exc.__context__ or exc
                logger.warning("shared limits: Redis at %s failed on close: %s", self.url, cause)
            finally:
                await client.aclose()

    def check_open(self) -> None:
        """Raise ClientStateError unless these limits are open."""
        self._client()

    def _client(self) -> aioredis.Redis:
        if self._state is _State.UNOPENED:
            raise ClientStateError(
                "open the shared limits first: "
                "async with RedisLimits(...) as limits, RunComfyClient(limits=limits) as client"
            )
        if self._state is _State.CLOSED or self._redis is None:
            raise ClientStateError("these shared limits are closed")
        return self._redis

    async def _guard(self, call: Awaitable[T]) -> T:
        """Await a Redis call; its failures become SharedLimitsError naming the URL."""
        try:
            return await call
        except (OSError, RedisError) as exc:
            if self._state is _State.CLOSED:
                raise ClientStateError("these shared limits were closed during the call") from None
            raise SharedLimitsError(
                f"Redis at {self.url} (shared limits key {self.key!r}) failed: "
                f"{type(exc).__name__}: {exc}",
                url=self.url,
            ) from exc

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        client = self._client()
        self.round_trips += 1
        return await self._guard(self._scripts[name](keys=keys, args=args, client=client))

    def _new_lease(self) -> str:
        self._seq += 1
        return f"{self._id}:{self._seq}"

    # -- recording (the synchronous half of the protocol) ------------------------------

    def kick_tokens(self) -> None:
        """A waiter arrived: wake the token pump."""
        self._token_kick.set()

    def kick_slots(self) -> None:
        """A waiter arrived: wake the slot pump."""
        self._slot_kick.set()

    def record_success(self, *, waiting: bool | None = None) -> None:
        """Count an answer that was not a 429 (flushed within ``_FLUSH_SECONDS``).

        ``waiting``: callers waited for tokens when it came (demand past the
        rate, which lets the shared rate grow); None: whether this process's
        callers wait now.
        """
        self._successes += 1
        if waiting is None:
            waiting = self._budget.head() is not None
        if waiting:
            self._demand += 1

    def record_rate_limited(self, retry_after: float | None) -> None:
        """Record a 429 and pause this process's token pump until Redis knows of it."""
        self._n429 += 1
        if retry_after is not None:
            self._retry_after = max(self._retry_after or 0.0, retry_after)
        pause = retry_after if retry_after is not None else 1.0 / max(self.last_rate, 1e-9)
        self._paused_until = max(self._paused_until, _now() + pause)
        self._flush_kick.set()

    def record_slot_limited(self) -> None:
        """Record a 429 to a submit (lowers the shared capacity)."""
        self._slot_limited += 1
        self._flush_kick.set()

    def record_release(self, lease: str) -> None:
        """Give ``lease`` back (sent to Redis at once: waiters of every process are equal)."""
        self._leases.discard(lease)
        self._releases.append(lease)
        self._flush_kick.set()

    def record_adopt(self) -> str:
        """Take a new lease past the cap, for a job already in flight; return it."""
        lease = self._new_lease()
        self._leases.add(lease)
        self._adopts.append(lease)
        self._flush_kick.set()
        return lease

    def record_finished(self) -> None:
        """Count a finished job (flushed within ``_FLUSH_SECONDS``)."""
        self._finished += 1

    # -- background tasks ------------------------------------------------------------

    async def _flusher(self) -> None:
        renew_every = self.lease_seconds / 3
        next_renew = _now() + renew_every
        while True:
            with anyio.move_on_after(_FLUSH_SECONDS):
                await self._flush_kick.wait()
            self._flush_kick.clear()
            client = self._redis
            if client is None:  # pragma: no cover - closing
                return
            try:
                released = bool(self._releases)
                await self._flush(client)
                if released:
                    self._slot_kick.set()  # a waiter may get in now
                if _now() >= next_renew:
                    next_renew = _now() + renew_every
                    await self.renew()
            except ClientStateError:  # pragma: no cover - closed between two awaits
                return
            except SharedLimitsError as exc:
                # Redis away for a moment: what was recorded stays pending and
                # the next round tries again; leases outlive a few missed renewals.
                logger.warning("shared limits: %s", exc)
                await anyio.sleep(_RETRY_MIN)

    async def _flush(self, client: aioredis.Redis) -> None:
        """Send everything recorded since the last flush in one pipeline."""
        adopts, self._adopts = self._adopts, []
        limited, self._slot_limited = self._slot_limited, 0
        releases, self._releases = self._releases, []
        n429, self._n429 = self._n429, 0
        retry_after, self._retry_after = self._retry_after, None
        successes, self._successes = self._successes, 0
        demand, self._demand = self._demand, 0
        finished, self._finished = self._finished, 0
        if not (adopts or limited or releases or n429 or successes or finished):
            return
        try:
            async with client.pipeline(transaction=False) as pipe:
                answered = (successes, demand)
                answers, steps = await self._send(
                    pipe, adopts, limited, releases, n429, retry_after, answered, finished
                )
        except BaseException:
            # Not sent (or not known to be): keep it for the next round. Each
            # step is idempotent or a count, so sending twice is harmless.
            self._adopts[:0] = adopts
            self._slot_limited += limited
            self._releases[:0] = releases
            self._n429 += n429
            if retry_after is not None:
                self._retry_after = max(self._retry_after or 0.0, retry_after)
            self._successes += successes
            self._demand += demand
            self._finished += finished
            raise
        for step, answer in zip(steps, answers, strict=True):
            if step == "rate":
                self.last_rate = float(answer)
            elif step == "capacity":
                self.last_capacity = min(self.max_in_flight, int(answer))
            elif step == "adopt":
                self.last_capacity = min(self.max_in_flight, int(answer[1]))

    async def _send(
        self,
        pipe: Any,
        adopts: list[str],
        limited: int,
        releases: list[str],
        n429: int,
        retry_after: float | None,
        answered: tuple[int, int],
        finished: int,
    ) -> tuple[list[Any], list[str]]:
        successes, demand = answered
        lease_ms = max(1, int(self.lease_seconds * 1000))
        steps: list[str] = []
        for lease in adopts:
            await self._scripts["ACQUIRE_SLOT"](
                keys=[self._slots, self._cap],
                args=[lease, lease_ms, self.max_in_flight, "1"],
                client=pipe,
            )
            steps.append("adopt")
        if limited:
            # Before the releases: the limit is what was in flight at the 429.
            await self._scripts["SLOT_LIMITED"](
                keys=[self._slots, self._cap], args=[self.max_in_flight], client=pipe
            )
            steps.append("capacity")
        if releases:
            pipe.zrem(self._slots, *releases)
            steps.append("release")
        if n429:
            args = [self._rate_arg, self._min_arg, -1.0 if retry_after is None else retry_after]
            await self._scripts["RATE_LIMITED"](
                keys=[self._bucket], args=[*args, n429], client=pipe
            )
            steps.append("rate")
        if successes:
            await self._scripts["SUCCESS"](
                keys=[self._bucket],
                args=[self._rate_arg, self._min_arg, successes, demand, *self._grow_args],
                client=pipe,
            )
            steps.append("rate")
        if finished:
            await self._scripts["SLOT_FINISHED"](
                keys=[self._cap], args=[self.max_in_flight, finished, _GROW_EVERY], client=pipe
            )
            steps.append("capacity")
        self.round_trips += 1
        answers = await self._guard(pipe.execute())
        return list(answers), steps

    async def _token_pump(self) -> None:
        """Ask Redis for a token for this process's most urgent waiter, one at a time."""
        waiter = f"{self._id}:submits"
        retry = _RETRY_MIN
        while True:
            prio = self._budget.head()
            if prio is None:
                await self._token_kick.wait()
                self._token_kick.clear()
                continue
            pause = self._paused_until - _now()
            if pause > 0:
                await anyio.sleep(pause)
                continue
            try:
                wait = await self._ask_token(prio, waiter)
            except ClientStateError:  # pragma: no cover - closed between two awaits
                return
            except SharedLimitsError as exc:
                # Submits and cancels learn of it (nothing was sent); checks of
                # jobs in flight wait for Redis to come back.
                self._budget.fail(exc, below=_CHECK)
                logger.warning("shared limits: %s", exc)
                await anyio.sleep(retry)
                retry = min(_RETRY_MAX, retry * 2)
                continue
            retry = _RETRY_MIN
            if wait == 0.0:
                self._budget.grant()
            else:
                # A little jitter keeps processes woken by one timer from colliding.
                await anyio.sleep(wait * random.uniform(1.0, 1.1))

    async def _ask_token(self, priority: int, waiter: str) -> float:
        answer = await self._call(
            "ACQUIRE",
            [self._bucket, self._waiters],
            [self._rate_arg, self._min_arg, int(priority), waiter, CHECK_SHARE],
        )
        wait_us, rate = answer
        self.last_rate = float(rate)
        return int(wait_us) / 1e6

    async def _slot_pump(self) -> None:
        """Ask Redis for a slot for this process's first waiter, backing off while full."""
        lease_ms = max(1, int(self.lease_seconds * 1000))
        pause = _SLOT_POLL_MIN
        while True:
            if not self._slot_limit.has_waiter():
                await self._slot_kick.wait()
                self._slot_kick.clear()
                continue
            lease = self._new_lease()
            try:
                got, cap = await self._call(
                    "ACQUIRE_SLOT",
                    [self._slots, self._cap],
                    [lease, lease_ms, self.max_in_flight, "0"],
                )
            except ClientStateError:  # pragma: no cover - closed between two awaits
                return
            except SharedLimitsError as exc:
                self._slot_limit.fail(exc)
                logger.warning("shared limits: %s", exc)
                await anyio.sleep(pause)
                pause = min(_RETRY_MAX, pause * 2)
                continue
            self.last_capacity = min(self.max_in_flight, int(cap))
            if int(got) == 1:
                pause = _SLOT_POLL_MIN
                self._leases.add(lease)
                if not self._slot_limit.grant(lease):
                    self.record_release(lease)
                continue
            # Full: try again after a pause, or at once when this process releases one.
            with anyio.move_on_after(pause * random.uniform(0.8, 1.2)):
                self._slot_kick.clear()
                await self._slot_kick.wait()
            pause = min(_SLOT_POLL_MAX, pause * 1.5)

    async def renew(self) -> int:
        """Extend every lease this object holds now; return how many had expired.

        Runs on its own every ``lease_seconds / 3``. An expired lease (this
        process stalled longer than ``lease_seconds``) is taken back at once,
        even past the cap, since its job is still in flight.
        """
        if not self._leases:
            return 0
        leases = list(self._leases)
        lease_ms = max(1, int(self.lease_seconds * 1000))
        lost = await self._call("RENEW", [self._slots], [lease_ms, *leases])
        if lost:
            self.lost_leases += len(lost)
            logger.warning("shared limits: %d slot lease(s) expired before renewal", len(lost))
        return len(lost)

    # -- the async API (for direct use and tests) ------------------------------------

    async def acquire_request(self, priority: int = _CHECK) -> None:
        """Wait for a token of the shared budget; submits (0) and cancels (1) before checks (2).

        While submitters of any process wait, checks still get their share
        (:data:`CHECK_SHARE` of the grants of each second), so polling never
        stops. Raises ClientStateError when the limits are (or get) closed.
        """
        waiter = self._new_lease()
        prio = int(priority)
        try:
            while True:
                wait = await self._ask_token(prio, waiter)
                if wait == 0.0:
                    return
                await anyio.sleep(wait * random.uniform(1.0, 1.1))
        except BaseException:
            if prio < _CHECK and self._redis is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                    await self._redis.zrem(self._waiters, waiter)
            raise

    async def on_success(self, *, waiting: bool | None = None) -> None:
        """Count an answer that was not a 429 (sent to Redis in batches, a few times a second).

        ``waiting``: callers waited for tokens when it came (None: whether
        this process's callers wait now); only such answers grow the rate.
        """
        self._client()
        self.record_success(waiting=waiting)

    async def on_rate_limited(self, retry_after: float | None) -> None:
        """Record a 429 for every process now: halve the rate (once a second at most), pause all."""
        rate = await self._call(
            "RATE_LIMITED",
            [self._bucket],
            [self._rate_arg, self._min_arg, -1.0 if retry_after is None else float(retry_after), 1],
        )
        self.last_rate = float(rate)

    async def rate(self) -> float:
        """The shared rate in requests per second right now."""
        client = self._client()
        self.round_trips += 1
        raw = await self._guard(client.hget(self._bucket, "rate"))
        self.last_rate = float(raw) if raw is not None else float(self._rate_arg)
        return self.last_rate

    async def counters(self) -> dict[str, int]:
        """Shared counters: tokens ``granted`` and answers ``rate_limited``, by all processes."""
        client = self._client()
        self.round_trips += 1
        granted, limited = await self._guard(
            client.hmget(self._bucket, ["granted", "rate_limited"])
        )
        return {"granted": int(granted or 0), "rate_limited": int(limited or 0)}

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
        lease = self._new_lease()
        lease_ms = max(1, int(self.lease_seconds * 1000))
        pause = _SLOT_POLL_MIN
        while True:
            got, cap = await self._call(
                "ACQUIRE_SLOT",
                [self._slots, self._cap],
                [lease, lease_ms, self.max_in_flight, "1" if force else "0"],
            )
            self.last_capacity = min(self.max_in_flight, int(cap))
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
        await self._guard(client.zrem(self._slots, lease))

    async def on_slot_rate_limited(self) -> int:
        """A submit drew a 429: lower the shared capacity below what is in flight; return it.

        The account's concurrency limit is at most what all processes hold
        now; :meth:`on_job_finished` wins capacity back slowly.
        """
        cap = int(await self._call("SLOT_LIMITED", [self._slots, self._cap], [self.max_in_flight]))
        self.last_capacity = min(self.max_in_flight, cap)
        return cap

    async def on_job_finished(self) -> None:
        """Count a finished job: one slot of lowered capacity back per 5 (sent in batches)."""
        self._client()
        self.record_finished()

    async def capacity(self) -> int:
        """The shared capacity now: ``max_in_flight``, or less after a 429 to a submit."""
        client = self._client()
        self.round_trips += 1
        raw = await self._guard(client.hget(self._cap, "capacity"))
        cap = min(self.max_in_flight, int(raw)) if raw is not None else self.max_in_flight
        self.last_capacity = cap
        return cap

    async def in_flight(self) -> int:
        """Slots held by all processes right now (unexpired leases)."""
        return int(await self._call("IN_FLIGHT", [self._slots], []))

    @property
    def held(self) -> int:
        """Slots held by this object."""
        return len(self._leases)


def _now() -> float:
    return asyncio.get_running_loop().time()
