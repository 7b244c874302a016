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
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from ._api import check_request_id
from ._client import RunComfyClient
from ._download import (
    Downloader,
    DownloadError,
    SavedFile,
    cleanup_partials,
    output_names,
    write_file_atomic,
)
from ._errors import (
    APIStatusError,
    AuthenticationError,
    ClientStateError,
    InputValidationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    RunComfyError,
    SubmitOutcomeUnknown,
    TransportError,
)
from ._job import Job
from ._journal import JOURNAL_NAME, Journal, JournalError, JournalRow, JournalState
from ._manifest import Manifest, ManifestEntry, ManifestError, ManifestProblem
from ._models import JobState, Result
from ._report import BatchReport, JobOutcome, JobReport
from ._retry import RetryPolicy
from .inputs import PriceTable, estimate_cost
from .progress import Mode, ProgressBar

__all__ = [
    "JOURNAL_NAME",
    "BatchPreview",
    "BatchReport",
    "BatchRunner",
    "CostEstimate",
    "CostLimitError",
    "JobReport",
    "JournalError",
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "ManifestProblem",
    "estimate_batch",
    "run_batch",
]

logger = logging.getLogger("runcomfy_async")

REPORT_NAME = "report.json"
"""The report's file name inside the output directory."""

Jobs = Manifest | str | os.PathLike[str] | Iterable[Any]
ConfirmCancel = Callable[[int], Awaitable[bool]]

_SUBMITTERS = 8  # submits in flight at once (each waits for its journal write first)


class CostLimitError(RunComfyError, ValueError):
    """The run's estimated cost is above the limit set (nothing was submitted).

    ``estimate`` is the :class:`CostEstimate` of what the run would submit,
    ``limit`` the ceiling in USD.
    """

    def __init__(self, message: str, *, estimate: CostEstimate, limit: float) -> None:
        self.estimate = estimate
        self.limit = limit
        super().__init__(message)


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


def _entry_cost(entry: ManifestEntry, prices: PriceTable | None) -> float | None:
    try:
        return estimate_cost(entry.model, entry.input, prices=prices)
    except (LookupError, InputValidationError):
        return None


def estimate_batch(
    jobs: Jobs | Iterable[ManifestEntry], *, prices: PriceTable | None = None
) -> CostEstimate:
    """Estimate what running ``jobs`` (a manifest, its path, or job dicts) would cost."""
    entries = list(_as_manifest(jobs))
    by_model: dict[str, tuple[int, float]] = {}
    unpriced: list[str] = []
    total = 0.0
    for entry in entries:
        usd = _entry_cost(entry, prices)
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


def _as_manifest(jobs: Any) -> Manifest:
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
class _Plan:
    new: list[ManifestEntry] = attrs.Factory(list)
    replan: list[ManifestEntry] = attrs.Factory(list)
    submit: list[ManifestEntry] = attrs.Factory(list)
    track: list[tuple[ManifestEntry, str]] = attrs.Factory(list)
    adopt: list[tuple[ManifestEntry, str]] = attrs.Factory(list)
    download: list[tuple[ManifestEntry, JournalRow]] = attrs.Factory(list)
    settled: dict[str, JobOutcome] = attrs.Factory(dict)
    stale_submitting: list[str] = attrs.Factory(list)
    not_in_manifest: int = 0


def _make_plan(
    manifest: Manifest,
    rows: Mapping[str, JournalRow],
    *,
    resubmit_unknown: bool,
    retry_failed: bool,
    adopt: Mapping[str, str],
    files_present: Callable[[JournalRow], bool],
) -> _Plan:
    plan = _Plan()
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
            else:
                plan.settled[entry.id] = "outcome_unknown"
        elif state is JournalState.FAILED and not retry_failed:
            plan.settled[entry.id] = "failed"
        else:  # planned, cancelled (only queued jobs can be), failed with retry_failed
            plan.submit.append(entry)
    plan.not_in_manifest = len(set(rows) - ids)
    if problems:
        raise ManifestError(problems, source=manifest.source)
    return plan


def _files_present(out_dir: Path, row: JournalRow) -> bool:
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


# -- the runner ------------------------------------------------------------------------


