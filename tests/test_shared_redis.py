"""RedisLimits against a real redis-server on loopback (see tests/servers.py)."""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from runcomfy_async import Limits, PollPolicy, RunComfyClient, RunComfyError
from runcomfy_async._errors import ClientStateError
from runcomfy_async.emulator import Emulator
from runcomfy_async.shared import RedisLimits, SharedLimitsError
from runcomfy_async.shared._redis import safe_url
from tests.servers import free_port, redis_server, redis_url

__all__ = ["redis_url"]  # the fixture, imported for pytest

SUBMIT, CHECK = 0, 2
ROOT = Path(__file__).resolve().parent.parent
_POLL = PollPolicy(time_scale=0.005)


def _key() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


async def test_two_processes_share_one_bucket(redis_url: str) -> None:
    key = _key()
    # Burst 1 and 0.5 tokens a second: after one grant, the next is 2 s away.
    async with (
        RedisLimits(redis_url, key=key, requests_per_second=0.5) as a,
        RedisLimits(redis_url, key=key, requests_per_second=0.5) as b,
    ):
        await a.acquire_request(SUBMIT)
        with anyio.move_on_after(0.5) as scope:
            await b.acquire_request(SUBMIT)
        assert scope.cancelled_caught, "b got a token a had already taken"
        assert (await a.counters())["granted"] == 1


async def test_other_keys_do_not_share(redis_url: str) -> None:
    async with (
        RedisLimits(redis_url, key=_key(), requests_per_second=0.5) as a,
        RedisLimits(redis_url, key=_key(), requests_per_second=0.5) as b,
    ):
        await a.acquire_request(SUBMIT)
        with anyio.fail_after(5):
            await b.acquire_request(SUBMIT)


async def test_a_429_halves_the_rate_for_everyone_once_a_second(redis_url: str) -> None:
    key = _key()
    async with (
        RedisLimits(redis_url, key=key, requests_per_second=40) as a,
        RedisLimits(redis_url, key=key, requests_per_second=40) as b,
    ):
        await a.on_rate_limited(0.0)
        assert await b.rate() == 20.0
        await b.on_rate_limited(0.0)  # the same burst of 429s: one signal
        assert await a.rate() == 20.0
        assert (await a.counters())["rate_limited"] == 2


async def test_a_429_pauses_every_process_for_retry_after(redis_url: str) -> None:
    key = _key()
    async with (
        RedisLimits(redis_url, key=key, requests_per_second=100) as a,
        RedisLimits(redis_url, key=key, requests_per_second=100) as b,
    ):
        await a.on_rate_limited(1.5)
        with anyio.move_on_after(0.5) as scope:
            await b.acquire_request(SUBMIT)
        assert scope.cancelled_caught, "b was not paused by a's 429"
        with anyio.fail_after(5):
            await b.acquire_request(SUBMIT)


async def test_successes_win_the_rate_back_up_to_the_ceiling(redis_url: str) -> None:
    key = _key()
    async with RedisLimits(redis_url, key=key, requests_per_second=10) as a:
        await a.on_rate_limited(0.0)
        assert await a.rate() == 5.0
        for _ in range(200):
            await a.on_success()
    # Closing flushes the counted successes.
    async with RedisLimits(redis_url, key=key, requests_per_second=10) as b:
        rate = await b.rate()
        assert 5.0 < rate <= 10.0


async def test_demand_grows_the_shared_rate_by_slow_start_until_a_429(redis_url: str) -> None:
    key = _key()
    opts: dict[str, Any] = {"key": key, "requests_per_second": 10, "max_requests_per_second": 500}
    async with RedisLimits(redis_url, **opts) as a:
        for _ in range(100):
            await a.on_success(waiting=False)
    async with RedisLimits(redis_url, **opts) as a:
        assert await a.rate() == 10.0  # no demand past the rate: no growth
        # ln 2 / 0.25 s an answer (as the in-memory budget): 100 answers with
        # callers waiting add ~277/s, where additive increase would add ~25.
        for _ in range(100):
            await a.on_success(waiting=True)
    async with RedisLimits(redis_url, **opts) as a:
        grown = await a.rate()
        assert grown == pytest.approx(10.0 + 100 * math.log(2) / 0.25)
        for _ in range(200):
            await a.on_success(waiting=True)
    async with RedisLimits(redis_url, **opts) as a:
        assert await a.rate() == 500.0  # the ceiling


