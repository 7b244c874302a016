"""The rules for model inputs, checked on plain dicts: the one source of truth.

Everything that validates an input ends up here: the client before a submit,
the typed input classes on construction (they validate their own JSON body),
and the emulator on the server side. So a rule is written once, and the
client, the typed classes and the emulator can never disagree about it.

The rules are those the published schemas state (``schemas/*.json`` in the
spec) plus the ones they imply; each is noted where it is checked.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

import attrs

from .._errors import InputValidationError, ValidationProblem

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "check_payload",
    "known_model_ids",
    "validate_payload",
]

I2V_MODEL_ID: Final = "kling/kling-3.0/standard/image-to-video"
T2V_MODEL_ID: Final = "kling/kling-3.0/pro/text-to-video"

#: File extensions accepted (in any case) at the end of an image URL's path:
#: the formats the image-to-video schema lists for ``start_image_url``.
IMAGE_EXTENSIONS: Final[tuple[str, ...]] = ("jpg", "jpeg", "png", "bmp", "webp")

#: File extensions accepted (in any case) at the end of a video URL's path. The
#: schema only says ``format: video_uri``; these are the containers Kling's
#: motion references are published with (MP4 and QuickTime, incl. the ``m4v``
#: spelling) plus WebM, which browsers and most pipelines produce.
VIDEO_EXTENSIONS: Final[tuple[str, ...]] = ("mp4", "mov", "m4v", "webm")

DURATION_MIN: Final = 3
DURATION_MAX: Final = 15
SEGMENT_DEFAULT_DURATION: Final = 5
MAX_SEGMENTS: Final = 20
MAX_ELEMENTS: Final = 3
ASPECT_RATIOS: Final[tuple[str, ...]] = ("16:9", "9:16", "1:1")
SHOT_TYPES: Final[tuple[str, ...]] = ("customize",)

#: Path used for a problem with the body as a whole (e.g. it is not an object).
PAYLOAD_PATH: Final = "<payload>"

# Deeper than this, a value is almost certainly a reference cycle; stopping
# keeps a cyclic structure from ending in a RecursionError.
_MAX_DEPTH: Final = 64


class _Report:
    """Collects problems while the rules walk one payload."""

    __slots__ = ("allow_unknown", "problems")

    def __init__(self, *, allow_unknown: bool) -> None:
        self.allow_unknown = allow_unknown
        self.problems: list[ValidationProblem] = []

    def add(self, path: str, value: Any, rule: str) -> None:
        self.problems.append(ValidationProblem(path, value, rule))


_Check = Callable[[str, Any, _Report], None]


def join_path(path: str, key: object) -> str:
    """The path of ``key`` inside the object at ``path`` (``""`` is the top level)."""
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass in Python but not an integer in JSON: True would
    # go on the wire as `true`, which the server rejects (or misreads).
    return isinstance(value, int) and not isinstance(value, bool)


# -- leaf rules ---------------------------------------------------------------


def _check_prompt(path: str, value: Any, report: _Report) -> None:
    if not isinstance(value, str):
        report.add(path, value, "must be a string")
    elif not value.strip():
        # an empty prompt is accepted by the schema's type but buys a clip of nothing
        report.add(path, value, "must not be empty or whitespace-only")


def _check_text(path: str, value: Any, report: _Report) -> None:
    if not isinstance(value, str):
        report.add(path, value, "must be a string")


def _check_seconds(path: str, value: Any, report: _Report) -> None:
    rule = f"must be an integer number of seconds from {DURATION_MIN} to {DURATION_MAX}"
    if isinstance(value, bool):
        report.add(path, value, rule + ", not a bool")
    elif not _is_int(value) or not DURATION_MIN <= value <= DURATION_MAX:
        report.add(path, value, rule)


def _check_cfg_scale(path: str, value: Any, report: _Report) -> None:
    rule = "must be a number from 0 to 1"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        report.add(path, value, rule)
    elif not math.isfinite(value):
        report.add(path, value, rule + " (NaN and infinity are not numbers in JSON)")
    elif not 0 <= value <= 1:
        report.add(path, value, rule)


def _check_bool(path: str, value: Any, report: _Report) -> None:
    if not isinstance(value, bool):
        report.add(path, value, "must be a bool (true or false)")


def _enum(choices: Sequence[str]) -> _Check:
    rule = "must be one of " + ", ".join(repr(c) for c in choices)

    def check(path: str, value: Any, report: _Report) -> None:
        if not isinstance(value, str) or value not in choices:
            report.add(path, value, rule)

    return check


_URL_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


def url_problem(value: Any, extensions: Sequence[str], kind: str) -> str | None:
    """Why ``value`` is not a public https URL of a ``kind`` file, or None if it is one."""
    if not isinstance(value, str):
        return f"must be a string: a public https URL of {kind}"
    if _URL_BAD_CHARS.search(value):
        return "must be a URL without whitespace or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- parsing the port is what detects a malformed one
    except ValueError:
        return "must be a well-formed URL"
    if parts.scheme.lower() != "https":
        return "must be an absolute https:// URL (the server fetches it over HTTPS)"
    if not parts.hostname:
        return "must be an absolute https:// URL with a host name"
    if parts.username is not None or parts.password is not None:
        return "must not contain a user name or password (the server fetches it without login)"
    if not parts.path.lower().endswith(tuple("." + ext for ext in extensions)):
        listed = ", ".join("." + ext for ext in extensions)
        return f"must be the URL of {kind}: its path must end with {listed} (any case)"
    return None


def _url_check(extensions: Sequence[str], kind: str) -> _Check:
    def check(path: str, value: Any, report: _Report) -> None:
        rule = url_problem(value, extensions, kind)
        if rule is not None:
            report.add(path, value, rule)

    return check


_check_image_url = _url_check(IMAGE_EXTENSIONS, "an image")
_check_video_url = _url_check(VIDEO_EXTENSIONS, "a video")


def check_json(path: str, value: Any, report: _Report, depth: int = 0) -> None:
    """Report the parts of ``value`` that cannot go into a JSON body."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            report.add(path, value, "must be a finite number (JSON has no NaN or infinity)")
        return
    if depth >= _MAX_DEPTH:
        report.add(path, value, f"must not be nested more than {_MAX_DEPTH} levels deep")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(f"{path}[{i}]", item, report, depth + 1)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            sub = join_path(path, key)
            if isinstance(key, str):
                check_json(sub, item, report, depth + 1)
            else:
                report.add(sub, key, "object keys must be strings (JSON has no other keys)")
    else:
        report.add(path, value, "must be JSON data: a string, number, bool, None, list or mapping")


