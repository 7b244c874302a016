"""Ctrl-C for a command: the first press stops gently, the second at once; a y/N prompt."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable

__all__ = ["ask_in_thread", "install_interrupt"]


def ask_in_thread(question: str) -> asyncio.Future[bool]:
    """Ask a yes/no question on the terminal without blocking the loop.

    A daemon thread reads the answer, so an exit (e.g. a second Ctrl-C) never
    waits for someone to press Enter.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()

    def settle(answer: bool) -> None:
        if not fut.done():
            fut.set_result(answer)

    def ask() -> None:
        # The question goes to standard error, where the progress bar and the
        # "Stopping" line are (input() would use standard output, or readline's).
        try:
            sys.stderr.write(question)
            sys.stderr.flush()
            line = sys.stdin.readline()
        except (OSError, RuntimeError, ValueError):
            line = ""
        answer = line.strip().lower() in ("y", "yes")
        with contextlib.suppress(RuntimeError):  # the loop may be gone
            loop.call_soon_threadsafe(settle, answer)

    threading.Thread(target=ask, name="runcomfy-async prompt", daemon=True).start()
    return fut


def install_interrupt(on_first: Callable[[], None]) -> Callable[[], None]:
    """First Ctrl-C (or SIGTERM): ``on_first``; second Ctrl-C: cancel the main task."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    presses = 0

    def handler() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            on_first()
        elif main_task is not None:
            main_task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # e.g. Windows, or not the main thread: KeyboardInterrupt does the job

    def remove() -> None:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)

    return remove
