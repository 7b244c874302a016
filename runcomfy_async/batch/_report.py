"""What a batch run ends with: one line per job, counts, costs, and the exit code."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import attrs
import cattrs

from ._lifecycle import OUTCOMES, REPORT_OUTCOME, JobOutcome
from ._manifest import ManifestEntry
from ._rows import JournalRow, JournalState

__all__ = ["OUTCOMES", "BatchReport", "JobOutcome", "JobReport", "job_report"]

_HINTS: Mapping[str, str] = {
    "outcome_unknown": (
        "may have been created and charged: check your RunComfy dashboard, then rerun with "
        "--adopt ID=REQUEST_ID for those it shows, or --resubmit-unknown for the rest"
    ),
    "download_failed": "rerun the same command to retry the downloads",
    "in_flight": "rerun the same command to resume them (they are not resubmitted)",
    "not_submitted": "rerun the same command to submit them",
    "failed": "rerun with --retry-failed to submit them again",
}


@attrs.frozen
class JobReport:
    """One job's outcome: ``files`` are names inside the output directory; ``cost`` is what
    the server reported (USD, where it did), ``estimated_cost`` the estimate from the prices."""

    id: str
    model: str
    outcome: JobOutcome
    request_id: str | None = None
    files: tuple[str, ...] = ()
    error: str | None = None
    cost: float | None = None
    estimated_cost: float | None = None
    line: int = 0

    @property
    def ok(self) -> bool:
        """True when the job succeeded and its files are on disk."""
        return self.outcome == "succeeded"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (as written to ``report.json``)."""
        data: dict[str, Any] = report_converter.unstructure(self)
        return data


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    # JSON has lists, not tuples: report.json and as_dict() say the same thing.
    conv.register_unstructure_hook_func(
        lambda t: getattr(t, "__origin__", None) is tuple,
        lambda v: [conv.unstructure(x) for x in v],
    )
    return conv


report_converter = _make_converter()
"""The one converter from report objects to ``report.json``'s JSON."""


