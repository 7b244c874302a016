"""The emulator's model catalog and wallet, served from the package's model registry.

Routes (bearer auth like the job routes):

- ``GET /v1/models?search=&category=&kind=&include_schema=&limit=&offset=``
  -> ``{"models": [...], "total": N}``;
- ``GET /v1/models/categories`` -> ``{"categories": [...]}``;
- ``GET /v1/models/{model_id}`` (the id has slashes; the POST of the same
  path is the submit) -> one entry with its ``input_schema``;
- ``GET /prod/v2/balance`` -> ``{"balance_usd": ..., "currency": "USD"}``
  (the real wallet lives on another origin; a client pointed at the
  emulator asks the emulator).

Entries come from the same :class:`~runcomfy_async.catalog.ModelSpec`
registry the client validates with, plus any :class:`SyntheticModel`
passed in, so tests can exercise a model the package never bundled.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
from aiohttp import web

from ..catalog import DEFAULT_REGISTRY, ModelInfo, ModelSpec, Registry
from ._config import ModelProfile

__all__ = ["EmulatorCatalog", "SyntheticModel"]

_Auth = Callable[[web.Request], "str | None"]
_MAX_LIMIT = 500

#: What a default emulator's balance route answers (USD): enough that demo
#: and test batches are not stopped by the balance check unless they ask.
DEFAULT_BALANCE_USD = 10_000.0


@attrs.frozen
class SyntheticModel:
    """An extra model the emulator lists: an input ``schema`` and a price.

    ``price_usd`` per ``price_unit`` (``"second"`` or ``"output"``); ``kind``
    is what ``?kind=`` filters on (e.g. ``"video"``); ``profile`` is how long
    its jobs take when submitted to the emulator.
    """

    model_id: str
    schema: Mapping[str, Any] = attrs.field(repr=False)
    price_usd: float | None = None
    price_unit: str = "second"
    display_name: str | None = None
    categories: tuple[str, ...] = ("synthetic",)
    kind: str = "video"
    pricing_note: str | None = None
    profile: ModelProfile = attrs.field(factory=lambda: ModelProfile.uniform(20.0, 60.0))

    def entry(self) -> dict[str, Any]:
        """The catalog entry the emulator serves, with the schema."""
        return {
            "model_id": self.model_id,
            "display_name": self.display_name or self.model_id,
            "categories": list(self.categories),
            "kind": self.kind,
            "base_price_usd": self.price_usd,
            "price_unit": self.price_unit,
            **({"pricing_note": self.pricing_note} if self.pricing_note else {}),
            "input_schema": dict(self.schema),
        }


def _spec_entry(spec: ModelSpec) -> dict[str, Any]:
    parts = spec.model_id.split("/")
    kind = "video" if "video" in spec.model_id else "image"
    entry: dict[str, Any] = {
        "model_id": spec.model_id,
        "display_name": spec.display_name or " ".join(p.title() for p in parts[1:]),
        "categories": [parts[-1]],
        "kind": kind,
        "input_schema": {k: v for k, v in spec.schema.items() if k not in ("example", "model_id")},
    }
    if spec.price is not None:
        entry["base_price_usd"] = spec.price.usd
        entry["price_unit"] = spec.price.unit
        if spec.price.usd_with_audio is not None:
            entry["pricing_note"] = (
                f"{spec.price.usd_with_audio} USD per {spec.price.unit} with audio"
            )
    return entry


class EmulatorCatalog:
    """The catalog and balance routes of one emulator; see the module docstring."""

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        extra_models: Iterable[SyntheticModel] = (),
        balance_usd: float = DEFAULT_BALANCE_USD,
    ) -> None:
        reg = registry or DEFAULT_REGISTRY
        #: The specs submits are validated with: ``reg`` plus each synthetic model,
        #: read from its catalog entry exactly as a client reads it (same problems).
        self.registry = Registry(parent=reg)
        self._entries: dict[str, dict[str, Any]] = {}
        for model_id in sorted(reg.model_ids()):
            spec = reg.get(model_id)
            if spec is not None:
                self._entries[model_id] = _spec_entry(spec)
        for model in extra_models:
            self._entries[model.model_id] = entry = model.entry()
            self.registry.add(ModelInfo.from_json(entry).to_spec(reg.get(model.model_id)))
        #: What ``GET /prod/v2/balance`` answers; tests may change it.
        self.balance_usd = balance_usd

    def __repr__(self) -> str:
        return f"<EmulatorCatalog models={len(self._entries)} balance={self.balance_usd}>"

    @property
    def model_ids(self) -> list[str]:
        """Every model id listed, sorted."""
        return sorted(self._entries)

    def add_routes(self, app: web.Application, authenticate: _Auth) -> None:
        """Register the catalog and balance routes (before the submit route's GET twin)."""

        def guarded(
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            async def serve(request: web.Request) -> web.StreamResponse:
                if authenticate(request) is None:
                    return _error(401, "invalid, expired or missing API token", 400004)
                return await handler(request)

            return serve

        app.router.add_get("/v1/models", guarded(self._list))
        app.router.add_get("/v1/models/categories", guarded(self._categories))
        app.router.add_get("/v1/models/{model_id:.+}", guarded(self._get))
        app.router.add_get("/prod/v2/balance", guarded(self._balance))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        try:
            limit = int(query.get("limit", "50"))
            offset = int(query.get("offset", "0"))
        except ValueError:
            return _error(422, "limit and offset must be integers")
        if not 1 <= limit <= _MAX_LIMIT or offset < 0:
            return _error(422, f"limit must be 1-{_MAX_LIMIT} and offset >= 0")
        search = query.get("search", "").lower()
        category = query.get("category")
        kind = query.get("kind")
        with_schema = query.get("include_schema", "false").lower() in ("1", "true", "yes")
        matches = [
            e
            for _, e in sorted(self._entries.items())
            if (not search or search in f"{e['model_id']} {e['display_name']}".lower())
            and (category is None or category in e["categories"])
            and (kind is None or e.get("kind") == kind)
        ]
        page = [
            e if with_schema else {k: v for k, v in e.items() if k != "input_schema"}
            for e in matches[offset : offset + limit]
        ]
        return web.json_response({"models": page, "total": len(matches)})

    async def _categories(self, request: web.Request) -> web.StreamResponse:
        cats = sorted({c for e in self._entries.values() for c in e["categories"]})
        return web.json_response({"categories": cats})

    async def _get(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["model_id"]
        entry = self._entries.get(model_id)
        if entry is None:
            return _error(400, f"unknown model id {model_id!r}", 400001)
        return web.json_response(entry)

    async def _balance(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"balance_usd": self.balance_usd, "currency": "USD"})


def _error(status: int, message: str, code: int | None = None) -> web.Response:
    body: dict[str, Any] = {"error_message": message}
    if code is not None:
        body["error_code"] = code
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")
