"""flux: write a layer once, as mathematics; flux derives, simplifies and compiles the rest."""
from .checks import GradientCheckError, gradcheck
from .show.layout import latex
from .io import load, load_optimiser, register, save
from .layers.activations import (
    Elementwise, abs, elementwise, exp, log, relu, sigmoid, softmax, softplus, sqrt, square, tanh, σ,
)
from .layers.basic import Chain, Concat, Dense, Parallel, split
from .layers.attention import MultiHeadAttention, TransformerBlock
from .layers.dropout import Dropout
from .layers.positional import PositionalEncoding, positional_encoding
from .layers.gates import GLU, Bilinear, Highway, SkipConnection
from .layers.normalisation import LayerNorm, RMSNorm
from .layers.recurrent import GRU, LSTM, Recurrent
from .losses import (
    Loss, binarycrossentropy, crossentropy, logitbinarycrossentropy, logitcrossentropy, loss_and_grad, mse, onehot,
)
from .model import Model
from .optimisers import SGD, Adam, Momentum, Nesterov, Optimiser, RMSProp
from .run.threads import get_num_threads, set_num_threads
from .step import TrainStep
from .steps import compile_step
from .tiers import compile
from .trace.language import DefinitionError, concat, hadamard, hadamard_power, mean, norm, param, state, total
from .trace.tokens import causal, tokens
from .callbacks import EarlyStopping, History
from .train import train

__version__ = "0.1.0"

# `abs` is flux.abs but stays out of __all__: `from flux import *` must not shadow Python's builtin abs.
__all__ = [
    "Model", "param", "state", "tokens", "causal", "hadamard", "hadamard_power", "concat", "total", "mean", "norm", "latex",
    "σ", "sigmoid", "tanh", "relu", "softplus", "exp", "log", "sqrt", "square", "Elementwise",
    "elementwise", "erf", "gelu", "silu", "swish", "elu", "leakyrelu", "softsign",
    "softmax", "Dense", "Chain", "Parallel", "Concat", "split", "Recurrent", "LSTM", "GRU",
    "LayerNorm", "RMSNorm", "Highway", "GLU", "Bilinear", "SkipConnection", "Dropout",
    "MultiHeadAttention", "TransformerBlock", "PositionalEncoding", "positional_encoding",
    "Loss", "mse", "crossentropy", "logitcrossentropy", "binarycrossentropy", "logitbinarycrossentropy",
    "loss_and_grad", "onehot",
    "gradcheck", "GradientCheckError", "DefinitionError",
    "Optimiser", "SGD", "Momentum", "Nesterov", "RMSProp", "Adam",
    "compile_step", "TrainStep", "set_num_threads", "get_num_threads", "train", "History", "EarlyStopping", "save", "load", "load_optimiser", "register",
]


def __getattr__(name: str):
    """flux.erf, flux.gelu, …: every function of flux's table of elementwise functions (flux.maths.elementwise),
    made on first use (reading the table imports SymPy, which `import flux` does not)."""
    from .layers.activations import function_named

    function = None if name.startswith("__") else function_named(name)
    if function is None:
        raise AttributeError(f"module 'flux' has no attribute {name!r}")
    return function
