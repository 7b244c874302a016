"""Downloads: atomic, checked, retried, token-free, and confined to the output directory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from runcomfy_async import RetryPolicy
from runcomfy_async.batch._download import (
    Downloader,
    DownloadError,
    cleanup_partials,
    output_names,
    safe_filename,
    url_extension,
    write_file_atomic,
)

BODY = bytes(range(256)) * 64  # 16 KiB

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Storage:
    """A tiny storage origin whose answers a test scripts, one per request."""

    def __init__(self) -> None:
        self.plan: list[str] = []
        self.requests = 0
        self.auth_headers = 0
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if "Authorization" in request.headers:
            self.auth_headers += 1
        action = self.plan.pop(0) if self.plan else "ok"
        if action == "500":
            return web.Response(status=500, text="oops")
        if action == "404":
            return web.Response(status=404, text="gone")
        if action == "429":
            return web.Response(status=429, headers={"Retry-After": "0"})
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = len(BODY)
        await response.prepare(request)
        if action == "truncate":
            await response.write(BODY[: len(BODY) // 2])
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(BODY)
        await response.write_eof()
        return response


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    store = Storage()
    app = web.Application()
    app.router.add_get("/{tail:.*}", store.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    store.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield store
    await runner.cleanup()


def no_wait() -> RetryPolicy:
    return RetryPolicy.no_wait(attempts=4)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


async def test_a_download_lands_whole_under_its_final_name(
    storage: Storage, tmp_path: Path
) -> None:
    async with Downloader(tmp_path, retry=no_wait()) as d:
        saved = await d.download(storage.base + "/o/out.mp4", "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == BODY
    assert saved.size == len(BODY) and saved.name == "clip.mp4"
    assert len(saved.sha256) == 64
    assert leftovers(tmp_path) == []


async def test_the_storage_origin_never_sees_an_authorization_header(
    storage: Storage, tmp_path: Path
) -> None:
    async with Downloader(tmp_path, retry=no_wait()) as d:
        await d.download(storage.base + "/o/a.mp4", "a.mp4")
        await d.download(storage.base + "/o/b.mp4", "b.mp4")
    assert storage.requests == 2
    assert storage.auth_headers == 0


@pytest.mark.parametrize("failures", [["500"], ["truncate"], ["429", "truncate", "500"]])
async def test_failed_and_truncated_downloads_are_retried(
    storage: Storage, tmp_path: Path, failures: list[str]
) -> None:
    storage.plan = list(failures)
    async with Downloader(tmp_path, retry=no_wait()) as d:
        await d.download(storage.base + "/o/out.mp4", "clip.mp4")
        assert d.retries == len(failures)
    assert (tmp_path / "clip.mp4").read_bytes() == BODY
    assert leftovers(tmp_path) == []


async def test_a_download_that_keeps_failing_leaves_no_file(
    storage: Storage, tmp_path: Path
) -> None:
    storage.plan = ["truncate"] * 10
    async with Downloader(tmp_path, retry=no_wait()) as d:
        with pytest.raises(DownloadError, match="after 4 attempts"):
            await d.download(storage.base + "/o/out.mp4", "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()
    assert leftovers(tmp_path) == []


async def test_a_partial_retry_never_replaces_a_good_file_with_half_of_one(
    storage: Storage, tmp_path: Path
) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"previous")
    storage.plan = ["truncate"] * 10
    async with Downloader(tmp_path, retry=no_wait()) as d:
        with pytest.raises(DownloadError):
            await d.download(storage.base + "/o/out.mp4", "clip.mp4")
    assert (tmp_path / "clip.mp4").read_bytes() == b"previous"


async def test_a_missing_output_fails_at_once_with_its_status(
    storage: Storage, tmp_path: Path
) -> None:
    storage.plan = ["404"]
    async with Downloader(tmp_path, retry=no_wait()) as d:
        with pytest.raises(DownloadError) as exc:
            await d.download(storage.base + "/o/out.mp4", "clip.mp4")
    assert exc.value.status == 404
    assert storage.requests == 1


@pytest.mark.parametrize(
    "name", ["../escape.mp4", "/etc/passwd", "a/b.mp4", ".hidden", "..", "a\\b.mp4", ""]
)
async def test_names_that_could_leave_the_directory_are_refused(
    storage: Storage, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    async with Downloader(out, retry=no_wait()) as d:
        with pytest.raises(DownloadError, match="refusing"):
            await d.download(storage.base + "/o/out.mp4", name)
    assert storage.requests == 0
    assert sorted(os.listdir(tmp_path)) == ["out"]


async def test_an_existing_symlink_is_not_written_through(storage: Storage, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (out / "clip.mp4").symlink_to(target)
    async with Downloader(out, retry=no_wait()) as d:
        with pytest.raises(DownloadError, match="symlink"):
            await d.download(storage.base + "/o/out.mp4", "clip.mp4")
    assert target.read_text() == "keep me"
    assert (out / "clip.mp4").is_symlink()
    assert leftovers(out) == []


async def test_only_http_urls_are_fetched(tmp_path: Path) -> None:
    async with Downloader(tmp_path, retry=no_wait()) as d:
        for url in ("file:///etc/passwd", "ftp://h/a.mp4", "javascript:alert(1)"):
            with pytest.raises(DownloadError, match="not an http"):
                await d.download(url, "clip.mp4")


@pytest.mark.parametrize(
    ("url", "ext"),
    [
        ("https://s/a/out.mp4", "mp4"),
        ("https://s/a/OUT.MOV?sig=1#x", "mov"),
        ("https://s/a/out", "mp4"),
        ("https://s/a/..%2f..%2fevil.sh%00.mp4", "mp4"),
        ("https://s/a/x.tar.gz", "gz"),
        ("https://s/a/x.j$on", "mp4"),
        ("https://s/a/meta.json", "output.json"),
        ("https://s/a/x.averyveryverylongextension", "mp4"),
    ],
)
def test_extension_comes_from_the_url_path_and_is_sanitised(url: str, ext: str) -> None:
    assert url_extension(url, "mp4") == ext


def test_output_names_number_several_outputs_and_avoid_other_ids() -> None:
    one = output_names("clip", [("https://s/a.mp4", "mp4")])
    assert one == ["clip.mp4"]
    two = output_names("clip", [("https://s/a.mp4", "mp4"), ("https://s/b.png", "png")])
    assert two == ["clip-1.mp4", "clip-2.png"]
    # another job is called clip-1: this job's first output must not take its name
    avoided = output_names(
        "clip", [("https://s/a.mp4", "mp4"), ("https://s/b", "mp4")], taken=["clip-1", "clip"]
    )
    assert avoided == ["clip_1.mp4", "clip-2.mp4"]


@pytest.mark.parametrize(
    ("stem", "expected"),
    [("../../etc/passwd", "_.._etc_passwd"), (".env", "env"), ("a b/c", "a_b_c"), ("", "output")],
)
def test_safe_filename_makes_one_harmless_component(stem: str, expected: str) -> None:
    name = safe_filename(stem, "mp4")
    assert name == expected + ".mp4"
    assert os.path.basename(name) == name


def test_stale_part_files_are_removed_and_symlinks_not_followed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".clip.mp4.0123abcd.part").write_bytes(b"half")
    target = tmp_path / "target"
    target.write_text("keep")
    (out / ".x.mp4.deadbeef.part").symlink_to(target)
    (out / "clip.mp4").write_bytes(b"whole")
    (out / ".not-ours").write_bytes(b"")
    assert cleanup_partials(out) == 2
    assert sorted(p.name for p in out.iterdir()) == [".not-ours", "clip.mp4"]
    assert target.read_text() == "keep"


def test_write_file_atomic_refuses_to_replace_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.write_text("keep")
    (tmp_path / "r.json").symlink_to(target)
    with pytest.raises(DownloadError, match="symlink"):
        write_file_atomic(tmp_path, "r.json", b"{}")
    assert target.read_text() == "keep"
    write_file_atomic(tmp_path, "ok.json", b"{}")
    assert (tmp_path / "ok.json").read_bytes() == b"{}"
