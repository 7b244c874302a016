"""The ``batch`` command: the library's runner, built once, with a terminal around it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from .._errors import APIUnreachableError
from ..batch import BatchOptions, BatchRunner, ManifestError
from ._common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, make_client, print_error
from ._inputs import dry_run, input_options, print_skipped
from ._interrupt import ask_in_thread, install_interrupt

__all__ = ["cmd_batch"]

_LIMIT = "--max-cost"  # how the limit is named in messages


async def cmd_batch(args: argparse.Namespace) -> int:
    """Run (or resume, or preview) a manifest into ``--out``; the exit status of its report."""
    stdout_tty = sys.stdout.isatty() and sys.stderr.isatty()
    interactive = sys.stdin.isatty() and stdout_tty

    async def confirm(n: int) -> bool:
        print(file=sys.stderr)
        return await ask_in_thread(
            f"Cancel the {n} job(s) still queued on the server? Running ones cannot be "
            "cancelled. [y/N] "
        )

    # The manifest is checked first: a bad line is reported before anything else.
    try:
        options = BatchOptions(
            concurrency=args.concurrency,
            download_concurrency=args.download_concurrency,
            resubmit_unknown=args.resubmit_unknown,
            adopt=dict(args.adopt),
            retry_failed=args.retry_failed,
            max_cost=args.max_cost,
            progress="log" if args.no_progress or not stdout_tty else "bar",
            progress_file=sys.stderr,
            cancel_on_interrupt=args.cancel_on_interrupt,
            confirm_cancel=confirm if interactive else None,
            job_timeout=args.job_timeout,
            journal=args.journal,
            batch_key=args.batch_key,
            lease_seconds=args.lease,
            **input_options(args),  # checks, prices, --force: cli/_inputs.py (h-inputs2)
        )
        runner = BatchRunner(args.manifest, args.out, options)
    except OSError as exc:
        raise UsageError(f"cannot read the manifest {args.manifest!r}: {exc.strerror}") from None
    except ValueError as exc:
        if isinstance(exc, ManifestError):
            raise
        raise UsageError(str(exc)) from None

    if args.dry_run:
        return await dry_run(args, runner, _LIMIT)

    def first_interrupt() -> None:
        # Stop first: the bar draws its last frame and goes quiet, so this
        # line (and the question that may follow) stays on screen.
        runner.stop()
        print(
            "\nStopping: no new submits; recording the ones in flight (Ctrl-C again to quit at "
            "once). Rerun the same command to resume.",
            file=sys.stderr,
            flush=True,
        )

    client_options: dict[str, Any] = {"max_in_flight": args.concurrency, "include_cost": True}
    if args.requests_per_second is not None:
        client_options["requests_per_second"] = args.requests_per_second
    remove = install_interrupt(first_interrupt)
    try:
        async with make_client(args, **client_options) as client:
            # Refuse before touching the directory (the runner checks again, with
            # the same rules, under the journal's lock).
            await runner.check_cost(label=_LIMIT, client=client)
            report = await runner.run(client=client, cost_label=_LIMIT)
    except asyncio.CancelledError:
        print(
            "interrupted: the journal is consistent; rerun the same command to resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        remove()
    fatal = runner.fatal_error
    debug = bool(getattr(args, "debug", False))
    if isinstance(fatal, APIUnreachableError):
        # Every job stopped for the same reason: say it once, not once a job.
        print(
            f"Batch of {len(report.jobs)} jobs in {report.out_dir}: nothing was submitted "
            f"({report.elapsed:.1f} s). Rerun the same command once the API can be reached."
            f"\nReport: {report.report_path}"
        )
        print_error(fatal, debug=debug)
        return EXIT_USAGE
    print(report.summary())
    in_flight = report.counts.get("in_flight", 0)
    if in_flight and getattr(args, "emulator", False):
        # The embedded emulator ends with this command, and its jobs with it.
        print(
            f"\nnote: --emulator serves from inside this command: its {in_flight} job(s) in "
            "flight end with it. A rerun finds them unknown to its new emulator (404, "
            "failed); add --retry-failed to submit them again."
        )
    if fatal is not None:
        print_error(fatal, debug=debug)
    return max(report.exit_code, print_skipped(runner))
