"""The benchmark problems: sizes, initial parameters and one fixed batch, shared by every variant of a case.

Conventions shared by all variants (and by flux): data is batch-first, x is (N, features) or (N, T, features);
a weight W maps n inputs to m outputs and is stored m × n, so a layer computes x @ W.T + b (flux's W * x + b).
Everything is float32. SGD with lr = 0.01. Losses are means:
    mse(y, t)               = mean over every element of (y − t)²
    logitcrossentropy(z, k) = mean over the batch of (log Σⱼ exp zⱼ − z_k), with k the class (one-hot for flux/JAX)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEARNING_RATE = 0.01
SEED = 1234


@dataclass
class Problem:
    """One case's data: `params` in a fixed order (copied by each variant), the batch and its targets."""
    name: str
    params: dict[str, np.ndarray]
    x: np.ndarray
    target: np.ndarray  # float32: regression targets, or one-hot classes
    labels: np.ndarray | None = None  # int64 class indices (cross-entropy cases)
    lr: float = LEARNING_RATE
    sizes: dict[str, int] = field(default_factory=dict)

    def copy_params(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self.params.items()}


def uniform(rng: np.random.Generator, shape: tuple, fan_in: int) -> np.ndarray:
    """PyTorch's default initialisation, U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def mlp_problem(name: str, n_in: int, n_hidden: int, n_out: int, batch: int, classification: bool) -> Problem:
    rng = np.random.default_rng(SEED)
    params = {"W1": uniform(rng, (n_hidden, n_in), n_in), "b1": uniform(rng, (n_hidden,), n_in),
              "W2": uniform(rng, (n_out, n_hidden), n_hidden), "b2": uniform(rng, (n_out,), n_hidden)}
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    if classification:
        labels = rng.integers(0, n_out, size=batch)
        target = np.eye(n_out, dtype=np.float32)[labels]
        return Problem(name, params, x, target, labels, sizes=dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out))
    target = np.sin(3 * x[:, :1]) * np.cos(2 * x[:, -1:])  # a smooth function of the inputs
    return Problem(name, params, x, target.astype(np.float32),
                   sizes=dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out))


def tiny() -> Problem:
    """MLP 2-16-1, tanh hidden layer, MSE, batch 32."""
    return mlp_problem("tiny", 2, 16, 1, 32, classification=False)


def mlp() -> Problem:
    """MLP 784-128-10, relu hidden layer, logit cross-entropy, batch 64."""
    return mlp_problem("mlp", 784, 128, 10, 64, classification=True)


def wide() -> Problem:
    """MLP 784-1024-10, relu hidden layer, logit cross-entropy, batch 256."""
    return mlp_problem("wide", 784, 1024, 10, 256, classification=True)


def rnn(n_in: int = 32, n_hidden: int = 64, n_out: int = 32, steps: int = 50, batch: int = 16) -> Problem:
    """The seed's Recurrent (Elman): h_t = σ(Wxh x_t + Whh h_{t−1} + bh), y_t = σ(Wxy x_t + Why h_t + by)."""
    rng = np.random.default_rng(SEED)
    params = {"Wxh": uniform(rng, (n_hidden, n_in), n_in), "Whh": uniform(rng, (n_hidden, n_hidden), n_hidden),
              "bh": uniform(rng, (n_hidden,), n_hidden), "Wxy": uniform(rng, (n_out, n_in), n_in),
              "Why": uniform(rng, (n_out, n_hidden), n_hidden), "by": uniform(rng, (n_out,), n_hidden)}
    x = rng.standard_normal((batch, steps, n_in)).astype(np.float32)
    target = rng.uniform(0.1, 0.9, size=(batch, steps, n_out)).astype(np.float32)
    return Problem("rnn", params, x, target, sizes=dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out, steps=steps))


def gru(n_in: int = 32, n_hidden: int = 64, steps: int = 50, batch: int = 16) -> Problem:
    """GRU (flux's, Cho et al. 2014: the reset gate before the product, n = tanh(Wn x + Un (r ⊙ h) + bn)), gates
    stacked [r, z, n] (PyTorch's order) in W (3h × n_in), U (3h × h), b (3h); MSE on every h_t."""
    return _gated("gru", 3, n_in, n_hidden, steps, batch)


def lstm(n_in: int = 32, n_hidden: int = 64, steps: int = 50, batch: int = 16) -> Problem:
    """LSTM, gates stacked [i, f, g, o] (PyTorch's order) in W (4h × n_in), U (4h × h), b (4h); MSE on every h_t."""
    return _gated("lstm", 4, n_in, n_hidden, steps, batch)


def _gated(name: str, gates: int, n_in: int, n_hidden: int, steps: int, batch: int) -> Problem:
    """A gated cell's problem: `gates` blocks stacked in W, U, b; x and every-step targets."""
    rng = np.random.default_rng(SEED)
    params = {"W": uniform(rng, (gates * n_hidden, n_in), n_hidden),
              "U": uniform(rng, (gates * n_hidden, n_hidden), n_hidden),
              "b": uniform(rng, (gates * n_hidden,), n_hidden)}
    x = rng.standard_normal((batch, steps, n_in)).astype(np.float32)
    target = rng.uniform(-0.5, 0.5, size=(batch, steps, n_hidden)).astype(np.float32)
    return Problem(name, params, x, target, sizes=dict(n_in=n_in, n_hidden=n_hidden, steps=steps))


def transformer() -> Problem:
    """A pre-norm TransformerBlock's training step (issue 17): the problem and step builders of
    benchmarks/transformer.py (N 16, T 32, d 64, 4 heads, hidden 256, MSE, SGD lr 0.01)."""
    from . import transformer as case

    params, x, target = case.problem()
    return Problem("transformer", params, x, target, lr=case.LR,
                   sizes=dict(N=case.N, T=case.T, d=case.D, heads=case.HEADS, hidden=case.HIDDEN))
