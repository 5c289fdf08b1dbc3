"""Issue 12, items 1, 5 and 11: a kernel is the maths it was traced from, never a name; forward assigns declared
states only; any valid Python identifier a user picks works in generated code."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import flux
from flux import Chain, Dense
from flux.symbolic import DefinitionError

REPOSITORY = Path(__file__).resolve().parent.parent
x = np.array([[-1.5, 0.5], [2.0, -0.25], [0.3, 0.9]])


def dense_reference(layer, f):
    return f(x @ layer.W.T + layer.b)


# ---- item 1: the kernel's identity is the traced expression ---------------------------------------------

def test_two_lambdas_with_different_maths_get_different_kernels():
    tanh_layer = Dense(2, 2, lambda z: flux.tanh(z), dtype=np.float64, rng=0)
    relu_layer = Dense(2, 2, lambda z: flux.relu(z), dtype=np.float64, rng=0)
    np.testing.assert_allclose(tanh_layer(x), dense_reference(tanh_layer, np.tanh), rtol=1e-12)
    np.testing.assert_allclose(relu_layer(x), dense_reference(relu_layer, lambda z: np.maximum(z, 0)), rtol=1e-12)
    assert (relu_layer(x) == 0).any() and (relu_layer(x) > 0).any()  # the two functions really differ here
    assert tanh_layer.kernels is not relu_layer.kernels
    assert "tanh" in str(tanh_layer.derivation) and "relu" in str(relu_layer.derivation)


def test_the_same_maths_shares_one_derivation_and_one_program_whatever_the_sizes():
    a = Chain(Dense(7, 4, flux.relu), Dense(4, 2))
    b = Chain(Dense(3, 9, flux.relu), Dense(9, 5))
    assert a.kernels is b.kernels and a.derivation is b.derivation
    assert Dense(2, 2, lambda z: flux.tanh(z)).kernels is Dense(5, 3, flux.tanh).kernels


CELL_SOURCE = """
import flux

class Cell(flux.Model):
    W = flux.param("m", "n")

    def forward(self, x):
        return flux.{function}(self.W * x)
"""


def define_cell(function: str) -> type:
    namespace: dict = {}
    exec(CELL_SOURCE.format(function=function), namespace)  # as a notebook cell redefining the class
    return namespace["Cell"]


def test_a_class_redefined_with_other_maths_gets_its_own_kernel():
    W = np.array([[1.0, -2.0], [0.5, 0.25]])
    first = define_cell("tanh")(W=W, dtype=np.float64)
    np.testing.assert_allclose(first(x), np.tanh(x @ W.T), rtol=1e-12)
    second = define_cell("σ")(W=W, dtype=np.float64)  # the same name, other maths
    np.testing.assert_allclose(second(x), 1 / (1 + np.exp(-(x @ W.T))), rtol=1e-12)
    np.testing.assert_allclose(first(x), np.tanh(x @ W.T), rtol=1e-12)  # the first class is still right
    assert second.kernels is not first.kernels


class Scaled(flux.Model):
    """y = α·(W x), α read from the instance."""

    W = flux.param("m", "n")

    def __init__(self, alpha, **values):
        super().__init__(**values)
        self.alpha = alpha

    def forward(self, x):
        return self.alpha * (self.W * x)


def test_a_constant_read_from_the_instance_is_part_of_the_maths():
    W = np.array([[1.0, -2.0], [0.5, 0.25]])
    two, three = Scaled(2.0, W=W, dtype=np.float64), Scaled(3.0, W=W, dtype=np.float64)
    np.testing.assert_allclose(two(x), 2.0 * x @ W.T, rtol=1e-12)
    np.testing.assert_allclose(three(x), 3.0 * x @ W.T, rtol=1e-12)
    three.back(np.ones((3, 2)))
    np.testing.assert_allclose(three.grads["W"], 3.0 * np.ones((3, 2)).T @ x, rtol=1e-12)
    assert Scaled(2.0, W=np.ones((4, 3))).kernels is Scaled(2.0, W=np.ones((2, 2))).kernels


HELPER_MODEL = """
import flux
import helper

