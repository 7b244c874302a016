"""What the emulator simulates: model profiles (timing, price) and the known Kling models."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "KLING_PRO_T2V",
    "KLING_STANDARD_I2V",
    "ModelProfile",
    "default_models",
]

KLING_STANDARD_I2V = "kling/kling-3.0/standard/image-to-video"
"""Model id of Kling 3.0 standard image-to-video."""

KLING_PRO_T2V = "kling/kling-3.0/pro/text-to-video"
"""Model id of Kling 3.0 pro text-to-video."""


@attrs.frozen
class _KlingFacts:
    """Public facts of one Kling model: defaults of its input and its price."""

    default_clip_seconds: int
    audio_field: str
    price_per_second: float
    price_per_second_audio: float


# The two models the emulator validates with runcomfy_async.inputs (public figures, late 2026).
_KLING: dict[str, _KlingFacts] = {
    KLING_STANDARD_I2V: _KlingFacts(10, "generate_audio", 0.084, 0.126),
    KLING_PRO_T2V: _KlingFacts(5, "sound", 0.112, 0.168),
}

_GENERIC_DEFAULT_CLIP_SECONDS = 5
_MIN_DRAWN_SECONDS = 1.0


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class ModelProfile:
    """How long a model takes to generate a clip, and what it costs.

    A generation takes ``uniform(min_seconds, max_seconds)`` seconds plus
    ``per_clip_second`` for every second the requested clip is longer than
    ``reference_clip_seconds`` (less, for a shorter clip), never below one
    second. The emulator multiplies the drawn figure by its ``time_scale``.
    ``ModelProfile.uniform(60, 200)`` ignores the clip's length altogether.

    ``price_per_second`` / ``price_per_second_audio`` (USD per clip second)
    feed ``?include_cost=true``; ``None`` means RunComfy's public price for the
    two Kling 3.0 models and 0.0 for any other model.
    """

    min_seconds: float = attrs.field(validator=_non_negative)
    max_seconds: float = attrs.field(validator=_non_negative)
    per_clip_second: float = 0.0
    reference_clip_seconds: float = 9.0
    price_per_second: float | None = attrs.field(default=None, validator=_non_negative)
    price_per_second_audio: float | None = attrs.field(default=None, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.max_seconds < self.min_seconds:
            raise ValueError(
                f"max_seconds ({self.max_seconds}) must be >= min_seconds ({self.min_seconds})"
            )

    @classmethod
    def uniform(cls, min_seconds: float, max_seconds: float) -> ModelProfile:
        """Durations uniform in ``[min_seconds, max_seconds]``, whatever the clip's length."""
        return cls(min_seconds, max_seconds, per_clip_second=0.0)

    def draw(self, rng: random.Random, clip_seconds: float) -> float:
        """Draw one generation time in (unscaled) seconds for a clip of ``clip_seconds``."""
        base = rng.uniform(self.min_seconds, self.max_seconds)
        if self.per_clip_second:
            base += self.per_clip_second * (clip_seconds - self.reference_clip_seconds)
            base = max(base, _MIN_DRAWN_SECONDS)
        return base

    def cost(self, model_id: str, clip_seconds: float, audio: bool) -> float:
        """Price in USD of one successful clip of ``clip_seconds``, with or without audio."""
        facts = _KLING.get(model_id)
        if audio:
            price = self.price_per_second_audio
            fallback = facts.price_per_second_audio if facts else 0.0
        else:
            price = self.price_per_second
            fallback = facts.price_per_second if facts else 0.0
        return round((fallback if price is None else price) * clip_seconds, 6)


def default_models() -> dict[str, ModelProfile]:
    """The models a default emulator serves: the two Kling 3.0 models.

    Standard image-to-video takes about 60-120 s and pro text-to-video about
    90-200 s for a mid-length clip (RunComfy's public figures), a few seconds
    more or less per second of clip.
    """
    return {
        KLING_STANDARD_I2V: ModelProfile(60.0, 120.0, per_clip_second=3.0),
        KLING_PRO_T2V: ModelProfile(90.0, 200.0, per_clip_second=4.0),
    }


def is_validated(model_id: str) -> bool:
    """Whether submits to ``model_id`` are validated with ``runcomfy_async.inputs``."""
    return model_id in _KLING


def clip_facts(model_id: str, payload: Mapping[str, Any]) -> tuple[float, bool]:
    """The clip length in seconds and the audio flag a payload asks for.

    Falls back on the model's documented defaults (or 5 s without audio for a
    model the emulator knows nothing about) when the payload says nothing usable.
    """
    facts = _KLING.get(model_id)
    default_seconds = facts.default_clip_seconds if facts else _GENERIC_DEFAULT_CLIP_SECONDS
    seconds: float = default_seconds
    raw = payload.get("duration")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0:
        seconds = float(raw)
    if facts is not None:
        audio_raw = payload.get(facts.audio_field, True)
    else:
        audio_raw = payload.get("generate_audio", payload.get("sound", False))
    return seconds, audio_raw is True
