"""Planning a run: the manifest against the journal, what it would cost, and the cost limit.

:func:`make_plan` decides, job by job, what this run does (submit, resume,
download, or leave settled); :func:`check_cost_limit` is the one place the
``max_cost`` rule lives (the CLI and the library both come here).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import CostLimitError, InputValidationError, ManifestError, ManifestProblem
from ..inputs import PriceTable, estimate_cost
from ._lifecycle import JobOutcome
from ._manifest import Manifest, ManifestEntry
from ._rows import JournalRow, JournalState

__all__ = [
    "BatchPreview",
    "CostEstimate",
    "Jobs",
    "Plan",
    "as_manifest",
    "check_cost_limit",
    "entry_cost",
    "estimate_batch",
    "files_present",
    "make_plan",
]

Jobs = Manifest | str | os.PathLike[str] | Iterable[Any]
"""What a batch accepts: a :class:`Manifest`, a manifest's path, or job dicts / typed inputs."""


# -- cost ------------------------------------------------------------------------------


@attrs.frozen
class CostEstimate:
    """Estimated USD for some jobs, from the price table; jobs of unpriced models are listed."""

    jobs: int
    usd: float
    by_model: Mapping[str, tuple[int, float]]
    unpriced: tuple[str, ...] = ()

    def summary(self) -> str:
        """A small table: jobs and USD per model, then the total."""
        width = max([len(m) for m in self.by_model] + [5])
        lines = [f"  {'model':<{width}}  {'jobs':>6}  {'USD':>10}"]
        for model, (count, usd) in sorted(self.by_model.items()):
            lines.append(f"  {model:<{width}}  {count:>6}  {usd:>10.2f}")
        lines.append(f"  {'total':<{width}}  {self.jobs:>6}  {self.usd:>10.2f}")
        if self.unpriced:
            shown = ", ".join(self.unpriced[:5]) + (" ..." if len(self.unpriced) > 5 else "")
            lines.append(f"  no price known for {len(self.unpriced)} job(s): {shown}")
        return "\n".join(lines)


def entry_cost(entry: ManifestEntry, prices: PriceTable | None) -> float | None:
    try:
        return estimate_cost(entry.model, entry.input, prices=prices)
    except (LookupError, InputValidationError):
        return None


def estimate_batch(
    jobs: Jobs | Iterable[ManifestEntry], *, prices: PriceTable | None = None
) -> CostEstimate:
    """Estimate what running ``jobs`` (a manifest, its path, or job dicts) would cost."""
    entries = list(as_manifest(jobs))
    by_model: dict[str, tuple[int, float]] = {}
    unpriced: list[str] = []
    total = 0.0
    for entry in entries:
        usd = entry_cost(entry, prices)
        if usd is None:
            unpriced.append(entry.id)
            continue
        count, subtotal = by_model.get(entry.model, (0, 0.0))
        by_model[entry.model] = (count + 1, subtotal + usd)
        total += usd
    return CostEstimate(
        len(entries),
        round(total, 6),
        {m: (c, round(u, 6)) for m, (c, u) in by_model.items()},
        tuple(unpriced),
    )


def as_manifest(jobs: Any) -> Manifest:
    """``jobs`` as a :class:`Manifest` (loaded, or checked, here)."""
    if isinstance(jobs, Manifest):
        return jobs
    if isinstance(jobs, (str, os.PathLike)):
        return Manifest.load(jobs)
    return Manifest.from_jobs(jobs)


# -- planning: manifest x journal -> what this run does ---------------------------------

_PAID_STATES = frozenset(
    {
        JournalState.SUBMITTING,
        JournalState.SUBMITTED,
        JournalState.FINISHED,
        JournalState.DOWNLOADED,
        JournalState.UNKNOWN,
    }
)


@attrs.define
class Plan:
    """What one run does with each job of the manifest."""

    new: list[ManifestEntry] = attrs.Factory(list)
    replan: list[ManifestEntry] = attrs.Factory(list)
    submit: list[ManifestEntry] = attrs.Factory(list)
    requeue: list[ManifestEntry] = attrs.Factory(list)  # back to 'planned' before submitting
    track: list[tuple[ManifestEntry, str]] = attrs.Factory(list)
    adopt: list[tuple[ManifestEntry, str]] = attrs.Factory(list)
    download: list[tuple[ManifestEntry, JournalRow]] = attrs.Factory(list)
    settled: dict[str, JobOutcome] = attrs.Factory(dict)
    stale_submitting: list[str] = attrs.Factory(list)
    not_in_manifest: int = 0


