"""Tracing: running a model's `forward` on SymPy symbols, giving its per-sample maths (a `Trace`).

Every parameter becomes a MatrixSymbol (W ∈ ℝ^{m×n}, b ∈ ℝ^{m×1}), every input a column vector x ∈ ℝ^{n_x×1} whose
size is found by unification (flux.trace.shapes), every state h[t−1] a symbol whose h[t] is what forward assigns;
sub-models' symbols get dotted names ("a.W") and suffixed dimensions (m_a). While forward runs, `if` on a symbol and
assignments to anything but a declared state are refused with a DefinitionError naming what the user wrote.
"""
from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from .language import DefinitionError, applied_functions_as_nodes
from .tokens import Tokens


@dataclass
class Trace:
    """A model's maths: symbols in, expressions out, for one step (recurrent models: one time step)."""

    inputs: list  # MatrixSymbols, per sample column vectors
    params: dict  # dotted name → MatrixSymbol
    states: list  # (dotted name, h[t−1] symbol, h[t] expression)
    outputs: list  # expressions
    rigid_dims: set = field(default_factory=set)
    loss: bool = False  # the model is a loss (its class says `is_loss = True`): shown as ℓ(prediction, target)


def dim_symbol(dim: str | int, path: str):
    import sympy

    if isinstance(dim, int):
        return sympy.Integer(dim)
    return sympy.Symbol(dim if not path else f"{dim}_{path.replace('.', '')}", positive=True, integer=True)


def symbolic_view(model, path: str, trace: Trace):
    """An object of the model's class whose parameters are MatrixSymbols, ready for `forward` to run on."""
    import sympy

    cls = model if isinstance(model, type) else type(model)
    view = cls.__new__(cls)
    if not isinstance(model, type):
        view.__dict__.update({k: v for k, v in model.__dict__.items() if k not in ("_params", "_states", "_grads", "_runtime")})
    prefix = f"{path}." if path else ""
    symbols = {}
    for name, declared in cls.declared_params().items():
        rows = dim_symbol(declared.dims[0], path)
        cols = dim_symbol(declared.dims[1], path) if len(declared.dims) == 2 else sympy.S.One
        symbols[name] = sympy.MatrixSymbol(prefix + name, rows, cols)
        trace.params[prefix + name] = symbols[name]
        if not path:
            trace.rigid_dims |= {d for d in (rows, cols) if isinstance(d, sympy.Symbol)}
    view.__dict__["_params"] = symbols
    for name, declared in cls.declared_params().items():  # a declared dimension reads as a number: self.k
        for dim in declared.dims:
            if isinstance(dim, str) and dim not in view.__dict__ and not hasattr(cls, dim):
                view.__dict__[dim] = dim_symbol(dim, path)
    states = {}
    for name, declared in cls.declared_states().items():
        previous = sympy.MatrixSymbol(prefix + name, dim_symbol(declared.dims[0], path), 1)
        states[name] = previous
        trace.states.append([prefix + name, previous, None])
    view.__dict__["_states"] = states
    view.__dict__["_tracing"] = True
    views = {name: symbolic_view(sub, prefix + name, trace) for name, sub in submodels_of(model)}
    view.__dict__["_subviews"] = views
    view.adopt_submodels(views)
    return view


