r"""Naming what a textbook names in attention: the scores S, the softmax's output A and the gradients reaching them.

- S, A. The output of a softmax over a matrix (`flux.softmax(S, axis=…)`, the attention weights) is named A (A₁,
  A₂, … for several, as the heads of MultiHeadAttention) and its argument, the scores, S (inside a causal mask if
  there is one): S = KᵀQ/√k, A = softmax↓(S), y = V·A.
- Δ_A, Δ_S. The softmax's VJP is Δ_S = A ⊙ (Δ_A − 1·(1ᵀ(A ⊙ Δ_A))) column by column (masked, for causal scores),
  Δ_A = ∂L/∂A; both are named and get equations (Δ_A = Vᵀ·Δ), so the gradient reads as the textbook's softmax
  Jacobian and ∂L/∂Wq = W_k X Δ_S Xᵀ/√k.
- Transposes. The derivation writes (A ⊙ G)ᵀ distributed, Aᵀ ⊙ Gᵀ; such a product is shown as the transpose of
  the product it equals, so that ∂L/∂Wk reads W_q X δᵀ Xᵀ beside ∂L/∂Wq = W_k X δ Xᵀ.

Display only, like every name: the maths, `derivation.gradients` and the kernels keep the traced expressions.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .names import Name, matrix_args, subscript_digits, walk

LETTERS = ("A", "P")  # the attention weights' letter: A, or P when a parameter or input is called A


def softmax_values(derivation: Any, names: dict) -> list:
    """[(Name, node)]: every softmax of a matrix in the forward maths, named A (A₁, A₂, …), and its scores (the
    softmax's argument, inside a causal mask if there is one) named S (S₁, S₂, …), in order of use."""
    taken = {n.base for n in names.values()}
    letter = next((c for c in LETTERS if c not in taken), None)
    found: list = []
    for root in derivation.outputs + [new for _, _, new in derivation.states]:
        for node in walk(root, names, top=True):
            if type(node).__name__ == "ColumnSoftmax" and node not in names and node not in found:
                found.append(node)
    if letter is None:
        return []
    several = len(found) > 1
    values = []
    for k, node in enumerate(found, 1):
        number, sub = (subscript_digits(k), str(k)) if several else ("", "")
        scores = node.argument.argument if type(node.argument).__name__ == "Causal" else node.argument
        if "S" not in taken and scores not in names and matrix_args(scores):
            names[scores] = Name("S" + number, "S", sub)
            values.append((names[scores], scores))
        names[node] = Name(letter + number, letter, sub)
        values.append((names[node], node))
    return values


def softmax_upstreams(gradients: list, names: dict) -> list:
    """[(Name, node)]: in A ⊙ (G − 1·(1ᵀ(A ⊙ G))) for a named A, G is Δ_A, and the product (masked, if the scores
    are) is Δ_S, the gradient reaching the named scores S (each named and given an equation)."""
    found: list = []
    masked = {node.argument: node for _, expr in gradients for node in walk(expr, names)
              if type(node).__name__ == "CausalZeros"}
    scores_of = {node: names.get(node.argument.argument if type(node.argument).__name__ == "Causal" else
                                 node.argument) for node in names if type(node).__name__ == "ColumnSoftmax"}
    for _, expr in gradients:
        for node in walk(expr, names):
            upstream = softmax_upstream(node, names)
            if upstream is None or upstream in names:
                continue
            weights = next(a for a in node.args if type(a).__name__ == "ColumnSoftmax")
            names[upstream] = Name(f"Δ_{names[weights].text}", r"\Delta", names[weights].latex(), kind="δ")
            found.append((names[upstream], upstream))
            scores = scores_of.get(weights)
            gradient = masked.get(node, node)
            if scores is not None and gradient not in names:
                names[gradient] = Name(f"Δ_{scores.text}", r"\Delta", scores.latex(), kind="δ")
                found.append((names[gradient], gradient))
    return found


def softmax_upstream(node: Any, names: dict) -> Any:
    """G when `node` is A ⊙ (G − 1·(1ᵀ(A ⊙ G))) with A a named softmax output (in either factor order), else None."""
    if type(node).__name__ != "HadamardProduct" or len(node.args) != 2:
        return None
    for weights, difference in (node.args, node.args[::-1]):
        if type(weights).__name__ != "ColumnSoftmax" or weights not in names or type(difference).__name__ != "MatAdd":
            continue
        for upstream in difference.args:
            rest = [a for a in difference.args if a is not upstream]
            if len(rest) == 1 and is_minus_spread_of(rest[0], weights, upstream):
                return upstream
    return None


def is_minus_spread_of(term: Any, weights: Any, upstream: Any) -> bool:
    """Whether `term` is −1·(1ᵀ(A ⊙ G)) spread over the rows."""
    if type(term).__name__ != "MatMul":
        return False
    coefficient, factors = term.as_coeff_matrices()
    if coefficient != -1 or len(factors) != 1 or type(factors[0]).__name__ != "RowSpread":
        return False
    totals = factors[0].argument
    return type(totals).__name__ == "ColumnTotals" and type(totals.argument).__name__ == "HadamardProduct" and \
        set(totals.argument.args) == {weights, upstream}


def with_transposed_products(derivation: Any) -> Any:
    """The derivation with each ⊙ product that equals the transpose of another ⊙ product of the gradients, one with
    a softmax factor, written as that product's transpose: Aᵀ ⊙ (Gᵀ − …) becomes (A ⊙ (G − …))ᵀ."""
    from sympy import Transpose

    products = {}
    for expr in derivation.gradients.values():
        for node in walk(expr, {}):
            if type(node).__name__ == "HadamardProduct" and any(
                    type(a).__name__ == "ColumnSoftmax" for a in node.args):
                products.setdefault(node, None)
    if not products:
        return derivation
    transposed = {}
    for node in products:
        flipped = Transpose(node).doit()
        if flipped != node and flipped not in products and flipped not in transposed:
            transposed[flipped] = Transpose(node)
    if not transposed:
        return derivation
    gradients = {k: g.xreplace(transposed) for k, g in derivation.gradients.items()}
    return replace(derivation, gradients=gradients)
