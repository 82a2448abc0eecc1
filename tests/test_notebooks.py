"""Every notebook runs top to bottom in a real Jupyter kernel, and the committed copy holds its outputs.

The kernel is ipykernel's ``python3`` started from this interpreter (``nbclient``), with the
repository on ``PYTHONPATH`` so the notebooks import this checkout. To refresh the stored outputs
after editing a notebook: ``python tests/test_notebooks.py`` (executes every notebook in place).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def execute(path: Path) -> nbformat.NotebookNode:
    """Run the notebook in a fresh ``python3`` kernel (cwd: ``notebooks/``); raises on the first failing cell."""
    notebook = nbformat.read(path, as_version=4)
    env_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + env_path if env_path else "")
    try:
        client = NotebookClient(
            notebook,
            timeout=CELL_TIMEOUT_S,
            kernel_name="python3",
            record_timing=False,  # no timestamps in the stored notebooks: re-running changes nothing
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    finally:
        if env_path is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = env_path
    return notebook


def test_notebooks_exist():
    assert {p.name for p in NOTEBOOKS} >= {
        "quickstart.ipynb",
        "ranking.ipynb",
        "aggregation.ipynb",
        "lightning_module.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_in_a_kernel(path: Path):
    notebook = execute(path)  # nbclient raises CellExecutionError with the cell and traceback
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_holds_its_outputs(path: Path):
    """The stored copy was executed top to bottom (so it reads well on GitHub) and stays small."""
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), (
        f"{path.name}: run `python tests/test_notebooks.py` to store fresh outputs"
    )
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert path.stat().st_size < 200_000


if __name__ == "__main__":
    for notebook_path in [Path(arg).resolve() for arg in sys.argv[1:]] or NOTEBOOKS:
        executed = execute(notebook_path)
        nbformat.write(executed, notebook_path)
        print(f"executed and saved {notebook_path.relative_to(ROOT)}")
