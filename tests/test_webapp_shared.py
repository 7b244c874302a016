"""Four worker processes of ``examples/webapp.py`` share one RedisLimits on one account.

The acceptance test of the shared budget: an emulator with a real account
rate limit (``Faults(rps_limit=...)``, per token, in real seconds; generation
times scaled), a throwaway redis-server, and four worker processes configured
only through the environment (base URL, token, Redis URL and key), as
gunicorn workers would be. Driven with many concurrent clip requests, the
account sees at most 1% 429s and no more requests than its limit admits.
(``benchmarks/bench_shared.py`` prints the same fleet with in-memory limits
beside it: there each worker spends the whole budget and 429s pile up.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from emuthread import ThreadedEmulator

from runcomfy_async.emulator import Faults
from tests.servers import redis_url
from tests.webapp_fleet import drive, emulator_counters, fleet_env, run_workers, summary

__all__ = ["redis_url"]  # the fixture, imported for pytest

LIMIT = 30.0  # the account's requests per second
BURST = LIMIT  # the emulator's default burst: one second's worth
SCALE = 0.01
WORKERS = 4
CLIPS = 120


@pytest.fixture
def limited_emulator() -> Iterator[ThreadedEmulator]:
    with ThreadedEmulator(
        time_scale=SCALE, workers=1000, seed=3, faults=Faults(rps_limit=LIMIT)
    ) as te:
        yield te


async def test_four_workers_sharing_redis_limits_stay_within_the_account_limit(
    limited_emulator: ThreadedEmulator, redis_url: str
) -> None:
    emu = limited_emulator.emu
    env = fleet_env(
        base_url=emu.base_url,
        token=emu.token,
        time_scale=SCALE,
        requests_per_second=LIMIT,  # each worker is told the account's rate
        redis_url=redis_url,
        key=f"webapp-{uuid.uuid4().hex[:8]}",
    )
    async with run_workers(WORKERS, env) as urls:
        driven = await drive(urls, CLIPS)
    seen = summary(await emulator_counters(emu.base_url), driven["seconds"])

    assert driven["statuses"] == [200] * CLIPS, driven["bodies"]
    assert len({body["request_id"] for body in driven["bodies"]}) == CLIPS
    assert seen["jobs_created"] == CLIPS  # a submit refused with 429 created nothing
    assert seen["share_429"] <= 0.01, seen
    # No more requests than the account's token bucket admits over the run:
    # one burst, then the limit each second...
    assert seen["requests"] <= BURST + LIMIT * driven["seconds"], seen
    # ...and in no second more than a burst plus a second's worth.
    assert seen["peak_rps"] <= BURST + LIMIT, seen
