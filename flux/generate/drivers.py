"""The drivers of a recurrent module: `forward` and `backward`, the time loops that call the cell's kernels.

    forward:  u = project(x) for all T·N rows; for t = 0…T−1: h_t = cell_forward(x_t, u_t, h_{t−1});
              y = readout(x, h_{t−1}, h_t) for all T·N rows
    backward: readout_backward for all rows (Δx, and the Δh_t each step adds to the Δh it carries);
              for t = T−1…0: cell_backward; then the deferred parameter gradients and project_backward

Each driver is printed from the `flux.generate.recurrent.RecurrentPlan` of the cell's kernels (their names,
arguments and buffers), and returns text: nothing here writes into the plan. The drivers are printed calling the
kernels; `flux.generate.inline` then pastes each kernel's body in place of its call (one numba compile per driver).
"""
from __future__ import annotations

from .sizes import dimension_code, size_codes
from .step_writer import BATCH

DRIVER_INDENT = "    "


def forward_driver(plan, workspace: bool = False) -> str:
    """`forward(x_seq…, h_initial…, params…)`: the hoisted terms, the time loop, then the outputs.

    With `workspace`, `forward_into(x_seq…, params…, h_seq…, kept_seq…)` writes the time loop's values into the
    caller's buffers (`workspace_buffers`; h_seq[0] already holds h₀) instead of allocating them."""
    I = DRIVER_INDENT
    params = ", ".join(a.name for a in plan.params)
    if workspace:
        arguments = [f"{a.name}_seq" for a in plan.inputs]
        buffers = ", ".join(forward_buffers(plan))
        header = f"def forward_into({', '.join(arguments)}, {params}, {buffers}):"
    else:
        arguments = [f"{a.name}_seq" for a in plan.inputs] + [f"{s}_initial" for s in plan.states]
        header = f"def forward({', '.join(arguments)}, {params}):"
    lines = [header,
             f'{I}"""The time loop over t = 0…T−1 for the states; then the outputs, for all t at once."""',
             f"{I}T = {plan.inputs[0].name}_seq.shape[0]",
             f"{I}N = {plan.inputs[0].name}_seq.shape[1]"]
    names = {a.symbol: a.name for a in plan.params}
    for W, copy in plan.transposed.items():  # contiguous: a GEMM on a transposed view is twice as slow here
        lines.append(f"{I}{copy.name} = np.ascontiguousarray({names[W]}.T)")
    sources = size_sources(plan)
    projected = plan.projected
    if projected:
        stacks = ", ".join(rows(f"{a.name}_seq") for a in plan.inputs)
        made = projected + plan.projection.kept
        lines.append(f"{I}{', '.join(made)}{',' if len(made) == 1 else ''} = project({stacks}, {params})"
                     "  # the hoisted terms, for all T·N rows at once")
        for u in projected:
            lines.append(f"{I}{u}_seq = {u}.reshape((T, N, {u}.shape[1]))")
    for state in plan.states if not workspace else ():
        lines.append(f"{I}{state}_seq = np.empty((T + 1, N, {state}_initial.shape[1]), dtype=real)")
        lines.append(f"{I}copy_into({state}_seq[0], {state}_initial)")  # no array statement: see flux.products
    for name, dim in zip(plan.kept, plan.kept_dims) if not workspace else ():
        lines.append(f"{I}{name}_seq = np.empty((T, N, {dimension_code(dim, sources)}), dtype=real)")
    work = work_buffers("forward", plan.forward_work)
    if not workspace:  # made once per call, reused at every t
        lines += [f"{I}{name} = {allocation}" for name, allocation in zip(work, work_allocations(plan.forward_work,
                                                                                                   sources))]
    cell_arguments = [f"{name}_seq[t]" for name in plan.cell_inputs]  # a state's [t] is h_{t−1}
    lines.append(f"{I}for t in range(T):")
    parameters = ", ".join([a.name for a in plan.params] + [copy.name for copy in plan.transposed.values()])
    lines.append(f"{I * 2}cell_forward({', '.join(cell_arguments)}, {parameters}, "
                 f"{', '.join(plan.cell_forward_destinations + work)})")
    readout = plan.readout
    made = readout.outputs + readout.kept
    lines.append(f"{I}{', '.join(made)}{',' if len(made) == 1 else ''} = "
                 f"readout({', '.join(readout_rows(plan))}, {params})  # the outputs, for all T·N rows at once")
    for y in readout.outputs:
        lines.append(f"{I}{y}_seq = {y}.reshape((T, N, {y}.shape[1]))")
    returns = forward_returns(plan)
    lines.append(f"{I}return {', '.join(returns)}{',' if len(returns) == 1 else ''}")
    return "\n".join(lines) + "\n"


