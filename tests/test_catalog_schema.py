"""The validator against the published schema files, independently of its code.

The bounds tested here are read from the JSON files in ``../shared/spec/schemas``
as the package ships them (``runcomfy_async/catalog/schemas``), not restated:
for every field with a minimum/maximum or minItems/maxItems, the bound itself
passes and one step past it, on each side, is refused at that field's path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from runcomfy_async.catalog import DEFAULT_REGISTRY, ModelSpec, get_spec, media_field, uri_problem
from runcomfy_async.inputs import validate_payload

SCHEMA_DIR = Path(__file__).parent.parent / "runcomfy_async" / "catalog" / "schemas"
SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*.input.json"))
SPEC_DIR = Path(__file__).parent.parent.parent / "shared" / "spec" / "schemas"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return data


def test_both_published_schemas_ship_with_the_package() -> None:
    assert [p.name for p in SCHEMA_FILES] == [
        "kling-3.0-pro-text-to-video.input.json",
        "kling-3.0-standard-image-to-video.input.json",
    ]
    if SPEC_DIR.is_dir():  # the shared spec sits beside every checkout
        for path in SCHEMA_FILES:
            assert load(path) == load(SPEC_DIR / path.name), path.name


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_the_published_example_request_passes(path: Path) -> None:
    schema = load(path)
    assert validate_payload(schema["model_id"], schema["example"]) == []


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_each_bound_at_its_limit_passes_the_named_rules_too(path: Path) -> None:
    # with the whole validator (named rules included) where a valid body exists
    schema = load(path)
    for value in (3, 15):
        body = {
            **schema["example"],
            "duration": value,
            "multi_prompt": [{"prompt": "a", "duration": value}],
        }
        assert validate_payload(schema["model_id"], body) == []


# -- a sample valid value for any schema node (the test's own, from the schema) ----


def sample(node: Mapping[str, Any], name: str = "") -> Any:
    if "default" in node and node["default"] is not None:
        return node["default"]
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "string":
        if "format" in node or name.endswith("_url") or name.endswith("_urls"):
            is_video = "video" in str(node.get("format", "")) + name
            return "https://cdn.example.com/x." + ("mp4" if is_video else "png")
        return "a prompt"
    if kind == "integer":
        return node.get("minimum", 1)
    if kind in ("number", "float"):
        return node.get("minimum", 0.5)
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample(node["items"], name) for _ in range(max(node.get("minItems", 1), 1))]
    if kind == "object":
        return {k: sample(v, k) for k, v in node.get("properties", {}).items()}
    raise AssertionError(f"no sample for {node}")


def base_body(schema: Mapping[str, Any]) -> dict[str, Any]:
    body = dict(schema["example"])
    for name in schema["required"]:
        body.setdefault(name, sample(schema["properties"][name], name))
    return body


def bounds(schema: Mapping[str, Any]) -> Iterator[tuple[str, tuple[Any, ...], str, Any]]:
    """Every (where, json path parts, keyword, bound) of the schema, nested fields included."""

    def walk(node: Mapping[str, Any], parts: tuple[Any, ...]) -> Iterator[Any]:
        for key in ("minimum", "maximum", "minItems", "maxItems"):
            if key in node:
                yield parts, key, node[key]
        if node.get("type") == "array" and isinstance(node.get("items"), Mapping):
            yield from walk(node["items"], (*parts, 0))
        for name, prop in node.get("properties", {}).items():
            yield from walk(prop, (*parts, name))

    for parts, key, bound in walk(schema, ()):
        yield schema["model_id"], parts, key, bound


ALL_BOUNDS = [b for path in SCHEMA_FILES for b in bounds(load(path))]
# A bound with an outside: "minItems: 0" has none (no list is shorter than empty).
TESTABLE_BOUNDS = [b for b in ALL_BOUNDS if not (b[2] == "minItems" and b[3] == 0)]


def test_the_schemas_have_the_bounds_this_test_walks() -> None:
    # a guard against a walk that silently finds nothing
    keys = {(b[0].split("/")[2], ".".join(map(str, b[1])), b[2]) for b in ALL_BOUNDS}
    assert ("standard", "elements", "maxItems") in keys
    assert ("pro", "multi_prompt.0.duration", "minimum") in keys
    # duration, cfg_scale, multi_prompt and its items' duration (both), elements (i2v)
    assert len(ALL_BOUNDS) == 18


def path_text(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def body_with(schema: Mapping[str, Any], parts: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A valid body with the value at ``parts`` replaced (containers built from the schema)."""
    body = base_body(schema)
    node: Any = schema
    target: Any = body
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            node = node["items"]
            if last:
                target[part] = value
            else:
                while len(target) <= part:
                    target.append(sample(node))
                target = target[part]
        else:
            node = node["properties"][part]
            if last:
                target[part] = value
            else:
                target = target.setdefault(part, sample(node, part))
    return body


