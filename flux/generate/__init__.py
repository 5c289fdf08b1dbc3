"""Printers from derived maths to code: the numba printer, feed-forward, recurrent and training-step modules."""
from __future__ import annotations


def generate_module_source(derivation, dtype, key: str) -> str:
    """The complete text of the module holding a model's kernels: a recurrent cell's (it has states) or a
    feed-forward model's."""
    if derivation.states:
        from .recurrent import generate_recurrent_module_source

        return generate_recurrent_module_source(derivation, dtype, key)
    from .feedforward import generate_module_source as feedforward_module_source

    return feedforward_module_source(derivation, dtype, key)
