"""A model's run-time state: ONE `RuntimeState` per model, its typed tapes, and the generations that invalidate caches.

Everything a model computes while running — the tape of its last forward pass (a `ForwardTape`, `SequenceTape` or
`ChainTape`), its compiled program, its flat parameter lists, whether it holds gradients, its ∂L/∂h₀ — lives in the
model's `RuntimeState` (`runtime_of(model)`). It is created fresh on construction, load, pickling and copying, and
is never saved: only declared parameters, states and configuration are data.

Two global counters say when cached things are stale: the parameter generation (some parameter array was replaced,
so every cached flat list is) and the configuration generation (some built model's attribute changed, so its maths,
and its parents', may have).
"""
from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

# Threads: a feed-forward forward pass writes nothing shared (its tape is one atomic assignment naming its thread),
# so several threads may call one model at once. `back` accumulates into shared gradient arrays, and a recurrent
# call moves the carried state, so those are serialised per model; `back` refuses a tape another thread made.
# A model without parameters (flux.tanh, flux.mse) is shared by design: it keeps one tape per thread.

parameter_counter = [0]  # bumped whenever any parameter array is replaced, invalidating every cached flat list
configuration_counter = [0]  # bumped whenever an attribute of a built model changes (read directly on the hot path)


def parameters_replaced() -> None:
    """A parameter array was replaced somewhere: every model's cached flat lists are stale."""
    parameter_counter[0] += 1


def parameter_generation() -> int:
    return parameter_counter[0]


write_counter = [0]  # bumped by every write flux makes into parameter arrays (an update, a fused step, a load, …)
written: dict[int, int] = {}  # id(parameter array) → write_counter after its last write (forgotten when it is freed)


def parameters_written(arrays) -> None:
    """flux has written new values into these parameter arrays (in place, or they are new): a forward pass made
    before cannot be back-propagated through them (`refuse_written_parameters`), as PyTorch's version counters
    refuse a tensor modified in place. Writes into an array by the user's own code (`p[:] = …`) are not seen."""
    write_counter[0] += 1
    for array in arrays:
        key = id(array)
        if key not in written:
            weakref.finalize(array, written.pop, key, None)
        written[key] = write_counter[0]


def write_count() -> int:
    return write_counter[0]


def refuse_written_parameters(model, since: int) -> None:
    """A RuntimeError naming the model's parameters that flux wrote after the forward pass being back-propagated
    (made at write count `since`): ∂L/∂x would read the new values and the kept activations the old ones."""
    if write_counter[0] == since:
        return
    changed = [name for name, p in model.params.items() if written.get(id(p), -1) > since]
    if changed:
        name = type(model).__name__
        raise RuntimeError(f"{name}.back: parameter(s) {', '.join(changed)} changed after the forward pass being "
                           "back-propagated (an update, a fused step, params[...] = or a load between them): its "
                           f"gradients would mix old and new values; call {name.lower()}(x) again first. Nothing "
                           "was changed")


def configuration_changed() -> None:
    """An attribute forward may read changed on some model (`m.alpha = 3.0`, or on a sub-model): every model traces
    itself again before its next call and keeps its program only if its maths is still the same."""
    configuration_counter[0] += 1


def configuration_generation() -> int:
    return configuration_counter[0]


TIERS = ("auto", "numba", "numpy")


def requested_tier() -> str:
    """FLUX_TIER: auto (default), numba or numpy (see flux.tiers)."""
    tier = os.environ.get("FLUX_TIER", "").strip().lower() or "auto"
    if tier not in TIERS:
        raise ValueError(f"flux: FLUX_TIER must be one of {', '.join(TIERS)}; got {tier!r}")
    return tier


class ForwardTape(NamedTuple):
    """What one feed-forward pass leaves for `back`."""

    arrays: list  # the checked (N, k) inputs
    results: tuple  # the forward kernel's returns
    single: bool  # one sample given as (features,)
    thread: int  # the thread that made it
    program: Any  # the forward's own program (its precision, whatever model.dtype is by the time of `back`)
    leading: tuple | None = None  # the shape before the features of (N, …, k) inputs, run as (N·…, k) rows
    written: int = 0  # write_count() when it was made: `back` refuses parameters written since


@dataclass
class SequenceTape:
    """What one forward pass over a sequence leaves for `back`."""

    sequences: list  # time-major inputs (T, N, k)
    results: tuple  # the forward driver's returns (METADATA["forward_returns"])
    learnable_starts: list  # dotted names of states that started from their learnable initial value
    stepped: bool  # made by `step`: Δ is (N, k) per output, not (N, T, k)
    single: bool  # one sample given as (features,)
    thread: int | None  # the thread of a whole-sequence call (`back` refuses another thread's); None for `step`
    written: int = field(default_factory=write_count)  # `back` refuses parameters written since


class ChainTape(NamedTuple):
    """An unfused Chain's forward pass: each part's own tape, in order (a layer used twice has two); the parts are
    its layers, or runs of them fused into one Chain (Chain.parts)."""

    tapes: list
    thread: int
    parts: list
    written: int = 0  # write_count() when it was made: `back` refuses parameters written since, before any part's


class RuntimeState:
    """A model's run-time state: never saved, never pickled, rebuilt empty whenever a model is built or copied."""

    __slots__ = ("tape", "shared", "per_thread", "flat", "program", "maths", "contents", "configuration",
                 "built", "has_grads",
                 "state_grads", "lock")

    def __init__(self, built: bool = True) -> None:
        self.tape: Any = None  # ForwardTape, SequenceTape or ChainTape of the last forward pass, or None
        self.shared = False  # a parameter-free model, shared between models and threads: its tapes are per thread
        self.per_thread: dict[int, Any] = {}  # a shared model's tapes, by thread
        self.flat: tuple | None = None  # (generation, parameters, gradients) in kernel order
        self.program: Any = None  # the compiled Program for the model's dtype, its parameter sizes checked
        self.maths: Any = None  # the traced maths (flux.pipeline.Maths) the program was made for
        self.contents: list = []  # its container attributes' values when traced (flux.run.contents)
        self.configuration = -1  # the configuration generation `maths` and `program` were made in
        # __init__ has finished (a model loaded, unpickled or copied is built): attribute changes from now on may
        # change the maths
        self.built = built
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


def unshared(array: Any, held: Any) -> Any:
    """`array`, or a copy of it if it shares memory with `held` (an array the caller holds). A tape keeps only arrays
    of its own and a caller receives only new ones, so changing x or y in place between forward and back (`y -= t`,
    a reused input buffer) never changes the gradient, which PyTorch refuses with an error instead."""
    return array.copy() if np.may_share_memory(array, held) else array


def runtime_of(model) -> RuntimeState:
    """The model's RuntimeState (made on first use for a model built without __init__, e.g. by flux.load)."""
    runtime = model.__dict__.get("_runtime")
    if runtime is None:
        runtime = model.__dict__.setdefault("_runtime", RuntimeState())
    return runtime
