"""Batch manifests: one job per JSON line (or CSV row), all checked before anything is paid.

A manifest line is ``{"id": "clip-001", "model": "<model_id>", "input": {...}}``.
``id`` is optional: without one, it is derived from the line's content (a hash
of the canonical JSON of model and input), so the same line gets the same id
on every run, which is what lets a rerun find it in the journal.

The CSV form has a header row; ``id`` and ``model`` are columns, every other
column is an input field, with empty cells left out and values read as the
types the model's schema gives them (:func:`~runcomfy_async.catalog.csv_column_types`:
numbers, booleans, JSON for lists and objects). The delimiter (``,``, ``;``,
tab or ``|``) is read from the header row. Columns that are not inputs (notes,
say) are dropped with ``ignore_columns`` (``--ignore-columns``) or a first
line ``# ignore: notes,owner``.

Inputs are validated with the model's :class:`~runcomfy_async.catalog.ModelSpec`
(from the registry in :class:`ManifestChecks`: the bundled Kling specs, plus
what a client's catalog fetched); a model without a spec passes through
unvalidated and is listed in :attr:`Manifest.unvalidated`. A URI field (a
start image, say) may name a local file, relative to the manifest's folder:
it is checked now (it exists, is an image or video of the right kind, fits the
size cap) and read at submit time (:meth:`ManifestEntry.wire_input`); the
journal and report keep the path, never the bytes.

Loading never stops at the first mistake: :class:`ManifestError` lists every
bad line (invalid JSON, a missing model, input the model's rules refuse,
duplicate or unsafe ids) with its line number. With ``skip_invalid`` the bad
lines are left out instead and listed in :attr:`Manifest.skipped`.
"""

from __future__ import annotations

import csv
import difflib
import functools
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import anyio.to_thread
import attrs

from .._errors import ManifestError, ManifestProblem, ValidationProblem
from ..catalog import DATA_URI_MAX_BYTES, Registry, csv_column_types, get_spec, media_field
from ..catalog._spec import check_body_json
from ..inputs import ModelInput, file_uri
from ..inputs._files import sniff_media_type
from ..inputs._validate import model_id_problems

