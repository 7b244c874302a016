"""The API layer: error mapping, retry rules (safe verbs vs. the paid submit), id safety.

Requests go through the real :class:`AiohttpTransport` into aioresponses, or
through a :class:`MockTransport`. Time is fake: the retry policy's sleep
records each delay and advances the clock the request budget reads.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import aiohttp
import aioresponses.core as aioresponses_core
import pytest
from aioresponses import aioresponses
from yarl import URL

from runcomfy_async import (
    APIStatusError,
    AuthenticationError,
    ClientStateError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobState,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    Request,
    RequestTimeoutError,
    Response,
    RetryPolicy,
    ServerError,
    SubmitOutcomeUnknown,
    TransportError,
)
from runcomfy_async._api import API, check_request_id, map_error
from runcomfy_async._limits import RequestBudget
from runcomfy_async._transport import AiohttpTransport
from runcomfy_async.testing import MockTransport

BASE = "https://api.runcomfy.test"
TOKEN = "rc-test-token-0123456789abcdef"
RID = "3f2b6c1e-9a7d-4e1f-8b2a-0c9d8e7f6a5b"
MODEL = "kling/kling-3.0/pro/text-to-video"
SUBMIT_URL = f"{BASE}/v1/models/{MODEL}"
STATUS_URL = f"{BASE}/v1/requests/{RID}/status"
RESULT_URL = f"{BASE}/v1/requests/{RID}/result"
CANCEL_URL = f"{BASE}/v1/requests/{RID}/cancel"
ACCEPTED = {"request_id": RID, "status_url": STATUS_URL, "result_url": RESULT_URL}
QUEUED = {"request_id": RID, "status": "in_queue", "queue_position": 2}
GATEWAY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n" + "<p>padding</p>\r\n" * 300 + "</body></html>"
)


# -- aioresponses on aiohttp 3.14 ------------------------------------------------------


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.x builds responses without the ``stream_writer`` aiohttp 3.14 requires
    (pnuckowski/aioresponses#289); supply a stand-in for an already-sent request."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", types.SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> Iterator[aioresponses]:
    monkeypatch.setattr(aioresponses_core, "ClientResponse", _CompatResponse)
    with aioresponses() as mocked:
        yield mocked


def sent(http: aioresponses, method: str, url: str) -> list[Any]:
    """The calls aioresponses saw for ``method url``."""
    return list(http.requests.get((method, URL(url)), []))


# -- fake time ----------------------------------------------------------------------------


class FakeTime:
    """A sleep for the retry policy that records each delay and returns at once, and a
    clock for the request budget that runs in real time plus every delay slept so far
    (so the budget's own waits, e.g. a Retry-After pause, pass with the fake sleeps)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.delays: list[float] = []

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.offset += seconds
        await asyncio.sleep(0)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


MakeAPI = Callable[..., API]


@pytest.fixture
async def make_api(fake_time: FakeTime) -> AsyncIterator[MakeAPI]:
    """``make_api(attempts=4, transport=None, rate=None)``: an API over aiohttp or ``transport``."""
    transports: list[Any] = []

    def make(attempts: int = 4, transport: Any = None, rate: float | None = None) -> API:
        transport = transport or AiohttpTransport(BASE, TOKEN)
        transports.append(transport)
        return API(
            transport,
            budget=RequestBudget(rate, clock=fake_time),
            retry=RetryPolicy(attempts=attempts, sleep=fake_time.sleep),
        )

    yield make
    for transport in transports:
        await transport.aclose()


@pytest.fixture
def api(make_api: MakeAPI) -> API:
    return make_api()


class Recorder:
    """A MockTransport handler that answers from a list and records every request."""

    def __init__(self, *answers: Response | BaseException) -> None:
        self.answers = list(answers)
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def json_response(status: int, body: Any, **headers: str) -> Response:
    return Response(status, {k.lower(): v for k, v in headers.items()}, json.dumps(body).encode())


def refused() -> aiohttp.ClientConnectorError:
    key = types.SimpleNamespace(host="api.runcomfy.test", port=443, ssl=True)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))  # type: ignore[arg-type]


