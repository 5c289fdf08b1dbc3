"""Whole-array helpers for the NumPy tier's generated modules (the siblings of flux/fastmath.py's numba helpers).

    sigmoid(z) = 1 / (1 + e^{−z})        as numba's fast_sigmoid; e^{800} = inf gives 0 (under `quiet`)
    clampedlog_derivative(z) = [z > e^{−100}] / max(z, tiny)   (flux.maths.elementwise's clampedlog′)
    copy_into(out, value), add_into(out, value, c): out ← value, out ← out + c·value (the recurrent drivers are
              printed once for both tiers; flux/products.py has the numba versions)
    all_finite(a): no inf or NaN in a (the training step checks its gradients before updating)
    quiet(f): f run under np.errstate(all="ignore"): 1/0 = inf and 0/0 = NaN without a warning, as numba's
              error model gives them

Only NumPy is imported here: a NumPy-tier module must load without numba.
"""
from __future__ import annotations

import functools

import numpy as np


def sigmoid(z):
    z = np.asarray(z)
    one = z.dtype.type(1)
    return one / (one + np.exp(-z))


def clampedlog_derivative(z):
    z = np.asarray(z)
    real = z.dtype.type
    return np.where(z <= real(3.720075976020836e-44), real(0), real(1) / np.maximum(z, real(np.finfo(real).tiny)))


def copy_into(out, value) -> None:
    out[...] = value.reshape(out.shape)


def add_into(out, value, scale) -> None:
    out += scale * value.reshape(out.shape)


def all_finite(a) -> bool:
    return bool(np.isfinite(a).all())


def quiet(function):
    """`function` run under np.errstate(all="ignore") (the module's entry points: forward, backward, …)."""
    @functools.wraps(function)
    def run(*args):
        with np.errstate(all="ignore"):
            return function(*args)

    return run
