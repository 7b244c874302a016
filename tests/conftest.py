"""Shared fixtures: a local RunComfy (the emulator) on a real loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from runcomfy_async.emulator import Emulator

#: Generation times in tests: a 100 s clip takes 0.1 s.
TEST_TIME_SCALE = 0.001


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A running emulator with default settings, time scaled by ``TEST_TIME_SCALE``."""
    async with Emulator(time_scale=TEST_TIME_SCALE) as emu:
        yield emu


@pytest.fixture
async def make_emulator() -> AsyncIterator[Callable[..., Awaitable[Emulator]]]:
    """A factory of running emulators (``await make_emulator(workers=1, faults=...)``).

    Takes :class:`Emulator`'s keyword arguments (``time_scale`` defaults to
    ``TEST_TIME_SCALE``); every emulator it made is closed after the test.
    """
    made: list[Emulator] = []

    async def make(**options: Any) -> Emulator:
        options.setdefault("time_scale", TEST_TIME_SCALE)
        emu = Emulator(**options)
        made.append(emu)
        await emu.start()
        return emu

    yield make
    for emu in reversed(made):
        await emu.close()
