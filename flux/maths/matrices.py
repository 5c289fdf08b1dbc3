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

TOKENS = sympy.Symbol("T", positive=True, integer=True)  # the number of tokens of a sequence (flux.tokens)


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


def along_tokens(a: MatrixExpr, b: MatrixExpr) -> tuple:
    """(a, b) with a per-token value broadcast against a matrix of tokens (r×T, one column per token):

        v ∈ ℝ^{r×1}  →  v·1ᵀ = (1·vᵀ)ᵀ  (the same column for every token: a bias in W·X + b)
        s ∈ ℝ^{1×c}  →  1·s             (one value per token for every row: X − mean(X))

    Only against T columns: a vector against a parameter matrix stays a shape error. Shapes that do not broadcast
    this way are returned as they are (the shape rules then say what is wrong)."""
    if not (isinstance(a, MatrixExpr) and isinstance(b, MatrixExpr)) or a.shape == b.shape:
        return a, b
    return spread_against(a, b), spread_against(b, a)


def spread_against(v: MatrixExpr, m: MatrixExpr) -> MatrixExpr:
    (rows, cols), (m_rows, m_cols) = v.shape, m.shape
    if m_rows == 1 or m_cols != TOKENS:
        return v
    if cols == 1 and rows != 1:  # rows ≠ m_rows (a sub-model's d_ln against d): the shape rules unify them
        return sympy.Transpose(RowSpread(sympy.Transpose(v), m_cols))
    if rows == 1 and cols != 1 and cols == m_cols:
        return RowSpread(v, m_rows)
    return v


def totals(x: MatrixExpr) -> MatrixExpr:
    """Σᵢ xᵢ of a column (1×1), or of each column of a matrix (1ᵀX, 1×c: per token)."""
    from .nodes import Total

    return Total(x) if x.shape[1] == 1 else ColumnTotals(x)


def softmax_along(S: MatrixExpr, axis: int) -> MatrixExpr:
    """flux.softmax(S, axis=0): each column a distribution; axis=1: each row (softmax of Sᵀ's columns, transposed)."""
    if axis == 0:
        return ColumnSoftmax(S)
    if axis == 1:
        return sympy.Transpose(ColumnSoftmax(sympy.Transpose(S).doit())).doit()
    raise ValueError(f"softmax(…, axis={axis!r}): a per-sample matrix has axis 0 (rows) and axis 1 (columns)")
