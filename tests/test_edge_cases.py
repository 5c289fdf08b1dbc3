"""Numerical edge cases and failures that must leave everything as it was.

Extends test_model/test_errors/test_losses/test_step/test_train/test_io/test_optimisers with what they do not cover:
huge pre-activations in every saturating function and through parameters, log/sqrt outside their domain, NaN/Inf
inputs against NumPy, non-finite gradients in the fused step and in `train` driving it, empty batches in the fused
step and fused chains, and "exactly as before" for gradients and optimiser state, not only parameters.
"""
import numpy as np
import pytest

import flux
from flux import Chain, Dense
from models import perceptron

rng = np.random.default_rng(9)
EXTREME = np.array([[-1e3, -40.0, -1.0, 0.0, 1.0, 40.0, 1e3]])


def stable_sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


NUMPY = {  # the function and its derivative, written the stable way
    "σ": (stable_sigmoid, lambda z: stable_sigmoid(z) * stable_sigmoid(-z)),
    "tanh": (np.tanh, lambda z: 4 * np.exp(-2 * np.abs(z)) / (1 + np.exp(-2 * np.abs(z))) ** 2),  # sech²
    "softplus": (lambda z: np.logaddexp(0.0, z), stable_sigmoid),
}


def everything(model, optimiser=None):
    """A deep copy of what an error must not change: parameters, gradients, has-gradients, optimiser state."""
    state = optimiser.state_dict() if optimiser is not None else None
    return ({k: v.copy() for k, v in model.params.items()}, {k: g.copy() for k, g in model.grads.items()},
            flux.run.state.runtime_of(model).has_grads, state)


def assert_exactly_as_before(model, before, optimiser=None):
    params, grads, has_grads, state = before
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, params[k])
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, grads[k])
    assert flux.run.state.runtime_of(model).has_grads == has_grads
    if optimiser is not None:
        now = optimiser.state_dict()
        assert now["step_count"] == state["step_count"]
        for kind in state["state"]:
            assert set(now["state"][kind]) == set(state["state"][kind])
            for name, value in state["state"][kind].items():
                np.testing.assert_array_equal(now["state"][kind][name], value)


# ---- huge and small pre-activations ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["σ", "tanh", "softplus"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_saturating_functions_at_plus_minus_1e3_are_finite_and_right(name, dtype):
    function = getattr(flux, name)
    value, derivative = NUMPY[name]
    z = EXTREME.astype(dtype)
    y = function(z)
    dz = function.back(np.ones_like(z))
    assert y.dtype == dtype and np.isfinite(y).all() and np.isfinite(dz).all()
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y, value(EXTREME), rtol=tolerance, atol=1e-300)
    # σ′ = y(1 − y) is computed from the output (so it can never overflow); where y rounds to 1 that is 0 instead
    # of σ′(40) = 4e-18: exact to the precision's resolution of σ′'s scale (¼), like every framework's sigmoid.
    resolution = 0.25 * np.finfo(dtype).eps
    np.testing.assert_allclose(dz, derivative(EXTREME), rtol=tolerance, atol=resolution)


@pytest.mark.parametrize("activation", [flux.σ, flux.tanh, flux.softplus])
def test_huge_pre_activations_give_finite_exact_parameter_gradients(activation):
    """Through W: z = W x + b = ±1e3, so ∂L/∂W = (Δ ⊙ f′(z))ᵀ x must be finite (zero, or 1 for softplus at +1e3)."""
    layer = Dense(1, 7, activation, dtype=np.float64)
    layer.W = np.ones((7, 1))
    layer.b = np.zeros(7)
    x = EXTREME.T[:, :1]  # 7 samples, one feature each: z_n = x_n for every output
    y = layer(x)
    dx = layer.back(np.ones_like(y))
    value, derivative = NUMPY[activation.function]
    local = derivative(np.repeat(x, 7, axis=1))
    np.testing.assert_allclose(y, value(np.repeat(x, 7, axis=1)), rtol=1e-12)
    resolution = 1e-15  # sums like σ′(−1)·(−1) + σ′(1)·1 cancel to rounding error, not to an exact 0
    np.testing.assert_allclose(layer.grads["W"], local.T @ x, rtol=1e-12, atol=resolution)
    np.testing.assert_allclose(layer.grads["b"], local.sum(axis=0), rtol=1e-12, atol=resolution)
    np.testing.assert_allclose(dx, local @ layer.W, rtol=1e-12, atol=resolution)


