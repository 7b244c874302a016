"""What crosses the wire: attrs models plus the one private cattrs converter.

The models are plain snake_case classes with no wire details; every body the
API sends is structured once, here, by :func:`parse_submit`, :func:`parse_status`,
:func:`parse_result` and :func:`parse_cancel`. They are tolerant: unknown fields
are kept in ``raw``, both status vocabularies map onto :class:`JobState`, and an
unknown state means "not finished yet" (with a logged warning), never a crash.
A body that does not even have the shape we need raises
:class:`~runcomfy_async.MalformedResponseError`.
"""

from __future__ import annotations

import enum
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from html import escape
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._errors import MalformedResponseError

__all__ = [
    "Balance",
    "CancelOutcome",
    "JobState",
    "Result",
    "Status",
    "SubmitResponse",
    "parse_balance",
]

logger = logging.getLogger("runcomfy_async")


class JobState(str, enum.Enum):
    """The one state vocabulary of this library.

    The API speaks two (``completed``/``succeeded``, ``cancelled``/``canceled``);
    both map here. ``UNKNOWN`` is a state we do not know: treated as not finished.
    """

    QUEUED = "in_queue"
    RUNNING = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """True for the states a job never leaves: succeeded, failed, cancelled."""
        return self in _TERMINAL

    @classmethod
    def parse(cls, value: object) -> JobState:
        """Map any spelling the API uses onto a state; unknown values give ``UNKNOWN``."""
        if isinstance(value, str):
            state = _ALIASES.get(value.strip().lower())
            if state is not None:
                return state
        logger.warning("unknown job state %r from the API; treating it as not finished", value)
        return cls.UNKNOWN


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
_ALIASES: dict[str, JobState] = {
    "in_queue": JobState.QUEUED,
    "queued": JobState.QUEUED,
    "pending": JobState.QUEUED,
    # RunComfy's own clients meet these too (all "not finished")
    "waiting": JobState.QUEUED,
    "starting": JobState.RUNNING,
    "in_progress": JobState.RUNNING,
    "running": JobState.RUNNING,
    "processing": JobState.RUNNING,
    "completed": JobState.SUCCEEDED,
    "succeeded": JobState.SUCCEEDED,
    "success": JobState.SUCCEEDED,
    "failed": JobState.FAILED,
    "error": JobState.FAILED,
    "cancelled": JobState.CANCELLED,
    "canceled": JobState.CANCELLED,
}


