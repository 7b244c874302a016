"""Messages a new user meets in the first hour: each says what happened, and nothing else."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runcomfy_async import AuthenticationError, JobTimeoutError, RunComfyClient, cli
from runcomfy_async.emulator import Emulator

MakeEmulator = Callable[..., Awaitable[Emulator]]
ROOT = Path(__file__).resolve().parent.parent
T2V = "kling/kling-3.0/pro/text-to-video"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNCOMFY_API_TOKEN", "RUNCOMFY_TOKEN", "RUNCOMFY_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


async def test_a_refused_cancel_on_timeout_says_the_job_keeps_running(
    make_emulator: MakeEmulator,
) -> None:
    emu = await make_emulator(time_scale=1.0, workers=1)  # a clip takes a minute or more
    async with RunComfyClient(emu.token, base_url=emu.base_url) as client:
        running = await client.submit(T2V, {"prompt": "a red fox", "duration": 5})
        queued = await client.submit(T2V, {"prompt": "a grey wolf", "duration": 5})
        with pytest.raises(JobTimeoutError) as refused:
            await running.wait(0.2, cancel_on_timeout=True)
        text = str(refused.value)
        assert "refused to cancel it" in text and "keeps running and billing" in text
        with pytest.raises(JobTimeoutError) as accepted:
            await queued.wait(0.2, cancel_on_timeout=True)
        assert "cancelled on the server" in str(accepted.value)
        assert "refused" not in str(accepted.value)
    assert emu.counters.jobs_cancelled == 1


@pytest.mark.parametrize("command", ["status", "result", "cancel"])
def test_a_request_id_that_is_not_one_is_a_usage_error(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "sk-test")
    assert cli.main([command, "../etc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not a request id: '../etc'"), err
    assert "unexpected" not in err


def test_status_without_a_token_does_not_suggest_an_option_it_lacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["status", "3f2b-request"]) == 2
    err = capsys.readouterr().err
    assert err == "error: no API token: set RUNCOMFY_API_TOKEN\n"
    # batch and run do have --emulator: there the hint stays.
    assert cli.main(["run", T2V, "--input", '{"prompt": "x"}']) == 2
    assert "(or try --emulator)" in capsys.readouterr().err


async def test_no_token_names_no_http_status_for_a_request_never_made() -> None:
    async with RunComfyClient() as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.submit(T2V, {"prompt": "a red fox"})
    error = caught.value
    assert str(error).startswith("no API token")
    assert "HTTP" not in str(error) and "nothing was sent" in str(error)
    assert (error.status_code, error.sent) == (401, False)  # still an authentication error


def _readme_emulator_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("Use it to test your own app offline") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


async def test_the_readmes_emulator_snippet_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(_readme_emulator_snippet())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/outputs/[\w-]+/output\.mp4\n", out.decode())
