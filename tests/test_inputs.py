"""Kling 3.0 inputs: the dict rules, the typed classes, prepare_request and cost estimates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs
import pytest

import runcomfy_async.inputs as inputs
from runcomfy_async._errors import InputValidationError, ValidationProblem
from runcomfy_async.inputs import (
    DEFAULT_PRICES,
    Element,
    KlingImageToVideo,
    KlingTextToVideo,
    ModelInput,
    ModelPrice,
    MultiPromptSegment,
    PriceTable,
    check_payload,
    estimate_cost,
    known_model_ids,
    model_input_class,
    prepare_request,
    validate_payload,
)

I2V = "kling/kling-3.0/standard/image-to-video"
T2V = "kling/kling-3.0/pro/text-to-video"
IMG = "https://cdn.example.com/frames/start.png"
VID = "https://cdn.example.com/motion/ref.mp4"


def i2v(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a dog runs on the beach", "start_image_url": IMG, **fields}


def t2v(**fields: Any) -> dict[str, Any]:
    return {"prompt": "a cat plays the piano", **fields}


def paths(problems: list[ValidationProblem]) -> list[str]:
    return [p.path for p in problems]


def segments(*durations: int) -> list[dict[str, Any]]:
    return [{"prompt": f"scene {i}", "duration": d} for i, d in enumerate(durations)]


# -- the package surface ----------------------------------------------------------


def test_all_lists_every_public_name_and_each_is_importable() -> None:
    public = {name for name in vars(inputs) if not name.startswith("_")}
    assert set(inputs.__all__) == public
    assert len(inputs.__all__) == len(set(inputs.__all__))


def test_known_model_ids_are_the_bundled_kling_tiers() -> None:
    assert known_model_ids() == frozenset(
        {I2V, T2V, "kling/kling-3.0/pro/image-to-video", "kling/kling-3.0/standard/text-to-video"}
    )


def test_model_input_class_maps_ids_to_typed_classes() -> None:
    assert model_input_class(I2V) is KlingImageToVideo
    assert model_input_class(T2V) is KlingTextToVideo
    assert model_input_class("other/model") is None


def test_typed_classes_know_their_model_id() -> None:
    assert KlingImageToVideo.model_id == I2V
    assert KlingTextToVideo(prompt="x").model_id == T2V


# -- valid bodies ------------------------------------------------------------------


def test_schema_examples_are_valid() -> None:
    assert validate_payload(I2V, i2v()) == []
    assert validate_payload(T2V, t2v()) == []


def test_every_field_set_to_a_valid_value_is_valid() -> None:
    body = i2v(
        negative_prompt="blur",
        duration=12,
        generate_audio=False,
        cfg_scale=0.7,
        multi_prompt=segments(5, 7),
        elements=[
            {"frontal_image_url": IMG, "reference_image_urls": [IMG, IMG]},
            {"video_url": VID},
        ],
        shot_type="customize",
    )
    assert validate_payload(I2V, body) == []
    body = t2v(negative_prompt="", aspect_ratio="9:16", sound=False, duration=6)
    assert validate_payload(T2V, body) == []


# -- boundaries: each rule accepts its limits and rejects one past them ------------


@pytest.mark.parametrize("model, make", [(I2V, i2v), (T2V, t2v)])
@pytest.mark.parametrize("duration", [3, 15])
def test_duration_limits_are_accepted(model: str, make: Any, duration: int) -> None:
    assert validate_payload(model, make(duration=duration)) == []


@pytest.mark.parametrize("model, make", [(I2V, i2v), (T2V, t2v)])
@pytest.mark.parametrize("duration", [2, 16, 0, -3, True, False, 5.0, "5", None])
def test_duration_outside_limits_or_not_an_int_is_rejected(
    model: str, make: Any, duration: Any
) -> None:
    assert paths(validate_payload(model, make(duration=duration))) == ["duration"]


@pytest.mark.parametrize("cfg", [0, 1, 0.0, 1.0, 0.5, 1e-9])
def test_cfg_scale_limits_are_accepted(cfg: float) -> None:
    assert validate_payload(T2V, t2v(cfg_scale=cfg)) == []


@pytest.mark.parametrize(
    "cfg", [-0.01, 1.01, math.nan, math.inf, -math.inf, True, False, "0.5", None]
)
def test_cfg_scale_outside_limits_or_not_a_number_is_rejected(cfg: Any) -> None:
    assert paths(validate_payload(I2V, i2v(cfg_scale=cfg))) == ["cfg_scale"]


def _count_problems(problems: list[ValidationProblem], path: str) -> list[ValidationProblem]:
    return [p for p in problems if p.path == path and "at most" in p.rule]


def test_twenty_segments_are_within_the_limit_and_twenty_one_are_not() -> None:
    # 20 segments of 3 s can never add up to 15 s: only the count rule is looked at here.
    assert (
        _count_problems(
            validate_payload(T2V, t2v(multi_prompt=segments(*[3] * 20))), "multi_prompt"
        )
        == []
    )
    over = _count_problems(
        validate_payload(T2V, t2v(multi_prompt=segments(*[3] * 21))), "multi_prompt"
    )
    assert [p.rule for p in over] == ["must have at most 20 items, has 21"]


@pytest.mark.parametrize("duration", [3, 15])
def test_segment_duration_limits_are_accepted(duration: int) -> None:
    assert validate_payload(T2V, t2v(duration=duration, multi_prompt=segments(duration))) == []


@pytest.mark.parametrize("duration", [2, 16, True, 4.0, "5", None])
def test_segment_duration_outside_limits_is_rejected(duration: Any) -> None:
    body = t2v(duration=6, multi_prompt=[*segments(3), {"prompt": "b", "duration": duration}])
    assert "multi_prompt[1].duration" in paths(validate_payload(T2V, body))


def test_three_elements_are_accepted_and_four_are_not() -> None:
    assert validate_payload(I2V, i2v(elements=[{"video_url": VID}] * 3)) == []
    problems = validate_payload(I2V, i2v(elements=[{"video_url": VID}] * 4))
    assert [(p.path, p.rule) for p in problems] == [
        ("elements", "must have at most 3 items, has 4")
    ]


def test_empty_lists_are_accepted() -> None:
    assert validate_payload(I2V, i2v(multi_prompt=[], elements=[])) == []


# -- the sum of segment durations ---------------------------------------------------


def test_segment_durations_adding_up_to_duration_are_accepted() -> None:
    assert validate_payload(T2V, t2v(duration=11, multi_prompt=segments(3, 3, 5))) == []


def test_segment_durations_not_adding_up_are_rejected_with_both_numbers() -> None:
    [problem] = validate_payload(T2V, t2v(duration=11, multi_prompt=segments(3, 3, 4)))
    assert problem.path == "multi_prompt"
    assert problem.value == [3, 3, 4]
    assert "add up to duration (11 s)" in problem.rule and "10 s" in problem.rule


def test_segment_sum_uses_the_model_default_duration_when_absent() -> None:
    assert validate_payload(I2V, i2v(multi_prompt=segments(5, 5))) == []  # default 10
    assert validate_payload(T2V, t2v(multi_prompt=segments(5))) == []  # default 5
    [problem] = validate_payload(T2V, t2v(multi_prompt=segments(5, 5)))
    assert "default duration (5 s)" in problem.rule


def test_segment_sum_uses_the_segment_default_duration_when_absent() -> None:
    body = t2v(duration=10, multi_prompt=[{"prompt": "a"}, {"prompt": "b"}])
    assert validate_payload(T2V, body) == []


def test_segment_sum_is_not_checked_when_a_duration_has_the_wrong_type() -> None:
    body = t2v(duration=10, multi_prompt=[{"prompt": "a", "duration": "5"}])
    assert paths(validate_payload(T2V, body)) == ["multi_prompt[0].duration"]


# -- enums, bools, strings, required -------------------------------------------------


@pytest.mark.parametrize("ratio", ["16:9", "9:16", "1:1"])
def test_listed_aspect_ratios_are_accepted(ratio: str) -> None:
    assert validate_payload(T2V, t2v(aspect_ratio=ratio)) == []


@pytest.mark.parametrize("ratio", ["4:3", "16:10", "16x9", "", 1.77, None])
def test_other_aspect_ratios_are_rejected(ratio: Any) -> None:
    assert paths(validate_payload(T2V, t2v(aspect_ratio=ratio))) == ["aspect_ratio"]


@pytest.mark.parametrize("model, make", [(I2V, i2v), (T2V, t2v)])
def test_shot_type_accepts_customize_only(model: str, make: Any) -> None:
    assert validate_payload(model, make(shot_type="customize")) == []
    for bad in ("intelligent", "Customize", None, 1):
        assert paths(validate_payload(model, make(shot_type=bad))) == ["shot_type"]


@pytest.mark.parametrize("model, make, field", [(I2V, i2v, "generate_audio"), (T2V, t2v, "sound")])
def test_audio_switch_must_be_a_bool(model: str, make: Any, field: str) -> None:
    assert validate_payload(model, make(**{field: True})) == []
    assert validate_payload(model, make(**{field: False})) == []
    for bad in (1, 0, "true", None):
        assert paths(validate_payload(model, make(**{field: bad}))) == [field]


@pytest.mark.parametrize("prompt", ["", " ", "\n\t ", "\u3000", 5, None, ["a"]])
def test_blank_or_non_string_prompt_is_rejected(prompt: Any) -> None:
    assert paths(validate_payload(T2V, t2v(prompt=prompt))) == ["prompt"]


@pytest.mark.parametrize("prompt", ["", "   ", 3])
def test_blank_or_non_string_segment_prompt_is_rejected(prompt: Any) -> None:
    body = t2v(duration=5, multi_prompt=[{"prompt": prompt, "duration": 5}])
    assert paths(validate_payload(T2V, body)) == ["multi_prompt[0].prompt"]


def test_segment_without_prompt_is_rejected() -> None:
    [problem] = validate_payload(T2V, t2v(multi_prompt=[{"duration": 5}]))
    assert problem.path == "multi_prompt[0].prompt"
    assert problem.value is attrs.NOTHING


@pytest.mark.parametrize("bad", ["scene", {"prompt": "a"}, None])
def test_multi_prompt_must_be_a_list(bad: Any) -> None:
    assert paths(validate_payload(T2V, t2v(multi_prompt=bad))) == ["multi_prompt"]


def test_segment_must_be_an_object() -> None:
    assert paths(validate_payload(T2V, t2v(multi_prompt=["scene"]))) == ["multi_prompt[0]"]


def test_negative_prompt_must_be_a_string_but_may_be_empty() -> None:
    assert validate_payload(T2V, t2v(negative_prompt="")) == []
    assert paths(validate_payload(T2V, t2v(negative_prompt=3))) == ["negative_prompt"]


def test_missing_required_fields_are_reported_as_missing() -> None:
    problems = validate_payload(I2V, {})
    assert paths(problems) == ["prompt", "start_image_url"]
    assert all(p.value is attrs.NOTHING for p in problems)
    assert "(got <missing>)" in str(problems[0])


def test_a_body_that_is_not_an_object_is_rejected() -> None:
    for model in (I2V, T2V, "other/model"):
        assert paths(validate_payload(model, ["prompt"])) == ["<payload>"]  # type: ignore[arg-type]


# -- URLs ------------------------------------------------------------------------------

GOOD_IMAGE_URLS = [
    "https://cdn.example.com/a.jpg",
    "https://cdn.example.com/a.JPEG",
    "https://cdn.example.com/dir/a.png?X-Amz-Signature=abc&x=1",
    "https://cdn.example.com/a.bmp#frag",
    "https://cdn.example.com:8443/a.webp",
    "HTTPS://CDN.EXAMPLE.COM/A.PNG",
    "https://192.0.2.1/a.png",
    # no extension, or one naming no known format: signed CDN links look like this
    "https://cdn.example.com/img/12345?sig=abc",
    "https://cdn.example.com/png",
    "https://cdn.example.com/?file=a.png",
    "https://cdn.example.com/a.png.txt",
    "data:image/png;base64,iVBORw0KGgo=",
    "data:image/webp;base64,UklGRg==",
]

BAD_IMAGE_URLS = [
    "http://cdn.example.com/a.png",
    "ftp://cdn.example.com/a.png",
    "file:///tmp/a.png",
    "//cdn.example.com/a.png",
    "/a.png",
    "a.png",
    "https:///a.png",
    "https://user:pw@cdn.example.com/a.png",
    "https://cdn.example.com/a b.png",
    " https://cdn.example.com/a.png",
    "https://cdn.example.com/a.png\n",
    "https://cdn.example.com:99999/a.png",
    "https://[::1/a.png",
    "https://cdn.example.com/a.mp4",
    "data:video/mp4;base64,AAAA",
    "data:text/plain;base64,AAAA",
    "data:image/png;base64",
    "data:;base64,AAAA",
    "",
    5,
    None,
]


@pytest.mark.parametrize("url", GOOD_IMAGE_URLS)
def test_https_image_urls_are_accepted(url: str) -> None:
    assert validate_payload(I2V, i2v(start_image_url=url)) == []
    assert validate_payload(I2V, i2v(elements=[{"frontal_image_url": url}])) == []


@pytest.mark.parametrize("url", BAD_IMAGE_URLS)
def test_other_image_urls_are_rejected(url: Any) -> None:
    assert paths(validate_payload(I2V, i2v(start_image_url=url))) == ["start_image_url"]
    body = i2v(elements=[{"reference_image_urls": [IMG, url]}])
    assert paths(validate_payload(I2V, body)) == ["elements[0].reference_image_urls[1]"]


@pytest.mark.parametrize("url", ["https://cdn.example.com/a.gif", "data:image/gif;base64,R0lG"])
def test_a_format_the_start_image_description_leaves_out_is_refused(url: str) -> None:
    # the start image's description lists jpg, jpeg, png, bmp, webp; a reference
    # image's schema lists no formats, so any image format goes there
    problems = validate_payload(I2V, i2v(start_image_url=url))
    assert paths(problems) == ["start_image_url"]
    assert "bmp, jpeg, png, webp" in problems[0].rule
    assert validate_payload(I2V, i2v(elements=[{"frontal_image_url": url}])) == []


@pytest.mark.parametrize("ext", ["mp4", "MOV", "m4v", "webm", "avi", "mkv"])
def test_video_urls_with_a_video_extension_are_accepted(ext: str) -> None:
    body = i2v(elements=[{"video_url": f"https://cdn.example.com/ref.{ext}?t=1"}])
    assert validate_payload(I2V, body) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.example.com/ref.png",
        "http://x.com/a.mp4",
        "ftp://x.com/a.mp4",
        "data:image/png;base64,AAAA",
    ],
)
def test_video_urls_of_another_kind_or_without_https_are_rejected(url: str) -> None:
    assert paths(validate_payload(I2V, i2v(elements=[{"video_url": url}]))) == [
        "elements[0].video_url"
    ]


def test_empty_element_is_rejected() -> None:
    empty: list[dict[str, Any]] = [{}, {"reference_image_urls": []}]
    for element in empty:
        assert paths(validate_payload(I2V, i2v(elements=[element]))) == ["elements[0]"]


def test_reference_image_urls_must_be_a_list() -> None:
    body = i2v(elements=[{"reference_image_urls": IMG}])
    assert "elements[0].reference_image_urls" in paths(validate_payload(I2V, body))


# -- the two models differ ---------------------------------------------------------


@pytest.mark.parametrize(
    "model, make, field, value",
    [
        (I2V, i2v, "sound", True),
        (I2V, i2v, "aspect_ratio", "16:9"),
        (T2V, t2v, "generate_audio", True),
        (T2V, t2v, "start_image_url", IMG),
        (T2V, t2v, "elements", []),
    ],
)
def test_a_field_of_the_other_model_is_unknown(
    model: str, make: Any, field: str, value: Any
) -> None:
    [problem] = validate_payload(model, make(**{field: value}))
    assert problem.path == field
    assert "is not a field of this model" in problem.rule


# -- one error lists everything -------------------------------------------------------


def test_one_error_lists_every_problem_with_its_path() -> None:
    body = {
        "prompt": "  ",
        "duration": 16,
        "cfg_scale": math.nan,
        "aspect_ratio": "4:3",
        "sound": "yes",
        "multi_prompt": [*segments(5, 5), {"prompt": "", "duration": 2}],
        "seed": 42,
    }
    with pytest.raises(InputValidationError) as caught:
        check_payload(T2V, body)
    error = caught.value
    assert error.model_id == T2V
    expected = {
        "prompt",
        "duration",
        "cfg_scale",
        "aspect_ratio",
        "sound",
        "multi_prompt[2].prompt",
        "multi_prompt[2].duration",
        "multi_prompt",  # 5 + 5 + 2 != 16
        "seed",
    }
    assert set(paths(error.problems)) == expected
    text = str(error)
    assert text.startswith(f"invalid input for {T2V}: {len(expected)} problems")
    for path in expected:
        assert f"  - {path}: " in text
    assert "<code>multi_prompt[2].duration</code>" in error._repr_html_()


def test_input_validation_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        check_payload(T2V, {})


def test_check_payload_is_silent_for_a_valid_body() -> None:
    check_payload(T2V, t2v())


# -- the generic path: unknown keys and unknown models --------------------------------


def test_unknown_key_is_reported_with_a_suggestion() -> None:
    [problem] = validate_payload(T2V, t2v(durration=5))
    assert problem.path == "durration"
    assert problem.value == 5
    assert "did you mean 'duration'?" in problem.rule


def test_allow_unknown_fields_accepts_unknown_keys_at_every_level() -> None:
    body = t2v(seed=7, multi_prompt=[{"prompt": "a", "duration": 5, "weight": 0.5}])
    assert paths(validate_payload(T2V, body)) == ["seed", "multi_prompt[0].weight"]
    assert validate_payload(T2V, body, allow_unknown_fields=True) == []


def test_allowed_unknown_values_must_still_be_json() -> None:
    problems = validate_payload(T2V, t2v(seed=math.inf, tags={1: "x"}), allow_unknown_fields=True)
    assert paths(problems) == ["seed", "tags[1]"]


def test_allow_unknown_fields_does_not_relax_known_fields() -> None:
    assert paths(validate_payload(T2V, t2v(duration=99), allow_unknown_fields=True)) == ["duration"]


def test_unknown_model_id_passes_through_unvalidated() -> None:
    assert validate_payload("acme/video-9", {"anything": [1, {"goes": None}], "n": 1.5}) == []


def test_unknown_model_id_body_must_still_be_json() -> None:
    body: dict[Any, Any] = {"n": math.nan, "when": object(), 3: "x"}
    problems = validate_payload("acme/video-9", body)
    assert paths(problems) == ["n", "when", "[3]"]


def test_a_reference_cycle_is_reported_not_a_recursion_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    problems = validate_payload("acme/video-9", {"loop": cycle})
    assert len(problems) == 1 and "nested" in problems[0].rule


# -- typed inputs --------------------------------------------------------------------


def test_typed_defaults_are_the_schema_defaults_and_are_sent() -> None:
    assert KlingTextToVideo(prompt="a cat").to_payload() == {
        "prompt": "a cat",
        "duration": 5,
        "aspect_ratio": "16:9",
        "cfg_scale": 0.5,
        "sound": True,
    }
    assert KlingImageToVideo(prompt="a dog", start_image_url=IMG).to_payload() == {
        "prompt": "a dog",
        "start_image_url": IMG,
        "duration": 10,
        "generate_audio": True,
        "cfg_scale": 0.5,
    }


def test_typed_optionals_are_sent_only_when_set() -> None:
    body = KlingImageToVideo(
        prompt="a dog",
        start_image_url=IMG,
        negative_prompt="blur",
        shot_type="customize",
        duration=8,
        multi_prompt=[MultiPromptSegment("run", 3), MultiPromptSegment("jump")],
        elements=[
            Element(frontal_image_url=IMG),
            Element(video_url=VID, reference_image_urls=[IMG]),
        ],
    ).to_payload()
    assert body["negative_prompt"] == "blur"
    assert body["shot_type"] == "customize"
    assert body["multi_prompt"] == [
        {"prompt": "run", "duration": 3},
        {"prompt": "jump", "duration": 5},
    ]
    assert body["elements"] == [
        {"frontal_image_url": IMG},
        {"reference_image_urls": [IMG], "video_url": VID},
    ]


def test_typed_input_validates_on_construction_listing_every_problem() -> None:
    with pytest.raises(InputValidationError) as caught:
        KlingImageToVideo(
            prompt="",
            start_image_url="http://example.com/a.png",
            duration=9,
            cfg_scale=2,
            multi_prompt=[
                MultiPromptSegment("a", 3),
                MultiPromptSegment("b", 3),
                MultiPromptSegment("c", 16),
            ],
            elements=[Element()],
        )
    assert caught.value.model_id == I2V
    assert paths(caught.value.problems) == [
        "prompt",
        "start_image_url",
        "cfg_scale",
        "multi_prompt",
        "multi_prompt[2].duration",
        "elements[0]",
    ]


def test_typed_input_rejects_items_of_the_wrong_class() -> None:
    with pytest.raises(InputValidationError) as caught:
        KlingTextToVideo(
            prompt="x",
            multi_prompt=[MultiPromptSegment("a"), {"prompt": "b", "duration": 5}, "c"],  # type: ignore[list-item]
            duration=15,
        )
    problems = caught.value.problems
    assert [(p.path, p.rule) for p in problems] == [
        ("multi_prompt[1]", "must be an instance of MultiPromptSegment"),
        ("multi_prompt[2]", "must be an instance of MultiPromptSegment"),
    ]


def test_typed_input_reports_wrong_types() -> None:
    with pytest.raises(InputValidationError) as caught:
        KlingTextToVideo(prompt=None, duration="5", sound=1, aspect_ratio="4:3")  # type: ignore[arg-type]
    assert paths(caught.value.problems) == ["prompt", "duration", "aspect_ratio", "sound"]


def test_extra_is_merged_into_the_body_at_every_level() -> None:
    body = KlingTextToVideo(
        prompt="x", extra={"seed": 7}, multi_prompt=[MultiPromptSegment("a", extra={"weight": 1})]
    ).to_payload()
    assert body["seed"] == 7
    assert body["multi_prompt"] == [{"prompt": "a", "duration": 5, "weight": 1}]


def test_extra_colliding_with_a_known_field_is_a_problem() -> None:
    with pytest.raises(InputValidationError) as caught:
        KlingTextToVideo(
            prompt="x",
            extra={"duration": 7, "negative_prompt": "y"},
            multi_prompt=[MultiPromptSegment("a", extra={"duration": 3})],
        )
    assert paths(caught.value.problems) == [
        "multi_prompt[0].extra['duration']",
        "extra['duration']",
        "extra['negative_prompt']",
    ]


def test_extra_must_hold_json_with_string_keys() -> None:
    with pytest.raises(InputValidationError) as caught:
        KlingTextToVideo(prompt="x", extra={"seed": math.nan, 3: "x", "t": {object()}})  # type: ignore[dict-item]
    assert paths(caught.value.problems) == ["extra['seed']", "extra[3]", "extra['t']"]


def test_typed_input_is_frozen_and_evolve_validates_again() -> None:
    video = KlingTextToVideo(prompt="x")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        video.duration = 99  # type: ignore[misc]
    assert attrs.evolve(video, duration=7).duration == 7
    with pytest.raises(InputValidationError):
        attrs.evolve(video, duration=99)


def test_extra_cannot_be_changed_after_construction() -> None:
    extra: dict[str, Any] = {"tags": ["a"]}
    video = KlingTextToVideo(prompt="x", extra=extra)
    extra["duration"] = 99
    extra["tags"].append("b")
    assert video.to_payload()["tags"] == ["a"] and video.to_payload()["duration"] == 5
    with pytest.raises(TypeError):
        video.extra["seed"] = 1  # type: ignore[index]


def test_to_payload_returns_a_fresh_body_each_time() -> None:
    video = KlingTextToVideo(prompt="x", extra={"tags": ["a"]})
    body = video.to_payload()
    body["tags"].append("b")
    body["duration"] = 99
    assert video.to_payload()["tags"] == ["a"] and video.to_payload()["duration"] == 5


def test_typed_inputs_compare_by_value_and_hash() -> None:
    a = KlingTextToVideo(prompt="x", multi_prompt=[MultiPromptSegment("a")], extra={"k": 1})
    b = KlingTextToVideo(prompt="x", multi_prompt=(MultiPromptSegment("a"),), extra={"k": 1})
    assert a == b and hash(a) == hash(b)
    assert a != attrs.evolve(a, extra={"k": 2})


def test_from_payload_builds_the_typed_input() -> None:
    body = i2v(
        duration=8,
        multi_prompt=segments(3, 5),
        elements=[{"frontal_image_url": IMG, "reference_image_urls": [IMG]}],
    )
    video = KlingImageToVideo.from_payload(body)
    assert video.multi_prompt == (
        MultiPromptSegment("scene 0", 3),
        MultiPromptSegment("scene 1", 5),
    )
    assert video.elements == (Element(frontal_image_url=IMG, reference_image_urls=(IMG,)),)
    assert video.to_payload() == {**body, "generate_audio": True, "cfg_scale": 0.5}


def test_from_payload_rejects_unknown_keys_unless_allowed() -> None:
    body = t2v(seed=1, multi_prompt=[{"prompt": "a", "duration": 5, "weight": 2}])
    with pytest.raises(InputValidationError) as caught:
        KlingTextToVideo.from_payload(body)
    assert paths(caught.value.problems) == ["seed", "multi_prompt[0].weight"]
    video = KlingTextToVideo.from_payload(body, allow_unknown_fields=True)
    assert video.extra == {"seed": 1}
    assert video.multi_prompt[0].extra == {"weight": 2}


def test_from_payload_lists_every_problem_of_the_body() -> None:
    with pytest.raises(InputValidationError) as caught:
        KlingImageToVideo.from_payload({"duration": 1, "elements": [{}, {}, {}, {}]})
    assert paths(caught.value.problems) == [
        "prompt",
        "start_image_url",
        "duration",
        "elements",
        "elements[0]",
        "elements[1]",
        "elements[2]",
        "elements[3]",
    ]


def test_typed_inputs_are_model_inputs() -> None:
    assert isinstance(KlingTextToVideo(prompt="x"), ModelInput)
    assert not isinstance(MultiPromptSegment("x"), ModelInput)


# -- prepare_request --------------------------------------------------------------------


def test_prepare_request_takes_a_typed_input() -> None:
    video = KlingTextToVideo(prompt="x", extra={"seed": 1})
    assert prepare_request(video) == (T2V, video.to_payload())


def test_prepare_request_takes_a_model_id_and_a_payload() -> None:
    model_id, body = prepare_request(T2V, t2v())
    assert (model_id, body) == (T2V, t2v())
    assert type(body) is dict


def test_prepare_request_copies_the_payload() -> None:
    payload = t2v(multi_prompt=segments(5))
    _, body = prepare_request(T2V, payload)
    payload["multi_prompt"][0]["duration"] = 99
    assert body["multi_prompt"][0]["duration"] == 5


def test_prepare_request_validates_known_models() -> None:
    with pytest.raises(InputValidationError) as caught:
        prepare_request(T2V, t2v(duration=2, seed=1))
    assert caught.value.model_id == T2V
    assert paths(caught.value.problems) == ["duration", "seed"]


def test_prepare_request_options_relax_validation() -> None:
    assert prepare_request(T2V, t2v(seed=1), allow_unknown_fields=True)[1]["seed"] == 1
    assert prepare_request(T2V, t2v(duration=2), validate=False)[1]["duration"] == 2


def test_prepare_request_passes_unknown_models_through() -> None:
    assert prepare_request("acme/video-9", {"x": [1]}) == ("acme/video-9", {"x": [1]})


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((KlingTextToVideo(prompt="x"), {"prompt": "y"}), {}),
        ((T2V,), {}),
        ((T2V, None), {}),
        ((T2V, [("prompt", "x")]), {}),
        ((T2V, "prompt"), {}),
        ((42, {}), {}),
        ((None,), {}),
        (({"prompt": "x"},), {}),
        ((KlingTextToVideo,), {}),
    ],
)
def test_prepare_request_rejects_wrong_call_shapes(args: tuple[Any, ...], kwargs: Any) -> None:
    with pytest.raises(TypeError):
        prepare_request(*args, **kwargs)


@pytest.mark.parametrize(
    "model_id",
    [
        "",
        "/",
        "/kling/x",
        "kling/x/",
        "kling//x",
        "kling/../x",
        "..",
        "kling/./x",
        "kling/x..y",
        "kling/x?y=1",
        "kling/x#frag",
        "kling/x%2Fy",
        "kling x",
        "kling/x\n",
        "\nkling/x",
        "kling/x\t",
        "kling\\x",
        "klïng/x",
    ],
)
def test_prepare_request_rejects_bad_model_ids(model_id: str) -> None:
    with pytest.raises(InputValidationError) as caught:
        prepare_request(model_id, {}, validate=False)
    assert paths(caught.value.problems) == ["model_id"]
    assert caught.value.model_id is None  # never echoed in the headline


@pytest.mark.parametrize("model_id", [I2V, T2V, "a", "A.b_c-d/e", "owner/model.v2/x-1"])
def test_prepare_request_accepts_good_model_ids(model_id: str) -> None:
    assert (
        prepare_request(model_id, {"prompt": "x", "start_image_url": IMG}, validate=False)[0]
        == model_id
    )


@attrs.frozen
class HandRolledInput:
    model_id: str
    body: Mapping[str, Any]

    def to_payload(self) -> dict[str, Any]:
        return dict(self.body)


def test_prepare_request_validates_other_model_inputs_like_dicts() -> None:
    assert prepare_request(HandRolledInput(T2V, t2v())) == (T2V, t2v())
    with pytest.raises(InputValidationError):
        prepare_request(HandRolledInput(T2V, t2v(duration=1)))
    assert (
        prepare_request(HandRolledInput(T2V, t2v(duration=1)), validate=False)[1]["duration"] == 1
    )
    with pytest.raises(InputValidationError):
        prepare_request(HandRolledInput("bad id", {}))


def test_prepare_request_reports_a_bad_model_id_with_the_payload_problems() -> None:
    with pytest.raises(InputValidationError) as caught:
        prepare_request("a b", {"x": math.nan})
    assert paths(caught.value.problems) == ["model_id", "x"]


# -- cost estimates ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id, body, usd",
    [
        (I2V, i2v(), 1.26),  # default 10 s, audio on
        (I2V, i2v(generate_audio=False), 0.84),
        (I2V, i2v(duration=3, generate_audio=False), 0.252),
        (T2V, t2v(sound=False), 0.56),  # default 5 s
        (T2V, t2v(), 0.84),
        (T2V, t2v(duration=15), 2.52),
    ],
)
def test_estimate_cost_uses_the_public_prices(
    model_id: str, body: dict[str, Any], usd: float
) -> None:
    assert estimate_cost(model_id, body) == pytest.approx(usd)
    assert estimate_cost(model_input_class(model_id).from_payload(body)) == pytest.approx(usd)  # type: ignore[union-attr]


def test_estimate_cost_is_rounded_for_display() -> None:
    assert estimate_cost(T2V, t2v(duration=3, sound=False)) == 0.336


def test_estimate_cost_with_a_price_override() -> None:
    prices = PriceTable({T2V: (0.2, 0.3)})
    assert estimate_cost(KlingTextToVideo(prompt="x", duration=10), prices=prices) == pytest.approx(
        3.0
    )
    with pytest.raises(LookupError, match="no price known"):
        estimate_cost(I2V, i2v(), prices=prices)


def test_estimate_cost_for_an_unpriced_model_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match="acme/video-9"):
        estimate_cost("acme/video-9", {"duration": 5})


def test_estimate_cost_for_a_priced_model_without_rules_needs_a_duration() -> None:
    prices = DEFAULT_PRICES.updated({"acme/video-9": (0.112, 0.168)})
    model = "acme/video-9"
    assert estimate_cost(
        model, {"duration": 10, "generate_audio": False}, prices=prices
    ) == pytest.approx(1.12)
    assert estimate_cost(model, {"duration": 10}, prices=prices) == pytest.approx(
        1.68
    )  # audio assumed
    with pytest.raises(InputValidationError) as caught:
        estimate_cost(model, {}, prices=prices)
    assert paths(caught.value.problems) == ["duration"]


def test_estimate_cost_refuses_invalid_input() -> None:
    with pytest.raises(InputValidationError):
        estimate_cost(T2V, t2v(duration=20))


def test_price_table_lookup() -> None:
    assert DEFAULT_PRICES.get(T2V) == ModelPrice(0.112, 0.168)
    assert DEFAULT_PRICES.get(I2V) == (0.084, 0.126)
    assert DEFAULT_PRICES.get("acme/video-9") is None
    assert T2V in DEFAULT_PRICES and "acme/video-9" not in DEFAULT_PRICES


def test_price_table_updated_leaves_the_original_alone() -> None:
    cheaper = DEFAULT_PRICES.updated({T2V: (0.1, 0.15)})
    assert cheaper.get(T2V) == (0.1, 0.15)
    assert cheaper.get(I2V) == DEFAULT_PRICES.get(I2V)
    assert DEFAULT_PRICES.get(T2V) == (0.112, 0.168)


@pytest.mark.parametrize("bad", [(0.1,), (0.1, -0.2), (math.nan, 0.1), ("0.1", 0.2), (True, 0.1)])
def test_price_table_rejects_malformed_prices(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        PriceTable({T2V: bad})
