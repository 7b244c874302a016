"""The ``models`` command: RunComfy's model catalog, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from ..catalog import ModelInfo
from ._common import EXIT_OK, make_client

__all__ = ["cmd_models", "models_table"]


def _price(info: ModelInfo) -> str:
    if info.price is None:
        return "-"
    unit = f"/{info.price_unit}" if info.price_unit else ""
    return f"${info.price:g}{unit}"


def models_table(models: Sequence[ModelInfo], width: int = 100) -> str:
    """A plain-text table of ``models``: id, name, price, categories (cut to ``width``)."""
    rows = [("MODEL", "NAME", "PRICE", "CATEGORIES")]
    rows += [(m.model_id, m.display_name or "", _price(m), ", ".join(m.categories)) for m in models]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for r in rows:
        line = "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[3]
        lines.append(line.rstrip()[:width])
    return "\n".join(lines)


def _entry(info: ModelInfo) -> dict[str, Any]:
    # The entry as the catalog sent it (unknown keys kept): what a script wants.
    return dict(info.raw) or {"model_id": info.model_id}


async def cmd_models(args: argparse.Namespace) -> int:
    """``models list|get|categories``: print the catalog (``--json`` for scripts)."""
    as_json = bool(args.json)
    async with make_client(args) as client:
        if args.models_command == "categories":
            cats = await client.models.categories()
            print(json.dumps({"categories": cats}, indent=2) if as_json else "\n".join(cats))
            return EXIT_OK
        if args.models_command == "get":
            info = await client.models.get(args.model)
            if as_json:
                print(json.dumps(_entry(info), indent=2))
                return EXIT_OK
            print(models_table([info], width=10_000))
            if info.pricing_note:
                print(f"\npricing: {info.pricing_note}")
            schema = info.input_schema or {}
            props = schema.get("properties") if isinstance(schema, dict) else None
            if isinstance(props, dict) and props:
                required = set(schema.get("required") or ())
                print("\ninputs:")
                for name, prop in props.items():
                    kind = prop.get("type", "") if isinstance(prop, dict) else ""
                    mark = " (required)" if name in required else ""
                    default = prop.get("default") if isinstance(prop, dict) else None
                    shown = f", default {json.dumps(default)}" if default is not None else ""
                    print(f"  {name}: {kind}{mark}{shown}")
            return EXIT_OK
        models = [
            m
            async for m in client.models.list(
                search=args.search, category=args.category, kind=args.kind, include_schema=False
            )
        ]
    if as_json:
        print(json.dumps({"models": [_entry(m) for m in models], "total": len(models)}, indent=2))
    else:
        width = shutil.get_terminal_size((100, 24)).columns if sys.stdout.isatty() else 10_000
        print(models_table(models, width=width))
        print(f"\n{len(models)} model(s)")
    return EXIT_OK