async def test_by_default_the_shared_rate_never_grows_past_the_configured_one(
    redis_url: str,
) -> None:
    key = _key()
    async with RedisLimits(redis_url, key=key, requests_per_second=10) as a:
        assert a.max_requests_per_second == 10.0  # the account's limit, as told
        for _ in range(200):
            await a.on_success(waiting=True)
    async with RedisLimits(redis_url, key=key, requests_per_second=10) as a:
        assert await a.rate() == 10.0


async def test_after_a_429_demand_grows_the_shared_rate_additively(redis_url: str) -> None:
    key = _key()
    opts: dict[str, Any] = {"key": key, "requests_per_second": 10, "max_requests_per_second": 2000}
    async with RedisLimits(redis_url, **opts) as a:
        await a.on_rate_limited(0.0)  # 10 -> 5; slow start is over
        for _ in range(1000):
            await a.on_success(waiting=True)
    async with RedisLimits(redis_url, **opts) as a:
        rate = await a.rate()
    # Won back to 9 (2% an answer), slowly past the 10 that drew the 429 (0.1%
    # an answer up to 11), then +2.5/s a second of demand (2.5 / rate an
    # answer): ~60/s after a thousand answers. Slow start would be near 2000.
    assert 30.0 < rate < 100.0


async def test_checks_keep_a_share_while_submits_wait(redis_url: str) -> None:
    key = _key()
    granted = {SUBMIT: 0, CHECK: 0}

    async def spin(limits: RedisLimits, prio: int) -> None:
        while True:
            await limits.acquire_request(prio)
            granted[prio] += 1

    async with (
        RedisLimits(redis_url, key=key, requests_per_second=20) as a,
        RedisLimits(redis_url, key=key, requests_per_second=20) as b,
    ):
        with anyio.move_on_after(2.0):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(spin, a, SUBMIT)
                    tg.start_soon(spin, b, CHECK)
    total = granted[SUBMIT] + granted[CHECK]
    assert total > 20
    assert granted[SUBMIT] > granted[CHECK], granted
    assert granted[CHECK] >= 0.1 * total, granted


async def test_the_in_flight_cap_holds_across_processes(redis_url: str) -> None:
    key = _key()
    current = peak = 0

    async def job(limits: RedisLimits) -> None:
        nonlocal current, peak
        lease = await limits.acquire_slot()
        current += 1
        peak = max(peak, current)
        await anyio.sleep(0.02)
        current -= 1
        await limits.release_slot(lease)

    async with (
        RedisLimits(redis_url, key=key, max_in_flight=3) as a,
        RedisLimits(redis_url, key=key, max_in_flight=3) as b,
    ):
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(40):
                    tg.start_soon(job, a if i % 2 else b)
        assert await a.in_flight() == 0
    assert peak == 3


async def test_a_released_slot_lets_a_waiter_in(redis_url: str) -> None:
    key = _key()
    async with (
        RedisLimits(redis_url, key=key, max_in_flight=1) as a,
        RedisLimits(redis_url, key=key, max_in_flight=1) as b,
    ):
        lease = await a.acquire_slot()
        with anyio.move_on_after(0.3) as scope:
            await b.acquire_slot()
        assert scope.cancelled_caught
        await a.release_slot(lease)
        with anyio.fail_after(5):
            await b.acquire_slot()
        assert await a.in_flight() == 1
        # Adopting a job already in flight may go past the cap.
        await a.adopt_slot()
        assert await a.in_flight() == 2


