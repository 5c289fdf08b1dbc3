"""The GEMM floor of the TransformerBlock training step (benchmarks/transformer.py): its matrix products alone.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.roofline [--threads 1 2]

Every product of one training step (forward and backward, N 16, T 32, d 64, 4 heads, hidden 256, float32) runs
through numba's np.dot (SciPy's OpenBLAS, as flux's kernels call it) into preallocated outputs, in one compiled
loop: no allocation, no elementwise work. Two sets of the same ≈ 164 MFLOP:

    per head    each head's projection its own narrow GEMM (N·T×d · d×d/h) and each head's Σₙ ∂L/∂W rows one
                GEMM (d/h×N·T · N·T×d): 12 + 12 + 12 of them
    fused       one GEMM per shared parameter over every token (N·T×d · d×d): 3 + 3 + 3

and the per-sample attention products (T×d/h · d/h×T, T×T · T×d/h) 64 at a time in both. The GEMM rate of one
large product (512³) is the machine's sgemm ceiling. Interleaved rounds, medians.
"""
from __future__ import annotations

import argparse
import statistics
import time

N, T, D, HEADS, HIDDEN = 16, 32, 64, 4, 256
ROWS, HEAD = N * T, D // HEADS

# (M, K, N, count): M×K · K×N products of one training step
SHARED = [(ROWS, D, D, 1), (ROWS, D, HIDDEN, 1), (ROWS, HIDDEN, D, 1),      # forward: Wo, up, down
          (ROWS, D, HIDDEN, 1), (ROWS, HIDDEN, D, 1), (ROWS, D, D, 1),      # backward through down, up, Wo
          (D, ROWS, D, 1), (HIDDEN, ROWS, D, 1), (D, ROWS, HIDDEN, 1),      # Σₙ ∂L/∂Wo, ∂L/∂W_up, ∂L/∂W_down
          (T, HEAD, T, N * HEADS), (T, T, HEAD, N * HEADS),                 # forward: S = KᵀQ, V·A per sample
          (T, HEAD, T, N * HEADS), (T, T, HEAD, 3 * N * HEADS)]             # backward: Δ_A, ∂K, ∂V, ∂Q per sample
PER_HEAD = [(ROWS, D, HEAD, 3 * HEADS), (ROWS, HEAD, D, 3 * HEADS), (HEAD, ROWS, D, 3 * HEADS)]
FUSED = [(ROWS, D, D, 3), (ROWS, D, D, 3), (D, ROWS, D, 3)]
CEILING = [(512, 512, 512, 1)]


def flops(shapes: list) -> int:
    return sum(2 * m * k * n * count for m, k, n, count in shapes)


def operands(shapes: list):
    """Typed lists of A, B, C for every product (float32, C-contiguous, random)."""
    import numpy as np
    from numba.typed import List

    rng = np.random.default_rng(0)
    a, b, c = List(), List(), List()
    for m, k, n, count in shapes:
        for _ in range(count):
            a.append(rng.standard_normal((m, k)).astype(np.float32))
            b.append(rng.standard_normal((k, n)).astype(np.float32))
            c.append(np.empty((m, n), dtype=np.float32))
    return a, b, c


def compiled_products():
    """products(a, b, c, repeats): c[k] ← a[k]·b[k] for every k, `repeats` times, compiled."""
    import numpy as np
    from numba import njit

    @njit(nogil=True)
    def products(a, b, c, repeats):
        for _ in range(repeats):
            for k in range(len(a)):
                np.dot(a[k], b[k], c[k])

    return products


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=21)
    arguments = parser.parse_args()
    from flux.blas import openblas_core, single_threaded_blas

    _, set_threads = single_threaded_blas.functions()
    products = compiled_products()
    sets = {"step GEMMs, per head": SHARED + PER_HEAD, "step GEMMs, fused": SHARED + FUSED,
            "  of which per-sample attention": SHARED[-4:], "  of which projections, per head": PER_HEAD,
            "  of which projections, fused": FUSED, "sgemm 512³ (ceiling)": CEILING}
    prepared = {name: operands(shapes) for name, shapes in sets.items()}
    print(f"OpenBLAS core {openblas_core() or '?'}; median of {arguments.rounds} interleaved rounds")
    print(f"{'set':<36}{'MFLOP':>8}" + "".join(f"{f'{t} thr ms':>12}{'GFLOP/s':>9}" for t in arguments.threads))
    times = {(name, t): [] for name in sets for t in arguments.threads}
    for name in sets:
        products(*prepared[name], 1)  # compile and warm
    for _ in range(arguments.rounds):
        for threads in arguments.threads:
            set_threads(threads)
            for name in sets:
                repeats = 20 if name.startswith("sgemm") else 5
                start = time.perf_counter()
                products(*prepared[name], repeats)
                times[name, threads].append((time.perf_counter() - start) / repeats)
    for name, shapes in sets.items():
        row = f"{name:<36}{flops(shapes) / 1e6:>8.1f}"
        for t in arguments.threads:
            median = statistics.median(times[name, t])
            row += f"{median * 1e3:>12.3f}{flops(shapes) / median / 1e9:>9.1f}"
        print(row)


if __name__ == "__main__":
    main()
