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
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .._errors import (
    CostLimitError,
    InputValidationError,
    JournalError,
    ManifestError,
    RunComfyError,
)
from ._batch import cmd_batch
from ._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError, print_error
from ._models import cmd_models
from ._oneoff import cmd_cancel, cmd_result, cmd_run, cmd_status, cmd_submit
from ._parser import build_parser
from ._report import cmd_report

__all__ = ["main"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "batch": cmd_batch,
    "run": cmd_run,
    "submit": cmd_submit,
    "status": cmd_status,
    "result": cmd_result,
    "cancel": cmd_cancel,
    "models": cmd_models,
    "report": cmd_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse ``argv``, run the command, return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "emulator":
        from ..emulator import main as emulator_main

        return emulator_main(args.emulator_args, prog="runcomfy-async emulator")
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
        print_error(exc, debug=debug)
        return EXIT_USAGE
    except (RunComfyError, OSError, TimeoutError) as exc:
        print_error(exc, debug=debug)
        return EXIT_FAILED
    except Exception as exc:  # a bug of ours: still one line, unless --debug
        if not debug:
            print(
                f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)",
                file=sys.stderr,
            )
        else:
            print_error(exc, debug=True)
        return EXIT_FAILED
