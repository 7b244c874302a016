"""The ``runcomfy-async`` command: exit codes, messages, and never the token."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runcomfy_async import cli
from runcomfy_async.emulator import Emulator, Faults

MakeEmulator = Callable[..., Awaitable[Emulator]]

ROOT = Path(__file__).resolve().parent.parent
SHOWCASE = ROOT / "examples" / "showcase.jsonl"
T2V = "kling/kling-3.0/pro/text-to-video"
FAST = 0.001
SECRET = "sk-live-SECRET-0123456789"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    monkeypatch.delenv("RUNCOMFY_BASE_URL", raising=False)


def manifest(path: Path, n: int, *, prefix: str = "clip") -> Path:
    with path.open("w") as f:
        for i in range(n):
            body = {"prompt": f"{prefix}-{i}: a paper boat on a stream", "duration": 5}
            f.write(json.dumps({"id": f"{prefix}-{i}", "model": T2V, "input": body}) + "\n")
    return path


async def main_in_thread(*args: str) -> int:
    """Run the command as a user would, in a thread: the test's loop keeps serving."""
    return await asyncio.to_thread(cli.main, list(args))


def test_help_shows_the_commands_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("batch", "run", "submit", "status", "result", "cancel", "emulator"):
        assert command in out
    with pytest.raises(SystemExit):
        cli.main(["batch", "--help"])
    out = capsys.readouterr().out
    assert "runcomfy-async batch examples/showcase.jsonl --emulator --out clips/" in out
    assert "--resubmit-unknown" in out and "--max-cost" in out


def test_emulator_command_is_the_emulators_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["emulator", "--help"])
    assert exc.value.code == 0
    assert "--time-scale" in capsys.readouterr().out


