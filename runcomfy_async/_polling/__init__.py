"""The polling scheduler, in four parts (and two small helpers).

- ``_due.py``: the due queue, a heap of (next check time, job);
- ``_cohort.py``: probe cohorts for models whose duration is not known;
- ``_frontier.py``: what a FIFO queue tells about its jobs, and its probe rounds;
- ``_dispatcher.py``: :class:`PollScheduler`, which ties them together and
  runs the checks;
- ``_tracked.py``: the record of one request, and the events about it;
- ``_outcomes.py``: what a finished check means (the job's error, its duration).

It knows "check this request id" (:class:`CheckAPI`), nothing of HTTP.
"""

from ._dispatcher import CheckAPI, PollScheduler
from ._tracked import JobEvent, Listener, PollStats, Tracked, loop_time

__all__ = [
    "CheckAPI",
    "JobEvent",
    "Listener",
    "PollScheduler",
    "PollStats",
    "Tracked",
    "loop_time",
]
