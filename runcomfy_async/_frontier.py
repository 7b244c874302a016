"""What a FIFO queue tells about one model's jobs, without asking the server.

The API reports a ``queue_position``, so each model's queued jobs start in
submit order. Two inferences follow, and both save requests:

- a job seen *queued* at ``t`` means every younger job was queued at ``t``
  too, so none of them can finish before ``t`` plus a full run;
- a job seen *running* (or finished) means every older job has started.

The jobs whose start is not yet known form a deque in submit order; its left
end is the *start frontier*, and somewhere inside it lies the boundary between
started and queued jobs. Probing a few jobs spread over it brackets that
boundary and dates the start of every job for a handful of requests, instead
of each queued job paying for early checks.
"""

from __future__ import annotations

import bisect
import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._scheduler import Tracked

__all__ = ["QueueFrontier"]


class QueueFrontier:
    """One model's FIFO bookkeeping: marks of queued sightings, jobs of unknown start."""

    __slots__ = ("idle_rounds", "last_queued_seen", "marks", "next_round", "unknown")

    def __init__(self) -> None:
        # (order, seen_at) of jobs seen queued, increasing in both: a newer
        # sighting of an older job makes every mark of a younger job redundant.
        # ``order`` is the submit sequence: timestamps can tie, order cannot.
        self.marks: list[tuple[float, float]] = []
        self.unknown: collections.deque[Tracked] = collections.deque()
        self.last_queued_seen = float("-inf")
        self.next_round: float | None = None
        self.idle_rounds = 0  # sample rounds in a row that found no queue

    def __repr__(self) -> str:
        return f"<QueueFrontier unknown={len(self.unknown)} marks={len(self.marks)}>"

    def add(self, t: Tracked) -> None:
        """A new job of this model, younger than every job added before."""
        self.unknown.append(t)

    def seen_queued(self, t: Tracked, now: float) -> None:
        """``t`` was queued at ``now``: so was every younger job."""
        self.last_queued_seen = now
        self.idle_rounds = 0
        marks = self.marks
        while marks and marks[-1][0] >= t.order:
            marks.pop()
        marks.append((t.order, now))

    def seen_started(self, t: Tracked) -> None:
        """``t`` has started (running or finished): so has every older job."""
        unknown = self.unknown
        while unknown and (unknown[0].order <= t.order or unknown[0].done):
            unknown.popleft()
        # Marks older than the frontier only matter through the newest of them.
        if unknown:
            left = unknown[0].order
            while len(self.marks) >= 2 and self.marks[1][0] <= left:
                self.marks.pop(0)

    def queued_at(self, t: Tracked) -> float | None:
        """The latest time ``t`` is known to have been queued (from older jobs' sightings)."""
        i = bisect.bisect_right(self.marks, (t.order, float("inf")))
        return self.marks[i - 1][1] if i else None

    def candidates(self, count: int) -> list[Tracked]:
        """Up to ``count`` jobs of unknown start, evenly spaced from the frontier to the newest.

        The start boundary lies somewhere in the deque; even spacing brackets it
        (the last job seen running and the first seen queued) in one round.
        """
        unknown = self.unknown
        while unknown and unknown[0].done:
            unknown.popleft()
        n = len(unknown)
        if not n:
            return []
        picked: list[Tracked] = []
        for i in range(1, count + 1):
            t = unknown[min(n - 1, (n * i) // (count + 1))]
            if not t.done and (not picked or picked[-1] is not t):
                picked.append(t)
        return picked
