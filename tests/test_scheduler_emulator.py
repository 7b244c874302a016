"""The scheduler and fan-out through a real client against the emulator on loopback."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from runcomfy_async import (
    ClientStateError,
    JobCancelledError,
    JobFailedError,
    JobState,
    JobTimeoutError,
    KlingTextToVideo,
    NotFoundError,
    PollPolicy,
    RateLimitError,
    Result,
    RetryPolicy,
    RunComfyClient,
)
from runcomfy_async.emulator import Emulator, Faults, ModelProfile

T2V = "kling/kling-3.0/pro/text-to-video"
SCALE = 0.002  # a 100 s generation takes 0.2 s

MakeEmulator = Callable[..., Awaitable[Emulator]]


def client_for(emu: Emulator, **options: Any) -> RunComfyClient:
    options.setdefault("poll", PollPolicy(time_scale=SCALE))
    options.setdefault("requests_per_second", None)
    return RunComfyClient(emu.token, base_url=emu.base_url, **options)


def body(i: int) -> dict[str, Any]:
    return {"prompt": f"scene {i}: a lighthouse in a storm", "duration": 5}


async def test_500_concurrent_jobs_resolve_through_one_scheduler_within_budget(
    make_emulator: MakeEmulator,
) -> None:
    emu = await make_emulator(
        time_scale=SCALE, workers=500, models={T2V: ModelProfile.uniform(60, 200)}
    )
    async with client_for(emu, max_in_flight=500) as client:
        outcomes = await client.gather(T2V, [body(i) for i in range(500)])
        assert all(o.ok for o in outcomes)
        assert [o.index for o in outcomes] == list(range(500))
        assert len({o.result.request_id for o in outcomes if o.result}) == 500
        checks = emu.counters.result + emu.counters.status
        # One scheduler for everyone: about ten checks a job, where a 2 s loop
        # would spend ~65 and a 0.5 s loop ~260.
        assert checks / 500 <= 12, checks / 500
        assert emu.counters.submit == 500
        assert emu.counters.jobs_created == 500


async def test_failures_cancels_timeouts_and_vanished_ids_resolve_while_others_complete(
    make_emulator: MakeEmulator,
) -> None:
    emu = await make_emulator(time_scale=SCALE, workers=4)
    async with client_for(emu) as client:
        ok = [await client.submit(T2V, body(i)) for i in range(4)]
        queued = await client.submit(T2V, body(99))  # four workers: this one waits
        assert (await queued.cancel()).cancelled
        vanished = client.track("no-such-request-0001", T2V)
        with pytest.raises(JobTimeoutError) as timed_out:
            await ok[3].wait(timeout=0.001)
        assert isinstance(timed_out.value, TimeoutError)
        with pytest.raises(JobCancelledError):
            await queued
        with pytest.raises(NotFoundError):
            await vanished
        results = [await job for job in ok]  # the timed-out one still completes
        assert all(isinstance(r, Result) and r.video for r in results)
        assert queued.state is JobState.CANCELLED
        emu.faults = Faults(fail_rate=1.0)  # jobs that finish from now on fail
        doomed = await client.submit(T2V, body(100))
        with pytest.raises(JobFailedError) as failed:
            await doomed
        assert failed.value.error  # the server's payload, kept


async def test_faults_on_checks_do_not_stop_the_scheduler(make_emulator: MakeEmulator) -> None:
    faults = Faults(
        rate_500=0.15, rate_502=0.1, html_rate=0.5, drop_rate=0.1, routes={"result", "status"}
    )
    emu = await make_emulator(time_scale=SCALE, workers=50, faults=faults, seed=7)
    async with client_for(emu) as client:
        outcomes = await client.gather(T2V, [body(i) for i in range(60)])
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
        assert emu.counters.fault_500 + emu.counters.fault_502 + emu.counters.fault_drop > 0
        assert client.poll_stats.check_failures > 0
        assert emu.counters.jobs_created == 60


async def test_cancelling_awaiting_tasks_keeps_the_job_tracked(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(time_scale=SCALE)
    async with client_for(emu) as client:
        job = await client.submit(T2V, body(1))
        waiters = [asyncio.create_task(job.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        waiters[0].cancel()
        waiters[1].cancel()
        result = await waiters[2]
        assert result.request_id == job.request_id
        assert (await job).request_id == job.request_id  # later waits work too
        for task in waiters[:2]:
            assert task.cancelled()


async def test_close_mid_flight_fails_pending_jobs_and_leaves_no_task(
    make_emulator: MakeEmulator,
) -> None:
    emu = await make_emulator(time_scale=0.05, workers=100)  # jobs take 3 s or more
    before = asyncio.all_tasks()
    client = client_for(emu, poll=PollPolicy(time_scale=0.05), max_in_flight=100)
    jobs = await asyncio.gather(*(client.submit(T2V, body(i)) for i in range(100)))
    waiting = [asyncio.create_task(j.wait()) for j in jobs]
    await asyncio.sleep(0.05)
    await client.aclose()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ClientStateError) for r in results)
    assert "client.track" in str(results[0])
    assert asyncio.all_tasks() - before == set()
    with pytest.raises(ClientStateError):
        await client.submit(T2V, body(0))
    gc.collect()  # an unclosed session would warn here (warnings are errors)


async def test_a_job_adopted_by_request_id_resolves(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(time_scale=SCALE)
    async with client_for(emu) as first:
        request_id = (await first.submit(KlingTextToVideo(prompt="a heron at dawn"))).request_id
    async with client_for(emu) as second:  # e.g. a new process after a crash
        job = second.track(request_id, T2V)
        result = await job.wait(timeout=30)
        assert result.request_id == request_id
        assert result.video is not None
        assert emu.counters.jobs_created == 1


async def test_map_yields_in_completion_order_with_keys_and_errors(
    make_emulator: MakeEmulator,
) -> None:
    emu = await make_emulator(time_scale=SCALE, workers=10)
    async with client_for(emu) as client:
        payloads = [body(i) for i in range(8)] + [{"prompt": ""}]  # the last is invalid
        keys = [f"k{i}" for i in range(9)]
        seen = [o async for o in client.map(T2V, payloads, concurrency=3, keys=keys)]
        assert sorted(o.index for o in seen) == list(range(9))
        bad = next(o for o in seen if o.index == 8)
        assert not bad.ok and bad.job is None and isinstance(bad.error, ValueError)
        assert {o.key for o in seen} == set(keys)
        assert sum(o.ok for o in seen) == 8
        assert emu.counters.jobs_created == 8  # nothing paid for the bad one


async def test_map_never_has_more_than_concurrency_jobs_in_flight(
    make_emulator: MakeEmulator,
) -> None:
    emu = await make_emulator(time_scale=SCALE, workers=50)
    async with client_for(emu) as client:
        peak = 0

        def watch(_: object) -> None:
            nonlocal peak
            peak = max(peak, client.in_flight)

        client.add_listener(watch)
        outcomes = [o async for o in client.map(T2V, [body(i) for i in range(30)], concurrency=4)]
        assert len(outcomes) == 30
        assert 1 <= peak <= 4


async def test_client_max_in_flight_bounds_plain_submits(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(time_scale=SCALE, workers=50)
    async with client_for(emu, max_in_flight=2) as client:
        a = await client.submit(T2V, body(1))
        b = await client.submit(T2V, body(2))
        third = asyncio.create_task(client.submit(T2V, body(3)))
        await asyncio.sleep(0.01)
        assert not third.done()  # waits for a slot
        await a
        c = await third
        await asyncio.gather(b.wait(), c.wait())
        assert client.in_flight == 0


async def test_leaving_map_early_stops_submitting(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(time_scale=SCALE, workers=50)
    async with client_for(emu) as client:
        async for _ in client.map(T2V, [body(i) for i in range(50)], concurrency=2):
            break
        await asyncio.sleep(0.05)
        assert emu.counters.jobs_created <= 3


async def test_as_completed_yields_each_job_once(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(time_scale=SCALE, workers=10)
    async with client_for(emu) as client:
        jobs = [await client.submit(T2V, body(i)) for i in range(5)]
        done = [job async for job in client.as_completed(jobs, timeout=30)]
        assert sorted(j.request_id for j in done) == sorted(j.request_id for j in jobs)
        assert all(j.done for j in done)


async def test_events_stream_reports_states_and_ends_on_close(make_emulator: MakeEmulator) -> None:
    emu = await make_emulator(time_scale=SCALE, workers=1)
    client = client_for(emu)
    states: list[JobState] = []

    async def collect() -> None:
        async for event in client.events():
            states.append(event.state)

    collector = asyncio.create_task(collect())
    await asyncio.sleep(0)
    jobs = [await client.submit(T2V, body(i)) for i in range(2)]
    await asyncio.gather(*(j.wait() for j in jobs))
    await client.aclose()
    await asyncio.wait_for(collector, 5)  # the stream ended with the client
    assert JobState.QUEUED in states
    assert states.count(JobState.SUCCEEDED) == 2


async def test_429_on_submits_lowers_the_in_flight_cap(
    make_emulator: MakeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every submit is answered 429 until the cap has come down; the API's own
    # retries (two here) give up, the client lowers its cap and waits a slot.
    emu = await make_emulator(time_scale=SCALE, workers=50)
    async with client_for(emu, max_in_flight=8, retry=RetryPolicy.no_wait(attempts=2)) as client:
        capacities: list[int] = []
        cap_class = type(client.limits.slots)
        lower = cap_class.on_rate_limited

        def record(cap: Any) -> None:
            lower(cap)
            capacities.append(cap.capacity)
            if cap.capacity <= 4:
                emu.faults = Faults()  # the account accepts work again

        monkeypatch.setattr(cap_class, "on_rate_limited", record)
        emu.faults = Faults(rate_429=1.0, retry_after=0.01, routes="submit")
        outcomes = await client.gather(T2V, [body(i) for i in range(12)], concurrency=8)
        assert capacities and min(capacities) < 8
        ok = [o for o in outcomes if o.ok]
        assert all(isinstance(o.error, RateLimitError) for o in outcomes if not o.ok)
        assert emu.counters.jobs_created == len(ok) > 0
