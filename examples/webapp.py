"""An aiohttp.web service that makes Kling clips, holding ONE RunComfyClient for its life.

The client is created when the app starts (a ``cleanup_ctx``) and closed when
it stops, so every request shares one connection pool, one request budget and
one polling scheduler: a thousand waiting requests cost one heap of due
times, not a thousand polling loops.

Routes:

- ``POST /clips`` with JSON ``{"prompt": ..., "duration": 5}``: submit a Kling
  3.0 pro text-to-video job, wait for it, answer ``{"request_id", "video"}``;
- ``POST /clips/async``: submit and answer ``202`` with the ``request_id`` at
  once (``Location: /clips/{id}``);
- ``GET /clips/{id}``: the job's state, and its video once it succeeded.

Configuration comes from the environment: ``RUNCOMFY_API_TOKEN`` and
``RUNCOMFY_BASE_URL`` (read by the client itself), ``RUNCOMFY_POLL_TIME_SCALE``
(set it to the emulator's ``time_scale`` when pointing at the emulator),
``RUNCOMFY_REQUESTS_PER_SECOND`` (``none`` for no client-side limit),
``RUNCOMFY_MAX_IN_FLIGHT`` (default 64) and ``RUNCOMFY_CLIP_TIMEOUT`` (seconds
``POST /clips`` waits; default 900).

Several worker processes (gunicorn/uvicorn workers, containers) spend one
account: set ``RUNCOMFY_REDIS_URL`` (and ``RUNCOMFY_REDIS_KEY``, default
``runcomfy``, naming the account) and every worker shares one request budget
and one in-flight cap through :class:`~runcomfy_async.shared.RedisLimits`
(``pip install runcomfy-async[redis]``), instead of each spending the whole
budget on its own. ``RUNCOMFY_REQUESTS_PER_SECOND`` is then the account's rate.

Run it against the real API::

    RUNCOMFY_API_TOKEN=... python examples/webapp.py --port 8080

or fully offline, with an in-process emulator::

    python examples/webapp.py --emulator

then::

    curl -s -X POST localhost:8080/clips -d '{"prompt": "a red fox in the snow"}'
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web

from runcomfy_async import (
    ClientStateError,
    InputValidationError,
    Job,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    KlingTextToVideo,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    Result,
    RunComfyClient,
    RunComfyError,
    SharedLimitsError,
    SubmitOutcomeUnknown,
)
from runcomfy_async.emulator import Emulator

logger = logging.getLogger("webapp")

CLIENT = web.AppKey("client", RunComfyClient)
JOBS: web.AppKey[collections.OrderedDict[str, Job]] = web.AppKey("jobs")
SETTINGS: web.AppKey[dict[str, Any]] = web.AppKey("settings")
EMULATOR = web.AppKey("emulator", Emulator)

#: Jobs submitted with ``POST /clips/async`` that ``GET /clips/{id}`` answers
#: from memory (no API call); the oldest are forgotten beyond this many, after
#: which ``GET`` asks the API instead.
MAX_REMEMBERED_JOBS = 10_000


def settings_from_env(env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The app's settings, from ``RUNCOMFY_*`` environment variables."""
    rps = env.get("RUNCOMFY_REQUESTS_PER_SECOND", "").strip().lower()
    scale = env.get("RUNCOMFY_POLL_TIME_SCALE", "").strip()
    timeout = env.get("RUNCOMFY_CLIP_TIMEOUT", "").strip()
    in_flight = env.get("RUNCOMFY_MAX_IN_FLIGHT", "").strip()
    return {
        "token": env.get("RUNCOMFY_API_TOKEN") or None,
        "base_url": env.get("RUNCOMFY_BASE_URL") or None,
        "poll_time_scale": float(scale) if scale else 1.0,
        "requests_per_second": None if rps == "none" else float(rps) if rps else 20.0,
        "clip_timeout": float(timeout) if timeout else 900.0,
        "max_in_flight": int(in_flight) if in_flight else 64,
        "redis_url": env.get("RUNCOMFY_REDIS_URL") or None,
        "redis_key": env.get("RUNCOMFY_REDIS_KEY") or "runcomfy",
    }


def create_app(*, emulator: bool = False, **overrides: Any) -> web.Application:
    """The application. ``overrides`` replace settings from the environment.

    With ``emulator=True`` an :class:`Emulator` starts first (on loopback, with
    time scaled by ``poll_time_scale``, default 0.01) and the client talks to it.
    """
    if emulator:
        overrides.setdefault("poll_time_scale", 0.01)
    app = web.Application()
    app[SETTINGS] = {**settings_from_env(), **overrides}
    app[JOBS] = collections.OrderedDict()
    if emulator:
        app.cleanup_ctx.append(_emulator_context)
    app.cleanup_ctx.append(_client_context)
    app.router.add_post("/clips", make_clip)
    app.router.add_post("/clips/async", submit_clip)
    app.router.add_get("/clips/{request_id}", clip_status)
    return app


async def _emulator_context(app: web.Application) -> AsyncIterator[None]:
    scale = app[SETTINGS]["poll_time_scale"]
    async with Emulator(time_scale=scale) as emu:
        app[EMULATOR] = emu
        app[SETTINGS].update(token=emu.token, base_url=emu.base_url, requests_per_second=None)
        logger.info("emulator at %s (time scale %s)", emu.base_url, scale)
        yield


