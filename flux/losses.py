"""Losses, written as maths like any layer: per-sample scalars whose gradients flux derives.

Called on arrays a loss returns the mean over the batch (the PyTorch/Flux convention):

    mse(ŷ, y)                    = (1/k) Σᵢ (ŷᵢ − yᵢ)²
    crossentropy(ŷ, y)           = −Σᵢ yᵢ clog ŷᵢ                          (ŷ are probabilities)
    logitcrossentropy(z, y)      = logΣexp(z)·Σᵢ yᵢ − Σᵢ yᵢ zᵢ             (= −Σ y ⊙ log softmax z, stable)
    binarycrossentropy(ŷ, y)     = −(1/k) Σᵢ [yᵢ clog ŷᵢ + (1 − yᵢ) clog(1 − ŷᵢ)]
    logitbinarycrossentropy(z, y) = (1/k) Σᵢ [softplus(zᵢ) − yᵢ zᵢ]        (= binarycrossentropy(σ(z), y), stable)

clog p = max(log p, −100) is the log PyTorch's BCELoss takes: 0·clog 0 = 0 (a saturated σ or softmax output with a
zero target costs nothing, as xlogy has it), a confident wrong answer costs 100 per entry instead of ∞, and the
gradient stays finite. From logits, logitcrossentropy and logitbinarycrossentropy need no clamp at all.

crossentropy and logitcrossentropy also take integer class labels as targets (as PyTorch's cross_entropy and
Keras' sparse losses do): an integer array shaped like the prediction without its last axis, e.g. (N,) for
(N, k) predictions, is read as `onehot(labels, k)`.

A loss's derivation shows its gradient with respect to the prediction, as a textbook does (`print(flux.mse.derivation)`:
∂L/∂prediction = (2/n_prediction)·Δ·(prediction − target)); the target's is shown on request:
`flux.latex(flux.mse.derivation, wrt="all")`, `flux.show.layout.derivation_text(flux.mse.derivation, wrt="all")`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .model import Model
from .run.state import runtime_of
from .trace.language import hadamard, is_symbolic, total


class Loss(Model):
    """A model of (prediction, target) with a (1, 1) output per sample; on arrays it returns the batch mean."""

    is_loss = True  # its maths is shown as ℓ(prediction, target) = …
    takes_labels = False  # True: an integer target shaped like the prediction without its last axis is class labels

    def forward(self, prediction, target):
        raise NotImplementedError

    def __call__(self, prediction: Any, target: Any) -> Any:
        if self.__dict__.get("_tracing") or is_symbolic(prediction) or is_symbolic(target):
            return self.forward(prediction, target)
        target = self.targets_for(target, np.shape(prediction), getattr(prediction, "dtype", None))
        prediction, target = as_rows(prediction), as_rows(target)
        per_sample = super().__call__(prediction, target)
        runtime_of(self).drop_tape()  # the mean alone is asked for: nothing to back-propagate
        return float(np.mean(per_sample))

    def value_and_gradient(self, prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean loss, ∂loss/∂prediction) for a batch: the upstream gradient a model's `back` takes.

        Sequences (N, T, features) count every time step as a sample: the loss is the mean over N·T."""
        shape = np.shape(prediction)
        target = self.targets_for(target, shape, getattr(prediction, "dtype", None))
        prediction, target = as_rows(prediction), as_rows(target)
        per_sample = Model.__call__(self, prediction, target)
        count = max(np.shape(prediction)[0] if np.ndim(prediction) == 2 else 1, 1)
        # the forward's own precision: a shared loss's dtype may have been switched by another thread since
        Δ = np.full(np.shape(per_sample), 1.0 / count, dtype=per_sample.dtype)
        gradient, _ = Model.back(self, Δ)
        return float(np.mean(per_sample)), gradient.reshape(shape)

    def targets_for(self, target: Any, prediction_shape: tuple, dtype: Any = None) -> Any:
        """The target as the loss computes with it: for a loss that takes labels, integer class labels shaped like
        the prediction without its last axis become one-hot rows of the prediction's float dtype (after checking
        they are in [0, k)); any other target is returned unchanged (the loss's input checks judge it)."""
        if not self.takes_labels or is_symbolic(target) or len(prediction_shape) == 0:
            return target
        labels = target if isinstance(target, np.ndarray) else np.asarray(target)
        if labels.shape != tuple(prediction_shape[:-1]):
            return target
        if labels.dtype.kind in "iu":
            dtype = np.dtype(dtype) if dtype is not None and np.dtype(dtype).kind == "f" else self.dtype
            return one_hot_rows(labels, prediction_shape[-1], dtype, repr(self))
        if labels.dtype.kind in "fb" and labels.ndim > 0:  # bool too: not read as one sample's k = N targets
            raise TypeError(f"{self!r}: the target has shape {labels.shape}, the prediction's {tuple(prediction_shape)} "
                            f"without its last axis, so it reads as class labels, but its dtype is {labels.dtype}; "
                            "class labels must be integers (labels.astype(int)), or pass one-hot targets of shape "
                            f"{tuple(prediction_shape)}")
        return target

    def __repr__(self) -> str:
        return type(self).__name__.lower()


