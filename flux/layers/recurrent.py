"""Recurrent layers, written in the same syntax as user layers: each `forward` is ONE time step.

A state declared with `flux.state` is h_{t−1} when `forward` reads it and becomes h_t when `forward` assigns
it; flux runs the step over whole sequences (N, T, features) in one compiled time loop (see `flux.derive.recurrence`).

    rnn = flux.LSTM(8, 32, rng=0)
    ys = rnn(xs)                      # xs (N, T, 8) → ys (N, T, 32), starting from h₀ = c₀ = 0
    dxs = rnn.back(dys)               # backprop through time; parameter gradients in rnn.grads
    rnn.state_grads["h"]              # ∂L/∂h₀ (N, 32)
    ys2 = rnn(more_xs, carry=True)    # truncated BPTT: continue from the last state, no gradient across
    y_t = rnn.step(x_t)               # one step at a time (generation); rnn.reset() starts afresh
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..trace.language import hadamard, param, state
from .activations import tanh, σ


class Recurrent(Model):
    """The Elman network of the seed, a hidden state that depends on itself:

        h_t = σ(Wxh x_t + Whh h_{t−1} + bh)
        y_t = σ(Wxy x_t + Why h_t + by)

    Build it from arrays, `Recurrent(Wxh=…, Whh=…, bh=…, Wxy=…, Why=…, by=…)`, or from sizes,
    `Recurrent(n_in, n_hidden, n_out, rng=0)` (Glorot-uniform weights, zero biases).
    """

    Wxh = param("h", "x"); Whh = param("h", "h"); bh = param("h")  # noqa: E702 — the seed's layout
    Wxy = param("y", "x"); Why = param("y", "h"); by = param("y")  # noqa: E702
    hidden = state("h")  # time-indexed: read before assignment it is h[t-1]

    def __init__(self, n_in: int | None = None, n_hidden: int | None = None, n_out: int | None = None, *,
                 rng: Any = None, dtype: Any = None, **values: Any):
        if n_in is not None:
            generator = np.random.default_rng(rng)
            values = dict(Wxh=glorot(generator, n_hidden, n_in), Whh=glorot(generator, n_hidden, n_hidden),
                          bh=np.zeros(n_hidden), Wxy=glorot(generator, n_out, n_in),
                          Why=glorot(generator, n_out, n_hidden), by=np.zeros(n_out)) | values
        super().__init__(dtype=dtype, **values)

    def forward(self, x):
        self.hidden = σ(self.Wxh * x + self.Whh * self.hidden + self.bh)  # h[t]
        return σ(self.Wxy * x + self.Why * self.hidden + self.by)  # uses the new h[t]


class LSTM(Model):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), output y_t = h_t:

        i_t = σ(Wi x_t + Ui h_{t−1} + bi)          input gate
        f_t = σ(Wf x_t + Uf h_{t−1} + bf)          forget gate
        o_t = σ(Wo x_t + Uo h_{t−1} + bo)          output gate
        g_t = tanh(Wg x_t + Ug h_{t−1} + bg)       candidate cell
        c_t = f_t ⊙ c_{t−1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)

    W· are Glorot-uniform, U· orthogonal, biases zero except bf = 1 (remember by default); h₀ = c₀ = 0.
    """

    Wi = param("h", "in"); Ui = param("h", "h"); bi = param("h")  # noqa: E702
    Wf = param("h", "in"); Uf = param("h", "h"); bf = param("h")  # noqa: E702
    Wo = param("h", "in"); Uo = param("h", "h"); bo = param("h")  # noqa: E702
    Wg = param("h", "in"); Ug = param("h", "h"); bg = param("h")  # noqa: E702
    h = state("h")
    c = state("h")

    def __init__(self, n_in: int, n_hidden: int, *, rng: Any = None, dtype: Any = None):
        generator = np.random.default_rng(rng)
        values = {}
        for gate in "ifog":
            values[f"W{gate}"] = glorot(generator, n_hidden, n_in)
            values[f"U{gate}"] = orthogonal(generator, n_hidden)
            values[f"b{gate}"] = np.ones(n_hidden) if gate == "f" else np.zeros(n_hidden)
        super().__init__(dtype=dtype, **values)

    def forward(self, x):
        i = σ(self.Wi * x + self.Ui * self.h + self.bi)
        f = σ(self.Wf * x + self.Uf * self.h + self.bf)
        o = σ(self.Wo * x + self.Uo * self.h + self.bo)
        g = tanh(self.Wg * x + self.Ug * self.h + self.bg)
        self.c = hadamard(f, self.c) + hadamard(i, g)
        self.h = hadamard(o, tanh(self.c))
        return self.h


class GRU(Model):
    """Gated recurrent unit (Cho et al. 2014), output y_t = h_t:

        r_t = σ(Wr x_t + Ur h_{t−1} + br)                    reset gate
        z_t = σ(Wz x_t + Uz h_{t−1} + bz)                    update gate
        n_t = tanh(Wn x_t + Un (r_t ⊙ h_{t−1}) + bn)         candidate
        h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ n_t

    W· are Glorot-uniform, U· orthogonal, biases zero; h₀ = 0.
    """

    Wr = param("h", "in"); Ur = param("h", "h"); br = param("h")  # noqa: E702
    Wz = param("h", "in"); Uz = param("h", "h"); bz = param("h")  # noqa: E702
    Wn = param("h", "in"); Un = param("h", "h"); bn = param("h")  # noqa: E702
    h = state("h")

    def __init__(self, n_in: int, n_hidden: int, *, rng: Any = None, dtype: Any = None):
        generator = np.random.default_rng(rng)
        values = {}
        for gate in "rzn":
            values[f"W{gate}"] = glorot(generator, n_hidden, n_in)
            values[f"U{gate}"] = orthogonal(generator, n_hidden)
            values[f"b{gate}"] = np.zeros(n_hidden)
        super().__init__(dtype=dtype, **values)

    def forward(self, x):
        r = σ(self.Wr * x + self.Ur * self.h + self.br)
        z = σ(self.Wz * x + self.Uz * self.h + self.bz)
        n = tanh(self.Wn * x + self.Un * hadamard(r, self.h) + self.bn)
        self.h = self.h - hadamard(z, self.h) + hadamard(z, n)
        return self.h


def glorot(generator: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    """Glorot-uniform: U(±√(6/(in + out)))."""
    limit = np.sqrt(6.0 / (n_in + n_out))
    return generator.uniform(-limit, limit, size=(n_out, n_in))


def orthogonal(generator: np.random.Generator, n: int) -> np.ndarray:
    """A random orthogonal n × n matrix (QR of a Gaussian one, signs fixed): keeps ‖U h‖ = ‖h‖ at the start."""
    q, r = np.linalg.qr(generator.standard_normal((n, n)))
    return q * np.sign(np.diag(r))
