"""The pipeline's identity (issue 12, items 1 and 11): a kernel is the maths it was traced from, never a name; any
valid Python identifier a user picks works in generated code. (Item 5, forward assigns declared states only, is in
test_trace.py.)"""
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np

import flux
from flux import Chain, Dense

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


def test_changing_a_constant_after_the_first_call_changes_the_kernel():
    W = np.array([[1.0, -2.0], [0.5, 0.25]])
    model = Scaled(2.0, W=W, dtype=np.float64)
    np.testing.assert_allclose(model(x), 2.0 * x @ W.T, rtol=1e-12)
    model.alpha = 3.0
    np.testing.assert_allclose(model(x), 3.0 * x @ W.T, rtol=1e-12)
    assert "3.0" in repr(model.derivation.outputs[0])  # the maths shown is the maths computed


def test_changing_a_sub_models_constant_reaches_the_whole_model():
    W = np.array([[1.0, -2.0], [0.5, 0.25]])
    inner = Scaled(2.0, W=W, dtype=np.float64)
    chain = flux.Chain(inner, flux.tanh)
    np.testing.assert_allclose(chain(x), np.tanh(2.0 * x @ W.T), rtol=1e-12)
    before = chain.kernels
    inner.alpha = -1.0
    np.testing.assert_allclose(chain(x), np.tanh(-1.0 * x @ W.T), rtol=1e-12)
    assert chain.kernels is not before
    inner.alpha = 2.0  # the same maths again: the same compiled program, nothing recompiled
    np.testing.assert_allclose(chain(x), np.tanh(2.0 * x @ W.T), rtol=1e-12)
    assert chain.kernels is before


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
    from flux import generate, pipeline as program
    from flux.generate import feedforward as kernels
    def refuse(*args, **kwargs):
        raise AssertionError("derived again although the cached module matches")
    program.derive_trace = kernels.generate_module_source = generate.generate_module_source = refuse
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


# ---- item 11: generated code uses its own names ------------------------------------------------------------

class Clashing(flux.Model):
    """Parameters named like the input (y), like generated locals and gradients (grad_y, t1, kept1), like modules
    and builtins (np, len, math), and not in ASCII (Wσ); the input is y."""

    y = flux.param("m", "n")
    grad_y = flux.param("m")
    np = flux.param("m")
    len = flux.param("m")
    math = flux.param("m", "m")
    t1 = flux.param("m")
    kept1 = flux.param("m")
    Wσ = flux.param("m", "n")

    def forward(self, y):
        hidden = flux.tanh(self.y * y + self.grad_y)
        return flux.σ(self.math * hidden + self.np) + flux.hadamard(self.len, self.Wσ * y) + self.t1 + self.kept1


def clashing(seed: int = 0) -> Clashing:
    rng = np.random.default_rng(seed)
    shapes = {"y": (3, 2), "grad_y": (3,), "np": (3,), "len": (3,), "math": (3, 3), "t1": (3,), "kept1": (3,),
              "Wσ": (3, 2)}
    return Clashing(**{k: rng.standard_normal(s) for k, s in shapes.items()}, dtype=np.float64)


def clashing_reference(model: Clashing, y: np.ndarray) -> np.ndarray:
    hidden = np.tanh(y @ model.y.T + model.grad_y)
    return (1 / (1 + np.exp(-(hidden @ model.math.T + model.np))) + model.len * (y @ model.Wσ.T)
            + model.t1 + model.kept1)


def test_names_that_clash_with_generated_code_work_in_a_feed_forward_model():
    model, y = clashing(), np.random.default_rng(1).standard_normal((4, 2))
    np.testing.assert_allclose(model(y), clashing_reference(model, y), rtol=1e-12)
    assert flux.gradcheck(model, y) < 1e-6


class Inner(flux.Model):
    W = flux.param("m", "n")

    def forward(self, x):
        return self.W * x


class InnerB(flux.Model):
    b_W = flux.param("m", "n")

    def forward(self, x):
        return self.b_W * x


class Slots(flux.Model):
    """Sub-models a_b (parameter W) and a (parameter b_W): dotted names a_b.W and a.b_W."""

    a_b = Inner
    a = InnerB

    def forward(self, x):
        return self.a_b(x) + 2 * self.a(x)


