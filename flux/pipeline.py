"""From a model to its compiled program: derivation (trace → unify → derive) and kernels (generate → load).

A kernel's identity is the maths itself: each model (an instance, or a class) is traced on symbols — cheap, no
derivation — and the exact text of that trace (`Maths.identity`: SymPy's srepr of inputs, parameters, states and
outputs, with symbolic sizes) keys everything: the derivation (in memory), the compiled program (in memory, per
dtype) and the generated module on disk (a hash of the identity, the dtype and flux's generator). Instances with
the same maths share one derivation and one program whatever their sizes; different maths never share one, whatever
the class is called or where its source lives. The generated module is self-describing (its METADATA says which
arrays go where), so a second process traces, finds the module on disk and loads it without deriving anything.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from . import cache
from .run.feedforward import configuration_generation, runtime_of
from .trace.language import internal_name, trace_forward


@dataclass
class Derivation:
    """A model's maths and its derived gradients, as SymPy expressions.

    outputs[k] is the k-th output of one step; gradients["W"] is ∂L/∂W given upstream ∂L/∂output = Δ.
    """

    name: str
    inputs: list
    params: dict
    states: list  # (dotted name, h[t−1] symbol, h[t] expression)
    outputs: list
    upstream: list  # Δ symbols: one per output, then one per state
    gradients: dict = field(default_factory=dict)

    @property
    def output(self):
        return self.outputs[0]

    def _repr_latex_(self) -> str:
        from .show.layout import derivation_latex

        return f"$\\displaystyle {derivation_latex(self)}$"

    def __repr__(self) -> str:
        from .show.layout import derivation_text

        return derivation_text(self)


def derive_model(model) -> Derivation:
    """Trace `model.forward` on symbols, check its shapes, and derive every gradient."""
    cls = model if isinstance(model, type) else type(model)
    return derive_trace(trace_forward(model), cls.__name__)


def derive_trace(trace, name: str) -> Derivation:
    """A traced model's maths with its shapes unified (a shape error raises here) and every gradient derived."""
    import sympy

    from .derive.rules import backward_expressions
    from .trace.shapes import unify_dimensions

    new_states = [record[2] for record in trace.states]
    replacements = unify_dimensions(trace.outputs + new_states, trace.rigid_dims, name)
    for _, previous, new in trace.states:  # h[t] must have the shape of h[t−1]
        replacements.update(unify_dimensions([sympy.MatAdd(previous, new)], trace.rigid_dims, name))

    def canonical(expr):
        # .doit() puts products and sums in SymPy's canonical order (σ(a) ⊙ tanh(b) and tanh(b) ⊙ σ(a) become one
        # node), so a value written twice in forward is computed once and shared with backward
        return (expr.xreplace(replacements) if replacements else expr).doit()

    inputs = [canonical(x) for x in trace.inputs]
    params = {k: canonical(v) for k, v in trace.params.items()}
    states = [(n, canonical(p), canonical(h)) for n, p, h in trace.states]
    outputs = [canonical(o) for o in trace.outputs]
    every = outputs + [h for _, _, h in states]
    taken = {s.name for s in inputs + list(params.values()) + [p for _, p, _ in states]}
    if len(outputs) == 1:
        upstream = [sympy.MatrixSymbol(internal_name("Δ", taken), *outputs[0].shape)]
    else:
        upstream = [sympy.MatrixSymbol(internal_name(f"Δ_{k}", taken), *o.shape) for k, o in enumerate(outputs, 1)]
    upstream += [sympy.MatrixSymbol(internal_name(f"Δ_{n.replace('.', '_')}", taken), *p.shape)
                 for n, p, _ in states]
    wrt = inputs + list(params.values()) + [p for _, p, _ in states]
    gradients = backward_expressions({k: e for k, e in enumerate(every)}, dict(enumerate(upstream)), wrt)
    return Derivation(name, inputs, params, states, outputs, upstream, gradients)


# ---- identity: a model's maths is its traced expression ------------------------------------------------

