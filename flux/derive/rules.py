"""Reverse mode over SymPy matrix expressions: the vector–Jacobian product rules and the backward sweep.

For an output y = f(…, A, …) and an upstream gradient Δ = ∂L/∂y, each rule returns ∂L/∂A for every matrix
argument A of one node. The sweep visits the expression graph once, parents before children, summing the
contributions a shared subexpression receives. SymPy's own matrix calculus is not used: it returns wrong
answers for gated cells and raises on two-layer expressions.
"""
from __future__ import annotations

import functools
import operator
from typing import Callable, Iterable

import sympy
from sympy import (
    BlockMatrix, HadamardPower, HadamardProduct, Identity, MatAdd, MatMul, MatPow, MatrixSymbol, OneMatrix, Transpose,
    ZeroMatrix,
)
from sympy.matrices.expressions.matexpr import MatrixExpr
from sympy.matrices.expressions.slice import MatrixSlice

from ..maths.broadcast import without_scalar_factors
from ..maths.elementwise import FUNCTIONS, SCALAR_TO_NAME, Y, Z, register
from ..maths.graph import matrix_children, topological_order
from ..maths.nodes import Apply, LogSumExp, Softmax, Spread, Total
from .matrix_rules import MATRIX_RULES

Rule = Callable[[MatrixExpr, MatrixExpr], list]
vjp_rules: dict[type, Rule] = dict(MATRIX_RULES)  # per-sample matrices' nodes: derive/matrix_rules.py


def vjp(node_type: type) -> Callable[[Rule], Rule]:
    """Register the VJP rule of one node type: rule(node, Δ) -> [∂L/∂child or None, …]."""

    def register(rule: Rule) -> Rule:
        vjp_rules[node_type] = rule
        return rule

    return register


@vjp(MatAdd)
def _matadd(node, Δ):
    return [Δ for _ in node.args]


@vjp(MatMul)
def _matmul(node, Δ):
    """y = c·A₁⋯Aₙ  ⇒  ∂L/∂Aᵢ = c·(A₁⋯Aᵢ₋₁)ᵀ Δ (Aᵢ₊₁⋯Aₙ)ᵀ."""
    coefficient, factors = node.as_coeff_matrices()
    rules = []
    for i in range(len(factors)):
        left = [f.T for f in reversed(factors[:i])]
        right = [f.T for f in reversed(factors[i + 1:])]
        rules.append(coefficient * MatMul(*left, Δ, *right).doit())
    return rules


@vjp(HadamardProduct)
def _hadamard(node, Δ):
    """y = A₁ ⊙ ⋯ ⊙ Aₙ  ⇒  ∂L/∂Aᵢ = Δ ⊙ ∏_{j≠i} Aⱼ."""
    return [HadamardProduct(Δ, *(a for j, a in enumerate(node.args) if j != i)).doit() for i in range(len(node.args))]


@vjp(HadamardPower)
def _hadamard_power(node, Δ):
    """y = A^{∘p}  ⇒  ∂L/∂A = p·Δ ⊙ A^{∘(p−1)}."""
    base, power = node.args
    local = base if power == 2 else HadamardPower(base, power - 1)
    return [power * HadamardProduct(Δ, local).doit()]


@vjp(MatPow)
def _matrix_power(node, Δ):
    """y = Aᵖ (p a positive integer)  ⇒  ∂L/∂A = Σₖ (Aᵀ)ᵏ Δ (Aᵀ)^{p−1−k}."""
    base, power = node.args
    if not (power.is_Integer and power >= 1):
        raise TypeError(f"flux differentiates only positive integer powers of a matrix, not {node}")
    return [MatAdd(*[MatMul(*[base.T] * k, Δ, *[base.T] * (int(power) - 1 - k)).doit()
                     for k in range(int(power))]).doit()]


@vjp(Transpose)
def _transpose(node, Δ):
    return [Δ.T]


@vjp(Apply)
def _apply(node, Δ):
    """y = f(z) elementwise  ⇒  ∂L/∂z = Δ ⊙ f′(z), with f′ written through y where it can be."""
    function = FUNCTIONS[node.function]
    try:
        local = elementwise_matrix(function.derivative, {Z: node.argument, Y: node}, node.shape)
    except TypeError:  # f′ uses a function no node expresses (Piecewise, erf′ …): f′ becomes one elementwise node
        derivative = function.derivative.subs(Y, function.definition)
        local = Apply(register(function.name + "′", derivative), node.argument)
    return [HadamardProduct(Δ, local).doit()]


@vjp(Total)
def _total(node, Δ):
    return [Spread(Δ, node.argument.shape[0])]


@vjp(Spread)
def _spread(node, Δ):
    return [Total(Δ)]


@vjp(Softmax)
def _softmax(node, Δ):
    """y = softmax(z)  ⇒  ∂L/∂z = y ⊙ (Δ − (yᵀΔ)·1)."""
    inner = Spread(Total(HadamardProduct(node, Δ)), node.shape[0])
    return [HadamardProduct(node, Δ - inner)]


