"""The transport seam: the one place that sends bytes to the API.

The client talks to a :class:`Transport`, an object with one method: "send this
request, give me the response". :class:`AiohttpTransport` is the real one (one
``aiohttp.ClientSession``, a bounded keep-alive pool, timeouts, the auth header
for the API origin only); :class:`MockTransport` wraps a plain async function,
so tests can answer requests in memory.

A transport raises :class:`~runcomfy_async.TransportError` (with
``request_sent`` False only when the request certainly never left) or
:class:`~runcomfy_async.RequestTimeoutError`, and
:class:`~runcomfy_async.ClientStateError` once closed; it never retries and
never maps status codes: that is ``_api.py``'s job.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import attrs

from ._errors import (
    ClientStateError,
    MalformedResponseError,
    RequestTimeoutError,
    TransportError,
)
from ._version import __version__

__all__ = [
    "BALANCE_URL",
    "DEFAULT_BASE_URL",
    "AiohttpTransport",
    "MockTransport",
    "Request",
    "Response",
    "Transport",
    "check_base_url",
    "origin_of",
    "token_origins",
]

USER_AGENT = f"runcomfy-async/{__version__}"

#: The largest API body we read (status and result bodies are a few KB); a
#: larger one is an error, so a broken or hostile server cannot exhaust memory.
MAX_BODY_BYTES = 4 * 1024 * 1024

# Request bodies above this (inline data: URIs) are sent from a buffer.
_LARGE_BODY = 1024 * 1024


#: The Model API, where every job call goes.
DEFAULT_BASE_URL = "https://model-api.runcomfy.net"

#: The wallet endpoint: another RunComfy origin, same token (see :func:`token_origins`).
BALANCE_URL = "https://api.runcomfy.net/prod/v2/balance"


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, default ports dropped."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"https": 443, "http": 80}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def token_origins(base_url: str, balance_url: str | None = None) -> frozenset[str]:
    """The allow-list: the only origins the API token may be sent to.

    The Model API origin (``base_url``'s, which is an emulator's in tests) and
    the balance endpoint's origin; nothing else, whatever a response says
    (output downloads go to the storage host without the token).
    """
    origins = {origin_of(base_url)}
    if balance_url is not None:
        origins.add(origin_of(balance_url))
    return frozenset(origins)


@attrs.frozen
class Request:
    """One API request: ``path`` is relative to the base URL (``/v1/...``).

    ``url``, when set, is the absolute URL to use instead (the balance lives
    on another origin); the transport refuses one whose origin is not on its
    allow-list. ``read_timeout`` overrides the transport's for this request.
    """

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str] = attrs.field(factory=dict)
    url: str | None = None
    read_timeout: float | None = None


@attrs.frozen
class Response:
    """One API response: status, headers (lower-cased names) and the raw body."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""


class Transport(Protocol):
    """Sends one request and returns its response; no retries, no status mapping."""

    async def send(self, request: Request) -> Response:
        """Send ``request``; raise TransportError if no response came back.

        Once closed, raise ClientStateError.
        """
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...


def check_base_url(base_url: str, *, allow_insecure_http: bool = False) -> str:
    """Validate the API base URL and return it without a trailing slash.

    It must be ``https``, or plain ``http`` on a loopback address (the local
    emulator); ``allow_insecure_http=True`` lifts that for other hosts (e.g. a
    test network), at the cost of sending the token in clear text.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("base_url must not carry a query, fragment or credentials")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ValueError(
            f"base_url {base_url!r} is plain http on a non-loopback host: the token would "
            "travel in clear text; use https, or pass allow_insecure_http=True"
        )
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _task_is_being_cancelled() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    # Without Task.cancelling (3.10) we cannot tell; the close is the likely cause.
    return bool(cancelling()) if cancelling is not None else False


class _Secret:
    """Holds the token; its repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<token ***>"

    __str__ = __repr__


