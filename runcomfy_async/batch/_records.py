"""Per-job records: ``DIR/<id>.json`` beside each job's files, and the times they carry."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from .._errors import DownloadError
from .._models import Result
from ._download import SavedFile, write_file_atomic
from ._manifest import ManifestEntry
from ._rows import JournalRow

__all__ = ["Records", "outputs_of"]

logger = logging.getLogger("runcomfy_async")


def outputs_of(result: Result) -> list[tuple[str, str]]:
    """Every output URL of ``result`` with the extension to use when its own has none."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for urls, ext in ((result.videos, "mp4"), (result.images, "png")):
        for url in urls:
            if url not in seen:
                seen.add(url)
                out.append((url, ext))
    return out


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="milliseconds")


def _seconds_between(start: Any, end: Any) -> float | None:
    """Seconds between two of the server's ISO timestamps, if both parse."""
    try:
        first = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
        last = dt.datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((last - first).total_seconds(), 3)


class Records:
    """Writes each job's record into ``out_dir`` and remembers when this client saw its steps."""

    def __init__(self, out_dir: Path, rows: Mapping[str, JournalRow] | None = None) -> None:
        self.out_dir = out_dir
        self._times: dict[str, dict[str, float | None]] = {
            job_id: {"submitted_at": row.submitted_at, "finished_at": row.finished_at}
            for job_id, row in (rows or {}).items()
        }

    def submitted(self, job_id: str, at: float) -> None:
        """This client got the job's request id at ``at``."""
        self._times[job_id] = {"submitted_at": at, "finished_at": None}

    def finished(self, job_id: str, at: float) -> None:
        """This client saw the job end at ``at``."""
        self._times.setdefault(job_id, {"submitted_at": None})["finished_at"] = at

    async def write(
        self,
        entry: ManifestEntry,
        request_id: str | None,
        *,
        estimated_cost: float | None,
        info: Mapping[str, Any] | None = None,
        files: Sequence[SavedFile] | None = None,
        error: str | None = None,
        now: float,
    ) -> None:
        """Write ``DIR/<id>.json``: the request, its id, timings, cost, URLs and files.

        A record that cannot be written is logged, not raised: the journal,
        not the record, is what a rerun relies on.
        """
        info = info or {}
        times = self._times.get(entry.id, {})
        record = {
            "id": entry.id,
            "model": entry.model,
            "input": dict(entry.input),
            "entry_hash": entry.hash,
            "request_id": request_id,
            "outcome": "succeeded" if files is not None else ("failed" if error else None),
            "error": error,
            "cost": info.get("cost"),
            "estimated_cost": estimated_cost,
            "server": {
                "created_at": info.get("created_at"),
                "finished_at": info.get("finished_at"),
            },
            "timings": {
                # when this client had the request id, saw the job end, saved its files
                "submitted_at": _iso(times.get("submitted_at")),
                "finished_at": _iso(times.get("finished_at")),
                "downloaded_at": _iso(now) if files is not None else None,
                "generation_seconds": _seconds_between(
                    info.get("created_at"), info.get("finished_at")
                ),
            },
            "urls": [u for u, _ in info.get("outputs") or ()],
            "files": [f.as_dict() for f in files or ()],
        }
        data = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            await anyio.to_thread.run_sync(
                write_file_atomic, self.out_dir, f"{entry.id}.json", data
            )
        except (OSError, DownloadError) as exc:
            logger.warning("could not write %s.json: %s", entry.id, exc)
