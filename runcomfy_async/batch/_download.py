"""Downloading outputs: streamed, checked, atomic, retried, and confined to one directory.

Output URLs point at RunComfy's storage host, another origin than the API, so
downloads use their own ``aiohttp`` session that has never seen the token:
no ``Authorization`` header can reach the storage host, even through a
redirect.

A file is streamed to a hidden temporary name in the output directory,
opened with ``O_EXCL | O_NOFOLLOW`` (it cannot be a symlink planted there),
checked against ``Content-Length``, fsynced, and only then renamed
(``os.replace``) to its final name, which is refused if it is a symlink. So a
download that fails or stops halfway never leaves a partial file under the
final name, and a crash leaves at most a ``.*.part`` file that the next run
removes. File names are single path components built from sanitised parts
and checked to resolve inside the directory, whatever the job id or URL says.
Disk writes run in a worker thread; the event loop only moves buffers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import secrets
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

import aiohttp
import anyio
import attrs

from .._errors import DownloadError
from .._retry import RetryPolicy, parse_retry_after
from .._version import __version__

__all__ = [
    "DownloadError",
    "Downloader",
    "SavedFile",
    "cleanup_partials",
    "output_names",
    "safe_filename",
    "url_extension",
    "write_file_atomic",
]

_PART_RE = re.compile(r"\..+\.[0-9a-f]{8}\.part")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_EXT_RE = re.compile(r"[a-z0-9]{1,10}")
_MAX_STEM = 150
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Extensions that would collide with the batch's own ``<id>.json`` record.
_RENAMED_EXT = {"json": "output.json"}
_FLUSH_BYTES = 1 << 20


class _Retry(Exception):
    """A failed attempt worth another try (after ``retry_after`` seconds, if the server said)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


@attrs.frozen
class SavedFile:
    """One file saved in the output directory: its ``name`` there, ``size`` and ``sha256``."""

    name: str
    path: Path
    url: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description (the path relative to the output directory)."""
        return {"name": self.name, "url": self.url, "size": self.size, "sha256": self.sha256}


def safe_filename(stem: str, ext: str = "") -> str:
    """A single, harmless file name from untrusted parts.

    Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``;
    leading dots and dashes go (no hidden files, ``..`` or options); the stem
    is capped in length and never empty.
    """
    clean = _UNSAFE_CHARS.sub("_", stem).lstrip(".-")[:_MAX_STEM].rstrip(".") or "output"
    ext = _UNSAFE_CHARS.sub("", ext).strip(".").lower()
    return f"{clean}.{ext}" if ext else clean


def url_extension(url: str, default: str) -> str:
    """The file extension of ``url``'s path (lower case), or ``default`` if it has no sane one."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return default
    _, ext = posixpath.splitext(posixpath.basename(unquote(path)))
    ext = ext[1:].lower()
    if not _EXT_RE.fullmatch(ext):
        return default
    return _RENAMED_EXT.get(ext, ext)


def output_names(
    job_id: str, urls: Sequence[tuple[str, str]], *, taken: Iterable[str] = ()
) -> list[str]:
    """File names for a job's outputs: ``<id>.<ext>``, or ``<id>-<n>.<ext>`` for several.

    ``urls`` are ``(url, default_extension)`` pairs. ``taken`` are other job
    ids of the batch (compared ignoring case): a numbered name that would be
    another job's name gets a ``_`` instead of the ``-``.
    """
    others = {t.lower() for t in taken} - {job_id.lower()} if len(urls) > 1 else set()
    names = []
    for n, (url, default) in enumerate(urls, start=1):
        stem = job_id
        if len(urls) > 1:
            stem = f"{job_id}-{n}"
            while stem.lower() in others:
                stem = f"{job_id}_{n}" if stem == f"{job_id}-{n}" else stem + "_"
        names.append(safe_filename(stem, url_extension(url, default)))
    return names


def _check_name(name: str) -> None:
    if (
        not name
        or name in (".", "..")
        or name.startswith(".")
        or any(c in name for c in ("/", "\\", "\0", ":"))
        or name != os.path.basename(name)
    ):
        raise DownloadError(f"refusing unsafe file name {name!r}")


def _target(directory: Path, name: str) -> Path:
    """``directory / name``, after checking it is a plain name that stays inside ``directory``."""
    _check_name(name)
    path = directory / name
    if path.parent.resolve() != directory.resolve():
        raise DownloadError(f"refusing to write {name!r} outside {directory}")
    return path


