"""Jobs and the server-side queue: one queue and worker pool per account, scaled time.

Scale matters here: benchmarks put thousands of jobs through the emulator, so
no job owns a task. A queued job is an entry in its account's deque; a running
job is one ``loop.call_at`` timer (a heap entry in the event loop), so a job
costs O(log n) to start and finish. ``queue_position`` is O(log n) too: jobs
leave a FIFO from its head except when cancelled, so a job's position is its
sequence number minus the jobs started before it minus the queued jobs
cancelled before it (a bisect in a sorted list). The other disciplines (random
order, LIFO) keep a sorted list of the queued jobs' sequence numbers instead.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, Literal

import attrs

from ._config import ModelProfile, clip_facts
from ._counters import Counters

__all__ = [
    "ALT_SPELLING_RATE",
    "QUEUE_DISCIPLINES",
    "VOCABULARIES",
    "Job",
    "JobBoard",
    "JobState",
    "QueueDiscipline",
    "Vocabulary",
    "result_status",
    "route_status",
]

JobState = Literal["in_queue", "in_progress", "succeeded", "failed", "cancelled"]

Vocabulary = Literal["documented", "mixed", "wild"]
VOCABULARIES: tuple[Vocabulary, ...] = ("documented", "mixed", "wild")
"""Status vocabularies: the documented words (default), or a share of jobs in other spellings."""

QueueDiscipline = Literal["fifo", "random", "lifo"]
QUEUE_DISCIPLINES: tuple[QueueDiscipline, ...] = ("fifo", "random", "lifo")
"""The orders in which an account's queued jobs may be started."""

ALT_SPELLING_RATE = 0.3
"""Default share of jobs answered with alternative spellings under ``"mixed"`` / ``"wild"``."""

# Non-terminal words RunComfy's clients meet besides the documented ones ("wild" only).
_ALT_QUEUED = ("pending", "waiting")
_ALT_RUNNING = ("starting", "processing")

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

_FAILURE = {
    "code": "generation_failed",
    "message": "The model failed to generate the video (fault injected by the emulator).",
}


@attrs.define(eq=False)
class Job:
    """One request as the emulator's server side sees it.

    ``created``, ``started`` and ``finished`` are ``time.monotonic()`` readings
    (same clock as the client when both run in one process): ``finished`` is
    when the job became terminal on the server. ``duration`` is the drawn
    generation time in unscaled seconds; it took ``duration * time_scale``.
    ``state`` uses the result route's words (``succeeded``, not ``completed``).
    """

    request_id: str
    model_id: str
    payload: dict[str, Any] = attrs.field(repr=False)
    token: str = attrs.field(repr=False)
    clip_seconds: float
    audio: bool
    duration: float
    created: float
    created_at: datetime = attrs.field(repr=False)
    state: JobState = "in_queue"
    started: float | None = None
    finished: float | None = None
    finished_at: datetime | None = attrs.field(default=None, repr=False)
    error: dict[str, Any] | None = attrs.field(default=None, repr=False)
    alt_spelling: bool = attrs.field(default=False, repr=False)
    alt_variant: int = attrs.field(default=0, repr=False)
    wild: bool = attrs.field(default=False, repr=False)
    seq: int = attrs.field(default=0, repr=False)

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.state in TERMINAL


def route_status(job: Job) -> str:
    """The job's state in the status route's words.

    Documented: ``in_queue``, ``in_progress``, ``completed``, ``cancelled`` (and
    ``failed``, which RunComfy's own clients take as terminal). A job chosen
    for alternative spellings says ``succeeded`` / ``canceled``, and under the
    ``"wild"`` vocabulary ``pending`` / ``waiting`` while queued and
    ``starting`` / ``processing`` while running.
    """
    state = job.state
    if state == "succeeded":
        return "succeeded" if job.alt_spelling else "completed"
    if state == "cancelled" and job.alt_spelling:
        return "canceled"
    if job.alt_spelling and job.wild:
        if state == "in_queue":
            return _ALT_QUEUED[job.alt_variant]
        if state == "in_progress":
            return _ALT_RUNNING[job.alt_variant]
    return state


