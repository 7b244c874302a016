"""A 120-clip batch killed twice with SIGKILL at random moments, then rerun: repeated N times.

    python benchmarks/kill_resume.py               # 20 repetitions
    python benchmarks/kill_resume.py --reps 3      # a quicker look

Each repetition starts a fresh emulator in this process (it outlives the
killed runs and counts every job created), runs ``runcomfy-async batch`` as
a user would (a subprocess, default request budget, ``--concurrency 40``),
kills it with SIGKILL at a random moment, twice, then reruns the same command
to the end. Reported per repetition:

- clips on disk after the plain rerun (each checked against the emulator's
  bytes for that job), and how many the report called ``outcome_unknown``;
- clips on disk at the end: when some were unknown, the user's follow-up is
  run too (``--adopt`` the ones the dashboard shows, ``--resubmit-unknown``
  the rest, as the report's hint says);
- duplicate submits: server jobs beyond one per manifest line (the
  emulator's records);
- unknowns that the server never received ("unsent": a submit reported
  unknown that no server job matches), what the old "submitting before the
  slot" order lost by the dozen; now only a kill between the durable mark and
  the bytes reaching the server can leave one.

Prints a table and writes ``benchmarks/results/kill_resume.json`` with the
git commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from runcomfy_async.emulator import Emulator, make_mp4

HERE = Path(__file__).resolve().parent
T2V = "kling/kling-3.0/pro/text-to-video"
I2V = "kling/kling-3.0/standard/image-to-video"


def write_manifest(path: Path, n: int) -> dict[str, str]:
    """A manifest of ``n`` clips; returns each clip's prompt by id."""
    prompts = {}
    with path.open("w") as f:
        for i in range(n):
            job_id = f"clip-{i:03d}"
            prompt = f"{job_id}: a paper lantern drifts over a night market"
            prompts[job_id] = prompt
            if i % 3 == 0:
                body = {"prompt": prompt, "start_image_url": "https://example.com/lantern.jpg"}
                line = {"id": job_id, "model": I2V, "input": body}
            else:
                line = {"id": job_id, "model": T2V, "input": {"prompt": prompt, "duration": 5}}
            f.write(json.dumps(line) + "\n")
    return prompts


async def run_cli(
    args: list[str], env: dict[str, str], *, kill_after: float | None = None
) -> tuple[int, float]:
    """Run the command; SIGKILL it after ``kill_after`` seconds. Exit code and seconds run."""
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runcomfy_async.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.wait_for(proc.wait(), kill_after or 600.0)
    except asyncio.TimeoutError:
        proc.kill()  # SIGKILL: no cleanup of any kind
        await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, time.monotonic() - start


def clips_on_disk(out: Path, prompts: dict[str, str], emu: Emulator) -> int:
    """Clips saved under their id whose bytes are that job's output."""
    by_prompt: dict[str, list[Any]] = {}
    for job in emu.jobs.values():
        by_prompt.setdefault(str(job.payload["prompt"]), []).append(job)
    good = 0
    for job_id, prompt in prompts.items():
        path = out / f"{job_id}.mp4"
        if not path.is_file():
            continue
        data = path.read_bytes()
        candidates = by_prompt.get(prompt, [])
        if any(data == make_mp4(j.request_id, clip_seconds=j.clip_seconds) for j in candidates):
            good += 1
    return good


