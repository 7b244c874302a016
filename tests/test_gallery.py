"""The gallery page (``report.html``) made from a report and the journal, read as HTML."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from runcomfy_async import PollPolicy, RunComfyClient, cli
from runcomfy_async.batch import REPORT_NAME, Journal, JournalState, run_batch
from runcomfy_async.batch._gallery import GALLERY_NAME, gallery_html, render_gallery
from runcomfy_async.batch._report import REPORT_NAME as GALLERY_REPORT_NAME
from runcomfy_async.batch._report import journal_report, write_gallery
from runcomfy_async.emulator import Emulator

T2V = "kling/kling-3.0/pro/text-to-video"
HOSTILE = '</textarea><script>alert(1)</script>" onmouseover="alert(2)" x=\'y\' & <b>bold</b>'


class Page(HTMLParser):
    """Every element's tag, attributes and text, as the browser's parser sees them."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def all(self, tag: str, **match: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.elements
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in match.items())
        ]


def job(i: int, outcome: str = "succeeded", **over: Any) -> dict[str, Any]:
    item = {
        "id": f"clip-{i}",
        "model": T2V,
        "outcome": outcome,
        "request_id": f"req-{i}",
        "files": [f"clip-{i}.mp4"] if outcome == "succeeded" else [],
        "error": None,
        "cost": 0.84 if outcome == "succeeded" else None,
        "estimated_cost": 0.84,
        "line": i + 1,
    }
    return {**item, **over}


def row(i: int, t: float, **over: Any) -> dict[str, Any]:
    """Journal times for a job submitted at ``t``: server done +10 s, noticed +12, saved +13."""
    server_done = f"2026-01-01T00:00:{int(t - 1_767_225_600 + 10):02d}+00:00"
    base = {
        "id": f"clip-{i}",
        "line": i + 1,
        "model": T2V,
        "input": {"prompt": f"prompt number {i}", "duration": 5},
        "submitted_at": t,
        "finished_at": t + 12,
        "downloaded_at": t + 13,
        "result": {"cost": 0.84, "created_at": None, "finished_at": server_done},
    }
    return {**base, **over}


T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def kinds_of(page: Path, job_id: str) -> set[str]:
    """The span kinds drawn in the timeline row of ``job_id``."""
    text = page.read_text(encoding="utf-8")
    start = text.index(f'data-id="{job_id}"><title>')
    row = text[start : text.index("</g>", start)]
    return set(re.findall(r'<rect class="(sp-\w+)"', row))


def report(*jobs: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "out_dir": "clips",
        "started_at": T0,
        "finished_at": T0 + 30,
        "elapsed_seconds": 30.0,
        "interrupted": False,
        "cost": 0.84 * sum(j["outcome"] == "succeeded" for j in jobs),
        "estimated_cost": 1.68,
        "jobs": list(jobs),
        **over,
    }


def test_a_hostile_prompt_is_text_in_every_place_it_appears() -> None:
    rows = {"clip-0": row(0, T0, input={"prompt": HOSTILE, "duration": 5})}
    text = render_gallery(report(job(0, error=HOSTILE, outcome="failed")), rows)
    page = Page(text)
    assert [t for t, _ in page.elements].count("script") == 1  # ours, none from the prompt
    assert not page.all("u") and not page.all("textarea")
    card = page.all("article")[0]
    assert card["data-prompt"] == HOSTILE and "onmouseover" not in card
    assert page.all("p", **{"class": "prompt"})[0]["title"] == HOSTILE
    assert HOSTILE in page.text  # shown as written, in the prompt and as the error
    assert "<script>alert" not in text and "alert(1)" in "".join(page.text)


def test_every_job_gets_a_card_and_clips_play_from_relative_paths() -> None:
    jobs = [job(0), job(1, files=["clip 1.mp4"]), job(2, "failed", error="generation_failed")]
    page = Page(render_gallery(report(*jobs), {f"clip-{i}": row(i, T0 + i) for i in range(3)}))
    cards = page.all("article")
    assert [c["data-id"] for c in cards] == ["clip-0", "clip-1", "clip-2"]
    assert [c["data-state"] for c in cards] == ["succeeded", "succeeded", "failed"]
    videos = page.all("video")
    assert [v["src"] for v in videos] == ["clip-0.mp4", "clip%201.mp4"]
    assert all(v["preload"] == "metadata" for v in videos)


