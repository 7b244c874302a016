"""First-hour figures: how fast an unreachable API is reported, how fast a second Ctrl-C quits.

    python benchmarks/first_hour.py [--reps 5] [--jobs 300]

1. ``unreachable``: ``runcomfy-async batch`` of N jobs to a closed loopback port;
   wall time of the whole command (interpreter start included) and the
   runner's own elapsed time from ``report.json``; the exit status must be 2.
2. ``second_ctrl_c``: the same batch on ``--emulator`` in a pseudo-terminal;
   one SIGINT, wait for the question on screen, a second SIGINT: seconds from
   the second SIGINT to the process's exit (status 130).

Prints a table; writes ``benchmarks/results/first_hour.json`` with the git commit.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
T2V = "kling/kling-3.0/pro/text-to-video"
QUESTION = b"still queued on the server?"


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


def write_manifest(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            body = {"prompt": f"clip {i}: a paper boat on a stream", "duration": 5}
            f.write(json.dumps({"id": f"clip-{i:03d}", "model": T2V, "input": body}) + "\n")
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def unreachable(manifest: Path, work: Path) -> dict[str, float]:
    out = work / f"unreachable-{time.monotonic_ns()}"
    env = {**os.environ, "RUNCOMFY_API_TOKEN": "bench-token"}
    env.pop("RUNCOMFY_BASE_URL", None)
    args = [sys.executable, "-m", "runcomfy_async.cli", "batch", str(manifest), "--out", str(out)]
    args += ["--base-url", f"http://127.0.0.1:{closed_port()}"]
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - start
    if proc.returncode != 2:
        raise SystemExit(f"unreachable: exit {proc.returncode}\n{proc.stderr}")
    report = json.loads((out / "report.json").read_text())
    return {"wall_s": wall, "runner_s": report["elapsed_seconds"]}


def second_ctrl_c(manifest: Path, work: Path) -> dict[str, float]:
    out = work / f"ctrlc-{time.monotonic_ns()}"
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    args = [sys.executable, "-m", "runcomfy_async.cli", "batch", str(manifest), "--emulator"]
    args += ["--time-scale", "0.05", "--out", str(out)]
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    seen = bytearray()

    def read_until(pattern: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while pattern not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    seen.extend(os.read(master, 65536))
                except OSError:
                    return pattern in seen
        return pattern in seen

    try:
        if not read_until(b"queued", 60):
            raise SystemExit("second_ctrl_c: no job got queued")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        if not read_until(QUESTION, 30):
            raise SystemExit("second_ctrl_c: no question on screen")
        time.sleep(0.3)
        start = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None:
            read_until(b"\0never", 0.01)  # keep the terminal drained
        latency = time.perf_counter() - start
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    if proc.returncode != 130:
        raise SystemExit(f"second_ctrl_c: exit {proc.returncode}")
    return {"latency_s": latency}


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=300)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = write_manifest(work / "m.jsonl", opts.jobs)
        runs_u = [unreachable(manifest, work) for _ in range(opts.reps)]
        runs_c = [second_ctrl_c(manifest, work) for _ in range(opts.reps)]
    result: dict[str, Any] = {
        "commit": git_commit(),
        "jobs": opts.jobs,
        "reps": opts.reps,
        "unreachable_wall_s": summary([r["wall_s"] for r in runs_u]),
        "unreachable_runner_s": summary([r["runner_s"] for r in runs_u]),
        "second_ctrl_c_latency_s": summary([r["latency_s"] for r in runs_c]),
    }
    print(f"{'measure':<32} {'median':>8} {'min':>8} {'max':>8}")
    for key in ("unreachable_wall_s", "unreachable_runner_s", "second_ctrl_c_latency_s"):
        s = result[key]
        print(f"{key:<32} {s['median']:>8.3f} {s['min']:>8.3f} {s['max']:>8.3f}")
    path = HERE / "results" / "first_hour.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
