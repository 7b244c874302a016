"""RunComfy's live model catalog: :class:`ModelInfo` entries and the :class:`ModelsClient`.

The catalog (``GET /v1/models``, ``/v1/models/categories``,
``/v1/models/{model_id}``, same origin and token as the jobs) lists every
model with its display name, categories, price and input schema. Entries are
parsed leniently: a field of the wrong type becomes None, unknown keys stay in
``raw``. Answers are cached per client for ``ttl`` seconds.
"""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import attrs

from .._errors import InvalidRequestError, MalformedResponseError, NotFoundError
from ._schema import is_number
from ._spec import _AUDIO_FIELDS, DEFAULT_REGISTRY, ModelSpec, PriceRule, Registry

__all__ = ["ModelInfo", "ModelsClient"]

#: GET ``path`` with query ``params``; returns the decoded JSON body.
Fetch = Callable[[str, Mapping[str, str]], Awaitable[Any]]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@attrs.frozen
class ModelInfo:
    """One catalog entry. ``raw`` is the entry as the server sent it, unknown keys included.

    ``price`` is ``base_price_usd`` (USD per ``price_unit``, e.g. ``second``
    or ``output``); ``input_schema`` is None when the answer held none (a
    list fetched without schemas).
    """

    model_id: str
    display_name: str | None = None
    categories: tuple[str, ...] = ()
    price: float | None = None
    price_unit: str | None = None
    pricing_note: str | None = None
    input_schema: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Any) -> ModelInfo:
        """Parse one entry leniently; raises :class:`MalformedResponseError` without a model id."""
        if not isinstance(data, Mapping):
            raise MalformedResponseError(
                f"a catalog entry must be an object, got {data!r:.80}", status_code=200
            )
        model_id = data.get("model_id", data.get("id"))
        if not isinstance(model_id, str) or not model_id:
            raise MalformedResponseError(
                f"a catalog entry has no model_id: {dict(data)!r:.200}", status_code=200
            )
        cats = data.get("categories")
        price = data.get("base_price_usd")
        schema = data.get("input_schema")
        return cls(
            model_id=model_id,
            display_name=_str(data.get("display_name")),
            categories=tuple(c for c in cats if isinstance(c, str))
            if isinstance(cats, list)
            else (),
            price=float(price) if is_number(price) and math.isfinite(price) else None,
            price_unit=_str(data.get("price_unit")),
            pricing_note=_str(data.get("pricing_note")),
            input_schema=schema if isinstance(schema, Mapping) else None,
            raw=dict(data),
        )

    def to_spec(self, base: ModelSpec | None = None) -> ModelSpec:
        """A :class:`ModelSpec` from this entry, over ``base`` (the bundled spec, if any).

        The catalog's schema and price replace the base's; what the catalog
        cannot say (named rules, latency prior) is kept from the base.
        """
        schema = self.input_schema if self.input_schema is not None else None
        if schema is None:
            schema = base.schema if base is not None else {"type": "object"}
        price = base.price if base is not None else None
        if self.price is not None and self.price_unit:
            with_audio = None
            known = base.price if base is not None else None
            if (
                known is not None
                and known.unit == self.price_unit
                and known.usd_with_audio is not None
                and known.usd
            ):
                # The catalog has one price; keep the bundled audio surcharge ratio.
                with_audio = round(self.price * known.usd_with_audio / known.usd, 6)
            price = PriceRule(self.price, self.price_unit, with_audio, self.pricing_note)
        props = schema.get("properties")
        audio = base.audio_field if base is not None else None
        if audio is None and isinstance(props, Mapping):
            audio = next(
                (
                    n
                    for n in _AUDIO_FIELDS
                    if isinstance(props.get(n), Mapping) and props[n].get("type") == "boolean"
                ),
                None,
            )
        return ModelSpec(
            self.model_id,
            schema,
            price,
            base.latency if base is not None else None,
            audio,
            base.rules if base is not None else (),
            self.display_name,
            "catalog",
        )


class _Cached:
    __slots__ = ("expires", "value")

    def __init__(self, value: Any, expires: float) -> None:
        self.value = value
        self.expires = expires