def test_failed_and_unknown_jobs_say_what_went_wrong_and_what_to_do() -> None:
    jobs = [
        job(0, "failed", error="generation_failed: boom"),
        job(1, "outcome_unknown", error="connection dropped after sending", request_id=None),
        job(2, "cancelled", error="cancelled"),
    ]
    text = " ".join(Page(render_gallery(report(*jobs))).text)
    assert "generation_failed: boom" in text and "--retry-failed" in text
    assert "connection dropped after sending" in text and "--adopt ID=REQUEST_ID" in text
    assert "cancelled on the server" in text


def test_filters_offer_each_state_and_model_with_counts() -> None:
    other = "kling/kling-3.0/standard/image-to-video"
    page = Page(render_gallery(report(job(0), job(1, model=other), job(2, "failed"))))
    text = " | ".join(page.text)
    assert "all (3)" in text and "succeeded (2)" in text and "failed (1)" in text
    assert f"{other} (1)" in text and f"{T2V} (2)" in text
    values = [a["value"] for a in page.all("option")]
    assert {"succeeded", "failed", T2V, other, "cost", "finished"} <= set(values)


def test_the_timeline_draws_each_span_where_the_journal_puts_it() -> None:
    rows = {"clip-0": row(0, T0), "clip-1": row(1, T0 + 10)}
    page = Page(render_gallery(report(job(0), job(1), job(2, "not_submitted")), rows))
    groups = page.all("g")
    assert [g["data-id"] for g in groups] == ["clip-0", "clip-1", "clip-2"]
    rects = page.all("rect")
    assert len(rects) == 6  # three spans for each submitted job, none for the third
    # clip-0: submitted at 0 s, server done at 10 s, noticed at 12 s, saved at 13 s, of 23 s.
    x = {r["class"]: float(r["x"] or 0) for r in rects[:3]}
    w = {r["class"]: float(r["width"] or 0) for r in rects[:3]}
    scale = w["sp-server"] / 10
    assert w["sp-noticed"] == pytest.approx(2 * scale, abs=0.2)
    assert w["sp-download"] == pytest.approx(1 * scale, abs=0.2)
    assert x["sp-noticed"] == pytest.approx(x["sp-server"] + w["sp-server"], abs=0.2)
    assert "no times recorded" in " ".join(page.text)


def test_a_server_clock_ahead_of_ours_is_kept_inside_our_readings() -> None:
    late = row(0, T0, result={"finished_at": "2026-01-01T01:00:00+00:00"})  # an hour ahead
    page = Page(render_gallery(report(job(0)), {"clip-0": late}))
    spans = {r["class"]: float(r["width"] or 0) for r in page.all("rect")}
    assert spans["sp-noticed"] == 1.0  # zero seconds, drawn one unit wide
    assert spans["sp-server"] > spans["sp-download"] > 1.0


def test_totals_count_clips_cost_makespan_and_requests_per_job() -> None:
    rows = {"clip-0": row(0, T0), "clip-1": row(1, T0 + 10)}
    text = " ".join(Page(render_gallery(report(job(0), job(1)), rows, requests=23)).text)
    assert re.search(r"\b2 clips saved", text)
    assert "$1.68 cost reported" in text
    assert "23.0 s makespan" in text  # first submit at 0 s, last file at 23 s
    assert "11.5 API requests per job" in text
    without = " ".join(Page(render_gallery(report(job(0)), {})).text)
    assert "requests per job" not in without


def test_nothing_on_the_page_points_off_the_machine() -> None:
    rows = {"clip-0": row(0, T0, input={"prompt": "see https://example.com/x.png", "duration": 5})}
    page = Page(render_gallery(report(job(0)), rows))
    links = [a.get(k) for _, a in page.elements for k in ("src", "href") if a.get(k)]
    assert links == ["clip-0.mp4"]
    assert not any(t == "link" or (t == "script" and a.get("src")) for t, a in page.elements)


def test_the_notebook_fragment_has_its_own_id_and_a_media_base() -> None:
    a = gallery_html(report(job(0)), media_base="out dir")
    b = gallery_html(report(job(0)), media_base="out dir/")
    first, second = Page(a), Page(b)
    ids = [p.all("div", **{"class": "rcg"})[0]["id"] for p in (first, second)]
    assert ids[0] != ids[1]
    assert first.all("video")[0]["src"] == second.all("video")[0]["src"] == "out%20dir/clip-0.mp4"
    assert json.dumps(ids[0]) in a  # the script finds its own gallery
    assert not a.lstrip().startswith("<!doctype")
    odd = gallery_html(report(job(0)), element_id='x"></div><script>')
    assert Page(odd).all("div", **{"class": "rcg"})[0]["id"] == "x----div--script-"


