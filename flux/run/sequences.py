"""Running recurrent models: sequences in, sequences out, through a generated module's time loops.

The public API is batch-first, (N, T, features); the compiled drivers are time-major, (T, N, k), so that x_t is one
contiguous block. `run_sequence` keeps a tape of what `run_sequence_backward` needs; states are carried between
calls (truncated BPTT, `step` for generation) or start from zero, a given value, or a learnable h₀ whose gradient
Σₙ ∂L/∂h₀ is added into the model's grads. The code generation lives in `flux.derive.recurrence`.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .feedforward import as_array, as_float_array, runtime_of, to_dtype


@dataclass
class SequenceTape:
    """What one forward pass over a sequence leaves for `back`."""

    sequences: list  # time-major inputs (T, N, k)
    results: tuple  # the forward driver's returns (METADATA["forward_returns"])
    learnable_starts: list  # dotted names of states that started from their learnable initial value
    stepped: bool  # made by `step`: Δ is (N, k) per output, not (N, T, k)
    single: bool  # one sample given as (features,)
    thread: int | None  # the thread of a whole-sequence call (`back` refuses another thread's); None for `step`


def run_sequence(model, inputs: tuple, *, initial: Any = None, carry: bool = False) -> Any:
    """ys = model(xs): the whole sequence through the compiled time loop, keeping what backward needs.

    xs is (N, T, features), ys (N, T, out). The state starts from `initial` if given, else from where the last
    call left it if `carry`, else from zero (or the learnable initial state). The final state is kept.
    """
    program = model.kernels
    metadata = program.metadata
    model_name = type(model).__name__
    names = metadata["inputs"]
    if len(inputs) != len(names):
        raise TypeError(f"{model_name} takes {len(names)} input sequence(s) ({', '.join(names)}), got {len(inputs)}")
    named = model.params  # one walk over the sub-models; a learnable h0 is a parameter no kernel takes
    params = [named[n] for n in metadata["params"]]
    sizes = program.input_sizes(*params)
    sequences = [as_sequence_array(model, n, x, s) for n, x, s in zip(names, inputs, sizes)]
    batch, steps = sequences[0].shape[:2]
    for n, s in zip(names, sequences):
        if s.shape[:2] != (batch, steps):
            raise ValueError(f"{model_name}: input {n} has (batch, steps) = {s.shape[:2]} but {names[0]} has "
                             f"{(batch, steps)}")
    time_major = [np.ascontiguousarray(s.transpose(1, 0, 2)) for s in sequences]
    starts, learnable_starts = starting_states(model, program, params, time_major, initial, carry)
    results = program.forward.function(*time_major, *starts, *params)
    n_out, n_states = metadata["outputs"], len(metadata["states"])
    for name, states in zip(metadata["states"], results[n_out:n_out + n_states]):
        set_state(model, name, states[-1].copy())
    runtime_of(model).keep_tape(SequenceTape(time_major, results, learnable_starts, False, False,
                                             threading.get_ident()))
    outputs = tuple(np.ascontiguousarray(y.transpose(1, 0, 2)) for y in results[:n_out])
    return outputs[0] if n_out == 1 else outputs


def run_step(model, inputs: tuple) -> Any:
    """y_t = model.step(x_t): one time step from the carried state, which it then advances."""
    metadata = model.kernels.metadata
    model_name = type(model).__name__
    if not metadata.get("states"):
        raise TypeError(f"{model_name}.step: {model_name} is not recurrent (it declares no flux.state), so there is "
                        f"no time step to advance; call {model_name.lower()}(x)")
    with runtime_of(model).lock:
        return step_locked(model, model_name, metadata, inputs)


def step_locked(model, model_name: str, metadata: dict, inputs: tuple) -> Any:
    arrays = []
    for name, x in zip(metadata["inputs"], inputs):
        x = as_array(x)
        if x.ndim not in (1, 2):
            raise ValueError(f"{model_name}.step: input {name} must be one time step, (N, features) or (features,), "
                             f"got shape {x.shape}; call {model_name.lower()}(xs) for a whole (N, T, features) sequence")
        arrays.append(x[None, None, :] if x.ndim == 1 else x[:, None, :])
    single = all(np.ndim(x) == 1 for x in inputs)
    outputs = run_sequence(model, tuple(arrays), carry=True)
    tape = runtime_of(model).tape
    tape.stepped, tape.single, tape.thread = True, single, None
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    outputs = tuple(y[0, 0] if single else y[:, 0] for y in outputs)
    return outputs[0] if len(outputs) == 1 else outputs


def run_sequence_backward(model, Δ: Any, tape: SequenceTape | None) -> Any:
    """dxs = model.back(Δys): back through time; ∂L/∂params added into grads, ∂L/∂h₀ kept in `state_grads`."""
    model_name = type(model).__name__
    if tape is not None and not isinstance(tape, SequenceTape):
        raise RuntimeError(f"{model_name}.back: the kept forward pass was made by another kind of call ({tape!r})")
    if tape is None:
        raise RuntimeError(f"{model_name}.back: there is no forward pass to back-propagate through; call "
                           f"{model_name.lower()}(xs) first (each forward pass can be back-propagated once)")
    program = model.kernels
    metadata = program.metadata
    n_out = metadata["outputs"]
    deltas = Δ if isinstance(Δ, (tuple, list)) and n_out > 1 else (Δ,)
    if len(deltas) != n_out:
        raise TypeError(f"{model_name}.back takes one gradient per output ({n_out}), got {len(deltas)}")
    checked = []
    for k, (d, y) in enumerate(zip(deltas, tape.results[:n_out])):
        label = "Δ" if n_out == 1 else f"Δ_{k + 1}"
        steps, batch, size = y.shape
        expected = (size,) if tape.single else (batch, size) if tape.stepped else (batch, steps, size)
        d = as_float_array(f"{model_name}.back", "", label, d, model.dtype)
        if d.shape != expected:
            what = "one time step's output" if tape.stepped else f"the output sequence's (N, T, out), T = {steps}"
            raise ValueError(f"{model_name}.back: {label} must have {what} shape {expected}, got {d.shape}")
        d = d.reshape(batch, steps, size)
        checked.append(np.ascontiguousarray(d.transpose(1, 0, 2), dtype=model.dtype))
    named_params, named_grads = model.params, model.grads
    params = [named_params[n] for n in metadata["params"]]
    grads = [named_grads[n] for n in metadata["params"]]
    states = tape.results[n_out:n_out + len(metadata["states"])]
    finals = [np.zeros_like(s[-1]) for s in states]  # no loss on the state after the last step
    returned = program.backward.function(*checked, *finals, *tape.sequences, *params, *tape.results, *grads)
    runtime_of(model).drop_tape()
    model._set_has_grads(True)
    n_in = len(tape.sequences)
    state_grads = dict(zip(metadata["states"], returned[n_in:]))
    for name in tape.learnable_starts:
        named_grads[initial_param_name(name)] += state_grads[name].sum(axis=0)
    if tape.single:
        state_grads = {k: g[0] for k, g in state_grads.items()}
    runtime_of(model).state_grads = state_grads
    input_grads = [g.transpose(1, 0, 2) for g in returned[:n_in]]
    if tape.stepped:
        input_grads = [g[0, 0] if tape.single else g[:, 0] for g in input_grads]
    input_grads = [np.ascontiguousarray(g) for g in input_grads]
    return input_grads[0] if n_in == 1 else tuple(input_grads)


def as_sequence_array(model, name: str, value: Any, size: int | None) -> np.ndarray:
    """A (N, T, k) array of the model's dtype, or a clear error naming the model and the input."""
    model_name = type(model).__name__
    array = as_float_array(model_name, "input", name, value, model.dtype)
    features = size if size is not None else "features"
    if array.ndim != 3:
        raise ValueError(f"{model_name} is recurrent: input {name} must be a sequence batch of shape "
                         f"(N, T, {features}), got shape {array.shape}; use {model_name.lower()}.step(x) "
                         f"for one time step")
    if size is not None and array.shape[2] != size:
        raise ValueError(f"{model_name}: input {name} must have {size} features along its last axis, "
                         f"got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{model_name}: input {name} must have at least one sample and one time step, "
                         f"got shape {array.shape}")
    return to_dtype(model_name, name, array, model.dtype, "input")


