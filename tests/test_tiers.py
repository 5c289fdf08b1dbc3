"""The two tiers agree: every model computed by the NumPy tier (no compiling) and by the numba tier gives the same
outputs, input gradients, parameter gradients and ∂L/∂h₀ to float tolerance — the property-based models of
tests/test_properties.py (the random layers: the same draws, so their numba kernels are shared with it), every layer
and loss, every elementwise function and every node the printers know. The NumPy tier is also gradchecked on its
own. And the switch between them (FLUX_TIER=auto) is race-free: threads calling one model while it switches all get
right answers, a forward and its back always run on one tier.

The rest of the suite runs on the numba tier (tests/conftest.py sets FLUX_TIER=numba), so it stays deterministic.
"""
from __future__ import annotations

import copy
import os
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import sympy
from hypothesis import given, seed, settings
from hypothesis.internal.reflection import function_digest
from scipy.special import erf
from sympy import HadamardPower

import flux
from flux import pipeline, tiers
import test_properties
from test_properties import CI_SETTINGS, TOLERANCE, feedforward_models, recurrent_models

AGREE = dict(rtol=1e-9, atol=1e-11)  # float64: the tiers differ only in rounding (NumPy's exp/tanh, summation order)
AGREE32 = dict(rtol=2e-5, atol=2e-6)  # float32: numba's fast exp/σ/tanh are within ~2 ulp of NumPy's


@contextmanager
def tier(name: str):
    saved = os.environ.get("FLUX_TIER")
    os.environ["FLUX_TIER"] = name
    try:
        yield
    finally:
        os.environ["FLUX_TIER"] = saved if saved is not None else "numba"


def upstream_like(y):
    """A fixed, non-trivial upstream gradient shaped like y."""
    return np.cos(1.0 + np.arange(np.size(y))).reshape(np.shape(y)).astype(np.asarray(y).dtype)


def run_on(name: str, model, inputs: tuple, **options):
    """A copy of `model` run forward and back on one tier: (outputs, ∂L/∂inputs, ∂L/∂params, ∂L/∂h₀)."""
    with tier(name):
        model = copy.deepcopy(model)
        outputs = model(*inputs, **options)
        assert model.kernels.tier == name
        single = not isinstance(outputs, tuple)
        deltas = tuple(upstream_like(y) for y in ((outputs,) if single else outputs))
        gradients = model.back(deltas[0] if single else deltas)
    return outputs, gradients, model.grads, model.state_grads


def assert_tiers_agree(model, *inputs, tolerance=AGREE, **options):
    numpy_tier = run_on("numpy", model, inputs, **options)
    numba_tier = run_on("numba", model, inputs, **options)
    for what, a, b in zip(("outputs", "input gradients", "gradients", "state gradients"), numpy_tier, numba_tier):
        if isinstance(a, dict):
            assert a.keys() == b.keys(), what
            a, b = list(a.values()), list(b.values())
        a, b = (list(a), list(b)) if isinstance(a, (tuple, list)) else ([a], [b])
        for u, v in zip(a, b):
            assert np.asarray(u).dtype == np.asarray(v).dtype, what
            np.testing.assert_allclose(u, v, **tolerance, err_msg=f"{type(model).__name__}: {what}")


# ---- the property-based models: the tiers agree, and the NumPy tier's gradients are right -----------------------

def draws_of(test):
    """Draw what `test` (a derandomized hypothesis test) draws: hypothesis seeds a derandomized test with a digest of
    its own source, so without this these tests would draw other models than test_properties' and compile them
    again; with it, their examples are among the first of test_properties' and numba's kernels are shared (in one
    process, or through the disk cache: tests/conftest.py runs both files on one worker)."""
    return seed(int.from_bytes(function_digest(test.hypothesis.inner_test), "big"))


@draws_of(test_properties.test_random_layers_have_correct_gradients)
@settings(CI_SETTINGS, max_examples=8)
@given(feedforward_models())
def test_tiers_agree_on_random_layers(example):
    model, x, description = example
    assert_tiers_agree(model, x)
    with tier("numpy"):
        assert flux.gradcheck(copy.deepcopy(model), x, raise_on_failure=False) < TOLERANCE, description


@draws_of(test_properties.test_random_recurrent_cells_have_correct_gradients)  # its fifth: the NumPy tier's c·1
@settings(CI_SETTINGS, max_examples=4)  # each a Python time loop gradchecked on the NumPy tier: the slowest draws
@given(recurrent_models())
def test_tiers_agree_on_random_recurrent_cells(example):
    model, xs, initial, description = example
    assert_tiers_agree(model, xs, initial=initial)
    with tier("numpy"):
        error = flux.gradcheck(copy.deepcopy(model), xs, initial=initial, raise_on_failure=False)
    assert error < TOLERANCE, description