# -- the status -> class and error_code -> class tables ---------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidRequestError),
        (401, AuthenticationError),
        (402, InsufficientBalanceError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (422, InvalidRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
        (418, APIStatusError),
    ],
)
async def test_status_code_maps_to_error_class(
    make_api: MakeAPI, http: aioresponses, status: int, cls: type[APIStatusError]
) -> None:
    http.get(STATUS_URL, status=status, payload={"error_message": "nope"})
    with pytest.raises(cls) as info:
        await make_api(attempts=1).status(RID)
    assert type(info.value) is cls
    err = info.value
    assert (err.status_code, err.message, err.request_id) == (status, "nope", RID)
    assert (err.method, err.path) == ("GET", f"/v1/requests/{RID}/status")


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, 400001, InvalidRequestError),
        (400, 400002, InsufficientBalanceError),  # the code decides, not the 400
        (400, 400004, AuthenticationError),
        (401, 400004, AuthenticationError),
        (403, 403001, PermissionDeniedError),  # not a token problem
        (404, 404001, NotFoundError),
        (400, "404001", NotFoundError),  # a code sent as a string
    ],
)
async def test_error_code_maps_to_error_class(
    api: API, http: aioresponses, status: int, code: int | str, cls: type[APIStatusError]
) -> None:
    http.get(STATUS_URL, status=status, payload={"error_code": code, "error_message": "x"})
    with pytest.raises(cls) as info:
        await api.status(RID)
    assert type(info.value) is cls and info.value.error_code == int(code)
    assert len(sent(http, "GET", STATUS_URL)) == 1  # a 4xx is final


async def test_rate_limit_error_carries_retry_after(make_api: MakeAPI, http: aioresponses) -> None:
    http.get(STATUS_URL, status=429, payload={"detail": "slow down"}, headers={"Retry-After": "7"})
    with pytest.raises(RateLimitError) as info:
        await make_api(attempts=1).status(RID)
    assert info.value.retry_after == 7.0 and info.value.message == "slow down"


async def test_a_200_with_a_top_level_error_code_is_an_error(api: API, http: aioresponses) -> None:
    http.get(STATUS_URL, payload={"error_code": 404001, "error_message": "request expired"})
    with pytest.raises(NotFoundError) as info:
        await api.status(RID)
    assert info.value.status_code == 200 and info.value.error_code == 404001
    assert "request expired" in str(info.value)


async def test_a_200_with_an_unknown_error_code_is_a_generic_api_error(
    api: API, http: aioresponses
) -> None:
    http.get(STATUS_URL, payload={"error_code": 999999, "message": "odd"})
    with pytest.raises(APIStatusError) as info:
        await api.status(RID)
    assert type(info.value) is APIStatusError and info.value.error_code == 999999


@pytest.mark.parametrize("code", [None, 0, "0"])
def test_a_200_with_an_empty_error_code_is_a_success(code: Any) -> None:
    response = json_response(200, {**QUEUED, "error_code": code})
    assert map_error(response, method="GET", path="/x") is None


# -- how the message is found --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error_message": "from error_message"}, "from error_message"),
        ({"message": "from message"}, "from message"),
        ({"error_message": "first", "message": "second"}, "first"),
        ({"error_message": "", "message": "fallback"}, "fallback"),
        ({"detail": "a string detail"}, "a string detail"),
        ({"error": "an error string"}, "an error string"),
        ({}, "HTTP 400"),
        (["not", "an", "object"], "HTTP 400"),
    ],
)
def test_message_comes_from_the_body(body: Any, message: str) -> None:
    error = map_error(json_response(400, body), method="GET", path="/x")
    assert error is not None and error.message == message


def test_detail_list_is_rendered_field_by_field() -> None:
    body = {
        "detail": [
            {"loc": ["body", "duration"], "msg": "must be between 3 and 15", "type": "range"},
            {"loc": ["body", "multi_prompt", 0, "prompt"], "msg": "field required"},
            {"message": "no loc here"},
            "a bare string",
        ]
    }
    error = map_error(json_response(422, body), method="POST", path="/v1/models/m")
    assert isinstance(error, InvalidRequestError)
    assert error.message == (
        "body.duration: must be between 3 and 15; body.multi_prompt.0.prompt: field required; "
        "no loc here; a bare string"
    )
    assert error.body == body


def test_detail_list_is_kept_beside_the_message() -> None:
    body = {
        "error_message": "invalid input",
        "detail": [{"loc": ["body", "prompt"], "msg": "must not be empty"}],
    }
    error = map_error(json_response(422, body), method="POST", path="/v1/models/m")
    assert error is not None and error.message == "invalid input: body.prompt: must not be empty"


