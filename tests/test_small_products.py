"""flux.small_products: the per-step product agrees with np.dot on both sides of its size limit."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flux

from flux.small_products import _limit, blocked_product_into, step_product

rng = np.random.default_rng(3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 4, 16), (5, 7, 3), (16, 64, 64), (9, 13, 33)])
def test_the_blocked_loop_is_a_product_with_any_leftover_rows_and_ks(shape, dtype):
    n, k, m = shape
    a, b = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((k, m)).astype(dtype)
    out = np.ones((n, m), dtype=dtype)
    blocked_product_into(out, a, b)  # out += a·b
    tolerance = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(out, 1 + a.astype(np.float64) @ b, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("limit", [0, 10**6])  # the loop for every size; np.dot up to 10⁶ multiply-adds
@pytest.mark.parametrize("k", [64, 260])  # 16·64·64 under 10⁶, 16·260·260 over
def test_step_product_matches_numpy_on_both_sides_of_the_blas_limit(k, limit, monkeypatch):
    monkeypatch.setattr(_limit, "value", limit)  # read by the compiled code at run time
    a, b = rng.standard_normal((16, k)), rng.standard_normal((k, k))
    np.testing.assert_allclose(step_product(a, b), a @ b, rtol=1e-12, atol=1e-12)
    transposed = np.ascontiguousarray(b.T).T  # a strided view reads the same
    np.testing.assert_allclose(step_product(a, transposed), a @ transposed, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("limit", [0, 10**6])  # one GEMM for every size; row blocks over 10⁶ multiply-adds
@pytest.mark.parametrize("rows, m, n", [(800, 64, 64), (801, 64, 32), (300, 8, 8), (800, 256, 256)])
def test_a_sum_over_a_long_batch_is_a_product_in_row_blocks_or_whole(rows, m, n, limit, monkeypatch):
    """δᵀX over T·N rows (the Σₙ of a parameter gradient): blocks under the small-matrix limit, summed, or one
    np.dot; the same product either way, by `dot` and `dot_into`."""
    from flux.products import dot, dot_into, long_product_block

    monkeypatch.setattr(_limit, "value", limit)
    δ, x = rng.standard_normal((rows, m)).astype(np.float32), rng.standard_normal((rows, n)).astype(np.float32)
    expected = δ.T.astype(np.float64) @ x
    blocked = long_product_block(δ.T, x)
    assert (blocked > 0) == (limit > 0 and rows * m * n > limit and limit // (m * n) >= 64)
    out = np.empty((m, n), dtype=np.float32)
    dot_into(δ.T, x, out)
    for product in (dot(δ.T, x), out):
        np.testing.assert_allclose(product, expected, rtol=1e-4, atol=1e-3)


def test_products_of_strided_arrays_compile_without_a_performance_warning(tmp_path):
    """A user's strided input reaches `dot` with numba's 'A' layout, and numba warned on the user's first call
    (NumbaPerformanceWarning: np.dot on non-contiguous arrays); now such an operand is copied contiguous first.
    Run in a fresh process with its own numba cache, so the compile happens there."""
    script = ("import warnings\n"
              "import numpy as np\n"
              "from numba.core.errors import NumbaPerformanceWarning\n"
              "warnings.simplefilter('error', NumbaPerformanceWarning)\n"
              "from flux.products import dot\n"
              "a, b = np.arange(48.0).reshape(6, 8)[::2], np.arange(64.0).reshape(16, 4)[::2]\n"
              "assert np.allclose(dot(a, b), a @ b)\n"
              "assert np.allclose(dot(a.T.copy().T, b), a @ b)\n")
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script],
                            capture_output=True, text=True, env=environment, cwd=Path(flux.__file__).parent.parent)
    assert result.returncode == 0, result.stderr[-2000:]
