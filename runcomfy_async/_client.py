"""``RunComfyClient``: the async session manager.

It owns, for its whole life, one transport (connection pool), one request
budget, one polling scheduler and one cap on jobs in flight. Open it with
``async with`` (or let the first call open it) and close it with ``aclose()``;
a closed client raises :class:`ClientStateError` and cannot be reopened.

One event loop: a client belongs to the loop it was first used on (its
connections, futures and scheduler live there). When that loop shuts down
under it (an ``asyncio.run()`` returns with the client still open), it closes
itself on that loop, while the loop can still release its connections, and
logs a warning naming every job still in flight (those may still run, and
bill, on the server). Any later use, from another loop, raises
:class:`ClientStateError` saying so and naming those jobs: never a silent
re-open that would forget them.

Naming (one rule for the whole public surface):

- a *property* is cheap local state that never touches the network and never
  raises: ``job.done``, ``job.state``, ``job.error``, ``result.done``,
  ``outcome.ok``;
- a *verb that hits the network* is an ``async`` method: on the client
  (``submit``, ``run``, ``status``, ``result``, ``cancel``) or, for one job,
  ``await job.wait()`` and ``await job.cancel()``; ``job.cancel()`` and
  ``client.cancel()`` both return a :class:`CancelOutcome`;
- ``state`` is a :class:`JobState` (``job.state``, ``Status.state``,
  ``JobEvent.state``, ``CancelOutcome.state``); ``status`` names the status
  route (``client.status()``) and the :class:`Status` it returns. One
  exception is left: ``Result.status`` (a JobState, the wire's field name);
  it is to become ``Result.state`` in a later change;
- ``result`` names a :class:`Result`: the network call ``client.result()``, or
  a Result held locally (``outcome.result``); a finished job's Result without
  waiting is ``job.result_nowait()`` (like ``await job``, but it raises
  ``asyncio.InvalidStateError`` instead of waiting);
- a job adopted with :meth:`RunComfyClient.track` is ``JobState.UNKNOWN``
  until its first check says otherwise.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import os
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ._api import API, check_request_id
from ._errors import (
    AuthenticationError,
    ClientStateError,
    RateLimitError,
)
from ._fanout import Outcome, as_completed, map_jobs
from ._job import Job
from ._limits import Budget, Limits, MemoryLimits
from ._models import Balance, CancelOutcome, JobState, Result, Status, parse_balance
from ._polling import JobEvent, Listener, PollScheduler, PollStats, Tracked
from ._retry import RetryPolicy, classify_submit
from ._timing import PollPolicy
from ._transport import BALANCE_URL, AiohttpTransport, Transport, check_base_url
from .catalog import DEFAULT_REGISTRY, ModelsClient, Registry
from .inputs import ModelInput, prepare_request

__all__ = ["DEFAULT_BASE_URL", "RunComfyClient"]

logger = logging.getLogger("runcomfy_async")

DEFAULT_BASE_URL = "https://model-api.runcomfy.net"


#: Rounds of "lower the in-flight cap and wait for a slot" after the API's own
#: retries of a rate-limited submit gave up.
_SUBMIT_ROUNDS = 2


#: In-flight jobs named in full in the messages about a loop that shut down.
_NAMED_JOBS = 10


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


async def _close_at_loop_end(
    ref: weakref.ReferenceType[RunComfyClient], stop: asyncio.Future[None]
) -> None:
    """Wait until the client closes; if the loop shuts down first, close it on this loop.

    ``asyncio.run()`` (and ``asyncio.Runner``) cancel every task left before
    closing the loop: this task is then the last moment the client's
    connections can be released on the loop they belong to. A weak reference:
    it must not keep an abandoned client alive (its ``ResourceWarning`` says so).
    """
    try:
        await stop
    except asyncio.CancelledError:
        client = ref()
        if client is not None and client._state is _State.OPEN:
            await client._loop_ended()
        raise


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class RunComfyClient:
    """An async client for RunComfy's Model API.

    ``token`` defaults to ``$RUNCOMFY_API_TOKEN`` (else ``$RUNCOMFY_TOKEN``,
    the name RunComfy's own clients also read) and ``base_url`` to
    ``$RUNCOMFY_BASE_URL`` (else the public API); a missing token fails at the
    first call with :class:`AuthenticationError`. Options:

    - ``max_in_flight``: jobs submitted and not yet finished, at most (further
      submits wait); lowered automatically while the server answers 429.
      Every submit of this client, a batch's included, shares this one limit.
    - ``requests_per_second``: the shared request budget for submits and
      checks, where it starts (adapts down on a real 429 and up while the
      server allows more; None: unlimited until the first 429).
    - ``max_requests_per_second``: the ceiling the budget may grow to (None:
      2000/s); see ``_limits.py`` for the policy.
    - ``limits``: the budget and in-flight limit as one object (see
      :class:`Limits`), e.g. one shared by many clients or processes; when
      given, ``max_in_flight`` and ``requests_per_second`` are not used, and
      closing the client does not close them (their owner does).
    - ``poll``: the :class:`PollPolicy` of the scheduler.
    - ``retry``: the :class:`RetryPolicy` for safe calls.
    - ``validate_inputs``: check payloads of known models before submitting.
    - ``include_cost``: ask for each result's ``cost`` (undocumented API flag).
    - ``transport``: replace the HTTP transport (tests, custom stacks).
    - ``allow_insecure_http``: allow plain http to a non-loopback base URL.
    - ``balance_url``: where :meth:`balance` asks; by default RunComfy's wallet
      endpoint for the public API, and ``{base_url}/prod/v2/balance`` for any
      other base URL (an emulator), so the token never reaches a third origin.
    - ``catalog_ttl``: seconds :attr:`models` keeps catalog answers.

    Lifecycle: unopened, open (``async with``, or the first call), closed
    (:meth:`aclose`; final). A client belongs to the event loop it was opened
    on. If that loop shuts down while the client is open (an ``asyncio.run()``
    returned without ``aclose()``), the client closes itself there, logging
    the request ids of jobs still in flight (resume them with :meth:`track`);
    using it afterwards, or from any other loop, raises
    :class:`ClientStateError`. Create the client inside the coroutine you run
    (``async with RunComfyClient() as client``), one per event loop.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        max_in_flight: int = 64,
        requests_per_second: float | None = 20.0,
        max_requests_per_second: float | None = None,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        validate_inputs: bool = True,
        include_cost: bool = False,
        transport: Transport | None = None,
        allow_insecure_http: bool = False,
        limits: Limits | None = None,
        balance_url: str | None = None,
        catalog_ttl: float = 300.0,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._owns_limits = limits is None
        if limits is None:
            limits = MemoryLimits(
                requests_per_second=requests_per_second,
                max_in_flight=max_in_flight,
                max_requests_per_second=max_requests_per_second,
            )
        if token is None:
            token = os.environ.get("RUNCOMFY_API_TOKEN") or os.environ.get("RUNCOMFY_TOKEN")
        base = base_url or os.environ.get("RUNCOMFY_BASE_URL") or DEFAULT_BASE_URL
        self._base_url = check_base_url(base, allow_insecure_http=allow_insecure_http)
        if balance_url is None:
            default_api = self._base_url == DEFAULT_BASE_URL
            balance_url = BALANCE_URL if default_api else self._base_url + "/prod/v2/balance"
        self._balance_url = check_base_url(balance_url, allow_insecure_http=allow_insecure_http)
        self._has_token = bool(token)
        self._transport: Transport = transport or AiohttpTransport(
            self._base_url,
            token or None,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            balance_url=self._balance_url,
        )
        self._limits = limits
        self._api = API(self._transport, budget=limits.budget, retry=retry or RetryPolicy())
        self._poll = poll or PollPolicy()
        self._include_cost = include_cost
        self._validate = validate_inputs
        self._cap = limits.slots
        self._scheduler: PollScheduler | None = None
        self._state = _State.UNOPENED
        # A custom transport brings its own auth; only ours needs the token.
        self._needs_token = transport is None
        self._event_streams: set[MemoryObjectSendStream[JobEvent]] = set()
        self._closed_event: anyio.Event | None = None
        # The loop this client belongs to, and the task that closes the client
        # if that loop shuts down first (see _close_at_loop_end).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._guard: asyncio.Task[None] | None = None
        self._guard_stop: asyncio.Future[None] | None = None
        # Jobs this client tracks and that have not finished: named if the
        # loop shuts down under them.
        self._tracked: dict[str, Tracked] = {}
        # (request_id, model_id) of jobs in flight when the loop shut down;
        # None unless it did.
        self._lost: tuple[tuple[str, str], ...] | None = None
        self._models = ModelsClient(
            self._catalog_get, registry=Registry(parent=DEFAULT_REGISTRY), ttl=catalog_ttl
        )

    def __repr__(self) -> str:
        tracking = self._scheduler.tracking if self._scheduler else 0
        return (
            f"<RunComfyClient {self._base_url} {self._state.value} "
            f"in_flight={self._cap.in_flight}/{self._cap.capacity} tracking={tracking}>"
        )

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> RunComfyClient:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _open(self) -> None:
        self._check_loop()
        if self._state is _State.CLOSED:
            raise ClientStateError(self._closed_message())
        if self._state is _State.UNOPENED:
            self._state = _State.OPEN
            self._bind_loop()

    def _bind_loop(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - every caller of _open runs in a loop
            return
        self._loop = loop
        self._guard_stop = loop.create_future()
        self._guard = loop.create_task(
            _close_at_loop_end(weakref.ref(self), self._guard_stop),
            name="runcomfy-async loop guard",
        )

    def _check_loop(self) -> None:
        """Raise ClientStateError when called from a loop other than the client's."""
        if self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is not self._loop:
            raise ClientStateError(self._foreign_loop_message())

    def _lost_text(self) -> str:
        lost = self._lost or ()
        if not lost:
            return ""
        named = ", ".join(f"{rid} ({model})" for rid, model in lost[:_NAMED_JOBS])
        more = f" and {len(lost) - _NAMED_JOBS} more" if len(lost) > _NAMED_JOBS else ""
        return (
            f"; {len(lost)} job(s) were still in flight then and may still run (and bill) "
            f"on the server: {named}{more}; resume each with "
            "client.track(request_id, model_id) on a new client"
        )

    _ONE_LOOP_ADVICE = (
        ". A client belongs to one event loop: create it inside the coroutine you run "
        "('async with RunComfyClient() as client:' in the function given to asyncio.run()), "
        "or do all the work under one asyncio.run()"
    )

    def _foreign_loop_message(self) -> str:
        if self._lost is not None:
            return (
                "this RunComfyClient closed itself when the event loop it was opened on shut "
                "down (an earlier asyncio.run() returned)"
                + self._lost_text()
                + self._ONE_LOOP_ADVICE
            )
        assert self._loop is not None
        if self._loop.is_closed():
            return (
                "this RunComfyClient was opened on an event loop that is now closed, and was "
                "not closed first (call 'await client.aclose()' before the loop closes)"
                + self._ONE_LOOP_ADVICE
            )
        return (
            "this RunComfyClient belongs to the event loop it was opened on, which is still "
            "running: it cannot be used from another loop or thread" + self._ONE_LOOP_ADVICE
        )

    def _closed_message(self) -> str:
        if self._lost is not None:
            return self._foreign_loop_message()
        return "this client is closed; create a new RunComfyClient"

    async def _loop_ended(self) -> None:
        """The client's loop is shutting down with the client open: close it here and now."""
        self._lost = tuple((t.request_id, t.model_id) for t in self._tracked.values() if not t.done)
        if self._lost:
            logger.warning(
                "the event loop of %r shut down with the client open; it closed itself%s",
                self,
                self._lost_text(),
            )
        await self.aclose()

    def _ready(self) -> None:
        self._open()
        if self._needs_token and not self._has_token:
            raise AuthenticationError(
                "no API token: pass RunComfyClient(token=...) or set RUNCOMFY_API_TOKEN "
                "(nothing was sent)",
                status_code=401,
                sent=False,
            )

    @property
    def base_url(self) -> str:
        """The API base URL this client talks to."""
        return self._base_url

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._state is _State.CLOSED

    @property
    def in_flight(self) -> int:
        """Jobs submitted (or adopted) and not finished yet, across every caller of this client."""
        return self._cap.in_flight

    @property
    def poll_stats(self) -> PollStats:
        """A snapshot of the polling scheduler's counters (jobs tracked, checks sent)."""
        s = self._scheduler
        if s is None:
            return PollStats(tracking=0, checks=0, check_failures=0)
        return PollStats(tracking=s.tracking, checks=s.checks, check_failures=s.check_failures)

    @property
    def _poller(self) -> PollScheduler:
        """The client's polling scheduler (created on first use)."""
        if self._scheduler is None:
            if self._state is _State.CLOSED:
                raise ClientStateError(self._closed_message())
            cap = self._cap
            self._scheduler = PollScheduler(
                self._api,
                self._poll,
                include_cost=self._include_cost,
                slots_waiting=lambda: getattr(cap, "waiting", 0) > 0,
            )
        return self._scheduler

    @property
    def models(self) -> ModelsClient:
        """RunComfy's model catalog (list, get, categories), cached per client.

        Every model it fetched with a schema is validated on submit like the
        bundled Kling models (``await client.models.spec(model_id)`` fetches
        one on purpose).
        """
        return self._models

    async def _catalog_get(self, path: str, params: Mapping[str, str]) -> Any:
        self._ready()
        return await self._api.get_json(path, params)

    async def balance(self) -> Balance:
        """The account's wallet balance (USD), from the balance endpoint (``balance_url``)."""
        self._ready()
        data = await self._api.get_json("/prod/v2/balance", url=self._balance_url)
        return parse_balance(data)

    @property
    def max_in_flight(self) -> int:
        """How many jobs may be in flight now (lowered while submits draw 429)."""
        return self._cap.capacity

    @property
    def limits(self) -> Limits:
        """The request budget and in-flight limit this client shares among its calls."""
        return self._limits

    @property
    def budget(self) -> Budget:
        """The shared request budget (rate adapts to 429 answers); ``limits.budget``."""
        return self._limits.budget

    async def aclose(self) -> None:
        """Stop the scheduler, fail unfinished jobs with ClientStateError, close connections.

        Idempotent. Jobs still running on the server keep running there; their
        request ids (``job.request_id``) let another client resume them.
        Called from another event loop than the client's, it returns at once
        if the client is closed already (e.g. closed itself when its loop shut
        down), and raises :class:`ClientStateError` otherwise: a client's
        connections can only be closed on its own loop.
        """
        if self._loop is not None and self._loop is not _running_loop():
            if self._state is _State.CLOSED:
                return
            if self._loop.is_closed():
                # Nothing can run on a closed loop: mark it closed, release
                # nothing, but say which jobs were left in flight.
                self._state = _State.CLOSED
                lost = [f"{t.request_id} ({t.model_id})" for t in self._tracked.values()]
                if lost:
                    logger.warning(
                        "%r was closed after its event loop closed; %d job(s) were in flight "
                        "and may still run (and bill) on the server: %s; resume each with "
                        "client.track(request_id, model_id) on a new client",
                        self,
                        len(lost),
                        ", ".join(lost),
                    )
                return
            raise ClientStateError(self._foreign_loop_message())
        if self._closed_event is not None:
            # A close is under way (or done): wait for it, never return early.
            await self._closed_event.wait()
            return
        self._state = _State.CLOSED
        self._closed_event = anyio.Event()
        # Shielded: if the caller of aclose() is cancelled midway, the close
        # still completes; the cancellation is delivered after it.
        with anyio.CancelScope(shield=True):
            try:
                await self._close()
            finally:
                self._closed_event.set()

    async def _close(self) -> None:
        try:
            if self._scheduler is not None:
                await self._scheduler.aclose()
        finally:
            for stream in list(self._event_streams):
                stream.close()  # end every events() stream
            if self._owns_limits:
                # Fails this client's waiters at once; limits given to us may
                # serve other clients, and our waiters then fail with
                # ClientStateError when their turn comes (the client is closed).
                self._cap.close()
                self._limits.budget.close()
            try:
                await self._transport.aclose()
            finally:
                await self._stop_guard()

    async def _stop_guard(self) -> None:
        stop, guard = self._guard_stop, self._guard
        if stop is not None and not stop.done():
            stop.set_result(None)
        if guard is not None and guard is not asyncio.current_task():
            # Let it finish here: a task left pending would be reported when the
            # loop closes. asyncio.wait never raises the task's cancellation.
            await asyncio.wait([guard])

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) is _State.OPEN:
            _warn(
                f"unclosed {self!r}: use 'async with RunComfyClient()' or 'await client.aclose()'",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    # -- single-job verbs ------------------------------------------------------

    async def submit(
        self,
        model_or_input: str | ModelInput,
        payload: Mapping[str, Any] | None = None,
        *,
        validate: bool | None = None,
        allow_unknown_fields: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> Job:
        """Submit one paid job and return its :class:`Job` at once (tracking starts).

        ``submit(model_id, payload_dict)`` or ``submit(typed_input)``. Inputs of
        known models are validated first (``validate=False`` skips it), so a
        mistake raises :class:`InputValidationError` before anything is paid.
        Waits while ``max_in_flight`` jobs are in flight. Raises
        :class:`SubmitOutcomeUnknown` when the submit may have created a job
        that we cannot name: it is never resubmitted behind your back.
        ``before_send`` is awaited after the job holds its in-flight slot and
        request token, immediately before the POST may leave (a journal's
        "submitting" mark belongs there, not earlier).
        """
        self._ready()
        do_validate = self._validate if validate is None else validate
        model_id, body = prepare_request(
            model_or_input,
            payload,
            validate=do_validate,
            allow_unknown_fields=allow_unknown_fields,
            registry=self._models.registry,
        )
        await self._cap.acquire()
        released = False
        try:
            self._ready()  # the client may have closed while we waited for a slot
            for attempt in range(_SUBMIT_ROUNDS):
                try:
                    response = await self._api.submit(model_id, body, before_send=before_send)
                    break
                except RateLimitError as exc:
                    # The API already retried; the server certainly rejected it
                    # every time: the account may be at its concurrency limit.
                    # Lower our cap and wait for a slot under it, once more.
                    if attempt == _SUBMIT_ROUNDS - 1:
                        raise
                    self._cap.on_rate_limited()
                    self._cap.release()
                    released = True
                    retry = self._api.retry
                    await retry.sleep(retry.delay(attempt, classify_submit(exc).retry_after))
                    self._ready()
                    await self._cap.acquire()
                    released = False
                    self._ready()
            if self._state is _State.CLOSED:
                # Paid for, but nobody will track it here: say which job it is.
                raise ClientStateError(
                    f"the client was closed while submitting; job {response.request_id} "
                    f"({model_id}) was created: resume it with client.track(request_id, model_id)"
                )
            tracked = self._poller.track(response.request_id, model_id)
            self._tracked[tracked.request_id] = tracked
        except BaseException:
            if not released:
                self._cap.release()
            raise
        tracked.on_done = self._job_finished
        logger.info("submitted %s to %s", response.request_id, model_id)
        return Job(self, tracked)

    def _job_finished(self, tracked: Tracked) -> None:
        self._tracked.pop(tracked.request_id, None)
        self._cap.on_job_finished()
        self._cap.release()

    async def run(
        self,
        model_or_input: str | ModelInput,
        payload: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-job deadline is part of the API (JobTimeoutError)
        cancel_on_timeout: bool = False,
    ) -> Result:
        """Submit, then wait for the result (see :meth:`submit` and :meth:`Job.wait`)."""
        job = await self.submit(model_or_input, payload)
        return await job.wait(timeout, cancel_on_timeout=cancel_on_timeout)

    def track(self, request_id: str, model_id: str) -> Job:
        """Adopt a request submitted earlier (e.g. by a previous process) and track it.

        Nothing is sent until the scheduler's first check. The job counts as in
        flight (it may push the count past ``max_in_flight`` for a while).
        """
        self._ready()
        check_request_id(request_id)
        prepare_request(model_id, {}, validate=False)  # the model id must be URL-safe
        existing = self._poller.get(request_id)
        if existing is not None:
            return Job(self, existing)
        tracked = self._poller.track(request_id, model_id, fresh=False)
        # Nothing is known of an adopted job until its first check: it may
        # have finished long ago (the scheduler's first check moves it on).
        tracked.last_state = JobState.UNKNOWN
        self._tracked[request_id] = tracked
        self._cap.force_acquire()
        tracked.on_done = self._job_finished
        if tracked.done:  # pragma: no cover - track never finishes synchronously
            self._job_finished(tracked)
        return Job(self, tracked)

    async def status(self, request_id: str) -> Status:
        """The current state of ``request_id`` (one call, retried if it fails)."""
        self._ready()
        return await self._api.status(request_id)

    async def result(self, request_id: str, *, include_cost: bool | None = None) -> Result:
        """The result of ``request_id``, or its current state while unfinished."""
        self._ready()
        cost = self._include_cost if include_cost is None else include_cost
        return await self._api.result(request_id, include_cost=cost)

    async def cancel(self, request_id: str) -> CancelOutcome:
        """Ask the server to cancel ``request_id``; ``.cancelled`` says if it was.

        Only queued requests can be cancelled; for a running or finished one the
        answer is ``not_cancellable``, which is not an error.
        """
        self._ready()
        outcome = await self._api.cancel(request_id)
        if outcome.cancelled:
            self._scheduler_check_soon(request_id)
        return outcome

    def _scheduler_check_soon(self, request_id: str) -> None:
        if self._scheduler is not None:
            self._scheduler.check_soon(request_id)

    # -- fan-out -----------------------------------------------------------------

    def map(
        self,
        model_or_inputs: str | Iterable[ModelInput],
        payloads: Iterable[Mapping[str, Any]] | None = None,
        *,
        concurrency: int | None = None,
        timeout: float | None = None,
        keys: Iterable[Any] | None = None,
    ) -> AsyncIterator[Outcome]:
        """Run many jobs; yield an :class:`Outcome` for each as it finishes.

        ``map(model_id, payload_dicts)`` or ``map(typed_inputs)``. At most
        ``concurrency`` jobs of this call are in flight (and never more than the
        client's ``max_in_flight``); further submits wait. Each outcome carries
        the input's ``index`` (and ``key``, from ``keys``) and either its
        ``result`` or its ``error``: one failure never stops the others. Leaving
        the loop early stops submitting; jobs already submitted keep running.
        """
        return map_jobs(
            self, model_or_inputs, payloads, concurrency=concurrency, timeout=timeout, keys=keys
        )

    async def gather(
        self,
        model_or_inputs: str | Iterable[ModelInput],
        payloads: Iterable[Mapping[str, Any]] | None = None,
        *,
        concurrency: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - a per-job deadline is part of the API (JobTimeoutError)
    ) -> list[Outcome]:
        """Like :meth:`map`, but wait for everything; outcomes in input order."""
        outcomes = [
            o
            async for o in self.map(
                model_or_inputs, payloads, concurrency=concurrency, timeout=timeout
            )
        ]
        return sorted(outcomes, key=lambda o: o.index)

    @staticmethod
    def as_completed(jobs: Iterable[Job], *, timeout: float | None = None) -> AsyncIterator[Job]:
        """Yield the given jobs as each finishes (then ``await job`` or ``job.result_nowait()``)."""
        return as_completed(jobs, timeout=timeout)

    # -- progress ----------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(JobEvent)`` on every job state change of this client."""
        self._poller.add_listener(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._poller.remove_listener(listener)

    async def events(self) -> AsyncIterator[JobEvent]:
        """An async stream of every job state change; it ends when the client closes."""
        self._check_loop()
        if self.closed:
            return
        # Unbounded: a listener is called synchronously by the scheduler and
        # cannot wait for a slow consumer, and dropping an event could lose a
        # job's final state.
        send, receive = anyio.create_memory_object_stream[JobEvent](math.inf)
        listener = send.send_nowait
        self._poller.add_listener(listener)
        self._event_streams.add(send)
        try:
            async with receive:
                async for event in receive:
                    yield event
        finally:
            self._event_streams.discard(send)
            self._poller.remove_listener(listener)
            send.close()
