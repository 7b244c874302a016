"""The one exception tree of runcomfy-async.

Every error the library raises on purpose derives from :class:`RunComfyError`::

    RunComfyError
    ├── APIStatusError                 the API answered with an error
    │   ├── AuthenticationError        401/403, error_code 400004
    │   ├── PermissionDeniedError      error_code 403001: it belongs to another user
    │   ├── InsufficientBalanceError   402, error_code 400002
    │   ├── NotFoundError              404, error_code 404001
    │   ├── InvalidRequestError        400/422, error_code 400001
    │   ├── RateLimitError             429 (carries retry_after)
    │   └── ServerError                5xx (carries retry_after)
    ├── MalformedResponseError         a 2xx body we cannot read
    ├── TransportError                 the request never got an answer
    │   ├── RequestTimeoutError        ... because it timed out (also TimeoutError)
    │   └── APIUnreachableError        a batch found the API host unreachable (nothing sent)
    ├── SubmitOutcomeUnknown           a paid submit may or may not have created a job
    ├── JobError                       a job ended without a usable result
    │   ├── JobFailedError             the server says the job failed (carries its payload)
    │   ├── JobCancelledError          the job was cancelled
    │   └── JobTimeoutError            we stopped waiting (also TimeoutError)
    ├── InputValidationError           bad input, found before money is spent (also ValueError)
    ├── ClientStateError               misuse of the client lifecycle (also RuntimeError)
    │   (raised by the bulk runner, runcomfy_async.batch:)
    ├── ManifestError                  bad manifest lines, each with its number (also ValueError)
    ├── CostLimitError                 the run's estimate is above --max-cost (also ValueError)
    ├── JournalError                   the batch journal is unusable (locked, corrupt, changed)
    │   ├── IllegalTransitionError     a job's journal state cannot move that way (a bug)
    │   └── JobHeldElsewhereError      another runner of a shared journal holds the job
    ├── DownloadError                  an output could not be downloaded
    │   (raised by the shared limits, runcomfy_async.shared:)
    └── SharedLimitsError              the shared limits' store (Redis) failed or is unreachable

Messages never contain the API token: the token is never passed to any of
these constructors, and bodies are kept as the server sent them (the server
never echoes the token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

__all__ = [
    "APIStatusError",
    "APIUnreachableError",
    "AuthenticationError",
    "ClientStateError",
    "CostLimitError",
    "DownloadError",
    "IllegalTransitionError",
    "InputValidationError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "JobCancelledError",
    "JobError",
    "JobFailedError",
    "JobHeldElsewhereError",
    "JobTimeoutError",
    "JournalError",
    "MalformedResponseError",
    "ManifestError",
    "ManifestProblem",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "RunComfyError",
    "ServerError",
    "SharedLimitsError",
    "SubmitOutcomeUnknown",
    "TransportError",
    "ValidationProblem",
]


class RunComfyError(Exception):
    """Base of every error raised by runcomfy-async on purpose."""


class APIStatusError(RunComfyError):
    """The API answered, and the answer is an error.

    ``status_code`` is the HTTP status (200 for a 200 that carried a top-level
    ``error_code``); ``error_code`` is RunComfy's numeric code where the body
    gave one; ``message`` is the human text the body gave (its
    ``error_message`` or ``message``, plus its ``detail``; made one line of at
    most 500 characters) or a short excerpt of a non-JSON body; ``body`` is the
    parsed JSON body as sent, or the text excerpt; ``request_id`` is the
    request this call was about, where known; ``sent`` is False for an error
    raised before any request was made (no token): its message names no HTTP
    status, though ``status_code`` says which one it stands for.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_code: int | None = None,
        body: Any = None,
        request_id: str | None = None,
        method: str | None = None,
        path: str | None = None,
        sent: bool = True,
    ) -> None:
        self.sent = sent
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.body = body
        self.request_id = request_id
        self.method = method
        self.path = path
        super().__init__(self._describe())

    def _describe(self) -> str:
        if not self.sent:
            return self.message
        where = f" on {self.method} {self.path}" if self.method and self.path else ""
        code = f" (error_code {self.error_code})" if self.error_code is not None else ""
        return f"HTTP {self.status_code}{code}{where}: {self.message}"