# ---- every layer and loss -------------------------------------------------------------------------------------

RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 4))
XS = RNG.standard_normal((2, 5, 3))


@pytest.mark.parametrize("layer", [
    flux.Dense(4, 3, rng=0, dtype=np.float64),
    flux.Dense(4, 3, flux.relu, rng=1, dtype=np.float64),
    flux.Chain(flux.Dense(4, 5, flux.tanh, rng=0, dtype=np.float64), flux.Dense(5, 2, rng=1, dtype=np.float64),
               flux.softmax),
    flux.Concat(flux.Dense(4, 2, flux.σ, rng=0, dtype=np.float64), flux.Dense(4, 3, flux.gelu, rng=1,
                                                                              dtype=np.float64)),
], ids=["Dense", "Dense-relu", "Chain-softmax", "Concat"])
def test_tiers_agree_on_feedforward_layers(layer):
    assert_tiers_agree(layer, X)


@pytest.mark.parametrize("layer", [
    flux.Recurrent(3, 4, 2, rng=0, dtype=np.float64), flux.LSTM(3, 4, rng=0, dtype=np.float64),
    flux.GRU(3, 4, rng=0, dtype=np.float64),
], ids=["Recurrent", "LSTM", "GRU"])
def test_tiers_agree_on_recurrent_layers(layer):
    assert_tiers_agree(layer, XS)


def test_tiers_agree_in_float32():
    assert_tiers_agree(flux.LSTM(3, 4, rng=0), XS.astype(np.float32), tolerance=AGREE32)
    assert_tiers_agree(flux.Chain(flux.Dense(4, 5, flux.σ, rng=0), flux.Dense(5, 3, flux.softplus, rng=1)),
                       X.astype(np.float32), tolerance=AGREE32)


@pytest.mark.parametrize("loss", [flux.mse, flux.crossentropy, flux.logitcrossentropy, flux.binarycrossentropy,
                                  flux.logitbinarycrossentropy], ids=repr)
def test_tiers_agree_on_losses(loss):
    prediction = 1 / (1 + np.exp(-RNG.standard_normal((3, 4))))
    target = np.eye(4)[[0, 2, 3]]
    for name in ("numpy", "numba"):
        with tier(name):
            model = copy.deepcopy(loss)
            value, gradient = model.value_and_gradient(prediction, target)
            if name == "numpy":
                expected = (value, gradient)
    np.testing.assert_allclose(expected[0], value, **AGREE)
    np.testing.assert_allclose(expected[1], gradient, **AGREE)


# ---- every elementwise function and every node --------------------------------------------------------------

class Everything(flux.Model):
    """Every node type at once: products through transposes, Hadamard powers (−1, ½, −½, 3, π), symbolic
    coefficients (π, √2), a per-sample scalar times a vector, slices, concatenation, totals and softmax (their
    derivatives add 1 − y, spread scalars and the rest)."""

    W = flux.param("m", "n")
    b = flux.param("m")
    V = flux.param("m", "m")

    def forward(self, x):
        z = self.W * x + self.b
        p = flux.exp(flux.tanh(z))  # positive: its powers are real
        first, second = flux.split(z, 2)
        s = flux.total(p)
        powers = (HadamardPower(p, -1) + HadamardPower(p, sympy.Rational(1, 2)) + HadamardPower(p, -sympy.S.Half)
                  + HadamardPower(flux.tanh(z), 3) + HadamardPower(p, sympy.pi))
        mixed = self.V.T * flux.tanh(z) + sympy.pi * z + sympy.sqrt(2) * (self.V * z)
        return flux.concat(flux.softmax(mixed + powers), flux.tanh(first) * s, flux.σ(second))


def test_tiers_agree_on_every_node():
    rng = np.random.default_rng(5)
    model = Everything(W=rng.standard_normal((4, 4)) / 2, b=rng.standard_normal(4), V=rng.standard_normal((4, 4)) / 2,
                       dtype=np.float64)
    assert_tiers_agree(model, X)
    with tier("numpy"):
        assert flux.gradcheck(copy.deepcopy(model), X, raise_on_failure=False) < TOLERANCE


class SlicedBlocks(flux.Model):
    """A slice of a block matrix: SymPy prints the block over several lines, which the NumPy tier once pasted into
    a one-line string literal of the slice's bounds check — a module with a SyntaxError (found by a draw of
    test_properties with another seed)."""
    W = flux.param("b", "n")

    def forward(self, x):
        head, tail = flux.split(self.W * x, 1)
        blocks = flux.concat(flux.abs(head), flux.silu(tail))
        first, rest = flux.split(2.0 * blocks, 1)
        return flux.concat(flux.erf(rest), flux.abs(first))


