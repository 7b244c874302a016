"""``report.html`` in a real browser: Debian's headless Chromium, driven by Selenium.

One batch (five clips and one job that fails) runs on the emulator; its page
is opened from ``file://`` and checked the way a person would look at it:
every clip loads, the filters and the search change what is shown, the
timeline has a row per job, a hostile prompt stays text, and nothing is
fetched from anywhere but the folder. ``.ci/run`` installs the browser; the
test fails (it never skips) when it is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from runcomfy_async import PollPolicy, RunComfyClient
from runcomfy_async.batch import run_batch
from runcomfy_async.batch._gallery import render_gallery
from runcomfy_async.emulator import Emulator, Faults, make_mp4

ROOT = Path(__file__).resolve().parent.parent
#: The README's main job (after `pip install ".[video]"`), run in a scratch folder.
MAIN_JOB = ["batch", "examples/showcase.jsonl", "--emulator", "--out", "clips/"]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T2V = "kling/kling-3.0/pro/text-to-video"
I2V = "kling/kling-3.0/standard/image-to-video"
HOSTILE = 'Evil <script>window.__pwned = 1</script> "><img src=x onerror="window.__pwned=2"> \'q\''
PROMPTS = [
    "A red fox trotting through fresh snow at dawn",
    "The lighthouse in a storm, waves crashing",
    HOSTILE,
    "A paper boat drifting down a rain gutter",
    "Neon city street at night, slow dolly",
    "Hot air balloons over Cappadocia",  # this one fails
]
T = TypeVar("T")


def manifest() -> list[dict[str, Any]]:
    jobs = []
    for i, prompt in enumerate(PROMPTS):
        payload: dict[str, Any] = {"prompt": prompt, "duration": 10 if i == 4 else 5}
        if i % 2:
            payload["start_image_url"] = "https://example.com/still.jpg"
        jobs.append({"id": f"clip-{i}", "model": I2V if i % 2 else T2V, "input": payload})
    return jobs


async def run_showcase(out: Path) -> None:
    """Five clips, then (the emulator failing every job) a rerun that adds a sixth."""
    async with (
        Emulator(time_scale=0.005) as emu,
        RunComfyClient(
            emu.token,
            base_url=emu.base_url,
            poll=PollPolicy(time_scale=emu.time_scale),
            requests_per_second=None,
            include_cost=True,
        ) as client,
    ):
        first = await run_batch(manifest()[:5], out, client=client, progress=False)
        assert first.counts == {"succeeded": 5}
        emu.faults = Faults(fail_rate=1.0)
        report = await run_batch(manifest(), out, client=client, progress=False)
        assert report.counts == {"succeeded": 5, "failed": 1}


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page the second run wrote at its end."""
    out = tmp_path_factory.mktemp("showcase") / "clips"
    asyncio.run(run_showcase(out))
    return out / "report.html"


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's main job, as its command line runs it: the page it leaves."""
    work = tmp_path_factory.mktemp("main-job")
    (work / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    done = subprocess.run(
        [sys.executable, "-m", "runcomfy_async.cli", *MAIN_JOB],
        cwd=work,
        env={k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return work / "clips" / "report.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"the browser test needs Debian's Chromium: {', '.join(missing)} missing; "
            "install it with `apt-get install -y chromium chromium-driver` (.ci/run does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,1400",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    # Every request the page makes lands in the performance log (DevTools' Network events).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # The driver's path is given, so Selenium Manager never downloads one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def opened(page: Path, browser: webdriver.Chrome) -> webdriver.Chrome:
    browser.get(page.as_uri())
    return browser


def requested(driver: webdriver.Chrome) -> list[str]:
    """The URLs of every request made for the page since the last call.

    Requests of the browser's own start page (``chrome://``) are left out:
    only those whose document is the page count, and the page itself.
    """
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            params = message["params"]
            if params.get("documentURL", "").endswith("/report.html"):
                urls.append(params["request"]["url"])
    return urls


def until(probe: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def visible_ids(driver: webdriver.Chrome) -> list[str]:
    ids: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll('.card'))"
        ".filter(c => !c.hidden && c.offsetParent !== null).map(c => c.dataset.id)"
    )
    return ids


VIDEO_STATE = (
    "return Array.from(document.querySelectorAll('video')).map(v => ({"
    "src: v.getAttribute('src'), ready: v.readyState, duration: v.duration,"
    "width: v.videoWidth, error: v.error && v.error.code}))"
)


def test_every_clip_loads_its_metadata_with_a_positive_duration(
    opened: webdriver.Chrome,
) -> None:
    def loaded() -> list[dict[str, Any]] | None:
        videos: list[dict[str, Any]] = opened.execute_script(VIDEO_STATE)
        assert all(v["error"] is None for v in videos), videos
        return videos if all(v["ready"] >= 1 for v in videos) else None

    videos = until(loaded, "every video's metadata")
    assert sorted(v["src"] for v in videos) == [f"clip-{i}.mp4" for i in range(5)]
    assert all(v["duration"] > 0 and v["width"] == 160 for v in videos), videos
    assert len(opened.find_elements(By.CSS_SELECTOR, "video[preload=metadata]")) == 5


def test_a_clip_plays(opened: webdriver.Chrome) -> None:
    opened.execute_script("document.querySelector('video').play()")
    until(
        lambda: opened.execute_script("return document.querySelector('video').currentTime > 0"),
        "the first clip to play",
    )
    opened.execute_script("document.querySelector('video').pause()")


def test_filters_by_state_and_model_change_what_is_shown(opened: webdriver.Chrome) -> None:
    state = Select(opened.find_element(By.CSS_SELECTOR, "[data-filter=state]"))
    model = Select(opened.find_element(By.CSS_SELECTOR, "[data-filter=model]"))
    assert len(visible_ids(opened)) == 6
    state.select_by_value("failed")
    assert visible_ids(opened) == ["clip-5"]
    failed = opened.find_element(By.CSS_SELECTOR, ".card[data-id=clip-5]")
    assert "generation_failed" in failed.text and "--retry-failed" in failed.text
    state.select_by_value("")
    model.select_by_value(I2V)
    assert visible_ids(opened) == ["clip-1", "clip-3", "clip-5"]
    state.select_by_value("succeeded")
    assert visible_ids(opened) == ["clip-1", "clip-3"]
    assert opened.find_element(By.CSS_SELECTOR, ".shown").text == "2 of 6 shown"
    dimmed = opened.find_elements(By.CSS_SELECTOR, ".tl-row.dim")
    assert sorted(r.get_attribute("data-id") for r in dimmed) == [
        "clip-0",
        "clip-2",
        "clip-4",
        "clip-5",
    ]
    state.select_by_value("")
    model.select_by_value("")
    assert len(visible_ids(opened)) == 6


def test_search_over_prompts_and_sorting_by_cost(opened: webdriver.Chrome) -> None:
    search = opened.find_element(By.CSS_SELECTOR, "[data-search]")
    search.send_keys("LIGHTHOUSE")
    assert visible_ids(opened) == ["clip-1"]
    search.clear()
    search.send_keys("x")  # clear() sends no input event: type, then erase
    search.send_keys("\b")
    assert len(visible_ids(opened)) == 6
    sort = Select(opened.find_element(By.CSS_SELECTOR, "[data-sort]"))
    sort.select_by_value("cost")
    ordered = visible_ids(opened)
    assert ordered[0] == "clip-4"  # the ten-second pro clip costs most
    costs = [
        float(
            opened.find_element(By.CSS_SELECTOR, f".card[data-id={i}]").get_attribute("data-cost")
        )
        for i in ordered
    ]
    assert costs == sorted(costs, reverse=True)
    sort.select_by_value("line")
    assert visible_ids(opened) == [f"clip-{i}" for i in range(6)]


def test_the_timeline_has_one_row_per_job(opened: webdriver.Chrome) -> None:
    rows = opened.find_elements(By.CSS_SELECTOR, "svg.tl .tl-row")
    assert [r.get_attribute("data-id") for r in rows] == [f"clip-{i}" for i in range(6)]
    for row in rows[:5]:
        kinds = {r.get_attribute("class") for r in row.find_elements(By.TAG_NAME, "rect")}
        assert {"sp-send", "sp-noticed", "sp-download"} <= kinds, kinds
        # Queued and running apart when the client saw it running, else in one bar.
        assert {"sp-queued", "sp-running"} <= kinds or "sp-server" in kinds, kinds
    failed = {r.get_attribute("class") for r in rows[5].find_elements(By.TAG_NAME, "rect")}
    assert failed & {"sp-server", "sp-running"}  # the failed job ran too
    assert not failed & {"sp-download", "sp-dlwait"}


def test_a_hostile_prompt_stays_text(opened: webdriver.Chrome) -> None:
    assert opened.execute_script("return window.__pwned === undefined")
    card = opened.find_element(By.CSS_SELECTOR, ".card[data-id=clip-2]")
    prompt = card.find_element(By.CSS_SELECTOR, ".prompt")
    assert prompt.get_attribute("title") == HOSTILE
    assert card.get_attribute("data-prompt") == HOSTILE
    assert prompt.text == HOSTILE
    assert len(opened.find_elements(By.CSS_SELECTOR, "script")) == 1
    assert not opened.find_elements(By.CSS_SELECTOR, "img[src=x]")


def test_no_request_leaves_the_machine_and_the_page_logs_no_error(
    opened: webdriver.Chrome,
) -> None:
    urls = requested(opened)
    assert any(u.endswith("/report.html") for u in urls)
    assert any(u.endswith("/clip-0.mp4") for u in urls)
    assert [u for u in urls if not u.startswith(("file://", "data:"))] == []
    errors = [e for e in opened.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    # The check sees a request that would leave the page (to a closed loopback port).
    opened.execute_script(
        "const i = new Image(); i.src = 'http://127.0.0.1:9/probe.png'; document.body.append(i)"
    )
    until(lambda: "http://127.0.0.1:9/probe.png" in requested(opened), "the probe request")


def test_a_large_batch_loads_the_clips_below_as_they_scroll_into_view(
    browser: webdriver.Chrome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("large")
    jobs = []
    for i in range(120):
        (out / f"clip-{i}.mp4").write_bytes(make_mp4(f"large-{i}"))
        jobs.append(
            {
                "id": f"clip-{i}",
                "model": T2V,
                "outcome": "succeeded",
                "files": [f"clip-{i}.mp4"],
                "line": i + 1,
            }
        )
    (out / "report.html").write_text(render_gallery({"jobs": jobs}), encoding="utf-8")
    browser.get((out / "report.html").as_uri())
    count = "return document.querySelectorAll('.rcg video').length"
    assert 48 <= browser.execute_script(count) < 120  # the rest wait below the fold
    before = browser.execute_script(count)
    browser.execute_script("document.querySelector('.card[data-id=clip-119]').scrollIntoView()")
    last = until(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".card[data-id=clip-119] video"),
        "the clip at the bottom to unfold",
    )[0]
    until(lambda: last.get_property("readyState") >= 1, "the last clip's metadata")
    assert last.get_property("duration") > 0
    assert before < browser.execute_script(count) < 120  # only those near the view


def test_the_main_jobs_page_shows_every_clip_playing_and_is_the_readmes_picture(
    main_job: Path, browser: webdriver.Chrome, tmp_path_factory: pytest.TempPathFactory
) -> None:
    opened = browser
    opened.set_window_size(1280, 1500)
    opened.get(main_job.as_uri())
    clips = sorted(p.name for p in main_job.parent.glob("*.mp4"))
    assert len(clips) == 12

    def loaded() -> list[dict[str, Any]] | None:
        videos: list[dict[str, Any]] = opened.execute_script(VIDEO_STATE)
        assert all(v["error"] is None for v in videos), videos
        return videos if all(v["ready"] >= 1 for v in videos) else None

    videos = until(loaded, "every clip's metadata")
    assert sorted(str(v["src"]) for v in videos) == clips
    assert all(v["duration"] > 0 and v["width"] > 0 for v in videos), videos
    assert len(opened.find_elements(By.CSS_SELECTOR, "svg.tl .tl-row")) == 12
    # Every clip plays: its time moves on.
    opened.execute_script("document.querySelectorAll('video').forEach(v => v.play())")
    until(
        lambda: opened.execute_script(
            "return Array.from(document.querySelectorAll('video')).every(v => v.currentTime > 0)"
        ),
        "every clip to play",
    )
    # Show each clip mid-motion, then take the picture the README uses.
    opened.execute_script(
        "document.querySelectorAll('video').forEach(v => { v.pause(); v.currentTime = 0.5; })"
    )
    until(
        lambda: opened.execute_script(
            "return Array.from(document.querySelectorAll('video'))"
            ".every(v => v.readyState >= 2 && !v.seeking && v.currentTime > 0)"
        ),
        "every clip to show a frame",
    )
    # The whole page, timeline included, in one picture.
    height = opened.execute_script("return document.documentElement.scrollHeight")
    opened.set_window_size(1280, height + 140)  # the window's frame takes some
    shots = tmp_path_factory.mktemp("screenshots")
    shot, timeline = shots / "report.png", shots / "report-timeline.png"
    assert opened.save_screenshot(str(shot))
    assert opened.find_element(By.CSS_SELECTOR, ".timeline").screenshot(str(timeline))
    assert shot.stat().st_size > 20_000 and timeline.stat().st_size > 5_000
    keep = os.environ.get("RUNCOMFY_REPORT_SCREENSHOT")
    if keep:  # how docs/img/report.png (and report-timeline.png beside it) are made
        shutil.copyfile(shot, keep)
        shutil.copyfile(timeline, Path(keep).with_name(timeline.name))
