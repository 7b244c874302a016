"""The gallery page (``report.html``) made from a report and the journal, read as HTML."""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from runcomfy_async import PollPolicy, RunComfyClient
from runcomfy_async.batch import Journal, JournalState, run_batch
from runcomfy_async.batch._gallery import GALLERY_NAME, gallery_html, render_gallery, write_gallery
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
    assert len(page.all("g")) == 3 and len(page.all("rect")) == 9
    assert "interrupted" in " ".join(page.text)
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
