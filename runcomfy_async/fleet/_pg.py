"""PostgresEngine: a batch's journal in PostgreSQL, drained by any number of runners.

It implements :class:`~runcomfy_async.batch._engine.JournalEngine`, so the
batch's :class:`~runcomfy_async.batch.Journal` (and its one transition table,
``TRANSITIONS``) sits on it exactly as on SQLite. What a fleet adds:

- **leases**: each runner registers in ``runcomfy_runners`` with a lease,
  renewed every third of it. A runner whose lease ran out (it died, or
  stalled) is dead to the others: its planned claims can be claimed again,
  its accepted jobs (``submitted`` / ``finished``, with a request id) are
  re-attached by another runner (tracked, never resubmitted), and its
  ``submitting`` rows become ``unknown``, as a rerun does with SQLite.
- **ownership**: a runner writes only jobs it holds (or that no live runner
  holds, which it then takes); a job going back to ``planned`` is released.
  The check, the transition's source states and the write are one statement.
- **claims**: ``SELECT ... FOR UPDATE SKIP LOCKED``; a claim waits while
  other live runners still hold planned jobs (they may die and leave them).
- **one in-flight cap for the fleet** (``max_in_flight``): the move to
  ``submitting`` takes a slot only while fewer than ``max_in_flight`` jobs of
  the batch are ``submitting`` or ``submitted``, under a transaction-scoped
  advisory lock, in one round trip. Slots free when a job leaves those
  states; waiters hear of it by ``LISTEN/NOTIFY`` (and poll twice a second
  in case a notification is missed). A dead runner's accepted jobs still
  count: they are still running on the server.

Writes are grouped: every update waiting when a round trip ends goes in the
next one, as one ``UPDATE ... FROM jsonb_to_recordset(...)`` statement
(deferred writes wait up to 50 ms for company). ``calls`` counts round trips.

Limits: give every runner the same manifest, batch key and ``max_in_flight``.
A dead runner's in-doubt submits (now ``unknown``) no longer count towards
the cap, though the server may be running them: the account may answer a few
429s (retried) until they end. A runner that stalled past its lease finds its
jobs with others and may stop with :class:`JobHeldElsewhereError` (nothing is
paid twice). asyncio only (asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from .._errors import ClientStateError, IllegalTransitionError, JobHeldElsewhereError, JournalError
from ..batch._commit import GroupCommit
from ..batch._rows import (
    COLUMNS,
    JSON_COLUMNS,
    TIME_COLUMNS,
    UPDATABLE,
    JournalRow,
    JournalState,
    decode_row,
    encode_column,
)

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "a postgresql:// journal needs asyncpg: pip install 'runcomfy-async[postgres]'"
    ) from exc

__all__ = ["PostgresEngine"]

logger = logging.getLogger("runcomfy_async")

_S = JournalState
_SCHEMA_VERSION = 2
_NOW = "extract(epoch from clock_timestamp())"
_CHANNEL = "runcomfy_slots"
_IN_FLIGHT = ("submitting", "submitted")
#: A deferred write waits at most this long for a round trip to ride with.
_DEFER_SECONDS = 0.05
_SOON_SECONDS = 0.01
#: A slot waiter checks again this often even without a notification.
_SLOT_POLL = 0.5

# The SET list of a transition, from a jsonb object ``{F}`` of the fields to
# set (absent keys keep the column). A job moved to planned is released.
_SET_ITEMS: list[str] = []
for _col in sorted(UPDATABLE):
    if _col == "state":
        continue
    if _col in JSON_COLUMNS:
        _value = "NULLIF({F}->'COL', 'null'::jsonb)"
    elif _col in ("line", "attempts"):
        _value = "({F}->>'COL')::integer"
    elif _col.endswith("_at"):
        _value = "({F}->>'COL')::double precision"
    else:
        _value = "{F}->>'COL'"
    _value = _value.replace("COL", _col)
    _SET_ITEMS.append(f"{_col} = CASE WHEN {{F}} ? '{_col}' THEN {_value} ELSE j.{_col} END")
_SET = ", ".join(
    [
        "state = COALESCE({F}->>'state', j.state)",
        *_SET_ITEMS,
        "runner_id = CASE WHEN {F}->>'state' = 'planned' THEN NULL ELSE {R} END",
        f"updated_at = {_NOW}",
    ]
)
# A job's holder is alive while its lease has not run out.
_DEAD_HOLDER = f"""NOT EXISTS (
    SELECT 1 FROM runcomfy_runners r
    WHERE r.batch_key = j.batch_key AND r.runner_id = j.runner_id AND r.lease_until > {_NOW})"""
_MINE_OR_FREE = f"(j.runner_id = {{R}} OR j.runner_id IS NULL OR {_DEAD_HOLDER})"

# Times added to the row after the first schema (NULL in older journals).
_ADD_TIME_COLUMNS = "\n".join(
    f"ALTER TABLE runcomfy_jobs ADD COLUMN IF NOT EXISTS {name} DOUBLE PRECISION;"
    for name in TIME_COLUMNS
)

# One script, one round trip; the advisory lock keeps runners that start
# together from racing on CREATE (not safe concurrently in PostgreSQL).
_SCHEMA = f"""
BEGIN;
SELECT pg_advisory_xact_lock(7346129001);
CREATE TABLE IF NOT EXISTS runcomfy_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runcomfy_runners (
    batch_key   TEXT NOT NULL,
    runner_id   TEXT NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    lease_until DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (batch_key, runner_id)
);
CREATE TABLE IF NOT EXISTS runcomfy_jobs (
    batch_key     TEXT NOT NULL,
    id            TEXT NOT NULL,
    line          INTEGER NOT NULL,
    model         TEXT NOT NULL,
    input         JSONB NOT NULL,
    entry_hash    TEXT NOT NULL,
    state         TEXT NOT NULL,
    request_id    TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    result        JSONB,
    files         JSONB,
    submitted_at  DOUBLE PRECISION,
    finished_at   DOUBLE PRECISION,
    downloaded_at DOUBLE PRECISION,
    updated_at    DOUBLE PRECISION NOT NULL,
    runner_id     TEXT,
    PRIMARY KEY (batch_key, id)
);
CREATE INDEX IF NOT EXISTS runcomfy_jobs_by_state ON runcomfy_jobs (batch_key, state, line);
{_ADD_TIME_COLUMNS}
CREATE OR REPLACE FUNCTION runcomfy_take_slot(
    p_batch TEXT, p_id TEXT, p_runner TEXT, p_cap INTEGER, p_fields JSONB, p_expect TEXT[]
) RETURNS TEXT LANGUAGE plpgsql AS $fn$
DECLARE
    busy INTEGER;
    done TEXT;
