"""Every flux-specific line of the benchmarks: the flux variant of each case, and the start-up script.

Two variants per case:
    <case>_step  the fused training step: `step = flux.compile_step(model, loss, flux.SGD(lr))`, `step(x, target)`
    <case>_call  the Model protocol: `flux.loss_and_grad(model, loss, x, target)` then `model.update(lr=lr)`;
                 while `loss_and_grad` does not exist, `y = model(x)`, the loss and Δ = ∂L/∂y in NumPy,
                 `model.back(Δ)`, `model.update(lr=lr)`
Each returns a zero-argument `step()` returning the loss, or raises NotImplementedError/AttributeError/ImportError
when the API it needs is not there yet (the table shows "n/a" with the reason). `step.note` says which path ran.
Models are built with the planned API (`flux.Chain`, `flux.Dense`, `flux.LSTM`); until Chain/Dense exist, the MLPs
fall back to one hand-written `flux.Model` class with both layers in its `forward` (and the note says so).
"""
from __future__ import annotations

import json
import sys

import numpy as np

import flux
from flux import σ

from .problems import Problem


# ---- models ------------------------------------------------------------------------------------------------

class TanhMLP(flux.Model):
    """y = W2 tanh(W1 x + b1) + b2 — the fallback while flux.Chain/flux.Dense do not exist."""
    W1 = flux.param("h", "n"); b1 = flux.param("h")
    W2 = flux.param("o", "h"); b2 = flux.param("o")

    def forward(self, x):
        return self.W2 * flux.tanh(self.W1 * x + self.b1) + self.b2


class ReluMLP(TanhMLP):
    """z = W2 relu(W1 x + b1) + b2."""

    def forward(self, x):
        return self.W2 * flux.relu(self.W1 * x + self.b1) + self.b2


class Recurrent(flux.Model):
    """The seed's Recurrent (issue 4): h_t = σ(Wxh x_t + Whh h_{t−1} + bh), y_t = σ(Wxy x_t + Why h_t + by)."""
    Wxh = flux.param("h", "x"); Whh = flux.param("h", "h"); bh = flux.param("h")
    Wxy = flux.param("y", "x"); Why = flux.param("y", "h"); by = flux.param("y")
    hidden = flux.state("h")

    def forward(self, x):
        self.hidden = σ(self.Wxh * x + self.Whh * self.hidden + self.bh)
        return σ(self.Wxy * x + self.Why * self.hidden + self.by)


def mlp_model(problem: Problem, activation: str) -> tuple[flux.Model, str]:
    s = problem.sizes
    if hasattr(flux, "Chain") and hasattr(flux, "Dense"):
        model = flux.Chain(flux.Dense(s["n_in"], s["n_hidden"], getattr(flux, activation)),
                           flux.Dense(s["n_hidden"], s["n_out"]))
        return model, "Chain(Dense, Dense)" + load_params(model, problem)
    model_class = TanhMLP if activation == "tanh" else ReluMLP
    model = model_class(**problem.copy_params())
    return model, f"one flux.Model class ({model_class.__name__}; flux.Chain/Dense not available yet)"


def recurrent_model(problem: Problem) -> tuple[flux.Model, str]:
    return Recurrent(**problem.copy_params()), "the seed's Recurrent as a flux.Model"


def lstm_model(problem: Problem) -> tuple[flux.Model, str]:
    s = problem.sizes
    model = flux.LSTM(s["n_in"], s["n_hidden"])
    H, params = s["n_hidden"], model.params
    per_gate = {f"{kind}{gate}": problem.params[kind][k * H:(k + 1) * H]  # the baselines stack gates [i, f, g, o]
                for kind in ("W", "U", "b") for k, gate in enumerate("ifgo")}
    if set(per_gate) == set(params) and all(params[n].shape == v.shape for n, v in per_gate.items()):
        for name, value in per_gate.items():
            np.copyto(params[name], value)
        return model, "flux.LSTM"
    return model, "flux.LSTM" + load_params(model, problem)


def gru_model(problem: Problem) -> tuple[flux.Model, str]:
    s = problem.sizes
    model = flux.GRU(s["n_in"], s["n_hidden"])
    H, params = s["n_hidden"], model.params
    for kind in ("W", "U", "b"):  # the baselines stack gates [r, z, n]
        for k, gate in enumerate("rzn"):
            np.copyto(params[f"{kind}{gate}"], problem.params[kind][k * H:(k + 1) * H])
    return model, "flux.GRU"


def load_params(model: flux.Model, problem: Problem) -> str:
    """Copy the case's initial parameters into the model when its parameters line up (same count and shapes, in
    order); otherwise keep flux's own initialisation and say so (the step costs the same; losses then differ)."""
    targets, values = list(model.params.values()), list(problem.params.values())
    if len(targets) == len(values) and all(t.shape == v.shape for t, v in zip(targets, values)):
        for t, v in zip(targets, values):
            np.copyto(t, v)
        return ""
    return "; flux's own initial parameters (its layout differs from the baselines'), losses not comparable"


# ---- the variants ------------------------------------------------------------------------------------------

def tiny_step(problem: Problem):
    return fused_step(problem, *mlp_model(problem, "tanh"), "mse")


def tiny_call(problem: Problem):
    return protocol_step(problem, *mlp_model(problem, "tanh"), "mse")


def mlp_step(problem: Problem):
    return fused_step(problem, *mlp_model(problem, "relu"), "logitcrossentropy")


