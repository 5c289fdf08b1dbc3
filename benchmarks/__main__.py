"""`python -m benchmarks`: time per training step (forward + loss + backward + SGD update) for flux, hand-written
NumPy, PyTorch eager and JAX jit, one table with ratios to flux, then start-up times and the issue-7 targets.

    python -m benchmarks                 # everything (a few minutes)
    python -m benchmarks --quick         # fewer, shorter rounds
    python -m benchmarks --case tiny --case rnn
    python -m benchmarks --threads 1     # every library single-threaded

Nothing heavy is imported before the environment is settled: BLAS reads its variables when it loads.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

CLEARED_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # they pin OpenBLAS to a slower kernel / blocking
REEXEC_MARK = "FLUX_BENCHMARKS_CLEARED"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "FLUX_NUM_THREADS")
# Idle worker threads of one library busy-wait for a while (libgomp: 300 000 spins; OpenBLAS: 2^28 cycles), stealing
# the cores from the next variant in the round-robin. Measured here on 2 cores: 3–10× slower steps and 100 %+ IQRs.
PASSIVE_WAITING = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}

CASES = {
    "tiny": "(a) MLP 2-16-1 tanh, MSE, batch 32",
    "mlp": "(b) MLP 784-128-10 relu, logit CE, batch 64",
    "wide": "(c) MLP 784-1024-10 relu, logit CE, batch 256",
    "rnn": "(d) Elman RNN 32→64→32 σ, T=50, batch 16, MSE on all y_t",
    "lstm": "(e) LSTM 32→64, T=50, batch 16, MSE on all h_t",
    "gru": "(e′) GRU 32→64, T=50, batch 16, MSE on all h_t",
    "transformer": "(e″) TransformerBlock d 64, 4 heads, hidden 256, T=32, batch 16, MSE (benchmarks/transformer.py)",
    "startup": "(f) start-up, fresh processes",
    "distributed": "(g) data-parallel MLP 784-1024-10, batch 1024: 1 process vs 2 Dask workers",
    "firstcall": "(h) first call: each tier cold and cached, numba in the background (benchmarks/first_call.py)",
}
# (row label, module in benchmarks/, function name pattern); a missing floor function means "no floor row"
VARIANTS = [
    ("flux step", "flux_cases", "{case}_step"),
    ("flux call", "flux_cases", "{case}_call"),
    ("numpy", "numpy_cases", "{case}"),
    ("torch eager", "torch_cases", "{case}"),
    ("jax jit", "jax_cases", "{case}"),
    ("floor: GEMMs", "numpy_cases", "{case}_floor"),
]


def main() -> None:
    cleared = clear_blas_overrides()
    args = parse_arguments()
    os.environ.setdefault("FLUX_TIER", "numba")  # steady-state rows time numba's kernels (case (h) sets its own)
    threads = args.threads or os.cpu_count() or 1
    thread_actions = limit_threads(threads)
    if not args.spin:
        for name, value in PASSIVE_WAITING.items():
            os.environ.setdefault(name, value)
        thread_actions.append(" ".join(f"{name}={os.environ[name]}" for name in PASSIVE_WAITING)
                              + " (idle threads sleep at once; --spin to keep the libraries' busy-waiting)")

    from . import harness, problems
    from .report import print_table, print_targets

    rounds, block, warmup = (15, 0.015, 0.1) if args.quick else (41, 0.04, 0.4)
    print("flux benchmarks: time per training step (forward + loss + backward + SGD update), float32")
    print(f"env       {cleared}")
    thread_actions += frameworks_threads(threads)
    for line in harness.environment_lines(threads, thread_actions):
        print(line)
    print(f"load      {harness.load_text()} at the start")
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if busy > 0.5 and threads > 1:
        print(f"WARNING   other processes are running (load {busy:.1f} on {os.cpu_count()} CPUs): multi-threaded "
              "OpenBLAS degrades badly when its threads are descheduled (measured: 10-100x slower steps); "
              "rerun on an idle machine, or compare with --threads 1")
    print(f"timing    {rounds} interleaved rounds per case, blocks of ~{block * 1e3:.0f} ms per variant, median; "
          f"warm-up ≥ {warmup} s per variant (JIT excluded)")
    print(flush=True)

    sections, first_call = [], []
    for case in args.case or list(CASES):
        if case == "firstcall":
            from .first_call import first_call_rows

            print(f"… {CASES[case]}", file=sys.stderr, flush=True)
            first_call = first_call_rows(["mlp", "lstm"] if args.quick else ["perceptron", "mlp", "lstm", "gru"])
            continue
        if case == "distributed":
            print(f"… {CASES[case]}", file=sys.stderr, flush=True)
            sections.append((case, CASES[case], data_parallel_results(threads, quick=args.quick)))
            continue
        if case == "startup":
            from .startup import startup_results

            print(f"… {CASES[case]}", file=sys.stderr, flush=True)
            sections.append((case, CASES[case], startup_results(import_runs=1 if args.quick else 3)))
            continue
        print(f"… {CASES[case]}", file=sys.stderr, flush=True)
        problem = getattr(problems, case)()
        results, steps, estimates = {}, {}, {}
        for label, module, pattern in VARIANTS:
            name = pattern.format(case=case)
            build = builder(module, name, problem)
            if build is None:
                continue
            result, step, estimate = harness.build_variant(label, build, warmup_seconds=warmup,
                                                           is_flux=module == "flux_cases",
                                                           is_floor=label.startswith("floor"))
            results[label] = result
            if step is not None:
                steps[label], estimates[label] = step, estimate
        harness.measure_interleaved(steps, estimates, results, rounds=rounds, block_seconds=block)
        sections.append((case, CASES[case], list(results.values())))
    print_table(sections)
    print_targets(sections)
    if first_call:
        from .first_call import print_rows

        print(f"\n{CASES['firstcall']}")
        print_rows(first_call)
    print(f"\nload      {harness.load_text()} at the end (other processes on the machine add noise to every row)")


def data_parallel_results(threads: int, *, quick: bool) -> list:
    """Case (g): `benchmarks.distributed` at batch 1024 (it prints its own detailed table first), as rows of time per
    step; the single process with this run's thread count is the flux row the ratios refer to."""
    from .harness import Result

    batch = 1024
    try:
        from .distributed import run as run_distributed

        measured = run_distributed([batch], 2, rounds=3 if quick else 7, seconds=0.2 if quick else 0.5)[batch]
    except ImportError as error:  # Dask is an optional extra
        return [Result("flux, 2 Dask workers", status="n/a", note=f"{error} (pip install -e \".[dask]\")")]
    rows = []
    for name, samples_per_second in measured.items():
        step = batch / samples_per_second
        rows.append(Result(f"flux, {name}", median=step, q1=step, q3=step, best=step, note="median of rounds",
                           is_flux=name == f"1 process, {threads} thread{'s' if threads > 1 else ''}",
                           comparable=False))
    return rows


