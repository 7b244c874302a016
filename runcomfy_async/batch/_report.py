"""What a batch run ends with: one line per job, counts, costs, and the exit code; and its
``report.html`` (the gallery, rendered by ``_gallery``) with the journal's times."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs

from .._errors import JournalError
from ._gallery import GALLERY_NAME, gallery_html, render_gallery
from ._gallery import HINTS as _HINTS
from ._journal import Journal
from ._lifecycle import OUTCOMES, REPORT_OUTCOME, JobOutcome
from ._manifest import ManifestEntry
from ._plan import entry_cost
from ._rows import JournalRow, JournalState

__all__ = [
    "OUTCOMES",
    "REPORT_NAME",
    "BatchReport",
    "JobOutcome",
    "JobReport",
    "job_report",
    "journal_report",
    "notebook_gallery",
    "save_gallery",
    "write_gallery",
]

logger = logging.getLogger("runcomfy_async")

REPORT_NAME = "report.json"
"""The report's file name inside the output directory (the runner's ``REPORT_NAME``)."""


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
            page = os.path.join(os.path.dirname(self.report_path), GALLERY_NAME)
            lines += ["", f"Report: {self.report_path}; the clips and a timeline: {page}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        """Notebook rendering: the gallery of ``report.html`` (clips, filters, timeline).

        Clips are linked relative to the working directory (a notebook's own
        folder); the timeline's times are read from the output directory's
        journal, and left out when it cannot be read.
        """
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


# -- report.html: the gallery of a report, with the journal's times --------------------


def journal_report(
    out_dir: str | os.PathLike[str], rows: Mapping[str, JournalRow] | None = None
) -> dict[str, Any]:
    """The report of an output directory, as ``report.json``'s dict (blocking).

    The jobs come from the journal (``rows``, read from ``out_dir`` when not
    given): what it says is the truth, even when a run was killed before it
    wrote ``report.json``. ``report.json`` is used as it is only when it was
    written after the journal's last change (it is that run's own report, with
    its request count); without a journal it is all there is. Raises
    :class:`FileNotFoundError` when the directory has neither, and
    :class:`JournalError` when a run holds the journal.
    """
    directory = Path(out_dir)
    if rows is None:
        rows = Journal.read(directory) or {}
    saved: dict[str, Any] | None = None
    path = directory / REPORT_NAME
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            loaded = None  # cut short or edited: the journal knows better
        if isinstance(loaded, dict):
            saved = loaded
    if not rows:
        if saved is None:
            raise FileNotFoundError(
                f"{directory} holds no batch: neither a journal nor {REPORT_NAME}"
            )
        return saved
    last_change = max(r.updated_at for r in rows.values())
    finished = saved.get("finished_at") if saved else None
    if not isinstance(finished, (int, float)) or isinstance(finished, bool):
        finished = None
    if saved is not None and finished is not None and finished >= last_change:
        return saved
    jobs = tuple(
        job_report(
            ManifestEntry(r.id, r.model, r.input, r.line, r.entry_hash),
            r,
            estimated_cost=entry_cost(ManifestEntry(r.id, r.model, r.input, r.line), None),
        )
        for r in rows.values()
    )
    starts = [t for r in rows.values() for t in (r.sending_at, r.submitted_at) if t is not None]
    open_states = {JournalState.PLANNED, JournalState.SUBMITTING, JournalState.SUBMITTED}
    report = BatchReport(
        out_dir=str(directory),
        jobs=jobs,
        started_at=min(starts, default=last_change),
        # The last the journal heard: where the jobs still open are drawn to.
        finished_at=last_change,
        interrupted=any(r.state in open_states for r in rows.values()),
    )
    return report.as_dict()


def write_gallery(
    out_dir: str | os.PathLike[str],
    *,
    report: Mapping[str, Any] | None = None,
    rows: Mapping[str, JournalRow] | None = None,
    requests: int | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and return its path (blocking: call it in a thread).

    ``report`` (``report.json``'s dict) defaults to :func:`journal_report`,
    ``rows`` to the directory's journal read afresh (pass them while a run
    holds it). Raises :class:`FileNotFoundError` when there is no batch there.
    """
    directory = Path(out_dir)
    if rows is None:
        rows = Journal.read(directory) or {}
    if report is None:
        report = journal_report(directory, rows)
    text = render_gallery(report, rows, requests=requests)
    target = directory / GALLERY_NAME
    part = target.with_name(f".{GALLERY_NAME}.part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, target)
    return target


def save_gallery(
    out_dir: str | os.PathLike[str], report: BatchReport, rows: Mapping[str, JournalRow]
) -> Path | None:
    """Write a finished run's ``report.html`` (blocking); on a disk error log it, return None.

    The page is a view of ``report.json``: failing to write it must not turn a
    batch that did its work into an error.
    """
    try:
        return write_gallery(out_dir, report=report.as_dict(), rows=rows)
    except OSError as exc:
        logger.warning("could not write %s in %s: %s", GALLERY_NAME, out_dir, exc)
        return None


def notebook_gallery(report: BatchReport) -> str:
    """The gallery of a :class:`BatchReport` for a notebook (``_repr_html_``).

    Files are linked relative to the working directory, which is the
    notebook's folder in Jupyter; the journal's times are read when the
    directory's journal can be read (not while a run holds it).
    """
    try:
        rows: Mapping[str, JournalRow] = Journal.read(report.out_dir) or {}
    except (JournalError, OSError):
        rows = {}
    try:
        base = os.path.relpath(report.out_dir)
    except ValueError:  # another drive (Windows): the absolute path
        base = os.path.abspath(report.out_dir)
    base = "" if base == os.curdir else Path(base).as_posix()
    return gallery_html(report.as_dict(), rows, media_base=base)
