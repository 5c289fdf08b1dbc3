"""What training reports and who listens: the per-epoch History, the callback hooks, and EarlyStopping.

A callback is any object with some of `on_train_begin(model)`, `on_epoch_end(epoch, logs) -> bool | None` (True
stops training) and `on_train_end(model)`; `logs` maps "loss", "val_loss" and each metric to the epoch's value.
EarlyStopping stops when its `monitor` has not improved (by more than `min_delta`) for `patience` epochs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from .run.state import parameters_written


@dataclass
class History:
    """What `train` measured: `history["loss"][k]` is epoch k+1's value; keys are loss, val_loss, metrics."""

    epochs: list[int] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    stopped_epoch: int | None = None  # the epoch after which a callback stopped training

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epochs.append(epoch)
        for name, value in logs.items():
            self.logs.setdefault(name, []).append(value)

    def __getitem__(self, name: str) -> list[float]:
        if name not in self.logs:
            raise KeyError(f"History has no {name!r}; it has {', '.join(self.logs) or 'nothing (no epoch ran)'}")
        return self.logs[name]

    def __contains__(self, name: str) -> bool:
        return name in self.logs

    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.logs.items())
        return f"History({len(self.epochs)} epochs{'; ' + last if last else ''})"


class EarlyStopping:
    """Stop when `monitor` has not improved for `patience` epochs; optionally end with the best parameters.

    Improvement means decreasing by more than `min_delta` (mode "min"), or increasing (mode "max"); mode "auto"
    picks "max" for accuracy-like names and "min" otherwise. With `restore_best`, the parameters of the best epoch
    are copied back when training ends (the optimiser's state is not rewound).
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, restore_best: bool = True,
                 min_delta: float = 0.0, mode: str = "auto"):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.patience, self.restore_best, self.min_delta = monitor, patience, restore_best, min_delta
        self.mode = mode if mode != "auto" else ("max" if "acc" in monitor else "min")
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self._wait = 0
        self._model = None
        self._best_params: dict[str, np.ndarray] | None = None

    def on_train_begin(self, model) -> None:
        self.best = self.best_epoch = self.stopped_epoch = self._best_params = None
        self._wait, self._model = 0, model

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> bool:
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r} but training reports only "
                             f"{', '.join(logs)}{missing_monitor_hint(self.monitor)}")
        value = logs[self.monitor]
        improved = self.best is None or (value < self.best - self.min_delta if self.mode == "min"
                                         else value > self.best + self.min_delta)
        if improved:
            self.best, self.best_epoch, self._wait = value, epoch, 0
            if self.restore_best and self._model is not None:
                self._best_params = {k: p.copy() for k, p in self._model.params.items()}
            return False
        self._wait += 1
        if self._wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, model) -> None:
        if self.restore_best and self._best_params is not None:
            for name, p in model.params.items():
                np.copyto(p, self._best_params[name])
            parameters_written(model.params.values())


# ---- calling them --------------------------------------------------------------------------------------------------

HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")


def checked_callbacks(callbacks: Iterable, log_names: list[str]) -> list:
    """The callbacks as a list, each an instance with at least one hook, monitoring a value training reports."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, Iterable) or isinstance(callbacks, (str, bytes)) or any(
            hasattr(callbacks, hook) for hook in HOOKS):
        raise TypeError(f"train: callbacks must be a list of callbacks, got {callbacks!r}")
    callbacks = list(callbacks)
    for callback in callbacks:
        name = getattr(callback, "__name__", None) or type(callback).__name__
        if isinstance(callback, type):
            raise TypeError(f"train: the callback {name} is a class; pass an instance, e.g. {name}()")
        if not any(callable(getattr(callback, hook, None)) for hook in HOOKS):
            raise TypeError(f"train: the callback {callback!r} has none of the methods {', '.join(HOOKS)}")
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor not in log_names:
            raise ValueError(f"train: the callback {name} monitors {monitor!r} but training reports only "
                             f"{', '.join(log_names)}{missing_monitor_hint(monitor)}")
    return callbacks


def call_hook(callback, hook: str, *arguments):
    """`callback.hook(*arguments)` if the callback has that hook (each is optional)."""
    method = getattr(callback, hook, None)
    return method(*arguments) if callable(method) else None


def missing_monitor_hint(monitor: str) -> str:
    """What to do when a monitored value is not reported: a val_ value needs a validation set."""
    return " (pass validation= to train, or monitor='loss')" if monitor.startswith("val_") else ""
