"""Property tests of the Kling 3.0 inputs: round trips, and every broken field is named."""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runcomfy_async.catalog import get_spec, media_field
from runcomfy_async.inputs import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Element,
    KlingImageToVideo,
    KlingTextToVideo,
    MultiPromptSegment,
    validate_payload,
)

SETTINGS = settings(max_examples=200, deadline=None)

# When a property fails, Hypothesis' report imports libcst, which warns on import;
# with filterwarnings=error that warning would hide the failure behind an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

KNOWN_TOP = {
    "prompt",
    "negative_prompt",
    "duration",
    "cfg_scale",
    "multi_prompt",
    "shot_type",
    "start_image_url",
    "generate_audio",
    "elements",
    "aspect_ratio",
    "sound",
    "extra",
}

# -- strategies for valid inputs --------------------------------------------------------

prompts = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != "")
# Plain alphabets rather than from_regex: much cheaper to draw, and enough variety.
_LABEL = "abcdefghijklmnopqrstuvwxyz0123456789-"
_WORD = _LABEL + "ABCDEFGHIJKLMNOPQRSTUVWXYZ_."
hosts = st.builds(
    "{}.{}".format, st.text(_LABEL, min_size=1, max_size=10), st.sampled_from(["com", "net", "io"])
)
words = st.text(_WORD, min_size=1, max_size=10)
queries = st.builds(
    "?{}={}".format, st.text(_LABEL, min_size=1, max_size=4), st.text(_WORD, max_size=8)
)


def any_case(text: str) -> st.SearchStrategy[str]:
    return st.tuples(*[st.sampled_from([c.lower(), c.upper()]) for c in text]).map("".join)


def urls(extensions: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda host, parts, ext, query: f"https://{host}/{'/'.join(parts)}.{ext}{query}",
        hosts,
        st.lists(words, min_size=1, max_size=3),
        st.sampled_from(extensions).flatmap(any_case),
        st.just("") | queries,
    )


image_urls = urls(IMAGE_EXTENSIONS)
video_urls = urls(VIDEO_EXTENSIONS)
# The start image takes only the formats its schema's description lists.
_START = get_spec(KlingImageToVideo.model_id).properties["start_image_url"]  # type: ignore[union-attr]
_START_FORMATS = media_field("start_image_url", _START).formats  # type: ignore[union-attr]
start_image_urls = urls(tuple(sorted(_START_FORMATS | {"jpg"})))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=4,
)