def test_a_long_detail_list_is_cut_short() -> None:
    body = {"detail": [{"loc": ["body", f"f{i}"], "msg": "bad"} for i in range(50)]}
    error = map_error(json_response(422, body), method="POST", path="/p")
    assert error is not None and "body.f9: bad" in error.message
    assert "body.f10" not in error.message and "40 more" in error.message


def test_server_text_in_messages_is_one_bounded_line() -> None:
    forged = "denied\n2026-01-01 INFO runcomfy_async: all good\r\x1b[2J" + "A" * 100_000
    error = map_error(json_response(400, {"error_message": forged}), method="GET", path="/p")
    assert error is not None
    text = str(error)
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert len(text) < 700 and text.endswith("...")
    assert error.body == {"error_message": forged}  # the body itself is kept as sent


@pytest.mark.parametrize("code", ["\u00b2", "\u2460", "9" * 5000, "12a", "-1", ""])
def test_odd_error_codes_are_ignored_not_fatal(code: str) -> None:
    error = map_error(json_response(400, {"error_code": code}), method="GET", path="/p")
    assert isinstance(error, InvalidRequestError) and error.error_code is None


# -- bodies that are not JSON --------------------------------------------------------------


async def test_html_gateway_page_gives_server_error_with_status_and_excerpt(
    make_api: MakeAPI, http: aioresponses
) -> None:
    http.get(STATUS_URL, status=502, body=GATEWAY_PAGE, content_type="text/html")
    with pytest.raises(ServerError) as info:
        await make_api(attempts=1).status(RID)
    text = str(info.value)
    assert "502" in text and "Bad Gateway" in text
    assert len(text) < 400  # an excerpt, not the whole page
    assert isinstance(info.value.body, str) and len(info.value.body) <= 200


@pytest.mark.parametrize("status", [404, 500])
async def test_empty_error_body_says_so(make_api: MakeAPI, http: aioresponses, status: int) -> None:
    http.get(STATUS_URL, status=status, body=b"")
    with pytest.raises(APIStatusError) as info:
        await make_api(attempts=1).status(RID)
    assert info.value.status_code == status and info.value.message == "empty body"


@pytest.mark.parametrize("body", [b"", b"   ", b"<html>ok</html>", b"{not json", b"\xff\xfe"])
async def test_a_200_that_is_not_json_is_malformed(
    make_api: MakeAPI, http: aioresponses, body: bytes
) -> None:
    http.get(STATUS_URL, body=body)
    with pytest.raises(MalformedResponseError) as info:
        await make_api(attempts=1).status(RID)
    assert info.value.status_code == 200


@pytest.mark.parametrize("body", [[1, 2], "in_queue", 42, None, {"request_id": RID}])
async def test_a_200_json_that_is_not_a_status_object_is_malformed(
    api: API, http: aioresponses, body: Any
) -> None:
    http.get(STATUS_URL, body=json.dumps(body))
    with pytest.raises(MalformedResponseError):
        await api.status(RID)


DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_json_is_treated_as_not_json() -> None:
    error = map_error(Response(502, {}, DEEP), method="GET", path="/p")
    assert isinstance(error, ServerError) and "non-JSON" in error.message


async def test_deeply_nested_200_is_malformed_or_outcome_unknown(make_api: MakeAPI) -> None:
    api = make_api(attempts=1, transport=MockTransport(Recorder(Response(200, {}, DEEP))))
    with pytest.raises(MalformedResponseError):
        await api.status(RID)
    with pytest.raises(SubmitOutcomeUnknown):
        await api.submit(MODEL, {"prompt": "x"})


# -- retries of safe calls -----------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_status_is_retried_after_5xx(
    api: API, http: aioresponses, fake_time: FakeTime, status: int
) -> None:
    http.get(STATUS_URL, status=status, payload={"error_message": "oops"})
    http.get(STATUS_URL, status=status, body="<html>gateway</html>", content_type="text/html")
    http.get(STATUS_URL, payload=QUEUED)
    status_ = await api.status(RID)
    assert status_.state is JobState.QUEUED and status_.queue_position == 2
    assert len(sent(http, "GET", STATUS_URL)) == 3
    assert len(fake_time.delays) == 2


