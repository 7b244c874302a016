"""The rules for model inputs, checked on plain dicts: one entry point for every caller.

Everything that validates an input ends up here: the client before a submit,
the typed input classes on construction (they validate their own JSON body),
the batch manifest, and the emulator on the server side. The rules themselves
live in the model's :class:`~runcomfy_async.catalog.ModelSpec`: its input
schema, interpreted by the catalog's validator, plus the small named rules a
schema cannot say. So the client, the typed classes and the emulator can
never disagree about a rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from .._errors import InputValidationError, ValidationProblem
from ..catalog import MEDIA_FORMATS, Registry, get_spec
from ..catalog._schema import SchemaReport
from ..catalog._spec import I2V_STANDARD, T2V_PRO, check_body_json

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "check_payload",
    "known_model_ids",
    "validate_payload",
]

I2V_MODEL_ID: Final = I2V_STANDARD
T2V_MODEL_ID: Final = T2V_PRO

#: Image formats (file extensions) the validator knows. An image URL needs no
#: extension; one naming a format outside what its field lists (the Kling
#: start image: jpg, jpeg, png, bmp, webp) or of another kind is refused.
IMAGE_EXTENSIONS: Final[tuple[str, ...]] = tuple(sorted(MEDIA_FORMATS["image"]))

#: Video formats (file extensions) the validator knows; see :data:`IMAGE_EXTENSIONS`.
VIDEO_EXTENSIONS: Final[tuple[str, ...]] = tuple(sorted(MEDIA_FORMATS["video"]))


def _segment_default() -> int:
    spec = get_spec(I2V_STANDARD)
    assert spec is not None
    value = spec.properties["multi_prompt"]["items"]["properties"]["duration"]["default"]
    assert isinstance(value, int)
    return value


#: A multi_prompt segment's duration when it gives none (read from the Kling schemas).
SEGMENT_DEFAULT_DURATION: Final = _segment_default()

# Kept for the typed inputs, which check their ``extra`` mapping with it.
_Report = SchemaReport


def known_model_ids(registry: Registry | None = None) -> frozenset[str]:
    """The model ids whose inputs are validated: every id with a spec in ``registry``.

    Without a registry: the specs bundled with the package (Kling 3.0).
    """
    return (registry or _default()).model_ids()


def _default() -> Registry:
    from ..catalog import DEFAULT_REGISTRY

    return DEFAULT_REGISTRY


def validate_payload(
    model_id: str,
    payload: Mapping[str, Any],
    *,
    allow_unknown_fields: bool = False,
    registry: Registry | None = None,
) -> list[ValidationProblem]:
    """Every problem with ``payload`` as the JSON body for ``model_id``; ``[]`` means valid.

    For a model with a spec (in ``registry``, by default the bundled Kling
    specs; a client's registry adds what its catalog fetched) the schema is
    checked in full: types, required fields, enums, bounds, array sizes,
    nested objects, URI fields (an https URL with or without an extension, or
    a ``data:`` URI of the right media type within its size cap), plus the
    spec's named rules (non-blank prompts, segment durations adding up to
    ``duration``, ...). A key the schema does not know is a problem unless
    ``allow_unknown_fields`` is true; allowed unknown values must still be
    JSON data.

    Any other model id passes through unvalidated: only what every body needs
    to be sent at all is checked (a mapping with string keys and JSON values).

    Never raises for bad input; see :func:`check_payload` for the raising form.
    """
    spec = get_spec(model_id, registry) if isinstance(model_id, str) else None
    if spec is None:
        return check_body_json(payload)
    return spec.validate(payload, allow_unknown_fields=allow_unknown_fields)


def check_payload(
    model_id: str,
    payload: Mapping[str, Any],
    *,
    allow_unknown_fields: bool = False,
    registry: Registry | None = None,
) -> None:
    """Raise :class:`InputValidationError` listing every problem :func:`validate_payload` finds."""
    problems = validate_payload(
        model_id, payload, allow_unknown_fields=allow_unknown_fields, registry=registry
    )
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
