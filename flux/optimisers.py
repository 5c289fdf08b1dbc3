"""Optimisers: each update rule written once, as scalar maths, and evaluated elementwise on whole arrays.

    opt = flux.Adam(lr=1e-3)
    model.update(opt)        # calls opt.apply(model), then zeroes the gradients

An optimiser's `rule` is a plain function run on SymPy symbols, like a model's `forward`: it receives the parameter
θ, its gradient g, the step count t (1 for the first update), one symbol per state array and one per
hyper-parameter, and returns the new value of every state array and of θ. `rules()` hands that maths out as data
(`UpdateRules`) — the same expressions a fused training step prints into its kernel — and `apply` evaluates them
with a small NumPy function lambdified from those expressions (they are elementwise, so NumPy evaluates them as is).

State (velocities, moments) is keyed by the parameter's dotted name, like `model.params`; `state_dict()` and
`load_state_dict()` save and restore it, with the step count and hyper-parameters, so training resumes exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .run.state import parameters_written

if TYPE_CHECKING:  # the annotations name SymPy types; SymPy itself is imported only when a rule is first traced
    import sympy


def sqrt(x):
    """√x, for writing rules (SymPy is imported only when a rule is first traced)."""
    import sympy

    return sympy.sqrt(x)


@dataclass(frozen=True)
class UpdateRules:
    """One optimiser step for a single scalar entry, as SymPy expressions.

    Symbols: `theta` (θ, the parameter), `gradient` (g = ∂L/∂θ), `step` (t, the 1-based count of updates, this one
    included), `state[name]` (the state entry before this step), `hyperparameters[name]`.
    `updates` maps each state name, and "θ", to its new value; every right-hand side is written in the values
    *before* the step (simultaneous assignment), so targets can be written in any order.
    """

    theta: sympy.Symbol
    gradient: sympy.Symbol
    step: sympy.Symbol
    state: dict[str, sympy.Symbol]
    hyperparameters: dict[str, sympy.Symbol]
    updates: dict[str, sympy.Expr]

    @property
    def arguments(self) -> list[sympy.Symbol]:
        """The order in which `Optimiser.update_function` takes its arguments."""
        return [self.theta, self.gradient, self.step, *self.state.values(), *self.hyperparameters.values()]

    @property
    def targets(self) -> list[str]:
        """The order in which `Optimiser.update_function` returns new values: states, then θ."""
        return [*self.state, "θ"]


LARGEST: dict[type, float] = {}  # the largest finite number of each float type (np.finfo(t).max)


class Optimiser:
    """Base class: subclasses declare `state_names`, `defaults` (hyper-parameters) and the scalar `rule`."""

    state_names: tuple[str, ...] = ()
    defaults: dict[str, float] = {}

    @staticmethod
    def rule(θ, g, t, **symbols) -> dict:
        raise NotImplementedError

    def __init__(self, **hyperparameters: float):
        for name, value in hyperparameters.items():
            _check_hyperparameter(type(self).__name__, name, value)
            setattr(self, name, float(value))
        self.step_count = 0
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.state_names}
        self._bound: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None  # name → (shape, dtype) once used

    @property
    def hyperparameters(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in self.defaults}

    def hyperparameters_in(self, dtype: Any, model_name: str) -> list:
        """The hyper-parameters as numbers of `dtype` for a fused step's kernel, or a ValueError naming one that
        is too large for it (lr = 1e39 is inf in float32: the kernel would write inf into every parameter)."""
        real = np.dtype(dtype).type
        largest = LARGEST.get(real) or LARGEST.setdefault(real, float(np.finfo(real).max))
        values = []
        for name in self.defaults:  # on every fused step: no NumPy error state, no warning (a tiny MLP's step is µs)
            value = getattr(self, name)
            if not abs(value) <= largest:  # inf and NaN too
                raise ValueError(f"{type(self).__name__}: {name}={value!r} is not finite in {np.dtype(dtype)}, the "
                                 f"dtype {model_name} computes in; nothing was changed")
            values.append(real(value))
        return values

    @classmethod
    def rules(cls) -> UpdateRules:
        """The update rule as data: symbols in, one SymPy expression per updated quantity out."""
        return _rules_of(cls)

    @classmethod
    def update_function(cls) -> Callable:
        """rules() evaluated on arrays: f(θ, g, t, *state, *hyperparameters) → (*new_state, new θ)."""
        return _update_function_of(cls)

    # ---- applying ----------------------------------------------------------------------------------------

    def apply(self, model) -> None:
        """Update every parameter of `model` in place from `model.grads` (the caller zeroes the gradients).

        Everything is checked, and every new value computed, before anything is assigned: on an error the model's
        parameters and this optimiser's state are exactly as they were.
        """
        params, grads = model.params, model.grads
        self.check_parameters(model, params)
        self.apply_gradients(type(model).__name__, params, grads)

    def apply_gradients(self, model_name: str, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """One step on `params` (by dotted name) from `grads`: all computed and checked finite, then assigned.
        Names sharing one array (a layer used twice) are one parameter: updated once, with one state, kept under
        the first name, from its gradient (which holds every use)."""
        update = self.update_function()
        t = self.step_count + 1
        results, seen = {}, set()
        for name, θ in params.items():
            if id(θ) in seen:  # a layer used twice: one parameter, updated once (its gradient holds both uses)
                continue
            seen.add(id(θ))
            dtype = θ.dtype.type
            state = [self.state[s].get(name) for s in self.state_names]
            state = [np.zeros_like(θ) if s is None else s for s in state]
            hyper = [dtype(v) for v in self.hyperparameters.values()]
            new = [np.asarray(x, dtype=θ.dtype) for x in update(θ, grads[name], dtype(t), *state, *hyper)]
            if not np.isfinite(new[-1]).all():
                bad = "the gradient" if not np.isfinite(grads[name]).all() else "the update"
                raise FloatingPointError(
                    f"{type(self).__name__}: {bad} of parameter {name!r} of {model_name} is not finite; "
                    "no parameter and no optimiser state was changed")
            results[name] = new
        for name, new in results.items():
            np.copyto(params[name], new[-1])
            for state_name, value in zip(self.state_names, new[:-1]):
                self.state[state_name][name] = value
        parameters_written([params[name] for name in results])
        self.step_count = t
        self.bind(params)

    def bind(self, params: dict[str, np.ndarray]) -> None:
        """Remember the parameters' names, shapes and dtypes: this optimiser now belongs to that model."""
        self._bound = {name: (p.shape, p.dtype) for name, p in params.items()}

    def check_parameters(self, model, params: dict[str, np.ndarray] | None = None) -> None:
        """Refuse (ValueError naming the parameter) a model whose parameters are not those this optimiser has been
        updating: other names, shapes or dtypes. A new optimiser accepts any model."""
        params = model.params if params is None else params
        if self._bound is None:
            return
        me, model_name = type(self).__name__, type(model).__name__
        for name, p in params.items():
            if name not in self._bound:
                raise ValueError(f"{me}: {model_name} has a parameter {name!r} this optimiser has never updated; "
                                 f"it was used with a model whose parameters are {', '.join(self._bound)}. "
                                 "Use a new optimiser for a different model.")
            shape, dtype = self._bound[name]
            if p.shape != shape or p.dtype != dtype:
                raise ValueError(f"{me}: parameter {name!r} of {model_name} has shape {p.shape} ({p.dtype}) but this "
                                 f"optimiser's state for {name!r} has shape {shape} ({dtype}); it was used with "
                                 "another model. Use a new optimiser for a different model.")
        missing = [name for name in self._bound if name not in params]
        if missing:
            raise ValueError(f"{me}: {model_name} has no parameter {missing[0]!r}, which this optimiser has been "
                             "updating; it was used with another model. Use a new optimiser for a different model.")

    # ---- saving and restoring ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: hyper-parameters, step count, parameter shapes, state (copies)."""
        return {
            "optimiser": type(self).__name__,
            "hyperparameters": dict(self.hyperparameters),
            "step_count": self.step_count,
            "parameters": None if self._bound is None else
            {name: {"shape": list(shape), "dtype": str(dtype)} for name, (shape, dtype) in self._bound.items()},
            "state": {s: {name: a.copy() for name, a in self.state[s].items()} for s in self.state_names},
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore `state_dict()` output; everything is checked first, so an error leaves this optimiser unchanged."""
        me = type(self).__name__
        if not isinstance(saved, dict) or saved.get("optimiser") != me:
            found = saved.get("optimiser") if isinstance(saved, dict) else type(saved).__name__
            raise ValueError(f"{me}.load_state_dict: this state belongs to {found!r}, not {me}")
        hyper = saved.get("hyperparameters", {})
        if set(hyper) != set(self.defaults):
            raise ValueError(f"{me}.load_state_dict: hyper-parameters {sorted(hyper)} differ from "
                             f"{sorted(self.defaults)}")
        for name, value in hyper.items():
            _check_hyperparameter(me, name, value)
        step_count = saved.get("step_count")
        if not isinstance(step_count, (int, np.integer)) or step_count < 0:
            raise ValueError(f"{me}.load_state_dict: step_count must be a non-negative integer, got {step_count!r}")
        parameters = saved.get("parameters")
        bound = None if parameters is None else {
            name: (tuple(int(d) for d in spec["shape"]), np.dtype(spec["dtype"])) for name, spec in parameters.items()}
        state = saved.get("state", {})
        if set(state) != set(self.state_names):
            raise ValueError(f"{me}.load_state_dict: state arrays {sorted(state)} differ from {list(self.state_names)}")
        for s in self.state_names:
            for name, array in state[s].items():
                if bound is None or name not in bound:
                    raise ValueError(f"{me}.load_state_dict: state {s!r} has an entry for {name!r}, "
                                     "which is not one of the optimiser's parameters")
                if not isinstance(array, np.ndarray) or (array.shape, array.dtype) != bound[name]:
                    got = (array.shape, array.dtype) if isinstance(array, np.ndarray) else type(array).__name__
                    raise ValueError(f"{me}.load_state_dict: state {s!r} of parameter {name!r} should be an array of "
                                     f"shape {bound[name][0]} ({bound[name][1]}), got {got}")
        for name, value in hyper.items():
            setattr(self, name, float(value))
        self.step_count = int(step_count)
        self._bound = bound
        self.state = {s: {name: np.array(a, copy=True) for name, a in state[s].items()} for s in self.state_names}

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v:g}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({hyper}; {self.step_count} steps)"


# ---- the optimisers: each is its equation, written once --------------------------------------------------------


class SGD(Optimiser):
    """Gradient descent: θ ← θ − lr·g."""

    defaults = {"lr": None}

    def __init__(self, lr: float):
        super().__init__(lr=lr)

    @staticmethod
    def rule(θ, g, t, lr):
        return {"θ": θ - lr * g}


class Momentum(Optimiser):
    """Gradient descent with momentum: v ← ρ·v − lr·g;  θ ← θ + v."""

    state_names = ("v",)
    defaults = {"lr": None, "rho": 0.9}

    def __init__(self, lr: float, rho: float = 0.9):
        super().__init__(lr=lr, rho=rho)

    @staticmethod
    def rule(θ, g, t, v, lr, rho):
        v = rho * v - lr * g
        return {"v": v, "θ": θ + v}


class Nesterov(Momentum):
    """Nesterov momentum: v ← ρ·v − lr·g;  θ ← θ + ρ·v − lr·g (the gradient is taken at θ, as in Flux.jl)."""

    @staticmethod
    def rule(θ, g, t, v, lr, rho):
        v = rho * v - lr * g
        return {"v": v, "θ": θ + rho * v - lr * g}


class RMSProp(Optimiser):
    """RMSProp: a ← ρ·a + (1 − ρ)·g²;  θ ← θ − lr·g / (√a + ε)."""

    state_names = ("a",)
    defaults = {"lr": 1e-3, "rho": 0.9, "eps": 1e-8}

    def __init__(self, lr: float = 1e-3, rho: float = 0.9, eps: float = 1e-8):
        super().__init__(lr=lr, rho=rho, eps=eps)

    @staticmethod
    def rule(θ, g, t, a, lr, rho, eps):
        a = rho * a + (1 - rho) * g**2
        return {"a": a, "θ": θ - lr * g / (sqrt(a) + eps)}


class Adam(Optimiser):
    """Adam: m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;  θ ← θ − lr·m̂ / (√v̂ + ε),
    with the bias corrections m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)."""

    state_names = ("m", "v")
    defaults = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(lr=lr, beta1=beta1, beta2=beta2, eps=eps)

    @staticmethod
    def rule(θ, g, t, m, v, lr, beta1, beta2, eps):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
        return {"m": m, "v": v, "θ": θ - lr * m_hat / (sqrt(v_hat) + eps)}


BUILT_IN = (SGD, Momentum, Nesterov, RMSProp, Adam)  # their kernels ship compiled once: flux/optimiser_updates.py


# ---- from the rule to data and to a NumPy function (computed once per class) ------------------------------------

_RULES: dict[type, UpdateRules] = {}
_FUNCTIONS: dict[type, Callable] = {}


def _rules_of(cls: type) -> UpdateRules:
    import sympy

    if cls not in _RULES:
        θ, g = sympy.Symbol("θ", real=True), sympy.Symbol("g", real=True)
        t = sympy.Symbol("t", positive=True, integer=True)
        state = {name: sympy.Symbol(name, real=True) for name in cls.state_names}
        hyper = {name: sympy.Symbol(name, nonnegative=True) for name in cls.defaults}
        updates = cls.rule(θ, g, t, **state, **hyper)
        expected = set(cls.state_names) | {"θ"}
        if set(updates) != expected:
            raise TypeError(f"{cls.__name__}.rule must return new values for {sorted(expected)}, got {sorted(updates)}")
        ordered = {name: sympy.sympify(updates[name]) for name in [*cls.state_names, "θ"]}
        _RULES[cls] = UpdateRules(θ, g, t, state, hyper, ordered)
    return _RULES[cls]


def _update_function_of(cls: type) -> Callable:
    import sympy

    if cls not in _FUNCTIONS:
        rules = _rules_of(cls)
        # Elementwise scalar maths, so NumPy evaluates it on whole arrays; cse shares m̂, v̂ etc. between outputs.
        _FUNCTIONS[cls] = sympy.lambdify(rules.arguments, list(rules.updates.values()), modules="numpy", cse=True)
    return _FUNCTIONS[cls]


def check_learning_rate(owner: str, lr: Any, dtype: Any) -> None:
    """lr as SGD(lr) checks it (a finite non-negative number), and representable in the model's dtype."""
    _check_hyperparameter(owner, "lr", lr)
    with np.errstate(over="ignore"):
        if not np.isfinite(np.dtype(dtype).type(lr)):
            raise ValueError(f"{owner}: lr={lr!r} is too large for {np.dtype(dtype)}, the dtype the model computes in")


def _check_hyperparameter(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{owner}: hyper-parameter {name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: hyper-parameter {name} must be finite and non-negative, got {value!r}")
    if name in ("rho", "beta1", "beta2") and not value < 1:
        raise ValueError(f"{owner}: hyper-parameter {name} must be in [0, 1), got {value!r}")
