"""When to check a job next: the poll policy and the per-model latency model.

Pure arithmetic, no I/O and no clock of its own, so it is unit-tested with
made-up times.

The rule: a job cannot finish before its *earliest* plausible completion (its
submit time plus the model's minimum duration, or the last time it was seen
queued plus that minimum). From there, checks follow the job's age
geometrically: the next check comes ``lag_fraction`` of the age later, capped
at ``max_lag``. A job that finishes between two checks is then noticed within
``lag_fraction`` of its age and never later than ``max_lag``, at the cost of
about ``log(max_age / min_age) / log(1 + lag_fraction)`` checks, which is the
least any schedule meeting that bound can spend without knowing the job.

For a model it has never seen, the scheduler learns the minimum from the
first jobs that finish: a few *probe* checks per round go to the oldest of its
parked jobs while the rest wait; see ``_polling/``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

__all__ = ["DEFAULT_PRIORS", "ModelLatency", "PollPolicy"]

#: Seconds before which a job of these models is very unlikely to be done
#: (public figures, late 2026: standard 60-120 s, pro 90-200 s; we take the
#: lower figure for every Kling 3.0 tier, since being early costs a check and
#: being late costs detection lag).
DEFAULT_PRIORS: Mapping[str, float] = {
    "kling/kling-3.0/standard/image-to-video": 60.0,
    "kling/kling-3.0/standard/text-to-video": 60.0,
    "kling/kling-3.0/pro/image-to-video": 60.0,
    "kling/kling-3.0/pro/text-to-video": 60.0,
}


@attrs.frozen
class PollPolicy:
    """How the scheduler times its checks. Every duration is in seconds.

    - ``lag_fraction`` / ``max_lag``: a finished job is noticed within this
      fraction of its age, and never later than ``max_lag``.
    - ``min_interval``: never check one job more often than this.
    - ``priors``: model id -> minimum plausible duration, used until learned.
    - ``probe_first_check``, ``probes_per_round``: until a model has a
      success, probe rounds check a few of its jobs early, rotating through
      them: the first round this long after submit, then geometrically (ratio
      ``1 + lag_fraction``). For a model with no prior, one job in
      ``probe_share`` of the waiting ones a round, between 2 and
      ``probes_per_round`` (the rest wait for what the probes learn).
    - ``verify_probes_per_round``: for a model with a prior, this many probes
      a round, from a tenth of the prior on and at ratio ``verify_ratio``,
      to catch a prior that is too high.
    - ``learn_after``: how many finished jobs before the learned minimum
      replaces the prior (before that it can only lower it).
    - ``max_concurrent_checks``: checks in flight at once.
    - ``backoff_initial`` / ``backoff_max``: a job whose check failed is
      checked again after this backoff (doubling per failure).
    - ``max_check_failures``: consecutive failed checks after which the job
      fails with the last error.
    - ``not_found_confirmations``: how many 404 answers in a row before the
      job fails with NotFoundError (a fresh id may briefly be unknown).
    - ``assume_fifo_queue``: the server runs each model's queued jobs in
      submit order (it reports a ``queue_position``), so a job cannot have
      started while an older job of its model was still queued; one check of
      the oldest queued job then stands for every younger one, and while jobs
      queue, ``frontier_probes`` checks a round near the start frontier date
      every job's start (see ``_polling/_frontier.py``).
    - ``time_scale``: multiplies every duration above (priors too); the
      emulator's ``time_scale`` goes here so tests run in milliseconds.
    """

    lag_fraction: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    max_lag: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    min_interval: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    priors: Mapping[str, float] = attrs.field(factory=lambda: dict(DEFAULT_PRIORS))
    probe_first_check: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    probes_per_round: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    probe_share: int = attrs.field(default=25, validator=attrs.validators.ge(1))
    verify_probes_per_round: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    verify_ratio: float = attrs.field(default=1.25, validator=attrs.validators.gt(1))
    learn_after: int = attrs.field(default=20, validator=attrs.validators.ge(2))
    max_concurrent_checks: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    backoff_initial: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    backoff_max: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    max_check_failures: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    not_found_confirmations: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    assume_fifo_queue: bool = True
    frontier_probes: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    time_scale: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))

    def scaled(self, seconds: float) -> float:
        """``seconds`` in this policy's time scale."""
        return seconds * self.time_scale

    def next_check(self, *, now: float, submitted: float, earliest: float | None) -> float:
        """When to check a job that was not done at ``now``.

        ``earliest`` is the job's earliest plausible completion (None: unknown).
        """
        base = now if earliest is None else max(now, earliest)
        age = max(base - submitted, 0.0)
        gap = min(self.lag_fraction * age, self.scaled(self.max_lag))
        return base + max(gap, self.scaled(self.min_interval))

    def backoff(self, failures: int) -> float:
        """Seconds before re-checking a job whose last ``failures`` checks failed."""
        exp = min(failures - 1, 30)
        return min(self.scaled(self.backoff_initial) * 2.0**exp, self.scaled(self.backoff_max))

    def expected_checks(self, min_seconds: float, max_seconds: float) -> float:
        """About how many checks a job lasting up to ``max_seconds`` costs (for docs/benchmarks)."""
        if max_seconds <= min_seconds:
            return 1.0
        return 1.0 + math.log(max_seconds / min_seconds) / math.log(1.0 + self.lag_fraction)