def extras(known: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.text(min_size=1, max_size=10).filter(lambda k: k not in known)
    return st.dictionaries(keys, json_values, max_size=2)


def nested_extras(known: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    # Mostly empty: nested extras are rare in practice and costly to draw.
    return st.just({}) | st.just({}) | st.just({}) | extras(known)


@st.composite
def timing(draw: st.DrawFn) -> tuple[int, list[MultiPromptSegment]]:
    """A total duration and segments (maybe none) whose durations add up to it."""
    total = draw(st.integers(3, 15))
    count = draw(st.integers(0, total // 3))
    lengths = [3] * count
    spare = total - 3 * count
    for i in range(count):
        extra = spare if i == count - 1 else draw(st.integers(0, spare))
        lengths[i] += extra
        spare -= extra
    segments = [
        MultiPromptSegment(draw(prompts), n, extra=draw(nested_extras({"prompt", "duration"})))
        for n in lengths
    ]
    return total, segments


@st.composite
def elements(draw: st.DrawFn) -> Element:
    element = Element(
        frontal_image_url=draw(st.none() | image_urls),
        reference_image_urls=draw(st.lists(image_urls, max_size=2)),
        video_url=draw(st.none() | video_urls),
        extra=draw(nested_extras({"frontal_image_url", "reference_image_urls", "video_url"})),
    )
    empty = element.frontal_image_url is None and element.video_url is None
    if empty and not element.reference_image_urls:
        return Element(frontal_image_url=draw(image_urls))
    return element


@st.composite
def i2v_inputs(draw: st.DrawFn) -> KlingImageToVideo:
    total, segments = draw(timing())
    return KlingImageToVideo(
        prompt=draw(prompts),
        start_image_url=draw(start_image_urls),
        negative_prompt=draw(st.none() | st.text(max_size=20)),
        duration=total,
        generate_audio=draw(st.booleans()),
        cfg_scale=draw(st.floats(0, 1) | st.sampled_from([0, 1])),
        multi_prompt=segments,
        elements=draw(st.lists(elements(), max_size=3)),
        shot_type=draw(st.sampled_from([None, "customize"])),
        extra=draw(extras(KNOWN_TOP)),
    )


@st.composite
def t2v_inputs(draw: st.DrawFn) -> KlingTextToVideo:
    total, segments = draw(timing())
    return KlingTextToVideo(
        prompt=draw(prompts),
        negative_prompt=draw(st.none() | st.text(max_size=20)),
        duration=total,
        aspect_ratio=draw(st.sampled_from(["16:9", "9:16", "1:1"])),
        cfg_scale=draw(st.floats(0, 1)),
        sound=draw(st.booleans()),
        multi_prompt=segments,
        shot_type=draw(st.sampled_from([None, "customize"])),
        extra=draw(extras(KNOWN_TOP)),
    )


typed_inputs = i2v_inputs() | t2v_inputs()

# -- round trips -------------------------------------------------------------------------


@SETTINGS
@given(typed_inputs)
def test_valid_inputs_round_trip_through_the_json_body(
    video: KlingImageToVideo | KlingTextToVideo,
) -> None:
    wire = json.loads(json.dumps(video.to_payload(), allow_nan=False))
    assert type(video).from_payload(wire, allow_unknown_fields=True) == video


@SETTINGS
@given(typed_inputs)
def test_typed_bodies_pass_the_dict_rules(video: KlingImageToVideo | KlingTextToVideo) -> None:
    # The emulator validates with validate_payload: a typed input must never be refused there.
    assert validate_payload(video.model_id, video.to_payload(), allow_unknown_fields=True) == []


# -- breaking fields ----------------------------------------------------------------------

Key = str | int
Breakage = tuple[tuple[Key, ...], Any]  # where, and the bad value (or DELETE)
DELETE = object()

TOP_BREAKS: dict[str, list[Any]] = {
    "prompt": ["", "  \n", 7, None, DELETE],
    "negative_prompt": [3, None, ["no"]],
    "duration": [2, 16, True, 5.5, "5"],
    "cfg_scale": [-0.01, 1.01, math.nan, math.inf, True, "0.5"],
    "shot_type": ["intelligent", 1],
    "multi_prompt": ["scene", {"prompt": "x"}, [{"prompt": "x", "duration": 3}] * 21],
    "bogus_field": [1],
}
I2V_BREAKS: dict[str, list[Any]] = {
    "start_image_url": ["http://a.com/x.png", "https://a.com/x.gif", "x.png", 5, DELETE],
    "generate_audio": [1, "yes", None],
    "elements": ["x", [{}], [{"video_url": "https://a.com/v.mp4"}] * 4],
    "sound": [True],  # the other model's field
}
T2V_BREAKS: dict[str, list[Any]] = {
    "aspect_ratio": ["4:3", 1],
    "sound": [0, "no"],
    "generate_audio": [True],  # the other model's field
}
SEGMENT_BREAKS: dict[str, list[Any]] = {
    "duration": [2, 16, True, "5"],
    "prompt": ["", " ", 5, DELETE],
    "weight": [0.5],  # unknown in a segment
}
ELEMENT_BREAKS: dict[str, list[Any]] = {
    "frontal_image_url": ["https://a.com/b.mp4", "http://a.com/b.png", None],
    "video_url": ["https://a.com/b.png", 3],
    "reference_image_urls": ["https://a.com/b.png", [1]],
}


def render(where: tuple[Key, ...]) -> str:
    text = ""
    for key in where:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def breakable(model_id: str, body: dict[str, Any]) -> list[tuple[tuple[Key, ...], list[Any]]]:
    spots: list[tuple[tuple[Key, ...], list[Any]]] = []
    model_breaks = I2V_BREAKS if model_id == KlingImageToVideo.model_id else T2V_BREAKS
    for name, bad in {**TOP_BREAKS, **model_breaks}.items():
        spots.append(((name,), bad))
    for i, _ in enumerate(body.get("multi_prompt", [])):
        spots += [(("multi_prompt", i, name), bad) for name, bad in SEGMENT_BREAKS.items()]
    for i, _ in enumerate(body.get("elements", [])):
        spots += [(("elements", i, name), bad) for name, bad in ELEMENT_BREAKS.items()]
        for j, _ in enumerate(body["elements"][i].get("reference_image_urls", [])):
            spots.append((("elements", i, "reference_image_urls", j), ["http://a.com/b.png"]))
    return spots


def apply(body: Any, where: tuple[Key, ...], value: Any) -> None:
    for key in where[:-1]:
        body = body[key]
    if value is DELETE:
        del body[where[-1]]
    else:
        body[where[-1]] = value


def nested_in(inner: tuple[Key, ...], outer: tuple[Key, ...]) -> bool:
    return inner != outer and inner[: len(outer)] == outer


def without_extras(video: KlingImageToVideo | KlingTextToVideo) -> Any:
    fields: dict[str, Any] = {
        "extra": {},
        "multi_prompt": [attrs.evolve(s, extra={}) for s in video.multi_prompt],
    }
    if isinstance(video, KlingImageToVideo):
        fields["elements"] = [attrs.evolve(e, extra={}) for e in video.elements]
    return attrs.evolve(video, **fields)


@SETTINGS
@given(typed_inputs, st.data())
def test_every_broken_field_is_reported(
    video: KlingImageToVideo | KlingTextToVideo, data: st.DataObject
) -> None:
    # unknown keys count as mistakes here, so start from the input without extras
    body = without_extras(video).to_payload()
    assert validate_payload(video.model_id, body) == []

    spots = breakable(video.model_id, body)
    chosen = data.draw(
        st.lists(st.sampled_from(range(len(spots))), min_size=1, max_size=4, unique=True)
    )
    wheres = [spots[i][0] for i in chosen]
    # Breaking a field replaces what is inside it, so skip spots inside another chosen one.
    picked = [i for i in chosen if not any(nested_in(spots[i][0], w) for w in wheres)]
    broken = []
    for i in picked:
        where, bad_values = spots[i]
        apply(body, where, data.draw(st.sampled_from(bad_values)))
        broken.append(render(where))

    reported = [p.path for p in validate_payload(video.model_id, body)]
    for path in broken:
        # at the field itself or inside it (a list of one bad item names the item)
        assert any(r == path or r.startswith((path + ".", path + "[")) for r in reported), (
            path,
            reported,
        )
