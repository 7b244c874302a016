"""An API that cannot be reached is found out once, fast, and named: not job by job."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runcomfy_async import APIUnreachableError, PollPolicy, RetryPolicy, RunComfyClient
from runcomfy_async.batch import BatchRunner
from runcomfy_async.batch._journal import JOURNAL_NAME
from runcomfy_async.emulator import Emulator, Faults

MakeEmulator = Callable[..., Awaitable[Emulator]]
T2V = "kling/kling-3.0/pro/text-to-video"


def closed_port() -> int:
    """A loopback port nobody listens on (bound, read back, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_manifest(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            body = {"prompt": f"clip {i}: a paper boat on a stream", "duration": 5}
            f.write(json.dumps({"id": f"clip-{i:03d}", "model": T2V, "input": body}) + "\n")
    return path


def journal_states(out: Path) -> dict[str, int]:
    with sqlite3.connect(out / JOURNAL_NAME) as db:
        return dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())


async def cli(*args: str, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runcomfy_async.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def env_with_token() -> dict[str, str]:
    env = {**os.environ, "RUNCOMFY_API_TOKEN": "test-token-unreachable"}
    env.pop("RUNCOMFY_BASE_URL", None)
    return env


async def test_a_batch_to_a_closed_port_stops_at_once_and_names_the_host(tmp_path: Path) -> None:
    port = closed_port()
    jobs = write_manifest(tmp_path / "m.jsonl", 300)
    out = tmp_path / "out"
    # 30 s is the acceptance bound (a hang guard here; benchmarks/first_hour.py times it).
    code, stdout, stderr = await cli(
        "batch", str(jobs), "--out", str(out), "--base-url", f"http://127.0.0.1:{port}",
        env=env_with_token(), timeout=30,
    )  # fmt: skip
    assert code == 2, stdout + stderr
    address = f"127.0.0.1:{port}"
    # Said once, with the host and port, and how to check it.
    assert (stdout + stderr).count("cannot reach the API") == 1, stdout + stderr
    assert f"error: cannot reach the API at {address} (connection refused)" in stderr
    assert "curl" in stderr and "nothing was submitted" in stdout
    # No job was marked submitted (or anything but planned): a rerun submits them all.
    assert journal_states(out) == {"planned": 300}
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"not_submitted": 300} and report["submitted"] == 0


async def test_a_batch_to_a_name_that_does_not_resolve_says_so(tmp_path: Path) -> None:
    jobs = write_manifest(tmp_path / "m.jsonl", 20)
    code, _, stderr = await cli(
        "batch", str(jobs), "--out", str(tmp_path / "out"),
        "--base-url", "https://no-such-host.invalid", env=env_with_token(), timeout=60,
    )  # fmt: skip
    assert code == 2, stderr
    assert "cannot reach the API at no-such-host.invalid:443 (the name does not resolve" in stderr


async def test_run_to_an_unreachable_api_names_the_host(tmp_path: Path) -> None:
    port = closed_port()
    code, _, stderr = await cli(
        "run", T2V, "--input", '{"prompt": "a red fox"}', "--base-url",
        f"http://127.0.0.1:{port}", "--out", str(tmp_path), env=env_with_token(), timeout=60,
    )  # fmt: skip
    assert code == 1
    assert f"cannot connect to 127.0.0.1:{port}" in stderr, stderr


async def test_library_runs_get_the_same_error_as_the_runners_fatal_error(tmp_path: Path) -> None:
    port = closed_port()
    async with RunComfyClient(
        "token", base_url=f"http://127.0.0.1:{port}", retry=RetryPolicy.no_wait()
    ) as client:
        runner = BatchRunner(write_manifest(tmp_path / "m.jsonl", 40), tmp_path / "o")
        report = await runner.run(client=client)
    error = runner.fatal_error
    assert isinstance(error, APIUnreachableError)
    assert (error.host, error.port, error.request_sent) == ("127.0.0.1", port, False)
    assert report.counts == {"not_submitted": 40}


async def test_submits_refused_with_429_at_first_do_not_look_unreachable(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    """Retries that are answered (429) make the runner probe the host; it answers: go on."""
    emu = await make_emulator(
        time_scale=0.0005, faults=Faults(rate_429=1.0, retry_after=0.05, routes={"submit"})
    )
    async with RunComfyClient(
        emu.token,
        base_url=emu.base_url,
        retry=RetryPolicy(attempts=30, max_delay=0.05),
        requests_per_second=None,
        poll=PollPolicy(time_scale=0.0005),
    ) as client:
        runner = BatchRunner(
            write_manifest(tmp_path / "m.jsonl", 12), tmp_path / "o", progress=False
        )
        task = asyncio.create_task(runner.run(client=client))
        for _ in range(3000):  # every submit refused, again and again
            if emu.counters.submit >= 20:
                break
            await asyncio.sleep(0.01)
        emu.faults.rate_429 = 0.0
        report = await asyncio.wait_for(task, 60)
    assert runner.fatal_error is None
    assert report.counts == {"succeeded": 12}


@pytest.fixture(autouse=True)
def _no_env_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNCOMFY_BASE_URL", raising=False)
