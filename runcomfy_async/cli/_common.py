"""What every command shares: exit codes, the client it talks to, errors on one line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from .._client import RunComfyClient
from .._timing import PollPolicy

__all__ = [
    "EMULATOR_TIME_SCALE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "make_client",
    "print_error",
    "read_input",
]

logger = logging.getLogger("runcomfy_async")

EMULATOR_TIME_SCALE = 0.02
"""Default time scale of ``--emulator``: a 100 s generation takes 2 s."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line that cannot be run (exit status 2)."""


def read_input(text: str) -> dict[str, Any]:
    if text.startswith("@"):
        where = text[1:]
        try:
            raw = sys.stdin.read() if where == "-" else Path(where).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read --input file {where!r}: {exc.strerror}") from None
    else:
        raw = text
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--input must be a JSON object (the model's input fields)")
    return value


@contextlib.asynccontextmanager
async def make_client(args: argparse.Namespace, **options: Any) -> AsyncIterator[RunComfyClient]:
    """A client for the command: against an in-process emulator, or the configured API."""
    use_emulator = bool(getattr(args, "emulator", False))
    scale = getattr(args, "time_scale", None)
    if use_emulator:
        from ..emulator import Emulator

        scale = scale or EMULATOR_TIME_SCALE
        async with Emulator(time_scale=scale) as emu:
            logger.info("emulator at %s (time scale %s)", emu.base_url, scale)
            async with RunComfyClient(
                emu.token,
                base_url=emu.base_url,
                poll=PollPolicy(time_scale=scale),
                requests_per_second=None,
                **options,
            ) as client:
                yield client
        return
    if not os.environ.get("RUNCOMFY_API_TOKEN"):
        # Only the commands that have --emulator suggest it.
        hint = " (or try --emulator)" if hasattr(args, "emulator") else ""
        raise UsageError(f"no API token: set RUNCOMFY_API_TOKEN{hint}")
    if scale is not None:
        options.setdefault("poll", PollPolicy(time_scale=scale))
    async with RunComfyClient(base_url=args.base_url, **options) as client:
        yield client


def print_error(exc: BaseException, *, debug: bool, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    text = str(exc) or type(exc).__name__
    first, *rest = text.splitlines()
    print(f"error: {first}", file=stream)
    for line in rest:
        print(line, file=stream)
