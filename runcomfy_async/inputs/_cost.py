"""What a generation will cost, estimated before it is submitted.

The prices are the model specs' (:mod:`runcomfy_async.catalog`): RunComfy's
public Kling 3.0 figures as of late 2026, and the live catalog's price for
every model fetched from it. They are an estimate, not a quote: the bill is
what RunComfy charges (``?include_cost=true`` on a result reports it).
:class:`PriceTable` overrides per-second prices by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import attrs

from ..catalog import DEFAULT_REGISTRY, ModelSpec, PriceRule, Registry, get_spec
from ._request import ModelInput, prepare_request

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


def _default_prices() -> PriceTable:
    table: dict[str, tuple[float, float]] = {}
    for model_id in sorted(DEFAULT_REGISTRY.model_ids()):
        spec = DEFAULT_REGISTRY.get(model_id)
        if spec is not None and spec.price is not None and spec.price.unit == "second":
            price = spec.price
            table[model_id] = (price.usd, price.usd_with_audio or price.usd)
    return PriceTable(table)


DEFAULT_PRICES = _default_prices()
"""RunComfy's public Kling 3.0 prices (USD/s, late 2026), read from the bundled model specs."""


def estimate_cost(
    model_or_input: str | ModelInput,
    payload: Mapping[str, Any] | None = None,
    *,
    prices: PriceTable | None = None,
    registry: Registry | None = None,
) -> float:
    """Estimated USD for one generation, from the model's price rule.

    Takes the same arguments as :func:`prepare_request` and validates the same
    way (unknown fields allowed: they do not change the price), so an invalid
    input raises :class:`InputValidationError` here too.

    The price comes from the model's :class:`~runcomfy_async.catalog.ModelSpec`
    (in ``registry``: by default the bundled Kling specs; a client's registry
    has every model its catalog fetched): per second of ``duration`` or per
    output. An absent ``duration`` or audio switch means the schema default.
    ``prices``, when given, replaces the specs' prices with per-second prices
    by model id (a model it lacks has no price); for a priced model
    with no spec, ``duration`` is required and audio counts as on unless a
    ``generate_audio`` or ``sound`` field says otherwise (the dearer guess).

    Raises ``LookupError`` when no per-second or per-output price is known.
    The result is rounded to a millionth of a dollar so that it prints cleanly.
    """
    model_id, body = prepare_request(
        model_or_input, payload, allow_unknown_fields=True, registry=registry
    )
    spec = get_spec(model_id, registry)
    if prices is not None:
        # a table replaces the specs' prices altogether: what it lacks is unknown
        price = prices.get(model_id)
        if price is not None:
            base = spec or ModelSpec(model_id, {"type": "object"})
            rule = PriceRule(price.per_second, "second", price.per_second_with_audio)
            return attrs.evolve(base, price=rule).estimate_cost(body)
        spec = None
    if spec is None or spec.price is None or not spec.price.estimable:
        raise LookupError(
            f"no price known for model {model_id!r}; fetch it from the catalog "
            "(await client.models.spec(model_id)) or pass "
            "prices=DEFAULT_PRICES.updated({model_id: (per_second, per_second_with_audio)})"
        )
    return spec.estimate_cost(body)