class Helped(flux.Model):
    W = flux.param("m", "n")

    def forward(self, x):
        return helper.activation(self.W * x)
"""

CHILD = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "no-derivation":  # the disk cache must answer: deriving or generating again is a failure
    from flux import kernels, program
    def refuse(*args, **kwargs):
        raise AssertionError("derived again although the cached module matches")
    program.derive_trace = kernels.generate_module_source = refuse
from helped import Helped
W = np.array([[1.0, -2.0], [0.5, 0.25]])
model = Helped(W=W, dtype=np.float64)
x = np.array([[-1.5, 0.5], [2.0, -0.25], [0.3, 0.9]])
print(json.dumps({"y": model(x).tolist()}))
"""


def run_child(directory: Path, cache_directory: Path, mode: str = "") -> np.ndarray:
    environment = dict(os.environ, FLUX_CACHE_DIR=str(cache_directory), PYTHONPATH=str(REPOSITORY))
    done = subprocess.run([sys.executable, "-c", CHILD, str(directory), mode], env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return np.array(json.loads(done.stdout.strip().splitlines()[-1])["y"])


def test_a_helper_module_changed_between_runs_is_not_served_from_the_disk_cache(tmp_path):
    code, cache_directory = tmp_path / "code", tmp_path / "cache"
    code.mkdir()
    (code / "helped.py").write_text(HELPER_MODEL)
    W = np.array([[1.0, -2.0], [0.5, 0.25]])
    (code / "helper.py").write_text("import flux\n\ndef activation(z):\n    return flux.tanh(z)\n")
    np.testing.assert_allclose(run_child(code, cache_directory), np.tanh(x @ W.T), rtol=1e-12)
    (code / "helper.py").write_text("import flux\n\ndef activation(z):\n    return flux.relu(z)\n")
    np.testing.assert_allclose(run_child(code, cache_directory), np.maximum(x @ W.T, 0), rtol=1e-12)
    # the same maths again: traced, found on disk, loaded; nothing derived or generated
    np.testing.assert_allclose(run_child(code, cache_directory, "no-derivation"), np.maximum(x @ W.T, 0),
                               rtol=1e-12)


# ---- item 5: forward assigns declared states, and each of them --------------------------------------------

class Typo(flux.Model):
    hidden = flux.state("h")
    W = flux.param("h", "n")
    U = flux.param("h", "h")

    def forward(self, x):
        self.hiden = flux.tanh(self.W * x + self.U * self.hidden)
        return self.hiden


class NeverAssigned(flux.Model):
    hidden = flux.state("h")
    W = flux.param("h", "n")

    def forward(self, x):
        return flux.tanh(self.W * x)


class AssignsParameter(flux.Model):
    W = flux.param("m", "n")

    def forward(self, x):
        self.W = self.W * 2
        return self.W * x


def test_a_typo_in_a_state_assignment_is_a_definition_error_naming_both():
    model = Typo(W=np.ones((2, 3)), U=np.eye(2))
    with pytest.raises(DefinitionError, match=r"Typo.forward assigns self.hiden, .*not a declared state.*declared: "
                                              r"hidden"):
        model(np.ones((1, 4, 3), dtype=np.float32))
    with pytest.raises(DefinitionError, match="hiden"):
        Typo.derivation


def test_a_declared_state_never_assigned_is_a_definition_error():
    with pytest.raises(DefinitionError, match="NeverAssigned declares the state hidden .* never assigns self.hidden"):
        NeverAssigned(W=np.ones((2, 3)))(np.ones((1, 4, 3), dtype=np.float32))


def test_forward_assigning_a_parameter_is_a_definition_error():
    with pytest.raises(DefinitionError, match=r"assigns self.W, which is not a declared state \(declared: none\)"):
        AssignsParameter(W=np.ones((2, 3)))(np.ones((1, 3), dtype=np.float32))
