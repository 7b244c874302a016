"""The batch runner against the emulator: files, journal, report, resume, faults."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from runcomfy_async import PollPolicy, RetryPolicy, RunComfyClient
from runcomfy_async.batch import (
    BatchRunner,
    CostLimitError,
    Journal,
    JournalError,
    JournalState,
    Manifest,
    ManifestError,
    estimate_batch,
    run_batch,
)
from runcomfy_async.emulator import Emulator, Faults, make_mp4

MakeEmulator = Callable[..., Awaitable[Emulator]]

T2V = "kling/kling-3.0/pro/text-to-video"
I2V = "kling/kling-3.0/standard/image-to-video"
FAST = 0.001  # a 100 s generation takes 0.1 s


def jobs(n: int, *, prefix: str = "clip") -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        if i % 2:
            out.append(
                {
                    "id": f"{prefix}-{i:04d}",
                    "model": I2V,
                    "input": {
                        "prompt": f"{prefix} {i}: the lighthouse in a storm",
                        "start_image_url": "https://example.com/lighthouse.jpg",
                        "duration": 5,
                    },
                }
            )
        else:
            out.append(
                {
                    "id": f"{prefix}-{i:04d}",
                    "model": T2V,
                    "input": {"prompt": f"{prefix} {i}: a red fox in the snow", "duration": 5},
                }
            )
    return out


@asynccontextmanager
async def client_for(emu: Emulator, **options: Any) -> AsyncIterator[RunComfyClient]:
    options.setdefault("max_in_flight", 256)
    async with RunComfyClient(
        emu.token,
        base_url=emu.base_url,
        poll=PollPolicy(time_scale=emu.time_scale),
        requests_per_second=None,
        include_cost=True,
        **options,
    ) as client:
        yield client


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def created_per_prompt(emu: Emulator) -> Counter[str]:
    return Counter(str(job.payload["prompt"]) for job in emu.jobs.values())


def part_files(out: Path) -> list[str]:
    return [n for n in os.listdir(out) if n.endswith(".part")]


async def test_two_hundred_jobs_end_with_every_file_and_a_correct_report(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, workers=64)
    manifest = jobs(200)
    async with client_for(emu) as client:
        report = await run_batch(manifest, tmp_path, client=client, concurrency=96, progress=False)
    assert report.ok and report.exit_code == 0
    assert report.counts == {"succeeded": 200}
    assert report.submitted == 200 and report.downloaded == 200
    by_prompt = {str(j.payload["prompt"]): j for j in emu.jobs.values()}
    assert emu.counters.jobs_created == 200
    for job in manifest:
        server = by_prompt[job["input"]["prompt"]]
        data = (tmp_path / f"{job['id']}.mp4").read_bytes()
        assert data == make_mp4(server.request_id, clip_seconds=server.clip_seconds)
        record = json.loads((tmp_path / f"{job['id']}.json").read_text())
        assert record["request_id"] == server.request_id
        assert record["input"] == job["input"]
        assert record["files"][0]["name"] == f"{job['id']}.mp4"
        assert record["cost"] == pytest.approx(record["estimated_cost"])
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["counts"] == {"succeeded": 200}
    assert [j["id"] for j in saved["jobs"]] == [j["id"] for j in manifest]
    first = saved["jobs"][0]
    assert first["outcome"] == "succeeded"
    assert first["files"] == ["clip-0000.mp4"]
    assert first["request_id"] == by_prompt[manifest[0]["input"]["prompt"]].request_id
    assert first["cost"] == pytest.approx(0.84)
    assert saved["cost"] == pytest.approx(report.cost)
    assert emu.counters.storage_auth_headers == 0
    assert part_files(tmp_path) == []


async def test_a_rerun_submits_and_downloads_nothing_again(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, workers=16)
    async with client_for(emu) as client:
        first = await run_batch(jobs(10), tmp_path, client=client, progress=False)
        requests = emu.counters.requests
        downloads = emu.counters.storage_requests
        second = await run_batch(jobs(10), tmp_path, client=client, progress=False)
    assert first.ok and second.ok
    assert second.submitted == second.downloaded == 0
    assert emu.counters.requests == requests
    assert emu.counters.storage_requests == downloads
    assert [j.request_id for j in second.jobs] == [j.request_id for j in first.jobs]


async def test_a_deleted_file_is_downloaded_again_without_resubmitting(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    async with client_for(emu) as client:
        await run_batch(jobs(3), tmp_path, client=client, progress=False)
        (tmp_path / "clip-0001.mp4").unlink()
        report = await run_batch(jobs(3), tmp_path, client=client, progress=False)
    assert report.ok and report.downloaded == 1 and report.submitted == 0
    assert emu.counters.jobs_created == 3
    assert (tmp_path / "clip-0001.mp4").exists()


async def test_failing_and_truncated_downloads_are_retried_to_completion(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(
        time_scale=FAST,
        workers=16,
        faults=Faults(download_fail_rate=0.3, download_truncate_rate=0.3, seed=7),
    )
    async with client_for(emu) as client:
        report = await run_batch(
            jobs(30),
            tmp_path,
            client=client,
            progress=False,
            download_retry=RetryPolicy.no_wait(attempts=20),
        )
    assert report.ok
    assert emu.counters.fault_download_fail > 0 and emu.counters.fault_download_truncate > 0
    for job in emu.jobs.values():
        name = str(job.payload["prompt"]).split(":")[0].replace("clip ", "clip-")
        data = (tmp_path / f"{name.split('-')[0]}-{int(name.split('-')[1]):04d}.mp4").read_bytes()
        assert data == make_mp4(job.request_id, clip_seconds=job.clip_seconds)
    assert part_files(tmp_path) == []


async def test_a_download_that_never_works_is_reported_and_retried_by_a_rerun(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, faults=Faults(download_truncate_rate=1.0))
    async with client_for(emu) as client:
        report = await run_batch(
            jobs(2),
            tmp_path,
            client=client,
            progress=False,
            download_retry=RetryPolicy.no_wait(attempts=2),
        )
        assert report.counts == {"download_failed": 2} and report.exit_code == 1
        assert "incomplete body" in (report.jobs[0].error or "")
        assert not (tmp_path / "clip-0000.mp4").exists() and part_files(tmp_path) == []
        emu.faults = Faults()
        again = await run_batch(jobs(2), tmp_path, client=client, progress=False)
    assert again.ok and again.submitted == 0 and again.downloaded == 2
    assert emu.counters.jobs_created == 2


async def test_submit_outcome_unknown_is_journaled_and_not_resubmitted_without_the_flag(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(
        time_scale=FAST,
        faults=Faults(drop_rate=1.0, drop_after_create=True, routes={"submit"}),
    )
    async with client_for(emu) as client:
        report = await run_batch(jobs(3), tmp_path, client=client, progress=False)
        assert report.counts == {"outcome_unknown": 3} and report.exit_code == 1
        assert emu.counters.jobs_created == 3  # the server did create (and bill) them
        rows = Journal.read(tmp_path)
        assert rows is not None
        assert {r.state for r in rows.values()} == {JournalState.UNKNOWN}
        assert all(r.request_id is None for r in rows.values())
        assert "may or may not" in (report.jobs[0].error or "")

        emu.faults = Faults()
        submits = emu.counters.submit
        again = await run_batch(jobs(3), tmp_path, client=client, progress=False)
        assert again.counts == {"outcome_unknown": 3}
        assert emu.counters.submit == submits  # nothing sent again

        # The user finds two of them on the dashboard and adopts them; the
        # third was lost, so it is submitted again on purpose.
        by_prompt = {str(j.payload["prompt"]): j.request_id for j in emu.jobs.values()}
        adopt = {j["id"]: by_prompt[j["input"]["prompt"]] for j in jobs(3)[:2]}
        final = await run_batch(
            jobs(3),
            tmp_path,
            client=client,
            progress=False,
            adopt=adopt,
            resubmit_unknown=True,
        )
    assert final.ok
    assert final.resumed == 2 and final.submitted == 1
    assert emu.counters.jobs_created == 4
    assert final["clip-0000"].request_id == adopt["clip-0000"]


async def test_failed_jobs_are_reported_and_retried_only_when_asked(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, faults=Faults(fail_rate=1.0))
    async with client_for(emu) as client:
        report = await run_batch(jobs(2), tmp_path, client=client, progress=False)
        assert report.counts == {"failed": 2} and report.exit_code == 1
        assert report.jobs[0].error is not None
        assert "generation_failed" in report.jobs[0].error
        record = json.loads((tmp_path / "clip-0000.json").read_text())
        assert record["outcome"] == "failed" and record["request_id"]
        emu.faults = Faults()
        same = await run_batch(jobs(2), tmp_path, client=client, progress=False)
        assert same.counts == {"failed": 2} and same.submitted == 0
        retried = await run_batch(
            jobs(2), tmp_path, client=client, progress=False, retry_failed=True
        )
    assert retried.ok and retried.submitted == 2
    assert emu.counters.jobs_created == 4


async def test_a_changed_line_under_a_submitted_id_is_refused(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    async with client_for(emu) as client:
        await run_batch(jobs(3), tmp_path, client=client, progress=False)
        changed = jobs(3)
        changed[1]["input"]["prompt"] = "something else entirely"
        with pytest.raises(ManifestError, match=r"line 2 \(clip-0001\): changed since it was"):
            await run_batch(changed, tmp_path, client=client, progress=False)
    assert emu.counters.jobs_created == 3


async def test_a_changed_line_of_a_failed_job_starts_over(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, faults=Faults(fail_rate=1.0))
    async with client_for(emu) as client:
        await run_batch(jobs(1), tmp_path, client=client, progress=False)
        emu.faults = Faults()
        fixed = jobs(1)
        fixed[0]["input"]["prompt"] = "a better prompt"
        report = await run_batch(fixed, tmp_path, client=client, progress=False)
    assert report.ok and report.submitted == 1


async def test_max_cost_refuses_before_anything_is_submitted(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    estimate = estimate_batch(jobs(4))
    assert estimate.usd == pytest.approx(2 * 0.84 + 2 * 0.63)
    async with client_for(emu) as client:
        with pytest.raises(CostLimitError, match=r"\$2\.94, above the limit of \$2\.50"):
            await run_batch(jobs(4), tmp_path, client=client, progress=False, max_cost=2.5)
        assert emu.counters.requests == 0
        report = await run_batch(jobs(4), tmp_path, client=client, progress=False, max_cost=3.0)
    assert report.ok


async def test_preview_estimates_and_touches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    preview = await BatchRunner(jobs(4), out, progress=False).preview()
    assert preview.jobs == preview.to_submit == 4
    assert preview.to_submit_estimate.usd == pytest.approx(2.94)
    assert not out.exists()


async def test_two_runs_cannot_share_a_directory(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=1.0)  # the first run stays busy
    async with client_for(emu) as client:
        first = BatchRunner(jobs(2), tmp_path, client=client, progress=False)
        task = asyncio.ensure_future(first.run())
        await until(lambda: emu.counters.jobs_created >= 2)
        with pytest.raises(JournalError, match="another run"):
            await run_batch(jobs(2), tmp_path, client=client, progress=False)
        first.stop()
        assert (await task).counts == {"in_flight": 2}
    assert emu.counters.jobs_created == 2


async def test_jobs_in_flight_never_exceed_the_concurrency(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, workers=64)
    # The runner makes its client with max_in_flight = concurrency: the one limit.
    client_options = {
        "token": emu.token,
        "base_url": emu.base_url,
        "poll": PollPolicy(time_scale=emu.time_scale),
        "requests_per_second": None,
    }
    report = await run_batch(
        jobs(40), tmp_path, concurrency=5, progress=False, client_options=client_options
    )
    assert report.ok
    moments = sorted(
        [(j.created, 1) for j in emu.jobs.values()]
        + [(j.finished or 0.0, -1) for j in emu.jobs.values()]
    )
    live = peak = 0
    for _, step in moments:
        live += step
        peak = max(peak, live)
    assert peak <= 5


async def test_stop_cancels_queued_jobs_and_a_rerun_finishes_the_rest(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=0.005, workers=2)
    async with client_for(emu, max_in_flight=8) as client:  # the client's limit is the limit
        runner = BatchRunner(
            jobs(12), tmp_path, client=client, concurrency=8, progress=False,
            cancel_on_interrupt=True,
        )  # fmt: skip
        task = asyncio.ensure_future(runner.run())
        await until(lambda: emu.counters.jobs_created >= 8)
        runner.stop()
        report = await task
        assert report.interrupted and report.exit_code == 130
        counts = report.counts
        assert counts["cancelled"] >= 1 and counts["not_submitted"] == 4
        assert emu.counters.jobs_cancelled == counts["cancelled"]
        rows = Journal.read(tmp_path)
        assert rows is not None
        assert not any(r.state is JournalState.SUBMITTING for r in rows.values())

        emu.time_scale = FAST
        final = await run_batch(jobs(12), tmp_path, client=client, progress=False)
    assert final.ok
    # one job per id, plus one more for each job that was cancelled
    assert emu.counters.jobs_created == 12 + counts["cancelled"]
    assert max(created_per_prompt(emu).values()) <= 2


async def test_an_interrupted_run_without_cancel_leaves_jobs_in_flight_for_the_rerun(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=0.005, workers=2)
    async with client_for(emu) as client:
        runner = BatchRunner(jobs(6), tmp_path, client=client, concurrency=6, progress=False)
        task = asyncio.ensure_future(runner.run())
        await until(lambda: emu.counters.jobs_created >= 6)
        task.cancel()  # e.g. a notebook cell interrupted
        with pytest.raises(asyncio.CancelledError):
            await task
        assert emu.counters.jobs_cancelled == 0
        rows = Journal.read(tmp_path)
        assert rows is not None
        assert all(r.request_id for r in rows.values())
        assert json.loads((tmp_path / "report.json").read_text())["interrupted"]
        emu.time_scale = FAST
        final = await run_batch(jobs(6), tmp_path, client=client, progress=False)
    assert final.ok and final.submitted == 0 and final.resumed >= 1
    assert emu.counters.jobs_created == 6


async def test_a_symlink_planted_in_the_output_directory_is_not_followed(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / "clip-0000.mp4").symlink_to(victim)
    async with client_for(emu) as client:
        report = await run_batch(jobs(2), out, client=client, progress=False)
    assert report["clip-0000"].outcome == "download_failed"
    assert "symlink" in (report["clip-0000"].error or "")
    assert report["clip-0001"].ok
    assert victim.read_text() == "keep"


async def test_a_bad_manifest_is_rejected_whole_before_any_request(tmp_path: Path) -> None:
    bad = jobs(3)
    bad[0]["input"]["duration"] = 99
    bad[2]["id"] = "../../etc/passwd"
    with pytest.raises(ManifestError) as exc:
        BatchRunner(bad, tmp_path / "out")
    assert [p.line for p in exc.value.problems] == [1, 3]
    assert not (tmp_path / "out").exists()


async def test_typed_inputs_and_a_log_progress_work_from_library_code(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    from runcomfy_async import KlingTextToVideo

    emu = await make_emulator(time_scale=FAST)
    log = io.StringIO()
    typed = [("fox", KlingTextToVideo(prompt="a fox")), KlingTextToVideo(prompt="a cat")]
    async with client_for(emu) as client:
        report = await run_batch(typed, tmp_path, client=client, progress="log", progress_file=log)
    assert report.ok
    assert report.jobs[0].id == "fox" and report.jobs[1].id.startswith("job-")
    assert "clips: 2/2 done (100%)" in log.getvalue()
    assert "Batch of 2 jobs" in report.summary()
    assert Manifest.from_jobs(typed).entries[1].id == report.jobs[1].id


async def test_hostile_output_urls_only_ever_write_inside_the_directory(tmp_path: Path) -> None:
    from aiohttp import web

    from runcomfy_async.testing import MockTransport, Request, Response

    async def serve_file(request: web.Request) -> web.Response:
        return web.Response(body=b"data:" + request.path.encode())

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve_file)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    storage = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    hostile = {
        "video": storage + "/a/..%2F..%2F..%2Fescape.sh",
        "videos": [storage + "/a/..%2F..%2F..%2Fescape.sh", storage + "/b/%2e%2e/clip.MP4"],
        "images": [storage + "/x/../../../etc/passwd.png", storage + "/y/.hidden"],
    }

    async def api(request: Request) -> Response:
        if request.method == "POST":
            body = {"request_id": "req-1"}
        else:
            body = {"request_id": "req-1", "status": "succeeded", "output": hostile}
        return Response(200, {}, json.dumps(body).encode())

    out = tmp_path / "out"
    try:
        async with RunComfyClient(
            transport=MockTransport(api), poll=PollPolicy(time_scale=0.0001)
        ) as client:
            report = await run_batch(
                [{"id": "clip", "model": T2V, "input": {"prompt": "x"}}],
                out,
                client=client,
                progress=False,
            )
    finally:
        await runner.cleanup()
    assert report.ok, report.summary()
    assert sorted(report["clip"].files) == ["clip-1.sh", "clip-2.mp4", "clip-3.png", "clip-4.png"]
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert sorted(n for n in os.listdir(out) if not n.startswith(".")) == [
        "clip-1.sh",
        "clip-2.mp4",
        "clip-3.png",
        "clip-4.png",
        "clip.json",
        "report.html",
        "report.json",
    ]


# -- the crash window: 'submitting' only once the POST may leave -------------------------


class GatedTransport:
    """The emulator over HTTP, with submits whose prompt matches ``hold`` held at a gate.

    The client's ``before_send`` hook has run when a request reaches ``send``:
    holding it here is a process frozen with the POST about to leave.
    """

    def __init__(self, emu: Emulator, hold: str = "") -> None:
        from runcomfy_async._transport import AiohttpTransport

        self.inner = AiohttpTransport(emu.base_url, emu.token)
        self.hold = hold
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.submits: Counter[str] = Counter()

    async def send(self, request: Any) -> Any:
        if request.method == "POST" and request.path.startswith("/v1/models/"):
            prompt = str(request.json["prompt"])
            if self.hold and self.hold in prompt:
                self.held.set()
                await self.release.wait()
            self.submits[prompt] += 1
        return await self.inner.send(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def snapshot(out: Path, dest: Path) -> Path:
    """Copy the journal as a SIGKILL at this instant would leave it on disk.

    Every commit is in the database or its WAL file (written before the
    commit returns), so copying both is the state a new process would find.
    """
    import shutil

    dest.mkdir()
    for name in os.listdir(out):
        if name.startswith(".runcomfy-journal"):
            shutil.copy2(out / name, dest / name)
    return dest


async def journal_states(runner: BatchRunner) -> dict[str, JournalState]:
    """What the running batch's journal has committed (read through its own connection)."""
    ctx = runner._ctx
    assert ctx is not None
    rows = await ctx.journal.engine.rows()
    return {job_id: row.state for job_id, row in rows.items()}


