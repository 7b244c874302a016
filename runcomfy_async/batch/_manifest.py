"""Batch manifests: one job per JSON line (or CSV row), all checked before anything is paid.

A manifest line is ``{"id": "clip-001", "model": "<model_id>", "input": {...}}``.
``id`` is optional: without one, it is derived from the line's content (a hash
of the canonical JSON of model and input), so the same line gets the same id
on every run, which is what lets a rerun find it in the journal.

The CSV form has a header row; ``id`` and ``model`` are columns, every other
column is an input field, with empty cells left out and values coerced to the
types the Kling 3.0 schemas give them (``duration`` int, ``cfg_scale`` float,
``generate_audio`` / ``sound`` bool, ``multi_prompt`` / ``elements`` JSON).

Loading never stops at the first mistake: :class:`ManifestError` lists every
bad line (invalid JSON, a missing model, input the model's rules refuse,
duplicate or unsafe ids) with its line number.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import ManifestError, ManifestProblem
from ..inputs import ModelInput, validate_payload
from ..inputs._validate import model_id_problems

__all__ = [
    "Manifest",
    "ManifestEntry",
    "ManifestError",
    "ManifestProblem",
    "check_job_id",
    "entry_hash",
]

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
_TOP_KEYS = ("id", "model", "input")
_DERIVED_PREFIX = "job-"

# CSV cells are text; these input fields are not (the Kling 3.0 schemas).
_INT_FIELDS = frozenset({"duration"})
_FLOAT_FIELDS = frozenset({"cfg_scale"})
_BOOL_FIELDS = frozenset({"generate_audio", "sound"})
_JSON_FIELDS = frozenset({"multi_prompt", "elements"})
_TRUE = frozenset({"true", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "no", "n", "0", "off"})


@attrs.frozen
class ManifestEntry:
    """One job of a batch: its ``id``, ``model`` and ``input``.

    ``line`` is where it came from (1-based); ``hash`` is the SHA-256 of the
    canonical JSON of model and input, recorded in the journal so that a line
    changed under the same id is noticed on a rerun.
    """

    id: str
    model: str
    input: Mapping[str, Any] = attrs.field(repr=False)
    line: int = 0
    hash: str = attrs.field(default="", repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", entry_hash(self.model, self.input))


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value`` hashes are taken of (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(model: str, payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``model`` and ``payload``."""
    text = canonical_json({"model": model, "input": payload})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


