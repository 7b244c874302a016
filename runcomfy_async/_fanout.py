"""Fan-out: many jobs under a bound, outcomes in completion order."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from ._job import Job
from ._models import Result

if TYPE_CHECKING:
    from .inputs import ModelInput

__all__ = ["Outcome", "Submitter", "as_completed", "map_jobs"]


class Submitter(Protocol):
    """What a fan-out needs of the client: submit one job, get its :class:`Job`."""

    async def submit(
        self, model_or_input: str | ModelInput, payload: Mapping[str, Any] | None = None
    ) -> Job:
        """Submit one paid job (see ``RunComfyClient.submit``)."""
        ...


@attrs.frozen
class Outcome:
    """What became of one input of a fan-out.

    ``index`` is the input's position, ``key`` the caller's key for it (or the
    index), ``job`` the submitted job (None when the submit itself failed), and
    exactly one of ``result`` and ``error`` is set.
    """

    index: int
    key: Any
    job: Job | None = None
    result: Result | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the job succeeded."""
        return self.result is not None


async def map_jobs(
    client: Submitter,
    model_or_inputs: str | Iterable[ModelInput],
    payloads: Iterable[Mapping[str, Any]] | None,
    *,
    concurrency: int | None,
    timeout: float | None,  # noqa: ASYNC109 - a per-job deadline, passed to Job.wait
    keys: Iterable[Any] | None,
) -> AsyncIterator[Outcome]:
    """The engine of ``RunComfyClient.map`` (see there)."""
    if isinstance(model_or_inputs, str):
        if payloads is None:
            raise TypeError("map(model_id, payloads): payloads are required with a model id")
        model_id = model_or_inputs
        items: Iterable[tuple[Any, Any]] = ((model_id, p) for p in payloads)
    else:
        if payloads is not None:
            raise TypeError("map(typed_inputs) takes no payloads")
        items = ((i, None) for i in model_or_inputs)
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    limit = asyncio.Semaphore(concurrency or 1_000_000)
    key_iter = iter(keys) if keys is not None else None
    # Outcomes, or the producer's own error; the stream ends when every job is done.
    send, receive = anyio.create_memory_object_stream[Outcome | BaseException](math.inf)

    def deliver(item: Outcome | BaseException) -> None:
        # BrokenResourceError: the consumer has left; nobody wants this outcome.
        with contextlib.suppress(anyio.BrokenResourceError):
            send.send_nowait(item)

    async def finish(index: int, key: Any, job: Job) -> None:
        try:
            result = await job.wait(timeout)
        except Exception as exc:
            deliver(Outcome(index, key, job, error=exc))
        else:
            deliver(Outcome(index, key, job, result=result))
        finally:
            limit.release()

    async def run() -> None:
        # One task owns the fan-out: its task group holds every waiter. The
        # generator below cannot hold the group itself: a yield inside a task
        # group suspends it in the consumer's frame, and cancellation then
        # reaches the wrong task (PEP 789).
        with send:
            async with anyio.create_task_group() as waiters:
                try:
                    for index, (what, payload) in enumerate(items):
                        key = next(key_iter, index) if key_iter is not None else index
                        await limit.acquire()
                        try:
                            job = await client.submit(what, payload)
                        except Exception as exc:
                            limit.release()
                            deliver(Outcome(index, key, error=exc))
                            continue
                        waiters.start_soon(finish, index, key, job)
                except Exception as exc:  # e.g. the caller's iterable raised
                    deliver(exc)

    runner = asyncio.get_running_loop().create_task(run(), name="runcomfy-async map")
    try:
        async with receive:
            async for item in receive:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        # Leaving early (break, an error, cancellation) stops submitting and
        # waiting; jobs already submitted keep running on the server.
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def as_completed(
    jobs: Iterable[Job],
    *,
    timeout: float | None = None,  # noqa: ASYNC109 - part of the public API
) -> AsyncIterator[Job]:
    """Yield each job as it finishes; after ``timeout`` raise TimeoutError."""
    jobs = list(jobs)
    futures = {asyncio.ensure_future(asyncio.shield(j._t.waiter)): j for j in jobs if not j.done}
    for job in jobs:
        if job.done:
            yield job
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    try:
        while futures:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            done, _ = await asyncio.wait(
                futures, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise TimeoutError(f"{len(futures)} jobs not finished after {timeout}s")
            for fut in sorted(done, key=lambda f: futures[f].request_id):
                yield futures.pop(fut)
    finally:
        for fut in futures:
            fut.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*futures, return_exceptions=True)