async def test_written_from_the_journal_alone_when_report_json_is_missing(
    emulator: Emulator, tmp_path: Path
) -> None:
    manifest = [
        {"id": f"clip-{i}", "model": T2V, "input": {"prompt": f"p{i}", "duration": 5}}
        for i in range(3)
    ]
    async with RunComfyClient(
        emulator.token,
        base_url=emulator.base_url,
        poll=PollPolicy(time_scale=emulator.time_scale),
        requests_per_second=None,
    ) as client:
        await run_batch(manifest, tmp_path, client=client, progress=False)
    await asyncio.to_thread(check_written_from_journal, tmp_path)


def check_written_from_journal(out: Path) -> None:
    (out / "report.json").unlink()  # as if the run was killed before its end
    path = write_gallery(out)
    assert path == out / GALLERY_NAME
    page = Page(path.read_text(encoding="utf-8"))
    assert [c["data-state"] for c in page.all("article")] == ["succeeded"] * 3
    assert [v["src"] for v in page.all("video")] == [f"clip-{i}.mp4" for i in range(3)]
    assert len(page.all("g")) == 3
    for group in page.all("g"):  # each job's spans, drawn from the journal's times
        assert {"sp-send", "sp-noticed", "sp-download"} <= kinds_of(path, group["data-id"] or "")
    assert "interrupted" not in " ".join(page.text)  # every job got to its end
    assert not list(out.glob("*.part"))


def test_clips_past_the_first_screens_are_links_until_scrolled_near() -> None:
    page = Page(render_gallery(report(*(job(i) for i in range(60)))))
    videos, later = page.all("video"), page.all("a", **{"class": "nomedia clip-later"})
    assert [v["src"] for v in videos] == [f"clip-{i}.mp4" for i in range(48)]
    assert [a["href"] for a in later] == [f"clip-{i}.mp4" for i in range(48, 60)]


def test_the_page_names_the_folder_not_where_it_was_made() -> None:
    page = Page(render_gallery(report(job(0), out_dir="/home/alice/projects/clips")))
    assert "clips" in page.text and "/home/alice/projects/clips" not in page.text
    assert page.all("span", title="/home/alice/projects/clips")


def test_a_job_still_running_when_the_run_stopped_is_drawn_to_the_runs_end() -> None:
    running = row(0, T0 + 5, finished_at=None, downloaded_at=None, result=None)
    text = render_gallery(report(job(0, "in_flight")), {"clip-0": running})
    page = Page(text)
    (bar,) = page.all("rect")
    assert bar["class"] == "sp-server"
    x, width = float(bar["x"] or 0), float(bar["width"] or 0)
    assert x + width == pytest.approx(170 + 820, abs=0.2)  # the run ended at 30 s: the right edge
    assert x == pytest.approx(170 + 5 / 30 * 820, abs=0.2)
    assert "no times recorded" not in text
    assert "rerun the same command to resume" in text


async def test_a_batch_killed_halfway_is_drawn_from_its_journal(tmp_path: Path) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan(
            (f"clip-{i}", i + 1, T2V, {"prompt": f"p{i}", "duration": 5}, "h") for i in range(4)
        )
        for job_id in ("clip-0", "clip-1", "clip-2"):
            await journal.mark_submitting(job_id, attempts=1)
        journal.mark_submitted("clip-1", "req-1", T0)
        journal.mark_submitted("clip-2", "req-2", T0)
        journal.mark_ended("clip-2", JournalState.FAILED, "boom", T0 + 4)
    await asyncio.to_thread(check_killed_halfway, tmp_path)


def check_killed_halfway(out: Path) -> None:
    page = Page(write_gallery(out).read_text(encoding="utf-8"))
    states = {c["data-id"]: c["data-state"] for c in page.all("article")}
    assert states == {
        "clip-0": "outcome_unknown",
        "clip-1": "in_flight",
        "clip-2": "failed",
        "clip-3": "not_submitted",
    }
    text = " ".join(page.text)
    assert "--adopt ID=REQUEST_ID" in text and "rerun the same command to submit" in text
    assert [g["data-id"] for g in page.all("g")] == [f"clip-{i}" for i in range(4)]


