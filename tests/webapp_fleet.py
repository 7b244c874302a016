"""A fleet of ``examples/webapp.py`` worker processes against one emulator.

Used by ``tests/test_webapp_shared.py`` (the acceptance test) and
``benchmarks/bench_shared.py`` (the side-by-side numbers). Each worker is a
real process serving the example app on its own loopback port, configured
only through the environment, as a deployment would configure gunicorn
workers; the driver sends clip requests to them round-robin, all at once,
and reads what the API saw from the emulator's counters route.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["EXAMPLE", "drive", "emulator_counters", "fleet_env", "run_workers", "summary"]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "webapp.py"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fleet_env(
    *,
    base_url: str,
    token: str,
    time_scale: float,
    requests_per_second: float,
    redis_url: str | None,
    key: str = "runcomfy",
    clip_timeout: float = 120.0,
) -> dict[str, str]:
    """The environment of one worker (``redis_url`` None: in-memory limits)."""
    env = {
        "RUNCOMFY_API_TOKEN": token,
        "RUNCOMFY_BASE_URL": base_url,
        "RUNCOMFY_POLL_TIME_SCALE": str(time_scale),
        "RUNCOMFY_REQUESTS_PER_SECOND": str(requests_per_second),
        "RUNCOMFY_CLIP_TIMEOUT": str(clip_timeout),
    }
    if redis_url is not None:
        env["RUNCOMFY_REDIS_URL"] = redis_url
        env["RUNCOMFY_REDIS_KEY"] = key
    return env


class _Fleet:
    """The worker processes, their ports and log files (blocking parts, run in a thread)."""

    def __init__(self, n: int, env: Mapping[str, str]) -> None:
        self.ports = [_free_port() for _ in range(n)]
        self.logdir = Path(tempfile.mkdtemp(prefix="rca-webapp-"))
        self.env = {**os.environ, **env}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for i, port in enumerate(self.ports):
            with (self.logdir / f"worker{i}.log").open("wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, str(EXAMPLE), "--port", str(port)],
                        env=self.env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        for i, (proc, port) in enumerate(zip(self.procs, self.ports, strict=True)):
            while True:
                if proc.poll() is not None:
                    log = (self.logdir / f"worker{i}.log").read_text(errors="replace")
                    raise RuntimeError(f"worker {i} exited with {proc.returncode}: {log[-2000:]}")
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2),
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {i} did not listen on port {port} within 60 s")
                time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # aiohttp's run_app shuts down cleanly
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.logdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def run_workers(n: int, env: Mapping[str, str]) -> AsyncIterator[list[str]]:
    """Start ``n`` worker processes; yield their base URLs; stop them with SIGTERM."""
    fleet = _Fleet(n, env)
    try:
        await asyncio.to_thread(fleet.start)
        await asyncio.to_thread(fleet.wait_listening)
        yield [f"http://127.0.0.1:{port}" for port in fleet.ports]
    finally:
        await asyncio.to_thread(fleet.stop)


async def drive(urls: list[str], clips: int) -> dict[str, Any]:
    """Send ``clips`` ``POST /clips`` at once, round-robin; their statuses and the wall time."""
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=0)
    statuses: list[int] = []
    bodies: list[Any] = []

    async def one(http: aiohttp.ClientSession, i: int) -> None:
        async with http.post(f"{urls[i % len(urls)]}/clips", json={"prompt": f"fox {i}"}) as r:
            statuses.append(r.status)
            bodies.append(await r.json())

    start = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        await asyncio.gather(*(one(http, i) for i in range(clips)))
    return {"statuses": statuses, "bodies": bodies, "seconds": time.monotonic() - start}


async def emulator_counters(base_url: str) -> dict[str, Any]:
    """The emulator's counters (``GET /_emulator/counters``)."""
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/_emulator/counters") as r:
        r.raise_for_status()
        counters: dict[str, Any] = await r.json()
        return counters


def summary(counters: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """What the API saw: answers, the 429 share, the mean and peak request rates."""
    answers: dict[str, int] = counters["answers"]
    total = sum(answers.values())
    limited = answers.get("429", 0)
    return {
        "requests": total,
        "answers_429": limited,
        "share_429": counters["share_429"],
        "mean_rps": total / seconds if seconds else 0.0,
        "accepted_rps": (total - limited) / seconds if seconds else 0.0,
        "peak_rps": counters["peak_rps"],
        "submits": counters["submit"],
        "jobs_created": counters["jobs_created"],
    }
