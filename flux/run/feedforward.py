"""Running a feed-forward model: y = model(x…) through the forward kernel, dx = model.back(Δ) through the backward.

    forward:  check x (flux.run.inputs), results = forward(x…, θ…), keep ForwardTape(x…, results) for back;
              inputs (N, T, …, k) run as (N·T·…, k) rows and their results come back (N, T, …, ·)
    backward: check Δ against the output's shape, Σₙ ∂L/∂θ += backward(Δ, x…, θ…, results…), return ∂L/∂x

Nothing runs until every check has passed, so an error leaves parameters and gradients untouched. A recurrent
model's calls go on to flux.run.sequences (the compiled time loops); the tapes live in flux.run.state.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .contents import changed_in_place
from .inputs import as_float_array, as_input_array, check_features, follow_input_precision, to_dtype
from .sequences import run_sequence, run_sequence_backward
from .state import (ForwardTape, RuntimeState, configuration_counter, refuse_written_parameters, requested_tier,
                    runtime_of, unshared, write_count)
from .tokens import run_tokens


def run_forward(model, inputs: tuple, **options: Any) -> Any:
    """y = model(x…): check the inputs, run the forward kernel, keep what backward needs. A recurrent model's
    sequences go to `run_sequence` (flux.run.sequences)."""
    runtime = model.__dict__.get("_runtime") or runtime_of(model)
    if model.flat_arrays()[0]:
        return forward_unlocked(model, runtime, inputs, **options)
    runtime.shared = True  # a model without parameters (a function, a loss) is shared: one tape per thread
    with runtime.lock:  # a shared function (flux.tanh) switches to each caller's precision: one at a time
        follow_input_precision(model, inputs)
        return forward_unlocked(model, runtime, inputs, **options)


def running_program(model) -> Any:
    """The program the model's call runs: its current one — or, once the numba tier compiled in the background
    is ready, that one (flux.tiers). Called at the start of a call, so a model switches tier between calls, never
    during one; a forward's tape keeps its program, so `back` runs on the forward's tier."""
    runtime = model.__dict__.get("_runtime") or runtime_of(model)
    current = (runtime.program is not None and runtime.configuration == configuration_counter[0]
               and not (runtime.contents and changed_in_place(runtime.contents)))
    program = runtime.program if current else model.kernels
    job = program.job
    if job is not None and job.program is not None and requested_tier() == "auto":
        program = runtime.program = job.program  # one atomic assignment: a call in flight keeps its own
    return program


def forward_unlocked(model, runtime: RuntimeState, inputs: tuple, **options: Any) -> Any:
    program = running_program(model)
    params = model.flat_arrays()[0]  # after the program: a Chain's layers changed in place change them too
    metadata = program.metadata
    if metadata.get("states"):  # recurrent: sequences through the compiled time loop
        with runtime.lock:
            return run_sequence(model, inputs, **options)
    if metadata.get("tokens") and not options:  # sequences of tokens (flux.tokens): (N, T, d) arrays
        return run_tokens(model, runtime, program, params, inputs)
    if options:
        raise TypeError(f"{type(model).__name__} is not recurrent: it takes no {', '.join(sorted(options))}=")
    names = metadata["inputs"]
    if len(inputs) != len(names):
        raise TypeError(f"{type(model).__name__} takes {len(names)} input(s) ({', '.join(names)}), got {len(inputs)}")
    if not all(isinstance(x, np.ndarray) for x in inputs):  # lists, tensors: arrays (or a clear error) first
        inputs = tuple(as_float_array(type(model).__name__, "input", n, x, model.dtype) for n, x in zip(names, inputs))
    sizes = program.input_sizes(*params)
    leading = leading_shape(model, names, inputs, sizes)
    if leading is not None:  # (N, T, k): every row is a sample, as PyTorch's Linear takes (*, k)
        inputs = tuple(np.asarray(x).reshape(-1, np.shape(x)[-1]) for x in inputs)
    arrays = [as_input_array(model, n, x, s) for n, x, s in zip(names, inputs, sizes)]
    batch = arrays[0].shape[0]
    seen: dict = {}
    for n, a, dim in zip(names, arrays, metadata["input_dims"]):
        if a.shape[0] != batch:
            raise ValueError(f"{type(model).__name__}: input {n} has batch size {a.shape[0]} but {names[0]} has {batch}")
        first = seen.setdefault(dim, (n, a.shape[1]))
        if first[1] != a.shape[1]:
            raise ValueError(f"{type(model).__name__}: inputs {first[0]} and {n} must have the same number of "
                             f"features ({dim}), got {first[1]} and {a.shape[1]}")
    single = all(np.ndim(x) == 1 for x in inputs)
    arrays = [unshared(a, x) for a, x in zip(arrays, inputs)]
    results = program.forward.function(*arrays, *params)
    runtime.keep_tape(ForwardTape(arrays, results, single, threading.get_ident(), program, leading, write_count()))
    outputs = tuple(o.copy() for o in results[: metadata["outputs"]])  # the tape keeps the kernel's own
    if single:
        outputs = tuple(o[0] for o in outputs)
    if leading is not None:
        outputs = tuple(o.reshape(leading + o.shape[1:]) for o in outputs)
    return outputs[0] if len(outputs) == 1 else outputs


def leading_shape(model, names: list, inputs: tuple, sizes: tuple) -> tuple | None:
    """The shape before the features when the inputs have more axes than a batch ((N, T, k): each of the N·T rows
    is a sample, as for PyTorch's Linear on (*, k)); None for (N, k) and (k,) inputs."""
    if all(np.ndim(x) < 3 for x in inputs):
        return None
    for name, x, size in zip(names, inputs, sizes):
        check_features(type(model).__name__, f"input {name}", np.shape(x), size)
    shapes = [tuple(np.shape(x)[:-1]) for x in inputs]
    if any(shape != shapes[0] for shape in shapes):
        given = ", ".join(f"{n} {tuple(np.shape(x))}" for n, x in zip(names, inputs))
        raise ValueError(f"{type(model).__name__}: inputs with more than a batch axis must all have the same shape "
                         f"before their features, got {given}")
    return shapes[0]


def run_backward(model, Δ: Any) -> Any:
    """dx = model.back(Δ): add Σₙ ∂L/∂W into the gradients and return ∂L/∂x (through `run_sequence_backward` for a
    tape a sequence left)."""
    runtime = model.__dict__.get("_runtime") or runtime_of(model)
    with runtime.lock:
        tape = runtime.current_tape()
        refuse_another_threads_tape(model, tape)
        return backward_of_tape(model, Δ, tape)


def refuse_another_threads_tape(model, tape) -> None:
    """A model keeps one forward pass for `back`; back-propagating one made by another thread would mix batches.
    (A tape made by `step` has no thread and is not checked.)"""
    owner = getattr(tape, "thread", None)
    if owner is not None and owner != threading.get_ident():
        name = type(model).__name__
        raise RuntimeError(f"{name}.back: the forward pass to back-propagate was made by another thread (one model "
                           f"keeps one forward pass, so forward and back of one {name} must run in the same thread, "
                           "one pair at a time); give each training thread its own model. Nothing was changed")


def backward_of_tape(model, Δ: Any, tape) -> Any:
    """run_backward's work, with the tape already taken (and checked) under the model's lock."""
    model_name = type(model).__name__
    if tape is None:
        raise RuntimeError(f"{model_name}.back: there is no forward pass to back-propagate through; call "
                           f"{model_name.lower()}(x) first (each forward pass can be back-propagated once)")
    if not isinstance(tape, ForwardTape):
        return run_sequence_backward(model, Δ, tape)
    arrays, results, single, _, program, leading, since = tape  # the forward's own program: its precision,
    # whatever model.dtype is now
    refuse_written_parameters(model, since)
    metadata = program.metadata
    outputs = results[: metadata["outputs"]]
    deltas = Δ if isinstance(Δ, (tuple, list)) and metadata["outputs"] > 1 else (Δ,)
    if len(deltas) != len(outputs):
        raise TypeError(f"{model_name}.back takes one gradient per output ({len(outputs)}), got {len(deltas)}")
    checked = []
    for k, (d, out) in enumerate(zip(deltas, outputs)):
        label = "Δ" if len(outputs) == 1 else f"Δ_{k + 1}"
        expected_shape = out.shape[1:] if single else out.shape if leading is None else leading + out.shape[1:]
        d = d if isinstance(d, np.ndarray) and d.dtype.kind == "f" else \
            as_float_array(f"{model_name}.back", "", label, d, out.dtype)
        if d.shape != expected_shape:
            raise ValueError(f"{model_name}.back: {label} must have the output's shape {expected_shape}, got {d.shape}")
        checked.append(to_dtype(model_name, label, d.reshape(out.shape), out.dtype, "gradient"))
    params, grads = model.flat_arrays()
    if metadata.get("tokens"):
        from .tokens import token_blas  # small GEMMs on one BLAS thread (flux/run/tokens.py says why)

        with token_blas():
            returned = program.backward.function(*checked, *arrays, *params, *results, *grads)
    else:
        returned = program.backward.function(*checked, *arrays, *params, *results, *grads)
    runtime_of(model).drop_tape()
    model._set_has_grads(True)
    input_gradients, k = [], 0
    for i, a in enumerate(arrays):
        if i in metadata["zero_input_gradients"]:
            input_gradients.append(np.zeros_like(a))
        else:
            input_gradients.append(returned[k])
            k += 1
    if single:
        input_gradients = [g[0] for g in input_gradients]
    if leading is not None:
        input_gradients = [g.reshape(leading + g.shape[1:]) for g in input_gradients]
    return input_gradients[0] if len(input_gradients) == 1 else tuple(input_gradients)
