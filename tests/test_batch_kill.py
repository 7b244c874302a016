"""SIGKILL at random moments, then rerun: every job done exactly once.

The emulator runs in the test process, so it outlives each killed
``runcomfy-async batch`` subprocess and remembers every job the runs created.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runcomfy_async.emulator import Emulator, make_mp4

MakeEmulator = Callable[..., Awaitable[Emulator]]

T2V = "kling/kling-3.0/pro/text-to-video"
I2V = "kling/kling-3.0/standard/image-to-video"
TIME_SCALE = 0.003  # a generation takes 0.2-0.6 s: a run lasts a couple of seconds
N_JOBS = 60

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def write_manifest(path: Path) -> dict[str, str]:
    """A manifest of N_JOBS jobs; returns each job's prompt by id."""
    prompts = {}
    with path.open("w") as f:
        for i in range(N_JOBS):
            job_id = f"clip-{i:03d}"
            prompt = f"{job_id}: waves break on a rocky shore at dusk"
            prompts[job_id] = prompt
            if i % 3 == 0:
                body = {"prompt": prompt, "start_image_url": "https://example.com/shore.jpg"}
                line = {"id": job_id, "model": I2V, "input": body}
            else:
                line = {"id": job_id, "model": T2V, "input": {"prompt": prompt, "duration": 5}}
            f.write(json.dumps(line) + "\n")
    return prompts


async def run_cli(
    args: list[str], env: dict[str, str], *, kill_after: float | None = None
) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runcomfy_async.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.wait_for(proc.wait(), kill_after or 60.0)
    except asyncio.TimeoutError:
        proc.kill()  # SIGKILL: no cleanup of any kind
        assert kill_after is not None, "the run did not finish in 60 s"
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_killed_runs_resume_and_every_job_is_done_exactly_once(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=TIME_SCALE, workers=16, seed=5)
    manifest = tmp_path / "jobs.jsonl"
    prompts = write_manifest(manifest)
    out = tmp_path / "out"
    env = {**os.environ, "RUNCOMFY_API_TOKEN": emu.token}
    env.pop("RUNCOMFY_BASE_URL", None)
    args = [
        "batch",
        str(manifest),
        "--out",
        str(out),
        "--base-url",
        emu.base_url,
        "--time-scale",
        str(TIME_SCALE),
        "--requests-per-second",
        "1000",
        "--concurrency",
        "24",
        "--no-progress",
    ]
    rng = random.Random(20261122)
    # Python starts in about 0.3 s; a whole run takes about 2 s. Kill early,
    # mid-submit, mid-wait and mid-download.
    killed = 0
    for delay in (0.35, *(rng.uniform(0.4, 1.4) for _ in range(4))):
        code, _ = await run_cli(args, env, kill_after=delay)
        killed += code == -9
    assert killed >= 2  # the runs really were killed (later ones may have little left)

    code, err = await run_cli(args, env)
    assert (out / "report.json").exists(), err
    report = json.loads((out / "report.json").read_text())
    unknown = [j["id"] for j in report["jobs"] if j["outcome"] == "outcome_unknown"]
    if unknown:
        # A kill between sending a submit and journaling its answer leaves an
        # honest "unknown". Do what a user would: look for those jobs on the
        # dashboard (the emulator's records), adopt the ones that exist, and
        # resubmit the others on purpose.
        assert code == 1, err
        assert "outcome_unknown" in err or unknown
        by_prompt = {str(j.payload["prompt"]): j.request_id for j in emu.jobs.values()}
        extra = [f"--adopt={i}={by_prompt[prompts[i]]}" for i in unknown if prompts[i] in by_prompt]
        code, err = await run_cli([*args, *extra, "--resubmit-unknown"], env)
    assert code == 0, err

    # Exactly once: one server job per manifest id, none created twice.
    created = Counter(str(j.payload["prompt"]) for j in emu.jobs.values())
    assert set(created) == set(prompts.values())
    assert max(created.values()) == 1
    # Every output on disk, and it is that job's output.
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"succeeded": N_JOBS}
    by_prompt_job = {str(j.payload["prompt"]): j for j in emu.jobs.values()}
    for job_id, prompt in prompts.items():
        job = by_prompt_job[prompt]
        data = (out / f"{job_id}.mp4").read_bytes()
        assert data == make_mp4(job.request_id, clip_seconds=job.clip_seconds)
    assert not [n for n in os.listdir(out) if n.endswith(".part")]
    assert emu.counters.storage_auth_headers == 0
