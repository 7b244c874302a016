"""A batch run's options: one frozen object instead of a keyword tail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from .._api import check_request_id
from .._retry import RetryPolicy
from ..catalog import Registry
from ..inputs import PriceTable
from ..progress import Mode, ProgressBar
from ._manifest import ManifestChecks

__all__ = ["BatchOptions", "ConfirmCancel"]

ConfirmCancel = Callable[[int], Awaitable[bool]]
"""Asked on interrupt with the number of jobs still queued: cancel them?"""


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1")


def _adopted(value: Mapping[str, str] | None) -> Mapping[str, str]:
    adopt = dict(value or {})
    for request_id in adopt.values():
        check_request_id(request_id)  # ValueError for an id that is unsafe in a URL
    return adopt


def _journal_url(
    instance: object, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"journal must be a postgresql:// URL, not {value!r}")


@attrs.frozen(kw_only=True)
class BatchOptions:
    """How a batch runs (every field has a default; ``attrs.evolve`` makes variants).

    - ``concurrency``: jobs in flight at once (submitted and not finished):
      the client's ``max_in_flight`` when the runner makes its client. A
      client you pass keeps its own limit.
    - ``download_concurrency``: files downloading at once.
    - ``resubmit_unknown``: submit again the jobs whose earlier submit may or
      may not have created a job (this may pay twice for them).
    - ``adopt``: ``{job_id: request_id}`` for such jobs whose request you
      found (e.g. on your dashboard): they are tracked, not resubmitted.
    - ``retry_failed``: submit again the jobs that failed.
    - ``max_cost``: refuse to start (:class:`~runcomfy_async.CostLimitError`)
      when what this run would submit is estimated above it, or cannot be
      priced (USD; ``--max-cost``).
    - ``prices``: a :class:`~runcomfy_async.PriceTable` of per-second prices
      for the models it lists (``--price``, ``--prices``); other models use
      their spec's price (bundled, or from the catalog).
    - ``force``: start even when the estimate is above the account's balance
      (``--force``); by default such a run stops before its first submit.
    - ``validate``, ``allow_unknown_fields``, ``skip_invalid``,
      ``ignore_columns``: how the manifest is checked (``--no-validate``,
      ``--allow-unknown-fields``, ``--skip-invalid``, ``--ignore-columns``;
      see :class:`~runcomfy_async.batch.ManifestChecks`). With
      ``skip_invalid`` the bad lines are left out and listed in
      ``runner.skipped`` (the command exits 1).
    - ``progress``: True (auto), a mode (``"bar"``, ``"log"``, ``"off"``),
      False, or a :class:`~runcomfy_async.ProgressBar` of your own;
      ``progress_file`` is where it writes (standard error by default).
    - ``cancel_on_interrupt``: on ``stop()`` (Ctrl-C), cancel the jobs still
      queued on the server; else ``confirm_cancel(n)`` is asked, if given.
    - ``job_timeout``: stop waiting for a job after this many seconds (it is
      then reported ``in_flight``; a rerun resumes it).
    - ``download_retry``: the :class:`~runcomfy_async.RetryPolicy` of downloads.
    - ``client_options``: keyword arguments of the client the runner makes
      when none is given (``token``, ``base_url``, ``poll``, ...).
    - ``journal``: a ``postgresql://`` URL: the batch's journal lives in
      PostgreSQL, shared by every runner (on any machine) given the same URL
      and ``batch_key``; ``concurrency`` is then the in-flight cap of the
      whole fleet (give every runner the same). None: SQLite in ``out_dir``.
    - ``batch_key``: names the batch in a shared journal (default: the
      manifest's file name); ``lease_seconds``: how long a runner that stopped
      renewing its lease keeps its jobs before the others take them over.

    Raises ``ValueError`` for a concurrency below one or an adopted request
    id that is unsafe in a URL.
    """

    concurrency: int = attrs.field(default=16, validator=_at_least_one)
    download_concurrency: int = attrs.field(default=8, validator=_at_least_one)
    resubmit_unknown: bool = False
    adopt: Mapping[str, str] = attrs.field(factory=dict, converter=_adopted)
    retry_failed: bool = False
    max_cost: float | None = None
    prices: PriceTable | None = None
    progress: bool | Mode | ProgressBar = True
    progress_file: Any = None
    cancel_on_interrupt: bool = False
    confirm_cancel: ConfirmCancel | None = None
    job_timeout: float | None = None
    download_retry: RetryPolicy | None = None
    client_options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)
    journal: str | None = attrs.field(default=None, validator=_journal_url)
    batch_key: str | None = None
    lease_seconds: float = 30.0
    force: bool = False
    validate: bool = True
    allow_unknown_fields: bool = False
    skip_invalid: bool = False
    ignore_columns: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)

    def checks(self, registry: Registry | None = None) -> ManifestChecks:
        """The manifest checks these options ask for, validating with ``registry``."""
        return ManifestChecks(
            validate=self.validate,
            allow_unknown_fields=self.allow_unknown_fields,
            skip_invalid=self.skip_invalid,
            ignore_columns=self.ignore_columns,
            registry=registry,
        )
