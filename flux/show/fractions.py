r"""Per-sample scalars (SymPy scalars whose symbols stand for matrix nodes, see `algebra.py`) as text and LaTeX.

A product reads sign · coefficient · numerator / denominator: −(1/n)·Σ(Δ ⊙ u)/s³, in LaTeX
-\frac{1}{n} \frac{\mathbf{1}^{\top} (\Delta \odot u)}{s^{3}}; a power ½ is a root (1/√(xᵀ·x), \sqrt{…}); a sum
reads its positive terms first and numbers last (1 − tanh(m)², (1/n)·Σ(x²) + ε); numbers are short (1e-5,
10^{-5}) and a named constant prints as its name (ε).
"""
from __future__ import annotations

from typing import Any, Callable

from .names import SUPERSCRIPTS, dimension_latex
from .scalars import float_latex, float_text

ADD, HADAMARD, PRODUCT, POWER, ATOM = range(5)  # how tightly a printed expression binds


class Parts:
    """A product split for printing: `sign` (−1 or 1), `coefficient` (numbers and sizes: 1/n), `numerator` and
    `denominator` (lists of powers of atoms and sums, exponents positive)."""

    def __init__(self, expr: Any, atoms: set):
        import sympy

        self.sign = -1 if expr.could_extract_minus_sign() else 1
        expr = -expr if self.sign < 0 else expr
        self.coefficient, dependent = expr.as_independent(*atoms, as_Add=False) if atoms else (expr, sympy.S.One)
        if not dependent.free_symbols & atoms:
            self.coefficient, dependent = self.coefficient * dependent, sympy.S.One
        if isinstance(self.coefficient, sympy.Float) and float(self.coefficient).is_integer():
            self.coefficient = sympy.Integer(int(self.coefficient))  # 2·0.5 is 1: display only
        self.numerator, self.denominator = [], []
        for factor in sympy.Mul.make_args(dependent):
            base, p = factor.as_base_exp()
            if factor == 1:
                continue
            if p.is_number and p.is_negative:
                self.denominator.append(base ** -p)
            else:
                self.numerator.append(factor)


