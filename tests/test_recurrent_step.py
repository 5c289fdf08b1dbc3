"""The fused recurrent training step: time loop, loss, BPTT, checks and update in one kernel call, compared with
the separate calls model(xs), model.back(Δ), model.update(optimiser)."""
import numpy as np
import pytest

import flux
from flux import GRU, LSTM, Chain, Dense, Recurrent, tanh, σ

rng = np.random.default_rng(16)
N, T_STEPS, X = 3, 4, 3


class LearnableStart(flux.Model):
    """h_t = tanh(W x_t + U h_{t−1} + b), y_t = h_t, with a learnable h₀ (the parameter "hidden0")."""

    W = flux.param("h", "x")
    U = flux.param("h", "h")
    b = flux.param("h")
    hidden = flux.state("h", learnable=True)

    def forward(self, x):
        self.hidden = tanh(self.W * x + self.U * self.hidden + self.b)
        return self.hidden


def learnable_start():
    r = np.random.default_rng(3)
    return LearnableStart(W=r.standard_normal((4, X)), U=0.5 * r.standard_normal((4, 4)), b=np.zeros(4),
                          hidden0=r.standard_normal(4), dtype=np.float64)


def tied_chain():
    """The same Dense layer used twice after a recurrent layer: one parameter, one optimiser state."""
    shared = Dense(2, 2, tanh, rng=4, dtype=np.float64)
    return Chain(Recurrent(X, 4, 2, rng=5, dtype=np.float64), shared, shared)


MODELS = {
    "recurrent": lambda: Recurrent(X, 4, 2, rng=0, dtype=np.float64),
    "lstm": lambda: LSTM(X, 3, rng=1, dtype=np.float64),
    "gru": lambda: GRU(X, 3, rng=2, dtype=np.float64),
    # Dense(σ): the maths of tests/test_recurrence.py's chain, so its forward and backward kernels are compiled once
    "chain-lstm-dense": lambda: Chain(LSTM(X, 3, rng=1, dtype=np.float64), Dense(3, 2, σ, rng=6, dtype=np.float64)),
    "learnable-h0": learnable_start,
    "tied": tied_chain,
}
OPTIMISERS = {"sgd": lambda: flux.SGD(0.1), "adam": lambda: flux.Adam(0.05)}


def separate_step(model, loss, optimiser, xs, targets, last=False):
    """The reference: forward, the loss and its gradient, back through time, update."""
    ys = model(xs)
    if last:
        value, Δ_last = loss.value_and_gradient(ys[:, -1], targets)
        Δ = np.zeros_like(ys)
        Δ[:, -1] = Δ_last
    else:
        value, Δ = loss.value_and_gradient(ys, targets)
    model.back(Δ)
    model.update(optimiser)
    return value


def data(model, last=False):
    out = np.shape(model(np.zeros((1, 1, X))))[-1]
    xs = rng.standard_normal((N, T_STEPS, X))
    targets = rng.uniform(-0.5, 0.5, (N, out) if last else (N, T_STEPS, out))
    return xs, targets