def test_tiers_agree_on_a_slice_of_a_block_matrix():
    model = SlicedBlocks(W=np.random.default_rng(3).standard_normal((3, 4)), dtype=np.float64)
    x = np.random.default_rng(4).standard_normal((2, 4))
    y = x @ np.asarray(model.W).T
    blocks = 2.0 * np.concatenate([np.abs(y[:, :1]), y[:, 1:] / (1 + np.exp(-y[:, 1:]))], axis=1)
    with tier("numpy"):
        assert np.allclose(model(x), np.concatenate([erf(blocks[:, 1:]), np.abs(blocks[:, :1])], axis=1))
    assert_tiers_agree(model, x)
    with tier("numpy"):
        assert flux.gradcheck(copy.deepcopy(model), x, raise_on_failure=False) < TOLERANCE


def test_tiers_agree_on_every_elementwise_function():
    user = flux.elementwise("bent", lambda z: sympy.Piecewise((sympy.erf(z) - 1, z < 0), (sympy.Max(z, z**2 / 3), True)))

    class Functions(flux.Model):
        W = flux.param("m", "n")

        def forward(self, x):
            z = self.W * x
            terms = [f(z) for f in (flux.σ, flux.tanh, flux.relu, flux.softplus, flux.exp, flux.erf, flux.gelu,
                                    flux.silu, flux.elu, flux.leakyrelu, flux.softsign, flux.abs, flux.square, user)]
            positive = flux.softplus(z)
            terms += [flux.log(positive), flux.sqrt(positive)]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            return total

    model = Functions(W=np.random.default_rng(3).standard_normal((3, 4)), dtype=np.float64)
    assert_tiers_agree(model, X)


def test_the_numpy_tier_module_is_plain_numpy():
    with tier("numpy"):
        model = flux.Chain(flux.Dense(4, 3, flux.gelu, rng=0), flux.Dense(3, 2, rng=1))
        model(X)
        source = model.kernels.source
    assert "njit" not in source and "numba" not in source.split('"""')[2]
    forward = model.kernels.forward.source
    assert forward.startswith("@quiet\ndef forward(") and " @ " in forward  # products through BLAS, no loops
    assert "for " not in forward


def test_an_unknown_tier_is_refused(monkeypatch):
    monkeypatch.setenv("FLUX_TIER", "fast")
    with pytest.raises(ValueError, match="FLUX_TIER must be one of auto, numba, numpy; got 'fast'"):
        flux.Dense(2, 2, rng=0)(np.ones((1, 2)))


# ---- the switch: NumPy first, numba when ready, between calls ----------------------------------------------

@pytest.fixture
def auto_tier(private_cache, monkeypatch):
    """FLUX_TIER=auto with an empty cache and no background compile started or remembered."""
    monkeypatch.setattr(pipeline, "_numpy_programs", {})
    monkeypatch.setattr(tiers, "_jobs", {})
    monkeypatch.setenv("FLUX_TIER", "auto")
    monkeypatch.setenv("FLUX_BACKGROUND", "thread")
    return private_cache


