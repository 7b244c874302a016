"""What the emulator simulates: model profiles (timing, price) and the known Kling models."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ..catalog import Registry, get_spec
from ..catalog._schema import is_number

__all__ = [
    "DISTRIBUTIONS",
    "KLING_PRO_T2V",
    "KLING_STANDARD_I2V",
    "Distribution",
    "ModelProfile",
    "default_models",
]

Distribution = Literal["uniform", "lognormal", "bimodal", "fixed"]

DISTRIBUTIONS: tuple[Distribution, ...] = ("uniform", "lognormal", "bimodal", "fixed")
"""The duration distributions a :class:`ModelProfile` can draw from."""

KLING_STANDARD_I2V = "kling/kling-3.0/standard/image-to-video"
"""Model id of Kling 3.0 standard image-to-video."""

KLING_PRO_T2V = "kling/kling-3.0/pro/text-to-video"
"""Model id of Kling 3.0 pro text-to-video."""


_GENERIC_DEFAULT_CLIP_SECONDS = 5
_MIN_DRAWN_SECONDS = 1.0


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _share(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


@attrs.frozen
class ModelProfile:
    """How long a model takes to generate a clip, and what it costs.

    ``distribution`` says how a base generation time is drawn (unscaled seconds):

    - ``"uniform"`` (the default): ``uniform(min_seconds, max_seconds)``;
    - ``"lognormal"``: a long tail, ``median_seconds * exp(sigma * N(0, 1))``
      clamped to ``[min_seconds, max_seconds]``; see :meth:`lognormal`;
    - ``"bimodal"``: two uniform modes, ``[min_seconds, fast_max_seconds]``
      and, with probability ``slow_share``, ``[slow_min_seconds, max_seconds]``;
      see :meth:`bimodal`;
    - ``"fixed"``: always ``min_seconds``; see :meth:`fixed`.

    To the base it adds ``per_clip_second`` for every second the requested clip
    is longer than ``reference_clip_seconds`` (less, for a shorter clip), never
    going below one second. The emulator multiplies the drawn figure by its
    ``time_scale``. The class methods ignore the clip's length altogether, so
    an unseen fast model is one line: ``{"acme/flash": ModelProfile.uniform(1, 4)}``
    in ``Emulator(models=...)``, or ``--model acme/flash=uniform:1,4`` on the
    command line (:meth:`parse`).

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
    distribution: Distribution = "uniform"
    median_seconds: float | None = attrs.field(default=None, validator=_non_negative)
    sigma: float = attrs.field(default=0.5, validator=_non_negative)
    fast_max_seconds: float | None = attrs.field(default=None, validator=_non_negative)
    slow_min_seconds: float | None = attrs.field(default=None, validator=_non_negative)
    slow_share: float = attrs.field(default=0.5, validator=_share)

    def __attrs_post_init__(self) -> None:
        if self.max_seconds < self.min_seconds:
            raise ValueError(
                f"max_seconds ({self.max_seconds}) must be >= min_seconds ({self.min_seconds})"
            )
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {self.distribution!r}"
            )
        if self.distribution == "lognormal" and self.median_seconds is None:
            raise ValueError("a lognormal profile needs median_seconds")
        if self.distribution == "bimodal":
            fast, slow = self.fast_max_seconds, self.slow_min_seconds
            if fast is None or slow is None:
                raise ValueError("a bimodal profile needs fast_max_seconds and slow_min_seconds")
            if not self.min_seconds <= fast <= slow <= self.max_seconds:
                raise ValueError(
                    "a bimodal profile needs min_seconds <= fast_max_seconds <= "
                    "slow_min_seconds <= max_seconds"
                )

    @classmethod
    def uniform(cls, min_seconds: float, max_seconds: float) -> ModelProfile:
        """Durations uniform in ``[min_seconds, max_seconds]``, whatever the clip's length."""
        return cls(min_seconds, max_seconds, per_clip_second=0.0)

    @classmethod
    def lognormal(
        cls,
        median_seconds: float,
        sigma: float = 0.5,
        *,
        min_seconds: float = 0.0,
        max_seconds: float = math.inf,
    ) -> ModelProfile:
        """Long-tailed durations: ``median_seconds * exp(sigma * N(0, 1))``, clamped.

        With ``sigma=0.5`` one job in twenty takes over 2.3 times the median;
        ``min_seconds`` / ``max_seconds`` clamp the draw (none by default).
        """
        return cls(
            min_seconds,
            max_seconds,
            distribution="lognormal",
            median_seconds=median_seconds,
            sigma=sigma,
        )

    @classmethod
    def bimodal(
        cls,
        fast: tuple[float, float],
        slow: tuple[float, float],
        slow_share: float = 0.5,
    ) -> ModelProfile:
        """Two populations: uniform in ``fast`` (low, high), or in ``slow`` with ``slow_share``."""
        return cls(
            fast[0],
            slow[1],
            distribution="bimodal",
            fast_max_seconds=fast[1],
            slow_min_seconds=slow[0],
            slow_share=slow_share,
        )

    @classmethod
    def fixed(cls, seconds: float) -> ModelProfile:
        """Every job takes exactly ``seconds``."""
        return cls(seconds, seconds, distribution="fixed")

    @classmethod
    def parse(cls, text: str) -> ModelProfile:
        """A profile from ``KIND:NUMBERS``, the command line's ``--model ID=KIND:NUMBERS``.

        ``uniform:MIN,MAX``, ``lognormal:MEDIAN[,SIGMA[,MIN,MAX]]``,
        ``bimodal:FAST_MIN,FAST_MAX,SLOW_MIN,SLOW_MAX[,SLOW_SHARE]``,
        ``fixed:SECONDS``. Raises ``ValueError`` saying what was expected.
        """
        kind, _, raw = text.partition(":")
        usage = {
            "uniform": "uniform:MIN,MAX",
            "lognormal": "lognormal:MEDIAN[,SIGMA[,MIN,MAX]]",
            "bimodal": "bimodal:FAST_MIN,FAST_MAX,SLOW_MIN,SLOW_MAX[,SLOW_SHARE]",
            "fixed": "fixed:SECONDS",
        }
        if kind not in usage:
            raise ValueError(
                f"unknown distribution {kind!r}; expected {' or '.join(usage.values())}"
            )
        try:
            n = [float(part) for part in raw.split(",")] if raw else []
        except ValueError:
            raise ValueError(f"expected {usage[kind]}, got {text!r}") from None
        if kind == "uniform" and len(n) == 2:
            return cls.uniform(n[0], n[1])
        if kind == "lognormal" and len(n) in (1, 2, 4):
            bounds = {"min_seconds": n[2], "max_seconds": n[3]} if len(n) == 4 else {}
            return cls.lognormal(n[0], n[1] if len(n) > 1 else 0.5, **bounds)
        if kind == "bimodal" and len(n) in (4, 5):
            return cls.bimodal((n[0], n[1]), (n[2], n[3]), n[4] if len(n) == 5 else 0.5)
        if kind == "fixed" and len(n) == 1:
            return cls.fixed(n[0])
        raise ValueError(f"expected {usage[kind]}, got {text!r}")

    def draw(self, rng: random.Random, clip_seconds: float) -> float:
        """Draw one generation time in (unscaled) seconds for a clip of ``clip_seconds``."""
        base = self._draw_base(rng)
        if self.per_clip_second:
            base += self.per_clip_second * (clip_seconds - self.reference_clip_seconds)
            base = max(base, _MIN_DRAWN_SECONDS)
        return base

    def _draw_base(self, rng: random.Random) -> float:
        if self.distribution == "fixed":
            return self.min_seconds
        if self.distribution == "lognormal":
            assert self.median_seconds is not None
            drawn = self.median_seconds * math.exp(self.sigma * rng.gauss(0.0, 1.0))
            return min(max(drawn, self.min_seconds), self.max_seconds)
        if self.distribution == "bimodal":
            assert self.fast_max_seconds is not None and self.slow_min_seconds is not None
            # Two draws always, so a job's mode does not shift the stream of later jobs.
            slow = rng.random() < self.slow_share
            if slow:
                return rng.uniform(self.slow_min_seconds, self.max_seconds)
            return rng.uniform(self.min_seconds, self.fast_max_seconds)
        return rng.uniform(self.min_seconds, self.max_seconds)

    def cost(self, model_id: str, clip_seconds: float, audio: bool) -> float:
        """Price in USD of one successful clip of ``clip_seconds``, with or without audio."""
        # The model's own price (one registry: runcomfy_async.catalog) unless the profile sets one.
        spec = get_spec(model_id)
        rule = spec.price if spec is not None and spec.price is not None else None
        fallback = 0.0
        if rule is not None and rule.unit == "second":
            with_audio = rule.usd_with_audio
            fallback = with_audio if audio and with_audio is not None else rule.usd
        price = self.price_per_second_audio if audio else self.price_per_second
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


def is_validated(model_id: str, registry: Registry | None = None) -> bool:
    """Whether submits to ``model_id`` are validated: it has a spec in ``registry``.

    ``registry`` is the emulator catalog's (the bundled Kling specs plus every
    synthetic catalog model); without one, the bundled specs.
    """
    return get_spec(model_id, registry) is not None


def clip_facts(model_id: str, payload: Mapping[str, Any]) -> tuple[float, bool]:
    """The clip length in seconds and the audio flag a payload asks for.

    Falls back on the model's documented defaults (or 5 s without audio for a
    model the emulator knows nothing about) when the payload says nothing usable.
    """
    spec = get_spec(model_id)
    default = spec.default("duration") if spec is not None else None
    seconds: float = float(default) if is_number(default) else _GENERIC_DEFAULT_CLIP_SECONDS
    raw = payload.get("duration")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0:
        seconds = float(raw)
    if spec is not None:
        return seconds, spec.audio_on(payload)
    audio_raw = payload.get("generate_audio", payload.get("sound", False))
    return seconds, audio_raw is True
