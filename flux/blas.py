"""SciPy's OpenBLAS — the BLAS numba's `np.dot` calls — seen from Python: its functions by name, looked up once.

    openblas_function("get_num_threads")  → the ctypes function (scipy_openblas_get_num_threads or the unprefixed
                                             name, 32- or 64-bit interface), or None for another BLAS
    openblas_core()                        → the kernel OpenBLAS picked ("SkylakeX", "Haswell", …; set by
                                             OPENBLAS_CORETYPE), or "" when unknown
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os


@functools.lru_cache(maxsize=None)
def openblas_libraries() -> tuple:
    """The OpenBLAS libraries SciPy ships (already loaded by SciPy: the same handles), or ()."""
    try:
        import scipy
    except ImportError:
        return ()
    return tuple(ctypes.CDLL(path) for path in glob.glob(os.path.join(os.path.dirname(scipy.__file__) + ".libs",
                                                                     "*openblas*")))


def openblas_function(name: str):
    """SciPy's OpenBLAS function `openblas_<name>` (prefixed `scipy_`, suffixed `64_`, as the build names it)."""
    for library in openblas_libraries():
        for prefix in ("scipy_", ""):
            for suffix in ("", "64_"):
                function = getattr(library, f"{prefix}openblas_{name}{suffix}", None)
                if function is not None:
                    return function
    return None


@functools.lru_cache(maxsize=None)
def openblas_core() -> str:
    """The name of the kernel SciPy's OpenBLAS runs (its `openblas_get_corename`), or "" for another BLAS."""
    get = openblas_function("get_corename")
    if get is None:
        return ""
    get.restype = ctypes.c_char_p
    return (get() or b"").decode(errors="replace")