def onehot(labels: Any, k: int, dtype: Any = np.float32) -> np.ndarray:
    """One-hot rows of integer class labels in [0, k): shape (…, k), row n is e_{labels[n]}.

    onehot([2, 0], 3) = [[0, 0, 1], [1, 0, 0]]; a scalar label gives one row (k,); labels (N, T) give (N, T, k)."""
    return one_hot_rows(labels, k, dtype, "onehot")


def one_hot_rows(labels: Any, k: int, dtype: Any, who: str) -> np.ndarray:
    """`onehot`, with errors naming `who` (the loss the labels were given to)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{who}: the number of classes k must be a positive integer, got {k!r}")
    array = labels if isinstance(labels, np.ndarray) else np.asarray(labels)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{who}: class labels must be an integer array, got dtype {array.dtype}"
                        + (" (convert with .astype(int))" if array.dtype.kind in "fb" else ""))
    outside = (array < 0) | (array >= k)
    if outside.any():
        where = tuple(int(i) for i in np.argwhere(outside)[0])
        position = f" at index {where if len(where) > 1 else where[0]}" if where else ""
        raise ValueError(f"{who}: label {int(array[where])}{position} is not a class of the prediction: labels must be in "
                         f"[0, {k}) for {k} classes")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{who}: dtype must be a float type, got {dtype}")
    return np.eye(k, dtype=dtype)[array]


class MSE(Loss):
    """(1/k) Σᵢ (ŷᵢ − yᵢ)²."""

    def forward(self, prediction, target):
        from sympy import HadamardPower

        return total(HadamardPower(prediction - target, 2)) / prediction.shape[0]


class CrossEntropy(Loss):
    """−Σᵢ yᵢ clog ŷᵢ for probabilities ŷ, with clog p = max(log p, −100) (PyTorch's BCELoss clamp): 0·log 0 counts 0,
    and a zero probability for the true class costs 100. Targets may be integer class labels."""

    takes_labels = True

    def forward(self, prediction, target):
        from .maths.nodes import Apply

        return -total(hadamard(target, Apply("clampedlog", prediction)))


class LogitCrossEntropy(Loss):
    """logΣexp(z)·Σᵢ yᵢ − Σᵢ yᵢ zᵢ: cross-entropy of softmax(z), computed stably from logits z (no clamp needed).
    Targets may be integer class labels (as PyTorch's cross_entropy)."""

    takes_labels = True

    def forward(self, logits, target):
        from .maths.nodes import LogSumExp

        return LogSumExp(logits) * total(target) - total(hadamard(target, logits))


class BinaryCrossEntropy(Loss):
    """−(1/k) Σᵢ [yᵢ clog ŷᵢ + (1 − yᵢ) clog(1 − ŷᵢ)] with clog p = max(log p, −100), as PyTorch's BCELoss: finite at
    saturated probabilities (ŷ = 1 with y = 1 costs 0; ŷ = 1 with y = 0 costs 100). From logits, prefer
    `logitbinarycrossentropy`."""

    def forward(self, prediction, target):
        from sympy import OneMatrix

        from .maths.nodes import Apply

        ones = OneMatrix(*prediction.shape)
        likelihood = (hadamard(target, Apply("clampedlog", prediction))
                      + hadamard(ones - target, Apply("clampedlog", ones - prediction)))
        return -total(likelihood) / prediction.shape[0]


class LogitBinaryCrossEntropy(Loss):
    """(1/k) Σᵢ [softplus(zᵢ) − yᵢ zᵢ] = binarycrossentropy(σ(z), y) computed from logits z, stable at any z
    (PyTorch's BCEWithLogitsLoss); its gradient is (σ(z) − y)/k."""

    def forward(self, logits, target):
        from .maths.nodes import Apply

        return (total(Apply("softplus", logits)) - total(hadamard(target, logits))) / logits.shape[0]


def as_rows(values: Any) -> Any:
    """A sequence batch (N, T, features) as N·T rows of features; anything else unchanged."""
    return values.reshape(-1, values.shape[-1]) if isinstance(values, np.ndarray) and values.ndim == 3 else values


mse = MSE()
crossentropy = CrossEntropy()
logitcrossentropy = LogitCrossEntropy()
binarycrossentropy = BinaryCrossEntropy()
logitbinarycrossentropy = LogitBinaryCrossEntropy()


def loss_and_grad(model: Model, loss: Loss, x: Any, target: Any) -> float:
    """Run model(x), the loss against target, and back-propagate: returns the mean loss, grads accumulated."""
    prediction = model(x)
    value, gradient = loss.value_and_gradient(prediction, target)
    model.back(gradient)
    return value