def _refuse_link(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise DownloadError(f"refusing to replace {path.name!r}: it is a symlink")
    if stat.S_ISDIR(st.st_mode):
        raise DownloadError(f"refusing to replace {path.name!r}: it is a directory")


_OPEN_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class _PartFile:
    """A temporary file next to its final name; all methods block (call them in a thread)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        self.fd: int | None = os.open(self.tmp, _OPEN_FLAGS, 0o644)
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.size += len(data)
        self.digest.update(data)

    def commit(self) -> None:
        """Flush to disk, then give the file its final name."""
        assert self.fd is not None
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        _refuse_link(self.final)
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def write_file_atomic(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to ``directory/name`` through a temporary file and a rename (blocking)."""
    path = _target(directory, name)
    part = _PartFile(path)
    try:
        part.write(data)
        part.commit()
    except BaseException:
        part.discard()
        raise
    return path


def cleanup_partials(directory: Path) -> int:
    """Remove temporary ``.*.part`` files a killed run left behind (blocking); return how many."""
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if _PART_RE.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)  # unlinks a symlink itself, never its target
                removed += 1
    return removed


class Downloader:
    """Saves output URLs into one directory, ``concurrency`` at a time.

    Use it as ``async with Downloader(out_dir) as d: saved = await d.download(url, name)``.
    Failed attempts (connection errors, timeouts, 408/425/429/5xx, a body
    shorter than its ``Content-Length``) are retried with ``retry``'s backoff
    and ``Retry-After``; other statuses fail at once with :class:`DownloadError`.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        chunk_size: int = 256 * 1024,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.out_dir = Path(out_dir)
        self._retry = retry or RetryPolicy(attempts=5, initial_delay=0.5, max_delay=10.0)
        self._slots = anyio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._chunk = chunk_size
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.attempts = 0
        self.retries = 0

    def __repr__(self) -> str:
        return f"<Downloader {self.out_dir} attempts={self.attempts} retries={self.retries}>"

    async def __aenter__(self) -> Downloader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise DownloadError("the downloader is closed")
        if self._session is None:
            # A session of its own, with no credentials of any kind: the
            # storage host is another origin and must never see the token.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._concurrency),
                timeout=self._timeout,
                headers={
                    "User-Agent": f"runcomfy-async/{__version__}",
                    "Accept-Encoding": "identity",
                },
                trust_env=False,
            )
        return self._session

    async def download(self, url: str, name: str) -> SavedFile:
        """Save ``url`` as ``out_dir/name`` (a plain file name); return what was saved."""
        path = _target(self.out_dir, name)
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        if scheme not in ("http", "https"):
            raise DownloadError(f"not an http(s) URL: {url[:200]!r}", url=url)
        async with self._slots:
            last: _Retry | None = None
            for attempt in range(self._retry.attempts):
                if attempt:
                    self.retries += 1
                    assert last is not None
                    await self._retry.sleep(self._retry.delay(attempt - 1, last.retry_after))
                try:
                    return await self._once(url, path)
                except _Retry as exc:
                    last = exc
            raise DownloadError(
                f"download of {name} failed after {self._retry.attempts} attempts: {last}", url=url
            )

    async def _once(self, url: str, path: Path) -> SavedFile:
        self.attempts += 1
        session = self._get_session()
        part = await anyio.to_thread.run_sync(_PartFile, path)
        try:
            try:
                async with session.get(url, allow_redirects=True, max_redirects=5) as resp:
                    self._check_status(resp, url, path.name)
                    expected = resp.content_length
                    if resp.headers.get("Content-Encoding", "identity").lower() != "identity":
                        expected = None  # length of the encoded body, not of what we read
                    buffered: list[bytes] = []
                    pending = 0
                    async for chunk in resp.content.iter_chunked(self._chunk):
                        buffered.append(chunk)
                        pending += len(chunk)
                        if pending >= _FLUSH_BYTES:
                            await anyio.to_thread.run_sync(part.write, b"".join(buffered))
                            buffered, pending = [], 0
                    if buffered:
                        await anyio.to_thread.run_sync(part.write, b"".join(buffered))
            except aiohttp.ClientPayloadError:
                got = f" after {part.size} bytes" if part.size else ""
                raise _Retry(f"incomplete body: the connection closed{got}") from None
            except aiohttp.ClientError as exc:
                raise _Retry(f"{type(exc).__name__}: {exc}") from None
            except TimeoutError:
                raise _Retry("timed out") from None
            if expected is not None and part.size != expected:
                raise _Retry(f"incomplete body: {part.size} of {expected} bytes")
            await anyio.to_thread.run_sync(part.commit)
        except BaseException:
            # Shielded: even when the download is cancelled, the part file goes.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(part.discard)
            raise
        return SavedFile(path.name, path, url, part.size, part.digest.hexdigest())

    @staticmethod
    def _check_status(resp: aiohttp.ClientResponse, url: str, name: str) -> None:
        if resp.status == 200:
            return
        if resp.status in _RETRYABLE_STATUS:
            raise _Retry(
                f"HTTP {resp.status} from the storage host",
                parse_retry_after(resp.headers.get("Retry-After")),
            )
        raise DownloadError(
            f"download of {name} failed: HTTP {resp.status} from the storage host",
            url=url,
            status=resp.status,
        )
