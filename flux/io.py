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
import secrets
import stat
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .model import Model

FORMAT = "flux-model"
VERSION = 1
_DESCRIPTION = "__flux__"
# Fields that are not configuration: parameters and gradients (saved as arrays), the run-time state (never saved:
# flux.run.state.RuntimeState, rebuilt empty on load), and names older versions kept in __dict__.
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
    _write_atomically(Path(path), lambda file: np.savez(file, **arrays))


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
    description, arrays = _read(path)
    params = {name: arrays[f"param/{name}"] for name in description["parameters"]}
    if into is None:
        try:
            return _Builder(arrays, params, path, allowed).model(description["model"])
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


def load_optimiser(path: str | os.PathLike, into: Any = None, classes: Iterable[type] = ()):
    """The optimiser saved with the model at `path`: rebuilt from its class and hyper-parameters, or loaded into
    `into` (which must be of the same class; checked completely before anything changes). The class must be one of
    flux's optimisers, or passed in `classes`, or registered with `flux.register`."""
    from .optimisers import Optimiser

    allowed = _allowed_classes(classes, "flux.load_optimiser")
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
        cls = _resolve_class(saved["class"], path, allowed, "flux.load_optimiser")
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


# ---- reading: everything into memory, checked, before anything is built ---------------------------------------------


_WHAT_A_FLUX_FILE_IS = f"a flux model file is a .npz archive written by flux.save, with a {_DESCRIPTION!r} description"


