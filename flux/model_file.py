"""A flux model file: one `.npz` archive, read whole and checked; a model described as JSON and rebuilt; written
atomically.

The archive holds `param/<dotted name>` arrays (in the model's dtype), `optimiser/<state>/<dotted name>` arrays,
`attribute/<k>` arrays (array-valued attributes) and `__flux__`: a JSON description —

    {"format": "flux-model", "version": 1,
     "model": {"class": "module:qualname", "id": 0, "attributes": {…}, "params": {name: shape}},
     "parameters": {dotted name: {"shape": […], "dtype": "float32"}},
     "optimiser": None or {"class", "hyperparameters", "step_count", "parameters", "state": {state: [names]}}}

An attribute value is plain JSON or a tagged one: {"$tuple": …}, {"$dict": [[k, v], …]}, {"$model": …} (a sub-model;
{"$ref": id} when it is shared), {"$elementwise": "relu"}, {"$dtype": …}, {"$scalar": [dtype, value]},
{"$array": key}, {"$import": "module:qualname"}. Rebuilding resolves every class a file names only through
`resolve_class`: flux's own classes (looked up among those defined, never imported) and those the caller allowed;
the policy, and what a model may hold, are in `flux.io`'s docstring.
"""
from __future__ import annotations

import inspect
import json
import os
import secrets
import stat
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .model import Model
from .model_archive import UnsafeArchive, check_archive

FORMAT = "flux-model"
VERSION = 1
DESCRIPTION = "__flux__"
# Fields that are not configuration: parameters and gradients (saved as arrays), the run-time state (never saved:
# flux.run.state.RuntimeState, rebuilt empty on load), a Chain's cached parts (`_parts`: which layers run in turn,
# made again from `layers` on first use), and names older versions kept in __dict__. Never written, ignored when read:
# a file cannot make a loaded model run anything but what its own attributes say.
RUNTIME_FIELDS = ("_params", "_grads", "_runtime", "_tape", "_program", "_has_grads", "_tracing", "_flat",
                  "_tape_thread", "_state_grads", "_parts")


# ---- reading: everything into memory, checked, before anything is built ---------------------------------------------


WHAT_A_FLUX_FILE_IS = f"a flux model file is a .npz archive written by flux.save, with a {DESCRIPTION!r} description"


