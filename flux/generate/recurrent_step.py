"""The fused training step of a recurrent model: forward time loop, loss, BPTT, checks and update in ONE kernel.

    train_step(x_batch_, t_batch_, scale_seq, θ…, h0…, learnable_, g…, g_h0…, state…, step_count, hyper…,
               x_seq, t_seq, buffers…) → (mean loss, status): batch_gradients then checked_update, one call
    batch_gradients(…) → Σ scale·ℓ_t and g ← its gradients; add_gradients(g…, h…); checked_update(loss, …) → status:
        a batch cut into parts, one per thread (flux.step.RecurrentTrainStep), each part's gradients summed

x_batch_ and t_batch_ are the caller's batch-first (N, T, ·) arrays; the kernel copies them once into the
time-major (T, N, ·) buffers x_seq and t_seq it runs on (no transposed copies made in Python per call).

The model's own cell kernels and drivers (`flux.generate.recurrent`, without ∂L/∂x) run the sequence, pasted into
`train_step` (`PASTED`); the loss ℓ(ŷ_t, target_t) is its own kernel pair (`loss_forward`, `loss_backward`) over
all T·N rows of the model's outputs, kept as numba functions so the maths of each is compiled (and vectorised) as
it is when called alone. `scale_seq` (T, N, 1) weighs each step's loss:
1/(N·T) everywhere for the mean over every step, or 1/N at t = T−1 and 0 elsewhere for the last step only; it is
the upstream ∂L/∂ℓ_t that `loss_backward` turns into ∂L/∂ŷ_t, where BPTT starts. Each state starts from its h₀
(N copies of a (H,) row: zeros, or a learnable initial state whose gradient Σₙ ∂L/∂h₀ⁿ is kept and, when
`learnable_[k]`, checked and updated like a parameter's). Before anything changes the kernel checks the loss and
every gradient (status −1: the loss; k: the k-th of θ…, h0…; −2: all finite, updated). The buffers
(`workspace_buffers`: states, kept values, per-step δs for the whole sequence, Δh and the cell kernels' work buffers)
are allocated by the caller once per shape and reused: nothing is allocated inside the time loops; the row kernels
(projection, readout, loss, the deferred gradients' GEMMs) still make their results once per call. Names here are
ones no user's symbol can become (`flux.generate.names`): t_seq, scale_seq, *_batch_, *_initial, learnable_, zero_,
time_major_.
"""
from __future__ import annotations

import numpy as np
import sympy

from .drivers import (backward_buffers, backward_driver, forward_buffers, forward_driver, forward_returns, rows,
                      workspace_function)
from .feedforward import common_metadata, shape_checks
from .kernel_pair import kernel_pair
from .module import module_source
from .names import identifier
from .optimiser_update import update_call, update_source
from .printer import Argument
from .inline import paste_kernels
from .recurrent import CELL_KERNELS, cell_kernels_and_plan
from .sizes import size_codes, sizes_function

I = "    "
# pasted into train_step (flux.generate.inline): fused LSTM(8,16)+Dense step's first call 18.4 → 12.9–13.6 s of CPU,
# steady state (LSTM/GRU 32→64, T 50, N 16) 0.86×/0.92× of the time with them as numba functions
PASTED = CELL_KERNELS | {"forward_into", "backward_into"}

ZERO_SOURCE = '''def zero_(a):
    """a ← 0, entry by entry (an array assignment would pull NumPy's shape-error formatting into the kernel)."""
    flat = a.reshape(-1)
    for i in range(flat.size):
        flat[i] = 0
'''

TIME_MAJOR_SOURCE = '''def time_major_(a, out):
    """out[t, n] ← a[n, t]: a batch-first (N, T, k) array into the time-major (T, N, k) buffer the loops run on."""
    for n in range(a.shape[0]):
        for t in range(a.shape[1]):
            for j in range(a.shape[2]):
                out[t, n, j] = a[n, t, j]
'''


