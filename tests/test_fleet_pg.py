"""PostgresJournal against a real PostgreSQL cluster on loopback (see tests/servers.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import pytest

from runcomfy_async._errors import ClientStateError
from runcomfy_async.fleet import (
    FleetError,
    FleetState,
    IllegalTransition,
    NotOwner,
    PostgresJournal,
)
from tests.servers import postgres_dsn

__all__ = ["postgres_dsn"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parent.parent
S = FleetState


def _key() -> str:
    return f"batch-{uuid.uuid4().hex[:10]}"


def _manifest(n: int) -> list[tuple[str, int, str, dict[str, Any], str]]:
    return [
        (f"clip-{i:04d}", i + 1, "kling/3.0", {"prompt": f"shot {i}"}, f"h{i}") for i in range(n)
    ]


async def _expire(dsn: str, key: str, runner_id: str) -> None:
    """Make a runner's lease run out now, as if it had stalled for longer than its lease."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "UPDATE runcomfy_runners SET lease_until = 0 WHERE batch_key = $1 AND runner_id = $2",
            key,
            runner_id,
        )
    finally:
        await conn.close()


async def test_the_manifest_is_loaded_once_by_runners_starting_together(postgres_dsn: str) -> None:
    key = _key()
    manifest = _manifest(50)
    loaded: list[bool] = []

    async def runner() -> None:
        async with PostgresJournal(postgres_dsn, batch_key=key) as journal:
            loaded.append(await journal.load_manifest(manifest))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(runner)
    assert sorted(loaded) == [False, False, False, True]
    async with PostgresJournal(postgres_dsn, batch_key=key) as journal:
        rows = await journal.rows()
        assert list(rows) == [m[0] for m in manifest]
        assert {r.state for r in rows.values()} == {S.PLANNED}
        assert rows["clip-0003"].input == {"prompt": "shot 3"}
        assert await journal.load_manifest(manifest) is False


async def test_another_manifest_under_the_same_batch_key_is_refused(postgres_dsn: str) -> None:
    key = _key()
    async with PostgresJournal(postgres_dsn, batch_key=key) as journal:
        await journal.load_manifest(_manifest(5))
        with pytest.raises(FleetError, match="another manifest"):
            await journal.load_manifest(_manifest(6))


async def test_concurrent_claims_never_hand_one_job_to_two_runners(postgres_dsn: str) -> None:
    key = _key()
    manifest = _manifest(300)
    got: dict[str, list[str]] = {}

    async def runner(name: str) -> None:
        async with PostgresJournal(postgres_dsn, batch_key=key, runner_id=name) as journal:
            await journal.load_manifest(manifest)
            mine = got.setdefault(name, [])
            while batch := await journal.claim(7):
                mine.extend(r.id for r in batch)
                assert all(r.runner_id == name for r in batch)
                await anyio.lowlevel.checkpoint()
            # Claimed jobs must not be handed back on close: start them.
            for job_id in mine:
                await journal.transition(job_id, S.SUBMITTING, attempts=1)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(runner, f"runner-{i}")
    claimed = [job for jobs in got.values() for job in jobs]
    assert len(claimed) == 300
    assert set(claimed) == {m[0] for m in manifest}
    assert sum(1 for jobs in got.values() if jobs) >= 2, "one runner took everything"
    async with PostgresJournal(postgres_dsn, batch_key=key) as journal:
        rows = await journal.rows()
        for name, jobs in got.items():
            assert all(rows[j].runner_id == name for j in jobs)


