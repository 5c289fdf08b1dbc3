"""flux on Dask: sweeps travel by pickle, workers share the on-disk kernel cache, and data-parallel training equals
single-process training — on a real LocalCluster of 2 worker processes with 1 thread each.

The workers are separate processes: they import this module (for `fit_one` and the model classes below) and the
same flux as the tests, from PYTHONPATH, which the `client` fixture sets before they start.
"""
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import flux

distributed = pytest.importorskip("distributed")
from flux.distributed import WorkerLost, shard_gradient  # noqa: E402

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """A LocalCluster of 2 worker processes (1 thread each) importing this checkout's flux and tests."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)] + ([saved] if saved else []))
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                           local_directory=str(tmp_path_factory.mktemp("dask-worker-space")))
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture
def two_workers(client):
    """The client, with both workers up (a test may have killed one; its nanny restarts it)."""
    client.wait_for_workers(2, timeout=60)
    return client


def classification(n=91, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    labels = (X[:, 0] - X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    return X, labels


def small_mlp(hidden=6, seed=0):
    return flux.Chain(flux.Dense(4, hidden, "tanh", rng=seed, dtype=np.float64),
                      flux.Dense(hidden, 3, rng=seed + 1, dtype=np.float64))


def fit_one(config: dict):
    """One run of a sweep: build, train, return the model, its optimiser and its history (all travel by pickle)."""
    model = small_mlp(config["hidden"], config["seed"])
    optimiser = flux.Adam(config["lr"])
    history = flux.train(model, flux.logitcrossentropy, classification(), optimiser, epochs=2, batch_size=16,
                         rng=config["seed"], progress=False, metrics=["accuracy"])
    return model, optimiser, history


# ---- sweeps and the shared kernel cache ------------------------------------------------------------------------


def test_workers_import_this_checkouts_flux(two_workers):
    assert set(two_workers.run(lambda: __import__("flux").__file__).values()) == {flux.__file__}


def test_a_sweep_of_four_models_returns_the_parameters_of_running_them_in_turn(two_workers):
    configs = [{"hidden": h, "lr": lr, "seed": s} for h, lr, s in [(4, 0.01, 0), (6, 0.05, 1), (8, 0.02, 2),
                                                                   (6, 0.01, 3)]]
    swept = two_workers.gather(two_workers.map(fit_one, configs, pure=False))
    in_turn = [fit_one(config) for config in configs]
    for (model, optimiser, history), (expected, expected_optimiser, expected_history) in zip(swept, in_turn):
        assert model.params.keys() == expected.params.keys()
        for name, p in expected.params.items():
            np.testing.assert_allclose(model.params[name], p, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(optimiser.state["m"][name], expected_optimiser.state["m"][name], rtol=1e-12,
                                       atol=1e-14)
        assert optimiser.step_count == expected_optimiser.step_count == 12  # 2 epochs of ⌈91/16⌉ batches
        np.testing.assert_allclose(history["loss"], expected_history["loss"], rtol=1e-12)
        assert history["accuracy"] == expected_history["accuracy"]
        # what came back trains on, here, exactly as what never left
        x, labels = classification(16, seed=5)
        for m, o in ((model, optimiser), (expected, expected_optimiser)):
            flux.compile_step(m, flux.logitcrossentropy, o)(x, labels)
        for name, p in expected.params.items():
            np.testing.assert_allclose(model.params[name], p, rtol=1e-12, atol=1e-14)


class CompiledAtOnce(flux.Model):
    """A model only this test compiles: y = softplus(W x + b) ⊙ (W x + b)."""

    W = flux.param("m", "n")
    b = flux.param("m")

    def forward(self, x):
        z = self.W * x + self.b
        return flux.hadamard(flux.softplus(z), z)


class CachedByTheDriver(flux.Model):
    """A model only this test compiles: y = tanh(W x) + b."""

    W = flux.param("m", "n")
    b = flux.param("m")

    def forward(self, x):
        return flux.tanh(self.W * x) + self.b


def run_in_cache(directory: str, model, seed: int = 0) -> dict:
    """On a worker: forward and back through `model` with FLUX_CACHE_DIR = directory; when it ran and what it got."""
    saved = os.environ.get("FLUX_CACHE_DIR")
    os.environ["FLUX_CACHE_DIR"] = directory
    try:
        start = time.time()
        x = np.random.default_rng(seed).standard_normal((5, model.params["W"].shape[1]))
        model.zero_grad()  # gradients are data: a model pickled after a back pass brings them along
        y = model(x)
        dx = model.back(np.ones_like(y))
        return {"start": start, "end": time.time(), "y": y, "dx": dx, "grads": model.grads, "pid": os.getpid()}
    finally:
        if saved is None:
            del os.environ["FLUX_CACHE_DIR"]
        else:
            os.environ["FLUX_CACHE_DIR"] = saved


def cache_files(directory: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in directory.glob("*.py")}


def test_two_workers_compiling_the_same_model_at_once_both_succeed(two_workers, tmp_path):
    directory = tmp_path / "shared-cache"
    rng = np.random.default_rng(1)
    model = CompiledAtOnce(W=rng.standard_normal((3, 4)), b=rng.standard_normal(3), dtype=np.float64)
    workers = sorted(two_workers.nthreads())
    futures = [two_workers.submit(run_in_cache, str(directory), model, workers=[w], pure=False) for w in workers]
    first, second = two_workers.gather(futures)
    assert first["pid"] != second["pid"]
    assert first["start"] < second["end"] and second["start"] < first["end"]  # they compiled at the same time
    for key in ("y", "dx"):
        np.testing.assert_array_equal(first[key], second[key])  # bit-identical
    np.testing.assert_array_equal(first["grads"]["W"], second["grads"]["W"])
    here = run_in_cache(str(directory), copy.deepcopy(model))
    np.testing.assert_allclose(first["y"], here["y"], rtol=1e-13)
    assert len(cache_files(directory)) >= 1
    assert not list(directory.glob(".*.tmp"))  # every write was atomic: no temporary file left behind


def test_a_worker_receiving_a_model_loads_its_kernels_from_the_cache_without_deriving(two_workers, tmp_path,
                                                                                        monkeypatch):
    directory = tmp_path / "cache-the-driver-filled"
    monkeypatch.setenv("FLUX_CACHE_DIR", str(directory))
    rng = np.random.default_rng(2)
    model = CachedByTheDriver(W=rng.standard_normal((2, 3)), b=rng.standard_normal(2), dtype=np.float64)
    here = run_in_cache(str(directory), model)  # the driver derives, generates and writes the modules
    written = cache_files(directory)
    assert written
    time.sleep(0.05)
    there = two_workers.submit(run_in_cache, str(directory), model, pure=False).result()
    assert there["pid"] != os.getpid()
    np.testing.assert_allclose(there["y"], here["y"], rtol=1e-13)
    np.testing.assert_allclose(there["grads"]["W"], here["grads"]["W"], rtol=1e-13)
    # generation (which is where derivation happens) writes a module: none was written or rewritten
    assert cache_files(directory) == written


# ---- data-parallel training -------------------------------------------------------------------------------------


def test_data_parallel_training_equals_single_process_training(two_workers):
    X, labels = classification(91)
    validation = classification(30, seed=7)
    single, parallel = small_mlp(), small_mlp()
    single_optimiser, parallel_optimiser = flux.Adam(0.02), flux.Adam(0.02)
    options = dict(epochs=3, batch_size=18, rng=4, progress=False, metrics=["accuracy"], validation=validation)
    expected = flux.train(single, flux.logitcrossentropy, (X, labels), single_optimiser, **options)
    history = flux.train(parallel, flux.logitcrossentropy, (X, labels), parallel_optimiser, client=two_workers,
                         **options)
    # 91 rows in batches of 18: the last batch has 1 row, so one worker sits it out
    assert parallel_optimiser.step_count == single_optimiser.step_count == 3 * 6
    for name, p in single.params.items():
        np.testing.assert_allclose(parallel.params[name], p, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(parallel_optimiser.state["v"][name], single_optimiser.state["v"][name],
                                   rtol=1e-9, atol=1e-15)
    assert history.epochs == [1, 2, 3]
    assert set(history.logs) == set(expected.logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    for key in expected.logs:
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-10)
        assert all(type(value) is float for value in history[key])
    assert history["loss"][-1] < history["loss"][0]


def test_data_parallel_training_of_a_recurrent_model_equals_single_process_training(two_workers):
    """Sequences (N, T, features) are sharded along N; each worker runs its shard's time loop."""
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((40, 6, 3)), rng.standard_normal((40, 6, 2))
    single = flux.Recurrent(3, 5, 2, rng=0, dtype=np.float64)
    parallel = copy.deepcopy(single)
    options = dict(epochs=3, batch_size=16, rng=1, progress=False)
    expected = flux.train(single, flux.mse, (X, Y), flux.Adam(1e-2), **options)
    history = flux.train(parallel, flux.mse, (X, Y), flux.Adam(1e-2), client=two_workers, **options)
    for name, p in single.params.items():
        np.testing.assert_allclose(parallel.params[name], p, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-10)


