"""A fleet job's states and the transitions between them (the SQLite journal's diagram).

::

    planned ─▶ submitting ─▶ submitted ─▶ finished ─▶ downloaded
       ▲  │        │  │  ▲        │
       │  │        │  │  └─ unknown (a request id learned late)
       │  │        ▼  ▼           ▼
       │  │   planned  unknown  failed / cancelled / unknown
       │  └────────▶ submitted (adopting a known request id)
       └──── failed / unknown / cancelled (requeued on purpose)

``submitting`` is written before the paid POST may leave, so a runner that
dies leaves either a request id (re-attached by another runner, never
resubmitted) or a ``submitting`` row that becomes ``unknown``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ALLOWED", "FleetRow", "FleetState", "sources"]


class FleetState(str, enum.Enum):
    """How far one job of a fleet batch got (same values as the SQLite journal's states)."""

    PLANNED = "planned"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    FINISHED = "finished"
    DOWNLOADED = "downloaded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


_S = FleetState

#: Every legal move, from -> allowed targets. Anything else is refused.
ALLOWED: Mapping[FleetState, frozenset[FleetState]] = {
    # cancelled: a queued job cancelled on interrupt; submitted: --adopt of a known id.
    _S.PLANNED: frozenset({_S.SUBMITTING, _S.SUBMITTED, _S.CANCELLED}),
    # planned: certainly not sent (error answer, nothing left this machine);
    # failed: rejected by validation; unknown: may have been sent.
    _S.SUBMITTING: frozenset({_S.SUBMITTED, _S.UNKNOWN, _S.FAILED, _S.PLANNED}),
    _S.SUBMITTED: frozenset({_S.FINISHED, _S.FAILED, _S.CANCELLED, _S.UNKNOWN}),
    _S.FINISHED: frozenset({_S.DOWNLOADED}),
    # A downloaded file that was lost is fetched again.
    _S.DOWNLOADED: frozenset({_S.DOWNLOADED}),
    _S.FAILED: frozenset({_S.PLANNED}),
    # submitted: a runner thought dead got its answer after all; planned: resubmit on purpose.
    _S.UNKNOWN: frozenset({_S.PLANNED, _S.SUBMITTED}),
    _S.CANCELLED: frozenset({_S.PLANNED}),
}


def sources(target: FleetState) -> tuple[str, ...]:
    """The states from which ``target`` may be reached (their values, for SQL)."""
    return tuple(sorted(s.value for s, targets in ALLOWED.items() if target in targets))


@attrs.frozen
class FleetRow:
    """One job as the fleet journal last recorded it. Times are Unix timestamps.

    ``runner_id`` is the runner that holds (or last held) the job: where its
    files are when each runner writes to its own output directory.
    """

    id: str
    line: int
    model: str
    input: Mapping[str, Any] = attrs.field(repr=False)
    entry_hash: str = attrs.field(repr=False)
    state: FleetState = FleetState.PLANNED
    request_id: str | None = None
    attempts: int = 0
    error: str | None = None
    result: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    files: tuple[Mapping[str, Any], ...] = attrs.field(factory=tuple, repr=False)
    submitted_at: float | None = attrs.field(default=None, repr=False)
    finished_at: float | None = attrs.field(default=None, repr=False)
    downloaded_at: float | None = attrs.field(default=None, repr=False)
    updated_at: float = attrs.field(default=0.0, repr=False)
    runner_id: str | None = None