def trace_forward(model, input_names: list[str] | None = None) -> Trace:
    """Run `model.forward` on symbols (a class or an instance), giving its per-sample maths."""
    import sympy

    cls = model if isinstance(model, type) else type(model)
    trace = Trace(inputs=[], params={}, states=[], outputs=[], loss=bool(getattr(cls, "is_loss", False)))
    view = symbolic_view(model, "", trace)
    declared = input_names or cls.input_names()
    taken = set(trace.params) | {record[0] for record in trace.states}
    names = [internal_name(n, taken) for n in declared]  # an input called like a parameter is W′ in the maths
    trace.inputs = [input_symbol(model, d, n, trace) for d, n in zip(declared, names)]
    before = attribute_snapshots(view, "")
    with refusing_truth_tests(cls.__name__):
        try:
            result = view.forward(*trace.inputs)
        except DefinitionError:
            raise
        except IndexError as error:
            if str(error):  # a user's own index (self.sizes[5]) says what it is
                raise DefinitionError(f"{cls.__name__}.forward cannot be traced: IndexError: {error}") from error
            raise DefinitionError(  # SymPy's slices say nothing: x[2:0], x[0:5] of a 3-vector
                f"{cls.__name__}.forward takes a slice that is empty or outside its matrix: flux takes x[a:b] and "
                "W[a:b, :] with 0 ≤ a < b ≤ the number of rows") from error
        except AttributeError as error:
            if not isinstance(model, type):
                raise DefinitionError(f"{cls.__name__}.forward cannot be traced: AttributeError: {error}") from error
            raise DefinitionError(  # MultiHeadAttention.derivation: its heads are set by its constructor
                f"{cls.__name__}.forward cannot be traced from the class: it reads an attribute its constructor sets "
                f"({error}); build one and read its derivation ({cls.__name__}(…).derivation)") from error
        except Exception as error:
            raise DefinitionError(f"{cls.__name__}.forward cannot be traced: {type(error).__name__}: {error}") from error
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    refuse_unsupported(cls.__name__, [o for o in outputs if isinstance(o, sympy.MatrixExpr)])
    outputs = [as_nodes(o) for o in outputs]
    for out in outputs:
        if not isinstance(out, sympy.MatrixExpr):
            raise DefinitionError(
                f"{cls.__name__}.forward must return a matrix expression of its inputs and parameters, "
                f"got {type(out).__name__}: {out!r}"
            )
    trace.outputs = outputs
    refuse_undeclared_assignments(before)
    for record in trace.states:
        name, previous = record[0], record[1]
        owner_view, attribute = locate(view, name)
        new = owner_view.__dict__["_states"][attribute]
        if new is previous:
            owner = type(owner_view).__name__
            raise DefinitionError(
                f"{owner} declares the state {attribute} (flux.state) but {owner}.forward never assigns "
                f"self.{attribute}: a state is h[t−1] when read and must be given its h[t] by "
                f"`self.{attribute} = …`"
                + (f" (in the sub-model {name.rpartition('.')[0]})" if "." in name else ""))
        refuse_unsupported(cls.__name__, [new] if isinstance(new, sympy.MatrixExpr) else [])
        record[2] = as_nodes(new)
    return trace


def refuse_unsupported(model_name: str, roots: list) -> None:
    """A DefinitionError naming what the traced maths would compute wrongly: a number that is not finite
    (`x * float('inf')`, NaN: the maths cannot be derived or simplified through it, and the printers have no code
    for it), or a slice with a step (x[0:3:2], x[::-1], W[:, ::2]): flux's slices are whole runs of rows, and SymPy
    keeps the step in a node whose shape ignores it (x[0:3:2] would compute x[0:3])."""
    import sympy

    from ..maths.graph import topological_order

    for root in roots:
        if root.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
            raise DefinitionError(f"{model_name}.forward uses a number that is not finite (∞ or NaN): "
                                  f"{sympy.sstr(root)}; write the finite maths (a mask is flux.causal)")
    for node in topological_order(roots):
        if isinstance(node, sympy.MatrixSlice) and (node.rowslice[2] != 1 or node.colslice[2] != 1):
            raise DefinitionError(
                f"{model_name}.forward slices with a step: {sympy.sstr(node)}; flux takes slices of consecutive "
                "rows only (x[a:b], W[a:b, :]); for every other entry use flux.concat of one-row slices")


def input_symbol(model, declared: str, name: str, trace: Trace):
    """x ∈ ℝ^{n_x×1}, or for a token input (`X = flux.tokens("d")`) X ∈ ℝ^{d×T} with d and T rigid. The declaration
    is read from the model (a class or an instance: a Chain's input is declared as its first layer's)."""
    import sympy

    from ..maths.matrices import TOKENS

    declaration = getattr(model, declared, None)
    if isinstance(declaration, Tokens):
        rows, tokens = dim_symbol(declaration.dim, ""), TOKENS
        trace.rigid_dims |= {d for d in (rows, tokens) if isinstance(d, sympy.Symbol)}
        return sympy.MatrixSymbol(name, rows, tokens)
    return sympy.MatrixSymbol(name, sympy.Symbol(f"n_{name}", positive=True, integer=True), 1)


