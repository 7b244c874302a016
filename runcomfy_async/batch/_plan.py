"""Planning a run: the manifest against the journal, what it would cost, and the cost limit.

:func:`make_plan` decides, job by job, what this run does (submit, resume,
download, or leave settled); :func:`check_cost_limit` is the one place the
``max_cost`` rule lives and :func:`check_balance` the one place of the
balance rule (the CLI, its dry run and the library all come here);
:func:`fetch_specs` asks the catalog for the specs of models the manifest
could not validate yet.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from .._errors import (
    CostLimitError,
    InputValidationError,
    ManifestError,
    ManifestProblem,
    RunComfyError,
)
from ..catalog import Registry, get_spec
from ..inputs import PriceTable, estimate_cost
from ._lifecycle import JobOutcome
from ._manifest import Manifest, ManifestChecks, ManifestEntry
from ._rows import JournalRow, JournalState

if TYPE_CHECKING:
    from .._client import RunComfyClient
    from ._options import BatchOptions

logger = logging.getLogger("runcomfy_async")

_STAND_IN_URL = "https://local-file.invalid/manifest-path"

#: Seconds the balance may take to answer before a run goes on without it
#: (the transport retries; an unreachable wallet must not hold a dry run for minutes).
BALANCE_TIMEOUT = 10.0

#: Seconds one balance read (or failure) serves later checks of the same client.
BALANCE_REUSE = 60.0

_BALANCES: weakref.WeakKeyDictionary[RunComfyClient, tuple[float, float | None]] = (
    weakref.WeakKeyDictionary()
)

__all__ = [
    "BatchPreview",
    "CostEstimate",
    "Jobs",
    "Plan",
    "as_manifest",
    "check_balance",
    "check_cost_limit",
    "check_spend",
    "entry_cost",
    "estimate_batch",
    "fetch_specs",
    "files_present",
    "make_plan",
    "read_balance",
]

Jobs = Manifest | str | os.PathLike[str] | Iterable[Any]
"""What a batch accepts: a :class:`Manifest`, a manifest's path, or job dicts / typed inputs."""


# -- cost ------------------------------------------------------------------------------


@attrs.frozen
class CostEstimate:
    """Estimated USD for some jobs, from the price table; jobs of unpriced models are listed."""

    jobs: int
    usd: float
    by_model: Mapping[str, tuple[int, float]]
    unpriced: tuple[str, ...] = ()

    def summary(self) -> str:
        """A small table: jobs and USD per model, then the total."""
        width = max([len(m) for m in self.by_model] + [5])
        lines = [f"  {'model':<{width}}  {'jobs':>6}  {'USD':>10}"]
        for model, (count, usd) in sorted(self.by_model.items()):
            lines.append(f"  {model:<{width}}  {count:>6}  {usd:>10.2f}")
        lines.append(f"  {'total':<{width}}  {self.jobs:>6}  {self.usd:>10.2f}")
        if self.unpriced:
            shown = ", ".join(self.unpriced[:5]) + (" ..." if len(self.unpriced) > 5 else "")
            lines.append(f"  no price known for {len(self.unpriced)} job(s): {shown}")
        return "\n".join(lines)


def entry_cost(
    entry: ManifestEntry, prices: PriceTable | None, registry: Registry | None = None
) -> float | None:
    """Estimated USD of one job, None when no price is known.

    A model ``prices`` lists is priced from it (``--price``, ``--prices``);
    any other from its spec in ``registry`` (the bundled prices, and the
    catalog's for models a client fetched).
    """
    table = prices if prices is not None and entry.model in prices else None
    try:
        return estimate_cost(entry.model, _priced_input(entry), prices=table, registry=registry)
    except (LookupError, InputValidationError):
        return None


def _priced_input(entry: ManifestEntry) -> Mapping[str, Any]:
    # A local file does not change the price, but its path is no URI the
    # validator takes: price the body with a stand-in URL in its place.
    if not entry.files:
        return entry.input
    body: dict[str, Any] = copy.deepcopy(dict(entry.input))
    for f in entry.files:
        target: Any = body
        for key in f.location[:-1]:
            target = target[key]
        target[f.location[-1]] = _STAND_IN_URL
    return body


def _unpriced_reason(
    entry: ManifestEntry, prices: PriceTable | None, registry: Registry | None
) -> str:
    """Why :func:`entry_cost` gave None for ``entry``, and what the user can do."""
    spec = get_spec(entry.model, registry)
    listed = prices is not None and entry.model in prices
    if listed or (spec is not None and spec.price is not None and spec.price.estimable):
        unit = "second" if listed or (spec and spec.price and spec.price.unit == "second") else ""
        if unit:
            return (
                f"{entry.model} is priced per second and the input gives no usable "
                "'duration'; add one"
            )
        return f"its input is not one {entry.model} takes (check it without --no-validate)"
    return (
        f"no price is known for {entry.model}; give one with --price "
        f"{entry.model}=USD_PER_SECOND or --prices FILE (prices= in Python)"
    )


