"""The polling scheduler: one per client, for every in-flight request.

It keeps a heap of ``(next check time, job)``. One dispatcher task sleeps until
the earliest check is due, takes a token from the client's request budget,
then pops whatever is most due *at that moment* (so under a tight budget the
requests go to the jobs that have waited longest past their due time) and
runs the check in a short task, at most ``max_concurrent_checks`` at once. A
thousand waiting jobs cost a thousand heap entries, not a thousand sleeping
tasks.

When each job is checked is ``_timing.py``'s business. Jobs of a model with
no prior and nothing learned yet are *parked*: a probe round checks a few of
them (rotating through all of them), and the first success teaches the model's
minimum duration, which unparks the rest.

A failed check (5xx, dropped connection, malformed body, 429) backs off that
job alone; nothing a check raises stops the dispatcher.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import attrs

from ._errors import (
    APIStatusError,
    AuthenticationError,
    ClientStateError,
    JobCancelledError,
    JobFailedError,
    NotFoundError,
)
from ._frontier import QueueFrontier
from ._models import JobState, Result, Status
from ._timing import ModelLatency, PollPolicy

__all__ = ["JobEvent", "PollScheduler"]

logger = logging.getLogger("runcomfy_async")


class CheckAPI(Protocol):
    """What the scheduler needs of the API: single-try checks and the request budget."""

    async def check(
        self, request_id: str, *, include_cost: bool = False, acquired: bool = False
    ) -> Result: ...

    async def peek_status(self, request_id: str, *, acquired: bool = False) -> Status: ...

    async def acquire_check_token(self) -> None: ...


@attrs.frozen
class JobEvent:
    """A change in a job's state, as the scheduler saw it.

    ``state`` is the new state; ``queue_position`` where known; ``error`` the
    exception a job ended with (failed, cancelled, timed out, vanished).
    """

    request_id: str
    model_id: str
    state: JobState
    queue_position: int | None = None
    error: BaseException | None = None
    at: float = attrs.field(factory=lambda: _now())


Listener = Callable[[JobEvent], None]


class Tracked:
    """The scheduler's record of one in-flight request (internal; see ``Job``)."""

    __slots__ = (
        "checking",
        "detected_at",
        "due",
        "earliest",
        "failures",
        "in_cohort",
        "in_fifo",
        "last_not_done",
        "last_state",
        "model_id",
        "not_found",
        "on_done",
        "order",
        "outcome",
        "parked",
        "queue_position",
        "request_id",
        "seq",
        "submitted",
        "waiter",
    )

    def __init__(self, request_id: str, model_id: str, submitted: float) -> None:
        self.request_id = request_id
        self.model_id = model_id
        self.submitted = submitted
        self.earliest: float | None = None
        self.due = 0.0
        self.seq = -1
        self.last_state = JobState.QUEUED
        self.queue_position: int | None = None
        self.last_not_done = submitted
        self.failures = 0
        self.not_found = 0
        self.checking = False
        self.parked = False
        self.in_cohort = False
        self.in_fifo = False
        self.order = 0  # submit order among this scheduler's fresh jobs (FIFO inferences)
        self.outcome: Result | BaseException | None = None
        self.detected_at: float | None = None
        self.waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # One callback (the client's slot release), not a list: a list per job
        # costs memory for 10,000 jobs in flight.
        self.on_done: Callable[[Tracked], None] | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None