BEGIN
    -- One slot-taker of a batch at a time: the count and the write cannot interleave.
    PERFORM pg_advisory_xact_lock(hashtext('runcomfy-slots:' || p_batch));
    SELECT count(*) INTO busy FROM runcomfy_jobs
        WHERE batch_key = p_batch AND state IN ('submitting', 'submitted');
    IF busy >= p_cap THEN
        RETURN 'full';
    END IF;
    UPDATE runcomfy_jobs j SET {_SET.format(F="p_fields", R="p_runner")}
        WHERE j.batch_key = p_batch AND j.id = p_id AND j.state = ANY(p_expect)
          AND {_MINE_OR_FREE.format(R="p_runner")}
        RETURNING j.id INTO done;
    IF done IS NULL THEN
        RETURN 'refused';
    END IF;
    RETURN 'ok';
END
$fn$;
INSERT INTO runcomfy_meta(key, value) VALUES ('schema', '{_SCHEMA_VERSION}')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value
    WHERE runcomfy_meta.value::integer < {_SCHEMA_VERSION};
COMMIT;
"""

_SELECT = ", ".join(f"j.{c}::text" if c in JSON_COLUMNS else f"j.{c}" for c in COLUMNS)

_UPDATE = f"""
WITH u AS (
    SELECT * FROM jsonb_to_recordset($2::jsonb) AS u(id TEXT, f JSONB, expect TEXT[])
), moved AS (
    UPDATE runcomfy_jobs j SET {_SET.format(F="u.f", R="$3")}
    FROM u
    WHERE j.batch_key = $1 AND j.id = u.id AND j.state = ANY(u.expect)
      AND {_MINE_OR_FREE.format(R="$3")}
    RETURNING j.id
)
SELECT array_agg(id) FROM moved
"""
# The same, telling slot waiters that jobs left the in-flight states.
_UPDATE_NOTIFY = _UPDATE.replace(
    "SELECT array_agg(id) FROM moved",
    f"SELECT array_agg(id), pg_notify('{_CHANNEL}', $1) FROM moved",
)


@attrs.define
class _Pending:
    """One update waiting for its round trip."""

    job_id: str
    fields: dict[str, Any]
    expect: frozenset[JournalState]
    future: asyncio.Future[None] | None


def _encode(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in fields.items():
        value = encode_column(name, value)
        # JSON columns travel as JSON inside the jsonb object, not as text.
        out[name] = json.loads(value) if name in JSON_COLUMNS and value is not None else value
    return out


def _frees_slot(p: _Pending) -> bool:
    target = p.fields.get("state")
    left = target is not None and JournalState(target).value not in _IN_FLIGHT
    return left and any(s.value in _IN_FLIGHT for s in p.expect)


class PostgresEngine(GroupCommit):
    """The journal of one batch (``batch_key``) in PostgreSQL, shared by every runner naming it.

    :meth:`open` connects, creates the tables when missing (idempotent, safe
    for runners starting together) and registers this runner with a lease of
    ``lease_seconds``; :meth:`aclose` hands back unstarted claims and ends the
    lease. ``max_in_flight``: the fleet's in-flight cap (see the module
    docstring); None for none. ``calls`` counts database round trips.
    """

    shared = True
    """Other runners may write this journal at the same time."""

    def __init__(
        self,
        dsn: str,
        *,
        batch_key: str,
        runner_id: str | None = None,
        lease_seconds: float = 30.0,
        max_in_flight: int | None = None,
        pool_size: int = 4,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1 or None")
        self._dsn = dsn
        self.batch_key = batch_key
        self.runner_id = runner_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.lease_seconds = lease_seconds
        self.max_in_flight = max_in_flight
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._opened = False
        self._closed = False
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heart: asyncio.Task[None] | None = None
        self._slot_lock = asyncio.Lock()
        self._slot_freed = asyncio.Event()
        self._full = False  # a slot-taker found the cap full; no slot taken since
        # Jobs this runner tried to submit and that came back 'planned' (not
        # claimed again by it: as with SQLite, one attempt per run), and jobs
        # it re-attached (once).
        self._tried: set[str] = set()
        self._reattached: set[str] = set()
        self.calls = 0
        self.commits = 0
        self.cpu_seconds = 0.0  # no thread of its own: its work is the event loop's

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._opened else "unopened")
        return (
            f"<PostgresEngine batch={self.batch_key!r} runner={self.runner_id!r} "
            f"{state} calls={self.calls}>"
        )

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        batch_key: str,
        runner_id: str | None = None,
        lease_seconds: float = 30.0,
        max_in_flight: int | None = None,
    ) -> PostgresEngine:
        """Connect, create the tables when missing, register this runner; raises
        :class:`JournalError` when the database cannot be used."""
        engine = cls(
            dsn,
            batch_key=batch_key,
            runner_id=runner_id,
            lease_seconds=lease_seconds,
            max_in_flight=max_in_flight,
        )
        try:
            await engine._connect()
        except BaseException:
            await engine._shutdown()
            raise
        return engine

    async def _connect(self) -> None:
        if self._opened:
            raise ClientStateError("a PostgresEngine opens once; create a new one")
        self._opened = True
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, reset=_no_reset
            )
            await self._execute(_SCHEMA)
            version = await self._fetchval("SELECT value FROM runcomfy_meta WHERE key='schema'")
        except (OSError, asyncpg.PostgresError) as exc:
            raise JournalError(f"cannot open the PostgreSQL journal: {exc}") from None
        if int(version) > _SCHEMA_VERSION:
            raise JournalError(
                f"the PostgreSQL journal was written by a newer runcomfy-async (schema "
                f"{version}); upgrade to run this batch"
            )
        await self._execute(
            "INSERT INTO runcomfy_runners(batch_key, runner_id, started_at, lease_until) "
            f"VALUES ($1, $2, {_NOW}, {_NOW} + $3) "
            f"ON CONFLICT (batch_key, runner_id) DO UPDATE SET lease_until = {_NOW} + $3",
            self.batch_key,
            self.runner_id,
            self.lease_seconds,
        )
        if self.max_in_flight is not None:
            self._listener = await asyncpg.connect(self._dsn)
            await self._listener.add_listener(_CHANNEL, self._on_notify)
        self._heart = asyncio.get_running_loop().create_task(
            self._heartbeats(), name="runcomfy-async journal lease"
        )

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        if payload == self.batch_key:
            self._slot_freed.set()

    async def aclose(self) -> None:
        """Write what is pending, hand back unstarted claims, end this runner's lease.

        Idempotent. Jobs this runner left ``submitted`` or ``finished`` can be
        re-attached by others at once; its ``submitting`` rows become
        ``unknown`` for them.
        """
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._start_flush()
            if self._flusher is not None:
                await asyncio.shield(self._flusher)
            try:
                await self._execute(
                    "UPDATE runcomfy_jobs SET runner_id = NULL "
                    "WHERE batch_key = $1 AND runner_id = $2 AND state = 'planned'",
                    self.batch_key,
                    self.runner_id,
                )
                await self._execute(
                    "UPDATE runcomfy_runners SET lease_until = 0 "
                    "WHERE batch_key = $1 AND runner_id = $2",
                    self.batch_key,
                    self.runner_id,
                )
            except (OSError, asyncpg.PostgresError) as exc:
                logger.warning("fleet journal: could not end this runner's lease: %s", exc)
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closed = True
        heart, self._heart = self._heart, None
        if heart is not None:
            heart.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heart
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _open_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise JournalError("the journal is closed" if self._opened else "open it first")
        return self._pool

    # One round trip each; every database call goes through these (``calls``).

    async def _execute(self, sql: str, *args: Any) -> str:
        pool = self._open_pool()
        self.calls += 1
        result: str = await pool.execute(sql, *args)
        self.commits += 1
        return result

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._open_pool()
        self.calls += 1
        records: list[asyncpg.Record] = await pool.fetch(sql, *args)
        self.commits += 1
        return records

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        pool = self._open_pool()
        self.calls += 1
        value = await pool.fetchval(sql, *args)
        self.commits += 1
        return value

    # -- the lease -------------------------------------------------------------------

    async def heartbeat(self) -> bool:
        """Extend this runner's lease now; False when the journal no longer knows this runner."""
        found = await self._fetchval(
            f"UPDATE runcomfy_runners SET lease_until = {_NOW} + $3 "
            "WHERE batch_key = $1 AND runner_id = $2 RETURNING runner_id",
            self.batch_key,
            self.runner_id,
            self.lease_seconds,
        )
        return found is not None

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.heartbeat()
            except (OSError, asyncpg.PostgresError, JournalError) as exc:
                # The database away for a moment: the lease outlives a missed beat.
                logger.warning("fleet journal: heartbeat failed: %s", exc)

    async def live_runners(self) -> list[str]:
        """Runners of this batch whose lease has not run out."""
        records = await self._fetch(
            "SELECT runner_id FROM runcomfy_runners "
            f"WHERE batch_key = $1 AND lease_until > {_NOW} ORDER BY runner_id",
            self.batch_key,
        )
        return [r["runner_id"] for r in records]

    # -- reading ---------------------------------------------------------------------

    async def rows(self) -> dict[str, JournalRow]:
        """Every job of the batch, by id, in manifest line order (this runner's writes
        made before the call included)."""
        await self._drain()
        records = await self._fetch(
            f"SELECT {_SELECT} FROM runcomfy_jobs j WHERE j.batch_key = $1 ORDER BY j.line, j.id",
            self.batch_key,
        )
        return {row.id: row for row in (decode_row(tuple(r.values())) for r in records)}

    async def holders(self) -> dict[str, str | None]:
        """Which runner holds (or last held) each job: where its files are when each
        runner writes to its own directory."""
        records = await self._fetch(
            "SELECT id, runner_id FROM runcomfy_jobs WHERE batch_key = $1", self.batch_key
        )
        return {r["id"]: r["runner_id"] for r in records}

    # -- planning and claiming -------------------------------------------------------

    async def plan(self, rows: Sequence[JournalRow]) -> None:
        """Insert ``rows`` as planned where new; a known job keeps its state, takes the line.

        Runners loading the same manifest together insert each job once.
        """
        if not rows:
            return
        await self._execute(
            "INSERT INTO runcomfy_jobs(batch_key, id, line, model, input, entry_hash, "
            "state, updated_at) "
            f"SELECT $1, i, l, m, p::jsonb, h, 'planned', {_NOW} "
            "FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[]) "
            "AS t(i, l, m, p, h) "
            "ON CONFLICT (batch_key, id) DO UPDATE SET line = excluded.line",
            self.batch_key,
            [r.id for r in rows],
            [r.line for r in rows],
            [r.model for r in rows],
            [encode_column("input", r.input) for r in rows],
            [r.entry_hash for r in rows],
        )

    async def claim(self, limit: int) -> list[str]:
        """Up to ``limit`` planned jobs for this runner, in line order; one round trip a try.

        Rows being claimed concurrently are skipped (``SKIP LOCKED``); planned
        jobs of a dead runner are free again. While no job is free but other
        live runners hold planned ones, it waits (they may die and leave
        them); it returns ``[]`` once no planned job is left for this runner.
        So start (or hand back) what you claimed before claiming again, as
        the batch runner's submit workers do: runners that all sat on their
        claims while claiming more would wait for each other. Raises
        :class:`JournalError` when this runner's own lease ran out.
        """
        poll = min(1.0, self.lease_seconds / 3)
        while True:
            record = (
                await self._fetch(
                    f"""
                    WITH picked AS (
                        SELECT j.batch_key, j.id FROM runcomfy_jobs j
                        WHERE j.batch_key = $1 AND j.state = 'planned'
                          AND (j.runner_id IS NULL OR {_DEAD_HOLDER})
                          AND NOT (j.id = ANY($4::text[]))
                          AND EXISTS (
                            SELECT 1 FROM runcomfy_runners me
                            WHERE me.batch_key = $1 AND me.runner_id = $2
                              AND me.lease_until > {_NOW})
                        ORDER BY j.line, j.id
                        LIMIT $3
                        FOR UPDATE OF j SKIP LOCKED
                    ), taken AS (
                        UPDATE runcomfy_jobs j SET runner_id = $2, updated_at = {_NOW}
                        FROM picked WHERE j.batch_key = picked.batch_key AND j.id = picked.id
                        RETURNING j.id, j.line
                    )
                    SELECT
                        (SELECT array_agg(id ORDER BY line, id) FROM taken) AS ids,
                        EXISTS (
                            SELECT 1 FROM runcomfy_jobs j
                            WHERE j.batch_key = $1 AND j.state = 'planned'
                              AND j.runner_id IS NOT NULL AND j.runner_id <> $2
                              AND NOT {_DEAD_HOLDER}) AS held,
                        EXISTS (
                            SELECT 1 FROM runcomfy_runners me
                            WHERE me.batch_key = $1 AND me.runner_id = $2
                              AND me.lease_until > {_NOW}) AS alive
                    """,
                    self.batch_key,
                    self.runner_id,
                    limit,
                    sorted(self._tried),
                )
            )[0]
            if record["ids"]:
                return list(record["ids"])
            if not record["alive"]:
                raise JournalError(
                    f"runner {self.runner_id!r} lost its lease (it stalled longer than "
                    f"{self.lease_seconds} s); its jobs may be with other runners now"
                )
            if not record["held"]:
                return []
            await asyncio.sleep(poll)

    async def reattach(self, limit: int) -> list[JournalRow]:
        """Take over up to ``limit`` accepted jobs (``submitted`` / ``finished``) of dead
        runners; first turn their ``submitting`` rows ``unknown``. One round trip.

        Each job taken has a request id: track it (and download), never submit
        it again. A job is re-attached at most once by one engine.
        """
        await self._drain()
        records = await self._fetch(
            f"""
            WITH settled AS (
                UPDATE runcomfy_jobs j SET state = 'unknown', updated_at = {_NOW},
                    error = 'runner ' || j.runner_id || ' stopped while submitting: the '
                            || 'request may have been sent'
                WHERE j.batch_key = $1 AND j.state = 'submitting' AND {_DEAD_HOLDER}
                RETURNING j.id
            ), picked AS (
                SELECT j.batch_key, j.id FROM runcomfy_jobs j
                WHERE j.batch_key = $1 AND j.state IN ('submitted', 'finished')
                  AND j.request_id IS NOT NULL
                  AND (j.runner_id IS NULL OR {_DEAD_HOLDER})
                  AND NOT (j.id = ANY($4::text[]))
                ORDER BY j.line, j.id
                LIMIT $3
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE runcomfy_jobs j SET runner_id = $2, updated_at = {_NOW}
            FROM picked WHERE j.batch_key = picked.batch_key AND j.id = picked.id
            RETURNING {_SELECT}
            """,
            self.batch_key,
            self.runner_id,
            limit,
            sorted(self._reattached),
        )
        rows = sorted(
            (decode_row(tuple(r.values())) for r in records), key=lambda r: (r.line, r.id)
        )
        self._reattached.update(r.id for r in rows)
        return rows

    async def open_elsewhere(self) -> int:
        """Jobs not yet settled (planned, submitting, submitted, finished) that another
        runner holds, or that a dead runner left for this one to re-attach."""
        await self._drain()
        value = await self._fetchval(
            f"""
            SELECT count(*) FROM runcomfy_jobs j
            WHERE j.batch_key = $1
              AND j.state IN ('planned', 'submitting', 'submitted', 'finished')
              AND j.runner_id IS NOT NULL AND j.runner_id <> $2
              AND (NOT {_DEAD_HOLDER}
                   OR (j.state IN ('submitted', 'finished') AND NOT (j.id = ANY($3::text[])))
                   OR j.state = 'submitting')
            """,
            self.batch_key,
            self.runner_id,
            sorted(self._reattached),
        )
        return int(value)

    # -- writing ---------------------------------------------------------------------

    async def update(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        *,
        expect: frozenset[JournalState],
        durable: bool = True,
    ) -> None:
        """Set ``fields`` of one job in one of ``expect``; committed on return.

        A move to ``submitting`` under ``max_in_flight`` first waits for a
        slot of the fleet. Raises :class:`IllegalTransitionError` when the job
        is in another state, :class:`JobHeldElsewhereError` when another live
        runner holds it. (``durable`` is the server's: PostgreSQL commits are
        durable as its ``synchronous_commit`` says.)
        """
        pending = _make_pending(job_id, fields, expect)
        if self.max_in_flight is not None and pending.fields.get("state") == _S.SUBMITTING:
            await self._take_slot(pending)
            return
        loop = asyncio.get_running_loop()
        pending.future = loop.create_future()
        self._enqueue(pending)
        self._start_flush()
        # The write goes on even if our caller is cancelled.
        await asyncio.shield(pending.future)

    def defer(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        *,
        expect: frozenset[JournalState],
        soon: bool = False,
    ) -> None:
        """As :meth:`update` without waiting: sent with the next round trip, within 50 ms
        (10 ms with ``soon``). A refused deferred write is logged."""
        pending = _make_pending(job_id, fields, expect)
        self._enqueue(pending)
        # A job leaving the in-flight states frees a fleet slot: others wait for it.
        soon = soon or (self.max_in_flight is not None and _frees_slot(pending))
        self._flush_within(_SOON_SECONDS if soon else _DEFER_SECONDS)

    async def move_all(self, source: JournalState, target: JournalState, error: str) -> list[str]:
        """Move every job in ``source`` that no live runner holds to ``target`` with ``error``.

        A fleet's runners come and go: only the rows of runners that stopped
        are a run's leftovers (``submitting`` rows of live runners are theirs).
        """
        records = await self._fetch(
            f"""
            UPDATE runcomfy_jobs j SET state = $3, error = $4, updated_at = {_NOW}
            WHERE j.batch_key = $1 AND j.state = $2
              AND (j.runner_id IS NULL OR {_DEAD_HOLDER})
            RETURNING j.id, j.line
            """,
            self.batch_key,
            source.value,
            target.value,
            error,
        )
        return [r["id"] for r in sorted(records, key=lambda r: (r["line"], r["id"]))]

    async def wait_for_room(self) -> None:
        """Return once the fleet's cap seems to have room: at once unless a slot-taker of
        this runner found it full and no slot has been heard freed since. Cancellable."""
        while self._full and not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), _SLOT_POLL)
            if self._slot_freed.is_set():
                return
            # No word for a while (slots also free without a notification, e.g.
            # when a dead runner's submits turn unknown): look.
            busy = await self._fetchval(
                "SELECT count(*) FROM runcomfy_jobs WHERE batch_key = $1 "
                "AND state IN ('submitting', 'submitted')",
                self.batch_key,
            )
            assert self.max_in_flight is not None
            if int(busy) < self.max_in_flight:
                return

    async def _take_slot(self, pending: _Pending) -> None:
        assert self.max_in_flight is not None
        args = (
            self.batch_key,
            pending.job_id,
            self.runner_id,
            self.max_in_flight,
            json.dumps(_encode(pending.fields)),
            sorted(s.value for s in pending.expect),
        )
        # One waiter per runner asks the database at a time; the others queue here.
        async with self._slot_lock:
            while True:
                self._slot_freed.clear()
                outcome = await self._fetchval(
                    "SELECT runcomfy_take_slot($1, $2, $3, $4, $5::jsonb, $6::text[])", *args
                )
                if outcome == "ok":
                    self._full = False
                    return
                if outcome == "refused":
                    raise (await self._why([pending]))[pending.job_id]
                self._full = True
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), _SLOT_POLL)

    # -- grouping writes into round trips -----------------------------------------------

    def _enqueue(self, pending: _Pending) -> None:
        if self._closed:
            raise JournalError("the journal is closed")
        if pending.fields.get("state") == _S.PLANNED and _S.SUBMITTING in pending.expect:
            self._tried.add(pending.job_id)  # a submit that did not go: not again this run
        self._pending.append(pending)

    async def _drain(self) -> None:
        """Send the writes made so far (a read after them sees them)."""
        self._start_flush()
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.shield(flusher)

    async def _flush(self) -> None:
        while self._pending:
            await asyncio.sleep(0)  # let this turn's calls join
            batch: list[_Pending] = []
            later: list[_Pending] = []
            seen: set[str] = set()
            for p in self._pending:
                # One row once per statement: a job's later writes go next time, in order.
                (later if p.job_id in seen else batch).append(p)
                seen.add(p.job_id)
            self._pending = later
            try:
                await self._send(batch)
            except BaseException as exc:  # the database itself failed
                error = (
                    JournalError(f"journal write failed: {exc}")
                    if isinstance(exc, (OSError, asyncpg.PostgresError))
                    else exc
                )
                for p in batch:
                    _resolve(p, error)
                if not isinstance(exc, Exception):
                    raise

    async def _send(self, batch: list[_Pending]) -> None:
        items = [
            {
                "id": p.job_id,
                "f": _encode(p.fields),
                "expect": sorted(s.value for s in p.expect),
            }
            for p in batch
        ]
        sql = _UPDATE_NOTIFY if any(_frees_slot(p) for p in batch) else _UPDATE
        records = await self._fetch(sql, self.batch_key, json.dumps(items), self.runner_id)
        moved = set(records[0][0] or ())
        refused = [p for p in batch if p.job_id not in moved]
        for p in batch:
            if p.job_id in moved:
                _resolve(p, None)
        if refused:
            errors = await self._why(refused)
            for p in refused:
                _resolve(p, errors[p.job_id])

    async def _why(self, refused: list[_Pending]) -> dict[str, Exception]:
        """Why each write was refused (one more round trip, on failures only)."""
        records = await self._fetch(
            f"""
            SELECT j.id, j.state, j.runner_id, {_DEAD_HOLDER} AS dead
            FROM runcomfy_jobs j WHERE j.batch_key = $1 AND j.id = ANY($2::text[])
            """,
            self.batch_key,
            [p.job_id for p in refused],
        )
        found = {r["id"]: r for r in records}
        errors: dict[str, Exception] = {}
        for p in refused:
            r = found.get(p.job_id)
            target = p.fields.get("state")
            if r is None:
                errors[p.job_id] = JournalError(f"job {p.job_id!r} is not in the journal")
            elif r["runner_id"] not in (None, self.runner_id) and not r["dead"]:
                errors[p.job_id] = JobHeldElsewhereError(p.job_id, r["runner_id"], self.runner_id)
            else:
                errors[p.job_id] = IllegalTransitionError(
                    p.job_id, r["state"], JournalState(target or r["state"]).value
                )
        return errors


def _make_pending(
    job_id: str, fields: Mapping[str, Any], expect: frozenset[JournalState]
) -> _Pending:
    unknown = set(fields) - UPDATABLE
    if unknown:
        raise ValueError(f"not journal columns: {sorted(unknown)}")
    return _Pending(job_id, dict(fields), expect, None)


def _resolve(p: _Pending, error: BaseException | None) -> None:
    fut = p.future
    if fut is None:
        if error is not None:
            logger.warning("a deferred journal write failed: %s", error)
        return
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


async def _no_reset(conn: asyncpg.Connection) -> None:
    # The pool's default reset costs a round trip per release; we keep no
    # session state (LISTEN lives on its own connection), so nothing to reset.
    return None
