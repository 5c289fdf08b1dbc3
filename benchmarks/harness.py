"""Timing and reporting: every variant of a case measured in one process, interleaved, median of many blocks.

A *variant* is a zero-argument `step()` that runs one training step (forward, loss, backward, SGD update) and
returns the loss. Warm-up calls (JIT compilation, first allocations) are never timed. Timing then goes round-robin:
in each round every variant runs one block of k consecutive steps (k chosen so a block lasts about `block_seconds`),
the order rotating from round to round, so that a slow minute of the machine hits all variants alike.
The reported time per step is the median over rounds of block time / k.
"""
from __future__ import annotations

import datetime
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

UNAVAILABLE = (NotImplementedError, AttributeError, ImportError)  # the API or the framework is not there: "n/a"
WARMUP_CALLS = 3  # losses of these first calls are compared across variants


@dataclass
class Result:
    """One row of the table: a variant's median time per step, or why there is none."""
    label: str
    median: float | None = None  # seconds per step
    q1: float | None = None
    q3: float | None = None
    best: float | None = None  # the fastest round: least disturbed by other processes
    losses: list = field(default_factory=list)  # losses returned by the first warm-up calls
    note: str = ""
    status: str = "ok"  # "ok", "n/a" or "error"
    is_floor: bool = False  # a lower bound (matrix products only), not a full training step
    is_flux: bool = False
    comparable: bool = True  # False: the variant starts from other parameters, its losses are not compared

    @property
    def spread(self) -> float | None:
        """Interquartile range relative to the median."""
        return None if self.median is None else (self.q3 - self.q1) / self.median


def build_variant(label: str, build: Callable[[], Callable[[], object]], *, warmup_seconds: float,
                  is_flux: bool = False, is_floor: bool = False) -> tuple[Result, Callable | None, float]:
    """Build a step, run it WARMUP_CALLS times (keeping the losses), then keep calling it for warmup_seconds.

    Returns the row, the step (None if unavailable or failed) and an estimate of its time per call."""
    result = Result(label, is_flux=is_flux, is_floor=is_floor)
    try:
        step = build()
        result.note = getattr(step, "note", "")
        result.comparable = getattr(step, "comparable", True)
        for _ in range(WARMUP_CALLS):
            loss = step()
            result.losses.append(None if loss is None else float(loss))
        calls, start = 0, time.perf_counter()
        while calls < 10 or time.perf_counter() - start < warmup_seconds:
            step()
            calls += 1
        estimate = (time.perf_counter() - start) / calls
    except UNAVAILABLE as error:
        result.status, result.note = "n/a", f"{type(error).__name__}: {first_line(error)}"
        return result, None, 0.0
    except Exception as error:  # a real failure: shown in the table, the suite carries on with other variants
        result.status, result.note = "error", f"{type(error).__name__}: {first_line(error)}"
        return result, None, 0.0
    return result, step, estimate


def measure_interleaved(steps: dict[str, Callable], estimates: dict[str, float], results: dict[str, Result], *,
                        rounds: int, block_seconds: float) -> None:
    """Round-robin timing; fills median and quartiles of each result in place."""
    names = list(steps)
    if not names:
        return
    counts = {name: max(1, round(block_seconds / max(estimates[name], 1e-9))) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection in one block and not in another only adds noise
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                step, k = steps[name], counts[name]
                start = time.perf_counter()
                for _ in range(k):
                    step()
                samples[name].append((time.perf_counter() - start) / k)
    finally:
        if gc_was_enabled:
            gc.enable()
    for name in names:
        q1, median, q3 = statistics.quantiles(samples[name], n=4, method="inclusive")
        results[name].median, results[name].q1, results[name].q3 = statistics.median(samples[name]), q1, q3
        results[name].best = min(samples[name])


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else "")[:140]


# ---- the machine and the software ----------------------------------------------------------------------

def environment_lines(threads: int, thread_actions: list[str]) -> list[str]:
    """Date, CPU, versions, thread settings and numpy's BLAS, one fact per line."""
    import numpy
    import numba

    lines = [f"date      {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"machine   {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
             f"python    {sys.version.split()[0]}   numpy {numpy.__version__}   numba {numba.__version__}   "
             f"torch {module_version('torch')}   jax {module_version('jax')}",
             f"threads   {threads} for every variant: " + "; ".join(thread_actions)]
    lines += [f"blas      {line}" for line in blas_lines()]
    return lines


def load_text() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def module_version(name: str) -> str:
    module = sys.modules.get(name)
    if module is None:
        try:
            module = __import__(name)
        except Exception:
            return "n/a"
    return getattr(module, "__version__", "?")


def blas_lines() -> list[str]:
    """Which BLAS libraries are loaded (numpy's, SciPy's — numba's np.dot calls SciPy's), kernel and threads."""
    try:
        import threadpoolctl
    except ImportError:
        return ["(install threadpoolctl to see which BLAS kernel numpy uses)"]
    try:
        import scipy.linalg  # noqa: F401  loads SciPy's BLAS, the one numba's np.dot (so flux's kernels) calls
    except ImportError:
        pass
    lines = []
    for info in threadpoolctl.threadpool_info():
        owner = ("numpy" if "numpy" in info["filepath"] else "scipy (numba's np.dot)" if "scipy" in info["filepath"]
                 else "torch" if "torch" in info["filepath"] else os.path.basename(info["filepath"]))
        kernel = f", kernel {info['architecture']}" if info.get("architecture") else ""
        lines.append(f"{owner}: {info['internal_api']} {info.get('version') or ''}{kernel}, "
                     f"{info['num_threads']} threads")
    return lines


# ---- the table ---------------------------------------------------------------------------------------------

def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}" if seconds / scale < 1000 else f"{seconds / scale:.0f} {unit}"
    return f"{seconds * 1e9:.0f} ns"