async def test_legal_transitions_walk_a_job_to_downloaded(postgres_dsn: str) -> None:
    key = _key()
    async with PostgresJournal(postgres_dsn, batch_key=key) as journal:
        await journal.load_manifest(_manifest(1))
        [job] = await journal.claim(5)
        before = journal.round_trips
        await journal.transition(job.id, S.SUBMITTING, attempts=1)
        await journal.transition(job.id, S.SUBMITTED, request_id="req-1", submitted_at=1.0)
        await journal.transition(job.id, S.FINISHED, result={"videos": ["u"]}, finished_at=2.0)
        await journal.transition(job.id, S.DOWNLOADED, files=[{"path": "a.mp4"}])
        assert journal.round_trips - before == 4  # one statement per legal transition
        row = (await journal.rows())[job.id]
        assert row.state is S.DOWNLOADED
        assert row.request_id == "req-1"
        assert row.attempts == 1
        assert row.result == {"videos": ["u"]}
        assert row.files == ({"path": "a.mp4"},)


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], S.FINISHED),
        ([], S.DOWNLOADED),
        ([S.SUBMITTING], S.FINISHED),
        ([S.SUBMITTING, S.SUBMITTED], S.SUBMITTING),
        ([S.SUBMITTING, S.SUBMITTED, S.FINISHED, S.DOWNLOADED], S.SUBMITTING),
        ([S.SUBMITTING, S.UNKNOWN], S.SUBMITTING),
        ([S.SUBMITTING, S.FAILED], S.SUBMITTED),
    ],
)
async def test_illegal_transitions_are_refused_and_write_nothing(
    postgres_dsn: str, path: list[FleetState], illegal: FleetState
) -> None:
    async with PostgresJournal(postgres_dsn, batch_key=_key()) as journal:
        await journal.load_manifest(_manifest(1))
        [job] = await journal.claim(1)
        for state in path:
            await journal.transition(job.id, state)
        before = (await journal.rows())[job.id]
        with pytest.raises(IllegalTransition):
            await journal.transition(job.id, illegal, error="should not be written")
        assert (await journal.rows())[job.id] == before


async def test_a_job_held_by_another_runner_cannot_be_moved(postgres_dsn: str) -> None:
    key = _key()
    async with (
        PostgresJournal(postgres_dsn, batch_key=key, runner_id="a") as a,
        PostgresJournal(postgres_dsn, batch_key=key, runner_id="b") as b,
    ):
        await a.load_manifest(_manifest(2))
        [job] = await a.claim(1)
        with pytest.raises(NotOwner):
            await b.transition(job.id, S.SUBMITTING)
        with pytest.raises(FleetError, match="not in batch"):
            await b.transition("no-such-job", S.SUBMITTING)
        with pytest.raises(ValueError, match="not settable"):
            await a.transition(job.id, S.SUBMITTING, state="finished")


_DOOMED = textwrap.dedent(
    """
    import sys, anyio
    from runcomfy_async.fleet import FleetState as S, PostgresJournal

    async def main():
        manifest = [(f"clip-{i:04d}", i + 1, "m", {"i": i}, f"h{i}") for i in range(10)]
        async with PostgresJournal(sys.argv[1], batch_key=sys.argv[2], runner_id="doomed",
                                   lease_seconds=1.0) as j:
            await j.load_manifest(manifest)
            jobs = [r.id for r in await j.claim(6)]
            for job in jobs[:5]:
                await j.transition(job, S.SUBMITTING, attempts=1)
            for k in (2, 3, 4):
                await j.transition(jobs[k], S.SUBMITTED, request_id=f"req-{k}")
            await j.transition(jobs[4], S.FINISHED, result={"k": 4})
            print("ready", flush=True)
            await anyio.sleep(600)

    anyio.run(main)
    """
)


