"""What the report's timeline and totals need that no stage records: when each job was
first seen running, and how many API requests the run made.

Both are read from the client's own state, never asked of the API: a job's
last seen state (what the scheduler's checks left in ``job.state``) and the
request budget's count of requests granted. A listener on the client's
events would tell the first too, but it makes the scheduler check queued
jobs on the status route, which costs requests.
"""

from __future__ import annotations

import time

import anyio

from .._client import RunComfyClient
from .._models import JobState
from ._context import RunContext

__all__ = ["RunObserver"]

#: How often the jobs in flight are looked at. A job's state only changes
#: when the scheduler checks it; this only adds up to this much to when we
#: say the check saw it running.
_EVERY_SECONDS = 0.1


class RunObserver:
    """Notes, for one run, when each job in flight is first seen running, and the
    API requests the client made (``requests``, read at any time).

    ``requests`` counts every request the client's budget granted while the run
    went on (submits, checks, results, cancels; downloads of outputs are not
    API requests). A client shared with other work counts that work too.
    """

    def __init__(self, ctx: RunContext, client: RunComfyClient) -> None:
        self._ctx = ctx
        self._budget = client.budget
        self._granted_before = self._budget.granted
        self._seen: set[str] = set()

    @property
    def requests(self) -> int:
        """API requests granted since this observer was made."""
        return self._budget.granted - self._granted_before

    async def run(self) -> None:
        """Look at the jobs in flight until cancelled (the run's task group does)."""
        while True:
            self.look()
            await anyio.sleep(_EVERY_SECONDS)

    def look(self) -> None:
        """Journal the jobs seen running for the first time since the last look."""
        journal = self._ctx.journal
        now = time.time()
        for job_id, job in self._ctx.inflight.items():
            if job_id not in self._seen and job.state is JobState.RUNNING:
                self._seen.add(job_id)
                journal.mark_running(job_id, now)
