"""The API origin: RunComfy's four routes, bearer auth, error bodies and injected faults."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import ipaddress
import json
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime
from typing import Any

import attrs
from aiohttp import web

from ..catalog import Registry
from ._config import is_validated
from ._counters import Counters
from ._faults import Decision, FaultInjector, format_retry_after
from ._jobs import Job, JobBoard, result_status, route_status

__all__ = ["ApiOrigin", "Handler", "Route", "drop_connection"]

Handler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]
"""An API route's handler: the request and the bearer token it authenticated with."""

Route = tuple[str, str, str, Handler]
"""One row of the API's route table: method, path, counter name, handler."""

_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_GATEWAY_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
# A problem's path: identifiers joined by dots, other keys and indexes as [repr].
_PATH_PARTS = re.compile(r"\[([^\]]*)\]|\.?([^.\[]+)")
_TRUE = frozenset({"true", "1", "yes"})


def drop_connection(request: web.BaseRequest) -> web.StreamResponse:
    """Close ``request``'s connection without answering; return a response that is never sent.

    aiohttp then fails to write that response, takes it for a client that went
    away, and drops the connection quietly; the client sees the server
    disconnect (``ServerDisconnectedError``) before any byte of an answer.
    """
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=500)


# Marks the (never sent) response of a dropped request, so the counting
# wrapper can tell a drop from a real 500.
_DROPPED = "runcomfy_async.emulator.dropped"


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _json(status: int, body: Mapping[str, Any], **headers: str) -> web.Response:
    return web.json_response(dict(body), status=status, headers=headers or None)


