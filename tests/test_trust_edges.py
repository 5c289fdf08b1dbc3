"""Issue 12, items 4, 7, 12 (class labels) and 15 (activations, arguments): losses at saturation, the stable
logit binary cross-entropy, integer class labels, checks before the first update, clear errors for sharp edges."""
import subprocess
import sys

import numpy as np
import pytest

import flux
from flux import Chain, Dense
from flux.train import accuracy
from models import LossOf

rng = np.random.default_rng(12)


def snapshot(model):
    return {k: p.copy() for k, p in model.params.items()}


def assert_untouched(model, before):
    for k, p in model.params.items():
        np.testing.assert_array_equal(p, before[k])


# ---- item 4: losses at saturation ------------------------------------------------------------------------------

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


def test_training_through_a_saturated_sigmoid_goes_on():
    """On b445137 the first step's loss was NaN and training stopped with FloatingPointError."""
    model = Chain(Dense(2, 1, flux.σ, rng=0))
    model.params["0.W"][...] = 30.0  # σ(60) = 1 exactly in float32
    X, Y = np.ones((4, 2), dtype=np.float32), np.ones((4, 1), dtype=np.float32)
    history = flux.train(model, flux.binarycrossentropy, (X, Y), flux.SGD(0.1), epochs=2, batch_size=2)
    assert history["loss"] == [0.0, 0.0]
    assert np.isfinite(model.params["0.W"]).all()


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


# ---- item 12: integer class labels -----------------------------------------------------------------------------

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


def test_loss_and_grad_and_train_take_labels():
    labels = rng.integers(0, 3, 12)
    X = rng.standard_normal((12, 2)).astype(np.float32)
    a, b = Chain(Dense(2, 3, rng=1)), Chain(Dense(2, 3, rng=1))
    assert flux.loss_and_grad(a, flux.logitcrossentropy, X, labels) == pytest.approx(
        flux.loss_and_grad(b, flux.logitcrossentropy, X, flux.onehot(labels, 3)))
    a.zero_grad(), b.zero_grad()
    # the fused step (compile_step) under train: labels are made one-hot before they reach it
    h_labels = flux.train(a, flux.logitcrossentropy, (X, labels), flux.Adam(0.01), epochs=2, batch_size=4,
                          shuffle=False, metrics=["accuracy"], validation=(X, labels))
    h_onehot = flux.train(b, flux.logitcrossentropy, (X, flux.onehot(labels, 3)), flux.Adam(0.01), epochs=2,
                          batch_size=4, shuffle=False, metrics=["accuracy"], validation=(X, flux.onehot(labels, 3)))
    assert h_labels.logs == h_onehot.logs
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    before = snapshot(a)
    with pytest.raises(ValueError, match="logitcrossentropy: label 3"):
        flux.train(a, flux.logitcrossentropy, (X, np.where(labels == 0, 3, labels)), flux.SGD(0.1))
    assert_untouched(a, before)


# ---- item 7: everything is checked before the first update -------------------------------------------------------

