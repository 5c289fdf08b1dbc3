"""Issue 12, items 4, 7, 12 (class labels) and 15 (`from flux import *`): training through a saturated loss and with
integer labels, checks before the first update, the star import. (The losses' own tests for items 4 and 12 are in
test_losses.py, Dense's arguments of item 15 in test_layers.py.)"""
import subprocess
import sys

import numpy as np
import pytest

import flux
from flux import Chain, Dense
from flux.train import accuracy

rng = np.random.default_rng(12)


def snapshot(model):
    return {k: p.copy() for k, p in model.params.items()}


def assert_untouched(model, before):
    for k, p in model.params.items():
        np.testing.assert_array_equal(p, before[k])


# ---- item 4: training through a saturated loss -----------------------------------------------------------------

def test_training_through_a_saturated_sigmoid_goes_on():
    """On b445137 the first step's loss was NaN and training stopped with FloatingPointError."""
    model = Chain(Dense(2, 1, flux.σ, rng=0))
    model.params["0.W"][...] = 30.0  # σ(60) = 1 exactly in float32
    X, Y = np.ones((4, 2), dtype=np.float32), np.ones((4, 1), dtype=np.float32)
    history = flux.train(model, flux.binarycrossentropy, (X, Y), flux.SGD(0.1), epochs=2, batch_size=2)
    assert history["loss"] == [0.0, 0.0]
    assert np.isfinite(model.params["0.W"]).all()


# ---- item 12: loss_and_grad and train take integer labels ------------------------------------------------------

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


# ---- item 15: `from flux import *` keeps Python's abs; import flux stays free of SymPy ---------------------------

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
