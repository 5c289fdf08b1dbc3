"""More than one process, on Dask: data-parallel training of one model; sweeps need nothing but pickle.

    from dask.distributed import Client
    client = Client()                                               # a LocalCluster, or a real scheduler's address
    models = client.gather(client.map(fit_one, configs))            # a sweep: models travel back by pickle
    flux.train(model, loss, (X, Y), opt, epochs=3, batch_size=1024, client=client)   # one model, data-parallel

Data-parallel training splits each batch of N rows into one contiguous shard S_k per worker (n_k rows). With
ℓ_i the loss of row i, the batch's mean loss and its gradient are sums over shards:

    L = (1/N) Σ_i ℓ_i = Σ_k (n_k/N) L_k,        ∂L/∂θ = Σ_k (n_k/N) ∂L_k/∂θ = (1/N) Σ_k Σ_{i∈S_k} ∂ℓ_i/∂θ

where L_k is shard k's mean loss. Worker k runs its copy of the model forward on S_k (compiled kernels), takes the
loss's gradient ∂L_k/∂y, scales it by n_k/N and back-propagates it, so its parameter gradients are the shard's
part of ∂L/∂θ. The driver sums them, checks the loss and every gradient are finite, applies ONE optimiser update
(its state stays on the driver), and sends the new parameters — arrays, never the model — to every worker for the
next batch. Each worker keeps its model between batches; it gets it once, by pickle, and loads its kernels from
the on-disk cache (`$FLUX_CACHE_DIR`) rather than deriving them again.

Nothing of a batch is applied until every shard's gradient has arrived: a worker lost mid-epoch makes `train`
raise `WorkerLost`, with the model and the optimiser as they were after the last complete update.

The kernel cache across processes and machines. Workers on one machine share `$FLUX_CACHE_DIR` (inherited from the
process that starts them): a model compiled once is loaded, not derived, by every later worker; several compiling
the same model at once all succeed, each module being written to a temporary file and renamed into place. On a
cluster whose home directories are one shared (network) filesystem the same holds — renames are atomic there too,
generated modules depend only on the maths, the dtype and flux's generator, and numba keys its machine code by CPU —
so at worst a machine compiles again, never runs another's code; the cache must belong to the user running the
workers and not be writable by group or others, as everywhere (else flux warns and compiles in a private
temporary directory). A node-local directory (`FLUX_CACHE_DIR=/local/disk/flux`, set in the workers'
environment) avoids network round trips at start-up.
"""
from __future__ import annotations

from typing import Any

import numpy as np

INSTALL_HINT = 'pip install -e ".[dask]"  (or pip install "dask[distributed]")'


class WorkerLost(RuntimeError):
    """A Dask worker died (or its connection closed) during data-parallel training; nothing of that batch was
    applied."""


def lost_worker_errors() -> tuple[type[BaseException], ...]:
    """What Dask raises when a worker holding a model copy dies: its futures are cancelled (the copy cannot be
    recomputed), a task was on it too often (KilledWorker), or a connection closed (CommClosedError, an OSError)."""
    try:
        from distributed import CancelledError, KilledWorker, TimeoutError as DaskTimeoutError
    except ImportError:
        return (OSError,)
    return (CancelledError, KilledWorker, OSError, TimeoutError, DaskTimeoutError)


def require_distributed():
    """The `distributed` module (Dask's scheduler and workers), or ImportError saying what to install."""
    try:
        import distributed
    except ImportError as error:
        raise ImportError(f"flux.train(client=...) trains on a Dask cluster, which needs dask.distributed: "
                          f"{INSTALL_HINT}") from error
    return distributed


def checked_client(client: Any):
    """`client` if it is a `dask.distributed.Client` with at least one worker; otherwise a TypeError/ValueError
    naming what was passed (ImportError if Dask is not installed)."""
    distributed = require_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"train: client must be a dask.distributed.Client (e.g. Client() for a LocalCluster), got "
                        f"{client!r} ({type(client).__name__})")
    if client.status != "running":
        raise ValueError(f"train: the Dask client is {client.status}, not running; open a new Client")
    if not client.nthreads():
        raise ValueError(f"train: the Dask cluster of {client!r} has no workers; start some (LocalCluster(n_workers=2)"
                         " or dask worker <scheduler address>) and call train again")
    return client


