"""The batch runner: prepare (plan, cost check, journal), run the stages, report.

The stages live in their own modules (``_submit``, ``_wait``, ``_fetch``);
this module owns their lifetimes (one task group), stopping (Ctrl-C, a
cancelled notebook cell) and the report.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import attrs

from .._client import RunComfyClient
from .._errors import ManifestProblem, RunComfyError
from .._job import Job
from .._models import JobState
from ..catalog import Registry
from ..progress import Mode, ProgressBar
from ._context import Download, RunContext
from ._download import Downloader, cleanup_partials, write_file_atomic
from ._fetch import download_worker
from ._journal import Journal
from ._lifecycle import error_text
from ._manifest import ManifestEntry
from ._observe import RunObserver
from ._options import BatchOptions
from ._plan import (
    BatchPreview,
    Jobs,
    Plan,
    as_manifest,
    check_spend,
    entry_cost,
    estimate_batch,
    fetch_specs,
    files_present,
    make_plan,
    read_balance,
)
from ._records import Records
from ._report import BatchReport, job_report, save_gallery
from ._rows import JournalRow, JournalState
from ._submit import SubmitStage
from ._wait import wait_job

__all__ = ["REPORT_NAME", "BatchRunner", "run_batch"]

logger = logging.getLogger("runcomfy_async")

_FLEET = "\0fleet"  # a job id no manifest has: the fleet's open work
_REATTACH = 64  # jobs of stopped runners taken over at a time
#: Jobs offered for cancelling on an interrupt: queued ones, and adopted ones not
#: checked yet (UNKNOWN: possibly queued; a cancel of a running one is a no-op).
_MAY_BE_QUEUED = frozenset({JobState.QUEUED, JobState.UNKNOWN})

REPORT_NAME = "report.json"
"""The report's file name inside the output directory."""


