"""The elementwise functions flux knows: one entry each, with its maths, its code and its LaTeX.

Adding a function means adding one `ElementwiseFunction` to `FUNCTIONS`. Its derivative is never written by hand:
it is SymPy's scalar derivative of `scalar`, rewritten through the forward output y = f(z) wherever f(z)
appears (σ′ = y(1 − y), tanh′ = 1 − y²), so the backward pass reuses what forward computed and never
overflows (σ′ written as e^{−z}/(1 + e^{−z})² is NaN at z = −800).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import sympy


class sigmoid(sympy.Function):
    """σ(z) = 1 / (1 + e^{−z})."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0]) * (1 - sigmoid(self.args[0]))


class step(sympy.Function):
    """The Heaviside step with step(0) = 0: the derivative of relu."""

    def fdiff(self, argindex=1):
        return sympy.S.Zero


class relu(sympy.Function):
    """relu(z) = max(z, 0)."""

    def fdiff(self, argindex=1):
        return step(relu(self.args[0]))  # step(relu z) = step(z): written through the output


class sign(sympy.Function):
    """sign(z) ∈ {−1, 0, 1}, with derivative 0 (SymPy's own would give a DiracDelta)."""

    def fdiff(self, argindex=1):
        return sympy.S.Zero


class softplus(sympy.Function):
    """softplus(z) = log(1 + e^{z})."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])


@dataclass(frozen=True)
class ElementwiseFunction:
    """One elementwise function: scalar SymPy maths, numba code for one element, and LaTeX."""

    name: str
    scalar: Callable[[sympy.Expr], sympy.Expr]
    code: str  # numba code of f({z}); `real` is the kernel's float type, fast_* come from flux.fastmath
    latex: str

    @cached_property
    def derivative(self) -> sympy.Expr:
        """f′ as a scalar expression in Z (the input) and Y (the output f(z))."""
        output = self.scalar(Z)
        return sympy.diff(output, Z).subs(output, Y)


Z = sympy.Symbol("z", real=True)
Y = sympy.Symbol("y", real=True)

FUNCTIONS: dict[str, ElementwiseFunction] = {
    f.name: f
    for f in [
        ElementwiseFunction("σ", sigmoid, "fast_sigmoid({z})", r"\sigma"),
        ElementwiseFunction("tanh", sympy.tanh, "fast_tanh({z})", r"\tanh"),
        ElementwiseFunction("relu", relu, "np.maximum({z}, real(0))", r"\operatorname{relu}"),
        ElementwiseFunction(
            "softplus", softplus, "(np.maximum({z}, real(0)) + np.log1p(fast_exp(-np.abs({z}))))",
            r"\operatorname{softplus}",
        ),
        ElementwiseFunction("exp", sympy.exp, "fast_exp({z})", r"\exp"),
        ElementwiseFunction("log", sympy.log, "np.log({z})", r"\log"),
        ElementwiseFunction("sqrt", sympy.sqrt, "np.sqrt({z})", r"\sqrt"),
        ElementwiseFunction("abs", sympy.Abs, "np.abs({z})", r"\operatorname{abs}"),
        ElementwiseFunction("square", lambda z: z**2, "({z} * {z})", r"\operatorname{square}"),
        ElementwiseFunction("step", step, "real({z} > real(0))", r"\operatorname{step}"),
        ElementwiseFunction("sign", sign, "np.sign({z})", r"\operatorname{sign}"),
    ]
}

# SymPy scalar function → our name, for turning a scalar derivative back into matrix nodes.
SCALAR_TO_NAME: dict[type, str] = {
    sigmoid: "σ", sympy.tanh: "tanh", relu: "relu", softplus: "softplus", sympy.exp: "exp",
    sympy.log: "log", sympy.Abs: "abs", step: "step", sign: "sign", sympy.sign: "sign",
}
