"""Run an Emulator in its own process for benchmarks, so client CPU is measured alone.

``python benchmarks/_emuproc.py CONFIG_JSON`` prints one JSON line
(``base_url``, ``storage_url``, ``token``) when ready and serves until its
standard input closes. CONFIG_JSON keys: time_scale, workers, seed,
uniform (model id -> [min, max] seconds), lognormal (model id -> [median,
sigma, min, max] seconds), queue ("fifo", "random", "lifo"), faults (Faults
keyword arguments), outage ([after_s, seconds]: the API origin goes down
``after_s`` wall seconds after the first request, for ``seconds``),
max_jobs_per_token (the account's concurrency limit).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from runcomfy_async.emulator import Emulator, Faults, ModelProfile, default_models


async def serve(config: dict[str, Any]) -> None:
    models = default_models()
    for model_id, (low, high) in config.get("uniform", {}).items():
        models[model_id] = ModelProfile.uniform(low, high)
    for model_id, (median, sigma, low, high) in config.get("lognormal", {}).items():
        models[model_id] = ModelProfile.lognormal(median, sigma, min_seconds=low, max_seconds=high)
    faults = Faults(**config["faults"]) if config.get("faults") else None
    async with Emulator(
        time_scale=config.get("time_scale", 0.01),
        workers=config.get("workers", 100),
        seed=config.get("seed", 0),
        models=models,
        faults=faults,
        vocabulary="mixed",
        queue=config.get("queue", "fifo"),
        max_jobs_per_token=config.get("max_jobs_per_token"),
    ) as emu:
        print(
            json.dumps(
                {"base_url": emu.base_url, "storage_url": emu.storage_url, "token": emu.token}
            ),
            flush=True,
        )
        loop = asyncio.get_running_loop()
        outage = config.get("outage")
        task = None
        if outage:
            after, seconds = outage

            async def go_down() -> None:
                # Counted from the first request the client sends.
                while emu.counters.submit == 0:  # noqa: ASYNC110 (a counter, no event)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(after)
                await emu.outage(seconds)

            task = asyncio.create_task(go_down())
        # Serve until the parent closes our stdin.
        await loop.run_in_executor(None, sys.stdin.read)
        if task is not None:
            task.cancel()


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[1])))
