"""The download stage: save each finished job's outputs, refreshing expired URLs once."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .._client import RunComfyClient
from .._errors import DownloadError, RunComfyError
from ._context import RunContext
from ._download import Downloader, SavedFile, output_names
from ._lifecycle import DOWNLOAD_FAILED, error_text
from ._manifest import ManifestEntry
from ._records import outputs_of

__all__ = ["download_worker"]

#: Statuses of a signed output URL that expired: ask the API for fresh URLs, once.
_EXPIRED = frozenset({401, 403, 404, 410})


async def download_worker(ctx: RunContext, client: RunComfyClient, downloader: Downloader) -> None:
    """Download jobs from ``ctx``'s download queue, one at a time, until it closes."""
    async for entry, info, request_id in ctx.download_queue:
        ctx.downloading += 1
        ctx.show()
        try:
            await _download(ctx, client, downloader, entry, info, request_id)
        finally:
            ctx.downloading -= 1
            ctx.show()


async def _download(
    ctx: RunContext,
    client: RunComfyClient,
    downloader: Downloader,
    entry: ManifestEntry,
    info: Mapping[str, Any],
    request_id: str | None,
) -> None:
    ctx.journal.mark_download_started(entry.id, time.time())  # for the report's timeline
    outputs = [(str(u), str(e)) for u, e in info.get("outputs") or ()]
    names = output_names(entry.id, outputs, taken=ctx.entries)
    try:
        try:
            saved = await _save(downloader, outputs, names)
        except DownloadError as exc:
            if exc.status not in _EXPIRED or request_id is None:
                raise
            # Output URLs may be signed and expire: ask for fresh ones, once.
            fresh = await client.result(request_id, include_cost=True)
            outputs = outputs_of(fresh)
            names = output_names(entry.id, outputs, taken=ctx.entries)
            info = {**info, "outputs": outputs}
            saved = await _save(downloader, outputs, names)
    except (DownloadError, RunComfyError, OSError) as exc:
        ctx.journal.note_error(entry.id, DOWNLOAD_FAILED.prefix + error_text(exc))
        ctx.settle(entry.id, DOWNLOAD_FAILED.outcome)
        return
    now = time.time()
    await ctx.records.write(
        entry, request_id, estimated_cost=ctx.estimated(entry), info=info, files=saved, now=now
    )
    ctx.journal.mark_downloaded(entry.id, [f.as_dict() for f in saved], now)
    ctx.downloaded += 1
    ctx.settle(entry.id, "succeeded")


async def _save(
    downloader: Downloader, outputs: list[tuple[str, str]], names: list[str]
) -> list[SavedFile]:
    return [
        await downloader.download(url, name) for (url, _), name in zip(outputs, names, strict=True)
    ]
