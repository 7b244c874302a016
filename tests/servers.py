"""Throwaway Redis and PostgreSQL servers on loopback, for the shared-limits and fleet tests.

Each fixture is session-scoped: one server for the whole test run, in a temp
directory, on a free port of 127.0.0.1, stopped (and its files removed) at the
end. Tests keep apart by using their own Redis key or batch key.

When the binaries are missing the fixture fails with a message saying how to
install them (``apt-get install -y postgresql redis-server``, which ``.ci/run``
does): a test of shared state that silently skipped would prove nothing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "ServerError",
    "free_port",
    "postgres_dsn",
    "redis_server",
    "redis_url",
    "running_postgres",
]

_INSTALL = "install it with `apt-get install -y postgresql redis-server` (.ci/run does)"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pairs(options: dict[str, str]) -> list[str]:
    return [part for pair in options.items() for part in pair]


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    pytest.fail(f"{name} did not listen on 127.0.0.1:{port} within 30 s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A fresh redis-server without persistence: its URL and its process (to stop it early)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not installed: {_INSTALL}")
    workdir = Path(tempfile.mkdtemp(prefix="rca-redis-"))
    port = free_port()
    log = workdir / "redis.log"
    with log.open("wb") as out:
        options = {
            "--port": str(port),
            "--bind": "127.0.0.1",
            "--save": "",
            "--appendonly": "no",
            "--dir": str(workdir),
            "--unixsocket": str(workdir / "redis.sock"),
            "--daemonize": "no",
        }
        proc = subprocess.Popen(
            [binary, *_pairs(options)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, "redis-server", log)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://127.0.0.1:PORT/0`` of a fresh redis-server without persistence."""
    with redis_server() as (url, _):
        yield url


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.fail(f"PostgreSQL's initdb is not installed (/usr/lib/postgresql/*/bin): {_INSTALL}")
    return Path(found[-1]).parent


def _pg_user() -> tuple[list[str], int, int]:
    """The command prefix to run PostgreSQL's binaries as a non-root user, and its ids.

    PostgreSQL refuses to run as root. The Debian package creates the
    ``postgres`` system user; as root we run the server as that user.
    """
    if os.geteuid() != 0:
        return [], os.geteuid(), os.getegid()
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(f"no 'postgres' system user to run the server as: {_INSTALL}")
    return ["runuser", "-u", "postgres", "--"], entry.pw_uid, entry.pw_gid


class ServerError(RuntimeError):
    """A throwaway server could not be started (the message says why and how to fix it)."""


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster on loopback; yield its DSN; remove it after.

    ``postgresql://postgres@127.0.0.1:PORT/postgres``; raises :class:`ServerError`
    when it cannot start. Used by the :func:`postgres_dsn` fixture and the
    fleet benchmark.
    """
    with _failing_as(ServerError):
        yield from _postgres()


@contextlib.contextmanager
def _failing_as(kind: type[Exception]) -> Iterator[None]:
    try:
        yield
    except pytest.fail.Exception as exc:
        raise kind(str(exc)) from None


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/postgres`` of a fresh throwaway cluster."""
    yield from _postgres()


def _postgres() -> Iterator[str]:
    bindir = _pg_bin()
    prefix, uid, gid = _pg_user()
    workdir = Path(tempfile.mkdtemp(prefix="rca-pg-"))
    data = workdir / "data"
    log = workdir / "postgres.log"
    os.chown(workdir, uid, gid)
    init = subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            *_pairs({"-D": str(data), "-U": "postgres", "-E": "UTF8"}),
            "--auth=trust",
            "--no-sync",
        ],
        capture_output=True,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
    port = free_port()
    with log.open("wb") as out:
        os.chown(log, uid, gid)
        proc = subprocess.Popen(
            [
                *prefix,
                str(bindir / "postgres"),
                *_pairs({"-D": str(data), "-k": str(workdir), "-p": str(port)}),
                "-c",
                "listen_addresses=127.0.0.1",
                # A throwaway cluster: durability buys nothing here.
                *("-c", "fsync=off", "-c", "synchronous_commit=off"),
                *("-c", "full_page_writes=off", "-c", "max_connections=200"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, "postgres", log)
        ready = bindir / "pg_isready"
        deadline = time.monotonic() + 30.0
        while (
            subprocess.run(
                [str(ready), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
                capture_output=True,
                check=False,
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"postgres did not become ready: {_tail(log)}")
            time.sleep(0.1)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
