"""A fleet: three runner processes drain one 300-job batch through a PostgreSQL journal.

One emulator (in the test process, on loopback) with a per-account concurrency
limit stands for the account. Two runners start together; one of them is
SIGKILLed midway; a third starts late. Every clip ends on disk exactly once,
the emulator saw no duplicate submit, and the account's cap held: the
runners share it through the journal (``--concurrency`` is the fleet's cap).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from runcomfy_async.emulator import Emulator, make_mp4
from tests.servers import postgres_dsn

__all__ = ["postgres_dsn"]  # the fixture, imported for pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

T2V = "kling/kling-3.0/pro/text-to-video"
TIME_SCALE = 0.003  # a generation takes 0.2-0.6 s
N_JOBS = 300
CAP = 10  # the account's concurrency limit, and the fleet's --concurrency
LEASE = 3.0  # under load a heartbeat may be late: keep well above its period (lease / 3)


def write_manifest(path: Path) -> dict[str, str]:
    prompts = {}
    with path.open("w") as f:
        for i in range(N_JOBS):
            job_id = f"clip-{i:03d}"
            prompts[job_id] = f"{job_id}: a lighthouse in fog, slow dolly in"
            body = {"prompt": prompts[job_id], "duration": 5}
            f.write(json.dumps({"id": job_id, "model": T2V, "input": body}) + "\n")
    return prompts


_STARTED: list[asyncio.subprocess.Process] = []


async def start_runner(args: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runcomfy_async.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
async def _no_runner_outlives_the_test() -> object:
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def finish(proc: asyncio.subprocess.Process, timeout: float = 180.0) -> tuple[int, str]:
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
        pytest.fail(f"a runner did not finish in {timeout} s: {err.decode()[-3000:]}")
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def held_by(dsn: str, key: str, pid: int) -> dict[str, int]:
    """States of the jobs the runner with process id ``pid`` holds."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT state, count(*) AS n FROM runcomfy_jobs "
            "WHERE batch_key = $1 AND runner_id LIKE $2 GROUP BY state",
            key,
            f"%-{pid}-%",
        )
    except asyncpg.UndefinedTableError:
        return {}  # no runner has made the tables yet
    finally:
        await conn.close()
    return {r["state"]: int(r["n"]) for r in rows}


async def test_three_runners_one_killed_one_late_drain_the_batch_exactly_once(
    make_emulator: object, postgres_dsn: str, tmp_path: Path
) -> None:
    emu: Emulator = await make_emulator(  # type: ignore[operator]
        time_scale=TIME_SCALE, workers=4 * CAP, seed=7, max_jobs_per_token=CAP
    )
    manifest = tmp_path / "jobs.jsonl"
    prompts = write_manifest(manifest)
    out = tmp_path / "out"  # one directory all runners share
    key = f"fleet-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "RUNCOMFY_API_TOKEN": emu.token}
    env.pop("RUNCOMFY_BASE_URL", None)
    args = [
        "batch",
        str(manifest),
        "--out",
        str(out),
        "--journal",
        postgres_dsn,
        "--batch-key",
        key,
        "--lease",
        str(LEASE),
        "--concurrency",
        str(CAP),
        "--base-url",
        emu.base_url,
        "--time-scale",
        str(TIME_SCALE),
        "--requests-per-second",
        "1000",
        "--no-progress",
    ]
    first = await start_runner(args, env)
    doomed = await start_runner(args, env)
    # Kill the doomed runner midway, while it holds accepted jobs.
    for _ in range(600):
        mine = await held_by(postgres_dsn, key, doomed.pid)
        if mine.get("downloaded", 0) >= 15 and mine.get("submitted", 0) >= 1:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"the doomed runner never got going: {mine}")
    doomed.send_signal(signal.SIGKILL)
    code, _ = await finish(doomed)
    assert code == -signal.SIGKILL
    left = await held_by(postgres_dsn, key, doomed.pid)
    assert emu.counters.jobs_created < N_JOBS, "killed too late to be midway"
    late = await start_runner(args, env)

    results = [await finish(first), await finish(late)]
    report = json.loads((out / "report.json").read_text())
    unknown = [j["id"] for j in report["jobs"] if j["outcome"] == "outcome_unknown"]
    if unknown:
        # The kill landed between a POST and its journaled answer: an honest
        # unknown, settled as a user would (adopt what exists, resubmit the rest).
        assert all(code == 1 for code, _ in results), results
        by_prompt = {str(j.payload["prompt"]): j.request_id for j in emu.jobs.values()}
        extra = [f"--adopt={i}={by_prompt[prompts[i]]}" for i in unknown if prompts[i] in by_prompt]
        code, err = await finish(await start_runner([*args, *extra, "--resubmit-unknown"], env))
        assert code == 0, err
    else:
        assert all(code == 0 for code, _ in results), [e[-2000:] for _, e in results]

    # The killed runner's accepted jobs were re-attached, never resubmitted.
    assert left.get("submitted", 0) + left.get("finished", 0) >= 1
    created = Counter(str(j.payload["prompt"]) for j in emu.jobs.values())
    assert set(created) == set(prompts.values())
    assert max(created.values()) == 1
    assert emu.counters.duplicate_submits == 0
    # The account's cap held, and the runners shared it (no submit refused for it,
    # except those an in-doubt submit of the killed runner may have crowded out).
    assert max(emu.counters.max_active_per_token.values()) <= CAP
    if not unknown:
        assert emu.counters.account_limited == 0
    # Every clip on disk once, and it is that job's clip.
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"succeeded": N_JOBS}
    by_prompt_job = {str(j.payload["prompt"]): j for j in emu.jobs.values()}
    for job_id, prompt in prompts.items():
        job = by_prompt_job[prompt]
        assert (out / f"{job_id}.mp4").read_bytes() == make_mp4(
            job.request_id, clip_seconds=job.clip_seconds
        )
    names = os.listdir(out)
    assert len([n for n in names if n.endswith(".mp4")]) == N_JOBS
    assert not [n for n in names if n.endswith(".part")]


