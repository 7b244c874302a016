"""Four web-app workers on one account: in-memory limits vs one shared RedisLimits.

The same fleet twice against a fresh emulator with a real per-account rate
limit (``Faults(rps_limit=...)``, in a process of its own): four worker
processes of ``examples/webapp.py`` (each configured only by environment),
driven with ``--clips`` concurrent ``POST /clips`` round-robin. First each
worker has its own in-memory budget of the account's rate (together they
offer four times the limit: a storm of 429s); then all four share one
``RedisLimits`` on a throwaway ``redis-server``. Prints the two side by side
and writes ``benchmarks/results/bench_shared.json`` with the git commit.

    python benchmarks/bench_shared.py [--clips 120] [--limit 30] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.servers import redis_server  # noqa: E402
from tests.webapp_fleet import (  # noqa: E402
    drive,
    emulator_counters,
    fleet_env,
    run_workers,
    summary,
)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


async def _emulator(config: dict[str, Any]) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "_emuproc.py"),
        json.dumps(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    return proc, json.loads(line)


async def one_run(args: argparse.Namespace, redis_url: str | None) -> dict[str, Any]:
    """One fleet against a fresh emulator; ``redis_url`` None means in-memory limits."""
    config = {
        "time_scale": args.time_scale,
        "workers": 1000,
        "seed": 1,
        "faults": {"rps_limit": args.limit},
    }
    emu, info = await _emulator(config)
    try:
        env = fleet_env(
            base_url=info["base_url"],
            token=info["token"],
            time_scale=args.time_scale,
            requests_per_second=args.limit,
            redis_url=redis_url,
            key=f"bench-{uuid.uuid4().hex[:8]}",
        )
        async with run_workers(args.workers, env) as urls:
            driven = await drive(urls, args.clips)
        counters = await emulator_counters(info["base_url"])
    finally:
        assert emu.stdin is not None
        emu.stdin.close()
        await emu.wait()
    ok = sum(1 for s in driven["statuses"] if s == 200)
    return {
        "limits": "RedisLimits" if redis_url else "in-memory",
        "clips_ok": ok,
        "seconds": driven["seconds"],
        **summary(counters, driven["seconds"]),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    memory = await one_run(args, None)
    with redis_server() as (url, _):
        shared = await one_run(args, url)
    return {
        "benchmark": "bench_shared",
        "commit": _commit(),
        "config": {
            "workers": args.workers,
            "clips": args.clips,
            "rps_limit": args.limit,
            "requests_per_second_per_worker": args.limit,
            "time_scale": args.time_scale,
        },
        "runs": [memory, shared],
    }


def table(result: dict[str, Any]) -> str:
    memory, shared = result["runs"]
    rows = [
        ("", "in-memory x4", "RedisLimits x4"),
        ("clips answered 200", memory["clips_ok"], shared["clips_ok"]),
        ("API requests", memory["requests"], shared["requests"]),
        ("429 answers", memory["answers_429"], shared["answers_429"]),
        ("429 share", f"{memory['share_429']:.1%}", f"{shared['share_429']:.1%}"),
        ("mean requests/s", f"{memory['mean_rps']:.1f}", f"{shared['mean_rps']:.1f}"),
        ("accepted requests/s", f"{memory['accepted_rps']:.1f}", f"{shared['accepted_rps']:.1f}"),
        ("peak requests in 1 s", memory["peak_rps"], shared["peak_rps"]),
        ("wall time (s)", f"{memory['seconds']:.1f}", f"{shared['seconds']:.1f}"),
    ]
    c = result["config"]
    head = (
        f"{c['workers']} workers, {c['clips']} clips, account limit {c['rps_limit']} requests/s "
        f"(each worker configured with {c['requests_per_second_per_worker']}/s), "
        f"commit {result['commit'][:10]}"
    )
    lines = [head]
    for name, a, b in rows:
        lines.append(f"{name:<22}{a!s:>14}{b!s:>16}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--limit", type=float, default=30.0, help="account requests per second")
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--out", default=str(HERE / "results" / "bench_shared.json"))
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
