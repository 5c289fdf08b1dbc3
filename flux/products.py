"""Matrix products and array updates for generated kernels, compiled once for every model.

    dot(A, B)            = A·B             (np.dot: BLAS)
    dot_into(A, B, C)    : C ← A·B         (np.dot's out= form: no temporary)
    add_into(C, V, c)    : C ← C + c·V     entry by entry (C contiguous, V of the same size)
    copy_into(C, V)      : C ← V           entry by entry

Why these exist: numba compiles `np.dot` afresh inside every generated module that calls it, and an array
statement (`grad += …`, `h_seq[0] = h0`) pulls numba's broadcasting and its f-string shape-error formatting
into the kernel. Called through these `cache=True` functions instead, they are compiled once per argument type
and then loaded from numba's cache by every model (the notes in PERFORMANCE-NOTES.md: an LSTM's first compile
12.4 → 6.6 s). No steady-state cost: numba links the callee into the caller and optimises them together.
"""
from __future__ import annotations

import numpy as np
from numba import njit

KERNEL = dict(cache=True, nogil=True, error_model="numpy")


@njit(**KERNEL)
def dot(a, b):
    """A·B through BLAS."""
    return np.dot(a, b)


@njit(**KERNEL)
def dot_into(a, b, out):
    """out ← A·B (out C-contiguous, of A·B's shape and dtype)."""
    np.dot(a, b, out)


@njit(**KERNEL)
def add_into(out, value, scale):
    """out ← out + scale·value, entry by entry in row-major order (out contiguous, the same size)."""
    flat, added = out.reshape(-1), value.ravel()  # ravel: a view of a contiguous value, a copy of any other
    for i in range(flat.size):
        flat[i] += scale * added[i]


@njit(**KERNEL)
def copy_into(out, value):
    """out ← value, entry by entry in row-major order (out contiguous, the same size)."""
    flat, copied = out.reshape(-1), value.ravel()
    for i in range(flat.size):
        flat[i] = copied[i]


HELPERS = ("dot", "dot_into", "add_into", "copy_into")