def estimate_batch(
    jobs: Jobs | Iterable[ManifestEntry],
    *,
    prices: PriceTable | None = None,
    registry: Registry | None = None,
) -> CostEstimate:
    """Estimate what running ``jobs`` (a manifest, its path, or job dicts) would cost."""
    entries = list(jobs) if not isinstance(jobs, (str, os.PathLike)) else list(as_manifest(jobs))
    if entries and not isinstance(entries[0], ManifestEntry):
        entries = list(as_manifest(entries))
    by_model: dict[str, tuple[int, float]] = {}
    unpriced: list[str] = []
    total = 0.0
    for entry in entries:
        usd = entry_cost(entry, prices, registry)
        if usd is None:
            unpriced.append(entry.id)
            continue
        count, subtotal = by_model.get(entry.model, (0, 0.0))
        by_model[entry.model] = (count + 1, subtotal + usd)
        total += usd
    return CostEstimate(
        len(entries),
        round(total, 6),
        {m: (c, round(u, 6)) for m, (c, u) in by_model.items()},
        tuple(unpriced),
    )


def as_manifest(jobs: Any, checks: ManifestChecks | None = None) -> Manifest:
    """``jobs`` as a :class:`Manifest` (loaded, or checked, here with ``checks``).

    A :class:`Manifest` given is kept as it is without ``checks``, and checked
    again when they differ from its own.
    """
    if isinstance(jobs, Manifest):
        return jobs if checks is None or checks == jobs.checks else jobs.recheck(checks)
    if isinstance(jobs, (str, os.PathLike)):
        return Manifest.load(jobs, checks)
    return Manifest.from_jobs(jobs, checks=checks)


async def fetch_specs(manifest: Manifest, client: RunComfyClient) -> Manifest:
    """``manifest`` checked again once the catalog gave specs for its unvalidated models.

    Each model without a spec is asked for once (``client.models.spec``); a
    model the catalog does not know either, or a catalog that cannot be
    reached, leaves its jobs unvalidated (logged). Raises
    :class:`ManifestError` when a fetched spec refuses a line (unless the
    manifest skips invalid lines).
    """
    if not manifest.unvalidated or not manifest.checks.validate:
        return manifest
    registry = client.models.registry
    fetched = False
    for model_id in sorted(manifest.unvalidated):
        try:
            spec = await client.models.spec(model_id)
        except RunComfyError as exc:
            logger.warning("could not fetch the spec of %s from the catalog: %s", model_id, exc)
            continue
        fetched = fetched or spec is not None
    if not fetched and manifest.checks.registry is registry:
        return manifest
    checks = attrs.evolve(manifest.checks, registry=registry)
    # a recheck parses again and looks at local files: blocking work, in a thread
    return await anyio.to_thread.run_sync(manifest.recheck, checks)


# -- planning: manifest x journal -> what this run does ---------------------------------

_PAID_STATES = frozenset(
    {
        JournalState.SUBMITTING,
        JournalState.SUBMITTED,
        JournalState.FINISHED,
        JournalState.DOWNLOADED,
        JournalState.UNKNOWN,
    }
)


@attrs.define
class Plan:
    """What one run does with each job of the manifest."""

    new: list[ManifestEntry] = attrs.Factory(list)
    replan: list[ManifestEntry] = attrs.Factory(list)
    submit: list[ManifestEntry] = attrs.Factory(list)
    requeue: list[ManifestEntry] = attrs.Factory(list)  # back to 'planned' before submitting
    track: list[tuple[ManifestEntry, str]] = attrs.Factory(list)
    adopt: list[tuple[ManifestEntry, str]] = attrs.Factory(list)
    download: list[tuple[ManifestEntry, JournalRow]] = attrs.Factory(list)
    settled: dict[str, JobOutcome] = attrs.Factory(dict)
    stale_submitting: list[str] = attrs.Factory(list)
    not_in_manifest: int = 0