def _as_dict(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    # A copy: the caller's mapping may change later; None means no output.
    return dict(value) if value else {}


@attrs.frozen
class SubmitResponse:
    """The API's answer to a submit: the new request's id and its URLs."""

    request_id: str
    status_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen
class Status:
    """A request's current state; ``queue_position`` only while queued."""

    request_id: str
    state: JobState
    queue_position: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen
class Result:
    """A request's result, or its current state while it is not finished.

    ``status`` is the state; ``output`` the output object (only on success,
    unknown keys kept); ``error`` the server's error payload on failure (any
    JSON type, as sent); ``cost`` in USD where the server reported one;
    ``raw`` the whole body as received.
    """

    request_id: str
    status: JobState
    output: Mapping[str, Any] = attrs.field(factory=dict, converter=_as_dict)
    error: Any = None
    created_at: str | None = None
    finished_at: str | None = None
    cost: float | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def done(self) -> bool:
        """True when the job reached a terminal state."""
        return self.status.is_terminal

    @property
    def video(self) -> str | None:
        """The output video URL, if the model produced one."""
        return _url(self.output.get("video"))

    @property
    def image(self) -> str | None:
        """The output image URL, if the model produced one."""
        return _url(self.output.get("image"))

    @property
    def videos(self) -> list[str]:
        """The output video URLs (from ``videos``, else ``[video]``, else empty)."""
        return _urls(self.output.get("videos"), self.video)

    @property
    def images(self) -> list[str]:
        """The output image URLs (from ``images``, else ``[image]``, else empty)."""
        return _urls(self.output.get("images"), self.image)

    @property
    def urls(self) -> list[str]:
        """Every output URL, videos first, without duplicates, in a stable order."""
        seen: dict[str, None] = {}
        for url in [*self.videos, *self.images]:
            seen.setdefault(url, None)
        return list(seen)

    def _repr_html_(self) -> str:
        """Jupyter rendering: the clip as an HTML5 ``<video>`` (or the image)."""
        head = f"<div><code>{escape(self.request_id)}</code> {escape(self.status.value)}</div>"
        parts = [
            f'<video src="{escape(url, quote=True)}" controls loop muted playsinline '
            'style="max-width: 100%"></video>'
            for url in self.videos
        ]
        parts += [
            f'<img src="{escape(url, quote=True)}" style="max-width: 100%"/>' for url in self.images
        ]
        if self.error is not None:
            parts.append(f"<pre>{escape(repr(self.error))}</pre>")
        return head + "".join(parts)


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _urls(values: Any, single: str | None) -> list[str]:
    if isinstance(values, list):
        return [v for v in values if isinstance(v, str) and v]
    return [single] if single else []


@attrs.frozen
class CancelOutcome:
    """The answer to a cancel: ``cancelled`` is True only if the job was really cancelled.

    ``outcome`` is the server's word (``cancelled`` or ``not_cancellable``): a
    request that is already running or finished cannot be cancelled, which is
    a no-op, not an error.
    """

    request_id: str
    outcome: str
    state: JobState = JobState.UNKNOWN
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def cancelled(self) -> bool:
        """True when the server says this call cancelled the request."""
        return self.outcome in ("cancelled", "canceled")

    def __bool__(self) -> bool:
        # ``job.cancel()`` returned a bool in the first release; ``if await
        # job.cancel():`` keeps its meaning for one release, with a warning.
        # Afterwards truth-testing raises: an always-true object would be a trap.
        warnings.warn(
            "the truth value of a CancelOutcome is deprecated (job.cancel() returned a bool "
            "before); test outcome.cancelled",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.cancelled


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(JobState, lambda v, _: JobState.parse(v))

    def _optional_int(value: Any, _: Any) -> int | None:
        # queue_position is informational: a bad one must not fail the check.
        if isinstance(value, bool) or value is None:
            return None
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            return None

    def _optional_float(value: Any, _: Any) -> float | None:
        if isinstance(value, bool) or value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400)
            return None
        return number if math.isfinite(number) else None

    def _optional_str(value: Any, _: Any) -> str | None:
        return value if isinstance(value, str) else None

    # Informational fields are read leniently: a bad one must not fail the check.
    lenient: dict[Any, Any] = {
        int | None: _optional_int,
        float | None: _optional_float,
        str | None: _optional_str,
        Mapping[str, Any]: lambda v, _: v if isinstance(v, dict) else {},
        Any: lambda v, _: v,
    }

    def _is(tp: Any) -> Callable[[Any], bool]:
        return lambda t: bool(t == tp)

    for tp, hook in lenient.items():
        conv.register_structure_hook_func(_is(tp), hook)

    def _request_id(value: Any, _: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"request_id must be a non-empty string, got {value!r}")
        return value

    for cls, renames in (
        (SubmitResponse, {}),
        (Status, {"state": "status"}),
        (Result, {}),
        (CancelOutcome, {"state": "status"}),
    ):
        # The id hook goes on the field: a hook registered for ``str`` after
        # these functions are generated would never be used by them.
        overrides = {"raw": override(omit=True), "request_id": override(struct_hook=_request_id)}
        overrides.update({k: override(rename=v) for k, v in renames.items()})
        fn = make_dict_structure_fn(cls, conv, **overrides)  # type: ignore[arg-type]
        conv.register_structure_hook(cls, fn)
    return conv


_converter = _make_converter()


def _structure(cls: type[Any], body: Any, *, status_code: int, request_id: str | None) -> Any:
    if not isinstance(body, dict):
        raise MalformedResponseError(
            f"expected a JSON object for {cls.__name__}",
            status_code=status_code,
            excerpt=repr(body)[:200],
        )
    data = dict(body)
    if request_id is not None and not isinstance(data.get("request_id"), str):
        # Some answers omit the id of the request they are about; we know it.
        data["request_id"] = request_id
    try:
        obj = _converter.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        msgs = (
            "; ".join(cattrs.transform_error(exc))
            if isinstance(exc, cattrs.BaseValidationError)
            else str(exc)
        )
        raise MalformedResponseError(
            f"cannot read {cls.__name__}: {msgs}",
            status_code=status_code,
            excerpt=repr(body)[:200],
        ) from None
    return attrs.evolve(obj, raw=body)


def parse_submit(body: Any, *, status_code: int = 200) -> SubmitResponse:
    """Structure a submit answer; it must carry a ``request_id``."""
    obj: SubmitResponse = _structure(SubmitResponse, body, status_code=status_code, request_id=None)
    return obj


def parse_status(body: Any, request_id: str, *, status_code: int = 200) -> Status:
    """Structure a status answer for ``request_id``."""
    if isinstance(body, dict) and "status" not in body:
        raise MalformedResponseError(
            "status answer has no 'status' field", status_code=status_code, excerpt=repr(body)[:200]
        )
    obj: Status = _structure(Status, body, status_code=status_code, request_id=request_id)
    return obj


def parse_result(body: Any, request_id: str, *, status_code: int = 200) -> Result:
    """Structure a result answer for ``request_id`` (finished or not)."""
    if isinstance(body, dict) and "status" not in body:
        # A finished result always says how it finished; without a status the
        # body might still carry outputs, which we then read as a success.
        if isinstance(body.get("output"), dict):
            body = {**body, "status": "succeeded"}
        else:
            raise MalformedResponseError(
                "result answer has neither 'status' nor 'output'",
                status_code=status_code,
                excerpt=repr(body)[:200],
            )
    obj: Result = _structure(Result, body, status_code=status_code, request_id=request_id)
    return obj


def parse_cancel(body: Any, request_id: str, *, status_code: int = 202) -> CancelOutcome:
    """Structure a cancel answer for ``request_id``."""
    if isinstance(body, dict) and "outcome" not in body:
        # Undocumented shapes: infer the outcome from the state when we can.
        state = JobState.parse(body.get("status")) if "status" in body else JobState.UNKNOWN
        outcome = "cancelled" if state is JobState.CANCELLED else "not_cancellable"
        body = {**body, "outcome": outcome}
    obj: CancelOutcome = _structure(
        CancelOutcome, body, status_code=status_code, request_id=request_id
    )
    return obj


@attrs.frozen
class Balance:
    """The account's wallet: ``usd`` (None when the answer gave no number), ``currency``.

    ``raw`` is the answer as sent, unknown keys included.
    """

    usd: float | None
    currency: str = "USD"
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)


def parse_balance(body: Any) -> Balance:
    """Read the balance endpoint's answer (``{"balance_usd": 12.34, "currency": "USD"}``)."""
    if not isinstance(body, Mapping):
        raise MalformedResponseError(
            f"the balance answer is not an object: {body!r:.120}", status_code=200
        )
    usd = body.get("balance_usd", body.get("balance"))
    if isinstance(usd, str):
        try:
            usd = float(usd)
        except ValueError:
            usd = None
    ok = isinstance(usd, (int, float)) and not isinstance(usd, bool) and math.isfinite(usd)
    currency = body.get("currency")
    return Balance(
        float(usd) if ok else None,
        currency if isinstance(currency, str) else "USD",
        dict(body),
    )
