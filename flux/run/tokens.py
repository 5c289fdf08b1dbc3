"""Running a token model (inputs declared with `flux.tokens`): arrays (N, T, d) through its forward kernel.

    y = model(X)   X of shape (N, T, d) — N sequences of T tokens of d features — or one sequence (T, d)
    model.back(Δ)  Δ of the output's shape: the feed-forward path (flux.run.feedforward.backward_of_tape)

T may differ from call to call (the kernels read it from the arrays); every token input of one call shares it.
"""
from __future__ import annotations

import threading
from typing import Any

from ..blas import single_threaded_blas
from .inputs import as_float_array, to_dtype
from .state import ForwardTape, RuntimeState, unshared, write_count


def as_token_array(model, name: str, value: Any, size: int | None) -> tuple:
    """(a C-contiguous (N, T, d) array of the model's dtype, whether one (T, d) sequence was given)."""
    model_name = type(model).__name__
    array = as_float_array(model_name, "input", name, value, model.dtype)
    features = size if size is not None else "d"
    if array.ndim not in (2, 3):
        raise ValueError(f"{model_name}: input {name} is a sequence of tokens: it must have shape (N, T, {features}) "
                         f"or (T, {features}), got shape {array.shape}")
    if size is not None and array.shape[-1] != size:
        raise ValueError(f"{model_name}: input {name} must have {size} features per token along its last axis, "
                         f"got shape {array.shape}")
    single = array.ndim == 2
    return to_dtype(model_name, name, array[None] if single else array, model.dtype, "input"), single


def run_tokens(model, runtime: RuntimeState, program, params: list, inputs: tuple) -> Any:
    """y = model(X…) for a token model: check every input (shape, dtype, a common N and T), run forward, keep the
    tape that `back` reads."""
    metadata = program.metadata
    names = metadata["inputs"]
    model_name = type(model).__name__
    if len(inputs) != len(names):
        raise TypeError(f"{model_name} takes {len(names)} input(s) ({', '.join(names)}), got {len(inputs)}")
    checked = [as_token_array(model, n, x, s) for n, x, s in zip(names, inputs, program.input_sizes(*params))]
    arrays = [unshared(a, x) for (a, _), x in zip(checked, inputs)]  # the tape's own: x changed in place is not seen
    for n, a in zip(names[1:], arrays[1:]):
        if a.shape[:2] != arrays[0].shape[:2]:
            raise ValueError(f"{model_name}: input {n} has {a.shape[0]} sequences of {a.shape[1]} tokens but "
                             f"{names[0]} has {arrays[0].shape[0]} of {arrays[0].shape[1]}")
    single = all(s for _, s in checked)
    with token_blas():
        results = program.forward.function(*arrays, *params)
    runtime.keep_tape(ForwardTape(arrays, results, single, threading.get_ident(), program, None, write_count()))
    outputs = tuple(o.copy() for o in results[: metadata["outputs"]])  # the tape keeps the kernel's own
    if single:
        outputs = tuple(o[0] for o in outputs)
    return outputs[0] if len(outputs) == 1 else outputs


def token_blas():
    """The BLAS setting token kernels run under: one thread. Their GEMMs are small (N·T rows by d or a head) and
    many (about 60 a training step); with two OpenBLAS threads on busy cores each call waits for a descheduled
    second thread (TransformerBlock step, N 16, T 32, d 64, 2 busy cores: 36 ms with 2 BLAS threads, see the
    benchmark for 1)."""
    return single_threaded_blas()
