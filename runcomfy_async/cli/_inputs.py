"""What the ``batch`` command adds for inputs: checks, user prices, the dry run's verdict."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ..batch import BatchRunner, CostLimitError
from ..inputs import PriceTable
from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, make_client

__all__ = ["dry_run", "input_options", "print_skipped", "read_prices"]


def _usd_pair(model: str, value: Any, where: str) -> tuple[float, float]:
    def number(x: Any) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise UsageError(
                f"{where}: the price of {model!r} must be a number of USD >= 0, not {x!r}"
            )
        return float(x)

    if isinstance(value, list) and len(value) == 2:
        return number(value[0]), number(value[1])
    if isinstance(value, dict) and "usd" in value:
        usd = number(value["usd"])
        return usd, number(value.get("usd_with_audio", usd))
    usd = number(value)
    return usd, usd


def read_prices(path: str) -> dict[str, tuple[float, float]]:
    """A ``--prices`` file: ``{"MODEL": USD_PER_SECOND | [USD, USD_WITH_AUDIO] | {"usd": ..}}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read --prices file {path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"--prices file {path!r} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(
            f'--prices file {path!r} must be a JSON object: {{"MODEL": USD_PER_SECOND, ...}}'
        )
    return {str(m): _usd_pair(str(m), v, f"--prices {path}") for m, v in data.items()}


def input_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`BatchOptions` fields the input flags set."""
    prices: dict[str, tuple[float, float]] = {}
    if args.prices:
        prices.update(read_prices(args.prices))
    for model, usd in args.price:
        prices[model] = (usd, usd)  # one figure: with or without audio
    return {
        "validate": not args.no_validate,
        "allow_unknown_fields": args.allow_unknown_fields,
        "skip_invalid": args.skip_invalid,
        "ignore_columns": frozenset(c for group in args.ignore_columns for c in group),
        "prices": PriceTable(prices) if prices else None,
        "force": args.force,
    }


def print_skipped(runner: BatchRunner) -> int:
    """List the lines ``--skip-invalid`` left out (standard error); 1 if any, else 0."""
    skipped = runner.skipped
    if not skipped:
        return EXIT_OK
    lines = {p.line for p in skipped}
    source = runner.manifest.source or "the manifest"
    print(
        f"skipped {len(lines)} bad line(s) of {source} (--skip-invalid); nothing was "
        "submitted for them:",
        file=sys.stderr,
    )
    for p in skipped:
        print(f"  {p}", file=sys.stderr)
    return EXIT_FAILED


async def dry_run(args: argparse.Namespace, runner: BatchRunner, label: str) -> int:
    """Print what the run would do and cost, and refuse as the run would (exit 2).

    With a token (or ``--emulator``) the catalog validates and prices models
    the package does not bundle, and the estimate is held against the
    balance; without one, the bundled specs and ``--price`` are all there is.
    """
    can_connect = bool(args.emulator or os.environ.get("RUNCOMFY_API_TOKEN"))
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(make_client(args)) if can_connect else None
        preview = await runner.preview(client=client)
        print(preview.summary())
        if client is None:
            print("Balance: not checked (no API token; set RUNCOMFY_API_TOKEN or try --emulator).")
        try:
            await runner.check_cost(label=label, client=client)
        except CostLimitError as exc:
            print(f"error: this run would be refused: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_FAILED if runner.skipped else EXIT_OK
