"""``Job``: a handle on one submitted request, resolved by the client's scheduler.

Its names follow the one rule written in ``_client.py``'s docstring:
properties (``done``, ``state``, ``error``) are cheap local state; ``await
job.wait()`` and ``await job.cancel()`` are the verbs; ``job.cancel()`` returns
the same :class:`CancelOutcome` as ``client.cancel()``. The names of the first
release (``done()``, ``status``, ``result()``, ``outcome()``, a bool from
``cancel()``) still work for one release, with a ``DeprecationWarning``.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Generator
from typing import Any, Protocol, cast

import anyio

from ._errors import ClientStateError, JobCancelledError, JobTimeoutError
from ._models import CancelOutcome, JobState, Result
from ._polling import Tracked

__all__ = ["Job", "JobOwner"]


def _deprecated(old: str, new: str) -> None:
    # stacklevel 3: the warning names the line that used the old name.
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=3,
    )


class _DoneFlag(int):
    """``job.done``: a bool that can still be called as ``job.done()`` for one release.

    ``bool`` cannot be subclassed, so this is an ``int`` that prints, compares
    and tests like ``True``/``False`` (``job.done is True`` is the one thing it
    does not do: write ``if job.done:``). Calling it warns and returns a plain bool.
    """

    __slots__ = ()

    def __call__(self) -> bool:
        _deprecated("job.done()", "the property job.done (no parentheses)")
        return bool(self)

    def __repr__(self) -> str:
        return repr(bool(self))

    __str__ = __repr__


_DONE, _NOT_DONE = _DoneFlag(1), _DoneFlag(0)


class JobOwner(Protocol):
    """What a :class:`Job` needs of the client that tracks it: a way to cancel."""

    async def cancel(self, request_id: str) -> CancelOutcome:
        """Ask the server to cancel ``request_id`` (and check it again soon if it was)."""
        ...


class Job:
    """One request in flight (or finished), tracked by its client's scheduler.

    ``await job`` (or :meth:`wait`) returns the :class:`Result` of a job that
    succeeded, and raises :class:`JobFailedError`, :class:`JobCancelledError`,
    :class:`NotFoundError` (the server forgot the id) or, when the client is
    closed first, :class:`ClientStateError`. Cancelling a task that awaits a
    job does not stop tracking it: other waiters, and later waits, still work.

    Local state, never a network call: :attr:`done`, :attr:`state`,
    :attr:`error`, :meth:`result_nowait`. Network verbs: :meth:`wait`,
    :meth:`cancel`.
    """

    __slots__ = ("_client", "_t")

    def __init__(self, client: JobOwner, tracked: Tracked) -> None:
        self._client = client
        self._t = tracked

    def __repr__(self) -> str:
        return f"<Job {self._t.request_id} {self._t.model_id} {self.state.value}>"

    @property
    def request_id(self) -> str:
        """The server's id of this request: save it to resume with ``client.track``."""
        return self._t.request_id

    @property
    def model_id(self) -> str:
        """The model this job runs."""
        return self._t.model_id

    @property
    def state(self) -> JobState:
        """The last state seen (updated by the scheduler's checks).

        A job adopted with ``client.track()`` is ``JobState.UNKNOWN`` until its
        first check: it may have finished long ago. A submitted job starts
        ``QUEUED`` (the server just accepted it).
        """
        outcome = self._t.outcome
        if isinstance(outcome, Result):
            return outcome.status
        if outcome is not None:
            return JobState.CANCELLED if isinstance(outcome, JobCancelledError) else JobState.FAILED
        return self._t.last_state

    @property
    def status(self) -> JobState:
        """Deprecated: use :attr:`state` (``status`` names ``client.status()``'s ``Status``)."""
        _deprecated("Job.status", "Job.state")
        return self.state

    @property
    def queue_position(self) -> int | None:
        """The last queue position seen, where the server reported one."""
        return self._t.queue_position

    @property
    def submitted_at(self) -> float:
        """``time.monotonic()`` when the job was submitted (or adopted)."""
        return self._t.submitted

    @property
    def detected_at(self) -> float | None:
        """``time.monotonic()`` when the scheduler saw the job end, else None."""
        return self._t.detected_at

    @property
    def done(self) -> bool:
        """True once the job has an outcome (result or error).

        A property (``if job.done:``), like ``Result.done``. Calling it
        (``job.done()``, the first release's method) still works for one
        release, with a ``DeprecationWarning``.
        """
        # Typed as the bool it acts as: a type checker then flags the
        # deprecated call form, which is the point.
        return cast(bool, _DONE if self._t.done else _NOT_DONE)

    @property
    def error(self) -> BaseException | None:
        """The exception the job ended with; None while unfinished or if it succeeded.

        The same meaning as ``Outcome.error`` of a fan-out.
        """
        outcome = self._t.outcome
        return outcome if isinstance(outcome, BaseException) else None

    def result_nowait(self) -> Result:
        """What ``await job`` gives, without waiting: the Result, or the job's error raised.

        Raises ``asyncio.InvalidStateError`` while the job is unfinished. Local:
        it never calls the API (``client.result(request_id)`` does).
        """
        outcome = self._t.outcome
        if outcome is None:
            raise asyncio.InvalidStateError(f"job {self.request_id} is not finished")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def result(self) -> Result:
        """Deprecated: use :meth:`result_nowait` (``result`` names the network call).

        ``client.result(request_id)`` asks the API; this never did.
        """
        _deprecated("Job.result()", "Job.result_nowait() (or 'await job')")
        return self.result_nowait()

    def outcome(self) -> Result | BaseException | None:
        """Deprecated: use :attr:`error`, and :meth:`result_nowait` once :attr:`done`."""
        _deprecated("Job.outcome()", "Job.error and Job.result_nowait()")
        return self._t.outcome

    async def wait(
        self,
        # A deadline here, not only the caller's cancel scope: it raises
        # JobTimeoutError naming the job, and can cancel the remote job.
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        cancel_on_timeout: bool = False,
    ) -> Result:
        """Wait for the job's outcome: its Result, or its error raised.

        After ``timeout`` seconds raise :class:`JobTimeoutError` (also a
        ``TimeoutError``); the remote job keeps running, unless
        ``cancel_on_timeout`` asks the server to cancel it (only a queued job
        can be cancelled: for a running one the error says the cancel was
        refused and the job keeps running).
        """
        if not self._t.done:
            if self._t.waiter.get_loop() is not asyncio.get_running_loop():
                raise ClientStateError(
                    f"job {self.request_id} belongs to the event loop its client was opened "
                    "on; wait for it there (one client per event loop), or adopt it on this "
                    "loop's client with client.track(request_id, model_id)"
                )
            try:
                with anyio.fail_after(timeout):
                    # shield: a waiter that is cancelled or times out must not
                    # cancel the shared future other waiters rely on.
                    await asyncio.shield(self._t.waiter)
            except TimeoutError:
                if self._t.done:
                    return self.result_nowait()
                note = ""
                if cancel_on_timeout:
                    cancel = await self.cancel()
                    note = (
                        "; cancelled on the server"
                        if cancel.cancelled
                        else f"; the server refused to cancel it ({cancel.outcome}: only a "
                        "queued job can be cancelled), so it keeps running and billing"
                    )
                raise JobTimeoutError(
                    f"job {self.request_id} ({self.model_id}) not finished after {timeout}s{note}",
                    request_id=self.request_id,
                    model_id=self.model_id,
                ) from None
        return self.result_nowait()

    def __await__(self) -> Generator[Any, None, Result]:
        return self.wait().__await__()

    async def cancel(self) -> CancelOutcome:
        """Ask the server to cancel this job; the same answer as ``client.cancel()``.

        ``.cancelled`` is True if it was cancelled. Only a queued job can be
        cancelled; for a running one the answer is ``not_cancellable``, which is
        not an error. A job already finished here sends nothing and answers
        ``not_cancellable`` with its final state. The job's outcome follows on
        the next check (JobCancelledError for its waiters).
        """
        if self._t.done:
            return CancelOutcome(self.request_id, "not_cancellable", self.state)
        # The owner checks a cancelled job again soon, so its waiters learn it.
        return await self._client.cancel(self.request_id)
