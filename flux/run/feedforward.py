"""Running compiled kernels on NumPy arrays: checks first, then one kernel call, never a half-done update.

The public API is batch-first: an input is (N, features) or a single sample (features,). Everything is checked
before a kernel runs (type, rank, feature size, dtype), so an error leaves parameters and gradients untouched.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

# Threads: a feed-forward forward pass writes nothing shared (its tape is one atomic assignment naming its thread),
# so several threads may call one model at once. `back` accumulates into shared gradient arrays, and a recurrent
# call moves the carried state, so those are serialised per model; `back` refuses a tape another thread made.
_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def as_input_array(model, name: str, value: Any, size: int | None, *, role: str = "input") -> np.ndarray:
    """A C-contiguous (N, k) array of the model's dtype, or a clear error naming the model and the symbol."""
    model_name = type(model).__name__
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype.kind != "f":
        raise TypeError(f"{model_name}: {role} {name} must be a floating-point array, got dtype {array.dtype}"
                        + (" (convert it with .astype(np.float32) if that is what you mean)"
                           if array.dtype.kind in "iub" else ""))
    if array.ndim not in (1, 2):
        expected = f"(N, {size}) or ({size},)" if size is not None else "(N, features) or (features,)"
        raise ValueError(f"{model_name}: {role} {name} must have shape {expected}, got shape {array.shape}")
    if size is not None and array.shape[-1] != size:
        raise ValueError(f"{model_name}: {role} {name} must have {size} features along its last axis, "
                         f"got shape {array.shape}")
    if array.ndim == 1:
        array = array[None, :]
    return to_dtype(model_name, name, array, model.dtype, role)


def to_dtype(model_name: str, name: str, array: np.ndarray, dtype: np.dtype, role: str) -> np.ndarray:
    """Convert to the model's float type; refuse a narrowing that would turn finite values into ±inf."""
    if array.dtype == dtype and array.flags.c_contiguous:
        return array
    with np.errstate(over="ignore"):
        converted = np.ascontiguousarray(array, dtype=dtype)
    if array.dtype.itemsize > dtype.itemsize and not np.isfinite(converted).all():
        overflow = np.isfinite(array) & ~np.isfinite(converted)
        if overflow.any():
            raise ValueError(f"{model_name}: {role} {name} has values too large for {dtype} "
                             f"(e.g. {array[overflow].flat[0]!r}); the model computes in {dtype}")
    return converted


def follow_input_precision(model, inputs: tuple) -> None:
    """A model without parameters (a function, a loss) computes in its first input's float precision."""
    dtype = getattr(inputs[0], "dtype", None) if inputs else None
    if dtype is None or dtype == model.dtype or dtype.kind != "f" or dtype.itemsize not in (4, 8) or model.flat_arrays()[0]:
        return
    model.dtype = np.dtype(dtype)
    model.__dict__["_program"] = None


def run_forward(model, inputs: tuple, **options: Any) -> Any:
    """y = model(x…): check the inputs, run the forward kernel, keep what backward needs."""
    if model.flat_arrays()[0]:
        return forward_unlocked(model, inputs, **options)
    with model_lock(model):  # a shared function (flux.tanh) switches to each caller's precision: one at a time
        return forward_unlocked(model, inputs, **options)


def forward_unlocked(model, inputs: tuple, **options: Any) -> Any:
    follow_input_precision(model, inputs)
    program = model.kernels
    metadata = program.metadata
    if metadata.get("states"):  # recurrent: sequences through the compiled time loop
        from .sequences import run_sequence

        with model_lock(model):
            outputs = run_sequence(model, inputs, **options)
            model.__dict__["_tape_thread"] = (id(model.__dict__.get("_tape")), threading.get_ident())
        return outputs
    if options:
        raise TypeError(f"{type(model).__name__} is not recurrent: it takes no {', '.join(sorted(options))}=")
    names = metadata["inputs"]
    if len(inputs) != len(names):
        raise TypeError(f"{type(model).__name__} takes {len(names)} input(s) ({', '.join(names)}), got {len(inputs)}")
    params = model.flat_arrays()[0]
    sizes = program.input_sizes(*params)
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
    results = program.forward.function(*arrays, *params)
    model.__dict__["_tape"] = (arrays, results, single, threading.get_ident(), program)
    outputs = results[: metadata["outputs"]]
    if single:
        outputs = tuple(o[0] for o in outputs)
    return outputs[0] if len(outputs) == 1 else outputs


def run_backward(model, Δ: Any) -> Any:
    """dx = model.back(Δ): add Σₙ ∂L/∂W into the gradients and return ∂L/∂x."""
    with model_lock(model):
        tape = model.__dict__.get("_tape")
        refuse_another_threads_tape(model, tape)
        return backward_of_tape(model, Δ, tape)


def model_lock(model) -> threading.RLock:
    """The lock serialising one model's backward passes and recurrent calls (they write shared arrays)."""
    with _locks_guard:
        try:
            return _locks.setdefault(model, threading.RLock())
        except TypeError:  # an unhashable model (a subclass defining __eq__): one lock for all of them
            return _locks_guard_for_unhashable


_locks_guard_for_unhashable = threading.RLock()


def refuse_another_threads_tape(model, tape) -> None:
    """A model keeps one forward pass for `back`; back-propagating one made by another thread would mix batches."""
    if isinstance(tape, tuple) and len(tape) == 5:
        owner = tape[3]
    else:  # a recurrent tape: stamped by run_forward (a tape made by `step` has no stamp and is not checked)
        stamp = model.__dict__.get("_tape_thread")
        owner = stamp[1] if stamp is not None and tape is not None and stamp[0] == id(tape) else None
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
    program = model.kernels
    if program.metadata.get("states"):
        from .sequences import run_sequence_backward

        return run_sequence_backward(model, Δ)
    arrays, results, single, _, program = tape  # the forward's own program: its precision, whatever model.dtype is now
    metadata = program.metadata
    outputs = results[: metadata["outputs"]]
    deltas = Δ if isinstance(Δ, (tuple, list)) and metadata["outputs"] > 1 else (Δ,)
    if len(deltas) != len(outputs):
        raise TypeError(f"{model_name}.back takes one gradient per output ({len(outputs)}), got {len(deltas)}")
    checked = []
    for k, (d, out) in enumerate(zip(deltas, outputs)):
        label = "Δ" if len(outputs) == 1 else f"Δ_{k + 1}"
        expected_shape = out.shape[1:] if single else out.shape
        d = d if isinstance(d, np.ndarray) else np.asarray(d)
        if d.dtype.kind != "f":
            raise TypeError(f"{model_name}.back: {label} must be a floating-point array, got dtype {d.dtype}")
        if d.shape != expected_shape:
            raise ValueError(f"{model_name}.back: {label} must have the output's shape {expected_shape}, got {d.shape}")
        checked.append(to_dtype(model_name, label, d.reshape(out.shape), out.dtype, "gradient"))
    params, grads = model.flat_arrays()
    returned = program.backward.function(*checked, *arrays, *params, *results, *grads)
    model.__dict__["_tape"] = None
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
    return input_gradients[0] if len(input_gradients) == 1 else tuple(input_gradients)
