"""The security review, one test per promise made in SECURITY.md.

- the token never shows in a repr/str, a log record, an exception or a traceback;
- the ``Authorization`` header goes to the API origin only: never to output
  URLs, never to URLs a (hostile) answer names, never across a redirect;
- the base URL is https unless it is a loopback address (or explicitly allowed);
- request ids and model ids, from a caller or from the server, cannot change
  the request path;
- API bodies are size-capped, also when compressed.

"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import traceback
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from runcomfy_async import (
    APIStatusError,
    AuthenticationError,
    ClientStateError,
    InputValidationError,
    InvalidRequestError,
    JobCancelledError,
    JobEvent,
    JobFailedError,
    JobTimeoutError,
    KlingTextToVideo,
    MalformedResponseError,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    Request,
    RequestTimeoutError,
    Response,
    RetryPolicy,
    RunComfyClient,
    RunComfyError,
    ServerError,
    SubmitOutcomeUnknown,
    TransportError,
)
from runcomfy_async.batch._download import Downloader
from runcomfy_async.emulator import KLING_PRO_T2V, Emulator, Faults
from runcomfy_async.testing import MockTransport

TOKEN = "rc_live_S3CRET-7f3a9c21e4b84d0c"
SCALE = 0.001
MakeEmulator = Callable[..., Awaitable[Emulator]]
PRO = KLING_PRO_T2V


def _client(emu_or_url: Emulator | str, **options: Any) -> RunComfyClient:
    base_url = emu_or_url if isinstance(emu_or_url, str) else emu_or_url.base_url
    options.setdefault("poll", PollPolicy(time_scale=SCALE))
    options.setdefault("requests_per_second", None)
    return RunComfyClient(options.pop("token", TOKEN), base_url=base_url, **options)


def _assert_secret_free(*texts: object) -> None:
    for text in texts:
        assert TOKEN not in str(text), f"the token leaked into: {str(text)[:300]!r}"


def _exception_texts(exc: BaseException) -> list[str]:
    """Everything an error reporter could print: messages, reprs, attributes, traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        texts += [str(e), repr(e), repr(e.args)]
        with contextlib.suppress(TypeError):
            texts.append(repr(vars(e)))
        stack += [e.__cause__, e.__context__]
    return texts


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free loopback port; yield its origin."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


