"""The storage origin: serves finished jobs' MP4 files, like RunComfy's storage host.

It is a second server on its own port, so a client that sends its API token
to any origin but the API is caught: every request carrying an
``Authorization`` header is counted in ``counters.storage_auth_headers``.
"""

from __future__ import annotations

import functools

import anyio.to_thread
from aiohttp import web

from ._api import drop_connection
from ._counters import Counters
from ._faults import FaultInjector
from ._jobs import JobBoard
from ._media import MP4_CONTENT_TYPE, make_mp4

__all__ = ["StorageOrigin", "output_path"]


def output_path(request_id: str) -> str:
    """Path of a job's output on the storage origin."""
    return f"/outputs/{request_id}/output.mp4"


class StorageOrigin:
    """The aiohttp application of the storage origin."""

    def __init__(self, *, board: JobBoard, injector: FaultInjector, counters: Counters) -> None:
        self.board = board
        self.injector = injector
        self.counters = counters

    def make_app(self) -> web.Application:
        """The application serving ``GET /outputs/{request_id}/output.mp4`` (and HEAD)."""
        app = web.Application()
        app.router.add_get("/outputs/{request_id}/output.mp4", self._download)
        return app

    async def _download(self, request: web.Request) -> web.StreamResponse:
        c = self.counters
        c.storage_requests += 1
        if "Authorization" in request.headers:
            c.storage_auth_headers += 1
        job = self.board.jobs.get(request.match_info["request_id"])
        if job is None or job.state != "succeeded":
            return web.Response(status=404, text="Not Found")
        fate = self.injector.download()
        if fate == "fail":
            return web.Response(status=500, text="Internal Server Error")
        # Encoding a clip takes milliseconds (once per id, then cached): not on the loop
        # that serves every other request.
        data = await anyio.to_thread.run_sync(
            functools.partial(make_mp4, job.request_id, clip_seconds=job.clip_seconds)
        )
        response = web.StreamResponse(headers={"Content-Type": MP4_CONTENT_TYPE})
        response.content_length = len(data)
        if request.method == "HEAD":
            return response
        try:
            await response.prepare(request)
            if fate == "truncate":
                await response.write(data[: len(data) // 2])
                drop_connection(request)
                return response
            await response.write(data)
            await response.write_eof()
        except ConnectionError:
            return response  # the client went away; nothing was completed
        c.downloads_completed += 1
        return response
