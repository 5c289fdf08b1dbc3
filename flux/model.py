"""Model: a function with parameters that can be differentiated.

    y  = model(x)        # forward; keeps what backward needs
    dx = model.back(Δ)   # returns ∂L/∂x and adds Σₙ ∂L/∂W into model.grads["W"]
    model.update(lr=0.1) # W ← W − lr·∂L/∂W for every parameter, then gradients are zeroed

A Model holds arrays and nothing clever. Its maths (`derivation`) and kernels (`kernels`) belong to its traced
expression (what `forward` computes on symbols, whatever the class or sizes), made once and shared (flux.pipeline).
"""
from __future__ import annotations

import types
from typing import Any, Iterator

import numpy as np

from .parameters import Parameters
from .run.contents import changed_in_place
from .run.inputs import own_float_copy
from .run.feedforward import run_backward, run_forward, running_program
from .run.sequences import current_state, reset_state, run_step
from .run.state import (RuntimeState, configuration_changed, configuration_generation, parameter_generation,
                        parameters_replaced, parameters_written, runtime_of)
from .step_checks import refuse_skipped_submodel_methods
from .trace.language import Param, State, is_symbolic
from .trace.tracing import signature_inputs

DEFAULT_DTYPE = np.float32
_UNSET = object()  # an attribute a model did not have


class RendersOnClassAndInstance:
    """`_repr_latex_` for both a model class and its instances. IPython takes a class's `_repr_latex_` only if it
    is a method bound to that class, so on the class this hands out one bound to the class."""

    def __get__(self, instance, owner):
        from .show.layout import class_latex, model_latex

        if instance is None:
            return types.MethodType(class_latex, owner)
        return types.MethodType(model_latex, instance)


class ModelClass(type):
    """The type of model classes: it gives the classes themselves `derivation` and `kernels`."""

    @property
    def derivation(cls):
        """The class's maths and derived gradients (SymPy expressions), traced with symbolic sizes."""
        from .pipeline import derivation_of

        return derivation_of(cls)

    @property
    def kernels(cls):
        """The class's compiled program (float32): `.forward`, `.backward`, each with `.source`."""
        from .pipeline import program_of

        return program_of(cls, DEFAULT_DTYPE)

    def __call__(cls, *args, **kwargs):
        model = super().__call__(*args, **kwargs)
        runtime_of(model).built = True  # from now on, changing an attribute forward may read re-traces the model
        return model


