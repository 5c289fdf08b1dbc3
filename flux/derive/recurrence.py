"""Recurrence: a cell traced once with time-indexed symbols, split so that only what needs h_{t−1} runs step by step.

A recurrent model's `forward` is one time step. Tracing reads a state before assigning it as h_{t−1} and records
the assignment as h_t, so the cell is a plain function of matrices, (x_t, h_{t−1}) ↦ (y_t, h_t). Nothing is
unrolled: one generated module serves every T. Only the state update has to wait for h_{t−1}, so the cell is
split in three, each a stateless `Derivation` with its own gradients from the ordinary reverse-mode pass:

    u_t = P(x_t)                         projection: the state-independent products (Wₓₕ x_t, …)
    h_t = C(x_t, u_t, h_{t−1})           update: the only part inside the time loop
    y_t = R(x_t, h_{t−1}, h_t)           readout: the outputs, from the states the loop stored

P and R (and their VJPs) run once over all T·N rows, one GEMM per product; backwards, R's VJP runs before the
loop (Δy is known for every t), handing the loop its ∂L/∂h_t, and the update's parameter gradients Σₜ δ_t v_tᵀ
are one GEMM over T·N after it. `flux.generate.recurrent` writes the numba code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# ---- the cell, split into projection, update and readout -------------------------------------------------

@dataclass
class Cell:
    """One time step as three stateless derivations.

    `projection` maps inputs to the hoisted terms u (None if there are none); `update` maps inputs, u and the
    previous states to the new states; `readout` maps inputs, previous and new states to the outputs.
    """

    name: str
    inputs: list  # x symbols
    params: dict
    state_names: list  # dotted names
    previous: list  # h[t−1] symbols
    nexts: list  # h[t] symbols (leaves of `readout`)
    projected: list  # u symbols (leaves of `update`, outputs of `projection`); their arrays are u1, u2, … in code
    projection: Any
    update: Any
    readout: Any


def with_new_states(expr, news: list, nexts: list):
    """`expr` reading each new state's leaf h_t instead of its expression, also where SymPy flattened a new state
    that is a sum into a larger sum (a GRU's h_t = h − z⊙h + z⊙n inside a loss's h_t − target): otherwise the
    readout would compute the whole cell again."""
    from collections import Counter

    from sympy import MatAdd

    expr = expr.xreplace(dict(zip(news, nexts)))
    sums = [(Counter(h.args), leaf) for h, leaf in zip(news, nexts) if isinstance(h, MatAdd)]

    def contains_state(node) -> bool:
        return isinstance(node, MatAdd) and any(not parts - Counter(node.args) for parts, _ in sums)

    def replaced(node):
        args = Counter(node.args)
        for parts, leaf in sums:
            if not parts - args:
                return MatAdd(leaf, *(args - parts).elements())
        return node

    return expr.replace(contains_state, replaced) if sums else expr


def split_cell(derivation) -> Cell:
    """Split a recurrent derivation into projection, update and readout, and derive each."""
    from .rules import backward_expressions
    from ..maths.nodes import Generated
    from ..derive.derivation import Derivation
    from ..trace.tracing import internal_name

    n_out = len(derivation.outputs)
    params = derivation.params
    previous = [p for _, p, _ in derivation.states]
    news = [h for _, _, h in derivation.states]
    # flux's own leaves are Generated symbols named apart from every symbol the user named (gradients go by name)
    taken = {s.name for s in list(derivation.inputs) + list(params.values()) + previous + list(derivation.upstream)}
    nexts = [Generated(internal_name(f"{p.name}_t", taken), *p.shape) for p in previous]
    # the readout reads the new states as leaves: whatever the outputs share with the update is not recomputed
    outputs = [with_new_states(o, news, nexts) for o in derivation.outputs]
    leaves = list(derivation.inputs) + previous + nexts
    gradients = backward_expressions(dict(enumerate(outputs)), dict(enumerate(derivation.upstream[:n_out])),
                                     leaves + list(params.values()))
    readout = Derivation(derivation.name, leaves, params, [], outputs, list(derivation.upstream[:n_out]), gradients)

    hoisted = hoistable_nodes(news, set(derivation.inputs), set(previous))
    projected = [Generated(internal_name(f"u{k}", taken), *node.shape) for k, node in enumerate(hoisted, 1)]
    substitution = dict(zip(hoisted, projected))
    # .doit() puts every rebuilt sum back in SymPy's canonical order, the order the VJP rules' results use,
    # so a forward value and its copy inside a gradient stay one node (kept, not recomputed)
    news = [h.xreplace(substitution).doit() for h in news]
    step_inputs = list(derivation.inputs) + projected + previous
    upstream = list(derivation.upstream[n_out:])
    gradients = backward_expressions(dict(enumerate(news)), dict(enumerate(upstream)),
                                     step_inputs + list(params.values()))
    update = Derivation(derivation.name, step_inputs, params, [], news, upstream, gradients)
    projection = None
    if hoisted:
        upstream = [Generated(internal_name(f"Δ_u{k}", taken), *u.shape) for k, u in enumerate(projected, 1)]
        gradients = backward_expressions(dict(enumerate(hoisted)), dict(enumerate(upstream)),
                                         list(derivation.inputs) + list(params.values()))
        projection = Derivation(derivation.name, list(derivation.inputs), params, [], hoisted, upstream, gradients)
    return Cell(derivation.name, list(derivation.inputs), params, [n for n, _, _ in derivation.states], previous,
                nexts, projected, projection, update, readout)


def hoistable_nodes(roots: list, inputs: set, previous: set) -> list:
    """The largest per-sample column expressions that read an input and a matrix product but no state."""
    from sympy import MatrixSymbol

    from ..maths.graph import Dependence, matrix_children, topological_order

    reads_state, batched, has_product = Dependence(previous), Dependence(inputs), {}
    for node in topological_order(roots):  # children first
        has_product[node] = is_matrix_product(node) or any(has_product[c] for c in matrix_children(node))
    hoisted, seen = [], set()
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if (not reads_state(node) and batched(node) and has_product[node] and node.shape[1] == 1
                and not isinstance(node, MatrixSymbol)):
            hoisted.append(node)
            continue
        stack.extend(reversed(matrix_children(node)))
    return hoisted


def is_matrix_product(node) -> bool:
    from sympy import MatMul

    return isinstance(node, MatMul) and sum(1 for f in node.as_coeff_matrices()[1] if f.shape != (1, 1)) >= 2

