r"""Numbers as a textbook writes them (broadcasts and per-sample scalars: `algebra.py`, `fractions.py`).

- Numbers print in the shortest form that reads back as the same float: 1e-5 (LaTeX 10^{-5}), 0.5, −100 — never
  1.00000000000000e-5.

Display only: the maths and the kernels never see these forms (generated code quotes them in comments). SymPy is imported inside
functions only, so `import flux` stays free of it.
"""
from __future__ import annotations

from typing import Any


def is_number(text: str) -> bool:
    """Whether a coefficient's text is one number (0.5, 1e-5), which needs no parentheses."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def short_float(value: float) -> tuple:
    """(mantissa, exponent or None) of the shortest text that reads back as `value`: 1e-05 → ("1", -5)."""
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        return mantissa.removesuffix(".0"), int(exponent)
    return text.removesuffix(".0"), None


def float_text(value: float) -> str:
    """1e-5, 0.5, -100: the shortest round-tripping form."""
    mantissa, exponent = short_float(value)
    return mantissa if exponent is None else f"{mantissa}e{exponent}"


def float_latex(value: float) -> str:
    r"""10^{-5}, 1.5 \cdot 10^{-5}, 0.5, -100."""
    mantissa, exponent = short_float(value)
    if exponent is None:
        return mantissa
    power = f"10^{{{exponent}}}"
    return {"1": power, "-1": "-" + power}.get(mantissa, rf"{mantissa} \cdot {power}")


def scalar_text(value: Any) -> str:
    """A SymPy scalar as text, its floats short and its roots and π as symbols: 2/n, 1e-5*n, 2/√π."""
    from sympy.printing.str import StrPrinter

    from .names import SUPERSCRIPTS

    class ShortFloats(StrPrinter):
        def _print_Float(self, expr):
            return float_text(expr)

        def _print_Pi(self, expr):
            return "π"

        def _print_Pow(self, expr, rational=False):
            if expr.exp == 1 / 2 and expr.base.is_Atom:  # √2, √π
                return "√" + self._print(expr.base)
            if expr.exp.is_Integer and expr.base.is_Atom:  # n³, 1/n³ (never Python's n**(-3))
                exponent = "" if abs(expr.exp) == 1 else str(abs(expr.exp)).translate(SUPERSCRIPTS)
                return self._print(expr.base) + exponent if expr.exp > 0 else f"1/{self._print(expr.base)}{exponent}"
            return super()._print_Pow(expr, rational).replace("**", "^")

    return ShortFloats().doprint(value)


def scalar_latex(value: Any, symbol_names: dict) -> str:
    r"""A SymPy scalar as LaTeX, its floats short: \frac{2}{n}, 10^{-5}."""
    from sympy.printing.latex import LatexPrinter

    class ShortFloats(LatexPrinter):
        def _print_Float(self, expr):
            return float_latex(expr)

    return ShortFloats({"symbol_names": symbol_names}).doprint(value)
