"""The emulator's options: documented defaults, opt-in quirks, accounts and their counters."""

from __future__ import annotations

import asyncio
import io
import math
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from runcomfy_async.emulator import (
    KLING_PRO_T2V,
    Emulator,
    Faults,
    ModelProfile,
    main,
    serve,
)
from runcomfy_async.emulator._api import _is_loopback

MakeEmulator = Callable[..., Awaitable[Emulator]]

PRO_BODY = {"prompt": "a dog"}
SLOW = 1.0  # a Kling job then takes a minute or more: it stays put during a test
FAST = 0.0001  # a Kling job then takes about 10 ms
ROOT = Path(__file__).resolve().parent.parent

# The words of the spec (../shared/spec/model-api.md), plus "failed", which
# RunComfy's own clients take as terminal on the status route.
STATUS_WORDS = {"in_queue", "in_progress", "completed", "cancelled", "failed"}
RESULT_WORDS = {"in_queue", "in_progress", "succeeded", "failed", "cancelled"}
# Where runcomfy-mcp's runcomfy_client.py stops polling the status route.
RUNCOMFY_CLIENT_TERMINAL = {"completed", "cancelled", "failed"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    emu: Emulator,
    method: str,
    path: str,
    *,
    token: str | None = None,
    **kw: Any,
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token or emu.token}"}
    async with http.request(method, emu.base_url + path, headers=headers, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, dict(resp.headers)


async def submit(
    http: aiohttp.ClientSession,
    emu: Emulator,
    model_id: str = KLING_PRO_T2V,
    body: Any = None,
    *,
    token: str | None = None,
) -> str:
    status, answer, _ = await call(
        http, emu, "POST", f"/v1/models/{model_id}", json=body or PRO_BODY, token=token
    )
    assert status == 200, answer
    return str(answer["request_id"])


async def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- request ids ----------------------------------------------------------------------


async def test_request_ids_are_random_and_never_repeat_across_emulator_lives(
    http: aiohttp.ClientSession,
) -> None:
    lives: list[list[str]] = []
    for _ in range(2):
        async with Emulator(time_scale=SLOW) as emu:
            assert emu.seed is None
            lives.append([await submit(http, emu) for _ in range(3)])
    assert not set(lives[0]) & set(lives[1])
    assert all(uuid.UUID(rid).version == 4 for rid in lives[0] + lives[1])


async def test_an_explicit_seed_repeats_ids_durations_order_and_spellings(
    http: aiohttp.ClientSession,
) -> None:
    async def run(seed: int) -> list[tuple[str, float, bool]]:
        async with Emulator(seed=seed, time_scale=SLOW, vocabulary="mixed") as emu:
            rids = [await submit(http, emu) for _ in range(6)]
            return [(r, emu.job(r).duration, emu.job(r).alt_spelling) for r in rids]

    first, again, other = await run(11), await run(11), await run(12)
    assert first == again
    assert [r for r, *_ in first] != [r for r, *_ in other]


# -- status words -----------------------------------------------------------------------


async def poll_like_runcomfy_client(
    http: aiohttp.ClientSession, emu: Emulator, rid: str, *, max_polls: int
) -> tuple[list[str], str | None]:
    """runcomfy-mcp's runcomfy_client.py: status until completed/cancelled/failed, then result.

    Returns the status words seen and the result's status, or None when the
    job did not end within ``max_polls`` polls (that client would poll on
    until its own timeout).
    """
    seen: list[str] = []
    for _ in range(max_polls):
        _, body, _ = await call(http, emu, "GET", f"/v1/requests/{rid}/status")
        word = str(body.get("status", "")).lower()
        seen.append(word)
        if word in RUNCOMFY_CLIENT_TERMINAL:
            _, result, _ = await call(http, emu, "GET", f"/v1/requests/{rid}/result")
            return seen, str(result["status"])
        await asyncio.sleep(0.01)
    return seen, None


async def fifty_jobs(
    http: aiohttp.ClientSession, make_emulator: MakeEmulator, **options: Any
) -> tuple[Emulator, list[str], set[str]]:
    """50 jobs: some fail, five are cancelled while queued, the rest succeed."""
    fast = ModelProfile.uniform(1, 3)
    emu = await make_emulator(
        time_scale=0.01,
        workers=4,
        models={"test/fast": fast},
        faults=Faults(fail_rate=0.3, seed=5),
        **options,
    )
    rids = [await submit(http, emu, "test/fast", {"n": i}) for i in range(50)]
    cancelled = set(rids[-5:])
    for rid in cancelled:
        status, body, _ = await call(http, emu, "POST", f"/v1/requests/{rid}/cancel")
        assert (status, body["outcome"]) == (202, "cancelled")
    return emu, rids, cancelled


async def test_runcomfy_client_style_polling_ends_every_job_of_the_default_emulator(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu, rids, cancelled = await fifty_jobs(http, make_emulator)
    outcomes = await asyncio.gather(
        *(poll_like_runcomfy_client(http, emu, rid, max_polls=2000) for rid in rids)
    )
    results = {rid: result for rid, (_, result) in zip(rids, outcomes, strict=True)}
    assert None not in results.values(), "a job never reached a word that client stops at"
    assert {results[r] for r in cancelled} == {"cancelled"}
    assert set(results.values()) == {"succeeded", "failed", "cancelled"}
    assert {w for seen, _ in outcomes for w in seen} <= STATUS_WORDS
    assert set(results.values()) <= RESULT_WORDS
    assert emu.counters.jobs_failed > 0 and emu.vocabulary == "documented"


async def test_mixed_vocabulary_strands_that_client_which_is_why_it_is_opt_in(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu, rids, _ = await fifty_jobs(http, make_emulator, vocabulary="mixed")
    await wait_until(lambda: all(emu.job(r).terminal for r in rids))
    outcomes = [await poll_like_runcomfy_client(http, emu, rid, max_polls=3) for rid in rids]
    stranded = [seen for seen, result in outcomes if result is None]
    assert stranded
    assert {word for seen in stranded for word in seen} <= {"succeeded", "canceled"}


async def test_alt_spelling_rate_sets_the_share_of_jobs_in_other_words(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=1, vocabulary="mixed", alt_spelling_rate=1.0)
    await submit(http, emu)
    rid = await submit(http, emu)
    _, body, _ = await call(http, emu, "POST", f"/v1/requests/{rid}/cancel")
    _, result, _ = await call(http, emu, "GET", f"/v1/requests/{rid}/result")
    assert (body["outcome"], body["status"], result["status"]) == (
        "cancelled",
        "canceled",
        "canceled",
    )
    none = await make_emulator(time_scale=SLOW, vocabulary="mixed", alt_spelling_rate=0.0)
    await submit(http, none)
    assert not any(job.alt_spelling for job in none.jobs.values())
    with pytest.raises(ValueError, match="alt_spelling_rate"):
        Emulator(alt_spelling_rate=1.5)
    with pytest.raises(ValueError, match="vocabulary"):
        Emulator(vocabulary="loose")  # type: ignore[arg-type]


async def test_wild_vocabulary_uses_every_non_terminal_spelling(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(
        time_scale=SLOW, workers=20, vocabulary="wild", alt_spelling_rate=1.0, seed=3
    )
    rids = [await submit(http, emu) for _ in range(40)]  # 20 running, 20 queued
    words = {(await call(http, emu, "GET", f"/v1/requests/{r}/status"))[1]["status"] for r in rids}
    assert words == {"pending", "waiting", "starting", "processing"}
    # The result route keeps its own words even then.
    _, result, _ = await call(http, emu, "GET", f"/v1/requests/{rids[0]}/result")
    assert result["status"] == "in_progress"


# -- durations ------------------------------------------------------------------------------


def test_lognormal_durations_have_a_long_tail_and_respect_bounds() -> None:
    rng = random.Random(1)
    profile = ModelProfile.lognormal(90, 0.6)
    draws = sorted(profile.draw(rng, 5) for _ in range(4000))
    assert statistics.median(draws) == pytest.approx(90, rel=0.05)
    p99 = draws[int(0.99 * len(draws))]
    assert p99 > 3 * 90 * math.exp(-0.6 * 2.33) and p99 > 300  # the tail reaches far
    clamped = ModelProfile.lognormal(90, 1.0, min_seconds=60, max_seconds=200)
    assert all(60 <= clamped.draw(rng, 5) <= 200 for _ in range(2000))
    with pytest.raises(ValueError, match="median"):
        ModelProfile(1, 2, distribution="lognormal")


def test_bimodal_durations_never_fall_in_the_gap() -> None:
    rng = random.Random(2)
    profile = ModelProfile.bimodal((5, 10), (60, 120), slow_share=0.25)
    draws = [profile.draw(rng, 5) for _ in range(4000)]
    slow = [d for d in draws if d >= 60]
    assert all(5 <= d <= 10 or 60 <= d <= 120 for d in draws)
    assert len(slow) / len(draws) == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="bimodal"):
        ModelProfile.bimodal((5, 70), (60, 120))


def test_fixed_durations_and_unknown_distributions() -> None:
    assert {ModelProfile.fixed(42).draw(random.Random(), 5) for _ in range(10)} == {42}
    with pytest.raises(ValueError, match="distribution"):
        ModelProfile(1, 2, distribution="normal")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("uniform:1,4", ModelProfile.uniform(1, 4)),
        ("lognormal:90", ModelProfile.lognormal(90)),
        (
            "lognormal:90,0.7,60,400",
            ModelProfile.lognormal(90, 0.7, min_seconds=60, max_seconds=400),
        ),
        ("bimodal:5,10,60,120", ModelProfile.bimodal((5, 10), (60, 120))),
        ("bimodal:5,10,60,120,0.2", ModelProfile.bimodal((5, 10), (60, 120), 0.2)),
        ("fixed:30", ModelProfile.fixed(30)),
    ],
)
def test_profiles_parse_from_the_command_line_form(text: str, expected: ModelProfile) -> None:
    assert ModelProfile.parse(text) == expected


@pytest.mark.parametrize("text", ["gauss:1,2", "uniform:1", "uniform:a,b", "fixed:", "fixed:-1"])
def test_profile_parse_errors_say_what_was_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|must be"):
        ModelProfile.parse(text)


async def test_an_unseen_fast_model_takes_one_to_four_seconds(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=0.01, models={"acme/flash": ModelProfile.uniform(1, 4)})
    rids = [await submit(http, emu, "acme/flash", {"prompt": str(i)}) for i in range(20)]
    assert all(1 <= emu.job(r).duration <= 4 for r in rids)
    await wait_until(lambda: all(emu.job(r).state == "succeeded" for r in rids))
    job = emu.job(rids[0])
    assert job.started is not None and job.finished is not None
    assert job.finished - job.started >= job.duration * 0.01 * 0.9


# -- queue disciplines ---------------------------------------------------------------------------


async def start_order(http: aiohttp.ClientSession, queue: str, *, seed: int = 0) -> list[int]:
    """Which of 6 queued jobs started first, second...: the blocker runs, the rest wait."""
    models = {"t/block": ModelProfile.fixed(0.5), "t/quick": ModelProfile.fixed(0.01)}
    async with Emulator(time_scale=1.0, workers=1, models=models, queue=queue, seed=seed) as emu:  # type: ignore[arg-type]
        await submit(http, emu, "t/block", {})
        rids = [await submit(http, emu, "t/quick", {"n": i}) for i in range(6)]
        assert emu.in_queue == 6, "the blocker ended before every job was queued"
        await wait_until(lambda: all(emu.job(r).terminal for r in rids))
        started = {rid: emu.job(rid).started or math.inf for rid in rids}
        return sorted(range(6), key=lambda i: started[rids[i]])


async def test_fifo_lifo_and_random_queues_start_jobs_in_their_order(
    http: aiohttp.ClientSession,
) -> None:
    assert await start_order(http, "fifo") == [0, 1, 2, 3, 4, 5]
    assert await start_order(http, "lifo") == [5, 4, 3, 2, 1, 0]
    shuffled = await start_order(http, "random", seed=4)
    assert sorted(shuffled) == list(range(6)) and shuffled != list(range(6))
    assert await start_order(http, "random", seed=4) == shuffled  # seeded


@pytest.mark.parametrize(
    ("queue", "before", "after"),
    [
        ("fifo", [1, 2, 3, 4], [1, None, 2, 3]),
        ("lifo", [4, 3, 2, 1], [3, None, 2, 1]),
        ("random", [1, 2, 3, 4], [1, None, 2, 3]),
    ],
)
async def test_queue_positions_follow_the_discipline(
    make_emulator: MakeEmulator,
    http: aiohttp.ClientSession,
    queue: str,
    before: list[int],
    after: list[int | None],
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=1, queue=queue)
    await submit(http, emu)
    rids = [await submit(http, emu) for _ in range(4)]

    async def positions() -> list[int | None]:
        out = []
        for rid in rids:
            _, body, _ = await call(http, emu, "GET", f"/v1/requests/{rid}/status")
            out.append(body.get("queue_position"))
        return out

    assert await positions() == before
    await call(http, emu, "POST", f"/v1/requests/{rids[1]}/cancel")
    assert await positions() == after
    assert emu.queue == queue


def test_an_unknown_queue_discipline_is_refused() -> None:
    with pytest.raises(ValueError, match="queue"):
        Emulator(queue="priority")  # type: ignore[arg-type]


# -- 429s: sporadic and real --------------------------------------------------------------------


async def test_sporadic_429s_hit_a_share_of_requests_with_retry_after_one(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(rate_429=0.25, seed=9))
    seen = []
    for _ in range(200):
        status, _, headers = await call(http, emu, "GET", "/v1/requests/nope/status")
        seen.append(status)
        if status == 429:
            assert headers["Retry-After"] == "1"
    assert set(seen) == {404, 429}
    assert seen.count(429) / 200 == pytest.approx(0.25, abs=0.08)
    assert emu.counters.answers == {"404": seen.count(404), "429": seen.count(429)}
    assert emu.counters.share_429 == seen.count(429) / 200
    assert emu.counters.fault_429 == seen.count(429) and emu.counters.rate_limited == 0


async def test_a_real_rate_limit_only_refuses_requests_beyond_it(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(faults=Faults(rps_limit=5, rps_burst=5))
    seen = [(await call(http, emu, "GET", "/v1/requests/x/status"))[0] for _ in range(8)]
    assert seen[:5] == [404] * 5 and 429 in seen[5:]
    assert emu.counters.rate_limited == seen.count(429) and emu.counters.fault_429 == 0


# -- accounts and their counters -------------------------------------------------------------


async def test_a_per_account_limit_refuses_submits_past_it_with_429(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(
        time_scale=SLOW, workers=1, token=("alice", "bob"), max_jobs_per_token=2
    )
    first = await submit(http, emu, token="alice")
    queued = await submit(http, emu, token="alice")
    status, body, _ = await call(
        http, emu, "POST", f"/v1/models/{KLING_PRO_T2V}", json=PRO_BODY, token="alice"
    )
    assert status == 429 and "concurrency limit" in body["detail"]
    assert len(emu.jobs) == 2 and emu.active("alice") == 2
    await submit(http, emu, token="bob")  # another account, its own limit
    await call(http, emu, "POST", f"/v1/requests/{queued}/cancel", token="alice")
    await submit(http, emu, token="alice")  # a slot freed by the cancel
    c = emu.counters
    assert c.account_limited == 1 and emu.max_jobs_per_token == 2
    assert c.max_active_per_token == {"alice": 2, "bob": 1}
    assert c.submits_per_token == {"alice": 4, "bob": 1}
    assert c.answers_by_route["submit"] == {"200": 4, "429": 1}
    assert emu.job(first).state == "in_progress"
    with pytest.raises(ValueError, match="max_jobs_per_token"):
        Emulator(max_jobs_per_token=0)


async def test_the_limit_frees_a_slot_when_a_job_ends(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    # long enough that the second submit surely meets the first job still running, on a
    # loaded machine too; short enough to wait for its end
    emu = await make_emulator(
        time_scale=1.0, models={"t/q": ModelProfile.fixed(0.5)}, max_jobs_per_token=1
    )
    rid = await submit(http, emu, "t/q", {})
    status, _, _ = await call(http, emu, "POST", "/v1/models/t/q", json={"n": 2})
    assert status == 429
    await wait_until(lambda: emu.job(rid).terminal)
    await submit(http, emu, "t/q", {"n": 2})
    assert emu.counters.max_active_per_token == {emu.token: 1}


async def test_duplicate_submits_are_counted_by_model_and_canonical_payload(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW, models={"t/x": ModelProfile.fixed(60)})
    await submit(http, emu, "t/x", {"a": 1, "b": [1, 2]})
    await submit(http, emu, "t/x", {"b": [1, 2], "a": 1})  # same payload, other key order
    await submit(http, emu, "t/x", {"a": 2, "b": [1, 2]})
    await submit(http, emu, KLING_PRO_T2V, {"prompt": "x"})
    await submit(http, emu, KLING_PRO_T2V, {"prompt": "x"})
    status, _, _ = await call(http, emu, "POST", f"/v1/models/{KLING_PRO_T2V}", json={})
    assert status == 422  # refused submits are not duplicates
    await call(http, emu, "POST", f"/v1/models/{KLING_PRO_T2V}", json={})
    assert emu.counters.duplicate_submits == 2


async def test_counters_route_serves_every_figure_and_reset_clears_them(
    make_emulator: MakeEmulator, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(time_scale=SLOW)
    await submit(http, emu)
    for _ in range(5):
        await call(http, emu, "GET", "/v1/requests/unknown/status")
    async with http.get(f"{emu.base_url}/_emulator/counters") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["answers"] == {"200": 1, "404": 5}
    assert body["answers_by_route"] == {"submit": {"200": 1}, "status": {"404": 5}}
    assert body["submits_per_token"] == {emu.token: 1}
    assert body["max_active_per_token"] == {emu.token: 1}
    assert body["duplicate_submits"] == 0 and body["share_429"] == 0.0
    assert 1 <= body["peak_rps"] <= 6
    emu.counters.reset()
    assert emu.counters.answers == {} and emu.counters.peak_rps == 0
    await submit(http, emu)
    assert emu.counters.duplicate_submits == 0  # reset forgets the payloads seen too


def test_peak_rps_counts_the_busiest_second() -> None:
    from runcomfy_async.emulator import Counters

    counters = Counters()
    now = [0.0]
    object.__setattr__(counters, "_clock", lambda: now[0])
    for moment in (0.0, 0.3, 0.6, 0.9, 1.5, 1.6, 3.0):
        now[0] = moment
        counters.note_arrival()
    assert counters.peak_rps == 4


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("10.0.0.5", False), (None, False), ("x", False)],
)
def test_only_loopback_clients_may_read_the_counters(remote: str | None, loopback: bool) -> None:
    assert _is_loopback(remote) is loopback


# -- the command line ------------------------------------------------------------------------------


def test_emulator_help_names_the_command_it_was_run_as(capsys: pytest.CaptureFixture[str]) -> None:
    from runcomfy_async.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_info:
        cli_main(["emulator", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: runcomfy-async emulator") and "python -m" not in out
    for option in ("--queue", "--max-jobs-per-token", "--model", "--vocabulary", "--seed"):
        assert option in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m runcomfy_async.emulator")


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--model", "acme/flash=gauss:1,2"], "unknown distribution"),
        (["--model", "acme/flash"], "MODEL_ID=KIND:NUMBERS"),
        (["--max-jobs-per-token", "0"], "whole number"),
        (["--alt-spelling-rate", "2"], "alt_spelling_rate"),
        (["--queue", "priority"], "invalid choice"),
        (["--fault", "fail_rate=2"], "fail_rate"),
    ],
)
def test_cli_refuses_bad_settings_as_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize("scale", [0.01, 1.0])
async def test_banner_prints_the_time_scale_and_the_matching_poll_policy(scale: float) -> None:
    out, stop = io.StringIO(), asyncio.Event()
    task = asyncio.create_task(serve(out=out, stop=stop, time_scale=scale))
    await wait_until(lambda: "Ctrl-C" in out.getvalue())
    stop.set()
    await task
    text = out.getvalue()
    assert f"time_scale:  {scale:g}" in text
    if scale != 1.0:
        assert f"PollPolicy(time_scale={scale:g})" in text
    else:
        assert "real time" in text


async def test_cli_options_reach_the_emulator(http: aiohttp.ClientSession) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runcomfy_async.emulator",
        "--time-scale",
        "0.5",
        "--max-jobs-per-token",
        "1",
        "--model",
        "acme/flash=fixed:600",
        "--queue",
        "lifo",
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    lines: dict[str, str] = {}
    try:
        while "time_scale" not in lines:
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            assert line, "the emulator exited early"
            name, sep, value = line.strip().partition(": ")
            if sep:
                lines[name] = value.strip()
        assert lines["time_scale"] == "0.5"
        url = f"{lines['base_url']}/v1/models/acme/flash"
        headers = {"Authorization": f"Bearer {lines['token']}"}
        answers = []
        for n in range(2):
            async with http.post(url, json={"n": n}, headers=headers) as resp:
                answers.append(resp.status)
        assert answers == [200, 429]
        async with http.get(f"{lines['base_url']}/_emulator/counters") as resp:
            counters = await resp.json()
        assert counters["account_limited"] == 1 and counters["jobs_in_progress"] == 1
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
