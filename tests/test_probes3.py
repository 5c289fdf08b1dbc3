"""Regression tests for bugs found by the third round of probing flux as a demanding user and a hostile file author.

Each test failed before its fix (the commit naming the bug). Behaviour probes run on the NumPy tier (nothing to
compile); numeric ones on numba too, with small models that share their kernels through the session's cache.
"""
import copy
import os

import numpy as np
import pytest

import flux
from test_probes2 import F64, numpy_tier  # noqa: F401  (numpy_tier is a fixture: FLUX_TIER=numpy)


class Linear(flux.Model):
    """y = W·x + b."""
    W = flux.param("m", "n")
    b = flux.param("m")

    def forward(self, x):
        return self.W * x + self.b


# ---- slices with a step: refused, never computed as the slice without its step ----------------------------------


class EveryOther(flux.Model):
    W = flux.param("n", "n")

    def forward(self, x):
        return self.W * x[0:3:2]


class EveryOtherRow(flux.Model):
    W = flux.param("n", "n")

    def forward(self, x):
        return self.W[0:3:2, :] * x


@pytest.mark.parametrize("cls", [EveryOther, EveryOtherRow])
def test_a_slice_with_a_step_is_refused_when_defined(numpy_tier, cls):
    """Bug: x[0:3:2] showed and computed x[0:3] (SymPy keeps the step in a node whose shape ignores it)."""
    with pytest.raises(flux.DefinitionError, match=rf"{cls.__name__}.forward slices with a step: .*:3:2"):
        cls.derivation


class TimesInfinity(flux.Model):
    W = flux.param("n", "n")

    def forward(self, x):
        return self.W * x * float("inf")


class NaNInsideAFunction(flux.Model):
    W = flux.param("n", "n")

    def forward(self, x):
        return (self.W * x).applyfunc(lambda v: flux.exp(v) * float("nan"))


class EmptySlice(flux.Model):
    W = flux.param("n", "n")

    def forward(self, x):
        return self.W * x[2:0]


@pytest.mark.parametrize("cls, message", [
    (TimesInfinity, r"TimesInfinity.forward uses a number that is not finite \(∞ or NaN\): oo\*W\*x"),
    (NaNInsideAFunction, r"NaNInsideAFunction.forward uses a number that is not finite .*nan"),
    (EmptySlice, r"EmptySlice.forward takes a slice that is empty or outside its matrix"),
])
def test_a_number_that_is_not_finite_or_an_empty_slice_is_refused_when_defined(numpy_tier, cls, message):
    """Bug: x·∞ failed in the generated code with NameError 'inf', NaN with a printer's CodegenError, and x[2:0]
    with a bare 'IndexError: ' (SymPy's slices say nothing)."""
    with pytest.raises(flux.DefinitionError, match=message):
        cls.derivation


class MeanScaled(flux.Model):
    """y = (1/n)·Σ(W·x) · tanh(x): ∂L/∂x reads Wᵀ·((1/n)·s·1), a per-sample scalar spread over a column."""
    W = flux.param("n", "n")

    def forward(self, x):
        return flux.mean(self.W * x) * flux.tanh(x)


class MeanScaledReadout(flux.Model):
    """h[t] = tanh(U·h[t−1] + x[t]), y[t] = (1/n)·Σ(W·x[t]) · h[t]: the same spread in a recurrent readout."""
    W = flux.param("n", "n")
    U = flux.param("n", "n")
    h = flux.state("n")

    def forward(self, x):
        self.h = flux.tanh(self.U * self.h + x)
        return flux.mean(self.W * x) * self.h


@pytest.mark.parametrize("cls, shape", [(MeanScaled, (5, 3)), (MeanScaledReadout, (2, 4, 3))])
def test_a_spread_scalar_read_by_a_product_on_the_numpy_tier(numpy_tier, cls, shape):
    """Bug (found by a property draw): the NumPy tier held (1/n)·s·1 as an (N, 1) column and multiplied it by the
    n×n W: 'matmul: … size 3 is different from 1' on the first back (the numba tier was right)."""
    rng = np.random.default_rng(7)
    names = ["W", "U"] if cls is MeanScaledReadout else ["W"]
    model = cls(**{name: rng.standard_normal((3, 3)) * 0.5 for name in names}, dtype=np.float64)
    assert flux.gradcheck(model, rng.standard_normal(shape)) < 1e-6