def forward_returns(plan) -> list[str]:
    """What `forward` returns: the outputs and states, then what `backward` reads (in the order it takes them)."""
    return ([f"{n}_seq" for n in plan.readout.outputs] + [f"{s}_seq" for s in plan.states]
            + [f"{n}_seq" for n in plan.kept] + [f"{u}_seq" for u in plan.projected]
            + (plan.projection.kept if plan.projection else []) + plan.readout.kept)


def backward_driver(plan, workspace: bool = False) -> str:
    """`backward(Δy_seq…, Δh_last…, x_seq…, params…, forward's returns…, grad_*…)` → ∂L/∂x_seq…, ∂L/∂h_initial…

    With `workspace`, `backward_into(Δy_seq…, x_seq…, params…, forward's returns…, grad_*…, buffers…)` starts
    from Δh = 0 after the last step, uses the caller's buffers (`workspace_buffers`) and returns ∂L/∂h_initial… only:
    a training step needs no ∂L/∂x."""
    I = DRIVER_INDENT
    params = ", ".join(a.name for a in plan.params)
    grads = ", ".join(f"grad_{a.name}" for a in plan.params)
    output_deltas, state_deltas = plan.output_deltas, plan.state_deltas
    if workspace:
        arguments = ([f"{d}_seq" for d in output_deltas] + [f"{a.name}_seq" for a in plan.inputs] + [params]
                     + forward_returns(plan) + [grads] + backward_buffers(plan))
    else:
        arguments = ([f"{d}_seq" for d in output_deltas] + [f"{d}_last" for d in state_deltas]
                     + [f"{a.name}_seq" for a in plan.inputs] + [params] + forward_returns(plan) + [grads])
    lines = [f"def {'backward_into' if workspace else 'backward'}({', '.join(arguments)}):",
             f'{I}"""The outputs\' VJP for all t at once; back through time, t = T−1…0, carrying ∂L/∂h; then the '
             f'deferred parameter gradients."""',
             f"{I}T = {plan.inputs[0].name}_seq.shape[0]",
             f"{I}N = {plan.inputs[0].name}_seq.shape[1]"]
    for delta in state_deltas:  # Δh after the last step; cell_backward writes Δh_{t−1} into the spare, then they swap
        if workspace:
            lines += zero_lines(delta, I)
        else:
            lines += [f"{I}{delta} = {delta}_last.copy()", f"{I}{delta}_spare = np.empty_like({delta})"]
    # the readout's VJP: ∂L/∂x, and the ∂L/∂h_{t−1}, ∂L/∂h_t that the loop adds to the Δh it carries
    readout, n_in, n_states = plan.readout, len(plan.inputs), len(plan.states)
    d_y = [rows(f"{d}_seq") for d in output_deltas]
    read = [rows(f"{y}_seq") for y in readout.outputs_read]
    returned = [f"from_readout{i}" for i in readout.leaf_gradients]
    call = (f"readout_backward({', '.join(d_y + readout_rows(plan))}, {params}, "
            f"{', '.join(readout.kept + read + [grads])})")
    lines.append(f"{I}{', '.join(returned)}{',' if len(returned) == 1 else ''} = {call}" if returned
                 else f"{I}{call}")
    before_step, after_step = {}, {}  # state → the readout's per-step contribution to its Δ
    for i in readout.leaf_gradients:
        if i >= n_in:
            state = plan.states[(i - n_in) % n_states]
            lines.append(f"{I}from_readout{i}_seq = from_readout{i}.reshape((T, N, from_readout{i}.shape[1]))")
            (after_step if i < n_in + n_states else before_step)[state] = f"from_readout{i}_seq[t]"
    # buffers for the per-step gradients of inputs and hoisted terms, and for the deferred factors
    for name, returned in plan.cell_gradients if not workspace else ():
        if name not in plan.states:  # a gradient the loop writes at every t needs no zeros first
            lines.append(f"{I}grad_{name}_seq = np.{'empty' if returned else 'zeros'}({name}_seq.shape, dtype=real)")
    sources = size_sources(plan, in_forward=False)
    for name, dim in plan.factors if not workspace else ():
        lines.append(f"{I}{name}_seq = np.empty((T, N, {dimension_code(dim, sources)}), dtype=real)")
    work = work_buffers("backward", plan.backward_work)
    if not workspace:  # made once per call, reused at every t
        lines += [f"{I}{name} = {allocation}" for name, allocation in zip(work, work_allocations(plan.backward_work,
                                                                                                   sources))]
    delta_of = dict(zip(plan.states, state_deltas))
    cell_arguments = state_deltas + [f"{name}_seq[t]" for name in plan.cell_inputs] + [params]
    cell_arguments += plan.saved_buffers + [grads]
    cell_arguments += [f"{n}_seq[t]" for n in plan.cell_backward_written]
    cell_arguments += [f"{delta_of[s]}_spare" for s in plan.cell_backward_states] + work
    lines.append(f"{I}for t in range(T - 1, -1, -1):")
    for state, delta in zip(plan.states, state_deltas):
        if state in before_step:
            lines.append(f"{I * 2}add_into({delta}, {before_step[state]}, real(1))")
    lines.append(f"{I * 2}cell_backward({', '.join(cell_arguments)})")
    for state, delta in zip(plan.states, state_deltas):
        if state in plan.cell_backward_states:
            lines.append(f"{I * 2}{delta}, {delta}_spare = {delta}_spare, {delta}")
        else:  # h_{t−1} does not reach h_t: nothing flows back past this step
            lines += zero_lines(delta, I * 2)
        if state in after_step:
            lines.append(f"{I * 2}add_into({delta}, {after_step[state]}, real(1))")
    if plan.gradient_factors:
        factor_buffers = [factor_buffer(plan, n) for n in plan.gradient_factors]
        lines.append(f"{I}gradients({', '.join(rows(b) for b in factor_buffers)}, {params}, {grads})")
    if plan.projection is not None:
        projection = plan.projection
        d_u = [rows(f"grad_{u}_seq") for u in plan.projected]
        xs = [rows(f"{a.name}_seq") for a in plan.inputs]
        returned = [f"from_projection{i}" for i in projection.leaf_gradients]
        read = [rows(f"{u}_seq") for u in projection.outputs_read]
        call = f"project_backward({', '.join(d_u + xs)}, {params}, {', '.join(projection.kept + read + [grads])})"
        if returned and not workspace:
            lines.append(f"{I}{', '.join(returned)}{',' if len(returned) == 1 else ''} = {call}")
            for i in projection.leaf_gradients:
                name = plan.inputs[i].name
                lines.append(f"{I}add_into(grad_{name}_seq, from_projection{i}, real(1))")
        else:
            lines.append(f"{I}{call}")
    for i in readout.leaf_gradients if not workspace else ():
        if i < n_in:
            name = plan.inputs[i].name
            lines.append(f"{I}add_into(grad_{name}_seq, from_readout{i}, real(1))")
    results = ([] if workspace else [f"grad_{a.name}_seq" for a in plan.inputs]) + state_deltas
    lines.append(f"{I}return {', '.join(results)}{',' if len(results) == 1 else ''}")
    return "\n".join(lines) + "\n"


