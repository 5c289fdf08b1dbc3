"""Attention layers on sequences of tokens (a sample is X ∈ ℝ^{d×T}, one column per token; arrays (N, T, d)).

Written in the language like every layer, so their gradients are derived, shown and compiled by flux:

    MultiHeadAttention   y = W_o·[H₁; …; H_h],  Hᵢ = W_v⁽ⁱ⁾X·softmax↓(causal?(XᵀW_k⁽ⁱ⁾ᵀW_q⁽ⁱ⁾X / √(k/h)))
    LayerNorm            flux.LayerNorm on every token: μ and σ² per column of X
    TransformerBlock     Z = X + MHA(LN₁(X)),  y = Z + W₂·relu(W₁·LN₂(Z) + b₁) + b₂        (pre-norm)

W⁽ⁱ⁾ is rows i·k/h … (i+1)·k/h of W (heads by slicing); softmax↓ makes each column a distribution.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..trace.language import param
from ..trace.tokens import causal, tokens
from .activations import softmax, sqrt
from .basic import Dense
from .normalisation import LayerNorm


def check_heads(d: Any, heads: Any) -> None:
    for name, value in (("d", d), ("heads", heads)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise TypeError(f"MultiHeadAttention: {name} must be a positive integer, got {value!r}")
    if d % heads:
        raise ValueError(f"MultiHeadAttention: d = {d} must be a multiple of heads = {heads}")


class MultiHeadAttention(Model):
    """y = W_o·[H₁; …; H_h], Hᵢ = W_v⁽ⁱ⁾X·softmax↓(XᵀW_k⁽ⁱ⁾ᵀW_q⁽ⁱ⁾X / √(k/h)) (causal: query j sees keys i ≤ j).

    W_q, W_k, W_v ∈ ℝ^{k×d}, W_o ∈ ℝ^{d×k} with k = d (PyTorch's nn.MultiheadAttention with bias=False);
    W⁽ⁱ⁾ is the i-th block of k/h rows. Weights Glorot-uniform; `rng` makes them reproducible.
    """

    Wq = param("k", "d")
    Wk = param("k", "d")
    Wv = param("k", "d")
    Wo = param("d", "k")
    X = tokens("d")

    def __init__(self, d: int, heads: int, *, causal: bool = False, rng: Any = None, dtype: Any = None):
        check_heads(d, heads)
        generator = np.random.default_rng(rng)
        limit = np.sqrt(6.0 / (2 * d))
        weights = {name: generator.uniform(-limit, limit, size=(d, d)) for name in ("Wq", "Wk", "Wv", "Wo")}
        super().__init__(dtype=dtype, **weights)
        self.heads = int(heads)
        self.causal = bool(causal)

    def _check_attributes(self) -> None:
        super()._check_attributes()
        check_heads(self.params["Wq"].shape[1], self.heads)

    def forward(self, X):
        size = self.k / self.heads
        outputs = []
        for i in range(self.heads):
            rows = slice(i * size, (i + 1) * size)
            Q, K, V = self.Wq[rows, :] * X, self.Wk[rows, :] * X, self.Wv[rows, :] * X
            S = K.T * Q / sqrt(size)
            outputs.append(V * softmax(causal(S) if self.causal else S, axis=0))
        return self.Wo * (outputs[0] if len(outputs) == 1 else concat_rows(outputs))


def concat_rows(blocks: list):
    from sympy import BlockMatrix

    return BlockMatrix([[b] for b in blocks])


class TransformerBlock(Model):
    """Z = X + MHA(LN₁(X)), y = Z + W₂·relu(W₁·LN₂(Z) + b₁) + b₂: a pre-norm Transformer encoder block."""

    ln1 = LayerNorm
    attention = MultiHeadAttention
    ln2 = LayerNorm
    up = Dense
    down = Dense
    X = tokens("d")

    def __init__(self, d: int, heads: int, hidden: int, *, causal: bool = False, rng: Any = None,
                 dtype: Any = None):
        generator = np.random.default_rng(rng)
        super().__init__(ln1=LayerNorm(d, dtype=dtype),
                         attention=MultiHeadAttention(d, heads, causal=causal, rng=generator, dtype=dtype),
                         ln2=LayerNorm(d, dtype=dtype), up=Dense(d, hidden, "relu", rng=generator, dtype=dtype),
                         down=Dense(hidden, d, rng=generator, dtype=dtype))

    def forward(self, X):
        Z = X + self.attention(self.ln1(X))
        return Z + self.down(self.up(self.ln2(Z)))