def test_each_worker_computes_its_share_of_the_batch_gradient(two_workers):
    """Σ_k shard_gradient_k = ∂L/∂θ of the whole batch's mean loss (and Σ_k share·L_k = L), shards of unequal size."""
    X, labels = classification(7)
    targets = flux.onehot(labels, 3)
    model = small_mlp()
    whole = copy.deepcopy(model)
    value = flux.loss_and_grad(whole, flux.logitcrossentropy, X, targets)
    params = {k: p.copy() for k, p in model.params.items()}
    parts = [two_workers.submit(shard_gradient, model, flux.logitcrossentropy, params, X[rows], targets[rows],
                                len(X[rows]) / 7, pure=False).result() for rows in (slice(0, 3), slice(3, 7))]
    assert sum(v for v, _ in parts) == pytest.approx(value, rel=1e-13)
    for name, g in whole.grads.items():
        np.testing.assert_allclose(parts[0][1][name] + parts[1][1][name], g, rtol=1e-12, atol=1e-15)


_shards_seen: dict = {}


class LossThatFailsOnAWorker:
    """flux.mse, except that on its `at`-th shard the worker at `address` dies (os._exit, as if killed) or raises."""

    def __init__(self, address: str, at: int, token: str, how: str):
        self.address, self.at, self.token, self.how = address, at, token, how

    def value_and_gradient(self, y, t):
        try:
            address = distributed.get_worker().address
        except ValueError:  # not on a worker: the driver checking the loss
            address = None
        if address == self.address:
            _shards_seen[self.token] = _shards_seen.get(self.token, 0) + 1
            if _shards_seen[self.token] == self.at:
                if self.how == "dies":
                    os._exit(1)
                raise ValueError("a fault injected into the shard")
        return flux.mse.value_and_gradient(y, t)


