"""What a FIFO queue tells about one model's jobs, without asking the server.

The API reports a ``queue_position``, so each model's queued jobs start in
submit order. Two inferences follow, and both save requests:

- a job seen *queued* at ``t`` means every younger job was queued at ``t``
  too, so none of them can finish before ``t`` plus a full run;
- a job seen *running* (or finished) means every older job has started.

The jobs whose start is not yet known form a deque in submit order; its left
end is the *start frontier*, and somewhere inside it lies the boundary between
started and queued jobs. Probing a few jobs spread over it (a *round*)
brackets that boundary and dates the start of every job for a handful of
requests, instead of each queued job paying for early checks.

Each :class:`QueueFrontier` owns its bookkeeping and its round; the
scheduler only reports sightings and asks for the jobs to probe.
"""

from __future__ import annotations

import bisect
import collections
import itertools

from ._tracked import Tracked

__all__ = ["QueueFrontier"]


class QueueFrontier:
    """One model's FIFO bookkeeping: marks of queued sightings, jobs of unknown start."""

    __slots__ = (
        "_idle_rounds",
        "_last_queued_seen",
        "_marks",
        "_next_round",
        "_seq",
        "_unknown",
    )

    def __init__(self) -> None:
        # (order, seen_at) of jobs seen queued, increasing in both: a newer
        # sighting of an older job makes every mark of a younger job redundant.
        # ``order`` is the submit sequence: timestamps can tie, order cannot.
        self._marks: list[tuple[int, float]] = []
        self._unknown: collections.deque[Tracked] = collections.deque()
        self._seq = itertools.count()
        self._last_queued_seen = float("-inf")
        self._next_round: float | None = None
        self._idle_rounds = 0  # sample rounds in a row that found no queue

    def __repr__(self) -> str:
        return f"<QueueFrontier unknown={len(self._unknown)} marks={len(self._marks)}>"

    def __contains__(self, t: Tracked) -> bool:
        return t.fifo_order >= 0

    def add(self, t: Tracked) -> None:
        """A new job of this model, younger than every job added before."""
        # Unique within this frontier, which compares only its own jobs' orders.
        t.fifo_order = next(self._seq)
        self._unknown.append(t)

    def note_queued(self, now: float) -> None:
        """Some job of this model was seen queued at ``now``: a queue exists."""
        self._last_queued_seen = now

    def queued_since(self, since: float) -> bool:
        """True when some job of this model was seen queued at ``since`` or later."""
        return self._last_queued_seen >= since

    def seen_queued(self, t: Tracked, now: float) -> None:
        """``t`` was queued at ``now``: so was every younger job."""
        self._last_queued_seen = now
        self._idle_rounds = 0
        order = t.fifo_order
        marks = self._marks
        while marks and marks[-1][0] >= order:
            marks.pop()
        marks.append((order, now))

    def seen_started(self, t: Tracked) -> None:
        """``t`` has started (running or finished): so has every older job."""
        order = t.fifo_order
        if order < 0:
            return
        unknown = self._unknown
        while unknown and (unknown[0].done or unknown[0].fifo_order <= order):
            unknown.popleft()
        # Marks older than the frontier only matter through the newest of them.
        if unknown:
            left = unknown[0].fifo_order
            while len(self._marks) >= 2 and self._marks[1][0] <= left:
                self._marks.pop(0)

    def forget(self, t: Tracked) -> None:
        """``t`` finished: it has started (its order stays: a finished job's is harmless)."""
        self.seen_started(t)

    def queued_at(self, t: Tracked) -> float | None:
        """The latest time ``t`` is known to have been queued (from older jobs' sightings)."""
        order = t.fifo_order
        if order < 0:
            return None
        i = bisect.bisect_right(self._marks, (order, float("inf")))
        return self._marks[i - 1][1] if i else None

    def candidates(self, count: int) -> list[Tracked]:
        """Up to ``count`` jobs of unknown start, evenly spaced from the frontier to the newest.

        The start boundary lies somewhere in the deque; even spacing brackets it
        (the last job seen running and the first seen queued) in one round.
        """
        unknown = self._unknown
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

    def settled(self) -> bool:
        """True (and no round is due) when no job of this model has an unknown start."""
        if self._unknown:
            return False
        self._next_round = None
        return True

    def round(self, now: float, interval: float, probes: int) -> tuple[list[Tracked], float | None]:
        """The jobs to probe now (maybe none), and when the next round is due.

        Rounds come every ``interval`` while jobs are seen queued; otherwise a
        rare sample, backing off (10, 20, 40, 80 intervals) while samples find
        no queue, to notice when one builds up. None: nothing left to learn.
        """
        if not self._unknown:
            self._next_round = None
            return [], None
        if self._next_round is None:
            self._next_round = now + interval
        picked: list[Tracked] = []
        if self._next_round <= now:
            active = now - self._last_queued_seen <= 5 * interval
            if active:
                self._next_round = now + interval
            else:
                self._next_round = now + 10 * interval * 2 ** min(self._idle_rounds, 3)
                self._idle_rounds += 1
            picked = self.candidates(probes)
            if not active:
                # One sample among the youngest: where a queue would show first.
                picked = picked[-1:]
        return picked, self._next_round
