"""Gated and bilinear layers and the residual connection, written in the same syntax as user layers.

    flux.Highway(64)                 # y = t ⊙ H(x) + (1 − t) ⊙ x
    flux.GLU(64, 32)                 # y = (W x + b) ⊙ σ(V x + c)
    flux.Bilinear(8, 6, 4)           # y_k = x₁ᵀ W_k x₂ + b_k
    flux.SkipConnection(layer)       # y = x + f(x)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..trace.language import concat, hadamard, param
from .activations import σ
from .arguments import check_size
from .basic import as_activation, common_dtype


class Highway(Model):
    """Highway layer (Srivastava, Greff & Schmidhuber 2015): a learned mix of a transform and the input itself,

        t = σ(W_t x + b_t)            transform gate
        y = t ⊙ f(W_h x + b_h) + (1 − t) ⊙ x

    with W_t, W_h ∈ ℝ^{n×n}, f = relu unless `activation=` says otherwise (a flux function, its name, or None for
    none). W_h is initialised as Dense's (He-normal for relu, Glorot-uniform otherwise), W_t Glorot-uniform,
    b_h = 0 and b_t = −1 (`gate_bias=`): the layer starts by mostly carrying x through, as the paper advises.
    """

    Wt = param("n", "n")
    bt = param("n")
    Wh = param("n", "n")
    bh = param("n")

    def __init__(self, n: int, activation: Any = "relu", *, gate_bias: float = -1.0, rng: Any = None,
                 dtype: Any = None):
        check_size("Highway", "n", n)
        activation = as_activation(activation, "Highway")
        generator = np.random.default_rng(rng)
        super().__init__(Wt=glorot(generator, n, n), bt=np.full(n, float(gate_bias)),
                         Wh=dense_weights(generator, n, n, activation), bh=np.zeros(n), dtype=dtype)
        self.activation = activation

    def forward(self, x):
        t = σ(self.Wt * x + self.bt)
        z = self.Wh * x + self.bh
        h = z if self.activation is None else self.activation(z)
        return hadamard(t, h) + hadamard(1 - t, x)


class GLU(Model):
    """Gated linear unit (Dauphin et al. 2017), a linear map gated by a second one:

        y = (W x + b) ⊙ σ(V x + c)

    with W, V ∈ ℝ^{out×in} Glorot-uniform and b = c = 0. (PyTorch's `nn.functional.glu` is the parameter-free half:
    it splits its input into a and b and returns a ⊙ σ(b); this layer is `glu` applied to [W x + b; V x + c].)
    """

    W = param("out", "in")
    b = param("out")
    V = param("out", "in")
    c = param("out")

    def __init__(self, n_in: int, n_out: int, *, rng: Any = None, dtype: Any = None):
        check_size("GLU", "n_in", n_in)
        check_size("GLU", "n_out", n_out)
        generator = np.random.default_rng(rng)
        super().__init__(W=glorot(generator, n_out, n_in), b=np.zeros(n_out), V=glorot(generator, n_out, n_in),
                         c=np.zeros(n_out), dtype=dtype)

    def forward(self, x):
        return hadamard(self.W * x + self.b, σ(self.V * x + self.c))


class BilinearForm(Model):
    """One bilinear form of two vectors, a per-sample scalar: y = x₁ᵀ W x₂ with W ∈ ℝ^{n₁×n₂}."""

    W = param("n1", "n2")

    def forward(self, x1, x2):
        return x1.T * self.W * x2


class Bilinear(Model):
    """Bilinear layer, as PyTorch's `nn.Bilinear(n1, n2, n_out)`: one bilinear form of the two inputs per output,

        y_k = x₁ᵀ W_k x₂ + b_k,   k = 1 … n_out,   i.e.  y = [x₁ᵀ W₁ x₂; …; x₁ᵀ W_K x₂] + b

    A parameter is a vector or a matrix, so the tensor (W_k) is n_out matrices W_k ∈ ℝ^{n₁×n₂}, the sub-models
    `0` … `K−1` (parameters "0.W", "1.W", …; PyTorch's `weight[k]` is `params[f"{k}.W"]`), and b ∈ ℝ^K.
    Initialised as PyTorch's: every entry U(±1/√n₁). The traced maths has one form per output, so each n_out
    compiles its own kernels (any n₁, n₂ share them).
    """

    b = param("out")

    def __init__(self, n1: int, n2: int, n_out: int, *, rng: Any = None, dtype: Any = None):
        for name, size in (("n1", n1), ("n2", n2), ("n_out", n_out)):
            check_size("Bilinear", name, size)
        generator = np.random.default_rng(rng)
        bound = 1 / np.sqrt(n1)
        forms = [BilinearForm(W=generator.uniform(-bound, bound, size=(n1, n2)), dtype=dtype) for _ in range(n_out)]
        super().__init__(b=generator.uniform(-bound, bound, size=n_out), dtype=dtype)
        self.forms = forms

    def named_submodels(self) -> list:
        return [(str(k), form) for k, form in enumerate(self.forms)]

    def adopt_submodels(self, views: dict) -> None:
        self.forms = [views.get(str(k), form) for k, form in enumerate(self.forms)]

    def forward(self, x1, x2):
        forms = [form(x1, x2) for form in self.forms]
        return (forms[0] if len(forms) == 1 else concat(*forms)) + self.b


class SkipConnection(Model):
    """A residual connection (He et al. 2016) around a layer f whose output has its input's size:

        y = x + f(x)

    f is any model or function of one vector (a Dense, a Chain, flux.tanh …); its parameters are "layer.…".
    """

    def __init__(self, layer: Any):
        if not callable(layer):
            raise TypeError(f"SkipConnection needs a model or function of one vector, got {layer!r}")
        super().__init__(dtype=common_dtype([layer]))
        self.layer = layer

    def named_submodels(self) -> list:
        return [("layer", self.layer)] if isinstance(self.layer, Model) else []

    def adopt_submodels(self, views: dict) -> None:
        self.layer = views.get("layer", self.layer)

    def forward(self, x):
        return x + self.layer(x)


def glorot(generator: np.random.Generator, n_out: int, n_in: int) -> np.ndarray:
    """Glorot-uniform: U(±√(6/(in + out)))."""
    limit = np.sqrt(6.0 / (n_in + n_out))
    return generator.uniform(-limit, limit, size=(n_out, n_in))


def dense_weights(generator: np.random.Generator, n_out: int, n_in: int, activation: Any) -> np.ndarray:
    """Dense's initialisation: He-normal (std √(2/in)) before a relu, Glorot-uniform otherwise."""
    if activation is not None and getattr(activation, "function", None) == "relu":
        return generator.normal(0.0, np.sqrt(2.0 / n_in), size=(n_out, n_in))
    return glorot(generator, n_out, n_in)
