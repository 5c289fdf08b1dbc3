"""The vectorisable float32 exp/σ/tanh of generated kernels, against NumPy in float64."""
import numba
import numpy as np

from flux.fastmath import fast_exp, fast_sigmoid, fast_tanh


@numba.njit(error_model="numpy")
def elementwise(a, which):
    out = np.empty_like(a)
    for i in range(a.size):
        out[i] = fast_exp(a[i]) if which == 0 else fast_sigmoid(a[i]) if which == 1 else fast_tanh(a[i])
    return out


x = np.concatenate([np.linspace(-90, 90, 400001), np.linspace(-1, 1, 200001), np.linspace(-1e-3, 1e-3, 2001)])
x32 = x.astype(np.float32)
exact = x32.astype(np.float64)


def ulps(approximate, reference):
    keep = (reference < 3e38) & (reference > 1.2e-38)
    spacing = np.spacing(reference[keep].astype(np.float32)).astype(np.float64)
    return np.abs(approximate.astype(np.float64)[keep] - reference[keep]) / spacing


def test_exp_within_two_ulp_and_special_values():
    with np.errstate(over="ignore"):
        assert ulps(elementwise(x32, 0), np.exp(exact)).max() <= 2
    special = elementwise(np.array([np.inf, -np.inf, np.nan, 100, -100, 0], np.float32), 0)
    np.testing.assert_array_equal(special, [np.inf, 0, np.nan, np.inf, 0, 1])


def test_sigmoid_relative_error_and_extremes():
    with np.errstate(over="ignore"):
        reference = 1 / (1 + np.exp(-exact))
    approximate = elementwise(x32, 1).astype(np.float64)
    keep = reference > 1e-30
    assert (np.abs(approximate - reference)[keep] / reference[keep]).max() < 3e-7
    np.testing.assert_array_equal(elementwise(np.array([-800, 800, np.nan], np.float32), 1), [0, 1, np.nan])


def test_tanh_absolute_error_and_small_values():
    approximate = elementwise(x32, 2).astype(np.float64)
    assert np.abs(approximate - np.tanh(exact)).max() < 4e-7
    tiny = np.abs(exact) < 1e-3
    assert (np.abs(approximate - np.tanh(exact))[tiny] / np.maximum(np.abs(exact[tiny]), 1e-30)).max() < 1e-6
    np.testing.assert_array_equal(elementwise(np.array([np.inf, -np.inf, np.nan], np.float32), 2), [1, -1, np.nan])


def test_float64_keeps_full_precision():
    values = np.linspace(-5, 5, 101)
    np.testing.assert_allclose(elementwise(values, 2), np.tanh(values), rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(elementwise(values, 0), np.exp(values), rtol=1e-15)