@attrs.frozen
class BatchReport:
    """The outcome of a batch run, job by job (in manifest order).

    ``submitted``, ``resumed`` and ``downloaded`` count what *this* run did
    (jobs sent, jobs re-attached from the journal, jobs whose files it saved);
    ``interrupted`` is true when the run was stopped before the end;
    ``requests`` the API requests the run's client made while it went on
    (None when this run made none or could not count them).
    """

    out_dir: str
    jobs: tuple[JobReport, ...]
    started_at: float
    finished_at: float
    interrupted: bool = False
    submitted: int = 0
    resumed: int = 0
    downloaded: int = 0
    report_path: str | None = None
    requests: int | None = None

    @property
    def elapsed(self) -> float:
        """Seconds the run took."""
        return self.finished_at - self.started_at

    @property
    def counts(self) -> dict[str, int]:
        """Jobs per outcome (only outcomes that occur)."""
        counts = Counter(j.outcome for j in self.jobs)
        return {o: counts[o] for o in OUTCOMES if counts[o]}

    @property
    def ok(self) -> bool:
        """True when every job succeeded."""
        return all(j.ok for j in self.jobs)

    @property
    def failed(self) -> list[JobReport]:
        """The jobs that did not succeed."""
        return [j for j in self.jobs if not j.ok]

    @property
    def exit_code(self) -> int:
        """0 when every job succeeded, 130 when interrupted, else 1."""
        if self.ok:
            return 0
        return 130 if self.interrupted else 1

    @property
    def cost(self) -> float:
        """USD the server reported for this batch's jobs (jobs that reported one)."""
        return round(sum(j.cost for j in self.jobs if j.cost is not None), 6)

    @property
    def estimated_cost(self) -> float:
        """USD estimated for the jobs that succeeded (from the price table)."""
        return round(sum(j.estimated_cost or 0.0 for j in self.jobs if j.ok), 6)

    def __getitem__(self, job_id: str) -> JobReport:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise KeyError(job_id)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``report.json`` holds)."""
        return {
            "version": 1,
            "out_dir": self.out_dir,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_seconds": round(self.elapsed, 3),
            "interrupted": self.interrupted,
            "ok": self.ok,
            "counts": self.counts,
            "submitted": self.submitted,
            "resumed": self.resumed,
            "downloaded": self.downloaded,
            "requests": self.requests,
            "cost": self.cost,
            "estimated_cost": self.estimated_cost,
            "jobs": report_converter.unstructure(self.jobs, tuple[JobReport, ...]),
        }

    def to_json(self) -> str:
        """``report.json``'s text."""
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n"

    def summary(self, *, max_rows: int = 20) -> str:
        """A plain-text summary: counts per outcome, costs, and the jobs that did not succeed."""
        n = len(self.jobs)
        state = " (interrupted)" if self.interrupted else ""
        lines = [
            f"Batch of {n} job{'s' if n != 1 else ''} in {self.out_dir}{state}: "
            f"{self.elapsed:.1f} s; this run submitted {self.submitted}, resumed "
            f"{self.resumed}, downloaded {self.downloaded}",
            "",
            f"  {'outcome':<16} {'jobs':>6}",
        ]
        for outcome, count in self.counts.items():
            lines.append(f"  {outcome:<16} {count:>6}")
        lines.append(f"  {'total':<16} {n:>6}")
        costs = f"  cost: ${self.cost:.2f} reported" if self.cost else "  cost: not reported"
        lines.append(f"{costs}, ${self.estimated_cost:.2f} estimated for the jobs that succeeded")
        bad = self.failed
        if bad:
            width = max(len(j.id) for j in bad[:max_rows])
            width = min(max(width, 2), 40)
            lines += ["", f"  {'id':<{width}}  {'outcome':<16} {'request_id':<36}  error"]
            for job in bad[:max_rows]:
                error = (job.error or "").replace("\n", " ")
                if len(error) > 100:
                    error = error[:97] + "..."
                lines.append(
                    f"  {job.id:<{width}}  {job.outcome:<16} {job.request_id or '-':<36}  {error}"
                )
            if len(bad) > max_rows:
                lines.append(f"  ... and {len(bad) - max_rows} more (see report.json)")
            hints = [o for o in self.counts if o in _HINTS]
            if hints:
                lines.append("")
                lines += [f"  {o}: {_HINTS[o]}" for o in hints]
        if self.report_path:
            lines += ["", f"Report: {self.report_path}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        """Notebook rendering: the gallery of ``report.html`` (clips, filters, timeline).

        Clips are linked relative to the working directory (a notebook's own
        folder); the timeline's times are read from the output directory's
        journal, and left out when it cannot be read.
        """
        from ._gallery import notebook_gallery  # the gallery imports this module

        return notebook_gallery(self)


def job_report(
    entry: ManifestEntry,
    row: JournalRow | None,
    *,
    estimated_cost: float | None,
    fatal_error: str | None = None,
) -> JobReport:
    """One job's line of the report, from what the journal last recorded for it.

    ``fatal_error``: why the run stopped submitting, given to the jobs it left planned.
    """
    if row is None:
        return JobReport(
            entry.id, entry.model, "not_submitted", estimated_cost=estimated_cost, line=entry.line
        )
    error = row.error
    if row.state is JournalState.FINISHED:
        error = error or "not downloaded yet (the run stopped first)"
    elif row.state is JournalState.PLANNED and error is None:
        error = fatal_error
    cost = (row.result or {}).get("cost")
    return JobReport(
        id=entry.id,
        model=entry.model,
        outcome=REPORT_OUTCOME[row.state],
        request_id=row.request_id,
        files=tuple(str(f.get("name")) for f in row.files),
        error=error,
        cost=cost if isinstance(cost, (int, float)) else None,
        estimated_cost=estimated_cost,
        line=entry.line,
    )
