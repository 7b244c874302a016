"""The schema-driven validator: checks a JSON value against a RunComfy input schema.

RunComfy's schemas (the bundled Kling files, and every ``input_schema`` the
catalog serves) are a small dialect of JSON Schema: ``type`` (including the
non-standard ``float``), ``required``, ``properties``, ``enum``,
``minimum``/``maximum``, ``minItems``/``maxItems``, ``items``, ``default``
(possibly ``null``: no default), and ``format`` (``image_uri``,
``video_uri``, ``uri``, ...). This module interprets exactly that dialect;
what it does not know (an unknown keyword, an unknown format) it ignores,
since refusing what is merely unknown would refuse what RunComfy accepts.

URI fields (a ``*_uri`` / ``uri`` format, or a string property named
``*_url`` / ``*_urls``) take an ``https`` URL, with or without a file
extension, or a ``data:`` URI of the field's media kind, up to a size cap.
What is known to be wrong is refused: ``http:``, not a URI at all, an
extension or media type naming a format of another kind, or a format the
field's description leaves out (``.gif`` where it lists jpg, jpeg, png, bmp,
webp).
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

import attrs

from .._errors import ValidationProblem

__all__ = [
    "DATA_URI_MAX_BYTES",
    "MEDIA_FORMATS",
    "MediaField",
    "SchemaReport",
    "join_path",
    "media_field",
    "uri_problem",
    "validate_value",
]

#: Path used for a problem with the body as a whole (e.g. it is not an object).
PAYLOAD_PATH: Final = "<payload>"

#: Known file formats of each media kind, by file extension. A format outside
#: these tables is "unknown", which is never a reason to refuse.
MEDIA_FORMATS: Final[Mapping[str, frozenset[str]]] = {
    "image": frozenset(
        {"jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff", "heic", "heif", "avif", "svg"}
    ),
    "video": frozenset(
        {"mp4", "mov", "m4v", "webm", "avi", "mkv", "flv", "wmv", "mpg", "mpeg", "3gp"}
    ),
    "audio": frozenset({"mp3", "wav", "ogg", "flac", "aac", "m4a", "opus"}),
}

# Media subtypes whose name is not their extension.
_SUBTYPE_FORMAT: Final[Mapping[str, str]] = {
    "jpeg": "jpeg",
    "pjpeg": "jpeg",
    "svg+xml": "svg",
    "quicktime": "mov",
    "x-m4v": "m4v",
    "x-msvideo": "avi",
    "x-matroska": "mkv",
    "x-ms-bmp": "bmp",
    "mpeg": "mpeg",
    "x-flv": "flv",
    "3gpp": "3gp",
    "x-wav": "wav",
    "wave": "wav",
}

# jpg and jpeg are one format spelled twice.
_SAME_FORMAT: Final[Mapping[str, str]] = {"jpg": "jpeg", "tif": "tiff", "mpg": "mpeg"}

#: Largest decoded size of a ``data:`` URI per media kind: RunComfy's advice
#: for files (about 50 MB for images, 100 MB for videos).
DATA_URI_MAX_BYTES: Final[Mapping[str, int]] = {
    "image": 50 * 1024 * 1024,
    "video": 100 * 1024 * 1024,
    "audio": 50 * 1024 * 1024,
    "": 100 * 1024 * 1024,
}

# Deeper than this, a value is almost certainly a reference cycle.
_MAX_DEPTH: Final = 64
_URL_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_WORD = re.compile(r"[a-z0-9]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


class SchemaReport:
    """Collects problems while a schema walks one value."""

    __slots__ = ("allow_unknown", "data_uri_limits", "problems", "unknown_advice")

    def __init__(
        self,
        *,
        allow_unknown: bool = False,
        data_uri_limits: Mapping[str, int] | None = None,
        unknown_advice: str | None = None,
    ) -> None:
        self.allow_unknown = allow_unknown
        # what a refused unknown field's message suggests (the CLI names its flag)
        self.unknown_advice = UNKNOWN_ADVICE if unknown_advice is None else unknown_advice
        self.data_uri_limits = DATA_URI_MAX_BYTES if data_uri_limits is None else data_uri_limits
        self.problems: list[ValidationProblem] = []

    def add(self, path: str, value: Any, rule: str) -> None:
        """Record one problem."""
        self.problems.append(ValidationProblem(path or PAYLOAD_PATH, value, rule))


def join_path(path: str, key: object) -> str:
    """The path of ``key`` inside the object at ``path`` (``""`` is the top level)."""
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def is_int(value: object) -> TypeGuard[int]:
    """An integer in the JSON sense: ``True`` is not one (it goes on the wire as ``true``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- media fields --------------------------------------------------------------


@attrs.frozen
class MediaField:
    """What a URI field takes: its media ``kind`` (``""``: any) and the formats it lists.

    ``formats`` is empty when the schema names none; then every format of the
    kind is accepted.
    """

    kind: str
    formats: frozenset[str] = frozenset()


def _canonical(fmt: str) -> str:
    return _SAME_FORMAT.get(fmt, fmt)


def media_field(name: str, schema: Mapping[str, Any]) -> MediaField | None:
    """The media field ``schema`` (at property ``name``) describes, or None if it is no URI field.

    A field is a URI field by its ``format`` (``image_uri``, ``video_uri``,
    ``audio_uri``, ``uri``) or, for a string without a format, by a name
    ending in ``_url`` (the Kling start image has no format). The kind comes
    from the format, else from the name; the formats from the description
    (every known extension of that kind it mentions).
    """
    fmt = schema.get("format")
    description = schema.get("description")
    return _media_field(
        name,
        fmt if isinstance(fmt, str) or fmt is None else repr(fmt),
        description if isinstance(description, str) else None,
    )


@functools.lru_cache(maxsize=1024)
def _media_field(name: str, fmt: str | None, description: str | None) -> MediaField | None:
    # cached: a schema's fields are asked about on every validation
    lowered = name.lower()
    if isinstance(fmt, str) and (fmt == "uri" or fmt.endswith("_uri")):
        kind = fmt[: -len("_uri")] if fmt.endswith("_uri") else ""
    elif fmt is None and (lowered.endswith("_url") or lowered.endswith("_urls")):
        kind = ""
    else:
        return None
    if kind not in MEDIA_FORMATS:
        kind = next((k for k in MEDIA_FORMATS if k in lowered), "")
    formats: frozenset[str] = frozenset()
    if description is not None:
        words = set(_WORD.findall(description.lower()))
        known = MEDIA_FORMATS.get(kind) or frozenset().union(*MEDIA_FORMATS.values())
        formats = frozenset(_canonical(w) for w in words & known)
    return MediaField(kind, formats)


def _kind_of(fmt: str) -> str | None:
    return next((k for k, known in MEDIA_FORMATS.items() if fmt in known), None)


def _format_problem(fmt: str, field: MediaField, where: str) -> str | None:
    """Why format ``fmt`` (an extension or media subtype) is wrong for ``field``."""
    kind = _kind_of(fmt)
    if kind is None:
        return None  # unknown: RunComfy may well accept it
    if field.kind and kind != field.kind:
        return f"must be {_a(field.kind)} file: {where} names {_a(kind)} format ({fmt})"
    if field.formats and _canonical(fmt) not in field.formats:
        listed = ", ".join(sorted(field.formats))
        return f"must be one of the formats {listed}: {where} names {fmt}"
    return None


def _a(kind: str) -> str:
    return {"image": "an image", "video": "a video", "audio": "an audio"}.get(kind, "a media")


def _data_uri_problem(value: str, field: MediaField, limits: Mapping[str, int]) -> str | None:
    header, comma, data = value[len("data:") :].partition(",")
    if not comma:
        return "must be a data URI of the form data:<media type>;base64,<data>"
    params = header.split(";")
    media_type = params[0].strip().lower()
    is_base64 = any(p.strip().lower() == "base64" for p in params[1:])
    main, slash, subtype = media_type.partition("/")
    if not slash or not main or not subtype:
        return "must name its media type (data:image/png;base64,...)"
    if field.kind and main != field.kind:
        return f"must be {_a(field.kind)} file: the data URI's media type is {media_type}"
    if not field.kind and main not in MEDIA_FORMATS:
        return f"must be an image, video or audio file: the data URI's type is {media_type}"
    fmt = _SUBTYPE_FORMAT.get(subtype, subtype)
    problem = _format_problem(fmt, field, f"the data URI's media type {media_type}")
    if problem is not None:
        return problem
    limit = limits.get(field.kind or main, limits.get("", DATA_URI_MAX_BYTES[""]))
    # The decoded size follows from the length; no need to decode 50 MB to know it.
    size = len(data) * 3 // 4 - data[-2:].count("=") if is_base64 else len(data)
    if size > limit:
        return (
            f"is a data URI of {size} bytes, more than the {limit} bytes allowed for "
            f"{_a(field.kind or main)} file; host it and pass its https URL instead"
        )
    if is_base64 and not (_BASE64.fullmatch(data[:64]) and _BASE64.fullmatch(data[-64:])):
        # A cheap check of both ends; decoding 50 MB just to look would copy the file.
        return "must be a data URI with valid base64 data"
    return None


def uri_problem(
    value: Any, field: MediaField, limits: Mapping[str, int] = DATA_URI_MAX_BYTES
) -> str | None:
    """Why ``value`` cannot go into a URI field of this kind, or None when it can.

    Accepted: an ``https`` URL (extension or not) and a ``data:`` URI of an
    allowed media type within its size cap. Refused: anything known to be
    wrong (see the module docstring).
    """
    what = _a(field.kind) if field.kind else "a"
    if not isinstance(value, str):
        return f"must be a string: a public https URL or a data URI of {what} file"
    if value[:5].lower() == "data:":
        return _data_uri_problem(value, field, limits)
    if _URL_BAD_CHARS.search(value):
        return "must be a URL without whitespace or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- parsing the port is what detects a malformed one
    except ValueError:
        return "must be a well-formed URL"
    if parts.scheme.lower() == "http":
        return "must be an https:// URL, not http:// (the server fetches it over HTTPS)"
    if parts.scheme.lower() != "https" or not parts.hostname:
        return f"must be an absolute https:// URL or a data: URI of {what} file"
    if parts.username is not None or parts.password is not None:
        return "must not contain a user name or password (the server fetches it without login)"
    last = parts.path.rsplit("/", 1)[-1]
    if "." in last:
        ext = last.rsplit(".", 1)[1].lower()
        return _format_problem(ext, field, f"its extension .{ext}")
    return None


# -- the walk ------------------------------------------------------------------


def _types(schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [t for t in declared if isinstance(t, str)]
    return []


def _type_ok(kind: str, value: Any) -> bool | None:
    """Whether ``value`` has JSON type ``kind``; None for a type this dialect does not know."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return is_int(value)
    if kind in ("number", "float"):
        return is_number(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, (list, tuple))
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "null":
        return value is None
    return None


_TYPE_WORDS: Final[Mapping[str, str]] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "float": "a number",
    "boolean": "a bool (true or false)",
    "array": "a list",
    "object": "an object (a mapping of field names)",
    "null": "null (None)",
}


def check_json(path: str, value: Any, report: SchemaReport, depth: int = 0) -> None:
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


def _fmt(n: Any) -> str:
    return str(int(n)) if isinstance(n, float) and n.is_integer() else str(n)


#: How an unknown-field problem says what sends the field anyway (Python callers).
UNKNOWN_ADVICE: Final = "allow_unknown_fields=True, or `extra` on a typed input, sends it anyway"


def _unknown_rule(key: str, known: Sequence[str], owner: str, advice: str) -> str:
    hint = difflib.get_close_matches(key, known, n=1)
    maybe = f"; did you mean {hint[0]!r}?" if hint else ""
    return f"is not a field of {owner}{maybe} ({advice})"


def validate_value(
    schema: Mapping[str, Any],
    value: Any,
    path: str,
    report: SchemaReport,
    *,
    name: str = "",
    owner: str = "this model",
    depth: int = 0,
) -> None:
    """Report every way ``value`` (at ``path``, property ``name``) breaks ``schema``."""
    if depth >= _MAX_DEPTH:
        report.add(path, value, f"must not be nested more than {_MAX_DEPTH} levels deep")
        return
    types = _types(schema)
    if types:
        verdicts = [_type_ok(t, value) for t in types]
        if not any(verdicts) and None not in verdicts:
            words = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
            if isinstance(value, bool) and ("integer" in types or "number" in types):
                words += ", not a bool"
            report.add(path, value, f"must be {words}")
            return
    enum = schema.get("enum")
    if (
        isinstance(enum, list)
        and enum
        and not any(
            (value == choice and type(value) is type(choice))
            or (is_number(value) and value == choice)
            for choice in enum
        )
    ):
        report.add(path, value, "must be one of " + ", ".join(repr(c) for c in enum))
        return
    if is_number(value):
        _check_number(schema, value, path, report)
    elif isinstance(value, str):
        _check_string(schema, value, path, report, name)
    elif isinstance(value, (list, tuple)):
        _check_array(schema, value, path, report, name, depth)
    elif isinstance(value, Mapping):
        _check_object(schema, value, path, report, owner, depth)
    elif value is not None and not isinstance(value, bool):
        check_json(path, value, report, depth)


def _check_number(schema: Mapping[str, Any], value: float, path: str, report: SchemaReport) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        report.add(path, value, "must be a finite number (JSON has no NaN or infinity)")
        return
    low, high = schema.get("minimum"), schema.get("maximum")
    xlow, xhigh = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if is_number(low) and is_number(high) and not low <= value <= high:
        report.add(path, value, f"must be from {_fmt(low)} to {_fmt(high)}")
    elif is_number(low) and value < low:
        report.add(path, value, f"must be at least {_fmt(low)}")
    elif is_number(high) and value > high:
        report.add(path, value, f"must be at most {_fmt(high)}")
    if is_number(xlow) and not isinstance(xlow, bool) and value <= xlow:
        report.add(path, value, f"must be more than {_fmt(xlow)}")
    if is_number(xhigh) and value >= xhigh:
        report.add(path, value, f"must be less than {_fmt(xhigh)}")


def _check_string(
    schema: Mapping[str, Any], value: str, path: str, report: SchemaReport, name: str
) -> None:
    low, high = schema.get("minLength"), schema.get("maxLength")
    if is_int(low) and len(value) < low:
        report.add(path, value, f"must be at least {low} characters long")
    if is_int(high) and len(value) > high:
        report.add(path, value, f"must be at most {high} characters long")
    field = media_field(name, schema)
    if field is not None:
        problem = uri_problem(value, field, report.data_uri_limits)
        if problem is not None:
            report.add(path, value, problem)


def _check_array(
    schema: Mapping[str, Any],
    value: Sequence[Any],
    path: str,
    report: SchemaReport,
    name: str,
    depth: int,
) -> None:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if is_int(low) and len(value) < low:
        report.add(path, value, f"must have at least {low} items, has {len(value)}")
    if is_int(high) and len(value) > high:
        report.add(path, value, f"must have at most {high} items, has {len(value)}")
    items = schema.get("items")
    for i, item in enumerate(value):
        sub = f"{path}[{i}]"
        if isinstance(items, Mapping):
            # an item of "reference_image_urls" is a URI field like its list
            validate_value(items, item, sub, report, name=name, owner="an item", depth=depth + 1)
        else:
            check_json(sub, item, report, depth + 1)


def _check_object(
    schema: Mapping[str, Any],
    value: Mapping[Any, Any],
    path: str,
    report: SchemaReport,
    owner: str,
    depth: int,
) -> None:
    properties = schema.get("properties")
    props: Mapping[str, Any] = properties if isinstance(properties, Mapping) else {}
    required = schema.get("required")
    for field_name in required if isinstance(required, list) else ():
        if isinstance(field_name, str) and field_name not in value:
            report.add(join_path(path, field_name), attrs.NOTHING, "is required")
    additional = schema.get("additionalProperties")
    # Without properties the schema says nothing about the keys: any goes.
    closed = bool(props) and additional is not True and not isinstance(additional, Mapping)
    for key, item in value.items():
        sub = join_path(path, key)
        if not isinstance(key, str):
            report.add(sub, key, "field names must be strings")
            continue
        prop = props.get(key)
        if isinstance(prop, Mapping):
            inner_owner = f"an item of {key}" if path else owner
            validate_value(prop, item, sub, report, name=key, owner=inner_owner, depth=depth + 1)
        elif isinstance(additional, Mapping):
            validate_value(additional, item, sub, report, name=key, depth=depth + 1)
        elif closed and not report.allow_unknown:
            report.add(
                sub,
                item,
                _unknown_rule(key, list(props), owner if not path else "it", report.unknown_advice),
            )
        else:
            check_json(sub, item, report, depth + 1)


def apply_defaults(schema: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with every absent top-level field that has a (non-null) default filled in."""
    body = dict(payload)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for key, prop in properties.items():
            if key not in body and isinstance(prop, Mapping) and prop.get("default") is not None:
                body[key] = prop["default"]
    return body
