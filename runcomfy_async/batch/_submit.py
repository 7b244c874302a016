"""The submit stage: claim planned jobs, submit each, journal the answer.

A job is marked ``submitting`` (durably) in the client's ``before_send``
hook: once it holds its in-flight slot and request token, right before the
POST may leave. Until then it is ``planned``, and stopping the run simply
cancels its wait. From the hook on, the submit is shielded: it is never
abandoned halfway, so the journal always learns its answer.
"""

from __future__ import annotations

import collections
import logging
import socket
import time
from urllib.parse import urlsplit

import anyio
import anyio.abc

from .._client import RunComfyClient
from .._errors import APIUnreachableError, SubmitOutcomeUnknown, TransportError
from ._context import RunContext
from ._lifecycle import error_text, submit_fate
from ._manifest import ManifestEntry
from ._rows import JournalState

__all__ = ["SubmitStage"]

logger = logging.getLogger("runcomfy_async")

_WORKERS = 8  # submits under way at once (each may wait for a slot, a token, a commit)
_CLAIM = 128  # planned jobs claimed from the journal at a time
_LOW = 2 * _WORKERS  # claim the next ones when fewer are ready (a claim waits for a commit)
# Connection failures (certainly not sent), with nothing accepted yet, before the
# API's host is probed once; if it cannot be reached either, the run stops.
_UNREACHABLE_AFTER = 3
_PROBE_TIMEOUT = 10.0  # the client's connect timeout


def _api_address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"the name does not resolve: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError):
        return f"no answer within {_PROBE_TIMEOUT:.0f} s"
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc) or type(exc).__name__


class _Stopped(Exception):
    """Raised by the hook when the run stopped before this POST left: it never leaves."""


class _Attempt:
    """One submit: its cancel scope, and whether its POST may have left."""

    __slots__ = ("scope", "sending")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.sending = False


