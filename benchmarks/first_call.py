"""The first number: time from after `import flux` to a model's first forward + back, in fresh interpreters, for each
tier, with an empty kernel cache (cold) and again with the cache the cold run left (cached); when the numba kernels
compiled in the background are ready (FLUX_TIER=auto); how much that compile slows the user's NumPy-tier calls,
as a separate process or a thread; and the steady state of each tier.

    python -m benchmarks.first_call            # everything (several minutes on 2 cores)
    python -m benchmarks.first_call --quick    # the MLP and the LSTM only
    python -m benchmarks --case firstcall      # the same block inside the main benchmark
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
TIMEOUT_SECONDS = 900
MODELS = {
    "perceptron": "perceptron (Dense 784→10 σ)",
    "mlp": "MLP Chain 784→128 relu→10",
    "lstm": "LSTM(8, 16), N 16, T 50",
    "gru": "GRU(8, 16), N 16, T 50",
}

SCRIPT = r'''
import json, os, sys, time
start = time.perf_counter()
import flux
import numpy as np
imported = time.perf_counter()
kind, mode = sys.argv[1], sys.argv[2]
def build():
    rng = np.random.default_rng(0)
    if kind in ("lstm", "gru"):
        return (flux.LSTM if kind == "lstm" else flux.GRU)(8, 16, rng=0), \
            rng.standard_normal((16, 50, 8)).astype(np.float32)
    model = flux.Dense(784, 10, flux.σ, rng=0) if kind == "perceptron" else \
        flux.Chain(flux.Dense(784, 128, flux.relu, rng=0), flux.Dense(128, 10, rng=1))
    return model, rng.standard_normal((64, 784)).astype(np.float32)
def call(model, x):
    begin = time.perf_counter()
    y = model(x); model.back(np.ones_like(y)); model.zero_grad()
    return time.perf_counter() - begin
model, x = build()
result = {"import": imported - start}
call(model, x)
result["first"] = time.perf_counter() - imported
result["tier"] = model.kernels.tier
if mode == "wait":  # the user waits (a notebook between cells): numba at full speed
    flux.compile(model)
    result["ready"] = time.perf_counter() - imported
if mode == "ready":  # the user keeps calling while numba compiles: those calls (NumPy tier) are timed
    durations = []
    while model.kernels.tier != "numba" and time.perf_counter() - imported < 600:
        durations.append(call(model, x))
        if model.kernels.job is not None and model.kernels.job.error:
            result["error"] = model.kernels.job.error
            break
    result["ready"] = time.perf_counter() - imported
    result["calls"] = len(durations)
    result["during"] = (result["ready"] - result["first"]) / len(durations) if durations else None  # incl. waits
    os.environ["FLUX_TIER"] = "numpy"  # the same calls with nothing compiling
    alone, x2 = build()
    result["idle"] = float(np.median([call(alone, x) for _ in range(30)]))
print("FIRST " + json.dumps(result))
'''

STEP_SCRIPT = r'''
import json, sys, time
start = time.perf_counter()
import flux
import numpy as np
imported = time.perf_counter()
rng = np.random.default_rng(0)
chain = flux.Chain(flux.Dense(784, 128, flux.relu, rng=0), flux.Dense(128, 10, rng=1))
step = flux.compile_step(chain, flux.logitcrossentropy, flux.Adam())
step(rng.standard_normal((64, 784)).astype(np.float32), rng.integers(0, 10, 64))
tier = "numpy, numba compiling" if type(step.module).__name__ == "TieredStep" else "numba"
print("FIRST " + json.dumps({"import": imported - start, "first": time.perf_counter() - imported, "tier": tier}))
'''

STEADY_SCRIPT = r'''
import json, os, statistics, sys, time
import numpy as np
import flux
kind = sys.argv[1]
rng = np.random.default_rng(0)
def build():
    if kind == "lstm":
        return flux.LSTM(32, 64, rng=0), rng.standard_normal((16, 50, 32)).astype(np.float32)
    return flux.Chain(flux.Dense(784, 128, flux.relu, rng=0), flux.Dense(128, 10, rng=1)), \
        rng.standard_normal((64, 784)).astype(np.float32)
models = {}
for tier in ("numba", "numpy"):
    os.environ["FLUX_TIER"] = tier
    model, x = build()
    y = model(x); model.back(np.ones_like(y)); model.zero_grad()
    models[tier] = model
times = {tier: [] for tier in models}
for _ in range(15):
    for tier, model in models.items():
        os.environ["FLUX_TIER"] = tier
        begin = time.perf_counter(); count = 0
        while time.perf_counter() - begin < 0.1:
            y = model(x); model.back(np.ones_like(y)); model.update(lr=1e-6); count += 1
        times[tier].append((time.perf_counter() - begin) / count)
print("STEADY " + json.dumps({tier: statistics.median(t) for tier, t in times.items()}))
'''


def run(script: str, arguments: list[str], cache: str, **env_vars: str) -> dict:
    env = dict(os.environ, FLUX_CACHE_DIR=cache, **env_vars)
    try:
        done = subprocess.run([sys.executable, "-c", script, *arguments], cwd=REPOSITORY, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_SECONDS} s"}
    for line in done.stdout.splitlines():
        if line.startswith(("FIRST ", "STEADY ")):
            return json.loads(line.split(" ", 1)[1])
    return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}


def first_call_rows(models: list[str], modes: tuple = ("process", "thread")) -> list[tuple[str, str]]:
    """(label, figures) rows: each tier cold and cached; numba ready in the background; steady state."""
    rows = []
    for kind in models:
        label = MODELS[kind]
        for tier in ("numba", "numpy"):
            with tempfile.TemporaryDirectory(prefix="flux-first-call-") as cache:
                cold = run(SCRIPT, [kind, "first"], cache, FLUX_TIER=tier)
                cached = run(SCRIPT, [kind, "first"], cache, FLUX_TIER=tier)
            rows.append((f"{label}: first forward+back, {tier} tier", f"cold {seconds(cold, 'first')}, "
                         f"cached {seconds(cached, 'first')}"))
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="flux-first-call-") as cache:
                auto = run(SCRIPT, [kind, "ready"], cache, FLUX_TIER="auto", FLUX_BACKGROUND=mode)
                again = run(SCRIPT, [kind, "first"], cache, FLUX_TIER="auto")
            during = auto.get("during")
            rows.append((f"{label}: auto, numba in a background {mode}",
                         f"first result {seconds(auto, 'first')} ({auto.get('tier', '?')}), numba ready "
                         f"{seconds(auto, 'ready')}; meanwhile {auto.get('calls', 0)} NumPy-tier calls, "
                         f"{during * 1e3:.2f} ms per call, {auto['idle'] / during:.0%} of the rate alone "
                         f"({auto['idle'] * 1e3:.2f} ms)" if during
                         else auto.get("error", "")))
            if mode == modes[0]:
                rows.append((f"{label}: auto, next process", f"first {seconds(again, 'first')} "
                             f"({again.get('tier', '?')} tier)"))
    for tier in ("numba", "auto"):
        with tempfile.TemporaryDirectory(prefix="flux-first-call-") as cache:
            cold, cached = run(STEP_SCRIPT, [], cache, FLUX_TIER=tier), run(STEP_SCRIPT, [], cache, FLUX_TIER=tier)
        rows.append((f"compile_step(MLP, logitcrossentropy, Adam()): first step, {tier}",
                     f"cold {seconds(cold, 'first')} ({cold.get('tier', '?')}), cached {seconds(cached, 'first')}"))
    for kind, label in (("mlp", "MLP 784-128-10 B64"), ("lstm", "LSTM 32→64 T50 N16")):
        with tempfile.TemporaryDirectory(prefix="flux-first-call-") as cache:
            steady = run(STEADY_SCRIPT, [kind], cache)
        if "error" in steady:
            rows.append((f"steady state {label}", steady["error"]))
        else:
            rows.append((f"steady state {label}: forward+back+update", f"numba {steady['numba'] * 1e3:.2f} ms, "
                         f"NumPy {steady['numpy'] * 1e3:.2f} ms ({steady['numpy'] / steady['numba']:.2f}×)"))
    return rows


def seconds(result: dict, field: str) -> str:
    value = result.get(field)
    return f"{value:.2f} s" if value is not None else f"error: {result.get('error', '?')}"


def print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, figures in rows:
        print(f"  {label:<{width}}  {figures}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_call", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the MLP and the LSTM only, a background process only")
    parser.add_argument("--model", action="append", choices=list(MODELS), help="only this model (repeatable)")
    args = parser.parse_args()
    models = args.model or (["mlp", "lstm"] if args.quick else list(MODELS))
    print(f"first call (fresh interpreters; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start)")
    print_rows(first_call_rows(models, ("process",) if args.quick else ("process", "thread")))


if __name__ == "__main__":
    main()