def result_status(job: Job) -> str:
    """The job's state in the result route's words (``canceled`` when alt)."""
    if job.state == "cancelled" and job.alt_spelling:
        return "canceled"
    return job.state


@attrs.define(eq=False)
class _Account:
    """The queue and worker pool of one token."""

    queue: deque[Job] = attrs.field(factory=deque)
    running: int = 0
    active: int = 0  # queued or running: what a per-account concurrency limit counts
    waiting: list[int] = attrs.field(factory=list)  # queued seqs, sorted (non-FIFO only)
    next_seq: int = 0
    left_by_starting: int = 0
    cancelled_seqs: list[int] = attrs.field(factory=list)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobBoard:
    """Every job of one emulator, the per-token queues, and the timers of running jobs."""

    def __init__(
        self,
        *,
        models: Mapping[str, ModelProfile],
        workers: int,
        time_scale: float,
        seed: int,
        id_seed: int | None = None,
        vocabulary: Vocabulary = "documented",
        alt_spelling_rate: float = ALT_SPELLING_RATE,
        queue: QueueDiscipline = "fifo",
        counters: Counters,
        job_fails: Callable[[], bool],
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale!r}")
        if vocabulary not in VOCABULARIES:
            raise ValueError(f"vocabulary must be one of {VOCABULARIES}, got {vocabulary!r}")
        if not 0.0 <= alt_spelling_rate <= 1.0:
            raise ValueError(f"alt_spelling_rate must be within [0, 1], got {alt_spelling_rate!r}")
        if queue not in QUEUE_DISCIPLINES:
            raise ValueError(f"queue must be one of {QUEUE_DISCIPLINES}, got {queue!r}")
        self.models = dict(models)
        self.workers = workers
        self.time_scale = time_scale
        self.jobs: dict[str, Job] = {}
        self.queued = 0
        self.running = 0
        self._seed = seed
        self.vocabulary = vocabulary
        self.alt_spelling_rate = alt_spelling_rate
        self.discipline = queue
        self._counters = counters
        self._job_fails = job_fails
        # Without an explicit seed, ids come from the OS (uuid4): two emulator
        # lives must never hand out the same id (a resumed batch would take
        # another job's output).
        self._ids = None if id_seed is None else random.Random(f"ids:{id_seed}")
        self._order = random.Random(f"queue:{seed}")
        self._vocabulary = random.Random(f"vocabulary:{seed}")
        self._durations: dict[str, random.Random] = {}
        self._accounts: dict[str, _Account] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def create(self, model_id: str, payload: dict[str, Any], token: str) -> Job:
        """Create a job for ``token`` and queue it (it starts at once if a worker is free)."""
        if self._closed:
            raise RuntimeError("the emulator is closed")
        self._loop = asyncio.get_running_loop()
        rng = self._durations.get(model_id)
        if rng is None:
            rng = self._durations[model_id] = random.Random(f"durations:{self._seed}:{model_id}")
        clip_seconds, audio = clip_facts(model_id, payload)
        account = self._accounts.get(token)
        if account is None:
            account = self._accounts[token] = _Account()
        alt = self.vocabulary != "documented" and self._vocabulary.random() < self.alt_spelling_rate
        job = Job(
            request_id=self._new_id(),
            model_id=model_id,
            payload=payload,
            token=token,
            clip_seconds=clip_seconds,
            audio=audio,
            duration=self.models[model_id].draw(rng, clip_seconds),
            created=time.monotonic(),
            created_at=_utcnow(),
            alt_spelling=alt,
            alt_variant=self._vocabulary.randrange(2) if alt else 0,
            wild=self.vocabulary == "wild",
            seq=account.next_seq,
        )
        account.next_seq += 1
        self.jobs[job.request_id] = job
        self._counters.jobs_created += 1
        account.active += 1
        self._counters.note_active(token, account.active)
        account.queue.append(job)
        if self.discipline != "fifo":
            account.waiting.append(job.seq)  # seqs grow: the list stays sorted
        self.queued += 1
        self._pump(account)
        return job

    def _new_id(self) -> str:
        if self._ids is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def active(self, token: str) -> int:
        """Jobs of ``token``'s account queued or running right now."""
        account = self._accounts.get(token)
        return account.active if account is not None else 0

    def queue_position(self, job: Job) -> int | None:
        """1-based position of a queued job among its account's queued jobs; None if not queued."""
        if job.state != "in_queue":
            return None
        account = self._accounts[job.token]
        if self.discipline == "lifo":
            # Served newest first: the jobs ahead are the younger queued ones.
            return len(account.waiting) - bisect.bisect_right(account.waiting, job.seq) + 1
        if self.discipline == "random":
            # Positions by arrival, as a queue would report them, though the
            # server starts a random queued job: a position that lies about order.
            return bisect.bisect_left(account.waiting, job.seq) + 1
        cancelled_before = bisect.bisect_left(account.cancelled_seqs, job.seq)
        return job.seq - account.left_by_starting - cancelled_before + 1

    def cancel(self, job: Job) -> bool:
        """Cancel ``job`` if it is still queued; False (a no-op) if it runs or has ended."""
        if job.state != "in_queue":
            self._counters.cancel_refused += 1
            return False
        account = self._accounts[job.token]
        # The job stays in the deque; _pump skips it when it reaches the head.
        if self.discipline == "fifo":
            bisect.insort(account.cancelled_seqs, job.seq)
        else:
            self._unwait(account, job.seq)
        self.queued -= 1
        self._end(job, "cancelled")
        return True

    def _pump(self, account: _Account) -> None:
        while account.running < self.workers and account.queue:
            job = self._next(account.queue)
            if job.state == "in_queue":
                self._start(job, account)

    def _next(self, queue: deque[Job]) -> Job:
        if self.discipline == "fifo":
            return queue.popleft()
        if self.discipline == "lifo":
            return queue.pop()
        # Random order: swap a random entry to the end and pop it (O(1) for
        # the swap at the ends; deque indexing is O(n) only in the middle).
        index = self._order.randrange(len(queue))
        queue[index], queue[-1] = queue[-1], queue[index]
        return queue.pop()

    @staticmethod
    def _unwait(account: _Account, seq: int) -> None:
        index = bisect.bisect_left(account.waiting, seq)
        if index < len(account.waiting) and account.waiting[index] == seq:
            del account.waiting[index]

    def _start(self, job: Job, account: _Account) -> None:
        assert self._loop is not None
        if self.discipline != "fifo":
            self._unwait(account, job.seq)
        account.left_by_starting += 1
        account.running += 1
        self.queued -= 1
        self.running += 1
        job.state = "in_progress"
        job.started = time.monotonic()
        self._counters.jobs_started += 1
        when = self._loop.time() + job.duration * self.time_scale
        self._timers[job.request_id] = self._loop.call_at(when, self._finish, job)

    def _finish(self, job: Job) -> None:
        del self._timers[job.request_id]
        account = self._accounts[job.token]
        account.running -= 1
        self.running -= 1
        if self._job_fails():
            job.error = dict(_FAILURE)
            self._end(job, "failed")
        else:
            self._end(job, "succeeded")
        self._pump(account)

    def _end(self, job: Job, state: JobState) -> None:
        self._accounts[job.token].active -= 1
        job.state = state
        job.finished = time.monotonic()
        job.finished_at = _utcnow()
        c = self._counters
        if state == "succeeded":
            c.jobs_succeeded += 1
        elif state == "failed":
            c.jobs_failed += 1
        else:
            c.jobs_cancelled += 1

    def close(self) -> None:
        """Stop every timer: running jobs stay ``in_progress`` forever."""
        self._closed = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
