"""Limits shared by many processes and machines, kept in Redis.

Install the extra: ``pip install runcomfy-async[redis]``.

The single-process default lives in memory and needs nothing; use
:class:`RedisLimits` when several processes (web workers, containers,
machines) spend one account's request rate and concurrency::

    async with (
        RedisLimits("redis://cache:6379/0", key="acct-1") as limits,
        RunComfyClient(limits=limits) as client,
    ):
        ...

A Redis failure surfaces as :class:`SharedLimitsError` (a ``RunComfyError``).
"""

from .._errors import SharedLimitsError
from ._adapt import SharedBudget, SharedSlots
from ._redis import CHECK_SHARE, RedisLimits

__all__ = ["CHECK_SHARE", "RedisLimits", "SharedBudget", "SharedLimitsError", "SharedSlots"]