# -- the timeline's spans, from every time the journal records ------------------------------


def test_the_timeline_splits_queued_from_running_and_waiting_from_downloading() -> None:
    # Sent at 0, accepted at 1, seen running at 3, server done at 11, noticed at 13,
    # download taken at 13.5, saved at 14.
    times = {"sending_at": T0, "started_at": T0 + 3.0, "download_started_at": T0 + 13.5}
    page = Page(render_gallery(report(job(0)), {"clip-0": row(0, T0 + 1, **times)}))
    rects = {r["class"]: (float(r["x"] or 0), float(r["width"] or 0)) for r in page.all("rect")}
    assert list(rects) == [
        "sp-send",
        "sp-queued",
        "sp-running",
        "sp-noticed",
        "sp-dlwait",
        "sp-download",
    ]
    scale = 820 / 14  # the run spans 0 to 14 s
    expected = {
        "sp-send": (0.0, 1.0),
        "sp-queued": (1.0, 2.0),
        "sp-running": (3.0, 8.0),
        "sp-noticed": (11.0, 2.0),
        "sp-dlwait": (13.0, 0.5),
        "sp-download": (13.5, 0.5),
    }
    for kind, (start, length) in expected.items():
        x, width = rects[kind]
        assert x == pytest.approx(170 + start * scale, abs=0.2), kind
        assert width == pytest.approx(length * scale, abs=0.2), kind
    tip = " ".join(page.text)
    assert "queued, or not checked yet: 2.00 s" in tip and "running: 8.00 s" in tip


def test_a_running_time_before_the_submit_is_from_an_earlier_attempt_and_ignored() -> None:
    stale = row(0, T0 + 5, started_at=T0 + 1)
    page = Page(render_gallery(report(job(0)), {"clip-0": stale}))
    kinds = [r["class"] for r in page.all("rect")]
    assert "sp-server" in kinds and "sp-queued" not in kinds and "sp-running" not in kinds


# -- the journal records the times --------------------------------------------------------


async def test_a_batch_journals_when_each_job_was_sent_seen_running_and_taken_to_download(
    emulator: Emulator, tmp_path: Path
) -> None:
    manifest = [
        {"id": f"clip-{i}", "model": T2V, "input": {"prompt": f"p{i}", "duration": 5}}
        for i in range(4)
    ]
    async with RunComfyClient(
        emulator.token,
        base_url=emulator.base_url,
        poll=PollPolicy(time_scale=emulator.time_scale),
        requests_per_second=None,
    ) as client:
        done = await run_batch(manifest, tmp_path, client=client, progress=False)
        made = emulator.counters.requests
    assert done.ok
    assert done.requests is not None and 4 * 2 <= done.requests <= made  # a submit and a result
    rows = await asyncio.to_thread(Journal.read, tmp_path)
    assert rows is not None
    for r in rows.values():
        assert r.sending_at is not None and r.submitted_at is not None
        assert r.finished_at is not None and r.downloaded_at is not None
        assert r.download_started_at is not None
        assert r.sending_at <= r.submitted_at <= r.finished_at
        assert r.finished_at <= r.download_started_at <= r.downloaded_at
        if r.started_at is not None:  # seen running: between its submit and its end
            assert r.submitted_at <= r.started_at <= r.finished_at
    saved = json.loads((tmp_path / REPORT_NAME).read_text(encoding="utf-8"))
    assert saved["requests"] == done.requests
    page = (tmp_path / GALLERY_NAME).read_text(encoding="utf-8")  # written by the run itself
    assert "API requests per job" in page


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema', '1');
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, line INTEGER NOT NULL, model TEXT NOT NULL, input TEXT NOT NULL,
    entry_hash TEXT NOT NULL, state TEXT NOT NULL, request_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT, result TEXT, files TEXT,
    submitted_at REAL, finished_at REAL, downloaded_at REAL, updated_at REAL NOT NULL
);
INSERT INTO jobs (id, line, model, input, entry_hash, state, request_id, submitted_at,
    updated_at) VALUES ('clip-0', 1, 'kling/kling-3.0/pro/text-to-video',
    '{"prompt":"p0","duration":5}', 'h', 'submitted', 'req-0', 1767225600.0, 1767225600.0);
