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
from sympy.printing.precedence import PRECEDENCE
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

    # SymPy's own printers (str, sympy.latex, pprint); flux's are in flux.show.printers
    def _sympystr(self, printer) -> str:
        return f"{self.function}({printer._print(self.argument)})"

    def _latex(self, printer) -> str:
        from .elementwise import FUNCTIONS

        function = getattr(FUNCTIONS.get(self.function), "latex", rf"\operatorname{{{self.function}}}")
        argument = printer._print(self.argument)
        return function.format(z=argument) if "{z}" in function else rf"{function}\left({argument}\right)"

    def _pretty(self, printer):
        return called(printer, self.function, self.argument)


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

    def _sympystr(self, printer) -> str:  # flux's own spelling: flux.total(z)
        return f"total({printer._print(self.argument)})"

    def _latex(self, printer) -> str:
        return r"\mathbf{1}^{\top} " + printer.parenthesize(self.argument, PRECEDENCE["Mul"])

    def _pretty(self, printer):
        return called(printer, "Σ", self.argument)


class Spread(MatrixExpr):
    """s·1: a (1, 1) matrix s repeated into a column of k equal entries (or, with `cols`, a k×c matrix: s times
    a matrix, which tracing keeps only until a product with a vector makes it s·(W·x))."""

    def __new__(cls, argument: MatrixExpr, rows, cols=1):
        cols = sympy.sympify(cols)
        extra = () if cols == 1 else (cols,)
        return MatrixExpr.__new__(cls, argument, sympy.sympify(rows), *extra)

    @property
    def argument(self) -> MatrixExpr:
        return self.args[0]

    @property
    def shape(self):
        return (self.args[1], self.args[2] if len(self.args) > 2 else sympy.S.One)

    def _eval_transpose(self):
        """(s·W)ᵀ = s·Wᵀ: a matrix spread transposes to one (a column's stays a Transpose, as printed)."""
        rows, cols = self.shape
        return Spread(self.argument, cols, rows) if cols != 1 else None

    def _sympystr(self, printer) -> str:  # s times a column of ones: s*ones(k, 1)
        return f"{printer.parenthesize(self.argument, PRECEDENCE['Mul'])}*ones({printer._print(self.args[1])}, 1)"

    def _latex(self, printer) -> str:
        return printer.parenthesize(self.argument, PRECEDENCE["Mul"]) + r" \mathbf{1}"

    def _pretty(self, printer):
        from sympy.printing.pretty.stringpict import prettyForm

        form = printer._print(self.argument)
        return prettyForm(*prettyForm(*form.parens()).right("⋅1"))


class NamedFunction(UnaryNode):
    """A node SymPy's own printers show as `name(argument)` (softmax(z), logsumexp(z))."""

    printed_name = ""

    def _sympystr(self, printer) -> str:
        return f"{self.printed_name}({printer._print(self.argument)})"

    def _latex(self, printer) -> str:
        return rf"\operatorname{{{self.printed_name}}}\left({printer._print(self.argument)}\right)"

    def _pretty(self, printer):
        return called(printer, self.printed_name, self.argument)


class Softmax(NamedFunction):
    """softmax(z) = e^{z − max z} / 1ᵀe^{z − max z}, computed max-shifted so it never overflows."""

    printed_name = "softmax"

    @property
    def shape(self):
        return self.argument.shape


class LogSumExp(NamedFunction):
    """logΣexp(z) = max z + log 1ᵀe^{z − max z}, a (1, 1) matrix, computed max-shifted."""

    printed_name = "logsumexp"

    @property
    def shape(self):
        return (sympy.S.One, sympy.S.One)


class Generated(MatrixSymbol):
    """A matrix symbol flux makes for its own code (a kept forward value, a hoisted term, h_t as a leaf).

    Its name is the code name of the array holding it; being its own class, it never equals a symbol the user
    named, whatever the user called their inputs and parameters (SymPy symbols are equal by class and name).
    """

    def _latex(self, printer) -> str:  # the array's name in code, set as code: \mathtt{y\_0}
        return r"\mathtt{" + self.name.replace("_", r"\_") + "}"


def called(printer, function: str, argument):
    """f(argument) for SymPy's pretty printer."""
    from sympy.printing.pretty.stringpict import prettyForm

    form = printer._print(argument)
    return prettyForm(*prettyForm(*form.parens()).left(function))
