"""What a FIFO queue tells about one model's jobs, without asking the server.

The API reports a ``queue_position``, so each model's queued jobs start in
submit order. Two inferences follow, and both save requests:

- a job seen *queued* at ``t`` means every younger job was queued at ``t``
  too, so none of them can finish before ``t`` plus a full run;
- a job seen *running* (or finished) means every older job has started.

The jobs whose start is not yet known form a deque in submit order; its left
end is the *start frontier*, and somewhere inside it lies the boundary between
started and queued jobs. A job's start is dated by the last queued sighting
of it or of an older job, so what dates every job best is a sighting of the
*oldest queued* job (the head of the server's queue) just before it starts:
each *round* searches for that boundary with a few probes sent one after the
other (the next one chosen from the last answer: a jump from where the
boundary was a round ago by how far it moves in a round, then a bisection
once a queued job brackets it). A few requests a round date the start of
every job within about a round, instead of each queued job paying for early
checks from its submit (a job that waited 30 s would pay about three).

Each :class:`QueueFrontier` owns its bookkeeping and its round; the
scheduler only reports sightings and asks for the jobs to probe.
"""

from __future__ import annotations

import bisect
import collections
import itertools

from ._tracked import Tracked

__all__ = ["QueueFrontier"]

#: The least the boundary's step per round is taken to be (jobs a round), and
#: the most intervals between two rounds of a queue that barely moves.
MIN_STEP = 0.1
MAX_SPACING = 4.0
#: Every this many rounds, the round starts with an *audit*: a younger job
#: probed before the search's older ones. On a queue that is not FIFO it is
#: often running while an older job is still queued, which the search (sent
#: after it) then sees: a certain contradiction (``_queue_inference.py``).
#: The search alone only probes at the boundary, where a random or LIFO
#: queue looks FIFO for minutes while its marks hold younger jobs late.
AUDIT_ROUNDS = 4
GOLDEN = 0.6180339887498949  # successive multiples mod 1 spread evenly (Weyl)


