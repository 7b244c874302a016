"""``Job``: a handle on one submitted request, resolved by the client's scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any, Protocol

import anyio

from ._errors import JobCancelledError, JobTimeoutError
from ._models import CancelOutcome, JobState, Result
from ._polling import Tracked

__all__ = ["Job", "JobOwner"]


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
    """

    __slots__ = ("_client", "_t")

    def __init__(self, client: JobOwner, tracked: Tracked) -> None:
        self._client = client
        self._t = tracked

    def __repr__(self) -> str:
        return f"<Job {self._t.request_id} {self._t.model_id} {self.status.value}>"

    @property
    def request_id(self) -> str:
        """The server's id of this request: save it to resume with ``client.track``."""
        return self._t.request_id

    @property
    def model_id(self) -> str:
        """The model this job runs."""
        return self._t.model_id

    @property
    def status(self) -> JobState:
        """The last state seen (updated by the scheduler's checks)."""
        outcome = self._t.outcome
        if isinstance(outcome, Result):
            return outcome.status
        if outcome is not None:
            return JobState.CANCELLED if isinstance(outcome, JobCancelledError) else JobState.FAILED
        return self._t.last_state

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

    def done(self) -> bool:
        """True once the job has an outcome (result or error)."""
        return self._t.done

    def outcome(self) -> Result | BaseException | None:
        """The result or the error the job ended with; None while unfinished."""
        return self._t.outcome

    def result(self) -> Result:
        """The result of a finished job, without waiting; raises its error if it ended in one.

        Raises ``asyncio.InvalidStateError`` while the job is unfinished.
        """
        outcome = self._t.outcome
        if outcome is None:
            raise asyncio.InvalidStateError(f"job {self.request_id} is not finished")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

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
        can be cancelled).
        """
        if not self._t.done:
            try:
                with anyio.fail_after(timeout):
                    # shield: a waiter that is cancelled or times out must not
                    # cancel the shared future other waiters rely on.
                    await asyncio.shield(self._t.waiter)
            except TimeoutError:
                if self._t.done:
                    return self.result()
                cancelled = False
                if cancel_on_timeout:
                    cancelled = await self.cancel()
                note = " (cancel requested)" if cancelled else ""
                raise JobTimeoutError(
                    f"job {self.request_id} ({self.model_id}) not finished after {timeout}s{note}",
                    request_id=self.request_id,
                    model_id=self.model_id,
                ) from None
        return self.result()

    def __await__(self) -> Generator[Any, None, Result]:
        return self.wait().__await__()

    async def cancel(self) -> bool:
        """Ask the server to cancel this job; True if it was cancelled.

        Only a queued job can be cancelled; for a running or finished one this
        is a no-op returning False. The job's outcome follows on the next check
        (JobCancelledError for its waiters).
        """
        if self._t.done:
            return False
        # The owner checks a cancelled job again soon, so its waiters learn it.
        outcome = await self._client.cancel(self.request_id)
        return outcome.cancelled
