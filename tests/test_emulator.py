"""The emulator, tested with raw aiohttp requests against its real loopback servers."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from runcomfy_async.emulator import (
    KLING_PRO_T2V,
    KLING_STANDARD_I2V,
    Emulator,
    Faults,
    ModelProfile,
    make_mp4,
)

MakeEmulator = Callable[..., Awaitable[Emulator]]

STANDARD_BODY = {"prompt": "a cat", "start_image_url": "https://example.com/cat.png"}
PRO_BODY = {"prompt": "a dog"}
SLOW = 1.0  # time_scale at which a job takes a minute or more: it stays put during a test
FAST = 0.0001  # time_scale at which a job takes about 10 ms
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(emu: Emulator, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or emu.token}"}


async def call(
    http: aiohttp.ClientSession,
    emu: Emulator,
    method: str,
    path: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[int, Any]:
    hdrs = auth(emu, token) if headers is None else headers
    async with http.request(method, emu.base_url + path, headers=hdrs, **kw) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def submit(
    http: aiohttp.ClientSession,
    emu: Emulator,
    model_id: str = KLING_PRO_T2V,
    body: Any = None,
    *,
    token: str | None = None,
) -> dict[str, Any]:
    status, answer = await call(
        http, emu, "POST", f"/v1/models/{model_id}", json=body or PRO_BODY, token=token
    )
    assert status == 200, answer
    return answer  # type: ignore[no-any-return]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def top_level_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    boxes, offset = [], 0
    while offset < len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        assert size >= 8 and offset + size <= len(data)
        boxes.append((kind, data[offset + 8 : offset + size]))
        offset += size
    assert offset == len(data)
    return boxes


# -- route shapes ---------------------------------------------------------------------


async def test_submit_answers_request_id_and_absolute_urls(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    answer = await submit(http, emulator)
    rid = answer["request_id"]
    base = f"{emulator.base_url}/v1/requests/{rid}"
    assert answer == {
        "request_id": rid,
        "status_url": f"{base}/status",
        "result_url": f"{base}/result",
        "cancel_url": f"{base}/cancel",
    }
    job = emulator.job(rid)
    assert (job.model_id, job.payload, job.token) == (KLING_PRO_T2V, PRO_BODY, emulator.token)
    assert emulator.jobs[rid] is job


async def test_status_has_queue_position_only_while_queued(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=1)
    running, queued = await submit(http, emu), await submit(http, emu)
    _, body = await call(http, emu, "GET", f"/v1/requests/{running['request_id']}/status")
    assert body == {
        "request_id": running["request_id"],
        "status": "in_progress",
        "status_url": running["status_url"],
        "result_url": running["result_url"],
    }
    _, body = await call(http, emu, "GET", f"/v1/requests/{queued['request_id']}/status")
    assert body["status"] == "in_queue"
    assert body["queue_position"] == 1


async def test_result_while_running_is_just_the_state(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=1)
    first, second = await submit(http, emu), await submit(http, emu)
    for answer, state in ((first, "in_progress"), (second, "in_queue")):
        status, body = await call(http, emu, "GET", f"/v1/requests/{answer['request_id']}/result")
        assert (status, body) == (200, {"request_id": answer["request_id"], "status": state})


async def test_result_of_a_success_has_output_on_storage_and_utc_times(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    rid = (await submit(http, emulator))["request_id"]
    await wait_until(lambda: emulator.job(rid).terminal)
    status, body = await call(http, emulator, "GET", f"/v1/requests/{rid}/result")
    assert status == 200
    assert set(body) == {"request_id", "status", "output", "created_at", "finished_at"}
    assert body["status"] == "succeeded"
    assert body["output"] == {"video": f"{emulator.storage_url}/outputs/{rid}/output.mp4"}
    created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(body["finished_at"].replace("Z", "+00:00"))
    assert created.utcoffset() == timedelta(0)
    assert created <= finished


@pytest.mark.parametrize(
    ("model_id", "body", "cost"),
    [
        (KLING_STANDARD_I2V, {**STANDARD_BODY, "duration": 5, "generate_audio": False}, 0.42),
        (KLING_STANDARD_I2V, {**STANDARD_BODY, "duration": 5}, 0.63),
        (KLING_PRO_T2V, {**PRO_BODY, "duration": 10, "sound": False}, 1.12),
        (KLING_PRO_T2V, {**PRO_BODY, "duration": 15, "sound": True}, 2.52),
    ],
)
async def test_include_cost_prices_the_clip(
    emulator: Emulator, http: aiohttp.ClientSession, model_id: str, body: Any, cost: float
) -> None:
    rid = (await submit(http, emulator, model_id, body))["request_id"]
    await wait_until(lambda: emulator.job(rid).terminal)
    _, plain = await call(http, emulator, "GET", f"/v1/requests/{rid}/result")
    assert "cost" not in plain
    path = f"/v1/requests/{rid}/result?include_cost=true"
    _, answer = await call(http, emulator, "GET", path)
    assert answer["cost"] == pytest.approx(cost)


async def test_failed_job_reports_failed_with_an_error_object(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(fail_rate=1.0))
    rid = (await submit(http, emu))["request_id"]
    await wait_until(lambda: emu.job(rid).terminal)
    _, status = await call(http, emu, "GET", f"/v1/requests/{rid}/status")
    _, result = await call(http, emu, "GET", f"/v1/requests/{rid}/result?include_cost=true")
    assert status["status"] == "failed"
    assert result["status"] == "failed"
    assert "output" not in result
    assert set(result["error"]) == {"code", "message"}
    assert result["cost"] == 0.0
    assert emu.counters.fault_fail == 1
    assert emu.counters.jobs_failed == 1


# -- cancel -------------------------------------------------------------------------------


async def test_cancel_queued_job_cancels_it(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=1, vocabulary="documented")
    await submit(http, emu)
    rid = (await submit(http, emu))["request_id"]
    status, body = await call(http, emu, "POST", f"/v1/requests/{rid}/cancel")
    assert (status, body) == (
        202,
        {"request_id": rid, "status": "cancelled", "outcome": "cancelled"},
    )
    assert emu.job(rid).state == "cancelled"
    assert emu.job(rid).finished is not None
    _, result = await call(http, emu, "GET", f"/v1/requests/{rid}/result")
    assert result["status"] == "cancelled"
    assert "output" not in result


async def test_cancel_running_job_is_not_cancellable(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=1)
    rid = (await submit(http, emu))["request_id"]
    status, body = await call(http, emu, "POST", f"/v1/requests/{rid}/cancel")
    assert (status, body["outcome"], body["status"]) == (202, "not_cancellable", "in_progress")
    assert emu.job(rid).state == "in_progress"
    assert emu.counters.cancel_refused == 1


async def test_cancel_after_the_end_is_a_no_op(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    rid = (await submit(http, emulator))["request_id"]
    await wait_until(lambda: emulator.job(rid).terminal)
    status, body = await call(http, emulator, "POST", f"/v1/requests/{rid}/cancel")
    assert (status, body["outcome"]) == (202, "not_cancellable")
    assert emulator.job(rid).state == "succeeded"


# -- vocabularies -------------------------------------------------------------------------


async def test_mixed_vocabulary_uses_both_spellings(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=FAST, workers=64, vocabulary="mixed")
    rids = [(await submit(http, emu))["request_id"] for _ in range(40)]
    await wait_until(lambda: all(emu.job(r).terminal for r in rids))
    words = {(await call(http, emu, "GET", f"/v1/requests/{r}/status"))[1]["status"] for r in rids}
    assert words == {"completed", "succeeded"}

    emu.time_scale = SLOW
    blockers = [await submit(http, emu) for _ in range(64)]
    assert blockers and emu.in_queue == 0
    queued = [(await submit(http, emu))["request_id"] for _ in range(40)]
    cancel_words = set()
    for rid in queued:
        _, body = await call(http, emu, "POST", f"/v1/requests/{rid}/cancel")
        _, result = await call(http, emu, "GET", f"/v1/requests/{rid}/result")
        cancel_words |= {body["status"], result["status"]}
    assert cancel_words == {"cancelled", "canceled"}


async def test_documented_vocabulary_never_uses_alternative_spellings(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=FAST, workers=64, vocabulary="documented")
    rids = [(await submit(http, emu))["request_id"] for _ in range(40)]
    await wait_until(lambda: all(emu.job(r).terminal for r in rids))
    for rid in rids:
        _, status = await call(http, emu, "GET", f"/v1/requests/{rid}/status")
        _, result = await call(http, emu, "GET", f"/v1/requests/{rid}/result")
        assert (status["status"], result["status"]) == ("completed", "succeeded")


# -- auth and errors ----------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
async def test_missing_or_bad_token_is_401_400004(
    emulator: Emulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    path = f"/v1/models/{KLING_PRO_T2V}"
    status, body = await call(http, emulator, "POST", path, headers=headers, json=PRO_BODY)
    assert status == 401
    assert body["error_code"] == 400004
    assert body["error_message"]
    assert emulator.counters.bad_token == 1
    assert emulator.counters.jobs_created == 0


async def test_every_route_requires_the_token(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    rid = (await submit(http, emulator))["request_id"]
    for method, route in (("GET", "status"), ("GET", "result"), ("POST", "cancel")):
        status, _ = await call(http, emulator, method, f"/v1/requests/{rid}/{route}", headers={})
        assert status == 401
    assert emulator.counters.bad_token == 3


async def test_request_of_another_token_is_403_403001(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(token=["alice", "bob"])
    assert emu.token == "alice"
    rid = (await submit(http, emu, token="alice"))["request_id"]
    status, body = await call(http, emu, "GET", f"/v1/requests/{rid}/status", token="bob")
    assert (status, body["error_code"]) == (403, 403001)


async def test_unknown_request_id_is_404_404001(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    status, body = await call(http, emulator, "GET", "/v1/requests/nope/result")
    assert (status, body["error_code"]) == (404, 404001)


async def test_unknown_model_is_400_400001(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, emulator, "POST", "/v1/models/acme/unknown", json=PRO_BODY)
    assert (status, body["error_code"]) == (400, 400001)
    assert "acme/unknown" in body["error_message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
async def test_body_that_is_not_a_json_object_is_422(
    emulator: Emulator, http: aiohttp.ClientSession, raw: bytes
) -> None:
    status, body = await call(http, emulator, "POST", f"/v1/models/{KLING_PRO_T2V}", data=raw)
    assert status == 422
    assert isinstance(body["detail"], list) and body["detail"][0]["loc"] == ["body"]


async def test_invalid_kling_payload_is_422_with_a_detail_per_problem(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    bad = {"prompt": "a cat", "duration": 99}
    status, body = await call(http, emulator, "POST", f"/v1/models/{KLING_STANDARD_I2V}", json=bad)
    assert status == 422
    assert body["error_code"] == 422001
    by_loc = {tuple(d["loc"]): d for d in body["detail"]}
    assert by_loc[("body", "start_image_url")]["input"] is None
    assert by_loc[("body", "duration")]["input"] == 99
    assert all(isinstance(d["msg"], str) and d["msg"] for d in body["detail"])
    assert emulator.counters.jobs_created == 0


async def test_extra_models_are_accepted_unvalidated(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(models={"acme/new-model/v2": ModelProfile.uniform(60, 200)})
    rid = (await submit(http, emu, "acme/new-model/v2", {"anything": [1, {"x": None}]}))[
        "request_id"
    ]
    assert emu.job(rid).model_id == "acme/new-model/v2"
    assert 60 <= emu.job(rid).duration <= 200
    assert KLING_PRO_T2V in emu.models  # the defaults stay
    status, _ = await call(http, emu, "POST", "/v1/models/acme/new-model/v2", json=[1])
    assert status == 422


# -- queueing -----------------------------------------------------------------------------


async def test_jobs_beyond_the_workers_queue_in_fifo_order(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=2)
    rids = [(await submit(http, emu))["request_id"] for _ in range(5)]
    positions = []
    for rid in rids:
        _, body = await call(http, emu, "GET", f"/v1/requests/{rid}/status")
        positions.append(body.get("queue_position"))
    assert positions == [None, None, 1, 2, 3]
    assert (emu.in_progress, emu.in_queue) == (2, 3)

    await call(http, emu, "POST", f"/v1/requests/{rids[2]}/cancel")
    _, body = await call(http, emu, "GET", f"/v1/requests/{rids[3]}/status")
    assert body["queue_position"] == 1


async def test_each_token_has_its_own_queue(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=1, token=("alice", "bob"))
    await submit(http, emu, token="alice")
    queued = (await submit(http, emu, token="alice"))["request_id"]
    bobs = (await submit(http, emu, token="bob"))["request_id"]
    assert emu.job(queued).state == "in_queue"
    assert emu.job(bobs).state == "in_progress"


async def test_queued_jobs_start_as_workers_free_up(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=FAST, workers=2)
    rids = [(await submit(http, emu))["request_id"] for _ in range(8)]
    await wait_until(lambda: all(emu.job(r).terminal for r in rids))
    jobs = [emu.job(r) for r in rids]
    spans = [(j.created, j.started, j.finished) for j in jobs]
    starts = [start for _, start, _ in spans if start is not None]
    assert len(starts) == 8 and starts == sorted(starts)  # FIFO
    events: list[tuple[float, int]] = []
    for created, started, finished in spans:
        assert started is not None and finished is not None
        assert created <= started <= finished
        events += [(started, 1), (finished, -1)]
    # never more than two at once
    running = peak = 0
    for _, delta in sorted(events):
        running += delta
        peak = max(peak, running)
    assert peak <= 2


async def test_generation_time_is_the_drawn_duration_times_the_scale(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=0.002)
    rid = (await submit(http, emu))["request_id"]
    await wait_until(lambda: emu.job(rid).terminal)
    job = emu.job(rid)
    assert job.started is not None and job.finished is not None
    assert job.finished - job.started >= job.duration * 0.002 - 0.005


async def test_thousands_of_jobs_go_through_quickly(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=FAST, workers=64)

    async def one(i: int) -> str:
        model = KLING_PRO_T2V if i % 2 else KLING_STANDARD_I2V
        body = PRO_BODY if i % 2 else STANDARD_BODY
        return str((await submit(http, emu, model, body))["request_id"])

    rids = await asyncio.gather(*(one(i) for i in range(2000)))
    assert len(set(rids)) == 2000
    await wait_until(lambda: emu.counters.jobs_succeeded == 2000, timeout=60)
    assert (emu.in_queue, emu.in_progress) == (0, 0)
    assert all(emu.job(r).state == "succeeded" for r in rids)


# -- faults -------------------------------------------------------------------------------


async def test_rate_429_answers_with_retry_after(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(rate_429=1.0, retry_after=7))
    async with http.post(
        f"{emu.base_url}/v1/models/{KLING_PRO_T2V}", json=PRO_BODY, headers=auth(emu)
    ) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "7"
        await resp.json()
    assert emu.counters.fault_429 == 1
    assert emu.counters.jobs_created == 0  # nothing was created


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_server_errors_answer_json(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession, code: int
) -> None:
    faults = Faults()
    setattr(faults, f"rate_{code}", 1.0)
    emu = await make_emulator(faults=faults)
    status, body = await call(http, emu, "GET", "/v1/requests/x/status")
    assert status == code
    assert isinstance(body, dict) and body["error_message"]
    assert getattr(emu.counters, f"fault_{code}") == 1


async def test_html_rate_answers_a_gateway_page(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(rate_502=1.0, html_rate=1.0))
    async with http.get(f"{emu.base_url}/v1/requests/x/status", headers=auth(emu)) as resp:
        assert resp.status == 502
        assert resp.content_type == "text/html"
        assert (await resp.text()).startswith("<html>")
    assert (emu.counters.fault_502, emu.counters.fault_html) == (1, 1)


async def test_faults_apply_only_to_their_routes(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(rate_503=1.0, routes={"submit"}))
    status, _ = await call(http, emu, "GET", "/v1/requests/x/status")
    assert status == 404
    status, _ = await call(http, emu, "POST", f"/v1/models/{KLING_PRO_T2V}", json=PRO_BODY)
    assert status == 503


async def test_faults_can_change_at_runtime(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    emulator.faults.rate_500 = 1.0
    assert (await call(http, emulator, "GET", "/v1/requests/x/status"))[0] == 500
    emulator.faults = Faults()
    assert (await call(http, emulator, "GET", "/v1/requests/x/status"))[0] == 404
    with pytest.raises(ValueError):
        emulator.faults.rate_500 = 1.5


async def test_drop_before_create_disconnects_and_creates_nothing(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(drop_rate=1.0))
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await call(http, emu, "POST", f"/v1/models/{KLING_PRO_T2V}", json=PRO_BODY)
    assert emu.counters.fault_drop == 1
    assert emu.counters.jobs_created == 0


async def test_drop_after_create_disconnects_but_the_job_exists(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(drop_rate=1.0, drop_after_create=True))
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await call(http, emu, "POST", f"/v1/models/{KLING_PRO_T2V}", json=PRO_BODY)
    assert emu.counters.jobs_created == 1
    [job] = emu.jobs.values()
    assert job.payload == PRO_BODY


async def test_drop_on_a_read_route_disconnects(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(drop_rate=1.0, routes={"status"}))
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await call(http, emu, "GET", "/v1/requests/x/status")
    # aiohttp retries an idempotent request once on a reused connection
    assert emu.counters.fault_drop >= 1


async def test_slow_answers_wait_first(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(slow_rate=1.0, slow_seconds=0.2))
    start = time.monotonic()
    status, _ = await call(http, emu, "GET", "/v1/requests/x/status")
    assert status == 404
    assert time.monotonic() - start >= 0.19
    assert emu.counters.fault_slow == 1


async def test_close_does_not_wait_for_slow_answers(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(slow_rate=1.0, slow_seconds=600))
    pending = asyncio.create_task(call(http, emu, "GET", "/v1/requests/x/status"))
    await wait_until(lambda: emu.counters.status == 1)
    start = time.monotonic()
    await emu.close()
    assert time.monotonic() - start < 5
    status, _ = await asyncio.wait_for(pending, 5)
    assert status == 404


async def test_rps_limit_answers_429_with_retry_after(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(rps_limit=2))
    statuses, retry_after = [], None
    for _ in range(3):
        async with http.get(f"{emu.base_url}/v1/requests/x/status", headers=auth(emu)) as resp:
            statuses.append(resp.status)
            retry_after = resp.headers.get("Retry-After")
    assert statuses == [404, 404, 429]
    assert retry_after == "1"
    assert emu.counters.rate_limited == 1


async def test_rps_limit_is_per_token(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(rps_limit=1), token=("alice", "bob"))
    first, _ = await call(http, emu, "GET", "/v1/requests/x/status", token="alice")
    second, _ = await call(http, emu, "GET", "/v1/requests/x/status", token="alice")
    other, _ = await call(http, emu, "GET", "/v1/requests/x/status", token="bob")
    assert (first, second, other) == (404, 429, 404)


async def test_outage_refuses_connections_then_recovers_on_the_same_port(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    rid = (await submit(http, emulator))["request_id"]  # leaves a keep-alive connection
    base_url = emulator.base_url
    await emulator.outage(None)
    assert emulator.offline
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, emulator, "GET", f"/v1/requests/{rid}/status")
    await emulator.restore()
    assert not emulator.offline and emulator.base_url == base_url
    status, _ = await call(http, emulator, "GET", f"/v1/requests/{rid}/status")
    assert status == 200
    assert emulator.counters.outages == 1


async def test_timed_outage_ends_by_itself(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    await emulator.outage(0.2)
    with pytest.raises(aiohttp.ClientConnectorError):
        await call(http, emulator, "GET", "/v1/requests/x/status")
    await wait_until(lambda: not emulator.offline)
    assert (await call(http, emulator, "GET", "/v1/requests/x/status"))[0] == 404


async def test_outage_with_wait_returns_when_it_is_over(emulator: Emulator) -> None:
    await emulator.outage(0.05, wait=True)
    assert not emulator.offline


async def test_jobs_keep_running_through_an_outage(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    rid = (await submit(http, emulator))["request_id"]
    await emulator.outage(None)
    await wait_until(lambda: emulator.job(rid).terminal)
    await emulator.restore()
    _, body = await call(http, emulator, "GET", f"/v1/requests/{rid}/result")
    assert body["status"] == "succeeded"


# -- storage ------------------------------------------------------------------------------


async def finished_output(http: aiohttp.ClientSession, emu: Emulator) -> str:
    rid = (await submit(http, emu))["request_id"]
    await wait_until(lambda: emu.job(rid).terminal)
    _, body = await call(http, emu, "GET", f"/v1/requests/{rid}/result")
    return body["output"]["video"]  # type: ignore[no-any-return]


async def test_storage_serves_a_valid_mp4_from_another_origin(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = await finished_output(http, emulator)
    assert URL(url).port != URL(emulator.base_url).port
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "video/mp4"
        data = await resp.read()
        assert int(resp.headers["Content-Length"]) == len(data)
    kinds = [kind for kind, _ in top_level_boxes(data)]
    # "fast start": ftyp, then moov before mdat (PyAV's muxer adds a 'free' box between)
    assert kinds[:2] == [b"ftyp", b"moov"] and kinds[-1] == b"mdat"
    assert emulator.counters.downloads_completed == 1
    assert emulator.counters.storage_auth_headers == 0


async def test_mp4s_differ_per_job_and_nest_well(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("runcomfy_async.emulator._media._pyav", lambda: None)  # frameless files
    a, b = make_mp4("a", clip_seconds=5), make_mp4("b", clip_seconds=5)
    assert a != b and len(a) == len(b)
    moov = dict(top_level_boxes(a))[b"moov"]
    children = [kind for kind, _ in top_level_boxes(moov)]
    assert children == [b"mvhd", b"trak"]
    timescale, duration = struct.unpack_from(">II", dict(top_level_boxes(moov))[b"mvhd"], 12)
    assert duration / timescale == 5


async def test_storage_counts_authorization_headers(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = await finished_output(http, emulator)
    async with http.get(url, headers=auth(emulator)) as resp:
        await resp.read()
    assert emulator.counters.storage_requests == 1
    assert emulator.counters.storage_auth_headers == 1


async def test_storage_404s_until_the_job_succeeded(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW)
    rid = (await submit(http, emu))["request_id"]
    async with http.get(f"{emu.storage_url}/outputs/{rid}/output.mp4") as resp:
        assert resp.status == 404


async def test_download_fail_rate_answers_500(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = await finished_output(http, emulator)
    emulator.faults.download_fail_rate = 1.0
    async with http.get(url) as resp:
        assert resp.status == 500
    assert emulator.counters.fault_download_fail == 1


async def test_download_truncate_rate_closes_halfway(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = await finished_output(http, emulator)
    emulator.faults.download_truncate_rate = 1.0
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.get(url) as resp:
            assert resp.status == 200
            await resp.read()
    assert emulator.counters.fault_download_truncate == 1
    assert emulator.counters.downloads_completed == 0


# -- counters, lifecycle, determinism ------------------------------------------------------


async def test_counters_are_served_without_auth_and_reset(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    await submit(http, emulator)
    async with http.get(f"{emulator.base_url}/_emulator/counters") as resp:
        body = await resp.json()
    assert body["submit"] == 1 and body["jobs_created"] == 1 and body["requests"] == 1
    assert body["jobs_in_progress"] + body["jobs_in_queue"] + body["jobs_succeeded"] == 1
    emulator.counters.reset()
    assert emulator.counters.as_dict()["submit"] == 0


async def test_lifecycle_is_strict() -> None:
    emu = Emulator()
    with pytest.raises(RuntimeError):
        _ = emu.base_url
    async with emu:
        with pytest.raises(RuntimeError):
            await emu.start()
    await emu.close()  # idempotent
    with pytest.raises(RuntimeError):
        await emu.start()
    assert "closed" in repr(emu)


async def test_chosen_ports_are_used(http: aiohttp.ClientSession) -> None:
    probe = Emulator()
    async with probe:
        api, storage = URL(probe.base_url).port, URL(probe.storage_url).port
    async with Emulator(port=api or 0, storage_port=storage or 0) as emu:
        assert (URL(emu.base_url).port, URL(emu.storage_url).port) == (api, storage)


async def test_same_seed_same_ids_and_durations(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    async def run(seed: int) -> list[tuple[str, float]]:
        emu = await make_emulator(seed=seed, time_scale=SLOW)
        rids = [(await submit(http, emu))["request_id"] for _ in range(3)]
        return [(r, emu.job(r).duration) for r in rids]

    assert await run(7) == await run(7)
    assert await run(7) != await run(8)


def test_model_profiles_scale_with_the_clip_or_not() -> None:
    rng = random.Random(0)
    grows = ModelProfile(60, 120, per_clip_second=3)
    short = [grows.draw(rng, 3) for _ in range(200)]
    long = [grows.draw(rng, 15) for _ in range(200)]
    assert sum(long) / 200 - sum(short) / 200 == pytest.approx(36, abs=8)
    flat = ModelProfile.uniform(60, 200)
    assert all(60 <= flat.draw(rng, clip) <= 200 for clip in (3, 15) for _ in range(100))
    with pytest.raises(ValueError):
        ModelProfile(10, 5)


def test_faults_validate_their_settings() -> None:
    with pytest.raises(ValueError):
        Faults(fail_rate=2)
    with pytest.raises(ValueError):
        Faults(routes={"download"})
    assert Faults(routes="status").routes == frozenset({"status"})


async def test_cli_serves_until_interrupted(http: aiohttp.ClientSession) -> None:
    root = ROOT
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runcomfy_async.emulator",
        "--port",
        "0",
        "--time-scale",
        "0.001",
        "--token",
        "cli-token",
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=root,
    )
    assert proc.stdout is not None
    lines: dict[str, str] = {}
    try:
        while "token" not in lines:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "the emulator exited early"
            name, sep, value = line.strip().partition(": ")
            if sep:
                lines[name] = value.strip()
        assert lines["token"] == "cli-token"
        async with http.get(f"{lines['base_url']}/_emulator/counters") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert b"emulator stopped" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_rejects_an_unknown_fault(capsys: pytest.CaptureFixture[str]) -> None:
    from runcomfy_async.emulator import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--fault", "bogus=1"])
    assert exit_info.value.code == 2
    assert "fail_rate" in capsys.readouterr().err