def assert_same_training(name, make_optimiser, last=False, loss=flux.mse, steps=3):
    fused_model, plain_model = MODELS[name](), MODELS[name]()
    xs, targets = data(plain_model, last)
    step = flux.compile_step(fused_model, loss, make_optimiser(), last=last)
    optimiser = make_optimiser()
    for _ in range(steps):
        fused = step(xs, targets)
        plain = separate_step(plain_model, loss, optimiser, xs, targets, last)
        assert fused == pytest.approx(plain, rel=1e-12)
    assert list(fused_model.params) == list(plain_model.params)
    for key, value in plain_model.params.items():
        np.testing.assert_allclose(fused_model.params[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    assert step.optimiser.step_count == steps
    for kind, table in optimiser.state.items():
        for key, value in table.items():
            np.testing.assert_allclose(step.optimiser.state[kind][key], value, rtol=1e-10, atol=1e-12)
    return fused_model


@pytest.mark.parametrize("name, optimiser", [("recurrent", "sgd"), ("recurrent", "adam"), ("lstm", "adam"),
                                             ("gru", "sgd"), ("chain-lstm-dense", "sgd"), ("tied", "adam"),
                                             ("learnable-h0", "adam")])
def test_fused_step_equals_forward_back_update(name, optimiser):
    model = assert_same_training(name, OPTIMISERS[optimiser])
    if name == "learnable-h0":  # h₀ is trained like any parameter
        assert not np.array_equal(model.params["hidden0"], learnable_start().params["hidden0"])


@pytest.mark.parametrize("name", ["chain-lstm-dense", "learnable-h0"])
def test_loss_on_the_last_step_only(name):
    assert_same_training(name, OPTIMISERS["sgd"], last=True)


def test_class_labels_at_every_step():
    model = Chain(Recurrent(X, 4, 3, rng=0, dtype=np.float64), flux.softmax)
    reference = Chain(Recurrent(X, 4, 3, rng=0, dtype=np.float64), flux.softmax)
    xs, labels = rng.standard_normal((N, T_STEPS, X)), rng.integers(0, 3, (N, T_STEPS))
    step = flux.compile_step(model, flux.crossentropy, flux.SGD(0.1))
    value = step(xs, labels)
    assert value == pytest.approx(separate_step(reference, flux.crossentropy, flux.SGD(0.1), xs,
                                                np.eye(3)[labels]), rel=1e-12)
    np.testing.assert_allclose(model.params["0.Whh"], reference.params["0.Whh"], rtol=1e-10)


def test_float32_training_lowers_the_loss():
    model = LSTM(X, 8, rng=0)
    step = flux.compile_step(model, flux.mse, flux.Adam(0.02))
    xs = rng.standard_normal((8, 6, X)).astype(np.float32)
    targets = np.tanh(np.cumsum(xs, axis=1)[..., :1]).repeat(8, axis=2).astype(np.float32) * 0.5
    losses = [step(xs, targets) for _ in range(60)]
    assert losses[-1] < 0.5 * losses[0]
    assert model.params["Wi"].dtype == np.float32
    assert "def train_step" in step.source


@pytest.mark.parametrize("culprit", ["loss", "h0"])
def test_non_finite_step_updates_nothing(culprit):
    model = learnable_start()
    optimiser = flux.Adam(0.05)
    step = flux.compile_step(model, flux.mse, optimiser)
    xs, targets = data(model)
    step(xs, targets)  # one good step: optimiser state exists
    before = {k: v.copy() for k, v in model.params.items()}
    state_before = {kind: {k: v.copy() for k, v in table.items()} for kind, table in optimiser.state.items()}
    if culprit == "loss":
        xs = xs.copy()
        xs[0, 1, 0] = np.nan
        message = "loss is not finite"
    else:  # h₀ = 0 and a huge U: h_t saturates for t ≥ 2 (δ_t = 0), so ∂L/∂W, ∂L/∂U, ∂L/∂b stay finite, the
        # loss too (targets 1e5), but ∂L/∂h₀ = Uᵀδ₁ ≈ 1e308 · 1e3 overflows
        model.params["U"][...] = 1e308
        model.params["hidden0"][...] = 0
        targets = np.full_like(targets, 1e5)
        before = {k: v.copy() for k, v in model.params.items()}
        message = "'hidden0' is not finite"
    with pytest.raises(FloatingPointError, match=message):
        step(xs, targets)
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key])
    for kind, table in optimiser.state.items():
        for key, value in table.items():
            np.testing.assert_array_equal(value, state_before[kind][key])
    assert optimiser.step_count == 1


def test_wrong_target_shape_is_refused_before_anything_changes():
    model = MODELS["recurrent"]()
    step = flux.compile_step(model, flux.mse, flux.SGD(0.1))
    xs, targets = data(model)
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match=r"last=True"):
        step(xs, targets[:, -1])
    with pytest.raises(ValueError, match=r"\(3, 4, 2\)"):
        step(xs, targets[:, :, :1])
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key])
    with pytest.raises(TypeError, match="not recurrent"):
        flux.compile_step(Dense(2, 2), flux.mse, flux.SGD(0.1), last=True)


def test_train_uses_the_fused_step_for_sequences():
    model, reference = MODELS["gru"](), MODELS["gru"]()
    xs, targets = data(model)
    history = flux.train(model, flux.mse, (xs, targets), flux.SGD(0.1), epochs=2, batch_size=N, shuffle=False)
    optimiser = flux.SGD(0.1)
    losses = [separate_step(reference, flux.mse, optimiser, xs, targets) for _ in range(2)]
    assert history["loss"] == pytest.approx(losses, rel=1e-12)
    for key, value in reference.params.items():
        np.testing.assert_allclose(model.params[key], value, rtol=1e-10)


def test_train_with_targets_for_the_last_step():
    model, reference = MODELS["chain-lstm-dense"](), MODELS["chain-lstm-dense"]()
    xs, targets = data(model, last=True)
    history = flux.train(model, flux.mse, (xs, targets), flux.SGD(0.1), epochs=1, batch_size=N, shuffle=False,
                         validation=(xs, targets))
    value = separate_step(reference, flux.mse, flux.SGD(0.1), xs, targets, last=True)
    assert history["loss"] == pytest.approx([value], rel=1e-12)
    assert history["val_loss"] == pytest.approx([flux.mse(reference(xs)[:, -1], targets)], rel=1e-12)