def clear_blas_overrides() -> str:
    """Re-execute this process without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (they must be gone before BLAS loads)."""
    present = [name for name in CLEARED_VARIABLES if name in os.environ]
    if present:
        env = {k: v for k, v in os.environ.items() if k not in CLEARED_VARIABLES}
        env[REEXEC_MARK] = ", ".join(f"{name}={os.environ[name]}" for name in present)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *sys.argv[1:]], env)
    were = os.environ.pop(REEXEC_MARK, "")
    names = " and ".join(CLEARED_VARIABLES)
    if were:
        return f"{names} were set ({were}); unset for this process (re-executed itself without them)"
    return f"{names} are unset for this process (they were not set)"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (noisier; ~1 minute)")
    parser.add_argument("--case", action="append", choices=list(CASES), help="run only this case (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="threads for every library (default: all CPUs)")
    parser.add_argument("--spin", action="store_true",
                        help="keep OpenMP/OpenBLAS idle threads busy-waiting (their default; disturbs interleaving)")
    return parser.parse_args()


def limit_threads(threads: int) -> list[str]:
    """The same thread count for every BLAS, OpenMP and numba pool, set before any of them loads."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    actions = [f"{'/'.join(THREAD_VARIABLES)}={threads}"]
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()
        actions.append(f"XLA_FLAGS+='{flags}'")
    elif threads == os.cpu_count():
        actions.append("XLA: its default pool (one thread per CPU)")
    else:
        actions.append(f"XLA: its default pool, one thread per CPU ({os.cpu_count()}); no flag sets {threads}")
    return actions


def frameworks_threads(threads: int) -> list[str]:
    actions = []
    try:
        import torch
    except ImportError:
        return actions
    torch.set_num_threads(threads)
    actions.append(f"torch.set_num_threads({threads}) → {torch.get_num_threads()}")
    return actions


def builder(module: str, name: str, problem):
    """A zero-argument function building the variant's step (raising if it cannot), or None if the variant does
    not exist for this case (only the floor is optional)."""
    optional = name.endswith("_floor")
    try:
        loaded = importlib.import_module(f"benchmarks.{module}")
    except Exception as error:  # torch/JAX not installed (n/a), or flux failing to import (shown as an error)
        if optional:
            return None
        reason = error

        def failed():
            raise reason
        return failed
    if optional and not hasattr(loaded, name):
        return None
    return lambda: getattr(loaded, name)(problem)  # a flux function not written yet: AttributeError, shown as n/a


if __name__ == "__main__":
    main()