class BatchRunner:
    """Runs a batch of jobs into ``out_dir``, resumably. :func:`run_batch` is the short form.

    ``jobs``: a :class:`Manifest`, the path of a ``.jsonl`` / ``.csv`` manifest,
    or an iterable of job dicts ``{"id"?, "model", "input"}`` / typed inputs;
    checked at once (:class:`ManifestError` lists every problem).

    ``client``: the :class:`RunComfyClient` to use (left open; its
    ``max_in_flight`` is the limit); by default one is made from
    ``options.client_options`` with ``max_in_flight = options.concurrency``
    and closed at the end. ``options``: a :class:`BatchOptions`; keyword
    arguments are :class:`BatchOptions` fields and override it
    (``BatchRunner(jobs, out, concurrency=8)``).
    """

    def __init__(
        self,
        jobs: Jobs,
        out_dir: str | os.PathLike[str],
        options: BatchOptions | None = None,
        *,
        client: RunComfyClient | None = None,
        **overrides: Any,
    ) -> None:
        self.options = attrs.evolve(options or BatchOptions(), **overrides)
        self._registry: Registry | None = client.models.registry if client is not None else None
        self.manifest = as_manifest(jobs, self.options.checks(self._registry))
        self.out_dir = Path(out_dir)
        self._client = client
        self._entries = {e.id: e for e in self.manifest}
        self._started = False
        self._cost_label = "the limit of"
        self._interrupted = False
        self._stage: SubmitStage | None = None
        self._ctx: RunContext | None = None
        self._observer: RunObserver | None = None  # the report's timeline and request count
        self._stop: anyio.Event | None = None  # made in the run's event loop
        # What the journal cost this run (read by benchmarks).
        self.journal_cpu_seconds = 0.0
        self.journal_calls = 0
        self.journal_commits = 0

    def __repr__(self) -> str:
        ctx = self._ctx
        inflight = len(ctx.inflight) if ctx else 0
        return (
            f"<BatchRunner {len(self.manifest)} jobs -> {self.out_dir} "
            f"in_flight={inflight} submitted={self.submitted}>"
        )

    @property
    def submitted(self) -> int:
        """Jobs this run submitted."""
        return self._ctx.submitted if self._ctx else 0

    @property
    def resumed(self) -> int:
        """Jobs this run re-attached from the journal."""
        return self._ctx.resumed if self._ctx else 0

    @property
    def downloaded(self) -> int:
        """Jobs whose files this run saved."""
        return self._ctx.downloaded if self._ctx else 0

    @property
    def fatal_error(self) -> BaseException | None:
        """The error that stopped submits (bad token, no balance, closed client), if any."""
        return self._ctx.fatal_error if self._ctx else None

    # -- public controls ---------------------------------------------------------------

    def stop(self) -> None:
        """Stop now (what Ctrl-C does): no more submits; queued jobs may be cancelled.

        Submits already sent are waited for and journaled; jobs still waiting
        for a slot stay planned; jobs still running are left running and
        reported ``in_flight``: run again to resume. The progress bar draws
        its last frame now (it would overwrite what the caller prints next).
        """
        self._interrupted = True
        if self._ctx is not None:
            self._ctx.close_display()
        if self._stop is not None:
            self._stop.set()
        if self._stage is not None:
            self._stage.halt()

    @property
    def skipped(self) -> tuple[ManifestProblem, ...]:
        """The manifest's bad lines left out (``skip_invalid``), with their line numbers."""
        return self.manifest.skipped

    async def _with_catalog(self, client: RunComfyClient | None) -> None:
        """Validate the models the manifest had no spec for, with the client's catalog."""
        if client is None:
            return
        self._registry = client.models.registry
        self.manifest = await fetch_specs(self.manifest, client)
        self._entries = {e.id: e for e in self.manifest}

    async def preview(self, *, client: RunComfyClient | None = None) -> BatchPreview:
        """What :meth:`run` would do and cost, without submitting or writing anything.

        With a ``client``, models without a bundled spec are validated and
        priced from its catalog, and the preview holds the account's balance.
        """
        await self._with_catalog(client)
        rows = await anyio.to_thread.run_sync(Journal.read, self.out_dir)
        plan = self._plan(rows or {})
        settled = collections.Counter(plan.settled.values())
        prices = self.options.prices
        registry = self._registry
        to_submit = estimate_batch(plan.submit, prices=prices, registry=registry)
        balance = None
        if client is not None and plan.submit:
            balance = await read_balance(client)
        return BatchPreview(
            jobs=len(self.manifest),
            estimate=estimate_batch(self.manifest, prices=prices, registry=registry),
            to_submit=len(plan.submit),
            to_submit_estimate=to_submit,
            to_resume=len(plan.track),
            to_download=len(plan.download),
            done=settled["succeeded"],
            unknown=settled["outcome_unknown"],
            failed=settled["failed"],
            journal_found=rows is not None,
            skipped=self.manifest.skipped,
            unvalidated=tuple(sorted(self.manifest.unvalidated)),
            balance=balance,
        )

    async def check_cost(
        self, *, label: str = "the limit of", client: RunComfyClient | None = None
    ) -> None:
        """Raise :class:`CostLimitError` when what :meth:`run` would submit is above
        ``max_cost``, or (with a ``client``) above the account's balance unless
        ``force`` (read from the journal without locking it; nothing is written).

        :meth:`run` checks the same again under the journal's lock; this lets a
        caller refuse before it touches the output directory. ``label`` names
        the limit in the message.
        """
        await self._with_catalog(client)
        if self.options.max_cost is None and client is None:
            return
        rows = await anyio.to_thread.run_sync(Journal.read, self.out_dir)
        plan = self._plan(rows or {})
        await check_spend(plan.submit, self.options, client, registry=self._registry, label=label)

    async def run(
        self, *, client: RunComfyClient | None = None, cost_label: str = "the limit of"
    ) -> BatchReport:
        """Run (or resume) the batch; return its report (also written to ``report.json``).

        ``client``: use it for this run (instead of the one given at
        construction, or one made here). ``cost_label`` names the cost limit in
        :class:`CostLimitError`'s message.

        Raises :class:`ManifestError` (a line changed under an id the journal
        has paid for), :class:`CostLimitError`, or :class:`JournalError`
        (another run holds the directory) before anything is submitted.
        """
        if self._started:
            raise RuntimeError("a BatchRunner runs once; create a new one to run again")
        self._started = True
        if client is not None:
            self._client = client
        self._cost_label = cost_label
        started = time.time()
        async with self._client_ctx() as made:
            # one client for the checks before the first submit and for the run
            self._client = made
            await self._with_catalog(made)
            return await self._run(started)

    async def _run(self, started: float) -> BatchReport:
        await anyio.to_thread.run_sync(lambda: self.out_dir.mkdir(parents=True, exist_ok=True))
        journal = await self._open_journal()
        try:
            plan = await self._prepare(journal)
            try:
                await self._execute(plan)
            finally:
                with anyio.CancelScope(shield=True):
                    report = await self._report(journal, started)
        finally:
            with anyio.CancelScope(shield=True):
                await journal.aclose()
            self.journal_cpu_seconds = journal.cpu_seconds
            self.journal_calls = journal.calls
            self.journal_commits = journal.commits
        return report

    async def _open_journal(self) -> Journal:
        o = self.options
        if o.journal is None:
            return await Journal.open(self.out_dir)
        source = self.manifest.source
        key = o.batch_key or (Path(source).name if source else None)
        if not key:
            raise ValueError("a shared journal needs a batch_key (the manifest has no file name)")
        return await Journal.open(
            o.journal, batch_key=key, max_in_flight=o.concurrency, lease_seconds=o.lease_seconds
        )

    # -- preparing ---------------------------------------------------------------------

    def _plan(self, rows: dict[str, JournalRow]) -> Plan:
        o = self.options
        return make_plan(
            self.manifest,
            rows,
            resubmit_unknown=o.resubmit_unknown,
            retry_failed=o.retry_failed,
            adopt=o.adopt,
            files_present=lambda row: files_present(self.out_dir, row),
        )

    async def _prepare(self, journal: Journal) -> Plan:
        rows = await journal.rows()
        plan = await anyio.to_thread.run_sync(self._plan, rows)
        await check_spend(
            plan.submit,
            self.options,
            self._client,
            registry=self._registry,
            label=self._cost_label,
        )
        await journal.plan((e.id, e.line, e.model, e.input, e.hash) for e in plan.new)
        for entry in plan.replan:
            logger.warning("job %s changed in the manifest; it starts over", entry.id)
            await journal.replan(entry.id, entry.model, entry.input, entry.hash)
        if plan.stale_submitting:
            await journal.expire_submitting()
        for entry in plan.requeue:
            await journal.requeue(entry.id)
        for entry, request_id in plan.adopt:
            await journal.adopt(entry.id, request_id)
        if journal.shared:
            # Accepted jobs are other runners' while they live: this run takes
            # over only those of runners that stopped (_follow_fleet), and
            # re-fetches no file another runner saved elsewhere.
            adopted = {e.id for e, _ in plan.adopt}
            plan.track = [(e, r) for e, r in plan.track if e.id in adopted]
            plan.download = []
        if plan.not_in_manifest:
            logger.warning(
                "%d job(s) in the journal are not in this manifest; they are left alone",
                plan.not_in_manifest,
            )
        if not journal.shared:  # in a shared directory, others may be downloading now
            removed = await anyio.to_thread.run_sync(cleanup_partials, self.out_dir)
            if removed:
                logger.info("removed %d partial download(s) of an earlier run", removed)
        self._ctx = RunContext(
            entries=self._entries,
            out_dir=self.out_dir,
            options=self.options,
            journal=journal,
            records=Records(self.out_dir, rows),
            attempts={job_id: row.attempts for job_id, row in rows.items()},
        )
        return plan

    # -- executing ---------------------------------------------------------------------

    def _make_bar(self, plan: Plan) -> ProgressBar | None:
        option = self.options.progress
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
            file=self.options.progress_file,
            initial=sum(settled.values()),
            initial_counts=settled,
            count_finished=False,
        )

    @contextlib.asynccontextmanager
    async def _client_ctx(self) -> AsyncIterator[RunComfyClient]:
        if self._client is not None:
            yield self._client
            return
        # The client's in-flight limit is the batch's one limit.
        options: dict[str, Any] = {
            "max_in_flight": self.options.concurrency,
            "include_cost": True,
        }
        options.update(self.options.client_options)
        async with RunComfyClient(**options) as client:
            yield client

    async def _execute(self, plan: Plan) -> None:
        ctx = self._ctx
        assert ctx is not None
        ctx.unsent = {e.id for e in plan.submit}
        ctx.open = set(ctx.unsent)
        ctx.open.update(e.id for e, _ in plan.track)
        ctx.open.update(e.id for e, _ in plan.download)
        fleet = ctx.journal.shared
        if fleet:
            ctx.open.add(_FLEET)  # settled by _follow_fleet once the whole batch is
        if not ctx.open:
            return
        ctx.bar = self._make_bar(plan)
        stop = self._stop = anyio.Event()
        ctx.downloads, ctx.download_queue = anyio.create_memory_object_stream[Download](
            float("inf")
        )
        if self._interrupted:
            stop.set()
        try:
            async with (
                self._client_ctx() as client,
                Downloader(
                    self.out_dir,
                    concurrency=self.options.download_concurrency,
                    retry=self.options.download_retry,
                ) as downloader,
                ctx.downloads,
                ctx.download_queue,
                anyio.create_task_group() as tg,
            ):

                def start_wait(entry: ManifestEntry, job: Job) -> None:
                    tg.start_soon(wait_job, ctx, entry, job)

                ctx.start_wait = start_wait
                self._observer = RunObserver(ctx, client)
                tg.start_soon(self._observer.run)
                if ctx.bar is not None:
                    tg.start_soon(self._show_states, ctx)
                for entry, request_id in plan.track:
                    ctx.resumed += 1
                    ctx.start_wait(entry, client.track(request_id, entry.model))
                for entry, row in plan.download:
                    ctx.downloads.send_nowait((entry, row.result or {}, row.request_id))
                for _ in range(self.options.download_concurrency):
                    tg.start_soon(download_worker, ctx, client, downloader)
                stage = self._stage = SubmitStage(ctx, client)
                if stop.is_set():
                    stage.halt()
                tg.start_soon(stage.run)
                if fleet:
                    tg.start_soon(self._follow_fleet, ctx, client, stage)
                try:
                    await _first_of(ctx.all_done, stop)
                except anyio.get_cancelled_exc_class():
                    # Cancelled from outside (e.g. a notebook cell stopped): stop as
                    # for Ctrl-C, then let the cancellation go on.
                    self.stop()
                    with anyio.CancelScope(shield=True):
                        await self._shutdown(stage)
                    raise
                await self._shutdown(stage)
                # Nothing of ours outlives the run (waiting on a job does not
                # stop its tracking, and an unfinished download leaves no file).
                tg.cancel_scope.cancel()
        finally:
            if ctx.bar is not None:
                ctx.bar.close()

    async def _shutdown(self, stage: SubmitStage) -> None:
        """Leave the journal consistent: every submit sent is answered and recorded."""
        stage.halt()
        await stage.finished.wait()
        if self._interrupted:
            await self._cancel_queued()

    async def _cancel_queued(self) -> None:
        ctx = self._ctx
        assert ctx is not None
        queued = {i: j for i, j in ctx.inflight.items() if j.state in _MAY_BE_QUEUED}
        if not queued:
            return
        cancel = self.options.cancel_on_interrupt
        if not cancel and self.options.confirm_cancel is not None:
            cancel = await self.options.confirm_cancel(len(queued))
        if not cancel:
            return

        async def one(job_id: str, job: Job) -> None:
            try:
                cancelled = (await job.cancel()).cancelled
            except RunComfyError as exc:
                logger.warning("could not cancel %s (%s): %s", job_id, job.request_id, exc)
                return
            # Its waiter may have recorded the cancellation already.
            if cancelled and ctx.journal.state_of(job_id) is JournalState.SUBMITTED:
                await ctx.journal.mark_cancelled(job_id, "cancelled on interrupt")

        async with anyio.create_task_group() as tg:
            for job_id, job in queued.items():
                tg.start_soon(one, job_id, job)

    async def _follow_fleet(
        self, ctx: RunContext, client: RunComfyClient, stage: SubmitStage
    ) -> None:
        """With a shared journal: take over the accepted jobs of runners that stopped, and end
        the run only once no other runner holds an unsettled job (it may stop too).

        Self-contained: the rest of the runner sees re-attached jobs as resumed ones.
        """
        journal = ctx.journal
        interval = min(1.0, self.options.lease_seconds / 3)
        while True:
            rows = await journal.reattach(_REATTACH)
            for row in rows:
                entry = ctx.entries.get(row.id)
                if entry is None or row.request_id is None:
                    continue
                # Planned when this run began (so counted as this run's to send),
                # then sent by a runner that died: no longer this stage's to settle.
                ctx.unsent.discard(row.id)
                ctx.open.add(row.id)
                if row.state is JournalState.SUBMITTED:
                    ctx.resumed += 1
                    ctx.start_wait(entry, client.track(row.request_id, entry.model))
                else:  # finished: its files are still to fetch
                    ctx.downloads.send_nowait((entry, row.result or {}, row.request_id))
            if len(rows) == _REATTACH:
                continue
            if ctx.open == {_FLEET} and stage.finished.is_set():
                # After a fatal error (bad token, no balance) this runner leaves
                # the rest to the others; else it waits for the whole batch.
                fleet_done = ctx.fatal_error is None and not await journal.open_elsewhere()
                if fleet_done:
                    # Nobody downloads any more: partial files left are a dead runner's.
                    await anyio.to_thread.run_sync(cleanup_partials, self.out_dir)
                if fleet_done or ctx.fatal_error is not None:
                    ctx.open.discard(_FLEET)
                    ctx.all_done.set()
                    return
            await anyio.sleep(interval)

    @staticmethod
    async def _show_states(ctx: RunContext) -> None:
        """Keep the bar's queued / running counts current.

        Read from the jobs' last seen states rather than from client events: a
        listener makes the scheduler check queued jobs on the status route (for
        queue positions this bar does not show), which costs requests.
        """
        while True:
            ctx.count_states()
            await anyio.sleep(0.5)

    # -- the report --------------------------------------------------------------------

    async def _report(self, journal: Journal, started: float) -> BatchReport:
        rows = await journal.rows()
        fatal = self.fatal_error
        report = BatchReport(
            out_dir=str(self.out_dir),
            jobs=tuple(
                job_report(
                    entry,
                    rows.get(entry.id),
                    estimated_cost=entry_cost(entry, self.options.prices, self._registry),
                    fatal_error=error_text(fatal) if fatal is not None else None,
                )
                for entry in self.manifest
            ),
            started_at=started,
            finished_at=time.time(),
            interrupted=self._interrupted,
            submitted=self.submitted,
            resumed=self.resumed,
            downloaded=self.downloaded,
            report_path=str(self.out_dir / REPORT_NAME),
            requests=self._observer.requests if self._observer else None,
        )
        data = report.to_json().encode("utf-8")
        await anyio.to_thread.run_sync(write_file_atomic, self.out_dir, REPORT_NAME, data)
        await anyio.to_thread.run_sync(save_gallery, self.out_dir, report, rows)
        return report


async def _first_of(*events: anyio.Event) -> None:
    """Return once any of ``events`` is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


async def run_batch(
    jobs: Jobs,
    out_dir: str | os.PathLike[str],
    options: BatchOptions | None = None,
    *,
    client: RunComfyClient | None = None,
    **overrides: Any,
) -> BatchReport:
    """Run (or resume) a batch: submit, track, download, journal, report.

    ``jobs`` is a manifest path (``.jsonl`` / ``.csv``), a :class:`Manifest`,
    or an iterable of job dicts / typed inputs; ``options`` a
    :class:`BatchOptions`, and keyword arguments its fields (``concurrency``,
    ``max_cost``, ``resubmit_unknown``, ``adopt``, ``progress``, ...).
    Calling it again with the same arguments after any interruption picks up
    where it stopped. Returns the :class:`BatchReport` (``report.ok``,
    ``report.summary()``).
    """
    return await BatchRunner(jobs, out_dir, options, client=client, **overrides).run()