class _Slots:
    """Jobs in flight: at most ``limit``, except adopted jobs, which are counted past it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._closed = False

    async def acquire(self) -> bool:
        """Wait for a slot; False once :meth:`close` was called (stop submitting)."""
        if self._closed:
            return False
        if self.used < self.limit and not self._waiters:
            self.used += 1
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.result():
                self.release()
            raise

    def force(self) -> None:
        self.used += 1

    def release(self) -> None:
        self.used -= 1
        while self._waiters and self.used < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.used += 1
                fut.set_result(True)

    def close(self) -> None:
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(False)


def _now_iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds")


def _seconds_between(start: Any, end: Any) -> float | None:
    """Seconds between two of the server's ISO timestamps, if both parse."""
    try:
        first = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        last = dt.datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((last - first).total_seconds(), 3)


def _outputs(result: Result) -> list[tuple[str, str]]:
    """Every output URL with the extension to use when its own has none."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for urls, ext in ((result.videos, "mp4"), (result.images, "png")):
        for url in urls:
            if url not in seen:
                seen.add(url)
                out.append((url, ext))
    return out


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, JobFailedError) and exc.error is not None:
        payload = exc.error
        if isinstance(payload, Mapping):
            parts = [str(payload.get(k)) for k in ("code", "message") if payload.get(k)]
            if parts:
                return ": ".join(parts)
        return json.dumps(payload, default=repr)[:500]
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


class BatchRunner:
    """Runs a batch of jobs into ``out_dir``, resumably. :func:`run_batch` is the short form.

    ``jobs``: a :class:`Manifest`, the path of a ``.jsonl`` / ``.csv`` manifest,
    or an iterable of job dicts ``{"id"?, "model", "input"}`` / typed inputs;
    checked at once (:class:`ManifestError` lists every problem).

    Options:

    - ``client``: the :class:`RunComfyClient` to use (left open); by default
      one is made from ``client_options`` (``token``, ``base_url``, ``poll``,
      ...; the environment supplies the rest) and closed at the end.
    - ``concurrency``: jobs in flight at once (submitted and not finished).
    - ``download_concurrency``: files downloading at once.
    - ``resubmit_unknown``: submit again the jobs whose earlier submit may or
      may not have created a job (this may pay twice for them).
    - ``adopt``: ``{job_id: request_id}`` for such jobs whose request you
      found (e.g. on your dashboard): they are tracked, not resubmitted.
    - ``retry_failed``: submit again the jobs that failed.
    - ``max_cost``: refuse to start (:class:`CostLimitError`) when what this
      run would submit is estimated above it (USD, list ``prices``).
    - ``progress``: True (auto), a mode (``"bar"``, ``"log"``, ``"off"``),
      False, or a :class:`ProgressBar` of your own; ``progress_file`` is
      where it writes (standard error by default).
    - ``prices``: the :class:`PriceTable` for estimates (``max_cost``, reports).
    - ``download_retry``: the :class:`RetryPolicy` of downloads.
    - ``cancel_on_interrupt``: on :meth:`stop` (Ctrl-C), cancel the jobs
      still queued on the server; else ``confirm_cancel(n)`` is asked, if
      given.
    - ``job_timeout``: stop waiting for a job after this many seconds (it is
      then reported ``in_flight``; a rerun resumes it).
    """

    def __init__(
        self,
        jobs: Jobs,
        out_dir: str | os.PathLike[str],
        *,
        client: RunComfyClient | None = None,
        client_options: Mapping[str, Any] | None = None,
        concurrency: int = 16,
        download_concurrency: int = 8,
        resubmit_unknown: bool = False,
        adopt: Mapping[str, str] | None = None,
        retry_failed: bool = False,
        max_cost: float | None = None,
        prices: PriceTable | None = None,
        progress: bool | Mode | ProgressBar = True,
        progress_file: Any = None,
        cancel_on_interrupt: bool = False,
        confirm_cancel: ConfirmCancel | None = None,
        job_timeout: float | None = None,
        download_retry: RetryPolicy | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if download_concurrency < 1:
            raise ValueError("download_concurrency must be at least 1")
        for request_id in (adopt or {}).values():
            check_request_id(request_id)  # ValueError for an id that is unsafe in a URL
        self.manifest = _as_manifest(jobs)
        self.out_dir = Path(out_dir)
        self._client = client
        self._client_options = dict(client_options or {})
        self.concurrency = concurrency
        self.download_concurrency = download_concurrency
        self.resubmit_unknown = resubmit_unknown
        self.adopt = dict(adopt or {})
        self.retry_failed = retry_failed
        self.max_cost = max_cost
        self.prices = prices
        self._progress_option = progress
        self._progress_file = progress_file
        self.cancel_on_interrupt = cancel_on_interrupt
        self.confirm_cancel = confirm_cancel
        self.job_timeout = job_timeout
        self.download_retry = download_retry
        self._entries = {e.id: e for e in self.manifest}
        self._started = False
        # run state
        self._journal: Journal | None = None
        self._bar: ProgressBar | None = None
        self._queue: collections.deque[ManifestEntry] = collections.deque()
        self._slots = _Slots(concurrency)
        self._open: set[str] = set()
        self._all_done = asyncio.Event()
        self._stop = asyncio.Event()
        self._interrupted = False
        self._inflight: dict[str, Job] = {}
        self._waiters: set[asyncio.Task[None]] = set()
        self._downloads: asyncio.Queue[tuple[ManifestEntry, Mapping[str, Any], str | None]] = (
            asyncio.Queue()
        )
        self._submitting = 0
        self._downloading = 0
        self._attempts: dict[str, int] = {}
        self._times: dict[str, dict[str, float | None]] = {}  # what the journal knows, by id
        self.fatal_error: BaseException | None = None
        self.submitted = 0
        self.resumed = 0
        self.downloaded = 0
        # What the journal cost this run (read by benchmarks).
        self.journal_cpu_seconds = 0.0
        self.journal_calls = 0
        self.journal_commits = 0

    def __repr__(self) -> str:
        return (
            f"<BatchRunner {len(self.manifest)} jobs -> {self.out_dir} "
            f"in_flight={len(self._inflight)} submitted={self.submitted}>"
        )

    # -- public controls ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop now (what Ctrl-C does): no more submits; queued jobs may be cancelled.

        Submits already sent are waited for and journaled; jobs still running
        are left running and reported ``in_flight``: run again to resume.
        """
        self._interrupted = True
        self._stop.set()
        self._slots.close()

    async def preview(self) -> BatchPreview:
        """What :meth:`run` would do and cost, without submitting or writing anything."""
        rows = await asyncio.to_thread(Journal.read, self.out_dir)
        plan = _make_plan(
            self.manifest,
            rows or {},
            resubmit_unknown=self.resubmit_unknown,
            retry_failed=self.retry_failed,
            adopt=self.adopt,
            files_present=lambda row: _files_present(self.out_dir, row),
        )
        settled = collections.Counter(plan.settled.values())
        return BatchPreview(
            jobs=len(self.manifest),
            estimate=estimate_batch(self.manifest, prices=self.prices),
            to_submit=len(plan.submit),
            to_submit_estimate=estimate_batch(plan.submit, prices=self.prices),
            to_resume=len(plan.track),
            to_download=len(plan.download),
            done=settled["succeeded"],
            unknown=settled["outcome_unknown"],
            failed=settled["failed"],
            journal_found=rows is not None,
        )

    async def run(self) -> BatchReport:
        """Run (or resume) the batch; return its report (also written to ``report.json``).

        Raises :class:`ManifestError` (a line changed under an id the journal
        has paid for), :class:`CostLimitError`, or :class:`JournalError`
        (another run holds the directory) before anything is submitted.
        """
        if self._started:
            raise RuntimeError("a BatchRunner runs once; create a new one to run again")
        self._started = True
        started = time.time()
        await asyncio.to_thread(self.out_dir.mkdir, parents=True, exist_ok=True)
        journal = await Journal.open(self.out_dir)
        self._journal = journal
        try:
            plan = await self._prepare(journal)
            try:
                await self._execute(plan)
            finally:
                report = await self._report(journal, started)
        finally:
            await journal.aclose()
            self.journal_cpu_seconds = journal.cpu_seconds
            self.journal_calls = journal.calls
            self.journal_commits = journal.commits
        return report

    # -- preparing ---------------------------------------------------------------------

    async def _prepare(self, journal: Journal) -> _Plan:
        rows = await journal.rows()
        plan = await asyncio.to_thread(
            _make_plan,
            self.manifest,
            rows,
            resubmit_unknown=self.resubmit_unknown,
            retry_failed=self.retry_failed,
            adopt=self.adopt,
            files_present=lambda row: _files_present(self.out_dir, row),
        )
        if self.max_cost is not None:
            estimate = estimate_batch(plan.submit, prices=self.prices)
            if estimate.unpriced:
                raise CostLimitError(
                    f"cannot enforce max cost ${self.max_cost:.2f}: no price is known for "
                    f"{len(estimate.unpriced)} job(s) (e.g. {estimate.unpriced[0]}); "
                    "nothing was submitted",
                    estimate=estimate,
                    limit=self.max_cost,
                )
            if estimate.usd > self.max_cost:
                raise CostLimitError(
                    f"this run would submit {estimate.jobs} job(s) estimated at "
                    f"${estimate.usd:.2f}, above the limit of ${self.max_cost:.2f}; "
                    "nothing was submitted",
                    estimate=estimate,
                    limit=self.max_cost,
                )
        await journal.plan((e.id, e.line, e.model, e.input, e.hash) for e in plan.new)
        for entry in plan.replan:
            logger.warning("job %s changed in the manifest; it starts over", entry.id)
            await journal.replan(entry.id, entry.model, entry.input, entry.hash)
        if plan.stale_submitting:
            await journal.update_where_state(
                JournalState.SUBMITTING,
                JournalState.UNKNOWN,
                error="the run stopped between sending the submit and recording its answer: "
                "a job may or may not exist",
            )
        for entry, request_id in plan.adopt:
            await journal.update(
                entry.id,
                state=JournalState.SUBMITTED,
                request_id=request_id,
                error=None,
                submitted_at=time.time(),
            )
        if plan.not_in_manifest:
            logger.warning(
                "%d job(s) in the journal are not in this manifest; they are left alone",
                plan.not_in_manifest,
            )
        removed = await asyncio.to_thread(cleanup_partials, self.out_dir)
        if removed:
            logger.info("removed %d partial download(s) of an earlier run", removed)
        self._attempts = {job_id: row.attempts for job_id, row in rows.items()}
        self._times = {
            job_id: {"submitted_at": row.submitted_at, "finished_at": row.finished_at}
            for job_id, row in rows.items()
        }
        return plan

    # -- executing ---------------------------------------------------------------------

    def _make_bar(self, plan: _Plan) -> ProgressBar | None:
        option = self._progress_option
        settled: dict[str, int] = dict(collections.Counter(plan.settled.values()))
        if isinstance(option, ProgressBar):
            return option
        if option is False or option == "off":
            return None
        mode: Mode = "auto" if option is True else option
        return ProgressBar(
            len(self.manifest),
            desc="clips",
            mode=mode,
            file=self._progress_file,
            initial=sum(settled.values()),
            initial_counts=settled,
            count_finished=False,
        )

    @contextlib.asynccontextmanager
    async def _client_ctx(self) -> AsyncIterator[RunComfyClient]:
        if self._client is not None:
            yield self._client
            return
        options: dict[str, Any] = {"max_in_flight": self.concurrency, "include_cost": True}
        options.update(self._client_options)
        async with RunComfyClient(**options) as client:
            yield client

    async def _execute(self, plan: _Plan) -> None:
        self._open = {e.id for e in plan.submit}
        self._open.update(e.id for e, _ in plan.track)
        self._open.update(e.id for e, _ in plan.download)
        self._queue.extend(plan.submit)
        if not self._open:
            return
        self._bar = self._make_bar(plan)
        submitters: list[asyncio.Task[None]] = []
        downloads: list[asyncio.Task[None]] = []
        try:
            async with (
                self._client_ctx() as client,
                Downloader(
                    self.out_dir, concurrency=self.download_concurrency, retry=self.download_retry
                ) as downloader,
            ):
                try:
                    loop = asyncio.get_running_loop()
                    if self._bar is not None:
                        downloads.append(loop.create_task(self._show_states(self._bar)))
                    for entry, request_id in plan.track:
                        job = client.track(request_id, entry.model)
                        self._slots.force()
                        self.resumed += 1
                        self._spawn_waiter(entry, job)
                    for entry, row in plan.download:
                        self._downloads.put_nowait((entry, row.result or {}, row.request_id))
                    downloads += [
                        loop.create_task(self._download_loop(client, downloader))
                        for _ in range(self.download_concurrency)
                    ]
                    n_submitters = min(_SUBMITTERS, self.concurrency, len(self._queue))
                    submitters = [
                        loop.create_task(self._submit_loop(client)) for _ in range(n_submitters)
                    ]
                    try:
                        await self._wait_done()
                    except asyncio.CancelledError:
                        # Cancelled from outside (e.g. a notebook cell stopped): stop as
                        # for Ctrl-C, then let the cancellation go on.
                        self.stop()
                        await self._shutdown(submitters)
                        raise
                    await self._shutdown(submitters)
                finally:
                    # Nothing of ours outlives the run (waiting on a job does not
                    # stop its tracking, and an unfinished download leaves no file).
                    tasks = [*submitters, *downloads, *self._waiters]
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if self._bar is not None:
                self._bar.close()

    async def _wait_done(self) -> None:
        done = asyncio.ensure_future(self._all_done.wait())
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({done, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            stop.cancel()

    async def _shutdown(self, submitters: list[asyncio.Task[None]]) -> None:
        """Leave the journal consistent: every submit sent is answered and recorded."""
        self._slots.close()
        try:
            if submitters:
                # Never cancel a submit in flight: it would turn a known job into an
                # unknown one. They end by themselves once the slots are closed.
                await asyncio.gather(*submitters, return_exceptions=True)
            if self._interrupted:
                await self._cancel_queued()
        except asyncio.CancelledError:
            # Asked to stop harder: whatever is still submitting stays
            # 'submitting' in the journal, i.e. outcome unknown on the next run.
            for task in submitters:
                task.cancel()
            raise

    async def _cancel_queued(self) -> None:
        queued = {i: j for i, j in self._inflight.items() if j.status is JobState.QUEUED}
        if not queued:
            return
        cancel = self.cancel_on_interrupt
        if not cancel and self.confirm_cancel is not None:
            cancel = await self.confirm_cancel(len(queued))
        if not cancel:
            return
        journal = self._journal
        assert journal is not None

        async def one(job_id: str, job: Job) -> None:
            try:
                cancelled = await job.cancel()
            except RunComfyError as exc:
                logger.warning("could not cancel %s (%s): %s", job_id, job.request_id, exc)
                return
            if cancelled:
                await journal.update(
                    job_id, state=JournalState.CANCELLED, error="cancelled on interrupt"
                )

        await asyncio.gather(*(one(i, j) for i, j in queued.items()))

    def _settle(self, job_id: str, outcome: JobOutcome) -> None:
        if job_id not in self._open:
            return
        self._open.discard(job_id)
        if self._bar is not None:
            self._bar.advance(outcome)
            self._count_states(self._bar)  # the last line must not show stale counts
        if not self._open:
            self._all_done.set()

    async def _show_states(self, bar: ProgressBar) -> None:
        """Keep the bar's queued / running counts current.

        Read from the jobs' last seen states rather than from client events: a
        listener makes the scheduler check queued jobs on the status route (for
        queue positions this bar does not show), which costs requests.
        """
        while True:
            self._count_states(bar)
            await asyncio.sleep(0.5)

    def _count_states(self, bar: ProgressBar) -> None:
        states = collections.Counter(job.status for job in self._inflight.values())
        bar.set_count("queued", states[JobState.QUEUED])
        bar.set_count("running", states[JobState.RUNNING])

    def _show(self) -> None:
        if self._bar is not None:
            self._bar.set_count("submitting", self._submitting)
            self._bar.set_count("downloading", self._downloading)

    # -- submitting --------------------------------------------------------------------

    async def _submit_loop(self, client: RunComfyClient) -> None:
        while self._queue and not self._stop.is_set():
            if not await self._slots.acquire():
                break
            if not self._queue or self._stop.is_set():
                self._slots.release()
                break
            entry = self._queue.popleft()
            held = True
            try:
                held = await self._submit_one(client, entry)
            finally:
                if not held:
                    self._slots.release()
        # Whatever is left will not be submitted by this run.
        if self._stop.is_set():
            while self._queue:
                self._settle(self._queue.popleft().id, "not_submitted")

    async def _submit_one(self, client: RunComfyClient, entry: ManifestEntry) -> bool:
        """Submit one job; True when it is in flight (its slot is then held by its waiter)."""
        journal = self._journal
        assert journal is not None
        attempt = self._attempts.get(entry.id, 0) + 1
        self._attempts[entry.id] = attempt
        # Durable before the POST: a crash from here on is an honest "unknown".
        await journal.update(
            entry.id,
            state=JournalState.SUBMITTING,
            attempts=attempt,
            request_id=None,
            error=None,
            result=None,
        )
        self._submitting += 1
        self._show()
        try:
            job = await client.submit(entry.model, entry.input)
        except SubmitOutcomeUnknown as exc:
            await journal.update(entry.id, state=JournalState.UNKNOWN, error=_error_text(exc))
            self._settle(entry.id, "outcome_unknown")
            return False
        except (InvalidRequestError, InputValidationError) as exc:
            await journal.update(
                entry.id, state=JournalState.FAILED, error=f"rejected: {_error_text(exc)}"
            )
            self._settle(entry.id, "failed")
            return False
        except (APIStatusError, ClientStateError) as exc:
            # Certainly not created (an error answer; a closed client never sent it).
            await journal.update(entry.id, state=JournalState.PLANNED, error=_error_text(exc))
            self._settle(entry.id, "not_submitted")
            if isinstance(exc, (AuthenticationError, InsufficientBalanceError, ClientStateError)):
                self._fatal(exc)
            return False
        except TransportError as exc:
            # The API raises SubmitOutcomeUnknown when it may have been sent; a
            # TransportError here never left this machine.
            await journal.update(entry.id, state=JournalState.PLANNED, error=_error_text(exc))
            self._settle(entry.id, "not_submitted")
            return False
        except asyncio.CancelledError:
            raise  # the row stays 'submitting': unknown, as it should be
        except Exception as exc:
            # We cannot tell whether the request left: never guess "not sent".
            logger.exception("unexpected error submitting %s", entry.id)
            await journal.update(entry.id, state=JournalState.UNKNOWN, error=_error_text(exc))
            self._settle(entry.id, "outcome_unknown")
            return False
        finally:
            self._submitting -= 1
            self._show()
        # Committed at once, but without holding up the next submit (nothing
        # here depends on it) and without an fsync of its own: until the next
        # one, a crash or power cut makes the job "unknown", never submitted
        # twice. The 'submitting' writes are the barriers that must be on disk.
        now = time.time()
        self._times[entry.id] = {"submitted_at": now, "finished_at": None}
        journal.defer(
            entry.id,
            soon=True,
            state=JournalState.SUBMITTED,
            request_id=job.request_id,
            submitted_at=now,
        )
        self.submitted += 1
        self._spawn_waiter(entry, job)
        return True

    def _fatal(self, exc: BaseException) -> None:
        """Stop submitting (every further submit would fail the same way); finish the rest."""
        if self.fatal_error is None:
            self.fatal_error = exc
            logger.info("stopping submits: %s", _error_text(exc))
        self._slots.close()
        leftover = list(self._queue)
        self._queue.clear()
        for entry in leftover:
            self._settle(entry.id, "not_submitted")

    # -- waiting -----------------------------------------------------------------------

    def _spawn_waiter(self, entry: ManifestEntry, job: Job) -> None:
        self._inflight[entry.id] = job
        task = asyncio.get_running_loop().create_task(self._wait_job(entry, job))
        self._waiters.add(task)
        task.add_done_callback(self._waiters.discard)

    def _finished_now(self, job_id: str) -> float:
        now = time.time()
        self._times.setdefault(job_id, {"submitted_at": None})["finished_at"] = now
        return now

    async def _wait_job(self, entry: ManifestEntry, job: Job) -> None:
        # Outcomes are journaled without waiting for the commit: no later step
        # relies on them being durable (a crash before the commit only means
        # the job is checked, or its files fetched, once more on the rerun).
        journal = self._journal
        assert journal is not None
        released = False
        try:
            try:
                result = await job.wait(self.job_timeout)
            except JobCancelledError as exc:
                journal.defer(
                    entry.id,
                    state=JournalState.CANCELLED,
                    error=_error_text(exc),
                    finished_at=self._finished_now(entry.id),
                )
                await self._write_record(entry, job.request_id, error=_error_text(exc))
                self._settle(entry.id, "cancelled")
                return
            except (JobFailedError, NotFoundError) as exc:
                journal.defer(
                    entry.id,
                    state=JournalState.FAILED,
                    error=_error_text(exc),
                    finished_at=self._finished_now(entry.id),
                )
                await self._write_record(entry, job.request_id, error=_error_text(exc))
                self._settle(entry.id, "failed")
                return
            except ClientStateError:
                return  # the client closed under us: the job stays journaled as submitted
            except (JobTimeoutError, RunComfyError) as exc:
                # We stopped waiting, or gave up checking (the job may be fine on the
                # server): it stays 'submitted', and a rerun picks it up again.
                journal.defer(entry.id, error=_error_text(exc))
                self._settle(entry.id, "in_flight")
                return
            self._slots.release()
            released = True
            info = {
                "outputs": _outputs(result),
                "output": dict(result.output),
                "cost": result.cost,
                "created_at": result.created_at,
                "finished_at": result.finished_at,
            }
            journal.defer(
                entry.id,
                state=JournalState.FINISHED,
                result=info,
                finished_at=self._finished_now(entry.id),
            )
            self._downloads.put_nowait((entry, info, job.request_id))
        finally:
            self._inflight.pop(entry.id, None)
            if not released:
                self._slots.release()

    # -- downloading -------------------------------------------------------------------

    async def _download_loop(self, client: RunComfyClient, downloader: Downloader) -> None:
        while True:
            entry, info, request_id = await self._downloads.get()
            self._downloading += 1
            self._show()
            try:
                await self._download_one(client, downloader, entry, info, request_id)
            finally:
                self._downloading -= 1
                self._show()

    async def _download_one(
        self,
        client: RunComfyClient,
        downloader: Downloader,
        entry: ManifestEntry,
        info: Mapping[str, Any],
        request_id: str | None,
    ) -> None:
        journal = self._journal
        assert journal is not None
        outputs = [(str(u), str(e)) for u, e in info.get("outputs") or ()]
        names = output_names(entry.id, outputs, taken=self._entries)
        try:
            try:
                saved = await self._save(downloader, outputs, names)
            except DownloadError as exc:
                if exc.status not in (401, 403, 404, 410) or request_id is None:
                    raise
                # Output URLs may be signed and expire: ask for fresh ones, once.
                fresh = await client.result(request_id, include_cost=True)
                outputs = _outputs(fresh)
                names = output_names(entry.id, outputs, taken=self._entries)
                info = {**info, "outputs": outputs}
                saved = await self._save(downloader, outputs, names)
        except (DownloadError, RunComfyError, OSError) as exc:
            journal.defer(entry.id, error=f"download failed: {_error_text(exc)}")
            self._settle(entry.id, "download_failed")
            return
        await self._write_record(entry, request_id, info=info, files=saved)
        journal.defer(
            entry.id,
            state=JournalState.DOWNLOADED,
            files=[f.as_dict() for f in saved],
            downloaded_at=time.time(),
            error=None,
        )
        self.downloaded += 1
        self._settle(entry.id, "succeeded")

    @staticmethod
    async def _save(
        downloader: Downloader, outputs: list[tuple[str, str]], names: list[str]
    ) -> list[SavedFile]:
        return [
            await downloader.download(url, name)
            for (url, _), name in zip(outputs, names, strict=True)
        ]

    async def _write_record(
        self,
        entry: ManifestEntry,
        request_id: str | None,
        *,
        info: Mapping[str, Any] | None = None,
        files: list[SavedFile] | None = None,
        error: str | None = None,
    ) -> None:
        """Write ``DIR/<id>.json``: the request, its id, timings, cost, URLs and files."""
        now = time.time()
        times = self._times.get(entry.id, {})
        record = {
            "id": entry.id,
            "model": entry.model,
            "input": dict(entry.input),
            "entry_hash": entry.hash,
            "request_id": request_id,
            "outcome": "succeeded" if files is not None else ("failed" if error else None),
            "error": error,
            "cost": (info or {}).get("cost"),
            "estimated_cost": _entry_cost(entry, self.prices),
            "server": {
                "created_at": (info or {}).get("created_at"),
                "finished_at": (info or {}).get("finished_at"),
            },
            "timings": {
                # when this client had the request id, saw the job end, saved its files
                "submitted_at": _now_iso(times.get("submitted_at")),
                "finished_at": _now_iso(times.get("finished_at")),
                "downloaded_at": _now_iso(now) if files is not None else None,
                "generation_seconds": _seconds_between(
                    (info or {}).get("created_at"), (info or {}).get("finished_at")
                ),
            },
            "urls": [u for u, _ in (info or {}).get("outputs") or ()],
            "files": [f.as_dict() for f in files or ()],
        }
        data = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            await asyncio.to_thread(write_file_atomic, self.out_dir, f"{entry.id}.json", data)
        except (OSError, DownloadError) as exc:
            logger.warning("could not write %s.json: %s", entry.id, exc)

    # -- the report --------------------------------------------------------------------

    async def _report(self, journal: Journal, started: float) -> BatchReport:
        rows = await journal.rows()
        jobs = []
        for entry in self.manifest:
            row = rows.get(entry.id)
            jobs.append(self._job_report(entry, row))
        report = BatchReport(
            out_dir=str(self.out_dir),
            jobs=tuple(jobs),
            started_at=started,
            finished_at=time.time(),
            interrupted=self._interrupted,
            submitted=self.submitted,
            resumed=self.resumed,
            downloaded=self.downloaded,
            report_path=str(self.out_dir / REPORT_NAME),
        )
        data = report.to_json().encode("utf-8")
        await asyncio.to_thread(write_file_atomic, self.out_dir, REPORT_NAME, data)
        return report

    def _job_report(self, entry: ManifestEntry, row: JournalRow | None) -> JobReport:
        estimated = _entry_cost(entry, self.prices)
        if row is None:
            return JobReport(
                entry.id, entry.model, "not_submitted", estimated_cost=estimated, line=entry.line
            )
        outcome: JobOutcome
        error = row.error
        state = row.state
        if state is JournalState.DOWNLOADED:
            outcome = "succeeded"
        elif state is JournalState.FINISHED:
            outcome = "download_failed"
            error = error or "not downloaded yet (the run stopped first)"
        elif state is JournalState.FAILED:
            outcome = "failed"
        elif state is JournalState.CANCELLED:
            outcome = "cancelled"
        elif state in (JournalState.UNKNOWN, JournalState.SUBMITTING):
            outcome = "outcome_unknown"
        elif state is JournalState.SUBMITTED:
            outcome = "in_flight"
        else:
            outcome = "not_submitted"
            if self.fatal_error is not None and error is None:
                error = _error_text(self.fatal_error)
        cost = (row.result or {}).get("cost")
        return JobReport(
            id=entry.id,
            model=entry.model,
            outcome=outcome,
            request_id=row.request_id,
            files=tuple(str(f.get("name")) for f in row.files),
            error=error,
            cost=cost if isinstance(cost, (int, float)) else None,
            estimated_cost=estimated,
            line=entry.line,
        )


async def run_batch(
    jobs: Jobs,
    out_dir: str | os.PathLike[str],
    **options: Any,
) -> BatchReport:
    """Run (or resume) a batch: submit, track, download, journal, report.

    ``jobs`` is a manifest path (``.jsonl`` / ``.csv``), a :class:`Manifest`,
    or an iterable of job dicts / typed inputs; ``options`` are
    :class:`BatchRunner`'s (``client``, ``concurrency``, ``max_cost``,
    ``resubmit_unknown``, ``adopt``, ``progress``, ...). Calling it again
    with the same arguments after any interruption picks up where it stopped.
    Returns the :class:`BatchReport` (``report.ok``, ``report.summary()``).
    """
    return await BatchRunner(jobs, out_dir, **options).run()
