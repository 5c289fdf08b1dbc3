"""`model.params`: the parameter arrays by dotted name; assigning copies values in, checked first."""
from __future__ import annotations

from typing import Any

import numpy as np

from .run.inputs import as_float_array, to_dtype
from .run.state import parameters_written


class Parameters(dict):
    """`model.params`: {dotted name: the parameter array itself}. Assigning an entry copies the new values INTO the
    parameter (same shape, converted to the model's dtype like an input), so every kernel, optimiser state and
    cached list keeps acting on the array this mapping shows; names cannot be added or removed."""

    def __init__(self, model: "Model", items):
        super().__init__(items)
        self.model_name = type(model).__name__

    def __setitem__(self, name: str, value: Any) -> None:
        self.update({name: value})

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Copy parameters' values in; every one is checked first, so an error changes none."""
        checked = []
        for name, value in dict(*args, **kwargs).items():
            if name not in self:
                raise KeyError(f"{self.model_name} has no parameter {name!r}; its parameters are {', '.join(self)}")
            target = dict.__getitem__(self, name)
            array = as_float_array(self.model_name, "parameter", name, value, target.dtype)
            if array.shape != target.shape:
                raise ValueError(f"{self.model_name}: parameter {name} has shape {target.shape}, got {array.shape}; "
                                 "assigning into params copies values and cannot change a shape (build a new model)")
            checked.append((target, to_dtype(self.model_name, name, array, target.dtype, "parameter"), name))
        for target, array, name in checked:  # a layer used twice: one array under two names, given one value
            first = next(c for c in checked if c[0] is target)
            if not np.array_equal(first[1], array, equal_nan=True):
                raise ValueError(f"{self.model_name}: parameters {first[2]!r} and {name!r} are one array (a layer "
                                 "used twice); they cannot be given different values")
        for target, array, _ in checked:
            np.copyto(target, array)
        parameters_written([target for target, _, _ in checked])

    def _refuse(self, *args: Any, **kwargs: Any):
        raise TypeError(f"{self.model_name}.params: parameters are declared by the model; they cannot be added or "
                        "removed (assign params[name] = array to set one's values)")

    __delitem__ = pop = popitem = clear = setdefault = _refuse