def _error(status: int, message: str, code: int | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {}
    if code is not None:
        body["error_code"] = code
    body["error_message"] = message
    body.update(extra)
    return _json(status, body)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _loc(path: str) -> list[Any]:
    loc: list[Any] = ["body"]
    for bracketed, name in _PATH_PARTS.findall(path):
        if name:
            loc.append(name)
            continue
        try:
            loc.append(ast.literal_eval(bracketed))
        except (ValueError, SyntaxError):
            loc.append(bracketed)
    return loc


def _jsonable(value: Any) -> Any:
    if value is attrs.NOTHING:
        return None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _validation_detail(
    model_id: str, payload: Mapping[str, Any], registry: Registry | None = None
) -> list[dict[str, Any]]:
    # Imported here: the emulator must work (unvalidated) even where the inputs
    # module cannot be imported, and importing it lazily keeps startup light.
    from runcomfy_async.inputs import validate_payload

    return [
        {"loc": _loc(p.path), "msg": p.rule, "input": _jsonable(p.value)}
        # Like a real server, tolerate fields this version does not know.
        for p in validate_payload(model_id, payload, allow_unknown_fields=True, registry=registry)
    ]


class ApiOrigin:
    """The aiohttp application of the API origin and the state its handlers share."""

    def __init__(
        self,
        *,
        board: JobBoard,
        injector: FaultInjector,
        counters: Counters,
        tokens: Collection[str],
        closing: asyncio.Event,
        max_jobs_per_token: int | None = None,
        registry: Registry | None = None,
        echo_model_id: bool = False,
    ) -> None:
        self.board = board
        #: the specs submits are validated with (the catalog's: bundled + synthetic)
        self.registry = registry
        self.echo_model_id = echo_model_id
        self.injector = injector
        self.counters = counters
        self.tokens = tokens
        self.max_jobs_per_token = max_jobs_per_token
        self.base_url = ""
        self.storage_url = ""
        self._closing = closing

    def routes(self) -> list[Route]:
        """The four API routes as ``(method, path, counter name, handler)`` rows.

        Every row goes through the same gate (counting, faults, bearer auth).
        The counter name is the route's name in :class:`Counters` and in
        ``Faults.routes``; a name neither knows is counted only in
        ``answers_by_route`` and gets no faults.
        """
        return [
            ("POST", "/v1/models/{model_id:.+}", "submit", self._submit),
            ("GET", "/v1/requests/{request_id}/status", "status", self._status),
            ("GET", "/v1/requests/{request_id}/result", "result", self._result),
            ("POST", "/v1/requests/{request_id}/cancel", "cancel", self._cancel),
        ]

    def make_app(self, routes: list[Route] | None = None) -> web.Application:
        """The application serving ``routes`` (default :meth:`routes`) and the counters."""
        # room for inline data: URIs (a 100 MB video is ~134 MB of base64)
        app = web.Application(client_max_size=200 * 1024 * 1024)
        for method, path, name, handler in self.routes() if routes is None else routes:
            app.router.add_route(method, path, self._route(name, handler))
        app.router.add_get("/_emulator/counters", self._counters_view)
        return app

    # -- the gate every API request goes through -----------------------------------

    def _route(
        self, route: str, handler: Handler
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def serve(request: web.Request) -> web.StreamResponse:
            counters = self.counters
            if hasattr(counters, route):
                setattr(counters, route, getattr(counters, route) + 1)
            counters.note_arrival()
            response = await answer(request)
            counters.note_answer(route, "drop" if response.get(_DROPPED) else response.status)
            return response

        async def answer(request: web.Request) -> web.StreamResponse:
            decision = self.injector.decide(route, request.headers.get("Authorization", ""))
            if decision.slow_seconds:
                await self._pause(decision.slow_seconds)
            if decision.error is not None:
                return self._fault(decision)
            if decision.drop == "before":
                await request.read()  # the whole request was sent: the client cannot tell
                return self._drop(request)
            token = self._authenticate(request)
            if token is None:
                self.counters.bad_token += 1
                return _error(401, "invalid, expired or missing API token", 400004)
            response = await handler(request, token)
            if decision.drop == "after":
                return self._drop(request)
            return response

        return serve

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        response = drop_connection(request)
        response[_DROPPED] = True
        return response

    async def _pause(self, seconds: float) -> None:
        # Closing the emulator wakes every delayed answer at once.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _authenticate(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or token not in self.tokens:
            return None
        return token

    def _fault(self, decision: Decision) -> web.Response:
        if decision.error in ("rps", "429"):
            assert decision.retry_after is not None
            retry_after = format_retry_after(decision.retry_after)
            detail = "rate limit exceeded" if decision.error == "rps" else "too many requests"
            return _json(
                429,
                {"error_message": "Too Many Requests", "detail": detail},
                **{"Retry-After": retry_after},
            )
        status = int(decision.error or 500)
        reason = _REASONS[status]
        if decision.html:
            page = _GATEWAY_PAGE.format(status=status, reason=reason)
            return web.Response(status=status, text=page, content_type="text/html")
        return _error(status, reason, detail="fault injected by the emulator")

    def _lookup(self, request: web.Request, token: str) -> Job | web.Response:
        request_id = request.match_info["request_id"]
        job = self.board.jobs.get(request_id)
        if job is None:
            self.counters.not_found += 1
            return _error(404, f"request {request_id} not found", 404001)
        if job.token != token:
            self.counters.forbidden += 1
            return _error(403, "this request belongs to another account", 403001)
        return job

    def _urls(self, request_id: str) -> dict[str, str]:
        base = f"{self.base_url}/v1/requests/{request_id}"
        return {"status_url": f"{base}/status", "result_url": f"{base}/result"}

    # -- the four routes ----------------------------------------------------------

    async def _submit(self, request: web.Request, token: str) -> web.StreamResponse:
        model_id = request.match_info["model_id"]
        if model_id not in self.board.models:
            self.counters.unknown_model += 1
            return _error(400, f"unknown model id {model_id!r}", 400001)
        raw = await request.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            return self._invalid("body is not valid JSON", [])
        if not isinstance(payload, dict):
            return self._invalid("body must be a JSON object", [])
        self.counters.note_submit(token)
        if is_validated(model_id, self.registry):
            detail = _validation_detail(model_id, payload, self.registry)
            if detail:
                return self._invalid(f"invalid input for {model_id}", detail)
        limit = self.max_jobs_per_token
        if limit is not None and self.board.active(token) >= limit:
            # Like the Kling provider: parallel tasks per account are capped, and
            # a submit past the cap is refused (nothing created, nothing billed).
            self.counters.account_limited += 1
            return _json(
                429,
                {
                    "error_message": "Too Many Requests",
                    "detail": f"concurrency limit: at most {limit} jobs queued or running "
                    "per account",
                },
            )
        self.counters.note_accepted(model_id, payload)
        job = self.board.create(model_id, payload, token)
        urls = self._urls(job.request_id)
        body = {"request_id": job.request_id, **urls}
        body["cancel_url"] = f"{self.base_url}/v1/requests/{job.request_id}/cancel"
        return _json(200, body)

    def _invalid(self, message: str, detail: list[dict[str, Any]]) -> web.Response:
        self.counters.invalid_body += 1
        if not detail:
            detail = [{"loc": ["body"], "msg": message, "input": None}]
        return _error(422, message, 422001, detail=detail)

    def _echo(self, body: dict[str, Any], job: Job) -> None:
        # Not in the documented answers (extra keys are allowed there): an option, so a
        # client can tell a request id that now names another job.
        if self.echo_model_id:
            body["model_id"] = job.model_id

    async def _status(self, request: web.Request, token: str) -> web.StreamResponse:
        job = self._lookup(request, token)
        if isinstance(job, web.Response):
            return job
        body: dict[str, Any] = {"request_id": job.request_id, "status": route_status(job)}
        self._echo(body, job)
        position = self.board.queue_position(job)
        if position is not None:
            body["queue_position"] = position
        body.update(self._urls(job.request_id))
        return _json(200, body)

    async def _result(self, request: web.Request, token: str) -> web.StreamResponse:
        job = self._lookup(request, token)
        if isinstance(job, web.Response):
            return job
        body: dict[str, Any] = {"request_id": job.request_id, "status": result_status(job)}
        self._echo(body, job)
        if not job.terminal:
            return _json(200, body)
        if job.state == "succeeded":
            body["output"] = {"video": f"{self.storage_url}/outputs/{job.request_id}/output.mp4"}
        body["created_at"] = _iso(job.created_at)
        body["finished_at"] = _iso(job.finished_at)
        if job.state == "failed":
            body["error"] = job.error
        if request.query.get("include_cost", "").lower() in _TRUE:
            paid = job.state == "succeeded"
            profile = self.board.models[job.model_id]
            body["cost"] = profile.cost(job.model_id, job.clip_seconds, job.audio) if paid else 0.0
        return _json(200, body)

    async def _cancel(self, request: web.Request, token: str) -> web.StreamResponse:
        job = self._lookup(request, token)
        if isinstance(job, web.Response):
            return job
        outcome = "cancelled" if self.board.cancel(job) else "not_cancellable"
        body = {"request_id": job.request_id, "status": route_status(job), "outcome": outcome}
        return _json(202, body)

    async def _counters_view(self, request: web.Request) -> web.StreamResponse:
        # Counters name tokens: only a client on this machine may read them,
        # even when the emulator listens on every interface.
        if not _is_loopback(request.remote):
            return _error(403, "the counters are served to loopback clients only")
        body: dict[str, Any] = dict(self.counters.as_dict())
        body["jobs_in_queue"] = self.board.queued
        body["jobs_in_progress"] = self.board.running
        return _json(200, body)