async def test_a_sigkilled_runner_leaves_its_jobs_to_others_after_its_lease(
    postgres_dsn: str,
) -> None:
    key = _key()
    proc = await anyio.open_process(
        [sys.executable, "-c", _DOOMED, postgres_dsn, key], stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        seen = b""
        with anyio.fail_after(60):
            while b"ready" not in seen:
                seen += await proc.stdout.receive()
        async with PostgresJournal(postgres_dsn, batch_key=key, runner_id="heir") as heir:
            # While the doomed runner lives, its jobs are its own.
            assert [r.id for r in await heir.claim(100)] == [f"clip-{i:04d}" for i in (6, 7, 8, 9)]
            assert await heir.reattach(100) == []
            assert await heir.settle_dead_submits() == []
            await anyio.sleep(1.2)  # past one lease: only its heartbeat keeps it alive
            assert "doomed" in await heir.live_runners()

            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            for _ in range(100):  # its lease runs out within a second
                if "doomed" not in await heir.live_runners():
                    break
                await anyio.sleep(0.1)
            assert "doomed" not in await heir.live_runners()

            assert await heir.settle_dead_submits() == ["clip-0000", "clip-0001"]
            taken = await heir.reattach(100)
            assert [(r.id, r.state, r.request_id) for r in taken] == [
                ("clip-0002", S.SUBMITTED, "req-2"),
                ("clip-0003", S.SUBMITTED, "req-3"),
                ("clip-0004", S.FINISHED, "req-4"),
            ]
            assert [r.id for r in await heir.claim(100)] == ["clip-0005"]
            rows = await heir.rows()
            assert rows["clip-0000"].state is S.UNKNOWN
            assert "may have been sent" in (rows["clip-0000"].error or "")
            # Re-attached jobs go on where they were; never back to submitting.
            await heir.transition("clip-0002", S.FINISHED)
            with pytest.raises(IllegalTransition):
                await heir.transition("clip-0003", S.SUBMITTING)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


async def test_a_stalled_runner_loses_its_jobs_but_keeps_a_late_request_id(
    postgres_dsn: str,
) -> None:
    key = _key()
    async with (
        PostgresJournal(postgres_dsn, batch_key=key, runner_id="slow") as slow,
        PostgresJournal(postgres_dsn, batch_key=key, runner_id="quick") as quick,
    ):
        await slow.load_manifest(_manifest(3))
        a, b, _ = await slow.claim(3)
        await slow.transition(a.id, S.SUBMITTING)
        await slow.transition(b.id, S.SUBMITTING)
        await slow.transition(b.id, S.SUBMITTED, request_id="req-b")
        await _expire(postgres_dsn, key, "slow")

        assert await quick.settle_dead_submits() == [a.id]
        assert [r.id for r in await quick.reattach(10)] == [b.id]
        # The stalled runner's POST did land after all: it records the id.
        await slow.transition(a.id, S.SUBMITTED, request_id="req-a")
        # But b is quick's now.
        with pytest.raises(NotOwner):
            await slow.transition(b.id, S.FINISHED)
        # Its lease ran out: it claims nothing more and is told so.
        with pytest.raises(FleetError, match="lost its lease"):
            await slow.claim(10)
        # A heartbeat brings it back as a live runner.
        assert await slow.heartbeat()
        assert [r.id for r in await slow.claim(10)] == []
        assert (await quick.rows())[a.id].request_id == "req-a"


async def test_requeue_puts_unknown_jobs_back_on_purpose(postgres_dsn: str) -> None:
    key = _key()
    async with PostgresJournal(postgres_dsn, batch_key=key) as journal:
        await journal.load_manifest(_manifest(2))
        a, b = await journal.claim(2)
        await journal.transition(a.id, S.SUBMITTING)
        await journal.transition(a.id, S.UNKNOWN, error="timeout")
        await journal.transition(b.id, S.SUBMITTING)
        assert await journal.requeue([S.UNKNOWN]) == [a.id]
        with pytest.raises(IllegalTransition):
            await journal.requeue([S.SUBMITTED])
        assert [r.id for r in await journal.claim(5)] == [a.id]
        assert await journal.counts() == {S.PLANNED: 1, S.SUBMITTING: 1}


async def test_closing_hands_back_unstarted_claims(postgres_dsn: str) -> None:
    key = _key()
    async with PostgresJournal(postgres_dsn, batch_key=key, runner_id="first") as first:
        await first.load_manifest(_manifest(4))
        claimed = await first.claim(4)
        await first.transition(claimed[0].id, S.SUBMITTING)
    async with PostgresJournal(postgres_dsn, batch_key=key, runner_id="second") as second:
        assert [r.id for r in await second.claim(10)] == [r.id for r in claimed[1:]]
        assert await second.settle_dead_submits() == [claimed[0].id]


async def test_a_closed_journal_refuses_use(postgres_dsn: str) -> None:
    journal = PostgresJournal(postgres_dsn, batch_key=_key())
    with pytest.raises(ClientStateError, match="open it first"):
        await journal.claim(1)
    async with journal:
        pass
    with pytest.raises(ClientStateError, match="closed"):
        await journal.claim(1)
    with pytest.raises(ClientStateError):
        await journal.__aenter__()
