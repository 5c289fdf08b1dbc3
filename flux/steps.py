"""`compile_step`: the fused training step that fits the model — feed-forward (flux.step.TrainStep), recurrent
(flux.step.RecurrentTrainStep) or token sequences (flux.step_tokens.TokenTrainStep)."""
from __future__ import annotations

from typing import Any

from .model import Model
from .run.sequences import is_recurrent
from .step import RecurrentTrainStep, TrainStep
from .step_tokens import TokenTrainStep


def compile_step(model: Model, loss: Any, optimiser: Any, *, last: bool = False) -> TrainStep:
    """One compiled call per batch: forward, loss, backward and the optimiser's update, fused.

    For a recurrent model (or a Chain holding one), x is (N, T, features) and the loss is the mean over every
    step's output, target (N, T, out), as `loss.value_and_gradient` counts it on sequences (PyTorch's loss on the
    whole output sequence); `last=True` puts the loss on the last step's output only, target (N, out) (Keras'
    `return_sequences=False`). Each call starts from h₀ (zero, or the learnable initial state) as PyTorch's
    `nn.RNN` without h does, and leaves the model's carried state alone. For a token model (`flux.tokens`), X is
    (N, T, d) and the loss is the mean over every token (`TokenTrainStep`).
    """
    from .layers.basic import token_declaration
    from .step_checks import refuse_overridden_methods

    refuse_overridden_methods(model, "compile_step")
    if token_declaration(model) is not None:
        if last:
            raise TypeError(f"compile_step: last=True puts the loss on a recurrent model's last step; "
                            f"{type(model).__name__} takes sequences of tokens, whose loss is on every token")
        return TokenTrainStep(model, loss, optimiser)
    if is_recurrent(model):
        return RecurrentTrainStep(model, loss, optimiser, last=bool(last))
    if last:
        raise TypeError(f"compile_step: last=True puts the loss on a sequence's last step, but "
                        f"{type(model).__name__} is not recurrent (it declares no flux.state)")
    return TrainStep(model, loss, optimiser)

