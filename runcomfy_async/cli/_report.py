"""``runcomfy-async report DIR``: (re)write a batch's ``report.html`` from its journal."""

from __future__ import annotations

import argparse
import sys

import anyio.to_thread

from ..batch._report import write_gallery
from ._common import EXIT_OK, UsageError

__all__ = ["cmd_report"]


async def cmd_report(args: argparse.Namespace) -> int:
    """Write ``DIR/report.html`` and print its path.

    Works for any batch directory: finished, interrupted, or killed halfway
    (the journal says how far each job got). Exit status 2 when ``DIR`` holds
    no batch or a run is using it right now.
    """
    try:
        path = await anyio.to_thread.run_sync(write_gallery, args.dir)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(path.resolve().as_uri() if args.uri else path, file=sys.stdout)
    return EXIT_OK
