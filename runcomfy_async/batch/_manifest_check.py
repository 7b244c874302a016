"""Checking manifest lines: :class:`ManifestChecks` and the collector that applies them.

Each line (or CSV row, or job given in code) is checked on its own (its keys,
its model id, its input against the model's :class:`~runcomfy_async.catalog.ModelSpec`
from the registry, its local files), and ids are checked across the whole
manifest. Every problem is gathered with its line number; :meth:`Collector.finish`
raises :class:`ManifestError` listing them all, or with ``skip_invalid``
leaves the bad lines out.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from .._errors import ManifestError, ManifestProblem, ValidationProblem
from ..catalog import Registry, get_spec
from ..catalog._spec import check_body_json
from ..inputs._validate import model_id_problems
from ._local_files import Found, LocalFile, LocalFileCheck, find_local_paths
from ._manifest_entry import ManifestEntry, check_job_id, entry_hash

__all__ = ["Collector", "ManifestChecks", "column_names"]

_TOP_KEYS = ("id", "model", "input")
_DERIVED_PREFIX = "job-"

#: What an unknown input field's problem suggests on a manifest line.
_UNKNOWN_ADVICE: Final = "--allow-unknown-fields sends it anyway"


def column_names(value: Iterable[str]) -> frozenset[str]:
    """Column names from an iterable or a comma-separated string, blanks dropped."""
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
    ignore_columns: frozenset[str] = attrs.field(default=frozenset(), converter=column_names)
    registry: Registry | None = attrs.field(default=None, eq=False)


class Collector:
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
        self._files = LocalFileCheck(self.base_dir, checks.validate)

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
        found: Found = []
        find_local_paths(spec.schema if spec is not None else None, payload, (), "", found)
        files, body, written = self._files.check(
            payload, found, lambda message: self.problem(line, message, job_id)
        )
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

    def finish(
        self,
    ) -> tuple[tuple[ManifestEntry, ...], tuple[ManifestProblem, ...], frozenset[str]]:
        """The good entries, the problems (lines skipped) and the unvalidated models.

        Raises :class:`ManifestError` on a bad header, or on any problem
        unless ``checks.skip_invalid``.
        """
        self.problems.sort(key=lambda p: (p.kind != "header line", p.line))
        whole = any(p.kind == "header line" for p in self.problems)
        if self.problems and (whole or not self.checks.skip_invalid):
            raise ManifestError(self.problems, source=self.source)
        bad = {p.line for p in self.problems}
        return (
            tuple(e for e in self.entries if e.line not in bad),
            tuple(self.problems),
            frozenset(self.unvalidated),
        )


def _closed(schema: Mapping[str, Any]) -> bool:
    """Whether ``schema`` refuses top-level keys it does not list (as the validator reads it)."""
    additional = schema.get("additionalProperties")
    props = schema.get("properties")
    return bool(props) and additional is not True and not isinstance(additional, Mapping)


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
