"""What the scheduler knows of one request, and the events it emits about it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import attrs

from .._models import JobState, Result

__all__ = ["JobEvent", "Listener", "PollStats", "Tracked", "loop_time"]


def loop_time() -> float:
    """The running event loop's clock (``time.monotonic`` for asyncio's loops)."""
    return asyncio.get_running_loop().time()


def _now() -> float:
    # The loop's clock inside a loop; the same monotonic clock outside one.
    try:
        return loop_time()
    except RuntimeError:
        return time.monotonic()


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


@attrs.frozen
class PollStats:
    """What a client's polling scheduler has done so far.

    ``tracking``: jobs in flight; ``checks``: status and result requests sent;
    ``check_failures``: checks that failed and were retried later.
    """

    tracking: int
    checks: int
    check_failures: int


class Tracked:
    """The scheduler's record of one in-flight request (internal; see ``Job``).

    What the dispatcher and a ``Job`` read: the heap keys (``due``, ``seq``),
    what the checks learned, and the outcome. Two slots belong to one concern
    each and are written by nothing else: ``cohort`` (flags of
    ``ProbeCohorts``) and ``fifo_order`` (``QueueFrontier``'s submit order, -1
    outside any frontier). They are slots rather than sets or dicts in their
    owners because a slot costs 8 bytes a job and a set entry several times
    that, for 10,000 jobs in flight.
    """

    __slots__ = (
        "checking",
        "cohort",
        "detected_at",
        "due",
        "earliest",
        "failures",
        "fifo_order",
        "last_not_done",
        "last_state",
        "model_id",
        "not_found",
        "on_done",
        "outcome",
        "queue_position",
        "queued_until",
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
        # The latest time the job is known to have been queued: seen so, or
        # inferred from its model's FIFO order (the dispatcher's; ``_fifo_off``
        # puts it back to real sightings when that order is disproved).
        self.queued_until = submitted
        self.failures = 0
        self.not_found = 0
        self.checking = False
        self.cohort = 0  # owned by ProbeCohorts
        self.fifo_order = -1  # owned by QueueFrontier
        self.outcome: Result | BaseException | None = None
        self.detected_at: float | None = None
        self.waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # One callback (the client's slot release), not a list: a list per job
        # costs memory for 10,000 jobs in flight.
        self.on_done: Callable[[Tracked], None] | None = None

    def __repr__(self) -> str:
        return f"<Tracked {self.request_id} {self.model_id} {self.last_state.value}>"

    @property
    def done(self) -> bool:
        """True once the job has an outcome."""
        return self.outcome is not None
