"""``examples/webapp.py``: an aiohttp.web app holding one client, driven concurrently.

The emulator serves from its own loop in a thread; the app and its client run
on the test's loop, on a real loopback port. ~50 concurrent clip requests must
all succeed through ONE client (every API request the emulator saw was taken
from that client's request budget), with a bounded number of checks per job,
and shutting the app down must leave no task pending.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from emuthread import ThreadedEmulator

from runcomfy_async import RunComfyClient
from runcomfy_async.emulator import Emulator, Faults

T = TypeVar("T")
SCALE = 0.001
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "webapp.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runcomfy_webapp_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


webapp = _load_example()


@pytest.fixture
def emulator_thread() -> Iterator[ThreadedEmulator]:
    with ThreadedEmulator(time_scale=SCALE, workers=64, seed=5) as te:
        yield te


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free loopback port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _configure_env(monkeypatch: pytest.MonkeyPatch, emu: Emulator) -> None:
    """Point the app at ``emu`` the way a deployment would: through the environment."""
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", emu.token)
    monkeypatch.setenv("RUNCOMFY_BASE_URL", emu.base_url)
    monkeypatch.setenv("RUNCOMFY_POLL_TIME_SCALE", str(SCALE))
    monkeypatch.setenv("RUNCOMFY_REQUESTS_PER_SECOND", "none")
    monkeypatch.setenv("RUNCOMFY_CLIP_TIMEOUT", "30")


def _assert_nothing_left(caplog: pytest.LogCaptureFixture) -> None:
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []
    gc.collect()  # an unclosed session would warn now (warnings are errors)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


@pytest.fixture
async def served(
    emulator_thread: ThreadedEmulator, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[web.Application, str]]:
    """The example app, configured from the environment like in production."""
    _configure_env(monkeypatch, emulator_thread.emu)
    app = webapp.create_app()
    runner, url = await _start(app)
    try:
        yield app, url
    finally:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_fifty_concurrent_clips_share_one_client(
    emulator_thread: ThreadedEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    emu = emulator_thread.emu
    _configure_env(monkeypatch, emu)
    app = webapp.create_app()
    runner, url = await _start(app)
    client = app[webapp.CLIENT]

    async def clip(http: aiohttp.ClientSession, i: int) -> tuple[int, Any]:
        body: dict[str, Any] = {"prompt": f"a fox, take {i}"}
        if i % 3 == 0:
            body["duration"] = 3 + i % 13
        async with http.post(f"{url}/clips", json=body) as response:
            return response.status, await response.json()

    async with aiohttp.ClientSession() as http:
        answers = await asyncio.gather(*(clip(http, i) for i in range(50)))
    await runner.cleanup()
    assert client.closed
    _assert_nothing_left(caplog)

    assert [status for status, _ in answers] == [200] * 50, answers
    ids = {body["request_id"] for _, body in answers}
    assert len(ids) == 50
    for _, body in answers:
        assert body["status"] == "succeeded"
        assert body["video"].startswith(emu.storage_url)
    assert app[webapp.CLIENT] is client  # the same client all along
    c = emu.counters
    assert c.submit == c.jobs_created == 50
    # Every request the API saw came through this one client's budget...
    assert client.budget.granted == c.requests
    # ...and its one scheduler made every check, a bounded number per job.
    assert client.poll_stats.checks == c.result + c.status
    assert (c.result + c.status) / 50 <= 15
    assert client.poll_stats.tracking == 0


async def test_async_submit_then_poll(
    served: tuple[web.Application, str], http: aiohttp.ClientSession
) -> None:
    _, url = served
    ids = []
    for i in range(10):
        async with http.post(f"{url}/clips/async", json={"prompt": f"owl {i}"}) as response:
            assert response.status == 202
            body = await response.json()
            assert response.headers["Location"] == f"/clips/{body['request_id']}"
            ids.append(body["request_id"])
    done: dict[str, Any] = {}
    for _ in range(200):
        for request_id in ids:
            if request_id in done:
                continue
            async with http.get(f"{url}/clips/{request_id}") as response:
                assert response.status == 200
                body = await response.json()
            if body["status"] == "succeeded":
                done[request_id] = body
        if len(done) == len(ids):
            break
        await asyncio.sleep(0.02)
    assert len(done) == len(ids)
    assert all(body["video"] for body in done.values())


async def test_status_of_a_job_this_process_did_not_submit_asks_the_api(
    served: tuple[web.Application, str],
    http: aiohttp.ClientSession,
) -> None:
    app, url = served
    result = await app[webapp.CLIENT].run("kling/kling-3.0/pro/text-to-video", {"prompt": "elk"})
    async with http.get(f"{url}/clips/{result.request_id}") as response:
        assert response.status == 200
        assert (await response.json())["video"] == result.video


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/clips", {"prompt": ""}, 422),
        ("/clips", {"prompt": "fox", "duration": 99}, 422),
        ("/clips", [1, 2], 400),
        ("/clips/async", {"duration": 5}, 422),
    ],
)
async def test_bad_input_is_refused_before_anything_is_paid(
    served: tuple[web.Application, str],
    http: aiohttp.ClientSession,
    emulator_thread: ThreadedEmulator,
    path: str,
    body: Any,
    status: int,
) -> None:
    _, url = served
    async with http.post(f"{url}{path}", json=body) as response:
        assert response.status == status
        answer = await response.json()
    assert answer["error"]
    if status == 422:
        assert answer["problems"]
    assert emulator_thread.emu.counters.submit == 0


async def test_not_json_is_a_400(
    served: tuple[web.Application, str], http: aiohttp.ClientSession
) -> None:
    _, url = served
    async with http.post(f"{url}/clips", data=b"prompt=fox") as response:
        assert response.status == 400


@pytest.mark.parametrize(("request_id", "status"), [("no-such-id", 404), ("bad id!", 400)])
async def test_unknown_and_malformed_ids(
    served: tuple[web.Application, str],
    http: aiohttp.ClientSession,
    request_id: str,
    status: int,
) -> None:
    _, url = served
    async with http.get(f"{url}/clips/{request_id}") as response:
        assert response.status == status


async def test_failed_jobs_answer_502_with_their_request_id(
    served: tuple[web.Application, str],
    http: aiohttp.ClientSession,
    emulator_thread: ThreadedEmulator,
) -> None:
    _, url = served
    emulator_thread.emu.faults = Faults(fail_rate=1.0)
    async with http.post(f"{url}/clips", json={"prompt": "doomed"}) as response:
        assert response.status == 502
        body = await response.json()
    assert body["error"] == "JobFailedError"
    assert body["request_id"] in emulator_thread.emu.jobs


async def test_shutdown_closes_the_client_and_leaves_nothing_pending(
    emulator_thread: ThreadedEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    emu = emulator_thread.emu
    app = webapp.create_app(
        token=emu.token,
        base_url=emu.base_url,
        poll_time_scale=SCALE,
        requests_per_second=None,
    )
    runner, url = await _start(app)
    async with aiohttp.ClientSession() as http:
        # Some clips finish; some are still being made when the app stops.
        emu.time_scale = SCALE
        async with http.post(f"{url}/clips", json={"prompt": "quick"}) as response:
            assert response.status == 200
        emu.time_scale = 1.0
        for i in range(5):
            async with http.post(f"{url}/clips/async", json={"prompt": f"slow {i}"}) as response:
                assert response.status == 202
    client: RunComfyClient = app[webapp.CLIENT]
    assert client.in_flight == 5
    await runner.cleanup()
    assert client.closed
    jobs = list(app[webapp.JOBS].values())
    assert len(jobs) == 5 and all(job.done for job in jobs)
    _assert_nothing_left(caplog)


def test_settings_from_the_environment() -> None:
    settings = webapp.settings_from_env(
        {
            "RUNCOMFY_API_TOKEN": "t",
            "RUNCOMFY_BASE_URL": "http://127.0.0.1:9",
            "RUNCOMFY_POLL_TIME_SCALE": "0.01",
            "RUNCOMFY_REQUESTS_PER_SECOND": "none",
        }
    )
    assert settings["token"] == "t"
    assert settings["base_url"] == "http://127.0.0.1:9"
    assert settings["poll_time_scale"] == 0.01
    assert settings["requests_per_second"] is None
    defaults = webapp.settings_from_env({})
    assert defaults["token"] is None and defaults["poll_time_scale"] == 1.0
    assert defaults["requests_per_second"] == 20.0
    assert defaults["redis_url"] is None and defaults["max_in_flight"] == 64
    shared = webapp.settings_from_env(
        {
            "RUNCOMFY_REDIS_URL": "redis://cache:6379/0",
            "RUNCOMFY_REDIS_KEY": "acct-1",
            "RUNCOMFY_MAX_IN_FLIGHT": "8",
        }
    )
    assert shared["redis_url"] == "redis://cache:6379/0"
    assert shared["redis_key"] == "acct-1" and shared["max_in_flight"] == 8
