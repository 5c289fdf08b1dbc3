"""The fused training step of a token model (inputs declared with `flux.tokens`): one kernel call per batch.

    step = flux.compile_step(flux.TransformerBlock(64, 4, 256), flux.mse, flux.Adam(1e-3))
    loss = step(X, target)        X (N, T, d), target (N, T, out); T may change from call to call

The loss is the mean over every token of every sequence (ℓ per token, as `loss.value_and_gradient` counts
sequences), ∂L/∂ℓ = 1/(N·T). The kernel (`flux.generate.token_step`) runs forward, loss, backward (Σₙ ∂L/∂θ, no
∂L/∂X), checks that the loss and every gradient are finite, and only then applies the optimiser's update; otherwise
nothing changes and `FloatingPointError` names the culprit.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .model import Model
from .run.inputs import as_float_array, to_dtype
from .run.tokens import as_token_array, token_blas
from .step import TrainStep
from .step import compile_step as compile_feedforward_or_recurrent_step


def compile_step(model: Model, loss: Any, optimiser: Any, *, last: bool = False) -> TrainStep:
    """`flux.compile_step`: a token model's fused step (`TokenTrainStep`), any other model's `flux.step.compile_step`
    (feed-forward, or recurrent with `last`)."""
    from .layers.basic import token_declaration

    if token_declaration(model) is None:
        return compile_feedforward_or_recurrent_step(model, loss, optimiser, last=last)
    if last:
        raise TypeError(f"compile_step: last=True puts the loss on a recurrent model's last step; "
                        f"{type(model).__name__} takes sequences of tokens, whose loss is on every token")
    return TokenTrainStep(model, loss, optimiser)


class TokenTrainStep(TrainStep):
    """step(X, target) → mean loss over every token, after updating the model's parameters once."""

    def __init__(self, model: Model, loss: Any, optimiser: Any):  # noqa: super().__init__ traces an Objective
        self.model, self.loss, self.optimiser = model, loss, optimiser
        self.module = load_token_step_module(model, loss, optimiser, model.dtype)
        self.kernel = self.module.train_step
        # TrainStep._prepare reads the parameters from `objective` (the model: its walk order is the kernel's); they
        # are named as an Objective names them ("model." + the model's name), as TrainStep's helpers expect
        self.objective = model
        self.names = [f"model.{n}" for n in model.params]
        self._scales: dict[int, np.ndarray] = {}
        self._prepared = None

    def __call__(self, x: Any, target: Any) -> float:
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
        with token_blas():
            loss, status = self.kernel(x, target, scale, *kernel_params, *gradients, *states, *numbers)
        return self._finish(loss, status, params, gradients, self._prepared[4])

    def _target(self, target: Any, batch: int, steps: int, size: int | None) -> np.ndarray:
        """The target as (N, T, out), C-contiguous in the model's dtype (integer class labels (N, T) → one-hot)."""
        model_name = type(self.model).__name__
        if getattr(self.loss, "takes_labels", False) and size is not None:
            target = self.loss.targets_for(target, (batch, steps, size), self.model.dtype)
        array = as_float_array(model_name, "target", "target", target, self.model.dtype)
        if array.ndim != 3 or array.shape[:2] != (batch, steps) or (size is not None and array.shape[2] != size):
            expected = (batch, steps, "out" if size is None else size)
            raise ValueError(f"{model_name}: the loss is on every token's output, so the target must have shape "
                             f"{expected} (x has {batch} sequences of {steps} tokens), got {array.shape}; "
                             "nothing was changed")
        return np.ascontiguousarray(to_dtype(model_name, "target", array, self.model.dtype, "target"))


def load_token_step_module(model: Model, loss: Any, optimiser: Any, dtype) -> Any:
    """The fused token step's module, keyed by the model's and the loss's traced maths, the optimiser's rule (its
    exact SymPy form) and the dtype (numba only: token models have no NumPy-tier step)."""
    from sympy import srepr

    from . import cache
    from .pipeline import derivation_of, maths_of

    dtype = np.dtype(dtype)
    rules = optimiser.rules()
    rule_text = repr((list(rules.state), list(rules.hyperparameters),
                      [(str(k), srepr(v)) for k, v in rules.updates.items()]))
    key = cache.module_key("token-step", maths_of(model).identity, maths_of(loss).identity,
                           type(optimiser).__name__, rule_text, dtype.name)
    name = f"step_{type(model).__name__.lower()}_{type(optimiser).__name__.lower()}_{dtype.name}"

    def generate() -> str:
        from .generate.token_step import generate_token_step_source

        return generate_token_step_source(derivation_of(model), derivation_of(loss), rules,
                                          type(optimiser).__name__, dtype, key)

    return cache.load_module(name, key, generate)
