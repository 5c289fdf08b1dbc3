"""Scalars against vectors: what `1 − z`, `s·v`, `a / b` and `v ** p` mean per sample, as matrix expressions.

SymPy's matrix algebra has no broadcasting: `1 - z` raises, a 1×1 expression times a vector is a shape error (or,
worse, SymPy flattens (xᵀx)·x into xᵀ·x² silently). flux's language gives them their per-sample meaning:

    c + v            v + c·1                        (a number against a vector: c times a column of ones)
    s·v              (s·1) ⊙ v                      (s a 1×1 expression: a per-sample scalar, `Spread`)
    a / b            a ⊙ b^{∘−1}  (a ⊘ b)           (elementwise; b a per-sample scalar: (b^{−1}·1) ⊙ a)
    v ** p           v^{∘p}                         (elementwise on vectors and 1×1; integer powers of a
                                                     square matrix stay matrix powers W·W)

`without_scalar_factors` puts products that carry a per-sample scalar into the same form (W·x·Δᵀ is (Δ·1) ⊙ (W·x)),
so that every product left is one a batched kernel computes with BLAS.
"""
from __future__ import annotations

import sympy
from sympy import HadamardPower, HadamardProduct, Inverse, MatAdd, MatMul, MatPow, OneMatrix, Transpose
from sympy.matrices.expressions.matexpr import MatrixExpr

from .matrices import along_tokens
from .nodes import Spread


class BroadcastError(TypeError):
    """Two operands whose per-sample shapes do not combine (a per-sample scalar against a matrix, say)."""


def is_per_sample_scalar(m: MatrixExpr) -> bool:
    """A 1×1 expression: xᵀy, Σx, a mean, a norm."""
    return m.shape[0] == 1 and m.shape[1] == 1


def is_vector(m: MatrixExpr) -> bool:
    return m.shape[1] == 1 or m.shape[0] == 1


def constant(c, shape) -> MatrixExpr:
    """c·1: a number (or a constant like π, 1/√2) in every entry."""
    return c * OneMatrix(*shape)


def scalar_multiple(s: MatrixExpr, m: MatrixExpr) -> MatrixExpr:
    """s·m for a per-sample scalar s: (s·1) ⊙ m on a column, ((s·1) ⊙ mᵀ)ᵀ on a row."""
    if is_per_sample_scalar(m):
        return MatMul(s, m).doit()
    if m.shape[1] == 1:
        return HadamardProduct(Spread(s, m.shape[0]), m).doit()
    if m.shape[0] == 1:
        return Transpose(HadamardProduct(Spread(s, m.shape[1]), m.T.doit()).doit())
    return HadamardProduct(Spread(s, *m.shape), m)  # s·W: kept until a product with a vector makes it s·(W·x)


def scaled_matrix(m: MatrixExpr):
    """(s, W) when m is s·W (a per-sample scalar times a matrix), else None."""
    if isinstance(m, HadamardProduct) and len(m.args) == 2:
        for k, arg in enumerate(m.args):
            if isinstance(arg, Spread) and arg.shape[1] != 1:
                return arg.argument, m.args[1 - k]
    return None


def plus(a, b):
    """a + b, with a number or a per-sample scalar against a vector broadcast to the vector's shape."""
    a, b = broadcast_pair(a, b)
    return MatAdd(a, b).doit()


def broadcast_pair(a, b) -> tuple:
    """(a, b) of equal per-sample shapes: numbers become c·1, a per-sample scalar s beside a vector s·1."""
    if not isinstance(a, MatrixExpr):
        a = constant(a, b.shape)
    if not isinstance(b, MatrixExpr):
        b = constant(b, a.shape)
    a, b = along_tokens(a, b)  # a column or a row against a matrix of tokens (flux.maths.matrices)
    if is_per_sample_scalar(a) and not is_per_sample_scalar(b):
        a = scalar_multiple(a, constant(1, b.shape)) if is_vector(b) else refuse(a, b)
    elif is_per_sample_scalar(b) and not is_per_sample_scalar(a):
        b = scalar_multiple(b, constant(1, a.shape)) if is_vector(a) else refuse(b, a)
    return a, b


def refuse(scalar, matrix):
    raise BroadcastError(f"the per-sample scalar {scalar} cannot be combined with the matrix {matrix}: it would "
                         "make a matrix per sample")


def times(a, b):
    """a·b: the matrix product, or a scalar multiple when one side is a number or a per-sample scalar."""
    if not isinstance(a, MatrixExpr) or not isinstance(b, MatrixExpr):
        return MatMul(a, b).doit()
    if is_per_sample_scalar(a) and not is_per_sample_scalar(b):
        return scalar_multiple(a, b)
    if is_per_sample_scalar(b) and not is_per_sample_scalar(a):
        return scalar_multiple(b, a)
    return MatMul(a, b).doit()


def hadamard(a, b):
    """a ⊙ b, broadcasting numbers and per-sample scalars like `plus`."""
    if not isinstance(a, MatrixExpr) or not isinstance(b, MatrixExpr):
        return times(a, b)
    a, b = broadcast_pair(a, b)
    return HadamardProduct(a, b).doit()


def reciprocal(m: MatrixExpr) -> MatrixExpr:
    """m^{∘−1}, entry by entry."""
    return HadamardPower(m, -1)


