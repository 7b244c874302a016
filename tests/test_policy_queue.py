"""Queue-order inference that verifies itself, on FIFO, random-order and LIFO servers.

A small exact server model (W workers, one queue, a discipline) gives every
job's start and end; an observer checks jobs at seeded times and feeds the
sightings to a QueueOrderMonitor. No clock, no loop: exact."""

from __future__ import annotations

import heapq
import logging
import random

import pytest

from runcomfy_async._queue_inference import QueueOrderMonitor, _Front


def serve(
    submits: list[float], durations: list[float], workers: int, discipline: str, seed: int = 0
) -> list[tuple[float, float]]:
    """(start, end) of each job on a server running its queue by ``discipline``."""
    rng = random.Random(seed)
    n = len(submits)
    free = [0.0] * workers  # a min-heap of times workers come free
    heapq.heapify(free)
    waiting: list[int] = []
    out: list[tuple[float, float]] = [(0.0, 0.0)] * n
    nxt = 0
    done = 0
    while done < n:
        t = heapq.heappop(free)
        while nxt < n and submits[nxt] <= t:
            waiting.append(nxt)
            nxt += 1
        if not waiting:
            t = max(t, submits[nxt])
            while nxt < n and submits[nxt] <= t:
                waiting.append(nxt)
                nxt += 1
        if discipline == "fifo":
            job = waiting.pop(0)
        elif discipline == "lifo":
            job = waiting.pop()
        else:
            job = waiting.pop(rng.randrange(len(waiting)))
        out[job] = (t, t + durations[job])
        heapq.heappush(free, t + durations[job])
        done += 1
    return out


def observe(
    discipline: str, seed: int, *, latency: float = 0.0, n: int = 60, workers: int = 4
) -> QueueOrderMonitor:
    """Submit ``n`` jobs a second apart, check random jobs at random times."""
    rng = random.Random(seed)
    submits = [float(i) for i in range(n)]
    durations = [rng.uniform(20.0, 60.0) for _ in range(n)]
    runs = serve(submits, durations, workers, discipline, seed)
    monitor = QueueOrderMonitor("vendor/model", audit_every=0)
    checks = sorted(
        (rng.uniform(0.0, max(end for _, end in runs)), rng.randrange(n)) for _ in range(400)
    )
    for sent, job in checks:
        if sent < submits[job]:
            continue
        # The server answers at some instant inside the request's flight.
        seen = sent + rng.uniform(0.0, latency)
        answered = sent + latency
        start, _ = runs[job]
        if seen < start:
            monitor.queued(job, sent, answered)
        else:
            monitor.started(job, sent, answered)
    return monitor


@pytest.mark.parametrize("latency", [0.0, 0.5, 5.0])
def test_a_fifo_server_never_trips_the_monitor(latency: float) -> None:
    for seed in range(50):
        monitor = observe("fifo", seed, latency=latency)
        assert monitor.fifo, (seed, monitor)
        assert monitor.violations == 0


@pytest.mark.parametrize("discipline", ["random", "lifo"])
def test_a_server_out_of_order_turns_fifo_inference_off(discipline: str) -> None:
    tripped = sum(not observe(discipline, seed).fifo for seed in range(50))
    assert tripped == 50


@pytest.mark.parametrize("discipline", ["random", "lifo"])
def test_out_of_order_is_caught_despite_check_latency(discipline: str) -> None:
    # Slow answers widen every sighting's window; contradictions stay certain.
    tripped = sum(not observe(discipline, seed, latency=2.0).fifo for seed in range(50))
    assert tripped >= 45


def test_the_monitor_says_so_in_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    monitor = QueueOrderMonitor("vendor/model")
    with caplog.at_level(logging.DEBUG, logger="runcomfy_async"):
        assert not monitor.started(5, 10.0, 10.2)
        assert monitor.queued(2, 11.0, 11.1)
    assert not monitor.fifo
    assert "vendor/model" in caplog.text
    assert "not FIFO" in caplog.text


def test_overlapping_checks_prove_nothing() -> None:
    monitor = QueueOrderMonitor("m")
    # The older job's request left before the younger's answer came back:
    # the server may have seen both at one instant in FIFO order.
    monitor.started(5, 10.0, 12.0)
    assert not monitor.queued(2, 11.0, 11.5)
    assert monitor.fifo


def test_an_older_job_queued_before_a_younger_started_is_fifo() -> None:
    monitor = QueueOrderMonitor("m")
    monitor.queued(2, 10.0, 10.1)
    assert not monitor.started(5, 20.0, 20.1)
    assert monitor.fifo


def test_a_contradiction_is_found_whichever_sighting_is_fed_first() -> None:
    monitor = QueueOrderMonitor("m")
    monitor.queued(2, 20.0, 20.1)
    assert monitor.started(5, 10.0, 10.1)  # fed late, answered before the queued one left
    assert not monitor.fifo


def test_several_violations_can_be_required() -> None:
    monitor = QueueOrderMonitor("m", violations_to_disable=2)
    monitor.started(5, 10.0)
    assert not monitor.queued(2, 11.0)
    assert monitor.fifo and monitor.violations == 1
    assert monitor.queued(3, 12.0)
    assert not monitor.fifo
    # Once off, it stays off and stops counting.
    assert not monitor.queued(1, 13.0)
    assert monitor.violations == 2


def test_allow_skip_audits_every_nth_and_stops_once_disproved() -> None:
    monitor = QueueOrderMonitor("m", audit_every=4)
    assert [monitor.allow_skip() for _ in range(8)] == [True, True, True, False] * 2
    never = QueueOrderMonitor("m", audit_every=0)
    assert all(never.allow_skip() for _ in range(10))
    monitor.started(5, 1.0)
    monitor.queued(1, 2.0)
    assert not monitor.allow_skip()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        QueueOrderMonitor("m", audit_every=-1)
    with pytest.raises(ValueError):
        QueueOrderMonitor("m", violations_to_disable=0)


@pytest.mark.parametrize("later", [False, True])
def test_front_answers_as_a_brute_force_scan(later: bool) -> None:
    for seed in range(30):
        rng = random.Random(seed)
        front = _Front(later=later)
        seen: list[tuple[int, float]] = []
        for _ in range(200):
            order, at = rng.randrange(50), round(rng.uniform(0, 100), 1)
            front.add(order, at)
            seen.append((order, at))
            q = rng.randrange(-1, 51)
            if later:
                times = [t for o, t in seen if o < q]
                want = max(times) if times else None
            else:
                times = [t for o, t in seen if o > q]
                want = min(times) if times else None
            assert front.query(q) == want, (seed, q)
        assert len(front) <= 50
