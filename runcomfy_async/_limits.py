"""The client's limits: the request budget and the one in-flight limit.

Both are reached through :class:`Limits`, a small protocol: the client (and a
batch through the client) uses nothing else, so a shared implementation (one
backed by Redis, for many processes on one account) can replace the in-memory
default, :class:`MemoryLimits`, with ``RunComfyClient(limits=...)``.

The request budget (the whole policy, in one place)
---------------------------------------------------

Every request the client sends takes a token first, from one token bucket
(:class:`RequestBudget`): ``rate`` tokens a second, at most a second's worth
(and at most 100) at once. RunComfy documents no rate limit, so the starting
rate (``requests_per_second``, 20) is a guess the budget revisits both ways:

1. **Who goes first.** Submits, then cancels, then checks; but while checks
   wait behind other requests, every ``1 / check_share``-th token (a quarter
   by default) goes to a check. A backlog of submits never starves the jobs
   already running (a job nobody checks is a result nobody collects).
2. **Up: slow start, then additive increase** (as TCP's congestion control
   grows its window). Growth needs demand: callers waiting for tokens (a
   submit backlog, or the scheduler's next check, which it asks for only
   once that check is due: a waiting check is a late one). Without demand
   the rate never grows: a rate not used proves nothing. Each answer that
   comes back while callers wait raises the rate:

   - *Slow start*, until the first real 429: by ``ln 2 / SLOW_START_DOUBLING``
     an answer. Answers come back at the rate, so it doubles every 0.25 s of
     demand (20 -> 2000/s in under two seconds): about once per round trip
     to a distant server, so the rate has doubled about once when the first
     429 of an overshoot comes back.
   - *Additive increase*, once a real 429 ended slow start: ``increase``
     requests/s per second of demand (a quarter of the starting rate,
     5/s a second from 20/s). Near the rate that last drew a real 429
     (within 10% of it) ten times slower (0.1% an answer); past that
     without a new 429, that limit is stale and it grows at full speed
     again, but never doubles again.

   Up to ``max_rate`` (``max_requests_per_second``; default 2000/s). That
   ceiling is a safety net, not a guess of the server's limit (429s find
   that, within a second of slow start): a client's load on a distant
   server is bounded anyway by its concurrency (32 checks and
   ``max_in_flight`` submits in flight: at a 100 ms round trip, a few
   hundred requests a second), so the ceiling binds only where answers are
   fast, which is where a burst of short jobs needs it: 400 jobs of 1-4 s
   submitted at once need ~700 requests/s over five seconds and thousands
   at the peak, which 200/s could never serve.
3. **Proven rates.** A rate sustained for ``PROVE_SECONDS`` (and about as
   many seconds' worth of answers) without a real 429 is *proven*.
4. **Real limit or sporadic 429?** A 429 is a *real* limit when 429s
   cluster (``CLUSTER`` of the last ``RECENT`` answers), when the server's
   ``Retry-After`` grew since its last 429, or when the rate is above the
   last proven one (a probe past the limit). Then the rate is cut, once a
   second at most: to half, or back to the proven rate when a probe failed
   alone, and every request pauses for the ``Retry-After``. Any other 429 is
   *sporadic* (isolated, at a rate the server has sustained: 3% of answers
   at random, say): it changes neither the rate nor anyone else's timing,
   and only the refused request waits for its ``Retry-After`` (the
   scheduler's backoff, or the submit's retry). So sporadic 429s cannot
   ratchet the rate down to ``min_rate``. How many 429s count as a cluster
   grows with the long-run share of 429s (sporadic ones raise it, learnt
   from answers as they leave the recent window, so that a cluster does
   not raise its own bar): at least ``CLUSTER``, and as many as sporadic
   429s at that share and the rate sent reach less than once in 20 s (at
   1000 answers a second and 3%, 3 of 16 comes every second). But past
   ``SPORADIC_MAX_SHARE`` (10%) every 429 is real: a limit the client
   keeps hitting, one answer in four refused, say, is real however evenly
   spread. In slow start (the rate grown past its start, no real 429 yet)
   a 429 above the proven rate is no probe by itself, since slow start
   outruns every proof: only a cluster (or a growing ``Retry-After``) ends
   it. Past a real limit the share refused grows with the overshoot (half
   at twice the limit), so its 429s cluster within a few answers.
5. **Winning back.** Below the starting rate after a cut, each success wins
   back 2% (fast) up to 90% of the rate that drew the cut, then 0.1% (slow)
   up to it, then fast again: a client settles just under a server's limit
   instead of probing it every few seconds.
6. ``rate=None``: unlimited until the first 429, then never above what drew
   it (or ``max_rate``, if given).

The scheduler reads ``rate``, ``burst`` and ``level`` to spread checks that
come due together ahead of time (``_timing.spread_checks``).

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
import itertools
import math
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


def _tail(share: float, chance: float = 1e-3) -> int:
    """The fewest 429s among RECENT answers that sporadic ones at ``share``
    reach with probability below ``chance`` per 429 (a 429 sees RECENT - 1 others)."""
    share = min(max(share, 1e-6), SPORADIC_MAX_SHARE)
    n = RECENT - 1
    term = (1.0 - share) ** n  # P(0 others)
    below = term
    for k in range(1, n + 1):
        if 1.0 - below < chance:
            return k + 1  # P(>= k others) < 1e-3: this 429 and k others
        term *= (n - k + 1) / k * share / (1.0 - share)
        below += term
    return n + 2


def _loop_clock() -> float:
    # The running loop's clock, so our pauses agree with its timers; outside a
    # loop (construction time) the same monotonic clock asyncio uses.
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


#: Seconds within which further 429s do not cut the rate again.
CUT_INTERVAL = 1.0
#: How many recent answers the budget remembers, and how many 429s among them
#: make a cluster (a real limit): at a 3% sporadic rate, 3 of 16 happens
#: for about one 429 in fourteen (a cut the rate wins back in seconds).
RECENT = 16
CLUSTER = 3
#: The long-run share of 429s (an average over about 200 answers) above which
#: they are a limit however they are spread: sporadic 429s are rare by
#: definition (3% at random is 8 standard deviations of that average below).
SPORADIC_MAX_SHARE = 0.10
#: The window (seconds) over which the budget measures what it sends and what
#: the server sustained without a real 429 (two seconds: a server's burst
#: allowance alone does not look like its rate).
PROVE_SECONDS = 2.0
#: The default ceiling of the rate's growth, requests per second (why this
#: high: the module docstring, rule 2).
DEFAULT_MAX_RATE = 2000.0
#: Slow start: seconds of demand in which the rate doubles, until the first
#: real 429 (about a round trip to a distant server).
SLOW_START_DOUBLING = 0.25
_LN2 = math.log(2.0)


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

    ``rate`` is the starting rate in requests per second (None: no limit
    until the server answers 429); ``max_rate`` the ceiling its growth (slow
    start, then additive increase) may reach (None: :data:`DEFAULT_MAX_RATE`,
    or ``rate`` if higher; the rate of an unlimited budget never exceeds
    what drew its 429, or ``max_rate`` if given); ``min_rate`` the floor it
    never adapts below; ``increase`` the additive increase in requests per
    second, per second of demand, once a real 429 has ended slow start
    (default a quarter of ``rate``); ``check_share`` the share of tokens
    guaranteed to checks while submits wait. The policy is in the
    module docstring.
    """

    __slots__ = (
        "_answered",
        "_burst",
        "_candidate",
        "_check_credit",
        "_checkpoint",
        "_clock",
        "_closed",
        "_good",
        "_increase",
        "_last_cut",
        "_last_limited_rate",
        "_last_retry_after",
        "_max_rate",
        "_min_rate",
        "_ok",
        "_paused_until",
        "_peak_limited_rate",
        "_rate",
        "_recent",
        "_recent_429",
        "_seq",
        "_share_429",
        "_stamp",
        "_start",
        "_timer",
        "_tokens",
        "_waiters",
        "check_share",
        "granted",
        "rate_limited",
        "sporadic_429",
    )

    def __init__(
        self,
        rate: float | None = 50.0,
        *,
        max_rate: float | None = None,
        min_rate: float = 0.5,
        increase: float | None = None,
        check_share: float = 0.25,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if rate is not None and not rate > 0:
            raise ValueError("rate must be positive or None")
        if max_rate is not None and not max_rate > 0:
            raise ValueError("max_rate must be positive or None")
        if not 0.0 <= check_share <= 1.0:
            raise ValueError("check_share must be within [0, 1]")
        if rate is None:
            self._max_rate = max_rate
        else:
            self._max_rate = max_rate if max_rate is not None else max(rate, DEFAULT_MAX_RATE)
            rate = min(rate, self._max_rate)
        self._start = rate
        self._rate = rate if rate is not None else float("inf")
        self._min_rate = min_rate
        self._increase = increase if increase is not None else 0.25 * (rate or 20.0)
        self.check_share = check_share
        self._clock = clock or _loop_clock
        self._stamp = self._clock()
        self._burst = self._burst_for(self._rate)
        self._tokens = self._burst
        self._paused_until = 0.0
        self._last_cut = float("-inf")
        self._last_limited_rate: float | None = None
        self._peak_limited_rate = 0.0
        self._last_retry_after: float | None = None
        # The highest answer rate the server sustained (answers within the
        # last PROVE_SECONDS) without a real 429: a 429 while sending no
        # faster is sporadic unless 429s cluster.
        # The configured rate counts as proven until a real 429 says otherwise
        # (it is the user's word); an unlimited budget has nothing proven.
        self._good = rate if rate is not None else 0.0
        # Promotion waits a window: the rate measured at one checkpoint
        # becomes proven at the next if no real 429 came between (else a
        # probe would prove itself while it runs).
        self._candidate = 0.0
        self._checkpoint = self._stamp
        # The long-run share of 429s (sporadic ones set it): a cluster is
        # counted above what that share alone would give.
        self._share_429 = 0.0
        self._answered: collections.deque[float] = collections.deque()  # every answer
        self._ok: collections.deque[float] = collections.deque()  # answers not 429
        # The last RECENT answers (True: a 429), for clustering.
        self._recent: collections.deque[bool] = collections.deque(maxlen=RECENT)
        self._recent_429 = 0
        self._check_credit = 0.0
        # Waiters per priority, first come first served within one.
        self._waiters: dict[int, collections.deque[asyncio.Future[None]]] = {
            int(p): collections.deque() for p in Priority
        }
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.granted = 0
        self.rate_limited = 0
        self.sporadic_429 = 0
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
    def burst(self) -> float:
        """The bucket's size: how many tokens may go out at once."""
        return self._burst

    @property
    def level(self) -> float:
        """Tokens in the bucket now (for planning: ``_timing.spread_checks``)."""
        self._refill(self._clock())
        return self._tokens

    @property
    def headroom(self) -> bool:
        """True while slow start may still raise the rate: below its ceiling,
        and no real rate limit met yet. The scheduler spreads checks
        ahead of time only without headroom (demand past the rate raises it)."""
        ceiling = self._ceiling()
        return self._last_limited_rate is None and self._rate < ceiling

    @property
    def max_rate(self) -> float | None:
        """The ceiling of the rate's growth (None: an unlimited budget never limited)."""
        return self._max_rate

    @property
    def waiting(self) -> int:
        """How many callers are waiting for a token."""
        # Cancelled waiters stay queued until they reach the head: skip them.
        return sum(1 for q in self._waiters.values() for fut in q if not fut.done())

    def _has_waiters(self) -> bool:
        return any(self._waiters.values())

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
        """Wait for a token; submits before cancels before checks, but checks
        get at least ``check_share`` of the tokens while submits wait.

        Raises ClientStateError once the budget is closed.
        """
        if self._closed:
            raise ClientStateError("the client is closed")
        now = self._clock()
        if not self._has_waiters() and now >= self._paused_until:
            self._refill(now)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                self.granted += 1
                return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[int(priority)].append(fut)
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
        if self._timer is not None or not self._has_waiters():
            return
        now = self._clock()
        self._refill(now)
        wait = max(self._paused_until - now, 0.0)
        if self._tokens < 1.0 and self._rate != float("inf"):
            # At least a microsecond: a token short by a rounding error would
            # otherwise arm a timer the clock cannot tell from now, forever.
            wait = max(wait, (1.0 - self._tokens) / self._rate, 1e-6)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(wait, self._wake)

    def _next_waiter(self) -> asyncio.Future[None] | None:
        """The waiter the next token goes to (dropping cancelled ones), or None."""
        queues = self._waiters
        for q in queues.values():
            while q and q[0].done():
                q.popleft()
        checks = queues[int(Priority.CHECK)]
        others = [q for p, q in queues.items() if p != int(Priority.CHECK) and q]
        if checks and others:
            # Contested: checks earn a share of the tokens, so a submit
            # backlog never starves the jobs already running.
            self._check_credit += self.check_share
            if self._check_credit >= 1.0:
                self._check_credit -= 1.0
                return checks.popleft()
            return others[0].popleft()
        if others:
            return others[0].popleft()
        return checks.popleft() if checks else None

    def _wake(self) -> None:
        self._timer = None
        now = self._clock()
        if now >= self._paused_until:
            self._refill(now)
            while self._tokens >= 1.0:
                fut = self._next_waiter()
                if fut is None:
                    break
                self._tokens -= 1.0
                self.granted += 1
                fut.set_result(None)
        for q in self._waiters.values():
            while q and q[0].done():
                q.popleft()
        self._arm()

    def _note(self, limited: bool) -> None:
        recent = self._recent
        if len(recent) == recent.maxlen:
            # The long-run share learns from answers as they leave the recent
            # window: a cluster being judged must not raise its own bar.
            old = recent[0]
            self._share_429 += (float(old) - self._share_429) / 200.0
            if old:
                self._recent_429 -= 1
        recent.append(limited)
        if limited:
            self._recent_429 += 1

    @staticmethod
    def _per_second(times: collections.deque[float], now: float) -> float:
        """Entries per second over the last ``PROVE_SECONDS`` (dropping older ones)."""
        while times and times[0] <= now - PROVE_SECONDS:
            times.popleft()
        return len(times) / PROVE_SECONDS

    def on_success(self) -> None:
        """Record an answer that was not a 429: win back rate, and probe upward under demand."""
        self._note(False)
        now = self._clock()
        self._answered.append(now)
        self._ok.append(now)
        sustained = self._per_second(self._ok, now)
        if now - self._checkpoint >= PROVE_SECONDS:
            # The server took ``candidate`` a window ago, and no real 429 since.
            self._good = max(self._good, min(self._candidate, sustained))
            self._candidate = sustained
            self._checkpoint = now
        if self._rate == float("inf"):
            return
        limit = self._last_limited_rate
        ceiling = self._ceiling()
        if self._rate >= ceiling:
            return
        start = self._start if self._start is not None else self._peak_limited_rate
        if limit is not None and 0.9 * limit <= self._rate < 1.1 * limit:
            # Near the rate that last drew a real 429: 0.1% a request, so a
            # client settles just under a server's limit and probes it about
            # once a thousand answers (past the starting rate only under demand).
            cap = ceiling if self._has_waiters() else min(ceiling, start)
            if self._rate < cap:
                self._set_rate(min(cap, self._rate * 1.001))
            return
        if self._rate < start and limit is not None:
            # Winning back what a 429 took (and past 1.1x that rate without a
            # new 429, it was no rate limit): 2% a request, at least 0.02/s,
            # or recovery at low rates would take minutes.
            self._set_rate(min(ceiling, start, self._rate + max(self._rate * 0.02, 0.02)))
            return
        if not self._has_waiters():
            return  # no demand past the rate: a rate not used proves nothing
        # Additive increase: ``increase`` requests/s per second of demand
        # (one success is 1/rate of a second).
        step = self._increase / self._rate
        if limit is None:
            # Slow start: no real 429 yet, so nothing says where the limit is.
            # ln 2 / SLOW_START_DOUBLING per answer doubles the rate every
            # SLOW_START_DOUBLING seconds of demand (answers come at the rate).
            step = max(step, _LN2 / SLOW_START_DOUBLING)
        self._set_rate(min(ceiling, self._rate + step))

    def _bar(self, sending: float) -> int:
        """How many of the last RECENT answers must be 429s for sporadic ones
        (at the learnt share) to make such a cluster less than once in 20 s:
        the more 429s a second, the rarer a cluster each must be. (Once a
        minute measured 1.0-1.1% of answers 429 against a 100/s limit, the
        bar too high there; 20 s: 0.8%, and 3% sporadic 429s still pass.)"""
        per_window = 20.0 * max(self._share_429 * sending, 1.0)
        return _tail(self._share_429, 1.0 / per_window)

    def _slow_start(self) -> bool:
        """No real 429 yet, and the rate grown past where it started (an
        unlimited budget has no slow start: its first real 429 sets a rate)."""
        return (
            self._last_limited_rate is None
            and self._start is not None
            and self._start < self._rate < float("inf")
        )

    def _ceiling(self) -> float:
        if self._max_rate is not None:
            return self._max_rate
        return self._peak_limited_rate  # an unlimited budget: what drew its 429

    def on_rate_limited(self, retry_after: float | None) -> None:
        """Record a 429: a real limit cuts the rate and pauses everyone; a sporadic one neither.

        Real: 429s cluster (``CLUSTER`` of the last ``RECENT`` answers), the
        Retry-After grew, or the rate was above the last proven one (a probe
        past the limit). Sporadic: an isolated 429 at a proven rate.
        """
        self.rate_limited += 1
        self._note(True)
        now = self._clock()
        grew = (
            retry_after is not None
            and self._last_retry_after is not None
            and retry_after > self._last_retry_after
        )
        self._last_retry_after = retry_after
        if now >= self._paused_until:
            # (While paused nothing new goes out: these answers were sent before the cut.)
            self._answered.append(now)
        sending = self._per_second(self._answered, now)
        # What sporadic 429s alone would put among the recent answers. Past
        # SPORADIC_MAX_SHARE of all answers, 429s are no longer sporadic: a
        # limit the client keeps hitting must not be learned as the norm.
        persistent = self._share_429 > SPORADIC_MAX_SHARE
        expected = 2.0 * min(self._share_429, SPORADIC_MAX_SHARE) * RECENT
        clustered = (
            self._recent_429 >= max(CLUSTER + round(expected), self._bar(sending))
            or grew
            or persistent
        )
        # Sending faster than the server has sustained: a probe past its limit,
        # unless the sporadic share alone explains this 429.
        probing = sending > 1.05 * self._good and self._recent_429 >= 1 + round(expected)
        if probing and self._slow_start():
            # Slow start outruns any proof, so every 429 in it is "a probe":
            # one isolated 429 would end it wherever a sporadic one fell. Past
            # a real limit the share refused grows with the overshoot (half
            # at twice the limit): its 429s cluster within a few answers.
            probing = False
        if not (clustered or probing):
            # Isolated, at a rate the server has sustained: not its limit.
            # The request's own retry honours its Retry-After; nobody else waits.
            self.sporadic_429 += 1
            return
        if now >= self._paused_until and now - self._last_cut >= CUT_INTERVAL:
            # A burst of 429s (from requests already in flight, or within a
            # second) is one signal, not many: cut once.
            self._last_cut = now
            # What drew it: the rate actually sent where a second of answers
            # says so (the budget's rate may be far above the demand).
            observed = self._rate if self._rate != float("inf") else self._observed_rate()
            if sending * PROVE_SECONDS >= 5:
                observed = min(observed, sending)
            target = observed * 0.5
            took = self._per_second(self._ok, now)
            if took * PROVE_SECONDS >= 5:
                # What the server took while refusing the rest: its limit, about.
                target = max(target, 0.9 * took)
                observed = min(observed, max(took, target))
            self._last_limited_rate = observed
            self._peak_limited_rate = max(self._peak_limited_rate, observed)
            if probing and not clustered and 0.95 * self._good > target:
                # A probe that failed alone: back just under the proven rate,
                # which stays proven.
                target = 0.95 * self._good
            else:
                self._good = min(self._good, target)  # what it sustained was no limit
            self._candidate = 0.0
            self._checkpoint = now
            self._answered.clear()
            self._ok.clear()
            self._set_rate(max(self._min_rate, target))
            self._tokens = min(self._tokens, 0.0)
        pause = retry_after if retry_after is not None else 1.0 / max(self._rate, 1e-9)
        self._paused_until = max(self._paused_until, now + pause)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._has_waiters():
            self._arm()

    def _observed_rate(self) -> float:
        # With no configured rate, the best guess of what drew the 429 is a
        # generous one; halving it from there converges in a few steps.
        return 100.0

    def _set_rate(self, rate: float) -> None:
        self._refill(self._clock())
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
        for q in self._waiters.values():
            for fut in q:
                if not fut.done():
                    # Not fut.cancel(): that would raise CancelledError in a caller's
                    # task that nobody cancelled.
                    fut.set_exception(
                        ClientStateError("the client was closed while this request waited")
                    )
            q.clear()


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

    @property
    def waiting(self) -> int:
        """How many callers wait for a slot (the scheduler then checks near-done jobs tighter)."""
        return sum(1 for fut in self._waiters if not fut.done())

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
    429); ``max_requests_per_second`` is the ceiling it may grow to while the
    server allows more (None: 2000/s, see the module docstring);
    ``max_in_flight`` caps jobs in flight. One process, one account.
    """

    __slots__ = ("_budget", "_slots")

    def __init__(
        self,
        *,
        requests_per_second: float | None = 20.0,
        max_in_flight: int = 64,
        max_requests_per_second: float | None = None,
    ) -> None:
        self._slots = SlotLimit(max_in_flight)
        self._budget = RequestBudget(requests_per_second, max_rate=max_requests_per_second)

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
