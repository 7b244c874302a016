"""From what a caller passes (a typed input, or a model id and a dict) to what is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from .._errors import InputValidationError, ValidationProblem
from ..catalog import Registry
from ._kling import KlingImageToVideo, KlingTextToVideo, _copy_json
from ._validate import model_id_problems, validate_payload

__all__ = ["ModelInput", "model_input_class", "prepare_request"]


@runtime_checkable
class ModelInput(Protocol):
    """Anything the client can submit on its own: it names its model and builds its body.

    The typed Kling inputs are ModelInputs; so is any class of yours with a
    ``model_id`` string and a ``to_payload()`` returning the JSON body.
    """

    @property
    def model_id(self) -> str:
        """The model to run, e.g. ``kling/kling-3.0/pro/text-to-video``."""
        ...

    def to_payload(self) -> dict[str, Any]:
        """The JSON body to submit."""
        ...


_TYPED_INPUTS: dict[str, type[KlingImageToVideo | KlingTextToVideo]] = {
    cls.model_id: cls for cls in (KlingImageToVideo, KlingTextToVideo)
}


def model_input_class(model_id: str) -> type[KlingImageToVideo | KlingTextToVideo] | None:
    """The typed input class for ``model_id``, or None when this version has none."""
    return _TYPED_INPUTS.get(model_id)


def prepare_request(
    model_or_input: str | ModelInput,
    payload: Mapping[str, Any] | None = None,
    *,
    validate: bool = True,
    allow_unknown_fields: bool = False,
    registry: Registry | None = None,
) -> tuple[str, dict[str, Any]]:
    """Normalise a submit's arguments to ``(model_id, body)``, checked before anything is paid.

    Two call shapes:

    - ``prepare_request(typed_input)``: its ``model_id`` and ``to_payload()``.
      The typed Kling inputs were validated when built; any other ModelInput's
      body is validated like a dict (below).
    - ``prepare_request(model_id, payload)``: for a model id in
      :func:`known_model_ids` (or in ``registry``, e.g. a client's, holding
      the specs its catalog fetched), the payload is validated (unless ``validate`` is
      false, the escape hatch for inputs the rules wrongly refuse;
      ``allow_unknown_fields`` admits keys the schema does not know). Other
      model ids pass through, needing only to be sendable as JSON.

    The model id itself is always checked, since it becomes part of the URL.
    The body returned is a copy: changing the caller's dict later changes
    nothing already validated.

    Raises :class:`InputValidationError` listing every problem (a bad model id
    under path ``model_id``), and ``TypeError`` for a wrong call shape: a typed
    input *and* a payload, a model id without a payload, a payload that is not
    a mapping, an input class instead of an instance, or something that is
    neither a model id nor a ModelInput.
    """
    if isinstance(model_or_input, str):
        if payload is None:
            raise TypeError(
                "prepare_request(model_id, payload): a model id needs its payload "
                "(a mapping of the model's input fields)"
            )
        if not isinstance(payload, Mapping):
            raise TypeError(f"payload must be a mapping, not {type(payload).__name__}")
        model_id = model_or_input
        body: Mapping[str, Any] = payload
        check = validate
    elif isinstance(model_or_input, type):
        # the class itself passes the protocol check, but has no payload yet
        raise TypeError(f"pass an instance of {model_or_input.__name__}, not the class")
    elif isinstance(model_or_input, ModelInput):
        if payload is not None:
            raise TypeError(
                f"{type(model_or_input).__name__} carries its own payload; "
                "pass either a typed input or a model id and a payload, not both"
            )
        model_id = model_or_input.model_id
        body = model_or_input.to_payload()
        if not isinstance(body, Mapping):
            raise TypeError(
                f"{type(model_or_input).__name__}.to_payload() must return a mapping, "
                f"not {type(body).__name__}"
            )
        # The typed Kling inputs are frozen and were validated when built.
        check = validate and not isinstance(model_or_input, (KlingImageToVideo, KlingTextToVideo))
    else:
        raise TypeError(
            "expected a model id (str) or a typed input with model_id and to_payload(), "
            f"not {type(model_or_input).__name__}"
        )

    id_problems = model_id_problems(model_id)
    problems: list[ValidationProblem] = list(id_problems)
    if check:
        problems += validate_payload(
            model_id, body, allow_unknown_fields=allow_unknown_fields, registry=registry
        )
    if problems:
        # A bad model id is not repeated in the headline: it may hold a newline.
        raise InputValidationError(problems, model_id=None if id_problems else model_id)
    return model_id, _copy_json(dict(body))
