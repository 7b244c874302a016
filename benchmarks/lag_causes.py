"""Where detection lag comes from: per-job trace of one bench_scheduler scenario.

``python benchmarks/lag_causes.py [faults|faultfree] [--jobs N] [--top K] [--rate none|R]``

Runs the scenario's emulator in its own process and the client in this one,
with the scheduler instrumented (every check sent and answered, every due
time set, and who set it). For each job that got its result, the lag
(detection minus the server's ``finished_at``) is split into:

- ``plan``: from finish to the due time of the first check planned after it
  (the schedule itself: lag_fraction of age, probe rounds, backoffs);
- ``late``: from that due time to when the check went out (budget, workers);
- ``fail``: time spent on failed checks after the finish (and their backoff);
- ``wire``: the successful check's own round trip, plus map delivery.

Prints the p50/p95 share of each for the jobs at or above p95 lag/age, the
jobs' worst few in detail, and the planner that set the last due time.
Diagnostic only (not a benchmark target).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scheduler as bs

from runcomfy_async import RunComfyClient
from runcomfy_async._polling import _dispatcher, _due

Events = dict[str, list[tuple[Any, ...]]]


def instrument(events: Events) -> None:
    """Wrap the scheduler's check and the due queue's push to record each job's history."""
    orig_check = _dispatcher.PollScheduler._check
    orig_push = _due.DueQueue.push

    async def check(self: Any, t: Any, ticket: Any) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        due = t.due
        before = self.check_failures
        await orig_check(self, t, ticket)
        answered = loop.time()
        failed = self.check_failures > before
        outcome = "fail" if failed else ("done" if t.done else "not_done")
        events[t.request_id].append(("check", due, sent, answered, outcome, t.failures))

    def push(self: Any, t: Any, due: float) -> bool:
        frame = sys._getframe(1)
        who = frame.f_code.co_name
        if who == "_push":
            frame = frame.f_back
            assert frame is not None
            who = frame.f_code.co_name
        events[t.request_id].append(("push", asyncio.get_running_loop().time(), due, who))
        return orig_push(self, t, due)

    _dispatcher.PollScheduler._check = check  # type: ignore[method-assign]
    _due.DueQueue.push = push  # type: ignore[method-assign]


async def run(spec: dict[str, Any], info: dict[str, str], events: Events) -> list[dict[str, Any]]:
    model_id, n = spec["model"], spec["n"]
    rows = []
    samples: list[tuple[float, float, int, int]] = []
    loop = asyncio.get_running_loop()
    offset = time.time() - loop.time()  # wall = loop + offset
    async with RunComfyClient(
        info["token"], base_url=info["base_url"], **bs.client_options(spec)
    ) as client:

        async def sample() -> None:
            budget = client.budget
            t0 = loop.time()
            while True:
                samples.append(
                    (
                        loop.time() - t0,
                        budget.rate,
                        getattr(budget, "waiting", -1),
                        client.poll_stats.tracking,
                    )
                )
                await asyncio.sleep(2.0)

        sampler = asyncio.create_task(sample())
        async for outcome in client.map(model_id, (bs.payload(model_id, i) for i in range(n))):
            if outcome.result is None:
                continue
            r = outcome.result
            rows.append(
                {
                    "id": r.request_id,
                    "yielded": loop.time(),
                    "created": bs._ts(r.created_at) - offset,
                    "finished": bs._ts(r.finished_at) - offset,
                }
            )
        sampler.cancel()
    print("budget (t, rate, waiting, tracking):")
    for t, rate, waiting, tracking in samples:
        print(f"  {t:5.1f}s rate {rate:6.1f} waiting {waiting:4d} tracking {tracking}")
    return rows