async def test_a_429_to_a_submit_lowers_the_shared_capacity_until_jobs_finish(
    redis_url: str,
) -> None:
    key = _key()
    async with (
        RedisLimits(redis_url, key=key, max_in_flight=4) as a,
        RedisLimits(redis_url, key=key, max_in_flight=4) as b,
    ):
        leases = [await a.acquire_slot() for _ in range(3)]
        assert await a.on_slot_rate_limited() == 2
        assert await b.capacity() == 2
        await a.release_slot(leases.pop())
        with anyio.move_on_after(0.3) as scope:  # 2 in flight, capacity 2
            await b.acquire_slot()
        assert scope.cancelled_caught
        await a.release_slot(leases.pop())
        with anyio.fail_after(5):
            await b.acquire_slot()
        for _ in range(10):
            await a.on_job_finished()
    # Closing flushes the finished jobs: two slots back, up to the configured cap.
    async with RedisLimits(redis_url, key=key, max_in_flight=4) as c:
        assert await c.capacity() == 4


async def test_leases_of_a_living_process_are_renewed(redis_url: str) -> None:
    key = _key()
    async with RedisLimits(redis_url, key=key, max_in_flight=2, lease_seconds=0.6) as a:
        await a.acquire_slot()
        await anyio.sleep(1.5)  # well past one lease: only renewal keeps it
        assert await a.in_flight() == 1
        assert a.lost_leases == 0


_HOLDER = textwrap.dedent(
    """
    import sys, anyio
    from runcomfy_async.shared import RedisLimits

    async def main():
        async with RedisLimits(sys.argv[1], key=sys.argv[2], max_in_flight=2,
                               lease_seconds=1.0) as limits:
            await limits.acquire_slot()
            await limits.acquire_slot()
            print("ready", flush=True)
            await anyio.sleep(600)

    anyio.run(main)
    """
)


