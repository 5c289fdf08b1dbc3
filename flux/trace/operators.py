"""The arithmetic of `forward` while it is traced: + − × ÷ ** on symbols with their per-sample meaning.

SymPy's matrix operators refuse `1 - z` and mistake a 1×1 expression times a vector; while a forward is traced,
flux installs operators that broadcast numbers and per-sample scalars (flux.maths.broadcast):

    1 − z,  x + 1e-5,  0.5·x,  2 / x,  x / (1 + |x|),  (W x)**2,  (xᵀy)·x,  z / √(zᵀz)

and restores SymPy's own afterwards, so nothing outside a trace sees a difference.
"""
from __future__ import annotations

from contextlib import contextmanager

import sympy
from sympy.matrices.expressions.matexpr import MatrixExpr

from ..maths import broadcast


def operand(value):
    """A SymPy object for a Python or NumPy number; None for what is not maths (the operator then declines)."""
    if isinstance(value, sympy.Basic):
        return value
    try:
        return sympy.sympify(value, strict=True)
    except (sympy.SympifyError, TypeError):
        return None


def declining(operation):
    """operation(a, b) on operands, or NotImplemented when the other side is not maths (Python tries it next)."""

    def method(self, other):
        other = operand(other)
        if other is None:
            return NotImplemented
        return operation(self, other)

    method.__name__ = operation.__name__
    return method


def reflected(operation):
    return declining(lambda self, other: operation(other, self))


def rpower(exponent: MatrixExpr, base):
    """c ** x = exp(x·log c), elementwise."""
    from ..maths.nodes import Apply

    if isinstance(base, MatrixExpr):
        raise broadcast.BroadcastError(f"{base} ** {exponent}: a matrix exponent needs a number as its base")
    return Apply("exp", sympy.MatMul(sympy.log(base), exponent).doit())


OPERATORS = {
    "__add__": declining(broadcast.plus),
    "__radd__": reflected(broadcast.plus),
    "__sub__": declining(lambda a, b: broadcast.plus(a, -b)),
    "__rsub__": reflected(lambda a, b: broadcast.plus(a, -b)),
    "__mul__": declining(broadcast.times),
    "__rmul__": reflected(broadcast.times),
    "__matmul__": declining(broadcast.times),
    "__rmatmul__": reflected(broadcast.times),
    "__truediv__": declining(broadcast.divided),
    "__rtruediv__": reflected(broadcast.divided),
    "__pow__": declining(broadcast.power),
    "__rpow__": declining(rpower),
    "__array_ufunc__": None,  # NumPy defers to the operators above: np.float64(2) * x is 2·x, not an object array
}


@contextmanager
def broadcasting_operators():
    """Install the tracing operators on SymPy's MatrixExpr for the duration (the caller holds the tracing lock)."""
    saved = {name: MatrixExpr.__dict__.get(name, MISSING) for name in OPERATORS}
    for name, method in OPERATORS.items():
        setattr(MatrixExpr, name, method)
    try:
        yield
    finally:
        for name, method in saved.items():
            if method is MISSING:
                delattr(MatrixExpr, name)
            else:
                setattr(MatrixExpr, name, method)


MISSING = object()
