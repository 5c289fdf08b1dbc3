"""Where a fused TransformerBlock step's time goes beyond its products: the generated kernel timed with each kind
of loop nest removed, all variants in one process, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks.knockout [--backward] [--rounds 60]

The step of `benchmarks.transformer` (N 16, T 32, d 64, 4 heads, hidden 256, float32, one thread) is compiled as
usual; its module's text is copied, and for each kind of top-level loop nest in `forward` (or, with --backward,
in `backward`, timed through `batch_gradients`) a variant without those nests is compiled from the copy (without
numba's cache). The arrays keep what the full kernel wrote, so the values read downstream stay realistic. "saves"
is the median time of the full kernel minus the variant's: what that kind of work costs in place (not what a
better version would cost). Kinds: softmax (nests calling fast_exp), per-sample dot (loops over n of np.dot),
weight slice copy (parameter slices copied per call), row sums (reductions with `acc +=`), elementwise (the rest).
"""
from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import tempfile
import time

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "FLUX_NUM_THREADS"):
    os.environ[_name] = "1"


def nests(lines: list[str], start: int, end: int) -> list[tuple[int, int, str]]:
    """(first, past-last line, kind) of each top-level loop nest (or copied slice) between lines start and end."""
    found, i = [], start
    while i < end:
        line = lines[i]
        if line.startswith("    for ") or (line.startswith("    t") and "np.empty((((" in line):
            j = i + 1
            while j < end and lines[j].startswith("        "):
                j += 1
            body = "\n".join(lines[i:j])
            kind = ("softmax" if "fast_exp" in body or "softmax_rows" in body else "per-sample dot" if "np.dot" in body
                    else "weight slice copy" if "np.empty((((" in line else "row sums" if "acc +=" in body
                    else "elementwise")
            found.append((i, j, kind))
            i = j
        elif line.startswith("    softmax_rows("):  # the softmax's exponentials and sums, done by flux.fastmath
            found.append((i, i + 1, "softmax"))
            i += 1
        else:
            i += 1
    return found


def without(lines: list[str], removed: list[tuple[int, int, str]]) -> str:
    """The module's text with the removed nests' loops emptied (a copied slice keeps its allocation)."""
    kept = list(lines)
    for first, last, _ in removed:
        for k in range(first, last):
            if not (kept[k].startswith("    t") and "np.empty" in kept[k]):
                kept[k] = "    pass" if kept[k].startswith(("    for", "    softmax_rows(")) else ""
    return "\n".join(kept)


def load(text: str, directory: str, name: str):
    path = os.path.join(directory, f"{name}.py")
    with open(path, "w") as handle:
        handle.write(text.replace("cache=True", "cache=False"))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backward", action="store_true", help="remove nests of backward (timed via batch_gradients)")
    parser.add_argument("--rounds", type=int, default=60)
    arguments = parser.parse_args()
    import numpy as np

    import flux
    from flux.run.tokens import token_blas

    from .transformer import LR, flux_model, problem

    params, x, target = problem()
    step = flux.compile_step(flux_model(params), flux.mse, flux.SGD(LR))
    step(x, target)
    lines = inspect.getsource(step.module).split("\n")
    kernel, following = ("backward", "loss_forward") if arguments.backward else ("forward", "backward")
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {kernel}("))
    end = next(i for i, line in enumerate(lines) if line.startswith(f"def {following}(")) - 2
    found = nests(lines, start, end)
    kinds = sorted({kind for _, _, kind in found})
    P, _, G = step._prepare()
    scale = np.full((x.shape[0] * x.shape[1], 1), 1.0 / (x.shape[0] * x.shape[1]), dtype=np.float32)
    with tempfile.TemporaryDirectory() as directory:
        modules = {"full": load("\n".join(lines), directory, "knockout_full")}
        for k, kind in enumerate(kinds):
            modules[kind] = load(without(lines, [n for n in found if n[2] == kind]), directory, f"knockout_{k}")
        work = {name: m.workspace(x, *P) for name, m in modules.items()}
        if arguments.backward:
            calls = {name: (lambda m=m, w=work[name]: m.batch_gradients(x, target, scale, *P, *G, *w))
                     for name, m in modules.items()}
        else:
            calls = {name: (lambda m=m, w=work[name]: m.forward(x, *P, w[0])) for name, m in modules.items()}
        with token_blas():
            for call in calls.values():
                call()
            times = {name: [] for name in calls}
            for _ in range(arguments.rounds):
                for name, call in calls.items():
                    began = time.perf_counter()
                    for _ in range(5):
                        call()
                    times[name].append((time.perf_counter() - began) / 5)
    full = float(np.median(times["full"])) * 1e3
    timed = "batch_gradients (backward's nests removed)" if arguments.backward else "forward"
    print(f"TransformerBlock step, one thread: {timed} {full:.3f} ms (median of {arguments.rounds} rounds)")
    for kind in kinds:
        median = float(np.median(times[kind])) * 1e3
        count = sum(1 for n in found if n[2] == kind)
        print(f"  without {kind:<18} ({count:>2} nests) {median:.3f} ms   saves {full - median:.3f} ms")


if __name__ == "__main__":
    main()
