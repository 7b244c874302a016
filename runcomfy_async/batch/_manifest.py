"""Batch manifests: one job per JSON line (or CSV row), all checked before anything is paid.

A manifest line is ``{"id": "clip-001", "model": "<model_id>", "input": {...}}``.
``id`` is optional: without one, it is derived from the line's content (a hash
of the canonical JSON of model and input), so the same line gets the same id
on every run, which is what lets a rerun find it in the journal.

The CSV form has a header row: ``id``, ``model``, then one column per input
field (read by ``_manifest_csv``: delimiter, ``# ignore:`` comments, typed
cells).

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

The parts, one concept a module: ``_manifest_entry`` (one job, its id rules
and hash), ``_local_files`` (paths in URI fields), ``_manifest_check``
(:class:`ManifestChecks` and the checks of each line against the registry),
``_manifest_csv`` (CSV reading); this module builds the :class:`Manifest`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import ManifestError, ManifestProblem
from ..inputs import ModelInput
from ._local_files import LocalFile
from ._manifest_check import Collector, ManifestChecks
from ._manifest_csv import read_csv
from ._manifest_entry import ManifestEntry, check_job_id, entry_hash, strict_json

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

    @classmethod
    def _finish(cls, collector: Collector, reparse: _Reparse | None) -> Manifest:
        entries, skipped, unvalidated = collector.finish()
        return cls(entries, collector.source, skipped, unvalidated, collector.checks, reparse)

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
        collector = Collector(source, checks, base_dir)
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = strict_json(raw)
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
        return cls._finish(collector, reparse)

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
        collector = Collector(source, checks, base_dir)
        read_csv(text, collector)
        reparse = functools.partial(
            _reparse_text, cls.parse_csv, text, source=source, base_dir=base_dir
        )
        return cls._finish(collector, reparse)

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
        collector = Collector(source, checks, None, kind="item")
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

        return cls._finish(collector, reparse)


def _reparse_text(
    parse: Callable[..., Manifest],
    text: str,
    checks: ManifestChecks,
    *,
    source: str | None,
    base_dir: str | os.PathLike[str] | None,
) -> Manifest:
    return parse(text, source=source, checks=checks, base_dir=base_dir)