class SubmitStage:
    """Submits this run's planned jobs, ``_WORKERS`` at a time; the client's limit paces them."""

    def __init__(self, ctx: RunContext, client: RunComfyClient) -> None:
        self.ctx = ctx
        self.client = client
        self.halted = False
        self.finished = anyio.Event()
        self._ready: collections.deque[ManifestEntry] = collections.deque()
        self._exhausted = False
        self._claiming = anyio.Lock()
        self._claim_scope: anyio.CancelScope | None = None  # a claim may wait (a fleet's)
        self._live: set[_Attempt] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._connect_failures = 0  # since the last probe, while nothing was accepted
        self._probing = False

    async def run(self) -> None:
        """Submit until every planned job went, or :meth:`halt`; then settle what did not go."""
        try:
            workers = min(_WORKERS, max(1, len(self.ctx.unsent)))
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for _ in range(workers):
                    tg.start_soon(self._worker)
        finally:
            for job_id in sorted(self.ctx.unsent):
                self.ctx.settle(job_id, "not_submitted")
            self.finished.set()

    def halt(self) -> None:
        """Submit nothing more: jobs still waiting for a slot stay ``planned``.

        Submits whose POST may have left are not touched; they finish and are
        journaled.
        """
        self.halted = True
        if self._claim_scope is not None:
            self._claim_scope.cancel()
        for attempt in self._live:
            if not attempt.sending:
                attempt.scope.cancel()

    async def _worker(self) -> None:
        while not self.halted:
            entry = await self._next()
            if entry is None:
                return
            await self._submit(entry)

    async def _next(self) -> ManifestEntry | None:
        while not self._ready:
            if self._exhausted or self.halted:
                return None
            await self._claim()
        entry = self._ready.popleft()
        if len(self._ready) < _LOW and not self._exhausted and not self._claiming.locked():
            # Claim the next ones while these go: no worker waits for that commit.
            assert self._tg is not None
            self._tg.start_soon(self._claim)
        return entry

    async def _claim(self) -> None:
        async with self._claiming:
            if len(self._ready) >= _LOW or self._exhausted or self.halted:
                return
            # A shared journal's claim waits while other runners hold planned
            # jobs: halting stops that wait (claimed rows are handed back on close).
            with anyio.CancelScope() as self._claim_scope:
                ids = await self.ctx.journal.claim(_CLAIM)
            self._claim_scope = None
            if self.halted:
                return
            if not ids:
                self._exhausted = True
            # Planned rows of jobs not in this manifest are left alone.
            self._ready.extend(self.ctx.entries[i] for i in ids if i in self.ctx.unsent)

    async def _submit(self, entry: ManifestEntry) -> None:
        ctx = self.ctx
        attempt = _Attempt()
        number = ctx.attempts.get(entry.id, 0) + 1
        ctx.attempts[entry.id] = number

        async def before_send() -> None:
            if attempt.sending:
                # The same submit sent again: the last try certainly created nothing
                # (not connected, or refused). Maybe the API cannot be reached at all.
                self._connect_failed()
                if self.halted:
                    raise _Stopped
                return  # still marked 'submitting'
            if self.halted:
                raise _Stopped
            # A fleet's shared cap: wait (still stoppable) until it has room.
            await ctx.journal.wait_for_room()
            if self.halted:
                raise _Stopped
            attempt.sending = True
            attempt.scope.shield = True  # from here on, never abandoned halfway
            ctx.submitting += 1
            ctx.show()
            # Durable before the POST: a crash from here on is an honest "unknown".
            await ctx.journal.mark_submitting(entry.id, number)

        self._live.add(attempt)
        try:
            with attempt.scope:
                try:
                    # local files are read now, not at load time (inputs: h-inputs2)
                    payload = await entry.wire_input() if entry.files else entry.input
                    job = await self.client.submit(
                        entry.model,
                        payload,
                        validate=None if ctx.options.validate else False,
                        allow_unknown_fields=ctx.options.allow_unknown_fields,
                        before_send=before_send,
                    )
                except _Stopped:
                    if attempt.sending:
                        # Stopped between two tries: the last one certainly created nothing.
                        await ctx.journal.mark_submit_failed(
                            entry.id, JournalState.PLANNED, self._stop_reason()
                        )
                except Exception as exc:
                    await self._failed(entry, exc, sent=attempt.sending)
                    return
                else:
                    now = time.time()
                    ctx.records.submitted(entry.id, now)
                    ctx.journal.mark_submitted(entry.id, job.request_id, now)
                    ctx.submitted += 1
                    ctx.unsent.discard(entry.id)
                    ctx.start_wait(entry, job)
                    return
            # Stopped while waiting for a slot or a token: nothing left, the row
            # is still 'planned' and the next run submits it.
            ctx.settle(entry.id, "not_submitted")
        finally:
            self._live.discard(attempt)
            if attempt.sending:
                ctx.submitting -= 1
                ctx.show()

    def _stop_reason(self) -> str:
        fatal = self.ctx.fatal_error
        if fatal is not None:
            return "not sent: " + error_text(fatal)
        return "not sent: the run stopped"

    def _connect_failed(self) -> None:
        """A submit certainly did not land: after a few with nothing accepted, probe the host."""
        if self.ctx.submitted or self.halted or self._probing:
            return
        self._connect_failures += 1
        if self._connect_failures >= _UNREACHABLE_AFTER and self._tg is not None:
            self._probing = True
            self._tg.start_soon(self._probe)

    async def _probe(self) -> None:
        """Connect to the API's host once: if that fails too, stop (every submit would)."""
        base_url = self.client.base_url.rstrip("/")
        host, port = _api_address(base_url)
        try:
            with anyio.fail_after(_PROBE_TIMEOUT):
                stream = await anyio.connect_tcp(host, port)
            await stream.aclose()
        except (OSError, TimeoutError) as exc:
            if not self.ctx.submitted:
                self._fatal(APIUnreachableError(base_url, host, port, _why(exc)))
        finally:
            # Reachable after all (e.g. the tries were refused with 429): probe again later.
            self._connect_failures = 0
            self._probing = False

    async def _failed(self, entry: ManifestEntry, exc: Exception, *, sent: bool) -> None:
        if isinstance(exc, TransportError) and not exc.request_sent:
            self._connect_failed()
        fate = submit_fate(exc, sent=sent)
        if fate.state is JournalState.UNKNOWN and not isinstance(exc, SubmitOutcomeUnknown):
            # We cannot tell whether the request left: never guess "not sent".
            logger.exception("unexpected error submitting %s", entry.id, exc_info=exc)
        assert fate.state is not None
        await self.ctx.journal.mark_submit_failed(
            entry.id, fate.state, fate.prefix + error_text(exc)
        )
        self.ctx.settle(entry.id, fate.outcome)
        if fate.fatal:
            self._fatal(exc)

    def _fatal(self, exc: BaseException) -> None:
        """Stop submitting (every further submit would fail the same way); finish the rest."""
        if self.ctx.fatal_error is None:
            self.ctx.fatal_error = exc
            logger.info("stopping submits: %s", error_text(exc))
        self.halt()