class Model(metaclass=ModelClass):
    """Base class: declare parameters with `flux.param`, write `forward` in maths."""

    def __init__(self, *, dtype: Any = None, **values: Any):
        cls = type(self)
        self.__dict__.update(_params={}, _grads={}, _states=dict.fromkeys(cls.declared_states()),
                             _runtime=RuntimeState(built=False))
        declared, slots = cls.declared_params(), cls.declared_slots()
        if dtype is None:  # a composite computes in its sub-models' precision
            dtypes = {v.dtype for k, v in values.items() if k in slots and isinstance(v, Model) and v.params}
            dtype = dtypes.pop() if len(dtypes) == 1 else None
        self.dtype = np.dtype(dtype or DEFAULT_DTYPE)
        self._check_dtype()
        initial = {f"{name}0": s for name, s in cls.declared_states().items() if s.learnable}
        unknown = sorted(set(values) - set(declared) - set(slots) - set(initial))
        if unknown:
            raise TypeError(f"{cls.__name__} has no parameter or sub-model {', '.join(unknown)}; "
                            f"it declares {', '.join(list(declared) + list(slots)) or 'none'}")
        for name, slot in slots.items():
            sub = values.get(name)
            if not isinstance(sub, slot):
                raise TypeError(f"{cls.__name__} needs {name}= an instance of {slot.__name__}, got {sub!r}")
            if sub.params and sub.dtype != self.dtype:
                raise TypeError(f"{cls.__name__}: sub-model {name} computes in {sub.dtype} but the model in "
                                f"{self.dtype}; build them with the same dtype=")
            self.__dict__[name] = sub
        for name, spec in declared.items():
            if name not in values:
                raise TypeError(f"{cls.__name__} needs the parameter {name} "
                                f"(shape {' × '.join(map(str, spec.dims))}): pass {name}=array")
            self._assign_param(name, values[name])
        self._check_param_sizes()
        for name, spec in initial.items():
            self._assign_initial_state(name, spec, values.get(name))

    # ---- declarations ---------------------------------------------------------------------------------

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._declarations = None  # computed on first use, once per class

    @classmethod
    def _declared(cls) -> tuple:
        if cls.__dict__.get("_declarations") is None:
            params, states, slots = {}, {}, {}
            for klass in reversed(cls.__mro__):
                for name, value in vars(klass).items():
                    if isinstance(value, Param):
                        params[name] = value
                    elif isinstance(value, State):
                        states[name] = value
                    elif isinstance(value, type) and issubclass(value, Model) and not name.startswith("_"):
                        slots[name] = value  # a sub-model declared in the class body as `a = Perceptron`
            cls._declarations = (params, states, slots)
        return cls._declarations

    @classmethod
    def declared_params(cls) -> dict[str, Param]:
        return cls._declared()[0]

    @classmethod
    def declared_states(cls) -> dict[str, State]:
        return cls._declared()[1]

    @classmethod
    def declared_slots(cls) -> dict[str, type]:
        """Sub-models declared in the class body as `a = Perceptron`."""
        return cls._declared()[2]

    @classmethod
    def input_names(cls) -> list[str]:
        return signature_inputs(cls.forward)

    def named_submodels(self) -> list[tuple[str, "Model"]]:
        return [(name, self.__dict__[name]) for name in type(self).declared_slots()]

    def adopt_submodels(self, views: dict) -> None:
        """Tracing hook: replace sub-models by their symbolic views."""
        self.__dict__.update(views)

    training = True  # train()/eval(): flux.Dropout draws its masks only while training
    per_call_attributes: tuple = ()  # attributes a call sets that forward never reads (they never re-trace)

    def train(self, mode: bool = True) -> "Model":
        """Training mode (`eval()` leaves it) for this model and its sub-models; returns the model, as PyTorch's."""
        object.__setattr__(self, "training", bool(mode))
        configuration_changed()  # a fused parent's maths depends on its sub-models' modes: trace it again
        for _, model in self.named_submodels():
            model.train(mode)
        return self

    def eval(self) -> "Model":
        """Evaluation mode for this model and its sub-models: flux.Dropout is the identity."""
        return self.train(False)

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} must define forward(self, x)")

    # ---- parameters -----------------------------------------------------------------------------------

    def _assign_param(self, name: str, value: Any) -> None:
        spec = type(self).declared_params()[name]
        array = value if is_symbolic(value) else own_float_copy(type(self).__name__, "parameter", name, value, self.dtype)
        if not is_symbolic(value) and array.ndim != len(spec.dims):
            raise ValueError(f"{type(self).__name__}: parameter {name} must have {len(spec.dims)} dimension(s) "
                             f"({' × '.join(map(str, spec.dims))}), got shape {array.shape}")
        self.__dict__["_params"][name] = array
        if not is_symbolic(value):
            self.__dict__["_grads"][name] = np.zeros_like(array)
            runtime_of(self).program = None  # sizes may have changed: check them again before running
            parameters_replaced()
            parameters_written([array])  # a forward pass made before reads the old array: `back` refuses it

    def _assign_initial_state(self, name: str, spec: State, value: Any) -> None:
        """A learnable initial state h₀ (`flux.state("h", learnable=True)`) is the parameter "h0", zero by default."""
        dim = spec.dims[0]
        sizes = {d: self._params[p].shape[axis] for p, s in type(self).declared_params().items()
                 for axis, d in enumerate(s.dims)}
        size = dim if isinstance(dim, int) else sizes.get(dim)
        if value is None and size is None:
            raise TypeError(f"{type(self).__name__}: no parameter fixes the size {dim!r} of the learnable initial "
                            f"state {name}; pass {name}=array")
        array = np.zeros(size, dtype=self.dtype) if value is None else \
            own_float_copy(type(self).__name__, "initial state", name, value, self.dtype)
        if array.ndim != 1 or (size is not None and array.shape[0] != size):
            raise ValueError(f"{type(self).__name__}: initial state {name} must have shape ({size},), got {array.shape}")
        self.__dict__["_params"][name] = array
        self.__dict__["_grads"][name] = np.zeros_like(array)
        parameters_replaced()

    def _check_dtype(self) -> None:
        if not isinstance(self.dtype, np.dtype) or self.dtype.kind != "f" or self.dtype.itemsize not in (4, 8):
            raise TypeError(f"{type(self).__name__}: dtype must be float32 or float64, got {self.dtype}")

    def _check_attributes(self) -> None:
        """What __init__ checks of the plain attributes (dtype; a layer adds its own arguments): flux.load calls it
        on a model it rebuilds from a file without calling __init__."""
        self._check_dtype()

    def _check_param_sizes(self) -> None:
        sizes: dict = {}
        for name, spec in type(self).declared_params().items():
            for axis, dim in enumerate(spec.dims):
                actual = self._params[name].shape[axis]
                expected = dim if isinstance(dim, int) else sizes.setdefault(dim, (actual, name))[0]
                if actual != expected:
                    owner = sizes.get(dim, (None, "its declaration"))[1]
                    raise ValueError(f"{type(self).__name__}: parameter {name} has {actual} along {dim!r} "
                                     f"(axis {axis}) but {owner} has {expected}")

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every parameter array, by dotted name (own first, then sub-models in order). `params[name] = array`
        copies the values into that parameter (shape checked)."""
        return Parameters(self, self._walk("_params"))

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The accumulated gradient of every parameter, by dotted name."""
        return dict(self._walk("_grads"))

    def flat_arrays(self) -> tuple[list, list]:
        """(parameters, gradients) as lists in kernel order; cached until any parameter is reassigned or any
        attribute changes (`chain.layers = [b, a]` changes the order)."""
        runtime = self.__dict__.get("_runtime") or runtime_of(self)
        cached = runtime.flat
        generation = (parameter_generation(), configuration_generation())
        if cached is None or cached[0] != generation:
            cached = (generation, [a for _, a in self._walk("_params")], [g for _, g in self._walk("_grads")])
            runtime.flat = cached
        return cached[1], cached[2]

    def _walk(self, field: str) -> Iterator[tuple[str, np.ndarray]]:
        yield from self.__dict__[field].items()
        for name, sub in self.named_submodels():
            for key, value in sub._walk(field):
                yield f"{name}.{key}", value

    def zero_grad(self) -> None:
        for g in self.flat_arrays()[1]:
            g.fill(0)
        self._set_has_grads(False)

    def _set_has_grads(self, value: bool) -> None:
        runtime_of(self).has_grads = value
        for _, sub in self.named_submodels():
            sub._set_has_grads(value)

    def update(self, optimiser: Any = None, *, lr: float | None = None) -> None:
        """Apply the accumulated gradients (W ← W − lr·∂L/∂W, or with an optimiser), then zero them.

        Every new value is computed and checked finite before any is assigned: on an error (FloatingPointError
        naming the parameter) the parameters and gradients are exactly as they were."""
        name = type(self).__name__
        if optimiser is not None and lr is not None:
            raise TypeError(f"{name}.update takes an optimiser or lr=, not both")
        if optimiser is not None and not hasattr(optimiser, "apply"):
            hint = (f"; for plain gradient descent write {name.lower()}.update(lr={optimiser!r})"
                    if isinstance(optimiser, (int, float, np.number)) and not isinstance(optimiser, bool) else "")
            raise TypeError(f"{name}.update: expected an optimiser (e.g. flux.Adam()), got {optimiser!r}{hint}")
        if optimiser is None and lr is None:
            raise TypeError(f"{name}.update needs an optimiser or lr=")
        if lr is not None:
            from .optimisers import check_learning_rate

            check_learning_rate(f"{name}.update", lr, self.dtype)
        if not runtime_of(self).has_grads:
            raise RuntimeError(f"{name}.update: no gradient has been accumulated since the last "
                               "update; call model(x) and model.back(Δ) first")
        if optimiser is not None:
            optimiser.apply(self)
        else:
            rate, grads, computed, seen = self.dtype.type(lr), self.grads, [], set()
            with np.errstate(over="ignore", invalid="ignore"):
                for key, p in self.params.items():
                    if id(p) in seen:  # a layer used twice shares one array (and one gradient): update it once
                        continue
                    seen.add(id(p))
                    value = p - rate * grads[key]
                    if not np.isfinite(value).all():
                        bad = "the gradient" if not np.isfinite(grads[key]).all() else "the update"
                        raise FloatingPointError(f"{name}.update: {bad} of parameter {key!r} is not finite; "
                                                 "no parameter and no gradient was changed")
                    computed.append((p, value))
            for p, value in computed:
                np.copyto(p, value)
            parameters_written([p for p, _ in computed])
        self.zero_grad()

    @property
    def parameter_count(self) -> int:
        return sum(p.size for p in self.params.values())

    # ---- maths and kernels ----------------------------------------------------------------------------

    @property
    def derivation(self):
        """This model's maths and derived gradients (shared by every model with the same traced maths)."""
        from .pipeline import derivation_of

        return derivation_of(self)

    @property
    def kernels(self):
        """This model's compiled program for its dtype: `.forward`, `.backward`, each with `.source`."""
        runtime = runtime_of(self)
        program = runtime.program
        stale = runtime.configuration != configuration_generation() or changed_in_place(runtime.contents)
        if program is None or stale:
            from .pipeline import check_whole_slices, maths_of, program_of

            refuse_skipped_submodel_methods(self, "back", "step, reset and state" if hasattr(self, "parts") else None)
            program = program_of(self, self.dtype)  # traces again after a change: the same maths, the same program
            params = self.params  # by name: a learnable initial state h0 is a parameter no kernel takes
            program.check_params(*(params[n] for n in program.metadata["params"]))
            check_whole_slices(maths_of(self), params)
            runtime.program = program
        return program

    def __setattr__(self, name: str, value: Any) -> None:
        """Attributes forward may read are part of the maths: changing one on a built model (`m.alpha = 3.0`)
        makes every model trace itself again before its next call, so no kernel computes stale maths — a private
        one (`self._alpha`) too, unless the class lists it in `per_call_attributes` (flux's own bookkeeping). A
        value the constructor would refuse (`attention.heads = 3` for d = 4) is refused, and the old one kept."""
        cls = type(self)
        runtime = self.__dict__.get("_runtime")
        if (runtime is None or not runtime.built or name in cls.per_call_attributes or name in cls.declared_params()
                or name in cls.declared_states()):
            object.__setattr__(self, name, value)
            return
        before = self.__dict__.get(name, _UNSET)
        object.__setattr__(self, name, value)
        try:
            self._check_attributes()
        except (TypeError, ValueError):
            object.__setattr__(self, name, before) if before is not _UNSET else object.__delattr__(self, name)
            raise
        if name != "dtype":
            configuration_changed()

    # ---- running --------------------------------------------------------------------------------------

    def __call__(self, *inputs: Any, **options: Any) -> Any:
        """y = model(x). A recurrent model takes sequences (N, T, features) and the options
        `initial=` (h₀: an array, or {state name: array}) and `carry=True` (start where the last call ended)."""
        if self.__dict__.get("_tracing") or any(is_symbolic(x) for x in inputs):
            return self.forward(*inputs)
        return run_forward(self, inputs, **options)

    def back(self, Δ: Any) -> Any:
        """Back-propagate Δ = ∂L/∂y: return ∂L/∂x and add Σₙ ∂L/∂W into `grads`."""
        return run_backward(self, Δ)

    # ---- recurrent models: the state carried between calls ----------------------------------------------

    def step(self, *inputs: Any) -> Any:
        """y_t = model.step(x_t): advance one time step from the carried state ((N, features) or (features,))."""
        running_program(self)  # switches to the numba tier here if it became ready (flux.tiers)
        return run_step(self, inputs)

    def reset(self, initial: Any = None) -> None:
        """Forget the carried state, or set it (an array, or {state name: array}) for `step` / `carry=True`."""
        reset_state(self, initial)

    @property
    def state(self) -> dict[str, np.ndarray | None]:
        """The carried state, {dotted state name: (N, size) array}, as the last call or step left it."""
        return current_state(self)

    @property
    def state_grads(self) -> dict[str, np.ndarray]:
        """∂L/∂h₀ of the last `back` through a sequence, {dotted state name: (N, size) array}."""
        return dict(runtime_of(self).state_grads or {})

    # ---- copying: pickle and copy.deepcopy take the data, never the runtime state -------------------------------

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "_runtime"}
        state["_runtime"] = {"has_grads": runtime_of(self).has_grads}  # gradients are data: so is whether they count
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        saved = state.pop("_runtime", None) or {}
        self.__dict__.update(state)
        runtime = self.__dict__["_runtime"] = RuntimeState()
        runtime.has_grads = bool(saved.get("has_grads", False))

    def __repr__(self) -> str:
        from .show.layout import model_text

        return model_text(self)

    _repr_latex_ = RendersOnClassAndInstance()
