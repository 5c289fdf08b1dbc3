"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel, on the Python running the tests.

The committed notebooks are never rewritten: each test executes an in-memory copy. The kernel is started from a
kernelspec written to a temporary folder for `sys.executable`, so the test needs no kernelspec installed on the
machine (CI's fresh venv has none registered globally) and cannot pick up some other Python's kernel.
"""
import json
import os
import sys
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402 — only once nbclient is known to be there
from jupyter_client.manager import KernelManager  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK_PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))
KERNEL_NAME = "flux-tests"
CELL_TIMEOUT = 300  # seconds; a cell that compiles a model's kernels for the first time takes a few


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec for THIS interpreter, in a folder of its own."""
    folder = tmp_path_factory.mktemp("kernels") / KERNEL_NAME
    folder.mkdir()
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} (flux tests)",
            "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(folder.parent)])


def execute(path: Path, kernel_specs: KernelSpecManager, extra_code: str | None = None):
    """Run a copy of the notebook at `path` (cwd = notebooks/) and return the executed copy."""
    notebook = nbformat.read(path, as_version=4)
    if extra_code is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(extra_code))
    manager = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=kernel_specs)
    # The kernel inherits os.environ; name the kernel cache explicitly so notebooks share the tests' compiled kernels.
    environment = dict(os.environ, FLUX_CACHE_DIR=os.environ["FLUX_CACHE_DIR"],
                       MPLBACKEND="module://matplotlib_inline.backend_inline")  # PNG outputs, whatever the machine says
    client = nbclient.NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT, kernel_name=KERNEL_NAME,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute(env=environment)  # raises CellExecutionError, naming the cell, on any error
    return notebook


def test_there_are_the_tutorial_notebooks():
    names = [p.name for p in NOTEBOOK_PATHS]
    assert names[:5] == ["01_derived_gradients.ipynb", "02_mlp_digits.ipynb", "03_recurrence.ipynb",
                         "04_your_own_layer.ipynb", "05_attention.ipynb"], names


@pytest.mark.parametrize("path", [p for p in NOTEBOOK_PATHS if p.name != "02_mlp_digits.ipynb"], ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, kernel_specs):
    execute(path, kernel_specs)


def test_digits_notebook_runs_and_flux_matches_the_baseline(kernel_specs):
    """The MLP on scikit-learn's 8×8 digits reaches at least the accuracy of the same MLP trained the same way in NumPy."""
    report = "import json; print('FIGURES', json.dumps({'flux': float(flux_accuracy), 'numpy': float(numpy_accuracy)}))"
    notebook = execute(NOTEBOOKS / "02_mlp_digits.ipynb", kernel_specs, extra_code=report)
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs if o.output_type == "stream")
    figures = json.loads(printed.split("FIGURES", 1)[1])
    assert figures["flux"] >= 0.95, figures
    # same initial weights, batches and Adam: the same trajectory, so the same figure (±1 of 540 test images for
    # float32 rounding flipping one borderline prediction)
    assert figures["flux"] >= figures["numpy"] - 1 / 540, figures
