"""The ``models`` command: the catalog as a table or JSON, against the emulator."""

from __future__ import annotations

import json

import pytest

from runcomfy_async import cli

T2V = "kling/kling-3.0/pro/text-to-video"


def test_models_commands_against_the_emulator(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "list", "--emulator"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("MODEL")
    assert T2V in table and "$0.112/second" in table
    assert cli.main(["models", "list", "--emulator", "--json", "--search", "pro/text"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["model_id"] for m in data["models"]] == [T2V]
    assert cli.main(["models", "get", T2V, "--emulator", "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["input_schema"]["required"] == ["prompt"]
    assert cli.main(["models", "get", T2V, "--emulator"]) == 0
    assert "prompt: string (required)" in capsys.readouterr().out
    assert cli.main(["models", "categories", "--emulator", "--json"]) == 0
    assert "text-to-video" in json.loads(capsys.readouterr().out)["categories"]


def test_models_without_a_token_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    assert cli.main(["models", "list"]) == 2
    assert "no API token" in capsys.readouterr().err


def test_an_unknown_model_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "get", "acme/nothing", "--emulator"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "acme/nothing" in err
    assert "Traceback" not in err