class QueueFrontier:
    """One model's FIFO bookkeeping: marks of queued sightings, jobs of unknown start."""

    __slots__ = (
        "_audit",
        "_audits",
        "_boundary",
        "_hi",
        "_idle_rounds",
        "_interval",
        "_last_queued_seen",
        "_marks",
        "_next_round",
        "_probe",
        "_probe_sent",
        "_probes_left",
        "_quiet",
        "_seq",
        "_step",
        "_target",
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
        self._interval: float | None = None  # the last round's interval
        self._quiet = False  # the next round was put off because no queue was seen
        # The boundary search of the current round: the probe in flight (one
        # at a time: each is chosen from the last answer), probes left, and
        # the oldest job seen queued this round (an upper bracket).
        self._probe: Tracked | None = None
        self._probe_sent = 0.0
        self._probes_left = 0
        self._hi: int | None = None
        self._target: int | None = None  # the order the last jump aimed at
        # Where the boundary was (the oldest job seen queued) a round ago, and
        # how many jobs it moves in a round (a running average, at least 1).
        self._boundary: int | None = None
        self._step = 1.0
        self._audit = False  # the probe in flight is an audit
        self._audits = 0  # active rounds run (every AUDIT_ROUNDS-th opens with an audit)

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

    def probing(self, t: Tracked) -> bool:
        """True while ``t`` is this frontier's search probe (its check must go out)."""
        return self._probe is t

    def seen_queued(self, t: Tracked, now: float) -> None:
        """``t`` was queued at ``now``: so was every younger job."""
        self._last_queued_seen = now
        self._idle_rounds = 0
        order = t.fifo_order
        if self._hi is None or order < self._hi:
            self._hi = order
        if self._probe is t:
            self._probe = None
            self._audit = False
        # A queue exists: the next round comes within an interval, even where a
        # quiet spell's backoff had put it later (else rounds never turn active).
        if self._quiet and self._interval is not None and self._next_round is not None:
            self._next_round = min(self._next_round, now + self._interval)
            self._quiet = False
        marks = self._marks
        while marks and marks[-1][0] >= order:
            marks.pop()
        marks.append((order, now))

    def seen_started(self, t: Tracked) -> list[tuple[Tracked, float]]:
        """``t`` has started (running or finished): so has every older job.

        Returns the older jobs this takes out of the unknown-start deque, each
        with the latest time it is known to have been queued: the marks that
        date them are pruned here, so the scheduler must apply them now
        (a job that started before its first check was due would otherwise
        lose its dating and pay early checks from its submit).
        """
        order = t.fifo_order
        if order < 0:
            return []
        if self._probe is t:
            self._probe = None
            if self._audit:
                # An audit's answer must not pop the older jobs: the search's
                # next probe (an older job, sent after this answer) is what
                # exposes a queue that is not FIFO. Under FIFO this only
                # leaves an inference for the next started sighting.
                self._audit = False
                return []
        unknown = self._unknown
        dated: list[tuple[Tracked, float]] = []
        while unknown and (unknown[0].done or unknown[0].fifo_order <= order):
            job = unknown.popleft()
            if job is not t and not job.done:
                seen_at = self.queued_at(job)
                if seen_at is not None:
                    dated.append((job, seen_at))
        # Marks older than the frontier only matter through the newest of them.
        if unknown:
            left = unknown[0].fifo_order
            while len(self._marks) >= 2 and self._marks[1][0] <= left:
                self._marks.pop(0)
        return dated

    def forget(self, t: Tracked) -> list[tuple[Tracked, float]]:
        """``t`` finished: it has started (its order stays: a finished job's is harmless).

        Returns what :meth:`seen_started` returns."""
        return self.seen_started(t)

    def queued_at(self, t: Tracked) -> float | None:
        """The latest time ``t`` is known to have been queued (from older jobs' sightings)."""
        order = t.fifo_order
        if order < 0:
            return None
        i = bisect.bisect_right(self._marks, (order, float("inf")))
        return self._marks[i - 1][1] if i else None

    def _index_at(self, order: int) -> int:
        """Deque index of the oldest job of unknown start whose order is at least ``order``."""
        unknown = self._unknown
        lo, hi = 0, len(unknown)
        while lo < hi:  # a deque indexes in O(n / 64): fine for a few calls a round
            mid = (lo + hi) // 2
            if unknown[mid].fifo_order < order:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def _next_probe(self) -> Tracked | None:
        """The next job of this round's boundary search, from what the round saw so far.

        Everything older than the deque's head has started (sightings pop
        it). With a job seen queued this round (``_hi``), the boundary lies
        between the head and it: bisect. Without one, jump from where the
        boundary was a round ago (or from the last jump, which found a
        started job) by the boundary's usual step per round.
        """
        unknown = self._unknown
        while unknown and unknown[0].done:
            unknown.popleft()
        n = len(unknown)
        if not n or self._probes_left <= 0:
            return None
        if self._hi is not None:
            upper = self._index_at(self._hi)
            if upper == 0:
                return None  # the oldest job of unknown start is queued: found
            index = (upper - 1) // 2
        else:
            base = self._target if self._target is not None else self._boundary
            if base is None:
                index = 0
            else:
                target = base + max(1, round(self._step))
                index = min(self._index_at(target), n - 1)
            self._target = unknown[index].fifo_order
        self._probes_left -= 1
        return unknown[index]

    def _audit_pick(self) -> Tracked | None:
        """A younger job of unknown start to probe first (None: too few to audit).

        The youngest on every other audit (a LIFO queue starts it first),
        else one spread over the deque by the golden ratio (a random queue
        starts any of them), never the oldest (the search's own first pick).
        """
        unknown = self._unknown
        n = len(unknown)
        if n < 2:
            return None
        k = self._audits // AUDIT_ROUNDS
        spread = 1 + int((k * GOLDEN % 1.0) * (n - 1))
        index = n - 1 if k % 2 == 0 else spread
        self._audit = True
        return unknown[min(index, n - 1)]

    def _start_round(self, probes: int) -> None:
        """Close the last round's search (learn the boundary's step) and open a new one."""
        if self._hi is not None:
            if self._boundary is not None:
                advance = max(self._hi - self._boundary, 0)
                self._step = max(MIN_STEP, 0.5 * self._step + 0.5 * advance)
            self._boundary = self._hi
        self._hi = None
        self._target = None
        self._probe = None
        self._audit = False
        self._probes_left = probes

    def round(self, now: float, interval: float, probes: int) -> tuple[list[Tracked], float | None]:
        """The job to probe now (maybe none), and when the next round is due.

        Rounds come every ``interval`` while jobs are seen queued, each a
        search of up to ``probes`` checks sent one after the other (call again
        once the last probe is answered; a probe unanswered for an interval
        is given up). Otherwise a rare sample of the youngest job, backing
        off (10, 20, 40, 80 intervals) while samples find no queue, to notice
        when one builds up. None: nothing left to learn.
        """
        unknown = self._unknown
        while unknown and unknown[0].done:
            unknown.popleft()
        if not unknown:
            self._next_round = None
            self._probe = None
            return [], None
        self._interval = interval
        if self._next_round is None:
            self._next_round = now + interval
        if self._probe is not None:
            if self._probe.done or now - self._probe_sent >= interval:
                self._probe = None  # finished, or its check failed: the search goes on
                self._audit = False
            else:
                # Wait for its answer (which pokes the scheduler), or give it
                # up an interval after it went out: never a due time already
                # past, which would wake the scheduler in a loop.
                return [], max(self._next_round, self._probe_sent + interval)
        picked: Tracked | None = None
        if self._next_round <= now:
            active = now - self._last_queued_seen <= 5 * interval
            if active:
                # A round dates the jobs that start before the next one; where
                # fewer than one starts a round, space rounds out to about one
                # start each (a queue that barely moves is not worth a probe
                # every interval), up to MAX_SPACING intervals.
                spacing = min(MAX_SPACING, 1.0 / min(self._step, 1.0))
                self._next_round = now + interval * spacing
                self._quiet = False
                self._start_round(probes)
                picked = self._audit_pick() if self._audits % AUDIT_ROUNDS == 0 else None
                self._audits += 1
                if picked is None:
                    picked = self._next_probe()
            else:
                self._next_round = now + 10 * interval * 2 ** min(self._idle_rounds, 3)
                self._idle_rounds += 1
                self._quiet = True
                # One sample, the youngest: where a queue would show first.
                self._start_round(0)
                picked = unknown[-1]
        else:
            picked = self._next_probe()
        if picked is None:
            return [], self._next_round
        self._probe = picked
        self._probe_sent = now
        return [picked], self._next_round

    def settled(self) -> bool:
        """True (and no round is due) when no job of this model has an unknown start."""
        if self._unknown:
            return False
        self._next_round = None
        return True
