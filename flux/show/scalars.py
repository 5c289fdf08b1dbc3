r"""Scalars as a textbook writes them: broadcasts folded into scalar multiples, one coefficient, short numbers.

- A broadcast s·1 (`Spread`) multiplied ⊙ by a vector is the scalar multiple s·v: (−Δ·1) ⊙ t reads −Δ·t, and
  2·((((1/n)·Δ)·1) ⊙ (ŷ − t)) reads (2/n)·Δ·(ŷ − t). `scaled` splits such an expression into one coefficient,
  the scalar (1×1) factors and the vector factors left to ⊙; products of scalars are flattened and a scalar's
  transpose is itself (Σ(t)ᵀ is Σ(t)). A broadcast standing alone keeps its 1: Δ·logsumexp(z)·1.
- Numbers print in the shortest form that reads back as the same float: 1e-5 (LaTeX 10^{-5}), 0.5, −100 — never
  1.00000000000000e-5.

Display only: the maths, the kernels and their cache keys never see these forms. SymPy is imported inside
functions only, so `import flux` stays free of it.
"""
from __future__ import annotations

from typing import Any, NamedTuple


class Scaled(NamedTuple):
    """coefficient · (scalar factors) · (vector factors joined by ⊙); `vectors` empty: a broadcast s·1."""

    coefficient: Any
    scalars: list
    vectors: list


def scaled(expr: Any, names: dict) -> Scaled | None:
    """The expression as a scalar multiple when it holds a broadcast (s·1) at its top, else None."""
    kind = type(expr).__name__
    if expr in names:
        return None
    if kind == "Spread":
        coefficient, scalars = scalar_factors(expr.argument, names)
        return Scaled(coefficient, scalars, [])
    if kind == "HadamardProduct":
        parts = [scaled(factor, names) for factor in expr.args]
        if all(part is None for part in parts):
            return None
        coefficient, scalars, vectors = 1, [], []
        for factor, part in zip(expr.args, parts):
            if part is None:
                vectors.append(factor)
            else:
                coefficient, scalars, vectors = coefficient * part.coefficient, scalars + part.scalars, \
                    vectors + part.vectors
        return Scaled(coefficient, scalars, vectors)
    if kind == "MatMul":
        coefficient, factors = expr.as_coeff_matrices()
        inner = scaled(factors[0], names) if len(factors) == 1 else None
        if inner is not None:
            return Scaled(coefficient * inner.coefficient, inner.scalars, inner.vectors)
    return None


def scalar_factors(expr: Any, names: dict) -> tuple:
    """A 1×1 expression as (coefficient, factors): (1/n)·Δ·Σ(t)ᵀ is (1/n, [Δ, Σ(t)])."""
    kind = type(expr).__name__
    if expr in names:
        return 1, [expr]
    if kind == "Transpose" and is_scalar(expr.arg):
        return scalar_factors(expr.arg, names)
    if kind == "MatMul":
        coefficient, factors = expr.as_coeff_matrices()
        flat = []
        for factor in factors:
            inner, parts = scalar_factors(factor, names) if is_scalar(factor) else (1, [factor])
            coefficient, flat = coefficient * inner, flat + parts
        return coefficient, flat
    return 1, [expr]


def is_scalar(expr: Any) -> bool:
    return tuple(expr.shape) == (1, 1)


def is_negative_number(value: Any) -> bool:
    """Whether a coefficient reads with a minus sign: −2, −1/n (sizes are positive)."""
    import sympy

    return bool(sympy.sympify(value).as_coeff_Mul()[0].is_negative)


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
    """A SymPy scalar as text, its floats short: 2/n, 1e-5*n."""
    from sympy.printing.str import StrPrinter

    class ShortFloats(StrPrinter):
        def _print_Float(self, expr):
            return float_text(expr)

        def _print_Pi(self, expr):
            return "π"

        def _print_Pow(self, expr, rational=False):
            if expr.exp == 1 / 2 and expr.base.is_Atom:  # √2, √π
                return "√" + self._print(expr.base)
            return super()._print_Pow(expr, rational)

    return ShortFloats().doprint(value)


def scalar_latex(value: Any, symbol_names: dict) -> str:
    r"""A SymPy scalar as LaTeX, its floats short: \frac{2}{n}, 10^{-5}."""
    from sympy.printing.latex import LatexPrinter

    class ShortFloats(LatexPrinter):
        def _print_Float(self, expr):
            return float_latex(expr)

    return ShortFloats({"symbol_names": symbol_names}).doprint(value)