def generate_recurrent_step_source(model, loss, rules, optimiser_name: str, dtype, key: str) -> str:
    """The module text: the model's recurrent kernels and drivers, the loss's kernel pair, the optimiser's `update`
    and `train_step`. `model` and `loss` are the two derivations (the loss's inputs: prediction, target)."""
    dtype = np.dtype(dtype)
    cell, kernels, plan = cell_kernels_and_plan(model, input_gradients=False)
    if len(model.outputs) != 1 or len(plan.inputs) != 1:
        raise NotImplementedError(f"compile_step fuses recurrent models of one input sequence and one output; "
                                  f"{model.name} has {len(plan.inputs)} and {len(model.outputs)}")
    prediction, target = loss.inputs
    leaves = [Argument(prediction, identifier(prediction.name), True), Argument(target, identifier(target.name), True)]
    pair = kernel_pair(loss, ("loss_forward", "loss_backward"), leaves, [], ["per_row"], "lkept",
                       ("  (every row: all T·N)", "∂L/∂prediction for all T·N rows (Δ: scale·∂L/∂ℓ per row)"),
                       gradient_leaves={0})
    kernels += [pair.forward, pair.backward, forward_driver(plan, workspace=True), backward_driver(plan, workspace=True),
                ZERO_SOURCE, TIME_MAJOR_SOURCE, update_source(rules, optimiser_name), *train_step_driver(plan, pair, rules, optimiser_name)]
    kernels = paste_kernels(kernels, PASTED)
    metadata = common_metadata(model, dtype, cell.inputs, cell.params)
    metadata.update({"states": cell.state_names, "state_dims": [sympy.sstr(p.shape[0]) for p in cell.previous]})
    sizes = sizes_function("state_sizes", f"The size of each state ({', '.join(plan.states)}); None: the same as the "
                           "input it is tied to.", [a.name for a in plan.params], [p.shape[0] for p in cell.previous],
                           size_codes(plan.params))
    output_size = sizes_function("output_size", "The size of the model's output (None: any).",
                                 [a.name for a in plan.params], [model.outputs[0].shape[0]], size_codes(plan.params))
    docstring = (f"flux fused recurrent training step for {model.name} and the loss {loss.name} with "
                 f"{optimiser_name} ({dtype.name}): see flux/generate/recurrent_step.py. Generated by flux; do not edit.")
    workspace = workspace_function(plan, {u: e.shape[0] for u, e in zip(plan.projected, cell.projected)})
    return module_source(key, docstring, dtype, metadata=metadata,
                         helpers=[shape_checks(plan.params, plan.inputs), sizes, output_size, workspace],
                         kernels=kernels)


