"""What the emulator's playing clips cost: milliseconds to encode one, bytes, a cached serve,
and how long the emulator's event loop stalls while it serves first downloads.

``python benchmarks/bench_media.py [--clips N] [--served M]`` encodes N clips
for distinct request ids (PyAV, the ``video`` extra), then serves them again
from the cache; then runs M jobs on an in-process emulator and downloads all
their outputs at once (each encoded on first serve) while a ticker on the
same loop measures how late it wakes (the storage handler encodes in a
worker thread, so the loop should not wait on an encode). Prints a table and
writes ``benchmarks/results/bench_media.json`` with the git commit it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp

from runcomfy_async import PollPolicy, RunComfyClient
from runcomfy_async.emulator import Emulator, _media

HERE = Path(__file__).resolve().parent


def commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


async def loop_stall(served: int) -> tuple[float, float, float]:
    """Download ``served`` fresh outputs at once: (worst and p99 ticker lateness in ms, seconds)."""
    _media._clip.cache_clear()
    async with (
        Emulator(time_scale=0.001) as emu,
        RunComfyClient(
            emu.token,
            base_url=emu.base_url,
            poll=PollPolicy(time_scale=emu.time_scale),
            requests_per_second=None,
        ) as client,
    ):
        model = "kling/kling-3.0/pro/text-to-video"
        jobs = [
            await client.submit(model, {"prompt": f"p{i}", "duration": 5}) for i in range(served)
        ]
        urls = [str((await job).video) for job in jobs]
        late: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                before = loop.time()
                await asyncio.sleep(0.001)
                late.append((loop.time() - before - 0.001) * 1000)

        async with aiohttp.ClientSession() as session:

            async def fetch(url: str) -> None:
                async with session.get(url) as resp:
                    assert resp.status == 200
                    await resp.read()

            tick = asyncio.create_task(ticker())
            await asyncio.sleep(0.05)
            late.clear()
            start = time.perf_counter()
            await asyncio.gather(*(fetch(u) for u in urls))
            took = time.perf_counter() - start
            stop.set()
            await tick
    p99 = statistics.quantiles(late, n=100, method="inclusive")[98] if len(late) > 1 else 0.0
    return max(late, default=0.0), p99, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--served", type=int, default=100)
    parser.add_argument("--out", default=str(HERE / "results" / "bench_media.json"))
    args = parser.parse_args()
    if not _media.playable():
        raise SystemExit("PyAV is not installed: pip install '.[video]'")
    _media.make_mp4("warm-up")  # the first call also imports PyAV
    ids = [str(uuid.UUID(int=i, version=4)) for i in range(args.clips)]
    _media._clip.cache_clear()
    encode_ms, cpu_ms, sizes = [], [], []
    for rid in ids:
        start, cpu = time.perf_counter(), time.process_time()
        sizes.append(len(_media.make_mp4(rid)))
        encode_ms.append((time.perf_counter() - start) * 1000)
        cpu_ms.append((time.process_time() - cpu) * 1000)
    start = time.perf_counter()
    for rid in ids:
        _media.make_mp4(rid)
    cached_us = (time.perf_counter() - start) / len(ids) * 1e6
    frame_start = time.perf_counter()
    for rid in ids[:50]:
        _media._frames(rid)
    frames_ms = (time.perf_counter() - frame_start) / min(50, len(ids)) * 1000
    cuts = statistics.quantiles(encode_ms, n=20)
    stall_max, stall_p99, serve_s = asyncio.run(loop_stall(args.served))
    result = {
        "commit": commit(),
        "clips": len(ids),
        "clip": {
            "size": list(_media.CLIP_SIZE),
            "fps": _media.CLIP_FPS,
            "frames": _media.CLIP_FRAMES,
        },
        "encode_ms_mean": round(statistics.fmean(encode_ms), 3),
        "encode_ms_p50": round(statistics.median(encode_ms), 3),
        "encode_ms_p95": round(cuts[18], 3),
        # CPU time: what a loaded machine cannot inflate (wall times can be).
        "encode_cpu_ms_mean": round(statistics.fmean(cpu_ms), 3),
        "pictures_ms_mean": round(frames_ms, 3),
        "bytes_mean": round(statistics.fmean(sizes)),
        "cached_serve_us": round(cached_us, 3),
        "served_at_once": args.served,
        "serve_all_s": round(serve_s, 3),
        "loop_late_ms_max": round(stall_max, 3),
        "loop_late_ms_p99": round(stall_p99, 3),
    }
    rows = [
        ("clips encoded", f"{len(ids)}"),
        (
            "encode, mean / p50 / p95",
            f"{result['encode_ms_mean']:.2f} / "
            f"{result['encode_ms_p50']:.2f} / {result['encode_ms_p95']:.2f} ms",
        ),
        ("encode, CPU time (mean)", f"{result['encode_cpu_ms_mean']:.2f} ms"),
        ("of which drawing the pictures", f"{frames_ms:.2f} ms"),
        ("bytes per clip (mean)", f"{result['bytes_mean']}"),
        ("cached serve", f"{cached_us:.2f} µs"),
        (f"{args.served} first downloads at once", f"{serve_s:.2f} s"),
        ("emulator loop late, max / p99", f"{stall_max:.2f} / {stall_p99:.2f} ms"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