class AuthenticationError(APIStatusError):
    """The token is missing, bad, expired or revoked, or lacks access (401/403, 400004)."""


class InsufficientBalanceError(APIStatusError):
    """The account cannot pay for this request (402, error_code 400002)."""


class PermissionDeniedError(APIStatusError):
    """The resource belongs to another user (error_code 403001): the token is fine.

    Not an :class:`AuthenticationError`: a new token would not help.
    """


class NotFoundError(APIStatusError):
    """The request id is unknown, deleted or expired (404, error_code 404001)."""


class InvalidRequestError(APIStatusError):
    """The server rejected the request as invalid (400/422, error_code 400001)."""


class RateLimitError(APIStatusError):
    """Too many requests or jobs at once (429).

    ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ServerError(APIStatusError):
    """The server (or a gateway in front of it) failed: any 5xx.

    ``retry_after`` is the server's ``Retry-After`` in seconds (a 503 may send
    one), else None.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class MalformedResponseError(RunComfyError):
    """A successful answer whose body is not what the API documents.

    ``status_code`` and a short ``excerpt`` of the body say what came back.
    """

    def __init__(self, message: str, *, status_code: int, excerpt: str = "") -> None:
        self.status_code = status_code
        self.excerpt = excerpt
        detail = f": {excerpt!r}" if excerpt else ""
        super().__init__(f"{message} (HTTP {status_code}){detail}")


class TransportError(RunComfyError):
    """The request got no answer: connection refused or dropped, DNS, TLS, ...

    ``request_sent`` is False only when the request certainly never reached the
    server (connection refused, DNS failure, connect timeout); True when it may
    have (the connection dropped or timed out after sending).
    """

    def __init__(self, message: str, *, request_sent: bool = True) -> None:
        self.request_sent = request_sent
        super().__init__(message)


class RequestTimeoutError(TransportError, TimeoutError):
    """The request got no answer in time (connect or read timeout)."""


class APIUnreachableError(TransportError):
    """No submit of the run could reach the API's host; nothing was sent.

    ``host`` and ``port``: the address that could not be reached; ``reason``:
    why (connection refused, name does not resolve, no answer).
    """

    def __init__(self, base_url: str, host: str, port: int, reason: str) -> None:
        self.base_url = base_url
        self.host = host
        self.port = port
        self.reason = reason
        super().__init__(
            f"cannot reach the API at {host}:{port} ({reason}); nothing was submitted. "
            "Check the address (--base-url, RUNCOMFY_BASE_URL) and this machine's network, "
            f"e.g. with: curl -sS -o /dev/null {base_url}/",
            request_sent=False,
        )


class SubmitOutcomeUnknown(RunComfyError):
    """A paid submit may or may not have created a job.

    Raised when the connection dropped or timed out after the request body was
    sent: the server may have accepted it (and will charge for it) or not. It is
    never resubmitted silently; decide yourself, e.g. after checking your
    RunComfy dashboard. ``model_id`` and ``payload`` say what was sent.
    """

    def __init__(self, message: str, *, model_id: str, payload: Any = None) -> None:
        self.model_id = model_id
        self.payload = payload
        super().__init__(message)


class JobError(RunComfyError):
    """A job ended without a usable result. ``request_id`` and ``model_id`` name it."""

    def __init__(self, message: str, *, request_id: str, model_id: str | None = None) -> None:
        self.request_id = request_id
        self.model_id = model_id
        super().__init__(message)


class JobFailedError(JobError):
    """The server reports the job failed.

    ``error`` is the server's error payload exactly as sent (any JSON type, or
    ``None`` when the body said nothing); ``result`` is the whole result object.
    """

    def __init__(
        self,
        message: str,
        *,
        request_id: str,
        model_id: str | None = None,
        error: Any = None,
        result: Any = None,
    ) -> None:
        self.error = error
        self.result = result
        super().__init__(message, request_id=request_id, model_id=model_id)


class JobCancelledError(JobError):
    """The job was cancelled (by us, by another client, or by the server)."""


class JobTimeoutError(JobError, TimeoutError):
    """We stopped waiting for the job. The remote job may still run unless cancelled."""


@attrs.frozen
class ValidationProblem:
    """One thing wrong with an input: where (``path``), what (``value``), and the rule broken."""

    path: str
    value: Any
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule} (got {_short_repr(self.value)})"