# -- composite rules ----------------------------------------------------------


def _unknown_rule(key: str, known: Sequence[str], owner: str) -> str:
    hint = difflib.get_close_matches(key, known, n=1)
    maybe = f"; did you mean {hint[0]!r}?" if hint else ""
    return (
        f"is not a field of {owner}{maybe} "
        "(allow_unknown_fields=True, or `extra` on a typed input, sends it anyway)"
    )


def _check_object(
    path: str,
    value: Any,
    fields: Mapping[str, _Check],
    required: Sequence[str],
    owner: str,
    report: _Report,
) -> Mapping[Any, Any] | None:
    """Check one JSON object against its fields; return it if it is an object at all."""
    if not isinstance(value, Mapping):
        report.add(path or PAYLOAD_PATH, value, "must be an object (a mapping of field names)")
        return None
    for name in required:
        if name not in value:
            report.add(join_path(path, name), attrs.NOTHING, "is required")
    for key, item in value.items():
        sub = join_path(path, key)
        check = fields.get(key) if isinstance(key, str) else None
        if check is not None:
            check(sub, item, report)
        elif not isinstance(key, str):
            report.add(sub, key, "field names must be strings")
        elif report.allow_unknown:
            check_json(sub, item, report)
        else:
            report.add(sub, item, _unknown_rule(key, list(fields), owner))
    return value


def _check_array(
    path: str, value: Any, max_items: int, noun: str, report: _Report
) -> Sequence[Any] | None:
    if not isinstance(value, (list, tuple)):
        report.add(path, value, f"must be a list of {noun}")
        return None
    if len(value) > max_items:
        report.add(path, value, f"must have at most {max_items} {noun}, has {len(value)}")
    return value


_SEGMENT_FIELDS: Final[Mapping[str, _Check]] = {
    "prompt": _check_prompt,
    "duration": _check_seconds,
}


def _check_multi_prompt(path: str, value: Any, report: _Report) -> None:
    items = _check_array(path, value, MAX_SEGMENTS, "segments", report)
    for i, item in enumerate(items or ()):
        # The schema lists no required item fields, but a segment without a
        # prompt has nothing to show: prompt is required, duration defaults to 5.
        _check_object(
            f"{path}[{i}]", item, _SEGMENT_FIELDS, ("prompt",), "a multi_prompt segment", report
        )


def _check_image_urls(path: str, value: Any, report: _Report) -> None:
    if not isinstance(value, (list, tuple)):
        report.add(path, value, "must be a list of image URLs")
        return
    for i, item in enumerate(value):
        _check_image_url(f"{path}[{i}]", item, report)


_ELEMENT_FIELDS: Final[Mapping[str, _Check]] = {
    "frontal_image_url": _check_image_url,
    "reference_image_urls": _check_image_urls,
    "video_url": _check_video_url,
}


def _check_elements(path: str, value: Any, report: _Report) -> None:
    items = _check_array(path, value, MAX_ELEMENTS, "elements", report)
    for i, item in enumerate(items or ()):
        sub = f"{path}[{i}]"
        element = _check_object(sub, item, _ELEMENT_FIELDS, (), "an element", report)
        # Implied: an element is a reference asset, so an empty one is a mistake.
        if element is not None and not (
            "frontal_image_url" in element
            or "video_url" in element
            or element.get("reference_image_urls")
        ):
            report.add(sub, item, "needs frontal_image_url, reference_image_urls or video_url")


