"""flux.train: learns, shuffles reproducibly, validates, stops early, and stops cleanly on a non-finite loss."""
import sys

import numpy as np
import pytest

import flux
from flux.callbacks import EarlyStopping, History
from flux.train import accuracy, make_step
from models import Perceptron, perceptron


class MeanSquaredError:
    """A tiny loss with the protocol train expects: L = mean over samples of Σᵢ (yᵢ − tᵢ)², ∂L/∂y = 2(y − t)/N."""

    def __call__(self, y, t):
        return self.value_and_gradient(y, t)[0]

    def value_and_gradient(self, y, t):
        difference = y - t
        return float(np.mean(np.sum(difference**2, axis=-1))), 2 * difference / len(y)


class BrokenLoss(MeanSquaredError):
    """Turns non-finite on its `when`-th call: the value (kind="loss") or only the gradient (kind="gradient")."""

    def __init__(self, model, when, kind):
        self.model, self.when, self.kind, self.calls = model, when, kind, 0
        self.params_at_failure = None

    def value_and_gradient(self, y, t):
        self.calls += 1
        value, gradient = super().value_and_gradient(y, t)
        if self.calls == self.when:
            self.params_at_failure = {k: p.copy() for k, p in self.model.params.items()}
            if self.kind == "loss":
                return float("nan"), gradient
            return value, np.full_like(gradient, np.inf)
        return value, gradient


mse = MeanSquaredError()


