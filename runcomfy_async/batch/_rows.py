"""What the journal stores about one job: its state, its row, and the row's one converter.

Every journal engine (SQLite today, PostgreSQL next) reads and writes rows
through :data:`row_converter`, so a column means the same thing everywhere:
``state`` is the state's value, ``input`` / ``result`` / ``files`` are JSON.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import cattrs

__all__ = [
    "COLUMNS",
    "JSON_COLUMNS",
    "TIME_COLUMNS",
    "UPDATABLE",
    "JournalRow",
    "JournalState",
    "decode_row",
    "encode_column",
]


class JournalState(str, enum.Enum):
    """How far one job of a batch got (``_journal.py`` draws the transitions)."""

    PLANNED = "planned"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    FINISHED = "finished"
    DOWNLOADED = "downloaded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


@attrs.frozen
class JournalRow:
    """One job as the journal last recorded it. Times are Unix timestamps.

    The times of one job, in the order they happen: ``sending_at`` (its submit
    may leave), ``submitted_at`` (the API answered with a request id),
    ``started_at`` (the client first saw it running: an upper bound, since the
    client checks a job only now and then), ``finished_at`` (the client saw it
    end), ``download_started_at`` and ``downloaded_at`` (its files). Journals
    written before a time was recorded have None there.
    """

    id: str
    line: int
    model: str
    input: Mapping[str, Any] = attrs.field(repr=False)
    entry_hash: str = attrs.field(repr=False)
    state: JournalState = JournalState.PLANNED
    request_id: str | None = None
    attempts: int = 0
    error: str | None = None
    result: Mapping[str, Any] | None = attrs.field(default=None, repr=False)
    files: Sequence[Mapping[str, Any]] = attrs.field(factory=tuple, repr=False)
    submitted_at: float | None = attrs.field(default=None, repr=False)
    finished_at: float | None = attrs.field(default=None, repr=False)
    downloaded_at: float | None = attrs.field(default=None, repr=False)
    updated_at: float = attrs.field(default=0.0, repr=False)
    sending_at: float | None = attrs.field(default=None, repr=False)
    started_at: float | None = attrs.field(default=None, repr=False)
    download_started_at: float | None = attrs.field(default=None, repr=False)


COLUMNS: tuple[str, ...] = tuple(f.name for f in attrs.fields(JournalRow))
"""The row's columns, in the order engines select them."""
TIME_COLUMNS: tuple[str, ...] = ("sending_at", "started_at", "download_started_at")
"""Columns added after the first schema: an engine adds them to an older journal."""
JSON_COLUMNS = frozenset({"input", "result", "files"})
"""Columns stored as JSON text."""
UPDATABLE = frozenset(COLUMNS) - {"id", "updated_at"}
"""Columns a transition may set (``updated_at`` is the engine's)."""


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    # JSON columns hold whatever JSON the runner wrote: kept as decoded.
    as_is = {Mapping[str, Any], Mapping[str, Any] | None}
    conv.register_structure_hook_func(lambda t: t in as_is, lambda value, _: value)
    conv.register_structure_hook_func(
        lambda t: t == Sequence[Mapping[str, Any]], lambda value, _: tuple(value or ())
    )
    return conv


row_converter = _make_converter()
"""The one converter between database values and :class:`JournalRow`."""


def decode_row(values: Sequence[Any]) -> JournalRow:
    """A :class:`JournalRow` from one database row (values in :data:`COLUMNS` order)."""
    data = dict(zip(COLUMNS, values, strict=True))
    for name in JSON_COLUMNS:
        raw = data[name]
        data[name] = json.loads(raw) if raw is not None else None
    return row_converter.structure(data, JournalRow)


def encode_column(name: str, value: Any) -> Any:
    """The database value of column ``name``."""
    if name == "state":
        return JournalState(value).value
    if name in JSON_COLUMNS:
        if value is None:
            return None
        return json.dumps(row_converter.unstructure(value), separators=(",", ":"))
    return value
