"""One job of a manifest (:class:`ManifestEntry`), its id rules and its content hash.

A job's ``id`` becomes the name of its output files, so :func:`check_job_id`
keeps it to a safe file name. A line without an id gets one derived from its
content (:func:`entry_hash` of the canonical JSON of model and input), so the
same line gets the same id on every run, which is what lets a rerun find it
in the journal.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ._local_files import LocalFile, wire_body

__all__ = ["ManifestEntry", "canonical_json", "check_job_id", "entry_hash", "strict_json"]

#: Job ids become file names (``DIR/<id>.mp4``, ``DIR/<id>.json``): letters,
#: digits, ``.``, ``_`` and ``-``, starting with a letter or digit (so never a
#: hidden file, ``..`` or an option), not ending in a dot (Windows drops it).
_ID_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9_-])?")
#: Names a job id must not take: the batch's own files, and the device names
#: Windows will not create files for.
_RESERVED_IDS = frozenset(
    {"report", "con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


@attrs.frozen
class ManifestEntry:
    """One job of a batch: its ``id``, ``model`` and ``input``.

    ``line`` is where it came from (1-based); ``hash`` is the SHA-256 of the
    canonical JSON of model and input, recorded in the journal so that a line
    changed under the same id is noticed on a rerun. ``files`` are the local
    files its input names (by path; :meth:`wire_input` reads them).
    """

    id: str
    model: str
    input: Mapping[str, Any] = attrs.field(repr=False)
    line: int = 0
    hash: str = attrs.field(default="", repr=False)
    files: tuple[LocalFile, ...] = attrs.field(default=(), repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", entry_hash(self.model, self.input))

    async def wire_input(self) -> dict[str, Any]:
        """The body to send: :attr:`input` with each local file read into a ``data:`` URI.

        Read now (in a worker thread), not when the manifest was loaded, so a
        big batch never holds every file in memory. Raises ``OSError`` or
        ``ValueError`` (:func:`~runcomfy_async.inputs.file_uri`) when a file
        went missing or changed into something it cannot send.
        """
        return await wire_body(self.input, self.files)


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value`` hashes are taken of (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(model: str, payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``model`` and ``payload``."""
    text = canonical_json({"model": model, "input": payload})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def strict_json(text: str) -> Any:
    """``text`` parsed as JSON, refusing ``NaN`` and ``Infinity`` (``ValueError``)."""
    return json.loads(text, parse_constant=_reject_constant)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_job_id(job_id: object) -> str | None:
    """Why ``job_id`` cannot be a job id (it becomes a file name), or None if it can."""
    if not isinstance(job_id, str):
        return f"id must be a string, got {type(job_id).__name__}"
    if not _ID_RE.fullmatch(job_id):
        return (
            f"id {job_id!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit and not ending with '.' (it names the output files)"
        )
    if job_id.lower() in _RESERVED_IDS:
        return f"id {job_id!r} is reserved (it would clash with the batch's own files)"
    return None
