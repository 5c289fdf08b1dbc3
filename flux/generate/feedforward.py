"""A derivation → the text of one generated module: forward and backward kernels plus the metadata to call them.

Forward computes the outputs and keeps the intermediates backward reads (the backward pass is written through
forward values, e.g. σ′ = y ⊙ (1 − y), so y is kept rather than recomputed). Backward takes the upstream
gradient Δ and those kept arrays, returns ∂L/∂input and adds Σₙ ∂L/∂W into each gradient array in place.
"""
from __future__ import annotations

import builtins
import keyword
import re
import unicodedata

import numpy as np
import sympy
from sympy import ZeroMatrix

from .module import module_source
from .printer import Argument, Result, describe, generate_kernel_source, size_codes
from ..maths.graph import matrix_children, topological_order
from ..maths.nodes import Generated
from ..derive.derivation import Derivation

# Names generated code uses for itself. A user's name becomes a code name only if it cannot be one of these, nor
# one of them with a prefix or suffix the generators add (grad_W, hidden_seq, W_T, …); otherwise it is encoded.
GENERATED_NAMES = {
    "N", "T", "n", "j", "r", "c", "t", "i", "acc", "shift", "real", "np", "njit", "math", "rows", "x", "target",
    "scale", "loss", "step", "update", "θ", "g", "forward", "backward", "project", "project_backward", "readout",
    "readout_backward", "step_forward", "step_backward", "gradients", "input_sizes", "check_params", "state_sizes",
    "METADATA", "fast_exp", "fast_sigmoid", "fast_tanh", "all_finite", "prange", "grad", "new", "from", "opt", "hyper",
}
GENERATED_FAMILIES = re.compile(r"(t|y|u|kept|pkept|rkept|factor|from_readout|from_projection)\d*")
GENERATED_PREFIXES = ("grad_", "new_", "from_", "opt_", "hyper_", "v_")
GENERATED_SUFFIXES = ("_seq", "_initial", "_last", "_out", "_t", "_T", "_old", "_")
RESERVED = GENERATED_NAMES | set(keyword.kwlist) | set(dir(builtins))


def identifier(name: str) -> str:
    """The code name of a symbol the user named (dotted for sub-models: "0.W" → "l0·W"), injective.

    A name that could clash with anything generated code calls its own (a builtin, a generated local, grad_W
    beside W, hidden_seq beside hidden, a name Python would NFKC-normalise into another) is encoded instead:
    "v_" + its letters + "_" + the hex of its UTF-8 bytes, e.g. y → v_y_79. Every valid identifier works.
    """
    text = ("l" if name[:1].isdigit() else "") + name.replace(".", "·")
    plain = (text.isidentifier() and unicodedata.normalize("NFKC", text) == text and "·" not in name
             and not re.match(r"l\d", name) and text not in RESERVED and not GENERATED_FAMILIES.fullmatch(text)
             and not text.startswith(GENERATED_PREFIXES) and not text.endswith(GENERATED_SUFFIXES))
    if plain:
        return text
    letters = re.sub(r"\W", "_", unicodedata.normalize("NFKC", name)).strip("_")
    encoded = f"v_{letters}_{name.encode().hex()}"  # the hex after the last "_" alone decides the name
    return encoded if letters and encoded.isidentifier() else f"v_{name.encode().hex()}"


def kept_for_backward(derivation: Derivation, gradients: list) -> list:
    """The forward nodes backward reads: walking down from each gradient, stop at the first forward node."""
    forward_nodes = set(topological_order(derivation.outputs))
    leaves = set(derivation.inputs) | set(derivation.params.values())
    kept, seen = [], set()
    stack = list(gradients)
    while stack:
        node = stack.pop()
        if node in seen or node in leaves:
            continue
        seen.add(node)
        cheap = isinstance(node, sympy.Transpose) and node.arg in leaves
        if node in forward_nodes and not cheap:
            kept.append(node)
        else:
            stack.extend(matrix_children(node))
    order = {node: i for i, node in enumerate(topological_order(derivation.outputs))}
    return sorted(kept, key=order.get)


