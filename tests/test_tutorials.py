"""Execute every tutorial notebook under ``tutorials/`` (shown in the docs as ``docs/tutorials``) in its fast setting.

The notebooks read ``BIOJEPA_TUTORIAL_FAST=1`` to train for a few epochs only. Each one is executed in memory, in
an empty working directory, with a kernel running this interpreter; its committed file is never written to.
"""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import biojepa as bj

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))

# Appended to the executed copy: report the kernel's interpreter, to check it is the one running the tests.
_PROBE = "import sys\nprint(sys.executable)"


def _stream_text(nb) -> list[str]:
    return [
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type == "stream"
    ]


def test_tutorials_exist():
    assert NOTEBOOKS, f"no notebooks under {TUTORIALS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    # A kernelspec naming this interpreter explicitly, found first through JUPYTER_PATH (nothing registered
    # globally), so the kernel is this environment's Python even where another "python3" kernel is installed.
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # The kernel inherits the environment: the fast setting, and one thread for torch and for numba (UMAP). On a
    # busy machine, multi-threaded torch can run tens of times slower (threads spinning at barriers while one of
    # them is descheduled, worse once numba's OpenMP threads exist), which would make this test's time erratic.
    monkeypatch.setenv("BIOJEPA_TUTORIAL_FAST", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")

    workdir = tmp_path / "run"
    workdir.mkdir()
    nb = nbformat.read(path, as_version=4)  # an in-memory copy; the file is never written back
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}).execute()

    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert not errors, errors
    streams = _stream_text(nb)
    assert any(f"biojepa {bj.__version__}" in text for text in streams), streams[:3]
    assert streams[-1].strip() == sys.executable
    leftovers = sorted(p.name for p in workdir.iterdir())
    assert not leftovers, f"{path.name} left files behind: {leftovers}"