async def test_result_is_retried_after_a_dropped_connection(api: API, http: aioresponses) -> None:
    http.get(RESULT_URL, exception=aiohttp.ServerDisconnectedError())
    http.get(RESULT_URL, exception=aiohttp.ClientOSError(104, "Connection reset by peer"))
    http.get(RESULT_URL, payload={"request_id": RID, "status": "succeeded", "output": {}})
    result = await api.result(RID)
    assert result.status is JobState.SUCCEEDED
    assert len(sent(http, "GET", RESULT_URL)) == 3


async def test_result_is_retried_after_a_read_timeout(api: API, http: aioresponses) -> None:
    http.get(RESULT_URL, exception=aiohttp.SocketTimeoutError())
    http.get(RESULT_URL, payload={"request_id": RID, "status": "in_progress"})
    assert (await api.result(RID)).status is JobState.RUNNING


async def test_result_is_retried_after_a_garbled_200(api: API, http: aioresponses) -> None:
    http.get(RESULT_URL, body=b'{"request_id": "trunc')
    http.get(RESULT_URL, payload={"request_id": RID, "status": "in_progress"})
    assert (await api.result(RID)).status is JobState.RUNNING


async def test_cancel_is_retried_after_429_and_503(
    api: API, http: aioresponses, fake_time: FakeTime
) -> None:
    http.post(CANCEL_URL, status=429, payload={}, headers={"Retry-After": "2"})
    http.post(CANCEL_URL, status=503, payload={})
    http.post(CANCEL_URL, status=202, payload={"request_id": RID, "outcome": "cancelled"})
    outcome = await api.cancel(RID)
    assert outcome.cancelled
    assert len(sent(http, "POST", CANCEL_URL)) == 3
    assert fake_time.delays[0] == 2.0


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422])
async def test_client_errors_are_not_retried(
    api: API, http: aioresponses, fake_time: FakeTime, status: int
) -> None:
    http.get(RESULT_URL, status=status, payload={}, repeat=True)
    with pytest.raises(APIStatusError):
        await api.result(RID)
    assert len(sent(http, "GET", RESULT_URL)) == 1 and fake_time.delays == []


async def test_retries_give_up_after_the_policys_attempts(
    make_api: MakeAPI, http: aioresponses
) -> None:
    http.get(STATUS_URL, status=503, payload={"error_message": "down"}, repeat=True)
    with pytest.raises(ServerError):
        await make_api(attempts=3).status(RID)
    assert len(sent(http, "GET", STATUS_URL)) == 3


async def test_retries_of_transport_errors_end_in_transport_error(
    make_api: MakeAPI, http: aioresponses
) -> None:
    http.get(STATUS_URL, exception=aiohttp.ServerDisconnectedError(), repeat=True)
    with pytest.raises(TransportError):
        await make_api(attempts=2).status(RID)
    assert len(sent(http, "GET", STATUS_URL)) == 2


async def test_a_call_retrying_when_the_transport_closes_stops_with_client_state_error(
    make_api: MakeAPI,
) -> None:
    handler = Recorder(json_response(503, {}))
    transport = MockTransport(handler)
    api = make_api(transport=transport)

    async def close_while_sleeping(_: float) -> None:
        await transport.aclose()  # the client closes during the retry's backoff

    api.retry = RetryPolicy(attempts=5, sleep=close_while_sleeping)
    with pytest.raises(ClientStateError):
        await api.status(RID)
    assert len(handler.requests) == 1  # the closed transport is not retried
    with pytest.raises(ClientStateError):
        await api.submit(MODEL, {"prompt": "x"})


async def test_include_cost_is_asked_for_on_the_result(api: API, http: aioresponses) -> None:
    http.get(
        RESULT_URL + "?include_cost=true",
        payload={"request_id": RID, "status": "succeeded", "cost": 0.84, "output": {}},
    )
    assert (await api.result(RID, include_cost=True)).cost == 0.84


async def test_check_tries_once_for_the_scheduler(api: API, http: aioresponses) -> None:
    http.get(RESULT_URL, status=503, payload={}, repeat=True)
    with pytest.raises(ServerError):
        await api.check(RID)
    assert len(sent(http, "GET", RESULT_URL)) == 1


# -- Retry-After ---------------------------------------------------------------------------


