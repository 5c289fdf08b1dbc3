"""What a token model's backward reads from its forward instead of recomputing it, found by maths.

The backward's expressions repeat forward values in two forms that a walk down to the first forward node misses:

    Mᵀ with its transposes pushed to the leaves   (X̂ᵀW_vᵀ…)ᵀ is the forward's W_o·[H₁; …]: read the kept M transposed
    a run of factors of a longer product          W_v⁽ⁱ⁾·X̂ inside W_v⁽ⁱ⁾·X̂·A·…: the head's V, which the forward
                                                  computed inside its own chain V·A (or X̂ᵀ·W_q⁽ⁱ⁾ᵀ: Qᵀ)

`transposed_reads` rewrites the first before the walk (kernel_pair.kept_for_backward) keeps M; `repeated_products`
finds the second among the products the forward's writer computed (TokenKernelWriter.runs), and `with_products`
puts the kept product's array into every chain that repeats it.
"""
from __future__ import annotations

from sympy import BlockMatrix, MatMul, Transpose
from sympy.matrices.expressions.matexpr import MatrixExpr

from ..maths.graph import topological_order


def transposed_reads(derivation, gradients: list, batched) -> dict:
    """{node of a gradient: Fᵀ} for every product or block matrix that is a forward node F transposed (with its
    transposes pushed to the leaves, as the derivation writes it)."""
    forward = {}
    for node in topological_order(derivation.outputs):
        if isinstance(node, (MatMul, BlockMatrix)) and batched(node):
            forward.setdefault(Transpose(node).doit(), node)
    reads = {}
    for node in topological_order(gradients):
        if node in forward:
            reads[node] = Transpose(forward[node])
    return reads


def node_layout_runs(runs: dict) -> set:
    """The runs of factors whose products a writer holds in node layout (TokenKernelWriter.runs: factors → Operand):
    a product held as the samples themselves (R·W over every token) is its transpose's node layout, so the run of
    the factors' transposes, reversed, stands for it (X̂ᵀ·W_kᵀ held so is the head's K = W_k·X̂)."""
    found = set()
    for factors, operand in runs.items():
        if len(factors) > 1:
            found.add(tuple(transposed(f) for f in reversed(factors)) if operand.transposed else factors)
    return found


def repeated_products(known: set, gradients: list) -> list:
    """The known runs of factors (node_layout_runs) that a gradient's product repeats, directly or transposed
    (X̂ᵀ·Wᵀ is (W·X̂)ᵀ), in the order first met."""
    found, flipped = {}, flipped_runs(known)
    for node in topological_order(gradients):
        if isinstance(node, MatMul):
            for (factors, _), _ in product_runs(list(node.as_coeff_matrices()[1]), known, flipped):
                found.setdefault(factors, None)
    return list(found)


def with_products(expr: MatrixExpr, products: dict) -> MatrixExpr:
    """`expr` with every run of factors that a kept product holds replaced by its array ({factors: Generated}),
    read transposed where the run is the product's transpose."""
    memo: dict = {}
    flipped = flipped_runs(products)

    def rewrite(node):
        if node in memo:
            return memo[node]
        if not isinstance(node, MatrixExpr) or not node.args:
            return node
        if isinstance(node, BlockMatrix):  # its blocks are held in a matrix, not as arguments
            grid = node.blocks
            memo[node] = BlockMatrix([[rewrite(grid[r, c]) for c in range(grid.shape[1])] for r in range(grid.shape[0])])
            return memo[node]
        args = [rewrite(a) if isinstance(a, MatrixExpr) else a for a in node.args]
        if isinstance(node, MatMul):
            coefficient, factors = MatMul(*args).as_coeff_matrices()
            runs = product_runs(list(factors), products, flipped)
            if runs:
                result = []
                position = 0
                for (factors_of_run, as_transpose), (start, stop) in runs:
                    result += factors[position:start]
                    array = products[factors_of_run]
                    result.append(Transpose(array) if as_transpose else array)
                    position = stop
                result += factors[position:]
                memo[node] = MatMul(coefficient, *result) if coefficient != 1 else MatMul(*result)
                return memo[node]
        memo[node] = node.func(*args) if any(a is not b for a, b in zip(args, node.args)) else node
        return memo[node]

    return rewrite(expr)


def flipped_runs(known) -> dict:
    """{the reversed run of the factors' transposes: run} for every known run (its product's transpose)."""
    return {tuple(transposed(f) for f in reversed(run)): run for run in known}


def product_runs(factors: list, known, flipped: dict) -> list:
    """((run, flipped), (start, stop)) for the longest runs of `factors`, left to right, that are a known product's
    factors, or its transpose's (`flipped`, from flipped_runs)."""
    found, start = [], 0
    while start < len(factors) - 1:
        for stop in range(len(factors), start + 1, -1):
            run = tuple(factors[start:stop])
            if run in known or run in flipped:
                found.append(((run, False) if run in known else (flipped[run], True), (start, stop)))
                start = stop
                break
        else:
            start += 1
    return found


def transposed(node):
    return node.arg if isinstance(node, Transpose) else Transpose(node).doit()