class ScalarText:
    """A SymPy scalar as one line of unicode: (1/n)·Σ(x), Σ(Δ ⊙ x)/(xᵀ·x)^(3/2), 1/√((1/n)·Σ(x²) + ε)."""

    minus = "−"
    times = "·"

    def __init__(self, atom: Callable[[Any], tuple], nodes: dict, constants: dict | None = None):
        self.atom = atom  # node → (its text, its precedence)
        self.nodes = nodes  # Dummy → node
        self.constants = constants or {}  # float → its name (ε)

    def print(self, expr: Any, loosest: int = -1) -> str:
        """The text, in parentheses when it binds no tighter than `loosest`."""
        text, precedence = self.printed(expr)
        return f"({text})" if precedence <= loosest else text

    def printed(self, expr: Any) -> tuple:
        """(text, precedence)."""
        import sympy

        if expr in self.nodes:
            return self.atom(self.nodes[expr])
        if isinstance(expr, sympy.Add):
            return self.sum(expr), ADD
        if expr.is_Number and expr.is_negative:
            return self.minus + self.print(-expr, ADD), ADD
        if expr.is_Number:
            return self.number(expr), ATOM if expr.is_Integer or expr.is_Float else self.rational_precedence
        if isinstance(expr, (sympy.Mul, sympy.Pow)):
            return self.product(Parts(expr, set(self.nodes)))
        if isinstance(expr, sympy.Symbol):  # a size: n, n_x
            return self.size(expr), ATOM
        if isinstance(expr, sympy.Abs):  # √(s²) is |s|
            return f"|{self.print(expr.args[0])}|", ATOM
        if expr.free_symbols & set(self.nodes):  # a function SymPy made of atoms
            return self.function(type(expr).__name__) + f"({', '.join(self.print(a) for a in expr.args)})", ATOM
        return self.number(expr), ATOM

    def function(self, name: str) -> str:
        return name

    rational_precedence = PRODUCT  # 1/2 (LaTeX: \frac{1}{2} is an atom)

    def size(self, symbol: Any) -> str:
        return symbol.name

    def number(self, value: Any) -> str:
        """A number or an expression in sizes, short: 1e-5, 1/2, 2/n, log(2); a named constant by its name (ε)."""
        import sympy

        from .scalars import scalar_text

        if isinstance(value, sympy.Float):
            return self.constants.get(float(value)) or float_text(value)
        return scalar_text(value).replace("-", "−").replace("*", "·")

    def sum(self, expr: Any) -> str:
        """Positive terms first, and terms with atoms before numbers: 1 − tanh(m)², (1/n)·Σ(x²) + ε."""
        atoms = set(self.nodes)
        terms = sorted(expr.as_ordered_terms(), key=lambda t: (t.could_extract_minus_sign(),
                                                               not (t.free_symbols & atoms)))
        text = ""
        for term in terms:
            negative = term.could_extract_minus_sign()
            body = self.print(-term if negative else term, ADD)
            text += (f" {self.minus} " if negative else " + ") + body if text else (
                self.minus if negative else "") + body
        return text

    def product(self, parts: Parts) -> tuple:
        """(text, precedence) of sign · coefficient · numerator / denominator: (1/n)·Σ(x)/s, 1/(n·s)."""
        import sympy

        coefficient, numerator = parts.coefficient, list(parts.numerator)
        denominator = self.divisors(parts.denominator)
        if denominator and not numerator and coefficient != 1:  # (1/n)/s is 1/(n·s)
            top, bottom = coefficient.as_numer_denom()
            coefficient, numerator = sympy.S.One, [] if top == 1 else [top]
            denominator = ([self.print(bottom, PRODUCT)] if bottom != 1 else []) + denominator
        text = self.coefficient(coefficient, alone=not numerator and not denominator)
        several = len(numerator) + bool(text) > 1
        body = self.times.join(self.power(f, PRODUCT if len(numerator) > 1 else HADAMARD)  # one factor needs no
                               for f in numerator)  # parentheses: (1/n)·xᵀ·x, \frac{1}{n} \mathbf{1}^{\top} x
        if denominator:
            body = self.fraction(body, denominator)
        text = self.times.join(t for t in (text, body) if t)
        precedence = PRODUCT if several or (denominator and self.times == "·") else ATOM
        return (self.minus + text, ADD) if parts.sign < 0 else (text or "1", precedence)

    def divisors(self, factors: list) -> list:
        r"""A denominator's factors: Δ/(xᵀ·x) in text, \frac{\Delta}{x^{\top} x} in LaTeX."""
        return [self.power(f, PRODUCT if len(factors) > 1 or self.times == "·" else HADAMARD) for f in factors]

    def fraction(self, numerator: str, denominator: list) -> str:
        joined = self.times.join(denominator)
        return (numerator or "1") + "/" + (f"({joined})" if len(denominator) > 1 else joined)

    def coefficient(self, value: Any, alone: bool) -> str:
        """1/n alone, (1/n) before a factor; 1 is no coefficient."""
        if value == 1:
            return "1" if alone else ""
        text = self.number(value)
        return text if alone or is_plain(text) else f"({text})"

    def power(self, expr: Any, loosest: int = PRODUCT) -> str:
        """b^p for p > 0: √b for p = ½, b² with a superscript, b^(3/2); b alone in parentheses when it binds no
        tighter than `loosest`."""
        import sympy

        base, p = expr.as_base_exp() if isinstance(expr, sympy.Pow) else (expr, sympy.S.One)
        if p == 1:
            return self.print(base, loosest)
        if p == sympy.S.Half:
            return self.root(*self.printed(base))
        return self.superscript(self.print(base, POWER), p)

    def root(self, text: str, precedence: int) -> str:
        return root(text, precedence)

    def superscript(self, base: str, p: Any) -> str:
        exponent = self.number(p) if p.is_Float else str(p)
        return base + (exponent.translate(SUPERSCRIPTS) if exponent.isdigit() else f"^({exponent})")


class ScalarLatex(ScalarText):
    r"""A SymPy scalar as LaTeX: \frac{1}{n} \mathbf{1}^{\top} x, \frac{\Delta}{\sqrt{s}}, s^{3}."""

    minus = "-"
    times = " "
    rational_precedence = ATOM

    def size(self, symbol: Any) -> str:
        return dimension_latex(symbol.name)

    def number(self, value: Any) -> str:
        import sympy

        from .scalars import scalar_latex

        if isinstance(value, sympy.Float):
            return self.constants.get(float(value)) or float_latex(value)
        return scalar_latex(value, {s: dimension_latex(s.name) for s in value.free_symbols})

    def coefficient(self, value: Any, alone: bool) -> str:
        return "" if value == 1 and not alone else self.number(value)

    def function(self, name: str) -> str:
        return rf"\operatorname{{{name}}}"

    def fraction(self, numerator: str, denominator: list) -> str:
        return rf"\frac{{{numerator or '1'}}}{{{self.times.join(denominator)}}}"

    def root(self, text: str, precedence: int) -> str:
        return rf"\sqrt{{{text}}}"

    def superscript(self, base: str, p: Any) -> str:
        return f"{base}^{{{p.p}/{p.q}}}" if p.is_Rational and not p.is_Integer else f"{base}^{{{self.number(p)}}}"


def root(text: str, precedence: int) -> str:
    """√x, √(xᵀ·x)."""
    return "√" + (text if precedence == ATOM and text.isalnum() else f"({text})")


def is_plain(text: str) -> bool:
    """Whether a coefficient reads without parentheses: 2, 0.5, 1e-5, ε, log(2) (not 1/n, 2·n)."""
    try:
        float(text)
        return True
    except ValueError:
        return not any(c in text for c in " +-−/*·")
