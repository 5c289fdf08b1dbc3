"""Derivation: a model's maths and its derived gradients, as plain data (SymPy expressions), and how it is made.

    derive_trace(trace, name)  — unify the traced shapes (a shape error raises here), put every expression in
                                 SymPy's canonical order, and run the reverse-mode sweep for every gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..trace.tracing import internal_name


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
    loss: bool = False  # a loss's maths (ℓ(prediction, target)): shown as ℓ = …, its target's gradient on request

    @property
    def output(self):
        return self.outputs[0]

    def _repr_latex_(self) -> str:
        from ..show.layout import derivation_latex

        return f"$\\displaystyle {derivation_latex(self)}$"

    def __repr__(self) -> str:
        from ..show.layout import derivation_text

        return derivation_text(self)


def derive_trace(trace, name: str) -> Derivation:
    """A traced model's maths with its shapes unified (a shape error raises here) and every gradient derived."""
    import sympy

    from ..trace.shapes import unify_dimensions
    from ..maths.memo import memoised_doit
    from .rules import backward_expressions

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
    with memoised_doit():  # each distinct node simplified once (flux.maths.memo)
        gradients = backward_expressions({k: e for k, e in enumerate(every)}, dict(enumerate(upstream)), wrt)
    return Derivation(name, inputs, params, states, outputs, upstream, gradients, loss=trace.loss)
