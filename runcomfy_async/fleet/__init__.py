"""A batch journal in PostgreSQL that several runners drain together.

Install the extra: ``pip install runcomfy-async[postgres]``. The SQLite
journal stays the embedded default; name a ``postgresql://`` URL as the
batch's journal (``runcomfy-async batch MANIFEST --journal postgresql://...``,
or ``BatchOptions(journal=...)``) when one batch runs on several processes or
machines. :class:`PostgresEngine` is the journal engine behind it.
"""

from .._errors import JobHeldElsewhereError
from ._pg import PostgresEngine

__all__ = ["JobHeldElsewhereError", "PostgresEngine"]
