"""Helpers for testing code that uses runcomfy-async, without network or money.

- :class:`MockTransport`: pass ``RunComfyClient(transport=MockTransport(handler))``
  and answer each :class:`Request` with a :class:`Response` from a plain function;
- :class:`Emulator`: a local RunComfy Model API on a loopback port, with
  :class:`Faults` to inject and :class:`ModelProfile` durations; point a client
  at ``emulator.url``;
- :func:`no_wait_retry`: a :class:`RetryPolicy` that retries without sleeping.
"""

from __future__ import annotations

from ._retry import RetryPolicy
from ._transport import MockTransport, Request, Response
from .emulator import Emulator, Faults, ModelProfile

__all__ = [
    "Emulator",
    "Faults",
    "MockTransport",
    "ModelProfile",
    "Request",
    "Response",
    "no_wait_retry",
]


def no_wait_retry(attempts: int = 6) -> RetryPolicy:
    """A retry policy whose backoff does not sleep: tests of failure paths run at once."""
    return RetryPolicy.no_wait(attempts)
