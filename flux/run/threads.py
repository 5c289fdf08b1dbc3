"""The threads a training step spreads its batch over: the batch cut into parts, one per thread, each part's
gradients computed by the step's own compiled kernel (numba releases the GIL), summed, then ONE update.

    flux.set_num_threads(2)        at most two threads (default: $FLUX_NUM_THREADS, else the CPUs this process
    flux.get_num_threads() → 2     may run on — as torch.get_num_threads)
    batch_parts(16, work) → [(0, 8), (8, 16)]   the rows each thread takes ([(0, 16)]: too little work to split)
    run_parts([f, g]) → [f(), g()]              the first on this thread, the others on the pool's

A part's gradients are Σ over its samples of the same per-sample terms, so the sum over parts is the whole
batch's gradient — equal to the one-thread step's up to the order of the floating-point additions.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

# below this many multiply-adds a step (N·T·Σ|θ|, about its forward products) a second thread costs more to wake
# than it saves: a TransformerBlock step (N 16, T 32, d 64) is 2.5·10⁷. A recurrent step's time loop is a chain of
# small products, so it needs more: split in two on 2 quiet cores, an Elman RNN 32→64→32 (N 16, T 50; 6.6·10⁶)
# ran 0.28 → 0.245 ms, a GRU 32→64 0.58 → 0.42 ms, an LSTM 32→64 (2.0·10⁷) 0.77 → 0.57 ms
PARALLEL_WORK = 2 ** 21
RECURRENT_PARALLEL_WORK = 2 ** 22

_threads: int | None = None
_pool: tuple = (0, None)  # (its number of workers, the ThreadPoolExecutor)
_lock = threading.Lock()


def get_num_threads() -> int:
    """The threads a training step may use: `set_num_threads`, else $FLUX_NUM_THREADS, else the CPUs this process
    may run on."""
    if _threads is not None:
        return _threads
    configured = os.environ.get("FLUX_NUM_THREADS", "").strip()
    if configured:
        value = int(configured) if configured.isdigit() else 0
        if value < 1:
            raise ValueError(f"flux: FLUX_NUM_THREADS must be a whole number of threads ≥ 1, got {configured!r}")
        return value
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(threads: int) -> None:
    """Let training steps use at most `threads` threads (1: every step on the caller's thread)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"flux.set_num_threads: expected a whole number ≥ 1, got {threads!r}")
    global _threads
    _threads = threads


def batch_parts(batch: int, work: int, *, recurrent: bool = False) -> list[tuple[int, int]]:
    """[(start, stop), …]: the batch's samples cut into nearly equal parts, one per thread, each at least one
    sample; one part when there is one thread or less work than `PARALLEL_WORK` (`RECURRENT_PARALLEL_WORK`)."""
    threads = get_num_threads()  # read at every step: a bad FLUX_NUM_THREADS is refused by the first, however small
    parts = min(threads, batch) if work >= (RECURRENT_PARALLEL_WORK if recurrent else PARALLEL_WORK) else 1
    bounds = [batch * k // parts for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def run_parts(calls: list[Callable]) -> list:
    """Every call's result, in order: the first on this thread, the others on the pool's threads at the same
    time. An exception is raised after every call has finished (none is left running)."""
    if len(calls) == 1:
        return [calls[0]()]
    futures = submitted(calls[1:])
    try:
        first = calls[0]()
    finally:
        results = [future.exception() or future.result() for future in futures]  # waits for every part
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [first] + results


def submitted(calls: list[Callable]) -> list:
    """Each call's future on the shared pool, made again (larger) when it has fewer threads than calls. Submitted
    under the lock that replaces the pool: a pool another thread's step is shutting down never takes a call (was
    RuntimeError 'cannot schedule new futures after shutdown' when two steps' part counts grew at once)."""
    global _pool
    with _lock:
        if _pool[0] < len(calls):
            if _pool[1] is not None:
                _pool[1].shutdown(wait=False)  # the parts it already holds still run
            _pool = (len(calls), ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="flux-batch"))
        return [_pool[1].submit(call) for call in calls]


def _forget_pool_in_child() -> None:
    """After os.fork the child has none of the pool's threads, yet the pool would count them as running and queue
    work for them forever (a step that never returns): the child makes its own when it needs one."""
    global _pool, _lock
    _pool, _lock = (0, None), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)