# ---- a constructor checks its arrays as params[...] = and inputs do -------------------------------------------


@pytest.mark.parametrize("W, error, message", [
    (np.array([[1 + 2j, 0], [0, 1]]), TypeError, "parameter W must be a floating-point array, got dtype complex"),
    (np.array([[1e40, 0], [0, 1]]), ValueError, "parameter W has values too large for float32"),
    (np.array([[2 ** 25 + 1, 0], [0, 1]]), TypeError, "parameter W .* not exactly representable in float32"),
    (np.array([[1.0, None], [0, 1]], dtype=object), TypeError, "parameter W .*got dtype object"),
    (np.array([["1.5", "2"], ["3", "4"]]), TypeError, "parameter W .*got dtype <U3"),
])
def test_a_constructor_refuses_what_params_assignment_refuses(W, error, message):
    """Bug: Linear(W=complex) dropped the imaginary part, 1e40 became inf, 2²⁵+1 was rounded, None became NaN and
    strings were parsed, each silently (params["W"] = … and inputs refused them)."""
    with pytest.raises(error, match=f"Linear: {message}"):
        Linear(W=W, b=np.zeros(2))
    model = Linear(W=np.eye(2, dtype=np.float16), b=[1, 2])  # exact conversions still work
    assert model.params["W"].dtype == np.float32 and model.params["b"].tolist() == [1.0, 2.0]


def test_a_constructor_copies_the_callers_array(numpy_tier):
    W = np.eye(2, dtype=np.float32)
    model = Linear(W=W, b=np.zeros(2, dtype=np.float32))
    W[0, 0] = 5
    assert model.params["W"][0, 0] == 1


# ---- x or y changed in place between forward and back: the gradient of the forward that was made ----------------


def reference_and_mutated(model, x, t):
    """(∂L/∂x, grads) of L = ½‖y − t‖², computed plainly, then with the caller changing y and x in place before
    back (`y -= t; back(y)` and a reused input buffer)."""
    y = model(x)
    dx = model.back(y - t)
    grads = {k: g.copy() for k, g in model.grads.items()}
    model.zero_grad()
    buffer = x.copy()
    y = model(buffer)
    y -= t
    buffer[...] = 7.0
    dx_mutated = model.back(y)
    mutated = {k: g.copy() for k, g in model.grads.items()}
    model.zero_grad()
    return (dx, grads), (dx_mutated, mutated)


@pytest.mark.parametrize("tier", ["numpy", "numba"])
def test_changing_x_or_y_in_place_before_back_changes_no_gradient(monkeypatch, tier):
    """Bug: the tape kept the caller's x and the very y it returned, so `y -= t; model.back(y)` (or a reused input
    buffer) silently back-propagated the changed arrays — σ′ = y(1 − y) of y − t (PyTorch raises instead)."""
    monkeypatch.setenv("FLUX_TIER", tier)
    rng = np.random.default_rng(0)
    dense = flux.Dense(3, 2, flux.σ, dtype=F64)
    cases = [(dense, rng.standard_normal((4, 3)), rng.standard_normal((4, 2))),
             (dense, rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2)))]  # rows of (N, T, k)
    if tier == "numpy":  # the tapes are kept in Python, whatever the tier: one recurrent compile spared
        rnn = flux.Recurrent(2, 3, 2, dtype=F64)
        cases += [(rnn, rng.standard_normal((1, 4, 2)), rng.standard_normal((1, 4, 2))),  # N = 1: a view
                  (rnn, rng.standard_normal((3, 1, 2)), rng.standard_normal((3, 1, 2)))]  # T = 1
    for model, x, t in cases:
        (dx, grads), (dx_mutated, mutated) = reference_and_mutated(model, x, t)
        np.testing.assert_array_equal(dx_mutated, dx)
        for name in grads:
            np.testing.assert_array_equal(mutated[name], grads[name])


class TokenTanh(flux.Model):
    X = flux.tokens("d")
    W = flux.param("d", "d")

    def forward(self, X):
        return flux.tanh(self.W * X)


def test_changing_tokens_or_their_output_in_place_before_back_changes_no_gradient():
    rng = np.random.default_rng(1)
    model = TokenTanh(W=rng.standard_normal((3, 3)) * 0.5, dtype=F64)
    (dx, grads), (dx_mutated, mutated) = reference_and_mutated(model, rng.standard_normal((2, 4, 3)),
                                                               rng.standard_normal((2, 4, 3)))
    np.testing.assert_array_equal(dx_mutated, dx)
    np.testing.assert_array_equal(mutated["W"], grads["W"])


