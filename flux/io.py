"""Saving and loading: a model (and optionally its optimiser) as one `.npz` file, bit-exact, never half-loaded.

    flux.save(model, "model.npz", optimiser=opt)
    model = flux.load("model.npz")                 # rebuilds the model from its architecture description
    flux.load("model.npz", into=model)             # or loads the parameters into an existing architecture
    opt = flux.load_optimiser("model.npz")         # or flux.load_optimiser(path, into=opt)

The file holds `param/<dotted name>` arrays (in the model's dtype), `optimiser/<state>/<dotted name>` arrays, and
`__flux__`: a JSON description — the model tree (class "module:qualname", attributes, parameter names and shapes),
every parameter's shape and dtype, and the optimiser's class, hyper-parameters and step count.

How a model is described (and the limits of that): `load` imports each class and creates the object with
`cls.__new__` — `__init__` is NOT called — then restores the instance's attributes and assigns the parameters through
the model's own checks. An attribute value may be None, bool, int, float, str, a NumPy scalar, dtype or array, a
list/tuple/dict of such values, a Model (described recursively, so sub-models in lists such as a Chain's `layers`
work; a model referenced twice is restored as one shared object), one of flux's elementwise functions (restored as
the same object, e.g. `flux.relu`), or a module-level function or class (stored by import path). Anything else —
a lambda, a bound method, an open file, an arbitrary object — makes `save` raise TypeError naming the attribute;
such a model can still be saved and loaded with `load(path, into=model)`. Classes must be importable by
"module:qualname" where the file is loaded (not defined inside a function). The Model's runtime fields (gradients,
forward tape, compiled program) are not saved: a loaded model has zero gradients and reloads its kernels from cache.
"""
from __future__ import annotations

import importlib
import json
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .model import Model

FORMAT = "flux-model"
VERSION = 1
_DESCRIPTION = "__flux__"
# Fields that are not configuration: parameters and gradients (saved as arrays), the run-time state (never saved:
# flux.runtime.RuntimeState, rebuilt empty on load), and names older versions kept in __dict__.
_RUNTIME_FIELDS = ("_params", "_grads", "_runtime", "_tape", "_program", "_has_grads", "_tracing", "_flat",
                   "_tape_thread", "_state_grads")


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
        "model": _Describer(arrays).model(model, "model"),
        "parameters": {name: {"shape": list(p.shape), "dtype": str(p.dtype)} for name, p in params.items()},
        "optimiser": None,
    }
    for name, p in params.items():
        arrays[f"param/{name}"] = p
    if optimiser is not None:
        optimiser.check_parameters(model)
        state = optimiser.state_dict()
        description["optimiser"] = {
            "class": _import_path(type(optimiser)), "hyperparameters": state["hyperparameters"],
            "step_count": state["step_count"], "parameters": state["parameters"],
            "state": {s: list(entries) for s, entries in state["state"].items()},
        }
        for s, entries in state["state"].items():
            for name, array in entries.items():
                arrays[f"optimiser/{s}/{name}"] = array
    arrays[_DESCRIPTION] = np.array(json.dumps(description))
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, into: Model | None = None) -> Model:
    """Rebuild the model saved at `path`, or copy its parameters into `into` (same parameter names and shapes).

    The whole file is read and checked before any model is built or changed: a truncated, corrupt or mismatched
    file raises ValueError and leaves `into` exactly as it was.
    """
    description, arrays = _read(path)
    params = {name: arrays[f"param/{name}"] for name in description["parameters"]}
    if into is None:
        try:
            return _Builder(arrays, params, path).model(description["model"])
        except (KeyError, TypeError, AttributeError) as error:
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
    for name, p in target.items():
        np.copyto(p, params[name])
    _reset_runtime(into)
    return into