class AiohttpTransport:
    """The real transport: one aiohttp session with a bounded keep-alive pool.

    The session is created on first use, inside the running loop. The
    ``Authorization`` header is attached per request; a request may only go
    to an origin of :func:`token_origins` (the API's, plus ``balance_url``'s)
    and redirects are not followed, so the token cannot leak to another.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        pool_size: int = 64,
        max_body_bytes: int = MAX_BODY_BYTES,
        balance_url: str | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._origins = token_origins(self._base_url, balance_url)
        self._connect_timeout = connect_timeout
        if token and any(not c.isprintable() or c.isspace() for c in token):
            # Refused here, not by aiohttp at the first request; never echoed.
            raise ValueError(
                "the API token contains whitespace or a control character (a line "
                "break from the file or variable it was read from?)"
            )
        self._token = _Secret(token) if token else None
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._pool_size = pool_size
        self._max_body = max_body_bytes
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._session else "idle")
        return f"<AiohttpTransport {self._base_url} {state}>"

    @property
    def has_token(self) -> bool:
        """Whether a token was configured (its value is never exposed)."""
        return self._token is not None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            # Misuse, not a network failure: nothing retries it.
            raise ClientStateError("the transport is closed (the client was closed)")
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, limit_per_host=self._pool_size, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                raise_for_status=False,
            )
        return self._session

    async def send(self, request: Request) -> Response:
        """Send one request to the API origin and read its (size-capped) body."""
        if not request.path.startswith("/"):
            # base_url + "@other.host/..." would send the token to another origin.
            raise ValueError(f"request path must start with '/', got {request.path!r}")
        url = self._base_url + request.path
        if request.url is not None:
            url = request.url
            if origin_of(url) not in self._origins:
                # Not sent at all: the token goes to the allow-list and nowhere else.
                raise ValueError(
                    f"refusing to send a request to {origin_of(url)}: not one of the "
                    f"origins allowed to see the API token ({', '.join(sorted(self._origins))})"
                )
        session = self._get_session()
        headers = {}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        timeout = None
        if request.read_timeout is not None:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=self._connect_timeout,
                sock_connect=self._connect_timeout,
                sock_read=request.read_timeout,
            )
        body: dict[str, Any] = {"json": request.json}
        if request.json is not None:
            encoded = json.dumps(request.json).encode()
            if len(encoded) > _LARGE_BODY:
                # A body with inline data: URIs: streamed from a buffer, as
                # aiohttp asks, instead of handed over as one raw bytes object.
                headers["Content-Type"] = "application/json"
                body = {"data": io.BytesIO(encoded)}
        try:
            async with session.request(
                request.method,
                url,
                params=dict(request.params) or None,
                headers=headers,
                allow_redirects=False,
                **body,
                **({"timeout": timeout} if timeout is not None else {}),
            ) as resp:
                return Response(
                    status=resp.status,
                    headers={k.lower(): v for k, v in resp.headers.items()},
                    body=await self._read_body(resp),
                )
        except aiohttp.ConnectionTimeoutError as exc:
            raise RequestTimeoutError(
                f"connect timeout on {request.method} {request.path}", request_sent=False
            ) from exc
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise RequestTimeoutError(f"read timeout on {request.method} {request.path}") from exc
        except aiohttp.ClientConnectorError as exc:
            # Refused, DNS, TLS handshake: nothing was sent.
            raise TransportError(
                f"cannot connect to {exc.host}:{exc.port} for {request.method} {request.path}: "
                f"{exc.os_error}",
                request_sent=False,
            ) from None
        except aiohttp.ClientError as exc:
            # Dropped connection, reset, bad framing: the request may have arrived.
            raise TransportError(
                f"connection failed during {request.method} {request.path}: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        except asyncio.CancelledError:
            # Closing the session cancels requests waiting for a pooled
            # connection; that is our close, not a cancellation of the caller.
            if self._closed and not _task_is_being_cancelled():
                raise ClientStateError(
                    f"the client was closed while {request.method} {request.path} waited "
                    "for a connection"
                ) from None
            raise

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        # StreamReader.read(n) returns what has arrived so far, not n bytes:
        # read until EOF, stopping as soon as the cap is passed.
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await resp.content.read(self._max_body + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_body:
                raise MalformedResponseError(
                    f"response body larger than {self._max_body} bytes", status_code=resp.status
                )

    async def aclose(self) -> None:
        """Close the session and its connections. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()


Handler = Callable[[Request], Awaitable[Response]]


class MockTransport:
    """A transport that answers every request with an async function: for tests."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.closed = False

    async def send(self, request: Request) -> Response:
        """Hand ``request`` to the handler and return its response."""
        if self.closed:
            raise ClientStateError("the transport is closed (the client was closed)")
        return await self._handler(request)

    async def aclose(self) -> None:
        """Mark the transport closed."""
        self.closed = True