def _read(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    with open(path, "rb") as file:  # FileNotFoundError / IsADirectoryError as for any open
        magic = file.read(6)
    if not magic.startswith(b"PK"):
        what = ("a single NumPy array (.npy)" if magic == b"\x93NUMPY" else "empty" if not magic
                else "not a zip archive")
        raise ValueError(f"flux.load: {path} is not a flux model file: it is {what}; {_WHAT_A_FLUX_FILE_IS}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, struct.error, UnicodeError,
            AttributeError) as error:
        raise ValueError(f"flux.load: {path} cannot be read — the file is truncated or corrupted ({error})") from None
    if _DESCRIPTION not in arrays:
        names = ", ".join(sorted(arrays)[:5]) + (", …" if len(arrays) > 5 else "")
        raise ValueError(f"flux.load: {path} is not a flux model file: it is a zip/.npz archive of "
                         f"{names or 'nothing'} without a {_DESCRIPTION!r} entry; {_WHAT_A_FLUX_FILE_IS}")
    try:
        description = json.loads(str(arrays.pop(_DESCRIPTION)))
    except (ValueError, TypeError) as error:
        raise ValueError(f"flux.load: {path} has an unreadable {_DESCRIPTION!r} description ({error})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"flux.load: {path} is not a flux model file; {_WHAT_A_FLUX_FILE_IS}")
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
                if "<" not in path and _reachable(path) is value:
                    return {"$import": path}
            except AttributeError:
                pass  # not reachable by its name: refused below
        raise TypeError(f"flux.save: cannot describe {where} = {value!r} ({type(value).__name__}); an attribute "
                        "must be plain data, an array, a model, a flux function or a module-level function. "
                        "Save such a model anyway by keeping that attribute out of it, or use load(path, into=model)")


# ---- rebuilding a model from its description ----------------------------------------------------------------------


class _Builder:
    """JSON tree → model objects (without calling __init__), then parameters assigned through the model's checks."""

    def __init__(self, arrays: dict[str, np.ndarray], params: dict[str, np.ndarray], path, allowed: dict[str, Any]):
        self.arrays, self.params, self.path, self.allowed = arrays, params, path, allowed
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
        cls = _resolve_class(node["class"], self.path, self.allowed, "flux.load")
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
            return _resolve_class(content, self.path, self.allowed, "flux.load")
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
    from .run.state import RuntimeState

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


def _reachable(path: str) -> Any:
    """The object at "module:qualname" in an already imported module (saving never imports anything either)."""
    module_name, _, qualname = path.partition(":")
    obj = sys.modules.get(module_name)
    if obj is None:
        raise AttributeError(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


# ---- what a file may name: flux's own classes and those the caller allowed ------------------------------------------

_registered: dict[str, Any] = {}  # "module:qualname" → class or function, from flux.register


def _checked_allowable(obj: Any, caller: str) -> str:
    """The import path under which `obj` (a class or a module-level function) may be named by a file."""
    if not (isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") and hasattr(obj, "__module__")):
        raise TypeError(f"{caller}: expected a class (or a module-level function), got {obj!r}")
    return _import_path(obj)


def _allowed_classes(classes: Iterable[Any], caller: str) -> dict[str, Any]:
    if classes is None:
        classes = ()
    elif isinstance(classes, type) or callable(classes):
        classes = [classes]
    allowed = dict(_registered)
    allowed.update((_checked_allowable(cls, caller), cls) for cls in classes)
    return allowed


def _flux_class(path: str) -> type | None:
    """flux's own Model or Optimiser subclass named `path` ("flux.layers.basic:Dense"), among the classes already
    defined: looked up, never imported, so a file cannot make flux run a module's code."""
    from .optimisers import Optimiser

    module, _, qualname = path.partition(":")
    if not (module == "flux" or module.startswith("flux.")):
        return None
    pending = [Model, Optimiser]
    while pending:
        cls = pending.pop()
        if cls.__module__ == module and cls.__qualname__ == qualname:
            return cls
        pending.extend(cls.__subclasses__())
    return None


def _resolve_class(path: Any, file, allowed: dict[str, Any], caller: str) -> Any:
    """The class (or function) a file names, if flux's own or allowed by the caller; else a ValueError naming it."""
    if not isinstance(path, str):
        raise ValueError(f"{caller}: {file} names a class as {path!r}, which is not a \"module:qualname\" string")
    if path in allowed:
        return allowed[path]
    cls = _flux_class(path)
    if cls is not None:
        return cls
    name = path.rpartition(":")[2] or path
    raise ValueError(f"{caller}: {file} names {path!r}, which is neither one of flux's classes nor a class you "
                     f"allowed. Files are data: flux never imports a module or calls anything a file names. If you "
                     f"trust this file and {name} is your class, allow it: {caller}(path, classes=[{name}]) or "
                     f"flux.register({name}); or build the model yourself and use flux.load(path, into=model)")


# ---- writing: through links, regular files only, permissions kept, atomically --------------------------------------

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    """Write a new file with `write(file)` and rename it over `path` (or, for a symbolic link, over its target).

    The temporary file sits next to the target, so the rename is atomic: readers see the old or the new file.
    An existing file's permission bits (and owner and group, where the OS lets us) are kept; a new file is created
    with mode 0666 and the kernel applies the umask, as for `open(path, "w")`.
    """
    target = Path(os.path.realpath(path))  # through every symbolic link, so the link itself stays a link
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(existing.st_mode)), "not a regular file")
        shown = str(path) if target == Path(path) else f"{path} (which leads to {target})"
        raise ValueError(f"flux.save: {shown} is {kind}; flux.save only writes regular files — choose a file path")
    temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    mode = 0o600 if existing is not None else 0o666  # a new file: 0666 & ~umask, applied by the kernel
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            if existing is not None:
                _keep_ownership(file.fileno(), existing)
                os.chmod(file.fileno(), stat.S_IMODE(existing.st_mode))
            os.fsync(file.fileno())  # the data is on disk before the name points at it
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _keep_ownership(descriptor: int, existing: os.stat_result) -> None:
    """Give the new file the old one's owner and group where permitted (root; a group the user belongs to).
    Best effort by design, like editors that save by rename: the data and permission bits are what must hold."""
    if not hasattr(os, "fchown"):
        return
    try:
        os.fchown(descriptor, existing.st_uid, existing.st_gid)
    except OSError:
        try:
            os.fchown(descriptor, -1, existing.st_gid)
        except OSError:
            pass
