"""The gallery: ``report.html``, a page that shows a batch's clips and where its time went.

Built from what a batch leaves in its output directory: the ``report.json``
dict (:meth:`BatchReport.as_dict`) and the journal's rows (their times). The
page is self-contained: inline CSS, JavaScript and SVG, videos by relative
path, no network, so it works from ``file://`` and the folder can be zipped
and shared. Every text that comes from a manifest or a server (ids, prompts,
errors) is HTML-escaped: a prompt is untrusted input.

:func:`render_gallery` makes the whole page, :func:`gallery_html` the same
gallery as a fragment for a notebook. Writing ``report.html`` from an output
directory (and reading the journal for it) is ``_report``'s.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import math
import os
import re
import string
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs

from .._version import __version__

__all__ = ["GALLERY_NAME", "HINTS", "gallery_html", "render_gallery"]

GALLERY_NAME = "report.html"
"""The gallery's file name inside the output directory."""

_VIDEO = (".mp4", ".webm", ".mov", ".m4v")
_IMAGE = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_PROMPT_CHARS = 140
# Clips past this many are links that the page's script turns into players when
# scrolled near: a thousand <video> elements keep a browser busy for most of a minute.
_EAGER_CLIPS = 48
HINTS: Mapping[str, str] = {
    "outcome_unknown": (
        "may have been created and charged: check your RunComfy dashboard, then rerun with "
        "--adopt ID=REQUEST_ID for those it shows, or --resubmit-unknown for the rest"
    ),
    "download_failed": "rerun the same command to retry the downloads",
    "in_flight": "rerun the same command to resume them (they are not resubmitted)",
    "not_submitted": "rerun the same command to submit them",
    "failed": "rerun with --retry-failed to submit them again",
}
"""What to do about the jobs of each outcome but ``succeeded`` (the page's cards and the
report's summary say the same)."""
_HINT_CANCELLED = "cancelled on the server: rerun with --retry-failed to submit it again"


def _e(value: object) -> str:
    """Escaped for HTML text and quoted attributes alike."""
    return html.escape(str(value), quote=True)


@attrs.frozen
class _Job:
    """One job as the page shows it: the report's line plus the journal's times."""

    id: str
    model: str
    outcome: str
    line: int
    request_id: str | None
    files: tuple[str, ...]
    error: str | None
    cost: float | None
    estimated_cost: float | None
    prompt: str
    clip_seconds: float | None
    sending: float | None  # its submit could leave
    submitted: float | None  # the client had the request id
    started: float | None  # the client first saw it running
    server_done: float | None  # the server says it finished (its clock, clamped)
    noticed: float | None  # the client saw it end
    download_started: float | None  # a download worker took it
    downloaded: float | None  # its files were saved

    @property
    def took(self) -> float | None:
        if self.submitted is None or self.noticed is None:
            return None
        return self.noticed - self.submitted


