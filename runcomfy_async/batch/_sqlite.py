"""The SQLite journal engine: one file in the output directory, durable, off the loop.

It lives in ``DIR/.runcomfy-journal.sqlite3`` and implements
:class:`~runcomfy_async.batch._engine.JournalEngine`; the state diagram and
what each state promises are ``_journal.py``'s.

Durability: WAL with ``synchronous=FULL`` (each commit is fsynced before the
caller goes on). Calls run one at a time in a worker thread
(``anyio.to_thread`` with a limiter of one), so the event loop never waits on
the disk. Calls that arrive while a commit is in progress are grouped into
the next transaction (group commit): each caller still resumes only once its
own write is durable, but a hundred jobs finishing together cost one fsync,
not a hundred.

The connection holds SQLite's lock for its whole life (``locking_mode=
EXCLUSIVE``), so two runs cannot share one output directory; the operating
system drops the lock when a process dies, even by SIGKILL. That also makes
:meth:`SQLiteEngine.claim` a cursor over the ``planned`` rows: no other
runner can claim them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._errors import IllegalTransitionError, JournalError
from ._commit import GroupCommit
from ._rows import (
    COLUMNS,
    TIME_COLUMNS,
    UPDATABLE,
    JournalRow,
    JournalState,
    decode_row,
    encode_column,
)

__all__ = ["JOURNAL_NAME", "SQLiteEngine"]

JOURNAL_NAME = ".runcomfy-journal.sqlite3"
"""The journal's file name inside the output directory."""

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,
    line          INTEGER NOT NULL,
    model         TEXT NOT NULL,
    input         TEXT NOT NULL,
    entry_hash    TEXT NOT NULL,
    state         TEXT NOT NULL,
    request_id    TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    result        TEXT,
    files         TEXT,
    submitted_at  REAL,
    finished_at   REAL,
    downloaded_at REAL,
    updated_at    REAL NOT NULL,
    sending_at    REAL,
    started_at    REAL,
    download_started_at REAL
);
"""
_T = TypeVar("_T")
Op = Callable[[sqlite3.Connection], Any]
#: A deferred write waits at most this long for a batch to ride with.
_DEFER_SECONDS = 0.05
#: A deferred write asked for ``soon`` waits at most this long.
_SOON_SECONDS = 0.01
#: Before an fsync'd commit, wait this long for more calls to share it, unless
#: this many fsync'd calls already wait. Submits are paid jobs that run for
#: minutes: 10 ms on each is nothing, while every fsync shared saves CPU.
_LINGER_SECONDS = 0.01
_LINGER_UNTIL = 4

logger = logging.getLogger("runcomfy_async")


@attrs.define
class _Pending:
    """One call waiting for the journal's thread: an ``op``, or an update of one job."""

    op: Op | None
    future: asyncio.Future[Any] | None
    single: bool
    job_id: str | None = None
    fields: dict[str, Any] | None = None
    at: float = 0.0
    fsync: bool = True
    expect: frozenset[JournalState] | None = None


