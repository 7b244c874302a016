"""The ``runcomfy-async`` command: bulk generation from a manifest, and one-off requests.

Examples::

    runcomfy-async batch examples/showcase.jsonl --emulator --out clips/
    runcomfy-async batch clips.jsonl --out clips/ --dry-run
    runcomfy-async run kling/kling-3.0/pro/text-to-video --input '{"prompt": "a red fox"}'
    runcomfy-async status 3f2b...

The API token comes from ``RUNCOMFY_API_TOKEN`` (never from the command line,
and never printed). Errors are one clear message on standard error (``--debug``
adds the traceback). Exit status: 0 success, 1 some jobs failed or the API
refused, 2 usage, manifest or cost-limit error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from ._client import RunComfyClient
from ._download import Downloader, output_names
from ._errors import InputValidationError, RunComfyError
from ._journal import JournalError
from ._manifest import ManifestError
from ._models import Result
from ._timing import PollPolicy
from ._version import __version__
from .batch import BatchRunner, CostLimitError

__all__ = ["main"]

logger = logging.getLogger("runcomfy_async")

EMULATOR_TIME_SCALE = 0.02
"""Default time scale of ``--emulator``: a 100 s generation takes 2 s."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_EPILOG_BATCH = """\
manifest (JSON Lines, one job a line; "id" optional):
  {"id": "fox-01", "model": "kling/kling-3.0/pro/text-to-video",
   "input": {"prompt": "a red fox in fresh snow", "duration": 5}}
or CSV with a header row: id,model,prompt,start_image_url,duration,...

examples:
  runcomfy-async batch examples/showcase.jsonl --emulator --out clips/
  runcomfy-async batch clips.jsonl --out clips/ --dry-run
  runcomfy-async batch clips.jsonl --out clips/ --max-cost 50 --concurrency 8

Rerun the same command after a crash or Ctrl-C: accepted jobs are resumed, never
resubmitted, and saved files are not downloaded again. A job whose submit may or
may not have reached the server is reported as outcome_unknown; after checking
your dashboard, pass --adopt ID=REQUEST_ID for the ones it shows and
--resubmit-unknown for the rest.
"""


_EPILOG_MAIN = """\
examples:
  runcomfy-async batch examples/showcase.jsonl --emulator --out clips/
  runcomfy-async batch clips.jsonl --out clips/ --dry-run
  runcomfy-async run kling/kling-3.0/pro/text-to-video --input '{"prompt": "a red fox"}'
  runcomfy-async submit kling/kling-3.0/pro/text-to-video --input @fox.json
  runcomfy-async status REQUEST_ID
  runcomfy-async emulator --port 8000 --time-scale 0.01

