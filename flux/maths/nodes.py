"""The matrix-expression nodes flux adds to SymPy's own.

SymPy already has MatMul, MatAdd, HadamardProduct, HadamardPower, Transpose, MatrixSlice and BlockMatrix.
flux adds the few nodes a network needs and SymPy lacks; each has one VJP rule in `flux.derive.rules`, one
method in the numba printer (`flux.generate.loops` or `flux.generate.statements`) and one in the LaTeX printer
(`flux.show.printers`).

All shapes are per sample: a column vector is (k, 1); batches never appear in the maths.
"""
from __future__ import annotations

import sympy
from sympy.core.symbol import Str
from sympy.matrices.expressions.matexpr import MatrixExpr, MatrixSymbol


class Apply(MatrixExpr):
    """f(Z) applied elementwise: (f(Z))ᵢⱼ = f(Zᵢⱼ), with f named in `flux.maths.elementwise.FUNCTIONS`."""

    def __new__(cls, function: str | Str, argument: MatrixExpr):
        name = function if isinstance(function, Str) else Str(function)
        return MatrixExpr.__new__(cls, name, argument)

    @property
    def function(self) -> str:
        return self.args[0].name

    @property
    def argument(self) -> MatrixExpr:
        return self.args[1]

    @property
    def shape(self):
        return self.argument.shape

    def _entry(self, i, j, **kwargs):
        from .elementwise import FUNCTIONS

        return FUNCTIONS[self.function].scalar(self.argument._entry(i, j, **kwargs))


class UnaryNode(MatrixExpr):
    """A node of one matrix argument."""

    def __new__(cls, argument: MatrixExpr):
        return MatrixExpr.__new__(cls, argument)

    @property
    def argument(self) -> MatrixExpr:
        return self.args[0]


class Total(UnaryNode):
    """Σᵢ zᵢ: the sum of a column vector's entries, a (1, 1) matrix (1ᵀz)."""

    @property
    def shape(self):
        return (sympy.S.One, sympy.S.One)


class Spread(MatrixExpr):
    """s·1: a (1, 1) matrix s repeated into a column of k equal entries."""

    def __new__(cls, argument: MatrixExpr, rows):
        return MatrixExpr.__new__(cls, argument, sympy.sympify(rows))

    @property
    def argument(self) -> MatrixExpr:
        return self.args[0]

    @property
    def shape(self):
        return (self.args[1], sympy.S.One)


class Softmax(UnaryNode):
    """softmax(z) = e^{z − max z} / 1ᵀe^{z − max z}, computed max-shifted so it never overflows."""

    @property
    def shape(self):
        return self.argument.shape


class LogSumExp(UnaryNode):
    """logΣexp(z) = max z + log 1ᵀe^{z − max z}, a (1, 1) matrix, computed max-shifted."""

    @property
    def shape(self):
        return (sympy.S.One, sympy.S.One)


class Generated(MatrixSymbol):
    """A matrix symbol flux makes for its own code (a kept forward value, a hoisted term, h_t as a leaf).

    Its name is the code name of the array holding it; being its own class, it never equals a symbol the user
    named, whatever the user called their inputs and parameters (SymPy symbols are equal by class and name).
    """
