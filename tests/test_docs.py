"""The documentation site: it builds with ``mkdocs build --strict``, and its examples run.

Every fenced ``python`` block of every page in ``docs/`` is executed, page by
page in order, in one namespace per page, against an emulator on loopback:
``RUNCOMFY_API_TOKEN`` and ``RUNCOMFY_BASE_URL`` point at it, so the docs'
``RunComfyClient()`` (token from the environment) talks to it, and the
client's default poll policy is scaled to the emulator's time scale so a
two-minute generation takes a fraction of a second. Top-level ``await`` is
allowed (as in a notebook); blocks that call ``asyncio.run`` work too, since
the emulator serves from its own thread.

Every ``runcomfy-async`` command line in a ``bash`` block must parse, and the
ones that need no account (``--emulator``, ``--dry-run``) are run in-process
and must exit 0. No page may hide a code block from this (no indented fences).
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from emuthread import ThreadedEmulator

import runcomfy_async
from runcomfy_async import PollPolicy, RunComfyClient, cli
from runcomfy_async.cli._parser import build_parser
from runcomfy_async.emulator._cli import _parser as emulator_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Time scale of the emulator and of the docs' clients: Kling pro (90-200 s) takes 0.2-0.4 s.
SCALE = 0.002
#: Nav pages that other branches add (the lead empties this once they are merged).
PAGES_FROM_OTHER_BRANCHES: frozenset[str] = frozenset()

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*$")


@attrs.frozen
class Block:
    page: str
    line: int
    lang: str
    code: str


def blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of ``page``, with their first line number."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        assert not match["indent"], f"{page.name}:{i + 1}: indented fence: its code would not run"
        start, lang = i + 1, match["lang"]
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{page.name}:{start}: unclosed fence"
        i += 1
        name = page.relative_to(DOCS).as_posix() if page.is_relative_to(DOCS) else page.name
        yield Block(name, start, lang, "\n".join(body) + "\n")


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def pages_with(lang: str) -> list[Path]:
    return [p for p in pages() if any(b.lang == lang for b in blocks(p))]


def page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


# -- the site builds ----------------------------------------------------------------------


def nav_files(nav: Any) -> Iterator[str]:
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for item in nav:
            yield from nav_files(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_files(value)


def load_mkdocs_yml() -> dict[str, Any]:
    # mkdocs.yml may hold !!python/name tags; this file holds none, so safe_load reads it.
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    return config


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    listed = set(nav_files(load_mkdocs_yml()["nav"]))
    present = {page_id(p) for p in pages()}
    assert present - listed == set(), "pages missing from the nav in mkdocs.yml"
    assert listed - present <= PAGES_FROM_OTHER_BRANCHES, "nav entries without a page"


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or "mkdocs"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNCOMFY_")}
    env["NO_MKDOCS_2_WARNING"] = "1"  # the theme's notice about its successor
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "site"
    # The API reference was generated from the docstrings.
    client_page = (site / "reference" / "client" / "index.html").read_text(encoding="utf-8")
    assert "runcomfy_async.RunComfyClient" in client_page
    assert "Submit one paid job" in client_page  # RunComfyClient.submit's docstring
    # No page loads anything from elsewhere (fonts, scripts, styles): it works offline.
    loads = re.compile(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:)?//')
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert not loads.search(text), f"{html}: {loads.search(text)}"


def test_every_public_name_is_in_the_api_reference() -> None:
    documented = set()
    for page in (DOCS / "reference").glob("*.md"):
        documented |= set(re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.M))
    public = {f"runcomfy_async.{name}" for name in runcomfy_async.__all__ if name != "__version__"}
    assert sorted(public - documented) == [], "add them to a page of docs/reference/"


# -- the figure matches the code ---------------------------------------------------------


def test_the_scheduler_figure_shows_the_checks_the_default_policy_makes() -> None:
    text = (DOCS / "scheduler.md").read_text(encoding="utf-8")
    svg = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    root = ET.fromstring(svg)
    drawn = [float(e.attrib["data-t"]) for e in root.iter() if e.attrib.get("class") == "check"]
    policy = PollPolicy()
    prior = policy.priors["kling/kling-3.0/pro/text-to-video"]
    expected = []
    now = 0.0
    while True:
        now = policy.plan_next(now=now, submitted=0.0, earliest=prior, minimum=prior)
        if now > 200.0:
            break
        expected.append(round(now, 1))
    assert drawn == expected


# -- the examples run ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[ThreadedEmulator]:
    with ThreadedEmulator(time_scale=SCALE, workers=16) as emu:
        yield emu


@pytest.fixture
def docs_env(emulator: ThreadedEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment of a docs example: the emulator's token and URL, a scratch directory."""
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", emulator.emu.token)
    monkeypatch.setenv("RUNCOMFY_BASE_URL", emulator.emu.base_url)
    # Clients made without a poll policy (the docs' RunComfyClient(), a batch's own
    # client) get one at the emulator's time scale; an explicit poll= is kept.
    client_module = sys.modules[RunComfyClient.__module__]
    assert getattr(client_module, "PollPolicy", None) is PollPolicy, "the client's default moved"
    monkeypatch.setattr(client_module, "PollPolicy", lambda: PollPolicy(time_scale=SCALE))
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(work)
    return work


