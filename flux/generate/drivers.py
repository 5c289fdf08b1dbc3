"""The drivers of a recurrent module: `forward` and `backward`, the time loops that call the cell's kernels.

    forward:  u = project(x) for all T·N rows; for t = 0…T−1: h_t = step_forward(x_t, u_t, h_{t−1});
              y = readout(x, h_{t−1}, h_t) for all T·N rows
    backward: readout_backward for all rows (Δx, and the Δh_t each step adds to the Δh it carries);
              for t = T−1…0: step_backward; then the deferred parameter gradients and project_backward

Each driver is written from a `flux.generate.recurrent.ModuleWriter` that has written the kernels (their names,
arguments and buffers). Generated Python text is kept here, in one place, as the style asks.
"""
from __future__ import annotations

DRIVER_INDENT = "    "


def forward_driver(writer) -> str:
    I = DRIVER_INDENT
    params = ", ".join(a.name for a in writer.params)
    arguments = [f"{a.name}_seq" for a in writer.inputs] + [f"{s}_initial" for s in writer.states]
    lines = [f"def forward({', '.join(arguments)}, {params}):",
             f'{I}"""The time loop over t = 0…T−1 for the states; then the outputs, for all t at once."""',
             f"{I}T = {writer.inputs[0].name}_seq.shape[0]",
             f"{I}N = {writer.inputs[0].name}_seq.shape[1]"]
    names = {a.symbol: a.name for a in writer.params}
    for W, copy in writer.transposed.items():  # contiguous: a GEMM on a transposed view is twice as slow here
        lines.append(f"{I}{copy.name} = np.ascontiguousarray({names[W]}.T)")
    sources = size_sources(writer)
    projected = writer.projected_names
    if projected:
        rows = ", ".join(f"rows({a.name}_seq)" for a in writer.inputs)
        made = projected + writer.projection.kept
        lines.append(f"{I}{', '.join(made)}{',' if len(made) == 1 else ''} = project({rows}, {params})"
                     "  # the hoisted terms, for all T·N rows at once")
        for u in projected:
            lines.append(f"{I}{u}_seq = {u}.reshape((T, N, {u}.shape[1]))")
    for state in writer.states:
        lines.append(f"{I}{state}_seq = np.empty((T + 1, N, {state}_initial.shape[1]), dtype=real)")
        lines.append(f"{I}{state}_seq[0] = {state}_initial")
    for name, node in zip(writer.kept_names, writer.stored_nodes):
        lines.append(f"{I}{name}_seq = np.empty((T, N, {size(node.shape[0], sources)}), dtype=real)")
    step_arguments = [f"{a.name}_seq[t]" for a in writer.step_inputs]  # a state's [t] is h_{t−1}
    lines.append(f"{I}for t in range(T):")
    lines.append(f"{I * 2}step_forward({', '.join(step_arguments)}, {writer.step_forward_parameters()}, "
                 f"{', '.join(writer.step_forward_destinations)})")
    readout = writer.readout
    made = readout.outputs + readout.kept
    lines.append(f"{I}{', '.join(made)}{',' if len(made) == 1 else ''} = "
                 f"readout({', '.join(readout_rows(writer))}, {params})  # the outputs, for all T·N rows at once")
    for y in readout.outputs:
        lines.append(f"{I}{y}_seq = {y}.reshape((T, N, {y}.shape[1]))")
    writer.forward_returns = ([f"{n}_seq" for n in readout.outputs] + [f"{s}_seq" for s in writer.states]
                            + [f"{n}_seq" for n in writer.kept_names] + [f"{u}_seq" for u in projected]
                            + (writer.projection.kept if writer.projection else []) + readout.kept)
    lines.append(f"{I}return {', '.join(writer.forward_returns)}{',' if len(writer.forward_returns) == 1 else ''}")
    return "\n".join(lines) + "\n"


