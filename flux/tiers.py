"""Two tiers, one model: NumPy at once, numba when it is ready — compiled out of the user's way.

A model's first calls run its NumPy-tier module (flux.generate.numpy_tier: nothing to compile) while its numba
module is compiled in the background; the model switches to numba between two calls, never during one (a
forward and the `back` of its tape always use one tier). Both modules have the same functions, arguments and
returns, and agree to float tolerance (tests/test_tiers.py), so nothing a user sees changes except speed.

    FLUX_TIER=auto   (default) NumPy first, numba in the background, then numba
    FLUX_TIER=numba  numba only, compiled on the first call in the caller's thread (benchmarks, the test suite)
    FLUX_TIER=numpy  NumPy only, nothing compiled (debugging: the generated code is plain NumPy)
    FLUX_BACKGROUND=thread (default) or process: where the background compile runs
    flux.compile(model)  wait until the model runs on numba (compiling it now if needed)

The background compile runs in a thread (FLUX_BACKGROUND=thread, the default): it calls the numba module's
forward and backward once on small arrays of the right types (so numba compiles exactly the signatures the model
will call, and caches them on disk) and marks the module ready (`cache.mark_ready`). FLUX_BACKGROUND=process does
the compiling in a separate process at low priority instead (it imports the module from the disk cache, compiles,
marks it and exits; this process then loads the machine code). Measured on 2 cores shared with other work
(benchmarks/first_call.py; see NICENESS), neither blocks a user who calls the model non-stop clearly less — the
process wins most pairs, but a BLAS-heavy MLP fell to 1–4 % of its rate beside it (OpenBLAS's threads
descheduled) — while the thread delivers numba 3–10× sooner (LSTM: 22 s instead of 151 s); a user who waits gets
numba as soon from either.
A later process finds the mark: it runs the NumPy module from the disk cache while a thread loads numba's machine
code (0.25 s to a first result instead of 0.8 s: importing numba and its cache is the slower start), or numba at
once when there is no NumPy module on disk (it would need a derivation).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .run.state import requested_tier

# FLUX_BACKGROUND=process runs at low priority. The user's rate while calling a model non-stop (perceptron, MLP,
# LSTM, GRU; three runs, load 2–7 on 2 cores) beside a niced process: 20–22 %, 1–73 %, 47–124 %, 46–89 %; beside a
# thread: 12–19 %, 15–71 %, 16–57 %, 28–66 %. numba ready: process 89–113 s, 23–125 s, 76–291 s, 35–253 s; thread
# 9–14 s, 3–13 s, 22–60 s, 13–28 s. Idle, both ≈ 11.5 s for the LSTM.
NICENESS = 10
BACKGROUND = ("process", "thread")
_jobs: dict = {}  # key → Job
_lock = threading.Lock()


class Job:
    """The background compile of one numba module: `program` is set (and `done`) when it is ready to run."""

    def __init__(self, description: str):
        self.description = description
        self.done = threading.Event()
        self.program: Any = None
        self.error: str | None = None

    def finish(self, program: Any = None, error: str | None = None) -> None:
        self.program, self.error = program, error
        self.done.set()


def start_background(key: Any, description: str, path: Path, module_key: str, load: Callable[[], Any],
                     loaded: Callable[[Any], None], example: dict, load_only: bool = False) -> Job:
    """Compile the numba module at `path` in the background (once per key and process); `load()` then imports it
    here, and the warm-up calls load its machine code from the disk cache; `loaded(program)` runs before the job
    is done. `load_only`: the machine code is in the disk cache already: loaded by a thread, no process."""
    mode = "thread" if load_only else os.environ.get("FLUX_BACKGROUND", "thread").strip().lower()
    if mode not in BACKGROUND:
        raise ValueError(f"flux: FLUX_BACKGROUND must be process or thread; got {mode!r}")
    with _lock:
        job = _jobs.get(key)
        if job is not None:
            return job
        job = _jobs[key] = Job(description)

    def run() -> None:
        try:
            if mode == "process":
                compile_in_process(path, module_key, example)
            program = load()
            warm_up(getattr(program, "module", program), example)  # from the disk cache (compiled if it missed)
            from .cache import mark_ready

            mark_ready(path)
            loaded(program)
            job.finish(program)
        except BaseException as error:  # reported by flux.compile; the model stays on the NumPy tier
            job.finish(error=f"{type(error).__name__}: {error}")

    threading.Thread(target=run, name=f"flux-compile-{description}", daemon=True).start()
    return job


def compile_in_process(path: Path, module_key: str, example: dict) -> None:
    """Run `_main` in a new Python process (module, key, arrays): it compiles the kernels into the disk cache."""
    with tempfile.TemporaryDirectory(prefix="flux-example-") as folder:
        arrays = Path(folder) / "example.npz"
        np.savez(arrays, **{f"{kind}{i}": a for kind, values in example.items() for i, a in enumerate(values)})
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        command = [sys.executable, "-c", "import sys; from flux.tiers import _main; _main(sys.argv[1:])"]
        finished = subprocess.run(command + [str(path), module_key, str(arrays)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"the background compile failed: {finished.stderr.strip().splitlines()[-1:]}")


def warm_up(module, example: dict) -> None:
    """Call the module's functions once on copies (nothing of the user's is written): numba compiles them for
    these argument types. A model's: forward and backward (`example_arrays`); a training step's: `train_step`
    on copies of its first call's arguments."""
    if "arguments" in example:
        module.train_step(*(a.copy() if isinstance(a, np.ndarray) else a for a in example["arguments"]))
        return
    inputs, starts, params = (example.get(kind, []) for kind in ("inputs", "starts", "params"))  # [] not saved
    metadata = module.METADATA
    params = [p.copy() for p in params]
    grads = [np.zeros_like(p) for p in params]
    n_out = metadata["outputs"]
    if metadata.get("states"):
        results = module.forward(*inputs, *starts, *params)
        finals = [np.zeros_like(s[-1]) for s in results[n_out:n_out + len(metadata["states"])]]
        deltas = [np.ones_like(y) for y in results[:n_out]]
        module.backward(*deltas, *finals, *inputs, *params, *results, *grads)
    else:
        results = module.forward(*inputs, *params)
        module.backward(*[np.ones_like(y) for y in results[:n_out]], *inputs, *params, *results, *grads)


