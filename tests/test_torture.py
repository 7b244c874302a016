"""Cancellation and shutdown torture: the client's lifetimes hold under random abuse.

Hundreds of jobs in flight against the emulator; tasks cancelled at random
moments; ``client.aclose()`` at a random moment. Afterwards:

- no task of ours is left pending (the emulator runs on its own loop in a
  thread, so ``asyncio.all_tasks()`` holds only the client's and the test's);
- no unclosed session or other ResourceWarning (warnings are errors here, and
  ``gc.collect()`` makes them surface now, not in another test);
- no ERROR record from ``asyncio`` ("Task exception was never retrieved") or
  ``runcomfy_async``;
- every Job is done with a Result or an error (ClientStateError when the
  close cut it off); every task we did not cancel ended with a value or one of
  our errors, never a CancelledError nobody asked for.

Every run is driven by a seeded ``random.Random``: a failure names its seed.
Core bugs found here are fixed; their tests stay as regressions at the bottom.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import logging
import random
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
from emuthread import ThreadedEmulator

from runcomfy_async import (
    ClientStateError,
    Job,
    JobCancelledError,
    JobEvent,
    JobFailedError,
    JobTimeoutError,
    KlingTextToVideo,
    PollPolicy,
    Request,
    Response,
    Result,
    RetryPolicy,
    RunComfyClient,
    RunComfyError,
    SubmitOutcomeUnknown,
)
from runcomfy_async._limits import RequestBudget
from runcomfy_async._transport import AiohttpTransport
from runcomfy_async.emulator import ROUTES, Faults
from runcomfy_async.testing import MockTransport

T = TypeVar("T")
SCALE = 0.001  # a Kling pro clip (90-200 s) takes 0.09-0.2 s


@pytest.fixture
def threaded() -> Iterator[type[ThreadedEmulator]]:
    yield ThreadedEmulator


def _client(
    te: ThreadedEmulator, *, pool_size: int | None = 4096, **options: Any
) -> RunComfyClient:
    """A client of ``te``; ``pool_size=None`` keeps the default transport (pool of 64)."""
    options.setdefault("poll", PollPolicy(time_scale=SCALE))
    options.setdefault("requests_per_second", None)
    if pool_size is not None:
        # A pool larger than anything in flight: no request waits for a connection
        # (see test_requests_waiting_for_a_pooled_connection_... below).
        options["transport"] = AiohttpTransport(te.emu.base_url, te.emu.token, pool_size=pool_size)
    return RunComfyClient(te.emu.token, base_url=te.emu.base_url, **options)


def _others() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


def _assert_clean_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    pending = _others()
    assert pending == [], f"tasks left pending after close: {pending}"
    gc.collect()  # unclosed sessions and destroyed pending tasks speak up now
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.split(".")[0] in ("asyncio", "runcomfy_async")
    ]
    assert errors == [], [r.getMessage() for r in errors]


class SpuriousCancellation(Exception):
    """A task ended with CancelledError although nobody cancelled it."""


# Errors a task may legitimately end with when the close cuts its submit short.
SUBMIT_CUT_OFF = (ClientStateError, SubmitOutcomeUnknown)
# What a job may end with: done, failed by the emulator, cut off by the close,
# cancelled on the server by the test.
JOB_OUTCOMES = (Result, JobFailedError, ClientStateError, JobCancelledError)


async def _torture(
    te: ThreadedEmulator,
    seed: int,
    *,
    jobs: int,
    max_in_flight: int,
    horizon: float,
    close_at: tuple[float, float] | None = None,
    pool_size: int | None = 4096,
) -> collections.Counter[str]:
    """Submit ``jobs`` jobs, cancel a fifth of them at random, close at a random moment.

    The moment: once a random number of the jobs were submitted, plus a random
    delay (or, with ``close_at``, a random delay from the start).
    """
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    # Short retry backoffs: no test sleeps longer than it must.
    retry = RetryPolicy(initial_delay=0.001, max_delay=0.01)
    client = _client(te, max_in_flight=max_in_flight, pool_size=pool_size, retry=retry)
    events: list[JobEvent] = []
    client.add_listener(events.append)
    submitted: list[Job] = []
    we_cancelled: set[asyncio.Task[Any]] = set()

    async def one(i: int, how: str) -> Any:
        job = await client.submit(KlingTextToVideo(prompt=f"torture {seed}/{i}"))
        submitted.append(job)
        if len(submitted) >= target:
            reached.set()
        if how == "timeout":
            with contextlib.suppress(JobTimeoutError):
                return await job.wait(timeout=rng.uniform(0.0, horizon / 4))
        elif how == "server-cancel":
            await job.cancel()  # queued ones only; a no-op for the others
        elif how == "shielded":
            inner = asyncio.ensure_future(job.wait())
            # Retrieve the outcome even if our task is cancelled meanwhile.
            inner.add_done_callback(lambda f: f.cancelled() or f.exception())
            return await asyncio.shield(inner)
        return await job

    hows = ["await", "await", "timeout", "server-cancel", "shielded"]
    tasks = [loop.create_task(one(i, rng.choice(hows))) for i in range(jobs)]
    target = rng.randint(0, jobs)
    reached = asyncio.Event()

    def progress(_: object) -> None:
        if len(submitted) >= target or all(t.done() for t in tasks):
            reached.set()

    for task in tasks:
        task.add_done_callback(progress)

    def cancel(task: asyncio.Task[Any]) -> None:
        if not task.done():
            we_cancelled.add(task)
            task.cancel()

    timers = [
        loop.call_later(rng.uniform(0.0, horizon), cancel, task)
        for task in rng.sample(tasks, k=jobs // 5)
    ]
    if close_at is not None:
        await asyncio.sleep(rng.uniform(*close_at))
    else:
        await reached.wait()
        await asyncio.sleep(rng.uniform(0.0, horizon))
    await client.aclose()
    for timer in timers:
        timer.cancel()
    _, pending = await asyncio.wait(tasks, timeout=15)
    assert not pending, f"seed {seed}: {len(pending)} tasks still running after close"

    with pytest.raises(ClientStateError):
        await client.submit(KlingTextToVideo(prompt="after close"))

    seen: collections.Counter[str] = collections.Counter()
    spurious = 0
    for task in tasks:
        if task.cancelled():
            spurious += task not in we_cancelled
            seen["cancelled"] += 1
            continue
        exc = task.exception()
        if exc is None:
            value = task.result()
            assert value is None or isinstance(value, Result), (seed, value)
            seen["result" if value is not None else "gave-up-waiting"] += 1
        else:
            assert isinstance(exc, (*SUBMIT_CUT_OFF, *JOB_OUTCOMES)), (seed, repr(exc))
            seen[type(exc).__name__] += 1
    for job in submitted:
        assert job.done, f"seed {seed}: {job!r} not done after close"
        assert isinstance(job.error or job.result_nowait(), JOB_OUTCOMES), (seed, job)
    ended = {e.request_id for e in events if e.state.is_terminal}
    assert {j.request_id for j in submitted} <= ended, f"seed {seed}: a job ended silently"
    if spurious:
        raise SpuriousCancellation(f"seed {seed}: {spurious} tasks cancelled by nobody")
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_random_cancellations_and_close_leave_nothing_behind(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(seed)
    faults = Faults(
        rate_500=0.03, rate_503=0.03, drop_rate=0.01, fail_rate=0.05, routes=ROUTES, seed=seed
    )
    workers = rng.choice([32, 128, 512])
    with ThreadedEmulator(time_scale=SCALE, workers=workers, seed=seed, faults=faults) as te:
        # A cap above the job count: no submit waits for a slot (see the xfail below).
        seen = await _torture(te, seed, jobs=300, max_in_flight=1000, horizon=0.3)
        created = te.counters["jobs_created"]
    _assert_clean_shutdown(caplog)
    assert sum(seen.values()) == 300
    assert created >= seen["result"] + seen["JobFailedError"]


async def test_closing_while_map_streams_ends_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(11)
    with ThreadedEmulator(time_scale=SCALE, workers=64, seed=11) as te:
        client = _client(te, max_in_flight=1000)
        outcomes = []

        async def consume() -> None:
            inputs = [KlingTextToVideo(prompt=f"map {i}") for i in range(200)]
            async for outcome in client.map(inputs, concurrency=150):
                outcomes.append(outcome)

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(rng.uniform(0.05, 0.3))
        await client.aclose()
        await asyncio.wait_for(consumer, 10)
    assert len(outcomes) == 200
    for outcome in outcomes:
        assert (outcome.result is None) != (outcome.error is None)
        if outcome.error is not None:
            assert isinstance(outcome.error, (*SUBMIT_CUT_OFF, *JOB_OUTCOMES)), outcome
    assert any(isinstance(o.error, ClientStateError) for o in outcomes)
    _assert_clean_shutdown(caplog)


@pytest.mark.parametrize("seed", [21, 22])
async def test_cancelling_map_and_as_completed_consumers(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    rng = random.Random(seed)
    with ThreadedEmulator(time_scale=SCALE, workers=64, seed=seed) as te:
        async with _client(te, max_in_flight=1000) as client:

            async def stream() -> None:
                inputs = [KlingTextToVideo(prompt=f"stream {i}") for i in range(100)]
                async for _ in client.map(inputs, concurrency=40):
                    pass

            async def completed() -> None:
                jobs = [await client.submit(KlingTextToVideo(prompt=f"ac {i}")) for i in range(50)]
                async for job in client.as_completed(jobs):
                    with contextlib.suppress(RunComfyError):
                        job.result_nowait()

            consumers = [asyncio.create_task(stream()), asyncio.create_task(completed())]
            await asyncio.sleep(rng.uniform(0.02, 0.2))
            for consumer in consumers:
                consumer.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            # What they left behind is still tracked, and still finishes.
            leftovers = list(client._poller._jobs)
            tail = await client.gather([KlingTextToVideo(prompt="after")])
            assert tail[0].ok
            for _ in range(200):
                if client.poll_stats.tracking == 0:
                    break
                await asyncio.sleep(0.02)
            assert client.poll_stats.tracking == 0, leftovers
    _assert_clean_shutdown(caplog)


async def test_close_is_idempotent_and_concurrent_closes_agree(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with ThreadedEmulator(time_scale=1.0, seed=3) as te:  # jobs outlive the test
        client = _client(te)
        jobs = [await client.submit(KlingTextToVideo(prompt=f"c {i}")) for i in range(20)]
        await asyncio.gather(*(client.aclose() for _ in range(5)))
        await client.aclose()
    assert client.closed
    assert all(isinstance(j.error, ClientStateError) for j in jobs)
    for job in jobs:
        with pytest.raises(ClientStateError) as info:
            await job
        assert job.request_id in str(info.value)  # enough to resume it elsewhere
    _assert_clean_shutdown(caplog)


# -- focused cases: regressions of core bugs found by this campaign ---------------------


def _queued_transport(gate: asyncio.Event | None = None) -> tuple[MockTransport, list[Request]]:
    """A MockTransport: submits get ids r1, r2, ... (after ``gate`` opens); jobs stay queued."""
    sent: list[Request] = []

    async def handler(request: Request) -> Response:
        sent.append(request)
        if request.method == "POST" and request.path.startswith("/v1/models/"):
            if gate is not None:
                await gate.wait()
            body = {"request_id": f"r{sum(r.method == 'POST' for r in sent)}"}
            return Response(200, {}, json.dumps(body).encode())
        return Response(200, {}, b'{"status": "in_queue"}')

    return MockTransport(handler), sent


def _mock_client(transport: MockTransport, **options: Any) -> RunComfyClient:
    return RunComfyClient(
        "token",
        base_url="https://model-api.runcomfy.net",
        transport=transport,
        poll=PollPolicy(time_scale=SCALE),
        requests_per_second=None,
        **options,
    )


@pytest.mark.parametrize("seed", [31, 32])
async def test_torture_with_submits_waiting_for_a_slot(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with ThreadedEmulator(time_scale=SCALE, workers=64, seed=seed) as te:
        await _torture(te, seed, jobs=200, max_in_flight=20, horizon=0.4, close_at=(0.05, 0.2))
    _assert_clean_shutdown(caplog)


@pytest.mark.parametrize("seed", [41, 42])
async def test_torture_with_requests_waiting_for_a_pooled_connection(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with ThreadedEmulator(time_scale=SCALE, workers=64, seed=seed) as te:
        # 300 submits at once on the default pool of 64: most wait for a connection.
        await _torture(
            te,
            seed,
            jobs=300,
            max_in_flight=1000,
            horizon=0.4,
            close_at=(0.005, 0.01),
            pool_size=None,
        )
    _assert_clean_shutdown(caplog)


async def test_a_call_in_retry_backoff_fails_promptly_on_close() -> None:
    async def unavailable(request: Request) -> Response:
        return Response(503, {}, b"<html>503</html>")

    client = _mock_client(MockTransport(unavailable))
    call = asyncio.create_task(client.status("req-1"))
    await asyncio.sleep(0.05)  # the first answer came; the retry sleeps
    await client.aclose()
    with pytest.raises(ClientStateError):
        await asyncio.wait_for(call, 1)


async def test_submits_waiting_for_a_slot_fail_with_client_state_error_on_close() -> None:
    transport, sent = _queued_transport()
    client = _mock_client(transport, max_in_flight=1)
    await client.submit("vendor/model", {"prompt": "first"})
    waiting = [
        asyncio.create_task(client.submit("vendor/model", {"prompt": "x"})) for _ in range(3)
    ]
    await asyncio.sleep(0.01)
    await client.aclose()
    _, pending = await asyncio.wait(waiting, timeout=1)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    ends = [
        "pending" if t in pending else "cancelled" if t.cancelled() else type(t.exception())
        for t in waiting
    ]
    assert ends == [ClientStateError] * 3, ends
    assert sum(r.method == "POST" for r in sent) == 1


async def test_a_submit_answered_after_close_leaves_no_task_behind() -> None:
    gate = asyncio.Event()
    transport, _ = _queued_transport(gate)
    client = _mock_client(transport)
    submit = asyncio.create_task(client.submit("vendor/model", {"prompt": "x"}))
    await asyncio.sleep(0.01)
    await client.aclose()
    gate.set()
    try:
        job = await asyncio.wait_for(submit, 1)
    except ClientStateError as exc:
        assert "r1" in str(exc)  # the paid job can be resumed
    else:
        assert job.done, f"a closed client returned an unfinished {job!r}"
    await asyncio.sleep(0.01)
    leftover = _others()
    for task in leftover:
        task.cancel()
    await asyncio.gather(*leftover, return_exceptions=True)
    assert leftover == []


async def test_a_submit_answered_after_close_names_the_job_it_created() -> None:
    gate = asyncio.Event()
    transport, _ = _queued_transport(gate)
    client = _mock_client(transport)
    client.track("earlier", "vendor/model")  # the scheduler exists (tracking sends nothing)
    submit = asyncio.create_task(client.submit("vendor/model", {"prompt": "x"}))
    await asyncio.sleep(0.01)
    await client.aclose()
    gate.set()
    with pytest.raises(ClientStateError) as info:
        await asyncio.wait_for(submit, 1)
    assert "job r1 " in str(info.value)  # the first POST's id: the paid job can be resumed


async def test_a_cancelled_close_still_closes_everything() -> None:
    transport, _ = _queued_transport()
    client = _mock_client(transport)
    job = await client.submit("vendor/model", {"prompt": "x"})
    await asyncio.sleep(0.01)  # the dispatcher runs
    closer = asyncio.create_task(client.aclose())
    await asyncio.sleep(0)
    closer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await closer
    await client.aclose()
    assert job.done, "a job of a closed client never resolves"
    assert transport.closed, "the transport of a closed client is still open"


async def test_events_stream_ends_when_the_client_closes() -> None:
    transport, _ = _queued_transport()
    client = _mock_client(transport)
    seen: list[JobEvent] = []

    async def consume() -> None:
        async for event in client.events():
            seen.append(event)

    consumer = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    await client.aclose()
    await asyncio.wait_for(consumer, 1)
    assert seen == []


@pytest.mark.parametrize("rate", [None, 20.0])
def test_sporadic_429s_do_not_pin_the_request_rate_to_its_floor(rate: float | None) -> None:
    now = [0.0]
    budget = RequestBudget(rate, clock=lambda: now[0])
    for _ in range(12):  # one 429 every 10 s, 20 good answers in between
        now[0] += 10.0
        budget.on_rate_limited(0.1)
        for _ in range(20):
            budget.on_success()
    for _ in range(2000):  # then minutes without a single 429
        budget.on_success()
    floor = 10.0 if rate is None else rate / 2
    assert budget.rate >= floor, f"rate {budget.rate:.2f}/s after 2000 good answers"
