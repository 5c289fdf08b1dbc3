"""The NumPy tier's modules: the same module as the numba tier's, printed by the NumPy printer, nothing to compile.

A model's module is made by kernel_pair.py, feedforward.py and recurrent.py (+ drivers.py), which call the numba
printer (`generate_kernel_source`) and the numba template (`module_source`). The NumPy tier loads a second copy of
those three modules with the NumPy printer (`flux.generate.vectorised`) and the template below in their place, so
both tiers have ONE description of what a module holds: the same functions, the same arguments, the same METADATA
and the same returns (the run-time code calls whichever module is loaded). The drivers' time loops are plain
Python either way; here each step is a few whole-array NumPy operations.

    # flux-module-key: <key>
    \"\"\"what it is, and its maths\"\"\"
    imports                            numpy; scipy.special and flux.vectormath only if the text calls them
    real = np.<dtype>
    METADATA = {…}
    helpers, then the functions        forward and backward run under np.errstate(all="ignore") (`quiet`)
    # end of generated module
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import threading
from types import ModuleType

from ..cache import END, KEY_LINE
from .vectorised import vector_kernel_source

ENTRY_POINTS = ("forward", "backward", "train_step")  # called by flux.run: made quiet (NumPy warns where numba's model does not)
VECTORMATH = ("sigmoid", "clampedlog_derivative", "copy_into", "add_into", "all_finite", "quiet")
_siblings: dict[str, ModuleType] = {}
_lock = threading.Lock()


def generate_numpy_module_source(derivation, dtype, key: str) -> str:
    """The complete text of a model's NumPy-tier module (recurrent or feed-forward), keyed as the cache asks."""
    if derivation.states:
        return sibling("recurrent").generate_recurrent_module_source(derivation, dtype, key)
    return sibling("feedforward").generate_module_source(derivation, dtype, key)


def generate_numpy_step_source(derivation, rules, optimiser_name: str, dtype, key: str) -> str:
    """The NumPy tier's fused training step (flux.generate.train_step), its update rule on whole arrays."""
    return sibling("train_step").generate_step_source(derivation, rules, optimiser_name, dtype, key)


def numpy_update_source(rules, optimiser_name: str) -> str:
    """optimiser_update.update_source on whole arrays: every state from the old values, then θ, all in place."""
    from .optimiser_update import printed_updates

    printed = printed_updates(rules)
    states = list(rules.state)
    arguments = ", ".join(["θ_", "g_"] + [f"{s}_" for s in states] + ["step_count"]
                          + [f"hyper_{h}" for h in rules.hyperparameters])
    maths = "; ".join(f"{t} ← {e}" for t, e in rules.updates.items())

    def whole(code: str) -> str:  # math.sqrt(v) of an array: np.sqrt
        return re.sub(r"(?<![\w.])math\.", "np.", code)

    lines = [f"def update({arguments}):", f'    """{optimiser_name}: {maths}"""', "    θ = θ_", "    g = g_"]
    lines += [f"    {s}_old = {s}_.copy()" for s in states]
    lines += [f"    {s}_[...] = {whole(printed[s])}" for s in states]
    lines.append(f"    θ_[...] = {whole(printed['θ'])}")
    return "\n".join(lines)


def numpy_module_source(key: str, docstring: str, dtype, *, metadata: dict | None = None, helpers: list[str] = (),
                        kernels: list[str] = ()) -> str:
    """`flux.generate.module.module_source` for the NumPy tier: the functions are plain Python, the entry points
    quiet."""
    parts = [] if metadata is None else [f"METADATA = {metadata!r}"]
    parts += [h.rstrip("\n") for h in helpers]
    for kernel in kernels:
        name = re.match(r"def (\w+)\(", kernel).group(1)
        parts.append(("@quiet\n" if name in ENTRY_POINTS else "") + kernel.rstrip("\n"))
    body = "\n\n\n".join(parts)
    docstring = ("NumPy tier (whole-array NumPy, nothing compiled; the numba tier's module has the same functions).\n"
                 + docstring.replace("inside numba", "in Python"))
    docstring += "\n" if "\n" in docstring else ""
    return (f'{KEY_LINE}{key}\n"""{docstring}"""\n{vector_imports(body)}\n\nreal = np.{dtype.name}\n\n\n'
            f"{body}\n\n{END}\n")


def vector_imports(code: str) -> str:
    """The import lines the printed `code` needs."""
    standard = ["import math"] if re.search(r"(?<![\w.])math\.", code) else []
    third_party = ["import numpy as np"] + (["from scipy import special"] if re.search(r"(?<![\w.])special\.", code)
                                            else [])
    used = [name for name in VECTORMATH if re.search(rf"(?<![\w.]){name}\b", code)]
    flux = [f"from flux.vectormath import {', '.join(used)}"] if used else []
    return "\n\n".join("\n".join(group) for group in (standard, third_party, flux) if group)


def vector_step_kernel_source(name: str, arguments: list, results: list, doc: str = "") -> tuple[str, list]:
    """`flux.generate.step_writer.generate_step_kernel_source` for the NumPy tier: whole arrays, no work buffers."""
    return vector_kernel_source(name, arguments, results, doc, per_step=True), []


def sibling(name: str) -> ModuleType:
    """A second copy of flux.generate.<name> whose printer and template are the NumPy tier's (made once)."""
    with _lock:
        if name not in _siblings:
            kernel_pair = _siblings.get("kernel_pair") or _copy("kernel_pair", generate_kernel_source=vector_kernel_source)
            _siblings["kernel_pair"] = kernel_pair
            if name != "kernel_pair":
                _siblings[name] = _copy(name, generate_kernel_source=vector_kernel_source,
                                        generate_step_kernel_source=vector_step_kernel_source,
                                        kernel_pair=kernel_pair.kernel_pair, module_source=numpy_module_source,
                                        update_source=numpy_update_source)
        return _siblings[name]


def _copy(name: str, **replacements) -> ModuleType:
    """Execute flux.generate.<name> again as a new module object (not in sys.modules) and replace some of its
    globals: what it calls by those names is then the NumPy tier's."""
    original = importlib.import_module(f"{__package__}.{name}")  # also what dataclasses look up by module name
    module = importlib.util.module_from_spec(original.__spec__)
    spec = original.__spec__
    spec.loader.exec_module(module)
    for attribute, value in replacements.items():
        if attribute in vars(module):
            setattr(module, attribute, value)
    return module
