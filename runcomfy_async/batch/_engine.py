"""The journal's storage engine interface: what a runner needs from a database, and no more.

:class:`~runcomfy_async.batch.Journal` (typed transitions) sits on one
engine and is all the runner sees, so the runner never knows which engine it
has. SQLite (``_sqlite.py``) is the embedded default; the PostgreSQL engine
(``runcomfy_async.fleet``), shared by a fleet of runners, implements the same
methods (``claim`` is where it takes ``FOR UPDATE SKIP LOCKED`` claims) plus
those of :class:`SharedJournalEngine` (re-attaching the jobs of runners that
died).

Promises every engine keeps:

- a waited write (:meth:`JournalEngine.update`, ``durable=True``) is
  committed and on disk when it returns; ``durable=False`` survives the
  process dying but may be lost by a power cut until the next durable commit;
- a deferred write (:meth:`JournalEngine.defer`) is committed soon, in call
  order with every other write of the same job;
- an update names the states the row may be in (``expect``); the engine
  applies it only then, and otherwise fails it with
  :class:`~runcomfy_async.IllegalTransitionError` (the check and the write
  are one statement, so it also holds between processes);
- a job is claimed (:meth:`JournalEngine.claim`) by at most one runner while
  it is ``planned``;
- a shared engine writes only jobs its runner holds (or that no live runner
  holds), and fails others with
  :class:`~runcomfy_async.JobHeldElsewhereError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._rows import JournalRow, JournalState

__all__ = ["JournalEngine", "SharedJournalEngine"]


class JournalEngine(Protocol):
    """Storage of a batch's journal rows (see the module docstring for the promises)."""

    calls: int
    """Calls made so far (for benchmarks)."""
    commits: int
    """Transactions committed so far (for benchmarks)."""
    cpu_seconds: float
    """CPU time spent in the engine's own thread(s) (for benchmarks)."""

    async def rows(self) -> dict[str, JournalRow]:
        """Every job recorded, by id, in manifest line order."""
        ...

    async def plan(self, rows: Sequence[JournalRow]) -> None:
        """Insert ``rows`` (state ``planned``) where their id is new; known ids only take the
        new line number and keep their state (loading a manifest twice is harmless)."""
        ...

    async def claim(self, limit: int) -> list[str]:
        """Up to ``limit`` ``planned`` jobs, in line order, that no runner claimed before.

        A claimed job stays ``planned`` until the runner marks it: a job that
        waits for a slot is still ``planned`` when the process dies.
        """
        ...

    async def update(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        *,
        expect: frozenset[JournalState],
        durable: bool = True,
    ) -> None:
        """Set ``fields`` (column names of :class:`JournalRow`) of one job in one of ``expect``;
        committed (and, with ``durable``, on disk) on return."""
        ...

    def defer(
        self,
        job_id: str,
        fields: Mapping[str, Any],
        *,
        expect: frozenset[JournalState],
        soon: bool = False,
    ) -> None:
        """As :meth:`update` without waiting: committed with the next batch of writes."""
        ...

    async def move_all(self, source: JournalState, target: JournalState, error: str) -> list[str]:
        """Move every job in ``source`` to ``target`` with ``error``; return their ids."""
        ...

    async def aclose(self) -> None:
        """Commit what is pending, release the journal (its lock, its thread). Idempotent."""
        ...


class SharedJournalEngine(JournalEngine, Protocol):
    """An engine several runners use at once (``shared`` is True); each runner holds a lease.

    ``claim`` waits while other live runners hold planned jobs; ``move_all``
    moves only rows no live runner holds (the leftovers of runners that
    stopped).
    """

    shared: bool
    """True: other runners may write this journal at the same time."""

    async def reattach(self, limit: int) -> list[JournalRow]:
        """Take over up to ``limit`` accepted jobs (``submitted`` / ``finished``) of runners
        whose lease ran out, after turning their ``submitting`` rows ``unknown``."""
        ...

    async def wait_for_room(self) -> None:
        """Return once the fleet's in-flight cap seems to have room (no round trip while it
        has not been seen full); cancellable."""
        ...

    async def open_elsewhere(self) -> int:
        """Unsettled jobs another live runner holds, or that a dead one left to re-attach:
        while there are some, a runner that is done waits (it may have to take them over)."""
        ...
