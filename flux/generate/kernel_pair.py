"""A stateless derivation → its forward kernel and its VJP kernel: the pair every generated module is built from.

    forward(leaves…, params…)                      → outputs…, kept…
    backward(Δ…, leaves…, params…, saved…, grad_*) → ∂L/∂leaves (the nonzero ones); Σₙ ∂L/∂params added into grad_*

The backward pass is written through forward values (σ′ = y ⊙ (1 − y)), so forward also returns the intermediates
backward reads ("kept"), and backward reads them by name instead of recomputing them. Feed-forward models are one
pair (forward, backward); a recurrent cell's projection and readout are one pair each, over all T·N rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy
from sympy import ZeroMatrix

from .names import identifier
from .printer import Argument, Result, describe, generate_kernel_source
from ..maths.graph import Dependence, matrix_children, topological_order
from ..maths.nodes import Generated


@dataclass(frozen=True)
class KernelPair:
    """The two kernels' sources and what connects them (names of arrays, in order)."""

    forward: str
    backward: str
    outputs: list  # the forward's outputs
    kept: list  # intermediates the forward also returns, for the backward
    outputs_read: list  # outputs the backward reads (σ′ = y ⊙ (1 − y)); every output when all are saved
    leaf_gradients: list  # indices of the leaves whose ∂L/∂ the backward returns (the others are zero)


def kept_for_backward(derivation, gradients: list) -> list:
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


def gradient_arrays(params: list[Argument]) -> list[Argument]:
    """The arrays Σₙ ∂L/∂param is added into: grad_W for W."""
    return [Argument(Generated(f"grad_{a.name}", *a.symbol.shape), f"grad_{a.name}", False) for a in params]


def output_arguments(output_names: list[str], outputs: list, batched) -> list[Argument]:
    """Every output as an argument of backward, each by its own name: an expression returned twice is two."""
    return [Argument(Generated(n, *o.shape), n, batched(o)) for n, o in zip(output_names, outputs)]


def kernel_pair(derivation, names: tuple[str, str], leaves: list[Argument], params: list[Argument],
                output_names: list[str], kept_prefix: str, docs: tuple[str, str], *,
                save_all_outputs: bool = False, gradient_leaves: set | None = None) -> KernelPair:
    """The forward and backward kernels (named `names`) of a stateless derivation whose inputs are `leaves`.

    Kept intermediates are named kept_prefix + 1, 2, …; `docs` end the forward's docstring (after its maths) and
    are the backward's. Backward reads the outputs it needs after the kept values, or, with `save_all_outputs`,
    every output before them (the feed-forward calling convention). `gradient_leaves`: the indices of the leaves
    whose ∂L/∂ backward returns (None: every leaf's; a training step needs no ∂L/∂x).
    """
    batched = Dependence(a.symbol for a in leaves)
    symbols = set(derivation.inputs) | set(derivation.params.values())
    gradients = [derivation.gradients[s.name] for s in derivation.inputs]
    gradients += [derivation.gradients[p.name] for p in derivation.params.values()]
    read = kept_for_backward(derivation, gradients)
    named = {}
    for output_name, node in zip(output_names, derivation.outputs):
        named.setdefault(node, output_name)
    kept = [k for k in read if k not in named]
    if save_all_outputs:
        outputs_read = list(derivation.outputs)
    else:
        outputs_read = [k for k in read if k in named and k not in symbols]  # σ′ = y ⊙ (1 − y) reads y
    named.update({node: f"{kept_prefix}{k}" for k, node in enumerate(kept, 1)})
    forward = generate_kernel_source(
        names[0], leaves + params,
        [Result(n, o) for n, o in zip(output_names, derivation.outputs)] + [Result(named[k], k) for k in kept],
        doc="; ".join(f"{n} = {describe(o, width=200)}" for n, o in zip(output_names, derivation.outputs)) + docs[0])
    # a leaf that is itself an output (y_t = h_t) keeps its leaf name in the gradients
    replacements = {node: Generated(n, *node.shape) for node, n in named.items() if node not in symbols}
    deltas = [Argument(d, identifier(d.name), True) for d in derivation.upstream]
    saved = [Argument(Generated(named[k], *k.shape), named[k], batched(k)) for k in kept]
    if save_all_outputs:
        saved = output_arguments(output_names, derivation.outputs, batched) + saved
    else:
        saved += [Argument(Generated(named[k], *k.shape), named[k], batched(k)) for k in outputs_read]
    results, leaf_gradients = [], []
    for i, (a, s) in enumerate(zip(leaves, derivation.inputs)):
        g = derivation.gradients[s.name]
        if not isinstance(g, ZeroMatrix) and (gradient_leaves is None or i in gradient_leaves):
            results.append(Result(f"grad_{a.name}", g.xreplace(replacements)))
            leaf_gradients.append(i)
    for a, p in zip(params, derivation.params.values()):
        results.append(Result(f"grad_{a.name}", derivation.gradients[p.name].xreplace(replacements),
                              mode="accumulate", into=f"grad_{a.name}"))
    backward = generate_kernel_source(names[1], deltas + leaves + params + saved + gradient_arrays(params), results,
                                      doc=docs[1])
    return KernelPair(forward, backward, list(output_names), [named[k] for k in kept],
                      list(output_names) if save_all_outputs else [named[k] for k in outputs_read], leaf_gradients)
