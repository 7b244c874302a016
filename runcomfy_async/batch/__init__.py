"""Bulk generation that survives anything: a manifest in, files and a report out.

From code or a notebook::

    from runcomfy_async.batch import run_batch

    report = await run_batch("clips.jsonl", "clips/", concurrency=16)
    print(report.summary())

From a shell: ``runcomfy-async batch clips.jsonl --out clips/``.

Every job's progress is written to a journal in the output directory
(``_journal.py``) before the step that depends on it, so the same call (or
command) after a crash, a kill or Ctrl-C resumes: jobs the API accepted are
re-attached by request id and never resubmitted, files already saved are not
downloaded again, and a job whose submit may or may not have reached the
server is reported as ``outcome_unknown`` and left alone unless you say
otherwise (``resubmit_unknown``, or ``adopt`` once you found its request id).

The package, one concept a module:

- ``_manifest`` / ``_manifest_entry`` / ``_manifest_check`` / ``_manifest_csv`` /
  ``_local_files``: manifests (the model and its loading, one job, checks against
  the registry, CSV reading, local files in URI fields);
- ``_plan``: the manifest against the journal, the cost estimate and limit;
- ``_options``: :class:`BatchOptions`;
- ``_rows`` / ``_journal`` / ``_engine`` / ``_sqlite``: the journal (row and
  its converter, typed transitions, the engine interface, the SQLite engine);
- ``_lifecycle``: the one table where exceptions, journal states, outcomes
  and progress labels meet;
- ``_context``, ``_submit``, ``_wait``, ``_fetch``: the run's shared state
  and its three stages;
- ``_download``, ``_records``, ``_report``: files, per-job records, the report;
- ``_runner``: :class:`BatchRunner`, which owns the stages' lifetimes.
"""

from .._errors import (
    CostLimitError,
    DownloadError,
    IllegalTransitionError,
    JournalError,
    ManifestError,
    ManifestProblem,
)
from ._download import Downloader, SavedFile
from ._engine import JournalEngine
from ._journal import JOURNAL_NAME, TRANSITIONS, Journal
from ._manifest import Manifest, ManifestChecks, ManifestEntry
from ._options import BatchOptions, ConfirmCancel
from ._plan import BatchPreview, CostEstimate, Jobs, check_cost_limit, estimate_batch
from ._report import OUTCOMES, BatchReport, JobOutcome, JobReport
from ._rows import JournalRow, JournalState
from ._runner import REPORT_NAME, BatchRunner, run_batch
from ._sqlite import SQLiteEngine

__all__ = [
    "JOURNAL_NAME",
    "OUTCOMES",
    "REPORT_NAME",
    "TRANSITIONS",
    "BatchOptions",
    "BatchPreview",
    "BatchReport",
    "BatchRunner",
    "ConfirmCancel",
    "CostEstimate",
    "CostLimitError",
    "DownloadError",
    "Downloader",
    "IllegalTransitionError",
    "JobOutcome",
    "JobReport",
    "Jobs",
    "Journal",
    "JournalEngine",
    "JournalError",
    "JournalRow",
    "JournalState",
    "Manifest",
    "ManifestChecks",
    "ManifestEntry",
    "ManifestError",
    "ManifestProblem",
    "SQLiteEngine",
    "SavedFile",
    "check_cost_limit",
    "estimate_batch",
    "run_batch",
]
