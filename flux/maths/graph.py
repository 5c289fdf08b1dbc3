"""Walking matrix-expression graphs: a node's matrix children, every node children-first, and what depends on what.

One walker for every stage (shape rules, the backward sweep, code generation, the display), so they all agree on
what a node's arguments are and in which order.
"""
from __future__ import annotations

from typing import Iterable

from sympy import BlockMatrix, MatMul
from sympy.matrices.expressions.matexpr import MatrixExpr


def matrix_children(node: MatrixExpr) -> list[MatrixExpr]:
    """The matrix arguments of a node, in the order its VJP rule returns their gradients."""
    if isinstance(node, BlockMatrix):
        return [b for b in node.blocks]
    if isinstance(node, MatMul):
        return list(node.as_coeff_matrices()[1])
    return [a for a in node.args if isinstance(a, MatrixExpr)]


def topological_order(roots: Iterable[MatrixExpr]) -> list[MatrixExpr]:
    """Every distinct matrix node under `roots`, each after all of its children."""
    order, seen = [], set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(matrix_children(node)) if c not in seen)
    return order


class Dependence:
    """Whether a node depends on any of some leaves (e.g. "is batched": reads an input), memoised per node.

        batched = Dependence(inputs);  batched(W * x) → True,  batched(W.T) → False
    """

    def __init__(self, leaves: Iterable[MatrixExpr]):
        self.leaves = set(leaves)
        self.known: dict[MatrixExpr, bool] = {}

    def __call__(self, node: MatrixExpr) -> bool:
        if node not in self.known:
            for n in topological_order([node]):  # children first: no deep recursion on long chains
                if n not in self.known:
                    self.known[n] = n in self.leaves or any(self.known[c] for c in matrix_children(n))
        return self.known[node]
