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

Nothing here assumes a time scale: intervals are shares of the model's
minimum or of the job's age (``PollPolicy.plan_next``, ``first_probe``), the
learned minimum assumes no shape of the durations (``ModelLatency``), and
checks that come due together are spread ahead of time to fit the request
budget (``spread_checks``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "DEFAULT_PRIORS",
    "ModelLatency",
    "PollPolicy",
    "quantile_bound_index",
    "spacing_margin",
    "spread_checks",
]

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


def _positive_or_none(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive or None, not {value!r}")


@attrs.frozen
class PollPolicy:
    """How the scheduler times its checks. Every duration is in seconds.

    - ``lag_fraction`` / ``max_lag``: a finished job is noticed within this
      fraction of its age, and never later than ``max_lag``.
    - ``priors``: model id -> minimum plausible duration, used until learned.
    - ``probes_per_round``: until a model has a success, probe rounds check
      a few of its jobs early, rotating through them: the first round
      :meth:`first_probe` after submit, then geometrically (ratio
      ``1 + lag_fraction``). For a model with no prior, one job in
      ``probe_share`` of the waiting ones a round, between 2 and
      ``probes_per_round`` (the rest wait for what the probes learn).
    - ``verify_probes_per_round``: for a model with a prior, this many probes
      a round, from a tenth of the prior on and at ratio ``verify_ratio``,
      to catch a prior that is too high.
    - ``verify_near`` / ``verify_near_ratio``: from this share of the prior
      on, verify rounds sample one waiting job in ``probe_share`` (at least
      ``verify_probes_per_round``), at ratio ``verify_near_ratio``. A prior
      above a model's fast tail (a lognormal's, say) leaves every job that
      beats it late, and a few probes rarely meet one of them; a cohort
      submitted together finds them in time only by sampling in proportion
      (about 0.1 requests a job for a cohort of 400 whose prior holds).
    - ``learn_after``: how many finished jobs before the learned minimum
      replaces the prior (before that it can only lower it).
    - ``max_concurrent_checks``: checks in flight at once.
    - ``backoff_share`` / ``backoff_max``: a job whose check failed is
      checked again ``backoff_share`` of its regular check interval later
      (the gap :meth:`plan_next` leaves at its age), doubling per failure, up
      to that interval while the server answers other checks, up to
      ``backoff_max`` seconds while it looks down (see :meth:`backoff`).
    - ``outage_after``: this many failed check answers in a row, across all
      jobs, and the server looks down (a sporadic fault rate rarely strings
      that many together).
    - ``max_check_failures``: consecutive failed checks after which the job
      fails with the last error.
    - ``not_found_confirmations``: how many 404 answers in a row before the
      job fails with NotFoundError (a fresh id may briefly be unknown).
    - ``assume_fifo_queue``: the server runs each model's queued jobs in
      submit order (it reports a ``queue_position``), so a job cannot have
      started while an older job of its model was still queued; one check of
      the oldest queued job then stands for every younger one, and while jobs
      queue, a search of up to ``frontier_probes`` checks a round, rounds
      ``frontier_share`` of the minimum apart, dates every job's start (see
      ``_polling/_frontier.py``). The scheduler
      verifies the order as it goes and turns the inference off for a model
      whose queue breaks it (``_queue_inference.py``).
    - ``fetch_queue_positions``: check queued jobs on the status route, which
      carries ``queue_position`` (for ``Job.queue_position`` and events); a
      finished job then costs a second request on the result route, so it is
      off by default, and listeners alone never turn it on.
    - ``time_scale``: multiplies every duration above (priors too); the
      emulator's ``time_scale`` goes here so tests run in milliseconds.

    Scale-free timing (:meth:`plan_next`, :meth:`first_probe`,
    :meth:`probe_count`, :meth:`interval_floor`; the fields below). Every
    interval is a share of the model's known or learned minimum or of the
    job's age (a 2 s image model is checked in tenths of a second, a 2
    minute video model in seconds), and the only absolute seconds left are
    floors that protect the server.

    - ``server_floor``: never check one job more often than this, whatever
      the model (seconds; tiny: it protects the server, not the budget).
    - ``min_interval_share``: never check one job more often than this share
      of its model's minimum duration (a 60 s model: 1.2 s; a 1 s model: 20 ms,
      so ``server_floor`` binds).
    - ``probe_first_share``: a model with a minimum (prior or learned) gets its
      first verify probe this share of the minimum after submit.
    - ``probe_floor``: a model with nothing known gets its first probe this
      long after submit, then geometrically (ratio ``1 + lag_fraction``).
    - ``probe_ramp_rounds``: for a model with nothing known, probes per round
      start at 1 and double every this many rounds up to the full count; the
      early rounds of a scale-free search almost never find a job done, and
      paying the full count there costs what the search saves (0: no ramp).
    - ``slot_lag_fraction``: while jobs wait for an in-flight slot, a check
      up to the job's likely end uses this lag fraction instead of
      ``lag_fraction`` (detection lag is then idle slot time, i.e. makespan);
      None turns the mode off.
    - ``low_quantile`` / ``quantile_confidence``: what the learned minimum
      aims at (see :class:`ModelLatency`).
    """

    lag_fraction: float = attrs.field(default=0.1, validator=attrs.validators.gt(0))
    max_lag: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    priors: Mapping[str, float] = attrs.field(factory=lambda: dict(DEFAULT_PRIORS))
    probes_per_round: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    probe_share: int = attrs.field(default=25, validator=attrs.validators.ge(1))
    verify_probes_per_round: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    verify_ratio: float = attrs.field(default=1.25, validator=attrs.validators.gt(1))
    verify_near: float = attrs.field(
        default=0.7, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )
    verify_near_ratio: float = attrs.field(default=1.15, validator=attrs.validators.gt(1))
    learn_after: int = attrs.field(default=20, validator=attrs.validators.ge(2))
    max_concurrent_checks: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    backoff_share: float = attrs.field(default=0.25, validator=attrs.validators.gt(0))
    backoff_max: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    outage_after: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    max_check_failures: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    not_found_confirmations: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    assume_fifo_queue: bool = True
    fetch_queue_positions: bool = False
    frontier_probes: int = attrs.field(default=2, validator=attrs.validators.ge(1))
    frontier_share: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    time_scale: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    server_floor: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    min_interval_share: float = attrs.field(default=0.02, validator=attrs.validators.ge(0))
    probe_first_share: float = attrs.field(
        default=0.1, validator=[attrs.validators.gt(0), attrs.validators.le(1)]
    )
    probe_floor: float = attrs.field(default=0.25, validator=attrs.validators.gt(0))
    probe_ramp_rounds: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    slot_lag_fraction: float | None = attrs.field(default=0.05, validator=_positive_or_none)
    low_quantile: float = attrs.field(
        default=0.02, validator=[attrs.validators.gt(0), attrs.validators.lt(0.5)]
    )
    quantile_confidence: float = attrs.field(
        default=0.95, validator=[attrs.validators.gt(0.5), attrs.validators.lt(1)]
    )

    def scaled(self, seconds: float) -> float:
        """``seconds`` in this policy's time scale."""
        return seconds * self.time_scale

    def interval_floor(self, minimum: float | None) -> float:
        """The least time between two checks of one job of a model whose minimum is ``minimum``.

        A share of the minimum (so a 2 s model is checked in tenths of a
        second, a 2 minute model in seconds), never below ``server_floor``.
        ``minimum`` is in the policy's time scale (as ``ModelLatency`` answers it).
        """
        floor = self.scaled(self.server_floor)
        if minimum is None:
            return floor
        return max(floor, self.min_interval_share * minimum)

    def plan_next(
        self,
        *,
        now: float,
        submitted: float,
        earliest: float | None,
        minimum: float | None,
        slots_waiting: bool = False,
        likely_end: float | None = None,
    ) -> float:
        """When to check a job that was not done at ``now``, at the model's own scale.

        ``earliest``: the job's earliest plausible completion (None: unknown);
        ``minimum``: its model's minimum duration (None: unknown), which sets
        the interval floor. ``slots_waiting``: jobs wait for an in-flight slot,
        so until ``likely_end`` (an absolute time, e.g. submit plus the
        model's high quantile; None: always) checks use ``slot_lag_fraction``.

        A job finishing at ``f >= earliest`` between two checks is seen at
        most ``fraction * age`` later (capped at ``max_lag``), unless the
        interval floor binds, which only happens for ages under
        ``floor / fraction``.
        """
        base = now if earliest is None else max(now, earliest)
        age = max(base - submitted, 0.0)
        fraction = self.lag_fraction
        if (
            slots_waiting
            and self.slot_lag_fraction is not None
            and (likely_end is None or base < likely_end)
        ):
            fraction = min(fraction, self.slot_lag_fraction)
        gap = min(fraction * age, self.scaled(self.max_lag))
        return base + max(gap, self.interval_floor(minimum))

    def first_probe(self, minimum: float | None) -> float:
        """Seconds after submit of a model's first probe round.

        Known minimum (prior or learned, in this policy's time scale): a
        ``probe_first_share`` of it. Nothing known: ``probe_floor`` (scaled),
        a server-protecting floor, after which rounds follow age geometrically.
        """
        if minimum is None:
            return self.scaled(self.probe_floor)
        return max(self.probe_first_share * minimum, self.interval_floor(minimum))

    def probe_count(
        self, waiting: int, rounds_done: int, *, unknown: bool, near: bool = False
    ) -> int:
        """How many of ``waiting`` jobs a probe round checks (the ``rounds_done + 1``-th round).

        For a model with a minimum, ``verify_probes_per_round``; when ``near``
        (the round's age is past ``verify_near`` of the minimum), one in
        ``probe_share`` of the waiting jobs, between that and
        ``probes_per_round``. For a model with nothing known, one in
        ``probe_share`` of the waiting jobs,
        between 2 and ``probes_per_round``, ramped up from 1 (doubling every
        ``probe_ramp_rounds`` rounds): the search starts at a tiny age where a
        job is almost never done, so the full count only pays near the end.
        """
        if waiting <= 0:
            return 0
        if not unknown:
            if near and self.verify_probes_per_round:
                dense = min(max(2, -(-waiting // self.probe_share)), self.probes_per_round)
                return min(max(dense, self.verify_probes_per_round), waiting)
            return min(self.verify_probes_per_round, waiting)
        full = min(max(2, -(-waiting // self.probe_share)), self.probes_per_round)
        if self.probe_ramp_rounds:
            full = min(full, 2 ** min(rounds_done // self.probe_ramp_rounds, 30))
        return min(full, waiting)

    def frontier_interval(self, minimum: float) -> float:
        """Time between two queue-frontier probe rounds of a model whose minimum is ``minimum``.

        ``frontier_share`` of it: a round dates the starts of the jobs that
        start before the next, each to within about a round, and a job's
        first checks are spaced ``lag_fraction`` of its age (more than the
        minimum), so rounds at half that spacing leave about half a check of
        start uncertainty a job, for about 2 probes a round (scenario 1 in
        virtual time: 0.1 of the minimum with 3 probes 9.0-9.25 requests a
        job, 0.05 with 2 probes 8.84-9.06)."""
        return max(self.frontier_share * minimum, self.interval_floor(minimum))

    def latency_model(self, model_id: str) -> ModelLatency:
        """A fresh :class:`ModelLatency` for ``model_id``: its prior (scaled) and this
        policy's ``learn_after``, ``low_quantile`` and ``quantile_confidence``."""
        prior = self.priors.get(model_id)
        return ModelLatency(
            None if prior is None else self.scaled(prior),
            self.learn_after,
            quantile=self.low_quantile,
            confidence=self.quantile_confidence,
        )

    def backoff(
        self, failures: int, *, age: float, minimum: float | None, server_down: bool = False
    ) -> float:
        """Seconds before re-checking a job ``age`` old whose last ``failures`` checks failed.

        At the job's own scale, like every other interval: the regular check
        interval at its age (``lag_fraction`` of it, at most ``max_lag``, at
        least :meth:`interval_floor`), times ``backoff_share``, doubling per
        failure. While the server answers other checks (``server_down``
        False), the failure was the job's bad luck (a sporadic 5xx, a dropped
        connection), and the backoff never exceeds the regular interval: a
        job that finished is still noticed about within the lag bound, and a
        failing job costs no more requests than a healthy one. While the
        server looks down, it doubles on up to ``backoff_max`` (scaled) to
        spare it; the scheduler brings those jobs forward when it answers
        again. Never below :meth:`interval_floor` (``minimum``: the model's
        minimum duration, None if unknown), which protects the server.
        """
        floor = self.interval_floor(minimum)
        interval = max(min(self.lag_fraction * max(age, 0.0), self.scaled(self.max_lag)), floor)
        delay = self.backoff_share * interval * 2.0 ** min(max(failures - 1, 0), 60)
        cap = self.scaled(self.backoff_max) if server_down else interval
        return max(min(delay, cap), floor)

    def expected_checks(self, min_seconds: float, max_seconds: float) -> float:
        """About how many checks a job lasting up to ``max_seconds`` costs (for docs/benchmarks)."""
        if max_seconds <= min_seconds:
            return 1.0
        return 1.0 + math.log(max_seconds / min_seconds) / math.log(1.0 + self.lag_fraction)


def quantile_bound_index(n: int, quantile: float, confidence: float) -> int:
    """The largest ``k`` such that the ``k``-th smallest of ``n`` samples lies at or
    below the ``quantile``-quantile with probability at least ``confidence``; 0 if none.

    Distribution-free: for i.i.d. samples of a continuous distribution, the
    number of samples at or below the ``p``-quantile ``q_p`` is Binomial(n, p),
    and ``x_(k) <= q_p`` exactly when at least ``k`` samples are, so
    ``P(x_(k) <= q_p) = P(Bin(n, p) >= k)``, which falls as ``k`` grows.
    Needs ``n >= log(1 - confidence) / log(1 - p)`` for ``k = 1`` (59 samples
    for p = 0.05 at 95%, 149 for p = 0.02).
    """
    if n <= 0:
        return 0
    # P(Bin >= k) = 1 - P(Bin <= k - 1); walk the pmf up while the tail stays high.
    log_q = math.log1p(-quantile)
    pmf = math.exp(n * log_q)  # P(Bin = 0)
    cdf = 0.0
    k = 0
    while k < n:
        cdf += pmf  # now P(Bin <= k)
        if 1.0 - cdf < confidence:
            return k  # P(Bin >= k + 1) falls short: x_(k) is the last that holds
        k += 1
        pmf *= (n - k + 1) / k * quantile / (1.0 - quantile)
    return k


def spacing_margin(gaps: int, confidence: float) -> float:
    """How many mean bottom spacings to take off the smallest sample to stay below the minimum.

    Near its minimum a duration distribution with a positive density there
    (a uniform spread, a bimodal mix's fast mode) makes the smallest spacings
    of a sample (Rényi) about i.i.d. exponential: ``D1 = x_(1) - min`` is one
    of them, ``S`` the sum of the next ``g = gaps`` (``x_(g+1) - x_(1)``).
    Then ``P(D1 > c * S / g) = E[exp(-c S / g)] = (1 + c / g) ** -g`` (the
    Laplace transform of a Gamma(g)), and ``c = g * ((1 - confidence) ** (-1/g) - 1)``
    makes it ``1 - confidence`` (19 for g = 1 at 95%, 3.6 for g = 9; -> log 20 = 3.0).
    """
    alpha = 1.0 - confidence
    return float(gaps * (alpha ** (-1.0 / gaps) - 1.0))


class ModelLatency:
    """What the scheduler knows of one model's time to completion.

    It keeps the smallest durations seen (up to ``keep`` of them; server
    timestamps where they parse, else a detection-bounded age), the largest,
    and how many finished, and answers the minimum plausible duration: the
    prior until ``learn_after`` jobs finished (or a cautious learned minimum,
    if a job beat the prior), then the learned minimum.

    The learned minimum assumes no shape (uniform, long-tailed, bimodal) and
    aims at the ``quantile``-quantile of durations, held below it with
    probability ``confidence``; it never exceeds the smallest sample's
    ``floor_share`` plus the rest:

    - with enough samples (``n >= log(1 - confidence) / log(1 - quantile)``),
      the order statistic ``x_(k)`` with the largest ``k`` for which
      ``P(Bin(n, quantile) >= k) >= confidence`` (:func:`quantile_bound_index`):
      distribution-free, and ``k / n -> quantile`` as ``n`` grows, so the
      estimate converges on the true quantile from below;
    - with fewer, no order statistic is below that quantile with such
      confidence, so the smallest sample is lowered by a margin from the
      spacings at the bottom of the sample (:func:`spacing_margin`), which
      holds with ``confidence`` where the density near the minimum is
      positive, and shrinks like ``1 / n`` (the spacings do);
    - one sample says nothing of the spread: half of it; from two on the
      estimate never goes below ``floor_share`` of the smallest sample.

    Aiming at a low quantile rather than the minimum costs at most the jobs
    faster than it (``quantile`` of them) a little detection lag, and keeps a
    long lower tail (lognormal: true minimum 0) from holding every job's
    first check at zero.
    """

    __slots__ = (
        "_learned",
        "_low",
        "confidence",
        "finished",
        "floor_share",
        "keep",
        "learn_after",
        "observed_max",
        "observed_min",
        "prior",
        "quantile",
        "spacing_gaps",
    )

    def __init__(
        self,
        prior: float | None,
        learn_after: int,
        *,
        quantile: float = 0.02,
        confidence: float = 0.95,
        keep: int = 256,
        spacing_gaps: int = 9,
        floor_share: float = 0.25,
    ) -> None:
        self.prior = prior
        self.learn_after = learn_after
        self.quantile = quantile
        self.confidence = confidence
        self.keep = keep
        self.spacing_gaps = spacing_gaps
        self.floor_share = floor_share
        self.observed_min: float | None = None
        self.observed_max: float | None = None
        self.finished = 0
        # The smallest ``keep`` durations, ascending: the order statistics the
        # estimate needs lie at the bottom.
        self._low: list[float] = []
        self._learned: float | None = None  # cached: observe() is the only writer

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
            low = self._low
            if len(low) < self.keep or duration < low[-1]:
                bisect.insort(low, duration)
                if len(low) > self.keep:
                    low.pop()
            self._learned = self._estimate()
        after = self.minimum()
        if after is None:
            return False
        return before is None or after < 0.95 * before

    def lowest(self) -> list[float]:
        """The smallest durations kept, ascending."""
        return list(self._low)

    def learned(self) -> float | None:
        """The minimum as learned from finished jobs alone (None before any)."""
        return self._learned

    def _estimate(self) -> float | None:
        low = self._low
        if not low:
            return None
        if self.finished < 2:
            # One sample says nothing of the spread: assume it is the median.
            return 0.5 * low[0]
        # The margin below can exceed the sample itself; never answer less
        # than a share of the fastest job (a heuristic floor, not a bound).
        floor = self.floor_share * low[0]
        k = quantile_bound_index(self.finished, self.quantile, self.confidence)
        if k >= 1:
            # Past ``keep`` kept samples, x_(keep) <= x_(k): lower, so still a bound.
            return max(low[min(k, len(low)) - 1], floor)
        gaps = min(len(low) - 1, self.spacing_gaps)
        spread = low[gaps] - low[0]
        margin = spacing_margin(gaps, self.confidence) * spread / gaps
        return max(low[0] - margin, floor)

    def likely_max(self) -> float | None:
        """The longest duration seen, once ``learn_after`` jobs finished (else None).

        What ``PollPolicy.plan_next`` takes as a job's likely end (``submitted +
        likely_max()``): past it, the in-flight-cap mode stops tightening checks."""
        return self.observed_max if self.finished >= self.learn_after else None

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


def spread_checks(
    deadlines: Sequence[float],
    *,
    rate: float,
    burst: float = 1.0,
    now: float | None = None,
    tokens: float | None = None,
) -> list[float]:
    """When to send each check so a request budget serves every one by its deadline.

    ``deadlines[i]``: the latest time check ``i`` may go out without breaking
    the detection-lag bound (its due time). ``rate`` / ``burst``: the
    budget's token bucket (requests per second, bucket size). Jobs submitted
    together come due together; sent at their due times, a budget that
    cannot serve them at once serves the last ``(n - burst) / rate`` late,
    which is lag past the bound. Sent *earlier*, each costs at worst one
    more request later (the check finds the job not done yet); so the plan
    moves checks ahead of time, as little as the budget requires.

    The answer (same order as ``deadlines``) is the *latest* schedule the
    bucket can serve: taken in reverse time a token bucket is again a token
    bucket (the constraint "at most ``burst + rate * (b - a)`` sends in any
    window ``[a, b]``" is symmetric), so placing deadlines latest first,
    each as late as its deadline and the sends already placed allow, is the
    greedy that is optimal for a bucket. Checks the budget can serve on time
    keep their deadlines exactly.

    ``now`` / ``tokens``: where the plan cannot start before ``now`` with
    ``tokens`` in the bucket (default full), sends that would have to leave
    earlier go out as soon as the bucket allows, in deadline order (which
    minimizes the largest lateness): then some deadlines are missed, and no
    plan could meet them.
    """
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be positive and burst at least 1")
    order = sorted(range(len(deadlines)), key=lambda i: deadlines[i], reverse=True)
    sends = [0.0] * len(deadlines)
    cursor = math.inf
    level = burst  # tokens of the reversed bucket
    for i in order:
        t = min(deadlines[i], cursor)
        if cursor != math.inf:
            level = min(burst, level + rate * (cursor - t))
        if level < 1.0:
            t -= (1.0 - level) / rate
            level = 1.0
        level -= 1.0
        sends[i] = cursor = t
    if now is None:
        return sends
    # Forward: nothing leaves before now or before the bucket has a token.
    level = burst if tokens is None else min(tokens, burst)
    clock = now
    for i in sorted(range(len(sends)), key=lambda i: (sends[i], deadlines[i])):
        t = max(sends[i], clock)
        level = min(burst, level + rate * (t - clock))
        if level < 1.0:
            t += (1.0 - level) / rate
            level = 1.0
        level -= 1.0
        sends[i] = clock = t
    return sends
