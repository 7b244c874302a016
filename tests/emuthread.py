"""An emulator on its own event loop in a daemon thread, for tests.

The test's loop then runs only the client and the test, so "no task left
pending" can be checked exactly, and the server's timing does not depend on
how busy the client keeps its loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from runcomfy_async.emulator import Emulator

T = TypeVar("T")


class ThreadedEmulator:
    """An :class:`Emulator` serving from its own event loop in a daemon thread.

    The test's loop then runs only the client and the test, so "no task left
    pending" can be checked exactly, and the server's timing does not depend
    on how busy the client keeps its loop.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.emu: Emulator

    def __enter__(self) -> ThreadedEmulator:
        self._thread.start()

        async def start() -> Emulator:
            emu = Emulator(**self._options)
            await emu.start()
            return emu

        self.emu = self.call(start())
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self.emu.close()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self._loop.shutdown_asyncgens()

        try:
            self.call(stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run ``coro`` on the emulator's loop and block for its result (setup only)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the emulator's loop and await its result."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    @property
    def counters(self) -> dict[str, int]:
        return self.emu.counters.as_dict()