def test_logitcrossentropy_through_a_layer_with_logits_of_1e3():
    """The fused step's loss on logits ±1e3 is the stable log-sum-exp value; its gradient is finite and exact."""
    model = Chain(Dense(2, 3, dtype=np.float64))
    model.layers[0].W = np.array([[1e3, 0.0], [-1e3, 0.0], [0.0, 1e3]])
    model.layers[0].b = np.zeros(3)
    x, t = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    z = x @ model.layers[0].W.T
    expected = np.mean(np.logaddexp.reduce(z, axis=1) - (z * t).sum(axis=1))
    before = model.layers[0].W.copy()
    loss = flux.compile_step(model, flux.logitcrossentropy, flux.SGD(1e-3))(x, t)
    assert loss == pytest.approx(expected, rel=1e-12)
    softmax = np.exp(z - np.logaddexp.reduce(z, axis=1, keepdims=True))
    gradient = ((softmax - t) / 2).T @ x
    np.testing.assert_allclose(model.layers[0].W, before - 1e-3 * gradient, rtol=1e-12)


# ---- outside the domain, NaN and Inf: what NumPy does, no exception --------------------------------------------

SPECIAL = np.array([[0.0, -0.0, -1.0, -1e-300, 1e-300, np.inf, -np.inf, np.nan, 2.0]])


@pytest.mark.parametrize("name, value, derivative", [
    ("log", np.log, lambda z: 1 / z),
    ("sqrt", np.sqrt, lambda z: 0.5 / np.sqrt(z)),
    ("exp", np.exp, np.exp),
    ("abs", np.abs, np.sign),
    ("square", np.square, lambda z: 2 * z),
    ("relu", lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(float)),
])
def test_functions_outside_their_domain_behave_like_numpy(name, value, derivative):
    function = getattr(flux, name)
    with np.errstate(all="ignore"):
        expected_y, expected_dz = value(SPECIAL), derivative(SPECIAL)
    y = function(SPECIAL)
    dz = function.back(np.ones_like(SPECIAL))
    np.testing.assert_array_equal(y, expected_y)  # equal_nan: NaN where NumPy has NaN, ±inf where it has ±inf
    if name == "relu":  # relu′(NaN) is 0 (step(NaN) = 0): a NaN input still gives a NaN output, not a NaN gradient
        expected_dz = np.where(np.isnan(SPECIAL), 0.0, expected_dz)
    np.testing.assert_array_equal(dz, expected_dz)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_inputs_compute_what_numpy_computes(bad):
    model = perceptron()
    x = rng.standard_normal((3, 5))
    x[1, 2] = bad
    with np.errstate(all="ignore"):
        expected = stable_sigmoid(x @ model.W.T + model.b)
    y = model(x)
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    dx = model.back(np.ones_like(y))
    assert np.isfinite(dx[[0, 2]]).all()


# ---- non-finite training: stop, name the parameter, keep the last good state -----------------------------------

class Magnitude(flux.Model):
    """y = √((W x)^{∘2}) = |W x|: finite everywhere, but at W x = 0 its derived gradient is ∞·0 = NaN."""

    W = flux.param("m", "n")

    def forward(self, x):
        return flux.sqrt(flux.square(self.W * x))


def magnitude():
    return Magnitude(W=rng.standard_normal((2, 3)), dtype=np.float64)


def test_fused_step_with_a_non_finite_gradient_names_it_and_changes_nothing():
    model, optimiser = magnitude(), flux.Adam(0.01)
    step = flux.compile_step(model, flux.mse, optimiser)
    good_x, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    step(good_x, target)  # one good step, so Adam has moments to protect
    before = everything(model, optimiser)
    with pytest.raises(FloatingPointError, match="Magnitude: the gradient of parameter 'W' is not finite; no parameter "
                                                 "was updated"):
        step(np.zeros((4, 3)), target)
    assert_exactly_as_before(model, before, optimiser)
    expected = flux.mse(model(good_x), target)  # the step reports the loss before its update
    assert step(good_x, target) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("fused", [False, True])
