"""The batch journal: the SQLite engine (durable, off the loop, one run at a time) and the
typed transitions above it (only the state diagram's moves)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from runcomfy_async.batch import (
    JOURNAL_NAME,
    TRANSITIONS,
    IllegalTransitionError,
    Journal,
    JournalEngine,
    JournalError,
    JournalRow,
    JournalState,
    SQLiteEngine,
)

T2V = "kling/kling-3.0/pro/text-to-video"
S = JournalState
ANY = frozenset(JournalState)


def plan_rows(n: int) -> list[tuple[str, int, str, dict[str, str], str]]:
    return [(f"job-{i}", i + 1, T2V, {"prompt": f"p{i}"}, f"hash{i}") for i in range(n)]


def engine_rows(n: int) -> list[JournalRow]:
    return [JournalRow(i, line, m, p, h) for i, line, m, p, h in plan_rows(n)]


async def open_engine(path: Path, n: int = 0) -> SQLiteEngine:
    engine = await SQLiteEngine.open(path)
    if n:
        await engine.plan(engine_rows(n))
    return engine


async def set_state(engine: SQLiteEngine, job_id: str, state: JournalState, **f: Any) -> None:
    await engine.update(job_id, {"state": state, **f}, expect=ANY)


# -- the engine --------------------------------------------------------------------------


def test_the_sqlite_engine_implements_the_engine_interface() -> None:
    names = [n for n in dir(JournalEngine) if not n.startswith("_")]
    assert set(names) >= {"rows", "plan", "claim", "update", "defer", "move_all", "aclose"}
    for name in names:
        assert hasattr(SQLiteEngine, name) or name in ("calls", "commits", "cpu_seconds")


async def test_rows_survive_a_reopen(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path, 2)
    await set_state(engine, "job-0", S.SUBMITTING, attempts=1)
    await set_state(engine, "job-0", S.SUBMITTED, request_id="rid-0")
    await set_state(
        engine,
        "job-1",
        S.DOWNLOADED,
        result={"outputs": [["https://s/a.mp4", "mp4"]], "cost": 0.5},
        files=[{"name": "job-1.mp4", "size": 3}],
    )
    await engine.aclose()
    engine = await open_engine(tmp_path)
    rows = await engine.rows()
    await engine.aclose()
    assert list(rows) == ["job-0", "job-1"]
    assert rows["job-0"].state is S.SUBMITTED
    assert rows["job-0"].request_id == "rid-0"
    assert rows["job-0"].attempts == 1
    assert rows["job-1"].result == {"outputs": [["https://s/a.mp4", "mp4"]], "cost": 0.5}
    assert rows["job-1"].files == ({"name": "job-1.mp4", "size": 3},)
    assert rows["job-1"].input == {"prompt": "p1"}


async def test_plan_keeps_the_state_of_known_jobs(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))
        await journal.adopt("job-0", "r")
        await journal.plan([("job-0", 7, T2V, {"prompt": "p0"}, "hash0")])
        row = (await journal.rows())["job-0"]
    assert row.state is S.SUBMITTED
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
    engine = await open_engine(tmp_path, 1)

    def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        return mode, sync

    assert await engine._call(pragmas) == ("wal", 2)  # 2 = FULL
    await engine.aclose()


async def test_sqlite_runs_in_a_worker_thread_not_the_loop(tmp_path: Path) -> None:
    seen: list[str] = []
    engine = await open_engine(tmp_path)
    await engine._call(lambda conn: seen.append(threading.current_thread().name))
    await engine.aclose()
    assert seen and seen[0] != threading.current_thread().name


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path, 200)
    before = engine.commits
    await asyncio.gather(*(set_state(engine, f"job-{i}", S.SUBMITTING) for i in range(200)))
    commits = engine.commits - before
    rows = await engine.rows()
    await engine.aclose()
    assert all(r.state is S.SUBMITTING for r in rows.values())
    assert commits < 50  # grouped, each caller still waited for its own commit
    assert engine.cpu_seconds > 0


async def test_a_failing_write_fails_alone(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path, 2)
    results = await asyncio.gather(
        set_state(engine, "job-0", S.SUBMITTING),
        set_state(engine, "nope", S.SUBMITTING),
        set_state(engine, "job-1", S.SUBMITTING),
        return_exceptions=True,
    )
    rows = await engine.rows()
    await engine.aclose()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], JournalError)
    assert rows["job-0"].state is rows["job-1"].state is S.SUBMITTING


async def test_the_engine_refuses_an_update_from_a_state_not_expected(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path, 1)
    with pytest.raises(IllegalTransitionError, match="planned -> submitted"):
        await engine.update("job-0", {"state": S.SUBMITTED}, expect=frozenset({S.SUBMITTING}))
    rows = await engine.rows()
    await engine.aclose()
    assert rows["job-0"].state is S.PLANNED


async def test_stale_submitting_rows_become_unknown(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(3))
        await journal.mark_submitting("job-1", 1)
        moved = await journal.expire_submitting()
        rows = await journal.rows()
    assert moved == ["job-1"]
    assert rows["job-1"].state is S.UNKNOWN
    assert "may or may not exist" in (rows["job-1"].error or "")
    assert rows["job-0"].state is S.PLANNED


async def test_unknown_columns_are_refused(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    with pytest.raises(ValueError, match="not journal columns"):
        await engine.update("job-0", {"colour": "red"}, expect=ANY)
    await engine.aclose()


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
    engine = await open_engine(tmp_path, 2)
    await set_state(engine, "job-0", S.SUBMITTED)
    before = engine.commits
    engine.defer("job-0", {"state": S.FINISHED, "result": {"cost": 1.0}}, expect=ANY)
    engine.defer("job-0", {"state": S.DOWNLOADED, "files": [{"name": "a"}]}, expect=ANY)
    engine.defer("job-1", {"error": "boom"}, expect=ANY)
    rows = await engine.rows()  # after the deferred writes, in call order
    assert engine.commits - before == 1
    await engine.aclose()
    assert rows["job-0"].state is S.DOWNLOADED
    assert rows["job-0"].result == {"cost": 1.0}
    assert rows["job-0"].files == ({"name": "a"},)
    assert rows["job-1"].error == "boom"


async def test_a_waited_write_is_not_reordered_before_a_deferred_one(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path, 1)
    engine.defer("job-0", {"state": S.SUBMITTED}, expect=ANY)
    await engine.update("job-0", {"state": S.FAILED}, expect=frozenset({S.SUBMITTED}))
    engine.defer("job-0", {"error": "late"}, expect=ANY)
    await engine.aclose()
    rows = Journal.read(tmp_path)
    assert rows is not None
    assert rows["job-0"].state is S.FAILED
    assert rows["job-0"].error == "late"


async def test_closing_commits_deferred_writes(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))
        await journal.mark_submitting("job-0", 1)
        journal.mark_submitted("job-0", "r-1", 1.0)
    rows = Journal.read(tmp_path)
    assert rows is not None and rows["job-0"].request_id == "r-1"


async def test_claim_hands_out_each_planned_job_once_in_line_order(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(5))
        await journal.adopt("job-1", "r-1")  # not planned: never claimed
        first = await journal.claim(2)
        rest = await journal.claim(10)
        assert await journal.claim(10) == []
    assert first == ["job-0", "job-2"]
    assert rest == ["job-3", "job-4"]


# -- typed transitions -------------------------------------------------------------------


def test_the_diagram_has_every_state_and_submitting_only_from_planned() -> None:
    assert set(TRANSITIONS) == set(JournalState)
    into_submitting = {s for s, targets in TRANSITIONS.items() if S.SUBMITTING in targets}
    assert into_submitting == {S.PLANNED}
    # a job the server may have created is never planned again by a run on its own
    assert S.PLANNED not in TRANSITIONS[S.SUBMITTED] | TRANSITIONS[S.FINISHED]


async def test_a_job_walks_the_diagram_to_downloaded(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))
        await journal.mark_submitting("job-0", 1)
        journal.mark_submitted("job-0", "r-0", 1.0)
        journal.mark_finished("job-0", {"cost": 0.5}, 2.0)
        journal.mark_downloaded("job-0", [{"name": "job-0.mp4", "size": 1}], 3.0)
        row = (await journal.rows())["job-0"]
    assert row.state is S.DOWNLOADED and row.request_id == "r-0"
    assert row.attempts == 1 and row.result == {"cost": 0.5}


@pytest.mark.parametrize(
    ("setup", "illegal"),
    [
        ([], "mark_submitted"),  # planned -> submitted without a submit
        ([], "mark_finished"),
        (["mark_submitting"], "mark_submitting"),  # submitting twice
        (["mark_submitting", "mark_submitted"], "mark_submitting"),  # paid: never again
        (["mark_submitting", "mark_submitted"], "requeue"),
    ],
)
async def test_an_illegal_transition_is_refused_before_anything_is_written(
    tmp_path: Path, setup: list[str], illegal: str
) -> None:
    calls: dict[str, Any] = {
        "mark_submitting": lambda j: j.mark_submitting("job-0", 1),
        "mark_submitted": lambda j: j.mark_submitted("job-0", "r", 1.0),
        "mark_finished": lambda j: j.mark_finished("job-0", {}, 1.0),
        "requeue": lambda j: j.requeue("job-0"),
    }
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))
        for name in setup:
            outcome = calls[name](journal)
            if asyncio.iscoroutine(outcome):
                await outcome
        before = (await journal.rows())["job-0"]
        with pytest.raises(IllegalTransitionError):
            outcome = calls[illegal](journal)
            if asyncio.iscoroutine(outcome):
                await outcome
        after = (await journal.rows())["job-0"]
    assert after == before


async def test_a_submit_that_certainly_did_not_land_goes_back_to_planned(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(plan_rows(1))
        await journal.mark_submitting("job-0", 1)
        await journal.mark_submit_failed("job-0", S.PLANNED, "HTTP 500")
        row = (await journal.rows())["job-0"]
        assert await journal.claim(5) == ["job-0"]
    assert row.state is S.PLANNED and row.error == "HTTP 500"
