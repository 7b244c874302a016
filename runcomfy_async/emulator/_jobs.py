"""Jobs and the server-side queue: one FIFO and worker pool per account, scaled time.

Scale matters here: benchmarks put thousands of jobs through the emulator, so
no job owns a task. A queued job is an entry in its account's deque; a running
job is one ``loop.call_at`` timer (a heap entry in the event loop), so a job
costs O(log n) to start and finish. ``queue_position`` is O(log n) too: jobs
leave a FIFO from its head except when cancelled, so a job's position is its
sequence number minus the jobs started before it minus the queued jobs
cancelled before it (a bisect in a sorted list).
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

__all__ = ["ALT_SPELLING_RATE", "Job", "JobBoard", "JobState", "result_status", "route_status"]

JobState = Literal["in_queue", "in_progress", "succeeded", "failed", "cancelled"]

ALT_SPELLING_RATE = 0.3
"""Share of jobs answered with the alternative spellings under ``vocabulary="mixed"``."""

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
    seq: int = attrs.field(default=0, repr=False)

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed or cancelled)."""
        return self.state in TERMINAL


def route_status(job: Job) -> str:
    """The job's state in the status route's words: ``completed``, or ``succeeded`` when alt."""
    state = job.state
    if state == "succeeded":
        return "succeeded" if job.alt_spelling else "completed"
    if state == "cancelled" and job.alt_spelling:
        return "canceled"
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
        mixed_vocabulary: bool,
        counters: Counters,
        job_fails: Callable[[], bool],
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        if time_scale < 0:
            raise ValueError(f"time_scale must be >= 0, got {time_scale!r}")
        self.models = dict(models)
        self.workers = workers
        self.time_scale = time_scale
        self.jobs: dict[str, Job] = {}
        self.queued = 0
        self.running = 0
        self._seed = seed
        self._mixed = mixed_vocabulary
        self._counters = counters
        self._job_fails = job_fails
        self._ids = random.Random(f"ids:{seed}")
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
        job = Job(
            request_id=str(uuid.UUID(int=self._ids.getrandbits(128), version=4)),
            model_id=model_id,
            payload=payload,
            token=token,
            clip_seconds=clip_seconds,
            audio=audio,
            duration=self.models[model_id].draw(rng, clip_seconds),
            created=time.monotonic(),
            created_at=_utcnow(),
            alt_spelling=self._mixed and self._vocabulary.random() < ALT_SPELLING_RATE,
            seq=account.next_seq,
        )
        account.next_seq += 1
        self.jobs[job.request_id] = job
        self._counters.jobs_created += 1
        account.queue.append(job)
        self.queued += 1
        self._pump(account)
        return job

    def queue_position(self, job: Job) -> int | None:
        """1-based position of a queued job among its account's queued jobs; None if not queued."""
        if job.state != "in_queue":
            return None
        account = self._accounts[job.token]
        cancelled_before = bisect.bisect_left(account.cancelled_seqs, job.seq)
        return job.seq - account.left_by_starting - cancelled_before + 1

    def cancel(self, job: Job) -> bool:
        """Cancel ``job`` if it is still queued; False (a no-op) if it runs or has ended."""
        if job.state != "in_queue":
            self._counters.cancel_refused += 1
            return False
        account = self._accounts[job.token]
        # The job stays in the deque; _pump skips it when it reaches the head.
        bisect.insort(account.cancelled_seqs, job.seq)
        self.queued -= 1
        self._end(job, "cancelled")
        return True

    def _pump(self, account: _Account) -> None:
        while account.running < self.workers and account.queue:
            job = account.queue.popleft()
            if job.state == "in_queue":
                self._start(job, account)

    def _start(self, job: Job, account: _Account) -> None:
        assert self._loop is not None
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
