"""The compile cache cannot hurt you: damaged files are regenerated, an unusable directory is replaced, processes
compiling at once all succeed, and a second process reuses what the first compiled."""
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import forget_compiled_programs
from models import perceptron

TESTS = Path(__file__).resolve().parent
x = np.random.default_rng(0).standard_normal((4, 5))


def reference():
    """The perceptron's output and gradients, computed with NumPy."""
    model = perceptron()
    z = x @ model.W.T + model.b
    y = 1 / (1 + np.exp(-z))
    Δ = np.ones_like(y)
    local = Δ * y * (1 - y)
    return y, local @ model.W, local.T @ x, local.sum(axis=0)


def run_perceptron():
    model = perceptron()
    y = model(x)
    dx = model.back(np.ones_like(y))
    return y, dx, model.grads["W"], model.grads["b"]


def assert_correct(results):
    for got, want in zip(results, reference()):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def generated_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("perceptron_float64_*.py"))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "syntax error", "another model's key", "empty"])
def test_a_damaged_cache_file_is_regenerated_with_a_warning(private_cache, monkeypatch, damage):
    assert_correct(run_perceptron())
    (path,) = generated_files(private_cache)
    good = path.read_text(encoding="utf-8")
    damaged = {
        "truncated": good[: len(good) // 2],
        "garbage": "\x00\x01 not python at all \x7f" * 20,
        "syntax error": good.replace("def forward(", "def forward((", 1),
        "another model's key": good.replace("# flux-module-key: ", "# flux-module-key: 0", 1),
        "empty": "",
    }[damage]
    path.write_text(damaged, encoding="utf-8")
    forget_compiled_programs(monkeypatch)
    with pytest.warns(RuntimeWarning, match="could not be loaded .* regenerating it"):
        results = run_perceptron()
    assert_correct(results)
    assert path.read_text(encoding="utf-8") == good
    assert not list(private_cache.glob(".*.tmp"))


def test_a_damaged_numba_cache_is_recompiled(private_cache, monkeypatch):
    assert_correct(run_perceptron())
    compiled = [p for p in (private_cache / "__pycache__").iterdir() if p.suffix in (".nbi", ".nbc")]
    assert compiled, "numba wrote no cache next to the generated module"
    for p in compiled:
        p.write_bytes(p.read_bytes()[: max(1, p.stat().st_size // 3)])
    forget_compiled_programs(monkeypatch)
    with pytest.warns(RuntimeWarning, match="machine code .* could not be read .* recompiling"):
        assert_correct(run_perceptron())
    forget_compiled_programs(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numba's cache was written again, whole
        assert_correct(run_perceptron())


def test_a_missing_cache_directory_is_created(private_cache):
    assert not private_cache.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: creating it is normal
        assert_correct(run_perceptron())
    assert generated_files(private_cache)


def test_a_cache_directory_that_cannot_be_written_falls_back_with_a_warning(tmp_path, monkeypatch, private_cache):
    blocker = tmp_path / "a file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FLUX_CACHE_DIR", str(blocker / "cache"))  # cannot be created, even by root
    with pytest.warns(RuntimeWarning, match="is not writable .* using"):
        assert_correct(run_perceptron())
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, not root")
def test_a_read_only_cache_directory_falls_back_with_a_warning(private_cache):
    private_cache.mkdir()
    private_cache.chmod(0o500)
    try:
        with pytest.warns(RuntimeWarning, match="is not writable"):
            assert_correct(run_perceptron())
        assert not list(private_cache.iterdir())
    finally:
        private_cache.chmod(0o700)


# ---- several processes ------------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, sys, time
    start = time.perf_counter()
    sys.path.insert(0, {tests!r})
    import numpy as np
    from models import perceptron
    model = perceptron()
    x = np.random.default_rng(0).standard_normal((4, 5))
    y = model(x)
    dx = model.back(np.ones_like(y))
    seconds = time.perf_counter() - start
    print(json.dumps({{"y": y.tolist(), "dx": dx.tolist(), "W": model.grads["W"].tolist(), "seconds": seconds}}))
""").format(tests=str(TESTS))


def child_environment(directory: Path) -> dict:
    environment = dict(os.environ, FLUX_CACHE_DIR=str(directory), PYTHONPATH=str(TESTS.parent))
    environment.pop("NUMBA_DISABLE_JIT", None)
    return environment


def launch(directory: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD], env=child_environment(directory), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "Warning" not in stderr, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def test_processes_compiling_at_once_all_succeed_and_a_later_one_reuses_the_cache(tmp_path):
    directory = tmp_path / "shared-cache"
    processes = [launch(directory) for _ in range(3)]  # all compile the same model into one directory at once
    results = [finish(p) for p in processes]
    for other in results[1:]:
        for key in ("y", "dx", "W"):
            assert other[key] == results[0][key]  # bit-identical
    y, dx, W_gradient, _ = reference()
    np.testing.assert_allclose(results[0]["y"], y, rtol=1e-12)
    np.testing.assert_allclose(results[0]["W"], W_gradient, rtol=1e-12)
    (path,) = generated_files(directory)
    assert not list(directory.glob(".*.tmp"))
    written = path.stat().st_mtime_ns

    time.sleep(0.05)
    again = finish(launch(directory))
    assert again["y"] == results[0]["y"]
    assert path.stat().st_mtime_ns == written  # read, not rewritten
    first = ", ".join(f"{r['seconds']:.2f}" for r in results)
    print(f"\nsecond process: import + construct + first call + back of a cached Perceptron took "
          f"{again['seconds']:.2f} s (the processes that compiled it: {first} s)")
    assert again["seconds"] < min(r["seconds"] for r in results)  # loading beats compiling, whatever the load
