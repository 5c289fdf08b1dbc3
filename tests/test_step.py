"""The fused training step: one kernel doing forward, loss, backward and the optimiser's update."""
import numpy as np
import pytest

import flux
from flux import Chain, Dense, relu, tanh

rng = np.random.default_rng(5)
X, T = rng.standard_normal((6, 4)), np.eye(3)[rng.integers(0, 3, 6)]


def mlp():
    return Chain(Dense(4, 8, relu, rng=0, dtype=np.float64), Dense(8, 3, rng=1, dtype=np.float64))


@pytest.mark.parametrize("make", [lambda: flux.SGD(0.1), lambda: flux.Momentum(0.1), lambda: flux.Nesterov(0.1),
                                  lambda: flux.RMSProp(0.01), lambda: flux.Adam(0.01)])
def test_fused_step_equals_forward_back_update(make):
    fused_model, plain_model = mlp(), mlp()
    step = flux.compile_step(fused_model, flux.logitcrossentropy, make())
    optimiser = make()
    for _ in range(3):
        fused_loss = step(X, T)
        plain_loss = flux.loss_and_grad(plain_model, flux.logitcrossentropy, X, T)
        plain_model.update(optimiser)
        assert fused_loss == pytest.approx(plain_loss, rel=1e-12)
    for name, value in plain_model.params.items():
        np.testing.assert_allclose(fused_model.params[name], value, rtol=1e-10, atol=1e-12)
    assert step.optimiser.step_count == 3


def test_fused_step_with_mse_and_float32():
    model = Chain(Dense(2, 16, tanh, rng=0), Dense(16, 1, rng=1))
    step = flux.compile_step(model, flux.mse, flux.SGD(0.05))
    x = rng.standard_normal((32, 2)).astype(np.float32)
    y = (x[:, :1] * x[:, 1:]).astype(np.float32)
    losses = [step(x, y) for _ in range(200)]
    assert losses[-1] < 0.5 * losses[0]
    assert model.params["0.W"].dtype == np.float32
    assert "def train_step" in step.source


def test_non_finite_loss_updates_nothing():
    model = Chain(Dense(2, 2, rng=0, dtype=np.float64), flux.softmax)
    step = flux.compile_step(model, flux.crossentropy, flux.SGD(0.1))
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(FloatingPointError, match="not finite"):
        step(np.array([[np.nan, 1.0]]), np.array([[0.0, 1.0]]))  # (a zero probability now costs a finite 100)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
    assert step.optimiser.step_count == 0


def test_optimiser_of_another_model_is_refused():
    optimiser = flux.Adam(0.01)
    flux.compile_step(mlp(), flux.logitcrossentropy, optimiser)(X, T)
    other = Chain(Dense(4, 5, relu, dtype=np.float64), Dense(5, 3, dtype=np.float64))
    step = flux.compile_step(other, flux.logitcrossentropy, optimiser)
    before = {k: v.copy() for k, v in other.params.items()}
    with pytest.raises(ValueError, match="0.W"):
        step(X, T)
    for k, v in other.params.items():
        np.testing.assert_array_equal(v, before[k])