def example_arrays(module, params: list, dtype) -> dict:
    """Small arrays of the types a model's kernels are called with: 2 samples (and 2 time steps) of 0.5."""
    metadata = module.METADATA
    sizes = list(module.input_sizes(*params))
    known = {d: s for d, s in zip(metadata["input_dims"], sizes) if s is not None}
    sizes = [s if s is not None else known.get(d, 2) for s, d in zip(sizes, metadata["input_dims"])]
    if not metadata.get("states"):
        return {"inputs": [np.full((2, s), 0.5, dtype=dtype) for s in sizes], "starts": [], "params": params}
    tied = dict(zip(metadata["input_dims"], sizes))
    states = [s if s is not None else tied.get(d, 2)
              for s, d in zip(module.state_sizes(*params), metadata["state_dims"])]
    return {"inputs": [np.full((2, 2, s), 0.5, dtype=dtype) for s in sizes],
            "starts": [np.zeros((2, s), dtype=dtype) for s in states], "params": params}


class TieredStep:
    """A fused training step's module with FLUX_TIER=auto: its `train_step` runs the NumPy tier's until numba's,
    compiled in the background for the types of the first call's arguments, is ready (then numba's, from the next
    call on). `start(arguments)` starts that compile and returns its Job."""

    def __init__(self, numpy_module, start: Callable[[list], Job]):
        self.numpy_module, self.start, self.job = numpy_module, start, None
        self.check_params, self.input_sizes = numpy_module.check_params, numpy_module.input_sizes
        self.train_step = TieredKernel(self)


class TieredKernel:
    """`train_step` of a TieredStep: the tier is chosen when a call starts, never during one."""

    def __init__(self, step: TieredStep):
        self.step = step

    def __call__(self, *arguments):
        step = self.step
        if step.job is None:  # copies: the warm-up must not update the user's parameters
            step.job = step.start([a.copy() if isinstance(a, np.ndarray) else a for a in arguments])
        job = step.job
        if job.program is not None and requested_tier() == "auto":
            return job.program.train_step(*arguments)
        return step.numpy_module.train_step(*arguments)

    @property
    def py_func(self):
        """The Python source's function (TrainStep.source): numba's once it runs, else the NumPy tier's."""
        job = self.step.job
        if job is not None and job.program is not None:
            return job.program.train_step.py_func
        return self.step.numpy_module.train_step


def compile(model, wait: bool = True, timeout: float | None = None) -> str:  # noqa: A001 (flux.compile)
    """Make `model` run on its numba kernels: start (or wait for) the background compile and switch the model.

    Returns the tier the model runs on now ("numba"; "numpy" when FLUX_TIER=numpy, or with wait=False while the
    compile is still running). Raises RuntimeError if the background compile failed (the model keeps running, on
    the NumPy tier)."""
    from .run.feedforward import running_program

    program = running_program(model)
    if program.tier == "numba":
        if wait and not program.compiled:  # FLUX_TIER=numba: compile now, in this thread
            params = [model.params[n].copy() for n in program.metadata["params"]]
            warm_up(program.module, example_arrays(program.module, params, np.dtype(program.metadata["dtype"])))
            program.compiled = True
        return "numba"
    job = program.job
    if job is None:
        return program.tier
    if wait and not job.done.wait(timeout):
        return program.tier
    if job.error:
        raise RuntimeError(f"flux: compiling {job.description} with numba failed ({job.error}); "
                           f"{type(model).__name__} keeps running on the NumPy tier")
    return running_program(model).tier


def _main(arguments: list[str]) -> None:
    """The background compile's process: import the module (trusted and sealed only), call it once, mark it."""
    path, module_key, arrays = arguments
    if hasattr(os, "nice"):
        os.nice(NICENESS)  # the user's process comes first on a busy machine
    from .cache import import_trusted, mark_ready

    module = import_trusted(Path(path), module_key)
    with np.load(arrays) as data:
        kinds = {n.rstrip("0123456789") for n in data.files}
        example = {kind: [data[n] if data[n].ndim else data[n][()]  # a saved number is a number again
                          for n in sorted((n for n in data.files if n.rstrip("0123456789") == kind),
                                          key=lambda n: int(n[len(kind):]))] for kind in kinds}
    warm_up(module, example)
    mark_ready(Path(path))