def starting_states(model, program, params: list, time_major: list, initial: Any, carry: bool) -> tuple[list, list]:
    """Each state's h₀ for this call (N, size), and which of them are learnable initial values."""
    metadata = program.metadata
    model_name = type(model).__name__
    names = metadata["states"]
    batch = time_major[0].shape[1]
    sizes = state_sizes(program, params, [s.shape[2] for s in time_major])
    given = initial_as_dict(model_name, names, initial)
    starts, learnable = [], []
    for name, size in zip(names, sizes):
        owner, attribute = state_owner(model, name)
        if name in given:
            starts.append(checked_state(model_name, name, given[name], size, batch, model.dtype, "initial state"))
        elif carry and owner.__dict__["_states"].get(attribute) is not None:
            carried = owner.__dict__["_states"][attribute]
            if carried.shape != (batch, size):
                raise ValueError(f"{model_name}: the carried state {name} has shape {carried.shape} but this call "
                                 f"needs ({batch}, {size}); call {model_name.lower()}.reset() to start afresh")
            starts.append(np.ascontiguousarray(carried, dtype=model.dtype))
        elif type(owner).declared_states()[attribute].learnable:
            starts.append(np.ascontiguousarray(np.broadcast_to(owner.params[f"{attribute}0"], (batch, size))))
            learnable.append(name)
        else:
            starts.append(np.zeros((batch, size), dtype=model.dtype))
    return starts, learnable


