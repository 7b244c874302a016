"""Restart safety: a request id from the journal that now names another job is refused.

A server that restarts may issue ids again (the emulator does when seeded; by
default its ids are random). A resumed batch must not save another job's
output under this job's name: it reports the job ``outcome_unknown`` and
submits it again only when asked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from runcomfy_async import PollPolicy, RunComfyClient
from runcomfy_async.batch import BatchRunner, run_batch
from runcomfy_async.batch._wait import mismatch
from runcomfy_async.emulator import Emulator, make_mp4

ROOT = Path(__file__).resolve().parent.parent
SHOWCASE = ROOT / "examples" / "showcase.jsonl"
T2V = "kling/kling-3.0/pro/text-to-video"
I2V = "kling/kling-3.0/standard/image-to-video"
FAST = 0.001


def t2v_jobs(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"fox-{i}", "model": T2V, "input": {"prompt": f"fox {i} in snow", "duration": 5}}
        for i in range(n)
    ]


def test_mismatch_compares_what_the_server_names() -> None:
    payload = {"prompt": "a fox", "duration": 5}
    assert mismatch({"status": "succeeded"}, T2V, payload) is None  # the documented answer
    assert mismatch({"model_id": T2V}, T2V, payload) is None
    assert mismatch({"model_id": I2V}, T2V, payload) == f"answers for model {I2V}, not {T2V}"
    # Defaults the server filled in are not a difference; a changed field is.
    echoed = {"prompt": "a fox", "duration": 5, "aspect_ratio": "16:9"}
    assert mismatch({"model_id": T2V, "input": echoed}, T2V, payload) is None
    other = {"prompt": "a cat", "duration": 5}
    assert mismatch({"input": other}, T2V, payload) == "answers for another input (prompt differ)"


async def test_an_id_reissued_for_another_model_is_refused_then_resubmitted_on_request(
    tmp_path: Path,
) -> None:
    jobs = t2v_jobs(4)
    out = tmp_path / "out"
    # First server life: the four jobs are accepted, then the run stops with them running.
    async with (
        Emulator(seed=5, time_scale=1.0, echo_model_id=True) as first,
        RunComfyClient(first.token, base_url=first.base_url) as client,
    ):
        runner = BatchRunner(jobs, out, client=client, progress=False)
        task = asyncio.create_task(runner.run())
        for _ in range(2000):
            if first.counters.jobs_created == 4:
                break
            await asyncio.sleep(0.01)
        runner.stop()
        stopped = await task
    assert stopped.counts == {"in_flight": 4}
    old_ids = {j.id: j.request_id for j in stopped.jobs}

    # Second life, same seed: the same ids go to other jobs (another model).
    async with Emulator(seed=5, time_scale=FAST, echo_model_id=True) as second:
        poll = PollPolicy(time_scale=FAST)
        async with RunComfyClient(second.token, base_url=second.base_url, poll=poll) as client:
            others = [
                await client.submit(
                    I2V, {"prompt": f"other {i}", "start_image_url": "https://example.com/a.jpg"}
                )
                for i in range(4)
            ]
            assert sorted(j.request_id for j in others) == sorted(old_ids.values())
            for other in others:
                await other.wait(30)

            resumed = await run_batch(jobs, out, client=client, progress=False)
            assert resumed.counts == {"outcome_unknown": 4}
            assert not list(out.glob("*.mp4"))  # nothing of the other jobs was taken
            for job in resumed.jobs:
                assert job.request_id == old_ids[job.id]
                assert job.error is not None
                assert f"answers for model {I2V}, not {T2V}" in job.error
                assert "--resubmit-unknown" in job.error
                record = json.loads((out / f"{job.id}.json").read_text())
                assert record["files"] == [] and "not taken" in record["error"]

            # Not resubmitted behind the user's back...
            again = await run_batch(jobs, out, client=client, progress=False)
            assert again.counts == {"outcome_unknown": 4}
            assert second.counters.jobs_created == 4

            # ...only when asked.
            fixed = await run_batch(jobs, out, client=client, progress=False, resubmit_unknown=True)
            assert fixed.counts == {"succeeded": 4}
            for job in fixed.jobs:
                assert job.request_id is not None
                served = second.jobs[job.request_id]
                assert served.model_id == T2V
                assert dict(served.payload) == next(j["input"] for j in jobs if j["id"] == job.id)
                clip = (out / f"{job.id}.mp4").read_bytes()
                assert clip == make_mp4(job.request_id, clip_seconds=served.clip_seconds)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess is POSIX")
async def test_the_readme_demo_stopped_and_run_again_keeps_every_clip_right(
    tmp_path: Path,
) -> None:
    """``runcomfy-async batch examples/showcase.jsonl --emulator --out DIR``, twice."""
    out = tmp_path / "clips"
    args = [sys.executable, "-m", "runcomfy_async.cli", "batch", str(SHOWCASE), "--emulator"]
    args += ["--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}

    async def run(*extra: str, stop: bool = False) -> tuple[dict[str, Any], str]:
        proc = await asyncio.create_subprocess_exec(
            *args, *extra, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        if stop:  # midway: once a few clips are on disk
            for _ in range(3000):
                if len(list(out.glob("*.mp4"))) >= 3 or proc.returncode is not None:
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode in ((130,) if stop else (0, 1)), stdout + stderr
        report: dict[str, Any] = json.loads((out / "report.json").read_text())
        return report, stdout.decode()

    first, said = await run(stop=True)
    assert first["interrupted"] and first["counts"].get("succeeded", 0) >= 3
    if first["counts"].get("in_flight"):
        assert "note: --emulator serves from inside this command" in said
    second, _ = await run()  # a new emulator: it knows none of the first run's ids
    final = second if second["ok"] else (await run("--retry-failed"))[0]
    assert final["counts"] == {"succeeded": 12}

    ids = [job["request_id"] for job in final["jobs"]]
    assert len(set(ids)) == len(ids)  # no request id serves two jobs
    reissued = {j["request_id"] for j in first["jobs"] if j["request_id"]} & {
        j["request_id"] for j in final["jobs"] if j["id"] not in _succeeded(first)
    }
    assert not reissued  # the second emulator issued no id the first one had
    manifest = [json.loads(line) for line in SHOWCASE.read_text().splitlines()]
    for entry in manifest:
        record = json.loads((out / f"{entry['id']}.json").read_text())
        assert record["input"] == entry["input"] and record["model"] == entry["model"]
        clip = (out / f"{entry['id']}.mp4").read_bytes()
        # The emulator's clip encodes its request id: this clip is this record's request's.
        seconds = float(entry["input"].get("duration", 5))
        assert clip == make_mp4(record["request_id"], clip_seconds=seconds), entry["id"]


def _succeeded(report: dict[str, Any]) -> set[str]:
    return {j["id"] for j in report["jobs"] if j["outcome"] == "succeeded"}