def test_dotted_names_that_would_read_alike_stay_apart():
    rng = np.random.default_rng(2)
    inner, other = (Inner(W=rng.standard_normal((2, 3)), dtype=np.float64),
                    InnerB(b_W=rng.standard_normal((2, 3)), dtype=np.float64))
    model, x = Slots(a_b=inner, a=other, dtype=np.float64), rng.standard_normal((4, 3))
    np.testing.assert_allclose(model(x), x @ inner.W.T + 2 * x @ other.b_W.T, rtol=1e-12)
    assert flux.gradcheck(model, x) < 1e-6


class ClashingCell(flux.Model):
    """A recurrent cell whose names clash with the recurrent generator's: h_t, u1, the state's buffers, Δ."""

    hidden = flux.state("h")
    Wσ = flux.param("h", "n")
    hidden_t = flux.param("h", "h")
    hidden_seq = flux.param("h")
    u1 = flux.param("h")
    Δ = flux.param("h")

    def forward(self, len):
        self.hidden = flux.tanh(self.Wσ * len + self.hidden_t * self.hidden + self.u1)
        return flux.hadamard(self.Δ, self.hidden) + self.hidden_seq


def test_names_that_clash_with_generated_code_work_in_a_recurrent_model():
    rng = np.random.default_rng(3)
    model = ClashingCell(Wσ=rng.standard_normal((3, 2)), hidden_t=0.5 * rng.standard_normal((3, 3)),
                         hidden_seq=rng.standard_normal(3), u1=rng.standard_normal(3), Δ=rng.standard_normal(3),
                         dtype=np.float64)
    xs = rng.standard_normal((2, 5, 2))
    h, expected = np.zeros((2, 3)), []
    for t in range(5):
        h = np.tanh(xs[:, t] @ model.Wσ.T + h @ model.hidden_t.T + model.u1)
        expected.append(model.Δ * h + model.hidden_seq)
    np.testing.assert_allclose(model(xs), np.stack(expected, axis=1), rtol=1e-12)
    assert flux.gradcheck(model, xs, initial={"hidden": rng.standard_normal((2, 3))}) < 1e-6


def test_names_that_clash_with_generated_code_work_in_the_fused_training_step():
    y, target = np.random.default_rng(4).standard_normal((4, 2)), np.random.default_rng(5).standard_normal((4, 3))
    fused, stepped = clashing(6), clashing(6)
    step = flux.compile_step(fused, flux.mse, flux.Adam(0.01))
    losses = [step(y, target) for _ in range(2)]
    optimiser = flux.Adam(0.01)
    expected = []
    for _ in range(2):
        expected.append(flux.loss_and_grad(stepped, flux.mse, y, target))
        stepped.update(optimiser)
    # (the fused kernel's σ and tanh differ from the plain kernels' by ~1e-9 in float64, names or not)
    np.testing.assert_allclose(losses, expected, rtol=1e-7)
    for name, value in stepped.params.items():
        np.testing.assert_allclose(fused.params[name], value, rtol=1e-7, atol=1e-9, err_msg=name)


def test_code_names_are_distinct_identifiers_apart_from_every_generated_name():
    from flux.generate.names import GENERATED_FAMILIES, GENERATED_PREFIXES, GENERATED_SUFFIXES, RESERVED, identifier

    names = ["W", "b", "x", "y", "y1", "t1", "u1", "kept1", "np", "len", "range", "math", "real", "N", "T", "grad_W",
             "grad", "W_T", "hidden", "hidden_t", "hidden_seq", "new_hidden", "Δ", "Δ_1", "Wσ", "ﬁ", "fi", "0.W",
             "l0.W", "l0_W", "a_b.W", "a.b_W", "model.W", "model_W", "v_79", "W′", "_", "__", "_W", "W_", "·"]
    codes = [identifier(n) for n in names]
    assert len(set(codes)) == len(names)
    for name, code in zip(names, codes):
        assert code.isidentifier() and unicodedata.normalize("NFKC", code) == code, (name, code)
        assert code not in RESERVED and not GENERATED_FAMILIES.fullmatch(code), (name, code)
        if not code.startswith("v_"):
            assert not code.startswith(GENERATED_PREFIXES) and not code.endswith(GENERATED_SUFFIXES), (name, code)
    assert identifier("W") == "W" and identifier("0.W") == "l0·W" and identifier("Wσ") == "Wσ"  # readable