def test_dry_run_prints_the_estimate_and_submits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clips"
    code = cli.main(["batch", str(SHOWCASE), "--out", str(out), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "12 jobs, all valid" in captured.out
    assert "11.68" in captured.out
    assert "Nothing was submitted" in captured.out
    assert not out.exists()  # and no token was needed


def test_dry_run_with_a_max_cost_says_it_would_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["batch", str(SHOWCASE), "--out", str(tmp_path / "o"), "--dry-run"]
    code = cli.main([*args, "--max-cost", "5"])
    assert code == 2
    assert "would be refused" in capsys.readouterr().err


def test_a_bad_manifest_exits_2_naming_every_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"id": "ok", "model": T2V, "input": {"prompt": "fine"}}),
        "{oops",
        json.dumps({"id": "long", "model": T2V, "input": {"prompt": "x", "duration": 60}}),
        json.dumps({"id": "../../etc/x", "model": T2V, "input": {"prompt": "x"}}),
        json.dumps({"id": "ok", "model": T2V, "input": {"prompt": "again"}}),
    ]
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    code = cli.main(["batch", str(bad), "--out", str(out), "--emulator"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {bad}: 4 bad lines, nothing was submitted")
    for n in (2, 3, 4, 5):
        assert f"line {n}" in err
    assert "line 1 " not in err
    assert "Traceback" not in err
    assert not out.exists()


def test_max_cost_refuses_the_run_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clips"
    code = cli.main(["batch", str(SHOWCASE), "--out", str(out), "--emulator", "--max-cost", "5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "$11.68, above --max-cost $5.00; nothing was submitted" in err
    assert not out.exists()


def test_no_token_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["batch", str(SHOWCASE), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "error: no API token: set RUNCOMFY_API_TOKEN (or try --emulator)\n"


def test_the_showcase_runs_on_the_embedded_emulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clips"
    args = ["batch", str(SHOWCASE), "--out", str(out), "--emulator", "--time-scale", "0.002"]
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "succeeded            12" in captured.out
    assert len(list(out.glob("*.mp4"))) == 12
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"succeeded": 12}
    assert "clips: 12/12 done (100%)" in captured.err  # log lines: not a terminal


def test_run_with_the_emulator_downloads_the_clip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = json.dumps({"prompt": "a red fox in the snow", "duration": 5})
    args = ["run", T2V, "--input", payload, "--emulator", "--time-scale", "0.001"]
    code = cli.main([*args, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    saved = Path(captured.out.strip())
    assert saved.parent == tmp_path and saved.suffix == ".mp4" and saved.stat().st_size > 0
    assert "succeeded, cost $0.84" in captured.err


def test_bad_input_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["run", T2V, "--input", '{"prompt": "x", "duration": 99}', "--emulator"])
    err = capsys.readouterr().err
    assert code == 2
    assert "duration" in err and "Traceback" not in err
    code = cli.main(["submit", T2V, "--input", "@" + str(tmp_path / "missing.json")])
    assert code == 2
    assert "cannot read --input file" in capsys.readouterr().err


async def test_submit_status_result_cancel_against_an_api(
    make_emulator: MakeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    emu = await make_emulator(time_scale=1.0, workers=1)
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", emu.token)
    base = ["--base-url", emu.base_url]
    body = tmp_path / "in.json"
    body.write_text(json.dumps({"prompt": "a calm lake"}))
    assert await main_in_thread("submit", T2V, "--input", f"@{body}", *base) == 0
    running = capsys.readouterr().out.strip()
    assert await main_in_thread("submit", T2V, "--input", '{"prompt": "b"}', *base) == 0
    queued = capsys.readouterr().out.strip()
    assert {running, queued} <= set(emu.jobs)

    assert await main_in_thread("status", queued, *base) == 0
    assert capsys.readouterr().out == "in_queue (queue position 1)\n"
    assert await main_in_thread("result", running, *base) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "in_progress"
    assert await main_in_thread("cancel", queued, *base) == 0
    assert capsys.readouterr().out == "cancelled\n"
    assert await main_in_thread("cancel", running, *base) == 1
    assert "not_cancellable" in capsys.readouterr().out


async def test_some_failed_jobs_exit_1_with_a_summary(
    make_emulator: MakeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    emu = await make_emulator(time_scale=FAST, faults=Faults(fail_rate=0.5, seed=3))
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", emu.token)
    jobs = manifest(tmp_path / "m.jsonl", 8)
    args = ["batch", str(jobs), "--out", str(tmp_path / "o"), "--base-url", emu.base_url]
    code = await main_in_thread(*args, "--time-scale", str(FAST))
    out = capsys.readouterr().out
    assert code == 1
    assert emu.counters.jobs_failed > 0
    assert re.search(rf"^\s+failed\s+{emu.counters.jobs_failed}$", out, re.MULTILINE)
    assert "generation_failed" in out
    assert "--retry-failed" in out


async def test_the_token_never_appears_in_output(
    make_emulator: MakeEmulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    emu = await make_emulator(time_scale=FAST)
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", SECRET)  # the emulator refuses it: 401
    jobs = manifest(tmp_path / "m.jsonl", 2)
    out_dir = str(tmp_path / "o")
    for extra in ([], ["--debug"]):
        code = await main_in_thread(
            "batch", str(jobs), "--out", out_dir, "--base-url", emu.base_url, *extra
        )
        captured = capsys.readouterr()
        assert code == 1
        assert SECRET not in captured.out + captured.err
        assert "token" in captured.err
        assert ("Traceback" in captured.err) == bool(extra)
    code = await main_in_thread("status", "abc", "--base-url", emu.base_url, "--debug")
    captured = capsys.readouterr()
    assert code == 1 and "Traceback" in captured.err
    assert SECRET not in captured.out + captured.err
    assert emu.counters.bad_token > 0


async def test_ctrl_c_stops_submitting_cancels_queued_jobs_and_a_rerun_resumes(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    if sys.platform == "win32":
        pytest.skip("SIGINT to a subprocess is POSIX")
    emu = await make_emulator(time_scale=0.005, workers=2)
    jobs = manifest(tmp_path / "m.jsonl", 16)
    out = tmp_path / "o"
    env = {**os.environ, "RUNCOMFY_API_TOKEN": emu.token}
    args = [
        sys.executable, "-m", "runcomfy_async.cli", "batch", str(jobs), "--out", str(out),
        "--base-url", emu.base_url, "--time-scale", "0.005", "--concurrency", "8",
        "--cancel-on-interrupt",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    for _ in range(1000):
        if emu.counters.jobs_created >= 8:
            break
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, stderr.decode()
    assert "Stopping: no new submits" in stderr.decode()
    assert "(interrupted)" in stdout.decode()
    cancelled = emu.counters.jobs_cancelled
    assert cancelled >= 1
    emu.time_scale = FAST  # the rest need not take long

    rerun = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(rerun.communicate(), 60)
    assert rerun.returncode == 0, stderr.decode()
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"succeeded": 16}
    created = Counter(str(j.payload["prompt"]) for j in emu.jobs.values())
    assert len(created) == 16
    # a job is created again only if it was cancelled
    assert sum(created.values()) == 16 + cancelled
