"""The fused training step of token models (flux.compile_step on flux.tokens inputs): forward, loss, backward,
checks and update in one kernel call, compared with the separate calls model(X), model.back(Δ), model.update(opt)."""
import numpy as np
import pytest

import flux
from flux.layers.attention import MultiHeadAttention, TransformerBlock

D, HEADS, HIDDEN, N = 4, 2, 6, 2
rng = np.random.default_rng(17)


class Mix(flux.Model):
    """A token layer: tanh(W·X + b·1ᵀ)."""

    W = flux.param("d", "d")
    b = flux.param("d")
    X = flux.tokens("d")

    def forward(self, X):
        return flux.tanh(self.W * X + self.b)


class Twice(flux.Model):
    """The same token layer applied twice: one parameter array per weight, used in two places (a layer used twice
    in attention compiles for minutes; the sharing is the same)."""

    first = Mix
    second = Mix
    X = flux.tokens("d")

    def forward(self, X):
        return self.second(self.first(X))


class Root(flux.Model):
    """y = √(W·X + b): with b = 0 and X = 0 the loss is finite but ∂L/∂W = Σ δ·Xᵀ = ∞·0 is not."""

    W = flux.param("k", "d")
    b = flux.param("k")
    X = flux.tokens("d")

    def forward(self, X):
        return flux.sqrt(self.W * X + self.b)


def twice():
    values = np.random.default_rng(3)
    shared = Mix(W=values.standard_normal((D, D)) / 2, b=values.standard_normal(D) / 2, dtype=np.float64)
    return Twice(first=shared, second=shared)


MODELS = {
    "causal-mha": lambda: MultiHeadAttention(D, HEADS, causal=True, rng=1, dtype=np.float64),
    # causal: the same maths as tests/test_attention.py's block, so its forward and backward kernels are compiled once
    "block": lambda: TransformerBlock(D, HEADS, HIDDEN, causal=True, rng=2, dtype=np.float64),
    "tied": twice,
}
OPTIMISERS = {"sgd": lambda: flux.SGD(0.1), "adam": lambda: flux.Adam(0.05), "momentum": lambda: flux.Momentum(0.05)}


def separate_step(model, loss, optimiser, X, target):
    """The reference: forward, the loss (mean over every token) and its gradient, back, update."""
    value, Δ = loss.value_and_gradient(model(X), target)
    model.back(Δ)
    model.update(optimiser)
    return value


def batch(tokens: int):
    return rng.standard_normal((N, tokens, D)), rng.uniform(-0.5, 0.5, (N, tokens, D))


