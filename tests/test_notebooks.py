"""The tutorial notebooks run top to bottom, headless, and their plain-text (jupytext) twins stay in sync.

Each notebook is copied to a temporary directory and executed there with nbclient (kernel ``python3``,
``MPLBACKEND=Agg``, one thread, the repository on ``PYTHONPATH``), so it writes nothing into the checkout. The
notebooks' own ``assert`` cells check real numbers (law errors, closed-form flows, Jacobians against dense
``torch.func`` Jacobians), so a library regression fails the notebook. About a minute per notebook on one core;
under pytest-xdist the notebooks are independent test items (each starts its own kernel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
IDS = [p.stem for p in NOTEBOOKS]
CELL_TIMEOUT = 300  # seconds per cell; generous for a loaded 2-core CI machine
KERNEL = "python3"


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _ensure_kernel() -> str:
    """The ``python3`` kernel spec; installed for the current user (from this interpreter) if missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", KERNEL], check=True,
                       capture_output=True)
    return KERNEL


def test_at_least_three_tutorials():
    names = [p.name for p in NOTEBOOKS]
    assert len(NOTEBOOKS) >= 3, names
    assert (NOTEBOOK_DIR / "README.md").exists()
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    for p in NOTEBOOKS:
        assert p.name in readme, f"notebooks/README.md does not describe {p.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_stored_without_outputs(path: Path):
    nb = _read(path)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: cell {i} has stored outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_jupytext_pair_in_sync(path: Path):
    """Where a ``.py`` (percent format) twin exists, it holds exactly the notebook's cells."""
    twin = path.with_suffix(".py")
    if not twin.exists():
        pytest.skip(f"{path.name} has no jupytext twin")
    jupytext = pytest.importorskip("jupytext")
    text = jupytext.read(twin)
    nb = _read(path)
    cells_py = [(c.cell_type, c.source) for c in text.cells]
    cells_nb = [(c.cell_type, c.source) for c in nb.cells]
    assert cells_py == cells_nb, (f"{path.name} and {twin.name} differ; run "
                                  f"`jupytext --sync notebooks/{twin.name}` (or --to ipynb) and clear outputs")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    kernel = _ensure_kernel()
    work = tmp_path / "nb"
    work.mkdir()
    copy = work / path.name
    shutil.copy(path, copy)
    # the kernel inherits this environment: headless plots, one thread, the checkout importable, temp files here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = _read(copy)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError naming the failing cell (an assert cell: a regression)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} produced no figure"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
