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

from ._config import ModelProfile
from ._faults import Faults
from ._jobs import QUEUE_DISCIPLINES, VOCABULARIES
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
    prints its base URL, storage URL, token and time scale to ``out``
    (standard output by default), one ``name: value`` line each, so scripts
    can read them, then a reminder that a client's timing needs the same scale.
    """
    out = out if out is not None else sys.stdout
    async with Emulator(**options) as emu:
        print("RunComfy emulator running", file=out)
        print(f"  base_url:    {emu.base_url}", file=out)
        print(f"  storage_url: {emu.storage_url}", file=out)
        print(f"  token:       {emu.token}", file=out)
        print(f"  time_scale:  {emu.time_scale:g}", file=out)
        if emu.time_scale != 1.0:
            print(
                f"A generation takes {emu.time_scale:g} times its real time here: give your "
                f"client the matching PollPolicy(time_scale={emu.time_scale:g}) "
                f"(CLI: --base-url {emu.base_url} --time-scale {emu.time_scale:g}).",
                file=out,
            )
        else:
            print("Generations take their real time (time scale 1).", file=out)
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


def _model(text: str) -> tuple[str, ModelProfile]:
    model_id, sep, spec = text.partition("=")
    if not sep or not model_id:
        raise argparse.ArgumentTypeError(f"expected MODEL_ID=KIND:NUMBERS, got {text!r}")
    try:
        return model_id, ModelProfile.parse(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m runcomfy_async.emulator",
        description="Serve a local RunComfy Model API (an emulator) until Ctrl-C. "
        "Its defaults follow the documented API; the options below add the quirks "
        "of servers in the wild.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="API port (default: any free)")
    parser.add_argument("--storage-port", type=int, default=0, help="storage port")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="generation time factor (default 1); clients need PollPolicy(time_scale=...)",
    )
    parser.add_argument("--workers", type=int, default=8, help="parallel jobs per token")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="make request ids (and every draw) repeat run to run; default: random ids",
    )
    parser.add_argument("--token", default="emulator-token", help="bearer token accepted")
    parser.add_argument(
        "--vocabulary",
        choices=VOCABULARIES,
        default="documented",
        help="status words: documented (default), mixed (some jobs say succeeded/canceled), "
        "wild (also pending/waiting/starting/processing)",
    )
    parser.add_argument(
        "--alt-spelling-rate",
        type=float,
        default=0.3,
        help="share of jobs in other spellings under mixed/wild (default 0.3)",
    )
    parser.add_argument(
        "--queue",
        choices=QUEUE_DISCIPLINES,
        default="fifo",
        help="order queued jobs start in (default fifo)",
    )
    parser.add_argument(
        "--max-jobs-per-token",
        type=_positive_int,
        default=None,
        metavar="N",
        help="per-account concurrency limit: 429 on a submit past N queued or running jobs",
    )
    parser.add_argument(
        "--model",
        type=_model,
        action="append",
        default=[],
        metavar="ID=KIND:NUMBERS",
        help="serve a model with these durations (seconds), e.g. acme/flash=uniform:1,4, "
        "x/y=lognormal:90,0.6, x/z=bimodal:5,10,60,120,0.3, x/w=fixed:30 (repeatable)",
    )
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="inject a fault, e.g. --fault fail_rate=0.1 --fault rate_429=0.03 (sporadic 429, "
        "Retry-After 1) --fault rps_limit=20 (a real rate limit) (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Command-line entry point; returns the exit status (0 after Ctrl-C or SIGTERM).

    ``argv`` defaults to ``sys.argv[1:]``; ``prog`` names the command in
    ``--help`` (e.g. ``"runcomfy-async emulator"`` when another CLI wraps it).
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        faults = Faults(**dict(args.fault))
    except ValueError as exc:
        parser.error(str(exc))
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "storage_port": args.storage_port,
        "time_scale": args.time_scale,
        "workers": args.workers,
        "seed": args.seed,
        "token": args.token,
        "vocabulary": args.vocabulary,
        "alt_spelling_rate": args.alt_spelling_rate,
        "queue": args.queue,
        "max_jobs_per_token": args.max_jobs_per_token,
        "models": dict(args.model),
        "faults": faults,
    }
    try:
        # Built once here (never started) so that a bad setting is a usage
        # error, not a traceback out of the event loop.
        Emulator(**options)
    except ValueError as exc:
        parser.error(str(exc))

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
