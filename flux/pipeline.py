"""From a model to its compiled program: derivation (trace → unify → derive) and kernels (generate → load).

A model's *structure* (its class, configuration and sub-models' structures) decides its maths, so derivations and
compiled programs are computed once per structure (and dtype) and shared by every instance with that structure.
The generated module is self-describing (its METADATA says which arrays go where), so a second process loads
it from the disk cache without importing SymPy at all.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from . import cache
from .trace.language import DefinitionError, is_symbolic, trace_forward


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
    import sympy

    from .derive.rules import backward_expressions
    from .trace.shapes import unify_dimensions

    cls = model if isinstance(model, type) else type(model)
    trace = trace_forward(model)
    new_states = [record[2] for record in trace.states]
    for name, previous, new in trace.states:
        if new is None:
            raise DefinitionError(f"{cls.__name__}.forward reads the state {name} but never assigns it")
    replacements = unify_dimensions(trace.outputs + new_states, trace.rigid_dims, cls.__name__)
    for name, previous, new in trace.states:  # h[t] must have the shape of h[t−1]
        replacements.update(unify_dimensions([sympy.MatAdd(previous, new)], trace.rigid_dims, cls.__name__))

    def canonical(expr):
        # .doit() puts products and sums in SymPy's canonical order (σ(a) ⊙ tanh(b) and tanh(b) ⊙ σ(a) become one
        # node), so a value written twice in forward is computed once and shared with backward
        return (expr.xreplace(replacements) if replacements else expr).doit()

    inputs = [canonical(x) for x in trace.inputs]
    params = {k: canonical(v) for k, v in trace.params.items()}
    states = [(n, canonical(p), canonical(h)) for n, p, h in trace.states]
    outputs = [canonical(o) for o in trace.outputs]
    every = outputs + [h for _, _, h in states]
    if len(outputs) == 1:
        upstream = [sympy.MatrixSymbol("Δ", *outputs[0].shape)]
    else:
        upstream = [sympy.MatrixSymbol(f"Δ_{k}", *o.shape) for k, o in enumerate(outputs, 1)]
    upstream += [sympy.MatrixSymbol(f"Δ_{n.replace('.', '_')}", *p.shape) for n, p, _ in states]
    wrt = inputs + list(params.values()) + [p for _, p, _ in states]
    gradients = backward_expressions({k: e for k, e in enumerate(every)}, dict(enumerate(upstream)), wrt)
    return Derivation(cls.__name__, inputs, params, states, outputs, upstream, gradients)


# ---- structure keys and fingerprints ------------------------------------------------------------------

def structure_key(model) -> tuple:
    """What decides a model's maths: class, configuration, sub-models' structures (never sizes or values)."""
    from .model import submodels_of

    cls = model if isinstance(model, type) else type(model)
    config = () if isinstance(model, type) else model.structure_config()
    return (cls, config, tuple((name, structure_key(sub)) for name, sub in submodels_of(model)))


def structure_fingerprint(model) -> str | None:
    """A text that changes whenever the maths may: class sources, constants forward reads, configuration."""
    from .model import submodels_of

    cls = model if isinstance(model, type) else type(model)
    parts = []
    for klass in cls.__mro__:
        if klass.__module__ == "builtins" or klass.__name__ == "Model" and klass.__module__ == "flux.model":
            continue
        try:
            parts.append(inspect.getsource(klass))
        except (OSError, TypeError):
            return None
    forward = cls.forward
    constants = {n: forward.__globals__.get(n) for n in forward.__code__.co_names}
    parts.append(repr(sorted((n, v) for n, v in constants.items() if isinstance(v, (int, float, str, bool)))))
    if forward.__closure__:
        parts.append(repr([c.cell_contents for c in forward.__closure__]))
    parts.append(repr(() if isinstance(model, type) else model.structure_config()))
    for name, sub in submodels_of(model):
        sub_print = structure_fingerprint(sub)
        if sub_print is None:
            return None
        parts.append(f"{name}:{sub_print}")
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


_programs: dict = {}
_derivations: dict = {}


def derivation_of(model) -> Derivation:
    key = structure_key(model)
    if key not in _derivations:
        _derivations[key] = derive_model(model)
    return _derivations[key]


def program_of(model, dtype) -> Program:
    """The compiled program for a model's structure and dtype: from memory, the disk cache, or generated."""
    dtype = np.dtype(dtype)
    key = (structure_key(model), dtype.name)
    if key not in _programs:
        cls = model if isinstance(model, type) else type(model)
        fingerprint = structure_fingerprint(model)
        if fingerprint is None:  # no source to fingerprint: key the module by its generated text
            from .generate.feedforward import generate_module_source

            text = generate_module_source(derivation_of(model), dtype, "pending")
            module_key = cache.module_key(text)
        else:
            module_key = cache.module_key(fingerprint, dtype.name)

        def generate() -> str:
            from .generate.feedforward import generate_module_source

            return generate_module_source(derivation_of(model), dtype, module_key)

        module = cache.load_module(f"{cls.__name__.lower()}_{dtype.name}", module_key, generate)
        _programs[key] = Program(module)
    return _programs[key]
