"""Property-based fuzzing of everything that reads what the server sends.

The promise under test: whatever bytes come back, with whatever status code,
the response parser returns a model or raises one of our own errors (a
:class:`RunComfyError` subclass), never a ``KeyError``, ``TypeError``,
``RecursionError`` or any other exception a caller could not reasonably catch.

Three layers are fed: ``_api.map_error`` (status code + body -> error or None),
the ``_models.parse_*`` functions (decoded JSON -> model), and the API layer
itself over a ``MockTransport`` answering with arbitrary status codes, headers
and bodies. Hostile corners the strategies rarely reach (odd digits in ``error_code``,
JSON nested 100,000 deep, numbers too large for a float) have their own tests
at the bottom.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from runcomfy_async import (
    APIStatusError,
    CancelOutcome,
    MalformedResponseError,
    RateLimitError,
    Request,
    Response,
    Result,
    RetryPolicy,
    RunComfyError,
    ServerError,
    Status,
)
from runcomfy_async._api import API, map_error
from runcomfy_async._limits import RequestBudget
from runcomfy_async._models import (
    JobState,
    SubmitResponse,
    parse_cancel,
    parse_result,
    parse_status,
    parse_submit,
)
from runcomfy_async._retry import parse_retry_after
from runcomfy_async.testing import MockTransport

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- strategies -------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=24)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)

STATES = [
    "in_queue",
    "queued",
    "pending",
    "in_progress",
    "running",
    "processing",
    "completed",
    "succeeded",
    "success",
    "failed",
    "error",
    "cancelled",
    "canceled",
    "COMPLETED",
    " Succeeded ",
    "",
    "weird",
]
states = st.sampled_from(STATES) | json_values
error_codes = (
    st.sampled_from([400001, 400002, 400004, 403001, 404001, 422001, 0, "0", "404001", " 400004 "])
    | st.integers()
    | st.text(max_size=8)
    | json_values
)
urls = st.sampled_from(["https://cdn.example/a.mp4", "", "not a url"]) | json_values
request_ids = (
    st.sampled_from(["req-1", "../../x", "a/b", "a?b", "a#b", "a%2fb", "a\nb", ""]) | json_values
)

# Dicts shaped like the API's answers, every field optional and any type.
api_dicts = st.fixed_dictionaries(
    {},
    optional={
        "request_id": request_ids,
        "status": states,
        "queue_position": st.integers() | json_values,
        "output": st.fixed_dictionaries(
            {},
            optional={"video": urls, "image": urls, "videos": st.lists(urls), "images": urls},
        )
        | json_values,
        "error": json_values,
        "created_at": st.sampled_from(["2026-01-01T00:00:00Z", "yesterday"]) | json_values,
        "finished_at": st.sampled_from(["2026-01-01T00:01:00.000Z", "tomorrow"]) | json_values,
        "cost": st.floats() | json_values,
        "outcome": st.sampled_from(["cancelled", "canceled", "not_cancellable"]) | json_values,
        "error_code": error_codes,
        "error_message": json_values,
        "message": json_values,
        "detail": json_values
        | st.lists(
            st.fixed_dictionaries({}, optional={"loc": json_values, "msg": json_values}),
            max_size=3,
        ),
        "status_url": urls,
        "result_url": urls,
        "cancel_url": urls,
    },
)
bodies_json = api_dicts | json_values


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


raw_bodies = st.one_of(
    bodies_json.map(_dump),
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            b'{"request_id": "x", "status": "succeeded"',  # truncated
            b"null",
            b"NaN",
            b"\xff\xfe\x00\x00",
            b'{"status": "succeeded", "output": {"video": "https://x/a.mp4"}}\x00garbage',
        ]
    ),
    bodies_json.map(lambda v: json.dumps(v).encode("utf-16")),
)
status_codes = st.sampled_from(
    [200, 201, 202, 204, 301, 302, 400, 401, 402, 403, 404]
) | st.integers(100, 599)
retry_after_values = (
    st.none()
    | st.text(max_size=30)
    | st.sampled_from(["0", "1", "2.5", "-3", "nan", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
)


# -- map_error ----------------------------------------------------------------------------


@SETTINGS
@given(status=status_codes, body=raw_bodies, retry_after=retry_after_values)
def test_map_error_returns_none_or_our_error(
    status: int, body: bytes, retry_after: str | None
) -> None:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    error = map_error(Response(status, headers, body), method="GET", path="/v1/requests/x/status")
    if error is None:
        assert 200 <= status < 300
        return
    assert isinstance(error, APIStatusError)
    assert error.status_code == status
    repr(error)
    # What the server said reaches logs through this text: one line, bounded.
    text = str(error)
    assert "\n" not in text and "\r" not in text and len(text) < 1000
    if not 200 <= status < 300:
        if status == 429:
            assert isinstance(error, RateLimitError)
            assert error.retry_after is None or error.retry_after >= 0
        elif status >= 500:
            assert isinstance(error, APIStatusError)


@SETTINGS
@given(status=st.integers(500, 599), body=st.sampled_from([b"", b"<html>oops</html>", b"\xff"]))
def test_non_json_5xx_is_a_server_error_with_an_excerpt(status: int, body: bytes) -> None:
    error = map_error(Response(status, {}, body), method="GET", path="/p")
    assert isinstance(error, ServerError)
    assert len(str(error)) < 400


@SETTINGS
@given(body=api_dicts)
def test_a_2xx_is_an_error_only_when_it_carries_an_error_code(body: dict[str, Any]) -> None:
    error = map_error(Response(200, {}, _dump(body)), method="GET", path="/p")
    flagged = body.get("error_code") not in (None, 0, "0")
    assert (error is not None) == flagged


# -- the parse_* functions -------------------------------------------------------------------


@SETTINGS
@given(body=bodies_json)
def test_parse_status_returns_a_status_or_malformed(body: Any) -> None:
    try:
        status = parse_status(body, "req-1")
    except MalformedResponseError:
        return
    assert isinstance(status, Status)
    assert isinstance(status.state, JobState)
    assert status.queue_position is None or isinstance(status.queue_position, int)
    assert isinstance(status.request_id, str)
    repr(status)


@SETTINGS
@given(body=bodies_json)
def test_parse_result_returns_a_result_or_malformed(body: Any) -> None:
    try:
        result = parse_result(body, "req-1")
    except MalformedResponseError:
        return
    assert isinstance(result, Result)
    assert isinstance(result.status, JobState)
    # Every derived view is safe to read whatever the body held.
    assert all(isinstance(u, str) for u in result.urls)
    assert result.video is None or isinstance(result.video, str)
    assert result.cost is None or isinstance(result.cost, float)
    assert isinstance(result._repr_html_(), str)
    repr(result)


@SETTINGS
@given(body=bodies_json)
def test_parse_cancel_returns_an_outcome_or_malformed(body: Any) -> None:
    try:
        outcome = parse_cancel(body, "req-1")
    except MalformedResponseError:
        return
    assert isinstance(outcome, CancelOutcome)
    assert isinstance(outcome.cancelled, bool)


@SETTINGS
@given(body=bodies_json)
def test_parse_submit_returns_a_submit_response_or_malformed(body: Any) -> None:
    try:
        answer = parse_submit(body)
    except MalformedResponseError:
        return
    assert isinstance(answer, SubmitResponse)
    assert isinstance(answer.request_id, str) and answer.request_id


@SETTINGS
@given(value=retry_after_values)
def test_parse_retry_after_never_raises(value: str | None) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


# -- the API layer over a MockTransport -----------------------------------------------------


def _api(status: int, headers: dict[str, str], body: bytes, *, attempts: int) -> API:
    async def answer(request: Request) -> Response:
        return Response(status, headers, body)

    # A fresh, unlimited budget: a 429 in one example must not pause the next.
    return API(
        MockTransport(answer), budget=RequestBudget(None), retry=RetryPolicy.no_wait(attempts)
    )


CALLS = ["status", "result", "cancel", "check", "peek_status", "submit"]
EXPECTED = {
    "status": Status,
    "result": Result,
    "cancel": CancelOutcome,
    "check": Result,
    "peek_status": Status,
    "submit": SubmitResponse,
}


async def _call(api: API, name: str) -> Any:
    if name == "submit":
        return await api.submit("kling/kling-3.0/pro/text-to-video", {"prompt": "a fox"})
    if name == "result":
        return await api.result("req-1", include_cost=True)
    method = getattr(api, name)
    return await method("req-1")


@SETTINGS
@given(call=st.sampled_from(CALLS), status=status_codes, body=raw_bodies)
@example(call="submit", status=200, body=b"<html>ok</html>")
@example(call="submit", status=500, body=b"")
@example(call="status", status=200, body=b'{"error_code": 404001, "message": "gone"}')
async def test_api_calls_return_a_model_or_raise_our_error(
    call: str, status: int, body: bytes
) -> None:
    # A tiny Retry-After: a 429 pauses the shared budget for that long.
    api = _api(status, {"retry-after": "0.001"}, body, attempts=2)
    try:
        value = await _call(api, call)
    except RunComfyError as exc:
        str(exc), repr(exc)
        return
    assert isinstance(value, EXPECTED[call])
    assert 200 <= status < 300


@SETTINGS
@given(call=st.sampled_from(CALLS), retry_after=retry_after_values, body=raw_bodies)
async def test_a_429_with_any_retry_after_raises_our_error(
    call: str, retry_after: str | None, body: bytes
) -> None:
    headers = {} if retry_after is None else {"retry-after": retry_after}
    api = _api(429, headers, body, attempts=1)  # one try: the pause is never waited out
    with pytest.raises(RunComfyError) as info:
        await _call(api, call)
    if call != "submit":
        assert isinstance(info.value, RateLimitError)


# -- hostile corners (each was a bug once) -------------------------------------------------


@pytest.mark.parametrize(
    "code", ["\u00b2", "\u2460", "9" * 5000], ids=["superscript-two", "circled-one", "5000-digits"]
)
def test_map_error_survives_odd_digit_error_codes(code: str) -> None:
    body = _dump({"error_code": code, "error_message": "nope"})
    error = map_error(Response(400, {}, body), method="GET", path="/p")
    assert isinstance(error, APIStatusError)
    assert error.error_code is None


DEEP = [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000]


@pytest.mark.parametrize("body", DEEP, ids=["array", "object"])
def test_map_error_survives_deeply_nested_json(body: bytes) -> None:
    error = map_error(Response(502, {}, body), method="GET", path="/p")
    assert isinstance(error, ServerError)


@pytest.mark.parametrize("call", ["status", "result", "submit"])
async def test_api_survives_deeply_nested_json(call: str) -> None:
    api = _api(200, {}, DEEP[0], attempts=1)
    with pytest.raises(RunComfyError):
        await _call(api, call)


@pytest.mark.parametrize("value", ["inf", "Infinity", "-inf", "nan", "1e400"])
def test_parse_retry_after_refuses_non_finite_values(value: str) -> None:
    assert parse_retry_after(value) is None


async def test_a_huge_retry_after_does_not_stall_the_client() -> None:
    answers = [
        Response(429, {"retry-after": "99999999"}, b'{"message": "slow down"}'),
        Response(200, {}, b'{"request_id": "req-1", "status": "in_queue"}'),
    ]

    async def answer(request: Request) -> Response:
        return answers.pop(0)

    retry = RetryPolicy.no_wait(attempts=2)
    retry = RetryPolicy(attempts=2, max_retry_after=0.01, sleep=retry.sleep)
    api = API(MockTransport(answer), budget=RequestBudget(None), retry=retry)
    status = await asyncio.wait_for(api.status("req-1"), 2)
    assert status.state is JobState.QUEUED


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (parse_result, {"status": "succeeded", "output": {"video": "v"}, "cost": 10**400}),
        (parse_status, {"status": "in_queue", "queue_position": float("inf")}),
    ],
    ids=["huge-cost", "inf-queue-position"],
)
def test_informational_fields_are_read_leniently(parse: Any, body: dict[str, Any]) -> None:
    model = parse(body, "req-1")
    assert model.request_id == "req-1"
    assert getattr(model, "cost", None) is None
    assert getattr(model, "queue_position", None) is None


@pytest.mark.parametrize("value", [None, "", 5, True, {"a": 1}, [1]], ids=repr)
def test_parse_submit_refuses_a_request_id_that_is_not_a_non_empty_string(value: Any) -> None:
    with pytest.raises(MalformedResponseError):
        parse_submit({"request_id": value})
