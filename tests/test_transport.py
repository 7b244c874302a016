"""The transport seam: base URL rules, the real aiohttp transport on loopback, MockTransport."""

from __future__ import annotations

import asyncio
import json
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runcomfy_async import (
    ClientStateError,
    MalformedResponseError,
    Request,
    RequestTimeoutError,
    Response,
    TransportError,
)
from runcomfy_async._transport import MAX_BODY_BYTES, AiohttpTransport, check_base_url
from runcomfy_async.emulator._api import drop_connection
from runcomfy_async.testing import MockTransport

TOKEN = "rc-transport-secret-5f1e2d3c4b5a"


# -- check_base_url ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://model-api.runcomfy.net", "https://model-api.runcomfy.net"),
        ("https://model-api.runcomfy.net/", "https://model-api.runcomfy.net"),
        ("https://gateway.example.com:8443/runcomfy/", "https://gateway.example.com:8443/runcomfy"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://127.8.9.10:1", "http://127.8.9.10:1"),
        ("http://localhost:8000/", "http://localhost:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_https_or_loopback_http_base_urls_are_accepted(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://model-api.runcomfy.net",
        "http://10.0.0.5:8000",
        "http://192.168.1.2",
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="clear text"):
        check_base_url(url)


def test_allow_insecure_http_lifts_the_https_rule() -> None:
    assert (
        check_base_url("http://10.0.0.5:8000", allow_insecure_http=True) == "http://10.0.0.5:8000"
    )


@pytest.mark.parametrize(
    "url",
    [
        "",
        "model-api.runcomfy.net",
        "/v1",
        "ftp://model-api.runcomfy.net",
        "https://",
        "https://api.example.com/?x=1",
        "https://api.example.com/#frag",
        "https://user:pass@api.example.com",
        "https://token@api.example.com",
    ],
)
def test_malformed_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_base_url(url, allow_insecure_http=True)


# -- a loopback server --------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """One aiohttp.web origin on a free loopback port that records what it receives."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    def route(self, method: str, path: str, handler: Handler) -> None:
        async def recorded(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.seen.append((request.method, request.path_qs, dict(request.headers), body))
            return await handler(request)

        self.app.router.add_route(method, path, recorded)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[[], Server]]:
    servers: list[Server] = []

    def make() -> Server:
        server = Server()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def transports() -> AsyncIterator[list[AiohttpTransport]]:
    made: list[AiohttpTransport] = []
    yield made
    for transport in made:
        await transport.aclose()


def json_handler(body: Any, status: int = 200, **headers: str) -> Handler:
    async def handle(_: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers or None)

    return handle


async def started(server: Server) -> Server:
    await server.start()
    return server


def free_closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the real transport -----------------------------------------------------------------


async def test_sends_the_request_with_auth_and_returns_status_headers_body(
    make_server: Callable[[], Server], transports: list[AiohttpTransport]
) -> None:
    server = make_server()
    server.route("POST", "/v1/models/{m:.+}", json_handler({"ok": 1}, 200, **{"X-Trace": "t1"}))
    await server.start()
    transport = AiohttpTransport(server.url, TOKEN)
    transports.append(transport)
    response = await transport.send(
        Request("POST", "/v1/models/a/b", json={"prompt": "fox"}, params={"q": "1"})
    )
    assert response.status == 200 and json.loads(response.body) == {"ok": 1}
    assert response.headers["x-trace"] == "t1"  # names lower-cased
    ((method, path, headers, body),) = server.seen
    assert (method, path) == ("POST", "/v1/models/a/b?q=1")
    assert json.loads(body) == {"prompt": "fox"}
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["User-Agent"].startswith("runcomfy-async/")


async def test_without_a_token_no_authorization_header_is_sent(
    make_server: Callable[[], Server], transports: list[AiohttpTransport]
) -> None:
    server = make_server()
    server.route("GET", "/v1/x", json_handler({}))
    await server.start()
    transport = AiohttpTransport(server.url, None)
    transports.append(transport)
    await transport.send(Request("GET", "/v1/x"))
    assert "Authorization" not in server.seen[0][2]
    assert not transport.has_token


async def test_a_body_that_arrives_in_pieces_is_read_whole(
    make_server: Callable[[], Server], transports: list[AiohttpTransport]
) -> None:
    payload = json.dumps({"status": "succeeded", "pad": "x" * 200_000}).encode()

    async def slow_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[:1000])
        await asyncio.sleep(0.02)
        await response.write(payload[1000:])
        await response.write_eof()
        return response

    server = make_server()
    server.route("GET", "/v1/x", slow_body)
    await server.start()
    transport = AiohttpTransport(server.url, TOKEN)
    transports.append(transport)
    assert (await transport.send(Request("GET", "/v1/x"))).body == payload