class ModelLatency:
    """What the scheduler knows of one model's time to completion.

    It keeps the smallest and largest durations seen (server timestamps where
    they parse, else a detection-bounded age) and answers the minimum
    plausible duration: the prior until ``learn_after`` jobs finished (or a
    cautious learned minimum, if a job beat the prior), then the learned
    minimum: the smallest duration seen, lowered by the expected gap between a
    sample's minimum and the true one, ``(max - min) / (n - 1)`` (the unbiased
    estimate for a uniform spread), so it is cautious after a few jobs and
    tight after many.
    """

    __slots__ = ("finished", "learn_after", "observed_max", "observed_min", "prior")

    def __init__(self, prior: float | None, learn_after: int) -> None:
        self.prior = prior
        self.learn_after = learn_after
        self.observed_min: float | None = None
        self.observed_max: float | None = None
        self.finished = 0

    def __repr__(self) -> str:
        return (
            f"<ModelLatency prior={self.prior} observed_min={self.observed_min} "
            f"observed_max={self.observed_max} finished={self.finished}>"
        )

    def observe(self, duration: float) -> bool:
        """Record one finished job's duration; True if the minimum estimate fell by over 5%.

        (A higher estimate changes nothing already scheduled: the scheduler
        never pushes a job's check later than planned.)"""
        before = self.minimum()
        if duration > 0:
            self.finished += 1
            if self.observed_min is None or duration < self.observed_min:
                self.observed_min = duration
            if self.observed_max is None or duration > self.observed_max:
                self.observed_max = duration
        after = self.minimum()
        if after is None:
            return False
        return before is None or after < 0.95 * before

    def learned(self) -> float | None:
        """The minimum as learned from finished jobs alone (None before any)."""
        if self.observed_min is None or self.observed_max is None:
            return None
        if self.finished < 2:
            # One sample says little about the spread: assume it is the median.
            return self.observed_min * 0.5
        gap = (self.observed_max - self.observed_min) / (self.finished - 1)
        return max(self.observed_min - gap, self.observed_min * 0.5)

    def minimum(self) -> float | None:
        """The minimum plausible duration, or None while nothing is known."""
        learned = self.learned()
        if learned is None:
            return self.prior
        if self.finished >= self.learn_after:
            return learned
        # Few samples can cluster high, and a minimum set too high costs
        # detection lag: until learn_after jobs, only evidence that jobs can
        # be *faster* than believed counts, and with a margin.
        assert self.observed_min is not None
        cautious = min(learned, 0.75 * self.observed_min)
        if self.prior is None:
            return cautious
        return self.prior if self.observed_min >= self.prior else min(self.prior, cautious)
