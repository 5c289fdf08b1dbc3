r"""Factoring the upstream gradient out of a sum, for display: Δ ⊙ a − Δ ⊙ b reads Δ ⊙ (a − b).

Reverse mode writes each path's contribution as its own term, so a gradient reads (Δ ⊙ tanh(x) − Δ ⊙ x) ⊙ σ′ or,
for a loss, (1/n)·Δ·σ(z) − (1/n)·Δ·t. When every term of a sum has the same upstream factor — Δ, a sum of
upstream symbols (Δ_t + Δ_{h,t}), or a per-sample Δ in a broadcast — it is written once, with the terms' common
coefficient: Δ ⊙ (tanh(x) − x) ⊙ σ′, (1/n)·Δ·(σ(z) − t).

Display only: `with_upstream_factored` returns a copy of the derivation for `naming.lay_out`; the maths and the
kernels keep the derived expressions.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .names import matrix_args


def with_upstream_factored(derivation: Any) -> Any:
    """The derivation with Δ factored out of every gradient's sums where it is a factor of each term."""
    upstream = set(derivation.upstream)
    memo: dict = {}

    def rewritten(node):
        if node not in memo:
            new = node
            if matrix_args(node) and type(node).__name__ != "BlockMatrix":
                args = tuple(rewritten(a) if getattr(a, "is_Matrix", False) else a for a in node.args)
                new = node if args == node.args else node.func(*args)
            if type(new).__name__ == "MatAdd":
                new = factored(new, upstream) or new
            memo[node] = new
        return memo[node]

    return replace(derivation, gradients={k: rewritten(g) for k, g in derivation.gradients.items()})


def is_upstream(node: Any, upstream: set) -> bool:
    """Δ, or a sum of upstream symbols (Δ_t + Δ_{h,t})."""
    if type(node).__name__ == "MatAdd":
        return all(a in upstream for a in node.args)
    return node in upstream


def split(term: Any) -> tuple:
    """(coefficient, ⊙ factors) of a term: 2·(Δ ⊙ x) is (2, [Δ, x])."""
    import sympy

    coefficient, factors = sympy.S.One, [term]
    if type(term).__name__ == "MatMul":
        c, matrices = term.as_coeff_matrices()
        if len(matrices) == 1:
            coefficient, factors = c, matrices
    flat = []
    for factor in factors:
        if type(factor).__name__ == "HadamardProduct":
            for arg in factor.args:
                c, inner = split(arg)
                coefficient, flat = coefficient * c, flat + inner
        elif type(factor).__name__ == "MatAdd" and all(negative(a) for a in factor.args):
            coefficient, flat = -coefficient, flat + [sympy.MatAdd(*[(-a).doit() for a in factor.args]).doit()]
        else:
            flat.append(factor)
    return coefficient, flat


def negative(term: Any) -> bool:
    return type(term).__name__ == "MatMul" and bool(term.as_coeff_matrices()[0].is_negative)


def scalar_factors(spread: Any) -> list:
    """The 1×1 factors of a broadcast's scalar, transposes dropped: Spread(Δ·Σ(t)ᵀ) → [Δ, Σ(t)]."""
    argument = spread.argument
    factors = argument.as_coeff_matrices()[1] if type(argument).__name__ == "MatMul" else [argument]
    return [f.arg if type(f).__name__ == "Transpose" else f for f in factors]


def factored(total: Any, upstream: set) -> Any | None:
    """F ⊙ (Σᵢ cᵢ·restᵢ) for a common upstream factor F of every term, else None."""
    import sympy
    from sympy import HadamardProduct, MatAdd, MatMul, OneMatrix

    from ..maths.nodes import Spread

    terms = [split(t) for t in total.args]
    common = [f for f in terms[0][1] if is_upstream(f, upstream) and all(f in fs for _, fs in terms[1:])]
    if common:
        factor = common[0]
        rests = [(c, [f for k, f in enumerate(fs) if k != fs.index(factor)]) for c, fs in terms]
        outer = factor
    else:  # a per-sample Δ: in a broadcast of every term
        deltas = [s for s in (scalar_factors(f) for f in terms[0][1] if type(f).__name__ == "Spread")
                  for s in s if s in upstream]
        delta = deltas[0] if deltas else None
        if delta is None:
            return None
        rests = []
        for c, fs in terms:
            spreads = [f for f in fs if type(f).__name__ == "Spread" and delta in scalar_factors(f)]
            if not spreads:
                return None
            left = [s for s in scalar_factors(spreads[0])]
            left.remove(delta)
            scalar_coefficient = spreads[0].argument.as_coeff_matrices()[0] if \
                type(spreads[0].argument).__name__ == "MatMul" else sympy.S.One
            others = [f for f in fs if f is not spreads[0]]
            if left:
                others = [Spread(MatMul(*left).doit() if len(left) > 1 else left[0], *spreads[0].args[1:])] + others
            rests.append((c * scalar_coefficient, others))
        outer = Spread(delta, *total.shape[:1]) if total.shape[1] == 1 else None
        if outer is None:
            return None
    shared = abs(rests[0][0])
    if any(abs(c) != shared for c, _ in rests):
        shared = sympy.S.One
    parts = []
    for c, others in rests:
        body = HadamardProduct(*others) if len(others) > 1 else others[0] if others else OneMatrix(*total.shape)
        c = c / shared
        parts.append(body if c == 1 else MatMul(c, body))
    inner = MatAdd(*parts)
    product = HadamardProduct(outer, inner)
    return product if shared == 1 else MatMul(shared, product)
