"""The scalar printer: a SymPy scalar expression (one element of an elementwise function) → numba code.

Constants are written in the kernel's float type (`real(0.5)`, `real(math.pi)`), so float32 kernels stay float32;
flux's own functions use their table's code (σ → fast_sigmoid, tanh → fast_tanh); Piecewise becomes nested
conditional expressions and Max/Min become max/min. Anything else is refused by name (`NoNumbaForm`), when the
function is defined rather than when a kernel is compiled.
"""
from __future__ import annotations

import sympy
from sympy.printing.printer import Printer

from ..maths.elementwise import SCALAR_CODE


class NoNumbaForm(TypeError):
    """A scalar expression uses a function flux cannot write as numba code."""


# SymPy function → the numba function of one argument that computes it (the math module's, else NumPy's)
CALLS: dict[type, str] = {
    sympy.exp: "np.exp", sympy.log: "np.log", sympy.erf: "math.erf", sympy.erfc: "math.erfc",
    sympy.sin: "np.sin", sympy.cos: "np.cos", sympy.tan: "np.tan", sympy.asin: "np.arcsin", sympy.acos: "np.arccos",
    sympy.atan: "np.arctan", sympy.sinh: "np.sinh", sympy.cosh: "np.cosh", sympy.tanh: "np.tanh",
    sympy.asinh: "np.arcsinh", sympy.acosh: "np.arccosh", sympy.atanh: "np.arctanh", sympy.Abs: "np.abs",
    sympy.sign: "np.sign", sympy.floor: "np.floor", sympy.ceiling: "np.ceil", sympy.gamma: "math.gamma",
    sympy.loggamma: "math.lgamma",
}
CONSTANTS = {sympy.pi: "math.pi", sympy.E: "math.e"}
RELATIONS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!="}


def scalar_code(expr: sympy.Expr, symbols: dict[sympy.Symbol, str]) -> str:
    """Numba code computing the scalar `expr`, with each symbol replaced by the code in `symbols`."""
    return ScalarPrinter(symbols).doprint(sympy.sympify(expr))


def check_numba_form(name: str, expr: sympy.Expr, z: sympy.Symbol) -> None:
    """Raise NoNumbaForm naming the function `name` when `expr` (its definition or derivative) cannot be printed."""
    try:
        scalar_code(expr, {z: "z"})
    except NoNumbaForm as error:
        raise NoNumbaForm(f"the elementwise function {name!r} cannot be compiled: {error}") from None


class ScalarPrinter(Printer):
    """One `_print_<Node>` method per SymPy scalar node, as the matrix printers have."""

    printmethod = "_numba_scalar"

    def __init__(self, symbols: dict[sympy.Symbol, str]):
        super().__init__()
        self.symbols = symbols

    def emptyPrinter(self, expr):
        raise NoNumbaForm(f"{expr} ({type(expr).__name__}) has no numba form")

    def _print_Symbol(self, expr):
        if expr not in self.symbols:
            raise NoNumbaForm(f"the symbol {expr} is not the function's argument")
        return self.symbols[expr]

    def _print_Integer(self, expr):
        return f"real({int(expr)})"

    def _print_Rational(self, expr):
        return f"(real({expr.p}) / real({expr.q}))"

    def _print_Float(self, expr):
        return f"real({float(expr)!r})"

    def _print_NumberSymbol(self, expr):
        if expr in CONSTANTS:
            return f"real({CONSTANTS[expr]})"
        return f"real({float(expr)!r})"

    def _print_Exp1(self, expr):
        return "real(math.e)"

    def _print_Add(self, expr):
        return "(" + " + ".join(self._print(a) for a in expr.args) + ")"

    def _print_Mul(self, expr):
        numerator, denominator = sympy.fraction(expr)
        if denominator != 1:
            return f"({self._print(numerator)} / {self._print(denominator)})"
        return "(" + " * ".join(self._print(a) for a in expr.args) + ")"

    def _print_Pow(self, expr):
        base, exponent = expr.args
        if base == sympy.E:
            return self._print(sympy.exp(exponent))
        return power_code(self._print(base), exponent, self._print)

    def _print_Function(self, expr):
        if len(expr.args) == 1 and type(expr) in SCALAR_CODE:
            return SCALAR_CODE[type(expr)].format(z=self._print(expr.args[0]))
        if len(expr.args) == 1 and type(expr) in CALLS:
            return f"{CALLS[type(expr)]}({self._print(expr.args[0])})"
        raise NoNumbaForm(f"{type(expr).__name__} has no numba form")

    def _print_exp(self, expr):
        return self._print_Function(expr)

    def _print_log(self, expr):
        argument = expr.args[0]
        if isinstance(argument, sympy.Add) and 1 in argument.args:  # log(1 + u) → log1p(u): exact for small u
            return f"np.log1p({self._print(argument - 1)})"
        return self._print_Function(expr)

    def _print_Heaviside(self, expr):
        z, at_zero = self._print(expr.args[0]), expr.args[1] if len(expr.args) > 1 else sympy.S.Half
        return f"(real(1) if {z} > real(0) else ({self._print(at_zero)} if {z} == real(0) else real(0)))"

    def _print_Max(self, expr):
        return self._fold("max", expr.args)

    def _print_Min(self, expr):
        return self._fold("min", expr.args)

    def _fold(self, function, args):
        code = self._print(args[0])
        for a in args[1:]:
            code = f"{function}({code}, {self._print(a)})"
        return code

    def _print_Piecewise(self, expr):
        *pieces, (last, condition) = expr.args
        code = self._print(last) if condition == sympy.true else f"({self._print(last)} if {self._print(condition)} " \
            "else real(np.nan))"
        for value, condition in reversed(pieces):
            code = f"({self._print(value)} if {self._print(condition)} else {code})"
        return code

    def _print_Relational(self, expr):
        return f"({self._print(expr.lhs)} {RELATIONS[expr.rel_op]} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        return "(" + " and ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " or ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"(not {self._print(expr.args[0])})"

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"


def power_code(code: str, power, number) -> str:
    """code^power in numba as NumPy computes it: x^(−k) as 1/x^k (numba's integer power raises ZeroDivisionError at
    x = 0 whatever the error model; 1/0 is ∞ under error_model="numpy"), x^(±1/2) through np.sqrt (pow(−∞, ½) is
    +∞ where √−∞ is NaN). `number` prints a non-integer exponent."""
    power = sympy.sympify(power)
    if power.is_Number and abs(float(power)) == 0.5:  # ½ or 0.5
        return f"np.sqrt({code})" if power > 0 else f"(real(1) / np.sqrt({code}))"
    if power == -1:
        return f"(real(1) / {code})"
    if power.is_Integer:
        return f"({code} ** {int(power)})" if power >= 0 else f"(real(1) / ({code} ** {-int(power)}))"
    return f"({code} ** {number(power)})"
