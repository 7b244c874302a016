"""The batch runner on a 1,000-job manifest against the time-scaled emulator.

    python benchmarks/bench_batch.py              # 1,000 jobs, about 15 s
    python benchmarks/bench_batch.py --jobs 200   # a quicker look

The emulator runs in its own process (so the CPU figures are the runner's
alone) with ``--workers`` jobs generating at once, and keeps its job records.
Reported:

- makespan: from the call to ``BatchRunner.run()`` until it returns (every
  file on disk, the report written);
- ideal: what the emulator itself needs for the same jobs: its workers, FIFO,
  every job available at time zero, each taking the duration it drew (from
  the emulator's job records). No client can finish before that;
- the emulator's own last finish, measured from the run's start;
- the journal's share of CPU: CPU time the journal's thread spent in journal
  calls, over the whole process's CPU time during the run;
- requests per job (API and storage), from the emulator's counters;
- a rerun of the finished batch (what resuming costs when nothing is left).

Prints a table and writes ``benchmarks/results/bench_batch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from runcomfy_async import PollPolicy, RunComfyClient
from runcomfy_async.batch import BatchRunner

HERE = Path(__file__).resolve().parent
T2V = "kling/kling-3.0/pro/text-to-video"
I2V = "kling/kling-3.0/standard/image-to-video"


# -- the emulator process ----------------------------------------------------------------


async def serve_emulator(config: dict[str, Any]) -> None:
    """Serve an emulator; print its address, then its job records when stdin says ``dump``."""
    from runcomfy_async.emulator import Emulator

    async with Emulator(
        time_scale=config["time_scale"], workers=config["workers"], seed=config["seed"]
    ) as emu:
        print(json.dumps({"base_url": emu.base_url, "token": emu.token}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if line.strip() != "dump":
                return
            records = [
                {
                    "request_id": j.request_id,
                    "prompt": j.payload.get("prompt"),
                    "created": j.created,
                    "started": j.started,
                    "finished": j.finished,
                    "seconds": j.duration * emu.time_scale,
                    "state": j.state,
                }
                for j in sorted(emu.jobs.values(), key=lambda j: j.created)
            ]
            print(json.dumps(records), flush=True)


class EmulatorProcess:
    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-emulator", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.base_url: str = info["base_url"]
        self.token: str = info["token"]

    def records(self) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("dump\n")
        self.proc.stdin.flush()
        records: list[dict[str, Any]] = json.loads(self.proc.stdout.readline())
        return records

    def counters(self) -> dict[str, int]:
        with urllib.request.urlopen(self.base_url + "/_emulator/counters") as resp:
            counters: dict[str, int] = json.load(resp)
        return counters

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


# -- the measurement ---------------------------------------------------------------------


def manifest(n: int) -> list[dict[str, Any]]:
    jobs = []
    for i in range(n):
        prompt = f"clip {i}: a paper lantern drifts over a night market"
        if i % 2:
            body = {
                "prompt": prompt,
                "start_image_url": "https://example.com/lantern.jpg",
                "duration": 5,
            }
            jobs.append({"id": f"clip-{i:05d}", "model": I2V, "input": body})
        else:
            jobs.append({"id": f"clip-{i:05d}", "model": T2V, "input": {"prompt": prompt}})
    return jobs


def ideal_makespan(records: list[dict[str, Any]], workers: int) -> float:
    """FIFO on ``workers`` servers, every job available at 0, each taking what it drew."""
    free = [0.0] * workers
    end = 0.0
    for r in records:
        start = heapq.heappop(free)
        done = start + r["seconds"]
        end = max(end, done)
        heapq.heappush(free, done)
    return end


async def run_once(
    emu: EmulatorProcess, jobs: list[dict[str, Any]], out: Path, args: argparse.Namespace
) -> tuple[BatchRunner, float, float, float]:
    async with RunComfyClient(
        emu.token,
        base_url=emu.base_url,
        poll=PollPolicy(time_scale=args.time_scale),
        requests_per_second=None,
        max_in_flight=args.concurrency,
        include_cost=True,
    ) as client:
        runner = BatchRunner(
            jobs, out, client=client, concurrency=args.concurrency, progress=args.progress
        )
        cpu0 = time.process_time()
        t0 = time.monotonic()
        report = await runner.run()
        t1 = time.monotonic()
        cpu = time.process_time() - cpu0
    if not report.ok:
        raise SystemExit(f"the batch did not succeed: {report.counts}")
    return runner, t0, t1, cpu


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    config = {"time_scale": args.time_scale, "workers": args.workers, "seed": args.seed}
    emu = EmulatorProcess(config)
    try:
        jobs = manifest(args.jobs)
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
            out = Path(tmp) / "out"
            runner, t0, t1, cpu = await run_once(emu, jobs, out, args)
            counters = emu.counters()
            records = emu.records()
            files = sum(1 for name in os.listdir(out) if name.endswith(".mp4"))
            rerun, r0, r1, rerun_cpu = await run_once(emu, jobs, out, args)
            after = emu.counters()
    finally:
        emu.close()
    makespan = t1 - t0
    ideal = ideal_makespan(records, args.workers)
    last_finish = max(r["finished"] for r in records) - t0
    first_create = min(r["created"] for r in records) - t0
    return {
        "config": {
            "jobs": args.jobs,
            "time_scale": args.time_scale,
            "emulator_workers": args.workers,
            "concurrency": args.concurrency,
            "seed": args.seed,
            "progress": args.progress,
            "python": sys.version.split()[0],
        },
        "makespan_s": round(makespan, 3),
        "ideal_s": round(ideal, 3),
        "makespan_over_ideal": round(makespan / ideal, 4),
        "emulator_last_finish_s": round(last_finish, 3),
        "first_submit_s": round(first_create, 3),
        "tail_s": round(makespan - last_finish, 3),
        "process_cpu_s": round(cpu, 3),
        "journal_cpu_s": round(runner.journal_cpu_seconds, 3),
        "journal_cpu_share": round(runner.journal_cpu_seconds / cpu, 4),
        "journal_calls": runner.journal_calls,
        "journal_commits": runner.journal_commits,
        "api_requests_per_job": round(counters["requests"] / args.jobs, 3),
        "submits_per_job": round(counters["submit"] / args.jobs, 3),
        "checks_per_job": round((counters["status"] + counters["result"]) / args.jobs, 3),
        "storage_requests_per_job": round(counters["storage_requests"] / args.jobs, 3),
        "jobs_created": counters["jobs_created"],
        "files_on_disk": files,
        "storage_auth_headers": counters["storage_auth_headers"],
        "rerun_s": round(r1 - r0, 3),
        "rerun_cpu_s": round(rerun_cpu, 3),
        "rerun_api_requests": after["requests"] - counters["requests"],
        "rerun_submitted": rerun.submitted,
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        ("jobs", result["config"]["jobs"]),
        ("emulator workers / runner concurrency", "{emulator_workers} / {concurrency}"),
        ("makespan (s)", result["makespan_s"]),
        ("ideal: emulator alone, FIFO (s)", result["ideal_s"]),
        ("makespan / ideal (target <= 1.10)", result["makespan_over_ideal"]),
        ("first submit after start (s)", result["first_submit_s"]),
        ("emulator's last finish after start (s)", result["emulator_last_finish_s"]),
        ("tail: last finish -> report written (s)", result["tail_s"]),
        ("process CPU (s)", result["process_cpu_s"]),
        ("journal CPU (s)", result["journal_cpu_s"]),
        ("journal share of CPU (target < 5%)", f"{100 * result['journal_cpu_share']:.2f}%"),
        ("journal calls / commits", f"{result['journal_calls']} / {result['journal_commits']}"),
        ("API requests per job", result["api_requests_per_job"]),
        ("  submits / checks per job", f"{result['submits_per_job']} / {result['checks_per_job']}"),
        ("storage requests per job", result["storage_requests_per_job"]),
        ("jobs created / files on disk", f"{result['jobs_created']} / {result['files_on_disk']}"),
        ("storage requests with Authorization", result["storage_auth_headers"]),
        ("rerun of the finished batch (s)", result["rerun_s"]),
        ("  rerun API requests / submits", f"{result['rerun_api_requests']} / 0"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = []
    for name, value in rows:
        text = str(value).format(**result["config"]) if isinstance(value, str) else str(value)
        lines.append(f"{name:<{width}}  {text}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.005)
    parser.add_argument("--workers", type=int, default=50, help="emulator workers")
    parser.add_argument("--concurrency", type=int, default=100, help="runner concurrency")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--progress", choices=("off", "log"), default="off")
    parser.add_argument("--out", default=str(HERE / "results" / "bench_batch.json"))
    parser.add_argument("--serve-emulator", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_emulator:
        asyncio.run(serve_emulator(json.loads(args.serve_emulator)))
        return
    result = asyncio.run(bench(args))
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
