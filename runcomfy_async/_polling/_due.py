"""The due queue: a heap of ``(due time, seq, job)`` with lazy deletion.

Rescheduling a job pushes a new entry and bumps the job's ``seq``; the old
entry goes stale and is dropped when it reaches the top. So moving a job costs
O(log n), and nothing ever searches the heap.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from ._tracked import Tracked

__all__ = ["DueQueue"]


class DueQueue:
    """Jobs ordered by when they are next due for a check."""

    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Tracked]] = []
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"<DueQueue entries={len(self._heap)}>"

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, t: Tracked, due: float) -> bool:
        """Schedule ``t`` at ``due`` (replacing its entry); True if it is now the head."""
        t.due = due
        t.seq = next(self._seq)
        heapq.heappush(self._heap, (due, t.seq, t))
        return self._heap[0][2] is t

    def drop(self, t: Tracked) -> None:
        """Take ``t`` out (its entry goes stale): it waits elsewhere, e.g. parked."""
        t.seq = next(self._seq)

    def peek(self, infer: Callable[[Tracked], bool]) -> Tracked | None:
        """The most-due job, skipping stale entries.

        ``infer(t)`` may reschedule a due job without a request (and return
        True); the search then goes on.
        """
        heap = self._heap
        while heap:
            _, seq, t = heap[0]
            if t.seq != seq or t.done or t.checking:
                heapq.heappop(heap)  # stale entry: rescheduled, finished or parked since
                continue
            if infer(t):
                continue
            return t
        return None

    def within(self, start: float, end: float) -> list[Tracked]:
        """Live jobs due in ``[start, end]`` (a scan: O(n), for rare planning passes)."""
        return [
            t
            for due, seq, t in self._heap
            if start <= due <= end and t.seq == seq and not t.done and not t.checking
        ]

    def pop(self) -> None:
        """Remove the head (the job :meth:`peek` returned)."""
        heapq.heappop(self._heap)

    def clear(self) -> None:
        """Forget every entry."""
        self._heap.clear()
