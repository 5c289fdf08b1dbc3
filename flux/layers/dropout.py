"""Dropout: a random mask while training, the identity in evaluation; the mask is an input of the traced maths.

    drop = flux.Dropout(0.5, rng=0)    # seedable: the same seed draws the same masks
    y = drop(x)                        # training mode (the default): y = m ⊙ x / (1 − p), m drawn for this call
    dx = drop.back(Δ)                  # ∂L/∂x = m ⊙ Δ / (1 − p), the same m: the gradient is exact
    drop.eval(); drop(x)               # evaluation: y = x;  drop.train() draws masks again
    y = drop(x, m)                     # an explicit mask (0s and 1s): back returns (∂L/∂x, ∂L/∂m)

`model.train()` / `model.eval()` set the mode of a model and all its sub-models, as in PyTorch. A model compiled
as one kernel is traced on symbols, where a mask drawn per call cannot be an input yet: in evaluation Dropout is left
out of its maths (the identity, so a Chain fuses again); in training mode a Chain holding a Dropout runs each layer's
own kernels in turn (Dropout draws its mask) and `flux.train` trains it without the fused step. Another model with a
Dropout inside is refused in training mode, saying so.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..run.inputs import as_float_array
from ..run.state import runtime_of
from ..trace.language import DefinitionError, hadamard, is_symbolic
from .arguments import check_probability


# NumPy's bit generators, by the name their state carries.
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


class IdentityTape:
    """What an evaluation-mode call leaves for `back`: nothing but the fact that there was one."""


class Dropout(Model):
    """Dropout (Srivastava et al. 2014): each entry of x is kept with probability 1 − p, and scaled so that its
    expectation is unchanged,

        y = m ⊙ x / (1 − p),   mᵢ ~ Bernoulli(1 − p) drawn afresh for every call, in training mode;
        y = x                  in evaluation mode (`eval()`).

    The mask m is the second input of the maths (`forward(x, m)`), so ∂L/∂x = m ⊙ Δ / (1 − p) uses the very mask
    the forward pass drew. `rng` (a seed, or a numpy Generator whose state is copied) makes the masks reproducible;
    the state is kept as plain data, so `flux.save` keeps it and a loaded model goes on drawing the same masks.
    """

    per_call_attributes = ("_rng_state", "_mask_given")  # the generator moves on each call; not maths

    def __init__(self, p: float = 0.5, *, rng: Any = None):
        check_probability("Dropout", p)
        super().__init__()
        self.p = float(p)
        # the generator's state as plain data, so that flux.save keeps it and a loaded model draws the same masks
        self._rng_state = np.random.default_rng(rng).bit_generator.state
        self._mask_given = False

    def _check_attributes(self) -> None:
        super()._check_attributes()
        check_probability("Dropout", self.p)

    def forward(self, x, m):
        return hadamard(m, x) / (1 - self.p)

    @property
    def adds_inputs_per_call(self) -> bool:
        """A mask is drawn for every call in training mode: the layer then runs on arrays, outside fused kernels."""
        return self.training and self.p > 0

    def __call__(self, x: Any, m: Any = None) -> Any:
        """y = dropout(x): with a mask drawn now (training), or x itself (evaluation); dropout(x, m) uses m."""
        if self.__dict__.get("_tracing") or is_symbolic(x):
            if m is not None:
                return self.forward(x, m)
            if not self.training or self.p == 0:
                return x
            raise DefinitionError(
                f"Dropout({self.p}) is in training mode inside a model compiled as one kernel: its mask, drawn per "
                "call, would have to be an input of the whole model, which flux cannot add yet. Put it in a flux.Chain "
                "(in training mode a Chain with a Dropout runs each layer's own kernels, and flux.train trains it "
                "step by step), or call model.eval() for inference, where Dropout is the identity")
        self._mask_given = m is not None
        if m is None:
            if not self.training:
                runtime_of(self).keep_tape(IdentityTape())
                return as_float_array("Dropout", "input", "x", x, self.dtype)
            m = self.mask_like(x)
        return super().__call__(x, m)

    def back(self, Δ: Any) -> Any:
        """∂L/∂x = m ⊙ Δ / (1 − p) (Δ itself in evaluation); (∂L/∂x, ∂L/∂m) when the mask was given."""
        runtime = runtime_of(self)
        if isinstance(runtime.current_tape(), IdentityTape):
            runtime.drop_tape()
            return Δ
        gradients = super().back(Δ)
        return gradients if self._mask_given else gradients[0]

    def mask_like(self, x: Any) -> np.ndarray:
        """A mask of x's shape: 1 with probability 1 − p, else 0, in x's floating-point precision."""
        x = as_float_array("Dropout", "input", "x", x, self.dtype)
        name = self._rng_state.get("bit_generator")
        if name not in BIT_GENERATORS:  # the state may come from a file: never call what it names
            raise ValueError(f"Dropout: unknown random bit generator {name!r}; flux knows {', '.join(BIT_GENERATORS)}")
        bits = getattr(np.random, name)()
        bits.state = self._rng_state
        mask = (np.random.Generator(bits).random(x.shape) >= self.p).astype(x.dtype)
        self._rng_state = bits.state
        return mask


def draws_masks(model: Any) -> bool:
    """True when a Dropout in training mode (p > 0) is inside the model: it cannot be compiled as one kernel yet."""
    if isinstance(model, Dropout):
        return model.training and model.p > 0
    return isinstance(model, Model) and any(draws_masks(sub) for _, sub in model.named_submodels())