class Recorder:
    """A catch-all origin that records every request it gets (method, path, headers)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path_qs, dict(request.headers)))
        return web.json_response({"request_id": "req-1", "status": "in_queue"})

    @property
    def auth_headers(self) -> int:
        return sum("Authorization" in headers for _, _, headers in self.requests)


# -- the token in reprs, logs, errors -------------------------------------------------------


async def test_token_is_absent_from_every_repr_and_str(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(token=TOKEN, faults=Faults(fail_rate=0.3, seed=1))
    events: list[JobEvent] = []
    async with _client(emu) as client:
        client.add_listener(events.append)
        jobs = [await client.submit(KlingTextToVideo(prompt=f"fox {i}")) for i in range(6)]
        objects: list[object] = [client, client._transport, client._api, client.budget]
        objects += [client._poller, *jobs]
        for job in jobs:
            with contextlib.suppress(RunComfyError):
                objects.append(await job)
            objects.append(job.error)
        objects.append(await client.status(jobs[0].request_id))
        objects.append(await client.result(jobs[0].request_id))
        objects += events
        objects.append(vars(client))
    objects.append(client)  # closed
    assert events and any(isinstance(o, JobFailedError) for o in objects)
    _assert_secret_free(*(repr(o) for o in objects), *(str(o) for o in objects))


async def test_token_is_absent_from_log_records_at_every_level(
    make_emulator: MakeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    faults = Faults(
        rate_500=0.1,
        rate_502=0.05,
        rate_503=0.1,
        html_rate=0.5,
        drop_rate=0.05,
        fail_rate=0.2,
        seed=7,
    )
    emu = await make_emulator(token=TOKEN, faults=faults)
    retry = RetryPolicy(initial_delay=0.001, max_delay=0.01)
    async with _client(emu, retry=retry) as client:
        client.add_listener(lambda event: None)  # the status route too
        outcomes = await client.gather([KlingTextToVideo(prompt=f"cat {i}") for i in range(30)])
        for outcome in outcomes[:5]:
            if outcome.job is not None:
                with contextlib.suppress(RunComfyError):
                    await client.cancel(outcome.job.request_id)
        # 429s last and few: every one of them lowers the client's request rate.
        emu.faults = Faults(rate_429=1.0, retry_after=0.01)
        with pytest.raises(RateLimitError):
            await client.status(outcomes[0].job.request_id if outcomes[0].job else "req-1")
    assert emu.counters.faults > 0 and emu.counters.fault_429 > 0
    assert any(r.name == "runcomfy_async" for r in caplog.records)
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    _assert_secret_free(*(formatter.format(record) for record in caplog.records))
    _assert_secret_free(*(repr(record.__dict__) for record in caplog.records))


async def _caught(
    make: MakeEmulator,
    call: Callable[[RunComfyClient], Awaitable[object]],
    expected: type[BaseException],
    *,
    token: str = TOKEN,
) -> BaseException:
    """The ``expected`` error that ``call`` raises on a client of a fresh emulator."""
    emu = await make(token=token)
    async with _client(emu) as client:
        try:
            await call(client)
        except expected as exc:
            return exc
    raise AssertionError(f"no {expected.__name__}")


async def _auth_error(make: MakeEmulator) -> BaseException:
    # The emulator accepts another account's token, not ours.
    return await _caught(
        make, lambda c: c.status("req-1"), AuthenticationError, token="another-accounts-token"
    )


async def _submit_auth_error(make: MakeEmulator) -> BaseException:
    return await _caught(
        make,
        lambda c: c.run(KlingTextToVideo(prompt="a fox")),
        AuthenticationError,
        token="another-accounts-token",
    )


async def _not_found(make: MakeEmulator) -> BaseException:
    return await _caught(make, lambda c: c.result("no-such-request"), NotFoundError)


async def _invalid_request(make: MakeEmulator) -> BaseException:
    call = lambda c: c.submit("vendor/unknown-model", {"prompt": "x"})  # noqa: E731
    return await _caught(make, call, InvalidRequestError)


async def _input_validation(make: MakeEmulator) -> BaseException:
    call = lambda c: c.submit(PRO, {"prompt": "", "duration": 99})  # noqa: E731
    return await _caught(make, call, InputValidationError)


async def _faulty_status(make: MakeEmulator, faults: Faults, **options: Any) -> BaseException:
    emu = await make(token=TOKEN, faults=faults)
    async with _client(emu, retry=RetryPolicy(attempts=1), **options) as client:
        try:
            await client.status("req-1")
        except RunComfyError as exc:
            return exc
    raise AssertionError("no error")


async def _rate_limited(make: MakeEmulator) -> BaseException:
    exc = await _faulty_status(make, Faults(rate_429=1.0, retry_after=0.0))
    assert isinstance(exc, RateLimitError)
    return exc


async def _server_error(make: MakeEmulator) -> BaseException:
    exc = await _faulty_status(make, Faults(rate_502=1.0, html_rate=1.0))
    assert isinstance(exc, ServerError)
    return exc


async def _read_timeout(make: MakeEmulator) -> BaseException:
    exc = await _faulty_status(make, Faults(slow_rate=1.0, slow_seconds=1.0), read_timeout=0.05)
    assert isinstance(exc, RequestTimeoutError)
    return exc


async def _dropped(make: MakeEmulator) -> BaseException:
    exc = await _faulty_status(make, Faults(drop_rate=1.0))
    assert isinstance(exc, TransportError)
    return exc


async def _refused(make: MakeEmulator) -> BaseException:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with _client(f"http://127.0.0.1:{port}", retry=RetryPolicy(attempts=1)) as client:
        try:
            await client.status("req-1")
        except TransportError as exc:
            return exc
    raise AssertionError("no TransportError")


async def _malformed(make: MakeEmulator) -> BaseException:
    app = web.Application()
    app.router.add_get("/{tail:.*}", _html_200)
    async with serve(app) as url, _client(url, retry=RetryPolicy(attempts=1)) as client:
        try:
            await client.status("req-1")
        except MalformedResponseError as exc:
            return exc
    raise AssertionError("no MalformedResponseError")


async def _html_200(request: web.Request) -> web.Response:
    return web.Response(text="<html>maintenance</html>", content_type="text/html")


async def _submit_unknown(make: MakeEmulator) -> BaseException:
    emu = await make(token=TOKEN, faults=Faults(drop_rate=1.0, routes={"submit"}))
    async with _client(emu) as client:
        try:
            await client.submit(KlingTextToVideo(prompt="a fox"))
        except SubmitOutcomeUnknown as exc:
            return exc
    raise AssertionError("no SubmitOutcomeUnknown")


async def _job_failed(make: MakeEmulator) -> BaseException:
    emu = await make(token=TOKEN, faults=Faults(fail_rate=1.0))
    async with _client(emu) as client:
        try:
            await client.run(KlingTextToVideo(prompt="a fox"))
        except JobFailedError as exc:
            return exc
    raise AssertionError("no JobFailedError")


async def _job_cancelled(make: MakeEmulator) -> BaseException:
    emu = await make(token=TOKEN, workers=1, time_scale=1.0)
    async with _client(emu, poll=PollPolicy(time_scale=SCALE)) as client:
        await client.submit(KlingTextToVideo(prompt="runs"))
        queued = await client.submit(KlingTextToVideo(prompt="waits"))
        assert (await queued.cancel()).cancelled
        try:
            await asyncio.wait_for(queued.wait(), 5)
        except JobCancelledError as exc:
            return exc
    raise AssertionError("no JobCancelledError")


async def _job_timeout(make: MakeEmulator) -> BaseException:
    emu = await make(token=TOKEN, time_scale=1.0)
    async with _client(emu) as client:
        job = await client.submit(KlingTextToVideo(prompt="slow"))
        try:
            await job.wait(timeout=0.01, cancel_on_timeout=True)
        except JobTimeoutError as exc:
            return exc
    raise AssertionError("no JobTimeoutError")


async def _closed(make: MakeEmulator) -> BaseException:
    emu = await make(token=TOKEN, time_scale=1.0)
    client = _client(emu)
    async with client:
        job = await client.submit(KlingTextToVideo(prompt="cut off"))
    try:
        await client.status(job.request_id)
    except ClientStateError as exc:
        assert isinstance(job.error, ClientStateError)
        return exc
    raise AssertionError("no ClientStateError")


async def _bad_request_id(make: MakeEmulator) -> BaseException:
    return await _caught(make, lambda c: c.cancel("../../v1/models/x"), ValueError)


PROVOKERS: dict[str, Callable[[MakeEmulator], Awaitable[BaseException]]] = {
    "AuthenticationError": _auth_error,
    "AuthenticationError-on-submit": _submit_auth_error,
    "NotFoundError": _not_found,
    "InvalidRequestError": _invalid_request,
    "InputValidationError": _input_validation,
    "RateLimitError": _rate_limited,
    "ServerError": _server_error,
    "RequestTimeoutError": _read_timeout,
    "TransportError-dropped": _dropped,
    "TransportError-refused": _refused,
    "MalformedResponseError": _malformed,
    "SubmitOutcomeUnknown": _submit_unknown,
    "JobFailedError": _job_failed,
    "JobCancelledError": _job_cancelled,
    "JobTimeoutError": _job_timeout,
    "ClientStateError": _closed,
    "ValueError-request-id": _bad_request_id,
}


@pytest.mark.parametrize("kind", list(PROVOKERS))
async def test_token_is_absent_from_errors_and_tracebacks(
    kind: str, make_emulator: MakeEmulator
) -> None:
    exc = await PROVOKERS[kind](make_emulator)
    expected = kind.split("-")[0]
    assert type(exc).__name__ == expected or expected in {c.__name__ for c in type(exc).__mro__}
    _assert_secret_free(*_exception_texts(exc))


@pytest.mark.parametrize(
    "token",
    [TOKEN + "\r\nX-Injected: 1", TOKEN + "\n", TOKEN + "\x00", TOKEN[:6] + " " + TOKEN[6:]],
    ids=["crlf-header", "trailing-newline", "nul", "space"],
)
async def test_a_token_with_a_control_character_is_refused_up_front(token: str) -> None:
    api = Recorder()
    async with serve(api.app()) as url:
        with pytest.raises(ValueError) as info:
            RunComfyClient(token, base_url=url)
    assert api.requests == []
    _assert_secret_free(*_exception_texts(info.value))
    assert token not in str(info.value)


# -- the Authorization header goes to the API origin only ---------------------------------


async def test_outputs_are_never_fetched_with_the_token(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(token=TOKEN)
    async with _client(emu, include_cost=True) as client:
        outcomes = await client.gather([KlingTextToVideo(prompt=f"owl {i}") for i in range(5)])
        results = [outcome.result for outcome in outcomes]
        for result in results:
            assert result is not None and result.video is not None
            assert result.video.startswith(emu.storage_url)
            again = await client.result(result.request_id)
            assert again.video == result.video
            await client.status(result.request_id)
            await client.track(result.request_id, PRO)
    # The API client itself never touches the storage origin...
    assert emu.counters.storage_requests == 0
    # ...and the library's downloader fetches outputs without the token.
    async with Downloader(tmp_path) as downloader:
        for i, result in enumerate(results):
            assert result is not None and result.video is not None
            await downloader.download(result.video, f"clip-{i}.mp4")
    assert emu.counters.downloads_completed == 5
    assert emu.counters.storage_auth_headers == 0


async def test_urls_named_by_the_api_are_never_followed() -> None:
    """A hostile API names another origin in status_url/result_url/cancel_url/output."""
    evil = Recorder()
    async with serve(evil.app()) as evil_url:
        answers = {
            "status_url": f"{evil_url}/v1/requests/req-1/status",
            "result_url": f"{evil_url}/v1/requests/req-1/result",
            "cancel_url": f"{evil_url}/v1/requests/req-1/cancel",
        }
        polls = 0

        async def api(request: web.Request) -> web.Response:
            nonlocal polls
            if request.method == "POST" and request.path.startswith("/v1/models/"):
                return web.json_response({"request_id": "req-1", **answers})
            polls += 1
            if polls < 3:
                return web.json_response({"request_id": "req-1", "status": "in_queue", **answers})
            output = {"video": f"{evil_url}/out.mp4"}
            return web.json_response(
                {"request_id": "req-1", "status": "succeeded", "output": output}
            )

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", api)
        async with serve(app) as api_url, _client(api_url) as client:
            result = await asyncio.wait_for(client.run("vendor/model", {"prompt": "x"}), 10)
            await client.status("req-1")
            await client.cancel("req-1")
        assert result.video == f"{evil_url}/out.mp4"
    assert evil.requests == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("verb", ["status", "submit", "cancel"])
async def test_redirects_are_not_followed_so_the_token_stays_home(status: int, verb: str) -> None:
    other = Recorder()
    async with serve(other.app()) as other_url:

        async def redirect(request: web.Request) -> web.Response:
            location = f"{other_url}/steal{request.path}"
            return web.Response(status=status, headers={"Location": location})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", redirect)
        async with serve(app) as api_url, _client(api_url, retry=RetryPolicy(attempts=1)) as client:
            with pytest.raises(RunComfyError) as info:
                if verb == "submit":
                    await client.submit("vendor/model", {"prompt": "x"})
                elif verb == "cancel":
                    await client.cancel("req-1")
                else:
                    await client.status("req-1")
    assert other.requests == []
    assert other.auth_headers == 0
    if isinstance(info.value, APIStatusError):
        assert info.value.status_code == status
    _assert_secret_free(*_exception_texts(info.value))


# -- https, unless loopback ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://model-api.runcomfy.net",
        "http://10.0.0.7:8000",
        "http://192.168.1.2",
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io",
        "http://127.0.0.1:80@evil.example",
        "http://evil.example#@127.0.0.1",
        "http://user:pass@127.0.0.1",
        "https://user:pass@model-api.runcomfy.net",
        "https://model-api.runcomfy.net/?next=http://evil",
        "ftp://127.0.0.1",
        "ws://127.0.0.1",
        "127.0.0.1:8000",
        "//model-api.runcomfy.net",
        "http://",
    ],
)
def test_base_url_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(ValueError):
        RunComfyClient(TOKEN, base_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "https://model-api.runcomfy.net",
        "https://model-api.runcomfy.net/",
        "http://127.0.0.1:8000",
        "http://127.8.9.10",
        "http://localhost:8000",
        "http://LOCALHOST",
        "http://[::1]:8000",
    ],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    client = RunComfyClient(TOKEN, base_url=url)
    assert client.base_url == url.rstrip("/")
    _assert_secret_free(repr(client))


def test_plain_http_elsewhere_needs_the_explicit_opt_out() -> None:
    client = RunComfyClient(TOKEN, base_url="http://10.0.0.7:8000", allow_insecure_http=True)
    assert client.base_url == "http://10.0.0.7:8000"
    with pytest.raises(ValueError):  # the opt-out is about http only
        RunComfyClient(TOKEN, base_url="ftp://10.0.0.7", allow_insecure_http=True)


def test_the_base_url_from_the_environment_obeys_the_same_rule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNCOMFY_BASE_URL", "http://model-api.runcomfy.net")
    with pytest.raises(ValueError):
        RunComfyClient(TOKEN)


# -- request ids and model ids cannot change the path ----------------------------------------

HOSTILE_IDS = [
    "../../v1/models/x",
    "..",
    ".",
    "a/../../b",
    "a/b",
    "req?include_cost=true",
    "req#frag",
    "req%2f..%2fx",
    "%2e%2e",
    "req\nHost: evil",
    "req\r\n",
    "req x",
    "",
    "\\..\\x",
    "req\x00",
    "r" * 500,
]


def _recording_client(
    answer: Callable[[Request], Response] | None = None,
) -> tuple[RunComfyClient, list[Request]]:
    sent: list[Request] = []

    async def handler(request: Request) -> Response:
        sent.append(request)
        if answer is not None:
            return answer(request)
        return Response(200, {}, b'{"request_id": "req-1", "status": "in_queue"}')

    client = RunComfyClient(
        TOKEN,
        base_url="https://model-api.runcomfy.net",
        transport=MockTransport(handler),
        poll=PollPolicy(time_scale=SCALE),
        requests_per_second=None,
        retry=RetryPolicy.no_wait(2),
    )
    return client, sent


@pytest.mark.parametrize("request_id", HOSTILE_IDS, ids=repr)
@pytest.mark.parametrize("verb", ["status", "result", "cancel", "track"])
async def test_hostile_request_ids_are_refused_before_sending(verb: str, request_id: str) -> None:
    client, sent = _recording_client()
    async with client:
        with pytest.raises(ValueError):
            if verb == "track":
                client.track(request_id, PRO)
            else:
                await getattr(client, verb)(request_id)
        await asyncio.sleep(0.01)
    assert sent == []


HOSTILE_MODEL_IDS = [
    "../v1/requests/x/cancel",
    "kling/../../v1/requests/x/cancel",
    "kling/./x",
    "kling//x",
    "/kling/x",
    "kling/x/",
    "kling/x?y=1",
    "kling/x#y",
    "kling%2f..%2fx",
    "kling\n/x",
    "kling/x y",
    "",
]


@pytest.mark.parametrize("model_id", HOSTILE_MODEL_IDS, ids=repr)
async def test_hostile_model_ids_are_refused_before_sending(model_id: str) -> None:
    client, sent = _recording_client()
    async with client:
        with pytest.raises(InputValidationError):
            await client.submit(model_id, {"prompt": "x"}, validate=False)
        with pytest.raises(ValueError):
            client.track("req-1", model_id)
        with pytest.raises(ValueError):
            await _raise_first(client, model_id)
    assert sent == []


async def _raise_first(client: RunComfyClient, model_id: str) -> None:
    async for outcome in client.map(model_id, [{"prompt": "x"}]):
        if outcome.error is not None:
            raise outcome.error


def _hostile_submit_answer(request_id: str) -> Callable[[Request], Response]:
    def answer(request: Request) -> Response:
        if request.path.startswith("/v1/models/"):
            body = {"request_id": request_id, "status_url": "https://evil.example/x"}
            return Response(200, {}, json.dumps(body).encode())
        return Response(200, {}, b'{"status": "in_queue"}')

    return answer


@pytest.mark.parametrize("request_id", [i for i in HOSTILE_IDS if i], ids=repr)
async def test_a_hostile_request_id_from_the_server_never_reaches_a_path(request_id: str) -> None:
    client, sent = _recording_client(_hostile_submit_answer(request_id))
    async with client:
        with contextlib.suppress(RunComfyError, ValueError):
            job = await client.submit("vendor/model", {"prompt": "x"})
            with contextlib.suppress(RunComfyError, ValueError):
                await asyncio.wait_for(job.wait(), 5)
    assert [r.path for r in sent] == ["/v1/models/vendor/model"]


@pytest.mark.parametrize("request_id", ["../../x", "a/b", "req?x=1"], ids=repr)
async def test_a_hostile_request_id_from_the_server_fails_the_submit(request_id: str) -> None:
    client, _ = _recording_client(_hostile_submit_answer(request_id))
    async with client:
        with pytest.raises(SubmitOutcomeUnknown):  # a job may exist; we cannot name it safely
            await client.submit("vendor/model", {"prompt": "x"})


async def test_a_hostile_request_id_in_a_result_cannot_be_used_as_a_path() -> None:
    def answer(request: Request) -> Response:
        body = {"request_id": "../../v1/models/x", "status": "succeeded", "output": {}}
        return Response(200, {}, json.dumps(body).encode())

    client, sent = _recording_client(answer)
    async with client:
        result = await client.result("req-1")
        with pytest.raises(ValueError):
            await client.cancel(result.request_id)
    assert [r.path for r in sent] == ["/v1/requests/req-1/result"]


# -- size caps ---------------------------------------------------------------------------------

BIG = 8 * 1024 * 1024


def _gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1 << 20)
    return b"".join([packer.compress(chunk) for _ in range(size >> 20)] + [packer.flush()])


async def _huge(request: web.Request) -> web.StreamResponse:
    body = b'{"request_id": "req-1", "status": "in_queue", "pad": "' + b"x" * BIG + b'"}'
    return web.Response(body=body, content_type="application/json")


async def _endless(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b" " * 65536
    with contextlib.suppress(ConnectionError):
        for _ in range(100_000):  # 6 GiB, were it read to the end
            await response.write(chunk)
    return response


BOMB = _gzip_bomb(256 << 20)


async def _bomb(request: web.Request) -> web.StreamResponse:
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    return web.Response(body=BOMB, headers=headers)


@pytest.mark.parametrize("handler", [_huge, _endless, _bomb], ids=["8MiB", "endless", "gzip-bomb"])
@pytest.mark.parametrize("verb", ["status", "result", "submit"])
async def test_huge_bodies_are_refused_not_buffered(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], verb: str
) -> None:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    gc.collect()
    tracemalloc.start()
    try:
        async with serve(app) as url, _client(url, retry=RetryPolicy.no_wait(2)) as client:
            expected = SubmitOutcomeUnknown if verb == "submit" else MalformedResponseError
            with pytest.raises(expected) as info:
                if verb == "submit":
                    await client.submit("vendor/model", {"prompt": "x"})
                else:
                    await getattr(client, verb)("req-1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert len(str(info.value)) < 1000


async def test_a_huge_result_fails_the_job_with_malformed_response() -> None:
    async def submitted(request: web.Request) -> web.Response:
        return web.json_response({"request_id": "req-1"})

    app = web.Application()
    app.router.add_post("/v1/models/{m:.+}", submitted)
    app.router.add_get("/v1/requests/{rid}/result", _huge)
    poll = PollPolicy(time_scale=SCALE, max_check_failures=2, priors={"vendor/model": 0.0})
    async with serve(app) as url, _client(url, poll=poll) as client:
        job = await client.submit("vendor/model", {"prompt": "x"})
        with pytest.raises(MalformedResponseError):
            await asyncio.wait_for(job.wait(), 10)


# -- server-controlled text in our messages ------------------------------------------------


def test_server_text_in_error_messages_is_single_line_and_bounded() -> None:
    from runcomfy_async._api import map_error

    forged = "denied\n2026-01-01 00:00:00 INFO runcomfy_async: all good\r" + "A" * 100_000
    body = json.dumps({"error_code": 400001, "error_message": forged}).encode()
    error = map_error(Response(400, {}, body), method="GET", path="/p")
    assert error is not None
    text = str(error)
    assert "\n" not in text and "\r" not in text
    assert len(text) <= 2000