def backward_driver(writer) -> str:
    from .feedforward import identifier

    I = DRIVER_INDENT
    params = ", ".join(a.name for a in writer.params)
    grads = ", ".join(f"grad_{a.name}" for a in writer.params)
    output_deltas = [identifier(d.name) for d in writer.cell.readout.upstream]
    state_deltas = [identifier(d.name) for d in writer.cell.update.upstream]
    arguments = ([f"{d}_seq" for d in output_deltas] + [f"{d}_last" for d in state_deltas]
                 + [f"{a.name}_seq" for a in writer.inputs] + [params] + writer.forward_returns + [grads])
    lines = [f"def backward({', '.join(arguments)}):",
             f'{I}"""The outputs\' VJP for all t at once; back through time, t = T−1…0, carrying ∂L/∂h; then the '
             f'deferred parameter gradients."""',
             f"{I}T = {writer.inputs[0].name}_seq.shape[0]",
             f"{I}N = {writer.inputs[0].name}_seq.shape[1]"]
    for delta in state_deltas:
        lines.append(f"{I}{delta} = {delta}_last.copy()")
    # the readout's VJP: ∂L/∂x, and the ∂L/∂h_{t−1}, ∂L/∂h_t that the loop adds to the Δh it carries
    readout, n_in, n_states = writer.readout, len(writer.inputs), len(writer.states)
    d_y = [f"rows({d}_seq)" for d in output_deltas]
    read = [f"rows({y}_seq)" for y in readout.outputs_read]
    returned = [f"from_readout{i}" for i in readout.leaf_gradients]
    call = (f"readout_backward({', '.join(d_y + readout_rows(writer))}, {params}, "
            f"{', '.join(readout.kept + read + [grads])})")
    lines.append(f"{I}{', '.join(returned)}{',' if len(returned) == 1 else ''} = {call}" if returned
                 else f"{I}{call}")
    before_step, after_step = {}, {}  # state → the readout's per-step contribution to its Δ
    for i in readout.leaf_gradients:
        if i >= n_in:
            state = writer.states[(i - n_in) % n_states]
            lines.append(f"{I}from_readout{i}_seq = from_readout{i}.reshape((T, N, from_readout{i}.shape[1]))")
            (after_step if i < n_in + n_states else before_step)[state] = f"from_readout{i}_seq[t]"
    # buffers for the per-step gradients of inputs and hoisted terms, and for the deferred factors
    for name, returned in writer.step_gradients:
        if name not in writer.states:  # a gradient the loop writes at every t needs no zeros first
            lines.append(f"{I}grad_{name}_seq = np.{'empty' if returned else 'zeros'}({name}_seq.shape, dtype=real)")
    sources = size_sources(writer, in_forward=False)
    for name, expr in writer.factor_results:
        lines.append(f"{I}{name}_seq = np.empty((T, N, {size(expr.shape[0], sources)}), dtype=real)")
    step_arguments = state_deltas + [f"{a.name}_seq[t]" for a in writer.step_inputs] + [params]
    step_arguments += [writer.saved_buffers[n] for n in writer.saved_names] + [grads]
    step_arguments += [f"{n}_seq[t]" for n in writer.step_backward_written]
    returned = [f"{n}_t" for n in writer.step_backward_returns]
    lines.append(f"{I}for t in range(T - 1, -1, -1):")
    for state, delta in zip(writer.states, state_deltas):
        if state in before_step:
            lines.append(f"{I * 2}{delta} += {before_step[state]}")
    call = f"step_backward({', '.join(step_arguments)})"
    lines.append(f"{I * 2}{', '.join(returned)}{',' if len(returned) == 1 else ''} = {call}" if returned
                 else f"{I * 2}{call}")
    returned_names = set(writer.step_backward_returns)
    for state, delta in zip(writer.states, state_deltas):
        if f"grad_{state}" in returned_names:
            lines.append(f"{I * 2}{delta} = grad_{state}_t")
        else:
            lines.append(f"{I * 2}{delta} = np.zeros_like({delta})")
        if state in after_step:
            lines.append(f"{I * 2}{delta} += {after_step[state]}")
    if writer.deferred:
        factor_buffers = [factor_buffer(writer, n) for n in writer.gradient_factors]
        lines.append(f"{I}gradients({', '.join(f'rows({b})' for b in factor_buffers)}, {params}, {grads})")
    if writer.projection is not None:
        projection = writer.projection
        d_u = [f"rows(grad_{u}_seq)" for u in writer.projected_names]
        xs = [f"rows({a.name}_seq)" for a in writer.inputs]
        returned = [f"from_projection{i}" for i in projection.leaf_gradients]
        read = [f"rows({u}_seq)" for u in projection.outputs_read]
        call = f"project_backward({', '.join(d_u + xs)}, {params}, {', '.join(projection.kept + read + [grads])})"
        if returned:
            lines.append(f"{I}{', '.join(returned)}{',' if len(returned) == 1 else ''} = {call}")
            for i in projection.leaf_gradients:
                name = writer.inputs[i].name
                lines.append(f"{I}grad_{name}_seq += from_projection{i}.reshape({name}_seq.shape)")
        else:
            lines.append(f"{I}{call}")
    for i in readout.leaf_gradients:
        if i < n_in:
            name = writer.inputs[i].name
            lines.append(f"{I}grad_{name}_seq += from_readout{i}.reshape({name}_seq.shape)")
    results = [f"grad_{a.name}_seq" for a in writer.inputs] + state_deltas
    lines.append(f"{I}return {', '.join(results)}{',' if len(results) == 1 else ''}")
    return "\n".join(lines) + "\n"


def readout_rows(writer) -> list[str]:
    """The row stacks the readout reads, in the order of its leaves: inputs, h_{t−1}, h_t."""
    return ([f"rows({a.name}_seq)" for a in writer.inputs] + [f"rows({s}_seq[:T])" for s in writer.states]
            + [f"rows({s}_seq[1:])" for s in writer.states])


def factor_buffer(writer, name: str) -> str:
    """The time-major buffer holding a deferred factor: a stored forward value or a loop result."""
    if name in writer.states:
        return f"{name}_seq[:T]"
    if name.startswith("new_") and name[4:] in writer.states:
        return f"{name[4:]}_seq[1:]"
    return f"{name}_seq"


def size(dim, sources: dict) -> str:
    """Code for a symbolic dimension, read from the arrays in `sources`."""
    import sympy

    dim = sympy.sympify(dim)
    if dim.is_Integer:
        return str(dim)
    return str(dim.xreplace({s: sympy.Symbol(sources[s]) for s in dim.free_symbols}))


def size_sources(writer, in_forward: bool = True) -> dict:
    """Where a driver reads each dimension: the parameters, the input sequences, the states."""
    from .printer import size_codes

    sources = dict(size_codes(writer.params))
    for a in writer.inputs:
        sources.setdefault(a.symbol.shape[0], f"{a.name}_seq.shape[2]")
    for state, p in zip(writer.states, writer.cell.previous):
        sources.setdefault(p.shape[0], f"{state}_initial.shape[1]" if in_forward else f"{state}_seq.shape[2]")
    return sources


ROWS_SOURCE = '''def rows(a):
    """(T, N, k) → (T·N, k): every time step's batch stacked, one sample per row."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))
'''
