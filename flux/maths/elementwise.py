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


class heaviside(sympy.Function):
    """The Heaviside step function with heaviside(0) = 0: the derivative of relu."""

    def fdiff(self, argindex=1):
        return sympy.S.Zero


class relu(sympy.Function):
    """relu(z) = max(z, 0)."""

    def fdiff(self, argindex=1):
        return heaviside(relu(self.args[0]))  # heaviside(relu z) = heaviside(z): written through the output


class sign(sympy.Function):
    """sign(z) ∈ {−1, 0, 1}, with derivative 0 (SymPy's own would give a DiracDelta)."""

    def fdiff(self, argindex=1):
        return sympy.S.Zero


class clampedlog(sympy.Function):
    """log z clamped below at −100: max(log z, −100), as PyTorch's BCELoss takes its logs (so 0·log 0 = 0·(−100) = 0
    and log 0 costs 100, not ∞). Its derivative is 1/z above the clamp and 0 below it (where the value is constant)."""

    def fdiff(self, argindex=1):
        return clampedlog_derivative(self.args[0])


class clampedlog_derivative(sympy.Function):
    """[z > e^{−100}]/z: the derivative of max(log z, −100)."""

    def fdiff(self, argindex=1):
        return -clampedlog_derivative(self.args[0]) ** 2


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
    latex: str  # the function's LaTeX name, or a template in {z} when it is not written f(z)
    text: str = ""  # a unicode template in {z} ({z_atom}: parenthesised unless atomic) when it is not name(z)

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
        ElementwiseFunction("sqrt", sympy.sqrt, "np.sqrt({z})", r"\sqrt{{{z}}}"),
        ElementwiseFunction("abs", sympy.Abs, "np.abs({z})", r"\operatorname{abs}"),
        ElementwiseFunction("square", lambda z: z**2, "({z} * {z})", r"\operatorname{square}"),
        ElementwiseFunction("heaviside", heaviside, "real({z} > real(0))", r"\operatorname{heaviside}"),
        ElementwiseFunction("sign", sign, "np.sign({z})", r"\operatorname{sign}"),
        # the losses' log, max(log z, −100): NaN stays NaN (np.maximum propagates it). Its derivative is 0 at and
        # below the clamp (z ≤ e^{−100}) and 1/z above it, taken as 1/max(z, smallest normal float) so it stays finite
        # in float32, where 1/z overflows for subnormal z and a zero target's 0·∞ would make the gradient NaN.
        ElementwiseFunction("clampedlog", clampedlog, "np.maximum(np.log({z}), real(-100))",
                            r"\max(\log({z}), -100)", "max(log({z}), −100)"),
        ElementwiseFunction(
            "clampedlog′", clampedlog_derivative,
            "(real(0) if {z} <= real(3.720075976020836e-44) else real(1) / np.maximum({z}, real(np.finfo(real).tiny)))",
            r"\frac{{[{z} > e^{{-100}}]}}{{{z}}}", "([{z} > e⁻¹⁰⁰]/{z_atom})",
        ),
    ]
}

# SymPy scalar function → our name, for turning a scalar derivative back into matrix nodes.
SCALAR_TO_NAME: dict[type, str] = {
    sigmoid: "σ", sympy.tanh: "tanh", relu: "relu", softplus: "softplus", sympy.exp: "exp",
    sympy.log: "log", sympy.Abs: "abs", heaviside: "heaviside", sign: "sign", sympy.sign: "sign",
    clampedlog: "clampedlog", clampedlog_derivative: "clampedlog′",
}