Run 'runcomfy-async COMMAND --help' for a command's options. Exit status: 0 all
succeeded, 1 some jobs failed (or the API refused), 2 usage, manifest or cost
limit error, 130 interrupted.
"""


class UsageError(Exception):
    """A command line that cannot be run (exit status 2)."""


# -- parsing ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _usd(text: str) -> float:
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount in USD, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative amount, got {text!r}")
    return value


def _adopt(text: str) -> tuple[str, str]:
    job_id, sep, request_id = text.partition("=")
    if not sep or not job_id or not request_id:
        raise argparse.ArgumentTypeError(f"expected ID=REQUEST_ID, got {text!r}")
    return job_id.strip(), request_id.strip()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and logs"
    )
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $RUNCOMFY_BASE_URL, else the public API)",
    )
    emu = argparse.ArgumentParser(add_help=False)
    emu.add_argument(
        "--emulator",
        action="store_true",
        help="run against an emulator started in this process (no token, no network)",
    )
    emu.add_argument(
        "--time-scale",
        type=_positive_float,
        metavar="X",
        help=f"generation time factor of the emulator (default {EMULATOR_TIME_SCALE} with "
        "--emulator); with --base-url, the scale of an emulator you started yourself",
    )

    parser = argparse.ArgumentParser(
        prog="runcomfy-async",
        description="Generate Kling 3.0 clips with RunComfy's Model API, one or thousands at "
        "a time. The token is read from RUNCOMFY_API_TOKEN.",
        epilog=_EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runcomfy-async {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "batch",
        parents=[common, api, emu],
        help="run (or resume) every job of a manifest into a directory",
        description="Run every job of a manifest (JSON Lines or CSV), journaled in --out so "
        "that rerunning the same command resumes.",
        epilog=_EPILOG_BATCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", metavar="MANIFEST", help="a .jsonl or .csv manifest")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--concurrency", "-c", type=_positive_int, default=16, metavar="N",
        help="jobs in flight at once (default 16)",
    )  # fmt: skip
    p.add_argument(
        "--download-concurrency", type=_positive_int, default=8, metavar="N",
        help="files downloading at once (default 8)",
    )  # fmt: skip
    p.add_argument(
        "--dry-run", action="store_true",
        help="check every line and print the estimated cost; submit nothing",
    )  # fmt: skip
    p.add_argument(
        "--max-cost", type=_usd, metavar="USD",
        help="refuse to start if this run is estimated to cost more",
    )  # fmt: skip
    p.add_argument(
        "--no-progress", action="store_true",
        help="plain periodic log lines instead of a progress bar",
    )  # fmt: skip
    p.add_argument(
        "--resubmit-unknown", action="store_true",
        help="submit again jobs whose earlier submit has an unknown outcome (may pay twice)",
    )  # fmt: skip
    p.add_argument(
        "--adopt", type=_adopt, action="append", default=[], metavar="ID=REQUEST_ID",
        help="a job of unknown outcome that you found on your dashboard: track that request "
        "(repeatable)",
    )  # fmt: skip
    p.add_argument("--retry-failed", action="store_true", help="submit failed jobs again")
    p.add_argument(
        "--cancel-on-interrupt", action="store_true",
        help="on Ctrl-C, cancel the jobs still queued without asking",
    )  # fmt: skip
    p.add_argument(
        "--job-timeout", type=_positive_float, metavar="SECONDS",
        help="stop waiting for a job after this long (a rerun resumes it)",
    )  # fmt: skip
    p.add_argument(
        "--requests-per-second", type=_positive_float, metavar="R",
        help="API request budget (default 20; unlimited with --emulator)",
    )  # fmt: skip

    for name, helptext in (
        ("run", "submit one job, wait for it, download its output"),
        ("submit", "submit one job and print its request id"),
    ):
        p = sub.add_parser(
            name,
            parents=[common, api] + ([emu] if name == "run" else []),
            help=helptext,
            description=helptext[0].upper() + helptext[1:] + ".",
            epilog="example:\n  runcomfy-async "
            + name
            + ' kling/kling-3.0/pro/text-to-video --input \'{"prompt": "a red fox"}\'',
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("model", metavar="MODEL", help="model id")
        p.add_argument(
            "--input", "-i", required=True, metavar="JSON|@FILE",
            help="the input object as JSON, or @path of a JSON file (@- for stdin)",
        )  # fmt: skip
        if name == "run":
            p.add_argument("--out", "-o", default=".", metavar="DIR", help="where to save")
            p.add_argument(
                "--timeout", type=_positive_float, metavar="SECONDS",
                help="stop waiting after this long (the job keeps running)",
            )  # fmt: skip
            p.add_argument("--no-download", action="store_true", help="print the output URLs only")

    p = sub.add_parser("status", parents=[common, api], help="print a request's state")
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p = sub.add_parser("result", parents=[common, api], help="print a request's result as JSON")
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--include-cost", action="store_true", help="ask for the cost (USD)")
    p = sub.add_parser("cancel", parents=[common, api], help="cancel a queued request")
    p.add_argument("request_id", metavar="REQUEST_ID")
    sub.add_parser(
        "emulator",
        help="serve a local RunComfy emulator (see 'runcomfy-async emulator --help')",
        add_help=False,
    )
    return parser


# -- helpers ---------------------------------------------------------------------------


def _read_input(text: str) -> dict[str, Any]:
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
async def _client(args: argparse.Namespace, **options: Any) -> AsyncIterator[RunComfyClient]:
    """A client for the command: against an in-process emulator, or the configured API."""
    use_emulator = bool(getattr(args, "emulator", False))
    scale = getattr(args, "time_scale", None)
    if use_emulator:
        from .emulator import Emulator

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
        raise UsageError("no API token: set RUNCOMFY_API_TOKEN (or try --emulator)")
    if scale is not None:
        options.setdefault("poll", PollPolicy(time_scale=scale))
    async with RunComfyClient(base_url=args.base_url, **options) as client:
        yield client


def _print_error(exc: BaseException, *, debug: bool, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    text = str(exc) or type(exc).__name__
    first, *rest = text.splitlines()
    print(f"error: {first}", file=stream)
    for line in rest:
        print(line, file=stream)


def _ask_in_thread(question: str) -> asyncio.Future[bool]:
    """Ask a yes/no question on the terminal without blocking the loop.

    A daemon thread reads the answer, so an exit (e.g. a second Ctrl-C) never
    waits for someone to press Enter.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()

    def settle(answer: bool) -> None:
        if not fut.done():
            fut.set_result(answer)

    def ask() -> None:
        try:
            answer = input(question).strip().lower() in ("y", "yes")
        except (EOFError, OSError, RuntimeError):
            answer = False
        with contextlib.suppress(RuntimeError):  # the loop may be gone
            loop.call_soon_threadsafe(settle, answer)

    threading.Thread(target=ask, name="runcomfy-async prompt", daemon=True).start()
    return fut