class PollScheduler:
    """Tracks every in-flight request of one client and resolves each when it ends.

    Started lazily by the first :meth:`track`, stopped by :meth:`aclose`.
    """

    def __init__(
        self,
        api: CheckAPI,
        policy: PollPolicy,
        *,
        include_cost: bool = False,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._api = api
        self.policy = policy
        self._include_cost = include_cost
        # The loop's clock by default: the loop's timers then agree with our
        # due times, and tests can run the scheduler on a virtual-time loop.
        self._clock = clock or loop_time
        self._heap: list[tuple[float, int, Tracked]] = []
        self._seq = itertools.count()
        self._jobs: dict[str, Tracked] = {}
        self._models: dict[str, ModelLatency] = {}
        # Per model with no success yet: the jobs probe rounds sample from.
        self._cohort: dict[str, collections.deque[Tracked]] = {}
        self._probe_due: dict[str, float] = {}
        # Per model, what FIFO order tells about queued jobs (see _frontier.py).
        self._frontiers: dict[str, QueueFrontier] = {}
        self._listeners: list[Listener] = []
        self._slots = asyncio.Semaphore(policy.max_concurrent_checks)
        self._tasks: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._wake_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.checks = 0
        self.check_failures = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._dispatcher else "idle")
        return (
            f"<PollScheduler {state} tracking={len(self._jobs)} checks={self.checks} "
            f"failures={self.check_failures}>"
        )

    # -- public surface ---------------------------------------------------------

    @property
    def tracking(self) -> int:
        """How many requests are in flight."""
        return len(self._jobs)

    def latency(self, model_id: str) -> ModelLatency:
        """What the scheduler has learned of ``model_id`` (created on demand)."""
        model = self._models.get(model_id)
        if model is None:
            prior = self.policy.priors.get(model_id)
            model = ModelLatency(
                None if prior is None else self.policy.scaled(prior), self.policy.learn_after
            )
            self._models[model_id] = model
        return model

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every job state change (it must not block)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; a no-op if it was not added."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def track(
        self,
        request_id: str,
        model_id: str,
        *,
        submitted: float | None = None,
        fresh: bool = True,
    ) -> Tracked:
        """Start tracking ``request_id`` (or return its existing record).

        ``fresh``: the request was submitted just now, after every request of
        its model tracked before; adopted requests (``fresh=False``) are left
        out of queue-order inferences, since their place in the queue is unknown.
        """
        if self._closed:
            raise ClientStateError("the scheduler is closed")
        existing = self._jobs.get(request_id)
        if existing is not None:
            return existing
        now = self._clock()
        t = Tracked(request_id, model_id, now if submitted is None else submitted)
        self._jobs[request_id] = t
        if fresh and self.policy.assume_fifo_queue:
            t.in_fifo = True
            t.order = next(self._seq)
            self._frontier(model_id).add(t)
        model = self.latency(model_id)
        minimum = model.minimum()
        if minimum is None:
            self._park(t, now)
        else:
            if model.finished == 0:
                # A prior is a belief: a few probes verify it until a job succeeds.
                self._join_cohort(t)
            t.earliest = t.submitted + minimum
            self._push(
                t, self.policy.next_check(now=now, submitted=t.submitted, earliest=t.earliest)
            )
        self._ensure_running()
        self._emit(t, JobState.QUEUED)
        return t

    def check_soon(self, request_id: str) -> None:
        """Check ``request_id`` as soon as the budget allows (e.g. after a cancel)."""
        t = self._jobs.get(request_id)
        if t is not None and not t.checking:
            self._unpark(t)
            self._push(t, self._clock())

    async def aclose(self) -> None:
        """Stop checking, fail every unfinished job with ClientStateError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        tasks = list(self._tasks)
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        for task in tasks:
            task.cancel()
        try:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._fail_all()

    def _fail_all(self) -> None:
        for t in list(self._jobs.values()):
            self._finish(
                t,
                ClientStateError(
                    f"the client was closed while job {t.request_id} ({t.model_id}) was in "
                    "flight; it may still run on the server: resume it with "
                    "client.track(request_id, model_id)"
                ),
            )
        self._heap.clear()
        self._cohort.clear()
        self._frontiers.clear()

    # -- heap -------------------------------------------------------------------

    def _push(self, t: Tracked, due: float) -> None:
        t.due = due
        t.seq = next(self._seq)
        heapq.heappush(self._heap, (due, t.seq, t))
        if self._heap[0][2] is t:
            self._poke()

    def _peek(self) -> Tracked | None:
        heap = self._heap
        now = -1.0
        while heap:
            due, seq, t = heap[0]
            if t.seq != seq or t.done or t.checking:
                heapq.heappop(heap)  # stale entry: rescheduled, finished or parked since
                continue
            if t.in_fifo and t.last_state is JobState.QUEUED:
                if now < 0:
                    now = self._clock()
                if due <= now and self._infer_queued(t, now):
                    continue  # rescheduled without spending a request
            return t
        return None

    def _infer_queued(self, t: Tracked, now: float) -> bool:
        """Reschedule ``t`` if an older job of its model was seen queued since ``t``'s check."""
        frontier = self._frontiers.get(t.model_id)
        seen_at = frontier.queued_at(t) if frontier is not None else None
        if seen_at is None or seen_at <= t.last_not_done:
            return False
        minimum = self.latency(t.model_id).minimum()
        if minimum is None:
            return False
        t.last_not_done = seen_at
        t.earliest = max(t.earliest or 0.0, seen_at + minimum)
        due = self.policy.next_check(now=seen_at, submitted=t.submitted, earliest=t.earliest)
        if due <= now:
            return False
        self._push(t, due)
        return True

    def _frontier(self, model_id: str) -> QueueFrontier:
        frontier = self._frontiers.get(model_id)
        if frontier is None:
            frontier = self._frontiers[model_id] = QueueFrontier()
        return frontier

    def _run_frontiers(self, now: float) -> float | None:
        """Probe near each model's start frontier while its jobs queue; next due time."""
        next_due: float | None = None
        for model_id, frontier in list(self._frontiers.items()):
            if not frontier.unknown:
                frontier.next_round = None
                continue
            minimum = self.latency(model_id).minimum()
            if minimum is None:
                continue  # parked: the probe rounds have this model
            interval = max(
                self.policy.lag_fraction * minimum, self.policy.scaled(self.policy.min_interval)
            )
            if frontier.next_round is None:
                frontier.next_round = now + interval
            if frontier.next_round <= now:
                # Only while jobs are seen queued; otherwise a rare sample, to
                # notice when a queue builds up.
                active = now - frontier.last_queued_seen <= 5 * interval
                if active:
                    frontier.next_round = now + interval
                else:
                    # Back off while samples find no queue: 10, 20, 40, 80 intervals.
                    frontier.next_round = now + 10 * interval * 2 ** min(frontier.idle_rounds, 3)
                    frontier.idle_rounds += 1
                picked = frontier.candidates(self.policy.frontier_probes)
                if not active:
                    # One sample among the youngest: where a queue would show first.
                    picked = picked[-1:]
                for t in picked:
                    if t.checking or t.parked or t.due <= now + interval:
                        continue  # checked soon anyway
                    t.seq = next(self._seq)
                    t.due = now
                    heapq.heappush(self._heap, (now, t.seq, t))
            due = frontier.next_round
            next_due = due if next_due is None else min(next_due, due)
        return next_due

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _ensure_running(self) -> None:
        if self._dispatcher is None and not self._closed:
            self._dispatcher = asyncio.get_running_loop().create_task(
                self._dispatch(), name="runcomfy-async poll scheduler"
            )

    # -- parking (models with nothing known) ----------------------------------

    def _park(self, t: Tracked, now: float) -> None:
        # Parking drops the job's heap entry (a new seq makes it stale); the job
        # waits in its model's cohort for a probe round or for the model to learn.
        t.seq = next(self._seq)
        t.parked = True
        self._join_cohort(t)

    def _join_cohort(self, t: Tracked) -> None:
        if not t.in_cohort:
            t.in_cohort = True
            self._cohort.setdefault(t.model_id, collections.deque()).append(t)
        if t.model_id not in self._probe_due:
            prior = self.latency(t.model_id).minimum()
            first = self.policy.scaled(self.policy.probe_first_check)
            if prior is not None:
                first = max(first, 0.1 * prior)
            self._probe_due[t.model_id] = t.submitted + first
            self._poke()

    def _unpark(self, t: Tracked) -> None:
        # Lazy: the cohort drops it when a probe round or the learning meets it.
        t.parked = False
        t.in_cohort = False

    def _run_probes(self, now: float) -> float | None:
        """Dispatch due probe rounds; return when the next one is due."""
        next_due: float | None = None
        for model_id, due in list(self._probe_due.items()):
            queue = self._cohort.get(model_id)
            while queue and (queue[0].done or not queue[0].in_cohort):
                queue.popleft()
            if not queue:
                self._cohort.pop(model_id, None)
                del self._probe_due[model_id]
                continue
            if due <= now:
                unknown = self.latency(model_id).minimum() is None
                if unknown:
                    per_round = max(2, -(-len(queue) // self.policy.probe_share))
                    per_round = min(per_round, self.policy.probes_per_round)
                else:
                    per_round = self.policy.verify_probes_per_round
                oldest = queue[0].submitted
                sampled = 0
                for _ in range(len(queue)):
                    if sampled >= per_round:
                        break
                    t = queue.popleft()
                    if t.done or not t.in_cohort:
                        continue
                    queue.append(t)  # rotate: each round samples other jobs
                    oldest = min(oldest, t.submitted)
                    if t.checking or (not t.parked and t.due <= now):
                        continue  # it is being checked, or will be right away
                    t.seq = next(self._seq)
                    t.due = now
                    heapq.heappush(self._heap, (now, t.seq, t))
                    sampled += 1
                if unknown:
                    due = self.policy.next_check(now=now, submitted=oldest, earliest=None)
                else:
                    due = oldest + (now - oldest) * self.policy.verify_ratio
                self._probe_due[model_id] = due
            next_due = due if next_due is None else min(next_due, due)
        return next_due

    def _end_probing(self, model_id: str, now: float) -> None:
        """A job of the model succeeded: stop probing, schedule every parked job."""
        minimum = self.latency(model_id).minimum()
        if minimum is None:
            return  # nothing learned: the probes must go on, or parked jobs wait forever
        cohort = self._cohort.pop(model_id, None)
        self._probe_due.pop(model_id, None)
        if not cohort:
            return
        for t in cohort:
            if t.done or not t.in_cohort:
                continue
            t.in_cohort = False
            if not t.parked:
                continue
            t.parked = False
            t.earliest = t.submitted + minimum
            # Jobs already past the minimum may have finished: check them now.
            due = (
                now
                if t.earliest <= now
                else self.policy.next_check(now=now, submitted=t.submitted, earliest=t.earliest)
            )
            self._push(t, due)

    def _learned(self, model_id: str, now: float) -> None:
        """The model's minimum moved: bring forward jobs scheduled from a higher one."""
        minimum = self.latency(model_id).minimum()
        if minimum is None:
            return
        # Jobs scheduled from a too-high prior may be finished long before
        # their due time: bring them forward (never push anyone later).
        for t in self._jobs.values():
            if t.model_id != model_id or t.done or t.checking or t.parked:
                continue
            earliest = t.submitted + minimum
            if t.last_state is JobState.QUEUED:
                earliest = max(earliest, t.last_not_done + minimum)
            if t.earliest is None or earliest < t.earliest:
                t.earliest = earliest
                due = self.policy.next_check(
                    now=max(now, t.last_not_done), submitted=t.submitted, earliest=earliest
                )
                if due < t.due:
                    self._push(t, due)

    # -- the dispatcher -------------------------------------------------------

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        have_slot = have_token = False
        try:
            while True:
                now = self._clock()
                probe_due = self._run_probes(now) if self._probe_due else None
                if self._frontiers:
                    frontier_due = self._run_frontiers(now)
                    if frontier_due is not None:
                        probe_due = (
                            frontier_due if probe_due is None else min(probe_due, frontier_due)
                        )
                t = self._peek()
                due = t.due if t is not None else None
                if probe_due is not None:
                    due = probe_due if due is None else min(due, probe_due)
                if t is None or t.due > now:
                    self._wake = loop.create_future()
                    if due is not None:
                        delay = max(due - now, 0.0)
                        self._wake_timer = loop.call_later(delay, self._poke)
                    await self._wake
                    if self._wake_timer is not None:
                        self._wake_timer.cancel()
                        self._wake_timer = None
                    continue
                if not have_slot:
                    await self._slots.acquire()
                    have_slot = True
                if not have_token:
                    await self._api.acquire_check_token()
                    have_token = True
                # The most-due job may have changed while we waited for a token.
                t = self._peek()
                if t is None or t.due > self._clock():
                    continue
                heapq.heappop(self._heap)
                t.checking = True
                have_slot = have_token = False
                task = loop.create_task(self._check(t))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            if have_slot:
                self._slots.release()

    async def _check(self, t: Tracked) -> None:
        self.checks += 1
        use_status = bool(self._listeners) and t.last_state is JobState.QUEUED
        try:
            if use_status:
                status = await self._api.peek_status(t.request_id, acquired=True)
                self._on_status(t, status)
            else:
                result = await self._api.check(
                    t.request_id, include_cost=self._include_cost, acquired=True
                )
                self._on_result(t, result)
        except asyncio.CancelledError:
            raise
        except NotFoundError as exc:
            self._on_not_found(t, exc)
        except (AuthenticationError, APIStatusError) as exc:
            if isinstance(exc, AuthenticationError) or not _transient(exc):
                # 4xx other than 404/429: retrying rarely helps; give it a few tries.
                t.failures = max(t.failures, self.policy.max_check_failures - 3)
            self._on_check_error(t, exc)
        except Exception as exc:  # never let one check stop the scheduler
            self._on_check_error(t, exc)
        finally:
            t.checking = False
            self._slots.release()

    # -- outcomes --------------------------------------------------------------

    def _on_status(self, t: Tracked, status: Status) -> None:
        now = self._clock()
        t.failures = t.not_found = 0
        t.queue_position = status.queue_position
        if status.state.is_terminal:
            # The outputs live on the result route: fetch them right away (and
            # leave QUEUED, or the next check would take the status route again).
            t.last_state = status.state
            self._push(t, now)
            return
        self._not_done(t, status.state, now)

    def _on_result(self, t: Tracked, result: Result) -> None:
        now = self._clock()
        t.failures = t.not_found = 0
        if result.status is JobState.SUCCEEDED:
            self._observe(t, result, now)
            self._finish(t, result)
        elif result.status is JobState.FAILED:
            self._finish(
                t,
                JobFailedError(
                    f"job {t.request_id} ({t.model_id}) failed: {_short(result.error)}",
                    request_id=t.request_id,
                    model_id=t.model_id,
                    error=result.error,
                    result=result,
                ),
            )
        elif result.status is JobState.CANCELLED:
            self._finish(
                t,
                JobCancelledError(
                    f"job {t.request_id} ({t.model_id}) was cancelled",
                    request_id=t.request_id,
                    model_id=t.model_id,
                ),
            )
        else:
            self._not_done(t, result.status, now)

    def _not_done(self, t: Tracked, state: JobState, now: float) -> None:
        t.last_not_done = now
        if state is not t.last_state and state is not JobState.UNKNOWN:
            t.last_state = state
            self._emit(t, state)
        elif state is JobState.QUEUED and self._listeners:
            self._emit(t, state)
        if t.in_fifo and state is JobState.QUEUED:
            self._frontier(t.model_id).last_queued_seen = now
        minimum = self.latency(t.model_id).minimum()
        if minimum is None:
            # Still nothing known of this model: back to the parking lot.
            self._park(t, now)
            return
        if t.earliest is None:
            t.earliest = t.submitted + minimum
        if state is JobState.QUEUED:
            # Not started yet: it cannot finish before a full run from now.
            t.earliest = max(t.earliest, now + minimum)
            if t.in_fifo:
                self._frontier(t.model_id).seen_queued(t, now)
        elif state is JobState.RUNNING and t.in_fifo:
            self._frontier(t.model_id).seen_started(t)
        self._push(t, self.policy.next_check(now=now, submitted=t.submitted, earliest=t.earliest))

    def _observe(self, t: Tracked, result: Result, now: float) -> None:
        duration = _server_duration(result)
        if duration is None or duration > now - t.submitted + 5.0:
            duration = t.last_not_done - t.submitted  # a lower bound we are sure of
        # Done at its first check: all we know is that this model can be fast.
        duration = max(duration, self.policy.scaled(self.policy.min_interval))
        moved = self.latency(t.model_id).observe(duration)
        if t.model_id in self._cohort:
            self._end_probing(t.model_id, now)
        if moved:
            self._learned(t.model_id, now)

    def _on_not_found(self, t: Tracked, exc: NotFoundError) -> None:
        t.not_found += 1
        if t.not_found >= self.policy.not_found_confirmations:
            self._finish(t, exc)
            return
        logger.info("request %s not found; confirming", t.request_id)
        self._push(t, self._clock() + self.policy.backoff(t.not_found))

    def _on_check_error(self, t: Tracked, exc: Exception) -> None:
        self.check_failures += 1
        t.failures += 1
        if t.failures >= self.policy.max_check_failures:
            logger.warning(
                "giving up on request %s after %d failed checks: %r", t.request_id, t.failures, exc
            )
            self._finish(t, exc)
            return
        delay = self.policy.backoff(t.failures)
        retry_after = getattr(exc, "retry_after", None)  # RateLimitError, ServerError
        if isinstance(retry_after, (int, float)):
            # Honour the server, within reason: one absurd Retry-After must
            # not park a job for a day.
            delay = max(delay, min(float(retry_after), self.policy.scaled(self.policy.backoff_max)))
        logger.debug("check of %s failed (%r); again in %.2fs", t.request_id, exc, delay)
        self._push(t, self._clock() + delay)

    def _finish(self, t: Tracked, outcome: Result | BaseException) -> None:
        if t.done:
            return
        t.outcome = outcome
        t.detected_at = self._clock()
        self._jobs.pop(t.request_id, None)
        self._unpark(t)
        if t.in_fifo:
            frontier = self._frontiers.get(t.model_id)
            if frontier is not None:
                frontier.seen_started(t)
        if not t.waiter.done():
            t.waiter.set_result(None)
        if isinstance(outcome, Result):
            self._emit(t, outcome.status)
        elif isinstance(outcome, JobCancelledError):
            self._emit(t, JobState.CANCELLED, outcome)
        else:
            self._emit(t, JobState.FAILED, outcome)
        callback, t.on_done = t.on_done, None
        if callback is not None:
            try:
                callback(t)
            except Exception:
                logger.exception("a job completion callback failed")

    def _emit(self, t: Tracked, state: JobState, error: BaseException | None = None) -> None:
        if not self._listeners:
            return
        event = JobEvent(t.request_id, t.model_id, state, t.queue_position, error, self._clock())
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("a job event listener failed")


def loop_time() -> float:
    """The running event loop's clock (``time.monotonic`` for asyncio's loops)."""
    return asyncio.get_running_loop().time()


def _now() -> float:
    # The loop's clock inside a loop; the same monotonic clock outside one.
    try:
        return loop_time()
    except RuntimeError:
        return time.monotonic()


def _short(value: Any, limit: int = 300) -> str:
    """A bounded repr: a huge error payload must not flood messages and logs."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _transient(exc: APIStatusError) -> bool:
    return exc.status_code == 429 or exc.status_code >= 500


def _server_duration(result: Result) -> float | None:
    """Seconds between the server's created_at and finished_at, if both parse."""
    start, end = _parse_time(result.created_at), _parse_time(result.finished_at)
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds > 0 else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