_MISSING_REPR = "<missing>"


def _short_repr(value: Any, limit: int = 60) -> str:
    if value is attrs.NOTHING:
        return _MISSING_REPR
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InputValidationError(RunComfyError, ValueError):
    """An input breaks one or more rules; ``problems`` lists every one of them.

    Raised before anything is sent, so nothing is paid for.
    """

    def __init__(self, problems: Sequence[ValidationProblem], *, model_id: str | None = None):
        self.problems = list(problems)
        self.model_id = model_id
        head = f"invalid input for {model_id}" if model_id else "invalid input"
        n = len(self.problems)
        lines = [f"{head}: {n} problem{'s' if n != 1 else ''}"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    def _repr_html_(self) -> str:
        """Notebook rendering: a small table of the problems."""
        from html import escape

        rows = "".join(
            f"<tr><td><code>{escape(p.path)}</code></td><td>{escape(p.rule)}</td>"
            f"<td><code>{escape(_short_repr(p.value))}</code></td></tr>"
            for p in self.problems
        )
        return (
            "<table><thead><tr><th>field</th><th>rule</th><th>value</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )


class ClientStateError(RunComfyError, RuntimeError):
    """The client was used in a state that does not allow it (closed, or reopened)."""


# -- the bulk runner (runcomfy_async.batch) ----------------------------------------------


@attrs.frozen
class ManifestProblem:
    """One thing wrong with one line: where (``line``, 1-based; ``id`` where known), and what."""

    line: int
    message: str
    id: str | None = None
    kind: str = "line"

    def __str__(self) -> str:
        who = f" ({self.id})" if self.id else ""
        where = f"{self.kind} {self.line}" if self.line else self.kind
        return f"{where}{who}: {self.message}"


class ManifestError(RunComfyError, ValueError):
    """A manifest (or a list of jobs) has problems; ``problems`` lists every one.

    Raised before anything is submitted. ``source`` names the manifest file,
    when there is one.
    """

    def __init__(self, problems: Sequence[ManifestProblem], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        lines = {p.line for p in self.problems}
        head = f"{source}: " if source else ""
        n = len(lines)
        text = [f"{head}{n} bad line{'s' if n != 1 else ''}, nothing was submitted:"]
        text += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(text))


class CostLimitError(RunComfyError, ValueError):
    """The run's estimated cost is above the limit set (nothing was submitted).

    ``estimate`` is the :class:`~runcomfy_async.batch.CostEstimate` of what the
    run would submit, ``limit`` the ceiling in USD.
    """

    def __init__(self, message: str, *, estimate: Any, limit: float) -> None:
        self.estimate = estimate
        self.limit = limit
        super().__init__(message)


class JournalError(RunComfyError):
    """The journal cannot be used: locked by another run, unreadable, or from a newer version."""


class IllegalTransitionError(JournalError):
    """A job's journal state was asked to move along an edge the state diagram does not have.

    Always a bug of the runner (or of a journal engine): the write is refused,
    so the journal never records a history that could make a rerun pay twice.
    """

    def __init__(self, job_id: str, current: str | None, target: str) -> None:
        self.job_id = job_id
        self.current = current
        self.target = target
        super().__init__(f"job {job_id!r}: the journal refuses {current} -> {target}")


class JobHeldElsewhereError(JournalError):
    """Another runner of a shared (PostgreSQL) journal holds the job: nothing was written.

    It happens to a runner whose lease ran out (it stalled longer than its
    lease) after another runner took its jobs over.
    """

    def __init__(self, job_id: str, holder: str | None, runner: str) -> None:
        self.job_id = job_id
        self.holder = holder
        self.runner = runner
        super().__init__(
            f"job {job_id!r} is held by runner {holder!r}, not {runner!r} "
            "(this runner's lease may have run out)"
        )


class SharedLimitsError(RunComfyError):
    """The store behind shared limits (Redis) failed or could not be reached.

    ``url`` names the store without its password. Nothing was sent to the API
    on account of the failed call: a submit that could not get its token or
    slot was not made.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class DownloadError(RunComfyError):
    """An output could not be saved. ``url`` is what was fetched (never a token), ``status``
    the last HTTP status where there was one."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)
