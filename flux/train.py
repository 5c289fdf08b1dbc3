"""The training loop: batches, shuffling, validation, metrics and a progress bar around one step; callbacks (History,
EarlyStopping and the hooks they answer) are in `callbacks.py`.

    history = flux.train(model, loss, (X, Y), flux.Adam(1e-3), epochs=10, batch_size=64, validation=(Xv, Yv))

Each batch is one call of `step(x, t) -> loss value`: y = model(x); L, Δ = loss.value_and_gradient(y, t);
model.back(Δ); model.update(optimiser). The step checks that L and every ∂L/∂θ are finite *before* updating, so a
non-finite loss stops training with the parameters as they were before that step. `make_step` builds that step; a
fused, compiled step can take its place because `train` only ever calls it.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .callbacks import History, call_hook, checked_callbacks

Step = Callable[[np.ndarray, np.ndarray], float]


def train(model, loss, data: tuple[np.ndarray, np.ndarray], optimiser, *, epochs: int = 1, batch_size: int = 32,
          shuffle: bool = True, rng: int | np.random.Generator | None = None,
          validation: tuple[np.ndarray, np.ndarray] | None = None, callbacks: Iterable = (),
          progress: bool | None = None, metrics: Sequence[str | Callable] | None = None,
          step: Step | None = None, client: Any = None) -> History:
    """Train `model` on `data = (X, Y)` for `epochs` passes of mini-batches; return the per-epoch History.

    For each batch (x, t): y = model(x), L = loss(y, t), then the optimiser applies ∂L/∂θ. The epoch's `loss` is the
    mean of its batch losses weighted by batch size (measured while training, as Keras does); `val_loss` and every
    metric (`metrics=["accuracy"]` or callables `f(y, t) -> float`) are computed after the epoch with the epoch's
    final parameters. Gradients accumulated before the call are discarded.

    `rng` (a seed or a np.random.Generator) makes shuffling reproducible; passing the same Generator to successive
    calls continues its sequence, so training in two calls equals training in one. `progress=None` shows a tqdm bar
    only on a terminal or in a notebook, never when the CI environment variable is set; False turns it off.
    A callback is any object with some of `on_train_begin(model)`, `on_epoch_end(epoch, logs) -> bool | None`
    (True stops training) and `on_train_end(model)`.

    A recurrent model (or a Chain holding one) takes X as (N, T, features) sequences: targets Y (N, T, out) (or
    class labels (N, T)) put the loss on every step's output, Y (N, out) (or labels (N,)) on the last step's only
    (Keras' `return_sequences=False`); each batch starts from h₀. A flux loss runs as one fused kernel call per
    batch (`flux.compile_step`), on sequences too.

    `client` (a dask.distributed.Client) trains data-parallel on its workers: each batch's gradient is the sum of
    its shards' gradients, Σ_k (n_k/N)·∂L_k/∂θ, then one update (flux/distributed.py; `pip install -e ".[dask]"`).
    """
    if client is not None:  # the same loop, with each batch's gradient computed shard by shard on the workers
        from .distributed import DataParallelStep, checked_client
        from .step_checks import overridden_methods

        if step is not None:
            raise TypeError("train: pass step= or client=, not both (client= builds its own data-parallel step)")
        skipped = [m for m in overridden_methods(model) if m.endswith(".update")]
        if skipped:  # the driver applies the optimiser to the workers' summed gradients itself
            raise TypeError(f"train(client=…): {type(model).__name__} overrides {', '.join(skipped)}, which "
                            "data-parallel training never calls (the driver applies the optimiser to the summed "
                            "gradients); train without client=")
        rows = len(_training_arrays(data, "data")[0])
        batches = -(-rows // batch_size) if isinstance(batch_size, int) and batch_size > 0 else 1
        parallel = DataParallelStep(checked_client(client), model, loss, optimiser, batches_per_epoch=batches)
        try:  # the step sends the model to the workers on its first call, after everything below is checked
            return train(model, loss, data, optimiser, epochs=epochs, batch_size=batch_size, shuffle=shuffle, rng=rng,
                         validation=validation, callbacks=callbacks, progress=progress, metrics=metrics,
                         step=parallel)
        finally:
            parallel.close()
    # Everything is checked before the first update, so a mistake found here leaves the model untouched.
    X, Y = _training_arrays(data, "data")
    validation = _training_arrays(validation, "validation") if validation is not None else None
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"train: epochs must be a non-negative integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"train: batch_size must be a positive integer, got {batch_size!r}")
    if step is None:
        _check_optimiser(optimiser)
    metric_functions = _metric_functions(metrics)
    log_names = ["loss", *metric_functions] + (["val_loss"] + [f"val_{m}" for m in metric_functions]
                                                if validation is not None else [])
    callbacks = checked_callbacks(callbacks, log_names)
    generator = np.random.default_rng(rng)
    Y = _labels_as_targets(model, loss, X, Y)
    last = last_step_targets(model, X, Y)
    _check_on_first_batch(model, loss, (X, Y), "data", metric_functions, batch_size, with_loss=False, last=last)
    if validation is not None:
        _check_on_first_batch(model, loss, validation, "validation", metric_functions, batch_size, with_loss=True,
                              last=last)
    step = step if step is not None else default_step(model, loss, optimiser, last=last)
    batches_per_epoch = -(-len(X) // batch_size)

    model.zero_grad()
    history = History()
    for callback in callbacks:
        call_hook(callback, "on_train_begin", model)
    bar = _progress_bar(progress, total=epochs * batches_per_epoch)
    try:
        for epoch in range(1, epochs + 1):
            order = generator.permutation(len(X)) if shuffle else None
            total, seen = 0.0, 0
            if bar is not None:
                bar.set_description(f"epoch {epoch}/{epochs}")
            for batch, start in enumerate(range(0, len(X), batch_size), 1):
                rows = order[start:start + batch_size] if shuffle else slice(start, start + batch_size)
                x, t = X[rows], Y[rows]
                try:
                    value = step(x, t)
                except FloatingPointError as error:
                    raise FloatingPointError(f"{error} (epoch {epoch}, batch {batch})") from error
                total, seen = total + value * len(x), seen + len(x)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total / seen:.4g}", refresh=False)
            logs = {"loss": total / seen}
            logs.update(evaluate(model, loss, (X, Y), batch_size=batch_size, metrics=metric_functions,
                                 include_loss=False, last=last))
            if validation is not None:
                measured = evaluate(model, loss, validation, batch_size=batch_size, metrics=metric_functions,
                                    last=last)
                logs.update({f"val_{k}": v for k, v in measured.items()})
            history.append(epoch, logs)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
            stop = [bool(call_hook(callback, "on_epoch_end", epoch, logs)) for callback in callbacks]
            if any(stop):
                history.stopped_epoch = epoch
                break
    finally:
        if bar is not None:
            bar.close()
    for callback in callbacks:
        call_hook(callback, "on_train_end", model)
    return history


def default_step(model, loss, optimiser, *, last: bool = False) -> Step:
    """The fused compiled step (`flux.compile_step`) for a flux loss, on a feed-forward, recurrent or token model;
    otherwise the step made of separate forward, back and update calls (`make_step`): for a model with a layer
    that adds inputs on every call (a training Dropout's mask, a positional encoding), or whose class (or a layer's)
    overrides `back` or `update` (flux.step_checks)."""
    from .layers.basic import adds_inputs_per_call
    from .losses import Loss
    from .step_checks import overridden_methods, refuse_skipped_submodel_methods
    from .steps import compile_step

    own = overridden_methods(model)  # its or a layer's own back/update: the step of calls runs them or refuses
    if isinstance(loss, Loss) and not adds_inputs_per_call(model) and not own:
        return compile_step(model, loss, optimiser, last=last)
    refuse_skipped_submodel_methods(model, "update")  # model.update would apply a layer's gradients itself
    return make_step(model, loss, optimiser, last=last)


def last_step_targets(model, X: np.ndarray, Y: np.ndarray) -> bool:
    """True when a recurrent model's targets are for the last step only: X (N, T, features) with Y (N, out) or
    class labels (N,); targets (N, T, out) (or labels (N, T), already one-hot here) are for every step."""
    from .run.sequences import is_recurrent

    return np.ndim(X) == 3 and np.ndim(Y) < 3 and is_recurrent(model)


def make_step(model, loss, optimiser, *, last: bool = False) -> Step:
    """One training step on a batch: forward, loss, backward, checks, update. Returns the batch's mean loss.
    `last`: the loss is on a sequence's last step only (its Δ is zero at every other step).

    If the loss or a gradient is not finite it raises FloatingPointError naming it, after zeroing the gradients, so
    the model is exactly as it was before the step (the update has not happened).
    """
    value_and_gradient = _loss_protocol(loss)

    def step(x: np.ndarray, t: np.ndarray) -> float:
        y = model(x)
        if last:
            value, Δ_last = value_and_gradient(y[:, -1], t)
            Δ = np.zeros_like(y)
            Δ[:, -1] = Δ_last
        else:
            value, Δ = value_and_gradient(y, t)
        value = float(value)
        if not np.isfinite(value):
            raise FloatingPointError(f"train: the loss of {type(model).__name__} is {value}; "
                                     "the parameters are as they were before this step")
        model.back(Δ)
        for name, gradient in model.grads.items():
            if not np.isfinite(gradient).all():
                model.zero_grad()
                raise FloatingPointError(f"train: the gradient of parameter {name!r} of {type(model).__name__} is not "
                                         "finite; the parameters are as they were before this step")
        try:
            model.update(optimiser)
        except Exception:
            model.zero_grad()
            raise
        return value

    return step


def evaluate(model, loss, data: tuple[np.ndarray, np.ndarray], *, batch_size: int = 256,
             metrics: Sequence[str | Callable] | dict | None = None, include_loss: bool = True,
             last: bool = False) -> dict[str, float]:
    """The mean loss (and metrics) of `model` over `data`, in batches; the model's parameters are not changed.
    `last`: on a sequence's last step only (the prediction is y[:, -1]). A model in training mode with a Dropout
    inside is evaluated in evaluation mode (nothing dropped), as Keras does."""
    from .layers.dropout import draws_masks

    if draws_masks(model):
        modes = _modes(model)
        try:
            return evaluate(model.eval(), loss, data, batch_size=batch_size, metrics=metrics,
                            include_loss=include_loss, last=last)
        finally:
            for sub, mode in modes:  # parents first: each model gets back exactly its own mode (mixed modes too)
                sub.train(mode)
    X, Y = _training_arrays(data, "data")
    functions = metrics if isinstance(metrics, dict) else _metric_functions(metrics)
    if include_loss:
        value_of = _loss_value(loss)
        functions = {"loss": value_of, **functions}
    totals = dict.fromkeys(functions, 0.0)
    if not functions:
        return {}
    for start in range(0, len(X), batch_size):
        x, t = X[start:start + batch_size], Y[start:start + batch_size]
        y = model(x)
        y = y[:, -1] if last else y
        for name, function in functions.items():
            totals[name] += float(function(y, t)) * len(x)
    return {name: total / len(X) for name, total in totals.items()}


def _modes(model) -> list:
    """(model, training) for the model and every sub-model, parents before their sub-models."""
    found = [(model, model.training)]
    for _, sub in model.named_submodels():
        found += _modes(sub)
    return found


def accuracy(y: np.ndarray, t: np.ndarray) -> float:
    """The fraction of predictions that are right; a sequence batch (N, T, k) counts each of its N·T steps.

    One output column: the prediction is y > 0.5 (a probability, e.g. σ's output), the label t > 0.5. Several
    columns: the prediction is argmax y over the last axis; the label is argmax t (t shaped like y: one-hot or
    probabilities) or t itself (integer labels, shaped like y without its last axis).
    """
    y, t = np.asarray(y), np.asarray(t)
    if y.ndim == 1:  # N predictions of one output each
        y = y[:, None]
    if y.ndim == 0:
        raise ValueError(f"accuracy: the prediction must be an array of samples, got a scalar {y!r}")
    if t.shape == y.shape:
        labels = t[..., 0] > 0.5 if y.shape[-1] == 1 else np.argmax(t, axis=-1)
    elif t.shape == y.shape[:-1]:
        labels = t > 0.5 if y.shape[-1] == 1 else t
    else:
        raise ValueError(f"accuracy: the target has shape {t.shape} but the prediction has shape {y.shape}: the "
                         f"target must be shaped like it (one-hot or probabilities) or {y.shape[:-1]} (class labels)")
    predicted = y[..., 0] > 0.5 if y.shape[-1] == 1 else np.argmax(y, axis=-1)
    return float(np.mean(predicted == labels))


METRICS: dict[str, Callable] = {"accuracy": accuracy}


# ---- helpers -------------------------------------------------------------------------------------------------------


def _training_arrays(data: Any, role: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"train: {role} must be a pair (X, Y) of arrays, got {type(data).__name__}")
    X, Y = (a if isinstance(a, np.ndarray) else np.asarray(a) for a in data)
    if X.ndim == 0 or Y.ndim == 0 or len(X) != len(Y):
        raise ValueError(f"train: {role} X and Y must have the same number of samples (first axis), "
                         f"got shapes {X.shape} and {Y.shape}")
    if len(X) == 0:
        raise ValueError(f"train: {role} has no samples")
    return X, Y


def _loss_protocol(loss) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    function = getattr(loss, "value_and_gradient", None)
    if not callable(function):
        raise TypeError(f"train: the loss must have value_and_gradient(y, target) -> (mean loss, ∂L/∂y), "
                        f"e.g. flux.mse; got {loss!r}")
    return function


def _loss_value(loss) -> Callable[[np.ndarray, np.ndarray], float]:
    value_and_gradient = _loss_protocol(loss)
    return loss if callable(loss) else (lambda y, t: value_and_gradient(y, t)[0])


def _metric_functions(metrics: Sequence[str | Callable] | None) -> dict[str, Callable]:
    functions = {}
    for metric in metrics or ():
        if isinstance(metric, str):
            if metric not in METRICS:
                raise ValueError(f"train: unknown metric {metric!r}; known: {', '.join(METRICS)} (or pass a function "
                                 "f(y, target) -> float)")
            functions[metric] = METRICS[metric]
        elif callable(metric):
            functions[getattr(metric, "__name__", "metric")] = metric
        else:
            raise TypeError(f"train: a metric is a name or a function f(y, target) -> float, got {metric!r}")
    return functions


def _check_optimiser(optimiser) -> None:
    from .optimisers import Optimiser

    if isinstance(optimiser, Optimiser):
        return
    if optimiser is None:
        raise TypeError("train: the optimiser is None; pass one, e.g. flux.Adam(1e-3) or flux.SGD(0.1)")
    if isinstance(optimiser, type) and issubclass(optimiser, Optimiser):
        raise TypeError(f"train: the optimiser is the class {optimiser.__name__}; pass an instance, e.g. "
                        f"flux.{optimiser.__name__}()")
    hint = f" (for a learning rate of {optimiser}, pass flux.SGD({optimiser}))" if isinstance(optimiser, (int, float)) \
        else ""
    raise TypeError(f"train: the optimiser must be a flux optimiser such as flux.Adam(1e-3), got {optimiser!r} "
                    f"({type(optimiser).__name__}){hint}")


def _labels_as_targets(model, loss, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Integer class labels for a loss that takes them (Y shaped like X without its feature axis) as one-hot
    targets, converted once, so every path (the fused step included) sees ordinary targets."""
    if not getattr(loss, "takes_labels", False) or Y.dtype.kind not in "iu" or Y.shape != X.shape[:-1]:
        return Y
    classes = np.shape(model(X[:1]))[-1]  # the prediction's last axis: how many classes there are
    return loss.targets_for(Y, X.shape[:-1] + (classes,), model.dtype)


def _check_on_first_batch(model, loss, data: tuple, role: str, metrics: dict, batch_size: int,
                          with_loss: bool, last: bool = False) -> None:
    """Run what training runs after each epoch — the model, the loss (validation) and every metric — on the first
    batch, before any parameter changes: a set of the wrong shape or a metric that cannot read the model's output
    is refused now, not after an epoch of training. The model's parameters are not changed."""
    if not metrics and not with_loss:
        return
    X, Y = data
    x, t = X[:batch_size], Y[:batch_size]
    functions = ({"loss": _loss_value(loss)} if with_loss else {}) | metrics
    try:
        y = model(x)
        y = y[:, -1] if last else y
        for function in functions.values():
            float(function(y, t))
    except (ValueError, TypeError, IndexError) as error:
        message = (f"train: the {role} set {tuple(X.shape)} → {tuple(Y.shape)} does not fit {type(model).__name__} "
                   f"and the loss or metrics (checked before training; nothing was changed): {error}")
        try:
            named = type(error)(message)
        except Exception:  # an exception class that takes other arguments: keep it as it is
            raise error from None
        raise named from error


def _progress_bar(progress: bool | None, total: int):
    if progress is None:
        progress = not os.environ.get("CI") and (_in_notebook() or _stderr_is_terminal())
    if not progress:
        return None
    if _in_notebook():
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, unit="batch", dynamic_ncols=True)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell else None
    return type(ipython).__name__ == "ZMQInteractiveShell"