async def test_retry_after_in_seconds_is_honoured(
    api: API, http: aioresponses, fake_time: FakeTime
) -> None:
    http.get(STATUS_URL, status=429, payload={}, headers={"Retry-After": "4"})
    http.get(STATUS_URL, status=503, payload={}, headers={"Retry-After": "9"})
    http.get(STATUS_URL, payload=QUEUED)
    await api.status(RID)
    assert fake_time.delays == [4.0, 9.0]


async def test_retry_after_as_http_date_is_honoured(
    api: API, http: aioresponses, fake_time: FakeTime
) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    http.get(
        STATUS_URL, status=429, payload={}, headers={"Retry-After": format_datetime(when, True)}
    )
    http.get(STATUS_URL, payload=QUEUED)
    await api.status(RID)
    assert len(fake_time.delays) == 1 and 27.0 <= fake_time.delays[0] <= 30.0


async def test_retry_after_is_capped_by_the_policy(
    make_api: MakeAPI, http: aioresponses, fake_time: FakeTime
) -> None:
    api = make_api()
    http.get(STATUS_URL, status=429, payload={}, headers={"Retry-After": "86400"})
    http.get(STATUS_URL, payload=QUEUED)
    await api.status(RID)
    assert fake_time.delays == [api.retry.max_retry_after]


async def test_without_retry_after_the_backoff_is_jittered_and_bounded(
    api: API, http: aioresponses, fake_time: FakeTime
) -> None:
    http.get(STATUS_URL, status=500, payload={}, repeat=True)
    with pytest.raises(ServerError):
        await api.status(RID)
    policy = api.retry
    assert len(fake_time.delays) == policy.attempts - 1
    for n, delay in enumerate(fake_time.delays):
        assert 0.0 <= delay <= min(policy.max_delay, policy.initial_delay * policy.multiplier**n)


async def test_a_429_slows_the_whole_budget_down(api: API, http: aioresponses) -> None:
    http.get(STATUS_URL, status=429, payload={}, headers={"Retry-After": "1"})
    http.get(STATUS_URL, payload=QUEUED)
    await api.status(RID)
    assert api.budget.rate_limited == 1 and api.budget.rate < float("inf")


# -- the paid submit ---------------------------------------------------------------------


async def test_submit_posts_the_payload_once_and_reads_the_answer(
    api: API, http: aioresponses
) -> None:
    http.post(SUBMIT_URL, payload=ACCEPTED)
    answer = await api.submit(MODEL, {"prompt": "a fox"})
    assert answer.request_id == RID and answer.status_url == STATUS_URL
    (call,) = sent(http, "POST", SUBMIT_URL)
    assert call.kwargs["json"] == {"prompt": "a fox"}


@pytest.mark.parametrize(
    ("status", "headers", "tries"), [(429, {}, 3), (503, {"Retry-After": "1"}, 2)]
)
async def test_submit_rejected_with_429_or_503_with_retry_after_is_retried(
    api: API, http: aioresponses, status: int, headers: dict[str, str], tries: int
) -> None:
    for _ in range(tries - 1):
        http.post(SUBMIT_URL, status=status, payload={"error_message": "busy"}, headers=headers)
    http.post(SUBMIT_URL, payload=ACCEPTED)
    assert (await api.submit(MODEL, {"prompt": "a fox"})).request_id == RID
    assert len(sent(http, "POST", SUBMIT_URL)) == tries


async def test_submit_still_rate_limited_after_every_attempt_raises_rate_limit_error(
    make_api: MakeAPI, http: aioresponses
) -> None:
    http.post(SUBMIT_URL, status=429, payload={}, repeat=True)
    with pytest.raises(RateLimitError):
        await make_api(attempts=3).submit(MODEL, {"prompt": "a fox"})
    assert len(sent(http, "POST", SUBMIT_URL)) == 3