def generate_module_source(derivation: Derivation, dtype, key: str) -> str:
    """The complete text of the module holding a feed-forward model's kernels."""
    dtype = np.dtype(dtype)
    inputs = [Argument(x, identifier(x.name), True) for x in derivation.inputs]
    params = [Argument(p, identifier(name), False) for name, p in derivation.params.items()]
    input_gradients = [derivation.gradients[x.name] for x in derivation.inputs]
    param_gradients = [derivation.gradients[p.name] for p in derivation.params.values()]
    kept = [k for k in kept_for_backward(derivation, input_gradients + param_gradients) if k not in derivation.outputs]
    batched_inputs = set(derivation.inputs)

    def batched(node) -> bool:
        return node in batched_inputs or any(batched(c) for c in matrix_children(node))

    for k, output in enumerate(derivation.outputs):
        if not batched(output):
            raise TypeError(f"{derivation.name}: output {k} does not depend on the input, so it has no batch")
    output_names = ["y"] if len(derivation.outputs) == 1 else [f"y{k}" for k in range(1, len(derivation.outputs) + 1)]
    named = dict(zip(derivation.outputs, output_names))
    named.update({node: f"kept{k}" for k, node in enumerate(kept, 1)})

    forward = generate_kernel_source(
        "forward", inputs + params,
        [Result(named[o], o) for o in derivation.outputs] + [Result(named[k], k) for k in kept],
        doc="; ".join(f"{named[o]} = {describe(o, width=200)}" for o in derivation.outputs),
    )

    def as_symbol(expr):
        replacements = {node: Generated(name, *node.shape) for node, name in named.items()}
        return expr.xreplace(replacements)

    deltas = [Argument(d, identifier(d.name), True) for d in derivation.upstream]
    saved = [Argument(Generated(named[n], *n.shape), named[n], batched(n)) for n in derivation.outputs + kept]
    gradient_arrays = [Argument(Generated(f"grad_{a.name}", *a.symbol.shape), f"grad_{a.name}", False) for a in params]
    zero_inputs = [i for i, g in enumerate(input_gradients) if isinstance(g, ZeroMatrix)]
    results = [
        Result(f"grad_{a.name}", as_symbol(g)) for i, (a, g) in enumerate(zip(inputs, input_gradients))
        if i not in zero_inputs
    ]
    results += [
        Result(f"grad_{a.name}", as_symbol(g), mode="accumulate", into=f"grad_{a.name}")
        for a, g in zip(params, param_gradients)
    ]
    backward = generate_kernel_source(
        "backward", deltas + inputs + params + saved + gradient_arrays, results,
        doc="∂L/∂inputs returned, Σₙ ∂L/∂params added into grad_*",
    )
    metadata = common_metadata(derivation, dtype, derivation.inputs, derivation.params)
    metadata.update(kept=len(kept), zero_input_gradients=zero_inputs)
    return module_text(derivation, dtype, key, metadata, [forward, backward], params, inputs)


def common_metadata(derivation: Derivation, dtype, inputs: list, params: dict) -> dict:
    """What the runtime reads from every generated module: names, dtype, and each input's size symbol."""
    return {
        "model": derivation.name,
        "dtype": np.dtype(dtype).name,
        "inputs": [x.name for x in inputs],
        "input_dims": [sympy.sstr(x.shape[0]) for x in inputs],
        "params": list(params),
        "outputs": len(derivation.outputs),
    }


def module_text(derivation: Derivation, dtype, key: str, metadata: dict, kernels: list, params, inputs) -> str:
    """The module: its maths in the docstring, the shape helpers and the kernels."""
    maths = "\n".join(f"    {describe(o, width=200)}" for o in derivation.outputs)
    docstring = (f"flux kernels for {derivation.name} ({dtype.name}), generated from its maths:\n\n{maths}\n\n"
                 "Generated by flux; regenerated when the maths changes. Do not edit.")
    return module_source(key, docstring, dtype, metadata=metadata, helpers=[shape_checks(params, inputs)],
                         kernels=kernels)


def shape_checks(params: list[Argument], inputs: list[Argument]) -> str:
    """Plain-Python helpers: the feature size each input must have, and the parameters' mutual consistency."""
    names = ", ".join(a.name for a in params)
    sizes = size_codes(params)
    expected = []
    for x in inputs:
        dim = x.symbol.shape[0]
        code = str(dim.xreplace({s: sympy.Symbol(sizes[s]) for s in dim.free_symbols})) if all(
            s in sizes for s in dim.free_symbols) else "None"
        expected.append(code)
    lines = [f"def input_sizes({names}):", '    """The feature size each input must have (None: any)."""',
             f"    return ({', '.join(expected)}{',' if len(expected) == 1 else ''})", "", "",
             f"def check_params({names}):", '    """Raise ValueError naming the parameters whose sizes disagree."""']
    first: dict = {}
    for a in params:
        rows, cols = a.symbol.shape
        axes = [(rows, 0)] if cols == 1 else [(rows, 0), (cols, 1)]
        for dim, axis in axes:
            if not isinstance(dim, sympy.Symbol):
                continue
            if dim in first:
                other, other_axis = first[dim]
                lines.append(f"    if {a.name}.shape[{axis}] != {other.name}.shape[{other_axis}]:")
                lines.append(f"        raise ValueError(f\"{a.symbol.name} has {{{a.name}.shape[{axis}]}} along axis {axis} "
                             f"but {other.symbol.name} has {{{other.name}.shape[{other_axis}]}} along axis {other_axis}; "
                             f"both are the dimension {dim}\")")
            else:
                first[dim] = (a, axis)
    lines.append("    return None")
    return "\n".join(lines)
