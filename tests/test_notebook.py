"""``examples/quickstart.ipynb`` runs headless, top to bottom, with top-level ``await``.

The notebook starts its own emulator, so this runs offline. The kernel is this
very interpreter (a kernelspec written to a temporary directory), so the test
works on a fresh machine where only ``pip install -e .[dev]`` ran, whatever
kernels the user has installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"
KERNEL_NAME = "runcomfy-async-test"
CELL_TIMEOUT = 60


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec running ``sys.executable -m ipykernel_launcher``, found via JUPYTER_PATH."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "runcomfy-async tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # Quiet jupyter_core's notice about moving to platformdirs (a DeprecationWarning,
    # which this project's pytest settings turn into an error).
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    # The kernel must not pick up a real account from the developer's shell.
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    monkeypatch.delenv("RUNCOMFY_BASE_URL", raising=False)
    return KERNEL_NAME


@pytest.fixture
def executed(kernel_name: str, tmp_path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> list[dict[str, Any]]:
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def test_the_notebook_is_valid_and_saved_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    source = "\n".join(cell.source for cell in code)
    assert "await " in source  # top-level await, no asyncio.run
    assert "asyncio.run" not in source and "nest_asyncio" not in source


def test_the_notebook_runs_without_errors_and_shows_the_clips(
    executed: nbformat.NotebookNode,
) -> None:
    outputs = _outputs(executed)
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert errors == [], [f"{o['ename']}: {o['evalue']}" for o in errors]
    videos = [
        o["data"]["text/html"]
        for o in outputs
        if o["output_type"] in ("execute_result", "display_data") and "text/html" in o["data"]
    ]
    assert any("<video" in html for html in videos)
    # One clip shown on its own, then the four clips of the batch.
    assert sum(html.count("<video") for html in videos) == 5
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "succeeded" in text
    assert "failed:" not in text
