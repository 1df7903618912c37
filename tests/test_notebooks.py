"""Every notebook in notebooks/ runs top to bottom (tiny mode) and is committed without outputs.

The notebooks run in a Jupyter kernel of *this* interpreter: the test writes a ``python3``
kernelspec whose command is ``sys.executable`` into a temporary folder at the front of
``JUPYTER_PATH``, so a ``python3`` kernel installed elsewhere (the user's ``~/.local``, the system)
cannot shadow it. Needs the ``[dev]`` extras (nbclient, nbformat, ipykernel); nothing else.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from helpers import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PROBE = "import sys; print(sys.prefix)"


def test_the_demo_notebook_is_collected() -> None:
    assert ROOT / "notebooks" / "demo.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_no_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        k
        for k, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"
    assert nb.metadata.get("kernelspec", {}).get("name", "python3") == "python3"


@pytest.fixture
def this_python_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A `python3` kernelspec running sys.executable, first on JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "Python 3 (tests)", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("CAPTIONING_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return "python3"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, tmp_path: Path, this_python_kernel: str) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    work = tmp_path / "cwd"
    work.mkdir()
    client = nbclient.NotebookClient(
        nb, kernel_name=this_python_kernel, timeout=600, resources={"metadata": {"path": str(work)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        message = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # no terminal colours
        pytest.fail(f"{path.name}: a cell failed:\n{message[-3000:]}", pytrace=False)
    assert nb.cells[0].outputs[0]["text"].strip() == sys.prefix  # ran in this environment
    errors = [
        o
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.outputs
        if o.output_type == "error"
    ]
    assert not errors
    assert not list(ROOT.joinpath("notebooks").glob("demo_outputs")), "wrote into the repo"