class ModelsClient:
    """The model catalog of one client (``client.models``), cached for ``ttl`` seconds.

    - ``async for info in models.list(search=..., category=..., kind=...)``:
      every matching entry, paged with ``limit``/``offset`` behind the scenes;
    - ``await models.get(model_id)``: one entry, with its input schema;
    - ``await models.categories()``: the category names;
    - ``await models.spec(model_id)``: the :class:`ModelSpec` validation and
      cost use, fetched once and kept in :attr:`registry`.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        registry: Registry | None = None,
        ttl: float = 300.0,
        page_size: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._fetch = fetch
        self.registry = registry if registry is not None else Registry()
        self._ttl = ttl
        self._page_size = page_size
        self._clock = clock
        self._cache: dict[tuple[Any, ...], _Cached] = {}

    def __repr__(self) -> str:
        return f"<ModelsClient cached={len(self._cache)} ttl={self._ttl}>"

    def clear_cache(self) -> None:
        """Forget every cached answer (the specs already in the registry stay)."""
        self._cache.clear()

    async def _get(self, key: tuple[Any, ...], path: str, params: Mapping[str, str]) -> Any:
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit.expires > now:
            return hit.value
        value = await self._fetch(path, params)
        self._cache[key] = _Cached(value, now + self._ttl)
        return value

    async def list(
        self,
        *,
        search: str | None = None,
        category: str | None = None,
        kind: str | None = None,
        include_schema: bool = True,
    ) -> AsyncIterator[ModelInfo]:
        """Every catalog entry matching the filters, page by page (an async iterator)."""
        offset = 0
        while True:
            params = {
                k: v
                for k, v in (("search", search), ("category", category), ("kind", kind))
                if v is not None
            }
            params.update(
                include_schema="true" if include_schema else "false",
                limit=str(self._page_size),
                offset=str(offset),
            )
            key = ("list", tuple(sorted(params.items())))
            page = await self._get(key, "/v1/models", params)
            if not isinstance(page, Mapping) or not isinstance(page.get("models"), list):
                raise MalformedResponseError(
                    f"GET /v1/models answered {page!r:.200}", status_code=200
                )
            entries = page["models"]
            for entry in entries:
                info = ModelInfo.from_json(entry)
                if info.input_schema is not None:
                    self._remember(info)
                yield info
            offset += len(entries)
            total = page.get("total")
            if not entries or (isinstance(total, int) and offset >= total):
                return

    async def get(self, model_id: str) -> ModelInfo:
        """The catalog entry of ``model_id`` (raises :class:`NotFoundError` if unknown)."""
        path = "/v1/models/" + quote(model_id, safe="/")
        data = await self._get(("get", model_id), path, {})
        if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
            data = data["model"]
        info = ModelInfo.from_json(data)
        self._remember(info)
        return info

    async def categories(self) -> builtins.list[str]:
        """The catalog's category names."""
        data = await self._get(("categories",), "/v1/models/categories", {})
        cats = data.get("categories") if isinstance(data, Mapping) else None
        if not isinstance(cats, list):
            raise MalformedResponseError(
                f"GET /v1/models/categories answered {data!r:.200}", status_code=200
            )
        return [c for c in cats if isinstance(c, str)]

    async def spec(self, model_id: str) -> ModelSpec | None:
        """The spec of ``model_id``: from the catalog once fetched, else the bundled one.

        Fetches the entry the first time; a model the catalog does not know
        (404, or 400001 "wrong model id") gives the bundled spec or None.
        """
        known = self.registry.get(model_id)
        if known is not None and known.source == "catalog":
            return known
        try:
            await self.get(model_id)
        except (NotFoundError, InvalidRequestError):
            return known
        return self.registry.get(model_id)

    def _remember(self, info: ModelInfo) -> None:
        base = self.registry.get(info.model_id)
        if base is not None and base.source == "catalog":
            # a refresh: build on the bundled spec again, not on the last answer
            base = DEFAULT_REGISTRY.get(info.model_id)
        self.registry.add(info.to_spec(base))