@pytest.mark.parametrize("how, error, message", [
    ("dies", WorkerLost, r"worker .* was lost during epoch 1, batch 3.*as after its last complete update \(2 in "
                         r"this call"),
    ("raises", ValueError, "a fault injected into the shard"),
])
def test_a_worker_failing_mid_epoch_raises_and_leaves_the_last_complete_update(two_workers, how, error, message):
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((80, 4)), rng.standard_normal((80, 3))
    model, optimiser = small_mlp(), flux.Momentum(0.05)
    reference, reference_optimiser = copy.deepcopy(model), flux.Momentum(0.05)
    victim = sorted(two_workers.nthreads())[1]
    loss = LossThatFailsOnAWorker(victim, at=3, token=f"{os.getpid()}-{time.time()}", how=how)
    with pytest.raises(error, match=message):
        flux.train(model, loss, (X, Y), optimiser, epochs=2, batch_size=16, rng=9, progress=False,
                   client=two_workers)
    # the same two complete batches, in one process
    order = np.random.default_rng(9).permutation(80)
    for batch in range(2):
        rows = order[16 * batch:16 * (batch + 1)]
        flux.loss_and_grad(reference, flux.mse, X[rows], Y[rows])
        reference.update(reference_optimiser)
    assert optimiser.step_count == reference_optimiser.step_count == 2
    for name, p in reference.params.items():
        np.testing.assert_allclose(model.params[name], p, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(optimiser.state["v"][name], reference_optimiser.state["v"][name], rtol=1e-12,
                                   atol=1e-15)
    # the cluster heals (a nanny restarts a killed worker) and training continues from where it stopped
    two_workers.wait_for_workers(2, timeout=60)
    flux.train(model, flux.mse, (X, Y), optimiser, epochs=1, batch_size=16, rng=10, progress=False,
               client=two_workers)
    assert optimiser.step_count == 2 + 5


# ---- without Dask, and bad arguments -------------------------------------------------------------------------


def test_without_dask_client_says_what_to_install(monkeypatch):
    model = small_mlp()
    before = {k: p.copy() for k, p in model.params.items()}
    monkeypatch.setitem(sys.modules, "distributed", None)  # what `import distributed` sees when it is not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[dask\]"'):
        flux.train(model, flux.logitcrossentropy, classification(), flux.Adam(), client=object(), progress=False)
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, before[name])


@pytest.mark.parametrize("bad, error, message", [
    ("tcp://127.0.0.1:8786", TypeError,
     r"client must be a dask.distributed.Client .*got 'tcp://127.0.0.1:8786' \(str\)"),
    (42, TypeError, r"client must be a dask.distributed.Client .*\(int\)"),
])
def test_a_client_that_is_not_a_dask_client_is_refused(bad, error, message):
    model = small_mlp()
    before = {k: p.copy() for k, p in model.params.items()}
    with pytest.raises(error, match=message):
        flux.train(model, flux.logitcrossentropy, classification(), flux.Adam(), client=bad, progress=False)
    for name, p in model.params.items():
        np.testing.assert_array_equal(p, before[name])


def test_client_and_step_together_are_refused(two_workers):
    model = small_mlp()
    with pytest.raises(TypeError, match="step= or client=, not both"):
        flux.train(model, flux.logitcrossentropy, classification(), flux.Adam(), client=two_workers,
                   step=lambda x, t: 0.0, progress=False)
