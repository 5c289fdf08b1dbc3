"""The Model protocol on layers written in maths: forward, back, update, gradients, errors."""
import numpy as np
import pytest
import sympy

import flux
from flux import σ
from models import Perceptron, gated_cell, perceptron, two_layer

rng = np.random.default_rng(42)


@pytest.mark.parametrize("make, n_in", [(perceptron, 5), (two_layer, 4), (gated_cell, 4)])
def test_gradcheck_float64(make, n_in):
    model = make()
    assert flux.gradcheck(model, rng.standard_normal((7, n_in))) < 1e-6


def test_forward_matches_numpy_and_default_dtype_is_float32():
    W, b = rng.standard_normal((3, 5)), rng.standard_normal(3)
    p = Perceptron(W=W, b=b)
    assert p.W.dtype == np.float32 and p.params["b"].dtype == np.float32
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = p(x)
    assert y.dtype == np.float32 and y.shape == (4, 3)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-(x @ W.T + b))), rtol=1e-5)


def test_single_sample_and_batch_agree():
    p = perceptron()
    x = rng.standard_normal((3, 5))
    batch = p(x)
    p.back(np.ones((3, 3)))
    single = p(x[1])
    assert single.shape == (3,)
    np.testing.assert_allclose(single, batch[1])
    dx = p.back(np.ones(3))
    assert dx.shape == (5,)


def test_back_accumulates_and_update_applies_sgd_then_zeroes():
    p = perceptron()
    x, Δ = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    y = p(x)
    p.back(Δ)
    once = p.grads["W"].copy()
    np.testing.assert_allclose(once, ((Δ * y * (1 - y)).T @ x))
    p(x)
    p.back(Δ)
    np.testing.assert_allclose(p.grads["W"], 2 * once)
    before = p.W.copy()
    p.update(lr=0.1)
    np.testing.assert_allclose(p.W, before - 0.1 * 2 * once)
    assert not p.grads["W"].any()


def test_input_gradient_matches_hand_derivation():
    p = perceptron()
    x, Δ = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    y = p(x)
    np.testing.assert_allclose(p.back(Δ), (Δ * y * (1 - y)) @ p.W)


def test_derivation_and_kernels_hang_off_the_class():
    derivation = Perceptron.derivation
    x = derivation.inputs[0]
    assert x.shape == (sympy.Symbol("n", positive=True, integer=True), 1)
    assert derivation.gradients["W"].args[-1] == x.T
    assert set(derivation.gradients) == {"x", "W", "b"}
    assert "dot(" in Perceptron.kernels.backward.source  # BLAS through flux.products.dot
    assert "def forward" in Perceptron.kernels.forward.source
    assert perceptron(dtype=np.float32).kernels is perceptron(m=2, n=7, dtype=np.float32).kernels


def test_elementary_functions_are_models():
    x = rng.standard_normal((3, 4))
    np.testing.assert_allclose(flux.exp(x), np.exp(x))
    np.testing.assert_allclose(flux.tanh(x), np.tanh(x))
    np.testing.assert_allclose(flux.relu(x), np.maximum(x, 0))
    np.testing.assert_allclose(flux.softplus(x), np.log1p(np.exp(x)))
    y = σ(x)
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(σ.back(np.ones_like(x)), y * (1 - y))
    assert flux.gradcheck(flux.tanh, x) < 1e-6


def test_sigmoid_gradient_is_finite_at_extremes():
    x = np.array([[-800.0, -30.0, 0.0, 30.0, 800.0]])
    y = σ(x)
    dx = σ.back(np.ones_like(x))
    assert np.isfinite(y).all() and np.isfinite(dx).all()
    np.testing.assert_allclose(dx, y * (1 - y))


def test_awkward_arrays_simply_work():
    p = perceptron()
    x = rng.standard_normal((6, 5))
    expected = p(x)
    p.back(np.ones_like(expected))
    fortran, strided = np.asfortranarray(x), np.repeat(x, 2, axis=0)[::2]
    readonly = x.copy()
    readonly.flags.writeable = False
    for variant in (fortran, strided, readonly, x.astype(np.float32), x.tolist()):
        np.testing.assert_allclose(p(variant), expected, rtol=1e-6)
    nan = x.copy()
    nan[0, 0] = np.nan
    assert np.isnan(p(nan)[0]).all() and np.isfinite(p(nan)[1:]).all()


def test_empty_batch_gives_empty_results():
    p = perceptron()
    y = p(np.zeros((0, 5)))
    assert y.shape == (0, 3)
    assert p.back(np.zeros((0, 3))).shape == (0, 5)
    assert not p.grads["W"].any()


def test_float64_inputs_to_float32_model_are_converted_but_overflow_is_refused():
    p = perceptron(dtype=np.float32)
    assert p(rng.standard_normal((2, 5))).dtype == np.float32
    with pytest.raises(ValueError, match="too large for float32"):
        p(np.full((2, 5), 1e300))