async def test_a_sigkilled_process_leaks_no_slot(redis_url: str) -> None:
    key = _key()
    proc = await anyio.open_process(
        [sys.executable, "-c", _HOLDER, redis_url, key], stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        seen = b""
        with anyio.fail_after(30):
            while b"ready" not in seen:
                seen += await proc.stdout.receive()
        async with RedisLimits(redis_url, key=key, max_in_flight=2, lease_seconds=1.0) as me:
            assert await me.in_flight() == 2
            await anyio.sleep(1.2)  # the holder is alive: it renewed its leases
            assert await me.in_flight() == 2
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            with anyio.fail_after(5):
                await me.acquire_slot()
                await me.acquire_slot()
            assert await me.in_flight() == 2
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.aclose()


async def test_closing_releases_slots_and_refuses_further_use(redis_url: str) -> None:
    key = _key()
    async with RedisLimits(redis_url, key=key, max_in_flight=2) as a:
        await a.acquire_slot()
        assert a.held == 1
    with pytest.raises(ClientStateError):
        await a.acquire_request(SUBMIT)
    with pytest.raises(ClientStateError):
        await a.acquire_slot()
    async with RedisLimits(redis_url, key=key, max_in_flight=2) as b:
        assert await b.in_flight() == 0


async def test_a_waiter_is_told_when_the_limits_close(redis_url: str) -> None:
    errors: list[BaseException] = []

    async def wait_for_slot(limits: RedisLimits) -> None:
        try:
            await limits.acquire_slot()
        except ClientStateError as exc:
            errors.append(exc)

    async with (
        anyio.create_task_group() as tg,
        RedisLimits(redis_url, key=_key(), max_in_flight=1) as a,
    ):
        await a.acquire_slot()
        tg.start_soon(wait_for_slot, a)
        await anyio.sleep(0.1)
    assert len(errors) == 1


async def test_unopened_limits_refuse_use(redis_url: str) -> None:
    limits = RedisLimits(redis_url, key=_key())
    with pytest.raises(ClientStateError, match="open the shared limits first"):
        await limits.acquire_request(SUBMIT)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        RedisLimits("redis://127.0.0.1:1/0", key="k", requests_per_second=0)
    with pytest.raises(ValueError):
        RedisLimits("redis://127.0.0.1:1/0", key="k", max_in_flight=0)


# -- RedisLimits as the client's Limits ---------------------------------------------------

MODEL = "kling/kling-3.0/pro/text-to-video"


def test_redis_limits_implement_the_client_protocol() -> None:
    limits = RedisLimits("redis://127.0.0.1:1/0", key="k")
    assert isinstance(limits, Limits)
    assert limits.slots.capacity == 64 and limits.slots.in_flight == 0
    assert limits.budget.rate == 20.0


async def test_clients_in_two_processes_share_one_in_flight_cap(
    redis_url: str, make_emulator: Callable[..., Awaitable[Emulator]]
) -> None:
    # Two clients on one loop stand for two processes: they share nothing but Redis.
    emu = await make_emulator(time_scale=0.005, workers=50)
    key = _key()
    opts: dict[str, Any] = {"key": key, "max_in_flight": 3, "requests_per_second": 200}
    async with (
        RedisLimits(redis_url, **opts) as la,
        RedisLimits(redis_url, **opts) as lb,
        RunComfyClient(emu.token, base_url=emu.base_url, limits=la, poll=_POLL) as a,
        RunComfyClient(emu.token, base_url=emu.base_url, limits=lb, poll=_POLL) as b,
    ):
        with anyio.fail_after(60):
            results = await asyncio.gather(
                *(
                    (a if i % 2 else b).run(MODEL, {"prompt": f"fox {i}", "duration": 3})
                    for i in range(12)
                )
            )
        assert a.in_flight == b.in_flight == 0
        await anyio.sleep(0.3)  # releases are flushed at once, in the background
        assert await la.in_flight() == 0
        assert la.budget.granted + lb.budget.granted == emu.counters.requests
    assert len({r.request_id for r in results}) == 12
    # The emulator counts the account's concurrent jobs: never above the shared cap.
    assert emu.counters.max_active_per_token[emu.token] == 3


async def test_a_429_seen_by_one_client_slows_the_other(
    redis_url: str, make_emulator: Callable[..., Awaitable[Emulator]]
) -> None:
    emu = await make_emulator(time_scale=0.005)
    key = _key()
    async with (
        RedisLimits(redis_url, key=key, requests_per_second=40) as la,
        RedisLimits(redis_url, key=key, requests_per_second=40) as lb,
    ):
        la.budget.on_rate_limited(1.0)
        await anyio.sleep(0.3)  # the flusher sends it at once
        assert await lb.rate() == 20.0
        assert (await lb.counters())["rate_limited"] == 1
        start = anyio.current_time()
        async with RunComfyClient(emu.token, base_url=emu.base_url, limits=lb) as b:
            await b.submit(MODEL, {"prompt": "paused"})
            assert anyio.current_time() - start >= 0.5  # b waited out a's Retry-After
            assert lb.slots.in_flight == 1


async def test_successes_through_the_protocol_win_the_rate_back(redis_url: str) -> None:
    key = _key()
    async with RedisLimits(redis_url, key=key, requests_per_second=10) as a:
        await a.on_rate_limited(0.0)
        for _ in range(100):
            a.budget.on_success()
        await anyio.sleep(0.5)
        assert 5.0 < await a.rate() <= 10.0
        assert a.budget.rate == await a.rate()


async def test_adopted_jobs_count_and_released_slots_go_back(redis_url: str) -> None:
    key = _key()
    async with (
        RedisLimits(redis_url, key=key, max_in_flight=1) as a,
        RedisLimits(redis_url, key=key, max_in_flight=1) as b,
    ):
        a.slots.force_acquire()
        a.slots.force_acquire()  # adopted jobs may pass the cap
        await anyio.sleep(0.3)
        assert a.slots.in_flight == 2 and await b.in_flight() == 2
        with anyio.move_on_after(0.3) as scope:
            await b.slots.acquire()
        assert scope.cancelled_caught
        a.slots.release()
        a.slots.release()
        with anyio.fail_after(5):
            await b.slots.acquire()
        assert b.slots.in_flight == 1 and a.slots.in_flight == 0


async def test_a_429_to_a_submit_lowers_the_capacity_of_every_process(redis_url: str) -> None:
    key = _key()
    async with (
        RedisLimits(redis_url, key=key, max_in_flight=4) as a,
        RedisLimits(redis_url, key=key, max_in_flight=4) as b,
    ):
        for _ in range(3):
            await a.slots.acquire()
        a.slots.on_rate_limited()
        a.slots.release()
        await anyio.sleep(0.3)
        assert await b.capacity() == 2 and b.slots.capacity == 2
        with anyio.move_on_after(0.3) as scope:
            await b.slots.acquire()  # 2 held by a, capacity 2
        assert scope.cancelled_caught
        for _ in range(10):
            a.slots.on_job_finished()
        await anyio.sleep(0.5)
        assert await b.capacity() == 4


async def test_closing_the_client_protocol_fails_waiters_with_client_state_error(
    redis_url: str,
) -> None:
    async with RedisLimits(redis_url, key=_key(), max_in_flight=1) as a:
        await a.slots.acquire()
        errors: list[BaseException] = []

        async def wait() -> None:
            try:
                await a.slots.acquire()
            except ClientStateError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.1)
            a.slots.close()
        assert len(errors) == 1
        with pytest.raises(ClientStateError):
            await a.slots.acquire()
        a.budget.close()
        with pytest.raises(ClientStateError):
            await a.budget.acquire()


