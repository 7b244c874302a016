"""One name, one meaning: the settled names of ``Job`` and their deprecated aliases.

The rule (``_client.py``'s docstring): properties are cheap local state
(``job.done``, ``job.state``, ``job.error``), network verbs are async methods,
``state`` is a ``JobState``, ``job.cancel()`` answers like ``client.cancel()``,
and a job adopted with ``track()`` is ``UNKNOWN`` until its first check. The
first release's names still work for one release, each with a
``DeprecationWarning`` naming its replacement.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from runcomfy_async import (
    CancelOutcome,
    JobFailedError,
    JobState,
    JobTimeoutError,
    PollPolicy,
    Request,
    Response,
    Result,
    RetryPolicy,
    RunComfyClient,
)
from runcomfy_async.testing import MockTransport

RID = "0f3c9a52-1d2b-4c6e-9a7f-5b8d2e4c6a10"
MODEL = "vendor/model"


def _json(status: int, body: Any) -> Response:
    return Response(status, {}, json.dumps(body).encode())


class Server:
    """A scripted API: ``state`` is what the result and status routes say now."""

    def __init__(self, state: str = "in_queue", cancel: str = "cancelled") -> None:
        self.state = state
        self.cancel_answer = cancel
        self.seen: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request)
        if request.method == "POST" and request.path.endswith("/cancel"):
            if self.cancel_answer == "cancelled":
                self.state = "cancelled"
            return _json(202, {"request_id": RID, "outcome": self.cancel_answer})
        if request.method == "POST":
            return _json(200, {"request_id": RID})
        body: dict[str, Any] = {"request_id": RID, "status": self.state}
        if self.state == "completed":
            body["output"] = {"video": "https://cdn.example.com/v.mp4"}
        if self.state == "failed":
            body["error"] = {"message": "out of memory"}
        return _json(200, body)

    def sent(self, what: Callable[[Request], bool]) -> int:
        return sum(1 for r in self.seen if what(r))


def _client(server: Server) -> RunComfyClient:
    return RunComfyClient(
        transport=MockTransport(server),
        validate_inputs=False,
        requests_per_second=None,
        retry=RetryPolicy.no_wait(),
        # Checks come fast, and at the first check of an unknown model.
        poll=PollPolicy(time_scale=0.001),
    )


def _is_cancel(r: Request) -> bool:
    return r.path.endswith("/cancel")


# -- done: a property, like Result.done ---------------------------------------------------


async def test_job_done_is_a_property_that_reads_as_a_bool() -> None:
    server = Server(state="completed")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        assert not job.done and job.done == False  # noqa: E712 - it compares like a bool
        assert repr(job.done) == "False" and f"{job.done}" == "False"
        await job
        assert job.done and job.done == True  # noqa: E712
        assert repr(job.done) == "True"


async def test_calling_job_done_still_works_with_a_deprecation_warning() -> None:
    server = Server(state="completed")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        with pytest.warns(DeprecationWarning, match=r"job\.done\(\).*property job\.done"):
            assert job.done() is False
        await job
        with pytest.warns(DeprecationWarning):
            assert job.done() is True


# -- state: a JobState; status names client.status() -------------------------------------


async def test_job_state_is_the_last_state_and_status_is_its_deprecated_alias() -> None:
    server = Server(state="in_progress")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        assert job.state is JobState.QUEUED  # accepted just now, not checked yet
        for _ in range(200):
            if job.state is JobState.RUNNING:
                break
            await asyncio.sleep(0.005)
        assert job.state is JobState.RUNNING
        with pytest.warns(DeprecationWarning, match=r"Job\.status.*Job\.state"):
            assert job.status is JobState.RUNNING
        assert "in_progress" in repr(job)
        status = await client.status(job.request_id)  # the network verb: a Status
        assert status.state is JobState.RUNNING


# -- the result of a job, locally ---------------------------------------------------------


async def test_result_nowait_is_local_and_refuses_an_unfinished_job() -> None:
    server = Server(state="in_queue")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        sent = len(server.seen)
        with pytest.raises(asyncio.InvalidStateError, match=job.request_id):
            job.result_nowait()
        assert job.error is None
        assert len(server.seen) == sent  # nothing was asked of the API
        server.state = "completed"
        result = await job
        assert job.result_nowait() is result and job.error is None
        with pytest.warns(DeprecationWarning, match=r"Job\.result\(\).*result_nowait"):
            assert job.result() is result
        with pytest.warns(DeprecationWarning, match=r"Job\.outcome\(\).*Job\.error"):
            assert job.outcome() is result


async def test_a_failed_job_has_its_error_and_result_nowait_raises_it() -> None:
    server = Server(state="failed")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        with pytest.raises(JobFailedError):
            await job
        assert isinstance(job.error, JobFailedError)
        assert job.state is JobState.FAILED
        with pytest.raises(JobFailedError) as info:
            job.result_nowait()
        assert info.value is job.error


# -- cancel: the same answer from the job and from the client -----------------------------


async def test_job_cancel_returns_the_cancel_outcome_of_client_cancel() -> None:
    server = Server(state="in_queue")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        outcome = await job.cancel()
        assert isinstance(outcome, CancelOutcome)
        assert outcome.cancelled and outcome.request_id == job.request_id
        refused = Server(state="in_progress", cancel="not_cancellable")
        async with _client(refused) as other:
            running = await other.submit(MODEL, {"prompt": "y"})
            from_job = await running.cancel()
            from_client = await other.cancel(running.request_id)
            assert from_job == from_client
            assert not from_job.cancelled and from_job.outcome == "not_cancellable"


async def test_cancelling_a_finished_job_sends_nothing_and_says_not_cancellable() -> None:
    server = Server(state="completed")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        await job
        outcome = await job.cancel()
        assert outcome == CancelOutcome(job.request_id, "not_cancellable", JobState.SUCCEEDED)
        assert server.sent(_is_cancel) == 0


async def test_testing_a_cancel_outcome_for_truth_is_deprecated() -> None:
    outcome = CancelOutcome(RID, "cancelled", JobState.CANCELLED)
    with pytest.warns(DeprecationWarning, match=r"outcome\.cancelled"):
        assert outcome  # what 'if await job.cancel():' did when it returned a bool
    refused = CancelOutcome(RID, "not_cancellable", JobState.RUNNING)
    with pytest.warns(DeprecationWarning):
        assert not refused


async def test_a_timeout_that_cannot_cancel_says_the_job_keeps_running() -> None:
    server = Server(state="in_progress", cancel="not_cancellable")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        with pytest.raises(JobTimeoutError, match=r"refused to cancel.*keeps running and billing"):
            await job.wait(0.05, cancel_on_timeout=True)
        assert server.sent(_is_cancel) == 1


# -- an adopted job: unknown until checked ------------------------------------------------


async def test_an_adopted_job_is_unknown_until_its_first_check() -> None:
    server = Server(state="completed")  # it finished long ago
    async with _client(server) as client:
        job = client.track(RID, MODEL)
        assert job.state is JobState.UNKNOWN and not job.done
        assert "unknown" in repr(job)
        result = await asyncio.wait_for(job.wait(), 5)
        assert isinstance(result, Result)
        assert job.state is JobState.SUCCEEDED


async def test_an_adopted_job_still_running_moves_from_unknown_to_running() -> None:
    server = Server(state="in_progress")
    async with _client(server) as client:
        job = client.track(RID, MODEL)
        assert job.state is JobState.UNKNOWN
        for _ in range(400):
            if job.state is not JobState.UNKNOWN:
                break
            await asyncio.sleep(0.005)
        assert job.state is JobState.RUNNING


async def test_a_submitted_job_starts_queued_not_unknown() -> None:
    server = Server(state="in_queue")
    async with _client(server) as client:
        job = await client.submit(MODEL, {"prompt": "x"})
        assert job.state is JobState.QUEUED