# ---- matrix powers, one-row slices of a matrix and stacks of unequal widths on numba ----------------------------


class RowsAndPowers(flux.Model):
    """y = [W[0:1]·x; W[1:3]·x] + (Wᵀ·tanh(W·x))·(W[2:3]·x) + W³·x: single rows of W are per-sample scalars."""
    W = flux.param("n", "n")

    def forward(self, x):
        return flux.concat(self.W[0:1, :] * x, self.W[1:3, :] * x) \
            + (self.W.T * flux.tanh(self.W * x)) * (self.W[2:3, :] * x) + self.W ** 3 * x


@pytest.mark.parametrize("tier", ["numpy", "numba"])
def test_single_rows_of_a_matrix_and_its_cube(monkeypatch, tier):
    """Bugs: W[2:3, :]·x failed at the first call on both tiers (a 1×n slice taken as a vector); once it ran, numba
    summed that row's gradient into grad_W[2:3][j] — rows past the array (a segfault or a wrong gradient); W³ did
    not compile on numba (np.linalg.matrix_power's result is Optional there); the fused step stacked [aᵀ, bᵀ] of
    widths 1 and 2 by rows ("cannot assign slice of shape (4, 1) from input of shape (4, 2)")."""
    monkeypatch.setenv("FLUX_TIER", tier)
    rng = np.random.default_rng(2)
    W, x, t = rng.standard_normal((3, 3)) * 0.5, rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    model = RowsAndPowers(W=W, dtype=F64)
    expected = x @ W.T + (np.tanh(x @ W.T) @ W) * (x @ W[2])[:, None] + x @ np.linalg.matrix_power(W, 3).T
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)
    assert flux.gradcheck(model, x) < 1e-6
    flux.loss_and_grad(model, flux.mse, x, t)
    model.update(lr=0.1)
    manual = model.params["W"].copy()
    model.params["W"] = W
    flux.compile_step(model, flux.mse, flux.SGD(0.1))(x, t)
    np.testing.assert_allclose(model.params["W"], manual, rtol=1e-12)


# ---- files and the cache: what a header or a class name declares cannot reach past its place ---------------------


def npy_header(shape: tuple, dtype: str = "<f4") -> bytes:
    """The header of a .npy array of `shape` (its data left out, as a crafted file would)."""
    text = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}".encode("latin1")
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def test_an_array_declaring_more_data_than_its_file_holds_is_a_value_error(numpy_tier, tmp_path):
    """Bug: a parameter whose header declared shape (10¹², 3) over 24 bytes made flux.load raise MemoryError
    ("Unable to allocate 10.9 TiB"), naming neither the file nor the array; a smaller lie reserved gigabytes."""
    import zipfile

    path, crafted = tmp_path / "dense.npz", tmp_path / "crafted.npz"
    flux.save(flux.Dense(3, 2), path)
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(crafted, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(item, npy_header((10 ** 12, 3)) + bytes(24) if item.filename == "param/W.npy" else data)
    with pytest.raises(ValueError, match=r"crafted.npz cannot be read .*param/W.npy declares shape \(1000000000000, 3\)"):
        flux.load(crafted)
    assert flux.load(path).params["W"].shape == (2, 3)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="gives a file to another user: root")
def test_machine_code_kept_under_numba_cache_dir_is_checked_as_the_cache_is(monkeypatch, tmp_path):
    """Bug: with NUMBA_CACHE_DIR set, numba keeps (and unpickles) a module's machine code under it, not in the
    __pycache__ flux checks: files there owned by another user and writable by all were loaded without a word."""
    from numba.core import config

    from flux import cache

    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "numba"))
    (tmp_path / "flux").mkdir(mode=0o700)
    module = tmp_path / "flux" / "m_float32_0123.py"
    module.write_text("")
    directory = cache.machine_code_directory(module)
    assert directory.parent == tmp_path / "numba" and directory.name.startswith("flux_")
    directory.mkdir(parents=True, mode=0o755)
    index = directory / "m_float32_0123.forward-1.py311.nbi"
    index.write_bytes(b"")
    index.chmod(0o644)
    assert cache.machine_code_files(module) == [index] and cache.untrusted_module(module) is None
    os.chown(index, 65534, -1)
    assert "owned by uid 65534" in cache.untrusted_module(module)
    os.chown(index, os.geteuid(), -1)
    directory.chmod(0o777)
    assert "can be written by its group and others" in cache.untrusted_module(module)


