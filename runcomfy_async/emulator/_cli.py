"""Running the emulator from a shell: ``python -m runcomfy_async.emulator --port 8000``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from ._faults import Faults
from ._server import Emulator

__all__ = ["main", "serve"]


async def serve(
    *,
    out: TextIO | None = None,
    stop: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Run an :class:`Emulator` until ``stop`` is set or the task is cancelled.

    ``options`` are :class:`Emulator`'s keyword arguments. Once listening it
    prints its base URL, storage URL and token to ``out`` (standard output by
    default), one ``name: value`` line each, so scripts can read them.
    """
    out = out if out is not None else sys.stdout
    async with Emulator(**options) as emu:
        print("RunComfy emulator running", file=out)
        print(f"  base_url:    {emu.base_url}", file=out)
        print(f"  storage_url: {emu.storage_url}", file=out)
        print(f"  token:       {emu.token}", file=out)
        print("Press Ctrl-C to stop.", file=out, flush=True)
        await (stop or asyncio.Event()).wait()


def _fault(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    fields = {f.name: f for f in attrs.fields(Faults)}
    if not sep or name not in fields or name in ("routes", "seed"):
        choices = ", ".join(n for n in fields if n not in ("routes", "seed"))
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME one of: {choices}")
    if name == "drop_after_create":
        return name, raw.lower() in ("1", "true", "yes", "on")
    try:
        return name, float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} needs a number, got {raw!r}") from None


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m runcomfy_async.emulator",
        description="Serve a local RunComfy Model API (an emulator) until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="API port (default: any free)")
    parser.add_argument("--storage-port", type=int, default=0, help="storage port")
    parser.add_argument("--time-scale", type=float, default=1.0, help="generation time factor")
    parser.add_argument("--workers", type=int, default=8, help="parallel jobs per token")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--token", default="emulator-token", help="bearer token accepted")
    parser.add_argument(
        "--vocabulary", choices=("mixed", "documented"), default="mixed", help="status words"
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="inject a fault, e.g. --fault fail_rate=0.1 --fault rate_503=0.05 (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status (0 after Ctrl-C or SIGTERM).

    ``argv`` defaults to ``sys.argv[1:]``; ``prog`` names the command in
    ``--help`` (e.g. ``"runcomfy-async emulator"`` when another CLI wraps it).
    """
    args = _parser(prog).parse_args(argv)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "storage_port": args.storage_port,
        "time_scale": args.time_scale,
        "workers": args.workers,
        "seed": args.seed,
        "token": args.token,
        "vocabulary": args.vocabulary,
        "faults": Faults(**dict(args.fault)),
    }

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        await serve(stop=stop, **options)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("emulator stopped", flush=True)
    return 0
