"""What a generation will cost, estimated before it is submitted.

The figures are RunComfy's public per-second prices for Kling 3.0 as of late
2026. They are an estimate, not a quote: the bill is what RunComfy charges
(``?include_cost=true`` on a result reports it). Prices change, so the table is
a plain value you can replace or extend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import attrs

from .._errors import InputValidationError, ValidationProblem
from ._request import ModelInput, prepare_request
from ._validate import I2V_MODEL_ID, RULES, T2V_MODEL_ID

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable", "estimate_cost"]


class ModelPrice(NamedTuple):
    """USD per second of output for one model, without and with generated audio."""

    per_second: float
    per_second_with_audio: float


def _to_prices(value: Mapping[str, tuple[float, float]]) -> Mapping[str, ModelPrice]:
    if not isinstance(value, Mapping):
        raise TypeError(f"prices must be a mapping of model id to prices, not {value!r}")
    table: dict[str, ModelPrice] = {}
    for model_id, pair in value.items():
        if not isinstance(model_id, str):
            raise TypeError(f"price table keys must be model ids (str), not {model_id!r}")
        try:
            price = ModelPrice(*pair)
        except TypeError:
            raise TypeError(
                f"price for {model_id!r} must be (per_second, per_second_with_audio), not {pair!r}"
            ) from None
        for usd in price:
            if isinstance(usd, bool) or not isinstance(usd, (int, float)):
                raise TypeError(f"price for {model_id!r} must be numbers, not {pair!r}")
            if not (math.isfinite(usd) and usd >= 0):
                raise ValueError(f"price for {model_id!r} must be finite and >= 0: {pair!r}")
        table[model_id] = price
    return MappingProxyType(table)


@attrs.frozen
class PriceTable:
    """Per-second prices by model id: ``{model_id: (per_second, per_second_with_audio)}``.

    Immutable; :meth:`updated` gives a new table with some prices added or
    replaced. Raises ``TypeError`` / ``ValueError`` on a malformed price.
    """

    prices: Mapping[str, ModelPrice] = attrs.field(
        converter=_to_prices, hash=False, repr=lambda prices: repr(dict(prices))
    )

    def get(self, model_id: str) -> ModelPrice | None:
        """The prices of ``model_id``, or None when the table has none."""
        return self.prices.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.prices

    def updated(self, prices: Mapping[str, tuple[float, float]]) -> PriceTable:
        """A new table: this one with ``prices`` added, replacing entries of the same id."""
        return PriceTable({**self.prices, **prices})


DEFAULT_PRICES = PriceTable(
    {
        I2V_MODEL_ID: (0.084, 0.126),  # standard tier
        T2V_MODEL_ID: (0.112, 0.168),  # pro tier
    }
)
"""RunComfy's public Kling 3.0 prices (USD/s, late 2026) for the models with typed inputs."""

# Where to find the audio switch in a body of a model we have no rules for;
# Kling's image and text models name it differently.
_AUDIO_FIELDS = ("generate_audio", "sound")


def estimate_cost(
    model_or_input: str | ModelInput,
    payload: Mapping[str, Any] | None = None,
    *,
    prices: PriceTable | None = None,
) -> float:
    """Estimated USD for one generation: seconds of ``duration`` times the per-second price.

    Takes the same arguments as :func:`prepare_request` and validates the same
    way (unknown fields allowed: they do not change the price), so an invalid
    input raises :class:`InputValidationError` here too. An absent
    ``duration`` or audio switch means the schema default (10 s for
    image-to-video, 5 s for text-to-video; audio on). For a priced model with
    no known rules, ``duration`` is required and audio counts as on unless a
    ``generate_audio`` or ``sound`` field says otherwise (the dearer guess).

    ``prices`` replaces :data:`DEFAULT_PRICES`. Raises ``LookupError`` when the
    table has no price for the model. The result is rounded to a millionth of
    a dollar so that it prints cleanly.
    """
    model_id, body = prepare_request(model_or_input, payload, allow_unknown_fields=True)
    table = DEFAULT_PRICES if prices is None else prices
    price = table.get(model_id)
    if price is None:
        raise LookupError(
            f"no price known for model {model_id!r}; pass "
            "prices=DEFAULT_PRICES.updated({model_id: (per_second, per_second_with_audio)})"
        )
    rules = RULES.get(model_id)
    if rules is not None:
        seconds = body.get("duration", rules.default_duration)
        audio = body.get(rules.audio_field, True)
    else:
        seconds = body.get("duration")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not (math.isfinite(seconds) and seconds >= 0)
        ):
            raise InputValidationError(
                [
                    ValidationProblem(
                        "duration",
                        body.get("duration", attrs.NOTHING),
                        "must be a number of seconds (>= 0) to estimate the cost of this model",
                    )
                ],
                model_id=model_id,
            )
        flags = [body[name] for name in _AUDIO_FIELDS if isinstance(body.get(name), bool)]
        audio = flags[0] if flags else True
    per_second = price.per_second_with_audio if audio else price.per_second
    return round(float(seconds) * per_second, 6)
