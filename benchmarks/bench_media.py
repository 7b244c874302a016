"""What the emulator's playing clips cost: milliseconds to encode one, bytes, a cached serve.

``python benchmarks/bench_media.py [--clips N]`` encodes N clips for distinct
request ids (PyAV, the ``video`` extra), then serves them again from the
cache, prints a table and writes ``benchmarks/results/bench_media.json``
with the git commit it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from runcomfy_async.emulator import _media

HERE = Path(__file__).resolve().parent


def commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=300)
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