def make_plan(
    manifest: Manifest,
    rows: Mapping[str, JournalRow],
    *,
    resubmit_unknown: bool,
    retry_failed: bool,
    adopt: Mapping[str, str],
    files_present: Callable[[JournalRow], bool],
) -> Plan:
    """Plan a run: raises :class:`ManifestError` for lines changed under a paid id."""
    plan = Plan()
    problems: list[ManifestProblem] = []
    ids = {e.id for e in manifest}
    for job_id in adopt:
        if job_id not in ids:
            problems.append(
                ManifestProblem(0, "no job of the manifest has this id", job_id, "adopt")
            )
    for entry in manifest:
        row = rows.get(entry.id)
        adopted = adopt.get(entry.id)
        if row is None:
            plan.new.append(entry)
            if adopted:
                plan.adopt.append((entry, adopted))
                plan.track.append((entry, adopted))
            else:
                plan.submit.append(entry)
            continue
        state = row.state
        if row.entry_hash != entry.hash:
            if state in _PAID_STATES:
                rid = f" as request {row.request_id}" if row.request_id else ""
                problems.append(
                    ManifestProblem(
                        entry.line,
                        f"changed since it was submitted{rid} (journal state {state.value}); "
                        "restore the line, or give the new content a new id",
                        entry.id,
                    )
                )
                continue
            plan.replan.append(entry)
            state = JournalState.PLANNED
        if adopted:
            if state in (JournalState.SUBMITTED, JournalState.FINISHED, JournalState.DOWNLOADED):
                if row.request_id != adopted:
                    problems.append(
                        ManifestProblem(
                            entry.line,
                            f"--adopt {adopted}: the journal already has request "
                            f"{row.request_id} for this job",
                            entry.id,
                        )
                    )
                    continue
            else:
                plan.adopt.append((entry, adopted))
                plan.track.append((entry, adopted))
                continue
        if state is JournalState.DOWNLOADED:
            if files_present(row):
                plan.settled[entry.id] = "succeeded"
            else:
                plan.download.append((entry, row))  # a file was deleted or lost: fetch it again
        elif state is JournalState.FINISHED:
            plan.download.append((entry, row))
        elif state is JournalState.SUBMITTED:
            assert row.request_id is not None
            plan.track.append((entry, row.request_id))
        elif state in (JournalState.SUBMITTING, JournalState.UNKNOWN):
            if state is JournalState.SUBMITTING:
                plan.stale_submitting.append(entry.id)
            if resubmit_unknown:
                plan.submit.append(entry)
                plan.requeue.append(entry)
            else:
                plan.settled[entry.id] = "outcome_unknown"
        elif state is JournalState.FAILED and not retry_failed:
            plan.settled[entry.id] = "failed"
        else:  # planned, cancelled (only queued jobs can be), failed with retry_failed
            plan.submit.append(entry)
            if state is not JournalState.PLANNED:
                plan.requeue.append(entry)
    plan.not_in_manifest = len(set(rows) - ids)
    if problems:
        raise ManifestError(problems, source=manifest.source)
    return plan


def files_present(out_dir: Path, row: JournalRow) -> bool:
    """True when every file the row lists is in ``out_dir`` with its recorded size."""
    for f in row.files:
        name = f.get("name")
        if not isinstance(name, str):
            return False
        try:
            if (out_dir / name).stat().st_size != f.get("size"):
                return False
        except OSError:
            return False
    return True


@attrs.frozen
class BatchPreview:
    """What a run would do, computed without submitting or writing anything (``--dry-run``).

    ``estimate`` covers every job of the manifest, ``to_submit`` /
    ``to_submit_estimate`` only those this run would submit (the journal may
    say others are done or in flight).
    """

    jobs: int
    estimate: CostEstimate
    to_submit: int
    to_submit_estimate: CostEstimate
    to_resume: int
    to_download: int
    done: int
    unknown: int
    failed: int
    journal_found: bool
    skipped: tuple[ManifestProblem, ...] = ()
    unvalidated: tuple[str, ...] = ()
    balance: float | None = None

    def summary(self) -> str:
        """Human-readable preview: the cost table and what the run would do."""
        valid = "all valid" if not self.skipped else f"{len(self.skipped)} bad line(s) skipped"
        lines = [
            f"{self.jobs} jobs, {valid}. Estimated cost (list prices):",
            self.estimate.summary(),
        ]
        for p in self.skipped:
            lines.append(f"  skipped {p}")
        if self.unvalidated:
            lines.append(
                "  not validated (no schema known, not in the catalog): "
                + ", ".join(self.unvalidated)
            )
        if self.journal_found:
            lines += [
                "",
                f"The journal shows {self.done} done, {self.to_resume} in flight, "
                f"{self.to_download} to download, {self.unknown} outcome unknown, "
                f"{self.failed} failed.",
            ]
        lines.append(
            f"This run would submit {self.to_submit} job(s), about "
            f"${self.to_submit_estimate.usd:.2f}. Nothing was submitted (dry run)."
        )
        if self.balance is not None:
            fits = self.to_submit_estimate.usd <= self.balance
            lines.append(
                f"Balance: ${self.balance:.2f}; "
                + (
                    "the estimate fits."
                    if fits
                    else "the estimate is above it: the run would stop before its first "
                    "submit (--force starts it anyway)."
                )
            )
        return "\n".join(lines)


