"""Printers from derived maths to code, read top to bottom:

    printer.py (+ loops, statements, batch_sums, forms)   one numba kernel from SymPy expressions
    sizes.py, names.py                                     a dimension as code; the names generated code uses
    kernel_pair.py                                         a stateless derivation → forward and backward kernels
    feedforward.py, recurrent.py (+ drivers), train_step.py   the three kinds of module
    module.py                                              the one template every module is written with
"""
from __future__ import annotations


def generate_module_source(derivation, dtype, key: str) -> str:
    """The complete text of the module holding a model's kernels: a recurrent cell's (it has states) or a
    feed-forward model's."""
    if derivation.states:
        from .recurrent import generate_recurrent_module_source

        return generate_recurrent_module_source(derivation, dtype, key)
    from .tokens import generate_token_module_source, is_token_model

    if is_token_model(derivation):  # matrices per sample: the token printer
        return generate_token_module_source(derivation, dtype, key)
    from .feedforward import generate_module_source as feedforward_module_source

    return feedforward_module_source(derivation, dtype, key)