async def test_submit_retry_after_is_honoured(
    api: API, http: aioresponses, fake_time: FakeTime
) -> None:
    when = datetime.now(timezone.utc) + timedelta(seconds=20)
    http.post(SUBMIT_URL, status=429, payload={}, headers={"Retry-After": "3"})
    http.post(SUBMIT_URL, status=503, payload={}, headers={"Retry-After": format_datetime(when)})
    http.post(SUBMIT_URL, payload=ACCEPTED)
    await api.submit(MODEL, {"prompt": "a fox"})
    assert fake_time.delays[0] == 3.0 and 17.0 <= fake_time.delays[1] <= 20.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_submit_answered_5xx_is_outcome_unknown_and_not_retried(
    api: API, http: aioresponses, status: int
) -> None:
    http.post(SUBMIT_URL, status=status, body="<html>oops</html>", repeat=True)
    with pytest.raises(SubmitOutcomeUnknown) as info:
        await api.submit(MODEL, {"prompt": "a fox"})
    assert len(sent(http, "POST", SUBMIT_URL)) == 1
    assert info.value.model_id == MODEL and info.value.payload == {"prompt": "a fox"}
    assert isinstance(info.value.__cause__, ServerError)


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientOSError(104, "Connection reset by peer"),
        aiohttp.SocketTimeoutError("read timeout"),
        asyncio.TimeoutError(),
        aiohttp.ClientPayloadError("truncated"),
    ],
)
async def test_submit_dropped_after_sending_is_outcome_unknown_and_not_retried(
    api: API, http: aioresponses, exc: Exception
) -> None:
    http.post(SUBMIT_URL, exception=exc, repeat=True)
    with pytest.raises(SubmitOutcomeUnknown):
        await api.submit(MODEL, {"prompt": "a fox"})
    assert len(sent(http, "POST", SUBMIT_URL)) == 1


@pytest.mark.parametrize("exc", [refused(), aiohttp.ConnectionTimeoutError("connect timeout")])
async def test_submit_that_never_left_is_retried(
    api: API, http: aioresponses, exc: Exception
) -> None:
    http.post(SUBMIT_URL, exception=exc)
    http.post(SUBMIT_URL, payload=ACCEPTED)
    assert (await api.submit(MODEL, {"prompt": "a fox"})).request_id == RID
    assert len(sent(http, "POST", SUBMIT_URL)) == 2


async def test_submit_refused_every_time_raises_transport_error_not_sent(
    make_api: MakeAPI, http: aioresponses, fake_time: FakeTime
) -> None:
    http.post(SUBMIT_URL, exception=refused(), repeat=True)
    with pytest.raises(TransportError) as info:
        await make_api(attempts=3).submit(MODEL, {"prompt": "a fox"})
    assert info.value.request_sent is False
    assert len(sent(http, "POST", SUBMIT_URL)) == 3 and len(fake_time.delays) == 2


async def test_submit_connect_timeout_every_time_is_a_timeout_not_sent(
    make_api: MakeAPI, http: aioresponses
) -> None:
    http.post(SUBMIT_URL, exception=aiohttp.ConnectionTimeoutError(), repeat=True)
    with pytest.raises(RequestTimeoutError) as info:
        await make_api(attempts=2).submit(MODEL, {"prompt": "a fox"})
    assert isinstance(info.value, TimeoutError) and info.value.request_sent is False


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (401, {"error_code": 400004, "error_message": "bad token"}, AuthenticationError),
        (402, {"error_message": "top up"}, InsufficientBalanceError),
        (400, {"error_code": 400002, "error_message": "top up"}, InsufficientBalanceError),
        (400, {"error_code": 400001, "error_message": "no such model"}, InvalidRequestError),
        (422, {"detail": [{"loc": ["body", "prompt"], "msg": "required"}]}, InvalidRequestError),
        (200, {"error_code": 400002, "error_message": "top up"}, InsufficientBalanceError),
    ],
)
async def test_submit_refused_by_the_server_raises_at_once(
    api: API, http: aioresponses, status: int, body: dict[str, Any], cls: type[APIStatusError]
) -> None:
    http.post(SUBMIT_URL, status=status, payload=body, repeat=True)
    with pytest.raises(cls):
        await api.submit(MODEL, {"prompt": "a fox"})
    assert len(sent(http, "POST", SUBMIT_URL)) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html>ok</html>",
        b"",
        b'{"status_url": "no id"}',
        b'{"request_id": ""}',
        b'{"request_id": "../../v1/models/x"}',
        b"[1]",
    ],
)
async def test_submit_accepted_with_an_unreadable_answer_is_outcome_unknown(
    api: API, http: aioresponses, body: bytes
) -> None:
    http.post(SUBMIT_URL, body=body, repeat=True)
    with pytest.raises(SubmitOutcomeUnknown):
        await api.submit(MODEL, {"prompt": "a fox"})
    assert len(sent(http, "POST", SUBMIT_URL)) == 1


