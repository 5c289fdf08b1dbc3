"""Matrix products and array updates for generated kernels, compiled once for every model.

    dot(A, B)            = A·B             (np.dot: BLAS)
    dot_into(A, B, C)    : C ← A·B         (np.dot's out= form: no temporary)
    Σ-products AᵀB over a long batch (A = Xᵀ, X (K, M) with K ≫ M·N): in row blocks of X small enough for
    OpenBLAS's small-matrix path, summed (see `long_product_block`)
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
from numba.extending import overload

from .small_products import blas_limit

KERNEL = dict(cache=True, nogil=True, error_model="numpy")
SHORTEST_BLOCK = 64  # rows of X per block: fewer and the blocks' calls cost more than packing saves


@njit(**KERNEL)
def dot(a, b):
    """A·B through BLAS."""
    return product(a, b)


@njit(**KERNEL)
def dot_into(a, b, out):
    """out ← A·B (out C-contiguous, of A·B's shape and dtype)."""
    product_into(a, b, out)


def product(a, b):
    """A·B: np.dot, or for a long Σ-product of matrices (`long_product_block`) its row blocks summed."""
    return np.dot(a, b)


def product_into(a, b, out):
    """out ← A·B as `product` computes it."""
    np.dot(a, b, out)


def maybe_long_product(a, b) -> bool:
    """Whether the types allow `long_product_block`'s shape: a transposed C-contiguous matrix (numba types it 'F')
    times a C-contiguous one; other layouts take one np.dot (the blocks are not compiled for them)."""
    return a.ndim == 2 and b.ndim == 2 and a.layout == "F" and b.layout == "C"


@overload(product)
def product_implementation(a, b):
    if a.layout == "A" or b.layout == "A":  # a user's strided input: one contiguous copy (numba warns otherwise)
        return lambda a, b: np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b))
    if not maybe_long_product(a, b):  # chosen when the types are known, at compile time
        return lambda a, b: np.dot(a, b)

    def matrices(a, b):
        out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        if long_product_block(a, b) > 0:
            long_product_into(a, b, out)
        else:
            np.dot(a, b, out)
        return out
    return matrices


@overload(product_into)
def product_into_implementation(a, b, out):
    if a.layout == "A" or b.layout == "A":
        return lambda a, b, out: np.dot(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    if not maybe_long_product(a, b):
        return lambda a, b, out: np.dot(a, b, out)

    def matrices(a, b, out):
        if long_product_block(a, b) > 0:
            long_product_into(a, b, out)
        else:
            np.dot(a, b, out)
    return matrices


@njit(**KERNEL)
def long_product_block(a, b):
    """For A = Xᵀ (a transposed view of a C-contiguous X (K, M)) times B (K, N) C-contiguous, with K·M·N above
    OpenBLAS's small-matrix limit (`flux.small_products.blas_limit`): the rows of X per block that keep each block
    under it (≥ SHORTEST_BLOCK); otherwise 0 (one np.dot). A Σₙ gradient δᵀX over T·N rows is this shape: packed
    as one GEMM it ran at half the speed of its blocks (64×800·800×64: 55 µs, in 4 blocks 32 µs; 64×800·800×32:
    33 → 16 µs on SkylakeX)."""
    if not (a.T.flags.c_contiguous and b.flags.c_contiguous):
        return 0
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    limit = blas_limit()
    if M * N * K <= limit:
        return 0
    rows = limit // max(M * N, 1)
    return rows if rows >= SHORTEST_BLOCK else 0


@njit(**KERNEL)
def long_product_into(a, b, out):
    """out ← Xᵀ·B (a = Xᵀ) as Σ over row blocks of X and B, each one small-matrix GEMM."""
    x, rows = a.T, long_product_block(a, b)
    K = x.shape[0]
    np.dot(x[0:rows].T, b[0:rows], out)
    block = np.empty_like(out)
    flat, added = out.reshape(-1), block.reshape(-1)
    for start in range(rows, K, rows):
        stop = min(start + rows, K)
        np.dot(x[start:stop].T, b[start:stop], block)
        for i in range(flat.size):
            flat[i] += added[i]


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