def as_nodes(expr):
    """A traced expression in flux's nodes: `x.applyfunc(f)` as an elementwise node, SymPy's MatPow and Inverse of
    vectors (from sympy.sqrt(xᵀx), 1/s) as elementwise powers."""
    import sympy

    from ..maths.broadcast import BroadcastError, normal_form, refuse_matrices_per_sample, without_scalar_factors

    if not isinstance(expr, sympy.MatrixExpr):
        return expr
    expr = without_scalar_factors(normal_form(applied_functions_as_nodes(expr)))
    try:
        refuse_matrices_per_sample(expr)
    except BroadcastError as error:
        raise DefinitionError(str(error)) from None
    return expr


def attribute_snapshots(view, path: str) -> list:
    """(path, view, its attributes, its parameters) for the view and every sub-view, before `forward` runs."""
    snapshots = [(path, view, dict(view.__dict__), dict(view.__dict__["_params"]))]
    for name, sub in view.__dict__.get("_subviews", {}).items():
        snapshots += attribute_snapshots(sub, f"{path}.{name}" if path else name)
    return snapshots


def refuse_undeclared_assignments(snapshots: list) -> None:
    """`forward` may assign declared states only: `self.hiden = …` (a typo for the state `hidden`) would silently
    make a model that is not recurrent, and `self.W = …` or `self.scale = …` would change maths behind the trace."""
    for path, view, attributes, params in snapshots:
        cls = type(view)
        changed = [k for k, v in view.__dict__.items() if k not in attributes or attributes[k] is not v]
        changed += [k for k, v in view.__dict__["_params"].items() if params.get(k) is not v]
        changed = [k for k in changed if k not in ("_states",)]
        if changed:
            declared = ", ".join(cls.declared_states()) or "none"
            where = f" (the sub-model {path})" if path else ""
            raise DefinitionError(
                f"{cls.__name__}.forward{where} assigns self.{changed[0]}, which is not a declared state "
                f"(declared: {declared}); forward may assign only states declared with flux.state(…): use a local "
                "variable, or declare the state")


def internal_name(name: str, taken: set) -> str:
    """`name`, primed (Δ′) until no other symbol is called that: a prime is never part of an identifier, so a name
    flux makes for itself never equals one a user chose. The result is added to `taken`."""
    while name in taken:
        name += "′"
    taken.add(name)
    return name


def locate(view, dotted: str):
    """The sub-view that owns a dotted name, and the name's last part."""
    *path, last = dotted.split(".")
    for part in path:
        view = view.__dict__["_subviews"][part]
    return view, last


@contextmanager
def refusing_truth_tests(model_name: str):
    """While tracing, `if` on a symbolic value raises instead of silently taking one branch, and + − × ÷ ** broadcast
    numbers and per-sample scalars (flux.trace.operators)."""
    from sympy.matrices.expressions.matexpr import MatrixExpr

    from .operators import broadcasting_operators

    def refuse(self):
        raise DefinitionError(
            f"{model_name}.forward uses a symbolic value in a Python `if`/`while`/`and`/`or` ({self}): "
            "forward is traced once on symbols, so branches cannot depend on values; use relu, step or "
            "hadamard products instead"
        )

    from ..maths.memo import memoised_doit

    with _tracing, broadcasting_operators(), memoised_doit():  # memo: each distinct node simplified once
        MatrixExpr.__bool__ = refuse
        try:
            yield
        finally:
            del MatrixExpr.__bool__


# The refusal above patches SymPy process-wide: models traced from several threads at once (each instance is traced
# when it first needs its kernels) take turns, so one thread's trace never removes another's patch.
_tracing = threading.Lock()


def signature_inputs(forward) -> list[str]:
    """The input names of a `forward(self, x, …)`."""
    parameters = list(inspect.signature(forward).parameters.values())[1:]
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def submodels_of(model) -> list:
    """(name, sub-model) pairs of an instance, or (name, sub-model class) pairs of a class."""
    if isinstance(model, type):
        return list(model.declared_slots().items())
    return model.named_submodels()