@attrs.frozen
class ModelRules:
    """What is known about one model's input: its field rules and the defaults cost depends on."""

    model_id: str
    fields: Mapping[str, _Check]
    required: tuple[str, ...]
    default_duration: int
    audio_field: str


def _check_segment_sum(rules: ModelRules, payload: Mapping[Any, Any], report: _Report) -> None:
    """The schemas' rule: segment durations add up to the total duration.

    Only checked when every number involved is an integer (a wrong type is
    reported at its own path already). Since each segment lasts at least 3 s
    and the total at most 15 s, this also means at most 5 segments can ever
    be valid, whatever the 20-segment maximum says.
    """
    segments = payload.get("multi_prompt")
    if not isinstance(segments, (list, tuple)) or not segments:
        return
    total: object = payload.get("duration", rules.default_duration)
    if not _is_int(total):
        return
    durations: list[int] = []
    for segment in segments:
        duration = (
            segment.get("duration", SEGMENT_DEFAULT_DURATION)
            if isinstance(segment, Mapping)
            else None
        )
        if _is_int(duration):
            durations.append(duration)
        else:
            return
    if sum(durations) != total:
        which = "duration" if "duration" in payload else "the default duration"
        report.add(
            "multi_prompt",
            durations,
            f"segment durations must add up to {which} ({total} s); they add up to "
            f"{sum(durations)} s",
        )


_COMMON_FIELDS: Final[dict[str, _Check]] = {
    "prompt": _check_prompt,
    "negative_prompt": _check_text,
    "duration": _check_seconds,
    "cfg_scale": _check_cfg_scale,
    "multi_prompt": _check_multi_prompt,
    "shot_type": _enum(SHOT_TYPES),
}

RULES: Final[Mapping[str, ModelRules]] = {
    I2V_MODEL_ID: ModelRules(
        model_id=I2V_MODEL_ID,
        fields={
            **_COMMON_FIELDS,
            "start_image_url": _check_image_url,
            "generate_audio": _check_bool,
            "elements": _check_elements,
        },
        required=("prompt", "start_image_url"),
        default_duration=10,
        audio_field="generate_audio",
    ),
    T2V_MODEL_ID: ModelRules(
        model_id=T2V_MODEL_ID,
        fields={**_COMMON_FIELDS, "aspect_ratio": _enum(ASPECT_RATIOS), "sound": _check_bool},
        required=("prompt",),
        default_duration=5,
        audio_field="sound",
    ),
}


def known_model_ids() -> frozenset[str]:
    """The model ids whose inputs this version validates (and has typed classes for)."""
    return frozenset(RULES)


def validate_payload(
    model_id: str, payload: Mapping[str, Any], *, allow_unknown_fields: bool = False
) -> list[ValidationProblem]:
    """Every problem with ``payload`` as the JSON body for ``model_id``; ``[]`` means valid.

    For a model id in :func:`known_model_ids` every rule of its schema is
    checked, plus the implied ones (non-blank prompts, segment durations adding
    up to ``duration``, well-formed https URLs with a file extension of the
    right kind, ...). A key the schema does not know is a problem unless
    ``allow_unknown_fields`` is true, the opt-out for fields the server added
    after this version; allowed unknown values must still be JSON data.

    Any other model id passes through unvalidated: only what every body needs
    to be sent at all is checked (a mapping with string keys and JSON values).

    Never raises for bad input; see :func:`check_payload` for the raising form.
    """
    report = _Report(allow_unknown=allow_unknown_fields)
    rules = RULES.get(model_id) if isinstance(model_id, str) else None
    if rules is None:
        if isinstance(payload, Mapping):
            check_json("", payload, report)
        else:
            report.add(PAYLOAD_PATH, payload, "must be an object (a mapping of field names)")
        return report.problems
    body = _check_object("", payload, rules.fields, rules.required, "this model", report)
    if body is not None:
        _check_segment_sum(rules, body, report)
    return report.problems


def check_payload(
    model_id: str, payload: Mapping[str, Any], *, allow_unknown_fields: bool = False
) -> None:
    """Raise :class:`InputValidationError` listing every problem :func:`validate_payload` finds."""
    problems = validate_payload(model_id, payload, allow_unknown_fields=allow_unknown_fields)
    if problems:
        raise InputValidationError(problems, model_id=model_id)


# A model id goes into the URL path (/v1/models/{model_id}), so anything that
# could change the path or the query (.., ?, #, %, whitespace) is refused.
_MODEL_ID_RE = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")


def model_id_problems(model_id: object) -> list[ValidationProblem]:
    """Problems with ``model_id`` itself (path ``model_id``); ``[]`` when it is safe to use."""
    rule = (
        "must be path segments of letters, digits, '.', '_' or '-' separated by single '/' "
        "(e.g. 'kling/kling-3.0/pro/text-to-video')"
    )
    if not isinstance(model_id, str) or not _MODEL_ID_RE.fullmatch(model_id):
        return [ValidationProblem("model_id", model_id, rule)]
    if ".." in model_id or "." in model_id.split("/"):
        return [ValidationProblem("model_id", model_id, "must not contain '..' or a '.' segment")]
    return []
