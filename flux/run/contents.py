"""Attributes changed in place: `m.coeffs[0] = 5.0` sets no attribute, so `Model.__setattr__` never sees it.

A model's maths may read any attribute (`self.coeffs[0] * x`, a Chain's `layers`), so when a model is traced the
value of every list, tuple, dict, set and small array among its attributes and its sub-models' is kept; each call
compares them (a few tuple comparisons; nothing for a model without such attributes) and traces the model again
when one changed — the new value is used, never the stale one. Other mutable objects (a user's config object)
must be assigned again (`m.config = config`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .state import configuration_changed

# flux's own bookkeeping in a model's __dict__ (parameters are arrays the kernels take, not maths)
BOOKKEEPING = frozenset({"_params", "_grads", "_states", "_runtime", "_parts", "_subviews", "_tracing"})
CONTAINERS = (list, tuple, dict, set, frozenset, np.ndarray)
SMALL_ARRAY = 4096  # entries: an array forward reads entry by entry is small; a larger one is compared by shape


def attribute_contents(model: Any) -> list:
    """(container, how to read its value, its value) for every container attribute of the model and of its
    sub-models, depth first."""
    found: list = []
    seen: set[int] = set()

    def walk(m: Any) -> None:
        if id(m) in seen:
            return
        seen.add(id(m))
        skip = BOOKKEEPING | set(getattr(type(m), "per_call_attributes", ()))
        for name, value in vars(m).items():
            if name not in skip and isinstance(value, CONTAINERS):
                read = reader(value)
                found.append((value, read, read(value)))
        for _, sub in m.named_submodels():
            walk(sub)

    walk(model)
    return found


def changed_in_place(contents: list) -> bool:
    """True (and every model traces itself again before its next call) when a kept container's value changed."""
    for container, read, value in contents:
        try:
            same = bool(read(container) == value)
        except Exception:  # an element whose == is not a truth value: call it changed, trace again
            same = False
        if not same:
            configuration_changed()
            return True
    return False


def reader(container: Any):
    """`tuple` for a list or tuple of plain values (a Chain's layers: fast, it is read at every call), `value_of`
    for anything nested. A nested value put in later changes the tuple: the model is traced again, read anew."""
    if isinstance(container, (list, tuple)) and not any(isinstance(v, CONTAINERS) for v in container):
        return tuple
    return value_of


def value_of(value: Any) -> Any:
    """A container's value as nested tuples (arrays: shape, dtype and bytes), compared with ==; other objects are
    themselves (a model in a list: the same model)."""
    if isinstance(value, (list, tuple)):
        return type(value), tuple(value_of(v) for v in value)
    if isinstance(value, dict):
        return dict, tuple((k, value_of(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    if isinstance(value, np.ndarray):
        data = value.tobytes() if value.size <= SMALL_ARRAY else None
        return np.ndarray, value.shape, value.dtype.str, data
    return value