def mlp_call(problem: Problem):
    return protocol_step(problem, *mlp_model(problem, "relu"), "logitcrossentropy")


wide_step, wide_call = mlp_step, mlp_call


def rnn_step(problem: Problem):
    return fused_step(problem, *recurrent_model(problem), "mse")


def rnn_call(problem: Problem):
    return protocol_step(problem, *recurrent_model(problem), "mse", sequence=True)


def lstm_step(problem: Problem):
    return fused_step(problem, *lstm_model(problem), "mse")


def lstm_call(problem: Problem):
    return protocol_step(problem, *lstm_model(problem), "mse", sequence=True)


def gru_step(problem: Problem):
    return fused_step(problem, *gru_model(problem), "mse")


def gru_call(problem: Problem):
    return protocol_step(problem, *gru_model(problem), "mse", sequence=True)


def fused_step(problem: Problem, model: flux.Model, description: str, loss: str):
    """One compiled call per step: forward, loss, backward and SGD together."""
    train_step = flux.compile_step(model, getattr(flux, loss), flux.SGD(problem.lr))
    x, target = problem.x, problem.target

    def step():
        return train_step(x, target)

    step.note = f"{description}; flux.compile_step(model, flux.{loss}, flux.SGD)"
    step.comparable = "not comparable" not in description
    return step


def protocol_step(problem: Problem, model: flux.Model, description: str, loss: str, sequence: bool = False):
    """The Model protocol, one call after another: forward (+ loss) and back, then update. Sequences (N, T, ·) go
    through `model(xs)` / `model.back(dys)` with the loss in NumPy: flux's losses are defined on (N, features)."""
    x, target, lr = problem.x, problem.target, problem.lr
    if hasattr(flux, "loss_and_grad") and hasattr(flux, loss) and not sequence:
        loss_function = getattr(flux, loss)

        def step():
            value = flux.loss_and_grad(model, loss_function, x, target)
            model.update(lr=lr)
            return value[0] if isinstance(value, tuple) else value

        how = f"flux.loss_and_grad(model, flux.{loss}, x, t); model.update(lr=)"
    else:
        loss_and_delta = LOSSES_BY_HAND[loss]

        def step():
            value, delta = loss_and_delta(model(x), target)
            model.back(delta)
            model.update(lr=lr)
            return value

        why = "on (N, T, ·) sequences" if sequence else f"(flux.loss_and_grad/flux.{loss} not available yet)"
        how = f"model(x); {loss} and Δ in NumPy {why}; back(Δ); update(lr=)"
    step.note = f"{description}; {how}"
    step.comparable = "not comparable" not in description
    return step


def mse_by_hand(y: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    d = y - t
    return float(np.vdot(d, d)) / d.size, d * np.float32(2 / d.size)


def logitcrossentropy_by_hand(z: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    value = float(np.mean(np.log(total[:, 0]) - (shifted * t).sum(axis=1)))
    return value, (e / total - t) * np.float32(1 / len(z))


LOSSES_BY_HAND = {"mse": mse_by_hand, "logitcrossentropy": logitcrossentropy_by_hand}


# ---- start-up: run in a fresh interpreter (`python -c STARTUP_SCRIPT kind`) from the repository root ------

STARTUP_MODELS = {"dense": "Dense 784→128 relu", "chain": "Chain 784→128→10", "lstm": "LSTM 32→64"}

STARTUP_SCRIPT = r'''
import json, sys, time
start = time.perf_counter()
import flux
imported = time.perf_counter()
kind = sys.argv[1]
result = {"import": imported - start, "note": ""}
if kind != "import":
    import numpy as np
    rng = np.random.default_rng(0)
    if kind == "lstm":
        model, x = flux.LSTM(32, 64), rng.standard_normal((16, 50, 32)).astype(np.float32)
    else:
        x = rng.standard_normal((64, 784)).astype(np.float32)
        if hasattr(flux, "Dense"):
            model = (flux.Dense(784, 128, flux.relu) if kind == "dense"
                     else flux.Chain(flux.Dense(784, 128, flux.relu), flux.Dense(128, 10)))
        else:
            from flux import relu
            class Perceptron(flux.Model):
                W = flux.param("m", "n"); b = flux.param("m")
                def forward(self, x):
                    return relu(self.W * x + self.b)
            class MLP(flux.Model):
                W1 = flux.param("h", "n"); b1 = flux.param("h"); W2 = flux.param("o", "h"); b2 = flux.param("o")
                def forward(self, x):
                    return self.W2 * relu(self.W1 * x + self.b1) + self.b2
            z = lambda *shape: np.zeros(shape, np.float32)
            model = (Perceptron(W=z(128, 784), b=z(128)) if kind == "dense"
                     else MLP(W1=z(128, 784), b1=z(128), W2=z(10, 128), b2=z(10)))
            result["note"] = "a flux.Model class (flux.Dense/Chain not available yet)"
    y = model(x)
    model.back(np.ones_like(y))
    model.update(lr=0.01)
    result["ready"] = time.perf_counter() - imported
print("STARTUP " + json.dumps(result))
'''


def transformer_step(problem: Problem):
    """The TransformerBlock case, fused: benchmarks/transformer.py's flux.compile_step."""
    from .transformer import flux_fused_step

    return flux_fused_step(problem.copy_params(), problem.x, problem.target)


def transformer_call(problem: Problem):
    """The TransformerBlock case: benchmarks/transformer.py's flux step."""
    from .transformer import flux_step

    return flux_step(problem.copy_params(), problem.x, problem.target)
