"""The polling scheduler: one per client, for every in-flight request.

Jobs wait in the :class:`~._due.DueQueue`. One run task sleeps until the
earliest check is due, takes a ticket from the client's request budget, then
pops whatever is most due *at that moment* (so under a tight budget the
requests go to the jobs that have waited longest past their due time) and
hands the check to one of ``max_concurrent_checks`` workers in its task
group. A thousand waiting jobs cost a thousand
heap entries, not a thousand sleeping tasks.

When each job is checked is ``_timing.py``'s business; models with nothing
known are probed by ``_cohort.py``; FIFO queues are read by ``_frontier.py``.
A failed check backs off that job alone (``_retry.classify_check`` says how
hard, ``PollPolicy.backoff`` how long, at the job's own scale) and keeps its
place in line; a server that fails every check for a while is spared, and
the jobs it held back come forward when it answers again. Nothing a check
raises stops the dispatcher. The scheduler knows
"check this id" through :class:`CheckAPI`, nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import anyio

from .._errors import ClientStateError, JobCancelledError, NotFoundError
from .._limits import Budget, Ticket
from .._models import JobState, Result, Status
from .._queue_inference import QueueOrderMonitor
from .._retry import MAX_RETRY_AFTER, CheckDecision, cap_retry_after, classify_check
from .._timing import ModelLatency, PollPolicy, spread_checks
from ._cohort import ProbeCohorts
from ._due import DueQueue
from ._frontier import QueueFrontier
from ._outcomes import job_error, server_duration
from ._tracked import JobEvent, Listener, Tracked, loop_time

__all__ = ["CheckAPI", "PollScheduler"]

logger = logging.getLogger("runcomfy_async")


class CheckAPI(Protocol):
    """What the scheduler needs of the API: a ticket of the budget, single-try checks."""

    async def reserve(self) -> Ticket:
        """Take one request token at check priority."""
        ...

    async def check(
        self, request_id: str, *, include_cost: bool = False, ticket: Ticket | None = None
    ) -> Result:
        """One try of the result route, spending ``ticket``."""
        ...

    async def peek_status(self, request_id: str, *, ticket: Ticket | None = None) -> Status:
        """One try of the status route, spending ``ticket``."""
        ...


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
        slots_waiting: Callable[[], bool] | None = None,
        budget: Budget | None = None,
    ) -> None:
        self._api = api
        self.policy = policy
        self._include_cost = include_cost
        # The loop's clock by default: the loop's timers then agree with our
        # due times, and tests can run the scheduler on a virtual-time loop.
        self._clock = clock or loop_time
        self._due = DueQueue()
        self._jobs: dict[str, Tracked] = {}
        self._models: dict[str, ModelLatency] = {}
        self._cohorts = ProbeCohorts(policy, self._due, self.latency, self._poke)
        # Per model, what FIFO order tells about queued jobs (see _frontier.py).
        self._frontiers: dict[str, QueueFrontier] = {}
        # Per model, whether that FIFO order holds (see _queue_inference.py).
        self._monitors: dict[str, QueueOrderMonitor] = {}
        # Does a job wait for an in-flight slot? Then detection lag is idle
        # slot time, and checks near a job's likely end tighten.
        self._slots_waiting = slots_waiting or (lambda: False)
        # The request budget, to spread checks that come due together.
        self._budget = budget if budget is not None else getattr(api, "budget", None)
        self._next_spread = float("-inf")
        self._listeners: list[Listener] = []
        self._slots = asyncio.Semaphore(policy.max_concurrent_checks)
        self._runner: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._wake_timer: asyncio.TimerHandle | None = None
        self._closed = False
        # Failure handling (see _on_check_error): jobs waiting out a backoff,
        # by id: (timer, when it ends, the due time of the check that failed,
        # the job's seq while it waits); failed answers in a row, across jobs.
        self._cooling: dict[str, tuple[asyncio.TimerHandle, float, float, int]] = {}
        self._fail_streak = 0
        self._server_down = False
        # While the server looks down, one backed-off job keeps its regular
        # pace (the canary): its answer says when the server is back.
        self._canary: str | None = None
        self.checks = 0
        self.check_failures = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._runner else "idle")
        return (
            f"<PollScheduler {state} tracking={len(self._jobs)} checks={self.checks} "
            f"failures={self.check_failures}>"
        )

    # -- public surface ---------------------------------------------------------

    @property
    def tracking(self) -> int:
        """How many requests are in flight."""
        return len(self._jobs)

    def get(self, request_id: str) -> Tracked | None:
        """The record of ``request_id`` while it is in flight, else None."""
        return self._jobs.get(request_id)

    def latency(self, model_id: str) -> ModelLatency:
        """What the scheduler has learned of ``model_id`` (created on demand)."""
        model = self._models.get(model_id)
        if model is None:
            model = self._models[model_id] = self.policy.latency_model(model_id)
        return model

    def monitor(self, model_id: str) -> QueueOrderMonitor:
        """The evidence on whether ``model_id``'s queue runs in submit order (created on demand)."""
        monitor = self._monitors.get(model_id)
        if monitor is None:
            monitor = self._monitors[model_id] = QueueOrderMonitor(model_id)
        return monitor

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
        if fresh and self.policy.assume_fifo_queue and self.monitor(model_id).fifo:
            self._frontier(model_id).add(t)
        model = self.latency(model_id)
        minimum = model.minimum()
        if minimum is None:
            self._cohorts.park(t)
        else:
            if model.finished == 0:
                # A prior is a belief: a few probes verify it until a job succeeds.
                self._cohorts.join(t)
            t.earliest = t.submitted + minimum
            self._push(t, self._plan(t, now, t.earliest))
        self._ensure_running()
        self._emit(t, JobState.QUEUED)
        return t

    def check_soon(self, request_id: str) -> None:
        """Check ``request_id`` as soon as the budget allows (e.g. after a cancel)."""
        t = self._jobs.get(request_id)
        if t is not None and not t.checking:
            self._cohorts.leave(t)
            self._push(t, self._clock())

    async def aclose(self) -> None:
        """Stop checking, fail every unfinished job with ClientStateError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._wake_timer is not None:
            self._wake_timer.cancel()
        self._stop_cooling()
        runner = self._runner
        try:
            if runner is not None:
                # Cancelling the run task cancels its task group: every check.
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
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
        self._due.clear()
        self._stop_cooling()
        self._cohorts.clear()
        self._frontiers.clear()

    # -- scheduling -------------------------------------------------------------

    def _plan(self, t: Tracked, now: float, earliest: float | None) -> float:
        """When to check ``t``, not done at ``now``: ``plan_next`` at its model's scale."""
        model = self.latency(t.model_id)
        likely = model.likely_max()
        return self.policy.plan_next(
            now=now,
            submitted=t.submitted,
            earliest=earliest,
            minimum=model.minimum(),
            slots_waiting=self._slots_waiting() and not self._server_queue(t.model_id, now),
            likely_end=None if likely is None else t.submitted + likely,
        )

    def _server_queue(self, model_id: str, now: float) -> bool:
        """Jobs of this model were seen queued on the server within the last ``max_lag``.

        Then the server, not our in-flight cap, sets the pace: a slot freed
        sooner only queues its next job sooner there, so the tighter checks of
        the slot mode would cost requests and buy no makespan.
        """
        frontier = self._frontiers.get(model_id)
        window = self.policy.scaled(self.policy.max_lag)
        return frontier is not None and frontier.queued_since(now - window)

    def _push(self, t: Tracked, due: float) -> None:
        if self._due.push(t, due):
            self._poke()

    def _infer_queued(self, t: Tracked) -> bool:
        """Reschedule ``t`` if an older job of its model was seen queued since ``t``'s check."""
        if t.last_state is not JobState.QUEUED:
            return False
        frontier = self._frontiers.get(t.model_id)
        if frontier is None or t not in frontier or frontier.probing(t):
            return False
        now = self._clock()
        if t.due > now:
            return False
        seen_at = frontier.queued_at(t)
        if seen_at is None or seen_at <= t.queued_until:
            return False
        minimum = self.latency(t.model_id).minimum()
        if minimum is None:
            return False
        return self._hold_queued(t, seen_at, max(t.earliest or 0.0, seen_at + minimum), now)

    def _hold_queued(self, t: Tracked, seen_at: float, earliest: float, after: float) -> bool:
        """``t`` was (inferred) queued at ``seen_at``: check it from ``earliest`` on,
        if that plan comes after ``after`` and the queue-order monitor allows the skip."""
        due = self._plan(t, seen_at, earliest)
        if due <= after or not self.monitor(t.model_id).allow_skip():
            return False
        # ``last_not_done`` stays: it records real sightings only, which is
        # what ``_fifo_off`` falls back on if the order turns out not FIFO
        # (an inferred one kept there would hold the job late after that).
        t.queued_until = seen_at
        t.earliest = earliest
        self._push(t, due)
        return True

    def _date_starts(self, dated: list[tuple[Tracked, float]]) -> None:
        """Apply the last queued sighting of each job whose start a sighting just confirmed.

        Such a job was queued at ``seen_at`` (it or an older job was seen
        queued then), so it cannot finish before ``seen_at`` plus the model's
        minimum: its checks move later (never earlier). Each move is a skip
        the queue-order monitor audits like any other.
        """
        for t, seen_at in dated:
            if t.checking or t.last_state is not JobState.QUEUED or seen_at <= t.queued_until:
                continue  # known since, or under way: its own answer dates it
            if self._cohorts.is_parked(t):
                continue
            minimum = self.latency(t.model_id).minimum()
            if minimum is None:
                continue
            earliest = seen_at + minimum
            if t.earliest is None or earliest > t.earliest:
                self._hold_queued(t, seen_at, earliest, t.due)  # only ever later

    def _frontier(self, model_id: str) -> QueueFrontier:
        frontier = self._frontiers.get(model_id)
        if frontier is None:
            frontier = self._frontiers[model_id] = QueueFrontier()
        return frontier

    def _run_frontiers(self, now: float) -> float | None:
        """Probe near each model's start frontier while its jobs queue; next due time."""
        next_due: float | None = None
        for model_id, frontier in list(self._frontiers.items()):
            if frontier.settled():
                continue
            minimum = self.latency(model_id).minimum()
            if minimum is None:
                continue  # parked: the probe rounds have this model
            interval = self.policy.frontier_interval(minimum)
            picked, due = frontier.round(now, interval, self.policy.frontier_probes)
            if due is None:
                continue
            for t in picked:
                if self._cohorts.is_parked(t) or t.failures:
                    continue  # probe rounds check it, or it backs off (a Retry-After)
                if not t.checking and t.due > now + interval:
                    # (a check under way, or due within the interval anyway,
                    # answers the search as well, for no extra request)
                    self._due.push(t, now)
            next_due = due if next_due is None else min(next_due, due)
        return next_due

    def _spread(self, now: float) -> float | None:
        """Move checks ahead of time where the budget cannot serve them by their due times.

        Jobs submitted together come due together: if more checks fall due in
        the next ``max_lag`` than the budget can send in it, those sent last
        would be late, which is detection lag past the bound. Sending some
        earlier costs at worst a request each (``_timing.spread_checks``).
        A pass (a scan of the due queue) runs every quarter window while the
        queue holds more jobs than the budget serves in a window; returns
        when the next pass is due (None: no pass needed).
        """
        budget = self._budget
        if budget is None:
            return None
        rate = budget.rate
        if not rate < float("inf") or rate <= 0 or getattr(budget, "headroom", False):
            # Unlimited, or the budget will grow to meet the demand itself
            # (moving checks ahead for a rate about to rise costs requests).
            return None
        window = self.policy.scaled(self.policy.max_lag)
        burst = float(getattr(budget, "burst", max(1.0, rate)))
        capacity = burst + rate * window
        if len(self._due) <= capacity:
            return None  # even all of them at once would fit
        if now < self._next_spread:
            return self._next_spread
        self._next_spread = now + window / 4
        due_soon = self._due.within(float("-inf"), now + window)
        if len(due_soon) <= capacity:
            return self._next_spread
        level = getattr(budget, "level", None)
        sends = spread_checks(
            [t.due for t in due_soon],
            rate=rate,
            burst=max(burst, 1.0),
            now=now,
            tokens=None if level is None else float(level),
        )
        moved = 0
        for t, send in zip(due_soon, sends, strict=True):
            # Never before the job's earliest completion: a check there cannot
            # find it done, and its answer plans the next from that same
            # earliest, so the token would be spent for nothing.
            if t.earliest is not None:
                send = max(send, t.earliest)
            if send < t.due:
                self._due.push(t, send)
                moved += 1
        if moved:
            logger.debug("spread %d checks ahead of time to fit the request budget", moved)
        return self._next_spread

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _ensure_running(self) -> None:
        # One run task, started on demand: ``track`` is synchronous and a client
        # used without ``async with`` has no block that could hold a task group
        # open across its calls. Everything the run task starts is owned by the
        # task group inside it, and aclose() ends it.
        if self._runner is None and not self._closed:
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="runcomfy-async poll scheduler"
            )

    async def _run(self) -> None:
        # A fixed pool of workers, owned by the task group, each running one
        # check at a time: spawning a task per check costs more than the
        # check's own scheduling work. The queue never holds more than the
        # free workers: the dispatcher hands a check over only with a slot.
        work: asyncio.Queue[tuple[Tracked, Ticket]] = asyncio.Queue()
        async with anyio.create_task_group() as workers:
            for i in range(self.policy.max_concurrent_checks):
                workers.start_soon(self._worker, work, name=f"runcomfy-async check worker {i}")
            await self._dispatch(work)

    async def _worker(self, work: asyncio.Queue[tuple[Tracked, Ticket]]) -> None:
        while True:
            t, ticket = await work.get()
            await self._check(t, ticket)

    async def _dispatch(self, work: asyncio.Queue[tuple[Tracked, Ticket]]) -> None:
        loop = asyncio.get_running_loop()
        have_slot = False
        ticket: Ticket | None = None
        try:
            while True:
                now = self._clock()
                probe_due = self._cohorts.run(now) if self._cohorts.active else None
                if self._frontiers:
                    frontier_due = self._run_frontiers(now)
                    if frontier_due is not None:
                        probe_due = (
                            frontier_due if probe_due is None else min(probe_due, frontier_due)
                        )
                spread_due = self._spread(now)
                t = self._due.peek(self._infer_queued)
                due = t.due if t is not None else None
                if probe_due is not None:
                    due = probe_due if due is None else min(due, probe_due)
                if spread_due is not None and due is not None:
                    # Look ahead: a group of checks is spread before it comes due.
                    due = min(due, spread_due)
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
                if ticket is None:
                    ticket = await self._api.reserve()
                # The most-due job may have changed while we waited for a ticket.
                t = self._due.peek(self._infer_queued)
                if t is None or t.due > self._clock():
                    continue
                self._due.pop()
                t.checking = True
                work.put_nowait((t, ticket))
                have_slot, ticket = False, None
        finally:
            if have_slot:
                self._slots.release()

    async def _check(self, t: Tracked, ticket: Ticket) -> None:
        self.checks += 1
        # The status route only where the policy asks for queue positions:
        # a listener alone must not cost a second request per finished job.
        use_status = self.policy.fetch_queue_positions and t.last_state is JobState.QUEUED
        sent = self._clock()
        try:
            if use_status:
                status = await self._api.peek_status(t.request_id, ticket=ticket)
                self._on_status(t, status, sent)
            else:
                result = await self._api.check(
                    t.request_id, include_cost=self._include_cost, ticket=ticket
                )
                self._on_result(t, result, sent)
            self._server_answered()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one check stop the scheduler
            self._on_check_error(t, exc)
        finally:
            t.checking = False
            self._slots.release()

    # -- outcomes --------------------------------------------------------------

    def _on_status(self, t: Tracked, status: Status, sent: float) -> None:
        now = self._clock()
        t.failures = t.not_found = 0
        t.queue_position = status.queue_position
        if status.state.is_terminal:
            # The outputs live on the result route: fetch them right away (and
            # leave QUEUED, or the next check would take the status route again).
            t.last_state = status.state
            self._push(t, now)
            return
        self._not_done(t, status.state, now, sent)

    def _on_result(self, t: Tracked, result: Result, sent: float) -> None:
        now = self._clock()
        t.failures = t.not_found = 0
        if result.status is JobState.SUCCEEDED:
            self._sighted(t, started=True, sent=sent, answered=now)
            self._observe(t, result, now)
            self._finish(t, result)
        elif result.status.is_terminal:
            self._finish(t, job_error(t.request_id, t.model_id, result))
        else:
            self._not_done(t, result.status, now, sent)

    def _sighted(self, t: Tracked, *, started: bool, sent: float, answered: float) -> None:
        """Tell the model's queue-order monitor; on a certain contradiction, FIFO inference ends."""
        if t.fifo_order < 0:
            return  # adopted, or tracked after FIFO was disproved: its place is unknown
        monitor = self.monitor(t.model_id)
        if started:
            broken = monitor.started(t.fifo_order, sent, answered)
        else:
            broken = monitor.queued(t.fifo_order, sent, answered)
        if broken:
            self._fifo_off(t.model_id, answered)

    def _fifo_off(self, model_id: str, now: float) -> None:
        """``model_id``'s queue is not FIFO: forget what that order inferred.

        Each job's earliest completion goes back to what its own sightings
        say, and due times only move forward in time (never later)."""
        self._frontiers.pop(model_id, None)
        minimum = self.latency(model_id).minimum()
        for t in self._jobs.values():
            if t.model_id != model_id:
                continue
            t.fifo_order = -1
            if t.done or self._cohorts.is_parked(t) or minimum is None:
                continue
            earliest = t.submitted + minimum
            # Back to what its own sightings say.
            t.queued_until = t.last_not_done if t.last_state is JobState.QUEUED else t.submitted
            if t.last_state is JobState.QUEUED and t.last_not_done > t.submitted:
                earliest = max(earliest, t.last_not_done + minimum)
            held = t.earliest is not None and earliest < t.earliest and earliest <= now
            t.earliest = earliest
            if t.checking:
                continue  # its answer schedules it
            # Held by the inference past what its own sightings allow, it may
            # have finished any time since: check it now (a request each,
            # once; waiting another tenth of its age would be lag).
            due = now if held else self._plan(t, max(now, t.last_not_done), earliest)
            if due < t.due:
                self._push(t, due)

    def _not_done(self, t: Tracked, state: JobState, now: float, sent: float) -> None:
        t.last_not_done = now
        if state is not t.last_state and state is not JobState.UNKNOWN:
            t.last_state = state
            self._emit(t, state)
        elif state is JobState.QUEUED and self._listeners:
            self._emit(t, state)
        if state is JobState.QUEUED:
            self._sighted(t, started=False, sent=sent, answered=now)
        elif state is JobState.RUNNING:
            self._sighted(t, started=True, sent=sent, answered=now)
        frontier = self._frontiers.get(t.model_id)  # the sighting may have dropped it
        if frontier is not None and t not in frontier:
            frontier = None
        if frontier is not None and state is JobState.QUEUED:
            frontier.note_queued(now)
        if frontier is not None and frontier.probing(t):
            self._poke()  # the answer picks the search's next probe: run the frontiers now
        minimum = self.latency(t.model_id).minimum()
        if minimum is None:
            # Still nothing known of this model: back to the parking lot.
            self._cohorts.park(t)
            return
        if t.earliest is None:
            t.earliest = t.submitted + minimum
        if state is JobState.QUEUED:
            # Not started yet: it cannot finish before a full run from now.
            t.queued_until = max(t.queued_until, now)
            t.earliest = max(t.earliest, now + minimum)
            if frontier is not None:
                frontier.seen_queued(t, now)
        elif state is JobState.RUNNING and frontier is not None:
            self._date_starts(frontier.seen_started(t))
        self._push(t, self._plan(t, now, t.earliest))

    def _observe(self, t: Tracked, result: Result, now: float) -> None:
        duration = server_duration(result)
        if duration is None or duration > now - t.submitted + 5.0:
            duration = t.last_not_done - t.submitted  # a lower bound we are sure of
        # Done at its first check: all we know is that this model can be fast.
        duration = max(duration, self.policy.interval_floor(None))
        moved = self.latency(t.model_id).observe(duration)
        if self._cohorts.probing(t.model_id):
            self._cohorts.end(t.model_id, now)
        if moved:
            self._learned(t.model_id, now)

    def _learned(self, model_id: str, now: float) -> None:
        """The model's minimum moved: bring forward jobs scheduled from a higher one."""
        minimum = self.latency(model_id).minimum()
        if minimum is None:
            return
        # Jobs scheduled from a too-high prior may be finished long before
        # their due time: bring them forward (never push anyone later).
        for t in self._jobs.values():
            if t.model_id != model_id or t.done or t.checking or self._cohorts.is_parked(t):
                continue
            # Queued until then (seen, or inferred from FIFO order: forgetting
            # that dating would re-check every dated job at once), so it
            # cannot finish before a full run from then, whatever it does now.
            earliest = t.queued_until + minimum
            if t.earliest is None or earliest < t.earliest:
                t.earliest = earliest
                # The check the lower minimum would have planned after the
                # job's last sighting; if that is past, the job may have
                # finished since: check it now (planning from now would add
                # a tenth of its age on top of the time already lost).
                due = max(now, self._plan(t, t.last_not_done, earliest))
                if due < t.due:
                    self._push(t, due)

    def _on_check_error(self, t: Tracked, exc: Exception) -> None:
        decision, retry_after = classify_check(exc)
        now = self._clock()
        minimum = self.latency(t.model_id).minimum()
        age = now - t.submitted
        if decision is CheckDecision.NOT_FOUND:
            assert isinstance(exc, NotFoundError)
            self._server_answered()  # a 404 is an answer: the server is up
            t.not_found += 1
            if t.not_found >= self.policy.not_found_confirmations:
                self._finish(t, exc)
                return
            logger.info("request %s not found; confirming", t.request_id)
            self._retry_later(t, self.policy.backoff(t.not_found, age=age, minimum=minimum))
            return
        if decision is CheckDecision.FEW_MORE:
            # 4xx other than 404/429: retrying rarely helps; give it a few tries.
            self._server_answered()
            t.failures = max(t.failures, self.policy.max_check_failures - 3)
        else:
            self._server_failed(exc)
        self.check_failures += 1
        down = self._server_down
        others_wait = len(self._cooling) - (t.request_id in self._cooling) > 0
        canary = (
            down
            and decision is CheckDecision.BACKOFF
            and others_wait
            and (
                self._canary is None
                or self._canary == t.request_id
                or self._canary not in self._cooling
            )
        )
        if canary:
            # Someone must notice the server is back: this job keeps its
            # regular pace for all the jobs backing off. Its failures are the
            # server's, not its own: they do not bring it nearer to giving up
            # (the others' do, at their slower pace; once it is alone, its own too).
            self._canary = t.request_id
            down = False
        else:
            t.failures += 1
        if t.failures >= self.policy.max_check_failures:
            logger.warning(
                "giving up on request %s after %d failed checks: %r", t.request_id, t.failures, exc
            )
            self._finish(t, exc)
            return
        failures = max(t.failures, 1)
        delay = self.policy.backoff(failures, age=age, minimum=minimum, server_down=down)
        if retry_after is not None:
            # Honour the server, within the one cap (scaled with the policy's time).
            delay = max(delay, cap_retry_after(retry_after, self._retry_after_cap) or 0.0)
        logger.debug("check of %s failed (%r); again in %.3gs", t.request_id, exc, delay)
        self._retry_later(t, delay)

    def _retry_later(self, t: Tracked, delay: float) -> None:
        """Check ``t`` again ``delay`` from now, in its old place in line.

        Until then it is off the due queue (a timer holds it); then it goes
        back with the due time of the check that failed, which is past: under
        a tight budget, a retry does not queue behind every job that came due
        while it waited, so a failure costs the job its backoff and no more.
        Anything that reschedules ``t`` meanwhile (a probe round, a cancel)
        wins over the timer.
        """
        rank = t.due
        self._due.drop(t)
        old = self._cooling.pop(t.request_id, None)
        if old is not None:
            old[0].cancel()
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(delay, 0.0), self._cooled, t, t.seq)
        self._cooling[t.request_id] = (handle, self._clock() + delay, rank, t.seq)

    def _cooled(self, t: Tracked, seq: int) -> None:
        entry = self._cooling.pop(t.request_id, None)
        if entry is None or self._closed or t.done or t.checking or t.seq != seq:
            return  # finished, closed, or rescheduled by something else meanwhile
        self._push(t, min(entry[2], self._clock()))

    def _stop_cooling(self) -> None:
        for handle, *_ in self._cooling.values():
            handle.cancel()
        self._cooling.clear()

    def _server_failed(self, exc: Exception) -> None:
        """A check failed in a way that says the server may be down (5xx, 429, no answer)."""
        self._fail_streak += 1
        if not self._server_down and self._fail_streak >= self.policy.outage_after:
            self._server_down = True
            logger.info(
                "the server failed %d checks in a row (last: %r); backing off every job "
                "until it answers again",
                self._fail_streak,
                exc,
            )

    def _server_answered(self) -> None:
        """A check got an answer: if the server looked down, bring its backed-off jobs forward.

        While it looked down, backoffs doubled past the regular check
        interval to spare it; now each job waits no longer than its first
        backoff (a share of its interval) from now, so the jobs that finished
        meanwhile are noticed about within the lag bound of the recovery.
        """
        self._fail_streak = 0
        if not self._server_down:
            return
        self._server_down = False
        self._canary = None
        now = self._clock()
        moved = 0
        for rid, (handle, ready, rank, seq) in list(self._cooling.items()):
            t = self._jobs.get(rid)
            if t is None or t.seq != seq:
                continue
            minimum = self.latency(t.model_id).minimum()
            soon = now + self.policy.backoff(1, age=now - t.submitted, minimum=minimum)
            if soon < ready:
                handle.cancel()
                loop = asyncio.get_running_loop()
                new = loop.call_later(soon - now, self._cooled, t, seq)
                self._cooling[rid] = (new, soon, rank, seq)
                moved += 1
        logger.info("the server answers again; %d backed-off checks brought forward", moved)

    @property
    def _retry_after_cap(self) -> float:
        return self.policy.scaled(MAX_RETRY_AFTER)

    def _finish(self, t: Tracked, outcome: Result | BaseException) -> None:
        if t.done:
            return
        t.outcome = outcome
        t.detected_at = self._clock()
        self._jobs.pop(t.request_id, None)
        cooling = self._cooling.pop(t.request_id, None)
        if cooling is not None:
            cooling[0].cancel()
        self._cohorts.leave(t)
        frontier = self._frontiers.get(t.model_id)
        if frontier is not None:
            self._date_starts(frontier.forget(t))
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
