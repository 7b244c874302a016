"""Typed inputs for Kling 3.0: standard image-to-video and pro text-to-video.

The classes are thin: each builds its JSON body and hands it to
:func:`~runcomfy_async.inputs.validate_payload`, so the rules live in one place
(``_validate.py``) and a typed input can never accept what the dict path rejects.

Field names are the wire names. What goes into the body:

- a field with a schema default is always sent, default or not: the body then
  says exactly what will be generated and paid for (duration and audio set the
  price), whatever the server's defaults become;
- an optional field without a schema default is ``None`` when unset and left
  out, as are empty ``multi_prompt`` / ``elements`` / ``reference_image_urls``;
- ``shot_type`` is the exception: the schema gives ``"customize"`` as its
  default while the published text describes another default mode, so it is
  ``None`` (left out, the server decides) unless set;
- ``extra`` is merged in last, for fields the server has and these classes do
  not know yet; a key that names a known field is a validation problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypeVar, cast

import attrs

from .._errors import InputValidationError, ValidationProblem
from ..catalog import get_spec
from ..catalog._schema import check_json, join_path
from ._validate import (
    I2V_MODEL_ID,
    SEGMENT_DEFAULT_DURATION,
    T2V_MODEL_ID,
    _Report,
    check_payload,
    validate_payload,
)

__all__ = [
    "AspectRatio",
    "Element",
    "KlingImageToVideo",
    "KlingTextToVideo",
    "MultiPromptSegment",
    "ShotType",
]

AspectRatio = Literal["16:9", "9:16", "1:1"]
"""The aspect ratios Kling 3.0 text-to-video accepts."""

ShotType = Literal["customize"]
"""The shot types the Kling 3.0 schemas list."""

_MAX_COPY_DEPTH = 64


def _schema_defaults(model_id: str) -> dict[str, Any]:
    # The typed classes' defaults are the bundled schema's, not a second copy of them.
    spec = get_spec(model_id)
    assert spec is not None, model_id
    return {name: spec.default(name) for name in spec.properties}


_I2V_DEFAULTS: Final = _schema_defaults(I2V_MODEL_ID)
_T2V_DEFAULTS: Final = _schema_defaults(T2V_MODEL_ID)


def _copy_json(value: Any, depth: int = 0) -> Any:
    """Copy the containers of JSON-like data, so later mutation on either side cannot leak.

    Leaves are shared (they are immutable in JSON data); past a depth that only
    a reference cycle reaches, the value is kept as is for validation to report.
    """
    if depth >= _MAX_COPY_DEPTH:
        return value
    if isinstance(value, list):
        return [_copy_json(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_copy_json(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return {key: _copy_json(item, depth + 1) for key, item in value.items()}
    return value


def _freeze_extra(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # A read-only copy: the inputs are frozen and validated once, so nobody may
    # slip an unvalidated key in afterwards, not even through the caller's dict.
    if isinstance(value, Mapping):
        return MappingProxyType(_copy_json(value))
    return value  # not a mapping: kept for validation to report


def _repr_extra(value: Mapping[str, Any]) -> str:
    return repr(dict(value)) if isinstance(value, Mapping) else repr(value)


def _extra_field() -> Any:
    # hash=False: the mapping is not hashable, and equal inputs still hash equal.
    return attrs.field(
        factory=dict, converter=_freeze_extra, kw_only=True, hash=False, repr=_repr_extra
    )


def _as_tuple(value: Any) -> Any:
    # Lists and other iterables become tuples (frozen, hashable). A string or a
    # mapping is kept as is so validation reports it instead of exploding it.
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return value
    return tuple(value)


def _segments(value: Iterable[MultiPromptSegment]) -> tuple[MultiPromptSegment, ...]:
    return cast("tuple[MultiPromptSegment, ...]", _as_tuple(value))


def _elements(value: Iterable[Element]) -> tuple[Element, ...]:
    return cast("tuple[Element, ...]", _as_tuple(value))


def _urls(value: Iterable[str]) -> tuple[str, ...]:
    return cast("tuple[str, ...]", _as_tuple(value))


@attrs.frozen
class MultiPromptSegment:
    """One scene of a multi-shot clip: its ``prompt`` and its ``duration`` in seconds (3-15).

    Checked as part of the input holding it, so that one error reports every
    problem with its full path (``multi_prompt[2].duration``) and the rule that
    segment durations add up to the total can be checked with them.
    """

    prompt: str
    duration: int = SEGMENT_DEFAULT_DURATION
    extra: Mapping[str, Any] = _extra_field()
    """Wire fields of a segment these classes do not know yet, merged into its object."""


@attrs.frozen
class Element:
    """A reference asset for image-to-video: a subject's images and/or a motion video.

    URLs are public https URLs; images end in one of ``IMAGE_EXTENSIONS``, the
    video in one of ``VIDEO_EXTENSIONS``. At least one of the three is needed.
    Checked as part of the input holding it (see :class:`MultiPromptSegment`).
    """

    frontal_image_url: str | None = None
    reference_image_urls: tuple[str, ...] = attrs.field(default=(), converter=_urls)
    video_url: str | None = None
    extra: Mapping[str, Any] = _extra_field()
    """Wire fields of an element these classes do not know yet, merged into its object."""


_T = TypeVar("_T", bound="_KlingInput")

# Fields holding a list of nested objects, and the class of their items.
_NESTED: dict[str, type[Any]] = {"multi_prompt": MultiPromptSegment, "elements": Element}
# Fields holding a list (kept as a tuple in the classes, sent as a JSON array).
_LISTS = frozenset({*_NESTED, "reference_image_urls"})


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in attrs.fields(cls) if f.name != "extra")


class _Body:
    """An input's JSON body as built from its fields, before ``extra`` is merged in."""

    __slots__ = ("extras", "foreign", "problems", "value")

    def __init__(self) -> None:
        self.value: dict[str, Any] = {}
        # (object to merge into, its path, its extra, its known field names)
        self.extras: list[tuple[dict[str, Any], str, Any, tuple[str, ...]]] = []
        self.foreign: list[str] = []  # paths of items of the wrong class
        self.problems: list[ValidationProblem] = []  # problems only typed inputs can have


