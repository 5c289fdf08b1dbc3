"""What every part of the numba printer shares: a node's per-sample shape class, the indent, its error, comments.

    form(x) = "col" for x ∈ ℝᵏ (per sample), "row" for xᵀ, "scalar" for ℝ¹ˣ¹, "mat" for W ∈ ℝᵐˣⁿ
"""
from __future__ import annotations

import sympy
from sympy.matrices.expressions.matexpr import MatrixExpr

INDENT = "    "


class CodegenError(TypeError):
    """The maths cannot be turned into a batched kernel (e.g. a per-sample matrix outside a gradient)."""




def form(node: MatrixExpr) -> str:
    """'scalar', 'col', 'row' or 'mat': the per-sample shape class of a node."""
    rows, cols = node.shape
    if rows == 1 and cols == 1:
        return "scalar"
    if cols == 1:
        return "col"
    if rows == 1:
        return "row"
    return "mat"


def is_scalar(node: MatrixExpr) -> bool:
    return node.shape[0] == 1 and node.shape[1] == 1





def describe(node: MatrixExpr, named: dict | None = None, width: int = 90) -> str:
    """A one-line comment for a node in textbook notation, with already-computed parts shown by their names."""
    from ..show.printers import expression_text

    names = {k: v for k, v in (named or {}).items() if k != node}
    try:
        text = expression_text(node, names)
    except Exception:  # a comment is never worth failing code generation over
        text = sympy.sstr(node)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