def at(problems: list[Any], path: str) -> list[Any]:
    return [p for p in problems if p.path == path]


def value_at(schema: Mapping[str, Any], parts: tuple[Any, ...], key: str, n: Any) -> Any:
    if key in ("minItems", "maxItems"):
        node: Any = schema
        for part in parts:
            node = node["items"] if isinstance(part, int) else node["properties"][part]
        return [sample(node["items"], str(parts[-1])) for _ in range(n)]
    return n


@pytest.mark.parametrize(
    ("model_id", "parts", "key", "bound"),
    TESTABLE_BOUNDS,
    ids=[f"{b[0].split('/')[2]}-{path_text(b[1])}-{b[2]}" for b in TESTABLE_BOUNDS],
)
def test_every_bound_holds_and_one_past_it_is_refused(
    model_id: str, parts: tuple[Any, ...], key: str, bound: Any
) -> None:
    schema = next(load(p) for p in SCHEMA_FILES if load(p)["model_id"] == model_id)
    is_int = key in ("minItems", "maxItems") or isinstance(bound, int)
    step = 1 if is_int else 0.001
    past = bound - step if key.startswith("min") else bound + step
    where = path_text(parts)
    spec = get_spec(model_id)
    assert spec is not None
    # The schema alone: 20 segments can never add up to a 15 s clip (a named
    # rule, tested with the inputs), but the schema's count bound is what is tested.
    ok = spec.validate(
        body_with(schema, parts, value_at(schema, parts, key, bound)), named_rules=False
    )
    bad = spec.validate(
        body_with(schema, parts, value_at(schema, parts, key, past)), named_rules=False
    )
    assert at(ok, where) == []
    assert at(bad, where), f"{where}={past!r} passed"


def test_bounds_apply_to_every_tier_sharing_a_schema() -> None:
    for model_id in DEFAULT_REGISTRY.model_ids():
        spec = get_spec(model_id)
        assert spec is not None
        body = {"prompt": "x", "start_image_url": "https://a.io/b.png", "duration": 16}
        if "start_image_url" not in spec.properties:
            del body["start_image_url"]
        assert [p.path for p in spec.validate(body)] == ["duration"]


# -- the schema dialect ------------------------------------------------------------

SYNTHETIC = ModelSpec(
    "acme/synthetic/v1",
    {
        "type": "object",
        "required": ["prompt", "steps"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": 10},
            "steps": {"type": "integer", "minimum": 1, "maximum": 50, "default": None},
            "scale": {"type": "float", "exclusiveMinimum": 0},
            "style": {"type": "string", "enum": ["a", "b"]},
            "ref": {"type": "string", "format": "image_uri"},
            "clip": {"type": "string", "format": "video_uri"},
            "doc": {"type": "string", "format": "uri"},
            "opts": {
                "type": "object",
                "required": ["seed"],
                "properties": {"seed": {"type": "integer"}},
            },
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        },
    },
)


@pytest.mark.parametrize(
    ("field", "value", "rule_part"),
    [
        ("prompt", "", "at least 1 characters"),
        ("prompt", "x" * 11, "at most 10 characters"),
        ("steps", 51, "from 1 to 50"),
        ("steps", 5.5, "an integer"),
        ("steps", True, "not a bool"),
        ("scale", 0, "more than 0"),
        ("scale", "1", "a number"),
        ("scale", float("nan"), "finite"),
        ("style", "c", "one of 'a', 'b'"),
        ("ref", "https://a.io/x.mp4", "image"),
        ("clip", "https://a.io/x.png", "video"),
        ("doc", "data:text/plain;base64,AAAA", "image, video or audio"),
        ("opts", {}, "required"),
        ("opts", {"seed": "1"}, "an integer"),
        ("tags", ["a", "b", "c"], "at most 2 items"),
        ("tags", [1], "a string"),
    ],
)
def test_the_dialect_refuses_what_the_schema_rules_out(
    field: str, value: Any, rule_part: str
) -> None:
    problems = SYNTHETIC.validate({"prompt": "x", "steps": 3, field: value})
    assert len(problems) == 1, problems
    assert problems[0].path.startswith(field)
    assert rule_part in problems[0].rule


