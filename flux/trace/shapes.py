"""Which dimensions are equal: unification over a model's maths, shape errors at definition time.

SymPy does not check symbolic shapes (it happily adds an m-vector to an n-vector), so flux does: every matrix
product, sum and Hadamard product says two dimensions are the same. A model's own declared dimensions are
rigid (declaring m and n says they may differ, so forcing m = n is an error); input sizes and sub-models'
dimensions are flexible and are merged, each class then named by its clearest member (n before n_x).
"""
from __future__ import annotations

import sympy
from sympy import BlockMatrix, HadamardProduct, MatAdd, MatMul
from sympy.matrices.expressions.matexpr import MatrixExpr

from ..maths.graph import matrix_children, topological_order
from ..maths.matrices import TOKENS
from .language import DefinitionError


class DimensionClasses:
    """Union–find over dimension symbols; integers and sums are bound values."""

    def __init__(self, rigid: set, model_name: str):
        self.parent: dict = {}
        self.rigid = rigid
        self.model_name = model_name

    def find(self, dim):
        dim = sympy.sympify(dim)
        while dim in self.parent and self.parent[dim] != dim:
            dim = self.parent[dim]
        return dim

    def unify(self, a, b, where: MatrixExpr, what) -> None:  # what: the message, or a function making it
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        if {a, b} & {sympy.S.One} and (a.is_Symbol or b.is_Symbol):
            self.pinned(a if a.is_Symbol else b, where, what)
        if isinstance(a, sympy.Symbol) and isinstance(b, sympy.Symbol):
            if a in self.rigid and b in self.rigid:
                self.mismatch(a, b, where, what)
            keep, drop = (a, b) if rank(a, self.rigid) <= rank(b, self.rigid) else (b, a)
            self.parent[drop] = keep
        elif isinstance(a, sympy.Symbol) and a not in self.rigid:
            self.parent[a] = b
        elif isinstance(b, sympy.Symbol) and b not in self.rigid:
            self.parent[b] = a
        elif a.is_Integer and b.is_Integer or (a - b).is_zero is False:  # e + d against d: e > 0, never equal
            self.mismatch(a, b, where, what)
        # otherwise (a rigid name against a sum that may equal it): sizes are checked when arrays arrive

    def mismatch(self, a, b, where, what) -> None:
        what = what() if callable(what) else what
        raise DefinitionError(
            f"{self.model_name}: shape mismatch in `{sympy.sstr(where)}`: {what} ({a} vs {b}); "
            "declared dimensions with different names may differ, so they cannot be combined here"
        )

    def pinned(self, dim, where, what) -> None:
        what = what() if callable(what) else what
        raise DefinitionError(
            f"{self.model_name}: `{sympy.sstr(where)}` would fix the size {dim} to 1 ({what}); the maths never "
            "fixes a size: a per-sample scalar is a 1×1 expression (flux.total, flux.mean, flux.norm, xᵀy) and "
            "broadcasts against vectors by itself (for an elementwise product use flux.hadamard)"
        )

    def representatives(self, dims) -> dict:
        return {d: self.find(d) for d in dims if self.find(d) != d}


def rank(symbol, rigid) -> tuple:
    """Lower is a better name for a class: declared names, then sub-model names, then input sizes."""
    name = symbol.name
    return (0 if symbol in rigid else 1 if not name.startswith("n_") else 2, name.count("_"), name)


def unify_dimensions(expressions, rigid: set, model_name: str) -> dict:
    """Check the shapes of `expressions` and return {dimension: the dimension it equals}."""
    classes = DimensionClasses(rigid, model_name)
    for node in topological_order(expressions):
        if isinstance(node, MatMul):
            factors = node.as_coeff_matrices()[1]
            for left, right in zip(factors, factors[1:]):
                if left.shape == (1, 1) or right.shape == (1, 1):
                    continue  # (1, 1) factors broadcast
                # messages are made only on an error: printing every node of a big model is quadratic
                classes.unify(left.shape[1], right.shape[0], node, lambda left=left, right=right: (
                    f"{sympy.sstr(left)} has {left.shape[1]} columns but {sympy.sstr(right)} has "
                    f"{right.shape[0]} rows"))
        elif isinstance(node, (MatAdd, HadamardProduct)):
            first = node.args[0]
            for other in node.args[1:]:
                for axis, label in ((0, "rows"), (1, "columns")):
                    classes.unify(first.shape[axis], other.shape[axis], node,
                                  lambda first=first, other=other, axis=axis, label=label: (
                                      f"{sympy.sstr(first)} has {first.shape[axis]} {label} but "
                                      f"{sympy.sstr(other)} has {other.shape[axis]}"))
        elif isinstance(node, BlockMatrix):
            if node.blockshape[0] == 1 and node.blockshape[1] > 1 and node.shape[0] == TOKENS:
                continue  # a transposed stack of token matrices [A, B] (T rows each): blocks side by side
            tokens = node.blocks[0].shape[1] == TOKENS  # matrices of tokens stack their rows: [H₁; H₂]
            for block in node.blocks:
                classes.unify(block.shape[1], TOKENS if tokens else 1, node,
                              "only column vectors, or matrices of tokens, can be concatenated")
    dims = set()
    for node in topological_order(expressions):
        for d in node.shape:
            dims |= sympy.sympify(d).free_symbols
        for c in matrix_children(node):
            for d in c.shape:
                dims |= sympy.sympify(d).free_symbols
    return classes.representatives(dims)
