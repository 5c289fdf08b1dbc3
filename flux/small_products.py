"""The small product of one time step in a recurrent cell: a state batch times a parameter matrix.

    step_product(a, b) = a·b,   a (N, K) the batch (h_{t−1}, or a δ in BPTT),  b (K, M) a parameter (Uᵀ or U)
    step_product_into(a, b, out): out ← a·b, into the caller's (N, M) buffer (no allocation: the time loop's form)

Generated cell kernels call `step_product_into` instead of `np.dot` for their per-step products (`h·Uᵀ` forward, `δ·U` back);
the whole-sequence GEMMs (input projections, Σₜ parameter gradients) stay with `np.dot`. It picks, by size:

- N·K·M ≤ the limit: `np.dot`. OpenBLAS kernels with a small-matrix path (SkylakeX, picked on this machine when
  OPENBLAS_CORETYPE is not pinned) need no packing there and beat every loop tried: 16×64·64×64 in 0.65 µs
  against 1.13 µs. The limit is OpenBLAS's own small-matrix limit, 10⁶ multiply-adds (at N = 16: H ≈ 250).
- above, and always for a kernel without that path (Haswell, the OPENBLAS_CORETYPE pinned on this machine:
  np.dot 5.3 µs for 16×64·64×64): `blocked_product_into`, 4 rows × 4 k per pass over a contiguous m loop that
  LLVM vectorises, with FMA contraction.

Measured (float32, one thread, best of 9 interleaved rounds, µs; np.dot SkylakeX / np.dot Haswell / loop):
16×64·64×64 0.65 / 5.29 / 0.90–1.13; 16×64·64×256 2.81 / 8.61 / 3.09–3.66; 16×128·128×128 2.62 / 8.69 / 3.26–3.83;
16×192·192×192 5.04 / 19.2 / 6.4–7.9; 16×128·128×512 21.7 / 33.7 / 9.9–11.1; 16×256·256×256 21.9 / 34.3 /
11.3–13.6; 16×256·256×1024 93.7 / 140 / 55.5; 16×512·512×512 88.1 / 329 / 43–45.

The limit is read at run time from a linked symbol (`flux_step_product_limit`, set from SciPy's OpenBLAS kernel
name when this module is imported), so the cached machine code follows the BLAS of the process that runs it.
"""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import binding, ir
from numba import njit, types
from numba.extending import intrinsic

from .blas import openblas_core

# OpenBLAS kernels with a small-matrix GEMM path (SMALL_MATRIX_OPT), and the size up to which they take it
SMALL_MATRIX_CORES = ("skylakex", "cooperlake", "sapphirerapids")
SMALL_MATRIX_LIMIT = 1_000_000
SYMBOL = "flux_step_product_limit"
_limit = ctypes.c_int64(SMALL_MATRIX_LIMIT if openblas_core().lower() in SMALL_MATRIX_CORES else 0)
binding.add_symbol(SYMBOL, ctypes.addressof(_limit))


@intrinsic
def blas_limit(typingctx):
    """N·K·M up to which `step_product` calls np.dot: the int64 at the symbol `flux_step_product_limit`."""
    def codegen(context, builder, signature, arguments):
        try:
            variable = builder.module.get_global(SYMBOL)
        except KeyError:
            variable = ir.GlobalVariable(builder.module, ir.IntType(64), SYMBOL)
            variable.linkage = "external"
        return builder.load(variable)

    return types.int64(), codegen


@njit(cache=True, nogil=True, error_model="numpy")
def step_product(a, b):
    """a·b for a per-step (N, K) batch and a (K, M) parameter: np.dot when small, else the blocked loop."""
    if a.shape[0] * a.shape[1] * b.shape[1] <= blas_limit():
        return np.dot(a, b)
    out = np.zeros((a.shape[0], b.shape[1]), dtype=a.dtype)
    blocked_product_into(out, a, b)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def step_product_into(a, b, out):
    """out ← a·b for a per-step (N, K) batch and a (K, M) parameter, out C-contiguous (N, M): np.dot's out= form
    when small, else the blocked loop."""
    if a.shape[0] * a.shape[1] * b.shape[1] <= blas_limit():
        np.dot(a, b, out)
        return
    flat = out.reshape(-1)
    for i in range(flat.size):
        flat[i] = 0
    blocked_product_into(out, a, b)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def blocked_product_into(out, a, b):
    """out += a·b, four rows of a and four of b per pass: each loaded b row serves four output rows, and each
    output row is read and written once per four k (the m loop is contiguous, so it vectorises)."""
    N, K = a.shape
    M = b.shape[1]
    K4 = K - K % 4
    N4 = N - N % 4
    for n in range(0, N4, 4):
        o0, o1, o2, o3 = out[n], out[n + 1], out[n + 2], out[n + 3]
        for k in range(0, K4, 4):
            b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
            x00, x01, x02, x03 = a[n, k], a[n, k + 1], a[n, k + 2], a[n, k + 3]
            x10, x11, x12, x13 = a[n + 1, k], a[n + 1, k + 1], a[n + 1, k + 2], a[n + 1, k + 3]
            x20, x21, x22, x23 = a[n + 2, k], a[n + 2, k + 1], a[n + 2, k + 2], a[n + 2, k + 3]
            x30, x31, x32, x33 = a[n + 3, k], a[n + 3, k + 1], a[n + 3, k + 2], a[n + 3, k + 3]
            for m in range(M):
                c0, c1, c2, c3 = b0[m], b1[m], b2[m], b3[m]
                o0[m] += x00 * c0 + x01 * c1 + x02 * c2 + x03 * c3
                o1[m] += x10 * c0 + x11 * c1 + x12 * c2 + x13 * c3
                o2[m] += x20 * c0 + x21 * c1 + x22 * c2 + x23 * c3
                o3[m] += x30 * c0 + x31 * c1 + x32 * c2 + x33 * c3
        for k in range(K4, K):  # the k left over
            for i in range(4):
                x = a[n + i, k]
                for m in range(M):
                    out[n + i, m] += x * b[k, m]
    for n in range(N4, N):  # the rows left over
        for k in range(K):
            x = a[n, k]
            for m in range(M):
                out[n, m] += x * b[k, m]
