"""The progress bar: counts per state from job events, an ETA, log lines off a terminal."""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

from runcomfy_async import JobEvent, JobState, PollPolicy, RunComfyClient
from runcomfy_async.emulator import Emulator
from runcomfy_async.progress import ProgressBar, track_progress

T2V = "kling/kling-3.0/pro/text-to-video"
TIME_SCALE = 0.001


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def event(rid: str, state: JobState) -> JobEvent:
    return JobEvent(rid, T2V, state, at=0.0)


def test_counts_follow_each_jobs_latest_state() -> None:
    bar = ProgressBar(4, mode="off")
    bar.on_event(event("a", JobState.QUEUED))
    bar.on_event(event("b", JobState.QUEUED))
    bar.on_event(event("a", JobState.RUNNING))
    assert bar.counts == {"queued": 1, "running": 1}
    bar.on_event(event("a", JobState.SUCCEEDED))
    bar.on_event(event("b", JobState.FAILED))
    assert bar.counts == {"succeeded": 1, "failed": 1}
    assert bar.done == 2


def test_eta_follows_this_runs_pace() -> None:
    clock = Clock()
    bar = ProgressBar(10, mode="off", initial=2, clock=clock)
    assert bar.eta() is None  # nothing finished in this run yet
    clock.now += 20.0
    bar.advance("succeeded", 4)  # 4 jobs in 20 s; 4 left
    assert bar.eta() == 20.0


def test_log_mode_prints_plain_lines_with_counts_and_eta() -> None:
    clock = Clock()
    out = io.StringIO()
    bar = ProgressBar(4, mode="log", file=out, interval=5.0, clock=clock)
    bar.on_event(event("a", JobState.RUNNING))
    assert out.getvalue() == ""  # not before the interval
    clock.now += 6.0
    bar.advance("succeeded")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "jobs: 1/4 done (25%) | running 1, succeeded 1 | 6s elapsed, ETA 18s"
    assert lines[-1].startswith("jobs: 1/4 done (25%)")


def test_auto_mode_picks_log_lines_when_the_output_is_not_a_terminal() -> None:
    assert ProgressBar(3, file=io.StringIO()).mode == "log"


def test_bar_mode_draws_a_tqdm_bar_with_the_counts() -> None:
    out = io.StringIO()
    with ProgressBar(2, mode="bar", file=out, desc="clips") as bar:
        bar.on_event(event("a", JobState.QUEUED))
        bar.advance("succeeded")
        bar.advance("failed")
    text = out.getvalue()
    assert "clips" in text and "2/2" in text
    assert "succeeded 1" in text and "failed 1" in text


def test_batch_style_progress_counts_only_what_it_is_told() -> None:
    bar = ProgressBar(
        3, mode="off", count_finished=False, initial=1, initial_counts={"succeeded": 1}
    )
    bar.on_event(event("a", JobState.RUNNING))
    bar.on_event(event("a", JobState.SUCCEEDED))
    assert bar.done == 1  # the job's files are not on disk yet
    bar.set_count("downloading", 1)
    assert bar.counts == {"downloading": 1, "succeeded": 1}
    bar.advance("succeeded")
    bar.set_count("downloading", 0)
    assert bar.counts == {"succeeded": 2}
    assert bar.done == 2


def test_excluded_jobs_shrink_the_total_and_never_count_as_done() -> None:
    out = io.StringIO()
    with ProgressBar(300, mode="bar", file=out, desc="clips") as bar:
        bar.advance("succeeded", 31)
        bar.exclude("not_submitted", 269)
        assert (bar.done, bar.total) == (31, 31)
        assert bar.counts == {"succeeded": 31, "not_submitted": 269}
    last = out.getvalue().split("\r")[-1]
    assert "31/31" in last and "not_submitted 269" in last
    assert "300/300" not in out.getvalue()


def test_a_closed_bar_draws_nothing_more() -> None:
    out = io.StringIO()
    bar = ProgressBar(4, mode="bar", file=out)
    bar.advance("succeeded")
    bar.close()
    drawn = out.getvalue()
    bar.set_count("queued", 3)
    bar.advance("succeeded")
    bar.exclude("not_submitted", 2)
    assert out.getvalue() == drawn  # a question printed after close stays on screen
    assert bar.done == 2 and bar.counts["not_submitted"] == 2


async def test_track_progress_follows_a_clients_jobs_and_detaches(
    make_emulator: Callable[..., Awaitable[Emulator]],
) -> None:
    emu = await make_emulator(time_scale=TIME_SCALE)
    out = io.StringIO()
    async with RunComfyClient(
        emu.token,
        base_url=emu.base_url,
        poll=PollPolicy(time_scale=TIME_SCALE),
        requests_per_second=None,
    ) as client:
        with track_progress(client, total=3, mode="log", file=out) as bar:
            outcomes = await client.gather(T2V, [{"prompt": f"clip {i}"} for i in range(3)])
        assert all(o.ok for o in outcomes)
        assert bar.done == 3 and bar.counts == {"succeeded": 3}
        assert client._poller._listeners == []
    assert "jobs: 3/3 done (100%)" in out.getvalue()