def test_threads_calling_one_model_while_it_switches(auto_tier):
    model = flux.Dense(4, 3, flux.tanh, rng=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((5, 4)) for _ in range(3)]
    W, b = model.params["W"], model.params["b"]
    expected = [np.tanh(x @ W.T + b) for x in inputs]
    model(inputs[0])
    assert model.kernels.tier == "numpy"  # the first call did not wait for numba
    stop, errors, calls = threading.Event(), [], []

    def call(k: int) -> None:
        try:
            while not stop.is_set():
                np.testing.assert_allclose(model(inputs[k]), expected[k], **AGREE)
                # a function without parameters is shared: its tapes are per thread, so forward and back pair up
                y = flux.tanh(inputs[k])
                np.testing.assert_allclose(flux.tanh.back(np.ones_like(y)), 1 - np.tanh(inputs[k]) ** 2, **AGREE)
                calls.append(model.kernels.tier)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    try:
        assert flux.compile(model, timeout=300) == "numba"
        assert flux.compile(flux.tanh, timeout=300) == "numba"
        switched = len(calls)
        while len(calls) < switched + 30 and not errors:
            threading.Event().wait(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert "numpy" in calls and calls[-1] == "numba"
    assert model.kernels.tier == "numba"


def test_a_forward_and_its_back_run_on_one_tier_across_the_switch(auto_tier):
    cell = flux.GRU(3, 4, rng=0, dtype=np.float64)
    reference = run_on("numpy", cell, (XS,))  # (not numba: compiled in this process, it would be ready at once)
    model = copy.deepcopy(cell)
    tiers_used, deadline = [], time.monotonic() + 600  # a generous bound: the machine may be busy
    while time.monotonic() < deadline:
        ys = model(XS)
        tiers_used.append(model.kernels.tier)
        gradient = model.back(upstream_like(ys))
        np.testing.assert_allclose(ys, reference[0], **AGREE)
        np.testing.assert_allclose(gradient, reference[1], **AGREE)
        for name, g in model.grads.items():
            np.testing.assert_allclose(g, reference[2][name], **AGREE)
        model.zero_grad()
        if tiers_used[-1] == "numba" and len(tiers_used) > 1:
            break
        threading.Event().wait(0.01)
    assert tiers_used[0] == "numpy" and tiers_used[-1] == "numba"


def test_the_background_process_fills_the_cache_for_the_next_process(auto_tier, monkeypatch):
    monkeypatch.setenv("FLUX_BACKGROUND", "process")
    model = flux.Dense(3, 2, flux.σ, rng=0, dtype=np.float64)
    model(X[:, :3])
    assert model.kernels.tier == "numpy"
    assert flux.compile(model, timeout=300) == "numba"
    assert list(auto_tier.glob("dense_float64_*.ready"))  # marked ready by the background process
    # a new process (nothing in memory): the NumPy module loads faster than numba's machine code, which a thread
    # then loads from the cache (no compiling, no process); without the NumPy module on disk, numba at once
    for numpy_module_on_disk in (True, False):
        monkeypatch.setattr(pipeline, "_programs", {})
        monkeypatch.setattr(pipeline, "_numpy_programs", {})
        monkeypatch.setattr(tiers, "_jobs", {})
        if not numpy_module_on_disk:
            for file in auto_tier.glob("dense_float64_numpy_*.py"):
                file.unlink()
        again = flux.Dense(3, 2, flux.σ, rng=1, dtype=np.float64)
        again(X[:, :3])
        assert again.kernels.tier == ("numpy" if numpy_module_on_disk else "numba")
        assert flux.compile(again, timeout=300) == "numba"


def test_forced_tiers_never_switch(private_cache, monkeypatch):
    monkeypatch.setattr(pipeline, "_numpy_programs", {})
    monkeypatch.setattr(tiers, "_jobs", {})
    monkeypatch.setenv("FLUX_TIER", "numpy")
    model = flux.Dense(3, 2, rng=0, dtype=np.float64)
    model(X[:, :3])
    assert model.kernels.tier == "numpy" and model.kernels.job is None  # nothing compiles
    assert flux.compile(model) == "numpy"


def test_tiers_agree_on_the_fused_training_step():
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    runs = {}
    for name in ("numpy", "numba"):
        with tier(name):
            chain = flux.Chain(flux.Dense(4, 5, flux.relu, rng=0, dtype=np.float64),
                               flux.Dense(5, 3, rng=1, dtype=np.float64))
            step = flux.compile_step(chain, flux.logitcrossentropy, flux.Adam(1e-2))
            runs[name] = ([step(x, labels) for _ in range(4)], chain.params)
    np.testing.assert_allclose(runs["numpy"][0], runs["numba"][0], **AGREE)
    for key, value in runs["numba"][1].items():
        np.testing.assert_allclose(runs["numpy"][1][key], value, **AGREE)


def test_the_fused_training_step_switches_between_steps(auto_tier):
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((8, 4)), rng.integers(0, 3, 8)
    with tier("numpy"):
        reference = flux.Chain(flux.Dense(4, 5, flux.tanh, rng=0, dtype=np.float64),
                               flux.Dense(5, 3, rng=1, dtype=np.float64))
        reference_step = flux.compile_step(reference, flux.logitcrossentropy, flux.SGD(0.1))
    chain = flux.Chain(flux.Dense(4, 5, flux.tanh, rng=0, dtype=np.float64), flux.Dense(5, 3, rng=1, dtype=np.float64))
    step = flux.compile_step(chain, flux.logitcrossentropy, flux.SGD(0.1))
    step(x, labels)
    reference_step(x, labels)
    assert step.module.job is not None and not step.module.job.done.is_set()  # numba compiles meanwhile
    assert step.module.job.done.wait(300) and step.module.job.error is None
    for _ in range(3):  # now on numba: the same training as on NumPy
        np.testing.assert_allclose(step(x, labels), reference_step(x, labels), **AGREE)
    assert "@njit" in step.source