async def test_a_row_left_submitting_by_a_crash_is_unknown_and_not_resubmitted(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=FAST, workers=8)
    manifest = jobs(3)
    gate = GatedTransport(emu, hold="clip 1:")
    async with RunComfyClient(
        transport=gate, poll=PollPolicy(time_scale=FAST), requests_per_second=None
    ) as client:
        runner = BatchRunner(manifest, tmp_path / "run", client=client, progress=False)
        task = asyncio.ensure_future(runner.run())
        await asyncio.wait_for(gate.held.wait(), 10)
        for _ in range(1000):  # the other two were answered: wait for their (deferred) rows
            states = await journal_states(runner)
            if states["clip-0000"] is states["clip-0002"] is JournalState.SUBMITTED:
                break
            await asyncio.sleep(0.01)
        # The POST of clip-0001 is about to leave: its row is durably 'submitting'.
        assert states["clip-0001"] is JournalState.SUBMITTING
        crashed = snapshot(tmp_path / "run", tmp_path / "crashed")
        gate.release.set()  # it leaves: the server creates (and charges) the job
        assert (await task).ok
    assert emu.counters.jobs_created == 3

    # The rerun finds what the crash left: clip-0001 may exist, so it is never resubmitted.
    async with client_for(emu) as client:
        report = await run_batch(manifest, crashed, client=client, progress=False)
    assert report["clip-0001"].outcome == "outcome_unknown"
    assert report.counts == {"succeeded": 2, "outcome_unknown": 1}
    assert report.submitted == 0 and report.resumed == 2  # the others: by request id
    assert emu.counters.jobs_created == 3
    assert sorted(created_per_prompt(emu).values()) == [1, 1, 1]


