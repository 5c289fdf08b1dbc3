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
from .run.contents import attribute_contents
from .run.state import configuration_generation, requested_tier, runtime_of
from .tiers import TieredStep, example_arrays, start_background
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
        contents = attribute_contents(model)  # before tracing: a change made meanwhile is seen at the next call
        trace = trace_forward(model)
        runtime.maths, runtime.configuration = Maths(name, trace, identity_text(name, trace)), generation
        runtime.contents = contents
    return runtime.maths


def check_whole_slices(maths: Maths, params: dict) -> None:
    """Every slice bound the maths computes from the parameters' sizes (W[0:k/2, :], heads of k/h rows) is a whole
    number for these arrays: k = 3 in k/2 is a ValueError naming the slice, where the kernels would slice 1.5 rows
    (NumPy refuses a float index; numba truncates it and fills rows from memory no one wrote)."""
    import sympy
    from sympy import MatrixSlice

    from .maths.graph import topological_order

    sizes = {}
    for name, symbol in maths.trace.params.items():
        if name in params:
            shape = np.shape(params[name]) + (1,)  # a vector parameter b (k,) is the column k×1
            sizes.update({d: sympy.Integer(s) for d, s in zip(symbol.shape, shape) if isinstance(d, sympy.Symbol)})
    roots = list(maths.trace.outputs) + [new for _, _, new in maths.trace.states]
    for node in topological_order(roots):
        if isinstance(node, MatrixSlice):
            for bound in (*node.rowslice[:2], *node.colslice[:2]):
                value = sympy.sympify(bound).xreplace(sizes)
                if value.is_number and not value.is_integer:
                    known = ", ".join(f"{d} = {s}" for d, s in sizes.items())
                    raise ValueError(f"{maths.name}: the slice {sympy.sstr(node)} has the bound {bound} = {value} "
                                     f"for these parameters' sizes ({known}); a slice bound must be a whole number")


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
        return inspect.getsource(getattr(self.function, "py_func", self.function))  # a NumPy-tier one: itself

    def __call__(self, *args):
        return self.function(*args)

    def __repr__(self) -> str:
        return f"<flux kernel {self.name}>"


class Program:
    """A model's loaded kernels and the metadata that says how to call them.

    `tier` is "numba" or "numpy" (flux.tiers); a NumPy-tier program started in FLUX_TIER=auto has the `job`
    compiling its numba successor (`job.program` once it is ready)."""

    def __init__(self, module, tier: str = "numba", job: Any = None):
        self.module = module
        self.tier = tier
        self.job = job
        self.compiled = False  # numba tier: forward and backward compiled (or loaded) in this process
        self.metadata: dict[str, Any] = module.METADATA
        self.forward = Kernel(module.forward, "forward")
        self.backward = Kernel(module.backward, "backward")
        self.input_sizes = module.input_sizes
        self.check_params = module.check_params

    @property
    def source(self) -> str:
        return inspect.getsource(self.module)

    def __repr__(self) -> str:
        return (f"<flux program {self.metadata['model']} ({self.metadata['dtype']}, {self.tier} tier): forward, "
                "backward>")


_programs: dict = {}  # (identity, dtype name) → Program (numba tier)
_numpy_programs: dict = {}  # (identity, dtype name) → Program (NumPy tier)
_derivations: dict = {}  # identity → Derivation


def derivation_of(model) -> Derivation:
    """The derivation of a model's maths: derived once per identity (traced expression), shared by equal maths."""
    return derivation_of_maths(maths_of(model))


def derivation_of_maths(maths: Maths) -> Derivation:
    if maths.identity not in _derivations:
        _derivations[maths.identity] = derive_trace(maths.trace, maths.name)
    return _derivations[maths.identity]


