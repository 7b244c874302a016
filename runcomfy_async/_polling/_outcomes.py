"""What a finished check means: the error a job ended with, and how long it ran."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .._errors import JobCancelledError, JobError, JobFailedError
from .._models import JobState, Result

__all__ = ["job_error", "server_duration"]


def job_error(request_id: str, model_id: str, result: Result) -> JobError:
    """The error for a result that ended without success (failed, or cancelled)."""
    if result.status is JobState.CANCELLED:
        return JobCancelledError(
            f"job {request_id} ({model_id}) was cancelled",
            request_id=request_id,
            model_id=model_id,
        )
    return JobFailedError(
        f"job {request_id} ({model_id}) failed: {_short(result.error)}",
        request_id=request_id,
        model_id=model_id,
        error=result.error,
        result=result,
    )


def server_duration(result: Result) -> float | None:
    """Seconds between the server's created_at and finished_at, if both parse."""
    start, end = _parse_time(result.created_at), _parse_time(result.finished_at)
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds > 0 else None


def _short(value: Any, limit: int = 300) -> str:
    """A bounded repr: a huge error payload must not flood messages and logs."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
