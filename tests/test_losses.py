"""Losses are maths too: values against NumPy, derived gradients against finite differences."""
import numpy as np
import pytest

import flux
from flux import Chain, Dense, relu
from models import LossOf, SoftmaxCrossEntropy

rng = np.random.default_rng(11)


def one_hot(n, k):
    return np.eye(k)[rng.integers(0, k, n)]


def test_values_match_numpy():
    z, t = rng.standard_normal((6, 4)), one_hot(6, 4)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert flux.mse(z, t) == pytest.approx(np.mean((z - t) ** 2))
    assert flux.crossentropy(p, t) == pytest.approx(np.mean(-(t * np.log(p)).sum(1)))
    assert flux.logitcrossentropy(z, t) == pytest.approx(np.mean(-(t * np.log(p)).sum(1)))
    q = 1 / (1 + np.exp(-z))
    b = (t > 0).astype(float)
    assert flux.binarycrossentropy(q, b) == pytest.approx(np.mean(-(b * np.log(q) + (1 - b) * np.log(1 - q))))
    np.testing.assert_allclose(flux.softmax(z), p)


@pytest.mark.parametrize("loss", [flux.mse, flux.logitcrossentropy, flux.crossentropy, flux.binarycrossentropy])
def test_loss_gradients(loss):
    z = rng.uniform(0.1, 0.9, (5, 3)) if loss in (flux.crossentropy, flux.binarycrossentropy) else rng.standard_normal((5, 3))
    t = one_hot(5, 3)
    assert flux.gradcheck(LossOf(loss), z, t) < 1e-6


def test_softmax_then_crossentropy():
    assert flux.gradcheck(SoftmaxCrossEntropy(), rng.standard_normal((4, 6)), one_hot(4, 6)) < 1e-6


def test_logitcrossentropy_on_extreme_logits_is_finite_and_correct():
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 999.0]])
    t = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    value, gradient = flux.logitcrossentropy.value_and_gradient(z, t)
    assert np.isfinite(value) and np.isfinite(gradient).all()
    assert value == pytest.approx((2000.0 + 1.0 + np.log1p(np.exp(-1.0))) / 2)
    softmax = np.exp(z - z.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(gradient, (softmax - t) / 2)
    assert flux.gradcheck(LossOf(flux.logitcrossentropy), z, t, eps=1e-4) < 1e-6


def test_loss_and_grad_runs_back_through_the_model():
    m = Chain(Dense(4, 8, relu, rng=0, dtype=np.float64), Dense(8, 3, rng=1, dtype=np.float64))
    x, t = rng.standard_normal((6, 4)), one_hot(6, 3)
    value = flux.loss_and_grad(m, flux.logitcrossentropy, x, t)
    assert value == pytest.approx(flux.logitcrossentropy(m(x), t))
    assert all(g.any() for g in m.grads.values())


def test_losses_on_sequences_average_over_every_time_step():
    z, t = rng.standard_normal((4, 5, 3)), rng.standard_normal((4, 5, 3))
    value, gradient = flux.mse.value_and_gradient(z, t)
    assert value == pytest.approx(np.mean((z - t) ** 2))
    assert flux.mse(z, t) == pytest.approx(value)
    np.testing.assert_allclose(gradient, 2 * (z - t) / z.size)
