"""Nodes for matrices per sample (a sequence of T tokens is a d×T matrix X, one column per token).

    ColumnSoftmax(S)   A = softmax(S) column by column: Aᵢⱼ = e^{Sᵢⱼ} / Σₖ e^{Sₖⱼ} (each column a distribution)
    Causal(S)          S with every entry below the diagonal (row i > column j: a key after its query) set to −∞
    CausalZeros(Δ)     Δ with those entries set to 0: the VJP of Causal (and of itself)
    ColumnTotals(M)    1ᵀM, the 1×c row of column sums
    RowSpread(r, m)    1·r, a 1×c row r repeated into m equal rows

Each has one VJP rule in `flux.derive.matrix_rules`, one method in the token printer (`flux.generate.token_*`)
and one in each display printer (`flux.show.matrix_printers`). Shapes are per sample; the batch never appears.
"""
from __future__ import annotations

import sympy
from sympy.matrices.expressions.matexpr import MatrixExpr

from .nodes import NamedFunction, UnaryNode


class ColumnSoftmax(NamedFunction):
    """A = softmax(S) over each column (flux.softmax(S, axis=0)), max-shifted: Aᵢⱼ = e^{Sᵢⱼ − mⱼ} / Σₖ e^{Sₖⱼ − mⱼ}."""

    printed_name = "softmax"

    @property
    def shape(self):
        return self.argument.shape


class Causal(NamedFunction):
    """causal(S): Sᵢⱼ for i ≤ j, −∞ for i > j. With keys in rows and queries in columns (S = KᵀQ), query j then
    attends to the keys i ≤ j only, after a column softmax."""

    printed_name = "causal"

    @property
    def shape(self):
        return self.argument.shape


class CausalZeros(NamedFunction):
    """M ⊙ Δ for the causal mask M (Mᵢⱼ = [i ≤ j]): Δ with the entries causal(·) sets to −∞ set to 0."""

    printed_name = "mask"

    @property
    def shape(self):
        return self.argument.shape


class ColumnTotals(UnaryNode):
    """1ᵀM: the sums of M's columns, a 1×c row (per token: Σᵢ Xᵢⱼ)."""

    @property
    def shape(self):
        return (sympy.S.One, self.argument.shape[1])

    def _sympystr(self, printer) -> str:
        return f"ones(1, {printer._print(self.argument.shape[0])})*{printer._print(self.argument)}"


class RowSpread(MatrixExpr):
    """1·r: the 1×c row r repeated into `rows` equal rows (a per-token value against every feature)."""

    def __new__(cls, row: MatrixExpr, rows):
        return MatrixExpr.__new__(cls, row, sympy.sympify(rows))

    @property
    def argument(self) -> MatrixExpr:
        return self.args[0]

    @property
    def shape(self):
        return (self.args[1], self.argument.shape[1])

    def _sympystr(self, printer) -> str:
        return f"ones({printer._print(self.args[1])}, 1)*{printer._print(self.argument)}"


def softmax_along(S: MatrixExpr, axis: int) -> MatrixExpr:
    """flux.softmax(S, axis=0): each column a distribution; axis=1: each row (softmax of Sᵀ's columns, transposed)."""
    if axis == 0:
        return ColumnSoftmax(S)
    if axis == 1:
        return sympy.Transpose(ColumnSoftmax(sympy.Transpose(S).doit())).doit()
    raise ValueError(f"softmax(…, axis={axis!r}): a per-sample matrix has axis 0 (rows) and axis 1 (columns)")
