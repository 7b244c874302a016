"""A batch journal in PostgreSQL that several runners drain together.

Install the extra: ``pip install runcomfy-async[postgres]``. The SQLite
journal stays the embedded default; use :class:`PostgresJournal` when one
batch runs on several processes or machines.
"""

from ._pg import FleetError, IllegalTransition, NotOwner, PostgresJournal
from ._states import ALLOWED, FleetRow, FleetState

__all__ = [
    "ALLOWED",
    "FleetError",
    "FleetRow",
    "FleetState",
    "IllegalTransition",
    "NotOwner",
    "PostgresJournal",
]