async def test_submit_with_an_oversized_answer_is_outcome_unknown(make_api: MakeAPI) -> None:
    handler = Recorder(MalformedResponseError("response body larger than 4 MiB", status_code=200))
    api = make_api(transport=MockTransport(handler))
    with pytest.raises(SubmitOutcomeUnknown):
        await api.submit(MODEL, {"prompt": "a fox"})
    assert len(handler.requests) == 1


# -- ids in URL paths -----------------------------------------------------------------------

BAD_REQUEST_IDS = [
    "",
    "../x",
    "..",
    ".",
    "a/b",
    "a?b",
    "a#b",
    "%2f",
    "a%2Fb",
    "a\nb",
    "abc\n",
    " abc",
    "a b",
    "a\\b",
    "x" * 200,
    None,
    42,
]


@pytest.mark.parametrize("rid", BAD_REQUEST_IDS)
def test_check_request_id_refuses_anything_that_could_change_the_path(rid: Any) -> None:
    with pytest.raises(ValueError):
        check_request_id(rid)


@pytest.mark.parametrize("rid", [RID, "abc", "req_01HZX.2:3-4", "A" * 128])
def test_check_request_id_accepts_real_ids(rid: str) -> None:
    assert check_request_id(rid) == rid


VerbCall = Callable[[API, Any], Awaitable[Any]]
VERBS: dict[str, VerbCall] = {
    "status": lambda api, rid: api.status(rid),
    "result": lambda api, rid: api.result(rid),
    "cancel": lambda api, rid: api.cancel(rid),
    "check": lambda api, rid: api.check(rid),
    "peek_status": lambda api, rid: api.peek_status(rid),
}


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize("rid", ["../x", "a/b", "a?b", "a#b", "%2f", "a\nb", ""])
async def test_bad_request_id_is_refused_before_anything_is_sent(
    make_api: MakeAPI, verb: str, rid: str
) -> None:
    handler = Recorder(json_response(200, QUEUED))
    api = make_api(transport=MockTransport(handler))
    with pytest.raises(ValueError):
        await VERBS[verb](api, rid)
    assert handler.requests == []


@pytest.mark.parametrize(
    "model_id",
    [
        "",
        "../secrets",
        "kling/../../v1/requests/x/cancel",
        "kling/./x",
        "/kling/x",
        "kling/x/",
        "kling//x",
        "kling/x?y=1",
        "kling/x#y",
        "kling/x%2f..",
        "kling x",
        "kling/x\n",
        "@evil.example/x",
    ],
)
async def test_bad_model_id_is_refused_before_anything_is_sent(
    make_api: MakeAPI, model_id: str
) -> None:
    handler = Recorder(json_response(200, ACCEPTED))
    api = make_api(transport=MockTransport(handler))
    with pytest.raises(ValueError):
        await api.submit(model_id, {"prompt": "x"})
    assert handler.requests == []


async def test_model_id_slashes_become_path_segments(make_api: MakeAPI) -> None:
    handler = Recorder(json_response(200, ACCEPTED))
    api = make_api(transport=MockTransport(handler))
    await api.submit("kling/kling-3.0/standard/image-to-video", {"prompt": "x"})
    assert handler.requests[0].path == "/v1/models/kling/kling-3.0/standard/image-to-video"


# -- where the token goes ------------------------------------------------------------------


async def test_every_request_goes_to_the_api_origin_with_the_token(
    api: API, http: aioresponses
) -> None:
    http.post(re.compile(r".*"), payload=ACCEPTED, repeat=True)
    http.get(re.compile(r".*"), payload=QUEUED, repeat=True)
    await api.submit(MODEL, {"prompt": "x"})
    await api.status(RID)
    await api.result(RID)
    await api.cancel(RID)
    assert len(http.requests) == 4
    for (_, url), calls in http.requests.items():
        assert (url.scheme, url.host, url.port) == ("https", "api.runcomfy.test", 443)
        for call in calls:
            assert call.kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}"
            assert call.kwargs["allow_redirects"] is False


def test_api_repr_does_not_show_the_token(api: API) -> None:
    assert TOKEN not in repr(api) and "AiohttpTransport" in repr(api)
