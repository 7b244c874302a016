"""A 300-job batch drained by 1, 2 and 3 runner processes sharing one PostgreSQL journal.

    python benchmarks/bench_fleet.py                 # 300 jobs, account cap 10
    python benchmarks/bench_fleet.py --jobs 120      # a quicker look

The emulator runs in its own process (``_emuproc.py``) with a per-account
concurrency limit (``max_jobs_per_token``) and every generation the same
length, so the server's bound is exact: ``ceil(jobs / cap)`` generations one
after another. Each runner is a process of its own
(``BatchRunner(..., journal=postgresql://..., concurrency=cap)``), all
started together on a fresh batch key, into one shared output directory; a
throwaway PostgreSQL cluster on loopback holds the journal.

Reported per fleet size: makespan (processes started to all exited, Python
start-up included) and the journal's span (first submit to last job seen
finished) against the server's bound (it should stay
there, not divide by the number of runners: the account is the bottleneck,
and the runners share its cap through the journal), submits refused by the
account limit (429; 0 when the cap is shared), the most jobs the account had
at once, duplicate submits, and the journal's database round trips per job
(every statement each runner sent, heartbeats and claims included; for the
baseline, one runner on the default SQLite journal, its calls). Prints a
table and writes ``benchmarks/results/bench_fleet.json`` with the git commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from tests.servers import running_postgres  # noqa: E402  (the repository's throwaway server)

T2V = "kling/kling-3.0/pro/text-to-video"
GENERATION = 100.0  # model seconds per job (times the time scale)

_RUNNER = """
import json, sys, anyio
from runcomfy_async import PollPolicy, RunComfyClient
from runcomfy_async.batch import BatchRunner

async def main(cfg):
    async with RunComfyClient(cfg["token"], base_url=cfg["base_url"], max_in_flight=cfg["cap"],
                              requests_per_second=None, include_cost=True,
                              poll=PollPolicy(time_scale=cfg["time_scale"])) as client:
        runner = BatchRunner(cfg["manifest"], cfg["out"], client=client, progress=False,
                             journal=cfg["dsn"] or None, batch_key=cfg["key"],
                             concurrency=cfg["cap"],
                             lease_seconds=cfg["lease"])
        report = await runner.run()
    print(json.dumps({"calls": runner.journal_calls, "submitted": runner.submitted,
                      "resumed": runner.resumed, "downloaded": runner.downloaded,
                      "ok": report.ok}), flush=True)

anyio.run(main, json.loads(sys.argv[1]))
"""


class EmulatorProcess:
    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_emuproc.py"), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        info = json.loads(self.proc.stdout.readline())
        self.base_url: str = info["base_url"]
        self.token: str = info["token"]

    def counters(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base_url + "/_emulator/counters") as resp:
            counters: dict[str, Any] = json.load(resp)
        return counters

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def git_commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return found.stdout.strip() or "unknown"


async def journal_span(dsn: str, key: str) -> tuple[float, float]:
    """Seconds from the first submit to the last job seen finished, and to the last file saved."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT min(submitted_at) AS s, max(finished_at) AS f, max(downloaded_at) AS d "
            "FROM runcomfy_jobs WHERE batch_key = $1",
            key,
        )
    finally:
        await conn.close()
    assert row is not None
    return row["f"] - row["s"], row["d"] - row["s"]


def write_manifest(path: Path, n: int, tag: str) -> None:
    with path.open("w") as f:
        for i in range(n):
            body = {"prompt": f"{tag} clip {i}: a paper lantern over a night market"}
            f.write(json.dumps({"id": f"clip-{i:04d}", "model": T2V, "input": body}) + "\n")


def sqlite_span(out: Path) -> tuple[float, float]:
    """As :func:`journal_span`, from a SQLite journal."""
    from runcomfy_async.batch import Journal

    rows = (Journal.read(out) or {}).values()
    first = min(r.submitted_at for r in rows if r.submitted_at is not None)
    finished = max(r.finished_at for r in rows if r.finished_at is not None)
    saved = max(r.downloaded_at for r in rows if r.downloaded_at is not None)
    return finished - first, saved - first


