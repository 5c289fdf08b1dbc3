"""The fused training step: forward, loss, backward and the optimiser's update in ONE compiled kernel call.

    step = flux.compile_step(model, flux.logitcrossentropy, flux.Adam(1e-3))
    loss = step(x, target)

The model and its loss are traced together as one objective ℓ(f(x), t), derived as one expression, and the
optimiser's update rule (SymPy maths from `Optimiser.rules()`) is printed into the same kernel. Before any
parameter changes, the kernel checks that the loss and every gradient are finite; if not, nothing is updated and
`FloatingPointError` names the culprit.
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import numpy as np

from .model import Model
from .run.inputs import as_float_array, as_input_array, sample_rows, to_dtype
from .run.sequences import as_sequence_array, initial_param_name, state_owner
from .blas import single_threaded_blas
from .run.contents import attribute_contents, changed_in_place
from .run.state import configuration_generation, parameter_generation, parameters_written
from .run.threads import batch_parts, run_parts
from .step_checks import refuse_pending_gradients


_steps: weakref.WeakSet = weakref.WeakSet()  # every live step: their locks are made again in a forked child


def _unlock_steps_in_child() -> None:
    """After os.fork the child has only the forking thread: a step's lock held by another thread of the parent (a
    call in progress) would be held forever, and every call of that step in the child would wait for it."""
    for step in list(_steps):
        step._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_unlock_steps_in_child)


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
        from .pipeline import load_step_module  # the facade: generating needs SymPy, `import flux` does not

        self.module = load_step_module(self.objective, optimiser, model.dtype)
        self.kernel = self.module.train_step
        self.names = list(self.objective.params)
        self._scale: dict[int, np.ndarray] = {}
        self._prepared = None
        self._watch(model, loss, optimiser)

    def _watch(self, *arguments: Any, **options: Any) -> None:
        """Remember the maths the step was compiled for (the model's and the loss's), to compile it again if it
        changes (`_current`)."""
        self._arguments, self._options = arguments, options
        self.__dict__.setdefault("_lock", threading.Lock())  # kept when the step is compiled again inside a call
        _steps.add(self)  # its lock is made again in a forked child (`_unlock_steps_in_child`)
        self._generation = configuration_generation()
        self._contents = attribute_contents(self.model) + (
            attribute_contents(self.loss) if isinstance(self.loss, Model) else [])
        self._made_for = self._identity()

    def _identity(self) -> tuple:
        from .pipeline import maths_of

        return maths_of(self.objective).identity, maths_of(self.loss).identity if isinstance(self.loss, Model) else ""

    def _current(self) -> None:
        """Before each step: when an attribute forward reads changed since the step was compiled (`m.alpha = 3.0`,
        `m.coeffs[0] = 5.0`, a Chain's layer replaced), compile the step for the new maths — the optimiser keeps
        its state — rather than run the old maths; with the same maths, take the parameters again (their order may
        have changed: `chain.layers = [b, a]`). Gradients `back` left unapplied are refused (flux.step_checks)."""
        refuse_pending_gradients(self.model)
        if self._generation == configuration_generation() and not changed_in_place(self._contents):
            return
        if self._identity() != self._made_for:
            type(self).__init__(self, *self._arguments, **self._options)
        else:
            self._watch(*self._arguments, **self._options)
            self._prepared = None

    @property
    def source(self) -> str:
        import inspect

        return inspect.getsource(self.kernel.py_func)

    def __call__(self, x: Any, target: Any) -> float:
        """One step; calls from several threads run one at a time (the step's buffers and gradients are its own)."""
        with self._lock:
            return self._step(x, target)

    def _step(self, x: Any, target: Any) -> float:
        self._current()
        model = self.model
        params, sizes, gradients = self._prepare()
        x, target = sample_rows(type(model).__name__, x, target, sizes[0], model.dtype)  # (N, T, …, k): rows
        x = as_input_array(model, "x", x, sizes[0])
        if getattr(self.loss, "takes_labels", False):  # integer class labels (N,) → one-hot rows
            target = self.loss.targets_for(target, x.shape[:-1] + (sizes[1],), model.dtype)
        target = as_input_array(self.loss, "target", target, sizes[1], dtype=model.dtype)  # not the loss's own
        if target.shape[0] != x.shape[0]:
            raise ValueError(f"{type(model).__name__}: target has {target.shape[0]} samples but x has {x.shape[0]}")
        batch = x.shape[0]
        if batch == 0:  # the mean loss of no samples is undefined: say so rather than "the loss is not finite"
            raise ValueError(f"{type(model).__name__}: the batch is empty (x has shape {x.shape}); a training step "
                             "needs at least one sample. Nothing was changed")
        scale = self._scale.get(batch)
        if scale is None:  # ∂(mean loss)/∂(per-sample loss) = 1/N
            scale = self._scale[batch] = np.full((batch, 1), 1.0 / max(batch, 1), dtype=model.dtype)
        kernel_params, states, numbers = self._optimiser_arrays(params)
        loss, status = self.kernel(x, target, *kernel_params, scale, *gradients, *states, *numbers)
        return self._finish(loss, status, params, gradients, self._prepared[4])

    def _optimiser_arrays(self, params: list) -> tuple[list, list, list]:
        """(the parameters the kernel updates, the optimiser's state arrays, [step count, hyperparameters…]): with
        tied parameters the kernel updates copies; the one real update happens in `_finish`, once per array."""
        optimiser, tied = self.optimiser, self._prepared[4]
        real, name = self.model.dtype.type, type(self.model).__name__
        numbers = [real(optimiser.step_count + 1)] + optimiser.hyperparameters_in(real, name)  # checked first
        if tied:
            states, kernel_params = tied["scratch"], [p.copy() for p in params]
        else:
            states = [self._state(kind, name, p) for name, p in zip(self.names, params)
                      for kind in optimiser.state_names]
            kernel_params = params
        return kernel_params, states, numbers

    def _finish(self, loss, status: int, params: list, gradients: list, tied: dict | None) -> float:
        """After the kernel: its status (−1 the loss, k ≥ 0 the k-th gradient not finite: nothing was updated,
        FloatingPointError naming it), then the one update of tied parameters, or the optimiser's step count."""
        model = type(self.model).__name__
        if status == -1:
            raise FloatingPointError(f"{model}: the loss is not finite ({loss}); no parameter was updated")
        if status >= 0:
            culprit = self.names[status].removeprefix("model.")
            raise FloatingPointError(f"{model}: the gradient of parameter {culprit!r} is not finite; "
                                     "no parameter was updated")
        if tied:
            self._update_tied(params, gradients, tied["groups"])
        else:
            self.optimiser.step_count += 1
            parameters_written(params)  # by the kernel: a forward pass made before cannot be back-propagated
        return float(loss)

    def _update_tied(self, params: list, gradients: list, groups: list[list[int]]) -> None:
        """One parameter, one optimiser state: each distinct array is updated once, from the sum of the gradients
        of its uses, under its first name — exactly what `model.update(optimiser)` does."""
        names = [self.names[g[0]].removeprefix("model.") for g in groups]
        distinct = {n: params[g[0]] for n, g in zip(names, groups)}
        summed = {n: sum(gradients[k] for k in g[1:]) + gradients[g[0]] for n, g in zip(names, groups)}
        self.optimiser.apply_gradients(type(self.model).__name__, distinct, summed)
        self.optimiser.bind(self.model.params)

    def _checked_groups(self, params: list) -> list[list[int]]:
        """Check the parameters (sizes, the optimiser's state) and bind the optimiser; the positions of each distinct
        array in `params` (a layer used twice appears once per use)."""
        from .pipeline import check_whole_slices, maths_of

        self.module.check_params(*params)
        check_whole_slices(maths_of(self.model), self.model.params)  # W[0:k/2, :] with k = 3: refused, as by model(x)
        self.optimiser.check_parameters(self.model)
        self.optimiser.bind(self.model.params)
        groups: dict[int, list[int]] = {}
        for k, p in enumerate(params):
            groups.setdefault(id(p), []).append(k)
        return list(groups.values())

    def _prepare(self) -> tuple:
        """Parameters, expected input sizes and gradient buffers; checked again only when parameters change."""
        if self._prepared is None or self._prepared[0] != parameter_generation():
            params, _ = self.objective.flat_arrays()
            groups = self._checked_groups(params)
            tied = None
            if any(len(g) > 1 for g in groups):  # a layer used twice: its array appears once per use
                tied = {"groups": groups,
                        "scratch": [np.zeros_like(p) for p in params for _ in self.optimiser.state_names]}
            self._prepared = (parameter_generation(), params, self.module.input_sizes(*params),
                              [np.zeros_like(p) for p in params], tied)
        return self._prepared[1:4]

    def _split(self, parts: list, gradients: list, part, update_arguments: tuple) -> tuple:
        """(loss, status) of a batch cut into parts (flux.run.threads): `part(k, start, stop)` gives part k's
        arguments before its gradients, and its buffers; each part's `batch_gradients` runs on its own thread into
        its own gradients, which are summed into `gradients`; then one `checked_update(loss, *update_arguments)`."""
        gradient_sets = [gradients] + self._gradients_of_parts(len(parts) - 1, gradients)
        module = self.module
        calls = []
        for k, (start, stop) in enumerate(parts):
            data, buffers = part(k, start, stop)
            calls.append(lambda data=data, buffers=buffers, k=k:
                         module.batch_gradients(*data, *gradient_sets[k], *buffers))
        with single_threaded_blas():  # one BLAS thread for every part: the parts are the parallelism
            losses = run_parts(calls)
        for more in gradient_sets[1:]:
            module.add_gradients(*gradients, *more)
        loss = sum(losses)
        return loss, module.checked_update(loss, *update_arguments)

    def _gradients_of_parts(self, count: int, gradients: list) -> list:
        """Gradient arrays for parts 2, 3, …: each part writes its own, summed into `gradients` after."""
        made_for, more = self.__dict__.get("_more_gradients", (None, []))
        if made_for is None or len(made_for) != len(gradients) or any(a is not b for a, b in zip(made_for, gradients)):
            more = []
        more += [[np.zeros_like(g) for g in gradients] for _ in range(count - len(more))]
        self._more_gradients = (gradients, more)
        return more[:count]

    def _state(self, kind: str, name: str, parameter: np.ndarray) -> np.ndarray:
        key = name.removeprefix("model.")
        table = self.optimiser.state[kind]
        if key not in table:
            table[key] = np.zeros_like(parameter)
        return table[key]


class RecurrentTrainStep(TrainStep):
    """step(xs, targets) → mean loss, for a recurrent model: the time loop, the loss of every step (or of the last),
    BPTT, the checks and the update in one kernel call (`flux.generate.recurrent_step`)."""

    def __init__(self, model: Model, loss: Any, optimiser: Any, *, last: bool = False):
        super().__init__(model, loss, optimiser)
        self.last = last
        metadata = self.module.METADATA
        state_names = list(metadata["states"])
        owners = [state_owner(model, s) for s in state_names]
        self.learnable = np.array([type(o).declared_states()[a].learnable for o, a in owners], dtype=np.bool_)
        self.initial_names = [initial_param_name(s) for s in state_names]
        # what the kernel updates: θ…, then each h₀; named as the objective names them ("model." + the model's name),
        # as TrainStep's optimiser-state and error helpers expect
        self.names = [f"model.{n}" for n in list(metadata["params"]) + self.initial_names]
        self._scales: dict[tuple, np.ndarray] = {}
        self._initial_cache: dict[tuple, tuple] = {}
        self._buffers: dict[tuple, tuple] = {}
        self._watch(model, loss, optimiser, last=last)

    def _step(self, x: Any, target: Any) -> float:
        self._current()
        model, optimiser = self.model, self.optimiser
        hyper = optimiser.hyperparameters_in(model.dtype, type(model).__name__)  # before anything is touched
        params, sizes, gradients = self._prepare()
        x = as_sequence_array(model, "x", x, sizes[0])
        batch, steps = x.shape[:2]
        target = self._target(target, batch, steps, self.module.output_size(*params)[0])
        # batch-first (N, T, ·) into the kernel, which copies them into its time-major buffers; C-contiguous, so
        # one compiled signature serves every call (a broadcast target of last=True is made whole here)
        x, target = (a if a.flags.c_contiguous else np.ascontiguousarray(a) for a in (x, target))
        scale = self._scale_for(steps, batch)
        initials, initial_gradients, spare_states = self._initials(params, x.shape[2], target.shape[2])
        targets, gradients = params + initials, gradients + initial_gradients
        tied = self._prepared[4]
        if tied:  # the kernel updates copies; the one real update happens below, once per distinct array
            states = spare_states
            kernel_targets = [p.copy() for p in targets]
        else:  # a fixed h₀ (zeros) is never updated: its optimiser state is a spare
            states = [self._state(kind, n, p) if k < len(params) or self.learnable[k - len(params)]
                      else spare_states[k * len(optimiser.state_names) + j]
                      for k, (n, p) in enumerate(zip(self.names, targets))
                      for j, kind in enumerate(optimiser.state_names)]
            kernel_targets = targets
        numbers = [model.dtype.type(optimiser.step_count + 1), *hyper]
        parts = batch_parts(batch, batch * steps * sum(p.size for p in params), recurrent=True)
        if len(parts) == 1:
            buffers = self._workspace(0, x, target, params, initials)
            with single_threaded_blas():  # the time loop's products are small: a second BLAS thread only waits
                value, status = self.kernel(x, target, scale, *kernel_targets, self.learnable, *gradients, *states,
                                            *numbers, *buffers)
            return self._finish(value, status, targets, gradients, tied)

        def part(k: int, start: int, stop: int) -> tuple:  # the same step on samples start…stop−1, weighed as in the batch
            data = (x[start:stop], target[start:stop], self._part_scale(scale, start, stop), *kernel_targets)
            return data, self._workspace(k, data[0], data[1], params, initials)

        value, status = self._split(parts, gradients, part,
                                    (*kernel_targets, self.learnable, *gradients, *states, *numbers))
        return self._finish(value, status, targets, gradients, tied)

    def _part_scale(self, scale: np.ndarray, start: int, stop: int) -> np.ndarray:
        """The batch's weights ∂L/∂ℓ_t (T, N, 1) of samples start…stop−1, contiguous (one compiled signature)."""
        key = (scale.shape, start, stop)
        if key not in self._scales:
            self._scales[key] = np.ascontiguousarray(scale[:, start:stop])
        return self._scales[key]

    def _prepare(self) -> tuple:
        """Parameters (kernel order), input sizes and gradient buffers (h₀'s too); checked again only when
        parameters change."""
        if self._prepared is None or self._prepared[0] != parameter_generation():
            named = self.model.params
            params = [named[n] for n in self.module.METADATA["params"]]
            groups = self._checked_groups(params)
            tied = None
            if any(len(g) > 1 for g in groups):  # a layer used twice: its array appears once per use
                learnable = [len(params) + k for k, on in enumerate(self.learnable) if on]
                tied = {"groups": groups + [[k] for k in learnable]}
            self._prepared = (parameter_generation(), params, self.module.input_sizes(*params),
                              [np.zeros_like(p) for p in params], tied)
            self._initial_cache.clear()
            self._buffers.clear()
        return self._prepared[1:4]

    def _initials(self, params: list, x_size: int, target_size: int) -> tuple[list, list, list]:
        """Each state's h₀ row (H,): the learnable initial state (a parameter), or zeros; with its gradient buffer,
        and spare optimiser states (for a fixed h₀, and for every array when parameters are tied), made once per
        size."""
        key = (x_size, target_size)
        if key not in self._initial_cache:
            metadata = self.module.METADATA
            tied_to = dict(zip(metadata["input_dims"], (x_size,)))
            sizes = [s if s is not None else tied_to[d]
                     for s, d in zip(self.module.state_sizes(*params), metadata["state_dims"])]
            zeros = [np.zeros(s, dtype=self.model.dtype) for s in sizes]
            spare = [np.zeros_like(p) for p in params + zeros for _ in self.optimiser.state_names]
            named = self.model.params  # cleared with the parameters' generation (`_prepare`): read once
            initials = [named[n] if learnable else zero
                        for n, learnable, zero in zip(self.initial_names, self.learnable, zeros)]
            self._initial_cache[key] = (initials, [np.zeros_like(z) for z in zeros], spare)
        return self._initial_cache[key]

    def _workspace(self, part: int, x: np.ndarray, target: np.ndarray, params: list, initials: list) -> tuple:
        """The kernel's buffers for the whole sequence (x and the targets time-major, states, kept values, per-step
        δs, the cell kernels' work buffers): allocated once per (part of the batch, N, T, sizes) and reused by every
        call — fresh multi-megabyte arrays each step cost more than the maths."""
        key = (part, x.shape, target.shape)
        buffers = self._buffers.get(key)
        if buffers is None:
            if len(self._buffers) >= 16:  # sequences of ever new lengths: the oldest shape's buffers are let go
                del self._buffers[next(iter(self._buffers))]
            (batch, steps), dtype = x.shape[:2], self.model.dtype
            time_major = [np.empty((steps, batch, a.shape[2]), dtype=dtype) for a in (x, target)]
            buffers = self._buffers[key] = (*time_major, *self.module.workspace_buffers(
                steps, batch, time_major[0], *(h.reshape(1, -1) for h in initials), *params))
        return buffers

    def _target(self, target: Any, batch: int, steps: int, size: int | None) -> np.ndarray:
        """The targets as (N, T, out): every step's, or the last step's (N, out) repeated (weighed 0 but at T−1)."""
        model_name, loss = type(self.model).__name__, self.loss
        if getattr(loss, "takes_labels", False) and size is not None:  # integer class labels → one-hot rows
            target = loss.targets_for(target, (batch,) + (() if self.last else (steps,)) + (size,), self.model.dtype)
        array = as_float_array(model_name, "target", "target", target, self.model.dtype)
        expected = (batch, size) if self.last else (batch, steps, size)
        if array.ndim != len(expected) or array.shape[:-1] != expected[:-1] or (
                size is not None and array.shape[-1] != size):
            shown = tuple("out" if s is None else s for s in expected)
            which = ("the last step's output (compile_step(..., last=True))" if self.last
                     else "every step's output (pass last=True to compile_step for the last step's only)")
            raise ValueError(f"{model_name}: the loss is on {which}, so the target must have shape {shown}"
                             f"{labels_or(loss, expected[:-1], size)}, got {array.shape}; nothing was changed")
        array = to_dtype(model_name, "target", array, self.model.dtype, "target")
        return np.broadcast_to(array[:, None, :], (batch, steps, array.shape[1])) if self.last else array

    def _scale_for(self, steps: int, batch: int) -> np.ndarray:
        """∂(mean loss)/∂ℓ_t per step and sample: 1/(N·T) everywhere, or 1/N at the last step (last=True)."""
        key = (steps, batch)
        if key not in self._scales:
            scale = np.zeros((steps, batch, 1), dtype=self.model.dtype)
            if self.last:
                scale[-1] = 1.0 / batch
            else:
                scale[:] = 1.0 / (batch * steps)
            self._scales[key] = scale
        return self._scales[key]


def labels_or(loss: Any, shape: tuple, classes: int | None) -> str:
    """", or class labels of shape (N, T)" for a loss that takes integer labels in place of one-hot targets (when
    the model's number of outputs, the number of classes, is known)."""
    return f", or class labels of shape {tuple(shape)}" if getattr(loss, "takes_labels", False) and classes else ""
