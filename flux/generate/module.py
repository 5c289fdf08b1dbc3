"""ONE template for every generated module: feed-forward, recurrent and the fused training step.

    # flux-module-key: <key>            cache.KEY_LINE: the cache loads a file only for the key it was made for
    \"\"\"what it is, and its maths\"\"\"
    imports                              derived from the printed text: `np.` → numpy, `math.` → math, …
    real = np.<dtype>
    METADATA = {…}                       what the runtime reads (absent from the training step's module)
    helpers, then @njit kernels
    # end of generated module            cache.END: a truncated file is never loaded

The imports are read off what was printed (as sympy.codegen.pyutils.render_as_module does), so a function whose
code needs `math` or a new `flux.fastmath` / `flux.products` helper needs no edit here.
"""
from __future__ import annotations

import re

from ..cache import END, KEY_LINE

# NumPy's error model: 1/0 is inf and 0/0 is NaN (as in NumPy), never a ZeroDivisionError mid-kernel.
JIT = '@njit(cache=True, nogil=True, error_model="numpy")'
# the helpers generated code may call from flux.fastmath, flux.products and flux.small_products, found in the text
# by their call
FASTMATH = ("all_finite", "fast_exp", "fast_sigmoid", "fast_tanh", "softmax_rows")
PRODUCTS = ("dot", "dot_into", "add_into", "copy_into")
SMALL_PRODUCTS = ("step_product", "step_product_into")  # from flux.small_products: a cell's per-step products
# from flux.optimiser_updates: the built-in optimisers' rules, called by a fused step's `update`
OPTIMISER_UPDATES = ("sgd_update", "momentum_update", "nesterov_update", "rmsprop_update", "adam_update")
HELPER_MODULES = (("fastmath", FASTMATH), ("products", PRODUCTS), ("small_products", SMALL_PRODUCTS),
                  ("optimiser_updates", OPTIMISER_UPDATES))


def module_source(key: str, docstring: str, dtype, *, metadata: dict | None = None, helpers: list[str] = (),
                  kernels: list[str] = ()) -> str:
    """The text of one generated module: `helpers` are plain Python, `kernels` are compiled by numba."""
    parts = [] if metadata is None else [f"METADATA = {metadata!r}"]
    parts += [h.rstrip("\n") for h in helpers]
    parts += [f"{JIT}\n{k.rstrip(chr(10))}" for k in kernels]
    body = "\n\n\n".join(parts)
    docstring += "\n" if "\n" in docstring else ""
    return (f'{KEY_LINE}{key}\n"""{docstring}"""\n{imports_for(body)}\n\nreal = np.{dtype.name}\n\n\n'
            f"{body}\n\n{END}\n")


def imports_for(code: str) -> str:
    """The import lines the printed `code` needs (and `real = np.<dtype>` always needs NumPy)."""
    standard = ["import math"] if re.search(r"(?<![\w.])math\.", code) else []
    third_party = ["import numpy as np"] + (["from numba import njit"] if re.search(r"\bnjit\b", code) else [])
    flux = [f"from flux.{module} import {', '.join(used)}" for module, names in HELPER_MODULES
            if (used := [name for name in names if re.search(rf"(?<![\w.]){name}\(", code)])]
    return "\n\n".join("\n".join(group) for group in (standard, third_party, flux) if group)
