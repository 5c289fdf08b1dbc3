"""SciPy's OpenBLAS — the BLAS numba's `np.dot` calls — seen from Python: its functions by name, looked up once.

    openblas_function("get_num_threads")  → the ctypes function (scipy_openblas_get_num_threads or the unprefixed
                                             name, 32- or 64-bit interface), or None for another BLAS
    openblas_core()                        → the kernel OpenBLAS picked ("SkylakeX", "Haswell", …; set by
                                             OPENBLAS_CORETYPE), or "" when unknown
    with single_threaded_blas(): …         → the block's BLAS calls on one thread (recurrent and token steps)
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
import threading


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


class single_threaded_blas:
    """Run the block with the BLAS numba's np.dot calls (SciPy's OpenBLAS) on one thread, then restore its count.

    A recurrent step makes ~100 small GEMM calls per batch in its time loops; with two OpenBLAS threads each call
    hands work to a second thread that has gone to sleep or been descheduled (measured on 2 busy cores: RNN step
    2.3 ms with 2 BLAS threads, 0.55 ms with 1; LSTM 64 ms vs 1.0 ms). A BLAS other than SciPy's OpenBLAS is left
    as it is. The count is process-wide: another thread's BLAS calls during the block run on one thread too.
    """

    _functions: tuple | None = None
    _lock = threading.Lock()
    _inside = 0  # blocks running now, in any thread: the first sets one thread, the last restores the count
    _previous = 1

    def __enter__(self):
        with single_threaded_blas._lock:
            if single_threaded_blas._inside == 0:
                get, set_ = self.functions()
                single_threaded_blas._previous = get() if get is not None else 1
                if single_threaded_blas._previous != 1:
                    set_(1)
            single_threaded_blas._inside += 1
        return self

    def __exit__(self, *exc):
        with single_threaded_blas._lock:
            single_threaded_blas._inside -= 1
            if single_threaded_blas._inside == 0 and single_threaded_blas._previous != 1:
                self.functions()[1](single_threaded_blas._previous)
        return False

    @classmethod
    def _forget_blocks_in_child(cls) -> None:
        """After os.fork the child runs none of the parent's blocks (their threads were not copied)."""
        cls._lock, cls._inside = threading.Lock(), 0

    @classmethod
    def functions(cls) -> tuple:
        """(get_num_threads, set_num_threads) of SciPy's OpenBLAS, or (None, None): looked up once."""
        if cls._functions is None:
            import ctypes

            get, set_ = openblas_function("get_num_threads"), openblas_function("set_num_threads")
            if get is not None and set_ is not None:
                set_.argtypes = [ctypes.c_int]
            cls._functions = (get, set_) if get is not None and set_ is not None else (None, None)
        return cls._functions


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=single_threaded_blas._forget_blocks_in_child)
