"""A virtual-time event loop and an in-memory fake API, for scheduler tests.

The loop jumps its clock to the next timer whenever nothing is ready to run,
so hours of polling run in milliseconds and timing is exact. It works only
with in-memory code (no sockets): the fake API below is such code.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections.abc import Callable, Coroutine
from datetime import datetime, timezone
from typing import Any, TypeVar

from runcomfy_async import JobState, NotFoundError, Result, ServerError, Status
from runcomfy_async._limits import Ticket
from runcomfy_async._models import parse_result

T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock advances to the next timer instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self._virtual_now = 1000.0

    def time(self) -> float:
        return self._virtual_now

    def _run_once(self) -> None:  # type: ignore[override]
        ready = self._ready  # type: ignore[attr-defined]
        scheduled = self._scheduled  # type: ignore[attr-defined]
        # Drop cancelled timers at the head first (asyncio does the same),
        # else the real select() would wait for a cancelled timer's time.
        while scheduled and scheduled[0]._cancelled:
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
        if not ready and scheduled:
            when = scheduled[0]._when
            if when > self._virtual_now:
                self._virtual_now = when
        super()._run_once()  # type: ignore[misc]


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


class FakeJob:
    def __init__(self, created: float, start: float, duration: float, outcome: str) -> None:
        self.created = created
        self.start = start
        self.duration = duration
        self.finish = start + duration
        self.outcome = outcome  # succeeded | failed | cancelled | vanish


class FakeAPI:
    """An in-memory server: jobs with known durations, an optional worker pool.

    Implements what the scheduler needs (``reserve``, ``check``,
    ``peek_status``) and counts every call.
    """

    def __init__(self, *, workers: int | None = None) -> None:
        self.jobs: dict[str, FakeJob] = {}
        self.checks = 0
        self.tickets = 0  # budget tokens taken; every check spends exactly one
        self.status_checks = 0
        self.fail_checks: dict[str, int] = {}  # request_id -> checks left that raise 5xx
        self.not_found: dict[str, int] = {}  # request_id -> checks left that answer 404
        self.malformed: set[str] = set()
        self._workers = workers
        self._free_at: list[float] = []
        self.timestamps = True  # False: results carry no created_at / finished_at

    def add(
        self,
        request_id: str,
        duration: float,
        *,
        outcome: str = "succeeded",
        now: float,
        start: float | None = None,
    ) -> FakeJob:
        """Add a job created at ``now``; it starts at ``start`` if given (any queue
        discipline, computed by the test), else when a FIFO worker frees up."""
        if start is not None:
            job = FakeJob(now, start, duration, outcome)
            self.jobs[request_id] = job
            return job
        start = now
        if self._workers is not None:
            # FIFO worker pool: the job starts when the earliest worker frees up.
            import heapq

            if len(self._free_at) < self._workers:
                start = now
            else:
                start = max(now, heapq.heappop(self._free_at))
            heapq.heappush(self._free_at, start + duration)
        job = FakeJob(now, start, duration, outcome)
        self.jobs[request_id] = job
        return job

    async def reserve(self) -> Ticket:
        self.tickets += 1
        return Ticket()

    def _state(self, job: FakeJob, now: float) -> str:
        if now < job.start:
            return "in_queue"
        if now < job.finish:
            return "in_progress"
        return job.outcome

    def _raise_faults(self, request_id: str) -> None:
        if self.fail_checks.get(request_id, 0) > 0:
            self.fail_checks[request_id] -= 1
            raise ServerError("boom", status_code=502)
        if request_id not in self.jobs:
            raise NotFoundError("unknown", status_code=404, error_code=404001)
        if self.not_found.get(request_id, 0) > 0:
            self.not_found[request_id] -= 1
            raise NotFoundError("unknown", status_code=404, error_code=404001)

    async def check(
        self, request_id: str, *, include_cost: bool = False, ticket: Ticket | None = None
    ) -> Result:
        if ticket is not None:
            ticket.spend()
        self.checks += 1
        await asyncio.sleep(0)
        self._raise_faults(request_id)
        if request_id in self.malformed:
            self.malformed.discard(request_id)
            return parse_result([1, 2], request_id)  # raises MalformedResponseError
        job = self.jobs[request_id]
        now = asyncio.get_running_loop().time()
        state = self._state(job, now)
        if job.outcome == "vanish" and state == "vanish":
            raise NotFoundError("gone", status_code=404, error_code=404001)
        body: dict[str, Any] = {"request_id": request_id, "status": state}
        if state == "succeeded":
            body["output"] = {"video": f"https://storage.example/{request_id}.mp4"}
            if self.timestamps:
                body.update(created_at=_iso(job.created), finished_at=_iso(job.finish))
        elif state == "failed":
            body["error"] = {"code": "E", "message": "generation failed"}
        return parse_result(body, request_id)

    async def peek_status(self, request_id: str, *, ticket: Ticket | None = None) -> Status:
        if ticket is not None:
            ticket.spend()
        self.status_checks += 1
        self.checks += 1
        await asyncio.sleep(0)
        self._raise_faults(request_id)
        job = self.jobs[request_id]
        state = self._state(job, asyncio.get_running_loop().time())
        position = 1 if state == "in_queue" else None
        return Status(request_id, JobState.parse(state), position)


def queue_starts(
    durations: list[float], workers: int, order: str, *, now: float, seed: int = 0
) -> list[float]:
    """Start times of jobs all submitted at ``now`` on ``workers`` workers that
    take queued jobs in ``order``: "fifo", "lifo" or "random"."""
    index = list(range(len(durations)))
    if order == "lifo":
        # The first ``workers`` start at once; later the newest queued goes first.
        index = index[:workers] + index[workers:][::-1]
    elif order == "random":
        head, tail = index[:workers], index[workers:]
        random.Random(seed).shuffle(tail)
        index = head + tail
    free = [now] * workers
    starts = [0.0] * len(durations)
    for i in index:
        start = heapq.heappop(free)
        starts[i] = start
        heapq.heappush(free, start + durations[i])
    return starts


def uniform_durations(n: int, low: float, high: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in range(n)]
