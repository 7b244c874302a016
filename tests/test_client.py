"""RunComfyClient against the emulator on a real loopback port, and its lifecycle.

Each emulator's generation times are scaled down (``time_scale``) and the
client's poll policy gets the same scale, so a two-minute clip takes a tenth
of a second and the scheduler polls at the matching pace.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from runcomfy_async import (
    DEFAULT_BASE_URL,
    APIStatusError,
    AuthenticationError,
    ClientStateError,
    InputValidationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobCancelledError,
    JobFailedError,
    JobState,
    JobTimeoutError,
    KlingImageToVideo,
    KlingTextToVideo,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
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
from runcomfy_async._api import API
from runcomfy_async._limits import RequestBudget
from runcomfy_async._transport import AiohttpTransport
from runcomfy_async.emulator import KLING_PRO_T2V, KLING_STANDARD_I2V, Emulator, Faults
from runcomfy_async.testing import MockTransport

MakeEmulator = Callable[..., Awaitable[Emulator]]

I2V_BODY = {"prompt": "a cat on a sofa", "start_image_url": "https://example.com/cat.png"}
T2V_BODY = {"prompt": "a red fox in the snow"}
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
SECRET = "rc-live-SECRET-9c1f4e7a2b6d8e0f"  # a token that must never show up anywhere
WRONG = "rc-live-WRONG-1a2b3c4d5e6f7a8b"
#: Generation times at which a job takes a few hundred ms: long enough to act on it.
SLOWER = 0.003
#: Generation times at which a job takes a minute: it stays put during a test.
STILL = 1.0


class Recorder:
    """A retry sleep that records each delay and returns at once."""

    def __init__(self, then: Callable[[], None] | None = None) -> None:
        self.delays: list[float] = []
        self.then = then

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.then is not None:
            self.then()
        await asyncio.sleep(0)


MakeClient = Callable[..., RunComfyClient]


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """``make_client(emu, **options)``: a client for ``emu`` (closed after the test).

    Defaults: the emulator's token and base URL, a poll policy on the emulator's
    time scale, no request-rate limit, and retries that do not sleep.
    """
    made: list[RunComfyClient] = []

    def make(emu: Emulator | None = None, **options: Any) -> RunComfyClient:
        if emu is not None:
            options.setdefault("base_url", emu.base_url)
            options.setdefault("poll", PollPolicy(time_scale=emu.time_scale))
            if "transport" not in options:
                options.setdefault("token", emu.token)
        options.setdefault("requests_per_second", None)
        options.setdefault("retry", RetryPolicy.no_wait(attempts=4))
        client = RunComfyClient(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def answer(status: int, body: Any, **headers: str) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Response(status, {k.lower(): v for k, v in headers.items()}, raw)


def mock(*answers: Response) -> tuple[MockTransport, list[Request]]:
    """A MockTransport that gives ``answers`` in turn (the last one forever)."""
    seen: list[Request] = []
    queue = list(answers)

    async def handler(request: Request) -> Response:
        seen.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return MockTransport(handler), seen


# -- submit and wait -------------------------------------------------------------------


async def test_submit_and_wait_for_both_kling_models(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    i2v = await client.submit(KLING_STANDARD_I2V, I2V_BODY)
    t2v = await client.submit(KlingTextToVideo(prompt="a red fox in the snow"))
    for job, model in ((i2v, KLING_STANDARD_I2V), (t2v, KLING_PRO_T2V)):
        result = await asyncio.wait_for(job.wait(), 10)
        assert result.status is JobState.SUCCEEDED and job.state is JobState.SUCCEEDED
        assert job.model_id == model and emulator.job(job.request_id).model_id == model
        assert result.video and result.video.startswith(emulator.storage_url)
        assert result.urls == [result.video]
    assert emulator.counters.jobs_created == 2 and emulator.counters.submit == 2
    assert client.in_flight == 0


async def test_run_submits_and_waits_with_a_typed_input(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    typed = KlingImageToVideo(prompt="a cat", start_image_url="https://example.com/cat.png")
    result = await asyncio.wait_for(client.run(typed), 10)
    assert result.status is JobState.SUCCEEDED
    assert emulator.job(result.request_id).payload == typed.to_payload()


async def test_include_cost_reports_what_a_clip_costs(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator, include_cost=True)
    result = await asyncio.wait_for(client.run(KLING_PRO_T2V, {**T2V_BODY, "duration": 5}), 10)
    assert result.cost == pytest.approx(5 * 0.168)  # pro, with audio (the default)


async def test_status_and_result_verbs(emulator: Emulator, make_client: MakeClient) -> None:
    client = make_client(emulator)
    job = await client.submit(KLING_PRO_T2V, T2V_BODY)
    status = await client.status(job.request_id)
    assert status.request_id == job.request_id and not status.state.is_terminal
    await asyncio.wait_for(job.wait(), 10)
    assert (await client.status(job.request_id)).state is JobState.SUCCEEDED
    assert (await client.result(job.request_id)).video is not None


# -- cancel ----------------------------------------------------------------------------


async def test_cancel_of_a_queued_job(make_emulator: MakeEmulator, make_client: MakeClient) -> None:
    emu = await make_emulator(workers=1, time_scale=SLOWER)
    client = make_client(emu)
    running = await client.submit(KLING_PRO_T2V, T2V_BODY)
    queued = await client.submit(KLING_PRO_T2V, T2V_BODY)
    assert emu.job(queued.request_id).state == "in_queue"
    assert (await queued.cancel()).cancelled
    with pytest.raises(JobCancelledError) as info:
        await asyncio.wait_for(queued.wait(), 10)
    assert info.value.request_id == queued.request_id
    assert queued.state is JobState.CANCELLED
    assert emu.counters.jobs_cancelled == 1
    assert (await asyncio.wait_for(running.wait(), 10)).status is JobState.SUCCEEDED


async def test_cancel_of_a_running_job_is_a_no_op(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(time_scale=SLOWER)
    client = make_client(emu)
    job = await client.submit(KLING_PRO_T2V, T2V_BODY)
    assert emu.job(job.request_id).state == "in_progress"
    outcome = await client.cancel(job.request_id)
    assert outcome.outcome == "not_cancellable" and outcome.cancelled is False
    assert not (await job.cancel()).cancelled
    assert (await asyncio.wait_for(job.wait(), 10)).status is JobState.SUCCEEDED
    assert emu.counters.cancel_refused == 2 and emu.counters.jobs_cancelled == 0


async def test_wait_timeout_can_cancel_a_queued_job(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(workers=1, time_scale=STILL)
    client = make_client(emu)
    await client.submit(KLING_PRO_T2V, T2V_BODY)
    queued = await client.submit(KLING_PRO_T2V, T2V_BODY)
    with pytest.raises(JobTimeoutError, match="cancelled on the server"):
        await queued.wait(timeout=0.05, cancel_on_timeout=True)
    assert emu.job(queued.request_id).state == "cancelled"


# -- every error, raised by the condition it names ---------------------------------------


async def test_bad_token_is_an_authentication_error(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator, token=WRONG)
    with pytest.raises(AuthenticationError) as info:
        await client.submit(KLING_PRO_T2V, T2V_BODY)
    assert info.value.status_code == 401 and info.value.error_code == 400004
    with pytest.raises(AuthenticationError):
        await client.status(UNKNOWN_ID)
    assert emulator.counters.submit == 1 and emulator.counters.status == 1  # not retried
    assert emulator.counters.jobs_created == 0


async def test_missing_token_fails_at_the_first_call_without_sending(
    emulator: Emulator, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    client = make_client(emulator, token=None)  # constructing it is fine
    with pytest.raises(AuthenticationError, match="RUNCOMFY_API_TOKEN"):
        await client.submit(KLING_PRO_T2V, T2V_BODY)
    with pytest.raises(AuthenticationError):
        await client.status(UNKNOWN_ID)
    assert emulator.counters.requests == 0


async def test_token_comes_from_the_environment(
    emulator: Emulator, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", emulator.token)
    client = make_client(emulator, token=None)
    with pytest.raises(NotFoundError):
        await client.status(UNKNOWN_ID)  # authenticated: the id is what is wrong


async def test_unknown_request_id_is_not_found(emulator: Emulator, make_client: MakeClient) -> None:
    client = make_client(emulator)
    for call in (client.status, client.result, client.cancel):
        with pytest.raises(NotFoundError) as info:
            await call(UNKNOWN_ID)
        assert info.value.error_code == 404001 and info.value.request_id == UNKNOWN_ID
    assert emulator.counters.not_found == 3  # a 404 is not retried


async def test_tracking_an_unknown_request_id_ends_in_not_found(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    job = client.track(UNKNOWN_ID, KLING_PRO_T2V)
    with pytest.raises(NotFoundError):
        await asyncio.wait_for(job.wait(), 10)


async def test_unknown_model_is_an_invalid_request(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    with pytest.raises(InvalidRequestError) as info:
        await client.submit("acme/no-such-model", {"prompt": "x"})
    assert info.value.error_code == 400001 and emulator.counters.unknown_model == 1


async def test_server_side_validation_is_an_invalid_request_naming_the_field(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    with pytest.raises(InvalidRequestError) as info:
        await client.submit(KLING_PRO_T2V, {**T2V_BODY, "duration": 99}, validate=False)
    assert info.value.status_code == 422 and "duration" in str(info.value)
    assert emulator.counters.invalid_body == 1 and emulator.counters.jobs_created == 0


async def test_local_validation_fails_before_anything_is_sent(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    with pytest.raises(InputValidationError) as info:
        await client.submit(KLING_PRO_T2V, {**T2V_BODY, "duration": 99})
    assert isinstance(info.value, ValueError)
    assert any(p.path == "duration" for p in info.value.problems)
    assert emulator.counters.requests == 0


@pytest.mark.parametrize(
    ("response", "cls"),
    [
        (answer(402, {"error_message": "top up"}), InsufficientBalanceError),
        (answer(400, {"error_code": 400002, "error_message": "top up"}), InsufficientBalanceError),
        (
            answer(403, {"error_code": 403001, "error_message": "not yours"}),
            PermissionDeniedError,
        ),
        (answer(400, {"error_code": 400004, "error_message": "revoked"}), AuthenticationError),
        (answer(200, {"error_code": 404001, "error_message": "expired"}), NotFoundError),
        (answer(418, {"message": "teapot"}), APIStatusError),
    ],
)
async def test_error_answers_raise_their_class(
    make_client: MakeClient, response: Response, cls: type[APIStatusError]
) -> None:
    transport, seen = mock(response)
    client = make_client(transport=transport)
    with pytest.raises(cls):
        await client.result(UNKNOWN_ID)
    assert len(seen) == 1


async def test_rate_limit_error_carries_retry_after(make_client: MakeClient) -> None:
    transport, _ = mock(answer(429, {"detail": "slow down"}, **{"Retry-After": "12"}))
    client = make_client(transport=transport, retry=RetryPolicy(attempts=1))
    with pytest.raises(RateLimitError) as info:
        await client.status(UNKNOWN_ID)
    assert info.value.retry_after == 12.0


async def test_persistent_5xx_is_a_server_error(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(faults=Faults(rate_500=1.0, routes={"status"}))
    client = make_client(emu, retry=RetryPolicy.no_wait(attempts=3))
    with pytest.raises(ServerError) as info:
        await client.status(UNKNOWN_ID)
    assert info.value.status_code == 500 and emu.counters.status == 3


async def test_html_gateway_page_is_a_server_error_with_status_and_excerpt(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(faults=Faults(rate_502=1.0, html_rate=1.0, routes={"status"}))
    client = make_client(emu, retry=RetryPolicy(attempts=1))
    with pytest.raises(ServerError) as info:
        await client.status(UNKNOWN_ID)
    text = str(info.value)
    assert "502" in text and "Bad Gateway" in text and len(text) < 400


@pytest.mark.parametrize("body", [b"garbage", b"[1, 2, 3]", b'"in_queue"', b""])
async def test_a_200_that_is_not_an_object_is_malformed(
    make_client: MakeClient, body: bytes
) -> None:
    transport, _ = mock(answer(200, body))
    client = make_client(transport=transport, retry=RetryPolicy(attempts=1))
    with pytest.raises(MalformedResponseError):
        await client.status(UNKNOWN_ID)


async def test_a_failed_job_raises_job_failed_error_with_the_servers_payload(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(faults=Faults(fail_rate=1.0))
    client = make_client(emu)
    job = await client.submit(KLING_PRO_T2V, T2V_BODY)
    with pytest.raises(JobFailedError) as info:
        await asyncio.wait_for(job.wait(), 10)
    err = info.value
    assert err.request_id == job.request_id and err.model_id == KLING_PRO_T2V
    assert err.error == emu.job(job.request_id).error
    assert isinstance(err.error, dict) and err.error["code"] == "generation_failed"
    assert job.state is JobState.FAILED


async def test_wait_with_a_timeout_raises_job_timeout_error(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(time_scale=STILL)
    client = make_client(emu)
    job = await client.submit(KLING_PRO_T2V, T2V_BODY)
    with pytest.raises(JobTimeoutError) as info:
        await job.wait(timeout=0.05)
    assert isinstance(info.value, TimeoutError) and info.value.request_id == job.request_id
    assert not job.done  # still tracked: waiting again is allowed
    assert emu.job(job.request_id).state == "in_progress"


async def test_a_slow_answer_is_a_request_timeout(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(faults=Faults(slow_rate=1.0, slow_seconds=5.0, routes={"status"}))
    client = make_client(emu, read_timeout=0.05, retry=RetryPolicy(attempts=1))
    with pytest.raises(RequestTimeoutError) as info:
        await client.status(UNKNOWN_ID)
    assert isinstance(info.value, TimeoutError) and isinstance(info.value, TransportError)


# -- retries ---------------------------------------------------------------------------


async def test_safe_calls_recover_from_5xx_and_dropped_connections(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    faults = Faults(
        rate_500=0.1,
        rate_502=0.1,
        rate_503=0.05,
        html_rate=0.5,
        drop_rate=0.1,
        routes={"status", "result", "cancel"},
        seed=1234,
    )
    emu = await make_emulator(faults=faults, seed=1234)
    client = make_client(emu, retry=RetryPolicy.no_wait(attempts=10))
    jobs = [await client.submit(KLING_PRO_T2V, T2V_BODY) for _ in range(4)]
    for job in jobs:
        for _ in range(5):
            await client.status(job.request_id)
        await client.result(job.request_id)
        await client.cancel(job.request_id)
    results = await asyncio.wait_for(asyncio.gather(*(j.wait() for j in jobs)), 20)
    assert all(r.status is JobState.SUCCEEDED for r in results)
    c = emu.counters
    assert c.fault_500 and c.fault_502 and c.fault_drop and c.fault_html
    assert c.jobs_created == 4  # nothing was submitted twice


@pytest.mark.parametrize("route", ["status", "result", "cancel"])
async def test_safe_calls_recover_from_429_honouring_retry_after(
    make_emulator: MakeEmulator, make_client: MakeClient, route: str
) -> None:
    emu = await make_emulator(faults=Faults(rate_429=1.0, retry_after=0.125, routes={route}))

    def heal() -> None:
        emu.faults = Faults()

    sleep = Recorder(then=heal)
    client = make_client(emu, retry=RetryPolicy(sleep=sleep))
    with pytest.raises(NotFoundError):  # reached the server's own answer after the 429
        await getattr(client, route)(UNKNOWN_ID)
    assert sleep.delays == [0.125] and getattr(emu.counters, route) == 2
    assert emu.counters.fault_429 == 1


async def test_submit_dropped_after_the_job_was_created_is_outcome_unknown(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    faults = Faults(drop_rate=1.0, drop_after_create=True, routes={"submit"})
    emu = await make_emulator(faults=faults)
    client = make_client(emu)
    with pytest.raises(SubmitOutcomeUnknown) as info:
        await client.submit(KLING_PRO_T2V, T2V_BODY)
    assert info.value.model_id == KLING_PRO_T2V and info.value.payload == T2V_BODY
    assert emu.counters.jobs_created == 1 and emu.counters.submit == 1  # no second job
    assert client.in_flight == 0


async def test_submit_dropped_before_the_job_was_created_is_still_outcome_unknown(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(faults=Faults(drop_rate=1.0, routes={"submit"}))
    client = make_client(emu)
    with pytest.raises(SubmitOutcomeUnknown):  # the client cannot tell the two apart
        await client.submit(KLING_PRO_T2V, T2V_BODY)
    assert emu.counters.submit == 1


async def test_submit_refused_before_sending_is_retried_then_transport_error(
    make_client: MakeClient,
) -> None:
    sleep = Recorder()
    client = make_client(
        token="t",
        base_url=f"http://127.0.0.1:{closed_port()}",
        retry=RetryPolicy(attempts=3, sleep=sleep),
    )
    with pytest.raises(TransportError) as info:
        await client.submit(KLING_PRO_T2V, T2V_BODY)
    assert info.value.request_sent is False
    assert len(sleep.delays) == 2  # three tries
    assert client.in_flight == 0


async def test_submit_answered_503_without_retry_after_is_outcome_unknown(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    # A bare 503 does not prove that nothing was created (RunComfy's own
    # clients treat every 5xx to a submit as unknown): one POST, no retry.
    emu = await make_emulator(faults=Faults(rate_503=1.0, routes={"submit"}))
    client = make_client(emu, retry=RetryPolicy.no_wait(attempts=3))
    with pytest.raises(SubmitOutcomeUnknown) as info:
        await client.submit(KLING_PRO_T2V, T2V_BODY)
    assert isinstance(info.value.__cause__, ServerError)
    assert emu.counters.submit == 1
    assert client.in_flight == 0


async def test_submit_answered_429_is_retried(make_emulator: MakeEmulator) -> None:
    # At the API layer: the client adds its own concurrency back-off on top (see test_api).
    emu = await make_emulator(faults=Faults(rate_429=1.0, retry_after=0.0, routes={"submit"}))
    sleep = Recorder()
    transport = AiohttpTransport(emu.base_url, emu.token)
    api = API(transport, budget=RequestBudget(None), retry=RetryPolicy(attempts=3, sleep=sleep))
    try:
        with pytest.raises(RateLimitError):
            await api.submit(KLING_PRO_T2V, T2V_BODY)
    finally:
        await transport.aclose()
    assert emu.counters.submit == 3 and emu.counters.jobs_created == 0


@pytest.mark.parametrize("kind", ["rate_500", "rate_502"])
async def test_submit_answered_500_or_502_is_outcome_unknown_without_retry(
    make_emulator: MakeEmulator, make_client: MakeClient, kind: str
) -> None:
    emu = await make_emulator(faults=Faults(**{kind: 1.0}, routes={"submit"}))
    client = make_client(emu, retry=RetryPolicy.no_wait(attempts=5))
    with pytest.raises(SubmitOutcomeUnknown):
        await client.submit(KLING_PRO_T2V, T2V_BODY)
    assert emu.counters.submit == 1


# -- the token stays secret ---------------------------------------------------------------


def _texts(err: BaseException) -> list[str]:
    return [str(err), repr(err), "".join(traceback.format_exception(err))]


async def _capture(errors: list[BaseException], call: Awaitable[Any]) -> None:
    try:
        await call
    except RunComfyError as err:
        errors.append(err)
    except ValueError as err:  # bad request ids
        errors.append(err)


async def test_the_token_never_shows_in_reprs_logs_or_errors(
    make_emulator: MakeEmulator, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu = await make_emulator(token=[SECRET, "other-account"])
    client = make_client(emu, retry=RetryPolicy.no_wait(attempts=2))
    errors: list[BaseException] = []
    seen: list[str] = []

    # The happy path, both models, with faults the client retries (and logs).
    emu.faults = Faults(rate_500=0.3, rate_502=0.2, html_rate=0.5, routes={"status"}, seed=3)
    i2v = await client.submit(KLING_STANDARD_I2V, I2V_BODY)
    t2v = await client.submit(KLING_PRO_T2V, T2V_BODY)
    seen += [repr(client), repr(client._transport), repr(client._api), repr(i2v), repr(t2v)]
    seen += [repr(client._poller), repr(client.budget)]
    for _ in range(3):
        await _capture(errors, client.status(t2v.request_id))
    await _capture(errors, client.cancel(t2v.request_id))
    await asyncio.wait_for(asyncio.gather(i2v.wait(), t2v.wait()), 10)
    emu.faults = Faults()

    # Every error the client can raise.
    await _capture(errors, client.status(UNKNOWN_ID))
    await _capture(errors, client.status("../../x"))
    await _capture(errors, client.submit(KLING_PRO_T2V, {"prompt": ""}))
    await _capture(errors, client.submit("acme/nope", {"prompt": "x"}))
    await _capture(errors, client.submit(KLING_PRO_T2V, {"duration": 99}, validate=False))
    other = make_client(emu, token="other-account")
    foreign = await other.submit(KLING_PRO_T2V, T2V_BODY)
    await _capture(errors, client.status(foreign.request_id))  # 403: another account's
    emu.faults = Faults(fail_rate=1.0)
    await _capture(errors, (await client.submit(KLING_PRO_T2V, T2V_BODY)).wait())
    emu.faults = Faults(drop_rate=1.0, drop_after_create=True, routes={"submit"})
    await _capture(errors, client.submit(KLING_PRO_T2V, T2V_BODY))
    emu.faults = Faults(rate_500=1.0, html_rate=1.0, routes={"status"})
    await _capture(errors, client.status(UNKNOWN_ID))
    emu.faults = Faults(rate_429=1.0, retry_after=0.0, routes={"result"})
    await _capture(errors, client.result(UNKNOWN_ID))
    emu.faults = Faults(drop_rate=1.0, routes={"status"})
    await _capture(errors, client.status(UNKNOWN_ID))
    emu.faults = Faults()
    emu.time_scale = STILL
    slow = await client.submit(KLING_PRO_T2V, T2V_BODY)
    await _capture(errors, slow.wait(timeout=0.01))
    wrong = make_client(emu, token=WRONG)
    await _capture(errors, wrong.submit(KLING_PRO_T2V, T2V_BODY))
    refused = make_client(token=SECRET, base_url=f"http://127.0.0.1:{closed_port()}")
    await _capture(errors, refused.status(UNKNOWN_ID))
    seen += [repr(slow), repr(wrong), repr(wrong._transport), repr(refused._transport)]
    await client.aclose()
    await _capture(errors, slow.wait())
    await _capture(errors, client.status(UNKNOWN_ID))
    seen.append(repr(client))

    kinds = {type(e) for e in errors}
    assert {
        NotFoundError,
        ValueError,
        InputValidationError,
        InvalidRequestError,
        AuthenticationError,
        JobFailedError,
        SubmitOutcomeUnknown,
        ServerError,
        RateLimitError,
        TransportError,
        JobTimeoutError,
        ClientStateError,
    } <= kinds
    for err in errors:
        seen += _texts(err)
    for record in caplog.records:
        seen.append(record.getMessage())
        if record.exc_info:
            seen.append("".join(traceback.format_exception(*record.exc_info)))
    assert caplog.records  # the run did log (retries, submits)
    leaks = [text for text in seen if SECRET in text or WRONG in text]
    assert leaks == []
    # ... and the storage origin never heard from the client at all.
    assert emu.counters.storage_requests == 0 and emu.counters.storage_auth_headers == 0


# -- lifecycle -----------------------------------------------------------------------


async def test_use_after_aclose_raises_client_state_error(
    emulator: Emulator, make_client: MakeClient
) -> None:
    client = make_client(emulator)
    async with client:
        pass
    assert client.closed
    await client.aclose()  # idempotent
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: client.submit(KLING_PRO_T2V, T2V_BODY),
        lambda: client.status(UNKNOWN_ID),
        lambda: client.result(UNKNOWN_ID),
        lambda: client.cancel(UNKNOWN_ID),
        lambda: client.run(KLING_PRO_T2V, T2V_BODY),
    ]
    for call in calls:
        with pytest.raises(ClientStateError):
            await call()
    with pytest.raises(ClientStateError):
        client.track(UNKNOWN_ID, KLING_PRO_T2V)
    assert emulator.counters.requests == 0


async def test_a_closed_client_cannot_be_reopened(make_client: MakeClient) -> None:
    client = make_client(token="t")
    async with client:
        pass
    with pytest.raises(ClientStateError, match="closed"):
        async with client:
            pass
    assert isinstance(ClientStateError("x"), RuntimeError)


async def test_closing_fails_jobs_still_in_flight(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(time_scale=STILL)
    client = make_client(emu)
    job = await client.submit(KLING_PRO_T2V, T2V_BODY)
    waiter = asyncio.ensure_future(job.wait())
    await asyncio.sleep(0)
    await client.aclose()
    with pytest.raises(ClientStateError, match=job.request_id):
        await asyncio.wait_for(waiter, 5)


async def test_an_opened_client_that_is_never_closed_warns(make_client: MakeClient) -> None:
    client = RunComfyClient("t", requests_per_second=None)
    await client.__aenter__()
    with pytest.warns(ResourceWarning, match="unclosed"):
        del client
        gc.collect()


async def test_a_client_that_was_never_opened_does_not_warn() -> None:
    client = RunComfyClient("t")
    assert "unopened" in repr(client)
    del client
    gc.collect()  # a ResourceWarning here would fail the test (warnings are errors)


async def test_a_closed_client_does_not_warn() -> None:
    client = RunComfyClient("t")
    async with client:
        pass
    del client
    gc.collect()


def test_base_url_must_be_https_unless_loopback() -> None:
    with pytest.raises(ValueError, match="clear text"):
        RunComfyClient("t", base_url="http://model-api.example.com")
    assert RunComfyClient("t", base_url="http://127.0.0.1:9").base_url == "http://127.0.0.1:9"
    assert RunComfyClient("t", base_url="http://localhost:9/").base_url == "http://localhost:9"


def test_allow_insecure_http_lifts_the_https_rule() -> None:
    client = RunComfyClient("t", base_url="http://10.1.2.3:8000", allow_insecure_http=True)
    assert client.base_url == "http://10.1.2.3:8000"


def test_base_url_defaults_to_runcomfy_base_url_then_the_public_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RUNCOMFY_BASE_URL", raising=False)
    assert RunComfyClient("t").base_url == DEFAULT_BASE_URL == "https://model-api.runcomfy.net"
    monkeypatch.setenv("RUNCOMFY_BASE_URL", "https://proxy.example.com/runcomfy/")
    assert RunComfyClient("t").base_url == "https://proxy.example.com/runcomfy"
    assert RunComfyClient("t", base_url="https://x.example").base_url == "https://x.example"
    monkeypatch.setenv("RUNCOMFY_BASE_URL", "http://proxy.example.com")
    with pytest.raises(ValueError):  # the env var obeys the same rule
        RunComfyClient("t")


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RunComfyClient("t", max_in_flight=0)


def test_client_repr_shows_its_state_but_not_the_token() -> None:
    client = RunComfyClient(SECRET)
    assert "unopened" in repr(client) and SECRET not in repr(client)
    assert SECRET not in repr(client._transport) and SECRET not in repr(client._api)


# -- bugs found in review, fixed in _client.py ---------------------------------------------


async def test_a_huge_retry_after_on_submit_does_not_stall_the_client(
    make_client: MakeClient,
) -> None:
    ok = answer(200, {"request_id": "req-1"})
    transport, seen = mock(answer(429, {}, **{"Retry-After": "86400"}), ok)
    sleep = Recorder()
    client = make_client(
        transport=transport, retry=RetryPolicy(attempts=1, max_retry_after=0.01, sleep=sleep)
    )
    job = await asyncio.wait_for(client.submit("vendor/model", {"prompt": "x"}), 2)
    assert job.request_id == "req-1" and len(seen) == 2


async def test_closing_fails_submits_waiting_for_a_slot_with_client_state_error(
    make_emulator: MakeEmulator, make_client: MakeClient
) -> None:
    emu = await make_emulator(time_scale=STILL)
    client = make_client(emu, max_in_flight=1)
    await client.submit(KLING_PRO_T2V, T2V_BODY)
    waiting = [asyncio.ensure_future(client.submit(KLING_PRO_T2V, T2V_BODY)) for _ in range(2)]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in waiting)
    await client.aclose()  # frees the first slot (its job fails), then closes the cap
    await asyncio.wait(waiting, timeout=2)
    ends = [
        "pending" if not t.done() else "cancelled" if t.cancelled() else type(t.exception())
        for t in waiting
    ]
    assert ends == [ClientStateError, ClientStateError], ends
    assert emu.counters.submit == 1


async def test_before_send_runs_after_slot_and_token_immediately_before_the_post() -> None:
    """The hook sees the job holding its slot, and runs before the POST leaves."""
    from runcomfy_async import RunComfyClient
    from runcomfy_async._transport import Response
    from runcomfy_async.testing import MockTransport

    order: list[str] = []

    async def handler(request: Request) -> Response:
        order.append(f"send {request.method}")
        if request.method == "POST":
            return Response(200, body=b'{"request_id": "r1"}')
        return Response(200, body=b'{"request_id": "r1", "status": "in_progress"}')

    client = RunComfyClient("tok", transport=MockTransport(handler), max_in_flight=1)
    async with client:

        async def hook() -> None:
            order.append(f"hook in_flight={client.in_flight}")

        await client.submit("some/model", {"prompt": "x"}, before_send=hook)
    assert order[:2] == ["hook in_flight=1", "send POST"]


async def test_leaving_a_map_early_stops_its_run_task_and_raises_nothing() -> None:
    from runcomfy_async.testing import MockTransport, Response

    submitted: list[str] = []

    async def handler(request: Request) -> Response:
        if request.method == "POST":
            rid = f"r-{len(submitted)}"
            submitted.append(rid)
            return Response(200, {}, f'{{"request_id": "{rid}", "status": "in_queue"}}'.encode())
        rid = request.path.split("/")[3]
        return Response(200, {}, f'{{"request_id": "{rid}", "status": "succeeded"}}'.encode())

    async with RunComfyClient(
        transport=MockTransport(handler),
        validate_inputs=False,
        poll=PollPolicy(time_scale=0.001),
    ) as client:
        payloads = [{"prompt": f"p{i}"} for i in range(20)]
        async for outcome in client.map("vendor/model", payloads, concurrency=3):
            assert outcome.ok
            break
        await asyncio.sleep(0.05)
        leftovers = [t for t in asyncio.all_tasks() if t.get_name() == "runcomfy-async map"]
        assert leftovers == []
        assert len(submitted) < 20  # submitting stopped when the loop was left