def load_optimiser(path: str | os.PathLike, into: Any = None):
    """The optimiser saved with the model at `path`: rebuilt from its class and hyper-parameters, or loaded into
    `into` (which must be of the same class; checked completely before anything changes)."""
    description, arrays = _read(path)
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
        cls = _import(saved["class"], path)
        optimiser = cls(**saved["hyperparameters"])
    optimiser.load_state_dict({
        "optimiser": saved["class"].rpartition(":")[2], "hyperparameters": saved["hyperparameters"],
        "step_count": saved["step_count"], "parameters": saved["parameters"], "state": state,
    })
    return optimiser


# ---- reading: everything into memory, checked, before anything is built ---------------------------------------------


def _read(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not a flux model")
            arrays = {name: npz[name] for name in npz.files}
        description = json.loads(str(arrays.pop(_DESCRIPTION)))
    except FileNotFoundError:
        raise
    except KeyError:
        raise ValueError(f"flux.load: {path} is not a flux model file (it has no {_DESCRIPTION} entry)") from None
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, struct.error, UnicodeError,
            AttributeError) as error:
        raise ValueError(f"flux.load: {path} cannot be read — the file is truncated or corrupted ({error})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"flux.load: {path} is not a flux model file")
    if description.get("version") != VERSION:
        raise ValueError(f"flux.load: {path} has format version {description.get('version')}; this flux reads "
                         f"version {VERSION}")
    try:
        for name, spec in description["parameters"].items():
            array = arrays.get(f"param/{name}")
            if array is None:
                raise ValueError(f"flux.load: {path} is missing the array of parameter {name!r} (corrupted file?)")
            if list(array.shape) != spec["shape"] or str(array.dtype) != spec["dtype"]:
                raise ValueError(f"flux.load: {path}: parameter {name!r} is {array.shape} {array.dtype} but its "
                                 f"description says {tuple(spec['shape'])} {spec['dtype']} (corrupted file?)")
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"flux.load: {path} has a malformed description ({error!r})") from None
    return description, arrays


# ---- describing a model as JSON -----------------------------------------------------------------------------------