__all__ = [
    "LocalFile",
    "Manifest",
    "ManifestChecks",
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

_TRUE = frozenset({"true", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "no", "n", "0", "off"})
#: CSV delimiters read from the header row, most likely first on a tie.
_DELIMITERS: Final = (",", ";", "\t", "|")
_IGNORE_COMMENT = re.compile(r"#\s*ignore\s*:(.*)", re.IGNORECASE)
# "scheme:" at the start: a URL or data URI, not a local path (a Windows drive
# letter is a path, hence two letters at least).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
_SNIFF_BYTES: Final = 64
# Stands in for a file already reported, so the schema does not report it twice.
_STAND_IN: Final = "https://local-file.invalid/reported"

#: What an unknown input field's problem suggests on a manifest line.
_UNKNOWN_ADVICE: Final = "--allow-unknown-fields sends it anyway"


def _names(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        value = value.split(",")
    return frozenset(n.strip() for n in value if n.strip())


@attrs.frozen
class ManifestChecks:
    """How a manifest is checked (the manifest part of :class:`BatchOptions`).

    - ``validate``: check each input against its model's spec (``--no-validate``
      turns it off: only what every body needs to be sent at all is checked);
    - ``allow_unknown_fields``: send fields the schema does not list
      (``--allow-unknown-fields``);
    - ``skip_invalid``: leave bad lines out (listed in :attr:`Manifest.skipped`)
      instead of refusing the manifest (``--skip-invalid``); a bad header
      still refuses it;
    - ``ignore_columns``: CSV columns that are not inputs (``--ignore-columns``);
    - ``registry``: the specs to validate with (default: the bundled ones; a
      client's ``client.models.registry`` adds what its catalog fetched).
    """

    validate: bool = True
    allow_unknown_fields: bool = False
    skip_invalid: bool = False
    ignore_columns: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    registry: Registry | None = attrs.field(default=None, eq=False)


@attrs.frozen
class LocalFile:
    """A local file named in a URI field: where in the input (``location``), as written
    (``path``), and where it is (``resolved``, absolute)."""

    location: tuple[str | int, ...]
    path: str
    resolved: Path


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
        body = _copy(self.input)
        for f in self.files:
            uri = await anyio.to_thread.run_sync(file_uri, f.resolved)
            _put(body, f.location, uri)
        assert isinstance(body, dict)
        return body


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def _put(body: Any, location: tuple[str | int, ...], value: Any) -> None:
    target = body
    for key in location[:-1]:
        target = target[key]
    target[location[-1]] = value


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


_Reparse = Callable[[ManifestChecks], "Manifest"]


@attrs.frozen
class Manifest:
    """The checked jobs of one batch, in order; ``source`` is the file they came from.

    Build it with :meth:`load` (a ``.jsonl`` or ``.csv`` file), :meth:`parse_jsonl`,
    :meth:`parse_csv` or :meth:`from_jobs` (dicts or typed inputs, for library
    use). Each raises :class:`ManifestError` listing every problem, unless
    ``checks.skip_invalid``: then ``skipped`` lists the lines left out.
    ``unvalidated`` names the models that had no spec to validate with.
    :meth:`recheck` checks the same text again (e.g. with a registry that has
    since fetched more specs from the catalog).
    """

    entries: tuple[ManifestEntry, ...]
    source: str | None = None
    skipped: tuple[ManifestProblem, ...] = ()
    unvalidated: frozenset[str] = frozenset()
    checks: ManifestChecks = attrs.field(factory=ManifestChecks, repr=False)
    _reparse: _Reparse | None = attrs.field(default=None, eq=False, repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self.entries)

    def recheck(self, checks: ManifestChecks) -> Manifest:
        """The same jobs checked again with ``checks`` (a manifest built by hand: itself)."""
        if self._reparse is None:
            return self
        return self._reparse(checks)

    @classmethod
    def load(cls, path: str | os.PathLike[str], checks: ManifestChecks | None = None) -> Manifest:
        """Read a manifest file: CSV when its name ends in ``.csv``, else JSON Lines.

        Local files named in it are relative to its folder.
        """
        p = Path(path)
        with p.open(encoding="utf-8-sig", newline="") as f:
            text = f.read()
        base = p.parent
        if p.suffix.lower() == ".csv":
            return cls.parse_csv(text, source=str(path), checks=checks, base_dir=base)
        return cls.parse_jsonl(text, source=str(path), checks=checks, base_dir=base)

    @classmethod
    def parse_jsonl(
        cls,
        text: str,
        *,
        source: str | None = None,
        checks: ManifestChecks | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> Manifest:
        """Parse JSON Lines text: one object per line; blank lines are skipped.

        ``base_dir`` is where local file paths start (default: the current folder).
        """
        checks = checks or ManifestChecks()
        collector = _Collector(source, checks, base_dir)
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
        reparse = functools.partial(
            _reparse_text, cls.parse_jsonl, text, source=source, base_dir=base_dir
        )
        return collector.finish(cls, reparse)

    @classmethod
    def parse_csv(
        cls,
        text: str,
        *,
        source: str | None = None,
        checks: ManifestChecks | None = None,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> Manifest:
        """Parse CSV text with a header row (``id``, ``model``, then input fields).

        Leading lines starting with ``#`` are comments; ``# ignore: a,b`` names
        columns to leave out (like ``checks.ignore_columns``). The delimiter
        (``,``, ``;``, tab or ``|``) is the one the header row uses most.
        """
        checks = checks or ManifestChecks()
        collector = _Collector(source, checks, base_dir)
        reparse = functools.partial(
            _reparse_text, cls.parse_csv, text, source=source, base_dir=base_dir
        )
        lines = text.splitlines(keepends=True)
        skip = 0
        ignore = set(checks.ignore_columns)
        while skip < len(lines) and (not lines[skip].strip() or lines[skip].lstrip()[:1] == "#"):
            match = _IGNORE_COMMENT.match(lines[skip].strip())
            if match:
                ignore |= _names(match.group(1))
            skip += 1
        if skip == len(lines):
            return collector.finish(cls, reparse)
        body = "".join(lines[skip:])
        delimiter = _sniff_delimiter(lines[skip])
        reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
        try:
            header = next(reader)
        except csv.Error as exc:
            collector.problem(skip + 1, f"invalid CSV: {exc}", kind="header line")
            return collector.finish(cls, reparse)
        columns = [h.strip() for h in header]
        header_ok = _check_header(columns, collector, skip + 1, delimiter)
        for name in sorted(ignore - set(columns)):
            collector.problem(
                skip + 1,
                f"column {name!r} is to be ignored (--ignore-columns or '# ignore:') but the "
                f"header has no such column (it has {', '.join(columns)})",
                kind="header line",
            )
            header_ok = False
        if "model" in ignore or "id" in ignore:
            collector.problem(
                skip + 1, "the 'id' and 'model' columns cannot be ignored", kind="header line"
            )
            header_ok = False
        last = reader.line_num
        while True:
            start = last + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                collector.problem(skip + start, f"invalid CSV: {exc}")
                last = reader.line_num
                continue
            last = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header_ok:
                collector.add_csv_row(skip + start, columns, row, ignore)
        return collector.finish(cls, reparse)

    @classmethod
    def from_jobs(
        cls,
        jobs: Iterable[Any],
        *,
        source: str | None = None,
        checks: ManifestChecks | None = None,
    ) -> Manifest:
        """Check jobs given in code: mappings like a manifest line, typed inputs, or entries.

        Each item is a mapping ``{"id"?, "model", "input"}``, a typed input
        (``KlingTextToVideo(...)``, any :class:`ModelInput`), an ``(id,
        typed_input)`` pair, or a :class:`ManifestEntry`. Problems name the
        item's 1-based position. Local file paths are relative to the
        current folder.
        """
        if isinstance(jobs, Manifest):
            return jobs if checks is None else jobs.recheck(checks)
        items = list(jobs)
        checks = checks or ManifestChecks()
        collector = _Collector(source, checks, None, kind="item")
        for number, item in enumerate(items, start=1):
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

        def reparse(new: ManifestChecks) -> Manifest:
            return cls.from_jobs(items, source=source, checks=new)

        return collector.finish(cls, reparse)


def _reparse_text(
    parse: Callable[..., Manifest],
    text: str,
    checks: ManifestChecks,
    *,
    source: str | None,
    base_dir: str | os.PathLike[str] | None,
) -> Manifest:
    return parse(text, source=source, checks=checks, base_dir=base_dir)


def _sniff_delimiter(header: str) -> str:
    """The delimiter the header row uses most (outside quotes); ``,`` when it has none."""
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = [(unquoted.count(d), -i, d) for i, d in enumerate(_DELIMITERS)]
    best = max(counts)
    return best[2] if best[0] else ","


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_header(columns: list[str], collector: _Collector, line: int, delimiter: str) -> bool:
    ok = True
    if "model" not in columns:
        shown = "tab" if delimiter == "\t" else repr(delimiter)
        collector.problem(
            line,
            f"the header row has no 'model' column (read with the delimiter {shown}: "
            f"{columns!r:.120}); the first row must name the columns, e.g. id,model,prompt",
            kind="header line",
        )
        ok = False
    seen: set[str] = set()
    for name in columns:
        if not name:
            collector.problem(line, "the header row has an empty column name", kind="header line")
            ok = False
        elif name in seen:
            collector.problem(line, f"column {name!r} appears twice", kind="header line")
            ok = False
        seen.add(name)
    return ok


class _Collector:
    """Gathers entries and problems, then checks ids across the whole manifest."""

    def __init__(
        self,
        source: str | None,
        checks: ManifestChecks,
        base_dir: str | os.PathLike[str] | None,
        *,
        kind: str = "line",
    ) -> None:
        self.source = source
        self.checks = checks
        self.base_dir = Path(base_dir) if base_dir is not None else Path()
        self.kind = kind
        self.entries: list[ManifestEntry] = []
        self.problems: list[ManifestProblem] = []
        self.ids: dict[str, tuple[int, str]] = {}
        self.unvalidated: set[str] = set()
        # per model and per file, not per line: a 10,000-line manifest often names a few
        self._column_types: dict[str, dict[str, str]] = {}
        self._heads: dict[Path, tuple[bytes, int]] = {}

    def problem(self, line: int, message: str, job_id: str | None = None, kind: str = "") -> None:
        self.problems.append(ManifestProblem(line, message, job_id, kind or self.kind))

    def add_object(self, line: int, obj: Any, *, from_columns: bool = False) -> None:
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
        files: tuple[LocalFile, ...] = ()
        if payload is None:
            self.problem(line, "missing 'input' (the model's input object)", job_id)
            bad = True
        elif not isinstance(payload, Mapping):
            self.problem(line, f"'input' must be an object, not {_json_type(payload)}", job_id)
            bad = True
        elif isinstance(model, str) and not bad:
            checked = self._check_input(line, model, payload, job_id, from_columns)
            if checked is None:
                bad = True
            else:
                files = checked
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
        self.entries.append(ManifestEntry(job_id, model, body, line, digest, files))

    def _check_input(
        self,
        line: int,
        model: str,
        payload: Mapping[str, Any],
        job_id: str | None,
        from_columns: bool,
    ) -> tuple[LocalFile, ...] | None:
        """Check one input; its local files, or None when it has problems (reported)."""
        checks = self.checks
        spec = get_spec(model, checks.registry) if checks.validate else None
        if checks.validate and spec is None:
            self.unvalidated.add(model)  # passes through: only JSON-ness is checked
        found: list[tuple[tuple[str | int, ...], str]] = []
        _find_paths(spec.schema if spec is not None else None, payload, (), "", found)
        files, body, written = self._local_files(line, payload, found, job_id)
        ok = files is not None
        if spec is None:
            for p in check_body_json(payload):
                self.problem(line, _input_problem(str(p), p.path), job_id)
                ok = False
            return files if ok else None
        if from_columns and not checks.allow_unknown_fields and _closed(spec.schema):
            # A CSV column that is no input: say how to drop it, in the CLI's words.
            known = list(spec.properties)
            for name in [k for k in body if k not in spec.properties]:
                hint = difflib.get_close_matches(name, known, n=1)
                maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.problem(
                    line,
                    f"column {name!r} is not an input of {model}{maybe}: leave it out with "
                    f"--ignore-columns {name} (or a first line '# ignore: {name}'), or send "
                    "it anyway with --allow-unknown-fields",
                    job_id,
                )
                del body[name]
                ok = False
        for p in spec.validate(
            body,
            allow_unknown_fields=checks.allow_unknown_fields,
            unknown_advice=_UNKNOWN_ADVICE,
        ):
            if p.path in written:  # show the path the user wrote, not the placeholder
                p = ValidationProblem(p.path, written[p.path], p.rule)
            self.problem(line, _input_problem(str(p), p.path), job_id)
            ok = False
        return files if ok else None

    def _local_files(
        self,
        line: int,
        payload: Mapping[str, Any],
        found: list[tuple[tuple[str | int, ...], str]],
        job_id: str | None,
    ) -> tuple[tuple[LocalFile, ...] | None, dict[str, Any], dict[str, str]]:
        """Check the local files ``found`` in ``payload``.

        Returns the files (None after a problem), the body to validate (each
        file replaced by an empty ``data:`` URI of its sniffed type, so the
        schema checks its kind and format) and the placeholders' paths.
        """
        # a deep copy only where files are put in (the common line has none)
        body: dict[str, Any] = _copy(payload) if found else dict(payload)
        files: list[LocalFile] = []
        written: dict[str, str] = {}
        ok = True
        for location, value in found:
            where = "input" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in location)
            given = Path(value).expanduser()
            resolved = given if given.is_absolute() else self.base_dir / given
            try:
                head, size = self._head(resolved)
            except OSError as exc:
                if not self.checks.validate:
                    continue  # not a file we can read: sent as written, unchecked
                _put(body, location, _STAND_IN)  # reported here, not again by the schema
                folder = str(self.base_dir) if str(self.base_dir) != "." else "the current folder"
                self.problem(
                    line,
                    f"{where}: cannot read the file {value!r} ({exc.strerror or exc}); "
                    "a URI field takes an https:// URL, a data: URI, or the path of an image "
                    f"or video relative to the manifest's folder ({folder})",
                    job_id,
                )
                ok = False
                continue
            media_type = sniff_media_type(head)
            if media_type is None:
                self.problem(
                    line,
                    f"{where}: {value!r} is not an image or video this tool recognises "
                    "(PNG, JPEG, GIF, BMP, WebP, AVIF, HEIC, MP4, MOV, M4V, WebM, MKV, AVI)",
                    job_id,
                )
                _put(body, location, _STAND_IN)
                ok = False
                continue
            kind = media_type.split("/")[0]
            limit = DATA_URI_MAX_BYTES.get(kind, DATA_URI_MAX_BYTES[""])
            if size > limit:
                self.problem(
                    line,
                    f"{where}: {value!r} is {size} bytes, more than the {limit} bytes allowed "
                    "inline; host it and give its https:// URL instead",
                    job_id,
                )
                _put(body, location, _STAND_IN)
                ok = False
                continue
            _put(body, location, f"data:{media_type};base64,")
            written[_schema_path(location)] = value
            files.append(LocalFile(location, value, resolved.absolute()))
        return (tuple(files) if ok else None), body, written

    def _head(self, path: Path) -> tuple[bytes, int]:
        """The first bytes and the size of the file at ``path`` (read once per manifest)."""
        known = self._heads.get(path)
        if known is None:
            with open(path, "rb") as f:
                known = f.read(_SNIFF_BYTES), os.fstat(f.fileno()).st_size
            self._heads[path] = known
        return known

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

    def add_csv_row(
        self, line: int, columns: list[str], row: list[str], ignore: Iterable[str] = ()
    ) -> None:
        if len(row) > len(columns):
            self.problem(
                line,
                f"{len(row)} cells but the header has {len(columns)} columns "
                "(a cell holding the delimiter must be in double quotes)",
            )
            return
        skip = set(ignore)
        cells = {
            name: cell.strip()
            for name, cell in zip(columns, row, strict=False)  # a short row: the rest empty
            if name not in skip and cell.strip()  # an empty cell: the schema default applies
        }
        job_id = cells.get("id")
        model = cells.get("model")
        types = self._column_types.get(model or "")
        if types is None:
            types = csv_column_types(model, self.checks.registry) if model else {}
            self._column_types[model or ""] = types
        obj: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        ok = True
        for name, value in cells.items():
            if name in ("id", "model"):
                obj[name] = value
                continue
            try:
                payload[name] = _coerce(types.get(name), value)
            except ValueError as exc:
                self.problem(line, f"column {name!r}: {exc}", job_id)
                ok = False
        if not ok:
            return
        obj["input"] = payload
        self.add_object(line, obj, from_columns=True)

    def finish(self, cls: type[Manifest], reparse: _Reparse | None) -> Manifest:
        self.problems.sort(key=lambda p: (p.kind != "header line", p.line))
        whole = any(p.kind == "header line" for p in self.problems)
        if self.problems and (whole or not self.checks.skip_invalid):
            raise ManifestError(self.problems, source=self.source)
        bad = {p.line for p in self.problems}
        return cls(
            tuple(e for e in self.entries if e.line not in bad),
            self.source,
            tuple(self.problems),
            frozenset(self.unvalidated),
            self.checks,
            reparse,
        )


def _closed(schema: Mapping[str, Any]) -> bool:
    """Whether ``schema`` refuses top-level keys it does not list (as the validator reads it)."""
    additional = schema.get("additionalProperties")
    props = schema.get("properties")
    return bool(props) and additional is not True and not isinstance(additional, Mapping)


def _schema_path(location: tuple[str | int, ...]) -> str:
    """``location`` as the validator spells paths (``elements[0].frontal_image_url``)."""
    path = ""
    for key in location:
        if isinstance(key, int):
            path = f"{path}[{key}]"
        elif key.isidentifier():
            path = f"{path}.{key}" if path else key
        else:
            path = f"{path}[{key!r}]"
    return path


def _looks_local(value: str) -> bool:
    """A string in a URI field that is neither a URL nor a data URI: a file path."""
    return bool(value.strip()) and "\n" not in value and not _SCHEME.match(value)


def _find_paths(
    schema: Mapping[str, Any] | None,
    value: Any,
    location: tuple[str | int, ...],
    name: str,
    found: list[tuple[tuple[str | int, ...], str]],
) -> None:
    """Collect the URI-field values of ``value`` that look like local paths.

    URI fields are the schema's (its formats, else the ``*_url`` names); where
    there is no schema (a model without a spec, a field it does not list),
    the names alone say.
    """
    if isinstance(value, str):
        if name and media_field(name, schema or {}) is not None and _looks_local(value):
            found.append((location, value))
    elif isinstance(value, (list, tuple)):
        items = schema.get("items") if schema is not None else None
        for i, item in enumerate(value):
            sub = items if isinstance(items, Mapping) else None
            _find_paths(sub, item, (*location, i), name, found)
    elif isinstance(value, Mapping):
        props = schema.get("properties") if schema is not None else None
        for key, item in value.items():
            if isinstance(key, str):
                sub = props.get(key) if isinstance(props, Mapping) else None
                _find_paths(
                    sub if isinstance(sub, Mapping) else None, item, (*location, key), key, found
                )


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


def _coerce(kind: str | None, value: str) -> Any:
    """A CSV cell as ``kind`` (from :func:`~runcomfy_async.catalog.csv_column_types`)."""
    if kind == "int":
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueError(f"{value!r} is not an integer")
        return int(number)
    if kind == "float":
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    if kind == "bool":
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (use true or false)")
    if kind == "json":
        try:
            return json.loads(value, parse_constant=_reject_constant)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
    return value
