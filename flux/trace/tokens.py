"""Token inputs: `X = flux.tokens("d")` declares the input X as a sequence of tokens, per sample a d×T matrix.

    class SelfAttention(flux.Model):
        Wq = flux.param("k", "d"); Wk = flux.param("k", "d"); Wv = flux.param("v", "d")
        X = flux.tokens("d")                 # X ∈ ℝ^{d×T}: one column per token
        def forward(self, X):
            Q, K, V = self.Wq * X, self.Wk * X, self.Wv * X
            return V * flux.softmax(K.T * Q / flux.sqrt(self.k), axis=0)

T is one size symbol shared by every token input; arrays are batch-first, (N, T, d), and T may differ between
calls (the kernels never depend on it). A declared dimension reads as a number inside `forward` (self.k above).
"""
from __future__ import annotations


class Tokens:
    """The declaration of a token input: per sample a `dim`×T matrix, one column per token; arrays (N, T, dim)."""

    def __init__(self, dim: str | int):
        if not isinstance(dim, (str, int)) or isinstance(dim, bool):
            raise TypeError(f"flux.tokens takes one dimension (a name or a size), got {dim!r}")
        self.dim = dim
        self.name = ""

    def __set_name__(self, owner, name):
        self.name = name

    def __repr__(self):
        return f"tokens({self.dim!r})"


def tokens(dim: str | int) -> Tokens:
    """Declare a token input with a named feature dimension: `X = flux.tokens("d")` (X ∈ ℝ^{d×T} per sample)."""
    return Tokens(dim)


def causal(S, axis: int = 0):
    """causal(S): −∞ wherever the key comes after the query, so that a softmax along the same axis never attends to
    the future. axis=0 (keys in rows, queries in columns, as in softmax(KᵀQ, axis=0)): Sᵢⱼ = −∞ for i > j, below
    the diagonal; axis=1 (queries in rows: softmax(QᵀK, axis=1)): above the diagonal."""
    from sympy import Transpose

    from ..maths.matrices import Causal

    if axis == 0:
        return Causal(S)
    if axis == 1:
        return Transpose(Causal(Transpose(S).doit())).doit()
    raise ValueError(f"causal(…, axis={axis!r}): the axis the softmax normalises, 0 (columns) or 1 (rows)")