@attrs.frozen
class Manifest:
    """The checked jobs of one batch, in order; ``source`` is the file they came from.

    Build it with :meth:`load` (a ``.jsonl`` or ``.csv`` file), :meth:`parse_jsonl`,
    :meth:`parse_csv` or :meth:`from_jobs` (dicts or typed inputs, for library
    use). Each raises :class:`ManifestError` listing every problem.
    """

    entries: tuple[ManifestEntry, ...]
    source: str | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self.entries)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest file: CSV when its name ends in ``.csv``, else JSON Lines."""
        p = Path(path)
        with p.open(encoding="utf-8-sig", newline="") as f:
            text = f.read()
        if p.suffix.lower() == ".csv":
            return cls.parse_csv(text, source=str(path))
        return cls.parse_jsonl(text, source=str(path))

    @classmethod
    def parse_jsonl(cls, text: str, *, source: str | None = None) -> Manifest:
        """Parse JSON Lines text: one object per line; blank lines are skipped."""
        collector = _Collector(source)
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw, parse_constant=_reject_constant)
            except json.JSONDecodeError as exc:
                # The decoder's own "line 1" would only confuse: we name the line.
                collector.problem(number, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except ValueError as exc:  # NaN / Infinity
                collector.problem(number, f"invalid JSON: {exc}")
                continue
            collector.add_object(number, obj)
        return collector.finish(cls)

    @classmethod
    def parse_csv(cls, text: str, *, source: str | None = None) -> Manifest:
        """Parse CSV text with a header row (``id``, ``model``, then input fields)."""
        collector = _Collector(source)
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            return collector.finish(cls)
        except csv.Error as exc:
            collector.problem(1, f"invalid CSV: {exc}")
            return collector.finish(cls)
        columns = [h.strip() for h in header]
        header_ok = _check_header(columns, collector)
        last = reader.line_num
        while True:
            start = last + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                collector.problem(start, f"invalid CSV: {exc}")
                last = reader.line_num
                continue
            last = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header_ok:
                collector.add_csv_row(start, columns, row)
        return collector.finish(cls)

    @classmethod
    def from_jobs(cls, jobs: Iterable[Any], *, source: str | None = None) -> Manifest:
        """Check jobs given in code: mappings like a manifest line, typed inputs, or entries.

        Each item is a mapping ``{"id"?, "model", "input"}``, a typed input
        (``KlingTextToVideo(...)``, any :class:`ModelInput`), an ``(id,
        typed_input)`` pair, or a :class:`ManifestEntry`. Problems name the
        item's 1-based position.
        """
        if isinstance(jobs, Manifest):
            return jobs
        collector = _Collector(source, kind="item")
        for number, item in enumerate(jobs, start=1):
            job_id: Any = None
            if isinstance(item, tuple) and len(item) == 2:
                job_id, item = item
            if isinstance(item, ManifestEntry):
                collector.add_object(
                    number, {"id": item.id, "model": item.model, "input": dict(item.input)}
                )
            elif isinstance(item, ModelInput) and not isinstance(item, Mapping):
                obj: dict[str, Any] = {"model": item.model_id, "input": item.to_payload()}
                if job_id is not None:
                    obj["id"] = job_id
                collector.add_object(number, obj)
            elif isinstance(item, Mapping):
                obj = dict(item)
                if job_id is not None:
                    obj["id"] = job_id
                collector.add_object(number, obj)
            else:
                collector.problem(
                    number,
                    "expected a mapping {'id', 'model', 'input'}, a typed input or an "
                    f"(id, typed input) pair, not {type(item).__name__}",
                )
        return collector.finish(cls)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_header(columns: list[str], collector: _Collector) -> bool:
    ok = True
    if "model" not in columns:
        collector.problem(1, "the header row has no 'model' column", kind="header line")
        ok = False
    seen: set[str] = set()
    for name in columns:
        if not name:
            collector.problem(1, "the header row has an empty column name", kind="header line")
            ok = False
        elif name in seen:
            collector.problem(1, f"column {name!r} appears twice", kind="header line")
            ok = False
        seen.add(name)
    return ok


class _Collector:
    """Gathers entries and problems, then checks ids across the whole manifest."""

    def __init__(self, source: str | None, *, kind: str = "line") -> None:
        self.source = source
        self.kind = kind
        self.entries: list[ManifestEntry] = []
        self.problems: list[ManifestProblem] = []
        self.ids: dict[str, tuple[int, str]] = {}

    def problem(self, line: int, message: str, job_id: str | None = None, kind: str = "") -> None:
        self.problems.append(ManifestProblem(line, message, job_id, kind or self.kind))

    def add_object(self, line: int, obj: Any) -> None:
        if not isinstance(obj, Mapping):
            self.problem(line, f"must be a JSON object, not {_json_type(obj)}")
            return
        raw_id = obj.get("id")
        job_id = raw_id if isinstance(raw_id, str) else None
        bad = False
        for key in obj:
            if key not in _TOP_KEYS:
                hint = difflib.get_close_matches(str(key), _TOP_KEYS, n=1)
                why = f"did you mean {hint[0]!r}?" if hint else "input fields go under 'input'"
                self.problem(line, f"unknown key {key!r} ({why})", job_id)
                bad = True
        model = obj.get("model")
        if model is None:
            self.problem(line, "missing 'model' (the model id to run)", job_id)
            bad = True
        elif not isinstance(model, str):
            self.problem(line, f"'model' must be a string, not {_json_type(model)}", job_id)
            bad = True
        else:
            for p in model_id_problems(model):
                self.problem(line, f"model {model!r}: {p.rule}", job_id)
                bad = True
        payload = obj.get("input")
        if payload is None:
            self.problem(line, "missing 'input' (the model's input object)", job_id)
            bad = True
        elif not isinstance(payload, Mapping):
            self.problem(line, f"'input' must be an object, not {_json_type(payload)}", job_id)
            bad = True
        elif isinstance(model, str) and not bad:
            for p in validate_payload(model, payload):
                self.problem(line, _input_problem(str(p), p.path), job_id)
                bad = True
        if "id" in obj:
            id_problem = check_job_id(raw_id)
            if id_problem is not None:
                self.problem(line, id_problem, job_id)
                bad = True
            elif job_id is not None:
                # Ids are checked even on otherwise bad lines: every problem at once.
                self._claim(line, job_id, None)
        if bad:
            return
        assert isinstance(model, str) and isinstance(payload, Mapping)
        body = dict(payload)
        digest = entry_hash(model, body)
        if job_id is None:
            job_id = _DERIVED_PREFIX + digest[:12]
            if not self._claim(line, job_id, digest):
                return
        self.entries.append(ManifestEntry(job_id, model, body, line, digest))

    def _claim(self, line: int, job_id: str, digest: str | None) -> bool:
        """Record that ``line`` uses ``job_id``; report it if another line already does."""
        # Case-insensitively: clip-1 and CLIP-1 are one file on macOS and Windows.
        key = job_id.lower()
        other = self.ids.get(key)
        if other is None:
            self.ids[key] = (line, job_id)
            return True
        other_line, other_id = other
        if digest is not None:
            self.problem(
                line,
                f"same model and input as {self.kind} {other_line}; give them distinct ids "
                "if you want both",
                job_id,
            )
        else:
            same = "" if other_id == job_id else f" (as {other_id!r}, ignoring case)"
            self.problem(line, f"duplicate id: also used on {self.kind} {other_line}{same}", job_id)
        return False

    def add_csv_row(self, line: int, columns: list[str], row: list[str]) -> None:
        if len(row) > len(columns):
            self.problem(line, f"{len(row)} cells but the header has {len(columns)} columns")
            return
        obj: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        job_id = None
        ok = True
        # A short row (fewer cells than columns) leaves the rest empty.
        for name, cell in zip(columns, row, strict=False):
            value = cell.strip()
            if not value:
                continue  # an empty cell means "not given": the schema default applies
            if name == "id":
                obj["id"] = job_id = value
            elif name == "model":
                obj["model"] = value
            else:
                try:
                    payload[name] = _coerce(name, value)
                except ValueError as exc:
                    self.problem(line, f"column {name!r}: {exc}", job_id)
                    ok = False
        if not ok:
            return
        obj["input"] = payload
        self.add_object(line, obj)

    def finish(self, cls: type[Manifest]) -> Manifest:
        if self.problems:
            self.problems.sort(key=lambda p: (p.kind != "header line", p.line))
            raise ManifestError(self.problems, source=self.source)
        return cls(tuple(self.entries), self.source)


def _input_problem(text: str, path: str) -> str:
    if path.startswith("<"):
        return text  # about the input as a whole
    return ("input" if path.startswith("[") else "input.") + text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _coerce(name: str, value: str) -> Any:
    """A CSV cell as the type its input field has in the Kling 3.0 schemas."""
    if name in _INT_FIELDS:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueError(f"{value!r} is not an integer")
        return int(number)
    if name in _FLOAT_FIELDS:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    if name in _BOOL_FIELDS:
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (use true or false)")
    if name in _JSON_FIELDS:
        try:
            return json.loads(value, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
    return value