# few pairs: each is a compiled module (the other tests reuse them)
@pytest.mark.parametrize("name, optimiser", [("causal-mha", "momentum"), ("block", "adam"), ("tied", "sgd")])
def test_fused_step_equals_forward_back_update(name, optimiser):
    fused_model, plain_model = MODELS[name](), MODELS[name]()
    step = flux.compile_step(fused_model, flux.mse, OPTIMISERS[optimiser]())
    reference = OPTIMISERS[optimiser]()
    for tokens in (5, 3, 5):  # T changes between calls: the kernel reads it from the arrays
        X, target = batch(tokens)
        assert step(X, target) == pytest.approx(separate_step(plain_model, flux.mse, reference, X, target),
                                                rel=1e-12)
    assert list(fused_model.params) == list(plain_model.params)
    for key, value in plain_model.params.items():
        np.testing.assert_allclose(fused_model.params[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    assert step.optimiser.step_count == 3
    for kind, table in reference.state.items():
        for key, value in table.items():
            np.testing.assert_allclose(step.optimiser.state[kind][key], value, rtol=1e-10, atol=1e-12)


def test_tied_layer_is_one_parameter():
    model = twice()
    assert model.params["first.W"] is model.params["second.W"]
    step = flux.compile_step(model, flux.mse, flux.SGD(0.1))
    before = model.params["first.W"].copy()
    step(*batch(4))
    assert not np.array_equal(model.params["first.W"], before)
    assert model.params["first.W"] is model.params["second.W"]


def test_train_uses_the_fused_step_for_tokens():
    model, reference = MODELS["block"](), MODELS["block"]()
    X, target = batch(4)
    history = flux.train(model, flux.mse, (X, target), flux.Adam(0.05), epochs=2, batch_size=N, shuffle=False)
    optimiser = flux.Adam(0.05)
    losses = [separate_step(reference, flux.mse, optimiser, X, target) for _ in range(2)]
    assert history["loss"] == pytest.approx(losses, rel=1e-12)
    for key, value in reference.params.items():
        np.testing.assert_allclose(model.params[key], value, rtol=1e-10, err_msg=key)


def test_float32_training_lowers_the_loss():
    model = MultiHeadAttention(8, 2, causal=True, rng=0)
    step = flux.compile_step(model, flux.mse, flux.Momentum(0.05))
    X = rng.standard_normal((4, 6, 8)).astype(np.float32)
    target = np.cumsum(X, axis=1).astype(np.float32) / np.arange(1, 7, dtype=np.float32)[None, :, None]
    losses = [step(X, target) for _ in range(40)]
    assert losses[-1] < 0.5 * losses[0]
    assert model.params["Wq"].dtype == np.float32
    assert "def train_step" in step.source


def unchanged(model, optimiser, action, error, message):
    """`action` raises `error` matching `message`, and no parameter nor optimiser state has changed."""
    before = {k: v.copy() for k, v in model.params.items()}
    state_before = {kind: {k: v.copy() for k, v in table.items()} for kind, table in optimiser.state.items()}
    count = optimiser.step_count
    with pytest.raises(error, match=message):
        action()
    for key, value in model.params.items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    for kind, table in optimiser.state.items():
        for key, value in table.items():
            # a state made on this first call is made as zeros and stays so
            np.testing.assert_array_equal(value, state_before[kind].get(key, np.zeros_like(value)), err_msg=key)
    assert optimiser.step_count == count


def test_non_finite_loss_updates_nothing():
    model, optimiser = MODELS["causal-mha"](), flux.Momentum(0.05)
    step = flux.compile_step(model, flux.mse, optimiser)
    X, target = batch(4)
    step(X, target)  # one good step: the optimiser's state exists
    X[1, 2, 0] = np.nan
    unchanged(model, optimiser, lambda: step(X, target), FloatingPointError, "MultiHeadAttention: the loss is not finite")


def test_non_finite_gradient_updates_nothing():
    model, optimiser = Root(W=np.ones((3, D)), b=np.zeros(3), dtype=np.float64), flux.Momentum(0.05)
    step = flux.compile_step(model, flux.mse, optimiser)
    target = np.ones((N, 3, 3))
    unchanged(model, optimiser, lambda: step(np.zeros((N, 3, D)), target), FloatingPointError,
              "Root: the gradient of parameter 'W' is not finite; no parameter was updated")
    assert step(np.ones((N, 3, D)), target) == pytest.approx(1.0)  # and a good batch still trains


def test_bad_shapes_name_the_model_the_input_and_both_shapes():
    model, optimiser = MODELS["block"](), flux.Adam(0.05)
    step = flux.compile_step(model, flux.mse, optimiser)
    X, target = batch(3)
    step(X, target)  # one good step: the optimiser's state exists
    unchanged(model, optimiser, lambda: step(X[..., :3], target), ValueError,
              r"TransformerBlock: input x must have 4 features per token along its last axis, got shape \(2, 3, 3\)")
    unchanged(model, optimiser, lambda: step(X[0, 0], target), ValueError,
              r"TransformerBlock: input x is a sequence of tokens: it must have shape \(N, T, 4\)")
    unchanged(model, optimiser, lambda: step(X, target[:, :2]), ValueError,
              r"TransformerBlock: .*the target must have shape \(2, 3, 4\).*got \(2, 2, 4\)")
    unchanged(model, optimiser, lambda: step(X[:, :0], target[:, :0]), ValueError, "the batch is empty")
    with pytest.raises(TypeError, match="TransformerBlock takes sequences of tokens"):
        flux.compile_step(model, flux.mse, optimiser, last=True)


# --- the batch spread over threads (flux.run.threads): each part's gradients, summed, one update ---

@pytest.mark.parametrize("name, optimiser", [("causal-mha", "momentum"), ("tied", "sgd")])
def test_batch_split_over_threads_is_the_one_thread_step(split_batches, name, optimiser):
    split_model, plain_model = MODELS[name](), MODELS[name]()
    split_step = flux.compile_step(split_model, flux.mse, OPTIMISERS[optimiser]())
    plain_step = flux.compile_step(plain_model, flux.mse, OPTIMISERS[optimiser]())
    for sequences, tokens, count in [(5, 4, 2), (5, 2, 3), (7, 4, 3), (1, 3, 3)]:  # uneven parts; N < threads
        X, target = rng.standard_normal((sequences, tokens, D)), rng.uniform(-0.5, 0.5, (sequences, tokens, D))
        split_batches(1)
        expected = plain_step(X, target)
        split_batches(count)
        assert split_step(X, target) == pytest.approx(expected, rel=1e-12)
    assert split_batches.parts == [2, 3, 3]  # one sequence: one part, the one-kernel step
    for key, value in plain_model.params.items():
        np.testing.assert_allclose(split_model.params[key], value, rtol=1e-11, atol=1e-13, err_msg=key)
    assert split_step.optimiser.step_count == 4


def test_a_part_with_a_non_finite_loss_or_gradient_updates_nothing(split_batches):
    split_batches(2)
    model, optimiser = MODELS["causal-mha"](), flux.Momentum(0.05)
    step = flux.compile_step(model, flux.mse, optimiser)
    X, target = rng.standard_normal((4, 3, D)), rng.uniform(-0.5, 0.5, (4, 3, D))
    step(X, target)
    X[3, 1, 0] = np.nan  # in the second part only
    unchanged(model, optimiser, lambda: step(X, target), FloatingPointError, "MultiHeadAttention: the loss is not finite")
    root, optimiser = Root(W=np.ones((3, D)), b=np.zeros(3), dtype=np.float64), flux.Momentum(0.05)
    step = flux.compile_step(root, flux.mse, optimiser)
    X = np.ones((4, 3, D))
    X[2:] = 0  # the second part's ∂L/∂W = ∞·0
    unchanged(root, optimiser, lambda: step(X, np.ones((4, 3, 3))), FloatingPointError,
              "Root: the gradient of parameter 'W' is not finite; no parameter was updated")
    assert split_batches.parts == [2, 2, 2]


def test_one_step_called_from_two_threads_runs_one_call_at_a_time(split_batches):
    """Two threads share one step (its buffers, its gradients): the calls run in turn, so six calls on one batch
    from two threads end where six calls on one thread do."""
    import threading

    split_batches(2)
    shared, alone = MODELS["causal-mha"](), MODELS["causal-mha"]()
    shared_step = flux.compile_step(shared, flux.mse, flux.Momentum(0.05))
    alone_step = flux.compile_step(alone, flux.mse, flux.Momentum(0.05))
    X, target = rng.standard_normal((4, 5, D)), rng.uniform(-0.5, 0.5, (4, 5, D))
    barrier = threading.Barrier(2)

    def train():
        barrier.wait()
        for _ in range(3):
            shared_step(X, target)

    workers = [threading.Thread(target=train) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for _ in range(6):
        alone_step(X, target)
    for key, value in alone.params.items():
        np.testing.assert_allclose(shared.params[key], value, rtol=1e-12, atol=1e-14, err_msg=key)
