"""runcomfy-async: the asyncio-first client for RunComfy's Model API.

One client holds one connection pool, one request budget and one polling
scheduler for every job in flight::

    async with RunComfyClient() as client:
        result = await client.run(KlingTextToVideo(prompt="a red fox in the snow"))
        print(result.video)
"""

from ._client import DEFAULT_BASE_URL, RunComfyClient
from ._errors import (
    APIStatusError,
    AuthenticationError,
    ClientStateError,
    InputValidationError,
    InsufficientBalanceError,
    InvalidRequestError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RunComfyError,
    ServerError,
    SubmitOutcomeUnknown,
    TransportError,
    ValidationProblem,
)
from ._fanout import Outcome
from ._job import Job
from ._limiter import RequestBudget
from ._models import Balance, CancelOutcome, JobState, Result, Status, SubmitResponse
from ._retry import RetryPolicy
from ._scheduler import JobEvent, PollScheduler
from ._timing import PollPolicy
from ._transport import MockTransport, Request, Response, Transport
from ._version import __version__
from .batch import (
    BatchReport,
    BatchRunner,
    CostLimitError,
    JournalError,
    Manifest,
    ManifestError,
    run_batch,
)
from .catalog import ModelInfo, ModelsClient, ModelSpec
from .inputs import (
    Element,
    KlingImageToVideo,
    KlingTextToVideo,
    ModelInput,
    MultiPromptSegment,
    PriceTable,
    estimate_cost,
)
from .progress import ProgressBar, track_progress

__all__ = [
    "DEFAULT_BASE_URL",
    "APIStatusError",
    "AuthenticationError",
    "Balance",
    "BatchReport",
    "BatchRunner",
    "CancelOutcome",
    "ClientStateError",
    "CostLimitError",
    "Element",
    "InputValidationError",
    "InsufficientBalanceError",
    "InvalidRequestError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobEvent",
    "JobFailedError",
    "JobState",
    "JobTimeoutError",
    "JournalError",
    "KlingImageToVideo",
    "KlingTextToVideo",
    "MalformedResponseError",
    "Manifest",
    "ManifestError",
    "MockTransport",
    "ModelInfo",
    "ModelInput",
    "ModelSpec",
    "ModelsClient",
    "MultiPromptSegment",
    "NotFoundError",
    "Outcome",
    "PermissionDeniedError",
    "PollPolicy",
    "PollScheduler",
    "PriceTable",
    "ProgressBar",
    "RateLimitError",
    "Request",
    "RequestBudget",
    "RequestTimeoutError",
    "Response",
    "Result",
    "RetryPolicy",
    "RunComfyClient",
    "RunComfyError",
    "ServerError",
    "Status",
    "SubmitOutcomeUnknown",
    "SubmitResponse",
    "Transport",
    "TransportError",
    "ValidationProblem",
    "__version__",
    "estimate_cost",
    "run_batch",
    "track_progress",
]