def check_cost_limit(
    to_submit: Iterable[ManifestEntry],
    limit: float | None,
    *,
    prices: PriceTable | None = None,
    label: str = "the limit of",
    registry: Registry | None = None,
) -> CostEstimate | None:
    """Estimate ``to_submit``; raise :class:`CostLimitError` when it is above ``limit`` (USD)
    or cannot be priced. The one home of the ``max_cost`` rule; ``label`` names the limit
    in the message (the CLI says ``--max-cost``). Without a limit, nothing is estimated
    (None). Prices: ``prices`` for the models it lists, else the specs in ``registry``."""
    if limit is None:
        return None
    entries = list(to_submit)
    estimate = estimate_batch(entries, prices=prices, registry=registry)
    if estimate.unpriced:
        unpriced = set(estimate.unpriced)
        first = next(e for e in entries if e.id in unpriced)
        raise CostLimitError(
            f"cannot enforce max cost ${limit:.2f}: {len(unpriced)} job(s) cannot be priced "
            f"(e.g. {first.id}: {_unpriced_reason(first, prices, registry)}); "
            "nothing was submitted",
            estimate=estimate,
            limit=limit,
        )
    if estimate.usd > limit:
        raise CostLimitError(
            f"this run would submit {estimate.jobs} job(s) estimated at "
            f"${estimate.usd:.2f}, above {label} ${limit:.2f}; "
            "nothing was submitted",
            estimate=estimate,
            limit=limit,
        )
    return estimate


def check_balance(estimate: CostEstimate, balance: float | None, *, force: bool = False) -> None:
    """Raise :class:`CostLimitError` when ``estimate`` is above ``balance`` (USD).

    The one home of the balance rule: the run, and the dry run's verdict,
    come here. ``force`` (``--force``) lets the run start anyway; an unknown
    balance (None) is never a reason to refuse.
    """
    if force or balance is None or estimate.usd <= balance:
        return
    raise CostLimitError(
        f"this run would submit {estimate.jobs} job(s) estimated at ${estimate.usd:.2f}, "
        f"above your balance of ${balance:.2f}; nothing was submitted. Top up, or pass "
        "--force (force=True in Python) to start anyway",
        estimate=estimate,
        limit=balance,
    )


async def read_balance(client: RunComfyClient) -> float | None:
    """The account's balance in USD, or None when it cannot be read (logged, not raised).

    An unreadable wallet is no reason to refuse a run: the submits will say
    soon enough if the token or the balance is the trouble. One read (or one
    failure) per client serves every check of a run for ``BALANCE_REUSE``
    seconds: the preview and the spend check must not each wait
    ``BALANCE_TIMEOUT`` for a wallet that cannot be reached.
    """
    now = time.monotonic()
    cached = _BALANCES.get(client)
    if cached is not None and now - cached[0] < BALANCE_REUSE:
        return cached[1]
    value = await _read_balance_once(client)
    _BALANCES[client] = (time.monotonic(), value)
    return value


async def _read_balance_once(client: RunComfyClient) -> float | None:
    with anyio.move_on_after(BALANCE_TIMEOUT):
        try:
            balance = await client.balance()
        except (RunComfyError, ValueError, OSError) as exc:
            # ValueError: a transport that refuses the wallet's origin (a custom one)
            logger.warning("could not read the account balance (not checked): %s", exc)
            return None
        return balance.usd
    logger.warning("the account balance did not answer in %g s (not checked)", BALANCE_TIMEOUT)
    return None


async def check_spend(
    to_submit: Iterable[ManifestEntry],
    options: BatchOptions,
    client: RunComfyClient | None,
    *,
    registry: Registry | None = None,
    label: str = "the limit of",
) -> None:
    """Before the first submit: :func:`check_cost_limit`, then (with a client, unless
    ``options.force``) :func:`check_balance` against ``client.balance()``."""
    entries = list(to_submit)
    check_cost_limit(
        entries, options.max_cost, prices=options.prices, label=label, registry=registry
    )
    if client is None or options.force or not entries:
        return
    estimate = estimate_batch(entries, prices=options.prices, registry=registry)
    if estimate.usd > 0:
        check_balance(estimate, await read_balance(client))
