"""The wait stage: one task per job in flight, from its request id to its result."""

from __future__ import annotations

import time

from .._job import Job
from ._context import RunContext
from ._lifecycle import error_text, wait_fate
from ._manifest import ManifestEntry
from ._records import outputs_of

__all__ = ["wait_job"]


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
