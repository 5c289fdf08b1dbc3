"""Sinusoidal positional encoding (Vaswani et al. 2017), added to a sequence of tokens as a constant input.

    P[2i, t] = sin(t / 10000^{2i/d}),  P[2i+1, t] = cos(t / 10000^{2i/d})      P ∈ ℝ^{d×T}, t = 0 … T−1
    y = X + P                                                                 ∂L/∂X = Δ (no parameters)

The table P is an input of the maths, made for each call's T (as Dropout's mask is drawn for each call), so the
gradient with respect to X is exactly Δ. In a Chain, PositionalEncoding runs on arrays before the kernel compiled
for the layers after it (flux.layers.basic.Chain.parts).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..run.inputs import as_float_array
from ..trace.language import DefinitionError, is_symbolic
from ..trace.tokens import tokens


def positional_encoding(T: int, d: int, dtype: Any = np.float64) -> np.ndarray:
    """The (T, d) table Pᵀ, row t the encoding of position t: P[t, 2i] = sin(t·ω_i), P[t, 2i+1] = cos(t·ω_i),
    ω_i = 10000^{−2i/d} (batch-first, like token arrays (N, T, d); add it to every sequence)."""
    for name, value in (("T", T), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise TypeError(f"positional_encoding: {name} must be a non-negative integer, got {value!r}")
    positions = np.arange(T, dtype=np.float64)[:, None]
    frequencies = 10000.0 ** (-(np.arange(d) // 2 * 2) / d)  # column 2i and 2i+1 share ω_i
    angles = positions * frequencies
    table = np.where(np.arange(d) % 2 == 0, np.sin(angles), np.cos(angles))
    return table.astype(dtype)


class PositionalEncoding(Model):
    """y = X + P, P the sinusoidal table (P[2i, t] = sin(t/10000^{2i/d}), P[2i+1, t] = cos(…)) for the call's T.

    No parameters; ∂L/∂X = Δ exactly. `pe(X)` makes the table for X's T (X of shape (N, T, d) or (T, d), in X's
    precision); `pe(X, P)` takes one of your own.
    """

    X = tokens("d")
    P = tokens("d")

    def __init__(self, d: int):
        check_features(d)
        super().__init__()
        self.d = int(d)
        self._table_given = False

    def _check_attributes(self) -> None:
        super()._check_attributes()
        check_features(self.d)  # a file rebuilds the layer without __init__

    per_call_attributes = ("_table_given",)
    adds_inputs_per_call = True  # its table is made for each call's T: it runs on arrays, outside fused kernels

    def forward(self, X, P):
        return X + P

    def __call__(self, X: Any, P: Any = None) -> Any:
        """y = X + P, with P = positional_encoding(T, d) for X's T unless it is given."""
        if self.__dict__.get("_tracing") or is_symbolic(X):
            if P is not None:
                return self.forward(X, P)
            raise DefinitionError(
                "PositionalEncoding inside a model compiled as one kernel: its table, made for each call's T, would "
                "have to be an input of the whole model. Put it first in a flux.Chain (it then runs on arrays before "
                "the kernel of the layers after it), or declare the table as an input of your model: "
                "`P = flux.tokens(\"d\")` and `forward(self, X, P)` with `X + P`")
        self._table_given = P is not None
        if P is None:
            array = as_float_array("PositionalEncoding", "input", "X", X, self.dtype)
            if array.ndim not in (2, 3) or array.shape[-1] != self.d:
                raise ValueError(f"PositionalEncoding: input X must have shape (N, T, {self.d}) or (T, {self.d}), "
                                 f"got shape {array.shape}")
            P = positional_encoding(array.shape[-2], self.d, array.dtype)
            P = np.broadcast_to(P, array.shape)
        return super().__call__(X, P)

    def back(self, Δ: Any) -> Any:
        """∂L/∂X = Δ (and ∂L/∂P = Δ when the table was given)."""
        gradients = super().back(Δ)
        return gradients if self._table_given else gradients[0]


def check_features(d: Any) -> None:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise TypeError(f"PositionalEncoding: d must be a positive integer number of features, got {d!r}")
