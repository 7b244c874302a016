"""The API protocol over a transport: routes, retries, the request budget, error mapping.

Safe calls (status, result, cancel) are retried on transport failures, 429 and
5xx, with backoff and ``Retry-After``. A submit is a paid, non-idempotent POST:
it is retried only when it certainly did not land; when the outcome is unknown
it raises :class:`~runcomfy_async.SubmitOutcomeUnknown` instead. Which is
which is decided in ``_retry.py``, not here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

from ._errors import (
    APIStatusError,
    AuthenticationError,
    InsufficientBalanceError,
    InvalidRequestError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RunComfyError,
    ServerError,
    SubmitOutcomeUnknown,
    TransportError,
)
from ._limits import Budget, Priority, Ticket
from ._models import (
    CancelOutcome,
    Result,
    Status,
    SubmitResponse,
    parse_cancel,
    parse_result,
    parse_status,
    parse_submit,
)
from ._retry import (
    RetryPolicy,
    Verdict,
    cap_retry_after,
    classify_safe,
    classify_submit,
    parse_retry_after,
)
from ._transport import Request, Response, Transport

__all__ = ["API", "SUBMIT_READ_TIMEOUT", "check_request_id", "map_error"]

logger = logging.getLogger("runcomfy_async")

# Request ids are opaque, but they go into a URL path: allow the characters
# ids are made of (UUIDs, slugs) and nothing that could change the path.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MODEL_ID = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*")

#: Seconds a submit POST may wait for its answer (RunComfy's ComfyUI nodes: 90 s).
SUBMIT_READ_TIMEOUT = 90.0


def check_request_id(request_id: object) -> str:
    """Return ``request_id`` if it is safe in a URL path; raise ValueError otherwise."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise ValueError(f"not a valid request id: {request_id!r}")
    return request_id


def _check_model_id(model_id: str) -> str:
    if not _MODEL_ID.fullmatch(model_id) or any(p in (".", "..") for p in model_id.split("/")):
        raise ValueError(f"not a valid model id: {model_id!r}")
    return model_id


_MESSAGE_LIMIT = 500


