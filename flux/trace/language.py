"""The language layers are written in: declarations (param, state) and the operations forward may use.

    class Perceptron(flux.Model):
        W = flux.param("m", "n")
        b = flux.param("m")
        def forward(self, x):
            return σ(self.W * x + self.b)

Declared dimensions are named, so the maths exists before any sizes do: `param("m", "n")` is W ∈ ℝ^{m×n},
`state("h")` a vector h[t] ∈ ℝ^{h}. `hadamard` (a ⊙ b), `concat` ([a; b]) and `total` (Σᵢ xᵢ) work on symbols while
tracing (flux.trace.tracing) and on arrays otherwise. A forward that cannot become maths raises DefinitionError.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class DefinitionError(TypeError):
    """A model's `forward` cannot be turned into maths flux can derive and compile."""


class Declaration:
    """A class-level declaration (parameter or state) whose per-instance value lives in instance.__dict__[store]."""

    store = ""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner):
        if instance is None:
            return self
        return instance.__dict__[self.store][self.name]


class Param(Declaration):
    """A declared parameter: `W = flux.param("m", "n")` is a matrix W ∈ ℝ^{m×n}; one dim gives a vector."""

    store = "_params"

    def __init__(self, *dims: str | int):
        if len(dims) not in (1, 2):
            raise TypeError(f"flux.param takes one or two dimensions, got {dims!r}")
        if len(dims) == 2 and 1 in dims:  # the kernels would lay it out as a vector, not as the 2-D array given
            raise TypeError(f"flux.param{dims!r}: a literal dimension 1 in a matrix parameter is not supported; "
                            "declare a vector as flux.param('m'), or name the dimension (flux.param('m', 'k'))")
        self.dims = tuple(dims)
        self.name = ""

    def __set__(self, instance, value):
        instance._assign_param(self.name, value)

    def __repr__(self):
        return f"param({', '.join(map(repr, self.dims))})"


class State(Declaration):
    """A time-indexed state: read before assignment in `forward` it is h[t−1], assigned it becomes h[t]."""

    store = "_states"

    def __init__(self, *dims: str | int, learnable: bool = False):
        if len(dims) != 1:
            raise TypeError(f"flux.state takes one dimension (states are vectors), got {dims!r}")
        self.dims = tuple(dims)
        self.learnable = learnable
        self.name = ""

    def __set__(self, instance, value):
        instance.__dict__["_states"][self.name] = value

    def __repr__(self):
        return f"state({self.dims[0]!r})"


def param(*dims: str | int) -> Param:
    """Declare a parameter with named dimensions: `W = flux.param("m", "n")`."""
    return Param(*dims)


def state(*dims: str | int, learnable: bool = False) -> State:
    """Declare a recurrent state with a named dimension: `hidden = flux.state("h")`."""
    return State(*dims, learnable=learnable)


def hadamard(a, b):
    """The elementwise (Hadamard) product a ⊙ b, on symbols or arrays; a number or a per-sample scalar (1×1)
    broadcasts against a vector."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.multiply(a, b)
    from ..maths.broadcast import hadamard

    return hadamard(a, b)


def hadamard_power(x, p):
    """x^{∘p}: every entry to the power p (a number), on symbols or arrays; `x ** p` on a vector is the same."""
    if isinstance(x, np.ndarray):
        return np.power(x, p)
    from ..maths.broadcast import BroadcastError, elementwise_power

    try:
        return elementwise_power(x, p)
    except BroadcastError as error:
        raise DefinitionError(str(error)) from None


def concat(*parts):
    """Stack column vectors: [a; b; …] (per sample), on symbols or arrays (batch-first: along axis −1)."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts, axis=-1)
    from sympy import BlockMatrix

    return BlockMatrix([[p] for p in parts])


def total(x):
    """Σᵢ xᵢ per sample: a (1, 1) matrix."""
    if isinstance(x, np.ndarray):
        return x.sum(axis=-1, keepdims=True)
    from ..maths.matrices import totals  # a matrix of tokens: 1ᵀX, per token

    return totals(x)


def mean(x):
    """(1/n)·Σᵢ xᵢ per sample, for x ∈ ℝⁿ: a (1, 1) matrix (a per-sample scalar)."""
    if isinstance(x, np.ndarray):
        return x.mean(axis=-1, keepdims=True)
    from sympy import MatMul, S

    from ..maths.matrices import totals  # a matrix of tokens: (1/d)·1ᵀX, per token

    return MatMul(S.One / x.shape[0], totals(x)).doit()


def norm(x):
    """‖x‖ = √(Σᵢ xᵢ²) per sample: a (1, 1) matrix (a per-sample scalar)."""
    if isinstance(x, np.ndarray):
        return np.sqrt((x * x).sum(axis=-1, keepdims=True))
    from sympy import HadamardPower

    from ..maths.nodes import Apply, Total

    return Apply("sqrt", Total(HadamardPower(x, 2)))


def is_symbolic(value: Any) -> bool:
    """True for SymPy objects (tracing), without importing SymPy on the numeric path."""
    return type(value).__module__.startswith(("sympy", "flux.maths."))  # every node class flux defines


def applied_functions_as_nodes(expr):
    """`x.applyfunc(f)` (SymPy's ElementwiseApplyFunction), with f a SymPy function or a lambda on scalars, as the
    node `flux.elementwise` makes: keyed by the function's name and definition, refused if it has no numba form."""
    from sympy.matrices.expressions.applyfunc import ElementwiseApplyFunction

    if not expr.has(ElementwiseApplyFunction):
        return expr
    from ..generate.scalars import check_numba_form
    from ..maths.elementwise import Z, register
    from ..maths.nodes import Apply

    def rebuild(node):
        if isinstance(node, ElementwiseApplyFunction):
            function = node.function
            name = getattr(function, "__name__", "f") if isinstance(function, type) else "f"
            definition = function(Z)
            check_numba_form(name, definition, Z)
            return Apply(register(name, definition), rebuild(node.expr))
        if not node.args or not node.has(ElementwiseApplyFunction):
            return node
        return node.func(*[rebuild(a) for a in node.args])

    return rebuild(expr)
