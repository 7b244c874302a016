"""A local RunComfy Model API, for tests, benchmarks, demos and offline development.

``Emulator`` runs two real aiohttp servers on loopback: the API origin (the
four routes, bearer auth, per-token queues and worker pools, both status
vocabularies, injectable :class:`Faults`) and a storage origin serving each
finished job's output as a small real MP4. Time is scaled, so a two-minute
generation can take a tenth of a second::

    async with Emulator(time_scale=0.001) as emu:
        ...  # point a client at emu.base_url with token emu.token

From a shell: ``python -m runcomfy_async.emulator --port 8000``.
"""

from ._catalog import SyntheticModel
from ._cli import main, serve
from ._config import KLING_PRO_T2V, KLING_STANDARD_I2V, ModelProfile, default_models
from ._counters import Counters
from ._faults import ROUTES, Faults
from ._jobs import Job, JobState
from ._media import make_mp4
from ._server import Emulator

__all__ = [
    "KLING_PRO_T2V",
    "KLING_STANDARD_I2V",
    "ROUTES",
    "Counters",
    "Emulator",
    "Faults",
    "Job",
    "JobState",
    "ModelProfile",
    "SyntheticModel",
    "default_models",
    "main",
    "make_mp4",
    "serve",
]
