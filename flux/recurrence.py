"""Recurrence: a cell traced once with time-indexed symbols, run over whole sequences by compiled time loops.

A recurrent model's `forward` is one time step. Tracing reads a state before assigning it as h_{t−1} and records
the assignment as h_t, so the cell is a plain function of matrices,

    (x_t, h_{t−1}) ↦ (y_t, h_t),

derived once by the ordinary reverse-mode pass: given Δy_t and the Δh_t carried back from step t+1 it gives Δx_t,
Δh_{t−1} and the parameters' per-step gradients. Nothing is unrolled: one generated module serves every T.

Terms that do not depend on h_{t−1} need not wait for the time loop. The cell is split in two:

    u_t = P(x_t)                     state-independent products (Wₓₕ x_t, …): one GEMM over all T·N rows
    (y_t, h_t) = C(x_t, u_t, h_{t−1})  the part that must run step by step

and, backwards, the parameter gradients' outer products Σₜ δ_t v_tᵀ are one GEMM over T·N after the loop, from
the δ_t the loop stores. The generated module holds, as numba functions,

    project, project_backward      P and its VJP, over (T·N, ·) row stacks
    step_forward, step_backward    C and its VJP, for one (N, ·) time step
    gradients                      Σ over T·N of the parameter gradients that were deferred
    forward, backward              the drivers: the time loops, calling the functions above

Sequences are time-major inside ((T, N, k), so x_t is one contiguous block); the public API is batch-first.
Code generation imports SymPy inside its functions: running a cached module needs only NumPy and numba.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DRIVER_INDENT = "    "


# ---- the cell, split into its state-independent projection and its step ----------------------------------

@dataclass
class Cell:
    """One time step as two stateless functions, each with its own derived gradients.

    `projection` maps inputs to the hoisted terms u (None if there are none); `step` maps inputs, u and the
    previous states to the outputs and the new states. Both are `Derivation`s without states.
    """

    name: str
    inputs: list  # x symbols
    params: dict
    state_names: list  # dotted names
    previous: list  # h[t−1] symbols
    projected: list  # u symbols (leaves of `step`, outputs of `projection`)
    projection: Any
    step: Any


def split_cell(derivation) -> Cell:
    """Hoist the state-independent batched products out of the cell and derive both halves."""
    from sympy import MatrixSymbol

    from .derive import backward_expressions
    from .program import Derivation

    previous = [p for _, p, _ in derivation.states]
    news = [h for _, _, h in derivation.states]
    hoisted = hoistable_nodes(derivation.outputs + news, set(derivation.inputs), set(previous))
    projected = [MatrixSymbol(f"u{k}", *node.shape) for k, node in enumerate(hoisted, 1)]
    substitution = dict(zip(hoisted, projected))
    # .doit() puts every rebuilt sum back in SymPy's canonical order, the order the VJP rules' results use,
    # so a forward value and its copy inside a gradient stay one node (kept, not recomputed)
    outputs = [o.xreplace(substitution).doit() for o in derivation.outputs]
    news = [h.xreplace(substitution).doit() for h in news]
    params = derivation.params
    step_inputs = list(derivation.inputs) + projected + previous
    every = outputs + news
    gradients = backward_expressions(dict(enumerate(every)), dict(enumerate(derivation.upstream)),
                                     step_inputs + list(params.values()))
    step = Derivation(derivation.name, step_inputs, params, [], every, list(derivation.upstream), gradients)
    projection = None
    if hoisted:
        upstream = [MatrixSymbol(f"Δ_{u.name}", *u.shape) for u in projected]
        gradients = backward_expressions(dict(enumerate(hoisted)), dict(enumerate(upstream)),
                                         list(derivation.inputs) + list(params.values()))
        projection = Derivation(derivation.name, list(derivation.inputs), params, [], hoisted, upstream, gradients)
    return Cell(derivation.name, list(derivation.inputs), params, [n for n, _, _ in derivation.states], previous,
                projected, projection, step)


def hoistable_nodes(roots: list, inputs: set, previous: set) -> list:
    """The largest per-sample column expressions that read an input and a matrix product but no state."""
    from sympy import MatrixSymbol

    from .derive import matrix_children, topological_order

    order = topological_order(roots)
    reads_state, batched, has_product = {}, {}, {}
    for node in order:  # children first
        children = matrix_children(node)
        reads_state[node] = node in previous or any(reads_state[c] for c in children)
        batched[node] = node in inputs or any(batched[c] for c in children)
        has_product[node] = is_matrix_product(node) or any(has_product[c] for c in children)
    hoisted, seen = [], set()
    stack = list(reversed(roots))
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if (not reads_state[node] and batched[node] and has_product[node] and node.shape[1] == 1
                and not isinstance(node, MatrixSymbol)):
            hoisted.append(node)
            continue
        stack.extend(reversed(matrix_children(node)))
    return hoisted


def is_matrix_product(node) -> bool:
    from sympy import MatMul

    return isinstance(node, MatMul) and sum(1 for f in node.as_coeff_matrices()[1] if f.shape != (1, 1)) >= 2


# ---- the generated module --------------------------------------------------------------------------------

def generate_recurrent_module_source(derivation, dtype, key: str) -> str:
    """The complete text of the module holding a recurrent model's kernels and time loops."""
    import sympy

    from .codegen import Argument
    from .kernels import JIT, identifier, shape_checks

    dtype = np.dtype(dtype)
    cell = split_cell(derivation)
    params = [Argument(p, identifier(name), False) for name, p in cell.params.items()]
    inputs = [Argument(x, identifier(x.name), True) for x in cell.inputs]
    writer = ModuleWriter(cell, params, inputs)
    kernels = writer.kernels()
    names = [identifier(n) for n in cell.state_names]
    metadata = {
        "model": derivation.name,
        "dtype": dtype.name,
        "inputs": [x.name for x in cell.inputs],
        "input_dims": [sympy.sstr(x.shape[0]) for x in cell.inputs],
        "params": list(cell.params),
        "outputs": len(derivation.outputs),
        "states": cell.state_names,
        "state_dims": [sympy.sstr(p.shape[0]) for p in cell.previous],
        "forward_returns": writer.forward_returns,
        "hoisted": [sympy.sstr(e) for e in (cell.projection.outputs if cell.projection else [])],
    }
    maths = [f"    {'y' if len(derivation.outputs) == 1 else f'y{k}'}_t = {sympy.sstr(o)}"
             for k, o in enumerate(derivation.outputs, 1)]
    maths += [f"    {n}_t = {sympy.sstr(h)}      (reads {n} as {n}_{{t-1}})" for n, _, h in derivation.states]
    jitted = "\n\n".join(f"{JIT}\n{k}" for k in kernels)
    return f'''# flux-module-key: {key}
"""flux kernels for the recurrent {derivation.name} ({dtype.name}), generated from the maths of one time step:

{chr(10).join(maths)}

forward/backward loop over t inside numba; see flux/recurrence.py. Generated by flux; do not edit.
"""
import numpy as np
from numba import njit

from flux.fastmath import fast_exp, fast_sigmoid, fast_tanh

real = np.{dtype.name}

METADATA = {metadata!r}


{shape_checks(params, inputs)}


{state_sizes_source(cell, params, names)}


{jitted}

# end of generated module
'''