def run_fleet(
    args: argparse.Namespace, dsn: str, runners: int, workdir: Path, *, sqlite: bool = False
) -> dict[str, Any]:
    """Run one fleet of ``runners`` processes (``sqlite``: one runner, SQLite journal)."""
    emu = EmulatorProcess(
        {
            "time_scale": args.time_scale,
            "workers": 4 * args.cap,
            "seed": 1,
            "uniform": {T2V: [GENERATION, GENERATION]},
            "max_jobs_per_token": args.cap,
        }
    )
    try:
        key = f"bench-{runners}-{uuid.uuid4().hex[:6]}"
        manifest = workdir / f"{key}.jsonl"
        write_manifest(manifest, args.jobs, key)
        out = workdir / key
        cfg = {
            "token": emu.token,
            "base_url": emu.base_url,
            "cap": args.cap,
            "time_scale": args.time_scale,
            "manifest": str(manifest),
            "out": str(out),
            "dsn": "" if sqlite else dsn,
            "key": key,
            "lease": args.lease,
        }
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RUNNER, json.dumps(cfg)],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for _ in range(runners)
        ]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        makespan = time.perf_counter() - started
        if any(p.returncode for p in procs):
            raise SystemExit(f"a runner failed: {[p.returncode for p in procs]}")
        each = [json.loads(o.strip().splitlines()[-1]) for o in outs]
        counters = emu.counters()
    finally:
        emu.close()
    bound = math.ceil(args.jobs / args.cap) * GENERATION * args.time_scale
    finished, saved = sqlite_span(out) if sqlite else asyncio.run(journal_span(dsn, key))
    calls = sum(e["calls"] for e in each)
    return {
        "runners": f"{runners} (SQLite)" if sqlite else runners,
        "makespan_s": round(makespan, 2),
        "server_bound_s": round(bound, 2),
        "makespan_over_bound": round(makespan / bound, 3),
        "first_submit_to_last_finish_s": round(finished, 2),
        "first_submit_to_last_file_s": round(saved, 2),
        "submitted_per_runner": [e["submitted"] for e in each],
        "all_ok": all(e["ok"] for e in each),
        "jobs_created": counters["jobs_created"],
        "duplicate_submits": counters["duplicate_submits"],
        "account_limited_429": counters["account_limited"],
        "max_active_per_token": max(counters["max_active_per_token"].values()),
        "files_on_disk": len(list(out.glob("*.mp4"))),
        "db_round_trips": calls,
        "db_round_trips_per_job": round(calls / args.jobs, 2),
    }


def table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("runners", "runners"),
        ("makespan s", "makespan_s"),
        ("bound s", "server_bound_s"),
        ("/bound", "makespan_over_bound"),
        ("submit->last finish s", "first_submit_to_last_finish_s"),
        ("submits per runner", "submitted_per_runner"),
        ("429 (cap)", "account_limited_429"),
        ("max active", "max_active_per_token"),
        ("dup", "duplicate_submits"),
        ("files", "files_on_disk"),
        ("DB trips/job", "db_round_trips_per_job"),
    ]
    cells = [[h for h, _ in cols]] + [[str(r[k]) for _, k in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join(
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--cap", type=int, default=10, help="the account's concurrency limit")
    parser.add_argument("--time-scale", type=float, default=0.004)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--fleets", default="1,2,3", help="runner counts to measure")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the one-runner SQLite baseline"
    )
    parser.add_argument("--out", default=str(HERE / "results" / "bench_fleet.json"))
    args = parser.parse_args()
    rows = []
    with running_postgres() as dsn, tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        if not args.no_baseline:
            rows.append(run_fleet(args, dsn, 1, Path(tmp), sqlite=True))
            print(table(rows[-1:]), flush=True)
        for n in (int(x) for x in args.fleets.split(",")):
            rows.append(run_fleet(args, dsn, n, Path(tmp)))
            print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))
    result = {
        "commit": git_commit(),
        "config": {
            "jobs": args.jobs,
            "cap": args.cap,
            "time_scale": args.time_scale,
            "generation_s": GENERATION * args.time_scale,
            "lease_s": args.lease,
        },
        "fleets": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