def _install_interrupt(on_first: Callable[[], None]) -> Callable[[], None]:
    """First Ctrl-C (or SIGTERM): ``on_first``; second Ctrl-C: cancel the main task."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    presses = 0

    def handler() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            on_first()
        elif main_task is not None:
            main_task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # e.g. Windows, or not the main thread: KeyboardInterrupt does the job

    def remove() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return remove


# -- commands --------------------------------------------------------------------------


async def _cmd_batch(args: argparse.Namespace) -> int:
    adopt = dict(args.adopt)
    stdout_tty = sys.stdout.isatty() and sys.stderr.isatty()
    interactive = sys.stdin.isatty() and stdout_tty
    progress = "log" if args.no_progress or not stdout_tty else "bar"

    async def confirm(n: int) -> bool:
        print(file=sys.stderr)
        return await _ask_in_thread(
            f"Cancel the {n} job(s) still queued on the server? Running ones cannot be "
            "cancelled. [y/N] "
        )

    settings: dict[str, Any] = {
        "concurrency": args.concurrency,
        "download_concurrency": args.download_concurrency,
        "resubmit_unknown": args.resubmit_unknown,
        "adopt": adopt,
        "retry_failed": args.retry_failed,
        "max_cost": args.max_cost,
        "progress": progress,
        "progress_file": sys.stderr,
        "cancel_on_interrupt": args.cancel_on_interrupt,
        "confirm_cancel": confirm if interactive else None,
        "job_timeout": args.job_timeout,
    }
    # The manifest is checked first: a bad line is reported before anything else.
    try:
        runner = BatchRunner(args.manifest, args.out, **settings)
    except OSError as exc:
        raise UsageError(f"cannot read the manifest {args.manifest!r}: {exc.strerror}") from None
    except ValueError as exc:
        if isinstance(exc, ManifestError):
            raise
        raise UsageError(str(exc)) from None

    if args.dry_run:
        preview = await runner.preview()
        print(preview.summary())
        if args.max_cost is not None and preview.to_submit_estimate.usd > args.max_cost:
            print(
                f"error: this run would be refused: estimated ${preview.to_submit_estimate.usd:.2f}"
                f" is above --max-cost ${args.max_cost:.2f}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return EXIT_OK
    if args.max_cost is not None:
        # Refuse before asking for a token or touching the directory; the
        # runner checks again under the journal's lock.
        preview = await runner.preview()
        if preview.to_submit_estimate.usd > args.max_cost:
            raise CostLimitError(
                f"this run would submit {preview.to_submit} job(s) estimated at "
                f"${preview.to_submit_estimate.usd:.2f}, above --max-cost ${args.max_cost:.2f}; "
                "nothing was submitted",
                estimate=preview.to_submit_estimate,
                limit=args.max_cost,
            )

    current: list[BatchRunner] = []
    stopping = False

    def first_interrupt() -> None:
        nonlocal stopping
        stopping = True
        print(
            "\nStopping: no new submits; recording the ones in flight (Ctrl-C again to quit at "
            "once). Rerun the same command to resume.",
            file=sys.stderr,
            flush=True,
        )
        for r in current:
            r.stop()

    options: dict[str, Any] = {"max_in_flight": args.concurrency, "include_cost": True}
    if args.requests_per_second is not None:
        options["requests_per_second"] = args.requests_per_second
    remove = _install_interrupt(first_interrupt)
    try:
        async with _client(args, **options) as client:
            runner = BatchRunner(runner.manifest, args.out, client=client, **settings)
            current.append(runner)
            if stopping:
                runner.stop()
            report = await runner.run()
    except asyncio.CancelledError:
        print(
            "interrupted: the journal is consistent; rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        remove()
    print(report.summary())
    if runner.fatal_error is not None:
        _print_error(runner.fatal_error, debug=bool(getattr(args, "debug", False)))
    return report.exit_code


async def _cmd_run(args: argparse.Namespace) -> int:
    payload = _read_input(args.input)
    async with _client(args, include_cost=True) as client:
        job = await client.submit(args.model, payload)
        print(f"submitted {job.request_id}; waiting for it...", file=sys.stderr, flush=True)
        try:
            result = await job.wait(args.timeout)
        except (asyncio.CancelledError, TimeoutError):
            print(
                f"stopped waiting; the job may still run: runcomfy-async result {job.request_id}",
                file=sys.stderr,
            )
            raise
        _print_result_line(result)
        if args.no_download:
            for url in result.urls:
                print(url)
            return EXIT_OK
        outputs = [(u, "mp4") for u in result.videos] + [(u, "png") for u in result.images]
        names = output_names(job.request_id.replace(":", "_"), outputs)
        out = Path(args.out)
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
        async with Downloader(out) as downloader:
            for (url, _), name in zip(outputs, names, strict=True):
                saved = await downloader.download(url, name)
                print(saved.path)
    return EXIT_OK


def _print_result_line(result: Result) -> None:
    cost = f", cost ${result.cost:.2f}" if result.cost is not None else ""
    print(f"{result.request_id}: {result.status.value}{cost}", file=sys.stderr)


async def _cmd_submit(args: argparse.Namespace) -> int:
    payload = _read_input(args.input)
    async with _client(args) as client:
        job = await client.submit(args.model, payload)
        print(job.request_id)
    return EXIT_OK


async def _cmd_status(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        status = await client.status(args.request_id)
    if args.json:
        print(json.dumps(dict(status.raw), indent=2))
    else:
        where = f" (queue position {status.queue_position})" if status.queue_position else ""
        print(f"{status.state.value}{where}")
    return EXIT_OK


async def _cmd_result(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        result = await client.result(args.request_id, include_cost=args.include_cost)
    print(json.dumps(dict(result.raw), indent=2))
    return EXIT_FAILED if result.status.value == "failed" else EXIT_OK


async def _cmd_cancel(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        outcome = await client.cancel(args.request_id)
    if outcome.cancelled:
        print("cancelled")
        return EXIT_OK
    print(f"{outcome.outcome}: only a queued request can be cancelled")
    return EXIT_FAILED


_COMMANDS = {
    "batch": _cmd_batch,
    "run": _cmd_run,
    "submit": _cmd_submit,
    "status": _cmd_status,
    "result": _cmd_result,
    "cancel": _cmd_cancel,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse ``argv``, run the command, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "emulator":
        from .emulator import main as emulator_main

        return emulator_main(argv[1:], prog="runcomfy-async emulator")
    args = _parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    command = _COMMANDS[args.command]
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, ManifestError, CostLimitError, JournalError, InputValidationError) as exc:
        _print_error(exc, debug=debug)
        return EXIT_USAGE
    except (RunComfyError, OSError, TimeoutError) as exc:
        _print_error(exc, debug=debug)
        return EXIT_FAILED
    except Exception as exc:  # a bug of ours: still one line, unless --debug
        if not debug:
            print(
                f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)",
                file=sys.stderr,
            )
        else:
            _print_error(exc, debug=True)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