def _object_body(obj: Any, path: str, body: _Body) -> dict[str, Any]:
    """The wire object of ``obj``'s fields; its ``extra`` is queued on ``body``."""
    out: dict[str, Any] = {}
    names = _field_names(type(obj))
    for field in attrs.fields(type(obj)):
        if field.name == "extra":
            continue
        value = getattr(obj, field.name)
        if value is None and field.default is None:
            continue  # an unset optional is left out
        is_list = field.name in _LISTS and isinstance(value, tuple)
        if is_list and not value:
            continue  # an empty list says nothing the absent field does not
        item_class = _NESTED.get(field.name)
        if is_list:
            items: list[Any] = []
            for i, item in enumerate(value):
                item_path = f"{join_path(path, field.name)}[{i}]"
                if item_class is None:
                    items.append(item)
                elif isinstance(item, item_class):
                    items.append(_object_body(item, item_path, body))
                else:
                    body.problems.append(
                        ValidationProblem(
                            item_path, item, f"must be an instance of {item_class.__name__}"
                        )
                    )
                    body.foreign.append(item_path)
                    items.append(item)
            value = items
        out[field.name] = value
    body.extras.append((out, path, obj.extra, names))
    return out


def _check_extra(
    path: str, extra: Any, names: tuple[str, ...], problems: list[ValidationProblem]
) -> None:
    extra_path = join_path(path, "extra")
    if not isinstance(extra, Mapping):
        problems.append(ValidationProblem(extra_path, extra, "must be a mapping of field names"))
        return
    report = _Report(allow_unknown=True)
    for key, value in extra.items():
        key_path = f"{extra_path}[{key!r}]"
        if not isinstance(key, str):
            report.add(key_path, key, "field names must be strings")
        elif key in names:
            report.add(key_path, value, f"collides with the field {key!r}: set that field instead")
        else:
            check_json(key_path, value, report)
    problems.extend(report.problems)


_PATH_HEAD = re.compile(r"(\w+)(?:\[(\d+)\])?")


def _field_order(cls: type[Any]) -> Callable[[ValidationProblem], tuple[int, int]]:
    rank = {f.name: i for i, f in enumerate(attrs.fields(cls))}

    def key(problem: ValidationProblem) -> tuple[int, int]:
        head = _PATH_HEAD.match(problem.path)
        if head is None:
            return (-1, 0)  # the body as a whole
        name, index = head.group(1), head.group(2)
        # list items in list order; anything else keeps the order it was found in
        at = int(index) if index and name in _NESTED else -1
        return (rank.get(name, len(rank)), at)

    return key


def _is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


