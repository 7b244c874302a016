"""PostgresJournal: one batch's journal in PostgreSQL, drained by any number of runners."""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from .._errors import ClientStateError, RunComfyError
from ._states import FleetRow, FleetState, sources

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runcomfy_async.fleet needs asyncpg: pip install 'runcomfy-async[postgres]'"
    ) from exc

__all__ = [
    "FleetError",
    "IllegalTransition",
    "NotOwner",
    "PostgresJournal",
]

logger = logging.getLogger("runcomfy_async")

_SCHEMA_VERSION = 1
_NOW = "extract(epoch from clock_timestamp())"
# One script, one round trip; the advisory lock keeps runners that start
# together from racing on CREATE (which is not safe concurrently in PostgreSQL).
_SCHEMA = f"""
BEGIN;
SELECT pg_advisory_xact_lock(7346129001);
CREATE TABLE IF NOT EXISTS runcomfy_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO runcomfy_meta(key, value) VALUES ('schema', '{_SCHEMA_VERSION}')
    ON CONFLICT (key) DO NOTHING;
CREATE TABLE IF NOT EXISTS runcomfy_batches (
    batch_key   TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    jobs        INTEGER NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL
);
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
COMMIT;
"""

_COLUMNS = (
    "id",
    "line",
    "model",
    "input",
    "entry_hash",
    "state",
    "request_id",
    "attempts",
    "error",
    "result",
    "files",
    "submitted_at",
    "finished_at",
    "downloaded_at",
    "updated_at",
    "runner_id",
)
_JSON = frozenset({"input", "result", "files"})
#: Columns a transition may set besides the state (the rest belong to the journal).
_SETTABLE = frozenset(
    {
        "request_id",
        "attempts",
        "error",
        "result",
        "files",
        "submitted_at",
        "finished_at",
        "downloaded_at",
    }
)
_SELECT = ", ".join(f"j.{c}::text" if c in _JSON else f"j.{c}" for c in _COLUMNS)
# A runner is alive while its lease has not run out; a job held by no live
# runner is free for others (planned jobs to claim, accepted ones to re-attach).
_DEAD_HOLDER = f"""NOT EXISTS (
    SELECT 1 FROM runcomfy_runners r
    WHERE r.batch_key = j.batch_key AND r.runner_id = j.runner_id AND r.lease_until > {_NOW})"""
_ME_ALIVE = f"""EXISTS (
    SELECT 1 FROM runcomfy_runners me
    WHERE me.batch_key = $1 AND me.runner_id = $2 AND me.lease_until > {_NOW})"""


class FleetError(RunComfyError):
    """The fleet journal cannot do what was asked (closed, another manifest, a lost lease)."""


class IllegalTransition(FleetError, ValueError):
    """A state change the journal's diagram does not allow; nothing was written."""


class NotOwner(FleetError):
    """The job is held by another runner (this runner's lease ran out and it was taken over)."""


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


def _row(record: asyncpg.Record) -> FleetRow:
    data = dict(record.items())
    for name in _JSON:
        raw = data[name]
        data[name] = json.loads(raw) if raw is not None else None
    data["state"] = FleetState(data["state"])
    data["files"] = tuple(data["files"] or ())
    return FleetRow(**data)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


async def _no_reset(conn: asyncpg.Connection) -> None:
    # The pool's default reset costs a round trip per release; we keep no
    # session state (no LISTEN, no session locks, no SET), so there is nothing to reset.
    return None


