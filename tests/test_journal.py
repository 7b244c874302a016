"""The batch journal: durable, off the event loop, one run at a time."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from runcomfy_async._journal import JOURNAL_NAME, Journal, JournalError, JournalState

T2V = "kling/kling-3.0/pro/text-to-video"


def plan_rows(n: int) -> list[tuple[str, int, str, dict[str, str], str]]:
    return [(f"job-{i}", i + 1, T2V, {"prompt": f"p{i}"}, f"hash{i}") for i in range(n)]


async def test_rows_survive_a_reopen(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(2))
        await journal.update("job-0", state=JournalState.SUBMITTING, attempts=1)
        await journal.update("job-0", state=JournalState.SUBMITTED, request_id="rid-0")
        await journal.update(
            "job-1",
            state=JournalState.DOWNLOADED,
            result={"outputs": [["https://s/a.mp4", "mp4"]], "cost": 0.5},
            files=[{"name": "job-1.mp4", "size": 3}],
        )
    async with await Journal.open(tmp_path) as journal:
        rows = await journal.rows()
    assert list(rows) == ["job-0", "job-1"]
    assert rows["job-0"].state is JournalState.SUBMITTED
    assert rows["job-0"].request_id == "rid-0"
    assert rows["job-0"].attempts == 1
    assert rows["job-1"].result == {"outputs": [["https://s/a.mp4", "mp4"]], "cost": 0.5}
    assert rows["job-1"].files == ({"name": "job-1.mp4", "size": 3},)
    assert rows["job-1"].input == {"prompt": "p1"}


async def test_plan_keeps_the_state_of_known_jobs(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))
        await journal.update("job-0", state=JournalState.SUBMITTED, request_id="r")
        await journal.plan([("job-0", 7, T2V, {"prompt": "p0"}, "hash0")])
        row = (await journal.rows())["job-0"]
    assert row.state is JournalState.SUBMITTED
    assert row.line == 7


async def test_a_second_run_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path):
        with pytest.raises(JournalError, match="another run is using"):
            await Journal.open(tmp_path)
        with pytest.raises(JournalError, match="a run is using"):
            Journal.read(tmp_path)
    # Once closed, the next run gets it.
    async with await Journal.open(tmp_path):
        pass


async def test_writes_are_durable_wal_with_full_sync(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))

        def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
            return mode, sync

        assert await journal._call(pragmas) == ("wal", 2)  # 2 = FULL


async def test_sqlite_runs_in_the_journal_thread_not_the_loop(tmp_path: Path) -> None:
    seen: list[str] = []
    async with await Journal.open(tmp_path) as journal:
        await journal._call(lambda conn: seen.append(threading.current_thread().name))
    assert seen and seen[0].startswith("runcomfy-journal")
    assert seen[0] != threading.current_thread().name


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(200))
        before = journal.commits
        await asyncio.gather(
            *(journal.update(f"job-{i}", state=JournalState.SUBMITTING) for i in range(200))
        )
        commits = journal.commits - before
        rows = await journal.rows()
    assert all(r.state is JournalState.SUBMITTING for r in rows.values())
    assert commits < 50  # grouped, each caller still waited for its own commit
    assert journal.cpu_seconds > 0


async def test_a_failing_write_fails_alone(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(2))
        results = await asyncio.gather(
            journal.update("job-0", state=JournalState.SUBMITTING),
            journal.update("nope", state=JournalState.SUBMITTING),
            journal.update("job-1", state=JournalState.SUBMITTING),
            return_exceptions=True,
        )
        rows = await journal.rows()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], JournalError)
    assert rows["job-0"].state is rows["job-1"].state is JournalState.SUBMITTING


async def test_stale_submitting_rows_become_unknown(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(3))
        await journal.update("job-1", state=JournalState.SUBMITTING)
        moved = await journal.update_where_state(
            JournalState.SUBMITTING, JournalState.UNKNOWN, error="crash"
        )
        rows = await journal.rows()
    assert moved == ["job-1"]
    assert rows["job-1"].state is JournalState.UNKNOWN
    assert rows["job-1"].error == "crash"
    assert rows["job-0"].state is JournalState.PLANNED


async def test_unknown_columns_are_refused(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        with pytest.raises(ValueError, match="not journal columns"):
            await journal.update("job-0", colour="red")


async def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path):
        pass
    conn = sqlite3.connect(tmp_path / JOURNAL_NAME)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema'")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="newer runcomfy-async"):
        await Journal.open(tmp_path)


def test_reading_a_directory_without_a_journal_gives_none(tmp_path: Path) -> None:
    assert Journal.read(tmp_path) is None


async def test_deferred_writes_merge_per_job_and_are_read_in_order(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(2))
        before = journal.commits
        journal.defer("job-0", state=JournalState.FINISHED, result={"cost": 1.0})
        journal.defer("job-0", state=JournalState.DOWNLOADED, files=[{"name": "a"}])
        journal.defer("job-1", error="boom")
        rows = await journal.rows()  # after the deferred writes, in call order
        assert journal.commits - before == 1
    assert rows["job-0"].state is JournalState.DOWNLOADED
    assert rows["job-0"].result == {"cost": 1.0}
    assert rows["job-0"].files == ({"name": "a"},)
    assert rows["job-1"].error == "boom"


async def test_a_waited_write_is_not_reordered_before_a_deferred_one(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))
        journal.defer("job-0", state=JournalState.FINISHED)
        await journal.update("job-0", state=JournalState.FAILED)
        journal.defer("job-0", error="late")
    rows = Journal.read(tmp_path)
    assert rows is not None
    assert rows["job-0"].state is JournalState.FAILED
    assert rows["job-0"].error == "late"


async def test_closing_commits_deferred_writes(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))
        journal.defer("job-0", state=JournalState.SUBMITTED, request_id="r-1")
    rows = Journal.read(tmp_path)
    assert rows is not None and rows["job-0"].request_id == "r-1"
