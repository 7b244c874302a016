"""Ctrl-C in a real terminal: the question stays on screen, a second Ctrl-C quits at once.

The command runs in a pseudo-terminal (standard input, output and error all on
it, as in a shell), against an emulator served by the test, so a rerun resumes
against the same server. What the user sees is computed from the bytes written
to the terminal by a small screen model (carriage return, newline, erase).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from runcomfy_async.emulator import Emulator

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")

MakeEmulator = Callable[..., Awaitable[Emulator]]

T2V = "kling/kling-3.0/pro/text-to-video"
SLOW = 0.02  # a Kling clip (60-200 s) takes 1.2-4 s: jobs stay queued while we press Ctrl-C
FAST = 0.0002
QUESTION = re.compile(r"Cancel the (\d+) job\(s\) still queued on the server\?.*\[y/N\] $")
_CSI = re.compile(r"\x1b\[[0-9;?]*([A-Za-z])")


def screen_lines(raw: str) -> list[str]:
    """The lines a terminal shows after ``raw``: ``\\r`` returns to column 0, text overwrites."""
    lines: list[list[str]] = [[]]
    col = 0
    i = 0
    while i < len(raw):
        ch = raw[i]
        match = _CSI.match(raw, i) if ch == "\x1b" else None
        if match:
            if match.group(1) == "K":  # erase to the end of the line
                del lines[-1][col:]
            i = match.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append([])
            col = 0
        elif ch == "\b":
            col = max(col - 1, 0)
        elif ch >= " ":
            line = lines[-1]
            if col < len(line):
                line[col] = ch
            else:
                line.append(ch)
            col += 1
        i += 1
    return ["".join(line) for line in lines]


class Terminal:
    """A command running on a pseudo-terminal; a thread collects what it writes."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        # A terminal of 30 rows and 120 columns (a new pseudo-terminal has none).
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        self._master = master
        self._raw = bytearray()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk

    @property
    def output(self) -> str:
        with self._lock:
            return self._raw.decode("utf-8", "replace")

    def cursor_line(self) -> str:
        """The line the cursor is on: where the user reads a question and types."""
        return screen_lines(self.output)[-1]

    def press_ctrl_c(self) -> None:
        # What the terminal does on Ctrl-C: SIGINT to the command.
        self.proc.send_signal(signal.SIGINT)

    def type(self, text: str) -> None:
        os.write(self._master, text.encode())

    async def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            if loop.time() > deadline or (self.proc.poll() is not None and not check()):
                raise AssertionError(f"{what}; the screen shows:\n" + "\n".join(self.screen()))
            await asyncio.sleep(0.05)

    async def exit_code(self, timeout: float) -> int:
        return await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)

    def screen(self) -> list[str]:
        return screen_lines(self.output)[-12:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        with contextlib.suppress(OSError):
            os.close(self._master)


@contextlib.contextmanager
def terminal(args: list[str], env: dict[str, str]) -> Iterator[Terminal]:
    term = Terminal(args, env)
    try:
        yield term
    finally:
        term.close()


def write_manifest(path: Path, n: int) -> Path:
    with path.open("w") as f:
        for i in range(n):
            body = {"prompt": f"clip {i}: a paper boat on a stream", "duration": 5}
            f.write(json.dumps({"id": f"clip-{i:03d}", "model": T2V, "input": body}) + "\n")
    return path


def batch_args(jobs: Path, out: Path, emu: Emulator, scale: float = SLOW) -> list[str]:
    return [
        sys.executable, "-m", "runcomfy_async.cli", "batch", str(jobs), "--out", str(out),
        "--base-url", emu.base_url, "--time-scale", str(scale), "--concurrency", "24",
    ]  # fmt: skip


async def started(emu: Emulator, term: Terminal, n: int) -> None:
    await term.wait_for(lambda: emu.counters.jobs_created >= n, 60, f"{n} jobs never submitted")
    # Let the bar draw a few frames with jobs queued (it redraws twice a second).
    await asyncio.sleep(1.2)


def env_for(emu: Emulator) -> dict[str, str]:
    env = {**os.environ, "RUNCOMFY_API_TOKEN": emu.token, "COLUMNS": "120", "LINES": "30"}
    env.pop("RUNCOMFY_BASE_URL", None)
    return env


async def test_after_one_ctrl_c_the_question_stays_on_screen_and_yes_cancels(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=8)
    jobs = write_manifest(tmp_path / "m.jsonl", 300)
    out = tmp_path / "out"
    args = batch_args(jobs, out, emu)
    with terminal(args, env_for(emu)) as term:
        await started(emu, term, 24)
        term.press_ctrl_c()
        await term.wait_for(
            lambda: QUESTION.search(term.cursor_line()) is not None, 30, "no question on screen"
        )
        # The bar no longer redraws over the question.
        await asyncio.sleep(1.5)
        line = term.cursor_line()
        assert QUESTION.search(line), term.screen()
        queued = int(QUESTION.search(line).group(1))  # type: ignore[union-attr]
        assert queued >= 1
        screen = term.screen()
        assert any(s.startswith("Stopping: no new submits") for s in screen), screen
        # The bar's last frame counts the submitted jobs only: never 300/300.
        frames = [s for s in screen if s.startswith("clips:")]
        assert frames, screen
        last = frames[-1]
        assert "300/300" not in last and "100%" not in last, last
        fraction = re.search(r" (\d+)/(\d+) ", last)
        unsent = re.search(r"not_submitted (\d+)", last)
        assert fraction is not None and unsent is not None, last
        sent = emu.counters.jobs_created
        assert int(fraction.group(2)) == sent == 300 - int(unsent.group(1)), last
        term.type("y\n")
        code = await term.exit_code(60)
        assert code == 130, term.output[-3000:]
    # Some queued jobs may have started while the question waited: those run on.
    cancelled = emu.counters.jobs_cancelled
    assert 1 <= cancelled <= queued
    first = json.loads((out / "report.json").read_text())
    assert first["interrupted"] and first["counts"]["cancelled"] == cancelled
    # Every job still has a row a rerun can act on (the second test reruns).
    assert sum(first["counts"].values()) == 300
    assert first["counts"]["not_submitted"] == 300 - first["submitted"]


async def test_a_second_ctrl_c_at_the_question_quits_at_once_and_a_rerun_resumes(
    make_emulator: MakeEmulator, tmp_path: Path
) -> None:
    emu = await make_emulator(time_scale=SLOW, workers=8)
    jobs = write_manifest(tmp_path / "m.jsonl", 300)
    out = tmp_path / "out"
    args = batch_args(jobs, out, emu)
    with terminal(args, env_for(emu)) as term:
        await started(emu, term, 24)
        term.press_ctrl_c()
        await term.wait_for(
            lambda: QUESTION.search(term.cursor_line()) is not None, 30, "no question on screen"
        )
        term.press_ctrl_c()
        # A hang guard, not a speed target (benchmarks/first_hour.py measures it).
        code = await term.exit_code(20)
        assert code == 130, term.output[-3000:]
        assert "interrupted: the journal is consistent" in term.output
    assert emu.counters.jobs_cancelled == 0  # nobody said yes
    submitted_first = emu.counters.jobs_created

    emu.time_scale = FAST
    rerun = await asyncio.create_subprocess_exec(
        *batch_args(jobs, out, emu, FAST),
        env=env_for(emu),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(rerun.communicate(), 120)
    assert rerun.returncode == 0, stderr.decode()[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"succeeded": 300}
    assert report["resumed"] == submitted_first
    created = Counter(str(j.payload["prompt"]) for j in emu.jobs.values())
    assert len(created) == 300 and sum(created.values()) == 300  # none submitted twice


def test_the_screen_model_applies_carriage_returns() -> None:
    assert screen_lines("abc\rX") == ["Xbc"]
    assert screen_lines("bar 1\rbar 2\r\nquestion? ") == ["bar 2", "question? "]
    # A redraw over a question hides it: what the old bar did.
    assert screen_lines("question? \rclips: 5%|#") == ["clips: 5%|#"]
    assert screen_lines("abcdef\r\x1b[Kxy") == ["xy"]