def analyse(rows: list[dict[str, Any]], events: Events, top: int) -> None:
    per_job = []
    for row in rows:
        fin, created = row["finished"], row["created"]
        age = fin - created
        lag = row["yielded"] - fin
        ev = events.get(row["id"], [])
        checks = [e for e in ev if e[0] == "check"]
        after = [c for c in checks if c[2] >= fin]  # sent after the finish
        parts = {"plan": 0.0, "late": 0.0, "fail": 0.0, "wire": 0.0}
        last_planner = "?"
        if after:
            first = after[0]
            parts["plan"] = max(first[1] - fin, 0.0)
            parts["late"] = max(first[2] - max(first[1], fin), 0.0)
            failed = [c for c in after if c[4] == "fail"]
            if failed:
                ok = after[-1]
                parts["fail"] = max(ok[2] - failed[0][2], 0.0)
            parts["wire"] = max(lag - parts["plan"] - parts["late"] - parts["fail"], 0.0)
            pushes = [e for e in ev if e[0] == "push" and e[1] <= first[2]]
            if pushes:
                last_planner = pushes[-1][3]
            # Who set the due time the first post-finish check went out at?
        per_job.append(
            {
                **row,
                "age": age,
                "lag": lag,
                "rel": lag / age if age > 0 else 0.0,
                "parts": parts,
                "planner": last_planner,
                "checks": len(checks),
                "fails": sum(1 for c in checks if c[4] == "fail"),
                "fails_after": sum(1 for c in after if c[4] == "fail"),
            }
        )
    rel = sorted(j["rel"] for j in per_job)
    p95 = statistics.quantiles(rel, n=100, method="inclusive")[94]
    p50 = statistics.quantiles(rel, n=100, method="inclusive")[49]
    print(f"jobs with results: {len(per_job)}; lag/age p50 {p50:.3f} p95 {p95:.3f}")
    tail = [j for j in per_job if j["rel"] >= p95 * 0.8]
    print(f"tail (lag/age >= {0.8 * p95:.3f}): {len(tail)} jobs")
    for key in ("plan", "late", "fail", "wire"):
        vals = [j["parts"][key] / j["age"] for j in tail]
        print(
            f"  {key:5s} share of age: mean {statistics.fmean(vals):.3f} "
            f"max {max(vals):.3f}  (all jobs mean "
            f"{statistics.fmean(j['parts'][key] / j['age'] for j in per_job):.3f})"
        )
    print("  planners:", collections.Counter(j["planner"] for j in tail).most_common())
    print("  with a failed check after finish:", sum(1 for j in tail if j["fails_after"]))
    t0 = min(j["created"] for j in per_job)
    by_fin = sorted(per_job, key=lambda j: j["finished"])
    print("lag/age by finish time (10 s bins from the first create):")
    bins: dict[int, list[float]] = collections.defaultdict(list)
    for j in by_fin:
        bins[int((j["finished"] - t0) // 10)].append(j["rel"])
    for b, vals in sorted(bins.items()):
        vals.sort()
        print(
            f"  {b * 10:4d}-{b * 10 + 10:<4d}s n={len(vals):3d} median {vals[len(vals) // 2]:.3f} "
            f"max {vals[-1]:.3f}"
        )
    print(f"worst {top}:")
    for j in sorted(per_job, key=lambda j: -j["rel"])[:top]:
        p = j["parts"]
        print(
            f"  {j['id'][:8]} created {j['created'] - t0:6.2f} age {j['age']:5.2f} "
            f"lag {j['lag']:5.2f} ({j['rel']:.2f}) plan {p['plan']:.2f} late {p['late']:.2f} "
            f"fail {p['fail']:.2f} wire {p['wire']:.2f} by {j['planner']} "
            f"checks {j['checks']} fails {j['fails']}"
        )
        for e in events.get(j["id"], []):
            if e[0] == "check":
                print(
                    f"      check due {e[1] - t0:7.2f} sent {e[2] - t0:7.2f} "
                    f"answered {e[3] - t0:7.2f} {e[4]} failures={e[5]}"
                )
            else:
                print(f"      push  at  {e[1] - t0:7.2f} due  {e[2] - t0:7.2f} by {e[3]}")
        print(f"      finished {j['finished'] - t0:7.2f} yielded {j['yielded'] - t0:7.2f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", nargs="?", default="faults")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--top", type=int, default=6)
    parser.add_argument(
        "--rate", default=None, help='"none": no request budget; a number: that starting rate'
    )
    args = parser.parse_args()
    scenario = bs.NAMED[args.scenario]
    spec = dict(scenario["approaches"][0][1])
    spec["n"] = args.jobs or scenario["jobs"]
    spec.setdefault("ts", scenario["config"].get("time_scale", 1.0))
    if args.rate is not None:
        spec["rate"] = None if args.rate == "none" else float(args.rate)
    events: Events = collections.defaultdict(list)
    instrument(events)
    with bs.emulator(scenario["config"]) as info:
        rows = asyncio.run(run(spec, info, events))
    analyse(rows, events, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