def test_a_class_name_cannot_put_its_module_outside_the_cache(numpy_tier, private_cache, tmp_path):
    """Bug: the module's file name was the class name, so type("../../escaped", …) wrote and imported its kernels
    outside the checked cache directory (and a name with "**" failed numba's cache glob)."""
    cls = type("../../escaped", (Linear,), {})
    model = cls(W=np.eye(2), b=np.zeros(2))
    np.testing.assert_array_equal(model(np.ones(2)), np.ones(2))
    assert not list(tmp_path.glob("*escaped*")) and list(private_cache.glob("*escaped*.py"))


# ---- a model class overriding back or update: train calls them, compile_step refuses -----------------------------


class FrozenBias(flux.Dense):
    """A Dense whose bias is frozen by its own `update`."""

    def update(self, optimiser=None, *, lr=None):
        self.grads["b"][...] = 0
        super().update(optimiser, lr=lr)


class ClippedDelta(flux.Dense):
    """A Dense that clips Δ in its own `back`."""

    def back(self, Δ):
        return super().back(np.clip(Δ, -1e-3, 1e-3))


def test_train_calls_a_models_own_back_and_update_and_compile_step_refuses_to_skip_them(numpy_tier):
    """Bug: flux.train (through the fused step) and compile_step never called an overridden update or back: the
    frozen bias moved and Δ was not clipped, silently."""
    rng = np.random.default_rng(4)
    x, t = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    frozen = FrozenBias(3, 2, rng=1, dtype=F64)
    b, W = frozen.params["b"].copy(), frozen.params["W"].copy()
    flux.train(frozen, flux.mse, (x, t), flux.SGD(0.1), epochs=2, batch_size=4)
    assert np.array_equal(frozen.params["b"], b) and not np.array_equal(frozen.params["W"], W)
    clipped, plain = ClippedDelta(3, 2, rng=1, dtype=F64), flux.Dense(3, 2, rng=1, dtype=F64)
    flux.train(clipped, flux.mse, (x, t), flux.SGD(0.1), epochs=1, batch_size=8)
    y = plain(x)
    plain.back(np.clip(flux.mse.value_and_gradient(y, t)[1], -1e-3, 1e-3))
    plain.update(lr=0.1)
    np.testing.assert_allclose(clipped.params["W"], plain.params["W"], rtol=1e-12)
    with pytest.raises(TypeError, match="compile_step: FrozenBias overrides FrozenBias.update, which a fused step"):
        flux.compile_step(frozen, flux.mse, flux.SGD(0.1))
    with pytest.raises(TypeError, match=r"train\(client=…\): FrozenBias overrides FrozenBias.update"):
        flux.train(frozen, flux.mse, (x, t), flux.SGD(0.1), client=object())  # refused before any client is used
    with pytest.raises(TypeError, match="compile_step: Chain holds a sub-model that overrides ClippedDelta.back"):
        flux.compile_step(flux.Chain(ClippedDelta(3, 2), flux.Dense(2, 2)), flux.mse, flux.SGD(0.1))


def test_a_layer_with_its_own_back_runs_alone_in_a_chain_and_is_refused_where_it_would_be_skipped(numpy_tier):
    """Bug: a fused Chain derived its backward from the whole maths and never called a layer's own `back` (Δ not
    clipped, silently); flux.train of a Chain holding a layer with its own `update` skipped it (chain.update applies
    every parameter's gradient itself: documented, and refused by train)."""
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    clipped, top = ClippedDelta(3, 2, rng=1, dtype=F64), flux.Dense(2, 2, rng=2, dtype=F64)
    chain = flux.Chain(copy.deepcopy(clipped), copy.deepcopy(top))
    flux.train(chain, flux.mse, (x, t), flux.SGD(0.1), epochs=1, batch_size=8)  # the step of calls
    Δ = top.back(flux.mse.value_and_gradient(top(clipped(x)), t)[1])  # the same by hand: clipped's back clips
    clipped.back(Δ)
    for layer in (clipped, top):
        layer.update(lr=0.1)
    np.testing.assert_allclose(chain.layers[0].params["W"], clipped.params["W"], rtol=1e-12)
    np.testing.assert_allclose(chain.layers[1].params["W"], top.params["W"], rtol=1e-12)
    with pytest.raises(TypeError, match=r"Parallel.back: Parallel holds a sub-model that overrides ClippedDelta.back"):
        flux.Parallel(ClippedDelta(3, 2, dtype=F64), flux.Dense(3, 2, dtype=F64))(x)
    frozen = flux.Chain(FrozenBias(3, 2, dtype=F64), flux.Dense(2, 2, dtype=F64))
    before = [p.copy() for p in frozen.params.values()]
    with pytest.raises(TypeError, match=r"Chain.update: Chain holds a sub-model that overrides FrozenBias.update"):
        flux.train(frozen, flux.mse, (x, t), flux.SGD(0.1))
    assert all(np.array_equal(a, b) for a, b in zip(before, frozen.params.values()))


