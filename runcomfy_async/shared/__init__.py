"""Limits shared by many processes and machines, kept in Redis.

Install the extra: ``pip install runcomfy-async[redis]``.

The single-process default lives in memory and needs nothing; use
:class:`RedisLimits` when several processes (web workers, containers,
machines) spend one account's request rate and concurrency.
"""

from ._redis import CHECK_SHARE, RedisLimits

__all__ = ["CHECK_SHARE", "RedisLimits"]
