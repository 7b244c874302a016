"""When a journal engine commits: the group-commit timing shared by SQLite and PostgreSQL.

Writes queue in ``_pending``; one flush task at a time drains them. A write
somebody awaits starts a flush now; a deferred write waits a little for
company (:meth:`GroupCommit._flush_within`), so that writes nobody awaits
cost a share of a commit, not a commit each. The engine supplies the flush
itself (what one round trip or transaction does with the queue).
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["GroupCommit"]


class GroupCommit:
    """Mixin: the flush task and its timer. The engine sets ``_pending`` and defines ``_flush``."""

    _pending: list[Any]
    _flusher: asyncio.Task[None] | None = None
    _timer: asyncio.TimerHandle | None = None

    async def _flush(self) -> None:  # pragma: no cover - every engine defines it
        raise NotImplementedError

    def _flush_within(self, seconds: float) -> None:
        """Make sure a flush starts within ``seconds``."""
        if self._flusher is not None and not self._flusher.done():
            return  # the running flush takes the new write in its next round
        loop = asyncio.get_running_loop()
        due = loop.time() + seconds
        if self._timer is not None:
            if self._timer.when() <= due:
                return
            self._timer.cancel()
        self._timer = loop.call_at(due, self._start_flush)

    def _start_flush(self) -> None:
        """Start a flush now, unless one is running or nothing waits."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending and (self._flusher is None or self._flusher.done()):
            loop = asyncio.get_running_loop()
            self._flusher = loop.create_task(self._flush(), name="runcomfy-async journal")
