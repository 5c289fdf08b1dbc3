"""From a model to its compiled program: derivation (trace → unify → derive) and kernels (generate → load);
likewise for the fused training step (`load_step_module`: objective and optimiser rule → its module).

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
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from . import cache
from .derive.derivation import Derivation, derive_trace
from .run.state import configuration_generation, runtime_of
from .trace.tracing import trace_forward


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
    parts += [f"rigid {sorted(d.name for d in trace.rigid_dims)!r}", f"loss {trace.loss}"]
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
            from .generate import generate_module_source

            return generate_module_source(derivation_of_maths(maths), dtype, module_key)

        module = cache.load_module(f"{maths.name.lower()}_{dtype.name}", module_key, generate)
        _programs[key] = Program(module)
    return _programs[key]


def load_step_module(objective, optimiser: Any, dtype) -> Any:
    """The fused training step's module (`flux.step.TrainStep`'s kernel), keyed by the objective's traced maths,
    the optimiser's rule (its exact SymPy form) and the dtype: a second process traces the objective and loads the
    module without deriving it."""
    from sympy import srepr

    dtype = np.dtype(dtype)
    rules = optimiser.rules()
    maths = maths_of(objective)
    rule_text = repr((list(rules.state), list(rules.hyperparameters),
                      [(str(k), srepr(v)) for k, v in rules.updates.items()]))
    key = cache.module_key("train-step", maths.identity, type(optimiser).__name__, rule_text, dtype.name)
    name = f"step_{type(objective.model).__name__.lower()}_{type(optimiser).__name__.lower()}_{dtype.name}"

    def generate() -> str:
        if maths.trace.states:  # recurrent: the model's own cell and time loops, then its loss over T·N rows
            from .generate.recurrent_step import generate_recurrent_step_source

            return generate_recurrent_step_source(derivation_of(objective.model), derivation_of(objective.loss),
                                                  rules, type(optimiser).__name__, dtype, key)
        from .generate.train_step import generate_step_source

        return generate_step_source(derivation_of_maths(maths), rules, type(optimiser).__name__, dtype, key)

    return cache.load_module(name, key, generate)