def state_sizes_source(cell: Cell, params: list, names: list) -> str:
    """Plain Python: each state's size from the parameters' shapes (None when the parameters do not fix it)."""
    import sympy

    from .codegen import size_codes

    sizes = size_codes(params)
    codes = []
    for p in cell.previous:
        dim = p.shape[0]
        known = all(s in sizes for s in dim.free_symbols)
        codes.append(str(dim.xreplace({s: sympy.Symbol(sizes[s]) for s in dim.free_symbols})) if known else "None")
    return "\n".join([
        f"def state_sizes({', '.join(a.name for a in params)}):",
        f'    """The size of each state ({", ".join(names)}); None: the same as the input it is tied to."""',
        f"    return ({', '.join(codes)}{',' if len(codes) == 1 else ''})",
    ])


class ModuleWriter:
    """Writes the kernels of a recurrent module: the cell's functions (by the numba printer) and the drivers."""

    def __init__(self, cell: Cell, params: list, inputs: list):
        from .kernels import identifier

        self.cell = cell
        self.params = params
        self.inputs = inputs
        self.states = [identifier(n) for n in cell.state_names]
        self.forward_returns: list[str] = []
        self.projection_kept: list[str] = []  # projection intermediates its backward reads
        self.projection_outputs_read: list[str] = []  # hoisted terms u its backward reads (σ′ = u ⊙ (1 − u))
        self.projection_input_gradients: list[str] = []

    def kernels(self) -> list[str]:
        sources = []
        sources.append(ROWS_SOURCE)
        if self.cell.projection is not None:
            sources += self.projection_kernels()
        sources += self.step_kernels()
        if self.deferred:
            sources.append(self.gradients_kernel())
        sources.append(self.forward_driver())
        sources.append(self.backward_driver())
        return sources

    # ---- the projection: u = P(x) for all T·N rows, and its VJP ----------------------------------------

    def projection_kernels(self) -> list[str]:
        import sympy
        from sympy import MatrixSymbol, ZeroMatrix

        from .codegen import Argument, Result, generate_kernel_source
        from .kernels import kept_for_backward

        projection = self.cell.projection
        gradients = [projection.gradients[x.name] for x in projection.inputs]
        gradients += [projection.gradients[p.name] for p in projection.params.values()]
        read = kept_for_backward(projection, gradients)
        kept = [k for k in read if k not in projection.outputs]
        named = {node: u.name for node, u in zip(projection.outputs, self.cell.projected)}
        self.projection_outputs_read = [named[k] for k in read if k in projection.outputs]
        outputs_read = [Argument(MatrixSymbol(named[k], *k.shape), named[k], True) for k in read
                        if k in projection.outputs]
        named.update({node: f"pkept{k}" for k, node in enumerate(kept, 1)})
        self.projection_kept = [named[k] for k in kept]
        forward = generate_kernel_source(
            "project", self.inputs + self.params, [Result(named[n], n) for n in projection.outputs + kept],
            doc="; ".join(f"{named[o]} = {sympy.sstr(o)}" for o in projection.outputs) + "  (every row: all T·N)")
        replacements = {node: MatrixSymbol(name, *node.shape) for node, name in named.items()}
        deltas = [Argument(d, d.name, True) for d in projection.upstream]
        saved = [Argument(MatrixSymbol(n, *k.shape), n, True) for n, k in zip(self.projection_kept, kept)]
        self.projection_input_gradients = []
        results = []
        for a, g in zip(self.inputs, gradients):
            if not isinstance(g, ZeroMatrix):
                results.append(Result(f"grad_{a.name}", g.xreplace(replacements)))
                self.projection_input_gradients.append(a.name)
        for a, p in zip(self.params, projection.params.values()):
            results.append(Result(f"grad_{a.name}", projection.gradients[p.name].xreplace(replacements),
                                  mode="accumulate", into=f"grad_{a.name}"))
        backward = generate_kernel_source(
            "project_backward", deltas + self.inputs + self.params + saved + outputs_read + self.gradient_arrays(),
            results,
            doc="∂L/∂x from the hoisted terms returned, Σ over all T·N rows of their ∂L/∂params added into grad_*")
        return [forward, backward]

    def gradient_arrays(self) -> list:
        from sympy import MatrixSymbol

        from .codegen import Argument

        return [Argument(MatrixSymbol(f"grad_{a.name}", *a.symbol.shape), f"grad_{a.name}", False)
                for a in self.params]

    # ---- the step: (x_t, u_t, h_{t−1}) ↦ (y_t, h_t), and its VJP ---------------------------------------

    def step_kernels(self) -> list[str]:
        import sympy
        from sympy import MatrixSymbol, ZeroMatrix

        from .codegen import Argument, Result, generate_kernel_source
        from .derive import topological_order
        from .kernels import identifier, kept_for_backward

        cell, step = self.cell, self.cell.step
        n_out = len(step.outputs) - len(cell.previous)
        outputs, news = step.outputs[:n_out], step.outputs[n_out:]
        self.output_names = ["y"] if n_out == 1 else [f"y{k}" for k in range(1, n_out + 1)]
        self.step_inputs = [Argument(s, identifier(s.name), True) for s in step.inputs]
        # the forward values backward reads: outputs, new states and batched intermediates (kept per time step)
        gradients = [g for g in step.gradients.values()]
        leaves = set(step.inputs) | set(step.params.values())
        kept = [k for k in kept_for_backward(step, gradients)
                if k not in step.outputs and self.batched(k, set(step.inputs)) and k not in leaves]
        named: dict = {}
        for name, node in zip(self.output_names, outputs):
            named.setdefault(node, name)
        for state, node in zip(self.states, news):
            named.setdefault(node, f"new_{state}")
        named.update({node: f"kept{k}" for k, node in enumerate(kept, 1)})
        self.kept_names = [named[k] for k in kept]
        self.stored_nodes = list(outputs) + kept  # what forward keeps per time step besides the states
        results = [Result(f"{n}_t", o) for n, o in zip(self.output_names, outputs)]
        results += [Result(f"new_{s}_t", h) for s, h in zip(self.states, news)]
        results += [Result(f"{n}_t", k) for n, k in zip(self.kept_names, kept)]
        doc = "one time step: " + "; ".join(f"{r.name} = {sympy.sstr(r.expr)}" for r in results[:len(step.outputs)])
        # children before parents: a fused loop then computes each activation once and its parents reuse it
        position = {node: i for i, node in enumerate(topological_order(step.outputs))}
        results.sort(key=lambda r: position[r.expr])
        self.step_forward_returns = [r.name for r in results]
        forward = generate_kernel_source("step_forward", self.step_inputs + self.params, results, doc=doc)
        # where each forward value lives in the drivers' time-major buffers
        self.saved_buffers = {name: f"{name}_seq[t]" for name in self.output_names + self.kept_names}
        for state, node in zip(self.states, news):
            self.saved_buffers.setdefault(named[node], f"{state}_seq[t + 1]")
        saved_names = list(dict.fromkeys(named.values()))
        replacements = {node: MatrixSymbol(name, *node.shape) for node, name in named.items()}
        saved = [Argument(replacements[next(n for n, v in named.items() if v == name)], name, True)
                 for name in saved_names]
        self.saved_names = saved_names
        deltas = [Argument(d, identifier(d.name), True) for d in step.upstream]
        # per-step gradients: inputs, hoisted terms and previous states
        self.step_gradients = []  # (leaf symbol name, returned?) in order
        results = []
        for a in self.step_inputs:
            g = step.gradients[a.symbol.name]
            zero = isinstance(g, ZeroMatrix)
            self.step_gradients.append((a.name, not zero))
            if not zero:
                results.append(Result(f"grad_{a.name}", g.xreplace(replacements)))
        # parameter gradients: outer products and vector sums are deferred to one GEMM over T·N after the loop
        buffers = {a.symbol: a.name for a in self.step_inputs}
        buffers.update({MatrixSymbol(n, *replacements[next(k for k, v in named.items() if v == n)].shape): n
                        for n in saved_names})
        buffers.update({d.symbol: d.name for d in deltas[:n_out]})
        self.deferred, self.factors = [], {}  # (param argument, expression over factor symbols); expr → name
        for r in results:  # a δ already returned per step (∂L/∂u_t, ∂L/∂x_t) is stored anyway: reuse it
            if r.name[len("grad_"):] not in self.states:
                self.factors.setdefault(r.expr, r.name)
        for a, p in zip(self.params, step.params.values()):
            gradient = step.gradients[p.name].xreplace(replacements)
            for term in (gradient.args if isinstance(gradient, sympy.MatAdd) else (gradient,)):
                if isinstance(term, ZeroMatrix):
                    continue
                deferred = self.defer(term, buffers, set(step.inputs) | set(replacements.values())
                                      | {d.symbol for d in deltas})
                if deferred is None:
                    results.append(Result(f"grad_{a.name}", term, mode="accumulate", into=f"grad_{a.name}"))
                else:
                    self.deferred.append((a, deferred))
        self.factor_results = [(name, expr) for expr, name in self.factors.items()
                               if name.startswith("factor")]
        results += [Result(name, expr) for name, expr in self.factor_results]
        self.step_backward_returns = [r.name for r in results if r.mode == "new"]
        backward = generate_kernel_source(
            "step_backward", deltas + self.step_inputs + self.params + saved + self.gradient_arrays(), results,
            doc="one step back: ∂L/∂x_t, ∂L/∂u_t, ∂L/∂h_{t−1} and the δ_t of the deferred gradients returned")
        self.buffers = buffers
        return [forward, backward]

    @staticmethod
    def batched(node, leaves: set) -> bool:
        from .derive import matrix_children

        return node in leaves or any(ModuleWriter.batched(c, leaves) for c in matrix_children(node))

    def defer(self, term, buffers: dict, batched_leaves: set):
        """`term` of a parameter gradient rewritten over per-step factors kept for after the loop, or None.

        c·a·bᵀ (a, b per-sample columns) and a (a per-sample vector) qualify: their sums over t and n are one
        GEMM (AᵀB) or one column sum over the T·N rows the loop stored.
        """
        from sympy import MatMul, MatrixSymbol

        def factor(expr):
            if expr in buffers:
                return MatrixSymbol(buffers[expr], *expr.shape)
            count = sum(n.startswith("factor") for n in self.factors.values())
            return MatrixSymbol(self.factors.setdefault(expr, f"factor{count + 1}"), *expr.shape)

        if not self.batched(term, batched_leaves):
            return None
        if isinstance(term, MatMul):
            coefficient, factors = term.as_coeff_matrices()
            if (len(factors) == 2 and factors[0].shape[1] == 1 and factors[1].shape[0] == 1
                    and all(self.batched(f, batched_leaves) for f in factors)):
                return coefficient * MatMul(factor(factors[0]), factor(factors[1].T).T)
            if len(factors) == 1 and factors[0].shape[1] == 1:
                return coefficient * factor(factors[0])
            return None
        if term.shape[1] == 1:
            return factor(term)
        return None

    def gradients_kernel(self) -> str:
        from sympy import MatrixSymbol

        from .codegen import Argument, Result, generate_kernel_source

        used = sorted({s.name for _, e in self.deferred for s in e.free_symbols if isinstance(s, MatrixSymbol)},
                      key=self.factor_order)
        shapes = {s.name: s for _, e in self.deferred for s in e.free_symbols if isinstance(s, MatrixSymbol)}
        self.gradient_factors = used
        arguments = [Argument(shapes[n], n, True) for n in used]
        results = [Result(f"grad_{a.name}", e, mode="accumulate", into=f"grad_{a.name}") for a, e in self.deferred]
        return generate_kernel_source("gradients", arguments + self.params + self.gradient_arrays(), results,
                                      doc="Σ over all T·N rows of the deferred parameter gradients, added into grad_*")

    def factor_order(self, name: str) -> tuple:
        return (name.startswith("factor"), name)

    # ---- the drivers ----------------------------------------------------------------------------------

    def size(self, dim, sources: dict) -> str:
        import sympy

        dim = sympy.sympify(dim)
        if dim.is_Integer:
            return str(dim)
        return str(dim.xreplace({s: sympy.Symbol(sources[s]) for s in dim.free_symbols}))

    def size_sources(self, in_forward: bool = True) -> dict:
        from .codegen import size_codes

        sources = dict(size_codes(self.params))
        for a in self.inputs:
            sources.setdefault(a.symbol.shape[0], f"{a.name}_seq.shape[2]")
        for state, p in zip(self.states, self.cell.previous):
            sources.setdefault(p.shape[0], f"{state}_initial.shape[1]" if in_forward else f"{state}_seq.shape[2]")
        return sources

    def forward_driver(self) -> str:
        I = DRIVER_INDENT
        params = ", ".join(a.name for a in self.params)
        arguments = [f"{a.name}_seq" for a in self.inputs] + [f"{s}_initial" for s in self.states]
        lines = [f"def forward({', '.join(arguments)}, {params}):",
                 f'{I}"""The time loop: every output and state for t = 0…T−1, and what backward reads."""',
                 f"{I}T = {self.inputs[0].name}_seq.shape[0]",
                 f"{I}N = {self.inputs[0].name}_seq.shape[1]"]
        sources = self.size_sources()
        projected = [u.name for u in self.cell.projected]
        if projected:
            rows = ", ".join(f"rows({a.name}_seq)" for a in self.inputs)
            made = projected + self.projection_kept
            lines.append(f"{I}{', '.join(made)}{',' if len(made) == 1 else ''} = project({rows}, {params})"
                         "  # the hoisted terms, for all T·N rows at once")
            for u in projected:
                lines.append(f"{I}{u}_seq = {u}.reshape((T, N, {u}.shape[1]))")
        for state in self.states:
            lines.append(f"{I}{state}_seq = np.empty((T + 1, N, {state}_initial.shape[1]), dtype=real)")
            lines.append(f"{I}{state}_seq[0] = {state}_initial")
        for name, node in zip(self.output_names + self.kept_names, self.stored_nodes):
            lines.append(f"{I}{name}_seq = np.empty((T, N, {self.size(node.shape[0], sources)}), dtype=real)")
        step_arguments = [f"{a.name}_seq[t]" for a in self.step_inputs]  # a state's [t] is h_{t−1}
        returned = self.step_forward_returns
        lines.append(f"{I}for t in range(T):")
        lines.append(f"{I * 2}{', '.join(returned)}{',' if len(returned) == 1 else ''} = "
                     f"step_forward({', '.join(step_arguments)}, {params})")
        for name in self.output_names + self.kept_names:
            lines.append(f"{I * 2}{name}_seq[t] = {name}_t")
        for state in self.states:
            lines.append(f"{I * 2}{state}_seq[t + 1] = new_{state}_t")
        self.forward_returns = ([f"{n}_seq" for n in self.output_names] + [f"{s}_seq" for s in self.states]
                                + [f"{n}_seq" for n in self.kept_names] + [f"{u}_seq" for u in projected]
                                + self.projection_kept)
        lines.append(f"{I}return {', '.join(self.forward_returns)}{',' if len(self.forward_returns) == 1 else ''}")
        return "\n".join(lines) + "\n"

    def backward_driver(self) -> str:
        I = DRIVER_INDENT
        params = ", ".join(a.name for a in self.params)
        grads = ", ".join(f"grad_{a.name}" for a in self.params)
        n_out = len(self.output_names)
        deltas = [d.name for d in self.cell.step.upstream]
        from .kernels import identifier

        deltas = [identifier(d) for d in deltas]
        output_deltas, state_deltas = deltas[:n_out], deltas[n_out:]
        arguments = ([f"{d}_seq" for d in output_deltas] + [f"{d}_last" for d in state_deltas]
                     + [f"{a.name}_seq" for a in self.inputs] + [params] + self.forward_returns + [grads])
        lines = [f"def backward({', '.join(arguments)}):",
                 f'{I}"""Back through time, t = T−1…0, carrying ∂L/∂h; then the deferred parameter gradients."""',
                 f"{I}T = {self.inputs[0].name}_seq.shape[0]",
                 f"{I}N = {self.inputs[0].name}_seq.shape[1]"]
        for state, delta in zip(self.states, state_deltas):
            lines.append(f"{I}{delta} = {delta}_last.copy()")
        # buffers for the per-step gradients of inputs and hoisted terms, and for the deferred factors
        per_step = [name for name, returned in self.step_gradients if name not in self.states]
        for name in per_step:
            lines.append(f"{I}grad_{name}_seq = np.zeros({name}_seq.shape, dtype=real)")
        sources = self.size_sources(in_forward=False)
        for name, expr in self.factor_results:
            lines.append(f"{I}{name}_seq = np.empty((T, N, {self.size(expr.shape[0], sources)}), dtype=real)")
        step_arguments = [f"{d}_seq[t]" for d in output_deltas] + state_deltas
        step_arguments += [f"{a.name}_seq[t]" for a in self.step_inputs] + [params]
        step_arguments += [self.saved_buffers[n] for n in self.saved_names] + [grads]
        returned = [f"{n}_t" for n in self.step_backward_returns]
        lines.append(f"{I}for t in range(T - 1, -1, -1):")
        lines.append(f"{I * 2}{', '.join(returned)}{',' if len(returned) == 1 else ''} = "
                     f"step_backward({', '.join(step_arguments)})")
        returned_names = set(self.step_backward_returns)
        for name in per_step:
            if f"grad_{name}" in returned_names:
                lines.append(f"{I * 2}grad_{name}_seq[t] = grad_{name}_t")
        for name, _ in self.factor_results:
            lines.append(f"{I * 2}{name}_seq[t] = {name}_t")
        for state, delta in zip(self.states, state_deltas):
            if f"grad_{state}" in returned_names:
                lines.append(f"{I * 2}{delta} = grad_{state}_t")
            else:
                lines.append(f"{I * 2}{delta} = np.zeros_like({delta})")
        if self.deferred:
            factor_buffers = [self.factor_buffer(n) for n in self.gradient_factors]
            lines.append(f"{I}gradients({', '.join(f'rows({b})' for b in factor_buffers)}, {params}, {grads})")
        if self.cell.projection is not None:
            d_u = [f"rows(grad_{u.name}_seq)" for u in self.cell.projected]
            xs = [f"rows({a.name}_seq)" for a in self.inputs]
            returned = [f"from_projection_{n}" for n in self.projection_input_gradients]
            read = [f"rows({u}_seq)" for u in self.projection_outputs_read]
            call = f"project_backward({', '.join(d_u + xs)}, {params}, {', '.join(self.projection_kept + read + [grads])})"
            if returned:
                lines.append(f"{I}{', '.join(returned)}{',' if len(returned) == 1 else ''} = {call}")
                for n in self.projection_input_gradients:
                    lines.append(f"{I}grad_{n}_seq += from_projection_{n}.reshape({n}_seq.shape)")
            else:
                lines.append(f"{I}{call}")
        results = [f"grad_{a.name}_seq" for a in self.inputs] + state_deltas
        lines.append(f"{I}return {', '.join(results)}{',' if len(results) == 1 else ''}")
        return "\n".join(lines) + "\n"

    def factor_buffer(self, name: str) -> str:
        """The time-major buffer holding a deferred factor: a stored forward value, Δy, or a loop result."""
        if name in self.states:
            return f"{name}_seq[:T]"
        if name.startswith("new_") and name[4:] in self.states and name not in self.output_names:
            return f"{name[4:]}_seq[1:]"
        return f"{name}_seq"


ROWS_SOURCE = '''def rows(a):
    """(T, N, k) → (T·N, k): every time step's batch stacked, one sample per row."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))
'''
