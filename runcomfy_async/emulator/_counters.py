"""What the emulator counts, for tests and benchmarks to assert on."""

from __future__ import annotations

import attrs

__all__ = ["Counters"]


@attrs.define
class Counters:
    """Live counts of what the emulator saw and did since it started (or since ``reset()``).

    Every field is a plain ``int`` that only grows. Requests are counted per
    API route as they arrive, before auth or faults; faults per kind as they
    are injected.
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

    def reset(self) -> None:
        """Set every count back to zero."""
        for field in attrs.fields(Counters):
            setattr(self, field.name, 0)

    def as_dict(self) -> dict[str, int]:
        """Every count by name, plus the ``requests`` and ``faults`` totals."""
        out: dict[str, int] = attrs.asdict(self)
        out["requests"] = self.requests
        out["faults"] = self.faults
        return out