async def test_a_job_that_crashed_waiting_for_a_slot_is_submitted_once_on_rerun(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=0.05, workers=1)  # a generation takes seconds
    manifest = jobs(3)
    gate = GatedTransport(emu)
    async with RunComfyClient(
        transport=gate,
        poll=PollPolicy(time_scale=emu.time_scale),
        requests_per_second=None,
        max_in_flight=1,  # one job in flight: the others wait for its slot
    ) as client:
        runner = BatchRunner(manifest, tmp_path / "run", client=client, progress=False)
        task = asyncio.ensure_future(runner.run())
        await until(lambda: emu.counters.jobs_created == 1)
        await until(lambda: runner._ctx is not None and runner._ctx.submitting == 0)
        states = await journal_states(runner)
        # Waiting for a slot is not submitting: nothing was sent, the rows say so.
        assert states == {
            "clip-0000": JournalState.SUBMITTED,
            "clip-0001": JournalState.PLANNED,
            "clip-0002": JournalState.PLANNED,
        }
        crashed = snapshot(tmp_path / "run", tmp_path / "crashed")
        runner.stop()
        await task
    assert emu.counters.jobs_created == 1

    emu.time_scale = FAST
    async with client_for(emu) as client:
        report = await run_batch(manifest, crashed, client=client, progress=False)
    assert report.ok and report.submitted == 2 and report.resumed == 1
    # Exactly once each: the crashed run's job was resumed, the waiting ones sent once.
    assert emu.counters.jobs_created == 3
    assert sorted(created_per_prompt(emu).values()) == [1, 1, 1]


async def test_stopping_while_jobs_wait_for_a_slot_sends_nothing_more(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=0.05, workers=1)
    async with client_for(emu, max_in_flight=1) as client:
        runner = BatchRunner(jobs(4), tmp_path, client=client, progress=False)
        task = asyncio.ensure_future(runner.run())
        await until(lambda: emu.counters.jobs_created == 1)
        runner.stop()
        report = await task
    assert emu.counters.jobs_created == 1
    assert report.counts == {"in_flight": 1, "not_submitted": 3}
    rows = Journal.read(tmp_path)
    assert rows is not None
    assert [r.state for r in rows.values()].count(JournalState.PLANNED) == 3