"""


async def test_a_journal_of_the_first_schema_is_read_as_is_and_migrated_when_opened(
    tmp_path: Path,
) -> None:
    def old_journal() -> dict[str, Any]:
        conn = sqlite3.connect(tmp_path / ".runcomfy-journal.sqlite3")
        conn.executescript(OLD_SCHEMA)
        conn.close()
        rows = Journal.read(tmp_path)  # read-only: not changed
        assert rows is not None
        return {"row": rows["clip-0"]}

    found = (await asyncio.to_thread(old_journal))["row"]
    assert found.state is JournalState.SUBMITTED and found.request_id == "req-0"
    assert (found.sending_at, found.started_at, found.download_started_at) == (None, None, None)
    async with await Journal.open(tmp_path) as journal:
        await journal.rows()
        journal.mark_running("clip-0", T0 + 1)
        journal.mark_finished("clip-0", {"outputs": []}, T0 + 2)
        journal.mark_download_started("clip-0", T0 + 3)
    rows = await asyncio.to_thread(Journal.read, tmp_path)
    assert rows is not None
    migrated = rows["clip-0"]
    assert migrated.state is JournalState.FINISHED
    assert (migrated.started_at, migrated.download_started_at) == (T0 + 1, T0 + 3)


async def test_time_notes_never_move_a_job_and_are_dropped_once_it_moved_on(
    tmp_path: Path,
) -> None:
    async with await Journal.open(tmp_path) as journal:
        await journal.plan([("a", 1, T2V, {"prompt": "p"}, "h")])
        journal.mark_running("a", T0)  # planned: nothing to note
        journal.mark_download_started("a", T0)
        await journal.mark_submitting("a", attempts=1)
        journal.mark_submitted("a", "req-a", T0 + 1)
        journal.mark_ended("a", JournalState.FAILED, "boom", T0 + 2)
        journal.mark_running("a", T0 + 3)  # too late: it failed already
        assert journal.state_of("a") is JournalState.FAILED
    rows = await asyncio.to_thread(Journal.read, tmp_path)
    assert rows is not None
    assert rows["a"].state is JournalState.FAILED and rows["a"].started_at is None
    assert rows["a"].sending_at is not None and rows["a"].download_started_at is None


# -- the report command and the journal-only report -----------------------------------------


def test_the_gallery_and_the_runner_name_report_json_alike() -> None:
    assert GALLERY_REPORT_NAME == REPORT_NAME


async def test_a_stale_report_json_is_not_trusted_over_the_journal(
    emulator: Emulator, tmp_path: Path
) -> None:
    manifest = [{"id": "a", "model": T2V, "input": {"prompt": "p", "duration": 5}}]
    async with RunComfyClient(
        emulator.token,
        base_url=emulator.base_url,
        poll=PollPolicy(time_scale=emulator.time_scale),
        requests_per_second=None,
    ) as client:
        await run_batch(manifest, tmp_path, client=client, progress=False)
    current = await asyncio.to_thread(journal_report, tmp_path)
    assert current == json.loads((tmp_path / REPORT_NAME).read_text(encoding="utf-8"))
    assert current["requests"] > 0
    # A later run added a job and was killed before its report: the journal moved on.
    async with await Journal.open(tmp_path) as journal:
        await journal.plan([("b", 2, T2V, {"prompt": "q", "duration": 5}, "h")])
    stale = await asyncio.to_thread(journal_report, tmp_path)
    assert [(j["id"], j["outcome"]) for j in stale["jobs"]] == [
        ("a", "succeeded"),
        ("b", "not_submitted"),
    ]
    assert stale["interrupted"] is True and stale["requests"] is None
    assert stale["jobs"][0]["files"] == ["a.mp4"]
    assert stale["jobs"][1]["estimated_cost"] > 0  # from the price table, as a run says


def test_report_command_writes_the_page_and_refuses_a_directory_without_a_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "holds no batch" in capsys.readouterr().err
    assert not (tmp_path / GALLERY_NAME).exists()
    (tmp_path / REPORT_NAME).write_text(json.dumps(report(job(0))), encoding="utf-8")
    assert cli.main(["report", str(tmp_path), "--uri"]) == 0  # report.json alone is enough
    assert capsys.readouterr().out.strip() == (tmp_path / GALLERY_NAME).resolve().as_uri()
    assert [c["data-id"] for c in Page((tmp_path / GALLERY_NAME).read_text()).all("article")] == [
        "clip-0"
    ]


async def test_report_command_rebuilds_the_page_of_a_batch_killed_halfway(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A real ``runcomfy-async batch`` process, SIGKILLed once some clips are saved."""
    manifest = tmp_path / "jobs.jsonl"
    n = 24
    with manifest.open("w") as f:
        for i in range(n):
            body = {"prompt": f"clip {i}: a lighthouse in a storm", "duration": 5}
            f.write(json.dumps({"id": f"clip-{i:02d}", "model": T2V, "input": body}) + "\n")
    out = tmp_path / "out"
    env = {**os.environ, "RUNCOMFY_API_TOKEN": emulator.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runcomfy_async.cli",
        "batch",
        str(manifest),
        "--out",
        str(out),
        "--base-url",
        emulator.base_url,
        "--time-scale",
        str(emulator.time_scale),
        "--concurrency",
        "4",
        "--no-progress",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    try:
        while len(list(out.glob("clip-*.mp4"))) < 4:
            assert proc.returncode is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline, "no clip saved in 60 s"
            await asyncio.sleep(0.01)
    finally:
        if proc.returncode is None:
            proc.kill()  # SIGKILL: no report, no cleanup
        await proc.wait()
    assert not (out / REPORT_NAME).exists() and not (out / GALLERY_NAME).exists()
    code = await asyncio.to_thread(cli.main, ["report", str(out)])
    assert code == 0
    page = Page((out / GALLERY_NAME).read_text(encoding="utf-8"))
    states = [c["data-state"] for c in page.all("article")]
    # Files saved in the last milliseconds before the kill may not be journaled yet
    # (those writes are deferred): the journal says what it knows, a rerun checks the disk.
    assert len(states) == n and states.count("succeeded") >= 1
    assert set(states) - {"succeeded"}, "some jobs were still open when it was killed"
    assert {"in_flight", "not_submitted", "outcome_unknown", "download_failed"} >= (
        set(states) - {"succeeded"}
    )
    videos = [v["src"] for v in page.all("video")]
    assert videos and all((out / str(v)).is_file() for v in videos)
    assert len(videos) == states.count("succeeded")
    assert "interrupted: rerun the same command to finish" in " ".join(page.text)
    assert len(page.all("g")) == n


def test_a_batch_report_shows_the_gallery_in_a_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runcomfy_async.batch import BatchReport, JobReport

    out = tmp_path / "clips"
    out.mkdir()
    done = BatchReport(
        out_dir=str(out),
        jobs=(JobReport("a", T2V, "succeeded", files=("a.mp4",), line=1),),
        started_at=T0,
        finished_at=T0 + 3,
        requests=7,
    )
    monkeypatch.chdir(tmp_path)  # the notebook's folder: clips/ beside it
    text = done._repr_html_()
    page = Page(text)
    assert not text.lstrip().startswith("<!doctype")  # a fragment, inline in the output
    assert [v["src"] for v in page.all("video")] == ["clips/a.mp4"]
    assert [c["data-id"] for c in page.all("article")] == ["a"]
    assert "7.0" in " ".join(page.text)  # requests per job, from the report
    monkeypatch.chdir(out)
    assert [v["src"] for v in Page(done._repr_html_()).all("video")] == ["a.mp4"]


async def test_an_interrupted_batch_writes_its_page_too(emulator: Emulator, tmp_path: Path) -> None:
    from runcomfy_async.batch import BatchRunner

    manifest = [
        {"id": f"clip-{i}", "model": T2V, "input": {"prompt": f"p{i}", "duration": 5}}
        for i in range(8)
    ]
    async with RunComfyClient(
        emulator.token,
        base_url=emulator.base_url,
        poll=PollPolicy(time_scale=emulator.time_scale),
        requests_per_second=None,
        max_in_flight=2,
    ) as client:
        runner = BatchRunner(manifest, tmp_path, client=client, progress=False)

        async def stop_after_the_first_submit() -> None:
            for _ in range(5000):  # the run's own progress, looked at every 2 ms
                if runner.submitted >= 1:
                    break
                await asyncio.sleep(0.002)
            runner.stop()  # what Ctrl-C does

        stopper = asyncio.create_task(stop_after_the_first_submit())
        done = await runner.run()
        await stopper
    assert done.interrupted and "not_submitted" in done.counts
    text = (tmp_path / GALLERY_NAME).read_text(encoding="utf-8")
    page = Page(text)
    assert "interrupted: rerun the same command to finish" in " ".join(page.text)
    states = [c["data-state"] for c in page.all("article")]
    assert len(states) == 8 and states.count("not_submitted") == done.counts["not_submitted"]
