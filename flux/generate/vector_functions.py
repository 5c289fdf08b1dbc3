"""Elementwise functions as whole-array NumPy code, for the NumPy tier (`flux.generate.vectorised`).

A built-in with a NumPy form uses it (σ → `sigmoid` from flux.vectormath, tanh → np.tanh); any other function —
a user's `flux.elementwise`, gelu, elu — prints its scalar SymPy definition with whole-array operations:

    Piecewise((e^z − 1, z < 0), (z, True))  →  np.where(z < real(0), np.exp(z) - real(1), z)
    Max(z, 0), Min(…)                       →  np.maximum(z, real(0)), np.minimum(…)
    erf, erfc, gamma, loggamma              →  scipy.special (imported by the module only when it needs them)

The numba scalar printer's other rules (constants in the kernel's float type, log(1 + u) → log1p(u)) are kept by
subclassing it. np.where computes both branches: the modules run under np.errstate(all="ignore"), as numba's
error model makes 1/0 = inf without a word.
"""
from __future__ import annotations

import sympy

from ..maths.elementwise import BUILT_IN, FUNCTIONS, Z
from .scalars import CALLS, NoNumbaForm, ScalarPrinter

# built-in name → NumPy code of f({z}) over whole arrays ({z} appears once, or is a plain name: see `apply_code`)
NUMPY_CODE = {
    "σ": "sigmoid({z})",
    "tanh": "np.tanh({z})",
    "relu": "np.maximum({z}, real(0))",
    "softplus": "(np.maximum({z}, real(0)) + np.log1p(np.exp(-np.abs({z}))))",
    "exp": "np.exp({z})",
    "log": "np.log({z})",
    "sqrt": "np.sqrt({z})",
    "abs": "np.abs({z})",
    "square": "np.square({z})",
    "heaviside": "np.where({z} > real(0), real(1), real(0))",
    "sign": "np.sign({z})",
    "clampedlog": "np.maximum(np.log({z}), real(-100))",
    "clampedlog′": "clampedlog_derivative({z})",
}
# SymPy function class → its NumPy template (σ inside silu's definition prints as sigmoid)
SCALAR_NUMPY = {f.scalar: NUMPY_CODE[f.name] for f in BUILT_IN if isinstance(f.scalar, type) and f.name in NUMPY_CODE}
SPECIAL = {sympy.erf: "special.erf", sympy.erfc: "special.erfc", sympy.gamma: "special.gamma",
           sympy.loggamma: "special.gammaln"}


def apply_code(function_key: str, argument: str) -> str:
    """Whole-array code for f(argument), f a key of FUNCTIONS; `argument` is a name (it may be read twice)."""
    function = FUNCTIONS[function_key]
    if function_key in NUMPY_CODE:
        return NUMPY_CODE[function_key].format(z=argument)
    return VectorScalarPrinter({Z: argument}).doprint(sympy.sympify(function.definition))


def uses_argument_twice(function_key: str) -> bool:
    """Whether f's code reads its argument more than once (then the caller names it first)."""
    return apply_code(function_key, "ARGUMENT").count("ARGUMENT") > 1


class VectorScalarPrinter(ScalarPrinter):
    """The numba scalar printer with whole-array forms for what numba writes as scalar control flow."""

    def _print_Function(self, expr):
        if len(expr.args) == 1 and type(expr) in SCALAR_NUMPY:
            return SCALAR_NUMPY[type(expr)].format(z=self._print(expr.args[0]))
        if len(expr.args) == 1 and type(expr) in SPECIAL:
            return f"{SPECIAL[type(expr)]}({self._print(expr.args[0])})"
        if len(expr.args) == 1 and type(expr) in CALLS and CALLS[type(expr)].startswith("np."):
            return f"{CALLS[type(expr)]}({self._print(expr.args[0])})"
        raise NoNumbaForm(f"{type(expr).__name__} has no NumPy form")

    def _print_Heaviside(self, expr):
        z, at_zero = self._print(expr.args[0]), expr.args[1] if len(expr.args) > 1 else sympy.S.Half
        return f"np.where({z} > real(0), real(1), np.where({z} == real(0), {self._print(at_zero)}, real(0)))"

    def _fold(self, function, args):
        code = self._print(args[0])
        for a in args[1:]:
            code = f"np.{function}imum({code}, {self._print(a)})"
        return code

    def _print_Piecewise(self, expr):
        *pieces, (last, condition) = expr.args
        code = self._print(last) if condition == sympy.true else \
            f"np.where({self._print(condition)}, {self._print(last)}, real(np.nan))"
        for value, condition in reversed(pieces):
            code = f"np.where({self._print(condition)}, {self._print(value)}, {code})"
        return code

    def _print_And(self, expr):
        return "(" + " & ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " | ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"(~{self._print(expr.args[0])})"