def forward_buffers(plan) -> list[str]:
    """The buffers `forward_into` fills: each state's (T+1, N, size), then each kept value's (T, N, size), then
    cell_forward's work buffers."""
    return ([f"{s}_seq" for s in plan.states] + [f"{n}_seq" for n in plan.kept]
            + work_buffers("forward", plan.forward_work))


def backward_buffers(plan) -> list[str]:
    """The buffers `backward_into` fills: ∂L/∂ of each hoisted term (and of an input the loop writes), per step;
    each deferred gradient's factor; each Δh and its spare; cell_backward's work buffers."""
    inputs = {a.name for a in plan.inputs}
    return ([f"grad_{name}_seq" for name, returned in plan.cell_gradients
             if name not in plan.states and (returned or name not in inputs)]
            + [f"{name}_seq" for name, _ in plan.factors]
            + [f"{d}{spare}" for d in plan.state_deltas for spare in ("", "_spare")]
            + work_buffers("backward", plan.backward_work))


def work_buffers(kernel: str, shapes: list) -> list[str]:
    """The names of a cell kernel's work buffers in its driver."""
    return [f"{kernel}_work{k}" for k in range(1, len(shapes) + 1)]


def work_allocations(shapes: list, sources: dict) -> list[str]:
    """`np.empty(…)` for each work buffer shape (`BATCH`: the batch size N, as the drivers name it)."""
    sources = {**sources, BATCH: "N"}
    return [f"np.empty(({', '.join(dimension_code(d, sources) for d in shape)},), dtype=real)" for shape in shapes]


