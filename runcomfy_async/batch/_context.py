"""What the stages of one run share: the journal, the client, the open jobs, the counters."""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._job import Job
from ..progress import ProgressBar
from ._journal import Journal
from ._lifecycle import PROGRESS_LABELS, JobOutcome
from ._manifest import ManifestEntry
from ._options import BatchOptions
from ._plan import entry_cost
from ._records import Records

__all__ = ["Download", "RunContext"]

Download = tuple[ManifestEntry, Mapping[str, Any], "str | None"]
"""A job to download: its entry, what the journal knows of its result, its request id."""


class RunContext:
    """The state of one run, shared by its stages (submit, wait, download).

    ``open`` holds the jobs this run still owes an outcome; :meth:`settle`
    gives one, and sets ``all_done`` after the last.
    """

    def __init__(
        self,
        *,
        entries: Mapping[str, ManifestEntry],
        out_dir: Path,
        options: BatchOptions,
        journal: Journal,
        records: Records,
        attempts: Mapping[str, int],
    ) -> None:
        self.entries = entries
        self.out_dir = out_dir
        self.options = options
        self.journal = journal
        self.records = records
        self.attempts = dict(attempts)
        self.bar: ProgressBar | None = None
        self.open: set[str] = set()
        self.unsent: set[str] = set()
        self.all_done = anyio.Event()
        self.inflight: dict[str, Job] = {}
        self.submitting = 0
        self.downloading = 0
        self.submitted = 0
        self.resumed = 0
        self.downloaded = 0
        self.fatal_error: BaseException | None = None
        # Jobs already taken off the bar as not submitted when the display closed.
        self._shown_unsent = 0
        # The download queue: made by the run, in its event loop, and closed by it.
        self.downloads: MemoryObjectSendStream[Download]
        self.download_queue: MemoryObjectReceiveStream[Download]
        #: Starts waiting for a submitted or resumed job (set by the runner).
        self.start_wait: Callable[[ManifestEntry, Job], None] = _no_waiter

    def estimated(self, entry: ManifestEntry) -> float | None:
        """The estimated USD of one job (None when unpriced)."""
        return entry_cost(entry, self.options.prices)

    def settle(self, job_id: str, outcome: JobOutcome) -> None:
        """This run is done with ``job_id``: count its outcome."""
        self.unsent.discard(job_id)
        if job_id not in self.open:
            return
        self.open.discard(job_id)
        if self.bar is not None:
            if outcome != "not_submitted":
                self.bar.advance(outcome)
            elif self._shown_unsent:
                self._shown_unsent -= 1  # counted when the display closed
            else:
                # Never sent: not done either. The bar's total shrinks instead.
                self.bar.exclude(outcome)
            self.count_states()  # the last line must not show stale counts
        if not self.open:
            self.all_done.set()

    def close_display(self) -> None:
        """Draw the bar a last time and stop drawing (the run is stopping).

        The jobs that will not be sent are taken off its total first, so the
        last frame says how much of the work that was started got done.
        """
        if self.bar is None:
            return
        unsent = max(len(self.unsent) - self.submitting, 0)
        if unsent:
            self.bar.exclude("not_submitted", unsent)
            self._shown_unsent += unsent
        self.count_states()
        self.bar.close()

    def show(self) -> None:
        """Put the stage counts on the bar."""
        if self.bar is not None:
            self.bar.set_count("submitting", self.submitting)
            self.bar.set_count("downloading", self.downloading)

    def count_states(self) -> None:
        """Put the queued / running counts (the jobs' last seen states) on the bar."""
        if self.bar is None:
            return
        states = collections.Counter(job.state for job in self.inflight.values())
        for state, label in PROGRESS_LABELS.items():
            self.bar.set_count(label, states[state])


def _no_waiter(entry: ManifestEntry, job: Job) -> None:  # pragma: no cover - set by the runner
    raise RuntimeError("no waiter stage")
