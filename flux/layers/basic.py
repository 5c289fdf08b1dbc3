"""Basic layers and combinators, written in the same syntax a user would write.

Composition is symbolic: a Chain's `forward` calls its layers on symbols, so the whole chain becomes one
expression, derived once and compiled into one forward and one backward kernel.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..model import Model
from ..run.sequences import is_recurrent, walk_submodels
from ..run.state import ChainTape, refuse_written_parameters, runtime_of, write_count
from ..step_checks import own_method
from ..trace.language import concat, is_symbolic, param
from ..trace.tokens import Tokens


class Dense(Model):
    """y = f(W x + b), with W ∈ ℝ^{out×in}, b ∈ ℝ^{out} (f = identity when no activation is given).

    The activation is a flux function (flux.relu), its name ("relu", as Keras takes them), or a function of a symbol
    (lambda z: flux.tanh(z)); a NumPy function (np.tanh) is refused with the flux function to use instead.
    W is initialised He-normal for relu (std √(2/in)) and Glorot-uniform otherwise (±√(6/(in + out))); b = 0.
    `rng` (a seed or a numpy Generator) makes it reproducible.
    """

    W = param("out", "in")
    b = param("out")

    def __init__(self, n_in: int, n_out: int, activation: Any = None, *, rng: Any = None, dtype: Any = None):
        for name, size in (("n_in", n_in), ("n_out", n_out)):
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
                raise TypeError(f"Dense: {name} must be an integer number of features, got {size!r} "
                                f"({type(size).__name__})")
            if size < 1:
                raise ValueError(f"Dense: {name} must be a positive number of features, got {size}")
        activation = as_activation(activation, "Dense")
        generator = np.random.default_rng(rng)
        if activation is not None and getattr(activation, "function", None) == "relu":
            weights = generator.normal(0.0, np.sqrt(2.0 / n_in), size=(n_out, n_in))
        else:
            limit = np.sqrt(6.0 / (n_in + n_out))
            weights = generator.uniform(-limit, limit, size=(n_out, n_in))
        super().__init__(W=weights, b=np.zeros(n_out), dtype=dtype)
        self.activation = activation

    def _check_attributes(self) -> None:
        super()._check_attributes()
        check_activation(self.activation, "Dense")

    def forward(self, x):
        z = self.W * x + self.b
        return z if self.activation is None else self.activation(z)


class Chain(Model):
    """y = fₙ(⋯ f₂(f₁(x))): models stacked like pancakes, compiled as one.

    By default the whole chain is one expression, derived once and compiled into one forward and one backward
    kernel. `fuse=False` runs each layer's own kernels in turn instead (the chain rule applied at run time), for
    chains too deep to derive as one expression.
    """

    def __init__(self, *layers: Any, fuse: bool = True):
        if not layers:
            raise TypeError("Chain needs at least one layer")
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Chain layer {i} is not a model or function: {layer!r}")
        if fuse:
            refuse_tokens_beside_states(layers)
        super().__init__(dtype=common_dtype(layers))
        self.layers = list(layers)
        self.fuse = fuse

    def _check_attributes(self) -> None:
        super()._check_attributes()
        if self.fuse:  # a file rebuilds a Chain without __init__
            refuse_tokens_beside_states(self.layers)

    def __call__(self, *inputs: Any, **options: Any) -> Any:
        if (self.fuse and not runs_alone(self)) or self.__dict__.get("_tracing") \
                or any(map(is_symbolic, inputs)):
            return super().__call__(*inputs, **options)  # options: a recurrent chain's initial=, carry=
        if options:  # a recurrent layer's initial=/carry= name the whole chain's states: no part could take them
            raise TypeError(f"Chain: {', '.join(f'{k}=' for k in options)} cannot be applied: this Chain runs its "
                            "layers in turn (fuse=False, or a layer that adds inputs on every call or has its own "
                            "back), each on x alone; call the recurrent layer with them yourself. Nothing was run")
        (x,) = inputs
        parts, tapes, since = self.parts(), [], write_count()
        for part in parts:
            x = part(x)
            # one function object may appear twice: keep each use's tape (a shared function's is this thread's)
            tapes.append(runtime_of(part).current_tape() if isinstance(part, Model) else None)
        runtime_of(self).keep_tape(ChainTape(tapes, threading.get_ident(), parts, since))
        return x

    def parts(self) -> list:
        """What runs in turn on arrays: with fuse=False every layer; otherwise each layer that adds inputs of its own
        on every call (a training Dropout's mask, PositionalEncoding's table) or whose class has its own `back` (or
        holds one that has) alone, and each run of layers between them as one fused Chain (kept, so that its
        kernels are made once)."""
        if not self.fuse:
            return list(self.layers)
        alone = tuple(runs_alone(layer) for layer in self.layers)
        cached = self.__dict__.get("_parts")
        if cached is not None and cached[0] == alone and all(a is b for a, b in zip(cached[1], self.layers)):
            return cached[2]
        parts, run = [], []
        for layer, by_itself in zip(self.layers, alone):
            if by_itself or not isinstance(layer, Model):
                parts += [run[0] if len(run) == 1 else Chain(*run)] if run else []
                parts.append(layer)
                run = []
            else:
                run.append(layer)
        parts += [run[0] if len(run) == 1 else Chain(*run)] if run else []
        self.__dict__["_parts"] = (alone, list(self.layers), parts)
        return parts

    def back(self, Δ: Any) -> Any:
        if not isinstance(runtime_of(self).current_tape(), ChainTape):  # the forward pass ran fused
            return super().back(Δ)
        tape = runtime_of(self).current_tape()
        if tape is None:
            raise RuntimeError("Chain.back: there is no forward pass to back-propagate through; call chain(x) first "
                               "(each forward pass can be back-propagated once)")
        refuse_written_parameters(self, tape.written)  # before any part's back adds its gradients
        restore = gradients_before_user_back(tape.parts)
        try:
            for layer, layer_tape in zip(reversed(tape.parts), reversed(tape.tapes)):
                runtime_of(layer).keep_tape(layer_tape)
                Δ = layer.back(Δ)
        except BaseException:
            restore()  # the gradients the parts above a user's failing `back` added are taken out again
            raise
        runtime_of(self).drop_tape()
        self._set_has_grads(True)
        return Δ

    def named_submodels(self) -> list:
        return [(str(i), layer) for i, layer in enumerate(self.layers) if isinstance(layer, Model)]

    def adopt_submodels(self, views: dict) -> None:
        self.layers = [views.get(str(i), layer) for i, layer in enumerate(self.layers)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def x(self) -> Tokens | None:
        """The declaration of the Chain's input x: flux.tokens when one of its layers takes sequences of tokens, so a
        Chain of token models is a token model, and the feed-forward layers before the first (an input projection,
        Chain(Dense(5, d), MultiHeadAttention(d, 2))) apply to every token; None: a column vector."""
        declarations = [token_declaration(layer) for layer in self.layers]
        first = next((d for d in declarations if d is not None), None)
        if first is None or declarations[0] is not None:
            return first
        return Tokens("d")  # the first layer's input size, whatever it is called: unified with it when traced

    def __getitem__(self, index: int) -> Any:
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)


class Parallel(Model):
    """y = f₁(x) + f₂(x) + ⋯ (join="sum") or y = [f₁(x); f₂(x); …] (join="concat"): branches side by side."""

    def __init__(self, *branches: Any, join: str = "concat"):
        if join not in ("sum", "concat"):
            raise ValueError(f"Parallel join must be 'sum' or 'concat', got {join!r}")
        if not branches:
            raise TypeError("Parallel needs at least one branch")
        super().__init__(dtype=common_dtype(branches))
        self.branches = list(branches)
        self.join = join

    def named_submodels(self) -> list:
        return [(str(i), b) for i, b in enumerate(self.branches) if isinstance(b, Model)]

    def adopt_submodels(self, views: dict) -> None:
        self.branches = [views.get(str(i), b) for i, b in enumerate(self.branches)]

    def forward(self, x):
        outputs = [branch(x) for branch in self.branches]
        if self.join == "concat":
            return concat(*outputs)
        total = outputs[0]
        for out in outputs[1:]:
            total = total + out
        return total


def Concat(*branches: Any) -> Parallel:
    """y = [f₁(x); f₂(x); …]: branches on the same input, outputs stacked."""
    return Parallel(*branches, join="concat")


def split(x, *sizes: int):
    """Split a column vector into parts of the given sizes (the last part takes the rest): a, b = split(x, 3)."""
    if isinstance(x, np.ndarray):
        return np.split(x, np.cumsum(sizes), axis=-1)
    parts, start = [], 0
    for size in sizes:
        parts.append(x[start:start + size, :])
        start += size
    parts.append(x[start:, :])
    return parts


def check_activation(activation: Any, layer: str) -> None:
    """A TypeError unless `activation` is what the constructor keeps (None, a flux function, a function of a symbol):
    a name such as "relu", set as an attribute or in a file, would otherwise fail only when traced."""
    if as_activation(activation, layer) is not activation:
        raise TypeError(f"{layer}: activation {activation!r} must be the function itself (flux.{activation}), as "
                        f"{layer}(…, {activation!r}) makes it, or None")


def as_activation(activation: Any, layer: str) -> Any:
    """An activation as a layer applies it: None, a flux function, a name of one ("relu", as Keras takes them), or a
    function of a symbol (lambda z: flux.tanh(z)). A NumPy or math function cannot be traced: the error names the
    flux function to use instead."""
    from . import activations

    if activation is None or isinstance(activation, Model):
        return activation
    if isinstance(activation, str):
        function = activations.function_named(activation)
        if function is None:
            raise ValueError(f"{layer}: unknown activation {activation!r}; flux's functions are "
                             f"{', '.join(map(repr, activations.function_names()))} (or pass None for none)")
        return function
    if isinstance(activation, np.ufunc) or getattr(activation, "__module__", None) in ("math", "numpy", "cmath"):
        name = getattr(activation, "__name__", repr(activation))
        flux_name = activations.NUMPY_EQUIVALENTS.get(name, name)
        known = activations.function_names()
        advice = (f"use flux.{flux_name}" if flux_name in known else
                  f"use one of flux's functions ({', '.join(known)}) or write it with them")
        raise TypeError(f"{layer}: the activation {name} is a NumPy/math function, which computes on numbers and "
                        f"cannot be traced into flux's maths; {advice}")
    if not callable(activation):
        raise TypeError(f"{layer}: an activation is a flux function (flux.relu), its name ('relu') or a function of a "
                        f"symbol (lambda z: flux.tanh(z)); got {activation!r} ({type(activation).__name__})")
    return activation


def adds_inputs_per_call(model: Any) -> bool:
    """True when `model` is or holds a layer that adds inputs of its own to its maths on every call (a training
    Dropout's mask, PositionalEncoding's table for the call's T): such a layer runs on arrays, never inside a kernel
    compiled for a whole model."""
    return holds(model, lambda layer: bool(getattr(layer, "adds_inputs_per_call", False)))


def holds(model: Any, is_it) -> bool:
    """True when `model` is a Model for which is_it(model), or holds one (a sub-model, at any depth)."""
    return isinstance(model, Model) and (is_it(model) or any(holds(sub, is_it) for _, sub in model.named_submodels()))


def runs_alone(model: Any) -> bool:
    """True when `model` is or holds a layer that a fused Chain runs on arrays by itself: one that adds inputs of its
    own on every call, or with its own `back` (its class's or its instance's: a Chain's kernels, derived from the
    whole maths, would never call it: flux.step_checks)."""
    return holds(model, lambda layer: bool(getattr(layer, "adds_inputs_per_call", False))
                 or own_method(layer, "back") is not None)


def gradients_before_user_back(parts: list):
    """A function putting back the gradients (values and has-gradients flags) of the lowest part holding a user's
    own `back` and of the parts that run before it in backward — code flux did not check, which may raise after it
    or the parts above it added theirs (a user's `back` calling flux's, then raising; a flux part below refusing the
    Δ it returned: flux's own `back`s check everything before they change anything). Nothing to keep when no part
    holds one."""
    lowest = next((k for k, part in enumerate(parts)
                   if holds(part, lambda layer: own_method(layer, "back") is not None)), None)
    if lowest is None:
        return lambda: None
    above = [part for part in parts[lowest:] if isinstance(part, Model)]
    kept = [(g, g.copy()) for part in above for g in part.flat_arrays()[1]]
    flags = [(model, runtime_of(model).has_grads) for part in above for model in [part, *walk_submodels(part)]]

    def restore() -> None:
        for gradient, values in kept:
            gradient[...] = values
        for model, flag in flags:
            runtime_of(model).has_grads = flag
    return restore


def token_declaration(model: Any) -> Tokens | None:
    """The flux.tokens declaration of a model's first input, if it takes sequences of tokens."""
    if not isinstance(model, Model):
        return None
    names = type(model).input_names()
    declaration = getattr(model, names[0], None) if names else None
    return declaration if isinstance(declaration, Tokens) else None


def refuse_tokens_beside_states(layers) -> None:
    """A fused Chain is one expression: a layer taking sequences of tokens (a d×T matrix per sample) and a recurrent
    one (a time loop over vectors) do not make one yet; each layer's own kernels in turn do (fuse=False)."""
    tokens = [(i, layer) for i, layer in enumerate(layers) if token_declaration(layer) is not None]
    recurrent = [(i, layer) for i, layer in enumerate(layers) if is_recurrent(layer)]
    if tokens and recurrent:
        (i, a), (j, b) = tokens[0], recurrent[0]
        raise TypeError(f"Chain: layer {i} ({type(a).__name__}) takes sequences of tokens and layer {j} "
                        f"({type(b).__name__}) is recurrent; they cannot be fused into one kernel yet: pass "
                        "fuse=False to run each layer's kernels in turn on the (N, T, features) arrays")


def common_dtype(models) -> Any:
    """The dtype shared by the models that have parameters (float32 if none do)."""
    dtypes = {m.dtype for m in models if isinstance(m, Model) and m.params}
    if len(dtypes) > 1:
        raise TypeError(f"layers have different dtypes ({', '.join(sorted(map(str, dtypes)))}); "
                        "build every layer with the same dtype=")
    return dtypes.pop() if dtypes else None