def run_python_page(page: Path) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    loop = asyncio.new_event_loop()
    try:
        for block in blocks(page):
            if block.lang != "python":
                continue
            where = f"docs/{block.page}:{block.line}"
            code = compile(
                "\n" * (block.line) + block.code,
                where,
                "exec",
                flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            )
            try:
                value = eval(code, namespace)
                if inspect.iscoroutine(value):
                    loop.run_until_complete(asyncio.wait_for(value, 60))
            except BaseException as exc:
                raise AssertionError(f"the example at {where} failed: {exc!r}") from exc
        # Close what a page left open (a notebook keeps its client for the session).
        for value in list(namespace.values()):
            if isinstance(value, RunComfyClient) and not value.closed:
                loop.run_until_complete(value.aclose())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return namespace


@pytest.mark.parametrize("page", pages_with("python"), ids=page_id)
def test_python_examples_run_against_the_emulator(page: Path, docs_env: Path) -> None:
    run_python_page(page)


def command_lines(page: Path) -> Iterator[tuple[str, list[str]]]:
    for block in blocks(page):
        if block.lang not in ("bash", "console", "shell"):
            continue
        for n, line in enumerate(block.code.splitlines()):
            line = line.removeprefix("$ ").strip()
            if line.startswith("runcomfy-async "):
                where = f"docs/{block.page}:{block.line + 1 + n}"
                yield where, shlex.split(line, comments=True)[1:]


CLI_PAGES = [p for p in pages() if any(True for _ in command_lines(p))]


@pytest.mark.parametrize("page", CLI_PAGES, ids=page_id)
def test_every_documented_command_line_parses(page: Path) -> None:
    for where, argv in command_lines(page):
        # `runcomfy-async emulator ...` hands its arguments to the emulator's own parser.
        parse = (
            emulator_parser(None).parse_args if argv[0] == "emulator" else build_parser().parse_args
        )
        try:
            parse(argv[1:] if argv[0] == "emulator" else argv)
        except SystemExit as exc:
            if "--help" in argv and exc.code == 0:
                continue
            raise AssertionError(f"{where}: {shlex.join(argv)} does not parse") from exc


@pytest.mark.parametrize("page", CLI_PAGES, ids=page_id)
def test_offline_command_lines_run(page: Path, docs_env: Path) -> None:
    for where, argv in command_lines(page):
        if argv[0] in ("run", "batch") and ("--emulator" in argv or "--dry-run" in argv):
            assert cli.main(argv) == 0, f"{where}: {shlex.join(argv)} failed"


def test_a_broken_example_fails_with_its_page_and_line(tmp_path: Path, docs_env: Path) -> None:
    page = tmp_path / "broken.md"
    page.write_text("# t\n\n```python\nx = 1\n```\n\n```python\nawait missing()\n```\n")
    with pytest.raises(AssertionError, match=r"broken\.md:7 failed: NameError"):
        run_python_page(page)


def test_an_indented_fence_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "hidden.md"
    page.write_text("- item\n\n    ```python\n    x = 1\n    ```\n")
    with pytest.raises(AssertionError, match="indented fence"):
        list(blocks(page))