class _KlingInput:
    """What the Kling inputs share: body building, validation on construction, parsing."""

    model_id: ClassVar[str]

    def _body(self) -> _Body:
        body = _Body()
        body.value = _object_body(self, "", body)
        return body

    def _problems(self) -> list[ValidationProblem]:
        body = self._body()
        # The typed fields' body, without extra, must satisfy the dict rules: the
        # same function the client and the emulator use.
        found = validate_payload(self.model_id, body.value)
        problems = [p for p in found if not any(_is_under(p.path, f) for f in body.foreign)]
        problems += body.problems
        for _, path, extra, names in body.extras:
            _check_extra(path, extra, names, problems)
        # Report in field order, as the class reads, wherever a problem was found.
        return sorted(problems, key=_field_order(type(self)))

    def __attrs_post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise InputValidationError(problems, model_id=self.model_id)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body to submit: a fresh dict, unset optionals left out, ``extra`` merged in."""
        body = self._body()
        for target, _, extra, _ in body.extras:
            for key, value in extra.items():
                target[key] = _copy_json(value)
        return body.value

    @classmethod
    def from_payload(
        cls: type[_T], payload: Mapping[str, Any], *, allow_unknown_fields: bool = False
    ) -> _T:
        """Build the typed input from a JSON body (e.g. one read back from a journal).

        Raises :class:`InputValidationError` listing every problem of the body.
        Keys this class does not know are problems, unless ``allow_unknown_fields``
        is true: then they go into ``extra`` (at every level), so
        ``cls.from_payload(x.to_payload()) == x``.
        """
        check_payload(cls.model_id, payload, allow_unknown_fields=allow_unknown_fields)
        return cast(_T, _from_mapping(cls, payload))


def _from_mapping(cls: type[Any], mapping: Mapping[str, Any]) -> Any:
    names = _field_names(cls)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in mapping.items():
        if key not in names:
            extra[key] = value
        elif key in _NESTED:
            kwargs[key] = tuple(_from_mapping(_NESTED[key], item) for item in value)
        else:
            kwargs[key] = value
    return cls(**kwargs, extra=extra)


@attrs.frozen(kw_only=True)
class KlingImageToVideo(_KlingInput):
    """Kling 3.0 standard image-to-video: animate ``start_image_url`` as ``prompt`` says.

    Validated on construction: an invalid combination raises
    :class:`InputValidationError` listing every problem, before anything is
    sent or paid for. Frozen, so it stays valid; use ``attrs.evolve`` to vary
    one (it validates again). ``await client.submit(KlingImageToVideo(...))``
    needs no model id.
    """

    model_id: ClassVar[str] = I2V_MODEL_ID

    prompt: str
    """What should happen in the clip (not blank)."""
    start_image_url: str
    """First frame, a jpg, jpeg, png, bmp or webp image: a public https URL (an extension is
    not needed) or a ``data:`` URI (:func:`~runcomfy_async.inputs.file_uri` makes one)."""
    negative_prompt: str | None = None
    """What to keep out of the video."""
    duration: int = _I2V_DEFAULTS["duration"]
    """Total length in seconds, 3-15; sets the price."""
    generate_audio: bool = _I2V_DEFAULTS["generate_audio"]
    """Generate a sound track; sets the price."""
    cfg_scale: float = _I2V_DEFAULTS["cfg_scale"]
    """How closely to follow the prompt, 0-1."""
    multi_prompt: tuple[MultiPromptSegment, ...] = attrs.field(default=(), converter=_segments)
    """Scene segments (at most 20) whose durations add up to ``duration``."""
    elements: tuple[Element, ...] = attrs.field(default=(), converter=_elements)
    """Reference assets, at most 3."""
    shot_type: ShotType | None = None
    """Left out when None (the server's default); see the module notes."""
    extra: Mapping[str, Any] = _extra_field()
    """Wire fields this class does not know yet, merged into the body."""


@attrs.frozen(kw_only=True)
class KlingTextToVideo(_KlingInput):
    """Kling 3.0 pro text-to-video: a clip from ``prompt`` alone.

    Validated on construction, frozen, and submittable without a model id,
    like :class:`KlingImageToVideo`.
    """

    model_id: ClassVar[str] = T2V_MODEL_ID

    prompt: str
    """Scene, motion, camera style and atmosphere (not blank)."""
    negative_prompt: str | None = None
    """What to keep out of the video."""
    duration: int = _T2V_DEFAULTS["duration"]
    """Length in seconds, 3-15; sets the price."""
    aspect_ratio: AspectRatio = _T2V_DEFAULTS["aspect_ratio"]
    """One of 16:9, 9:16, 1:1."""
    cfg_scale: float = _T2V_DEFAULTS["cfg_scale"]
    """How closely to follow the prompt, 0-1."""
    sound: bool = _T2V_DEFAULTS["sound"]
    """Generate synchronised sound; sets the price."""
    multi_prompt: tuple[MultiPromptSegment, ...] = attrs.field(default=(), converter=_segments)
    """Scene segments (at most 20) whose durations add up to ``duration``."""
    shot_type: ShotType | None = None
    """Left out when None (the server's default); see the module notes."""
    extra: Mapping[str, Any] = _extra_field()
    """Wire fields this class does not know yet, merged into the body."""
