"""The VJP rules of the per-sample matrix nodes (flux.maths.matrices); `rules.vjp_rules` starts from them.

    A = softmax(S) by columns  ⇒  ∂L/∂S = A ⊙ (Δ − 1·(1ᵀ(A ⊙ Δ)))      (each column: the vector softmax's rule)
    causal(S)                  ⇒  ∂L/∂S = mask(Δ)                       (no gradient flows to a masked entry)
    1ᵀM                        ⇒  ∂L/∂M = 1·Δ
    1·r                        ⇒  ∂L/∂r = 1ᵀΔ
"""
from __future__ import annotations

from sympy import HadamardProduct, MatAdd, MatMul

from ..maths.matrices import Causal, CausalZeros, ColumnSoftmax, ColumnTotals, RowSpread

MATRIX_RULES: dict = {}  # node type → rule(node, Δ) -> [∂L/∂argument]; rules.py adds these to its vjp_rules


def vjp(node_type: type):
    def register(rule):
        MATRIX_RULES[node_type] = rule
        return rule

    return register


@vjp(ColumnSoftmax)
def _column_softmax(node, Δ):
    """A = softmax(S) (columns)  ⇒  ∂L/∂S = A ⊙ (Δ − 1·(1ᵀ(A ⊙ Δ)))."""
    column_sums = ColumnTotals(HadamardProduct(node, Δ).doit())
    return [HadamardProduct(node, MatAdd(Δ, MatMul(-1, RowSpread(column_sums, node.shape[0]))).doit()).doit()]


@vjp(Causal)
def _causal(node, Δ):
    return [CausalZeros(Δ)]


@vjp(CausalZeros)
def _causal_zeros(node, Δ):
    return [CausalZeros(Δ)]


@vjp(ColumnTotals)
def _column_totals(node, Δ):
    return [RowSpread(Δ, node.argument.shape[0])]


@vjp(RowSpread)
def _row_spread(node, Δ):
    return [ColumnTotals(Δ)]