async def test_a_fleet_runner_stopped_by_a_fatal_error_leaves_the_rest_to_the_others(
    make_emulator: object, postgres_dsn: str, tmp_path: Path
) -> None:
    from runcomfy_async import PollPolicy, RunComfyClient
    from runcomfy_async.batch import BatchRunner, Journal, Manifest

    emu: Emulator = await make_emulator(time_scale=TIME_SCALE)  # type: ignore[operator]
    manifest = tmp_path / "jobs.jsonl"
    write_manifest(manifest)
    key = f"fatal-{uuid.uuid4().hex[:8]}"
    # Another live runner holds one job: a runner that is merely done would wait for it.
    other = await Journal.open(postgres_dsn, batch_key=key, runner_id="other")
    try:
        first = next(iter(Manifest.load(manifest)))
        await other.plan([(first.id, first.line, first.model, first.input, first.hash)])
        assert await other.claim(1) == ["clip-000"]
        async with RunComfyClient(
            "wrong-token",
            base_url=emu.base_url,
            poll=PollPolicy(time_scale=TIME_SCALE),
            requests_per_second=None,
        ) as client:
            runner = BatchRunner(
                manifest,
                tmp_path / "out",
                client=client,
                progress=False,
                journal=postgres_dsn,
                batch_key=key,
                concurrency=CAP,
            )
            async with asyncio.timeout(60):
                report = await runner.run()
        assert runner.fatal_error is not None
        assert report.counts == {"not_submitted": N_JOBS}
        assert emu.counters.jobs_created == 0
    finally:
        await other.aclose()


async def test_stopping_a_fleet_runner_ends_its_wait_for_jobs_others_hold(
    make_emulator: object, postgres_dsn: str, tmp_path: Path
) -> None:
    from runcomfy_async import PollPolicy, RunComfyClient
    from runcomfy_async.batch import BatchRunner, Journal, Manifest

    emu: Emulator = await make_emulator(time_scale=TIME_SCALE)  # type: ignore[operator]
    manifest = tmp_path / "jobs.jsonl"
    write_manifest(manifest)
    key = f"stop-{uuid.uuid4().hex[:8]}"
    # Another live runner holds every job as a claim: this runner's claim waits for them.
    other = await Journal.open(postgres_dsn, batch_key=key, runner_id="other")
    try:
        await other.plan((e.id, e.line, e.model, e.input, e.hash) for e in Manifest.load(manifest))
        assert len(await other.claim(N_JOBS)) == N_JOBS
        async with RunComfyClient(
            emu.token,
            base_url=emu.base_url,
            poll=PollPolicy(time_scale=TIME_SCALE),
            requests_per_second=None,
        ) as client:
            runner = BatchRunner(
                manifest,
                tmp_path / "out",
                client=client,
                progress=False,
                journal=postgres_dsn,
                batch_key=key,
                concurrency=CAP,
            )
            async with asyncio.timeout(30):
                task = asyncio.ensure_future(runner.run())
                await asyncio.sleep(2.0)
                assert not task.done()  # waiting for the other runner's claims
                runner.stop()
                report = await task
        assert report.interrupted
        assert report.counts == {"not_submitted": N_JOBS}
        assert emu.counters.jobs_created == 0
    finally:
        await other.aclose()
