"""Where a job's vocabularies meet: exception -> journal state, outcome, fatal? in one table.

The client speaks :class:`~runcomfy_async.JobState` and exceptions, the
journal :class:`JournalState`, the report the outcome literals
(:data:`~runcomfy_async.batch.JobOutcome`), the progress bar its labels. The
runner translates between them only through this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

import attrs

from .._errors import (
    APIStatusError,
    AuthenticationError,
    ClientStateError,
    InputValidationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    RunComfyError,
    SubmitOutcomeUnknown,
    TransportError,
)
from .._models import JobState
from ._rows import JournalState

__all__ = [
    "DOWNLOAD_FAILED",
    "OUTCOMES",
    "PROGRESS_LABELS",
    "REPORT_OUTCOME",
    "Fate",
    "JobOutcome",
    "error_text",
    "submit_fate",
    "wait_fate",
]

_S = JournalState

JobOutcome = Literal[
    "succeeded",
    "failed",
    "cancelled",
    "outcome_unknown",
    "download_failed",
    "in_flight",
    "not_submitted",
]

#: Every outcome, in the order the summary lists them. ``succeeded``: files on
#: disk. ``failed`` / ``cancelled``: the server says so (or the server refused
#: the input). ``outcome_unknown``: a submit may have created a paid job we
#: cannot name; never resubmitted without ``resubmit_unknown``.
#: ``download_failed``: generated, not saved (a rerun retries the download).
#: ``in_flight``: still running when the run stopped (a rerun resumes it).
#: ``not_submitted``: never sent (a rerun submits it).
OUTCOMES: tuple[JobOutcome, ...] = (
    "succeeded",
    "failed",
    "cancelled",
    "outcome_unknown",
    "download_failed",
    "in_flight",
    "not_submitted",
)


@attrs.frozen
class Fate:
    """What an exception means for a job.

    ``state``: the journal state to record (None: the state stays, only the
    error is noted); ``outcome``: the report's word; ``fatal``: every further
    submit would fail the same way, so the run stops submitting; ``prefix``:
    put before the error text in the journal; ``note``: record the error.
    """

    state: JournalState | None
    outcome: JobOutcome
    fatal: bool = False
    prefix: str = ""
    note: bool = True


# -- submit: the order matters (the first class that matches wins) ------------------------

_SUBMIT: tuple[tuple[type[BaseException], Fate], ...] = (
    (SubmitOutcomeUnknown, Fate(_S.UNKNOWN, "outcome_unknown")),
    (InvalidRequestError, Fate(_S.FAILED, "failed", prefix="rejected: ")),
    (InputValidationError, Fate(_S.FAILED, "failed", prefix="rejected: ")),
    # Certainly not created (an error answer; a closed client never sent it),
    # and every further submit would fail the same way.
    (AuthenticationError, Fate(_S.PLANNED, "not_submitted", fatal=True)),
    (InsufficientBalanceError, Fate(_S.PLANNED, "not_submitted", fatal=True)),
    (ClientStateError, Fate(_S.PLANNED, "not_submitted", fatal=True)),
    (APIStatusError, Fate(_S.PLANNED, "not_submitted")),
    # The API raises SubmitOutcomeUnknown when it may have been sent: a
    # TransportError here never left this machine.
    (TransportError, Fate(_S.PLANNED, "not_submitted")),
)
_UNSENT = Fate(_S.PLANNED, "not_submitted")
_MAY_HAVE_LEFT = Fate(_S.UNKNOWN, "outcome_unknown")


def submit_fate(exc: BaseException, *, sent: bool) -> Fate:
    """The fate of a submit that raised ``exc``; ``sent``: the POST may have left.

    Before the ``before_send`` hook ran nothing can have left, whatever the
    exception; after it, an exception we do not know is never guessed to be
    "not sent".
    """
    for cls, fate in _SUBMIT:
        if isinstance(exc, cls):
            if fate.state is _S.UNKNOWN and not sent:
                return _UNSENT  # pragma: no cover - the API raises it only after sending
            return fate
    return _MAY_HAVE_LEFT if sent else _UNSENT


# -- waiting ----------------------------------------------------------------------------

_WAIT: tuple[tuple[type[BaseException], Fate], ...] = (
    (JobCancelledError, Fate(_S.CANCELLED, "cancelled")),
    (JobFailedError, Fate(_S.FAILED, "failed")),
    (NotFoundError, Fate(_S.FAILED, "failed")),
    # The client closed under us: the job stays journaled as submitted.
    (ClientStateError, Fate(None, "in_flight", note=False)),
    # We stopped waiting, or gave up checking (the job may be fine on the
    # server): it stays 'submitted', and a rerun picks it up again.
    (JobTimeoutError, Fate(None, "in_flight")),
    (RunComfyError, Fate(None, "in_flight")),
)


def wait_fate(exc: BaseException) -> Fate | None:
    """The fate of a wait that raised ``exc``; None for an exception not ours (re-raise it)."""
    for cls, fate in _WAIT:
        if isinstance(exc, cls):
            return fate
    return None


DOWNLOAD_FAILED = Fate(None, "download_failed", prefix="download failed: ")
"""A job whose outputs could not be saved (it stays ``finished``; a rerun retries)."""

REPORT_OUTCOME: Mapping[JournalState, JobOutcome] = {
    _S.DOWNLOADED: "succeeded",
    _S.FINISHED: "download_failed",
    _S.FAILED: "failed",
    _S.CANCELLED: "cancelled",
    _S.UNKNOWN: "outcome_unknown",
    _S.SUBMITTING: "outcome_unknown",  # a run died with the POST maybe sent
    _S.SUBMITTED: "in_flight",
    _S.PLANNED: "not_submitted",
}
"""The report's outcome of a job the journal left in each state."""

PROGRESS_LABELS: Mapping[JobState, str] = {
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
}
"""The progress bar's count for jobs the client last saw in each state."""


def error_text(exc: BaseException) -> str:
    """One line saying what went wrong (a failed job's code and message, where it has them)."""
    if isinstance(exc, JobFailedError) and exc.error is not None:
        payload = exc.error
        if isinstance(payload, Mapping):
            parts = [str(payload.get(k)) for k in ("code", "message") if payload.get(k)]
            if parts:
                return ": ".join(parts)
        return json.dumps(payload, default=repr)[:500]
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