def divided(a, b):
    """a / b elementwise (a ⊘ b); b a number is the scalar multiple (1/b)·a."""
    if not isinstance(b, MatrixExpr):
        return MatMul(sympy.S.One / sympy.sympify(b), a).doit()
    if not isinstance(a, MatrixExpr):
        return MatMul(sympy.sympify(a), reciprocal(b)).doit()
    if is_per_sample_scalar(b) and not is_per_sample_scalar(a):
        return scalar_multiple(reciprocal(b), a)
    return hadamard(a, reciprocal(b))


def power(m: MatrixExpr, p) -> MatrixExpr:
    """m ** p: elementwise on vectors and per-sample scalars; a square matrix to a positive integer power is the
    matrix power W·W·…; anything else is refused."""
    p = sympy.sympify(p)
    if isinstance(p, MatrixExpr) or not p.is_number:
        raise BroadcastError(f"{m} ** {p}: the exponent must be a number")
    if is_vector(m):
        return m if p == 1 else HadamardPower(m, p)
    if p.is_Integer and p >= 1 and m.shape[0] == m.shape[1]:
        return MatMul(*[m] * int(p)).doit() if p > 1 else m
    if m.shape[0] != m.shape[1]:
        raise BroadcastError(f"{m} ** {p}: {m} is {m.shape[0]}×{m.shape[1]}, not square, so it has no matrix "
                             f"power; for the elementwise power use flux.hadamard_power({m}, {p})")
    raise BroadcastError(f"{m} ** {p}: only vectors have elementwise powers and only positive integer powers of "
                         "a square matrix are supported (no matrix inverse or root); for an elementwise power of "
                         "a matrix use flux.hadamard_power")


def elementwise_power(m: MatrixExpr, p) -> MatrixExpr:
    """m^{∘p} on any matrix (flux.hadamard_power): elementwise whatever the shape."""
    p = sympy.sympify(p)
    if isinstance(p, MatrixExpr) or not p.is_number:
        raise BroadcastError(f"hadamard_power({m}, {p}): the exponent must be a number")
    return m if p == 1 else HadamardPower(m, p)


def normal_form(expr):
    """MatPow and Inverse (from `sympy.sqrt(xᵀx)`, `1/s`) as the elementwise powers they mean on vectors."""
    if not isinstance(expr, MatrixExpr) or not expr.args:
        return expr
    args = [normal_form(a) for a in expr.args]
    if isinstance(expr, MatPow):
        return power(args[0], args[1])
    if isinstance(expr, Inverse) and is_per_sample_scalar(args[0]):
        return reciprocal(args[0])
    return expr if all(a is b for a, b in zip(args, expr.args)) else expr.func(*args)


def without_scalar_factors(expr):
    """Every matrix product that carries a per-sample scalar, as a scalar multiple: W·x·Δᵀ is (Δ·1) ⊙ (W·x),
    x·Δ·xᵀ is ((Δ·1) ⊙ x)·xᵀ; products of 1×1 factors only (xᵀW x) stay products."""
    if not isinstance(expr, MatrixExpr) or not expr.args:
        return expr
    args = [without_scalar_factors(a) for a in expr.args]
    if any(a is not b for a, b in zip(args, expr.args)):
        expr = expr.func(*args)
    if not isinstance(expr, MatMul):
        return expr
    coefficient, factors = expr.as_coeff_matrices()
    for k, factor in enumerate(factors):  # (s·W)·x is s·(W·x), and xᵀ·(s·W)·x is s·(xᵀ·W·x)
        pulled = scaled_matrix(factor)
        if pulled is not None:
            rest = MatMul(*(factors[:k] + [pulled[1]] + factors[k + 1:])).doit()
            scaled = MatMul(pulled[0], rest).doit() if is_per_sample_scalar(rest) else attach(pulled[0], [rest])
            return without_scalar_factors(coefficient * scaled)
    if is_per_sample_scalar(expr):
        return expr
    group = scalar_group(factors)
    if group is None:
        return expr
    i, j = group
    scalar = MatMul(*factors[i:j + 1]).doit()
    rest = factors[:i] + factors[j + 1:]
    return without_scalar_factors(coefficient * attach(scalar, rest))


def scalar_group(factors: list):
    """(i, j): the first run of factors whose product is 1×1 inside a longer product, or None."""
    for i, first in enumerate(factors):
        if first.shape[0] != 1:
            continue
        for j in range(i, len(factors)):
            if factors[j].shape[1] == 1:
                if (i, j) != (0, len(factors) - 1):
                    return i, j
                break
    return None


def attach(scalar: MatrixExpr, factors: list) -> MatrixExpr:
    """scalar · F₁⋯Fₖ with the scalar carried by a vector factor, so no product has a 1×1 factor."""
    for k, factor in enumerate(factors):
        if is_vector(factor) and not is_per_sample_scalar(factor):
            factors = factors[:k] + [scalar_multiple(scalar, factor)] + factors[k + 1:]
            return MatMul(*factors).doit() if len(factors) > 1 else factors[0]
    raise BroadcastError(f"a per-sample scalar {scalar} times the matrix {MatMul(*factors)} would make a matrix "
                         "per sample")


def refuse_matrices_per_sample(expr) -> None:
    """A per-sample scalar times a matrix (s·W) must meet a vector (s·W·x) before it is a result."""
    for node in sympy.preorder_traversal(expr):
        if isinstance(node, Spread) and node.shape[1] != 1:
            raise BroadcastError(f"the per-sample scalar {node.argument} times a matrix is a matrix per sample; "
                                 f"multiply it by a vector (s·W·x) before it leaves forward")
