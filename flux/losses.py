"""Losses, written as maths like any layer: per-sample scalars whose gradients flux derives.

Called on arrays a loss returns the mean over the batch (the PyTorch/Flux convention):

    mse(ŷ, y)               = (1/k) Σᵢ (ŷᵢ − yᵢ)²
    crossentropy(ŷ, y)      = −Σᵢ yᵢ log ŷᵢ                       (ŷ are probabilities)
    logitcrossentropy(z, y) = logΣexp(z)·Σᵢ yᵢ − Σᵢ yᵢ zᵢ          (= −Σ y ⊙ log softmax z, stable)
    binarycrossentropy(ŷ, y) = −(1/k) Σᵢ [yᵢ log ŷᵢ + (1 − yᵢ) log(1 − ŷᵢ)]
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .model import Model
from .trace.language import hadamard, is_symbolic, total


class Loss(Model):
    """A model of (prediction, target) with a (1, 1) output per sample; on arrays it returns the batch mean."""

    def forward(self, prediction, target):
        raise NotImplementedError

    def __call__(self, prediction: Any, target: Any) -> Any:
        if self.__dict__.get("_tracing") or is_symbolic(prediction) or is_symbolic(target):
            return self.forward(prediction, target)
        prediction, target = as_rows(prediction), as_rows(target)
        per_sample = super().__call__(prediction, target)
        self.__dict__["_tape"] = None
        return float(np.mean(per_sample))

    def value_and_gradient(self, prediction: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        """(mean loss, ∂loss/∂prediction) for a batch: the upstream gradient a model's `back` takes.

        Sequences (N, T, features) count every time step as a sample: the loss is the mean over N·T."""
        shape = np.shape(prediction)
        prediction, target = as_rows(prediction), as_rows(target)
        per_sample = Model.__call__(self, prediction, target)
        count = max(np.shape(prediction)[0] if np.ndim(prediction) == 2 else 1, 1)
        Δ = np.full(np.shape(per_sample), 1.0 / count, dtype=self.dtype)
        gradient, _ = Model.back(self, Δ)
        return float(np.mean(per_sample)), gradient.reshape(shape)

    def __repr__(self) -> str:
        return type(self).__name__.lower()


class MSE(Loss):
    """(1/k) Σᵢ (ŷᵢ − yᵢ)²."""

    def forward(self, prediction, target):
        from sympy import HadamardPower

        return total(HadamardPower(prediction - target, 2)) / prediction.shape[0]


class CrossEntropy(Loss):
    """−Σᵢ yᵢ log ŷᵢ, for probabilities ŷ."""

    def forward(self, prediction, target):
        from .maths.nodes import Apply

        return -total(hadamard(target, Apply("log", prediction)))


class LogitCrossEntropy(Loss):
    """logΣexp(z)·Σᵢ yᵢ − Σᵢ yᵢ zᵢ: cross-entropy of softmax(z), computed stably from logits z."""

    def forward(self, logits, target):
        from .maths.nodes import LogSumExp

        return LogSumExp(logits) * total(target) - total(hadamard(target, logits))


class BinaryCrossEntropy(Loss):
    """−(1/k) Σᵢ [yᵢ log ŷᵢ + (1 − yᵢ) log(1 − ŷᵢ)]."""

    def forward(self, prediction, target):
        from sympy import OneMatrix

        from .maths.nodes import Apply

        ones = OneMatrix(*prediction.shape)
        likelihood = hadamard(target, Apply("log", prediction)) + hadamard(ones - target, Apply("log", ones - prediction))
        return -total(likelihood) / prediction.shape[0]


def as_rows(values: Any) -> Any:
    """A sequence batch (N, T, features) as N·T rows of features; anything else unchanged."""
    return values.reshape(-1, values.shape[-1]) if isinstance(values, np.ndarray) and values.ndim == 3 else values


mse = MSE()
crossentropy = CrossEntropy()
logitcrossentropy = LogitCrossEntropy()
binarycrossentropy = BinaryCrossEntropy()


def loss_and_grad(model: Model, loss: Loss, x: Any, target: Any) -> float:
    """Run model(x), the loss against target, and back-propagate: returns the mean loss, grads accumulated."""
    prediction = model(x)
    value, gradient = loss.value_and_gradient(prediction, target)
    model.back(gradient)
    return value
