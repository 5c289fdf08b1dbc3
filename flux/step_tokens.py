"""The fused training step of a token model (`flux.tokens`), its batch spread over threads.

    step = flux.compile_step(flux.TransformerBlock(64, 4, 256), flux.mse, flux.Adam(1e-3))
    loss = step(X, target)          X (N, T, d), target (N, T, out) or class labels (N, T)

One compiled kernel (`flux.generate.token_step`) runs forward, the loss, backward (Σₙ ∂L/∂θ, no ∂L/∂X), the
finiteness checks and the update. With several threads (`flux.set_num_threads`) and enough work, the batch's
sequences are cut into parts: each thread runs `batch_gradients` on its part (numba releases the GIL), the parts'
gradients are summed, then `checked_update` updates once — the same step as on one thread, up to the order of
the floating-point additions (flux.run.threads).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .model import Model
from .run.inputs import as_float_array, to_dtype
from .run.threads import batch_parts
from .run.tokens import as_token_array, token_blas
from .step import TrainStep, labels_or


class TokenTrainStep(TrainStep):
    """step(X, target) → mean loss over every token of every sequence (∂L/∂ℓ = 1/(N·T) per token), after updating
    the model's parameters once; X (N, T, d), target (N, T, out) or class labels (N, T); T may change between calls.
    With several threads, the batch's sequences are cut into parts (flux.run.threads)."""

    def __init__(self, model: Model, loss: Any, optimiser: Any):  # noqa: super().__init__ traces an Objective
        self.model, self.loss, self.optimiser = model, loss, optimiser
        from .pipeline import load_token_step_module  # the facade: generating needs SymPy, `import flux` does not

        self.module = load_token_step_module(model, loss, optimiser, model.dtype)
        self.kernel = self.module.train_step
        # TrainStep._prepare reads the parameters from `objective` (the model: its walk order is the kernel's); they
        # are named as an Objective names them ("model." + the model's name), as TrainStep's helpers expect
        self.objective = model
        self.names = [f"model.{n}" for n in model.params]
        self._scales: dict[int, np.ndarray] = {}
        self._workspaces: list = []  # per part of the batch: ((n, T), the kernel's work buffers): made once, reused
        self._prepared = None
        self._watch(model, loss, optimiser)

    def _step(self, x: Any, target: Any) -> float:
        self._current()
        model = self.model
        params, sizes, gradients = self._prepare()
        x, _ = as_token_array(model, "x", x, sizes[0])
        batch, steps = x.shape[:2]
        if batch == 0 or steps == 0:
            raise ValueError(f"{type(model).__name__}: the batch is empty (x has shape {x.shape}); a training step "
                             "needs at least one token. Nothing was changed")
        target = self._target(target, batch, steps, self.module.output_size(*params)[0])
        scale = self._scales.get(batch * steps)
        if scale is None:  # ∂(mean loss)/∂ℓ per token = 1/(N·T)
            scale = self._scales[batch * steps] = np.full((batch * steps, 1), 1.0 / (batch * steps), dtype=model.dtype)
        kernel_params, states, numbers = self._optimiser_arrays(params)
        parts = batch_parts(batch, batch * steps * sum(p.size for p in params))
        if len(parts) == 1:
            with token_blas():
                loss, status = self.kernel(x, target, scale, *kernel_params, *gradients, *states, *numbers,
                                           *self._work(0, x, kernel_params))
            return self._finish(loss, status, params, gradients, self._prepared[4])

        def part(k: int, start: int, stop: int) -> tuple:  # sequences start…stop−1: their tokens' rows of the scale
            data = (x[start:stop], target[start:stop], scale[start * steps:stop * steps], *kernel_params)
            return data, self._work(k, data[0], kernel_params)

        loss, status = self._split(parts, gradients, part, (*kernel_params, *gradients, *states, *numbers))
        return self._finish(loss, status, params, gradients, self._prepared[4])

    def _work(self, part: int, x: np.ndarray, kernel_params: list) -> tuple:
        """Part `part`'s work buffers for sequences of x's (n, T): made once, again when n or T changes."""
        while len(self._workspaces) <= part:
            self._workspaces.append((None, None))
        if self._workspaces[part][0] != x.shape[:2]:
            self._workspaces[part] = (x.shape[:2], self.module.workspace(x, *kernel_params))
        return self._workspaces[part][1]

    def _target(self, target: Any, batch: int, steps: int, size: int | None) -> np.ndarray:
        """The target as (N, T, out), C-contiguous in the model's dtype (integer class labels (N, T) → one-hot)."""
        model_name = type(self.model).__name__
        if getattr(self.loss, "takes_labels", False) and size is not None:
            target = self.loss.targets_for(target, (batch, steps, size), self.model.dtype)
        array = as_float_array(model_name, "target", "target", target, self.model.dtype)
        if array.ndim != 3 or array.shape[:2] != (batch, steps) or (size is not None and array.shape[2] != size):
            expected = (batch, steps, "out" if size is None else size)
            raise ValueError(f"{model_name}: the loss is on every token's output, so the target must have shape "
                             f"{expected}{labels_or(self.loss, (batch, steps), size)} (x has {batch} sequences "
                             f"of {steps} tokens), got {array.shape}; nothing was changed")
        return np.ascontiguousarray(to_dtype(model_name, "target", array, self.model.dtype, "target"))
