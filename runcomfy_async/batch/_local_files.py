"""Local files named in a manifest's URI fields: found, checked at load, read at submit.

A URI field (a start image, say) takes an ``https://`` URL, a ``data:`` URI or
the path of an image or video, relative to the manifest's folder. A path is
checked when the manifest is loaded (it exists, is an image or video of the
right kind, fits the inline size cap) and read only when the job is sent
(:func:`wire_body`), so the journal and report keep the path, never the
bytes, and a big batch never holds every file in memory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import anyio.to_thread
import attrs

from ..catalog import DATA_URI_MAX_BYTES, media_field
from ..inputs import file_uri
from ..inputs._files import sniff_media_type

__all__ = ["LocalFile", "LocalFileCheck", "find_local_paths", "wire_body"]

# "scheme:" at the start: a URL or data URI, not a local path (a Windows drive
# letter is a path, hence two letters at least).
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")
_SNIFF_BYTES: Final = 64
# Stands in for a file already reported, so the schema does not report it twice.
_STAND_IN: Final = "https://local-file.invalid/reported"

#: Where a path was found in an input (keys and list indexes), and the path as written.
Found = list[tuple[tuple[str | int, ...], str]]


@attrs.frozen
class LocalFile:
    """A local file named in a URI field: where in the input (``location``), as written
    (``path``), and where it is (``resolved``, absolute)."""

    location: tuple[str | int, ...]
    path: str
    resolved: Path


async def wire_body(payload: Mapping[str, Any], files: tuple[LocalFile, ...]) -> dict[str, Any]:
    """``payload`` with each of ``files`` read (in a worker thread) into a ``data:`` URI."""
    body = _copy(payload)
    for f in files:
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


def find_local_paths(
    schema: Mapping[str, Any] | None,
    value: Any,
    location: tuple[str | int, ...],
    name: str,
    found: Found,
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
            find_local_paths(sub, item, (*location, i), name, found)
    elif isinstance(value, Mapping):
        props = schema.get("properties") if schema is not None else None
        for key, item in value.items():
            if isinstance(key, str):
                sub = props.get(key) if isinstance(props, Mapping) else None
                find_local_paths(
                    sub if isinstance(sub, Mapping) else None, item, (*location, key), key, found
                )


class LocalFileCheck:
    """Checks the local files of one manifest, relative to ``base_dir``.

    With ``validate`` off, a path it cannot read is sent as written, unchecked.
    """

    def __init__(self, base_dir: Path, validate: bool) -> None:
        self.base_dir = base_dir
        self.validate = validate
        # per file, not per line: a 10,000-line manifest often names a few
        self._heads: dict[Path, tuple[bytes, int]] = {}

    def check(
        self, payload: Mapping[str, Any], found: Found, report: Callable[[str], None]
    ) -> tuple[tuple[LocalFile, ...] | None, dict[str, Any], dict[str, str]]:
        """Check the local files ``found`` in ``payload``, each problem to ``report``.

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
                if not self.validate:
                    continue  # not a file we can read: sent as written, unchecked
                _put(body, location, _STAND_IN)  # reported here, not again by the schema
                folder = str(self.base_dir) if str(self.base_dir) != "." else "the current folder"
                report(
                    f"{where}: cannot read the file {value!r} ({exc.strerror or exc}); "
                    "a URI field takes an https:// URL, a data: URI, or the path of an image "
                    f"or video relative to the manifest's folder ({folder})"
                )
                ok = False
                continue
            media_type = sniff_media_type(head)
            if media_type is None:
                report(
                    f"{where}: {value!r} is not an image or video this tool recognises "
                    "(PNG, JPEG, GIF, BMP, WebP, AVIF, HEIC, MP4, MOV, M4V, WebM, MKV, AVI)"
                )
                _put(body, location, _STAND_IN)
                ok = False
                continue
            kind = media_type.split("/")[0]
            limit = DATA_URI_MAX_BYTES.get(kind, DATA_URI_MAX_BYTES[""])
            if size > limit:
                report(
                    f"{where}: {value!r} is {size} bytes, more than the {limit} bytes allowed "
                    "inline; host it and give its https:// URL instead"
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
