"""Probe cohorts: jobs of models whose duration is not known (yet, or only as a prior).

A job of a model with no prior and nothing learned is *parked*: it has no
due time, and waits in its model's cohort. A probe round checks a few of them
(rotating through all), and the first success teaches the model's minimum
duration, which ends the cohort and schedules every parked job. Jobs of a
model known only by its prior join the cohort without being parked: a few
verification probes test the prior until a job succeeds.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from .._timing import ModelLatency, PollPolicy
from ._due import DueQueue
from ._tracked import Tracked

__all__ = ["ProbeCohorts"]

# Flags in Tracked.cohort (written only here).
_MEMBER = 1  # in its model's cohort: a probe candidate
_PARKED = 2  # no due time: waits for a probe round or for the model to learn


class ProbeCohorts:
    """Every model's cohort, its probe rounds, and which jobs are parked."""

    __slots__ = (
        "_cohort",
        "_due",
        "_latency",
        "_parked",
        "_poke",
        "_policy",
        "_probe_due",
        "_rounds",
    )

    def __init__(
        self,
        policy: PollPolicy,
        due: DueQueue,
        latency: Callable[[str], ModelLatency],
        poke: Callable[[], None],
    ) -> None:
        self._policy = policy
        self._due = due
        self._latency = latency
        self._poke = poke
        self._cohort: dict[str, collections.deque[Tracked]] = {}
        self._parked = 0  # how many jobs are parked (for the repr)
        self._probe_due: dict[str, float] = {}
        self._rounds: dict[str, int] = {}  # probe rounds run, per model (ramps the count)

    def __repr__(self) -> str:
        return f"<ProbeCohorts models={len(self._cohort)} parked={self._parked}>"

    @property
    def active(self) -> bool:
        """True while some model has probe rounds."""
        return bool(self._probe_due)

    def probing(self, model_id: str) -> bool:
        """True while ``model_id`` has a cohort."""
        return model_id in self._cohort

    def is_parked(self, t: Tracked) -> bool:
        """True if ``t`` waits for a probe round or for its model to learn."""
        return bool(t.cohort & _PARKED)

    def park(self, t: Tracked) -> None:
        """Take ``t`` off the due queue; it waits in its model's cohort."""
        self._due.drop(t)
        if not t.cohort & _PARKED:
            self._parked += 1
            t.cohort |= _PARKED
        self.join(t)

    def join(self, t: Tracked) -> None:
        """Add ``t`` to its model's cohort (a probe candidate), parked or not."""
        if not t.cohort & _MEMBER:
            t.cohort |= _MEMBER
            self._cohort.setdefault(t.model_id, collections.deque()).append(t)
        if t.model_id not in self._probe_due:
            first = self._policy.first_probe(self._latency(t.model_id).minimum())
            self._probe_due[t.model_id] = t.submitted + first
            self._poke()

    def leave(self, t: Tracked) -> None:
        """``t`` leaves its cohort (checked on demand, or finished)."""
        # The deque drops it lazily when a probe round or the learning meets it.
        if t.cohort & _PARKED:
            self._parked -= 1
        t.cohort = 0

    def run(self, now: float) -> float | None:
        """Put due probe rounds on the due queue; return when the next one is due."""
        policy = self._policy
        next_due: float | None = None
        for model_id, due in list(self._probe_due.items()):
            queue = self._cohort.get(model_id)
            while queue and (queue[0].done or not queue[0].cohort & _MEMBER):
                queue.popleft()
            if not queue:
                self._cohort.pop(model_id, None)
                del self._probe_due[model_id]
                self._rounds.pop(model_id, None)
                continue
            if due <= now:
                minimum = self._latency(model_id).minimum()
                unknown = minimum is None
                rounds = self._rounds.get(model_id, 0)
                self._rounds[model_id] = rounds + 1
                # Past verify_near of the prior, a prior above the model's fast
                # tail starts to cost lag: sample in proportion to the cohort.
                near = (
                    minimum is not None and now - queue[0].submitted >= policy.verify_near * minimum
                )
                per_round = policy.probe_count(len(queue), rounds, unknown=unknown, near=near)
                oldest = queue[0].submitted
                sampled = 0
                for _ in range(len(queue)):
                    if sampled >= per_round:
                        break
                    t = queue.popleft()
                    if t.done or not t.cohort & _MEMBER:
                        continue
                    queue.append(t)  # rotate: each round samples other jobs
                    oldest = min(oldest, t.submitted)
                    if t.checking or (not t.cohort & _PARKED and t.due <= now):
                        continue  # it is being checked, or will be right away
                    if t.failures:
                        continue  # backing off (maybe a Retry-After): not a probe now
                    self._due.push(t, now)
                    sampled += 1
                if unknown:
                    due = policy.plan_next(now=now, submitted=oldest, earliest=None, minimum=None)
                else:
                    ratio = policy.verify_near_ratio if near else policy.verify_ratio
                    due = oldest + (now - oldest) * ratio
                self._probe_due[model_id] = due
            next_due = due if next_due is None else min(next_due, due)
        return next_due

    def end(self, model_id: str, now: float) -> None:
        """A job of the model succeeded: stop probing, schedule every parked job."""
        minimum = self._latency(model_id).minimum()
        if minimum is None:
            return  # nothing learned: the probes must go on, or parked jobs wait forever
        cohort = self._cohort.pop(model_id, None)
        self._probe_due.pop(model_id, None)
        self._rounds.pop(model_id, None)
        if not cohort:
            return
        for t in cohort:
            if t.done or not t.cohort & _MEMBER:
                continue
            parked = t.cohort & _PARKED
            self.leave(t)
            if not parked:
                continue
            t.earliest = t.submitted + minimum
            # Jobs already past the minimum may have finished: check them now.
            due = (
                now
                if t.earliest <= now
                else self._policy.plan_next(
                    now=now, submitted=t.submitted, earliest=t.earliest, minimum=minimum
                )
            )
            if self._due.push(t, due):
                self._poke()

    def clear(self) -> None:
        """Forget every cohort (the scheduler is closing)."""
        for cohort in self._cohort.values():
            for t in cohort:
                t.cohort = 0
        self._cohort.clear()
        self._parked = 0
        self._probe_due.clear()
        self._rounds.clear()