def _epoch(iso: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _jobs(report: Mapping[str, Any], rows: Mapping[str, Any]) -> list[_Job]:
    out = []
    for item in report.get("jobs") or ():
        row = rows.get(str(item.get("id"))) or {}
        if not isinstance(row, Mapping):  # a JournalRow
            row = attrs.asdict(row, recurse=False)
        payload = row.get("input") or {}
        result = row.get("result") or {}
        submitted, noticed = _number(row.get("submitted_at")), _number(row.get("finished_at"))
        started = _number(row.get("started_at"))
        if started is not None and (submitted is None or started < submitted):
            started = None  # from an earlier attempt, or an impossible reading
        server_done = _epoch(result.get("finished_at")) if result.get("finished_at") else None
        if server_done is not None and submitted is not None and noticed is not None:
            # The server's clock is not ours: keep its "done" between our readings.
            server_done = min(max(server_done, started or submitted), noticed)
        out.append(
            _Job(
                id=str(item.get("id")),
                model=str(item.get("model") or row.get("model") or ""),
                outcome=str(item.get("outcome")),
                line=int(item.get("line") or row.get("line") or 0),
                request_id=item.get("request_id") or row.get("request_id"),
                files=tuple(str(f) for f in item.get("files") or ()),
                error=item.get("error"),
                cost=_number(item.get("cost")),
                estimated_cost=_number(item.get("estimated_cost")),
                prompt=str(payload.get("prompt") or ""),
                clip_seconds=_number(payload.get("duration")),
                sending=_number(row.get("sending_at")),
                submitted=submitted,
                started=started,
                server_done=server_done,
                noticed=noticed,
                download_started=_number(row.get("download_started_at")),
                downloaded=_number(row.get("downloaded_at")),
            )
        )
    return out


def _money(value: float | None) -> str:
    return "–" if value is None else f"${value:.2f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _media(job: _Job, base: str, eager: bool) -> str:
    for name in job.files:
        src = _e(base + quote(name))
        if name.lower().endswith(_VIDEO) and not eager:
            return f'<a class="nomedia clip-later" href="{src}" title="{_e(name)}">▶ play</a>'
        if name.lower().endswith(_VIDEO):
            return (
                f'<video src="{src}" preload="metadata" muted loop playsinline controls '
                f'title="{_e(name)}"></video>'
            )
        if name.lower().endswith(_IMAGE):
            return f'<img src="{src}" alt="{_e(name)}" loading="lazy">'
    if job.files:
        return f'<a class="nomedia" href="{_e(base + quote(job.files[0]))}">{_e(job.files[0])}</a>'
    return f'<div class="nomedia">{_e(job.outcome.replace("_", " "))}</div>'


def _card(job: _Job, base: str, eager: bool = True) -> str:
    prompt = job.prompt
    short = prompt if len(prompt) <= _PROMPT_CHARS else prompt[: _PROMPT_CHARS - 1] + "…"
    data = {
        "id": job.id,
        "state": job.outcome,
        "model": job.model,
        "prompt": prompt,
        "line": job.line,
        "submitted": job.submitted,
        "finished": job.noticed,
        "took": job.took,
        "cost": job.cost if job.cost is not None else job.estimated_cost,
    }
    attrs_ = " ".join(f'data-{k}="{_e("" if v is None else v)}"' for k, v in data.items())
    facts = [
        ("clip", _seconds(job.clip_seconds)),
        ("took", _seconds(job.took)),
        ("cost", _money(job.cost)),
        ("estimated", _money(job.estimated_cost)),
    ]
    facts_html = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    trouble = ""
    if job.outcome != "succeeded":
        hint = _HINT_CANCELLED if job.outcome == "cancelled" else HINTS.get(job.outcome, "")
        if job.error:
            trouble += f'<p class="err">{_e(job.error)}</p>'
        if hint:
            trouble += f'<p class="hint">What to do: {_e(hint)}</p>'
    rid = f'<p class="rid">request <code>{_e(job.request_id)}</code></p>' if job.request_id else ""
    return (
        f'<article class="card st-{_e(job.outcome)}" {attrs_}>{_media(job, base, eager)}'
        f'<div class="meta"><div class="head"><code class="id">{_e(job.id)}</code>'
        f'<span class="badge">{_e(job.outcome.replace("_", " "))}</span></div>'
        f'<div class="model">{_e(job.model)}</div>'
        f'<p class="prompt" title="{_e(prompt)}">{_e(short)}</p>'
        f"<dl>{facts_html}</dl>{trouble}{rid}</div></article>"
    )


def _ticks(span: float) -> float:
    """A round tick step giving about six ticks over ``span`` seconds."""
    raw = max(span / 6, 1e-3)
    step = 10.0 ** math.floor(math.log10(raw))
    return next(m * step for m in (1, 2, 5, 10) if m * step >= raw)


def _spans(job: _Job, stop: float) -> list[tuple[str, float | None, float | None, str]]:
    """One job's spans: ``(css kind, start, end, what it was)``; missing times drop a span."""
    on_server = job.server_done or job.noticed or stop  # still running: to the run's end
    spans: list[tuple[str, float | None, float | None, str]] = [
        ("send", job.sending, job.submitted, "sending the submit"),
    ]
    if job.started is not None:
        spans += [
            ("queued", job.submitted, job.started, "queued, or not checked yet"),
            ("running", job.started, on_server, "running"),
        ]
    else:  # never seen running (finished before a check saw it), or an older journal
        spans.append(("server", job.submitted, on_server, "queued and running"))
    spans.append(("noticed", job.server_done, job.noticed, "done, until the client noticed"))
    if job.download_started is not None:
        spans += [
            ("dlwait", job.noticed, job.download_started, "waiting for a download slot"),
            ("download", job.download_started, job.downloaded, "downloading"),
        ]
    else:
        spans.append(("download", job.noticed, job.downloaded, "downloading"))
    return spans


def _timeline(jobs: list[_Job], start: float | None, stop: float | None) -> str:
    timed = [j for j in jobs if j.submitted is not None]
    if not timed:
        return '<p class="empty">No job was submitted: nothing to draw.</p>'
    ends = [
        t for j in timed for t in (j.sending, j.submitted, j.noticed, j.downloaded) if t is not None
    ]
    t0 = min([*ends, *([start] if start is not None else [])])
    if stop is None or all(j.noticed is not None for j in timed):
        stop = max(ends)
    stop = max(stop, *ends)  # unfinished jobs are drawn to the run's end
    span = max(stop - t0, 1e-3)
    label_w, plot_w = 170, 820
    row_h = 14 if len(jobs) <= 60 else max(3, 840 // len(jobs))

    def x(t: float) -> float:
        return label_w + (t - t0) / span * plot_w

    top, height = 22, 22 + row_h * len(jobs) + 4
    step = _ticks(span)
    parts = [
        f'<svg class="tl" viewBox="0 0 {label_w + plot_w + 10} {height}" '
        f'width="100%" role="img" aria-label="timeline, one row per job">'
    ]
    for n in range(int(span / step) + 1):
        tx = x(t0 + n * step)
        parts.append(
            f'<line class="tick" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top - 4}" y2="{height}"/>'
            f'<text class="tick" x="{tx:.1f}" y="12">{n * step:g} s</text>'
        )
    for i, job in enumerate(jobs):
        y = top + i * row_h
        tip = [f"{job.id}: {job.outcome}"]
        bars = []
        spans = _spans(job, stop)
        for kind, a, b, what in spans:
            if a is None or b is None or b < a:
                continue
            w = max((b - a) / span * plot_w, 1.0)
            bars.append(
                f'<rect class="sp-{kind}" x="{x(a):.1f}" y="{y + 1}" '
                f'width="{w:.1f}" height="{max(row_h - 2, 1)}"/>'
            )
            tip.append(f"{what}: {b - a:.2f} s")
        if not bars:
            tip.append("no times recorded (never submitted)")
        label = f'<text class="lbl" x="{label_w - 6}" y="{y + row_h - 3}">{_e(job.id)}</text>'
        parts.append(
            f'<g class="tl-row st-{_e(job.outcome)}" data-id="{_e(job.id)}">'
            f"<title>{_e(chr(10).join(tip))}</title>"
            f"{label if row_h >= 9 else ''}{''.join(bars)}</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _totals(report: Mapping[str, Any], jobs: list[_Job], requests: int | None) -> str:
    clips = sum(len(j.files) for j in jobs if j.outcome == "succeeded")
    starts = [j.submitted for j in jobs if j.submitted is not None]
    ends = [t for j in jobs for t in (j.downloaded or j.noticed,) if t is not None]
    makespan = max(ends) - min(starts) if starts and ends else None
    items = [
        (str(len(jobs)), "jobs"),
        (str(clips), "clips saved"),
        (_money(_number(report.get("cost"))), "cost reported"),
        (_money(_number(report.get("estimated_cost"))), "estimated (succeeded jobs)"),
        (_seconds(makespan), "makespan (first submit to last file)"),
        (_seconds(_number(report.get("elapsed_seconds"))), "this run's wall time"),
    ]
    if requests is not None and jobs:
        items.append((f"{requests / len(jobs):.1f}", "API requests per job"))
    counts = Counter(j.outcome for j in jobs)
    items += [(str(n), o.replace("_", " ")) for o, n in counts.items() if o != "succeeded"]
    return "".join(f'<div class="tot"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in items)


def _select(name: str, label: str, counts: Counter[str]) -> str:
    options = "".join(
        f'<option value="{_e(v)}">{_e(v.replace("_", " "))} ({counts[v]})</option>'
        for v in sorted(counts)
    )
    return (
        f'<label>{label} <select data-filter="{name}">'
        f'<option value="">all ({sum(counts.values())})</option>{options}</select></label>'
    )


def _folder_name(report: Mapping[str, Any]) -> str:
    folder = str(report.get("out_dir") or "")
    return os.path.basename(folder.rstrip("/")) or folder


@functools.lru_cache(maxsize=1)
def _template() -> str:
    """The page's markup, style and script (``_gallery.html``, shipped beside this module)."""
    return Path(__file__).with_name("_gallery.html").read_text(encoding="utf-8")


def gallery_html(
    report: Mapping[str, Any],
    rows: Mapping[str, Any] | None = None,
    *,
    media_base: str = "",
    requests: int | None = None,
    element_id: str | None = None,
) -> str:
    """The gallery as an HTML fragment (a ``<div>`` with its style and script), e.g. for Jupyter.

    ``report`` is ``report.json``'s dict, ``rows`` the journal's rows by job id
    (``JournalRow`` objects or mappings; without them the timeline is empty).
    ``media_base`` is put before every file name (``"clips/"`` when the page is
    shown from the output directory's parent); ``requests``, the API requests
    the batch made, adds "requests per job" to the totals.
    """
    jobs = sorted(_jobs(report, rows or {}), key=lambda j: j.line)
    uid = re.sub(r"[^\w-]", "-", element_id or f"rcg-{uuid.uuid4().hex[:10]}")
    if media_base and not media_base.endswith("/"):
        media_base += "/"
    states, models = Counter(j.outcome for j in jobs), Counter(j.model for j in jobs)
    # The folder's name only (its full path on hover): a shared page need not tell
    # where it was made, nor whose home directory it was in.
    folder = str(report.get("out_dir") or "")
    notes = [f'<span title="{_e(folder)}">{_e(_folder_name(report))}</span>']
    if report.get("interrupted"):
        notes.append("interrupted: rerun the same command to finish")
    started = _number(report.get("started_at"))
    if started is not None:
        notes.append(f"started {dt.datetime.fromtimestamp(started, dt.timezone.utc):%F %T} UTC")
    if requests is None and _number(report.get("requests")) is not None:
        requests = int(report["requests"])
    return string.Template(_template()).substitute(
        uid=uid,
        heading=f"Batch of {len(jobs)} job{'s' if len(jobs) != 1 else ''}",
        sub=" · ".join([notes[0], *map(_e, notes[1:])]),
        totals=_totals(report, jobs, requests),
        state_select=_select("state", "State", states),
        model_select=_select("model", "Model", models),
        cards="".join(_card(j, quote(media_base), n < _EAGER_CLIPS) for n, j in enumerate(jobs)),
        timeline=_timeline(jobs, started, _number(report.get("finished_at"))),
        version=_e(__version__),
    )


def render_gallery(
    report: Mapping[str, Any],
    rows: Mapping[str, Any] | None = None,
    *,
    requests: int | None = None,
    title: str | None = None,
) -> str:
    """The text of ``report.html``: the whole page, for a file beside the clips.

    Arguments as :func:`gallery_html`; files are linked by relative path.
    """
    page_title = title or f"runcomfy-async batch: {_folder_name(report)}"
    body = gallery_html(report, rows, requests=requests, element_id="rcg-report")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(page_title)}</title></head><body>{body}</body></html>\n"
    )
