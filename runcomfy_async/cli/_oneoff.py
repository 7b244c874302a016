"""The one-off commands: run, submit, status, result, cancel."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import anyio.to_thread

from .._api import check_request_id
from .._models import Result
from ..batch import Downloader
from ..batch._download import output_names
from ._common import EXIT_FAILED, EXIT_OK, UsageError, make_client, read_input

__all__ = ["cmd_cancel", "cmd_result", "cmd_run", "cmd_status", "cmd_submit"]


async def cmd_run(args: argparse.Namespace) -> int:
    payload = read_input(args.input)
    async with make_client(args, include_cost=True) as client:
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
        await anyio.to_thread.run_sync(lambda: out.mkdir(parents=True, exist_ok=True))
        async with Downloader(out) as downloader:
            for (url, _), name in zip(outputs, names, strict=True):
                saved = await downloader.download(url, name)
                print(saved.path)
    return EXIT_OK


def _print_result_line(result: Result) -> None:
    cost = f", cost ${result.cost:.2f}" if result.cost is not None else ""
    print(f"{result.request_id}: {result.status.value}{cost}", file=sys.stderr)


async def cmd_submit(args: argparse.Namespace) -> int:
    payload = read_input(args.input)
    async with make_client(args) as client:
        job = await client.submit(args.model, payload)
        print(job.request_id)
    return EXIT_OK


def _request_id(args: argparse.Namespace) -> str:
    """The REQUEST_ID argument, checked before a token is asked for (a usage error)."""
    try:
        return check_request_id(args.request_id)
    except ValueError:
        raise UsageError(
            f"not a request id: {args.request_id!r} (an id the API gave, e.g. printed by "
            "'runcomfy-async submit': letters, digits, '.', '_', ':' and '-')"
        ) from None


async def cmd_status(args: argparse.Namespace) -> int:
    _request_id(args)
    async with make_client(args) as client:
        status = await client.status(args.request_id)
    if args.json:
        print(json.dumps(dict(status.raw), indent=2))
    else:
        where = f" (queue position {status.queue_position})" if status.queue_position else ""
        print(f"{status.state.value}{where}")
    return EXIT_OK


async def cmd_result(args: argparse.Namespace) -> int:
    _request_id(args)
    async with make_client(args) as client:
        result = await client.result(args.request_id, include_cost=args.include_cost)
    print(json.dumps(dict(result.raw), indent=2))
    return EXIT_FAILED if result.status.value == "failed" else EXIT_OK


async def cmd_cancel(args: argparse.Namespace) -> int:
    _request_id(args)
    async with make_client(args) as client:
        outcome = await client.cancel(args.request_id)
    if outcome.cancelled:
        print("cancelled")
        return EXIT_OK
    print(f"{outcome.outcome}: only a queued request can be cancelled")
    return EXIT_FAILED