def test_accuracy_on_sequences_and_labels():
    y = np.array([[[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]])  # (N=1, T=3, k=2)
    assert accuracy(y, np.array([[[0, 1], [0, 1], [0, 1]]])) == pytest.approx(2 / 3)
    assert accuracy(y, np.array([[1, 0, 0]])) == pytest.approx(2 / 3)  # labels (N, T)
    assert accuracy(y[..., :1], np.array([[[0.0], [1.0], [1.0]]])) == pytest.approx(2 / 3)  # one output column
    with pytest.raises(ValueError, match=r"accuracy: the target has shape \(3,\)"):
        accuracy(y, np.array([1, 0, 0]))


@pytest.mark.parametrize("outputs", [1, 2], ids=["one output, (N, T, 1) targets", "two outputs, (N, T) labels"])
def test_train_reports_accuracy_of_a_sequence_model(outputs):
    """On b445137 `metrics=["accuracy"]` crashed after the first epoch of a sequence model (reshape to (N,))."""
    model = flux.Chain(flux.Recurrent(2, 3, outputs, rng=0))
    X = rng.standard_normal((4, 5, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (4, 5))
    Y, loss = (labels[..., None].astype(np.float32), flux.mse) if outputs == 1 else (labels, flux.crossentropy)
    before = snapshot(model)
    history = flux.train(model, loss, (X, Y), flux.SGD(0.1), epochs=2, batch_size=2, metrics=["accuracy"],
                         validation=(X, Y))
    assert len(history["accuracy"]) == 2 and len(history["val_accuracy"]) == 2
    assert not np.array_equal(before["0.Wxh"], model.params["0.Wxh"])
    predicted = model(X)[..., 0] > 0.5 if outputs == 1 else model(X).argmax(-1)
    assert history["val_accuracy"][-1] == pytest.approx(np.mean(predicted == labels))


def perceptron_data():
    X = rng.standard_normal((8, 3)).astype(np.float32)
    return Dense(3, 2, flux.σ, rng=0), X, rng.uniform(0, 1, (8, 2)).astype(np.float32)


def broken_metric(y, t):
    raise ValueError("this metric cannot read the output")


class Hooks:
    def on_epoch_end(self, epoch, logs):
        return False


BEFORE_THE_FIRST_UPDATE = {
    "validation of the wrong shape": (dict(validation=(np.ones((4, 5), np.float32), np.ones((4, 2), np.float32))),
                                      ValueError, "validation set"),
    "validation targets of the wrong shape": (dict(validation=(np.ones((4, 3), np.float32),
                                                               np.ones((4, 7), np.float32))), ValueError, "validation"),
    "a metric that fails": (dict(metrics=[broken_metric]), ValueError, "cannot read the output"),
    "an unknown metric": (dict(metrics=["recall"]), ValueError, "unknown metric 'recall'"),
    "a callback class": (dict(callbacks=[flux.EarlyStopping]), TypeError, "EarlyStopping is a class"),
    "a callback without hooks": (dict(callbacks=[object()]), TypeError, "none of the methods"),
    "monitoring what is not reported": (dict(callbacks=[flux.EarlyStopping(monitor="val_accuracy")]), ValueError,
                                        "'val_accuracy'.*validation="),
    "optimiser None": (dict(optimiser=None), TypeError, "optimiser is None"),
    "a learning rate as optimiser": (dict(optimiser=0.1), TypeError, r"flux\.SGD\(0\.1\)"),
    "an optimiser class": (dict(optimiser=flux.Adam), TypeError, "pass an instance"),
    "batch_size 0": (dict(batch_size=0), ValueError, "batch_size"),
    "epochs -1": (dict(epochs=-1), ValueError, "epochs"),
    "epochs 1.5": (dict(epochs=1.5), ValueError, "epochs"),
}


@pytest.mark.parametrize("case", BEFORE_THE_FIRST_UPDATE)
def test_train_checks_everything_before_the_first_update(case):
    options, error, message = BEFORE_THE_FIRST_UPDATE[case]
    model, X, Y = perceptron_data()
    before = snapshot(model)
    options = {"optimiser": flux.SGD(0.5), "epochs": 2, "batch_size": 4, **options}
    optimiser = options.pop("optimiser")
    with pytest.raises(error, match=message):
        flux.train(model, flux.mse, (X, Y), optimiser, **options)
    assert_untouched(model, before)


def test_a_callback_with_one_hook_is_enough():
    model, X, Y = perceptron_data()
    assert len(flux.train(model, flux.mse, (X, Y), flux.SGD(0.1), epochs=2, callbacks=[Hooks()])) == 2


# ---- item 15: clear errors for activations, sizes, and `from flux import *` --------------------------------------

@pytest.mark.parametrize("name, function", [("relu", flux.relu), ("sigmoid", flux.σ), ("σ", flux.σ),
                                            ("tanh", flux.tanh), ("softmax", flux.softmax)])
def test_an_activation_given_by_name_is_flux_function(name, function):
    by_name, by_object = Dense(4, 3, name, rng=0), Dense(4, 3, function, rng=0)
    assert by_name.activation is function
    np.testing.assert_array_equal(by_name.params["W"], by_object.params["W"])  # relu: He initialisation too
    if name == "relu":
        x = rng.standard_normal((2, 4)).astype(np.float32)
        np.testing.assert_array_equal(by_name(x), by_object(x))


def test_an_unknown_activation_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Dense: unknown activation 'rleu'.*'tanh', 'relu'"):
        Dense(4, 3, "rleu")


@pytest.mark.parametrize("function, advice", [(np.tanh, "flux.tanh"), (np.exp, "flux.exp"),
                                              (np.abs, "flux.abs"), (np.maximum, "flux's functions")])
def test_a_numpy_activation_says_which_flux_function_to_use(function, advice):
    with pytest.raises(TypeError, match=rf"NumPy/math function.*{advice}"):
        Dense(4, 3, function)


def test_sizes_must_be_integers():
    with pytest.raises(TypeError, match=r"Dense: n_in must be an integer.*'4'"):
        Dense("4", 3)
    with pytest.raises(TypeError, match="n_out"):
        Dense(4, 3.0)
    with pytest.raises(ValueError, match="n_out must be a positive"):
        Dense(4, 0)
    with pytest.raises(TypeError, match="activation is a flux function"):
        Dense(4, 3, 5)
    assert Dense(np.int64(4), 3).params["W"].shape == (3, 4)


def test_star_import_keeps_python_abs():
    namespace: dict = {}
    exec("from flux import *", namespace)
    assert "abs" not in namespace and namespace["relu"] is flux.relu and namespace["onehot"] is flux.onehot
    assert "logitbinarycrossentropy" in namespace
    exec("value = abs(-2)", namespace)
    assert namespace["value"] == 2
    assert isinstance(flux.abs, flux.Elementwise)


def test_import_flux_stays_free_of_sympy_with_the_new_names():
    code = "import sys, flux; flux.onehot([1], 2); assert 'sympy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_new_losses_maths_typesets_in_mathtext():
    """test_display.py typesets crossentropy and binarycrossentropy (KaTeX and mathtext); this adds the new loss."""
    mathtext = pytest.importorskip("matplotlib.mathtext")
    parser = mathtext.MathTextParser("path")
    for block in (flux.latex(flux.logitbinarycrossentropy), flux.latex(flux.logitbinarycrossentropy.derivation)):
        assert block.isascii()
        for line in block.splitlines():
            if r"\begin" not in line and r"\end" not in line:
                parser.parse("$" + line.rstrip(" \\").replace("&", "") + "$")
