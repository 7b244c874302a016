"""Reading a CSV manifest: comments, the delimiter, the header, cells as typed values.

The CSV form has a header row; ``id`` and ``model`` are columns, every other
column is an input field, with empty cells left out and values read as the
types the model's schema gives them (:func:`~runcomfy_async.catalog.csv_column_types`:
numbers, booleans, JSON for lists and objects). The delimiter (``,``, ``;``,
tab or ``|``) is read from the header row. Columns that are not inputs (notes,
say) are dropped with ``ignore_columns`` (``--ignore-columns``) or a first
line ``# ignore: notes,owner``. Each row becomes a manifest object handed to
the :class:`~runcomfy_async.batch._manifest_check.Collector`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from typing import Any, Final

from ..catalog import csv_column_types
from ._manifest_check import Collector, column_names
from ._manifest_entry import strict_json

__all__ = ["read_csv"]

_TRUE = frozenset({"true", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "no", "n", "0", "off"})
#: CSV delimiters read from the header row, most likely first on a tie.
_DELIMITERS: Final = (",", ";", "\t", "|")
_IGNORE_COMMENT = re.compile(r"#\s*ignore\s*:(.*)", re.IGNORECASE)


def read_csv(text: str, collector: Collector) -> None:
    """Hand each row of the CSV ``text`` to ``collector``; problems go there too.

    Leading lines starting with ``#`` are comments; ``# ignore: a,b`` names
    columns to leave out (like ``checks.ignore_columns``). A bad header is a
    ``header line`` problem, and then no row is read.
    """
    lines = text.splitlines(keepends=True)
    skip = 0
    ignore = set(collector.checks.ignore_columns)
    while skip < len(lines) and (not lines[skip].strip() or lines[skip].lstrip()[:1] == "#"):
        match = _IGNORE_COMMENT.match(lines[skip].strip())
        if match:
            ignore |= column_names(match.group(1))
        skip += 1
    if skip == len(lines):
        return
    body = "".join(lines[skip:])
    delimiter = _sniff_delimiter(lines[skip])
    reader = csv.reader(io.StringIO(body, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        collector.problem(skip + 1, f"invalid CSV: {exc}", kind="header line")
        return
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
    rows = _Rows(collector, columns, ignore)
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
            rows.add(skip + start, row)


def _sniff_delimiter(header: str) -> str:
    """The delimiter the header row uses most (outside quotes); ``,`` when it has none."""
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = [(unquoted.count(d), -i, d) for i, d in enumerate(_DELIMITERS)]
    best = max(counts)
    return best[2] if best[0] else ","


def _check_header(columns: list[str], collector: Collector, line: int, delimiter: str) -> bool:
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


class _Rows:
    """Turns data rows into manifest objects, cells typed by the row's model."""

    def __init__(self, collector: Collector, columns: list[str], ignore: Iterable[str]) -> None:
        self.collector = collector
        self.columns = columns
        self.skip = set(ignore)
        # per model, not per row: a 10,000-row manifest often names a few
        self._column_types: dict[str, dict[str, str]] = {}

    def add(self, line: int, row: list[str]) -> None:
        collector, columns = self.collector, self.columns
        if len(row) > len(columns):
            collector.problem(
                line,
                f"{len(row)} cells but the header has {len(columns)} columns "
                "(a cell holding the delimiter must be in double quotes)",
            )
            return
        cells = {
            name: cell.strip()
            for name, cell in zip(columns, row, strict=False)  # a short row: the rest empty
            if name not in self.skip and cell.strip()  # an empty cell: the schema default applies
        }
        job_id = cells.get("id")
        model = cells.get("model")
        types = self._column_types.get(model or "")
        if types is None:
            types = csv_column_types(model, collector.checks.registry) if model else {}
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
                collector.problem(line, f"column {name!r}: {exc}", job_id)
                ok = False
        if not ok:
            return
        obj["input"] = payload
        collector.add_object(line, obj, from_columns=True)


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
            return strict_json(value)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
    return value
