"""The elementwise functions flux knows: one entry each, with its maths, its code and its LaTeX.

Adding a function means adding one `ElementwiseFunction` to `BUILT_IN`: it is then `flux.<name>` and
`Dense(…, "<name>")` too (flux.layers.activations reads this table on demand). Its derivative is never written by hand:
it is SymPy's scalar derivative of `scalar`, rewritten through the forward output y = f(z) wherever f(z)
appears (σ′ = y(1 − y), tanh′ = 1 − y²), so the backward pass reuses what forward computed and never
overflows (σ′ written as e^{−z}/(1 + e^{−z})² is NaN at z = −800).
"""
from __future__ import annotations

import hashlib
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
    """One elementwise function: its scalar SymPy maths and its LaTeX; numba code comes from the scalar printer
    (flux.generate.scalars) unless `code` gives a faster or more stable form."""

    name: str  # the name it is shown by
    scalar: Callable[[sympy.Expr], sympy.Expr]
    latex: str  # the function's LaTeX name, or a template in {z} when it is not written f(z)
    code: str = ""  # numba code of f({z}); `real` is the kernel's float type, fast_* come from flux.fastmath
    text: str = ""  # a unicode template in {z} ({z_atom}: parenthesised unless atomic) when it is not name(z)
    doc: str = ""  # the equation `help(flux.<name>)` shows
    public: bool = True  # flux.<name> and Dense(…, "<name>"); False for derivatives' and losses' own helpers

    @cached_property
    def derivative(self) -> sympy.Expr:
        """f′ as a scalar expression in Z (the input) and Y (the output f(z))."""
        output = self.scalar(Z)
        return sympy.diff(output, Z).subs(output, Y)

    @property
    def definition(self) -> sympy.Expr:
        """f(z) as a scalar expression in Z."""
        return self.scalar(Z)


Z = sympy.Symbol("z", real=True)
Y = sympy.Symbol("y", real=True)


def operator_name(name: str) -> str:
    """\\operatorname{gelu}; a derivative's prime outside it, in ASCII (\\operatorname{elu}')."""
    base = name.rstrip("′")
    return rf"\operatorname{{{base}}}" + "'" * (len(name) - len(base))


BUILT_IN: list[ElementwiseFunction] = [
    ElementwiseFunction("σ", sigmoid, r"\sigma", "fast_sigmoid({z})"),
    ElementwiseFunction("tanh", sympy.tanh, r"\tanh", "fast_tanh({z})"),
    ElementwiseFunction("relu", relu, operator_name("relu"), "np.maximum({z}, real(0))"),
    ElementwiseFunction("softplus", softplus, operator_name("softplus"),
                        "(np.maximum({z}, real(0)) + np.log1p(fast_exp(-np.abs({z}))))"),
    ElementwiseFunction("exp", sympy.exp, r"\exp", "fast_exp({z})"),
    ElementwiseFunction("log", sympy.log, r"\log", "np.log({z})"),
    ElementwiseFunction("sqrt", sympy.sqrt, r"\sqrt{{{z}}}", "np.sqrt({z})"),
    ElementwiseFunction("abs", sympy.Abs, operator_name("abs"), "np.abs({z})"),
    ElementwiseFunction("square", lambda z: z**2, operator_name("square"), "({z} * {z})"),
    ElementwiseFunction("heaviside", heaviside, operator_name("heaviside"), "real({z} > real(0))", public=False),
    ElementwiseFunction("sign", sign, operator_name("sign"), "np.sign({z})", public=False),
    # the losses' log, max(log z, −100): NaN stays NaN (np.maximum propagates it). Its derivative is 0 at and
    # below the clamp (z ≤ e^{−100}) and 1/z above it, taken as 1/max(z, smallest normal float) so it stays finite
    # in float32, where 1/z overflows for subnormal z and a zero target's 0·∞ would make the gradient NaN.
    ElementwiseFunction("clampedlog", clampedlog, r"\max(\log({z}), -100)", "np.maximum(np.log({z}), real(-100))",
                        "max(log({z}), −100)", public=False),
    ElementwiseFunction(
        "clampedlog′", clampedlog_derivative, r"\frac{{[{z} > e^{{-100}}]}}{{{z}}}",
        "(real(0) if {z} <= real(3.720075976020836e-44) else real(1) / np.maximum({z}, real(np.finfo(real).tiny)))",
        "([{z} > e⁻¹⁰⁰]/{z_atom})", public=False,
    ),
    # written as a user writes them (flux.elementwise); code, derivative, display and `flux.<name>` follow from this
    ElementwiseFunction("erf", sympy.erf, operator_name("erf"),
                        doc="erf(z) = (2/√π) ∫₀ᶻ e^{−t²} dt, the error function."),
    ElementwiseFunction("gelu", lambda z: z * (1 + sympy.erf(z / sympy.sqrt(2))) / 2, operator_name("gelu"),
                        doc="gelu(z) = z·(1 + erf(z/√2))/2 = z·Φ(z), exact (not the tanh approximation)."),
    ElementwiseFunction("silu", lambda z: z * sigmoid(z), operator_name("silu"), doc="silu(z) = swish(z) = z·σ(z)."),
    ElementwiseFunction("elu", lambda z: sympy.Piecewise((sympy.exp(z) - 1, z < 0), (z, True)), operator_name("elu"),
                        doc="elu(z) = e^z − 1 for z < 0, z otherwise (α = 1)."),
    ElementwiseFunction("leakyrelu", lambda z: sympy.Piecewise((z / 100, z < 0), (z, True)),
                        operator_name("leakyrelu"), doc="leakyrelu(z) = z/100 for z < 0, z otherwise (slope 0.01)."),
    ElementwiseFunction("softsign", lambda z: z / (1 + sympy.Abs(z)), operator_name("softsign"),
                        doc="softsign(z) = z/(1 + |z|)."),
]

# key → function. Built-ins are keyed by their name; a user's function by its name and a hash of its definition
# (see `register`), so two functions with one name never share a node, a derivation or a kernel.
FUNCTIONS: dict[str, ElementwiseFunction] = {f.name: f for f in BUILT_IN}

# SymPy scalar function → our key, for turning a scalar derivative back into matrix nodes.
SCALAR_TO_NAME: dict[type, str] = {
    **{f.scalar: f.name for f in BUILT_IN if isinstance(f.scalar, type)}, sympy.sign: "sign",
}

# SymPy scalar function → the numba template of a built-in that has one (σ inside silu prints as fast_sigmoid).
SCALAR_CODE: dict[type, str] = {f.scalar: f.code for f in BUILT_IN if isinstance(f.scalar, type) and f.code}


def register(name: str, definition: sympy.Expr) -> str:
    """The key of the elementwise function z ↦ `definition` (a scalar expression in Z) shown as `name`.

    The key holds a hash of the definition's exact SymPy form: it is part of every traced expression that applies
    the function, hence of the kernel's identity, so redefining "gelu" gives a new key and a new kernel.
    """
    definition = sympy.sympify(definition)
    if type(definition) in SCALAR_TO_NAME and definition.args == (Z,):
        return SCALAR_TO_NAME[type(definition)]
    digest = hashlib.sha256(f"{name}\n{sympy.srepr(definition)}".encode()).hexdigest()[:16]
    key = f"{name}#{digest}"
    if key not in FUNCTIONS:
        FUNCTIONS[key] = ElementwiseFunction(name, sympy.Lambda(Z, definition), operator_name(name))
    return key