def _one_line(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """Server text made fit for our messages: one printable line, at most ``limit`` chars.

    Messages end up in logs: a server must not be able to forge log lines
    (CR/LF, escape sequences) or flood them.
    """
    text = "".join(c if c.isprintable() else " " for c in text[: limit * 4])
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _excerpt(body: bytes, limit: int = 200) -> str:
    return _one_line(body[: limit * 4].decode("utf-8", errors="replace"), limit)


def _decode(body: bytes) -> Any:
    """Parse a JSON body; raise ValueError when it is not JSON."""
    if not body.strip():
        raise ValueError("empty body")
    try:
        return json.loads(body)
    except RecursionError:
        # Absurdly deep nesting is not an answer we can use.
        raise ValueError("JSON nested too deeply") from None


def _error_fields(data: Any) -> tuple[int | None, str | None]:
    if not isinstance(data, dict):
        return None, None
    code: int | None = None
    raw_code = data.get("error_code")
    if isinstance(raw_code, int) and not isinstance(raw_code, bool):
        code = raw_code
    elif isinstance(raw_code, str):
        text = raw_code.strip()
        # isdigit() admits "²" and "①", which int() refuses; codes are short.
        if text.isascii() and text.isdigit() and len(text) <= 18:
            code = int(text)
    message = data.get("error_message") or data.get("message")
    if not isinstance(message, str) or not message:
        message = None
    detail = data.get("detail")
    rendered: str | None = None
    if isinstance(detail, str) and detail:
        rendered = detail
    elif isinstance(detail, list) and detail:
        rendered = "; ".join(_detail_item(d) for d in detail[:10])
        if len(detail) > 10:
            rendered += f"; ... ({len(detail) - 10} more)"
    if message is None:
        message = rendered
    elif rendered and rendered != message:
        # A 422 says "invalid input" in its message and which field in its
        # detail: the caller needs both.
        message = f"{message}: {rendered}"
    if message is None and isinstance(data.get("error"), str) and data["error"]:
        message = data["error"]
    return code, _one_line(message) if message else None


def _detail_item(item: Any) -> str:
    if isinstance(item, dict):
        loc = item.get("loc")
        where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
        msg = item.get("msg") or item.get("message") or ""
        return f"{where}: {msg}" if where else str(msg)
    return str(item)


_BY_CODE: dict[int, type[APIStatusError]] = {
    400001: InvalidRequestError,
    400002: InsufficientBalanceError,
    400004: AuthenticationError,
    403001: PermissionDeniedError,
    404001: NotFoundError,
}
_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientBalanceError,
    403: AuthenticationError,
    404: NotFoundError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def map_error(
    response: Response,
    *,
    method: str,
    path: str,
    request_id: str | None = None,
) -> APIStatusError | None:
    """The error an answer stands for, or None if it is a success.

    A 2xx is an error only when its JSON body carries a top-level ``error_code``.
    """
    try:
        data: Any = _decode(response.body)
    except ValueError:
        data = None
    if 200 <= response.status < 300:
        if isinstance(data, dict) and data.get("error_code") not in (None, 0, "0"):
            code, message = _error_fields(data)
            cls = _BY_CODE.get(code or 0, APIStatusError)
            return cls(
                message or "error in a 200 answer",
                status_code=response.status,
                error_code=code,
                body=data,
                request_id=request_id,
                method=method,
                path=path,
            )
        return None
    code, message = _error_fields(data)
    if data is None:
        body: Any = _excerpt(response.body)
        message = message or (f"non-JSON body: {body}" if body else "empty body")
    else:
        body = data
    by_status = _BY_STATUS.get(response.status)
    if code is not None and code in _BY_CODE and response.status not in (429,):
        by_status = _BY_CODE[code]
    cls = by_status or (ServerError if response.status >= 500 else APIStatusError)
    kw: dict[str, Any] = {
        "status_code": response.status,
        "error_code": code,
        "body": body,
        "request_id": request_id,
        "method": method,
        "path": path,
    }
    if cls is RateLimitError:
        return RateLimitError(
            message or "rate limited",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            **kw,
        )
    if cls is ServerError:
        # Retry-After is honoured wherever it appears; a 503 often sends one.
        return ServerError(
            message or f"HTTP {response.status}",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            **kw,
        )
    return cls(message or f"HTTP {response.status}", **kw)


class API:
    """The four API calls over a transport, sharing one request budget and retry policy."""

    def __init__(self, transport: Transport, *, budget: Budget, retry: RetryPolicy) -> None:
        self.transport = transport
        self.budget = budget
        self.retry = retry

    def __repr__(self) -> str:
        return f"<API transport={self.transport!r} budget={self.budget!r}>"

    async def submit(
        self,
        model_id: str,
        payload: Mapping[str, Any],
        *,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> SubmitResponse:
        """Submit a paid job once; retried only where it certainly did not land.

        ``before_send`` is awaited once the request holds its budget token and
        immediately before each attempt's bytes may leave: a journal marks its
        row "submitting" there, so only a POST that may have been sent can
        become an unknown outcome after a crash.
        """
        path = "/v1/models/" + quote(_check_model_id(model_id), safe="/")
        # RunComfy's own nodes give a submit 90 s to answer: a slow answer must
        # not turn a job that was created into an "unknown outcome".
        request = Request("POST", path, json=dict(payload), read_timeout=SUBMIT_READ_TIMEOUT)
        for retry_number in range(self.retry.attempts):
            last = retry_number == self.retry.attempts - 1
            await self.budget.acquire(Priority.SUBMIT)
            if before_send is not None:
                await before_send()
            error: RunComfyError | None
            try:
                response = await self.transport.send(request)
            except (MalformedResponseError, TransportError) as exc:
                error = exc
            else:
                error = map_error(response, method="POST", path=path)
                if error is None:
                    self.budget.on_success()
                    return self._accepted(model_id, payload, response)
                self._note_status(error)
            decision = classify_submit(error)
            if decision.verdict is Verdict.UNKNOWN:
                raise SubmitOutcomeUnknown(
                    f"submit to {model_id} {_unknown_reason(error)}. "
                    "It was not resubmitted, to avoid paying twice.",
                    model_id=model_id,
                    payload=dict(payload),
                ) from error
            if not decision.retry or last:
                raise error
            logger.info("submit to %s certainly not accepted (%s); retrying", model_id, error)
            await self.retry.sleep(self.retry.delay(retry_number, decision.retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _accepted(model_id: str, payload: Mapping[str, Any], response: Response) -> SubmitResponse:
        try:
            data = _decode(response.body)
        except ValueError:
            raise SubmitOutcomeUnknown(
                f"submit to {model_id} was answered {response.status} with a body "
                f"that is not JSON ({_excerpt(response.body)!r}): a job may exist",
                model_id=model_id,
                payload=dict(payload),
            ) from None
        try:
            answer = parse_submit(data, status_code=response.status)
            # The id goes into every later URL: one we cannot use is no id.
            check_request_id(answer.request_id)
        except (MalformedResponseError, ValueError) as exc:
            raise SubmitOutcomeUnknown(
                f"submit to {model_id} was accepted but the answer is unreadable ({exc}); "
                "a job may exist",
                model_id=model_id,
                payload=dict(payload),
            ) from exc
        return answer

    async def status(self, request_id: str) -> Status:
        """The request's current state (retried: safe)."""
        rid = check_request_id(request_id)
        data = await self._safe("GET", f"/v1/requests/{rid}/status", rid, Priority.CHECK)
        return parse_status(data, rid)

    async def result(self, request_id: str, *, include_cost: bool = False) -> Result:
        """The request's result, or its current state while unfinished (retried: safe)."""
        rid = check_request_id(request_id)
        params = {"include_cost": "true"} if include_cost else {}
        data = await self._safe("GET", f"/v1/requests/{rid}/result", rid, Priority.CHECK, params)
        return parse_result(data, rid)

    async def reserve(self, priority: Priority = Priority.CHECK) -> Ticket:
        """Take one request-budget token now, for a single-try call made later."""
        await self.budget.acquire(priority)
        return Ticket()

    async def check(
        self, request_id: str, *, include_cost: bool = False, ticket: Ticket | None = None
    ) -> Result:
        """One try of the result route, for the scheduler, which retries on its own clock.

        ``ticket``: a token taken earlier with :meth:`reserve`, spent by this call.
        """
        rid = check_request_id(request_id)
        params = {"include_cost": "true"} if include_cost else {}
        path = f"/v1/requests/{rid}/result"
        data = await self._once("GET", path, rid, Priority.CHECK, params, ticket=ticket)
        return parse_result(data, rid)

    async def peek_status(self, request_id: str, *, ticket: Ticket | None = None) -> Status:
        """One try of the status route (it carries ``queue_position``), for the scheduler."""
        rid = check_request_id(request_id)
        path = f"/v1/requests/{rid}/status"
        data = await self._once("GET", path, rid, Priority.CHECK, ticket=ticket)
        return parse_status(data, rid)

    async def cancel(self, request_id: str) -> CancelOutcome:
        """Ask the server to cancel a queued request (retried: safe)."""
        rid = check_request_id(request_id)
        data = await self._safe("POST", f"/v1/requests/{rid}/cancel", rid, Priority.CANCEL)
        return parse_cancel(data, rid)

    # -- catalog and balance (GET JSON, safe to retry) ---------------------------

    async def get_json(
        self, path: str, params: Mapping[str, str] | None = None, *, url: str | None = None
    ) -> Any:
        """GET ``path`` (or the absolute ``url``, whose origin the transport must allow) as JSON.

        Retried like status and result: a GET changes nothing. For the model
        catalog and the balance.
        """
        return await self._safe("GET", path, None, Priority.CHECK, params, url=url)

    def _note_status(self, error: APIStatusError) -> None:
        """Tell the budget what an error answer says of the server's limit."""
        if isinstance(error, RateLimitError):
            # One absurd Retry-After must not stall every request of the client.
            self.budget.on_rate_limited(
                cap_retry_after(error.retry_after, self.retry.max_retry_after)
            )
        else:
            self.budget.on_success()

    async def _once(
        self,
        method: str,
        path: str,
        request_id: str | None,
        priority: Priority,
        params: Mapping[str, str] | None = None,
        *,
        ticket: Ticket | None = None,
        url: str | None = None,
    ) -> Any:
        if ticket is None:
            await self.budget.acquire(priority)
        else:
            ticket.spend()
        response = await self.transport.send(Request(method, path, params=params or {}, url=url))
        error = map_error(response, method=method, path=path, request_id=request_id)
        if error is not None:
            self._note_status(error)
            raise error
        self.budget.on_success()
        try:
            return _decode(response.body)
        except ValueError:
            raise MalformedResponseError(
                f"{method} {path} answered with a body that is not JSON",
                status_code=response.status,
                excerpt=_excerpt(response.body),
            ) from None

    async def _safe(
        self,
        method: str,
        path: str,
        request_id: str | None,
        priority: Priority,
        params: Mapping[str, str] | None = None,
        *,
        url: str | None = None,
    ) -> Any:
        for retry_number in range(self.retry.attempts):
            try:
                return await self._once(method, path, request_id, priority, params, url=url)
            except RunComfyError as exc:
                decision = classify_safe(exc)
                if not decision.retry or retry_number == self.retry.attempts - 1:
                    raise
                delay = self.retry.delay(retry_number, decision.retry_after)
                logger.info(
                    "%s %s failed (%s); retry %d in %.2fs",
                    method,
                    path,
                    type(exc).__name__,
                    retry_number + 1,
                    delay,
                )
                await self.retry.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


def _unknown_reason(error: RunComfyError) -> str:
    if isinstance(error, MalformedResponseError):
        return f"got an unreadable answer ({error}); a job may exist"
    if isinstance(error, TransportError):
        return f"may or may not have created a job: {error}"
    return f"was answered {error}; a job may or may not exist"