def separable(n=96, seed=0):
    """Two classes on either side of the line x₁ + 2x₂ = 0.3, with a margin."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(4 * n, 2))
    score = X[:, 0] + 2 * X[:, 1] - 0.3
    X = X[np.abs(score) > 0.2][:n]
    Y = (X[:, 0] + 2 * X[:, 1] - 0.3 > 0).astype(np.float64)[:, None]
    return X, Y


def fresh_perceptron(seed=0):
    rng = np.random.default_rng(seed)
    return Perceptron(W=rng.standard_normal((1, 2)) * 0.1, b=np.zeros(1), dtype=np.float64)


def test_perceptron_learns_a_linearly_separable_problem():
    X, Y = separable()
    model = fresh_perceptron()
    history = flux.train(model, flux.binarycrossentropy, (X, Y), flux.Adam(lr=0.1), epochs=40, batch_size=16,
                         rng=0, metrics=["accuracy"], validation=separable(seed=1))
    assert isinstance(history, History) and len(history) == 40
    assert history["accuracy"][-1] == 1.0
    assert history["val_accuracy"][-1] == 1.0
    assert history["loss"][-1] < history["loss"][0]
    assert set(history.logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_train_with_own_loss_protocol_and_sgd():
    X, Y = separable()
    model = fresh_perceptron()
    history = flux.train(model, mse, (X, Y), flux.SGD(lr=0.5), epochs=30, batch_size=8, rng=1, metrics=["accuracy"])
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] >= 0.95


def test_shuffling_is_reproducible_and_a_generator_continues_across_calls():
    X, Y = separable()
    a, b, c = fresh_perceptron(), fresh_perceptron(), fresh_perceptron()
    flux.train(a, mse, (X, Y), flux.Momentum(lr=0.1), epochs=4, batch_size=10, rng=3)
    flux.train(b, mse, (X, Y), flux.Momentum(lr=0.1), epochs=4, batch_size=10, rng=3)
    generator, optimiser = np.random.default_rng(3), flux.Momentum(lr=0.1)
    flux.train(c, mse, (X, Y), optimiser, epochs=2, batch_size=10, rng=generator)
    flux.train(c, mse, (X, Y), optimiser, epochs=2, batch_size=10, rng=generator)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
        np.testing.assert_array_equal(a.params[k], c.params[k])
    d = fresh_perceptron()
    flux.train(d, mse, (X, Y), flux.Momentum(lr=0.1), epochs=4, batch_size=10, rng=4)
    assert not np.array_equal(a.params["W"], d.params["W"])


def test_early_stopping_stops_when_validation_stops_improving():
    X, Y = separable()
    model = fresh_perceptron()
    stopper = EarlyStopping(patience=2)
    history = flux.train(model, mse, (X, Y), flux.SGD(lr=0.0), epochs=20, validation=(X, Y), callbacks=[stopper])
    assert len(history) == 3 and history.stopped_epoch == 3 == stopper.stopped_epoch
    assert stopper.best_epoch == 1


def test_early_stopping_restores_the_best_parameters():
    model = perceptron(m=1, n=2)
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best=True)
    stopper.on_train_begin(model)
    best = {k: p.copy() for k, p in model.params.items()}
    assert stopper.on_epoch_end(1, {"val_loss": 1.0}) is False
    for p in model.params.values():
        p += 1.0
    assert stopper.on_epoch_end(2, {"val_loss": 2.0}) is False
    assert stopper.on_epoch_end(3, {"val_loss": 1.5}) is True
    stopper.on_train_end(model)
    for k, p in model.params.items():
        np.testing.assert_array_equal(p, best[k])


def test_early_stopping_without_validation_says_what_to_do():
    X, Y = separable()
    with pytest.raises(ValueError, match="val_loss.*validation="):
        flux.train(fresh_perceptron(), mse, (X, Y), flux.SGD(lr=0.1), callbacks=[EarlyStopping()])


def test_a_callback_can_stop_training():
    class StopAfterTwo:
        def on_epoch_end(self, epoch, logs):
            return epoch == 2

    X, Y = separable()
    history = flux.train(fresh_perceptron(), mse, (X, Y), flux.SGD(lr=0.1), epochs=10, callbacks=[StopAfterTwo()])
    assert len(history) == 2


@pytest.mark.parametrize("kind, names", [("loss", "loss"), ("gradient", "parameter 'W'")])
def test_non_finite_loss_or_gradient_stops_with_the_last_good_parameters(kind, names):
    X, Y = separable()
    model = fresh_perceptron()
    optimiser = flux.Adam(lr=0.05)
    broken = BrokenLoss(model, when=5, kind=kind)
    with pytest.raises(FloatingPointError, match=f"{names}.*epoch 1, batch 5"):
        flux.train(model, broken, (X, Y), optimiser, batch_size=8, rng=0)
    for k, p in model.params.items():
        np.testing.assert_array_equal(p, broken.params_at_failure[k])
    assert all(not g.any() for g in model.grads.values())
    assert optimiser.step_count == 4


def test_train_calls_the_given_step_for_every_batch():
    X, Y = separable(n=50)
    batches = []

    def step(x, t):
        batches.append(len(x))
        return 0.25

    history = flux.train(fresh_perceptron(), mse, (X, Y), flux.SGD(lr=0.1), epochs=2, batch_size=16, step=step)
    assert batches == [16, 16, 16, 2] * 2 and history["loss"] == [0.25, 0.25]


def test_make_step_returns_the_batch_loss_and_updates():
    X, Y = separable(n=16)
    model = fresh_perceptron()
    before, expected = model.params["W"].copy(), mse(model(X), Y)
    assert make_step(model, mse, flux.SGD(lr=0.1))(X, Y) == expected
    assert not np.array_equal(before, model.params["W"])


def test_progress_bar_only_where_it_makes_sense(capsys, monkeypatch):
    X, Y = separable(n=20)
    flux.train(fresh_perceptron(), mse, (X, Y), flux.SGD(lr=0.1), epochs=2)
    assert capsys.readouterr().err == ""  # not a terminal under pytest
    flux.train(fresh_perceptron(), mse, (X, Y), flux.SGD(lr=0.1), epochs=2, progress=True)
    assert "epoch 2/2" in capsys.readouterr().err
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(sys.modules["flux.train"], "_stderr_is_terminal", lambda: True)  # flux.train is the function
    flux.train(fresh_perceptron(), mse, (X, Y), flux.SGD(lr=0.1), epochs=2)
    assert capsys.readouterr().err == ""


def test_bad_arguments_are_refused():
    X, Y = separable(n=20)
    with pytest.raises(ValueError, match="same number of samples"):
        flux.train(fresh_perceptron(), mse, (X, Y[:5]), flux.SGD(lr=0.1))
    with pytest.raises(TypeError, match="value_and_gradient"):
        flux.train(fresh_perceptron(), lambda y, t: 0.0, (X, Y), flux.SGD(lr=0.1))
    with pytest.raises(ValueError, match="batch_size"):
        flux.train(fresh_perceptron(), mse, (X, Y), flux.SGD(lr=0.1), batch_size=0)
    with pytest.raises(ValueError, match="unknown metric"):
        flux.train(fresh_perceptron(), mse, (X, Y), flux.SGD(lr=0.1), metrics=["precision"])


def test_accuracy_for_one_and_several_outputs():
    assert accuracy(np.array([[0.9], [0.2], [0.6]]), np.array([[1.0], [0.0], [0.0]])) == pytest.approx(2 / 3)
    y = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert accuracy(y, np.array([[0, 1], [0, 1]])) == 0.5
    assert accuracy(y, np.array([1, 0])) == 1.0