class _Describer:
    """Model → JSON-able tree. Arrays go into `arrays` and are referenced by key; shared models by index."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.seen: dict[int, int] = {}  # id(model) → index; every model stays alive inside the saved tree

    def model(self, model: Model, where: str) -> dict:
        if id(model) in self.seen:
            return {"$ref": self.seen[id(model)]}
        self.seen[id(model)] = index = len(self.seen)
        cls = type(model)
        attributes = {name: self.value(value, f"{where}.{name}") for name, value in model.__dict__.items()
                      if name not in _RUNTIME_FIELDS}
        return {"class": _import_path(cls), "id": index, "attributes": attributes,
                "params": {name: list(p.shape) for name, p in model.__dict__["_params"].items()}}

    def value(self, value: Any, where: str) -> Any:
        from .layers.activations import Elementwise

        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"$tuple": [self.value(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            return {"$dict": [[self.value(k, f"{where} key"), self.value(v, f"{where}[{k!r}]")]
                              for k, v in value.items()]}
        if isinstance(value, Elementwise) and _elementwise_function(value.function) is value:
            return {"$elementwise": value.function}
        if isinstance(value, Model):
            return {"$model": self.model(value, where)}
        if isinstance(value, np.dtype):
            return {"$dtype": str(value)}
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            return {"$scalar": [str(value.dtype), value.item()]}
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            key = f"attribute/{len(self.arrays)}"
            self.arrays[key] = value
            return {"$array": key}
        if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
            path = _import_path(value)
            try:
                if "<" not in path and _resolve(path) is value:
                    return {"$import": path}
            except (ImportError, AttributeError):
                pass  # not reachable by its name: refused below
        raise TypeError(f"flux.save: cannot describe {where} = {value!r} ({type(value).__name__}); an attribute "
                        "must be plain data, an array, a model, a flux function or a module-level function. "
                        "Save such a model anyway by keeping that attribute out of it, or use load(path, into=model)")


# ---- rebuilding a model from its description ----------------------------------------------------------------------


class _Builder:
    """JSON tree → model objects (without calling __init__), then parameters assigned through the model's checks."""

    def __init__(self, arrays: dict[str, np.ndarray], params: dict[str, np.ndarray], path):
        self.arrays, self.params, self.path = arrays, params, path
        self.built: dict[int, Model] = {}
        self.declared: dict[int, dict] = {}  # id(model object) → its description's params

    def model(self, node: dict) -> Model:
        root = self.node(node)
        owners = list(_parameter_owners(root, "", self.declared))
        names = [name for name, _, _ in owners]
        if names != list(self.params):
            raise ValueError(f"flux.load: the model rebuilt from {self.path} has parameters {names} but the file "
                             f"has {list(self.params)}; has its class changed since it was saved?")
        for name, owner, local in owners:
            if self.params[name].dtype != owner.dtype:
                raise ValueError(f"flux.load: parameter {name!r} is {self.params[name].dtype} in {self.path} but "
                                 f"{type(owner).__name__} computes in {owner.dtype}")
            owner._assign_param(local, self.params[name])
        for _, owner, _ in owners:
            owner._check_param_sizes()
        return root

    def node(self, node: dict) -> Model:
        if "$ref" in node:
            return self.built[node["$ref"]]
        cls = _import(node["class"], self.path)
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            raise ValueError(f"flux.load: {node['class']} in {self.path} is not a flux.Model class")
        declared = set(cls.declared_params())
        if set(node["params"]) != declared:
            raise ValueError(f"flux.load: {self.path} has parameters {sorted(node['params'])} for {cls.__name__}, "
                             f"which now declares {sorted(declared)}")
        model = cls.__new__(cls)
        model.__dict__.update(_params={}, _grads={}, _states={}, _tape=None, _program=None, _has_grads=False)
        self.built[node["id"]] = model
        self.declared[id(model)] = node["params"]
        model.__dict__.update({name: self.value(value) for name, value in node["attributes"].items()})
        return model

    def value(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if not isinstance(value, dict):
            return value
        (tag, content), = value.items()
        if tag == "$tuple":
            return tuple(self.value(v) for v in content)
        if tag == "$dict":
            return {self.value(k): self.value(v) for k, v in content}
        if tag == "$elementwise":
            function = _elementwise_function(content)
            if function is None:
                raise ValueError(f"flux.load: {self.path} uses the function {content!r}, which flux does not have")
            return function
        if tag == "$model":
            return self.node(content)
        if tag == "$dtype":
            return np.dtype(content)
        if tag == "$scalar":
            return np.dtype(content[0]).type(content[1])
        if tag == "$array":
            return self.arrays[content].copy()
        if tag == "$import":
            return _import(content, self.path)
        raise ValueError(f"flux.load: {self.path} has an attribute of unknown kind {tag!r}")


def _parameter_owners(model: Model, prefix: str, declared: dict):
    """(dotted name, owning model, local name) in the order of `model.params` (own first, then sub-models)."""
    for local in declared.get(id(model), {}):
        yield prefix + local, model, local
    for name, sub in model.named_submodels():
        yield from _parameter_owners(sub, f"{prefix}{name}.", declared)


# ---- helpers -------------------------------------------------------------------------------------------------------


def _reset_runtime(model: Model) -> None:
    """After new parameters: no stale gradients, no forward tape computed with the old ones."""
    model.zero_grad()
    from .runtime import RuntimeState

    model.__dict__["_runtime"] = RuntimeState()  # a fresh run-time state: no tape, no program, no cached lists
    for _, sub in model.named_submodels():
        _reset_runtime(sub)


def _elementwise_function(function: str):
    """flux's own elementwise function object (flux.relu, flux.σ…) with that name, if there is one."""
    from .layers import activations

    for value in vars(activations).values():
        if isinstance(value, activations.Elementwise) and value.function == function:
            return value
    return None


def _import_path(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _resolve(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    obj = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _import(path: str, file) -> Any:
    try:
        return _resolve(path)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"flux.load: {file} needs {path}, which cannot be imported here ({error}); import the "
                         "module that defines it, or build the model yourself and use load(path, into=model)") from None