@dataclass(frozen=True)
class Maths:
    """One model's traced maths (a class's or an instance's) and its identity.

    `identity` is the exact text of the traced expression (sympy.srepr of the inputs, parameters, states and
    outputs with symbolic sizes) and the model's name: two models share a derivation and compiled kernels exactly
    when their identities are equal, i.e. when they compute the same maths. Sizes are symbols, so they never
    enter it; a constant forward reads (self.alpha = 2.0), an activation, a helper function's body all do.
    """

    name: str
    trace: Any
    identity: str


def maths_of(model) -> Maths:
    """Trace a model class (every time: a class may be patched) or instance (once, and again after any model's
    attribute changed: `m.alpha = 3.0` or a sub-model's, see Model.__setattr__). An instance keeps its traced maths
    in its run-time state, beside the program compiled for it."""
    if isinstance(model, type):
        trace = trace_forward(model)
        return Maths(model.__name__, trace, identity_text(model.__name__, trace))
    runtime = runtime_of(model)
    generation = configuration_generation()
    if runtime.maths is None or runtime.configuration != generation:
        name = type(model).__name__
        trace = trace_forward(model)
        runtime.maths, runtime.configuration = Maths(name, trace, identity_text(name, trace)), generation
    return runtime.maths


def identity_text(name: str, trace) -> str:
    """The exact text of a trace (SymPy's srepr: every node, symbol, assumption and number, nothing elided)."""
    from sympy import srepr

    parts = [f"model {name!r}"]
    parts += [f"input {srepr(x)}" for x in trace.inputs]
    parts += [f"param {k!r} {srepr(v)}" for k, v in trace.params.items()]
    parts += [f"state {n!r} {srepr(p)} -> {srepr(h)}" for n, p, h in trace.states]
    parts += [f"output {srepr(o)}" for o in trace.outputs]
    parts += [f"rigid {sorted(d.name for d in trace.rigid_dims)!r}"]
    return "\n".join(parts)


# ---- compiled programs ---------------------------------------------------------------------------------

class Kernel:
    """One compiled kernel: call it like a function; `.source` is its generated code."""

    def __init__(self, function, name: str):
        self.function = function
        self.name = name

    @cached_property
    def source(self) -> str:
        return inspect.getsource(self.function.py_func)

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self) -> str:
        return f"<flux kernel {self.name}>"


class Program:
    """A model's loaded kernels and the metadata that says how to call them."""

    def __init__(self, module):
        self.module = module
        self.metadata: dict[str, Any] = module.METADATA
        self.forward = Kernel(module.forward, "forward")
        self.backward = Kernel(module.backward, "backward")
        self.input_sizes = module.input_sizes
        self.check_params = module.check_params

    @property
    def source(self) -> str:
        return inspect.getsource(self.module)

    def __repr__(self) -> str:
        return f"<flux program {self.metadata['model']} ({self.metadata['dtype']}): forward, backward>"


_programs: dict = {}  # (identity, dtype name) → Program
_derivations: dict = {}  # identity → Derivation


def derivation_of(model) -> Derivation:
    """The derivation of a model's maths: derived once per identity (traced expression), shared by equal maths."""
    return derivation_of_maths(maths_of(model))


def derivation_of_maths(maths: Maths) -> Derivation:
    if maths.identity not in _derivations:
        _derivations[maths.identity] = derive_trace(maths.trace, maths.name)
    return _derivations[maths.identity]


def program_of(model, dtype) -> Program:
    """The compiled program for a model's maths and dtype: from memory, the disk cache, or generated.

    The on-disk module is named by a hash of the maths' identity, the dtype and flux's generator, so a second
    process traces the model (cheap, no derivation) and loads the module without deriving or generating.
    """
    dtype = np.dtype(dtype)
    maths = maths_of(model)
    key = (maths.identity, dtype.name)
    if key not in _programs:
        module_key = cache.module_key("model", maths.identity, dtype.name)

        def generate() -> str:
            from .generate.feedforward import generate_module_source

            return generate_module_source(derivation_of_maths(maths), dtype, module_key)

        module = cache.load_module(f"{maths.name.lower()}_{dtype.name}", module_key, generate)
        _programs[key] = Program(module)
    return _programs[key]
