"""Saving and loading: a model (and optionally its optimiser) as one `.npz` file, bit-exact, never half-loaded.

    flux.save(model, "model.npz", optimiser=opt)
    model = flux.load("model.npz")                 # rebuilds the model from its architecture description
    model = flux.load("model.npz", classes=[MyModel])  # a model of your own classes: name them (or flux.register)
    flux.load("model.npz", into=model)             # or loads the parameters into an existing architecture
    opt = flux.load_optimiser("model.npz")         # or flux.load_optimiser(path, into=opt)

The file holds `param/<dotted name>` arrays (in the model's dtype), `optimiser/<state>/<dotted name>` arrays, and
`__flux__`: a JSON description — the model tree (class "module:qualname", attributes, parameter names and shapes),
every parameter's shape and dtype, and the optimiser's class, hyper-parameters and step count.

Loading policy — a file is data, never code. `load` and `load_optimiser` never import a module and never call
anything because a file names it. A class named in a file is resolved only if it is (a) one of flux's own model or
optimiser classes (Dense, Chain, Parallel, Recurrent, LSTM, GRU, the losses, SGD … Adam), or (b) a class (or
module-level function) the caller allowed: passed as `classes=[...]` to this call, or registered once with
`flux.register(MyModel)` (also usable as a class decorator). A model must resolve to a flux.Model subclass and an
optimiser to a flux.Optimiser subclass. Anything else — `os:system`, `subprocess:run`, a module that is not
imported, a class nobody allowed — raises ValueError naming it and saying how to allow it, before any object is
created. Arrays are read with `allow_pickle=False`. A file that is not a flux file (a `.npy`, another `.npz`, text)
raises ValueError naming the path.

How a model is described (and the limits of that): `load` resolves each class as above and creates the object with
`cls.__new__` — `__init__` is NOT called (an allowed optimiser class is called with the saved hyper-parameters) —
then restores the instance's attributes and assigns the parameters through the model's own checks. An attribute value
may be None, bool, int, float, str, a NumPy scalar, dtype or array, a list/tuple/dict of such values, a Model
(described recursively, so sub-models in lists such as a Chain's `layers` work; a model referenced twice is restored
as one shared object), one of flux's elementwise functions (restored as the same object, e.g. `flux.relu`), or a
module-level function or class (stored by import path, and on load resolved only under the policy above: a flux
class, or one passed or registered by the caller). Anything else — a lambda, a bound method, an open file, an
arbitrary object — makes `save` raise TypeError naming the attribute; such a model can still be saved and loaded
with `load(path, into=model)`. The Model's runtime fields (gradients, forward tape, compiled program) are not saved:
a loaded model has zero gradients and reloads its kernels from cache.

Writing: `save` writes exactly at `path` through a temporary file in the same directory and an atomic rename, so a
reader sees the old file or the new one, never a part. If `path` is a symbolic link, the file it points to is
replaced (the link stays a link). A path that exists and is not a regular file (a directory, a device such as
/dev/full, a FIFO) is refused with ValueError. An existing file keeps its permission bits (and, where allowed, its
owner and group); a new file gets the mode a plain `open(path, "w")` would give (0666 minus the umask).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .model import Model
from .model_file import DESCRIPTION, FORMAT, VERSION, Builder, Describer, import_path, read, resolve_class, \
    write_atomically
from .run.state import RuntimeState, parameters_written


def save(model: Model, path: str | os.PathLike, optimiser: Any = None) -> None:
    """Write `model` (and `optimiser`'s state) to `path` as one .npz file, exactly at `path` (no suffix added).

    The model is described completely before anything is written, and the file is written to a temporary name and
    renamed, so an error (e.g. an attribute that cannot be described) leaves an existing file at `path` intact.
    """
    if not isinstance(model, Model):
        raise TypeError(f"flux.save: expected a flux.Model, got {type(model).__name__}")
    arrays: dict[str, np.ndarray] = {}
    params = model.params
    description = {
        "format": FORMAT, "version": VERSION,
        "model": Describer(arrays).model(model, "model"),
        "parameters": {name: {"shape": list(p.shape), "dtype": str(p.dtype)} for name, p in params.items()},
        "optimiser": None,
    }
    for name, p in params.items():
        arrays[f"param/{name}"] = p
    if optimiser is not None:
        optimiser.check_parameters(model)
        state = optimiser.state_dict()
        description["optimiser"] = {
            "class": import_path(type(optimiser)), "hyperparameters": state["hyperparameters"],
            "step_count": state["step_count"], "parameters": state["parameters"],
            "state": {s: list(entries) for s, entries in state["state"].items()},
        }
        for s, entries in state["state"].items():
            for name, array in entries.items():
                arrays[f"optimiser/{s}/{name}"] = array
    arrays[DESCRIPTION] = np.array(json.dumps(description))
    write_atomically(Path(path), lambda file: np.savez(file, **arrays))


def register(cls: type) -> type:
    """Allow `load`/`load_optimiser` to rebuild objects of `cls` (a Model or Optimiser subclass, or a module-level
    function a model stores) from files, under its "module:qualname". Returns `cls`, so it works as a decorator:

        @flux.register
        class MyModel(flux.Model): ...
    """
    _registered[_checked_allowable(cls, "flux.register")] = cls
    return cls


def load(path: str | os.PathLike, into: Model | None = None, classes: Iterable[type] = ()) -> Model:
    """Rebuild the model saved at `path`, or copy its parameters into `into` (same parameter names and shapes).

    Only flux's own classes and those in `classes` or registered with `flux.register` are resolved; the file never
    makes flux import a module or call anything (see the module docstring). The whole file is read and checked before
    any model is built or changed: a truncated, corrupt or mismatched file raises ValueError and leaves `into`
    exactly as it was.
    """
    allowed = _allowed_classes(classes, "flux.load")
    description, arrays = read(path)
    params = {name: arrays[f"param/{name}"] for name in description["parameters"]}
    if into is None:
        try:
            return Builder(arrays, params, path, allowed).model(description["model"])
        except (KeyError, TypeError, AttributeError, RecursionError) as error:  # a model containing itself: recursion
            raise ValueError(f"flux.load: {path} has a malformed model description ({error!r})") from None
    if not isinstance(into, Model):
        raise TypeError(f"flux.load: into= must be a flux.Model, got {type(into).__name__}")
    target = into.params
    model_name = type(into).__name__
    for name, p in target.items():
        if name not in params:
            raise ValueError(f"flux.load: {model_name} has a parameter {name!r} that {path} does not contain "
                             f"(it has {', '.join(params) or 'none'})")
        if params[name].shape != p.shape:
            raise ValueError(f"flux.load: parameter {name!r} has shape {params[name].shape} in {path} but "
                             f"{p.shape} in {model_name}")
        if params[name].dtype != p.dtype:
            raise ValueError(f"flux.load: parameter {name!r} is {params[name].dtype} in {path} but {p.dtype} in "
                             f"{model_name}; build the model with dtype={params[name].dtype}")
    extra = [name for name in params if name not in target]
    if extra:
        raise ValueError(f"flux.load: {path} has a parameter {extra[0]!r} that {model_name} does not have")
    shared: dict[int, str] = {}  # a layer used twice (Chain(l, l)) is one array under two names
    for name, p in target.items():
        first = shared.setdefault(id(p), name)
        if not np.array_equal(params[first], params[name], equal_nan=True):
            raise ValueError(f"flux.load: {model_name}'s parameters {first!r} and {name!r} are one array (a layer used "
                             f"twice) but {path} holds different values for them")
    for name, p in target.items():
        np.copyto(p, params[name])
    parameters_written(target.values())  # a model sharing these arrays cannot back-propagate an older forward
    _reset_runtime(into)
    return into


def load_optimiser(path: str | os.PathLike, into: Any = None, classes: Iterable[type] = ()):
    """The optimiser saved with the model at `path`: rebuilt from its class and hyper-parameters, or loaded into
    `into` (which must be of the same class; checked completely before anything changes). The class must be one of
    flux's optimisers, or passed in `classes`, or registered with `flux.register`."""
    from .optimisers import Optimiser

    allowed = _allowed_classes(classes, "flux.load_optimiser")
    description, arrays = read(path)
    saved = description["optimiser"]
    if saved is None:
        raise ValueError(f"flux.load_optimiser: {path} holds no optimiser state; save it with "
                         "flux.save(model, path, optimiser=opt)")
    try:
        state = {s: {name: arrays[f"optimiser/{s}/{name}"] for name in names} for s, names in saved["state"].items()}
    except KeyError as missing:
        raise ValueError(f"flux.load_optimiser: {path} is missing the optimiser array {missing}") from None
    optimiser = into
    if optimiser is None:
        cls = resolve_class(saved["class"], path, allowed, "flux.load_optimiser")
        if not (isinstance(cls, type) and issubclass(cls, Optimiser)):
            raise ValueError(f"flux.load_optimiser: {saved['class']} in {path} is not a flux.Optimiser class")
        hyperparameters = saved["hyperparameters"]
        if not (isinstance(hyperparameters, dict)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in hyperparameters.values())):
            raise ValueError(f"flux.load_optimiser: {path} has malformed hyper-parameters {hyperparameters!r}")
        try:
            optimiser = cls(**hyperparameters)
        except TypeError as error:
            raise ValueError(f"flux.load_optimiser: {path} has hyper-parameters {sorted(hyperparameters)} that "
                             f"{cls.__name__} does not take ({error})") from None
    optimiser.load_state_dict({
        "optimiser": saved["class"].rpartition(":")[2], "hyperparameters": saved["hyperparameters"],
        "step_count": saved["step_count"], "parameters": saved["parameters"], "state": state,
    })
    return optimiser


# ---- after loading: a fresh run-time state -------------------------------------------------------------------------


def _reset_runtime(model: Model) -> None:
    """After new parameters: no stale gradients, no forward tape computed with the old ones."""
    model.zero_grad()
    model.__dict__["_runtime"] = RuntimeState()  # a fresh run-time state: no tape, no program, no cached lists
    for _, sub in model.named_submodels():
        _reset_runtime(sub)


# ---- what a file may name: flux's own classes and those the caller allowed ------------------------------------------

_registered: dict[str, Any] = {}  # "module:qualname" → class or function, from flux.register


def _checked_allowable(obj: Any, caller: str) -> str:
    """The import path under which `obj` (a class or a module-level function) may be named by a file."""
    if not (isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") and hasattr(obj, "__module__")):
        raise TypeError(f"{caller}: expected a class (or a module-level function), got {obj!r}")
    return import_path(obj)


def _allowed_classes(classes: Iterable[Any], caller: str) -> dict[str, Any]:
    if classes is None:
        classes = ()
    elif isinstance(classes, type) or callable(classes):
        classes = [classes]
    allowed = dict(_registered)
    allowed.update((_checked_allowable(cls, caller), cls) for cls in classes)
    return allowed
