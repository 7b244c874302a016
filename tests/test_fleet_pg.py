"""The PostgreSQL journal engine against a real PostgreSQL cluster on loopback (tests/servers.py).

The typed transitions are the batch Journal's (the same TRANSITIONS as SQLite);
these tests cover what a fleet adds: claims, leases, ownership, re-attaching,
the fleet's in-flight cap, and grouped writes.
"""

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

from runcomfy_async._errors import IllegalTransitionError, JobHeldElsewhereError, JournalError
from runcomfy_async.batch import Journal
from runcomfy_async.batch._rows import JournalState
from runcomfy_async.fleet import PostgresEngine
from tests.servers import postgres_dsn

__all__ = ["postgres_dsn"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parent.parent
S = JournalState


def _key() -> str:
    return f"batch-{uuid.uuid4().hex[:10]}"


def _manifest(n: int) -> list[tuple[str, int, str, dict[str, Any], str]]:
    return [
        (f"clip-{i:04d}", i + 1, "kling/3.0", {"prompt": f"shot {i}"}, f"h{i}") for i in range(n)
    ]


async def _open(dsn: str, key: str, runner: str | None = None, **kw: Any) -> Journal:
    return await Journal.open(dsn, batch_key=key, runner_id=runner, **kw)


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


async def _holders(dsn: str, key: str) -> dict[str, str | None]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, runner_id FROM runcomfy_jobs WHERE batch_key = $1", key)
    finally:
        await conn.close()
    return {r["id"]: r["runner_id"] for r in rows}


async def test_runners_loading_the_same_manifest_together_insert_each_job_once(
    postgres_dsn: str,
) -> None:
    key = _key()
    manifest = _manifest(50)

    async def runner() -> None:
        async with await _open(postgres_dsn, key) as journal:
            await journal.plan(manifest)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(runner)
    async with await _open(postgres_dsn, key) as journal:
        assert journal.shared
        rows = await journal.rows()
        assert list(rows) == [m[0] for m in manifest]
        assert {r.state for r in rows.values()} == {S.PLANNED}
        assert rows["clip-0003"].input == {"prompt": "shot 3"}
        # Loading again keeps the states; only line numbers follow the manifest.
        [job] = await journal.claim(1)
        await journal.mark_submitting(job, 1)
        await journal.plan([(m[0], m[1] + 100, *m[2:]) for m in manifest])
        rows = await journal.rows()
        assert rows[job].state is S.SUBMITTING
        assert rows[job].line == 101


async def test_concurrent_claims_never_hand_one_job_to_two_runners(postgres_dsn: str) -> None:
    key = _key()
    manifest = _manifest(300)
    got: dict[str, list[str]] = {}

    async def runner(name: str) -> None:
        async with await _open(postgres_dsn, key, name) as journal:
            await journal.plan(manifest)
            mine = got.setdefault(name, [])
            while batch := await journal.claim(7):
                mine.extend(batch)
                await anyio.lowlevel.checkpoint()
                # Start them before claiming more: a claim waits while other
                # live runners hold planned jobs (as the batch runner does).
                for job_id in batch:
                    await journal.mark_submitting(job_id, 1)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(runner, f"runner-{i}")
    claimed = [job for jobs in got.values() for job in jobs]
    assert len(claimed) == 300
    assert set(claimed) == {m[0] for m in manifest}
    assert sum(1 for jobs in got.values() if jobs) >= 2, "one runner took everything"
    holders = await _holders(postgres_dsn, key)
    for name, jobs in got.items():
        assert all(holders[j] == name for j in jobs)


async def test_typed_transitions_walk_a_job_to_downloaded_in_grouped_round_trips(
    postgres_dsn: str,
) -> None:
    async with await _open(postgres_dsn, _key()) as journal:
        await journal.plan(_manifest(20))
        jobs = await journal.claim(20)
        engine = journal.engine
        before = engine.calls
        for job in jobs:
            await journal.mark_submitting(job, 1)  # waited: one round trip each
        assert engine.calls - before == 20
        before = engine.calls
        for i, job in enumerate(jobs):
            journal.mark_submitted(job, f"req-{i}", 1.0)
        for job in jobs:
            journal.mark_finished(job, {"outputs": [["u", "mp4"]]}, 2.0)
        await journal.rows()  # deferred writes go within 50 ms; rows waits for nothing
        await anyio.sleep(0.2)
        # Forty deferred writes of twenty jobs: two grouped statements, not forty.
        assert engine.calls - before <= 4
        for job in jobs:
            journal.mark_downloaded(job, [{"name": f"{job}.mp4", "size": 3}], 3.0)
        await journal.aclose()
    async with await _open(postgres_dsn, journal.engine.batch_key) as reader:  # type: ignore[attr-defined]
        row = (await reader.rows())[jobs[4]]
        assert row.state is S.DOWNLOADED
        assert row.request_id == "req-4"
        assert row.attempts == 1
        assert row.result == {"outputs": [["u", "mp4"]]}
        assert row.files == ({"name": "clip-0004.mp4", "size": 3},)
        assert (row.submitted_at, row.finished_at, row.downloaded_at) == (1.0, 2.0, 3.0)


async def test_illegal_transitions_are_refused_by_the_statement_and_write_nothing(
    postgres_dsn: str,
) -> None:
    key = _key()
    async with await _open(postgres_dsn, key, "a") as a:
        await a.plan(_manifest(2))
        [job] = await a.claim(1)
        await a.mark_submitting(job, 1)
        a.mark_submitted(job, "req-1", 1.0)
        await a.aclose()
    # A fresh journal has no local state: the engine's statement is the check.
    async with await _open(postgres_dsn, key, "b") as b:
        before = (await b.rows())[job]
        b._states.clear()
        with pytest.raises(IllegalTransitionError, match="submitted -> submitting"):
            await b.mark_submitting(job, 2)
        with pytest.raises(IllegalTransitionError):
            await b.engine.update(job, {"state": S.DOWNLOADED}, expect=frozenset({S.FINISHED}))
        with pytest.raises(JournalError, match="not in the journal"):
            await b.engine.update("nope", {"state": S.FAILED}, expect=frozenset({S.PLANNED}))
        with pytest.raises(ValueError, match="not journal columns"):
            await b.engine.update(job, {"runner_id": "x"}, expect=frozenset({S.SUBMITTED}))
        assert (await b.rows())[job] == before


async def test_a_job_held_by_another_live_runner_cannot_be_moved(postgres_dsn: str) -> None:
    key = _key()
    async with await _open(postgres_dsn, key, "a") as a, await _open(postgres_dsn, key, "b") as b:
        await a.plan(_manifest(2))
        [job] = await a.claim(1)
        with pytest.raises(JobHeldElsewhereError, match="held by runner 'a'"):
            await b.mark_submitting(job, 1)
        # A deferred write refused is logged, not raised, and writes nothing.
        b.engine.defer(job, {"error": "not mine"}, expect=frozenset({S.PLANNED}))
        await anyio.sleep(0.2)
        assert (await a.rows())[job].error is None


_DOOMED = textwrap.dedent(
    """
    import sys, anyio
    from runcomfy_async.batch import Journal

    async def main():
        manifest = [(f"clip-{i:04d}", i + 1, "m", {"i": i}, f"h{i}") for i in range(10)]
        j = await Journal.open(sys.argv[1], batch_key=sys.argv[2], runner_id="doomed",
                               lease_seconds=1.0)
        await j.plan(manifest)
        jobs = await j.claim(6)
        for job in jobs[:5]:
            await j.mark_submitting(job, 1)
        for k in (2, 3, 4):
            j.mark_submitted(jobs[k], f"req-{k}", 1.0)
        j.mark_finished(jobs[4], {"k": 4}, 2.0)
        await anyio.sleep(0.3)
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
        async with await _open(postgres_dsn, key, "heir", lease_seconds=1.0) as heir:
            engine = heir.engine
            assert isinstance(engine, PostgresEngine)
            # While the doomed runner lives, its jobs are its own.
            assert await heir.reattach(100) == []
            assert await heir.expire_submitting() == []
            assert await heir.open_elsewhere() == 6  # 5 started, 1 claimed
            await anyio.sleep(1.2)  # past one lease: only its heartbeat keeps it alive
            assert "doomed" in await engine.live_runners()
            # A claim waits while a live runner holds planned jobs; here it gets the free ones.
            assert await heir.claim(100) == [f"clip-{i:04d}" for i in (6, 7, 8, 9)]

            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            with anyio.fail_after(10):
                # Its planned claim comes free when its lease runs out.
                assert await heir.claim(100) == ["clip-0005"]
            assert "doomed" not in await engine.live_runners()

            taken = await heir.reattach(100)
            assert [(r.id, r.state, r.request_id) for r in taken] == [
                ("clip-0002", S.SUBMITTED, "req-2"),
                ("clip-0003", S.SUBMITTED, "req-3"),
                ("clip-0004", S.FINISHED, "req-4"),
            ]
            assert await heir.reattach(100) == []  # once
            rows = await heir.rows()
            assert rows["clip-0000"].state is S.UNKNOWN
            assert "may have been sent" in (rows["clip-0000"].error or "")
            assert await heir.open_elsewhere() == 0
            # Re-attached jobs go on where they were; never back to submitting.
            heir.mark_finished("clip-0002", {"k": 2}, 3.0)
            with pytest.raises(IllegalTransitionError):
                await heir.mark_submitting("clip-0003", 2)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


async def test_a_stalled_runner_loses_its_jobs_but_keeps_a_late_request_id(
    postgres_dsn: str,
) -> None:
    key = _key()
    async with (
        await _open(postgres_dsn, key, "slow") as slow,
        await _open(postgres_dsn, key, "quick") as quick,
    ):
        await slow.plan(_manifest(3))
        a, b, _ = await slow.claim(3)
        await slow.mark_submitting(a, 1)
        await slow.mark_submitting(b, 1)
        slow.mark_submitted(b, "req-b", 1.0)
        await anyio.sleep(0.1)
        await _expire(postgres_dsn, key, "slow")

        assert [r.id for r in await quick.reattach(10)] == [b]
        assert (await quick.rows())[a].state is S.UNKNOWN
        # The stalled runner's POST did land after all: it records the id (unknown -> submitted).
        slow.mark_submitted(a, "req-a", 2.0)
        await anyio.sleep(0.1)
        row = (await quick.rows())[a]
        assert (row.state, row.request_id, row.error) == (S.SUBMITTED, "req-a", None)
        # But b is quick's now.
        with pytest.raises(JobHeldElsewhereError):
            await slow.mark_cancelled(b, "no")
        # Its lease ran out: it claims nothing more and is told so.
        with pytest.raises(JournalError, match="lost its lease"):
            await slow.claim(10)
        engine = slow.engine
        assert isinstance(engine, PostgresEngine)
        assert await engine.heartbeat()  # back among the living
        assert await slow.claim(10) == []


async def test_a_submit_that_did_not_go_is_released_and_not_claimed_again_by_its_runner(
    postgres_dsn: str,
) -> None:
    key = _key()
    async with await _open(postgres_dsn, key, "a") as a, await _open(postgres_dsn, key, "b") as b:
        await a.plan(_manifest(1))
        [job] = await a.claim(1)
        await a.mark_submitting(job, 1)
        await a.mark_submit_failed(job, S.PLANNED, "503: certainly not created")
        assert await a.claim(5) == []  # one attempt per run, as with SQLite
        assert await b.claim(5) == [job]  # another runner tries it


async def test_requeue_and_closing_hand_jobs_back(postgres_dsn: str) -> None:
    key = _key()
    async with await _open(postgres_dsn, key, "first") as first:
        await first.plan(_manifest(4))
        claimed = await first.claim(4)
        await first.mark_submitting(claimed[0], 1)
    async with await _open(postgres_dsn, key, "second") as second:
        assert await second.claim(10) == claimed[1:]
        assert await second.expire_submitting() == [claimed[0]]
        await second.requeue(claimed[0])
        assert await second.claim(10) == [claimed[0]]


async def test_the_fleet_in_flight_cap_holds_across_runners(postgres_dsn: str) -> None:
    key = _key()
    cap = 3
    peak = 0
    busy = 0

    async def runner(name: str) -> None:
        nonlocal peak, busy
        async with await _open(postgres_dsn, key, name, max_in_flight=cap) as journal:
            await journal.plan(_manifest(24))
            async with anyio.create_task_group() as tg:
                while ids := await journal.claim(4):
                    for job_id in ids:

                        async def one(job_id: str = job_id) -> None:
                            nonlocal peak, busy
                            await journal.mark_submitting(job_id, 1)  # waits for a slot
                            busy += 1
                            peak = max(peak, busy)
                            journal.mark_submitted(job_id, f"r-{job_id}", 1.0)
                            await anyio.sleep(0.05)
                            busy -= 1
                            journal.mark_finished(job_id, {}, 2.0)  # frees the slot

                        tg.start_soon(one)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(runner, f"r{i}")
    assert 1 < peak <= cap
    async with await _open(postgres_dsn, key) as journal:
        assert {r.state for r in (await journal.rows()).values()} == {S.FINISHED}


async def test_a_closed_or_unreachable_journal_says_so(postgres_dsn: str) -> None:
    journal = await _open(postgres_dsn, _key())
    await journal.aclose()
    await journal.aclose()  # idempotent
    with pytest.raises(JournalError, match="closed"):
        await journal.claim(1)
    with pytest.raises(JournalError, match="cannot open"):
        await Journal.open("postgresql://nobody@127.0.0.1:1/none", batch_key="k")
    with pytest.raises(ValueError, match="batch key"):
        await Journal.open(postgres_dsn)


def test_a_journal_option_must_be_a_postgresql_url() -> None:
    from runcomfy_async.batch import BatchOptions

    assert BatchOptions(journal="postgresql://u@h/db").journal == "postgresql://u@h/db"
    with pytest.raises(ValueError, match="postgresql://"):
        BatchOptions(journal="sqlite:///tmp/x")


async def test_waiting_for_room_in_a_full_fleet_can_be_stopped(postgres_dsn: str) -> None:
    async with await _open(postgres_dsn, _key(), "a", max_in_flight=1) as journal:
        await journal.plan(_manifest(3))
        first, second, _ = await journal.claim(3)
        await journal.wait_for_room()  # nothing seen full yet: at once
        await journal.mark_submitting(first, 1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.mark_submitting, second, 1)  # waits for the slot
            await anyio.sleep(0.3)
            assert (await journal.rows())[second].state is S.PLANNED
            # What a submit worker does before it marks: stoppable while full.
            with anyio.move_on_after(0.3) as scope:
                await journal.wait_for_room()
            assert scope.cancelled_caught
            journal.mark_submitted(first, "req-1", 1.0)
            journal.mark_finished(first, {}, 2.0)  # frees the slot: the waiter takes it
        assert (await journal.rows())[second].state is S.SUBMITTING