class PostgresJournal:
    """The journal of one batch (``batch_key``) in PostgreSQL, shared by every runner naming it.

    Use it as ``async with PostgresJournal(dsn, batch_key=...) as journal``.
    Opening creates the tables when missing (idempotent, safe for runners
    starting together) and registers this runner with a lease of
    ``lease_seconds``, renewed in the background every third of it. A runner
    whose lease ran out (it died, or stalled) is dead to the others: its
    planned jobs can be claimed, its accepted jobs re-attached by request id,
    and its in-doubt submits become ``unknown``.

    Every state change checks the diagram in :mod:`._states` and that this
    runner holds the job, in the same statement that writes it.
    ``round_trips`` counts the statements sent to the database.
    """

    def __init__(
        self,
        dsn: str,
        *,
        batch_key: str,
        runner_id: str | None = None,
        lease_seconds: float = 30.0,
        pool_size: int = 4,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._dsn = dsn
        self.batch_key = batch_key
        self.runner_id = runner_id or (
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        )
        self.lease_seconds = lease_seconds
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._state = _State.UNOPENED
        self._group: anyio.abc.TaskGroup | None = None
        self.round_trips = 0

    def __repr__(self) -> str:
        return (
            f"<PostgresJournal batch={self.batch_key!r} runner={self.runner_id!r} "
            f"{self._state.value} round_trips={self.round_trips}>"
        )

    # -- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> PostgresJournal:
        if self._state is not _State.UNOPENED:
            raise ClientStateError("a PostgresJournal opens once; create a new one")
        pool = await asyncpg.create_pool(
            self._dsn, min_size=1, max_size=self._pool_size, reset=_no_reset
        )
        try:
            self._pool = pool
            self._state = _State.OPEN
            await self._execute(_SCHEMA)
            version = await self._fetchval("SELECT value FROM runcomfy_meta WHERE key='schema'")
            if int(version) > _SCHEMA_VERSION:
                raise FleetError(
                    f"the fleet journal was written by a newer runcomfy-async (schema {version}); "
                    "upgrade to run this batch"
                )
            await self._execute(
                "INSERT INTO runcomfy_runners(batch_key, runner_id, started_at, lease_until) "
                f"VALUES ($1, $2, {_NOW}, {_NOW} + $3) "
                f"ON CONFLICT (batch_key, runner_id) DO UPDATE SET lease_until = {_NOW} + $3",
                self.batch_key,
                self.runner_id,
                self.lease_seconds,
            )
        except BaseException:
            self._state = _State.CLOSED
            self._pool = None
            await pool.close()
            raise
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._heartbeats)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            group, self._group = self._group, None
            if group is not None:
                await group.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Stop the heartbeat, hand back unstarted claims, end this runner's lease. Idempotent.

        Jobs this runner left ``submitted`` or ``finished`` can be re-attached
        by others at once; ``submitting`` rows become ``unknown`` for them.
        """
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED
            return
        if self._group is not None:
            self._group.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
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
            finally:
                self._state = _State.CLOSED
                pool, self._pool = self._pool, None
                if pool is not None:
                    await pool.close()

    def _open_pool(self) -> asyncpg.Pool:
        if self._state is _State.UNOPENED:
            raise ClientStateError("open it first: async with PostgresJournal(...) as journal")
        if self._pool is None:
            raise ClientStateError("the fleet journal is closed")
        return self._pool

    # One statement each; every database call goes through these (round_trips).

    async def _execute(self, sql: str, *args: Any) -> str:
        pool = self._open_pool()
        self.round_trips += 1
        return await pool.execute(sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = self._open_pool()
        self.round_trips += 1
        return await pool.fetch(sql, *args)

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        pool = self._open_pool()
        self.round_trips += 1
        return await pool.fetchval(sql, *args)

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
            await anyio.sleep(self.lease_seconds / 3)
            try:
                await self.heartbeat()
            except (OSError, asyncpg.PostgresError) as exc:
                # The database away for a moment: the lease outlives a missed beat.
                logger.warning("fleet journal: heartbeat failed: %s", exc)

    # -- the manifest ----------------------------------------------------------------

    async def load_manifest(
        self, entries: Iterable[tuple[str, int, str, Mapping[str, Any], str]]
    ) -> bool:
        """Load the batch's jobs ``(id, line, model, input, entry_hash)`` as planned, once.

        True when this call loaded them; False when the batch was already
        loaded (by this or another runner) from the same manifest. Raises
        :class:`FleetError` when it was loaded from a different one.
        Runners loading together: one loads, the others wait for it and get False.
        """
        items = list(entries)
        digest = hashlib.sha256()
        for job_id, _line, _model, _input, entry_hash in sorted(items, key=lambda e: e[0]):
            digest.update(f"{job_id}\0{entry_hash}\n".encode())
        pool = self._open_pool()
        async with pool.acquire() as conn, conn.transaction():
            self.round_trips += 2  # BEGIN and COMMIT
            self.round_trips += 1
            won = await conn.fetchval(
                "INSERT INTO runcomfy_batches(batch_key, digest, jobs, created_at) "
                f"VALUES ($1, $2, $3, {_NOW}) ON CONFLICT (batch_key) DO NOTHING "
                "RETURNING batch_key",
                self.batch_key,
                digest.hexdigest(),
                len(items),
            )
            if won is None:
                self.round_trips += 1
                loaded = await conn.fetchval(
                    "SELECT digest FROM runcomfy_batches WHERE batch_key = $1", self.batch_key
                )
                if loaded != digest.hexdigest():
                    raise FleetError(
                        f"batch {self.batch_key!r} was loaded from another manifest; "
                        "give this one a new batch key"
                    )
                return False
            self.round_trips += 1
            await conn.execute(
                "INSERT INTO runcomfy_jobs(batch_key, id, line, model, input, entry_hash, "
                "state, updated_at) "
                f"SELECT $1, i, l, m, p::jsonb, h, 'planned', {_NOW} "
                "FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::text[]) "
                "AS t(i, l, m, p, h)",
                self.batch_key,
                [e[0] for e in items],
                [e[1] for e in items],
                [e[2] for e in items],
                [json.dumps(dict(e[3]), separators=(",", ":")) for e in items],
                [e[4] for e in items],
            )
            return True

    # -- claiming --------------------------------------------------------------------

    async def claim(self, n: int) -> list[FleetRow]:
        """Take up to ``n`` planned jobs for this runner, in manifest order; one round trip.

        Jobs held by another live runner are never handed out: rows being
        claimed concurrently are skipped (``FOR UPDATE SKIP LOCKED``), and
        planned jobs of a dead runner are free again. Raises FleetError when
        this runner's own lease ran out.
        """
        records = await self._fetch(
            f"""
            WITH picked AS (
                SELECT j.batch_key, j.id FROM runcomfy_jobs j
                WHERE j.batch_key = $1 AND j.state = 'planned'
                  AND (j.runner_id IS NULL OR {_DEAD_HOLDER})
                  AND {_ME_ALIVE}
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
            n,
        )
        if not records:
            await self._check_alive()
        return sorted(map(_row, records), key=lambda r: (r.line, r.id))

    async def reattach(self, n: int) -> list[FleetRow]:
        """Take over up to ``n`` accepted jobs of dead runners (``submitted`` or ``finished``).

        Each has a request id: track it (and download), never submit it again.
        """
        records = await self._fetch(
            f"""
            WITH picked AS (
                SELECT j.batch_key, j.id FROM runcomfy_jobs j
                WHERE j.batch_key = $1 AND j.state IN ('submitted', 'finished')
                  AND j.request_id IS NOT NULL
                  AND (j.runner_id IS NULL OR {_DEAD_HOLDER})
                  AND {_ME_ALIVE}
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
            n,
        )
        return sorted(map(_row, records), key=lambda r: (r.line, r.id))

    async def settle_dead_submits(self) -> list[str]:
        """Mark ``submitting`` rows of dead runners ``unknown`` (as a rerun does in SQLite).

        Their POST may have left: they are never resubmitted unless someone
        requeues them on purpose. The row stays with its runner, so a runner
        that was only stalled can still record the request id it got
        (unknown -> submitted). Returns the ids, in manifest order.
        """
        records = await self._fetch(
            f"""
            UPDATE runcomfy_jobs j SET state = 'unknown', updated_at = {_NOW},
                error = 'runner ' || j.runner_id || ' stopped while submitting: the request '
                        || 'may have been sent'
            WHERE j.batch_key = $1 AND j.state = 'submitting' AND {_DEAD_HOLDER}
            RETURNING j.id, j.line
            """,
            self.batch_key,
        )
        return [r["id"] for r in sorted(records, key=lambda r: (r["line"], r["id"]))]

    async def requeue(self, states: Sequence[FleetState]) -> list[str]:
        """Put jobs in ``states`` (failed, unknown, cancelled) back to planned, unowned.

        For ``--retry-failed`` / ``--resubmit-unknown``: an explicit choice,
        since an unknown job may then be paid twice.
        """
        allowed = {FleetState.FAILED, FleetState.UNKNOWN, FleetState.CANCELLED}
        bad = set(states) - allowed
        if bad:
            raise IllegalTransition(
                f"cannot requeue {sorted(s.value for s in bad)}: only failed, unknown, cancelled"
            )
        records = await self._fetch(
            f"""
            UPDATE runcomfy_jobs j SET state = 'planned', runner_id = NULL, request_id = NULL,
                updated_at = {_NOW}
            WHERE j.batch_key = $1 AND j.state = ANY($2::text[])
              AND (j.runner_id IS NULL OR j.runner_id = $3 OR {_DEAD_HOLDER})
            RETURNING j.id, j.line
            """,
            self.batch_key,
            [s.value for s in states],
            self.runner_id,
        )
        return [r["id"] for r in sorted(records, key=lambda r: (r["line"], r["id"]))]

    # -- transitions -----------------------------------------------------------------

    async def transition(self, job_id: str, to: FleetState, **fields: Any) -> None:
        """Move a job this runner holds to ``to``, setting ``fields``; one round trip when legal.

        ``fields``: any of request_id, attempts, error, result, files,
        submitted_at, finished_at, downloaded_at. Raises
        :class:`IllegalTransition` for a move the diagram does not allow
        (from the job's current state), :class:`NotOwner` when another runner
        holds the job, FleetError when the job is not in the batch. Nothing is
        written then.
        """
        to = FleetState(to)
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"not settable journal columns: {sorted(unknown)}")
        names = sorted(fields)
        sets = "".join(
            f"{n} = ${i}::jsonb, " if n in _JSON else f"{n} = ${i}, "
            for i, n in enumerate(names, start=5)
        )
        values = [_dumps(fields[n]) if n in _JSON else fields[n] for n in names]
        done = await self._fetchval(
            f"UPDATE runcomfy_jobs SET {sets}state = $3, updated_at = {_NOW} "
            "WHERE batch_key = $1 AND id = $2 AND runner_id = $4 AND state = ANY($"
            f"{len(names) + 5}::text[]) RETURNING 1",
            self.batch_key,
            job_id,
            to.value,
            self.runner_id,
            *values,
            list(sources(to)),
        )
        if done is not None:
            return
        # Refused: say why (an extra round trip on the failure path only).
        records = await self._fetch(
            "SELECT state, runner_id FROM runcomfy_jobs WHERE batch_key = $1 AND id = $2",
            self.batch_key,
            job_id,
        )
        if not records:
            raise FleetError(f"job {job_id!r} is not in batch {self.batch_key!r}")
        state, holder = FleetState(records[0]["state"]), records[0]["runner_id"]
        if holder != self.runner_id:
            raise NotOwner(
                f"job {job_id!r} is held by runner {holder!r}, not {self.runner_id!r} "
                "(this runner's lease may have run out)"
            )
        raise IllegalTransition(f"job {job_id!r}: {state.value} -> {to.value} is not allowed")

    # -- reading ---------------------------------------------------------------------

    async def rows(self) -> dict[str, FleetRow]:
        """Every job of the batch, by id, in manifest line order (for the report)."""
        records = await self._fetch(
            f"SELECT {_SELECT} FROM runcomfy_jobs j WHERE j.batch_key = $1 ORDER BY j.line, j.id",
            self.batch_key,
        )
        return {row.id: row for row in map(_row, records)}

    async def counts(self) -> dict[FleetState, int]:
        """How many jobs are in each state (states with none are left out)."""
        records = await self._fetch(
            "SELECT state, count(*) AS n FROM runcomfy_jobs WHERE batch_key = $1 GROUP BY state",
            self.batch_key,
        )
        return {FleetState(r["state"]): int(r["n"]) for r in records}

    async def live_runners(self) -> list[str]:
        """Runners of this batch whose lease has not run out."""
        records = await self._fetch(
            "SELECT runner_id FROM runcomfy_runners "
            f"WHERE batch_key = $1 AND lease_until > {_NOW} ORDER BY runner_id",
            self.batch_key,
        )
        return [r["runner_id"] for r in records]

    async def _check_alive(self) -> None:
        alive = await self._fetchval(
            "SELECT 1 FROM runcomfy_runners "
            f"WHERE batch_key = $1 AND runner_id = $2 AND lease_until > {_NOW}",
            self.batch_key,
            self.runner_id,
        )
        if alive is None:
            raise FleetError(
                f"runner {self.runner_id!r} lost its lease (it stalled longer than "
                f"{self.lease_seconds} s); its jobs may be with other runners now"
            )