@vjp(LogSumExp)
def _logsumexp(node, Δ):
    """y = logΣexp(z)  ⇒  ∂L/∂z = softmax(z)·Δ."""
    return [HadamardProduct(Softmax(node.argument), Spread(Δ, node.argument.shape[0]))]


@vjp(MatrixSlice)
def _slice(node, Δ):
    """y = z[a:b]  ⇒  ∂L/∂z = [0; Δ; 0] (rows a..b of a zero column; of a zero matrix for W[a:b, :])."""
    parent, (start, stop, _), columns = node.args
    if tuple(columns) != (0, parent.shape[1], 1):
        raise TypeError(f"flux differentiates slices of rows only (z[a:b] or W[a:b, :]), not {node}")
    total, width = parent.shape[0], Δ.shape[1]
    blocks = [ZeroMatrix(start, width)] if start != 0 else []
    blocks.append(Δ)
    if (total - stop) != 0:
        blocks.append(ZeroMatrix(total - stop, width))
    return [BlockMatrix([[b] for b in blocks]) if len(blocks) > 1 else Δ]


@vjp(BlockMatrix)
def _concat(node, Δ):
    """y = [a; b; …] (or [a b …], a transposed stack)  ⇒  ∂L/∂a = Δ[rows and columns of a], …"""
    grid, rules, top = node.blocks, [], 0
    for r in range(grid.shape[0]):
        left = 0
        for c in range(grid.shape[1]):
            rows, cols = grid[r, c].shape
            rules.append(Δ[top:top + rows, left:left + cols])
            left = left + cols
        top = top + grid[r, 0].shape[0]
    return rules


CONSTANTS = (ZeroMatrix, OneMatrix, Identity)


def backward_expressions(
    outputs: dict[str, MatrixExpr], upstream: dict[str, MatrixExpr], wrt: Iterable[MatrixSymbol]
) -> dict[str, MatrixExpr]:
    """∂L/∂s for each symbol s in `wrt`, given ∂L/∂output = upstream[name] for each named output."""
    wrt = list(wrt)
    targets = set(wrt)
    order = topological_order(outputs.values())
    depends = {}
    for node in order:  # children first
        depends[node] = node in targets or any(depends.get(c, False) for c in matrix_children(node))
    adjoints: dict[MatrixExpr, list] = {}
    for name, expr in outputs.items():
        adjoints.setdefault(expr, []).append(upstream[name])
    for node in reversed(order):  # parents first
        if node not in adjoints or isinstance(node, MatrixSymbol) or not depends[node]:
            continue
        if isinstance(node, CONSTANTS):
            continue
        rule = vjp_rules.get(type(node))
        if rule is None:
            raise TypeError(f"flux cannot differentiate {type(node).__name__} nodes (in {node})")
        Δ = functools.reduce(operator.add, adjoints[node])
        for child, gradient in zip(matrix_children(node), rule(node, Δ)):
            if gradient is not None and depends.get(child, False):  # W·x·Δᵀ as (Δ·1) ⊙ (W·x): BLAS-ready
                adjoints.setdefault(child, []).append(without_scalar_factors(gradient))
    return {
        s.name: functools.reduce(operator.add, adjoints[s]) if s in adjoints else ZeroMatrix(*s.shape)
        for s in wrt
    }


def elementwise_matrix(expr: sympy.Expr, values: dict[sympy.Symbol, MatrixExpr], shape) -> MatrixExpr:
    """The matrix expression that applies the scalar expression `expr` elementwise, symbols → matrices."""
    if expr in values:
        return values[expr]
    if expr.is_number:  # 2, 1/2, π, √2: a constant matrix
        return ZeroMatrix(*shape) if expr == 0 else expr * OneMatrix(*shape)
    if isinstance(expr, sympy.Add):
        return MatAdd(*[elementwise_matrix(a, values, shape) for a in expr.args]).doit()
    if isinstance(expr, sympy.Mul):
        coefficient, rest = expr.as_independent(*values, as_Add=False)
        rest_parts = [elementwise_matrix(a, values, shape) for a in sympy.Mul.make_args(rest)]
        product = rest_parts[0] if len(rest_parts) == 1 else HadamardProduct(*rest_parts).doit()
        return product if coefficient == 1 else coefficient * product
    if isinstance(expr, sympy.Pow) and expr.exp.is_Number:
        return HadamardPower(elementwise_matrix(expr.base, values, shape), expr.exp)
    if type(expr) in SCALAR_TO_NAME and len(expr.args) == 1:
        return Apply(SCALAR_TO_NAME[type(expr)], elementwise_matrix(expr.args[0], values, shape))
    raise TypeError(f"flux cannot write the elementwise expression {expr} as matrix operations")