def test_the_default_body_cap_is_4_mib() -> None:
    assert MAX_BODY_BYTES == 4 * 1024 * 1024


@pytest.mark.parametrize(("size", "ok"), [(MAX_BODY_BYTES, True), (MAX_BODY_BYTES + 1, False)])
async def test_bodies_over_4_mib_are_malformed(
    make_server: Callable[[], Server], transports: list[AiohttpTransport], size: int, ok: bool
) -> None:
    async def big(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * size, content_type="application/json")

    server = make_server()
    server.route("GET", "/v1/big", big)
    await server.start()
    transport = AiohttpTransport(server.url, TOKEN)
    transports.append(transport)
    if ok:
        assert len((await transport.send(Request("GET", "/v1/big"))).body) == size
    else:
        with pytest.raises(MalformedResponseError, match="larger than"):
            await transport.send(Request("GET", "/v1/big"))


async def test_the_body_cap_applies_to_chunked_bodies_too(
    make_server: Callable[[], Server], transports: list[AiohttpTransport]
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"y" * 4096)
        await response.write_eof()
        return response

    server = make_server()
    server.route("GET", "/v1/endless", endless)
    await server.start()
    transport = AiohttpTransport(server.url, TOKEN, max_body_bytes=10_000)
    transports.append(transport)
    with pytest.raises(MalformedResponseError) as info:
        await transport.send(Request("GET", "/v1/endless"))
    assert info.value.status_code == 200


async def test_connection_refused_is_a_transport_error_not_sent(
    transports: list[AiohttpTransport],
) -> None:
    transport = AiohttpTransport(f"http://127.0.0.1:{free_closed_port()}", TOKEN)
    transports.append(transport)
    with pytest.raises(TransportError) as info:
        await transport.send(Request("POST", "/v1/models/a", json={}))
    assert info.value.request_sent is False
    assert not isinstance(info.value, RequestTimeoutError)


async def test_connection_dropped_after_sending_is_a_transport_error_maybe_sent(
    make_server: Callable[[], Server], transports: list[AiohttpTransport]
) -> None:
    async def drop(request: web.Request) -> web.StreamResponse:
        return drop_connection(request)

    server = make_server()
    server.route("POST", "/v1/models/{m:.+}", drop)
    await server.start()
    transport = AiohttpTransport(server.url, TOKEN)
    transports.append(transport)
    with pytest.raises(TransportError) as info:
        await transport.send(Request("POST", "/v1/models/a", json={"prompt": "x"}))
    assert info.value.request_sent is True
    assert len(server.seen) == 1  # it did arrive