def zero_lines(array: str, indent: str) -> list[str]:
    """array ← 0 for an (N, k) array, entry by entry (no array statement: see flux.products)."""
    return [f"{indent}for n in range({array}.shape[0]):", f"{indent}    for j in range({array}.shape[1]):",
            f"{indent}        {array}[n, j] = 0"]


def workspace_function(plan, dims: dict) -> str:
    """Plain Python `workspace_buffers(T, N, x_seq…, h_initial…, params…)`: every buffer of `forward_into` and
    `backward_into` for T steps of N samples, allocated once per shape by the caller. `dims` gives the size of each
    hoisted term (by name); a never-written ∂L/∂ buffer is zeros."""
    sources = size_sources(plan)
    inputs = {a.name for a in plan.inputs}
    shapes = [f"(T + 1, N, {s}_initial.shape[1])" for s in plan.states]
    shapes += [f"(T, N, {dimension_code(dim, sources)})" for dim in plan.kept_dims]
    made = [f"np.empty({shape}, dtype=real)" for shape in shapes] + work_allocations(plan.forward_work, sources)
    size_of = {a.name: f"{a.name}_seq.shape[2]" for a in plan.inputs}
    size_of.update({u: dimension_code(dims[u], sources) for u in plan.projected})
    for name, returned in plan.cell_gradients:
        if name not in plan.states and (returned or name not in inputs):
            made.append(f"np.{'empty' if returned else 'zeros'}((T, N, {size_of[name]}), dtype=real)")
    made += [f"np.empty((T, N, {dimension_code(dim, sources)}), dtype=real)" for _, dim in plan.factors]
    made += [f"np.empty((N, {s}_initial.shape[1]), dtype=real)" for s in plan.states for _ in range(2)]
    made += work_allocations(plan.backward_work, sources)
    arguments = (["T", "N"] + [f"{a.name}_seq" for a in plan.inputs] + [f"{s}_initial" for s in plan.states]
                 + [a.name for a in plan.params])
    return "\n".join([f"def workspace_buffers({', '.join(arguments)}):",
                      '    """The buffers of forward_into, then those of backward_into, for T steps of N samples."""',
                      f"    return ({', '.join(made)}{',' if len(made) == 1 else ''})"])


def readout_rows(plan) -> list[str]:
    """The row stacks the readout reads, in the order of its leaves: inputs, h_{t−1}, h_t."""
    return ([rows(f"{a.name}_seq") for a in plan.inputs] + [rows(f"{s}_seq[:T]") for s in plan.states]
            + [rows(f"{s}_seq[1:]") for s in plan.states])


def factor_buffer(plan, name: str) -> str:
    """The time-major buffer holding a deferred factor: a stored forward value or a loop result."""
    if name in plan.states:
        return f"{name}_seq[:T]"
    if name.startswith("new_") and name[4:] in plan.states:
        return f"{name[4:]}_seq[1:]"
    return f"{name}_seq"


def size_sources(plan, in_forward: bool = True) -> dict:
    """Where a driver reads each dimension: the parameters, the input sequences, the states."""
    sources = dict(size_codes(plan.params))
    for a in plan.inputs:
        sources.setdefault(a.symbol.shape[0], f"{a.name}_seq.shape[2]")
    for state, dim in zip(plan.states, plan.state_dims):
        sources.setdefault(dim, f"{state}_initial.shape[1]" if in_forward else f"{state}_seq.shape[2]")
    return sources


def rows(sequence: str) -> str:
    """The code of a (T, N, k) sequence as its (T·N, k) row stack: every time step's batch stacked, one sample per
    row (a reshape printed in place: a `rows` numba function was compiled, then linked into every driver)."""
    return f"{sequence}.reshape((T * N, {sequence.split('[')[0]}.shape[2]))"
