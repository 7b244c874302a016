"""The command line's grammar: every command and option, with help and examples."""

from __future__ import annotations

import argparse
from typing import Any

from .._version import __version__
from ._common import EMULATOR_TIME_SCALE

__all__ = ["build_parser"]

_EPILOG_BATCH = """\
manifest (JSON Lines, one job a line; "id" optional):
  {"id": "fox-01", "model": "kling/kling-3.0/pro/text-to-video",
   "input": {"prompt": "a red fox in fresh snow", "duration": 5}}
or CSV with a header row: id,model,prompt,start_image_url,duration,...

examples:
  runcomfy-async batch examples/showcase.jsonl --emulator --out clips/
  runcomfy-async batch clips.jsonl --out clips/ --dry-run
  runcomfy-async batch clips.jsonl --out clips/ --max-cost 50 --concurrency 8
  runcomfy-async batch clips.csv --out clips/ --ignore-columns notes --skip-invalid
  runcomfy-async batch clips.jsonl --out clips/ --dry-run --price acme/video=0.05

A URI field (start_image_url, ...) may name a local image or video, relative to
the manifest's folder: it is sent inline (a data: URI) and recorded by path.

Rerun the same command after a crash or Ctrl-C: accepted jobs are resumed, never
resubmitted, and saved files are not downloaded again. A job whose submit may or
may not have reached the server is reported as outcome_unknown; after checking
your dashboard, pass --adopt ID=REQUEST_ID for the ones it shows and
--resubmit-unknown for the rest.
"""


