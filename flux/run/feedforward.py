"""Running compiled kernels on NumPy arrays: checks first, then one kernel call, never a half-done update.

The public API is batch-first: an input is (N, features) or a single sample (features,). Everything is checked
before a kernel runs (type, rank, feature size, dtype), so an error leaves parameters and gradients untouched.

Everything a model computes while running — its tapes, its compiled program, its flat parameter lists, whether it
holds gradients, its ∂L/∂h₀ — lives in ONE `RuntimeState` per model (`runtime_of(model)`). It is created fresh on
construction, load, pickling and copying, and is never saved: only declared parameters, states and configuration
are data.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, NamedTuple

import numpy as np

# Threads: a feed-forward forward pass writes nothing shared (its tape is one atomic assignment naming its thread),
# so several threads may call one model at once. `back` accumulates into shared gradient arrays, and a recurrent
# call moves the carried state, so those are serialised per model; `back` refuses a tape another thread made.
# A model without parameters (flux.tanh, flux.mse) is shared by design: it keeps one tape per thread.

_generation = [0]  # bumped whenever any parameter array is replaced, invalidating every cached flat list


def parameters_replaced() -> None:
    """A parameter array was replaced somewhere: every model's cached flat lists are stale."""
    _generation[0] += 1


def parameter_generation() -> int:
    return _generation[0]


_configuration = [0]  # bumped whenever an attribute of a built model changes: its maths (and its parents') may have


def configuration_changed() -> None:
    """An attribute forward may read changed on some model (`m.alpha = 3.0`, or on a sub-model): every model traces
    itself again before its next call and keeps its program only if its maths is still the same."""
    _configuration[0] += 1


def configuration_generation() -> int:
    return _configuration[0]


class ForwardTape(NamedTuple):
    """What one feed-forward pass leaves for `back`."""

    arrays: list  # the checked (N, k) inputs
    results: tuple  # the forward kernel's returns
    single: bool  # one sample given as (features,)
    thread: int  # the thread that made it
    program: Any  # the forward's own program (its precision, whatever model.dtype is by the time of `back`)


class ChainTape(NamedTuple):
    """An unfused Chain's forward pass: each layer's own tape, in order (a layer used twice has two)."""

    tapes: list
    thread: int


class RuntimeState:
    """A model's run-time state: never saved, never pickled, rebuilt empty whenever a model is built or copied."""

    __slots__ = ("tape", "shared", "per_thread", "flat", "program", "maths", "configuration", "built", "has_grads",
                 "state_grads", "lock")

    def __init__(self) -> None:
        self.tape: Any = None  # ForwardTape, SequenceTape or ChainTape of the last forward pass, or None
        self.shared = False  # a parameter-free model, shared between models and threads: its tapes are per thread
        self.per_thread: dict[int, Any] = {}  # a shared model's tapes, by thread
        self.flat: tuple | None = None  # (generation, parameters, gradients) in kernel order
        self.program: Any = None  # the compiled Program for the model's dtype, its parameter sizes checked
        self.maths: Any = None  # the traced maths (flux.pipeline.Maths) the program was made for
        self.configuration = -1  # the configuration generation `maths` and `program` were made in
        self.built = False  # __init__ has finished: attribute changes from now on may change the maths
        self.has_grads = False  # gradients accumulated since the last update
        self.state_grads: dict | None = None  # ∂L/∂h₀ of the last back through a sequence
        self.lock = threading.RLock()  # serialises back passes and recurrent calls (they write shared arrays)

    # A shared model (no parameters) keeps its tapes per thread, so two threads sharing flux.mse never take each
    # other's forward pass; a model with parameters keeps one (back refuses a tape another thread made).

    def keep_tape(self, tape: Any) -> None:
        if self.shared:
            self.per_thread[threading.get_ident()] = tape
        else:
            self.tape = tape

    def current_tape(self) -> Any:
        return self.per_thread.get(threading.get_ident()) if self.shared else self.tape

    def drop_tape(self) -> None:
        """Forget the forward pass (this thread's, for a shared model)."""
        if self.shared:
            self.per_thread.pop(threading.get_ident(), None)
        else:
            self.tape = None


def runtime_of(model) -> RuntimeState:
    """The model's RuntimeState (made on first use for a model built without __init__, e.g. by flux.load)."""
    runtime = model.__dict__.get("_runtime")
    if runtime is None:
        runtime = model.__dict__.setdefault("_runtime", RuntimeState())
    return runtime


def as_array(value: Any) -> np.ndarray:
    """A NumPy view of an array-like: NumPy arrays as they are, objects with __array__ (a CPU torch tensor, a JAX
    array) through it, objects with only __dlpack__ through np.from_dlpack, anything else through np.asarray."""
    if isinstance(value, np.ndarray):
        return value
    if not hasattr(value, "__array__") and hasattr(value, "__dlpack__"):
        return np.from_dlpack(value)
    return np.asarray(value)