def program_of(model, dtype, tier: str | None = None) -> Program:
    """The program a model runs for its maths and dtype: from memory, the disk cache, or generated.

    The on-disk module is named by a hash of the maths' identity, the dtype and flux's generator, so a second
    process traces the model (cheap, no derivation) and loads the module without deriving or generating.
    `tier` (default FLUX_TIER, see flux.tiers): "numba"; "numpy"; "auto": numba if it is compiled in this
    process, else NumPy while numba compiles in the background — or, when the disk cache holds numba's machine code
    (marked ready) and the NumPy module, NumPy while a thread loads numba's (loading the NumPy module is faster than
    importing numba and its machine code; without the NumPy module on disk, numba at once: no derivation).
    A model class is never run: its program is numba's (compiled on its first call, if any).
    """
    dtype = np.dtype(dtype)
    maths = maths_of(model)
    key = (maths.identity, dtype.name)
    tier = "numba" if isinstance(model, type) or not has_numpy_tier(maths) else tier or requested_tier()
    if tier == "numba" or (tier == "auto" and key in _programs and _programs[key].compiled):
        return numba_program(maths, dtype)
    module_key = cache.module_key("model-numpy", maths.identity, dtype.name)
    numpy_name = f"{maths.name.lower()}_{dtype.name}_numpy"
    compiled = tier == "auto" and cache.is_ready(numba_module_path(maths, dtype))
    if compiled and key not in _numpy_programs and not (cache.trusted_directory() / f"{numpy_name}_{module_key}.py"
                                                         ).exists():
        return numba_program(maths, dtype)
    if key not in _numpy_programs:

        def generate_numpy() -> str:
            from .generate.numpy_tier import generate_numpy_module_source

            return generate_numpy_module_source(derivation_of_maths(maths), dtype, module_key)

        module = cache.load_module(numpy_name, module_key, generate_numpy)
        _numpy_programs[key] = Program(module, "numpy")
    program = _numpy_programs[key]
    if tier == "auto" and program.job is None:
        program.job = compile_in_background(model, maths, dtype, program, load_only=compiled)
    return program


def has_numpy_tier(maths: Maths) -> bool:
    """Vector models (feed-forward and recurrent) have a NumPy tier; sequences of tokens (matrices per sample)
    run on numba only, for now."""
    return all(x.shape[1] == 1 for x in maths.trace.inputs)


def numba_program(maths: Maths, dtype) -> Program:
    """The numba-tier program (loaded; numba compiles each kernel on its first call, or loads it from the cache)."""
    key = (maths.identity, dtype.name)
    if key not in _programs:
        module_key = cache.module_key("model", maths.identity, dtype.name)
        module = cache.load_module(f"{maths.name.lower()}_{dtype.name}", module_key, numba_generator(maths, dtype))
        _programs[key] = Program(module)
    return _programs[key]


def numba_generator(maths: Maths, dtype):
    module_key = cache.module_key("model", maths.identity, dtype.name)

    def generate() -> str:
        from .generate import generate_module_source

        return generate_module_source(derivation_of_maths(maths), dtype, module_key)

    return generate


def numba_module_path(maths: Maths, dtype, write: bool = False):
    """Where the numba module for this maths and dtype is (written first with `write`)."""
    name, module_key = f"{maths.name.lower()}_{dtype.name}", cache.module_key("model", maths.identity, dtype.name)
    if write:
        return cache.module_file(name, module_key, numba_generator(maths, dtype))
    return cache.trusted_directory() / f"{name}_{module_key}.py"


def compile_in_background(model, maths: Maths, dtype, program: Program, load_only: bool = False):
    """Start compiling the numba tier of `program`'s maths (flux.tiers), warmed up on arrays shaped as the model's
    (`load_only`: its machine code is in the disk cache, a thread loads it)."""
    key = (maths.identity, dtype.name)
    params = [model.params[n].copy() for n in program.metadata["params"]]
    example = example_arrays(program.module, params, dtype)
    path = numba_module_path(maths, dtype, write=True)

    def load() -> Program:
        return numba_program(maths, dtype)

    def loaded(compiled: Program) -> None:
        compiled.compiled = True  # from now on `program_of` hands it out

    return start_background(key, f"{maths.name} ({dtype.name})", path,
                            cache.module_key("model", maths.identity, dtype.name), load, loaded, example,
                            load_only=load_only)