def state_sizes(program, params: list, input_sizes: list) -> list[int]:
    """Each state's size: fixed by the parameters, or else by the input whose dimension it shares."""
    metadata = program.metadata
    sizes = program.module.state_sizes(*params)
    tied = dict(zip(metadata["input_dims"], input_sizes))
    return [size if size is not None else tied.get(dim) for size, dim in zip(sizes, metadata["state_dims"])]


def initial_as_dict(model_name: str, names: list, initial: Any) -> dict:
    if initial is None:
        return {}
    if isinstance(initial, dict):
        unknown = sorted(set(initial) - set(names))
        if unknown:
            raise ValueError(f"{model_name} has no state {', '.join(unknown)}; its states are {', '.join(names)}")
        return dict(initial)
    if len(names) != 1:
        raise TypeError(f"{model_name} has {len(names)} states ({', '.join(names)}): give initial= as a dict "
                        f"{{name: array}}")
    return {names[0]: initial}


def checked_state(model_name: str, name: str, value: Any, size: int | None, batch: int | None, dtype,
                  role: str) -> np.ndarray:
    """A state array (N, size) from (N, size) or (size,), or a clear error."""
    array = as_float_array(model_name, role, name, value, dtype)
    if array.ndim == 1:
        array = array[None, :] if batch is None else np.broadcast_to(array, (batch, array.shape[0]))
    expected_batch = batch if batch is not None else array.shape[0]
    if array.ndim != 2 or array.shape != (expected_batch, size if size is not None else array.shape[1]):
        raise ValueError(f"{model_name}: {role} {name} must have shape ({expected_batch}, {size}) or ({size},), "
                         f"got {np.shape(value)}")
    return np.ascontiguousarray(array, dtype=dtype)


def reset_state(model, initial: Any = None) -> None:
    """Forget the carried state (the next call starts from h₀), or set it to `initial`."""
    program = model.kernels
    metadata = program.metadata
    model_name = type(model).__name__
    if not metadata.get("states"):
        raise TypeError(f"{model_name} has no state to reset: it is not recurrent")
    given = initial_as_dict(model_name, metadata["states"], initial)
    sizes = program.module.state_sizes(*(model.params[n] for n in metadata["params"]))
    checked = {name: checked_state(model_name, name, value, size, None, model.dtype, "state")
               for (name, value), size in ((item, sizes[metadata["states"].index(item[0])]) for item in given.items())}
    batches = {a.shape[0] for a in checked.values()}
    if len(batches) > 1:
        raise ValueError(f"{model_name}: the states given have different batch sizes {sorted(batches)}")
    for name in metadata["states"]:
        set_state(model, name, checked.get(name))
    runtime_of(model).drop_tape()


def current_state(model) -> dict:
    """{dotted name: the state (N, size) the last call left}, None for a state not set."""
    metadata = model.kernels.metadata
    return {name: state_owner(model, name)[0].__dict__["_states"].get(state_owner(model, name)[1])
            for name in metadata.get("states", [])}


def state_owner(model, dotted: str) -> tuple:
    """The (sub-)model that declares a dotted state name, and the name's last part."""
    *path, last = dotted.split(".")
    for part in path:
        model = dict(model.named_submodels())[part]
    return model, last


def set_state(model, dotted: str, value) -> None:
    owner, attribute = state_owner(model, dotted)
    owner.__dict__["_states"][attribute] = value


def initial_param_name(dotted: str) -> str:
    """The parameter holding a learnable initial state: "hidden" → "hidden0", "0.h" → "0.h0"."""
    return f"{dotted}0"
