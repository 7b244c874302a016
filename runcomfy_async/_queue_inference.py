"""Queue-order inference that checks itself: is this model's queue really FIFO?

The scheduler saves requests by assuming each model's queue runs jobs in
submit order (see ``_frontier.py``): a job seen queued stands for every
younger one. On a server that runs its queue in another order (random,
LIFO, priorities) that inference delays checks of jobs that are long done,
which costs detection lag, the one thing the policy promises to bound.

:class:`QueueOrderMonitor` watches the sightings the scheduler makes anyway
and turns the inference off for good at the first *certain* contradiction:
a younger job seen started (running, or succeeded) while an older job was
still queued. "Certain" accounts for the time a check takes: the server
answered somewhere between the request leaving (``sent``) and the answer
arriving (``answered``), so the queued sighting must have been *sent* after
the started sighting was *answered*. Concurrent checks never raise a false
alarm.

Because the inference skips checks, a server that breaks it could go
unnoticed: every ``audit_every``-th skip it would allow is refused
(:meth:`QueueOrderMonitor.allow_skip`), so a real check verifies it.

Pure bookkeeping, no clock, no I/O.
"""

from __future__ import annotations

import bisect
import logging

__all__ = ["QueueOrderMonitor"]

logger = logging.getLogger("runcomfy_async")


class _Front:
    """Sightings reduced to a Pareto front, for one question asked in O(log n).

    ``later=False`` (started sightings): for an order ``a``, the earliest
    answer time among sightings of orders above ``a``. Kept entries rise in
    both order and time (an entry with a higher order and an earlier time
    makes a lower one redundant).

    ``later=True`` (queued sightings): for an order ``b``, the latest send
    time among sightings of orders below ``b``. Kept entries rise in order
    and fall in time, so they are stored negated (order and time) and the
    same code serves both.
    """

    __slots__ = ("_keys", "_later", "_times")

    def __init__(self, *, later: bool) -> None:
        self._later = later
        self._keys: list[int] = []
        self._times: list[float] = []

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, order: int, at: float) -> None:
        # Normalize to "high order, early time dominates" for started
        # sightings; queued sightings ask the mirror question (low order,
        # late time), so negate both.
        key, t = (-order, -at) if self._later else (order, at)
        keys, times = self._keys, self._times
        i = bisect.bisect_left(keys, key)
        # Dominated: some kept entry with a key >= ours is no later.
        if i < len(keys) and times[i] <= t:
            return
        # Entries with keys <= ours and times >= ours are now redundant: one
        # with our key at i, and those right before i (times rise with keys).
        end = i + 1 if i < len(keys) and keys[i] == key else i
        j = i
        while j > 0 and times[j - 1] >= t:
            j -= 1
        keys[j:end] = [key]
        times[j:end] = [t]

    def query(self, order: int) -> float | None:
        """Started: the earliest time among orders above ``order``.

        Queued: the latest time among orders below ``order``. None if no such sighting.
        """
        key = -order if self._later else order
        i = bisect.bisect_right(self._keys, key)
        if i == len(self._keys):
            return None
        t = self._times[i]
        return -t if self._later else t


class QueueOrderMonitor:
    """One model's evidence on whether its queue runs in submit order.

    Feed it every sighting of a job whose submit order is known (``order``:
    rises with submit time, as the scheduler's ``Tracked.order``):

    - :meth:`queued`: the job was reported queued;
    - :meth:`started`: the job was reported running, or succeeded (do not
      pass failed or cancelled jobs: a server may fail a job without ever
      running it, which says nothing of the queue's order).

    Each takes the time the check was sent and the time it was answered
    (one time for both where only one is known). ``fifo`` turns False for
    good at the first certain contradiction (``violations_to_disable`` of
    them), with a debug log line naming the two jobs.
    """

    __slots__ = (
        "_queued",
        "_skips",
        "_started",
        "audit_every",
        "fifo",
        "model_id",
        "violations",
        "violations_to_disable",
    )

    def __init__(
        self, model_id: str, *, audit_every: int = 8, violations_to_disable: int = 1
    ) -> None:
        if audit_every < 0 or violations_to_disable < 1:
            raise ValueError("audit_every must be >= 0 and violations_to_disable >= 1")
        self.model_id = model_id
        self.audit_every = audit_every
        self.violations_to_disable = violations_to_disable
        self.fifo = True
        self.violations = 0
        self._skips = 0
        self._started = _Front(later=False)
        self._queued = _Front(later=True)

    def __repr__(self) -> str:
        return (
            f"<QueueOrderMonitor {self.model_id} fifo={self.fifo} violations={self.violations} "
            f"queued={len(self._queued)} started={len(self._started)}>"
        )

    def queued(self, order: int, sent: float, answered: float | None = None) -> bool:
        """Job ``order`` was seen queued; True if that just turned FIFO inference off."""
        answered = sent if answered is None else answered
        if not self.fifo:
            return False
        self._queued.add(order, sent)
        # A younger job answered "started" before this request even left?
        started_at = self._started.query(order)
        if started_at is not None and started_at <= sent:
            return self._violation(f"job #{order} was queued after a younger one had started")
        return False

    def started(self, order: int, sent: float, answered: float | None = None) -> bool:
        """Job ``order`` was seen running or succeeded; True if that turned FIFO inference off."""
        answered = sent if answered is None else answered
        if not self.fifo:
            return False
        self._started.add(order, answered)
        # An older job whose "queued" request left after this answer arrived?
        queued_at = self._queued.query(order)
        if queued_at is not None and queued_at >= answered:
            return self._violation(f"job #{order} had started while an older one was queued")
        return False

    def allow_skip(self) -> bool:
        """May the scheduler skip a check on the strength of FIFO order this time?

        False once FIFO is disproved, and every ``audit_every``-th time before
        (0: never audit), so skipped jobs are sometimes checked for real and a
        server that breaks the order shows it.
        """
        if not self.fifo:
            return False
        self._skips += 1
        return not (self.audit_every and self._skips % self.audit_every == 0)

    def _violation(self, what: str) -> bool:
        self.violations += 1
        if self.violations < self.violations_to_disable:
            return False
        self.fifo = False
        # Free the evidence: nothing more will be asked of it.
        self._started = _Front(later=False)
        self._queued = _Front(later=True)
        logger.debug(
            "model %s: %s; its queue is not FIFO, queue-order inference is off",
            self.model_id,
            what,
        )
        return True