async def test_a_slow_answer_is_a_read_timeout(
    make_server: Callable[[], Server], transports: list[AiohttpTransport]
) -> None:
    release = asyncio.Event()

    async def slow(_: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({})

    server = make_server()
    server.route("GET", "/v1/slow", slow)
    await server.start()
    transport = AiohttpTransport(server.url, TOKEN, read_timeout=0.05)
    transports.append(transport)
    try:
        with pytest.raises(RequestTimeoutError) as info:
            await transport.send(Request("GET", "/v1/slow"))
    finally:
        release.set()
    assert isinstance(info.value, TimeoutError) and info.value.request_sent is True


async def test_a_garbled_answer_is_a_transport_error_that_does_not_carry_the_token(
    transports: list[AiohttpTransport],
) -> None:
    async def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 abc Garbage\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garble, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        transport = AiohttpTransport(f"http://127.0.0.1:{port}", TOKEN)
        transports.append(transport)
        with pytest.raises(TransportError) as info:
            await transport.send(Request("GET", "/v1/x"))
    finally:
        server.close()
        await server.wait_closed()
    # aiohttp's own error holds the request headers (the token among them): it
    # must not travel with ours, not even in a traceback.
    err = info.value
    for text in (str(err), repr(err), "".join(traceback.format_exception(err))):
        assert TOKEN not in text


async def test_a_redirect_to_another_origin_is_not_followed_and_gets_no_token(
    make_server: Callable[[], Server], transports: list[AiohttpTransport]
) -> None:
    storage = make_server()  # stands for the storage origin: it records every request
    storage.route("GET", "/outputs/{name}", json_handler({}))
    await storage.start()
    target = storage.url + "/outputs/a.mp4"

    async def moved(_: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(target)

    api = make_server()
    api.route("GET", "/v1/requests/{rid}/result", moved)
    await api.start()
    transport = AiohttpTransport(api.url, TOKEN)
    transports.append(transport)
    response = await transport.send(Request("GET", "/v1/requests/abc/result"))
    assert response.status == 302 and response.headers["location"] == target
    assert len(api.seen) == 1 and api.seen[0][2]["Authorization"] == f"Bearer {TOKEN}"
    assert storage.seen == []  # never contacted, so it never saw the token
    # The redirect is real: a client that follows it does reach the other origin.
    async with aiohttp.ClientSession() as session, session.get(api.url + "/v1/requests/a/result"):
        pass
    assert len(storage.seen) == 1 and "Authorization" not in storage.seen[0][2]


async def test_a_path_that_could_change_the_origin_is_refused_before_sending(
    make_server: Callable[[], Server], transports: list[AiohttpTransport]
) -> None:
    server = make_server()
    server.route("GET", "/{tail:.*}", json_handler({}))
    await server.start()
    transport = AiohttpTransport(server.url, TOKEN)
    transports.append(transport)
    for path in ("@evil.example/v1/x", "evil.example/v1", ".evil.example/v1", ""):
        with pytest.raises(ValueError):
            await transport.send(Request("GET", path))
    assert server.seen == []


async def test_transport_repr_never_shows_the_token(transports: list[AiohttpTransport]) -> None:
    transport = AiohttpTransport("https://api.example.com", TOKEN)
    transports.append(transport)
    assert TOKEN not in repr(transport) and "idle" in repr(transport)
    assert TOKEN not in str(vars(transport))  # not even in the attribute reprs
    await transport.aclose()
    assert "closed" in repr(transport)


@pytest.mark.parametrize("suffix", ["\n", "\r\nX-Injected: 1", " ", "\x00", "\t"])
def test_a_token_with_whitespace_or_control_characters_is_refused_up_front(suffix: str) -> None:
    with pytest.raises(ValueError) as info:
        AiohttpTransport("https://api.example.com", TOKEN + suffix)
    assert TOKEN not in str(info.value)


async def test_closed_transport_refuses_to_send(transports: list[AiohttpTransport]) -> None:
    transport = AiohttpTransport(f"http://127.0.0.1:{free_closed_port()}", TOKEN)
    await transport.aclose()
    await transport.aclose()  # idempotent
    with pytest.raises(ClientStateError):  # misuse, not a network failure: never retried
        await transport.send(Request("GET", "/v1/x"))


async def test_the_session_is_created_inside_the_loop_and_closed_by_aclose(
    make_server: Callable[[], Server],
) -> None:
    server = make_server()
    server.route("GET", "/v1/x", json_handler({}))
    await server.start()
    transport = AiohttpTransport(server.url, TOKEN)
    assert "idle" in repr(transport)
    await transport.send(Request("GET", "/v1/x"))
    assert "open" in repr(transport)
    await transport.aclose()  # no "Unclosed client session" (warnings are errors here)


# -- MockTransport ----------------------------------------------------------------------


async def test_mock_transport_hands_each_request_to_its_handler() -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(201, {"x": "1"}, b"{}")

    transport = MockTransport(handler)
    response = await transport.send(Request("GET", "/v1/x", params={"a": "b"}))
    assert response == Response(201, {"x": "1"}, b"{}")
    assert seen == [Request("GET", "/v1/x", params={"a": "b"})]
    await transport.aclose()
    assert transport.closed
    with pytest.raises(ClientStateError):
        await transport.send(Request("GET", "/v1/x"))