def make_plan(
    manifest: Manifest,
    rows: Mapping[str, JournalRow],
    *,
    resubmit_unknown: bool,
    retry_failed: bool,
    adopt: Mapping[str, str],
    files_present: Callable[[JournalRow], bool],
) -> Plan:
    """Plan a run: raises :class:`ManifestError` for lines changed under a paid id."""
    plan = Plan()
    problems: list[ManifestProblem] = []
    ids = {e.id for e in manifest}
    for job_id in adopt:
        if job_id not in ids:
            problems.append(
                ManifestProblem(0, "no job of the manifest has this id", job_id, "adopt")
            )
    for entry in manifest:
        row = rows.get(entry.id)
        adopted = adopt.get(entry.id)
        if row is None:
            plan.new.append(entry)
            if adopted:
                plan.adopt.append((entry, adopted))
                plan.track.append((entry, adopted))
            else:
                plan.submit.append(entry)
            continue
        state = row.state
        if row.entry_hash != entry.hash:
            if state in _PAID_STATES:
                rid = f" as request {row.request_id}" if row.request_id else ""
                problems.append(
                    ManifestProblem(
                        entry.line,
                        f"changed since it was submitted{rid} (journal state {state.value}); "
                        "restore the line, or give the new content a new id",
                        entry.id,
                    )
                )
                continue
            plan.replan.append(entry)
            state = JournalState.PLANNED
        if adopted:
            if state in (JournalState.SUBMITTED, JournalState.FINISHED, JournalState.DOWNLOADED):
                if row.request_id != adopted:
                    problems.append(
                        ManifestProblem(
                            entry.line,
                            f"--adopt {adopted}: the journal already has request "
                            f"{row.request_id} for this job",
                            entry.id,
                        )
                    )
                    continue
            else:
                plan.adopt.append((entry, adopted))
                plan.track.append((entry, adopted))
                continue
        if state is JournalState.DOWNLOADED:
            if files_present(row):
                plan.settled[entry.id] = "succeeded"
            else:
                plan.download.append((entry, row))  # a file was deleted or lost: fetch it again
        elif state is JournalState.FINISHED:
            plan.download.append((entry, row))
        elif state is JournalState.SUBMITTED:
            assert row.request_id is not None
            plan.track.append((entry, row.request_id))
        elif state in (JournalState.SUBMITTING, JournalState.UNKNOWN):
            if state is JournalState.SUBMITTING:
                plan.stale_submitting.append(entry.id)
            if resubmit_unknown:
                plan.submit.append(entry)
                plan.requeue.append(entry)
            else:
                plan.settled[entry.id] = "outcome_unknown"
        elif state is JournalState.FAILED and not retry_failed:
            plan.settled[entry.id] = "failed"
        else:  # planned, cancelled (only queued jobs can be), failed with retry_failed
            plan.submit.append(entry)
            if state is not JournalState.PLANNED:
                plan.requeue.append(entry)
    plan.not_in_manifest = len(set(rows) - ids)
    if problems:
        raise ManifestError(problems, source=manifest.source)
    return plan


def files_present(out_dir: Path, row: JournalRow) -> bool:
    """True when every file the row lists is in ``out_dir`` with its recorded size."""
    for f in row.files:
        name = f.get("name")
        if not isinstance(name, str):
            return False
        try:
            if (out_dir / name).stat().st_size != f.get("size"):
                return False
        except OSError:
            return False
    return True


@attrs.frozen
class BatchPreview:
    """What a run would do, computed without submitting or writing anything (``--dry-run``).

    ``estimate`` covers every job of the manifest, ``to_submit`` /
    ``to_submit_estimate`` only those this run would submit (the journal may
    say others are done or in flight).
    """

    jobs: int
    estimate: CostEstimate
    to_submit: int
    to_submit_estimate: CostEstimate
    to_resume: int
    to_download: int
    done: int
    unknown: int
    failed: int
    journal_found: bool

    def summary(self) -> str:
        """Human-readable preview: the cost table and what the run would do."""
        lines = [
            f"{self.jobs} jobs, all valid. Estimated cost (list prices):",
            self.estimate.summary(),
        ]
        if self.journal_found:
            lines += [
                "",
                f"The journal shows {self.done} done, {self.to_resume} in flight, "
                f"{self.to_download} to download, {self.unknown} outcome unknown, "
                f"{self.failed} failed.",
            ]
        lines.append(
            f"This run would submit {self.to_submit} job(s), about "
            f"${self.to_submit_estimate.usd:.2f}. Nothing was submitted (dry run)."
        )
        return "\n".join(lines)


def check_cost_limit(
    to_submit: Iterable[ManifestEntry],
    limit: float | None,
    *,
    prices: PriceTable | None = None,
    label: str = "the limit of",
) -> CostEstimate | None:
    """Estimate ``to_submit``; raise :class:`CostLimitError` when it is above ``limit`` (USD)
    or cannot be priced. The one home of the ``max_cost`` rule; ``label`` names the limit
    in the message (the CLI says ``--max-cost``). Without a limit, nothing is estimated
    (None)."""
    if limit is None:
        return None
    estimate = estimate_batch(to_submit, prices=prices)
    if estimate.unpriced:
        raise CostLimitError(
            f"cannot enforce max cost ${limit:.2f}: no price is known for "
            f"{len(estimate.unpriced)} job(s) (e.g. {estimate.unpriced[0]}); "
            "nothing was submitted",
            estimate=estimate,
            limit=limit,
        )
    if estimate.usd > limit:
        raise CostLimitError(
            f"this run would submit {estimate.jobs} job(s) estimated at "
            f"${estimate.usd:.2f}, above {label} ${limit:.2f}; "
            "nothing was submitted",
            estimate=estimate,
            limit=limit,
        )
    return estimate