async def _client_context(app: web.Application) -> AsyncIterator[None]:
    """One client for the app's whole life: opened at startup, closed at cleanup."""
    s = app[SETTINGS]
    async with contextlib.AsyncExitStack() as stack:
        limits = None
        if s["redis_url"]:
            # Imported here: only a deployment with Redis needs the extra.
            from runcomfy_async.shared import RedisLimits

            shared = RedisLimits(
                s["redis_url"],
                key=s["redis_key"],
                # Shared limits need a starting rate; "none" starts high and
                # lets the account's 429s find the rate for every worker.
                requests_per_second=s["requests_per_second"] or 1000.0,
                max_in_flight=s["max_in_flight"],
            )
            limits = await stack.enter_async_context(shared)
        client = RunComfyClient(
            s["token"],
            base_url=s["base_url"],
            poll=PollPolicy(time_scale=s["poll_time_scale"]),
            requests_per_second=s["requests_per_second"],
            max_in_flight=s["max_in_flight"],
            limits=limits,
        )
        async with client:
            app[CLIENT] = client
            yield
    # Jobs still in flight end with ClientStateError; their ids stay valid on
    # the server, and GET /clips/{id} of the next process asks the API.


# -- handlers ----------------------------------------------------------------------------


async def _clip_input(request: web.Request) -> KlingTextToVideo:
    try:
        body = await request.json()
    except ValueError:
        raise _json_error(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise _json_error(400, "the body must be a JSON object")
    fields: dict[str, Any] = {"prompt": body.get("prompt")}
    if "duration" in body:
        fields["duration"] = body["duration"]
    try:
        return KlingTextToVideo(**fields)
    except InputValidationError as exc:
        problems = [{"field": p.path, "rule": p.rule} for p in exc.problems]
        raise _json_error(422, "invalid input", problems=problems) from None


def _json_error(status: int, message: str, **extra: Any) -> web.HTTPException:
    cls = {
        400: web.HTTPBadRequest,
        404: web.HTTPNotFound,
        422: web.HTTPUnprocessableEntity,
        502: web.HTTPBadGateway,
        503: web.HTTPServiceUnavailable,
        504: web.HTTPGatewayTimeout,
    }[status]
    return cls(text=json.dumps({"error": message, **extra}), content_type="application/json")


def _error_response(exc: RunComfyError, request_id: str | None = None) -> web.Response:
    """Map the library's errors onto HTTP answers for our own callers."""
    rid = getattr(exc, "request_id", None) or request_id
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
    if rid:
        body["request_id"] = rid
    if isinstance(exc, JobTimeoutError):
        body["status_url"] = f"/clips/{rid}"
        return web.json_response(body, status=504)  # still running: poll GET /clips/{id}
    if isinstance(exc, (JobFailedError, JobCancelledError)):
        return web.json_response(body, status=502)
    if isinstance(exc, SubmitOutcomeUnknown):
        # Maybe created, maybe not: say so rather than letting the caller retry blindly.
        return web.json_response(body, status=502)
    if isinstance(exc, (RateLimitError, ClientStateError, SharedLimitsError)):
        return web.json_response(body, status=503, headers={"Retry-After": "5"})
    return web.json_response(body, status=502)


def _clip_body(result: Result) -> dict[str, Any]:
    return {"request_id": result.request_id, "status": result.status.value, "video": result.video}


async def make_clip(request: web.Request) -> web.Response:
    """``POST /clips``: submit, wait for the clip, answer its URL."""
    clip = await _clip_input(request)
    client = request.app[CLIENT]
    job: Job | None = None
    try:
        job = await client.submit(clip)
        result = await job.wait(request.app[SETTINGS]["clip_timeout"])
    except RunComfyError as exc:
        return _error_response(exc, job.request_id if job else None)
    return web.json_response(_clip_body(result))


async def submit_clip(request: web.Request) -> web.Response:
    """``POST /clips/async``: submit, answer 202 with the request id at once."""
    clip = await _clip_input(request)
    try:
        job = await request.app[CLIENT].submit(clip)
    except RunComfyError as exc:
        return _error_response(exc)
    jobs = request.app[JOBS]
    jobs[job.request_id] = job
    while len(jobs) > MAX_REMEMBERED_JOBS:
        jobs.popitem(last=False)
    location = f"/clips/{job.request_id}"
    body = {"request_id": job.request_id, "status": job.state.value, "status_url": location}
    return web.json_response(body, status=202, headers={"Location": location})


async def clip_status(request: web.Request) -> web.Response:
    """``GET /clips/{id}``: from memory for our own jobs, else from the API."""
    request_id = request.match_info["request_id"]
    job = request.app[JOBS].get(request_id)
    if job is not None:
        if not job.done:
            body: dict[str, Any] = {"request_id": request_id, "status": job.state.value}
            if job.queue_position is not None:
                body["queue_position"] = job.queue_position
            return web.json_response(body)
        if job.error is None:
            return web.json_response(_clip_body(job.result_nowait()))
        body = {"request_id": request_id, "status": job.state.value, "error": str(job.error)}
        return web.json_response(body)
    try:
        result = await request.app[CLIENT].result(request_id)
    except ValueError:
        raise _json_error(400, "not a valid request id") from None
    except NotFoundError:
        raise _json_error(404, "no such request") from None
    except RunComfyError as exc:
        return _error_response(exc, request_id)
    body = _clip_body(result)
    if result.error is not None:
        body["error"] = result.error
    return web.json_response(body)


def main(argv: list[str] | None = None) -> None:
    """Serve the app (``python examples/webapp.py --help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--emulator", action="store_true", help="serve from an in-process emulator (offline)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    web.run_app(create_app(emulator=args.emulator), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