# ---- recurrent states given by the caller: checked as inputs are, and copied -----------------------------------


def test_a_state_too_large_for_float32_is_refused_and_a_given_state_is_copied(numpy_tier):
    """Bug: `initial=` and `reset()` turned 1e39 into inf in a float32 model silently (inputs refuse it), and
    `reset(h)` kept the caller's h, so changing h afterwards changed the carried state."""
    rnn = flux.Recurrent(2, 3, 2)
    x = np.ones((2, 4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="Recurrent: initial state hidden has values too large for float32"):
        rnn(x, initial=np.full((2, 3), 1e39))
    with pytest.raises(ValueError, match="Recurrent: state hidden has values too large for float32"):
        rnn.reset(np.full((2, 3), 1e39))
    h = np.full((2, 3), 0.5, dtype=np.float32)
    rnn.reset(h)
    h[...] = 9.0
    np.testing.assert_array_equal(rnn.state["hidden"], np.full((2, 3), 0.5))


# ---- a fused step with a hyper-parameter the model's dtype cannot hold -------------------------------------------


@pytest.mark.parametrize("optimiser", [flux.SGD(1e39), flux.Adam(1e39), flux.Momentum(1e39)])
def test_a_fused_step_refuses_a_learning_rate_too_large_for_float32(numpy_tier, optimiser):
    """Bug: lr = 1e39 is inf in float32; compile_step wrote inf/NaN into every parameter and returned the loss,
    where model.update(opt) raised FloatingPointError and changed nothing."""
    model = flux.Dense(3, 2, rng=0)
    W = model.params["W"].copy()
    step = flux.compile_step(model, flux.mse, optimiser)
    with pytest.raises(ValueError, match=rf"{type(optimiser).__name__}: lr=1e\+39 is not finite in float32, the "
                                         "dtype Dense computes in; nothing was changed"):
        step(np.ones((4, 3)), np.zeros((4, 2)))
    assert np.array_equal(model.params["W"], W) and optimiser.step_count == 0


def test_a_fused_step_refuses_gradients_back_left_unapplied(numpy_tier):
    """Bug: after model.back(Δ) without update, a fused step ignored those gradients and left them in model.grads,
    so the next update(opt) applied them, stale (PyTorch's optimizer.step() includes accumulated gradients)."""
    model = flux.Dense(3, 2, rng=0, dtype=F64)
    step = flux.compile_step(model, flux.mse, flux.SGD(0.1))
    x, t = np.ones((4, 3)), np.zeros((4, 2))
    model(x)
    model.back(np.ones((4, 2)))
    W = model.params["W"].copy()
    with pytest.raises(RuntimeError, match=r"Dense holds gradients accumulated by back\(\) and not yet applied"):
        step(x, t)
    assert np.array_equal(model.params["W"], W)
    model.zero_grad()
    step(x, t)
    assert not np.array_equal(model.params["W"], W)


def test_a_description_nested_too_deep_is_a_value_error_naming_the_file(numpy_tier, tmp_path):
    """Bug: a `__flux__` description of JSON nested 10⁵ deep made flux.load raise RecursionError."""
    path = tmp_path / "deep.npz"
    flux.save(flux.Dense(3, 2), path)
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["__flux__"] = np.array('{"format": "flux-model", "version": 1, "x": ' + "[" * 10 ** 5 + "]" * 10 ** 5 + "}")
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="deep.npz has an unreadable '__flux__' description"):
        flux.load(path)


