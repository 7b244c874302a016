"""Soak: thousands of jobs through one client while the emulator misbehaves in every way at once.

    python benchmarks/soak.py                       # 2,000 jobs, time scale 0.01 (~2-3 min)
    python benchmarks/soak.py --jobs 300 --time-scale 0.005 --seed 2   # a quick run

The emulator runs in a child process (so the client's memory is measured
alone) with, all together:

- 10% of API answers 5xx (500/502/503, a third of them HTML gateway pages);
- 5% of connections dropped without an answer (on submit *after* the job was
  created: the client cannot know it exists);
- bursts of 429 with ``Retry-After`` (half of all answers, 1.5 s every 8 s);
- 2% of answers delayed past the client's read timeout;
- 3% of jobs failing on the server;
- an outage of a few seconds (connections refused) when half the jobs are in.

Then it checks, job by job, against the emulator's own records: every job
ended with its result or the right error (a failed job with JobFailedError
for that very request; a submit whose fate is unknown with
SubmitOutcomeUnknown; a submit refused everywhere with an error and no job on
the server); no prompt was ever submitted twice (zero duplicate paid jobs:
``jobs_created`` equals the submits the client knows were accepted plus the
unknown ones the server did create); the scheduler is still alive at the end
(one more job goes through); and memory (tracemalloc) does not grow with the
number of jobs already finished (samples at 25/50/75/100%).

Prints a table and writes ``benchmarks/results/soak.json``; exits 1 when a
check fails. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import os
import sys
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runcomfy_async import (
    JobFailedError,
    KlingTextToVideo,
    PollPolicy,
    RateLimitError,
    Result,
    RetryPolicy,
    RunComfyClient,
    ServerError,
    SubmitOutcomeUnknown,
    TransportError,
)

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
RESULTS = HERE / "results" / "soak.json"
PROMPT = "soak {seed} #{index}"


# -- the emulator's side: a child process driven over stdin/stdout ------------------------


async def serve_emulator(config: dict[str, Any]) -> None:
    """Child process: run an emulator and obey one JSON command per stdin line."""
    from runcomfy_async.emulator import Emulator, Faults

    # Dropped connections and the outage make aiohttp's server log every
    # handler that lost its client: expected here, and noise on the console.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    faults = Faults(**config["faults"])
    async with Emulator(
        time_scale=config["time_scale"],
        workers=config["workers"],
        seed=config["seed"],
        faults=faults,
    ) as emu:
        _reply({"base_url": emu.base_url, "token": emu.token})
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            verb = command.pop("cmd")
            if verb == "faults":
                for name, value in command.items():
                    setattr(emu.faults, name, value)
                _reply({"ok": True})
            elif verb == "clear_faults":
                emu.faults = Faults()
                _reply({"ok": True})
            elif verb == "outage":
                await emu.outage(command["seconds"])
                _reply({"ok": True})
            elif verb == "report":
                jobs = [
                    [job.payload.get("prompt", ""), job.request_id, job.state]
                    for job in emu.jobs.values()
                ]
                _reply({"counters": emu.counters.as_dict(), "jobs": jobs})
            elif verb == "stop":
                _reply({"ok": True})
                return


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class EmulatorProcess:
    """The parent's handle on the child emulator."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.base_url = ""
        self.token = ""

    async def __aenter__(self) -> EmulatorProcess:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--serve-emulator",
            json.dumps(self.config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        ready = await self._read()
        self.base_url, self.token = ready["base_url"], ready["token"]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        with contextlib.suppress(Exception):
            await self.command("stop")
        self._proc.stdin.close()
        try:
            await asyncio.wait_for(self._proc.wait(), 10)
        except asyncio.TimeoutError:
            self._proc.kill()
            await self._proc.wait()

    async def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def command(self, verb: str, **arguments: Any) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        async with self._lock:
            self._proc.stdin.write((json.dumps({"cmd": verb, **arguments}) + "\n").encode())
            await self._proc.stdin.drain()
            return await self._read()


# -- the client's side ------------------------------------------------------------------------


def _client_bytes() -> int:
    """Bytes allocated and still alive, leaving out this script's own bookkeeping."""
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def _chaos(
    emu: EmulatorProcess,
    args: argparse.Namespace,
    half_submitted: asyncio.Event,
    log: list[dict[str, Any]],
    started: float,
) -> None:
    """Bursts of 429 every ``--burst-every`` seconds; one outage when half the jobs are in."""

    async def bursts() -> None:
        while True:
            await asyncio.sleep(args.burst_every)
            log.append({"at": round(time.monotonic() - started, 1), "event": "429 burst"})
            await emu.command("faults", rate_429=0.5)
            await asyncio.sleep(args.burst_seconds)
            await emu.command("faults", rate_429=0.0)

    async def outage() -> None:
        await half_submitted.wait()
        log.append({"at": round(time.monotonic() - started, 1), "event": "outage"})
        await emu.command("outage", seconds=args.outage)

    await asyncio.gather(bursts(), outage())


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    faults = {
        "rate_500": 0.04,
        "rate_502": 0.03,
        "rate_503": 0.03,
        "html_rate": 0.33,
        "drop_rate": 0.05,
        "drop_after_create": True,
        "slow_rate": 0.02,
        "slow_seconds": args.read_timeout * 2,
        "retry_after": 1.0,
        "fail_rate": 0.03,
        "seed": args.seed,
    }
    config = {
        "time_scale": args.time_scale,
        "workers": args.workers,
        "seed": args.seed,
        "faults": faults,
    }
    n = args.jobs
    # index -> (kind, request_id or None); kind is "result" or an error class name
    ends: list[tuple[str, str | None] | None] = [None] * n
    samples: list[dict[str, Any]] = []
    marks = sorted({max(1, n * q // 4) for q in (1, 2, 3, 4)})
    finished = 0
    submitted = 0
    half_submitted = asyncio.Event()
    chaos_log: list[dict[str, Any]] = []

    async with EmulatorProcess(config) as emu:
        tracemalloc.start()
        baseline = _client_bytes()
        client = RunComfyClient(
            emu.token,
            base_url=emu.base_url,
            poll=PollPolicy(time_scale=args.time_scale),
            requests_per_second=args.rps,
            max_in_flight=args.in_flight,
            read_timeout=args.read_timeout,
            retry=RetryPolicy(),
        )
        started = time.monotonic()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def worker() -> None:
            nonlocal finished, submitted
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                clip = KlingTextToVideo(prompt=PROMPT.format(seed=args.seed, index=i), duration=5)
                request_id = None
                try:
                    job = await client.submit(clip)
                    request_id = job.request_id
                    submitted += 1
                    if submitted >= n // 2:
                        half_submitted.set()
                    result = await job
                    assert isinstance(result, Result)
                    ends[i] = ("result", request_id)
                except Exception as exc:
                    ends[i] = (type(exc).__name__, request_id)
                finished += 1
                if marks and finished >= marks[0]:
                    marks.pop(0)
                    samples.append(
                        {
                            "finished": finished,
                            "share": round(finished / n, 2),
                            "bytes": _client_bytes() - baseline,
                            "in_flight": client.in_flight,
                            "tracking": client.poll_stats.tracking,
                            "seconds": round(time.monotonic() - started, 1),
                        }
                    )

        async with client:
            chaos = asyncio.create_task(_chaos(emu, args, half_submitted, chaos_log, started))
            await asyncio.gather(*(worker() for _ in range(args.in_flight)))
            makespan = time.monotonic() - started
            chaos.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chaos
            await asyncio.sleep(args.outage)  # let an outage that is still on end
            await emu.command("clear_faults")
            scheduler_alive = client._poller._runner is not None and not (
                client._poller._runner.done()
            )
            probe = await client.run(KlingTextToVideo(prompt="after the soak"), timeout=60)
            client_figures = {
                "scheduler_alive": scheduler_alive,
                "checks": client.poll_stats.checks,
                "check_failures": client.poll_stats.check_failures,
                "budget_granted": client.budget.granted,
                "budget_rate_limited": client.budget.rate_limited,
                "final_rate": client.budget.rate,
            }
        tracemalloc.stop()
        report = await emu.command("report")

    return _verify(args, ends, report, samples, chaos_log, makespan, client_figures, probe)


# -- the checks ----------------------------------------------------------------------------------

# Errors a submit may end with, and whether the server may then hold a job for it.
SUBMIT_ERRORS = {
    SubmitOutcomeUnknown.__name__: "0 or 1",
    TransportError.__name__: "0",  # never sent (connection refused, e.g. the outage)
    RateLimitError.__name__: "0",  # refused every time
    ServerError.__name__: "0",  # 503 every time: refused
}


def _verify(
    args: argparse.Namespace,
    ends: list[tuple[str, str | None] | None],
    report: dict[str, Any],
    samples: list[dict[str, Any]],
    chaos_log: list[dict[str, Any]],
    makespan: float,
    client_figures: dict[str, Any],
    probe: Result,
) -> dict[str, Any]:
    prefix = PROMPT.format(seed=args.seed, index="")
    server: dict[int, list[tuple[str, str]]] = collections.defaultdict(list)
    for prompt, request_id, state in report["jobs"]:
        if prompt.startswith(prefix):
            server[int(prompt[len(prefix) :])].append((request_id, state))
    kinds: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    unknown_created = 0
    accepted = 0
    for i, end in enumerate(ends):
        if end is None:
            wrong.append(f"#{i}: no outcome")
            continue
        kind, request_id = end
        kinds[kind] += 1
        jobs = server.get(i, [])
        if request_id is not None:
            accepted += 1
            states = dict(jobs)
            expected = {"result": "succeeded", JobFailedError.__name__: "failed"}.get(kind)
            if expected is None:
                wrong.append(f"#{i}: job {request_id} ended with {kind}")
            elif states.get(request_id) != expected:
                wrong.append(f"#{i}: {kind} but the server says {states.get(request_id)}")
        elif kind in SUBMIT_ERRORS:
            if SUBMIT_ERRORS[kind] == "0" and jobs:
                wrong.append(f"#{i}: {kind} yet the server created {jobs}")
            unknown_created += kind == SubmitOutcomeUnknown.__name__ and bool(jobs)
        else:
            wrong.append(f"#{i}: submit ended with {kind}")
    duplicates = {i: jobs for i, jobs in server.items() if len(jobs) > 1}
    counters = report["counters"]
    soak_jobs = sum(len(jobs) for jobs in server.values())
    growth = None
    if len(samples) >= 3:
        first, third = samples[0], samples[2]
        growth = (third["bytes"] - first["bytes"]) / max(1, third["finished"] - first["finished"])
    checks = {
        "every job ended with its result or the right error": not wrong,
        "no duplicate submissions": not duplicates,
        "jobs_created == accepted + unknown-but-created": soak_jobs == accepted + unknown_created
        and counters["jobs_created"] == soak_jobs + 1,  # + the job after the soak
        "scheduler alive at the end": client_figures.pop("scheduler_alive", True),
        "one more job after the soak": probe.video is not None,
        "memory flat in finished jobs (< 1 KiB per job, 25%->75%)": growth is not None
        and growth < 1024,
    }
    return {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "args": vars(args),
        "python": sys.version.split()[0],
        "makespan_seconds": round(makespan, 1),
        "outcomes": dict(kinds.most_common()),
        "accepted_submits": accepted,
        "unknown_submits_created_on_server": unknown_created,
        "server_jobs_for_soak_prompts": soak_jobs,
        "duplicates": len(duplicates),
        "wrong": wrong[:50],
        "memory_samples": samples,
        "memory_growth_bytes_per_finished_job": None if growth is None else round(growth, 1),
        "chaos": chaos_log,
        "client": client_figures,
        "emulator_counters": counters,
        "requests_per_job": round(counters["requests"] / max(1, soak_jobs), 2),
        "checks": checks,
        "ok": all(checks.values()),
    }


def _print(summary: dict[str, Any]) -> None:
    c = summary["emulator_counters"]
    rows = [
        ("jobs", summary["args"]["jobs"]),
        ("makespan (s)", summary["makespan_seconds"]),
        *((f"outcome: {k}", v) for k, v in summary["outcomes"].items()),
        ("accepted submits", summary["accepted_submits"]),
        ("unknown submits that did create a job", summary["unknown_submits_created_on_server"]),
        ("server jobs for soak prompts", summary["server_jobs_for_soak_prompts"]),
        ("emulator jobs_created (incl. 1 after)", c["jobs_created"]),
        ("duplicate submissions", summary["duplicates"]),
        ("API requests (all routes)", c["requests"]),
        ("requests per server job", summary["requests_per_job"]),
        ("injected: 5xx", c["fault_500"] + c["fault_502"] + c["fault_503"]),
        ("injected: dropped connections", c["fault_drop"]),
        ("injected: 429", c["fault_429"]),
        ("injected: slow answers", c["fault_slow"]),
        ("injected: failed jobs", c["fault_fail"]),
        ("injected: outages", c["outages"]),
        (
            "client checks / failed checks",
            "{checks} / {check_failures}".format(**summary["client"]),
        ),
        (
            "client 429s seen / final rate",
            "{} / {:.1f}/s".format(
                summary["client"]["budget_rate_limited"], summary["client"]["final_rate"]
            ),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    print("\n  memory (tracemalloc, client side, above baseline)")
    print(f"  {'finished':>9} {'share':>6} {'KiB':>9} {'in flight':>10} {'seconds':>8}")
    for s in summary["memory_samples"]:
        print(
            f"  {s['finished']:>9} {s['share']:>6} {s['bytes'] / 1024:>9.0f} "
            f"{s['in_flight']:>10} {s['seconds']:>8}"
        )
    print(f"  growth 25%->75%: {summary['memory_growth_bytes_per_finished_job']} bytes/job")
    print()
    for name, passed in summary["checks"].items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    for line in summary["wrong"][:10]:
        print(f"    {line}")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=64, help="emulator jobs running at once")
    parser.add_argument("--in-flight", type=int, default=128, help="client max_in_flight")
    parser.add_argument("--rps", type=float, default=200.0, help="client requests_per_second")
    parser.add_argument("--read-timeout", type=float, default=1.0)
    parser.add_argument("--outage", type=float, default=4.0, help="outage seconds")
    parser.add_argument("--burst-every", type=float, default=8.0)
    parser.add_argument("--burst-seconds", type=float, default=1.5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--serve-emulator", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_emulator:
        asyncio.run(serve_emulator(json.loads(args.serve_emulator)))
        return 0
    output: Path = args.output
    del args.serve_emulator, args.output
    summary = asyncio.run(soak(args))
    _print(summary)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"  wrote {os.path.relpath(output)}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
