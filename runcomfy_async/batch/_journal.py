"""The batch journal: typed transitions of each job's state, over a storage engine.

For each job id the journal says how far the job got::

    planned ─▶ submitting ─▶ submitted ─▶ finished ─▶ downloaded
       ▲  │        │  │           │
       │  │        │  ▼           ▼
       │  │        │ unknown    failed / cancelled / unknown (its id answers for another job)
       │  ▼        ▼
       │ failed (refused before it was paid for)
       └── failed / cancelled / unknown, when a rerun is told to submit them again

The same table serves SQLite and PostgreSQL. ``unknown -> submitted`` is
allowed: ``--adopt`` of a request id found on the dashboard, and, in a fleet,
a runner that stalled past its lease (so another runner turned its
``submitting`` row ``unknown``) and then got its submit's answer after all:
it records the request id rather than lose a paid job.

``submitting`` is committed (fsynced) by the client's ``before_send`` hook:
once the request holds its in-flight slot and its request token, right
before the POST may leave. A job still waiting for a slot is ``planned``.
So a crash leaves either a request id to resume (``client.track``), a
``submitting`` row that is honestly an unknown outcome (its POST may have
left), or a ``planned`` row that a rerun submits: never a job we could
submit twice by accident, and never a job lost that was never sent.

:class:`Journal` refuses a transition the diagram (:data:`TRANSITIONS`) does
not have with :class:`~runcomfy_async.IllegalTransitionError`, before the
write and again in the engine's statement. Storage is an engine's
(:class:`~runcomfy_async.batch._engine.JournalEngine`); SQLite is the default.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .._errors import IllegalTransitionError, JournalError
from ._engine import JournalEngine, SharedJournalEngine
from ._rows import JournalRow, JournalState
from ._sqlite import JOURNAL_NAME, SQLiteEngine

__all__ = ["JOURNAL_NAME", "TRANSITIONS", "Journal", "JournalError", "JournalRow", "JournalState"]

_S = JournalState

TRANSITIONS: Mapping[JournalState, frozenset[JournalState]] = {
    # a submit that holds its slot; adopted; refused before it was sent; a note
    _S.PLANNED: frozenset({_S.SUBMITTING, _S.SUBMITTED, _S.FAILED, _S.PLANNED}),
    # answered; may have left; refused; certainly not created
    _S.SUBMITTING: frozenset({_S.SUBMITTED, _S.UNKNOWN, _S.FAILED, _S.PLANNED}),
    # ended; its request id answers for another job (a restarted server reused it)
    _S.SUBMITTED: frozenset({_S.FINISHED, _S.FAILED, _S.CANCELLED, _S.UNKNOWN, _S.SUBMITTED}),
    _S.FINISHED: frozenset({_S.DOWNLOADED, _S.FINISHED}),
    _S.DOWNLOADED: frozenset({_S.DOWNLOADED}),  # a lost file fetched again
    _S.FAILED: frozenset({_S.PLANNED, _S.SUBMITTED}),  # retried, or adopted
    _S.CANCELLED: frozenset({_S.PLANNED, _S.SUBMITTED}),
    _S.UNKNOWN: frozenset({_S.PLANNED, _S.SUBMITTED}),  # resubmitted on purpose, or adopted
}
"""Every legal move: ``state -> the states it may become`` (a state to itself: a note)."""

_STALE_SUBMITTING = (
    "the run stopped between sending the submit and recording its answer: "
    "a job may or may not exist"
)


class Journal:
    """A batch's journal: every job's state, moved only along :data:`TRANSITIONS`.

    Open the SQLite journal of a directory, or a fleet's in PostgreSQL, with
    :meth:`open`; close with
    :meth:`aclose`. Waited transitions return once committed (``submitting``
    also fsynced); the others are committed with the next batch of writes.
    Raises :class:`JournalError` when another process holds the journal and
    :class:`~runcomfy_async.IllegalTransitionError` for a move the diagram
    does not have.
    """

    def __init__(self, engine: JournalEngine) -> None:
        self.engine = engine
        self._states: dict[str, JournalState] = {}

    def __repr__(self) -> str:
        return f"<Journal {self.engine!r}>"

    @classmethod
    async def open(
        cls,
        target: str | os.PathLike[str],
        *,
        batch_key: str | None = None,
        max_in_flight: int | None = None,
        runner_id: str | None = None,
        lease_seconds: float = 30.0,
    ) -> Journal:
        """Open (or create) a journal: the SQLite one in directory ``target`` (created too,
        and locked), or, for a ``postgresql://`` URL, batch ``batch_key`` of a journal in
        PostgreSQL that a fleet of runners shares (extra ``[postgres]``).

        For PostgreSQL: ``max_in_flight`` is the fleet's in-flight cap (every
        runner should give the same), ``runner_id`` names this runner (by
        default host, pid and a random suffix), ``lease_seconds`` how long
        the others wait before taking over the jobs of a runner that stopped
        renewing its lease.
        """
        if is_postgres_url(target):
            if not batch_key:
                raise ValueError("a PostgreSQL journal needs a batch key")
            try:
                from ..fleet import PostgresEngine  # the optional extra, imported on use
            except ImportError as exc:
                raise JournalError(str(exc)) from None

            return cls(
                await PostgresEngine.open(
                    str(target),
                    batch_key=batch_key,
                    runner_id=runner_id,
                    lease_seconds=lease_seconds,
                    max_in_flight=max_in_flight,
                )
            )
        return cls(await SQLiteEngine.open(target))

    @property
    def shared(self) -> bool:
        """True when other runners may use this journal at the same time (PostgreSQL)."""
        return bool(getattr(self.engine, "shared", False))

    async def reattach(self, limit: int) -> list[JournalRow]:
        """Take over accepted jobs of runners that stopped (a shared journal; else ``[]``).

        Their ``submitting`` rows become ``unknown`` first. Each row returned
        has a request id: track it, never submit it again.
        """
        if not self.shared:
            return []
        engine: SharedJournalEngine = self.engine  # type: ignore[assignment]
        rows = await engine.reattach(limit)
        for row in rows:
            self._states[row.id] = row.state
        return rows

    async def wait_for_room(self) -> None:
        """Return when the fleet's in-flight cap seems to have room (at once unless shared).

        Cancellable, unlike :meth:`mark_submitting`, which takes the slot for
        sure (and may wait again, briefly, if another runner was quicker).
        """
        if self.shared:
            engine: SharedJournalEngine = self.engine  # type: ignore[assignment]
            await engine.wait_for_room()

    async def open_elsewhere(self) -> int:
        """Unsettled jobs other runners hold or left to re-attach (0 unless shared)."""
        if not self.shared:
            return 0
        engine: SharedJournalEngine = self.engine  # type: ignore[assignment]
        return await engine.open_elsewhere()

    @staticmethod
    def read(out_dir: str | os.PathLike[str]) -> dict[str, JournalRow] | None:
        """Read a directory's journal without locking it (blocking); None when there is none."""
        return SQLiteEngine.read(out_dir)

    async def aclose(self) -> None:
        """Commit what is pending and release the journal. Idempotent."""
        await self.engine.aclose()

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def calls(self) -> int:
        """Engine calls so far."""
        return self.engine.calls

    @property
    def commits(self) -> int:
        """Transactions committed so far."""
        return self.engine.commits

    @property
    def cpu_seconds(self) -> float:
        """CPU time the engine's thread spent on calls."""
        return self.engine.cpu_seconds

    # -- reading and planning --------------------------------------------------------

    def state_of(self, job_id: str) -> JournalState | None:
        """The state this process last recorded (or read) for ``job_id``; None if unknown."""
        return self._states.get(job_id)

    async def rows(self) -> dict[str, JournalRow]:
        """Every job recorded, by id, in manifest line order."""
        rows = await self.engine.rows()
        self._states = {job_id: row.state for job_id, row in rows.items()}
        return rows

    async def plan(self, entries: Iterable[tuple[str, int, str, Mapping[str, Any], str]]) -> None:
        """Record jobs ``(id, line, model, input, entry_hash)`` as planned where new.

        A job already recorded keeps its state; only its line number follows
        the manifest.
        """
        rows = [JournalRow(i, line, m, dict(p), h) for i, line, m, p, h in entries]
        await self.engine.plan(rows)
        for row in rows:
            self._states.setdefault(row.id, JournalState.PLANNED)

    async def claim(self, limit: int) -> list[str]:
        """Up to ``limit`` planned jobs to submit, in line order (each claimed once)."""
        return await self.engine.claim(limit)

    # -- transitions -----------------------------------------------------------------

    def _check(self, job_id: str, target: JournalState, sources: frozenset[JournalState]) -> None:
        current = self._states.get(job_id)
        if current is None:
            return  # not read by this process: the engine's statement checks it
        if current not in sources or target not in TRANSITIONS[current]:
            raise IllegalTransitionError(job_id, current.value, target.value)

    async def _move(
        self,
        job_id: str,
        target: JournalState,
        sources: frozenset[JournalState],
        *,
        durable: bool = True,
        **fields: Any,
    ) -> None:
        self._check(job_id, target, sources)
        previous = self._states.get(job_id)
        self._states[job_id] = target
        try:
            await self.engine.update(
                job_id, {"state": target, **fields}, expect=sources, durable=durable
            )
        except JournalError:
            # Refused (another state, another runner's job): nothing was written.
            if previous is None:
                self._states.pop(job_id, None)
            else:
                self._states[job_id] = previous
            raise

    def _defer(
        self,
        job_id: str,
        target: JournalState,
        sources: frozenset[JournalState],
        *,
        soon: bool = False,
        **fields: Any,
    ) -> None:
        self._check(job_id, target, sources)
        self._states[job_id] = target
        self.engine.defer(job_id, {"state": target, **fields}, expect=sources, soon=soon)

    async def replan(
        self, job_id: str, model: str, payload: Mapping[str, Any], digest: str
    ) -> None:
        """Replace a job's model and input and start it over (its line changed; never paid)."""
        await self._move(
            job_id,
            _S.PLANNED,
            frozenset({_S.PLANNED, _S.FAILED, _S.CANCELLED}),
            model=model,
            input=dict(payload),
            entry_hash=digest,
            request_id=None,
            error=None,
            result=None,
            files=None,
            submitted_at=None,
            finished_at=None,
            downloaded_at=None,
            sending_at=None,
            started_at=None,
            download_started_at=None,
        )

    async def requeue(self, job_id: str) -> None:
        """Plan a failed, cancelled or unknown job again (the user asked for it)."""
        await self._move(
            job_id, _S.PLANNED, frozenset({_S.FAILED, _S.CANCELLED, _S.UNKNOWN, _S.PLANNED})
        )

    async def expire_submitting(self) -> list[str]:
        """Turn the ``submitting`` rows of a run that died into ``unknown``; return their ids."""
        ids = await self.engine.move_all(_S.SUBMITTING, _S.UNKNOWN, _STALE_SUBMITTING)
        for job_id in ids:
            self._states[job_id] = _S.UNKNOWN
        return ids

    async def adopt(self, job_id: str, request_id: str) -> None:
        """Record a request the user found for a job (tracked from now on, never resubmitted)."""
        await self._move(
            job_id,
            _S.SUBMITTED,
            frozenset({_S.PLANNED, _S.FAILED, _S.CANCELLED, _S.UNKNOWN}),
            request_id=request_id,
            error=None,
            submitted_at=time.time(),
            sending_at=None,  # sent by someone else, at a time we do not know
            started_at=None,
        )

    async def mark_submitting(self, job_id: str, attempts: int) -> None:
        """The POST may leave now: durable before it does (``sending_at`` is now)."""
        await self._move(
            job_id,
            _S.SUBMITTING,
            frozenset({_S.PLANNED}),
            attempts=attempts,
            request_id=None,
            error=None,
            result=None,
            sending_at=time.time(),
            started_at=None,
            download_started_at=None,
        )

    def mark_submitted(self, job_id: str, request_id: str, at: float) -> None:
        """The API accepted the job (deferred: a crash before the commit makes it unknown).

        From ``unknown`` too: in a fleet, a runner that stalled past its lease
        finds its row turned ``unknown`` by another; the answer still counts.
        """
        self._defer(
            job_id,
            _S.SUBMITTED,
            frozenset({_S.SUBMITTING, _S.UNKNOWN}),
            soon=True,
            request_id=request_id,
            submitted_at=at,
            error=None,
        )

    async def mark_submit_failed(self, job_id: str, target: JournalState, error: str) -> None:
        """A submit ended without a job: ``planned`` (not created), ``failed`` (refused) or
        ``unknown`` (it may have been created)."""
        if target not in (_S.PLANNED, _S.FAILED, _S.UNKNOWN):
            raise IllegalTransitionError(job_id, "a submit", target.value)
        sources = frozenset({_S.SUBMITTING}) if target is _S.UNKNOWN else _SUBMIT_SOURCES
        await self._move(job_id, target, sources, error=error)

    def mark_running(self, job_id: str, at: float) -> None:
        """The client first saw the job running at ``at`` (a note: the state stays).

        Nothing relies on it but the report's timeline: deferred, and dropped
        when the job has moved on in this process already.
        """
        if self._states.get(job_id) is not _S.SUBMITTED:
            return
        self._defer(job_id, _S.SUBMITTED, frozenset({_S.SUBMITTED}), started_at=at)

    def mark_finished(self, job_id: str, result: Mapping[str, Any], at: float) -> None:
        """The job succeeded on the server; its outputs are in ``result``."""
        self._defer(
            job_id, _S.FINISHED, frozenset({_S.SUBMITTED}), result=dict(result), finished_at=at
        )

    def mark_ended(self, job_id: str, target: JournalState, error: str, at: float | None) -> None:
        """The job failed or was cancelled on the server."""
        if target not in (_S.FAILED, _S.CANCELLED):
            raise IllegalTransitionError(job_id, "a job's end", target.value)
        self._defer(job_id, target, frozenset({_S.SUBMITTED}), error=error, finished_at=at)

    def mark_mismatched(self, job_id: str, error: str, at: float) -> None:
        """The job's request id answers for another job: what became of ours is unknown."""
        self._defer(job_id, _S.UNKNOWN, frozenset({_S.SUBMITTED}), error=error, finished_at=at)

    async def mark_cancelled(self, job_id: str, error: str) -> None:
        """We cancelled the job while it was queued (waited: the run is ending)."""
        await self._move(job_id, _S.CANCELLED, frozenset({_S.SUBMITTED}), error=error)

    def mark_download_started(self, job_id: str, at: float) -> None:
        """A download worker took the job's files at ``at`` (a note: the state stays)."""
        if self._states.get(job_id) is not _S.FINISHED:
            return
        self._defer(job_id, _S.FINISHED, frozenset({_S.FINISHED}), download_started_at=at)

    def mark_downloaded(self, job_id: str, files: list[Mapping[str, Any]], at: float) -> None:
        """Every output of the job is on disk."""
        self._defer(
            job_id,
            _S.DOWNLOADED,
            frozenset({_S.FINISHED, _S.DOWNLOADED}),
            files=files,
            downloaded_at=at,
            error=None,
        )

    def note_error(self, job_id: str, error: str) -> None:
        """Record why a step did not finish, leaving the state as it is."""
        current = self._states.get(job_id)
        if current is None:
            raise JournalError(f"job {job_id!r} is not in the journal")
        self._defer(job_id, current, frozenset({current}), error=error)


_SUBMIT_SOURCES = frozenset({_S.PLANNED, _S.SUBMITTING})


def is_postgres_url(target: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL: a journal a fleet can share."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))