def test_the_dialect_accepts_valid_values_and_float_type() -> None:
    body = {
        "prompt": "x",
        "steps": 50,
        "scale": 2,
        "style": "b",
        "ref": "https://a.io/x",
        "clip": "data:video/mp4;base64,AAAA",
        "doc": "https://a.io/any.thing",
        "opts": {"seed": 1},
        "tags": ["a"],
    }
    assert SYNTHETIC.validate(body) == []


def test_a_null_default_is_no_default_and_required_is_still_required() -> None:
    problems = SYNTHETIC.validate({"prompt": "x"})
    assert [(p.path, p.rule) for p in problems] == [("steps", "is required")]
    assert "steps" not in SYNTHETIC.with_defaults({"prompt": "x"})


def test_unknown_fields_are_refused_with_a_hint_unless_allowed() -> None:
    problems = SYNTHETIC.validate({"prompt": "x", "steps": 1, "stpes": 2})
    assert problems[0].path == "stpes" and "did you mean 'steps'" in problems[0].rule
    assert (
        SYNTHETIC.validate({"prompt": "x", "steps": 1, "new": 2}, allow_unknown_fields=True) == []
    )


def test_a_schema_without_properties_accepts_any_json_object() -> None:
    spec = ModelSpec("acme/free", {"type": "object"})
    assert spec.validate({"anything": [1, {"a": None}]}) == []
    assert spec.validate([1]) != []


# -- URI fields ----------------------------------------------------------------------

START = media_field(
    "start_image_url",
    load(SCHEMA_DIR / "kling-3.0-standard-image-to-video.input.json")["properties"][
        "start_image_url"
    ],
)


def test_the_start_image_formats_come_from_its_description() -> None:
    assert START is not None and START.kind == "image"
    assert START.formats == {"jpeg", "png", "bmp", "webp"}


@pytest.mark.parametrize(
    "value",
    [
        "https://cdn.example.com/img/12345?sig=abc",
        "https://cdn.example.com/a.JPG",
        "https://cdn.example.com/a.weird",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/jpeg;base64,/9j/4AAQ",
        "DATA:image/webp;base64,UklGRg==",
    ],
)
def test_start_image_accepts_urls_with_or_without_extension_and_data_uris(value: str) -> None:
    assert START is not None
    assert uri_problem(value, START) is None


@pytest.mark.parametrize(
    ("value", "rule_part"),
    [
        ("https://cdn.example.com/a.gif", "names gif"),
        ("https://cdn.example.com/a.mp4", "names a video format"),
        ("http://cdn.example.com/a.png", "not http://"),
        ("notauri", "https:// URL or a data: URI"),
        ("ftp://cdn.example.com/a.png", "https:// URL or a data: URI"),
        ("data:image/gif;base64,R0lGOD==", "names gif"),
        ("data:video/mp4;base64,AAAA", "must be an image file"),
        ("data:image/png,AAAA", ""),  # not base64: allowed if percent-encoded data
        ("data:image/png;base64,@@@@", "valid base64"),
        ("data:image/png;base64", "data:<media type>"),
    ],
)
def test_start_image_refuses_what_is_known_wrong(value: str, rule_part: str) -> None:
    assert START is not None
    problem = uri_problem(value, START)
    if rule_part:
        assert problem is not None and rule_part in problem, problem
    else:
        assert problem is None


def test_a_data_uri_past_its_cap_is_refused_with_the_size() -> None:
    assert START is not None
    small = {"image": 30}
    assert uri_problem("data:image/png;base64," + "A" * 40, START, small) is None
    problem = uri_problem("data:image/png;base64," + "A" * 44, START, small)
    assert problem is not None and "33 bytes, more than the 30" in problem


def test_an_unknown_fields_problem_says_what_sends_it_in_the_callers_words() -> None:
    spec = get_spec("kling/kling-3.0/pro/text-to-video")
    assert spec is not None
    (default,) = spec.validate({"prompt": "x", "promt": "y"})
    assert "did you mean 'prompt'?" in default.rule
    assert "allow_unknown_fields=True" in default.rule
    (cli,) = spec.validate({"prompt": "x", "promt": "y"}, unknown_advice="--allow-unknown-fields")
    assert cli.rule.endswith("(--allow-unknown-fields)")
    assert "allow_unknown_fields=True" not in cli.rule