async def one_rep(rep: int, rng: random.Random, opts: argparse.Namespace) -> dict[str, Any]:
    async with Emulator(time_scale=opts.time_scale, workers=opts.workers, seed=rep) as emu:
        with tempfile.TemporaryDirectory(prefix="kill-resume-") as tmp:
            root = Path(tmp)
            manifest = root / "clips.jsonl"
            prompts = write_manifest(manifest, opts.clips)
            out = root / "out"
            env = {**os.environ, "RUNCOMFY_API_TOKEN": emu.token}
            env.pop("RUNCOMFY_BASE_URL", None)
            args = [
                "batch", str(manifest), "--out", str(out), "--base-url", emu.base_url,
                "--time-scale", str(opts.time_scale), "--concurrency", str(opts.concurrency),
                "--no-progress",
            ]  # fmt: skip
            if opts.requests_per_second:
                args += ["--requests-per-second", str(opts.requests_per_second)]
            kills = []
            for _ in range(2):
                delay = rng.uniform(opts.kill_min, opts.kill_max)
                code, _ = await run_cli(args, env, kill_after=delay)
                kills.append({"after_s": round(delay, 3), "killed": code == -9})
            code, rerun_s = await run_cli(args, env)
            report = json.loads((out / "report.json").read_text())
            unknown = [j["id"] for j in report["jobs"] if j["outcome"] == "outcome_unknown"]
            created = Counter(str(j.payload["prompt"]) for j in emu.jobs.values())
            never_received = [i for i in unknown if prompts[i] not in created]
            on_disk = clips_on_disk(out, prompts, emu)
            final_exit = code
            if unknown:
                # What a user does: find those jobs on the dashboard (the emulator's
                # records), adopt the ones that exist, resubmit the others on purpose.
                by_prompt = {str(j.payload["prompt"]): j.request_id for j in emu.jobs.values()}
                extra = [
                    f"--adopt={i}={by_prompt[prompts[i]]}"
                    for i in unknown
                    if prompts[i] in by_prompt
                ]
                final_exit, _ = await run_cli([*args, *extra, "--resubmit-unknown"], env)
            final_on_disk = clips_on_disk(out, prompts, emu)
            created = Counter(str(j.payload["prompt"]) for j in emu.jobs.values())
            duplicates = sum(n - 1 for n in created.values() if n > 1)
            return {
                "rep": rep,
                "kills": kills,
                "rerun_exit": code,
                "rerun_seconds": round(rerun_s, 3),
                "clips": opts.clips,
                "on_disk_after_rerun": on_disk,
                "on_disk": final_on_disk,
                "final_exit": final_exit,
                "outcome_unknown": len(unknown),
                "unknown_never_received": len(never_received),
                "server_jobs": sum(created.values()),
                "duplicate_submits": duplicates,
                "counts": report["counts"],
            }


_CONFIG = (
    "reps",
    "clips",
    "time_scale",
    "workers",
    "concurrency",
    "requests_per_second",
    "kill_min",
    "kill_max",
    "seed",
)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def main_async(opts: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(opts.seed)
    rows = []
    print(
        f"{'rep':>3}  {'kill 1 (s)':>10}  {'kill 2 (s)':>10}  {'rerun':>8}  "
        f"{'unknown':>7}  {'unsent':>6}  {'at end':>8}  {'dup':>3}  {'rerun (s)':>9}",
        flush=True,
    )
    for rep in range(opts.reps):
        row = await one_rep(rep, rng, opts)
        rows.append(row)
        k1, k2 = row["kills"]
        print(
            f"{rep:>3}  {k1['after_s']:>9.2f}{'' if k1['killed'] else '*'}  "
            f"{k2['after_s']:>9.2f}{'' if k2['killed'] else '*'}  "
            f"{row['on_disk_after_rerun']:>4}/{row['clips']:<3}  {row['outcome_unknown']:>7}  "
            f"{row['unknown_never_received']:>6}  {row['on_disk']:>4}/{row['clips']:<3}  "
            f"{row['duplicate_submits']:>3}  "
            f"{row['rerun_seconds']:>9.2f}",
            flush=True,
        )
    complete = sum(r["on_disk"] == r["clips"] for r in rows)
    summary = {
        "reps": opts.reps,
        "clips_per_rep": opts.clips,
        "reps_with_every_clip_on_disk": complete,
        "reps_with_every_clip_after_plain_rerun": sum(
            r["on_disk_after_rerun"] == r["clips"] for r in rows
        ),
        "clips_on_disk": sum(r["on_disk"] for r in rows),
        "clips_total": opts.clips * opts.reps,
        "outcome_unknown_total": sum(r["outcome_unknown"] for r in rows),
        "unknown_never_received_total": sum(r["unknown_never_received"] for r in rows),
        "duplicate_submits_total": sum(r["duplicate_submits"] for r in rows),
        "kills_that_landed": sum(k["killed"] for r in rows for k in r["kills"]),
    }
    print()
    for key, value in summary.items():
        print(f"{key:<32} {value}")
    print("(* = the run had already finished when the kill came)")
    return {
        "benchmark": "kill_resume",
        "commit": git_commit(),
        "config": {k: getattr(opts, k) for k in _CONFIG},
        "summary": summary,
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=40, help="emulator workers")
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument(
        "--requests-per-second", type=float, default=None,
        help="the runs' request budget (default: the CLI's, 20)",
    )  # fmt: skip
    parser.add_argument("--kill-min", type=float, default=0.5)
    parser.add_argument("--kill-max", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--out", default=str(HERE / "results" / "kill_resume.json"))
    opts = parser.parse_args(argv)
    result = asyncio.run(main_async(opts))
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {opts.out}")
    ok = (
        result["summary"]["reps_with_every_clip_on_disk"] == opts.reps
        and result["summary"]["duplicate_submits_total"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
