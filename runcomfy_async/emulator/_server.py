"""The :class:`Emulator`: a local RunComfy on two loopback origins, its lifecycle and outages."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Collection, Mapping
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from ._api import ApiOrigin, Route
from ._catalog import DEFAULT_BALANCE_USD, EmulatorCatalog, SyntheticModel
from ._config import ModelProfile, default_models
from ._counters import Counters
from ._faults import FaultInjector, Faults
from ._jobs import ALT_SPELLING_RATE, Job, JobBoard, QueueDiscipline, Vocabulary
from ._storage import StorageOrigin

__all__ = ["Emulator"]

_SHUTDOWN_TIMEOUT = 1.0
_REBIND_ATTEMPTS = 40
_REBIND_PAUSE = 0.05

_State = Literal["unopened", "open", "closed"]


class Emulator:
    """A local RunComfy Model API: real aiohttp servers on loopback, not a mock.

    Use it as ``async with Emulator(time_scale=0.01) as emu:`` (or ``await
    emu.start()`` ... ``await emu.close()``). It serves the four API routes at
    ``emu.base_url`` with bearer auth, one queue and ``workers`` parallel
    jobs per token, generation times drawn from each model's
    :class:`ModelProfile` times ``time_scale``, and the outputs as small real
    MP4 files from a second origin, ``emu.storage_url``. :class:`Faults`
    injects failures; ``emu.counters`` counts everything; ``emu.jobs`` records
    every job (see :class:`Job`).

    Its defaults are the documented API (``../spec/model-api.md``); every
    quirk of servers in the wild is an opt-in option. Arguments (all
    keyword-only and optional):

    - ``token``: the bearer token accepted, or a collection of them (one
      account, i.e. one queue and worker pool, per token);
    - ``time_scale``: multiplies every drawn generation time (tests: 0.001).
      A client's timing must know it: ``PollPolicy(time_scale=...)``;
    - ``workers``: jobs that run at once per token; more are queued;
    - ``seed``: ``None`` (default) gives random request ids (uuid4), unique
      across emulator lives. An explicit seed makes the ids repeat run to run
      (benchmarks). Durations, queue order and the vocabulary choice are
      always seeded, by ``seed`` or 0 without one; faults by ``Faults.seed``,
      else by ``seed`` or 0;
    - ``faults``: the faults to inject (none by default). ``Faults(rate_429=p)``
      answers a share ``p`` of requests with a sporadic 429 and
      ``Retry-After: 1``; ``Faults(rps_limit=r)`` is a real per-token rate
      limit (a token bucket) that 429s only the requests beyond it;
    - ``models``: model profiles by id, merged over the defaults (the two
      Kling 3.0 models); submits are validated for every model with a spec
      (the bundled Kling specs and ``catalog_models``), others pass unvalidated.
      A profile's ``distribution`` is uniform, lognormal, bimodal or fixed
      (``ModelProfile.lognormal(90, 0.6)``, ``ModelProfile.uniform(1, 4)``
      for an unseen fast model...);
    - ``host``, ``port``, ``storage_port``: where to listen (port 0: any free);
    - ``vocabulary``: ``"documented"`` (default) answers the status route in
      ``in_queue``, ``in_progress``, ``completed``, ``cancelled`` (``failed``
      for a failed job) and the result route in ``in_queue``,
      ``in_progress``, ``succeeded``, ``failed``, ``cancelled``. Quirks:
      ``"mixed"`` answers a share ``alt_spelling_rate`` of jobs (chosen per
      job, seeded) with ``succeeded`` on the status route and ``canceled``;
      ``"wild"`` does that and also says ``pending`` / ``waiting`` while
      queued and ``starting`` / ``processing`` while running;
    - ``alt_spelling_rate``: that share, 0.3 by default;
    - ``queue``: the order an account's queued jobs start in: ``"fifo"``
      (default), ``"random"`` or ``"lifo"``. ``queue_position`` counts the
      jobs that will start first, except under ``"random"``, where it is the
      position by arrival (a server whose positions say nothing about order);
    - ``max_jobs_per_token``: a per-account concurrency limit, as the Kling
      provider has: a submit while the token has that many jobs queued or
      running is refused with 429 (no job created). ``None`` (default): no
      limit. ``emu.counters`` tracks the most jobs per token at once.
    - ``catalog_models``: extra :class:`SyntheticModel` entries (schema and
      price) the catalog routes list besides the package's bundled specs;
    - ``balance_usd``: what the balance route answers (``emu.catalog.balance_usd``;
      10,000 USD by default, so only a test that asks meets the balance check);
    - ``echo_model_id``: add each request's ``model_id`` to its status and
      result answers (not in the documented answers; a client can then tell
      a request id reused for another job, e.g. by a seeded emulator).
    """

    def __init__(
        self,
        *,
        token: str | Collection[str] = "emulator-token",
        time_scale: float = 1.0,
        workers: int = 8,
        seed: int | None = None,
        faults: Faults | None = None,
        models: Mapping[str, ModelProfile] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_port: int = 0,
        vocabulary: Vocabulary = "documented",
        alt_spelling_rate: float = ALT_SPELLING_RATE,
        queue: QueueDiscipline = "fifo",
        max_jobs_per_token: int | None = None,
        catalog_models: Collection[SyntheticModel] = (),
        balance_usd: float = DEFAULT_BALANCE_USD,
        echo_model_id: bool = False,
    ) -> None:
        tokens = (token,) if isinstance(token, str) else tuple(token)
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise ValueError("token must be a non-empty string or a collection of them")
        if max_jobs_per_token is not None and max_jobs_per_token < 1:
            raise ValueError(f"max_jobs_per_token must be >= 1 or None, got {max_jobs_per_token!r}")
        draws = 0 if seed is None else seed
        self._tokens = tokens
        self._host = host
        self._port = port
        self._storage_port = storage_port
        self.seed = seed
        self.vocabulary = vocabulary
        self.counters = Counters()
        self._injector = FaultInjector(faults or Faults(), seed=draws, counters=self.counters)
        self._board = JobBoard(
            # a synthetic catalog model can be run too (its own profile wins)
            models={
                **default_models(),
                **{m.model_id: m.profile for m in catalog_models},
                **(models or {}),
            },
            workers=workers,
            time_scale=time_scale,
            seed=draws,
            id_seed=seed,
            vocabulary=vocabulary,
            alt_spelling_rate=alt_spelling_rate,
            queue=queue,
            counters=self.counters,
            job_fails=self._injector.job_fails,
        )
        self._closing = asyncio.Event()
        # catalog and balance routes (emulator/_catalog.py); its registry validates submits
        self.catalog = EmulatorCatalog(extra_models=catalog_models, balance_usd=balance_usd)
        self._api = ApiOrigin(
            board=self._board,
            injector=self._injector,
            counters=self.counters,
            tokens=frozenset(tokens),
            closing=self._closing,
            max_jobs_per_token=max_jobs_per_token,
            registry=self.catalog.registry,
            echo_model_id=echo_model_id,
        )
        self._storage = StorageOrigin(
            board=self._board, injector=self._injector, counters=self.counters
        )
        self._state: _State = "unopened"
        self._api_runner: web.AppRunner | None = None
        self._storage_runner: web.AppRunner | None = None
        self._api_site: web.TCPSite | None = None
        self._bound_port: int | None = None
        self._restore_task: asyncio.Task[None] | None = None

    # -- what tests and benchmarks read ---------------------------------------------

    @property
    def token(self) -> str:
        """The bearer token the emulator accepts (the first, when given several)."""
        return self._tokens[0]

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every bearer token the emulator accepts, one account each."""
        return self._tokens

    @property
    def base_url(self) -> str:
        """The API origin, e.g. ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return self._bound("base_url", self._api.base_url)

    @property
    def storage_url(self) -> str:
        """The storage origin the outputs are served from (a different port)."""
        return self._bound("storage_url", self._api.storage_url)

    @property
    def jobs(self) -> Mapping[str, Job]:
        """Every job created so far, by request id (live)."""
        return self._board.jobs

    def job(self, request_id: str) -> Job:
        """The job with ``request_id``; raises ``KeyError`` if there is none."""
        return self._board.jobs[request_id]

    @property
    def faults(self) -> Faults:
        """The live fault configuration; change its attributes or assign a new one."""
        return self._injector.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._injector.faults = faults

    @property
    def time_scale(self) -> float:
        """Multiplier of every drawn generation time; a change applies to jobs starting later."""
        return self._board.time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"time_scale must be >= 0, got {value!r}")
        self._board.time_scale = value

    @property
    def queue(self) -> QueueDiscipline:
        """The order queued jobs start in: ``fifo``, ``random`` or ``lifo``."""
        return self._board.discipline

    @property
    def max_jobs_per_token(self) -> int | None:
        """The per-account concurrency limit (queued + running), or None."""
        return self._api.max_jobs_per_token

    def active(self, token: str | None = None) -> int:
        """Jobs queued or running right now for ``token`` (default: the first token)."""
        return self._board.active(self.token if token is None else token)

    @property
    def workers(self) -> int:
        """How many jobs run at once per token."""
        return self._board.workers

    @property
    def models(self) -> Mapping[str, ModelProfile]:
        """The model profiles served, by model id."""
        return self._board.models

    @property
    def in_queue(self) -> int:
        """Jobs queued right now, all tokens together."""
        return self._board.queued

    @property
    def in_progress(self) -> int:
        """Jobs running right now, all tokens together."""
        return self._board.running

    @property
    def offline(self) -> bool:
        """Whether the API origin is refusing connections (during an :meth:`outage`)."""
        return self._api_site is None and self._state == "open"

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start both servers. An emulator starts once; a closed one cannot be reopened."""
        if self._state != "unopened":
            raise RuntimeError(f"cannot start an emulator that is {self._state}")
        self._state = "open"
        try:
            self._storage_runner = await self._setup(self._storage.make_app())
            storage_site = web.TCPSite(self._storage_runner, self._host, self._storage_port)
            await storage_site.start()
            api_app = self._api.make_app(self._routes())
            self.catalog.add_routes(api_app, self._api._authenticate)
            self._api_runner = await self._setup(api_app)
            self._api_site = web.TCPSite(self._api_runner, self._host, self._port)
            await self._api_site.start()
        except BaseException:
            await self.close()
            raise
        self._bound_port = self._api_site.port
        self._api.base_url = self._origin(self._bound_port)
        self._api.storage_url = self._origin(storage_site.port)

    async def close(self) -> None:
        """Stop everything the emulator started: timers, the restore task, both servers."""
        if self._state == "closed":
            return
        self._state = "closed"
        self._closing.set()  # wakes delayed answers, so the servers' shutdown is quick
        await self._cancel_restore()
        for runner in (self._api_runner, self._storage_runner):
            if runner is not None:
                await runner.cleanup()
        self._api_site = None
        self._board.close()  # last: no handler is left to start a job

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "_state", None) == "open":
            _warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)

    def __repr__(self) -> str:
        where = f" {self._api.base_url}" if self._api.base_url else ""
        return (
            f"<Emulator {self._state}{where} jobs={len(self._board.jobs)} "
            f"in_queue={self._board.queued} in_progress={self._board.running} "
            f"time_scale={self._board.time_scale} workers={self._board.workers}>"
        )

    # -- outages ----------------------------------------------------------------------

    async def outage(self, seconds: float | None = None, *, wait: bool = False) -> None:
        """Make the API origin refuse connections, as during a restart.

        Stops listening and closes every open connection (idle keep-alive ones
        too) at once. After ``seconds`` the origin listens again on the same
        port: in the background, or before returning when ``wait`` is true.
        With ``seconds=None`` it stays down until :meth:`restore`. Jobs keep
        running meanwhile, and the storage origin stays up.
        """
        self._require_started()
        await self._cancel_restore()
        if self._api_site is not None:
            site, self._api_site = self._api_site, None
            await site.stop()
            assert self._api_runner is not None and self._api_runner.server is not None
            for connection in self._api_runner.server.connections:
                connection.force_close()
            self.counters.outages += 1
        if seconds is None:
            return
        if wait:
            await asyncio.sleep(seconds)
            await self.restore()
        else:
            self._restore_task = asyncio.create_task(self._restore_later(seconds))

    async def restore(self) -> None:
        """End an outage: listen again on the same port (a no-op when not in an outage)."""
        self._require_started()
        if self._restore_task is not asyncio.current_task():
            await self._cancel_restore()
        if self._api_site is not None:
            return
        assert self._api_runner is not None and self._bound_port is not None
        for attempt in range(_REBIND_ATTEMPTS):
            site = web.TCPSite(self._api_runner, self._host, self._bound_port)
            try:
                await site.start()
            except OSError:
                await site.stop()
                if attempt + 1 == _REBIND_ATTEMPTS:
                    raise
                await asyncio.sleep(_REBIND_PAUSE)
            else:
                self._api_site = site
                return

    async def _restore_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.restore()

    async def _cancel_restore(self) -> None:
        task, self._restore_task = self._restore_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- helpers ----------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        """The API origin's route table: ``(method, path, counter name, handler)`` rows.

        Each handler takes the request and the authenticated token. To serve a
        new route, append a row here; it gets the same auth, counting and
        (when its name is in ``Faults.routes``) faults as the four API routes.
        """
        routes = self._api.routes()
        return routes

    async def _setup(self, app: web.Application) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        return runner

    def _origin(self, port: int) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{port}"

    def _bound(self, name: str, url: str) -> str:
        if not url:
            raise RuntimeError(f"{name} is known once the emulator has started")
        return url

    def _require_started(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"the emulator is {self._state}; start it first")
