"""`python -m benchmarks.distributed`: data-parallel training of the 784-1024-10 MLP on Dask workers vs one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.distributed      # batches 128 … 4096
    python -m benchmarks.distributed --batch 1024 --rounds 9                            # one batch size, more rounds

Throughput in samples per second of one training step (forward + logit cross-entropy + backward + SGD update),
float32, for
* 1 process: `flux.compile_step` (the fused kernel), with BLAS on 1 thread and on every core;
* k Dask workers (a LocalCluster of k processes, 1 thread each): `flux.distributed.DataParallelStep`, the step
  `flux.train(..., client=)` uses — shards' gradients on the workers, their sum and one update on the driver,
  the parameters sent to every worker each step.
All variants start from the same parameters; their losses on the first batch are compared. Timing is interleaved:
in each round every variant runs a block of steps of about `--seconds`, the median over rounds is reported. The
break-even batch size is the smallest measured batch at which the workers are faster than the best single process.
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
    from threadpoolctl import threadpool_info, threadpool_limits
    from distributed import Client, LocalCluster

    import flux
    from flux.distributed import DataParallelStep

    cores = os.cpu_count() or 1
    print(f"data-parallel training, MLP 784-1024-10 relu, logit cross-entropy, SGD, float32; {cores} cores; "
          f"{n_workers} Dask workers × 1 thread; median of {rounds} rounds"
          + ("; re-executed without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE" if note else ""))
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

        def in_one_process(threads: int):
            def step(x, t):
                with threadpool_limits(threads, user_api="blas"):
                    return fused(x, t)
            return step

        variants = {"1 process, 1 thread": in_one_process(1), f"1 process, {cores} threads": in_one_process(cores),
                    f"{n_workers} workers": parallel}
        results: dict[int, dict[str, float]] = {}
        header = f"{'batch':>6}  " + "  ".join(f"{name:>22}" for name in variants) + "   workers ÷ best 1 process"
        print(header + "\n" + "─" * len(header))
        for batch in batches:
            x, t = X[:batch], T[:batch]
            per_step = {name: [] for name in variants}
            counts = {name: max(1, round(seconds / timed(step, x, t, 2))) for name, step in variants.items()}
            names = list(variants)
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    per_step[name].append(timed(variants[name], x, t, counts[name]))
            results[batch] = {name: batch / statistics.median(times) for name, times in per_step.items()}
            best = max(v for name, v in results[batch].items() if name.startswith("1 process"))
            print(f"{batch:>6}  " + "  ".join(f"{results[batch][name]:>14,.0f} samples/s" for name in variants)
                  + f"   {results[batch][f'{n_workers} workers'] / best:>6.2f}×")
        parallel.close()
    even = [b for b in batches if results[b][f"{n_workers} workers"] >= max(
        v for name, v in results[b].items() if name.startswith("1 process"))]
    print(f"break-even batch size: {min(even) if even else f'none up to {max(batches)}'} "
          f"(the smallest measured batch at which {n_workers} workers beat the best single process)")
    return results


def model_784_1024_10():
    import numpy as np

    import flux

    return flux.Chain(flux.Dense(784, 1024, "relu", rng=np.random.default_rng(1)),
                      flux.Dense(1024, 10, rng=np.random.default_rng(2)))


def copy_of(model):
    import copy

    return copy.deepcopy(model)


def timed(step, x, t, count: int) -> float:
    """Seconds per call of step(x, t), over `count` consecutive calls."""
    start = time.perf_counter()
    for _ in range(count):
        step(x, t)
    return (time.perf_counter() - start) / count


if __name__ == "__main__":
    main()