async def test_a_cancelled_slot_waiter_takes_no_slot(redis_url: str) -> None:
    async with RedisLimits(redis_url, key=_key(), max_in_flight=1) as a:
        await a.slots.acquire()
        with anyio.move_on_after(0.2):
            await a.slots.acquire()
        a.slots.release()
        await anyio.sleep(0.3)
        assert await a.in_flight() == 0
        with anyio.fail_after(5):
            await a.slots.acquire()


# -- Redis failures ---------------------------------------------------------------------


def test_the_password_never_shows_in_the_url() -> None:
    limits = RedisLimits("redis://app:s3cret@cache.internal:6380/2", key="k")
    assert limits.url == "redis://app@cache.internal:6380/2"
    assert "s3cret" not in repr(limits)
    assert safe_url("redis://:pw@h/0") == "redis://h/0"
    assert safe_url("redis://h:1/0") == "redis://h:1/0"


async def test_an_unreachable_redis_is_a_shared_limits_error_naming_the_url() -> None:
    port = free_port()
    with pytest.raises(SharedLimitsError) as info:
        async with RedisLimits(f"redis://user:hunter2@127.0.0.1:{port}/0", key="k"):
            pass  # pragma: no cover - never opens
    assert isinstance(info.value, RunComfyError)
    message = str(info.value)
    assert f"redis://user@127.0.0.1:{port}/0" in message
    assert "hunter2" not in message
    assert info.value.url == f"redis://user@127.0.0.1:{port}/0"


async def test_redis_going_away_fails_a_waiting_submit_but_not_a_check(
    make_emulator: Callable[..., Awaitable[Emulator]],
) -> None:
    emu = await make_emulator(time_scale=0.005)
    with redis_server() as (url, server):
        async with (
            RedisLimits(url, key=_key(), requests_per_second=100) as limits,
            RunComfyClient(emu.token, base_url=emu.base_url, limits=limits) as client,
        ):
            await client.submit(MODEL, {"prompt": "ok"})
            server.terminate()
            server.wait(10)
            with pytest.raises(SharedLimitsError, match=f"Redis at {url}"):
                await client.submit(MODEL, {"prompt": "not sent"})
            assert emu.counters.submit == 1
            check = asyncio.ensure_future(limits.budget.acquire())
            await anyio.sleep(0.3)
            assert not check.done()  # checks wait for Redis to come back
            check.cancel()


def test_the_default_client_imports_no_redis() -> None:
    code = (
        "import sys, runcomfy_async\n"
        "runcomfy_async.RunComfyClient('t', base_url='http://127.0.0.1:9')\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