def _journal_error(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        return JournalError(f"journal write failed: {exc}")
    return exc


def _is_locked(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteEngine(GroupCommit):
    """The SQLite journal of one output directory; :meth:`open` it, :meth:`aclose` it.

    Every coroutine returns once its write is committed and fsynced. Raises
    :class:`JournalError` when another process holds the journal.
    ``cpu_seconds`` is the CPU time the journal's thread spent on calls (what
    a benchmark compares with the process's CPU time).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # One call at a time, in a worker thread: the connection is never used
        # by two threads at once (and never by the loop's).
        self._limiter = anyio.CapacityLimiter(1)
        self._claimed_up_to: tuple[int, str] = (-1, "")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[_Pending] = []
        self._last_for: dict[str, _Pending] = {}  # job id -> its last call in _pending
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._sync = "FULL"
        self.linger = _LINGER_SECONDS
        self._closed = False
        self.cpu_seconds = 0.0
        self.calls = 0
        self.commits = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SQLiteEngine {self.path} {state} calls={self.calls} commits={self.commits}>"

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    async def open(cls, out_dir: str | os.PathLike[str]) -> SQLiteEngine:
        """Open (or create) the journal in ``out_dir`` (created too) and take its lock."""
        path = Path(out_dir) / JOURNAL_NAME
        journal = cls(path)
        try:
            await journal._call_direct(journal._connect)
        except BaseException:
            await journal._shutdown()
            raise
        return journal

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=0.5, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"cannot put the journal {self.path} in WAL mode ({mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)  # commits on its own: before our transaction
            # The first write takes the exclusive lock, held until we close.
            conn.execute("BEGIN IMMEDIATE")
            found = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if found is None:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?)", (str(_SCHEMA_VERSION),)
                )
            elif int(found[0]) > _SCHEMA_VERSION:
                raise JournalError(
                    f"the journal {self.path} was written by a newer runcomfy-async "
                    f"(schema {found[0]}); upgrade to resume this batch"
                )
            # A journal of an earlier version lacks the later times: add them (NULL
            # for its rows). Older versions select their columns by name, so they
            # still read a journal migrated here: the schema number stays.
            present = _columns(conn)
            for name in TIME_COLUMNS:
                if name not in present:
                    conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} REAL")
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('opened_at', ?)",
                (repr(time.time()),),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            if _is_locked(exc):
                raise JournalError(
                    f"another run is using {self.path.parent} (its journal is locked); "
                    "wait for it to finish or stop it first"
                ) from None
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from None
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def aclose(self) -> None:
        """Finish pending writes, close the database and stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._start_flush()  # deferred writes go now
        flusher = self._flusher
        if flusher is not None:
            await asyncio.shield(flusher)
        await self._shutdown()

    async def _shutdown(self) -> None:
        def close() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        await self._call_direct(close)

    # -- the thread ------------------------------------------------------------------

    async def _call_direct(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in the journal's thread, outside any batch."""
        return await anyio.to_thread.run_sync(self._timed, fn, limiter=self._limiter)

    def _timed(self, fn: Callable[[], _T]) -> _T:
        start = time.thread_time()
        try:
            return fn()
        finally:
            self.cpu_seconds += time.thread_time() - start

    async def _call(self, op: Op, *, single: bool = False, fsync: bool = True) -> Any:
        """Run ``op`` in the next transaction; return once it is committed.

        ``single``: the op is one statement, which can commit on its own
        when it is alone in a batch (one call into SQLite instead of three).
        ``fsync``: the commit must be on disk before we return.
        """
        return await self._wait_for(_Pending(op, None, single, fsync=fsync))

    async def _wait_for(self, pending: _Pending) -> Any:
        fut = self._enqueue(pending, wait=True)
        assert fut is not None
        # The write goes on even if our caller is cancelled: the journal must
        # not depend on who was still waiting.
        return await asyncio.shield(fut)

    def _enqueue(
        self, pending: _Pending, *, wait: bool, soon: bool = False
    ) -> asyncio.Future[Any] | None:
        if self._closed:
            raise JournalError("the journal is closed")
        loop = asyncio.get_running_loop()
        self.calls += 1
        job_id = pending.job_id
        last = self._last_for.get(job_id) if job_id is not None else None
        if not wait and last is not None and last.future is None and last.fields is not None:
            # A deferred update of a job whose last pending call is a deferred
            # update too: one UPDATE carries both (e.g. finished, then downloaded).
            assert pending.fields is not None
            last.fields.update(pending.fields)
            last.at = pending.at
            if soon:
                self._flush_within(_SOON_SECONDS)
            return None
        if wait:
            pending.future = loop.create_future()
        self._pending.append(pending)
        if job_id is not None:
            self._last_for[job_id] = pending
        else:
            self._last_for.clear()  # it may touch any job: merge nothing across it
        if self._flusher is not None and not self._flusher.done():
            return pending.future  # the running flush takes it in its next round
        if wait:
            self._start_flush()
        else:
            # A deferred write waits a little for company, so that writes
            # nobody waits for cost a share of a commit, not a commit each.
            self._flush_within(_SOON_SECONDS if soon else _DEFER_SECONDS)
        return pending.future

    async def _flush(self) -> None:
        while self._pending:
            # Let other calls join the batch: those of this turn of the loop,
            # and, before an fsync, those of the next few milliseconds (an
            # fsync costs the same for one write as for fifty).
            durable = sum(1 for p in self._pending if p.fsync and p.future is not None)
            await asyncio.sleep(self.linger if 0 < durable < _LINGER_UNTIL else 0)
            batch, self._pending = self._pending, []
            self._last_for.clear()
            try:
                outcomes = await anyio.to_thread.run_sync(
                    self._timed, lambda b=batch: self._run_batch(b), limiter=self._limiter
                )
            except BaseException as exc:  # the thread itself failed
                outcomes = [(False, exc)] * len(batch)
            for pending, (ok, value) in zip(batch, outcomes, strict=True):
                fut = pending.future
                if fut is None:
                    if not ok:
                        logger.warning("a deferred journal write failed: %s", value)
                elif not fut.done():
                    if ok:
                        fut.set_result(value)
                    else:
                        fut.set_exception(value)

    def _run_batch(self, batch: list[_Pending]) -> list[tuple[bool, Any]]:
        conn = self._conn
        if conn is None:
            return [(False, JournalError("the journal is closed"))] * len(batch)
        # Only some writes must survive a power cut before the caller goes on
        # (above all 'submitting', before a paid POST); a batch without them
        # commits without an fsync, and the next fsync of the WAL, which is
        # written in order, makes it durable too. A crash of the process
        # loses nothing committed either way.
        sync = "FULL" if any(p.future is not None and p.fsync for p in batch) else "NORMAL"
        if sync != self._sync:
            conn.execute(f"PRAGMA synchronous={sync}")
            self._sync = sync
        if len(batch) == 1 and batch[0].single:
            # One statement commits on its own (same durability, fewer calls).
            try:
                value = _execute(conn, batch[0])
            except Exception as exc:
                return [(False, _journal_error(exc))]
            self.commits += 1
            return [(True, value)]
        try:
            conn.execute("BEGIN IMMEDIATE")
            values = [_execute(conn, p) for p in batch]
            conn.execute("COMMIT")
            self.commits += 1
            return [(True, v) for v in values]
        except Exception:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        # One call failed: run each alone, so only the guilty one fails.
        outcomes: list[tuple[bool, Any]] = []
        for p in batch:
            try:
                conn.execute("BEGIN IMMEDIATE")
                value = _execute(conn, p)
                conn.execute("COMMIT")
                self.commits += 1
                outcomes.append((True, value))
            except Exception as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                outcomes.append((False, _journal_error(exc)))
        return outcomes

    # -- reading ---------------------------------------------------------------------

    async def rows(self) -> dict[str, JournalRow]:
        """Every job recorded, by id, in manifest line order."""
        return await self._call(_select_all, fsync=False)  # type: ignore[no-any-return]

    @staticmethod
    def read(out_dir: str | os.PathLike[str]) -> dict[str, JournalRow] | None:
        """Read a journal without locking or changing it (blocking: call it in a thread).

        None when ``out_dir`` has no journal; raises :class:`JournalError` when
        a run holds it.
        """
        path = Path(out_dir) / JOURNAL_NAME
        if not path.is_file():
            return None
        try:
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.5)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {path}: {exc}") from None
        try:
            return _select_all(conn)
        except sqlite3.Error as exc:
            if _is_locked(exc):
                raise JournalError(f"a run is using {path.parent} right now") from None
            raise JournalError(f"cannot read the journal {path}: {exc}") from None
        finally:
            conn.close()

    async def claim(self, limit: int) -> list[str]:
        """Up to ``limit`` planned jobs past the last claimed one, in line order.

        The exclusive lock makes this runner the only one: a cursor suffices.
        A job that goes back to ``planned`` after its claim is not claimed
        again by this engine (the next run submits it).
        """

        def op(conn: sqlite3.Connection) -> list[str]:
            found = conn.execute(
                "SELECT line, id FROM jobs WHERE state='planned' AND (line, id) > (?, ?) "
                "ORDER BY line, id LIMIT ?",
                (*self._claimed_up_to, limit),
            ).fetchall()
            if found:
                self._claimed_up_to = (int(found[-1][0]), str(found[-1][1]))
            return [str(job_id) for _, job_id in found]

        return await self._call(op, fsync=False)  # type: ignore[no-any-return]

    # -- writing ---------------------------------------------------------------------

    async def plan(self, rows: Sequence[JournalRow]) -> None:
        """Record ``rows`` as planned where new; a known job keeps its state, takes the line."""
        now = time.time()
        items = [
            (
                r.id,
                r.line,
                r.model,
                encode_column("input", r.input),
                r.entry_hash,
                now,
            )
            for r in rows
        ]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO jobs(id, line, model, input, entry_hash, state, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 'planned', ?) "
                "ON CONFLICT(id) DO UPDATE SET line=excluded.line",
                items,
            )

        await self._call(op)

    async def update(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        *,
        expect: frozenset[JournalState],
        durable: bool = True,
    ) -> None:
        """Set ``fields`` of one job in one of ``expect``; committed on return.

        With ``durable`` (the default) the commit is also on disk, surviving a
        power cut; ``durable=False`` only survives the process dying, until the
        next fsync'd commit (milliseconds later in a busy batch).
        """
        pending = _update(job_id, fields, expect)
        pending.fsync = durable
        await self._wait_for(pending)

    def defer(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        *,
        expect: frozenset[JournalState],
        soon: bool = False,
    ) -> None:
        """Set ``fields`` of one job without waiting: for writes no next step relies on.

        The write is committed with the next batch, or within 50 ms (10 ms
        with ``soon``); it is not fsync'd on its own. A crash before the commit
        loses it (the step is then redone on the next run). Calls are applied
        in the order they were made.
        """
        pending = _update(job_id, fields, expect)
        pending.fsync = False
        self._enqueue(pending, wait=False, soon=soon)

    async def move_all(self, source: JournalState, target: JournalState, error: str) -> list[str]:
        """Move every job in ``source`` to ``target`` with ``error``; return their ids."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> list[str]:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM jobs WHERE state=? ORDER BY line", (source.value,)
                )
            ]
            conn.execute(
                "UPDATE jobs SET state=?, error=?, updated_at=? WHERE state=?",
                (target.value, error, now, source.value),
            )
            return ids

        return await self._call(op)  # type: ignore[no-any-return]


_UPDATE_SQL: dict[tuple[tuple[str, ...], int], str] = {}


def _update(job_id: str, fields: Mapping[str, Any], expect: frozenset[JournalState]) -> _Pending:
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"not journal columns: {sorted(unknown)}")
    return _Pending(None, None, True, job_id, dict(fields), time.time(), expect=expect)


def _execute(conn: sqlite3.Connection, pending: _Pending) -> Any:
    if pending.op is not None:
        return pending.op(conn)
    assert pending.fields is not None
    names = tuple(sorted(pending.fields))
    expect = sorted(s.value for s in pending.expect or ())
    key = (names, len(expect))
    sql = _UPDATE_SQL.get(key)
    if sql is None:
        sets = "".join(f"{n}=?, " for n in names)
        where = f" AND state IN ({', '.join('?' * len(expect))})" if expect else ""
        sql = _UPDATE_SQL[key] = f"UPDATE jobs SET {sets}updated_at=? WHERE id=?{where}"
    values = [encode_column(n, pending.fields[n]) for n in names]
    cur = conn.execute(sql, (*values, pending.at, pending.job_id, *expect))
    if cur.rowcount != 1:
        found = conn.execute("SELECT state FROM jobs WHERE id=?", (pending.job_id,)).fetchone()
        if found is None:
            raise JournalError(f"job {pending.job_id!r} is not in the journal")
        target = pending.fields.get("state", found[0])
        raise IllegalTransitionError(
            str(pending.job_id), str(found[0]), str(JournalState(target).value)
        )
    return None


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {str(row[1]) for row in conn.execute("PRAGMA table_info(jobs)")}


def _select_all(conn: sqlite3.Connection) -> dict[str, JournalRow]:
    # A journal read without opening it may be of an earlier version: its
    # missing times read as NULL.
    present = _columns(conn)
    cols = ", ".join(c if c in present else f"NULL AS {c}" for c in COLUMNS)
    cur = conn.execute(f"SELECT {cols} FROM jobs ORDER BY line, id")
    return {row.id: row for row in map(decode_row, cur.fetchall())}