def as_float_array(model_name: str, role: str, name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """`as_array(value)`, of a floating kind: integer and bool arrays are accepted when every value is exactly
    representable in `dtype` (XOR data written as [[0, 1], [1, 0]]), and refused otherwise."""
    array = as_array(value)
    if array.dtype.kind == "f":
        return array
    if array.dtype.kind in "iub":
        converted = array.astype(dtype)
        with np.errstate(invalid="ignore"):  # a value beyond the integer range comes back different: refused
            if array.dtype.kind == "b" or np.array_equal(converted.astype(array.dtype), array):
                return converted
    what = f"{role} {name}" if role else name
    raise TypeError(f"{model_name}: {what} must be a floating-point array, got dtype {array.dtype}"
                    + (f" with values not exactly representable in {np.dtype(dtype)} (convert it with "
                       ".astype(np.float32) if that is what you mean)" if array.dtype.kind in "iub" else ""))


def as_input_array(model, name: str, value: Any, size: int | None, *, role: str = "input") -> np.ndarray:
    """A C-contiguous (N, k) array of the model's dtype, or a clear error naming the model and the symbol."""
    model_name = type(model).__name__
    array = value if isinstance(value, np.ndarray) and value.dtype.kind == "f" else \
        as_float_array(model_name, role, name, value, model.dtype)
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
    """A model without parameters (a function, a loss) computes in its first input's float precision.
    Called under the model's lock: a shared function switches precision for one caller at a time."""
    dtype = getattr(inputs[0], "dtype", None) if inputs else None
    if dtype is None or dtype == model.dtype or dtype.kind != "f" or dtype.itemsize not in (4, 8):
        return
    model.dtype = np.dtype(dtype)
    runtime_of(model).program = None


def run_forward(model, inputs: tuple, run_sequence: Callable, **options: Any) -> Any:
    """y = model(x…): check the inputs, run the forward kernel, keep what backward needs. A recurrent model's
    sequences go to `run_sequence` (flux.run.sequences, which builds on this module: the facade passes it in)."""
    runtime = model.__dict__.get("_runtime") or runtime_of(model)
    params = model.flat_arrays()[0]
    if params:
        return forward_unlocked(model, runtime, params, inputs, run_sequence, **options)
    runtime.shared = True  # a model without parameters (a function, a loss) is shared: one tape per thread
    with runtime.lock:  # a shared function (flux.tanh) switches to each caller's precision: one at a time
        follow_input_precision(model, inputs)
        return forward_unlocked(model, runtime, params, inputs, run_sequence, **options)


def forward_unlocked(model, runtime: RuntimeState, params: list, inputs: tuple, run_sequence: Callable,
                     **options: Any) -> Any:
    current = runtime.program is not None and runtime.configuration == _configuration[0]
    program = runtime.program if current else model.kernels
    metadata = program.metadata
    if metadata.get("states"):  # recurrent: sequences through the compiled time loop
        with runtime.lock:
            return run_sequence(model, inputs, **options)
    if options:
        raise TypeError(f"{type(model).__name__} is not recurrent: it takes no {', '.join(sorted(options))}=")
    names = metadata["inputs"]
    if len(inputs) != len(names):
        raise TypeError(f"{type(model).__name__} takes {len(names)} input(s) ({', '.join(names)}), got {len(inputs)}")
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
    runtime.keep_tape(ForwardTape(arrays, results, single, threading.get_ident(), program))
    outputs = results[: metadata["outputs"]]
    if single:
        outputs = tuple(o[0] for o in outputs)
    return outputs[0] if len(outputs) == 1 else outputs


def run_backward(model, Δ: Any, run_sequence_backward: Callable) -> Any:
    """dx = model.back(Δ): add Σₙ ∂L/∂W into the gradients and return ∂L/∂x (through `run_sequence_backward` for a
    tape a sequence left)."""
    runtime = model.__dict__.get("_runtime") or runtime_of(model)
    with runtime.lock:
        tape = runtime.current_tape()
        refuse_another_threads_tape(model, tape)
        return backward_of_tape(model, Δ, tape, run_sequence_backward)


def model_lock(model) -> threading.RLock:
    """The lock serialising one model's backward passes and recurrent calls (they write shared arrays)."""
    return runtime_of(model).lock


def refuse_another_threads_tape(model, tape) -> None:
    """A model keeps one forward pass for `back`; back-propagating one made by another thread would mix batches.
    (A tape made by `step` has no thread and is not checked.)"""
    owner = getattr(tape, "thread", None)
    if owner is not None and owner != threading.get_ident():
        name = type(model).__name__
        raise RuntimeError(f"{name}.back: the forward pass to back-propagate was made by another thread (one model "
                           f"keeps one forward pass, so forward and back of one {name} must run in the same thread, "
                           "one pair at a time); give each training thread its own model. Nothing was changed")


def backward_of_tape(model, Δ: Any, tape, run_sequence_backward: Callable) -> Any:
    """run_backward's work, with the tape already taken (and checked) under the model's lock."""
    model_name = type(model).__name__
    if tape is None:
        raise RuntimeError(f"{model_name}.back: there is no forward pass to back-propagate through; call "
                           f"{model_name.lower()}(x) first (each forward pass can be back-propagated once)")
    if not isinstance(tape, ForwardTape):
        return run_sequence_backward(model, Δ, tape)
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
        d = d if isinstance(d, np.ndarray) and d.dtype.kind == "f" else \
            as_float_array(f"{model_name}.back", "", label, d, out.dtype)
        if d.shape != expected_shape:
            raise ValueError(f"{model_name}.back: {label} must have the output's shape {expected_shape}, got {d.shape}")
        checked.append(to_dtype(model_name, label, d.reshape(out.shape), out.dtype, "gradient"))
    params, grads = model.flat_arrays()
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
    return input_gradients[0] if len(input_gradients) == 1 else tuple(input_gradients)
