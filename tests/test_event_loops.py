"""One client, one event loop: what happens across two ``asyncio.run()`` calls.

A client belongs to the loop it was opened on. When that loop shuts down with
the client open, the client closes itself there (its connections released on
their own loop: no "Event loop is closed", no unclosed-session warning) and
names every job still in flight; any later use, from another loop, raises a
``ClientStateError`` that says what happened and what to do.

These tests are synchronous: each drives its own ``asyncio.run()`` calls, as a
script would. The emulator serves from its own thread. Warnings are errors in
this suite, and the unraisable-exception hook turns ``__del__`` noise into
failures too; each test also collects garbage and checks asyncio logged nothing.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Iterator

import pytest
from emuthread import ThreadedEmulator

from runcomfy_async import ClientStateError, JobState, PollPolicy, RunComfyClient
from runcomfy_async.emulator import KLING_PRO_T2V
from runcomfy_async.testing import MockTransport, Request, Response

BODY = {"prompt": "a red fox in the snow"}
RID = "0f3c9a52-1d2b-4c6e-9a7f-5b8d2e4c6a10"
#: Kling pro (90-200 s) takes 0.2-0.4 s: a job finishes within one test.
FAST = 0.002
#: A job takes minutes: it is still in flight when the first run ends.
STILL = 1.0


@pytest.fixture
def quiet_asyncio(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Fail if asyncio logs anything (destroyed pending tasks, errors in callbacks)."""
    caplog.set_level(logging.WARNING)
    yield caplog
    gc.collect()
    noise = [r for r in caplog.records if r.name == "asyncio"]
    assert noise == [], [r.getMessage() for r in noise]


def _client(te: ThreadedEmulator, scale: float) -> RunComfyClient:
    return RunComfyClient(te.emu.token, base_url=te.emu.base_url, poll=PollPolicy(time_scale=scale))


def test_a_client_used_by_a_second_asyncio_run_refuses_clearly(
    quiet_asyncio: pytest.LogCaptureFixture,
) -> None:
    with ThreadedEmulator(time_scale=FAST) as te:
        client = _client(te, FAST)  # module-level style: made outside any loop

        async def clip() -> str:
            result = await client.run(KLING_PRO_T2V, BODY, timeout=30)
            assert result.video
            return result.request_id

        asyncio.run(clip())  # no aclose(): the loop's shutdown closes the client
        assert client.closed
        with pytest.raises(ClientStateError) as info:
            asyncio.run(clip())
        message = str(info.value)
        assert "closed itself when the event loop it was opened on shut down" in message
        assert "asyncio.run()" in message and "async with RunComfyClient()" in message
        assert "in flight" not in message  # nothing was lost
        assert te.emu.counters.submit == 1  # the second run sent nothing
        asyncio.run(client.aclose())  # closing again, from another loop, is a quiet no-op
    # Nothing was in flight: the client said nothing at the loop's end.
    assert not [r for r in quiet_asyncio.records if r.name == "runcomfy_async"]


def test_jobs_in_flight_when_the_loop_ends_are_named_and_can_be_resumed(
    quiet_asyncio: pytest.LogCaptureFixture,
) -> None:
    with ThreadedEmulator(time_scale=STILL) as te:
        client = _client(te, STILL)

        async def submit() -> str:
            job = await client.submit(KLING_PRO_T2V, BODY)
            await asyncio.sleep(0.05)  # the scheduler is up and tracking it
            return job.request_id

        request_id = asyncio.run(submit())
        warned = [r.getMessage() for r in quiet_asyncio.records if r.name == "runcomfy_async"]
        assert len(warned) == 1 and request_id in warned[0] and "track(" in warned[0]
        with pytest.raises(ClientStateError, match=request_id) as info:
            asyncio.run(submit())
        assert "may still run (and bill)" in str(info.value)
        assert te.emu.counters.submit == 1
        assert te.emu.job(request_id).state in ("in_queue", "in_progress")

        async def resume() -> JobState:
            async with _client(te, STILL) as fresh:
                job = fresh.track(request_id, KLING_PRO_T2V)
                return job.state

        assert asyncio.run(resume()) is JobState.UNKNOWN  # not checked yet


def test_a_client_cannot_be_used_from_another_running_loop(
    quiet_asyncio: pytest.LogCaptureFixture,
) -> None:
    with ThreadedEmulator(time_scale=FAST) as te:
        client = _client(te, FAST)

        async def open_here() -> None:
            await client.__aenter__()

        te.call(open_here())  # opened on the emulator's loop, in its thread

        async def use_elsewhere() -> None:
            with pytest.raises(ClientStateError, match=r"still running.*another loop"):
                await client.submit(KLING_PRO_T2V, BODY)
            with pytest.raises(ClientStateError, match="another loop"):
                client.track(RID, KLING_PRO_T2V)
            with pytest.raises(ClientStateError, match="another loop"):
                await client.aclose()  # its connections live on the other loop

        asyncio.run(use_elsewhere())
        assert not client.closed and te.emu.counters.submit == 0
        te.call(client.aclose())  # closed on its own loop
        assert client.closed


def test_a_job_cannot_be_awaited_from_another_loop() -> None:
    with ThreadedEmulator(time_scale=STILL) as te:
        client = _client(te, STILL)

        async def submit() -> object:
            await client.__aenter__()
            return await client.submit(KLING_PRO_T2V, BODY)

        job = te.call(submit())

        async def wait_elsewhere() -> None:
            with pytest.raises(ClientStateError, match="belongs to the event loop"):
                await job  # type: ignore[misc]

        asyncio.run(wait_elsewhere())
        te.call(client.aclose())


def test_a_client_left_open_on_a_manually_closed_loop_is_refused_and_names_its_jobs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def queued(request: Request) -> Response:
        body = {"request_id": RID, "status": "in_queue"}
        return Response(200, {}, json.dumps(body).encode())

    client = RunComfyClient(
        transport=MockTransport(queued), validate_inputs=False, requests_per_second=None
    )
    loop = asyncio.new_event_loop()

    async def submit() -> str:
        job = await client.submit("vendor/model", {"prompt": "x"})
        await asyncio.sleep(0.01)
        return job.request_id

    # No asyncio.run(): the loop is closed without cancelling its tasks, so
    # the client never hears of it.
    assert loop.run_until_complete(submit()) == RID
    loop.close()
    caplog.set_level(logging.WARNING)
    with pytest.raises(ClientStateError, match="now closed, and was not closed first"):
        asyncio.run(client.balance())
    asyncio.run(client.aclose())  # marks it closed; nothing can run on the dead loop
    assert client.closed
    warned = [r.getMessage() for r in caplog.records if r.name == "runcomfy_async"]
    assert len(warned) == 1 and RID in warned[0] and "may still run" in warned[0]
