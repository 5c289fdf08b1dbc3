"""Elementwise functions as models with no parameters: σ(x) computes on arrays, traces on symbols, has `back`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model
from ..symbolic import is_symbolic


class Elementwise(Model):
    """y = f(x), applied to every entry; f is one of `flux.elementwise.FUNCTIONS`."""

    def __init__(self, function: str):
        super().__init__()
        self.function = function

    def structure_config(self) -> tuple:
        return (self.function,)

    def forward(self, x):
        from ..nodes import Apply

        return Apply(self.function, x)

    def __call__(self, x: Any) -> Any:
        if self.__dict__.get("_tracing") or is_symbolic(x):
            return self.forward(x)
        dtype = getattr(x, "dtype", None)
        if dtype is not None and dtype.kind == "f" and dtype != self.dtype and dtype.itemsize in (4, 8):
            self.dtype = np.dtype(dtype)  # a function has no parameters: it computes in its input's precision
            self.__dict__["_program"] = None
        return super().__call__(x)

    def __repr__(self) -> str:
        return self.function


σ = sigmoid = Elementwise("σ")
tanh = Elementwise("tanh")
relu = Elementwise("relu")
softplus = Elementwise("softplus")
exp = Elementwise("exp")
log = Elementwise("log")
sqrt = Elementwise("sqrt")
abs = Elementwise("abs")
square = Elementwise("square")
identity = None  # Dense's default: no activation
