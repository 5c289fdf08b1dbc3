"""Input checks, done once before a kernel runs: an array-like becomes a C-contiguous float array of the model's
dtype, or a specific error naming the model, the symbol, the expected and the actual shape or dtype.

The public API is batch-first: an input is (N, features) or a single sample (features,), which becomes (1, features).
Integer and bool arrays are accepted only when every value is exactly representable in the model's dtype, and a
narrowing (float64 → float32) only when no finite value becomes ±inf. Because everything is checked before a kernel
runs, an error leaves parameters and gradients untouched.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .state import runtime_of, unshared


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
    what = f"{role} {name}" if role else name
    try:
        array = as_array(value)
    except ValueError as error:  # a ragged list: NumPy's message names neither the model nor the input
        raise ValueError(f"{model_name}: {what} is not a rectangular array of numbers ({error})") from None
    if array.dtype.kind == "f":
        return array
    if array.dtype.kind in "iub":
        converted = array.astype(dtype)
        with np.errstate(invalid="ignore"):  # a value beyond the integer range comes back different: refused
            if array.dtype.kind == "b" or np.array_equal(converted.astype(array.dtype), array):
                return converted
    raise TypeError(f"{model_name}: {what} must be a floating-point array, got dtype {array.dtype}"
                    + (f" with values not exactly representable in {np.dtype(dtype)} (convert it with "
                       ".astype(np.float32) if that is what you mean)" if array.dtype.kind in "iub" else ""))


def as_input_array(model, name: str, value: Any, size: int | None, *, role: str = "input",
                   dtype: np.dtype | None = None) -> np.ndarray:
    """A C-contiguous (N, k) array of the model's dtype (or `dtype`: a loss's target in a fused step has the trained
    model's), or a clear error naming the model and the symbol."""
    model_name = type(model).__name__
    dtype = model.dtype if dtype is None else dtype
    array = value if isinstance(value, np.ndarray) and value.dtype.kind == "f" else \
        as_float_array(model_name, role, name, value, dtype)
    if array.ndim not in (1, 2):
        expected = f"(N, {size}) or ({size},)" if size is not None else "(N, features) or (features,)"
        raise ValueError(f"{model_name}: {role} {name} must have shape {expected}, got shape {array.shape}")
    check_features(model_name, f"{role} {name}", array.shape, size)
    if array.ndim == 1:
        array = array[None, :]
    return to_dtype(model_name, name, array, dtype, role)


def own_float_copy(model_name: str, role: str, name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """A new C-contiguous array of `dtype` holding `value` (a parameter or initial state given to a constructor),
    checked as an input is: complex, object and text arrays, integers not exactly representable and finite values
    that would become ±inf are refused naming the model and the symbol, never silently rounded or cut."""
    return unshared(to_dtype(model_name, name, as_float_array(model_name, role, name, value, dtype), dtype, role),
                    as_array(value))


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


def sample_rows(model_name: str, x: Any, target: Any, size: int | None, dtype: np.dtype) -> tuple[Any, Any]:
    """x (N, T, …, k) and its targets (N, T, …, out) or class labels (N, T, …) as rows — (N·T·…, k), (N·T·…, ·) —
    for a fused step of a feed-forward model, as model(x) takes them; x (N, k) or (k,) and its target as given."""
    x = x if isinstance(x, np.ndarray) else as_float_array(model_name, "input", "x", x, dtype)
    if x.ndim < 3:
        return x, target
    check_features(model_name, "input x", x.shape, size)
    target = as_array(target)
    leading = x.shape[:-1]
    if target.shape[:len(leading)] != leading or target.ndim > len(leading) + 1:
        axes = ", ".join(map(str, leading))
        raise ValueError(f"{model_name}: x has shape {x.shape}, so the target must have shape ({axes}, out) or "
                         f"class labels ({axes}), got {target.shape}")
    rows = x.reshape(-1, x.shape[-1])
    return rows, target.reshape((rows.shape[0],) + target.shape[len(leading):])


def check_features(model_name: str, what: str, shape: tuple, size: int | None) -> None:
    """An input's last axis holds the model's `size` features (None: any), or a ValueError naming both."""
    if size is not None and shape[-1] != size:
        raise ValueError(f"{model_name}: {what} must have {size} features along its last axis, got shape {shape}")
