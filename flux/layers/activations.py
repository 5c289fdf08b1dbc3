"""Elementwise functions as models with no parameters: σ(x) computes on arrays, traces on symbols, has `back`."""
from __future__ import annotations

from ..model import Model


class Elementwise(Model):
    """y = f(x), applied to every entry; f is one of `flux.maths.elementwise.FUNCTIONS`."""

    def __init__(self, function: str):
        super().__init__()
        self.function = function

    def forward(self, x):
        from ..maths.nodes import Apply

        return Apply(self.function, x)

    def __repr__(self) -> str:
        return self.function


class SoftmaxFunction(Elementwise):
    """y = softmax(x) = e^{x − max x} / 1ᵀe^{x − max x}, per sample (column-wise), max-shifted."""

    def __init__(self):
        super().__init__("softmax")

    def forward(self, x):
        from ..maths.nodes import Softmax

        return Softmax(x)


σ = sigmoid = Elementwise("σ")
softmax = SoftmaxFunction()
tanh = Elementwise("tanh")
relu = Elementwise("relu")
softplus = Elementwise("softplus")
exp = Elementwise("exp")
log = Elementwise("log")
sqrt = Elementwise("sqrt")
abs = Elementwise("abs")
square = Elementwise("square")

# Activations by name, as Keras takes them (Dense(4, 3, "relu")); both spellings of σ.
BY_NAME: dict[str, Elementwise] = {
    "sigmoid": σ, "σ": σ, "tanh": tanh, "relu": relu, "softplus": softplus, "softmax": softmax, "exp": exp,
    "log": log, "sqrt": sqrt, "abs": abs, "square": square,
}

# NumPy/math/SciPy function names → flux's function with the same maths, for the error that suggests it.
NUMPY_EQUIVALENTS: dict[str, str] = {"absolute": "abs", "fabs": "abs", "expit": "sigmoid"}