def test_train_stops_on_a_non_finite_gradient_with_the_last_good_parameters(fused):
    model, optimiser = magnitude(), flux.Adam(0.01)
    X, Y = rng.standard_normal((12, 3)), rng.standard_normal((12, 2))
    X[8:] = 0.0  # the third batch of 4 gives W x = 0
    seen = []

    class Watch:  # records the parameters after every batch the step accepted
        def __init__(self, step):
            self.step = step

        def __call__(self, x, t):
            seen.append(everything(model, optimiser))
            value = self.step(x, t)
            return value

    step = flux.compile_step(model, flux.mse, optimiser) if fused else flux.train.__globals__["make_step"](
        model, flux.mse, optimiser)
    with pytest.raises(FloatingPointError, match=r"'W'.*(epoch 1, batch 3)"):
        flux.train(model, flux.mse, (X, Y), optimiser, batch_size=4, shuffle=False, step=Watch(step))
    assert len(seen) == 3
    assert_exactly_as_before(model, seen[-1], optimiser)
    assert optimiser.step_count == 2


# ---- empty batches -------------------------------------------------------------------------------------------

def test_empty_batch_through_a_fused_chain_gives_empty_results_and_no_gradient():
    model = Chain(Dense(4, 6, flux.tanh, rng=0, dtype=np.float64), Dense(6, 2, rng=1, dtype=np.float64))
    before = everything(model)
    y = model(np.zeros((0, 4)))
    assert y.shape == (0, 2)
    assert model.back(np.zeros((0, 2))).shape == (0, 4)
    params, grads, _, _ = before
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, grads[k])


def test_empty_batch_in_the_fused_step_is_a_clear_error_that_changes_nothing():
    model, optimiser = Chain(Dense(4, 3, rng=0, dtype=np.float64)), flux.Adam(0.01)
    step = flux.compile_step(model, flux.logitcrossentropy, optimiser)
    before = everything(model, optimiser)
    with pytest.raises(ValueError, match=r"Chain: the batch is empty \(x has shape \(0, 4\)\)"):
        step(np.zeros((0, 4)), np.zeros((0, 3)))
    assert_exactly_as_before(model, before, optimiser)


# ---- refused calls leave gradients and optimiser state exactly as before --------------------------------------

def test_fused_step_with_another_models_optimiser_changes_no_optimiser_state():
    optimiser = flux.Adam(0.01)
    first = Chain(Dense(4, 3, rng=0, dtype=np.float64))
    flux.compile_step(first, flux.logitcrossentropy, optimiser)(rng.standard_normal((2, 4)), np.eye(3)[:2])
    other = Chain(Dense(5, 3, rng=0, dtype=np.float64))
    step = flux.compile_step(other, flux.logitcrossentropy, optimiser)
    before = everything(other, optimiser)
    with pytest.raises(ValueError, match="0.W"):
        step(rng.standard_normal((2, 5)), np.eye(3)[:2])
    assert_exactly_as_before(other, before, optimiser)


def test_loading_another_architecture_keeps_gradients_too(tmp_path):
    flux.save(perceptron(m=2, n=3), tmp_path / "small.npz")
    big = perceptron(m=4, n=3)
    big(rng.standard_normal((2, 3)))
    big.back(np.ones((2, 4)))
    before = everything(big)
    with pytest.raises(ValueError, match="parameter 'W'"):
        flux.load(tmp_path / "small.npz", into=big)
    assert_exactly_as_before(big, before)


def test_a_literal_1_in_a_matrix_parameter_is_refused_at_declaration():
    """The kernels lay a (m, 1) or (1, n) parameter out as a vector; rather than fail later with a numba typing error
    or a wrong size check, the declaration says what to write instead."""
    with pytest.raises(TypeError, match=r"flux.param\('m', 1\): a literal dimension 1 .* flux.param\('m'\)"):
        flux.param("m", 1)
    with pytest.raises(TypeError, match="a literal dimension 1"):
        flux.param(1, "n")