def numba_allocations(call) -> int:
    """How many arrays numba's runtime allocates during `call()` (its allocation statistics, switched on here)."""
    from numba.core.runtime import _nrt_python

    _nrt_python.memsys_enable_stats()
    before = _nrt_python.memsys_get_stats_alloc()
    call()
    return _nrt_python.memsys_get_stats_alloc() - before


# each with an optimiser it is trained with above, so the fused step is the one already compiled
@pytest.mark.parametrize("name, optimiser", [("recurrent", "sgd"), ("lstm", "adam"), ("gru", "sgd")])
def test_no_allocation_inside_the_time_loop(name, optimiser):
    """The fused step allocates as much for 3 steps as for 9 (the time loops write into the workspace and the cell
    kernels' work buffers), and reuses one workspace per shape across calls."""
    model = MODELS[name]()
    step = flux.compile_step(model, flux.mse, OPTIMISERS[optimiser]())
    out = model(rng.standard_normal((N, 1, X))).shape[2]
    counts = []
    for steps in (3, 9):
        xs, targets = rng.standard_normal((N, steps, X)), rng.standard_normal((N, steps, out))
        step(xs, targets)  # compiled, and the workspace for this shape made
        workspace = step._buffers[0, xs.shape, targets.shape]
        counts.append(numba_allocations(lambda: step(xs, targets)))
        assert step._buffers[0, xs.shape, targets.shape] is workspace
    assert counts[0] == counts[1], f"{name}: {counts[0]} allocations for 3 steps, {counts[1]} for 9"


@pytest.mark.parametrize("name, optimiser, last", [("learnable-h0", "adam", False), ("chain-lstm-dense", "sgd", True),
                                                   ("tied", "adam", False)])
def test_batch_split_over_threads_is_the_one_thread_step(split_batches, name, optimiser, last):
    """Each part of the batch runs the time loop and BPTT on its samples, weighed as in the whole batch (1/(N·T),
    or 1/N at the last step); the parts' gradients (h₀'s too) are summed and applied once."""
    split_model, plain_model = MODELS[name](), MODELS[name]()
    split_step = flux.compile_step(split_model, flux.mse, OPTIMISERS[optimiser](), last=last)
    plain_step = flux.compile_step(plain_model, flux.mse, OPTIMISERS[optimiser](), last=last)
    out = np.shape(plain_model(np.zeros((1, 1, X))))[-1]
    for samples, steps, count in [(5, 4, 2), (5, 3, 3), (1, 2, 3)]:
        xs = rng.standard_normal((samples, steps, X))
        targets = rng.uniform(-0.5, 0.5, (samples, out) if last else (samples, steps, out))
        split_batches(1)
        expected = plain_step(xs, targets)
        split_batches(count)
        assert split_step(xs, targets) == pytest.approx(expected, rel=1e-12)
    assert split_batches.parts == [2, 3]
    for key, value in plain_model.params.items():
        np.testing.assert_allclose(split_model.params[key], value, rtol=1e-11, atol=1e-13, err_msg=key)


def test_a_part_with_a_non_finite_loss_updates_nothing(split_batches):
    split_batches(2)
    model, optimiser = learnable_start(), flux.Adam(0.05)
    step = flux.compile_step(model, flux.mse, optimiser)
    xs, targets = data(model)
    step(xs, targets)
    before = {k: v.copy() for k, v in model.params.items()}
    xs = xs.copy()
    xs[-1, 1, 0] = np.nan  # in the last part only
    with pytest.raises(FloatingPointError, match="loss is not finite"):
        step(xs, targets)
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert optimiser.step_count == 1 and split_batches.parts == [2, 2]


def test_buffers_of_ever_new_sequence_lengths_are_let_go():
    """The workspace is kept per shape; sequences of ever new lengths keep the 16 most recent, not every one."""
    model = MODELS["recurrent"]()
    step = flux.compile_step(model, flux.mse, flux.SGD(0.1))
    out = np.shape(model(np.zeros((1, 1, X))))[-1]
    for steps in range(1, 21):
        step(rng.standard_normal((N, steps, X)), rng.uniform(-0.5, 0.5, (N, steps, out)))
    assert len(step._buffers) == 16
    assert (0, (N, 20, X), (N, 20, out)) in step._buffers
