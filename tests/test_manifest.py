"""Manifests: JSON Lines and CSV, checked whole, every bad line named."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from runcomfy_async import KlingTextToVideo
from runcomfy_async.batch._manifest import (
    Manifest,
    ManifestChecks,
    ManifestEntry,
    ManifestError,
    check_job_id,
    entry_hash,
)
from runcomfy_async.catalog import DEFAULT_REGISTRY, ModelSpec, Registry

T2V = "kling/kling-3.0/pro/text-to-video"
I2V = "kling/kling-3.0/standard/image-to-video"
ROOT = Path(__file__).resolve().parent.parent


def line(**obj: object) -> str:
    return json.dumps(obj)


def problems_of(exc: pytest.ExceptionInfo[ManifestError]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for p in exc.value.problems:
        out.setdefault(p.line, []).append(p.message)
    return out


def test_jsonl_lines_become_entries_in_order() -> None:
    text = "\n".join(
        [
            line(id="a", model=T2V, input={"prompt": "a fox"}),
            "",
            line(id="b", model=I2V, input={"prompt": "x", "start_image_url": "https://h/x.png"}),
        ]
    )
    m = Manifest.parse_jsonl(text)
    assert [(e.id, e.model, e.line) for e in m] == [("a", T2V, 1), ("b", I2V, 3)]
    assert m.entries[0].input == {"prompt": "a fox"}


def test_missing_id_is_derived_stably_from_model_and_input() -> None:
    one = Manifest.parse_jsonl(line(model=T2V, input={"prompt": "a fox", "duration": 5}))
    # Same content, other key order and spacing: same id.
    two = Manifest.parse_jsonl(
        '{"input": {"duration": 5, "prompt": "a fox"}, "model": "' + T2V + '"}'
    )
    assert one.entries[0].id == two.entries[0].id
    assert one.entries[0].id.startswith("job-")
    other = Manifest.parse_jsonl(line(model=T2V, input={"prompt": "a cat", "duration": 5}))
    assert other.entries[0].id != one.entries[0].id


def test_entry_hash_changes_with_the_input() -> None:
    assert entry_hash(T2V, {"prompt": "a"}) == entry_hash(T2V, {"prompt": "a"})
    assert entry_hash(T2V, {"prompt": "a"}) != entry_hash(T2V, {"prompt": "b"})
    assert entry_hash(T2V, {"prompt": "a"}) != entry_hash(I2V, {"prompt": "a"})


def test_every_bad_line_is_reported_at_once_with_its_line_number() -> None:
    text = "\n".join(
        [
            line(id="ok", model=T2V, input={"prompt": "fine"}),  # 1
            "{not json",  # 2
            line(id="no-model", input={"prompt": "x"}),  # 3
            line(id="bad-input", model=T2V, input={"prompt": "x", "duration": 99}),  # 4
            line(id="ok", model=T2V, input={"prompt": "again"}),  # 5: duplicate id
            line(id="../escape", model=T2V, input={"prompt": "x"}),  # 6
            "[1, 2]",  # 7
            line(id="typo", model=T2V, inputs={"prompt": "x"}),  # 8
            line(id="OK", model=T2V, input={"prompt": "case"}),  # 9: duplicate ignoring case
            line(id="nan", model=T2V, input={"prompt": "x", "cfg_scale": 0.5}).replace(
                "0.5", "NaN"
            ),  # 10
        ]
    )
    with pytest.raises(ManifestError) as exc:
        Manifest.parse_jsonl(text, source="jobs.jsonl")
    found = problems_of(exc)
    assert sorted(found) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert "invalid JSON" in found[2][0]
    assert any("missing 'model'" in m for m in found[3])
    assert any("input.duration" in m and "15" in m for m in found[4])
    assert any("duplicate id" in m and "line 1" in m for m in found[5])
    assert any("not allowed" in m for m in found[6])
    assert "must be a JSON object" in found[7][0]
    assert any("did you mean 'input'" in m for m in found[8])
    assert any("ignoring case" in m for m in found[9])
    text_of_error = str(exc.value)
    assert text_of_error.startswith("jobs.jsonl: 9 bad lines, nothing was submitted")
    assert "line 4 (bad-input)" in text_of_error


def test_identical_lines_without_ids_are_reported_as_duplicates() -> None:
    same = line(model=T2V, input={"prompt": "twice"})
    with pytest.raises(ManifestError) as exc:
        Manifest.parse_jsonl(same + "\n" + same)
    assert "same model and input as line 1" in str(exc.value)


@pytest.mark.parametrize(
    "job_id",
    ["../x", "a/b", "a\\b", ".hidden", "-opt", "x.", "", "a b", "report", "CON", "x" * 101, 7],
)
def test_ids_that_cannot_be_file_names_are_refused(job_id: object) -> None:
    assert check_job_id(job_id) is not None


@pytest.mark.parametrize("job_id", ["clip-001", "A.b_c-9", "x", "x" * 100])
def test_plain_ids_are_accepted(job_id: str) -> None:
    assert check_job_id(job_id) is None


def test_csv_columns_go_into_input_with_schema_types() -> None:
    text = (
        "id,model,prompt,duration,cfg_scale,sound,aspect_ratio,multi_prompt\n"
        f'c1,{T2V},"a fox, in snow",5,0.5,false,16:9,\n'
        f'c2,{T2V},a cat,10,,TRUE,,"[{{""prompt"": ""a"", ""duration"": 5}}, '
        f'{{""prompt"": ""b"", ""duration"": 5}}]"\n'
        "\n"
    )
    m = Manifest.parse_csv(text)
    assert m.entries[0].input == {
        "prompt": "a fox, in snow",
        "duration": 5,
        "cfg_scale": 0.5,
        "sound": False,
        "aspect_ratio": "16:9",
    }
    # empty cells are left out: the schema default applies
    assert m.entries[1].input == {
        "prompt": "a cat",
        "duration": 10,
        "sound": True,
        "multi_prompt": [{"prompt": "a", "duration": 5}, {"prompt": "b", "duration": 5}],
    }


def test_csv_bad_cells_and_rows_are_all_reported() -> None:
    text = (
        "id,model,prompt,duration,generate_audio\n"
        f"a,{I2V},x,five,maybe\n"  # line 2: two bad cells (and no start image)
        f"b,{T2V},y,5,,extra\n"  # line 3: one cell too many
        f",,z,5,\n"  # line 4: no model
    )
    with pytest.raises(ManifestError) as exc:
        Manifest.parse_csv(text)
    found = problems_of(exc)
    assert sorted(found) == [2, 3, 4]
    assert any("'five' is not an integer" in m for m in found[2])
    assert any("'maybe' is not a boolean" in m for m in found[2])
    assert "6 cells" in found[3][0]
    assert any("missing 'model'" in m for m in found[4])


def test_csv_header_without_model_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"header line 1.*no 'model' column"):
        Manifest.parse_csv("id,prompt\na,b\n")


def test_from_jobs_takes_dicts_typed_inputs_and_pairs() -> None:
    fox = KlingTextToVideo(prompt="a fox")
    m = Manifest.from_jobs(
        [
            {"id": "d", "model": T2V, "input": {"prompt": "dict"}},
            fox,
            ("named", KlingTextToVideo(prompt="a named fox")),
            ManifestEntry("entry", T2V, {"prompt": "entry"}),
        ]
    )
    assert m.entries[0].id == "d"
    assert m.entries[1].id.startswith("job-")
    assert m.entries[1].input == fox.to_payload()
    assert [e.id for e in m][2:] == ["named", "entry"]
    with pytest.raises(ManifestError, match="item 1"):
        Manifest.from_jobs([42])


def test_showcase_manifests_are_valid_and_agree() -> None:
    jsonl = Manifest.load(ROOT / "examples" / "showcase.jsonl")
    csv = Manifest.load(ROOT / "examples" / "showcase.csv")
    assert len(jsonl) >= 12
    assert {e.model for e in jsonl} == {T2V, I2V}
    assert [(e.id, e.hash) for e in jsonl] == [(e.id, e.hash) for e in csv]


def test_skip_invalid_keeps_the_good_lines_and_lists_the_bad() -> None:
    text = "\n".join(
        [
            line(id="a", model=T2V, input={"prompt": "fine"}),
            line(id="b", model=T2V, input={"prompt": "x", "duration": 99}),
            "{oops",
        ]
    )
    m = Manifest.parse_jsonl(text, checks=ManifestChecks(skip_invalid=True))
    assert [e.id for e in m] == ["a"]
    assert [p.line for p in m.skipped] == [2, 3]
    # a bad header still refuses the whole file
    with pytest.raises(ManifestError, match="header"):
        Manifest.parse_csv("id,prompt\na,b\n", checks=ManifestChecks(skip_invalid=True))


def test_no_validate_keeps_what_the_schema_refuses_but_not_non_json() -> None:
    text = line(id="a", model=T2V, input={"prompt": "x", "duration": 99})
    (entry,) = Manifest.parse_jsonl(text, checks=ManifestChecks(validate=False))
    assert entry.input["duration"] == 99
    nan = line(id="n", model=T2V, input={"prompt": "x", "cfg_scale": 0.5}).replace("0.5", "NaN")
    with pytest.raises(ManifestError, match="invalid JSON"):
        Manifest.parse_jsonl(nan, checks=ManifestChecks(validate=False))


def test_recheck_validates_with_a_registry_that_learned_a_model() -> None:
    model = "acme/video-1"
    text = line(id="a", model=model, input={"prompt": "x", "steps": 500})
    m = Manifest.parse_jsonl(text)
    assert m.unvalidated == {model}
    registry = Registry(parent=DEFAULT_REGISTRY)
    schema = {
        "type": "object",
        "properties": {"prompt": {"type": "string"}, "steps": {"type": "integer", "maximum": 50}},
    }
    registry.add(ModelSpec(model, schema))
    with pytest.raises(ManifestError, match=r"input\.steps: must be at most 50"):
        m.recheck(ManifestChecks(registry=registry))


async def test_wire_input_reads_local_files_only_then(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    text = line(id="a", model=I2V, input={"prompt": "x", "start_image_url": "a.png"})
    (entry,) = Manifest.parse_jsonl(text, base_dir=tmp_path)
    assert entry.input["start_image_url"] == "a.png"
    assert [f.path for f in entry.files] == ["a.png"]
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(80))  # changed after loading: sent as it is now
    body = await entry.wire_input()
    assert body["start_image_url"].startswith("data:image/png;base64,")
    assert len(base64.b64decode(body["start_image_url"].split(",", 1)[1])) == 88
    assert entry.input["start_image_url"] == "a.png"  # the entry itself is untouched
