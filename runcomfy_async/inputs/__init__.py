"""Inputs for RunComfy models: typed for Kling 3.0, validated from each model's schema.

Validation happens before anything is sent, so nothing is paid for a request
the server would refuse. The rules are written once, for plain JSON bodies
(:func:`validate_payload`); the typed classes, the client and the emulator all
use them.

- :class:`KlingImageToVideo`, :class:`KlingTextToVideo`: typed inputs that know
  their model id and validate on construction;
- :func:`validate_payload`, :func:`check_payload`: the rules, on a dict;
- :func:`file_uri`: a local image or video as a ``data:`` URI for a URI field;
- :func:`prepare_request`: what the client calls to turn its arguments into
  ``(model_id, body)``;
- :func:`estimate_cost`, :class:`PriceTable`: what a generation will cost.
"""

from ._cost import DEFAULT_PRICES, ModelPrice, PriceTable, estimate_cost
from ._files import file_uri, sniff_media_type
from ._kling import (
    AspectRatio,
    Element,
    KlingImageToVideo,
    KlingTextToVideo,
    MultiPromptSegment,
    ShotType,
)
from ._request import ModelInput, model_input_class, prepare_request
from ._validate import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    check_payload,
    known_model_ids,
    validate_payload,
)

__all__ = [
    "DEFAULT_PRICES",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "AspectRatio",
    "Element",
    "KlingImageToVideo",
    "KlingTextToVideo",
    "ModelInput",
    "ModelPrice",
    "MultiPromptSegment",
    "PriceTable",
    "ShotType",
    "check_payload",
    "estimate_cost",
    "file_uri",
    "known_model_ids",
    "model_input_class",
    "prepare_request",
    "sniff_media_type",
    "validate_payload",
]