class DataParallelStep:
    """One training step on a batch, split across the cluster's workers: returns the batch's mean loss.

    Built lazily: the model goes to the workers on the first call, after `train` has checked everything else. Each
    worker keeps its own copy; every call sends the driver's current parameters, so the workers always compute
    with exactly the parameters the driver's model shows (a callback may change them between epochs)."""

    def __init__(self, client: Any, model, loss, optimiser, *, batches_per_epoch: int = 1):
        self.client, self.model, self.loss, self.optimiser = client, model, loss, optimiser
        self.batches_per_epoch = max(1, int(batches_per_epoch))
        self.updates = 0          # complete updates applied by this step
        self.calls = 0
        self.workers: list[str] = []
        self.replicas: dict[str, Any] = {}  # worker address → future of that worker's copy of the model
        self.broken: str | None = None

    def __call__(self, x: np.ndarray, t: np.ndarray) -> float:
        self.calls += 1
        if self.broken:
            raise WorkerLost(self.broken)
        N = len(x)
        params = dict(self.model.params)
        direct = self.client.direct_to_workers is not False  # straight to the workers unless the client says not
        futures, tasks, shards = [], [], []
        try:
            if not self.replicas:
                self._send_model()
            bounds = np.linspace(0, N, len(self.workers) + 1).round().astype(int)
            shards = [(worker, slice(a, b)) for worker, a, b in zip(self.workers, bounds[:-1], bounds[1:]) if b > a]
            for worker, rows in shards:
                [batch] = self.client.scatter([(params, x[rows], t[rows])], workers=[worker], hash=False,
                                              direct=direct)
                futures.append(batch)
                tasks.append(self.client.submit(shard_gradient_of_batch, self.replicas[worker], self.loss, batch,
                                                (rows.stop - rows.start) / N, workers=[worker],
                                                allow_other_workers=False, pure=False))
            results = self.client.gather(tasks, direct=direct)
        except Exception as error:
            if isinstance(error, lost_worker_errors()):
                raise self._lost(error, tasks, [w for w, _ in shards]) from error
            raise
        finally:
            for future in futures + tasks:
                future.release()
        value = float(sum(part for part, _ in results))
        grads = {name: sum(g[name] for _, g in results) for name in results[0][1]}
        self._update(value, grads)
        self.updates += 1
        return value

    def close(self) -> None:
        """Drop the workers' copies of the model."""
        for future in self.replicas.values():
            future.release()
        self.replicas.clear()

    # ---- helpers -------------------------------------------------------------------------------------------

    def _send_model(self) -> None:
        """One pickled copy of the model to each worker, held there (scattered data) until `close`."""
        self.workers = sorted(self.client.nthreads())
        for worker in self.workers:
            [self.replicas[worker]] = self.client.scatter([self.model], workers=[worker], hash=False)

    def _lost(self, error: BaseException, futures: list, workers: list[str]) -> WorkerLost:
        """The error for a worker lost during this batch; this step refuses every later call."""
        dead = [w for w, f in zip(workers, futures) if f.status in ("cancelled", "lost", "error")] or workers
        who = f"the Dask worker {dead[0]}" if dead else "a Dask worker"
        epoch, batch = divmod(self.calls - 1, self.batches_per_epoch)
        done = (f"its last complete update ({self.updates} in this call of train)" if self.updates
                else "they were before train was called (no update completed)")
        self.broken = (f"train: {who} was lost during epoch {epoch + 1}, batch {batch + 1} "
                       f"({type(error).__name__}: {error}); nothing of that batch was applied: "
                       f"{type(self.model).__name__}'s parameters and the optimiser's state are as after {done}. "
                       "Call train again (with a healthy cluster) to continue from here.")
        return WorkerLost(self.broken)

    def _update(self, value: float, grads: dict[str, np.ndarray]) -> None:
        """One optimiser update from the summed gradients, after checking they are finite (else nothing changes)."""
        name = type(self.model).__name__
        if not np.isfinite(value):
            raise FloatingPointError(f"train: the loss of {name} is {value}; the parameters are as they were before "
                                     "this step")
        for key, gradient in grads.items():
            if not np.isfinite(gradient).all():
                raise FloatingPointError(f"train: the gradient of parameter {key!r} of {name} is not finite; the "
                                         "parameters are as they were before this step")
        params = self.model.params
        self.optimiser.check_parameters(self.model, params)
        self.optimiser.apply_gradients(name, params, grads)


def shard_gradient_of_batch(model, loss, batch: tuple, share: float) -> tuple[float, dict[str, np.ndarray]]:
    """On a worker: `shard_gradient` of batch = (parameters, x, t), sent to that worker in one message."""
    return shard_gradient(model, loss, *batch, share)


def shard_gradient(model, loss, params: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray,
                   share: float) -> tuple[float, dict[str, np.ndarray]]:
    """On a worker: (share·L_k, share·∂L_k/∂θ) for its shard, share = n_k/N, with the driver's parameters.

    The loss gradient ∂L_k/∂y is scaled before back-propagation, so the parameter gradients come out scaled."""
    for name, p in model.params.items():
        np.copyto(p, params[name])
    model.zero_grad()
    value, Δ = loss.value_and_gradient(model(x), t)
    Δ = np.asarray(Δ)
    model.back(Δ * Δ.dtype.type(share))
    grads = {name: g.copy() for name, g in model.grads.items()}
    model.zero_grad()
    return float(value) * share, grads
