"""Vectorisable float32 exp, σ and tanh for generated kernels.

numba here has no SVML, so `np.exp`/`np.tanh` in a loop are one libm call per element and LLVM cannot
vectorise the loop (they were ~10× slower than NumPy's SIMD versions on 512 values). These float32 versions are
plain arithmetic, selects and a bit cast, which LLVM turns into AVX code; float64 keeps libm (full precision for
gradient checks and for users who ask for float64).

    exp(x)  = 2ᵏ·p(r),   k = round(x / ln 2),  r = x − k·ln 2 (Cody–Waite),  p = degree-7 Taylor polynomial
    σ(x)    = 1 / (1 + exp(−x))
    tanh(x) = x·P(x²)/Q(x²) on |x| ≤ 7.905 (Eigen's rational approximation), ±1 beyond

Measured against NumPy's float64 on the 6·10⁵ float32 points of tests/test_fastmath.py (x ∈ [−90, 90]): exp
within 1.2 ulp (the test allows 2), σ within 1.4·10⁻⁷ relative error (allowed 3·10⁻⁷), tanh within 3.8·10⁻⁷
absolute error (allowed 4·10⁻⁷).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload


@intrinsic
def _bits_as_float32(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (how 2ᵏ is built without a libm call)."""
    def codegen(context, builder, signature, arguments):
        return builder.bitcast(arguments[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, inline="always", error_model="numpy")
def exp_float32(x):
    x = np.float32(x)
    clamped = min(max(x, np.float32(-87.33654)), np.float32(88.72283))
    k = np.floor(clamped * np.float32(1.442695) + np.float32(0.5))
    r = clamped - k * np.float32(0.693359375)  # ln 2 in two parts: the first is exact in float32
    r = r - k * np.float32(-2.12194440e-4)
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    # 2ᵏ = 2^{k₁}·2^{k₂} with k₁ = ⌊k/2⌋: each factor stays a normal float even at k = 128 or −126
    whole = np.int32(k)
    half = whole >> np.int32(1)
    first = _bits_as_float32(np.int32((half + np.int32(127)) << np.int32(23)))
    second = _bits_as_float32(np.int32((whole - half + np.int32(127)) << np.int32(23)))
    result = p * first * second
    result = np.float32(np.inf) if x > np.float32(88.72283) else result
    result = np.float32(0.0) if x < np.float32(-87.33654) else result
    return x if x != x else result  # NaN stays NaN


@njit(cache=True, inline="always", error_model="numpy")
def tanh_float32(x):
    x = np.float32(x)
    clamped = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = clamped * clamped
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    p = p * clamped
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    result = p / q
    result = x if abs(x) < np.float32(0.0004) else result  # tanh x = x to float32 precision
    return x if x != x else result


@njit(cache=True, error_model="numpy")
def all_finite(values):
    """True when no entry is ±inf or NaN: x − x is 0 for finite x and NaN otherwise. An integer OR-reduction,
    so LLVM vectorises it (a float sum would be a sequential chain: 4× slower on a 784×128 gradient)."""
    flat = values.reshape(-1)
    bad = 0
    for i in range(flat.size):
        bad |= np.int32((flat[i] - flat[i]) != 0)
    return bad == 0


@njit(cache=True, nogil=True, error_model="numpy")
def softmax_rows(a):
    """Each row along the last axis of a (N, r, c ≥ 1), in place: aᵢ ← e^{aᵢ − m} / Σₖ e^{aₖ − m}, m = maxₖ aₖ.
    A function of its own, not a loop printed into the kernel: inside a large kernel LLVM left the exponentials'
    loop scalar (a TransformerBlock's forward: 80 µs a softmax printed in place, 20 µs through this)."""
    for n in range(a.shape[0]):
        for j in range(a.shape[1]):
            shift = a[n, j, 0]
            for i in range(1, a.shape[2]):
                shift = max(shift, a[n, j, i])
            for i in range(a.shape[2]):
                a[n, j, i] = fast_exp(a[n, j, i] - shift)
            total = a[n, j, 0]
            for i in range(1, a.shape[2]):
                total += a[n, j, i]
            scale = a.dtype.type(1) / total  # in the array's precision, as the kernels' real(1)
            for i in range(a.shape[2]):
                a[n, j, i] *= scale


def fast_exp(x):
    """eˣ (NumPy's, outside compiled code)."""
    return np.exp(x)


def fast_tanh(x):
    """tanh x (NumPy's, outside compiled code)."""
    return np.tanh(x)


def fast_sigmoid(x):
    """σ(x) = 1 / (1 + e^{−x}) (outside compiled code)."""
    return 1.0 / (1.0 + np.exp(-x))


@njit(cache=True, inline="always", error_model="numpy")
def sigmoid_float32(x):
    return np.float32(1.0) / (np.float32(1.0) + exp_float32(-x))


@overload(fast_exp)
def _fast_exp(x):
    def exp_float32_impl(x):
        return exp_float32(x)

    def exp_libm_impl(x):
        return np.exp(x)

    return exp_float32_impl if x == types.float32 else exp_libm_impl


@overload(fast_tanh)
def _fast_tanh(x):
    def tanh_float32_impl(x):
        return tanh_float32(x)

    def tanh_libm_impl(x):
        return np.tanh(x)

    return tanh_float32_impl if x == types.float32 else tanh_libm_impl


@overload(fast_sigmoid)
def _fast_sigmoid(x):
    def sigmoid_float32_impl(x):
        return sigmoid_float32(x)

    def sigmoid_libm_impl(x):
        return 1.0 / (1.0 + np.exp(-x))

    return sigmoid_float32_impl if x == types.float32 else sigmoid_libm_impl
