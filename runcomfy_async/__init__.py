"""runcomfy-async: the asyncio-first client for RunComfy's Model API.

One client holds one connection pool, one request budget and one polling
scheduler for every job in flight::

    async with RunComfyClient() as client:
        result = await client.run(KlingTextToVideo(prompt="a red fox in the snow"))
        print(result.video)

Test helpers (``MockTransport``, ``Emulator``, ...) live in
:mod:`runcomfy_async.testing`.
"""

from ._client import DEFAULT_BASE_URL, RunComfyClient
from ._errors import (
    APIStatusError,
    APIUnreachableError,
    AuthenticationError,
    ClientStateError,
    DownloadError,
    InputValidationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    MalformedResponseError,
    ManifestProblem,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RunComfyError,
    ServerError,
    SharedLimitsError,
    SubmitOutcomeUnknown,
    TransportError,
    ValidationProblem,
)
from ._fanout import Outcome
from ._job import Job
from ._limits import Budget, InFlightLimit, Limits, MemoryLimits, Priority
from ._models import Balance, CancelOutcome, JobState, Result, Status
from ._polling import JobEvent, PollStats
from ._retry import RetryPolicy
from ._timing import ModelLatency, PollPolicy
from ._transport import Request, Response, Transport
from ._version import __version__
from .batch import (
    BatchOptions,
    BatchPreview,
    BatchReport,
    BatchRunner,
    CostEstimate,
    CostLimitError,
    JobReport,
    JournalError,
    Manifest,
    ManifestChecks,
    ManifestError,
    run_batch,
)
from .catalog import ModelInfo, ModelsClient, ModelSpec, Registry
from .inputs import (
    Element,
    KlingImageToVideo,
    KlingTextToVideo,
    ModelInput,
    ModelPrice,
    MultiPromptSegment,
    PriceTable,
    estimate_cost,
)
from .progress import ProgressBar, track_progress

__all__ = [
    "DEFAULT_BASE_URL",
    "APIStatusError",
    "APIUnreachableError",
    "AuthenticationError",
    "Balance",
    "BatchOptions",
    "BatchPreview",
    "BatchReport",
    "BatchRunner",
    "Budget",
    "CancelOutcome",
    "ClientStateError",
    "CostEstimate",
    "CostLimitError",
    "DownloadError",
    "Element",
    "InFlightLimit",
    "InputValidationError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobReport",
    "JobState",
    "JobTimeoutError",
    "JournalError",
    "KlingImageToVideo",
    "KlingTextToVideo",
    "Limits",
    "MalformedResponseError",
    "Manifest",
    "ManifestChecks",
    "ManifestError",
    "ManifestProblem",
    "MemoryLimits",
    "ModelInfo",
    "ModelInput",
    "ModelLatency",
    "ModelPrice",
    "ModelSpec",
    "ModelsClient",
    "MultiPromptSegment",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "PollPolicy",
    "PollStats",
    "PriceTable",
    "Priority",
    "ProgressBar",
    "RateLimitError",
    "Registry",
    "Request",
    "RequestTimeoutError",
    "Response",
    "Result",
    "RetryPolicy",
    "RunComfyClient",
    "RunComfyError",
    "ServerError",
    "SharedLimitsError",
    "Status",
    "SubmitOutcomeUnknown",
    "Transport",
    "TransportError",
    "ValidationProblem",
    "__version__",
    "estimate_cost",
    "run_batch",
    "track_progress",
]