def train_step_driver(plan, pair, rules, optimiser_name: str) -> list[str]:
    """The step's kernels; `train_step(…)` is one call of the first and the last:

        batch_gradients(x, t, scale, θ…, h₀…, g…, buffers…) → Σ scale·ℓ_t, g ← its gradients (θ's and h₀'s)
        add_gradients(g…, h…)                                g ← g + h (another part of the batch's)
        checked_update(loss, θ…, h₀…, learnable_, g…, state…, step_count, hyper…) → status
    A batch cut into parts (flux.run.threads) runs `batch_gradients` on each, sums, then updates once."""
    (x,) = [f"{a.name}_seq" for a in plan.inputs]
    x_batch = f"{plan.inputs[0].name}_batch_"
    params = [a.name for a in plan.params]
    initials = [f"{s}_initial" for s in plan.states]
    targets = params + initials  # what the optimiser updates (an initial state only when it is learnable)
    grads = [f"grad_{n}" for n in targets]
    states = [f"opt_{kind}_{n}" for n in targets for kind in rules.state]
    hyper = [f"hyper_{h}" for h in rules.hyperparameters]
    buffers = forward_buffers(plan) + backward_buffers(plan)  # the workspace: allocated once per shape, reused
    data = [x_batch, "t_batch_", "scale_seq"] + targets
    after = [x, "t_seq"] + buffers
    updating = ["loss"] + targets + ["learnable_"] + grads + states + ["step_count"] + hyper
    lines = [f"def batch_gradients({', '.join(data + grads + after)}):",
             f'{I}"""Σ scale·ℓ_t over every step and sample of this batch, and its gradients written into grad_… (not '
             'when the loss is not finite)."""',
             f"{I}T = {x}.shape[0]", f"{I}N = {x}.shape[1]",
             f"{I}time_major_({x_batch}, {x})", f"{I}time_major_(t_batch_, t_seq)"]
    for state, initial in zip(plan.states, initials):  # h_seq[0] = h₀ for every sample
        lines += [f"{I}for n in range(N):", f"{I * 2}for j in range({initial}.shape[0]):",
                  f"{I * 3}{state}_seq[0, n, j] = {initial}[j]"]
    returns = forward_returns(plan)
    lines.append(f"{I}{', '.join(returns)}, = forward_into({', '.join([x] + params + forward_buffers(plan))})")
    (y,) = [f"{n}_seq" for n in plan.readout.outputs]
    kept = [f"{k}_" for k in pair.kept]
    lines.append(f"{I}per_row_, {''.join(k + ', ' for k in kept)}= loss_forward({rows(y)}, {rows('t_seq')})")
    lines += [f"{I}scale_ = {rows('scale_seq')}", f"{I}loss = 0.0", f"{I}for i in range(T * N):",
              f"{I * 2}if scale_[i, 0] != 0:",  # a step outside the loss counts 0, even if its ℓ is not finite
              f"{I * 3}loss += scale_[i, 0] * per_row_[i, 0]",
              f"{I}if not math.isfinite(loss):", f"{I * 2}return loss"]
    read = [{"per_row": "per_row_"}.get(n, f"{n}_") for n in pair.outputs_read]
    lines.append(f"{I}from_loss, = loss_backward({', '.join(['scale_', rows(y), rows('t_seq')] + kept + read)})")
    lines += [f"{I}zero_({g})" for g in grads[:len(params)]]
    back = [f"from_{s}" for s in plan.states]
    lines.append(f"{I}{', '.join(back)}, = backward_into({', '.join(['from_loss.reshape(' + y + '.shape)', x] + params + returns)}, "
                 f"{', '.join(grads[:len(params)] + backward_buffers(plan))})")
    for s, g in zip(plan.states, grads[len(params):]):
        lines += [f"{I}zero_({g})", f"{I}for n in range(N):", f"{I * 2}for j in range({g}.shape[0]):",
                  f"{I * 3}{g}[j] += from_{s}[n, j]"]
    lines += [f"{I}return loss", "", "", f"def checked_update({', '.join(updating)}):",
              f'{I}"""Status −1: the loss is not finite, k ≥ 0: gradient k is not; else every {optimiser_name} update '
              '(an h₀ only when learnable), and −2."""',
              f"{I}if not math.isfinite(loss):", f"{I * 2}return -1"]
    for k, g in enumerate(grads[:len(params)]):
        lines += [f"{I}if not all_finite({g}):", f"{I * 2}return {k}"]
    for k, g in enumerate(grads[len(params):]):
        lines += [f"{I}if learnable_[{k}] and not all_finite({g}):", f"{I * 2}return {len(params) + k}"]
    for k, (target, g) in enumerate(zip(targets, grads)):
        call = update_call(rules, target, g, hyper)
        if k < len(params):
            lines.append(f"{I}{call}")
        else:
            lines += [f"{I}if learnable_[{k - len(params)}]:", f"{I * 2}{call}"]
    lines.append(f"{I}return -2")
    arguments = data[:3] + targets + ["learnable_"] + grads + states + ["step_count"] + hyper + after
    return [kernel + "\n" for kernel in "\n".join(lines).split("\n\n\n")] + [
        add_gradients_source(grads),
        train_step_source(arguments, f"One {optimiser_name} step on Σ scale·ℓ_t over every step and sample",
                          data + grads + after, updating)]


def add_gradients_source(grads: list[str]) -> str:
    """`add_gradients(grad_…, more_grad_…)`: grad_… ← grad_… + more_grad_… (another part of the batch's)."""
    more = [f"more_{g}" for g in grads]
    return "\n".join([f"def add_gradients({', '.join(grads + more)}):",
                      f'{I}"""grad_… ← grad_… + more_…: the gradients of another part of the batch added in."""']
                     + [f"{I}{g}.reshape(-1)[:] += {m}.reshape(-1)" for g, m in zip(grads, more)]) + "\n"


def train_step_source(arguments: list[str], summary: str, gradient_arguments: list[str],
                      update_arguments: list[str]) -> str:
    """`train_step(…)` → (loss, status): `batch_gradients` on the whole batch, then `checked_update`."""
    return "\n".join([f"def train_step({', '.join(arguments)}):",
                      f'{I}"""{summary} (see the module\'s doc)."""',
                      f"{I}loss = batch_gradients({', '.join(gradient_arguments)})",
                      f"{I}return loss, checked_update({', '.join(update_arguments)})"]) + "\n"
