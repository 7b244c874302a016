"""Fault injection: what can go wrong, how often, and the seeded dice that decide it."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import attrs

from ._counters import Counters

__all__ = ["ROUTES", "Decision", "FaultInjector", "Faults"]

ROUTES: frozenset[str] = frozenset({"submit", "status", "result", "cancel"})
"""The API routes faults can apply to."""


def _rate(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _positive_or_none(
    instance: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be > 0 or None, got {value!r}")


def _to_routes(value: Iterable[str]) -> frozenset[str]:
    routes = frozenset([value] if isinstance(value, str) else value)
    unknown = routes - ROUTES
    if unknown:
        raise ValueError(f"unknown routes {sorted(unknown)}; choose among {sorted(ROUTES)}")
    return routes


@attrs.define
class Faults:
    """Which faults the emulator injects, and how often. All off by default.

    Rates are probabilities in ``[0, 1]``, each drawn independently from the
    emulator's fault RNG (seeded with ``seed``, or the emulator's seed), so a
    rate of 1.0 makes a fault deterministic. Attributes may be changed at any
    time, and ``emu.faults`` may be replaced by a new ``Faults``.

    API faults (on the routes named in ``routes``), in the order they are tried:

    - ``slow_rate`` / ``slow_seconds``: wait before answering (then go on);
    - ``rps_limit`` (requests per second per token, burst ``rps_burst``,
      default ``max(1, rps_limit)``): beyond it, 429 with ``Retry-After`` in
      whole seconds (at least 1, as HTTP wants);
    - ``rate_429`` with ``retry_after`` seconds in the ``Retry-After`` header;
    - ``rate_500``, ``rate_502``, ``rate_503``: that status, with an HTML
      gateway page instead of a JSON body for a share ``html_rate`` of them;
    - ``drop_rate``: close the connection without answering. On submit, the
      job is created first when ``drop_after_create`` is true (the client
      cannot know a paid job exists), or not at all when it is false.

    Job faults: ``fail_rate`` of the jobs end ``failed`` with an error object.
    Storage faults: ``download_fail_rate`` (500 from storage) and
    ``download_truncate_rate`` (a full ``Content-Length``, then the
    connection closes halfway through the body).
    """

    fail_rate: float = attrs.field(default=0.0, validator=_rate)
    rate_429: float = attrs.field(default=0.0, validator=_rate)
    retry_after: float = attrs.field(default=1.0, validator=_non_negative)
    rate_500: float = attrs.field(default=0.0, validator=_rate)
    rate_502: float = attrs.field(default=0.0, validator=_rate)
    rate_503: float = attrs.field(default=0.0, validator=_rate)
    html_rate: float = attrs.field(default=0.0, validator=_rate)
    drop_rate: float = attrs.field(default=0.0, validator=_rate)
    drop_after_create: bool = False
    slow_rate: float = attrs.field(default=0.0, validator=_rate)
    slow_seconds: float = attrs.field(default=1.0, validator=_non_negative)
    rps_limit: float | None = attrs.field(default=None, validator=_positive_or_none)
    rps_burst: float | None = attrs.field(default=None, validator=_positive_or_none)
    routes: frozenset[str] = attrs.field(default=ROUTES, converter=_to_routes)
    download_fail_rate: float = attrs.field(default=0.0, validator=_rate)
    download_truncate_rate: float = attrs.field(default=0.0, validator=_rate)
    seed: int | None = None


ErrorKind = Literal["rps", "429", "500", "502", "503"]


@attrs.frozen
class Decision:
    """What to do to one API request: wait, answer with an error, or drop the connection."""

    slow_seconds: float = 0.0
    error: ErrorKind | None = None
    html: bool = False
    retry_after: float | None = None
    drop: Literal["before", "after"] | None = None


_NOTHING = Decision()


def format_retry_after(seconds: float) -> str:
    """``Retry-After`` value for ``seconds``: an integer when whole, else a short decimal."""
    if seconds == int(seconds):
        return str(int(seconds))
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


class FaultInjector:
    """Rolls the dice for every request, job and download, and counts what it injects."""

    __slots__ = ("_buckets", "_clock", "_counters", "_faults", "_rng", "_seed")

    def __init__(
        self,
        faults: Faults,
        *,
        seed: int,
        counters: Counters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seed = seed
        self._counters = counters
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._faults = faults
        self._rng = random.Random(self._rng_seed(faults))

    def _rng_seed(self, faults: Faults) -> str:
        return f"faults:{self._seed if faults.seed is None else faults.seed}"

    @property
    def faults(self) -> Faults:
        """The live fault configuration."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        # A new configuration restarts the dice, so a test that swaps in
        # Faults(seed=...) gets the same sequence every run.
        self._faults = faults
        self._rng = random.Random(self._rng_seed(faults))
        self._buckets.clear()

    def _roll(self, rate: float) -> bool:
        return rate > 0.0 and (rate >= 1.0 or self._rng.random() < rate)

    def decide(self, route: str, key: str) -> Decision:
        """Decide the fate of one request to ``route`` made with credentials ``key``."""
        f = self._faults
        if route not in f.routes:
            return _NOTHING
        c = self._counters
        slow = 0.0
        if self._roll(f.slow_rate):
            slow = f.slow_seconds
            c.fault_slow += 1
        if f.rps_limit is not None:
            wait = self._take(key, f.rps_limit, f.rps_burst)
            if wait > 0.0:
                c.rate_limited += 1
                return Decision(slow, "rps", retry_after=float(max(1, math.ceil(wait))))
        if self._roll(f.rate_429):
            c.fault_429 += 1
            return Decision(slow, "429", retry_after=f.retry_after)
        server_errors: tuple[tuple[ErrorKind, float], ...] = (
            ("500", f.rate_500),
            ("502", f.rate_502),
            ("503", f.rate_503),
        )
        for kind, rate in server_errors:
            if self._roll(rate):
                setattr(c, f"fault_{kind}", getattr(c, f"fault_{kind}") + 1)
                html = self._roll(f.html_rate)
                if html:
                    c.fault_html += 1
                return Decision(slow, kind, html=html)
        if self._roll(f.drop_rate):
            c.fault_drop += 1
            after = route == "submit" and f.drop_after_create
            return Decision(slow, drop="after" if after else "before")
        return Decision(slow) if slow else _NOTHING

    def _take(self, key: str, rate: float, burst: float | None) -> float:
        """Take one token from ``key``'s bucket; 0.0 if granted, else seconds until one is due."""
        capacity = burst if burst is not None else max(1.0, rate)
        now = self._clock()
        tokens, last = self._buckets.get(key, (capacity, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate

    def job_fails(self) -> bool:
        """Whether the job finishing now ends ``failed`` (counted)."""
        if self._roll(self._faults.fail_rate):
            self._counters.fault_fail += 1
            return True
        return False

    def download(self) -> Literal["fail", "truncate"] | None:
        """The fate of one storage download (counted)."""
        if self._roll(self._faults.download_fail_rate):
            self._counters.fault_download_fail += 1
            return "fail"
        if self._roll(self._faults.download_truncate_rate):
            self._counters.fault_download_truncate += 1
            return "truncate"
        return None
