"""What the emulator counts, for tests and benchmarks to assert on."""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs

__all__ = ["Counters"]


@attrs.define
class Counters:
    """Live counts of what the emulator saw and did since it started (or since ``reset()``).

    The ``int`` fields only grow. Requests are counted per API route as they
    arrive, before auth or faults; faults per kind as they are injected.

    Per account and per answer (each a ``dict`` that only grows):

    - ``submits_per_token``: submit requests per bearer token that authenticated;
    - ``max_active_per_token``: the most jobs one token had queued or running
      at once (what an account's concurrency limit counts);
    - ``duplicate_submits``: accepted submits whose model and canonical
      payload (JSON with sorted keys) an earlier accepted submit already had;
    - ``answers``: API answers by HTTP status (``"200"``, ``"429"``, ...;
      ``"drop"`` for a connection closed without one), ``answers_by_route``
      the same per route; :attr:`share_429` is the share of 429s;
    - ``peak_rps``: the most API requests that arrived within any one second;
    - ``account_limited``: submits refused with 429 by the per-account
      concurrency limit (``Emulator(max_jobs_per_token=...)``).

    The emulator serves all of it as JSON at ``GET /_emulator/counters`` to
    loopback clients.
    """

    # API requests, per route
    submit: int = 0
    status: int = 0
    result: int = 0
    cancel: int = 0
    # job lifecycle
    jobs_created: int = 0
    jobs_started: int = 0
    jobs_succeeded: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    cancel_refused: int = 0
    # answers the API gave on its own account (not injected)
    bad_token: int = 0
    forbidden: int = 0
    not_found: int = 0
    unknown_model: int = 0
    invalid_body: int = 0
    # injected faults, per kind
    fault_fail: int = 0
    fault_429: int = 0
    fault_500: int = 0
    fault_502: int = 0
    fault_503: int = 0
    fault_html: int = 0
    fault_drop: int = 0
    fault_slow: int = 0
    rate_limited: int = 0
    outages: int = 0
    fault_download_fail: int = 0
    fault_download_truncate: int = 0
    # the storage origin
    storage_requests: int = 0
    storage_auth_headers: int = 0
    downloads_completed: int = 0
    # accounts and answers
    account_limited: int = 0
    duplicate_submits: int = 0
    peak_rps: int = 0
    submits_per_token: dict[str, int] = attrs.field(factory=dict)
    max_active_per_token: dict[str, int] = attrs.field(factory=dict)
    answers: dict[str, int] = attrs.field(factory=dict)
    answers_by_route: dict[str, dict[str, int]] = attrs.field(factory=dict)
    # private state behind the figures above (not counts)
    _payloads: set[bytes] = attrs.field(factory=set, init=False, repr=False)
    _arrivals: deque[float] = attrs.field(factory=deque, init=False, repr=False)
    _clock: Callable[[], float] = attrs.field(default=time.monotonic, init=False, repr=False)

    @property
    def requests(self) -> int:
        """API requests of all four routes together."""
        return self.submit + self.status + self.result + self.cancel

    @property
    def faults(self) -> int:
        """Faults injected of every kind together (``fault_html`` counts 5xx already counted)."""
        return (
            self.fault_fail
            + self.fault_429
            + self.fault_500
            + self.fault_502
            + self.fault_503
            + self.fault_drop
            + self.fault_slow
            + self.rate_limited
            + self.outages
            + self.fault_download_fail
            + self.fault_download_truncate
        )

    @property
    def share_429(self) -> float:
        """Share of API answers that were 429 (0.0 before any answer)."""
        total = sum(self.answers.values())
        return self.answers.get("429", 0) / total if total else 0.0

    def note_arrival(self) -> None:
        """Count one API request's arrival towards :attr:`peak_rps`."""
        now = self._clock()
        arrivals = self._arrivals
        arrivals.append(now)
        while arrivals[0] <= now - 1.0:
            arrivals.popleft()
        if len(arrivals) > self.peak_rps:
            self.peak_rps = len(arrivals)

    def note_answer(self, route: str, status: int | str) -> None:
        """Count one API answer of ``route`` with HTTP ``status`` (or ``"drop"``)."""
        key = str(status)
        self.answers[key] = self.answers.get(key, 0) + 1
        per_route = self.answers_by_route.setdefault(route, {})
        per_route[key] = per_route.get(key, 0) + 1

    def note_submit(self, token: str) -> None:
        """Count one authenticated submit of ``token``."""
        self.submits_per_token[token] = self.submits_per_token.get(token, 0) + 1

    def note_accepted(self, model_id: str, payload: Mapping[str, Any]) -> None:
        """Remember an accepted submit; count it as a duplicate if it was seen before."""
        canonical = json.dumps([model_id, payload], sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).digest()
        if digest in self._payloads:
            self.duplicate_submits += 1
        else:
            self._payloads.add(digest)

    def note_active(self, token: str, active: int) -> None:
        """Record that ``token`` has ``active`` jobs queued or running right now."""
        if active > self.max_active_per_token.get(token, 0):
            self.max_active_per_token[token] = active

    def reset(self) -> None:
        """Set every count back to zero (and forget the payloads seen)."""
        for field in attrs.fields(Counters):
            if field.name.startswith("_"):
                continue
            value = getattr(self, field.name)
            setattr(self, field.name, {} if isinstance(value, dict) else 0)
        self._payloads.clear()
        self._arrivals.clear()

    def as_dict(self) -> dict[str, Any]:
        """Every count by name, plus ``requests``, ``faults`` and ``share_429``."""
        out: dict[str, Any] = attrs.asdict(self, filter=lambda a, _: not a.name.startswith("_"))
        out["requests"] = self.requests
        out["faults"] = self.faults
        out["share_429"] = self.share_429
        return out
