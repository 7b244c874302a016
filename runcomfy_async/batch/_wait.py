"""The wait stage: one task per job in flight, from its request id to its result."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from .._errors import JobFailedError
from .._job import Job
from .._models import Result
from ._context import RunContext
from ._lifecycle import error_text, wait_fate
from ._manifest import ManifestEntry
from ._records import outputs_of

__all__ = ["mismatch", "wait_job"]


def mismatch(answer: Mapping[str, Any], model: str, payload: Mapping[str, Any]) -> str | None:
    """How the server's answer for a request says it is not the job we journaled, or None.

    The documented answers name no model and no input; where the server adds
    them (``model_id``, ``input``: the emulator names the model), they must
    agree with the job. An input the server echoes may carry defaults it
    filled in: only the fields the job set are compared.
    """
    named = answer.get("model_id", answer.get("model"))
    if isinstance(named, str) and named != model:
        return f"answers for model {named}, not {model}"
    echoed = answer.get("input")
    if isinstance(echoed, Mapping):
        differ = sorted(k for k, v in payload.items() if k not in echoed or echoed[k] != v)
        if differ:
            return "answers for another input (" + ", ".join(differ[:5]) + " differ)"
    return None


async def _refuse_mismatch(ctx: RunContext, entry: ManifestEntry, job: Job, answer: Result) -> bool:
    """Refuse an answer that belongs to another job: journal the job ``unknown``; True if so.

    A request id journaled by an earlier run can name another job by now (a
    server that restarted and issues ids again): its output must not be
    saved as this job's. What became of our request is unknown, so it is
    submitted again only when the user asks (``resubmit_unknown``).
    """
    why = mismatch(answer.raw, entry.model, entry.input)
    if why is None:
        return False
    text = (
        f"request {job.request_id} {why}: it is not this job's request (reused by a "
        "restarted server?); its output was not taken. Submit this job again with "
        "--resubmit-unknown (resubmit_unknown=True)"
    )
    at = time.time()
    ctx.records.finished(entry.id, at)
    ctx.journal.mark_mismatched(entry.id, text, at)
    await ctx.records.write(
        entry, job.request_id, estimated_cost=ctx.estimated(entry), error=text, now=at
    )
    ctx.settle(entry.id, "outcome_unknown")
    return True


async def wait_job(ctx: RunContext, entry: ManifestEntry, job: Job) -> None:
    """Wait for ``job``; journal how it ended; queue its outputs for download.

    Outcomes are journaled without waiting for the commit: no later step
    relies on them being durable (a crash before the commit only means the
    job is checked, or its files fetched, once more on the rerun).
    """
    ctx.inflight[entry.id] = job
    journal = ctx.journal
    try:
        try:
            result = await job.wait(ctx.options.job_timeout)
        except Exception as exc:
            answer = exc.result if isinstance(exc, JobFailedError) else None
            if isinstance(answer, Result) and await _refuse_mismatch(ctx, entry, job, answer):
                return
            fate = wait_fate(exc)
            if fate is None:
                raise
            text = error_text(exc)
            if fate.state is None:
                if fate.note:
                    journal.note_error(entry.id, text)
            elif journal.state_of(entry.id) is fate.state:
                pass  # already recorded (we cancelled it on interrupt)
            else:
                at = time.time()
                ctx.records.finished(entry.id, at)
                journal.mark_ended(entry.id, fate.state, text, at)
                await ctx.records.write(
                    entry,
                    job.request_id,
                    estimated_cost=ctx.estimated(entry),
                    error=text,
                    now=time.time(),
                )
            ctx.settle(entry.id, fate.outcome)
            return
        if await _refuse_mismatch(ctx, entry, job, result):
            return
        info = {
            "outputs": outputs_of(result),
            "output": dict(result.output),
            "cost": result.cost,
            "created_at": result.created_at,
            "finished_at": result.finished_at,
        }
        at = time.time()
        ctx.records.finished(entry.id, at)
        journal.mark_finished(entry.id, info, at)
        ctx.downloads.send_nowait((entry, info, job.request_id))
    finally:
        ctx.inflight.pop(entry.id, None)