def test_the_machine_code_directory_while_another_thread_imports_numba(monkeypatch, tmp_path):
    """Bug: with FLUX_TIER=auto, numba is imported in the background; a compile_step meanwhile found numba's config
    module half made in sys.modules and failed with "partially initialized module 'numba.core.config' has no
    attribute 'CACHE_DIR'"."""
    import sys
    import types

    from flux import cache

    monkeypatch.setitem(sys.modules, "numba.core.config", types.ModuleType("numba.core.config"))  # no CACHE_DIR yet
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert cache.machine_code_directory(tmp_path / "m.py") == tmp_path / "__pycache__"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert cache.machine_code_directory(tmp_path / "m.py").parent == tmp_path / "numba"


# ---- parameters written between a forward pass and its back ----------------------------------------------------


def refuses_written(model, y, names):
    """back(Δ) after flux wrote `names` is a RuntimeError naming them, and leaves the gradients as they were."""
    before = {k: g.copy() for k, g in model.grads.items()}
    with pytest.raises(RuntimeError, match=rf"{type(model).__name__}.back: parameter\(s\) {names} changed after"):
        model.back(np.ones_like(y))
    assert all(np.array_equal(before[k], g) for k, g in model.grads.items())


def test_back_refuses_parameters_written_since_its_forward_pass(numpy_tier):
    """Bug: an update (or a fused step, params[...] =, a parameter replaced) between model(x) and model.back(Δ) made
    ∂L/∂x read the new W while the kept activations held the old ones: a silently wrong gradient (PyTorch refuses a
    tensor changed in place since it was saved for backward)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 3))
    dense = flux.Dense(3, 2, dtype=F64)
    y = dense(x)
    dense.back(np.ones_like(y))
    y = dense(x)
    dense.update(lr=0.1)
    refuses_written(dense, y, "W, b")
    y = dense(x)
    dense.params["W"] = np.zeros((2, 3))
    refuses_written(dense, y, "W")
    y = dense(x)
    dense.W = np.ones((2, 3))  # a new array
    refuses_written(dense, y, "W")
    y = dense(x)
    flux.compile_step(dense, flux.mse, flux.Adam())(x, np.zeros((4, 2)))
    refuses_written(dense, y, "W, b")
    chain = flux.Chain(flux.Dense(3, 3, dtype=F64), flux.Dense(3, 2, dtype=F64))
    y = chain(x)
    chain.layers[0].params["b"] = np.ones(3)
    refuses_written(chain, y, r"0\.b")
    with pytest.raises(TypeError, match=r"Recurrent\(n_in, n_hidden, n_out\) from sizes needs all three"):
        flux.Recurrent(3, 4)  # was a TypeError from inside Glorot's formula
    cell = flux.Recurrent(3, 4, 2, dtype=F64)
    xs = rng.standard_normal((2, 5, 3))
    cell.back(np.ones((2, 5, 2)) + 0 * cell(xs))
    ys = cell(xs)
    cell.update(flux.SGD(0.1))
    refuses_written(cell, ys, "Wxh, Whh, bh, Wxy, Why, by")
    cell.back(np.ones_like(cell(xs)))  # a forward made after the update: fine


def test_back_after_another_models_update_is_fine(numpy_tier):
    """A GAN's pattern: G(x), D(G(x)), D.back, D.update, then G.back — D's update writes none of G's parameters."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 3))
    generator, discriminator = flux.Dense(3, 3, dtype=F64), flux.Dense(3, 1, dtype=F64)
    h = generator(x)
    score = discriminator(h)
    dh = discriminator.back(np.ones_like(score))
    discriminator.update(lr=0.1)
    generator.back(dh)
    assert np.abs(generator.grads["W"]).sum() > 0


def test_a_token_model_refuses_parameters_written_since_its_forward_pass():
    rng = np.random.default_rng(10)
    model = TokenTanh(W=rng.standard_normal((3, 3)) * 0.5, dtype=F64)
    Y = model(rng.standard_normal((2, 4, 3)))
    model.params["W"] = np.eye(3)
    refuses_written(model, Y, "W")


def test_the_derivation_of_a_class_whose_constructor_sets_what_forward_reads_says_to_build_one():
    """Was: "TransformerBlock.forward cannot be traced: AttributeError: 'MultiHeadAttention' object has no attribute
    'heads'" — as if the layer were broken."""
    with pytest.raises(flux.DefinitionError, match=r"TransformerBlock.forward cannot be traced from the class: it "
                                                   r"reads an attribute its constructor sets .*TransformerBlock\(…\)"
                                                   r"\.derivation"):
        flux.TransformerBlock.derivation
