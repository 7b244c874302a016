"""A local RunComfy Model API, for tests, benchmarks, demos and offline development.

``Emulator`` runs two real aiohttp servers on loopback: the API origin (the
four routes, bearer auth, per-token queues and worker pools, both status
vocabularies, injectable :class:`Faults`) and a storage origin serving each
finished job's output as a small real MP4. Time is scaled, so a two-minute
generation can take a tenth of a second::

    async with Emulator(time_scale=0.001) as emu:
        ...  # point a client at emu.base_url with token emu.token

Its defaults are the documented API; quirks (other status spellings, random
or LIFO queues, sporadic 429s, an account's concurrency limit) are options.

From a shell: ``runcomfy-async emulator --port 8000`` (or ``python -m
runcomfy_async.emulator``); ``--help`` lists the options.
"""

from ._catalog import SyntheticModel
from ._cli import main, serve
from ._config import (
    DISTRIBUTIONS,
    KLING_PRO_T2V,
    KLING_STANDARD_I2V,
    Distribution,
    ModelProfile,
    default_models,
)
from ._counters import Counters
from ._faults import ROUTES, Faults
from ._jobs import (
    ALT_SPELLING_RATE,
    QUEUE_DISCIPLINES,
    VOCABULARIES,
    Job,
    JobState,
    QueueDiscipline,
    Vocabulary,
)
from ._media import make_mp4
from ._server import Emulator

__all__ = [
    "ALT_SPELLING_RATE",
    "DISTRIBUTIONS",
    "KLING_PRO_T2V",
    "KLING_STANDARD_I2V",
    "QUEUE_DISCIPLINES",
    "ROUTES",
    "VOCABULARIES",
    "Counters",
    "Distribution",
    "Emulator",
    "Faults",
    "Job",
    "JobState",
    "ModelProfile",
    "QueueDiscipline",
    "SyntheticModel",
    "Vocabulary",
    "default_models",
    "main",
    "make_mp4",
    "serve",
]