_EPILOG_MAIN = """\
examples:
  runcomfy-async batch examples/showcase.jsonl --emulator --out clips/
  runcomfy-async batch clips.jsonl --out clips/ --dry-run
  runcomfy-async run kling/kling-3.0/pro/text-to-video --input '{"prompt": "a red fox"}'
  runcomfy-async submit kling/kling-3.0/pro/text-to-video --input @fox.json
  runcomfy-async status REQUEST_ID
  runcomfy-async emulator --port 8000 --time-scale 0.01

Run 'runcomfy-async COMMAND --help' for a command's options. Exit status: 0 all
succeeded, 1 some jobs failed (or the API refused), 2 usage, manifest or cost
limit error, 130 interrupted.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _usd(text: str) -> float:
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount in USD, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative amount, got {text!r}")
    return value


def _adopt(text: str) -> tuple[str, str]:
    job_id, sep, request_id = text.partition("=")
    if not sep or not job_id or not request_id:
        raise argparse.ArgumentTypeError(f"expected ID=REQUEST_ID, got {text!r}")
    return job_id.strip(), request_id.strip()


# -- inputs, prices and the catalog (h-inputs2) ------------------------------------


def _price(text: str) -> tuple[str, float]:
    model, sep, usd = text.rpartition("=")
    if not sep or not model.strip():
        raise argparse.ArgumentTypeError(f"expected MODEL=USD_PER_SECOND, got {text!r}")
    return model.strip(), _usd(usd.strip())


def _columns(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got {text!r}")
    return names


def _add_input_options(p: argparse.ArgumentParser) -> None:
    """The batch options that say how lines are checked, priced and paid for."""
    p.add_argument(
        "--no-validate", action="store_true",
        help="do not check inputs against the models' schemas (only that they are JSON)",
    )  # fmt: skip
    p.add_argument(
        "--allow-unknown-fields", action="store_true",
        help="send input fields a model's schema does not list",
    )  # fmt: skip
    p.add_argument(
        "--skip-invalid", action="store_true",
        help="submit the valid lines, list the bad ones with their line numbers, exit 1",
    )  # fmt: skip
    p.add_argument(
        "--ignore-columns", type=_columns, action="append", default=[], metavar="A,B",
        help="CSV columns that are not inputs, e.g. notes (or a first line '# ignore: A,B')",
    )  # fmt: skip
    p.add_argument(
        "--price", type=_price, action="append", default=[], metavar="MODEL=USD_PER_SECOND",
        help="price of a model without a known one, for estimates and --max-cost (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--prices", metavar="FILE",
        help='JSON file of prices: {"MODEL": USD_PER_SECOND or [USD, USD_WITH_AUDIO], ...}',
    )  # fmt: skip
    p.add_argument(
        "--force", action="store_true",
        help="start even if the estimate is above the account's balance",
    )  # fmt: skip


def _add_models_command(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """``runcomfy-async models list|get|categories``: RunComfy's model catalog."""
    p = sub.add_parser(
        "models",
        help="list the model catalog, show one model, or its categories",
        description="RunComfy's model catalog: every model with its price and input schema.",
        epilog="examples:\n  runcomfy-async models list --search kling\n"
        "  runcomfy-async models get kling/kling-3.0/pro/text-to-video\n"
        "  runcomfy-async models categories --json\n"
        "  runcomfy-async models list --emulator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_subparsers(dest="models_command", metavar="WHAT", required=True)
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    parents = [*parents, json_flag]
    q = what.add_parser("list", parents=parents, help="models, filtered")
    q.add_argument("--search", metavar="TEXT", help="match in id or name")
    q.add_argument("--category", metavar="NAME", help="only this category")
    q.add_argument("--kind", metavar="KIND", help="only this kind (e.g. video, image)")
    q = what.add_parser("get", parents=parents, help="one model, with its input schema")
    q.add_argument("model", metavar="MODEL", help="model id")
    what.add_parser("categories", parents=parents, help="the category names")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every command, its options, help and examples."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and logs"
    )
    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $RUNCOMFY_BASE_URL, else the public API)",
    )
    emu = argparse.ArgumentParser(add_help=False)
    emu.add_argument(
        "--emulator",
        action="store_true",
        help="run against an emulator started in this process (no token, no network)",
    )
    emu.add_argument(
        "--time-scale",
        type=_positive_float,
        metavar="X",
        help=f"generation time factor of the emulator (default {EMULATOR_TIME_SCALE} with "
        "--emulator); with --base-url, the scale of an emulator you started yourself",
    )

    parser = argparse.ArgumentParser(
        prog="runcomfy-async",
        description="Generate Kling 3.0 clips with RunComfy's Model API, one or thousands at "
        "a time. The token is read from RUNCOMFY_API_TOKEN.",
        epilog=_EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"runcomfy-async {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "batch",
        parents=[common, api, emu],
        help="run (or resume) every job of a manifest into a directory",
        description="Run every job of a manifest (JSON Lines or CSV), journaled in --out so "
        "that rerunning the same command resumes.",
        epilog=_EPILOG_BATCH,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("manifest", metavar="MANIFEST", help="a .jsonl or .csv manifest")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--concurrency", "-c", type=_positive_int, default=16, metavar="N",
        help="jobs in flight at once (default 16)",
    )  # fmt: skip
    p.add_argument(
        "--download-concurrency", type=_positive_int, default=8, metavar="N",
        help="files downloading at once (default 8)",
    )  # fmt: skip
    p.add_argument(
        "--dry-run", action="store_true",
        help="check every line and print the estimated cost; submit nothing",
    )  # fmt: skip
    p.add_argument(
        "--max-cost", type=_usd, metavar="USD",
        help="refuse to start if this run is estimated to cost more",
    )  # fmt: skip
    p.add_argument(
        "--no-progress", action="store_true",
        help="plain periodic log lines instead of a progress bar",
    )  # fmt: skip
    p.add_argument(
        "--resubmit-unknown", action="store_true",
        help="submit again jobs whose earlier submit has an unknown outcome (may pay twice)",
    )  # fmt: skip
    p.add_argument(
        "--adopt", type=_adopt, action="append", default=[], metavar="ID=REQUEST_ID",
        help="a job of unknown outcome that you found on your dashboard: track that request "
        "(repeatable)",
    )  # fmt: skip
    p.add_argument("--retry-failed", action="store_true", help="submit failed jobs again")
    p.add_argument(
        "--cancel-on-interrupt", action="store_true",
        help="on Ctrl-C, cancel the jobs still queued without asking",
    )  # fmt: skip
    p.add_argument(
        "--job-timeout", type=_positive_float, metavar="SECONDS",
        help="stop waiting for a job after this long (a rerun resumes it)",
    )  # fmt: skip
    p.add_argument(
        "--requests-per-second", type=_positive_float, metavar="R",
        help="API request budget (default 20; unlimited with --emulator)",
    )  # fmt: skip
    # -- a fleet: one journal in PostgreSQL shared by runners on any machines --
    p.add_argument(
        "--journal", metavar="postgresql://...",
        help="keep the journal in PostgreSQL: every runner given the same URL and batch key "
        "drains the batch together, and --concurrency is the fleet's in-flight cap "
        "(default: SQLite in --out; needs the [postgres] extra)",
    )  # fmt: skip
    p.add_argument(
        "--batch-key", metavar="KEY",
        help="names the batch in a --journal database (default: the manifest's file name)",
    )  # fmt: skip
    p.add_argument(
        "--lease", type=_positive_float, default=30.0, metavar="SECONDS",
        help="with --journal: how long a runner that stopped keeps its jobs before the "
        "others take them over (default 30)",
    )  # fmt: skip
    _add_input_options(p)

    for name, helptext in (
        ("run", "submit one job, wait for it, download its output"),
        ("submit", "submit one job and print its request id"),
    ):
        p = sub.add_parser(
            name,
            parents=[common, api] + ([emu] if name == "run" else []),
            help=helptext,
            description=helptext[0].upper() + helptext[1:] + ".",
            epilog="example:\n  runcomfy-async "
            + name
            + ' kling/kling-3.0/pro/text-to-video --input \'{"prompt": "a red fox"}\'',
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("model", metavar="MODEL", help="model id")
        p.add_argument(
            "--input", "-i", required=True, metavar="JSON|@FILE",
            help="the input object as JSON, or @path of a JSON file (@- for stdin)",
        )  # fmt: skip
        if name == "run":
            p.add_argument("--out", "-o", default=".", metavar="DIR", help="where to save")
            p.add_argument(
                "--timeout", type=_positive_float, metavar="SECONDS",
                help="stop waiting after this long (the job keeps running)",
            )  # fmt: skip
            p.add_argument("--no-download", action="store_true", help="print the output URLs only")

    _add_models_command(sub, [common, api, emu])
    # -- report (gallery) ------------------------------------------------------------
    p = sub.add_parser(
        "report",
        parents=[common],
        help="(re)write a batch's report.html from its journal",
        description="Write DIR/report.html, the page of a batch's clips, filters and timeline, "
        "from the journal in DIR: works for a finished batch, an interrupted one, or one "
        "killed halfway. Prints the page's path. Makes no request.",
        epilog="example:\n  runcomfy-async report clips/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dir", metavar="DIR", help="the batch's output directory (its --out)")
    p.add_argument("--uri", action="store_true", help="print a file:// URI to open in a browser")
    # -- end of report ------------------------------------------------------------------

    p = sub.add_parser("status", parents=[common, api], help="print a request's state")
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p = sub.add_parser("result", parents=[common, api], help="print a request's result as JSON")
    p.add_argument("request_id", metavar="REQUEST_ID")
    p.add_argument("--include-cost", action="store_true", help="ask for the cost (USD)")
    p = sub.add_parser("cancel", parents=[common, api], help="cancel a queued request")
    p.add_argument("request_id", metavar="REQUEST_ID")
    # The emulator parses its own options: argparse hands it the rest of the line.
    p = sub.add_parser(
        "emulator",
        help="serve a local RunComfy emulator (see 'runcomfy-async emulator --help')",
        add_help=False,
        prefix_chars="\0",  # no option of its own: '--help' and the rest are the emulator's
    )
    p.add_argument("emulator_args", nargs=argparse.REMAINDER)
    return parser
