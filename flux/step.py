"""The fused training step: forward, loss, backward and the optimiser's update in ONE compiled kernel call.

    step = flux.compile_step(model, flux.logitcrossentropy, flux.Adam(1e-3))
    loss = step(x, target)

The model and its loss are traced together as one objective ℓ(f(x), t), derived as one expression, and the
optimiser's update rule (SymPy maths from `Optimiser.rules()`) is printed into the same kernel. Before any
parameter changes, the kernel checks that the loss and every gradient are finite; if not, nothing is updated and
`FloatingPointError` names the culprit.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .model import Model
from .run.inputs import as_input_array
from .run.state import parameter_generation


class Objective(Model):
    """ℓ(f(x), t): a model and its loss as one model, so they are derived and compiled together."""

    def __init__(self, model: Model, loss: Any):
        super().__init__(dtype=model.dtype)
        self.model = model
        self.loss = loss

    def named_submodels(self) -> list:
        return [("model", self.model)]

    def adopt_submodels(self, views: dict) -> None:
        self.model = views["model"]

    def forward(self, x, target):
        return self.loss(self.model(x), target)


class TrainStep:
    """step(x, target) → mean loss, after updating the model's parameters once (see `compile_step`)."""

    def __init__(self, model: Model, loss: Any, optimiser: Any):
        self.model, self.loss, self.optimiser = model, loss, optimiser
        self.objective = Objective(model, loss)
        if type(model).declared_states() or any(sub.declared_states() for sub in walk_submodels(model)):
            raise NotImplementedError(f"compile_step does not fuse recurrent models ({type(model).__name__} has "
                                      "states) yet: train them with model(xs), model.back(dys), model.update(opt)")
        from .pipeline import load_step_module  # the facade: generating needs SymPy, `import flux` does not

        self.module = load_step_module(self.objective, optimiser, model.dtype)
        self.kernel = self.module.train_step
        self.names = list(self.objective.params)
        self._scale: dict[int, np.ndarray] = {}
        self._prepared = None

    @property
    def source(self) -> str:
        import inspect

        return inspect.getsource(self.kernel.py_func)

    def __call__(self, x: Any, target: Any) -> float:
        model, optimiser = self.model, self.optimiser
        params, sizes, gradients = self._prepare()
        x = as_input_array(model, "x", x, sizes[0])
        if getattr(self.loss, "takes_labels", False):  # integer class labels (N,) → one-hot rows
            target = self.loss.targets_for(target, x.shape[:-1] + (sizes[1],), model.dtype)
        target = as_input_array(self.loss, "target", target, sizes[1])
        if target.shape[0] != x.shape[0]:
            raise ValueError(f"{type(model).__name__}: target has {target.shape[0]} samples but x has {x.shape[0]}")
        batch = x.shape[0]
        if batch == 0:  # the mean loss of no samples is undefined: say so rather than "the loss is not finite"
            raise ValueError(f"{type(model).__name__}: the batch is empty (x has shape {x.shape}); a training step "
                             "needs at least one sample. Nothing was changed")
        scale = self._scale.get(batch)
        if scale is None:  # ∂(mean loss)/∂(per-sample loss) = 1/N
            scale = self._scale[batch] = np.full((batch, 1), 1.0 / max(batch, 1), dtype=model.dtype)
        tied = self._prepared[4]
        if tied:  # the kernel updates copies; the one real update happens below, once per distinct array
            states = tied["scratch"]
            kernel_params = [p.copy() for p in params]
        else:
            states = [self._state(kind, name, p) for name, p in zip(self.names, params)
                      for kind in optimiser.state_names]
            kernel_params = params
        real = model.dtype.type
        hyper = [real(getattr(optimiser, h)) for h in optimiser.defaults]
        loss, status = self.kernel(x, target, *kernel_params, scale, *gradients, *states,
                                   real(optimiser.step_count + 1), *hyper)
        if status == -1:
            raise FloatingPointError(f"{type(model).__name__}: the loss is not finite ({loss}); "
                                     "no parameter was updated")
        if status >= 0:
            name = self.names[status].removeprefix("model.")
            raise FloatingPointError(f"{type(model).__name__}: the gradient of parameter {name!r} is not finite; "
                                     "no parameter was updated")
        if tied:
            self._update_tied(params, gradients, tied["groups"])
        else:
            optimiser.step_count += 1
        return float(loss)

    def _update_tied(self, params: list, gradients: list, groups: list[list[int]]) -> None:
        """One parameter, one optimiser state: each distinct array is updated once, from the sum of the gradients
        of its uses, under its first name — exactly what `model.update(optimiser)` does."""
        names = [self.names[g[0]].removeprefix("model.") for g in groups]
        distinct = {n: params[g[0]] for n, g in zip(names, groups)}
        summed = {n: sum(gradients[k] for k in g[1:]) + gradients[g[0]] for n, g in zip(names, groups)}
        self.optimiser.apply_gradients(type(self.model).__name__, distinct, summed)
        self.optimiser.bind(self.model.params)

    def _prepare(self) -> tuple:
        """Parameters, expected input sizes and gradient buffers; checked again only when parameters change."""
        if self._prepared is None or self._prepared[0] != parameter_generation():
            params, _ = self.objective.flat_arrays()
            self.module.check_params(*params)
            self.optimiser.check_parameters(self.model)
            self.optimiser.bind(self.model.params)
            groups: dict[int, list[int]] = {}
            for k, p in enumerate(params):
                groups.setdefault(id(p), []).append(k)
            tied = None
            if any(len(g) > 1 for g in groups.values()):  # a layer used twice: its array appears once per use
                tied = {"groups": list(groups.values()),
                        "scratch": [np.zeros_like(p) for p in params for _ in self.optimiser.state_names]}
            self._prepared = (parameter_generation(), params, self.module.input_sizes(*params),
                              [np.zeros_like(p) for p in params], tied)
        return self._prepared[1:4]

    def _state(self, kind: str, name: str, parameter: np.ndarray) -> np.ndarray:
        key = name.removeprefix("model.")
        table = self.optimiser.state[kind]
        if key not in table:
            table[key] = np.zeros_like(parameter)
        return table[key]


def walk_submodels(model: Model):
    """Every sub-model, depth first."""
    for _, sub in model.named_submodels():
        yield sub
        yield from walk_submodels(sub)


def compile_step(model: Model, loss: Any, optimiser: Any) -> TrainStep:
    """One compiled call per batch: forward, loss, backward and the optimiser's update, fused."""
    return TrainStep(model, loss, optimiser)
