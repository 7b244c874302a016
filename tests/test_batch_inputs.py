"""Batch inputs end to end on the emulator: switches, catalog models, local files, cost, balance."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from runcomfy_async import PollPolicy, PriceTable, RunComfyClient, cli
from runcomfy_async.batch import (
    BatchRunner,
    CostLimitError,
    Manifest,
    ManifestError,
    run_batch,
)
from runcomfy_async.batch._manifest import ManifestChecks
from runcomfy_async.emulator import Emulator, ModelProfile, SyntheticModel
from tests.emuthread import ThreadedEmulator

MakeEmulator = Callable[..., Awaitable[Emulator]]

T2V = "kling/kling-3.0/pro/text-to-video"
I2V = "kling/kling-3.0/standard/image-to-video"
FAST = 0.001
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(64))

# A model the package never bundled: only the emulator's catalog knows its schema.
IMAGE_MODEL = SyntheticModel(
    "acme/image-9/text-to-image",
    {
        "type": "object",
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string"},
            "num_images": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
        },
    },
    price_usd=0.03,
    price_unit="output",
    categories=("text-to-image",),
    kind="image",
    profile=ModelProfile.fixed(10.0),
)


def line(**obj: object) -> str:
    return json.dumps(obj)


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@asynccontextmanager
async def client_for(emu: Emulator) -> AsyncIterator[RunComfyClient]:
    async with RunComfyClient(
        emu.token,
        base_url=emu.base_url,
        poll=PollPolicy(time_scale=emu.time_scale),
        requests_per_second=None,
        include_cost=True,
    ) as client:
        yield client


def sent(emu: Emulator) -> int:
    """Submits that reached the emulator (accepted or not)."""
    return sum(emu.counters.submits_per_token.values())


# -- the switches ------------------------------------------------------------------------


async def test_skip_invalid_submits_exactly_the_valid_lines(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    manifest = write(
        tmp_path / "jobs.jsonl",
        line(id="a", model=T2V, input={"prompt": "a fox", "duration": 3}),
        line(id="b", model=T2V, input={"prompt": "x", "duration": 99}),  # 2: out of range
        "{broken",  # 3
        line(id="c", model=T2V, input={"prompt": "a cat", "duration": 3}),
        line(id="d", model=T2V, input={"prompt": "y", "nope": 1}),  # 5: unknown field
    )
    async with client_for(emu) as client:
        runner = BatchRunner(manifest, tmp_path / "out", client=client, skip_invalid=True)
        report = await runner.run()
    assert sent(emu) == 2
    assert sorted(j.payload["prompt"] for j in emu.jobs.values()) == ["a cat", "a fox"]
    assert [j.id for j in report.jobs] == ["a", "c"]
    assert sorted({p.line for p in runner.skipped}) == [2, 3, 5]


async def test_without_skip_invalid_one_bad_line_stops_everything(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    manifest = write(
        tmp_path / "jobs.jsonl",
        line(id="a", model=T2V, input={"prompt": "a fox", "duration": 3}),
        line(id="b", model=T2V, input={"prompt": "x", "duration": 99}),
    )
    async with client_for(emu) as client:
        with pytest.raises(ManifestError, match="line 2"):
            await run_batch(manifest, tmp_path / "out", client=client, progress=False)
    assert sent(emu) == 0


async def test_allow_unknown_fields_sends_them(make_emulator: MakeEmulator, tmp_path: Path) -> None:
    emu = await make_emulator(time_scale=FAST)
    manifest = write(
        tmp_path / "jobs.jsonl",
        line(id="a", model=T2V, input={"prompt": "a fox", "duration": 3, "seed": 7}),
    )
    with pytest.raises(ManifestError, match="--allow-unknown-fields sends it anyway"):
        BatchRunner(manifest, tmp_path / "out")
    async with client_for(emu) as client:
        report = await run_batch(
            manifest, tmp_path / "out", client=client, progress=False, allow_unknown_fields=True
        )
    assert report.ok
    assert [j.payload["seed"] for j in emu.jobs.values()] == [7]


async def test_no_validate_sends_what_the_rules_refuse(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    manifest = write(
        tmp_path / "jobs.jsonl",
        line(id="a", model=T2V, input={"prompt": "a fox", "duration": 99}),
    )
    async with client_for(emu) as client:
        report = await run_batch(
            manifest, tmp_path / "out", client=client, progress=False, validate=False
        )
    # it went out (and the emulator, which validates, refused it)
    assert sent(emu) == 1
    assert emu.counters.invalid_body == 1
    assert report.jobs[0].outcome == "failed"


# -- catalog models ----------------------------------------------------------------------


async def test_a_catalog_models_lines_are_validated_before_anything_is_sent(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, catalog_models=[IMAGE_MODEL])
    manifest = write(
        tmp_path / "jobs.jsonl",
        line(id="ok", model=IMAGE_MODEL.model_id, input={"prompt": "a", "num_images": 2}),
        line(id="bad", model=IMAGE_MODEL.model_id, input={"prompt": "b", "num_images": 9}),
    )
    # Without a client the package has no spec: the model passes through, noted.
    assert Manifest.load(manifest).unvalidated == {IMAGE_MODEL.model_id}
    async with client_for(emu) as client:
        with pytest.raises(ManifestError) as exc:
            await run_batch(manifest, tmp_path / "out", client=client, progress=False)
    assert "line 2 (bad): input.num_images: must be from 1 to 4" in str(exc.value)
    assert sent(emu) == 0


async def test_csv_cells_of_a_catalog_model_take_its_schemas_types(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, catalog_models=[IMAGE_MODEL])
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"id,model,prompt,num_images\na,{IMAGE_MODEL.model_id},a fox,3\n")
    async with client_for(emu) as client:
        report = await run_batch(manifest, tmp_path / "out", client=client, progress=False)
    assert report.ok
    (job,) = emu.jobs.values()
    assert job.payload == {"prompt": "a fox", "num_images": 3}
    # priced per output from the catalog: 3 images at $0.03
    assert report.jobs[0].estimated_cost == pytest.approx(0.09)


async def test_a_model_unknown_to_the_catalog_passes_unvalidated(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, models={"acme/flash": ModelProfile.fixed(5.0)})
    manifest = write(tmp_path / "jobs.jsonl", line(id="a", model="acme/flash", input={"x": 1}))
    async with client_for(emu) as client:
        runner = BatchRunner(manifest, tmp_path / "out", client=client, progress=False)
        report = await runner.run()
    assert report.ok
    assert runner.manifest.unvalidated == {"acme/flash"}


# -- local files -------------------------------------------------------------------------


async def test_local_image_paths_run_end_to_end_and_no_record_holds_the_bytes(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    images = tmp_path / "in" / "images"
    images.mkdir(parents=True)
    (images / "fox.png").write_bytes(PNG)
    (images / "cat").write_bytes(PNG)  # no extension: the type comes from the bytes
    manifest = write(
        tmp_path / "in" / "jobs.jsonl",
        line(id="fox", model=I2V, input={"prompt": "a fox", "start_image_url": "images/fox.png"}),
        line(id="cat", model=I2V, input={"prompt": "a cat", "start_image_url": "images/cat"}),
    )
    out = tmp_path / "out"
    async with client_for(emu) as client:
        report = await run_batch(manifest, out, client=client, progress=False)
    assert report.ok, report.summary()
    # the server got the bytes inline ...
    wire = sorted(j.payload["start_image_url"] for j in emu.jobs.values())
    assert all(u.startswith("data:image/png;base64,") for u in wire)
    # ... and every record keeps the path, never the bytes
    for job_id, path in (("fox", "images/fox.png"), ("cat", "images/cat")):
        record = json.loads((out / f"{job_id}.json").read_text())
        assert record["input"]["start_image_url"] == path
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".mp4":
            assert b"base64" not in path.read_bytes(), path


def test_a_missing_or_wrong_local_file_is_a_problem_of_its_line(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(32))
    (tmp_path / "notes.txt").write_text("hello")
    text = "\n".join(
        [
            line(model=I2V, input={"prompt": "a", "start_image_url": "missing.png"}),
            line(model=I2V, input={"prompt": "b", "start_image_url": "clip.mp4"}),
            line(model=I2V, input={"prompt": "c", "start_image_url": "notes.txt"}),
        ]
    )
    with pytest.raises(ManifestError) as exc:
        Manifest.parse_jsonl(text, base_dir=tmp_path)
    found = {p.line: p.message for p in exc.value.problems}
    assert "cannot read the file 'missing.png'" in found[1]
    assert "relative to the manifest's folder" in found[1]
    assert "must be an image file" in found[2] and "clip.mp4" in found[2]
    assert "not an image or video" in found[3]


async def test_a_file_gone_by_submit_time_fails_its_job_without_sending(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    (tmp_path / "fox.png").write_bytes(PNG)
    manifest = write(
        tmp_path / "jobs.jsonl",
        line(id="fox", model=I2V, input={"prompt": "a fox", "start_image_url": "fox.png"}),
    )
    runner = BatchRunner(manifest, tmp_path / "out", progress=False)
    (tmp_path / "fox.png").unlink()
    async with client_for(emu) as client:
        report = await runner.run(client=client)
    # never sent: it stays planned for the next run, with the reason
    assert sent(emu) == 0
    assert report.jobs[0].outcome == "not_submitted"
    assert "fox.png" in (report.jobs[0].error or "")


# -- CSV friction ------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_delimiter_is_read_from_the_header(delimiter: str) -> None:
    rows = [["id", "model", "prompt", "duration"], ["a", T2V, "a fox, in snow", "5"]]
    text = "\n".join(delimiter.join(r) for r in rows)
    if delimiter == ",":
        text = text.replace("a fox, in snow", '"a fox, in snow"')
    (entry,) = Manifest.parse_csv(text)
    assert entry.input == {"prompt": "a fox, in snow", "duration": 5}


def test_an_extra_csv_column_names_the_flag_that_drops_it() -> None:
    text = f"id,model,prompt,notes\na,{T2V},a fox,first try\n"
    with pytest.raises(ManifestError) as exc:
        Manifest.parse_csv(text)
    message = str(exc.value)
    assert "--ignore-columns notes" in message
    assert "allow_unknown_fields=True" not in message  # no Python advice on the CLI
    checks = ManifestChecks(ignore_columns="notes")
    assert Manifest.parse_csv(text, checks=checks).entries[0].input == {"prompt": "a fox"}
    commented = f"# ignore: notes\n{text}"
    assert Manifest.parse_csv(commented).entries[0].input == {"prompt": "a fox"}


def test_csv_line_numbers_count_the_comment_lines() -> None:
    text = f"# ignore: notes\nid;model;prompt;notes;duration\na;{T2V};x;n;50\n"
    with pytest.raises(ManifestError, match=r"line 3 \(a\): input.duration"):
        Manifest.parse_csv(text)


def test_ignoring_a_column_the_header_lacks_is_a_header_problem() -> None:
    with pytest.raises(ManifestError, match="column 'note' is to be ignored"):
        Manifest.parse_csv(f"model,prompt\n{T2V},x\n", checks=ManifestChecks(ignore_columns="note"))


def test_a_header_without_model_says_which_delimiter_was_read() -> None:
    with pytest.raises(ManifestError, match=r"no 'model' column.*delimiter"):
        Manifest.parse_csv("id prompt\na b\n")


# -- cost and balance --------------------------------------------------------------------


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["batch", *args, "--dry-run"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_refuses_unpriced_models_as_the_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    manifest = write(
        tmp_path / "jobs.jsonl",
        line(id="a", model="acme/flash", input={"prompt": "x", "duration": 5}),
    )
    out = str(tmp_path / "out")
    code, _, dry_err = dry_run(capsys, str(manifest), "--out", out, "--max-cost", "1")
    assert code == 2
    code = cli.main(["batch", str(manifest), "--out", out, "--emulator", "--max-cost", "1"])
    run_err = capsys.readouterr().err
    assert code == 2
    assert dry_err.replace("this run would be refused: ", "") == run_err
    assert "--price acme/flash=USD_PER_SECOND" in run_err
    # a price given makes it estimable: 5 s at $0.1 fits under $1
    code, text, err = dry_run(
        capsys, str(manifest), "--out", out, "--max-cost", "1", "--price", "acme/flash=0.1"
    )
    assert code == 0, err
    assert "0.50" in text
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"acme/flash": [0.3, 0.4]}))
    code, _, err = dry_run(
        capsys, str(manifest), "--out", out, "--max-cost", "1", "--prices", str(prices)
    )
    assert code == 2
    assert "$2.00, above --max-cost $1.00" in err  # no spec: audio counts as on


async def test_a_run_above_the_balance_stops_before_the_first_submit(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, balance_usd=1.0)
    manifest = write(
        tmp_path / "jobs.jsonl",
        *(
            line(id=f"c{i}", model=T2V, input={"prompt": f"clip {i}", "duration": 3})
            for i in range(3)
        ),
    )
    async with client_for(emu) as client:
        with pytest.raises(CostLimitError, match=r"above your balance of \$1.00"):
            await run_batch(manifest, tmp_path / "out", client=client, progress=False)
        assert sent(emu) == 0
        report = await run_batch(
            manifest, tmp_path / "out", client=client, progress=False, force=True
        )
    assert report.ok
    assert sent(emu) == 3


def test_the_cli_stops_above_the_balance_and_the_dry_run_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write(
        tmp_path / "jobs.jsonl",
        *(
            line(id=f"c{i}", model=T2V, input={"prompt": f"clip {i}", "duration": 5})
            for i in range(2)
        ),
    )
    out = tmp_path / "out"
    with ThreadedEmulator(time_scale=FAST, balance_usd=0.5) as threaded:
        emu = threaded.emu
        monkeypatch.setenv("RUNCOMFY_API_TOKEN", emu.token)
        common = [str(manifest), "--out", str(out), "--base-url", emu.base_url]
        code, text, _ = dry_run(capsys, *common)
        assert code == 2
        assert "Balance: $0.50; the estimate is above it" in text
        code = cli.main(["batch", *common, "--time-scale", str(FAST)])
        err = capsys.readouterr().err
        assert code == 2
        assert "above your balance of $0.50" in err and "--force" in err
        assert sent(emu) == 0
        assert not out.exists()


def test_prices_option_feeds_the_estimate(tmp_path: Path) -> None:
    manifest = write(tmp_path / "j.jsonl", line(model="acme/v", input={"duration": 4}))
    runner = BatchRunner(manifest, tmp_path / "o", prices=PriceTable({"acme/v": (0.5, 0.5)}))
    from runcomfy_async.batch import estimate_batch

    estimate = estimate_batch(runner.manifest, prices=runner.options.prices)
    assert estimate.usd == pytest.approx(2.0)
    # and a listed model does not hide the bundled prices of the others
    both = write(
        tmp_path / "k.jsonl",
        line(model="acme/v", input={"duration": 4}),
        line(model=T2V, input={"prompt": "x", "duration": 5, "sound": False}),
    )
    estimate = estimate_batch(Manifest.load(both), prices=PriceTable({"acme/v": (0.5, 0.5)}))
    assert estimate.usd == pytest.approx(2.0 + 5 * 0.112)


# -- the emulator validates catalog models -----------------------------------------------


async def test_the_emulator_refuses_a_bad_catalog_model_input_as_the_client_would(
    make_emulator: MakeEmulator,
) -> None:
    import aiohttp

    from runcomfy_async.inputs import validate_payload

    emu = await make_emulator(time_scale=FAST, catalog_models=[IMAGE_MODEL])
    body: dict[str, Any] = {"prompt": 3, "num_images": 9}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{emu.base_url}/v1/models/{IMAGE_MODEL.model_id}",
            json=body,
            headers={"Authorization": f"Bearer {emu.token}"},
        ) as resp,
    ):
        assert resp.status == 422
        detail = (await resp.json())["detail"]
    async with client_for(emu) as client:
        await client.models.spec(IMAGE_MODEL.model_id)
        problems = validate_payload(IMAGE_MODEL.model_id, body, registry=client.models.registry)
    assert sorted(d["msg"] for d in detail) == sorted(p.rule for p in problems)
    assert len(problems) == 2
    assert len(emu.jobs) == 0


def test_the_cli_skips_invalid_lines_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write(
        tmp_path / "jobs.jsonl",
        line(id="a", model=T2V, input={"prompt": "a fox", "duration": 3}),
        line(id="b", model=T2V, input={"prompt": "x", "duration": 99}),
    )
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--out", str(out), "--emulator", "--no-progress"]
    assert cli.main([*args, "--skip-invalid"]) == 1
    captured = capsys.readouterr()
    assert "skipped 1 bad line(s)" in captured.err
    assert "line 2 (b): input.duration" in captured.err
    report = json.loads((out / "report.json").read_text())
    assert [(j["id"], j["outcome"]) for j in report["jobs"]] == [("a", "succeeded")]
