"""flux: write a layer once, as mathematics; flux derives, simplifies and compiles the rest."""
from .checks import GradientCheckError, gradcheck
from .show.layout import latex
from .io import load, load_optimiser, register, save
from .layers.activations import (
    Elementwise, abs, elementwise, elu, erf, exp, gelu, leakyrelu, log, relu, sigmoid, silu, softmax, softplus, softsign,
    sqrt, square, swish, tanh, σ,
)
from .layers.basic import Chain, Concat, Dense, Parallel, split
from .layers.recurrent import GRU, LSTM, Recurrent
from .losses import (
    Loss, binarycrossentropy, crossentropy, logitbinarycrossentropy, logitcrossentropy, loss_and_grad, mse, onehot,
)
from .model import Model
from .optimisers import SGD, Adam, Momentum, Nesterov, Optimiser, RMSProp
from .step import TrainStep, compile_step
from .tiers import compile
from .trace.language import DefinitionError, concat, hadamard, param, state, total
from .callbacks import EarlyStopping, History
from .train import train

__version__ = "0.1.0"

# `abs` is flux.abs but stays out of __all__: `from flux import *` must not shadow Python's builtin abs.
__all__ = [
    "Model", "param", "state", "hadamard", "concat", "total", "latex",
    "σ", "sigmoid", "tanh", "relu", "softplus", "exp", "log", "sqrt", "square", "Elementwise",
    "elementwise", "erf", "gelu", "silu", "swish", "elu", "leakyrelu", "softsign",
    "softmax", "Dense", "Chain", "Parallel", "Concat", "split", "Recurrent", "LSTM", "GRU",
    "Loss", "mse", "crossentropy", "logitcrossentropy", "binarycrossentropy", "logitbinarycrossentropy",
    "loss_and_grad", "onehot",
    "gradcheck", "GradientCheckError", "DefinitionError",
    "Optimiser", "SGD", "Momentum", "Nesterov", "RMSProp", "Adam",
    "compile_step", "TrainStep", "train", "History", "EarlyStopping", "save", "load", "load_optimiser", "register",
]
