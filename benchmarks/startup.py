"""Start-up costs, each measured in a fresh interpreter: `import flux`, and for Dense, Chain and LSTM the time from
after `import flux` to a finished first forward + back + update — once with an empty kernel cache (first compile)
and once more reusing that cache (cached start in a second process)."""
from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .flux_cases import STARTUP_MODELS, STARTUP_SCRIPT
from .harness import Result, first_line

REPOSITORY = Path(__file__).resolve().parent.parent
TIMEOUT_SECONDS = 600


def startup_results(import_runs: int = 3) -> list[Result]:
    rows = []
    imports = [run_startup("import", None) for _ in range(import_runs)]
    rows.append(summarise("import flux", [r.get("import") for r in imports], imports[0].get("error", "")))
    for framework in ("torch", "jax"):
        rows.append(import_time(framework))
    for kind, description in STARTUP_MODELS.items():
        with tempfile.TemporaryDirectory(prefix="flux-bench-cache-") as cache:
            first = run_startup(kind, cache)
            second = run_startup(kind, cache) if "error" not in first else first
        note = first.get("error") or first.get("note", "")
        rows.append(summarise(f"{description}: first compile", [first.get("ready")], note))
        rows.append(summarise(f"{description}: cached start", [second.get("ready")], second.get("error", "")))
    return rows


def run_startup(kind: str, cache: str | None) -> dict:
    env = dict(os.environ)
    if cache is not None:
        env["FLUX_CACHE_DIR"] = cache
    try:
        done = subprocess.run([sys.executable, "-c", STARTUP_SCRIPT, kind], cwd=REPOSITORY, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_SECONDS} s"}
    for line in done.stdout.splitlines():
        if line.startswith("STARTUP "):
            return json.loads(line[len("STARTUP "):])
    lines = done.stderr.strip().splitlines() or ["no output"]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return {"error": first_line(Exception((errors or lines)[-1]))}


def import_time(module: str) -> Result:
    code = f"import time; s = time.perf_counter(); import {module}; print(time.perf_counter() - s)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    if done.returncode:
        return Result(f"import {module} (for reference)", status="n/a", note="not installed")
    return summarise(f"import {module} (for reference)", [float(done.stdout.split()[-1])], "")


def summarise(label: str, times: list, note: str) -> Result:
    times = [t for t in times if t is not None]
    if not times:
        unavailable = note.startswith(("AttributeError", "NotImplementedError", "ImportError", "ModuleNotFoundError"))
        return Result(label, status="n/a" if unavailable else "error", note=note)
    median = statistics.median(times)
    return Result(label, median=median, q1=min(times), q3=max(times), note=note)
