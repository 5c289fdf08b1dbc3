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


# ---- at saturation (issue 12, item 4): PyTorch's clamped log, the stable logit binary cross-entropy --------------

def test_binarycrossentropy_of_a_saturated_float32_sigmoid_is_finite():
    """σ(20) is exactly 1 in float32: (1 − t)·log(1 − ŷ) was 0·log 0 = NaN."""
    p = flux.σ(np.array([[20.0]], dtype=np.float32))
    assert p[0, 0] == 1.0
    value, gradient = flux.binarycrossentropy.value_and_gradient(p, np.array([[1.0]], dtype=np.float32))
    assert value == 0.0
    np.testing.assert_array_equal(gradient, [[-1.0]])  # −t/ŷ at ŷ = 1; the clamped term contributes 0


def test_crossentropy_with_a_zero_probability_and_a_zero_target_is_zero():
    assert flux.crossentropy(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0
    value, gradient = flux.crossentropy.value_and_gradient(np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]]))
    assert value == 0.0
    np.testing.assert_array_equal(gradient, [[0.0, -1.0]])


def test_values_at_the_clamp_are_pytorchs_bceloss():
    """PyTorch's BCELoss clamps its logs at −100: BCELoss(1, 0) = BCELoss(0, 1) = 100, and a half target on a
    saturated prediction costs half of it."""
    assert flux.binarycrossentropy(np.array([[1.0]]), np.array([[0.0]])) == 100.0
    assert flux.binarycrossentropy(np.array([[0.0]]), np.array([[1.0]])) == 100.0
    assert flux.binarycrossentropy(np.array([[0.0, 1.0]]), np.array([[0.5, 1.0]])) == pytest.approx(25.0)
    assert flux.crossentropy(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == 100.0
    # the clamped log is flat there: its gradient is 0, finite, never NaN
    _, gradient = flux.binarycrossentropy.value_and_gradient(np.array([[1.0]]), np.array([[0.0]]))
    np.testing.assert_array_equal(gradient, [[0.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_crossentropy_gradient_stays_finite_at_subnormal_probabilities(dtype):
    """softmax underflows to subnormal probabilities in float32 (e^{−90}); 1/p overflows there, and a zero target's
    0·∞ would be NaN. The gradient is −t/p: 0 for the zero target, −1 for the sure one."""
    p = np.array([[1e-40, 1e-300 if dtype == np.float64 else 0.0, 1.0]], dtype=dtype)
    t = np.array([[0.0, 0.0, 1.0]], dtype=dtype)
    value, gradient = flux.crossentropy.value_and_gradient(p, t)
    assert value == 0.0
    np.testing.assert_array_equal(gradient, [[0.0, 0.0, -1.0]])


def test_clamped_losses_gradcheck_in_float64_away_from_the_clamp():
    z, t = rng.uniform(1e-6, 1 - 1e-6, (4, 3)), rng.uniform(0, 1, (4, 3))
    assert flux.gradcheck(LossOf(flux.binarycrossentropy), z, t) < 1e-6
    assert flux.gradcheck(LossOf(flux.crossentropy), z, t) < 1e-6


def test_logitbinarycrossentropy_is_binarycrossentropy_of_sigma_and_gradchecks():
    z, t = rng.standard_normal((5, 3)), (rng.uniform(0, 1, (5, 3)) > 0.5).astype(float)
    p = 1 / (1 + np.exp(-z))
    assert flux.logitbinarycrossentropy(z, t) == pytest.approx(flux.binarycrossentropy(p, t), rel=1e-12)
    value, gradient = flux.logitbinarycrossentropy.value_and_gradient(z, t)
    np.testing.assert_allclose(gradient, (p - t) / z.size, rtol=1e-12)  # mean over N·k, as BCEWithLogitsLoss
    assert flux.gradcheck(LossOf(flux.logitbinarycrossentropy), z, t) < 1e-6


def test_logitbinarycrossentropy_is_finite_and_right_at_plus_minus_1000():
    z = np.array([[1000.0, -1000.0, 1000.0, -1000.0]])
    t = np.array([[1.0, 0.0, 0.0, 1.0]])
    value, gradient = flux.logitbinarycrossentropy.value_and_gradient(z, t)
    assert value == pytest.approx((0 + 0 + 1000 + 1000) / 4)
    np.testing.assert_allclose(gradient, [[0.0, 0.0, 0.25, -0.25]], atol=1e-300)
    assert flux.gradcheck(LossOf(flux.logitbinarycrossentropy), z, t, eps=1e-4) < 1e-6
    value32, gradient32 = flux.logitbinarycrossentropy.value_and_gradient(z.astype(np.float32), t.astype(np.float32))
    assert value32 == pytest.approx(500.0) and np.isfinite(gradient32).all()


def test_the_clamp_shows_in_the_losses_maths():
    latex = flux.latex(flux.binarycrossentropy)
    assert r"\max(\log(\mathrm{prediction}), -100)" in latex
    assert r"\max(\log(\mathbf{1} - \mathrm{prediction}), -100)" in latex
    text = str(flux.crossentropy.derivation)
    assert "ℓ(prediction, target) = −Σ(max(log(prediction), −100) ⊙ target)" in text
    assert "[prediction > e⁻¹⁰⁰]/prediction" in text  # its derivative, 0 below the clamp
    assert r"\frac{[\mathrm{prediction} > e^{-100}]}{\mathrm{prediction}}" in flux.latex(flux.crossentropy.derivation)
    assert "softplus(logits)" in str(flux.logitbinarycrossentropy.derivation)
    for loss in (flux.binarycrossentropy, flux.crossentropy):
        assert "-100" in loss.__doc__ or "−100" in type(loss).__doc__


# ---- integer class labels (issue 12, item 12) --------------------------------------------------------------------

def test_onehot():
    np.testing.assert_array_equal(flux.onehot([2, 0], 3), [[0, 0, 1], [1, 0, 0]])
    assert flux.onehot([2, 0], 3).dtype == np.float32 and flux.onehot(1, 3, np.float64).dtype == np.float64
    np.testing.assert_array_equal(flux.onehot(np.int8(1), 3), [0, 1, 0])
    assert flux.onehot(np.array([[0, 1], [2, 2]]), 3).shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"label 3 at index 1 .*\[0, 3\)"):
        flux.onehot([0, 3], 3)
    with pytest.raises(ValueError, match="label -1"):
        flux.onehot([-1], 3)
    with pytest.raises(TypeError, match="integer"):
        flux.onehot([0.0, 1.0], 3)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("loss", [flux.crossentropy, flux.logitcrossentropy], ids=repr)
def test_losses_take_integer_labels_like_pytorch_cross_entropy(loss):
    z, labels = rng.standard_normal((5, 4)), np.array([3, 0, 1, 1, 2])
    prediction = softmax(z) if loss is flux.crossentropy else z
    expected = np.mean(-np.log(softmax(z)[np.arange(5), labels]))  # PyTorch's cross_entropy(z, labels)
    assert loss(prediction, labels) == pytest.approx(expected, rel=1e-12)
    value, gradient = loss.value_and_gradient(prediction, labels)
    value_1h, gradient_1h = loss.value_and_gradient(prediction, flux.onehot(labels, 4, np.float64))
    assert value == value_1h
    np.testing.assert_array_equal(gradient, gradient_1h)
    assert loss(prediction[2], 1) == pytest.approx(loss(prediction[2:3], labels[2:3]))  # one sample, one label
    sequence = prediction.reshape(1, 5, 4)  # (N, T, k) with labels (N, T)
    assert loss(sequence, labels.reshape(1, 5)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", [flux.crossentropy, flux.logitcrossentropy], ids=repr)
def test_a_label_out_of_range_is_named_with_the_loss(loss):
    with pytest.raises(ValueError, match=rf"{loss!r}: label 4 at index 1 .*\[0, 4\)"):
        loss(np.full((2, 4), 0.25), np.array([0, 4]))
    with pytest.raises(TypeError, match="class labels must be integers"):
        loss.value_and_gradient(np.full((2, 4), 0.25), np.array([0.0, 1.0]))
