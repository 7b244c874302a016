"""Progress of many jobs: a live bar in terminals and notebooks, log lines elsewhere.

Built on the client's job events (``client.add_listener``), so it works for
any way of running jobs: ``client.map``, hand-made loops, the batch runner::

    async with RunComfyClient() as client:
        with track_progress(client, total=len(prompts)):
            outcomes = await client.gather(KlingTextToVideo(prompt=p) for p in prompts)

The bar counts jobs by state (queued, running, succeeded, failed, ...) and
shows an ETA. In a terminal or a Jupyter notebook it is a ``tqdm.auto`` bar;
when the output is not a terminal (CI logs, ``nohup``) it prints a plain line
every ``interval`` seconds instead, so logs stay readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TextIO

from ._models import JobState
from ._polling import JobEvent

if TYPE_CHECKING:
    from ._client import RunComfyClient

__all__ = ["ProgressBar", "track_progress"]

Mode = Literal["auto", "bar", "log", "off"]

_LABELS = {
    JobState.QUEUED: "queued",
    JobState.RUNNING: "running",
    JobState.SUCCEEDED: "succeeded",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}
#: Order of the counts in the display: live states first, then outcomes.
_ORDER = (
    "submitting",
    "queued",
    "running",
    "downloading",
    "succeeded",
    "failed",
    "cancelled",
    "unknown",
)
_REFRESH_SECONDS = 0.2


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:
        return False
    return ip is not None and "zmq" in type(ip).__name__.lower()


def _format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressBar:
    """Counts jobs per state and shows them with an ETA; attach it to a client.

    - ``total``: how many jobs make 100% (None: unknown, no ETA).
    - ``client``: attach at once (else call :meth:`attach`).
    - ``mode``: ``"bar"`` (tqdm.auto), ``"log"`` (a line every ``interval``
      seconds), ``"off"``, or ``"auto"``: a bar in a notebook or when ``file``
      is a terminal, log lines otherwise.
    - ``file``: where to write (standard error by default).
    - ``initial``: jobs already done before this run (a resumed batch);
      ``initial_counts`` says with which outcomes (e.g. ``{"succeeded": 40}``).
    - ``count_finished``: advance the bar when a job's event says it ended
      (the default). The batch runner turns this off and calls
      :meth:`advance` when a job's files are on disk.

    Listener calls are cheap and never block: the display is refreshed at
    most five times a second.
    """

    def __init__(
        self,
        total: int | None = None,
        *,
        client: RunComfyClient | None = None,
        desc: str = "jobs",
        mode: Mode = "auto",
        file: TextIO | None = None,
        interval: float = 10.0,
        initial: int = 0,
        initial_counts: Mapping[str, int] | None = None,
        count_finished: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.desc = desc
        self.file = file
        self.interval = interval
        self.initial = initial
        self.count_finished = count_finished
        self._clock = clock
        self._mode: Mode = self._pick_mode(mode)
        self._live: dict[str, str] = {}  # request id -> live state label
        self._counts: Counter[str] = Counter(initial_counts or {})
        self._extra: dict[str, int] = {}
        self.done = initial
        self._started = clock()
        self._last_refresh = 0.0
        self._last_log = self._started
        self._bar: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._clients: list[RunComfyClient] = []
        self._closed = False
        if self._mode == "bar":
            self._bar = self._make_bar()
        if client is not None:
            self.attach(client)

    def __repr__(self) -> str:
        return f"<ProgressBar {self.done}/{self.total} {self._mode} {self._summary()}>"

    @property
    def mode(self) -> Mode:
        """The display chosen: ``"bar"``, ``"log"`` or ``"off"``."""
        return self._mode

    @property
    def counts(self) -> dict[str, int]:
        """Jobs per state: live ones (queued, running, ...) and outcomes so far."""
        live = Counter(self._live.values())
        merged: dict[str, int] = {}
        for name in _ORDER:
            value = live.get(name, 0) + self._counts.get(name, 0) + self._extra.get(name, 0)
            if value:
                merged[name] = value
        for name, value in {**self._counts, **self._extra}.items():
            if name not in merged and value:
                merged[name] = value
        return merged

    def _pick_mode(self, mode: Mode) -> Mode:
        if mode != "auto":
            return mode
        if self.file is None and _in_notebook():
            return "bar"
        stream = self.file if self.file is not None else sys.stderr
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        return "bar" if tty else "log"

    def _make_bar(self) -> Any:
        tqdm = _tqdm_class()
        return tqdm(
            total=self.total,
            initial=self.initial,
            desc=self.desc,
            unit="job",
            file=self.file,
            dynamic_ncols=True,
            leave=True,
        )

    # -- wiring ----------------------------------------------------------------------

    def attach(self, client: RunComfyClient) -> ProgressBar:
        """Listen to ``client``'s job events (returns self, for chaining)."""
        client.add_listener(self.on_event)
        self._clients.append(client)
        self._start_ticker()
        return self

    def detach(self) -> None:
        """Stop listening to every client attached."""
        for client in self._clients:
            client.remove_listener(self.on_event)
        self._clients.clear()

    def _start_ticker(self) -> None:
        # Log lines come on a clock, not only on events: generation takes
        # minutes, and a silent log looks like a hang.
        if self._mode != "log" or self._timer is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._log_line()
        self._start_ticker()

    # -- updates ---------------------------------------------------------------------

    def on_event(self, event: JobEvent) -> None:
        """The listener: record ``event``'s new state (attach() registers it)."""
        label = _LABELS.get(event.state)
        if label is None:
            return
        if event.state.is_terminal:
            self._live.pop(event.request_id, None)
            if self.count_finished:
                self._counts[label] += 1
                self._advance(1)
                return
        else:
            self._live[event.request_id] = label
        self._refresh()

    def advance(self, outcome: str, n: int = 1) -> None:
        """Count ``n`` jobs as done with ``outcome`` (e.g. ``"succeeded"``, ``"failed"``)."""
        self._counts[outcome] += n
        self._advance(n)

    def exclude(self, outcome: str, n: int = 1) -> None:
        """Take ``n`` jobs out of this run without counting them as done.

        For jobs that leave the run unprocessed (e.g. ``"not_submitted"``
        when a batch stops): ``total`` shrinks by ``n`` and the jobs are
        shown apart under ``outcome``, so the bar never reaches 100% on work
        that was not done.
        """
        self._counts[outcome] += n
        if self.total is not None:
            self.total = max(self.total - n, self.done)
            if self._bar is not None and not self._closed:
                self._bar.total = self.total
        if self._bar is not None and not self._closed:
            self._bar.set_postfix_str(self._summary(), refresh=False)
            self._bar.refresh()
        else:
            self._refresh()

    def forget(self, request_id: str) -> None:
        """Drop a job from the live counts (it left this run without an event)."""
        if self._live.pop(request_id, None) is not None:
            self._refresh()

    def set_count(self, name: str, value: int) -> None:
        """Show an extra count (e.g. ``downloading``) next to the job states."""
        self._extra[name] = value
        self._refresh()

    def _advance(self, n: int) -> None:
        self.done += n
        if self._closed:
            return  # counted, never drawn again: the terminal may be showing a question
        if self._bar is not None:
            self._bar.set_postfix_str(self._summary(), refresh=False)
            self._bar.update(n)
        else:
            self._refresh()

    def _refresh(self) -> None:
        if self._closed:
            return
        now = self._clock()
        if self._mode == "bar" and self._bar is not None:
            if now - self._last_refresh >= _REFRESH_SECONDS:
                self._last_refresh = now
                self._bar.set_postfix_str(self._summary(), refresh=True)
        elif self._mode == "log" and now - self._last_log >= self.interval:
            self._log_line()

    # -- display ---------------------------------------------------------------------

    def _summary(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.counts.items())

    def eta(self) -> float | None:
        """Seconds until ``total`` at this run's pace so far, or None while unknown."""
        if self.total is None:
            return None
        finished = self.done - self.initial
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        if finished <= 0:
            return None
        return (self._clock() - self._started) / finished * remaining

    def line(self) -> str:
        """The status as one plain line (what log mode prints)."""
        elapsed = self._clock() - self._started
        if self.total:
            head = f"{self.desc}: {self.done}/{self.total} done ({100 * self.done // self.total}%)"
        else:
            head = f"{self.desc}: {self.done} done"
        parts = [head]
        summary = self._summary()
        if summary:
            parts.append(summary)
        timing = f"{_format_seconds(elapsed)} elapsed"
        eta = self.eta()
        if eta is not None and self.done < (self.total or 0):
            timing += f", ETA {_format_seconds(eta)}"
        parts.append(timing)
        return " | ".join(parts)

    def _log_line(self) -> None:
        self._last_log = self._clock()
        stream = self.file if self.file is not None else sys.stderr
        # A closed or broken stream must not break the jobs.
        with contextlib.suppress(OSError, ValueError):
            print(self.line(), file=stream, flush=True)

    def close(self) -> None:
        """Detach, stop the clock, and leave the final state on screen. Idempotent.

        Nothing is drawn after this (counts still change): what follows on the
        terminal, such as a question, is not overwritten.
        """
        if self._closed:
            return
        self.detach()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._bar is not None:
            self._bar.set_postfix_str(self._summary(), refresh=False)
            self._bar.close()
        elif self._mode == "log":
            self._log_line()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def track_progress(client: RunComfyClient, total: int | None = None, **options: Any) -> ProgressBar:
    """A :class:`ProgressBar` attached to ``client``; use it as ``with track_progress(...):``.

    ``options`` are :class:`ProgressBar`'s (``desc``, ``mode``, ``file``, ...).
    """
    return ProgressBar(total, client=client, **options)


def _tqdm_class() -> Any:
    """``tqdm.auto``'s choice, but the text bar where a notebook has no ipywidgets.

    (tqdm.auto picks its widget bar in any notebook and then only warns that
    ipywidgets is missing; the text bar renders fine there.)
    """
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm as text_tqdm

        return text_tqdm
    from tqdm.auto import tqdm as auto_tqdm

    return auto_tqdm