def load_step_module(objective, optimiser: Any, dtype) -> Any:
    """The fused training step's module (`flux.step.TrainStep`'s kernel), keyed by the objective's traced maths,
    the optimiser's rule (its exact SymPy form) and the dtype: a second process traces the objective and loads the
    module without deriving it. On the tiers (flux.tiers): numba's module, the NumPy tier's, or with FLUX_TIER=auto
    a `TieredStep` running NumPy until numba's is compiled in the background (numba at once if it is ready)."""
    dtype = np.dtype(dtype)
    rules = optimiser.rules()
    maths = maths_of(objective)
    rule_text = rule_identity(rules)
    key = cache.module_key("train-step", maths.identity, type(optimiser).__name__, rule_text, dtype.name)
    name = f"step_{type(objective.model).__name__.lower()}_{type(optimiser).__name__.lower()}_{dtype.name}"

    def generate() -> str:
        if maths.trace.states:  # recurrent: the model's own cell and time loops, then its loss over T·N rows
            from .generate.recurrent_step import generate_recurrent_step_source

            return generate_recurrent_step_source(derivation_of(objective.model), derivation_of(objective.loss),
                                                  rules, type(optimiser).__name__, dtype, key)
        from .generate.train_step import generate_step_source

        return generate_step_source(derivation_of_maths(maths), rules, type(optimiser).__name__, dtype, key)

    tier = requested_tier()
    ready = cache.is_ready(cache.trusted_directory() / f"{name}_{key}.py")
    if tier == "numba" or maths.trace.states or not has_numpy_tier(maths) or (tier == "auto" and ready):
        return cache.load_module(name, key, generate)  # the recurrent fused step has no NumPy tier yet
    numpy_key = cache.module_key("train-step-numpy", maths.identity, type(optimiser).__name__, rule_text, dtype.name)

    def generate_numpy() -> str:
        from .generate.numpy_tier import generate_numpy_step_source

        return generate_numpy_step_source(derivation_of_maths(maths), rules, type(optimiser).__name__, dtype,
                                          numpy_key)

    numpy_module = cache.load_module(f"{name}_numpy", numpy_key, generate_numpy)
    if tier == "numpy":
        return numpy_module

    def start(arguments: list):
        path = cache.module_file(name, key, generate)
        return start_background((key, "train-step"), name, path, key, lambda: cache.load_module(name, key, generate),
                                lambda module: None, {"arguments": arguments})

    return TieredStep(numpy_module, start)


def load_token_step_module(model, loss: Any, optimiser: Any, dtype) -> Any:
    """The fused token step's module, keyed by the model's and the loss's traced maths, the optimiser's rule (its
    exact SymPy form) and the dtype (numba only: token models have no NumPy-tier step)."""
    dtype = np.dtype(dtype)
    rules = optimiser.rules()
    rule_text = rule_identity(rules)
    key = cache.module_key("token-step", maths_of(model).identity, maths_of(loss).identity,
                           type(optimiser).__name__, rule_text, dtype.name)
    name = f"step_{type(model).__name__.lower()}_{type(optimiser).__name__.lower()}_{dtype.name}"

    def generate() -> str:
        from .generate.token_step import generate_token_step_source

        return generate_token_step_source(derivation_of(model), derivation_of(loss), rules,
                                          type(optimiser).__name__, dtype, key)

    return cache.load_module(name, key, generate)


def rule_identity(rules) -> str:
    """An optimiser's rule in its exact SymPy form (part of a fused step's cache key)."""
    from sympy import srepr

    updates = [(str(k), srepr(v)) for k, v in rules.updates.items()]
    return repr((list(rules.state), list(rules.hyperparameters), updates))