def read(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    with open(path, "rb") as file:  # FileNotFoundError / IsADirectoryError as for any open
        magic = file.read(6)
    if not magic.startswith(b"PK"):
        what = ("a single NumPy array (.npy)" if magic == b"\x93NUMPY" else "empty" if not magic
                else "not a zip archive")
        raise ValueError(f"flux.load: {path} is not a flux model file: it is {what}; {WHAT_A_FLUX_FILE_IS}")
    try:
        check_archive(path)  # before anything is inflated
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, struct.error, UnicodeError,
            AttributeError, SyntaxError) as error:
        if isinstance(error, UnsafeArchive):
            raise ValueError(f"flux.load: {path} is refused: {error}") from None
        raise ValueError(f"flux.load: {path} cannot be read — the file is truncated or corrupted ({error})") from None
    not_arrays = [name for name, value in arrays.items() if not isinstance(value, np.ndarray)]
    if not_arrays:  # np.load hands back the raw bytes of a member that is no .npy array
        raise ValueError(f"flux.load: {path} cannot be read — its entry {not_arrays[0]!r} is not a "
                         "NumPy array")
    if DESCRIPTION not in arrays:
        names = ", ".join(sorted(arrays)[:5]) + (", …" if len(arrays) > 5 else "")
        raise ValueError(f"flux.load: {path} is not a flux model file: it is a zip/.npz archive of "
                         f"{names or 'nothing'} without a {DESCRIPTION!r} entry; {WHAT_A_FLUX_FILE_IS}")
    try:
        description = json.loads(str(arrays.pop(DESCRIPTION)))
    except (ValueError, TypeError, RecursionError) as error:  # RecursionError: JSON nested 10⁵ deep
        raise ValueError(f"flux.load: {path} has an unreadable {DESCRIPTION!r} description ({error})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f"flux.load: {path} is not a flux model file; {WHAT_A_FLUX_FILE_IS}")
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


class Describer:
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
                      if name not in RUNTIME_FIELDS}
        return {"class": import_path(cls), "id": index, "attributes": attributes,
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
        if isinstance(value, Elementwise) and value.definition is None \
                and type(elementwise_function(value.function)) is type(value):  # flux's own: by its name
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
            path = import_path(value)
            try:
                if "<" not in path and reachable(path) is value:
                    return {"$import": path}
            except AttributeError:
                pass  # not reachable by its name: refused below
        raise TypeError(f"flux.save: cannot describe {where} = {value!r} ({type(value).__name__}); an attribute "
                        "must be plain data, an array, a model, a flux function or a module-level function. "
                        "Save such a model anyway by keeping that attribute out of it, or use load(path, into=model)")


# ---- rebuilding a model from its description ----------------------------------------------------------------------


class Builder:
    """JSON tree → model objects (without calling __init__), then parameters assigned through the model's checks."""

    def __init__(self, arrays: dict[str, np.ndarray], params: dict[str, np.ndarray], path, allowed: dict[str, Any]):
        self.arrays, self.params, self.path, self.allowed = arrays, params, path, allowed
        self.built: dict[int, Model] = {}
        self.declared: dict[int, dict] = {}  # id(model object) → its description's params

    def model(self, node: dict) -> Model:
        root = self.node(node)
        owners = list(parameter_owners(root, "", self.declared))
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
        for model in self.built.values():
            try:
                model._check_attributes()
            except (TypeError, ValueError) as error:
                raise ValueError(f"flux.load: {self.path}: {error}") from None
        return root

    def node(self, node: dict) -> Model:
        if "$ref" in node:
            return self.built[node["$ref"]]
        cls = resolve_class(node["class"], self.path, self.allowed, "flux.load")
        if not (isinstance(cls, type) and issubclass(cls, Model)):
            raise ValueError(f"flux.load: {node['class']} in {self.path} is not a flux.Model class")
        declared = set(cls.declared_params())
        if set(node["params"]) != declared:
            raise ValueError(f"flux.load: {self.path} has parameters {sorted(node['params'])} for {cls.__name__}, "
                             f"which now declares {sorted(declared)}")
        model = cls.__new__(cls)
        model.__dict__.update(_params={}, _grads={}, _states={})  # its RuntimeState is made on first use
        self.built[node["id"]] = model
        self.declared[id(model)] = node["params"]
        attributes = {name: value for name, value in node["attributes"].items() if name not in RUNTIME_FIELDS}
        for name in attributes:
            if name not in cls.declared_slots():  # a sub-model declared in the class body (`a = Perceptron`)
                check_attribute_name(cls, name, self.path)
        model.__dict__.update({name: self.value(value) for name, value in attributes.items()})
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
            function = elementwise_function(content)
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
            return resolve_class(content, self.path, self.allowed, "flux.load")
        raise ValueError(f"flux.load: {self.path} has an attribute of unknown kind {tag!r}")


def check_attribute_name(cls: type, name: Any, path) -> None:
    """An attribute a file sets is data: refuse a name that would replace behaviour of the class (an instance
    attribute `forward`, `back`, `parts`… shadows the method, so the model would compute what the file says rather
    than what its class's maths shows) or that is not an attribute name at all."""
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("__"):
        raise ValueError(f"flux.load: {path} sets an attribute named {name!r} on {cls.__name__}, which is not a "
                         "plain attribute name")
    behaviour = inspect.getattr_static(cls, name, None)
    if callable(behaviour) or hasattr(behaviour, "__get__"):
        raise ValueError(f"flux.load: {path} sets the attribute {name!r} of {cls.__name__}, which is a method or "
                         "property of the class: a file holds data and cannot replace what a model computes")


def parameter_owners(model: Model, prefix: str, declared: dict):
    """(dotted name, owning model, local name) in the order of `model.params` (own first, then sub-models)."""
    for local in declared.get(id(model), {}):
        yield prefix + local, model, local
    for name, sub in model.named_submodels():
        yield from parameter_owners(sub, f"{prefix}{name}.", declared)


# ---- what a file names: functions and classes by import path, resolved only if flux's own or allowed ---------------


def elementwise_function(function: str):
    """flux's own elementwise function object (flux.relu, flux.σ, flux.gelu…) with that name, if there is one."""
    from .layers import activations

    for value in vars(activations).values():
        if isinstance(value, activations.Elementwise) and value.function == function:
            return value
    return activations.function_named(function) if isinstance(function, str) else None  # the table's: gelu, erf…


def import_path(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def reachable(path: str) -> Any:
    """The object at "module:qualname" in an already imported module (saving never imports anything either)."""
    module_name, _, qualname = path.partition(":")
    obj = sys.modules.get(module_name)
    if obj is None:
        raise AttributeError(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def flux_class(path: str) -> type | None:
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


def resolve_class(path: Any, file, allowed: dict[str, Any], caller: str) -> Any:
    """The class (or function) a file names, if flux's own or allowed by the caller; else a ValueError naming it."""
    if not isinstance(path, str):
        raise ValueError(f"{caller}: {file} names a class as {path!r}, which is not a \"module:qualname\" string")
    if path in allowed:
        return allowed[path]
    cls = flux_class(path)
    if cls is not None:
        return cls
    name = path.rpartition(":")[2] or path
    raise ValueError(f"{caller}: {file} names {path!r}, which is neither one of flux's classes nor a class you "
                     f"allowed. Files are data: flux never imports a module or calls anything a file names. If you "
                     f"trust this file and {name} is your class, allow it: {caller}(path, classes=[{name}]) or "
                     f"flux.register({name}); or build the model yourself and use flux.load(path, into=model)")


# ---- writing: through links, regular files only, permissions kept, atomically --------------------------------------

FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def write_atomically(path: Path, write: Callable[[Any], None]) -> None:
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
        kind = next((name for test, name in FILE_KINDS if test(existing.st_mode)), "not a regular file")
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
                keep_ownership(file.fileno(), existing)
                os.chmod(file.fileno(), stat.S_IMODE(existing.st_mode))
            os.fsync(file.fileno())  # the data is on disk before the name points at it
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def keep_ownership(descriptor: int, existing: os.stat_result) -> None:
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
