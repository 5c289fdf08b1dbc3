"""`python -m benchmarks.distributed`: data-parallel training of the 784-1024-10 MLP on Dask workers vs one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.distributed      # batches 128 … 4096
    python -m benchmarks.distributed --batch 1024 --rounds 9                            # one batch size, more rounds

Throughput in samples per second of one training step (forward + logit cross-entropy + backward + SGD update),
float32, for
* 1 process: `flux.compile_step` (the fused kernel), with BLAS on 1 thread and on every core;
* k Dask workers (a LocalCluster of k processes, 1 thread each): `flux.distributed.DataParallelStep`, the step
  `flux.train(..., client=)` uses — shards' gradients on the workers, their sum and one update on the driver,
  the parameters sent to every worker each step.
Needs `threadpoolctl` (installed with scikit-learn, in the test extra) to set this process's BLAS threads.
All variants start from the same parameters; their losses on the first batch are compared. Timing is interleaved:
in each round every variant runs a block of steps of about `--seconds`, the median over rounds is reported. The
break-even batch size is the smallest measured batch at which the workers are faster than the best single process.
Last, a sweep: 4 independent trainings one after another in this process vs `client.map` over the workers.
The load average is printed before and after: other processes on the machine change every figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

CLEARED_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # they pin OpenBLAS to a slower kernel on this machine
REEXEC_MARK = "FLUX_BENCHMARKS_CLEARED"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 128 … 4096)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (1 thread each)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per batch size")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one block of steps")
    options = parser.parse_args(argv)
    cleared = [name for name in CLEARED_VARIABLES if name in os.environ]
    if cleared and not os.environ.get(REEXEC_MARK):  # BLAS reads them when it loads: start again without them
        environment = {k: v for k, v in os.environ.items() if k not in CLEARED_VARIABLES} | {REEXEC_MARK: "1"}
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.distributed", *(argv or sys.argv[1:])],
                  environment)
    batches = options.batch or [128, 256, 512, 1024, 2048, 4096]
    run(batches, options.workers, options.rounds, options.seconds, note=os.environ.get(REEXEC_MARK))


def run(batches: list[int], n_workers: int, rounds: int, seconds: float, note: str | None = None) -> dict:
    """Measure every variant at every batch size; print the table; return {batch: {variant: samples/s}}."""
    import numpy as np
    from threadpoolctl import threadpool_info
    from distributed import Client, LocalCluster

    import flux
    from flux.distributed import DataParallelStep

    cores = os.cpu_count() or 1
    print(f"data-parallel training, MLP 784-1024-10 relu, logit cross-entropy, SGD, float32; {cores} cores; "
          f"{n_workers} Dask workers × 1 thread; median of {rounds} rounds"
          + ("; re-executed without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE" if note else "")
          + "; load average before: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((max(batches), 784)).astype(np.float32)
    T = flux.onehot(rng.integers(0, 10, max(batches)), 10).astype(np.float32)
    initial = model_784_1024_10()
    loss = flux.logitcrossentropy

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        worker_threads = {len(info) and info[0].get("num_threads")
                          for info in client.run(lambda: [i for i in threadpool_info() if i["user_api"] == "blas"])
                          .values()}
        print(f"workers' BLAS threads: {sorted(worker_threads)}")
        started = time.perf_counter()
        parallel = DataParallelStep(client, copy_of(initial), loss, flux.SGD(0.01))
        parallel(X[:64], T[:64])  # the model goes to the workers, which load its kernels from the disk cache
        print(f"first data-parallel step (model to the workers, kernels loaded): {time.perf_counter() - started:.2f} s")
        single = copy_of(initial)
        fused = flux.compile_step(single, loss, flux.SGD(0.01))
        fused(X[:64], T[:64])
        check = abs(fused(X[:64], T[:64]) - parallel(X[:64], T[:64]))
        print(f"same maths: |loss(1 process) − loss(workers)| after one step = {check:.1e}")

        # (step, BLAS threads of this process while it runs); the workers have their own single-threaded BLAS
        variants = {"1 process, 1 thread": (fused, 1), f"1 process, {cores} threads": (fused, cores),
                    f"{n_workers} workers": (parallel, cores)}
        results: dict[int, dict[str, float]] = {}
        header = f"{'batch':>6}  " + "  ".join(f"{name:>22}" for name in variants) + "   workers ÷ best 1 process"
        print(header + "\n" + "─" * len(header))
        for batch in batches:
            x, t = X[:batch], T[:batch]
            per_step = {name: [] for name in variants}
            counts = {name: max(1, round(seconds / timed(*variant, x, t, 2))) for name, variant in variants.items()}
            names = list(variants)
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    per_step[name].append(timed(*variants[name], x, t, counts[name]))
            results[batch] = {name: batch / statistics.median(times) for name, times in per_step.items()}
            best = max(v for name, v in results[batch].items() if name.startswith("1 process"))
            print(f"{batch:>6}  " + "  ".join(f"{results[batch][name]:>14,.0f} samples/s" for name in variants)
                  + f"   {results[batch][f'{n_workers} workers'] / best:>6.2f}×")
        parallel.close()
        sweep(client, n_workers, rounds)
    even = [b for b in batches if results[b][f"{n_workers} workers"] >= max(
        v for name, v in results[b].items() if name.startswith("1 process"))]
    print(f"break-even batch size: {min(even) if even else f'none up to {max(batches)}'} "
          f"(the smallest measured batch at which {n_workers} workers beat the best single process); "
          "load average after: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    return results


def sweep(client, n_workers: int, rounds: int, runs: int = 4, steps: int = 150) -> dict[str, float]:
    """Wall time of `runs` independent trainings (784-1024-10, batch 256, `steps` fused steps each): one after
    another in this process (BLAS on 1 thread, and on every core) vs client.map over the workers."""
    from threadpoolctl import threadpool_limits

    client.gather(client.map(fit_for_sweep, range(n_workers), steps=2, pure=False))  # workers load the kernels
    fit_for_sweep(0, steps=2)
    cores = os.cpu_count() or 1
    times: dict[str, list[float]] = {"1 thread": [], f"{cores} threads": [], "workers": []}
    for _ in range(max(1, rounds // 2)):
        for threads in (1, cores):
            start = time.perf_counter()
            with threadpool_limits(threads, user_api="blas"):
                expected = [fit_for_sweep(seed, steps) for seed in range(runs)]
            times["1 thread" if threads == 1 else f"{cores} threads"].append(time.perf_counter() - start)
        start = time.perf_counter()
        swept = client.gather(client.map(fit_for_sweep, range(runs), steps=steps, pure=False))
        times["workers"].append(time.perf_counter() - start)
        # the same final losses (float32; BLAS on 1 thread vs every core sums in another order)
        assert all(abs(a - b) <= 1e-4 * abs(b) for a, b in zip(swept, expected)), (swept, expected)
    median = {name: statistics.median(values) for name, values in times.items()}
    best = min(median["1 thread"], median[f"{cores} threads"])
    print(f"sweep of {runs} trainings (784-1024-10, batch 256, {steps} steps each): in turn in 1 process "
          f"{median['1 thread']:.2f} s (1 thread), {median[f'{cores} threads']:.2f} s ({cores} threads); "
          f"client.map on {n_workers} workers {median['workers']:.2f} s: {best / median['workers']:.2f}× the best "
          "(same final losses to 1e-4)")
    return median


def fit_for_sweep(seed: int, steps: int) -> float:
    """One run of a sweep: a fresh model trained for `steps` fused steps on fixed random data; its last loss."""
    import numpy as np

    import flux

    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    t = flux.onehot(rng.integers(0, 10, 256), 10).astype(np.float32)
    model = flux.Chain(flux.Dense(784, 1024, "relu", rng=np.random.default_rng(seed)),
                       flux.Dense(1024, 10, rng=np.random.default_rng(seed + 1)))
    step = flux.compile_step(model, flux.logitcrossentropy, flux.SGD(0.01))
    for _ in range(steps - 1):
        step(x, t)
    return float(step(x, t))


def model_784_1024_10():
    import numpy as np

    import flux

    return flux.Chain(flux.Dense(784, 1024, "relu", rng=np.random.default_rng(1)),
                      flux.Dense(1024, 10, rng=np.random.default_rng(2)))


def copy_of(model):
    import copy

    return copy.deepcopy(model)


def timed(step, threads: int, x, t, count: int) -> float:
    """Seconds per call of step(x, t), over `count` consecutive calls, with this process's BLAS on `threads`."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(threads, user_api="blas"):
        start = time.perf_counter()
        for _ in range(count):
            step(x, t)
        return (time.perf_counter() - start) / count


if __name__ == "__main__":
    main()
