"""The order of products over token arrays (flux.generate.product_plans) and transposed nodes read once.

The numbers each plan computes are checked by the gradchecks of tests/test_attention.py (every parameter of
SelfAttention, MultiHeadAttention and TransformerBlock); these tests check the plans themselves.
"""
from __future__ import annotations

import numpy as np
import sympy
from sympy import HadamardProduct, MatrixSymbol, OneMatrix, Transpose

import flux
from flux.generate.product_plans import plan_products
from flux.generate.token_products import Operand, transposed_form

d, T = sympy.symbols("d T")


def size(dim) -> int:
    return int(sympy.sympify(dim).subs({d: 64, T: 64}))


def factors(plan) -> object:
    """A plan as nested tuples of factor indices: ((0, 1), 2)."""
    return plan.steps if isinstance(plan.steps, int) else tuple(factors(p) for p in plan.steps)


def test_a_head_of_attention_scores_is_computed_from_its_queries_and_keys():
    """Xᵀ·W_kᵀ·W_q·X with W ∈ ℝ^{d/4×d}: Q = W_q·X and Kᵀ = Xᵀ·W_kᵀ over every token, then Kᵀ·Q per sample —
    never W_kᵀ·W_q (d×d) first, which makes every per-sample product four times larger."""
    head = d / 4
    operands = [Operand("X", (T, d), True, True), Operand("Wk.T", (d, head), False),
                Operand("Wq", (head, d), False), Operand("X", (d, T), True)]
    best = plan_products(operands, size)[0, 4]["batched"]
    assert factors(best) == ((0, 1), (2, 3))


def test_a_parameter_gradient_is_one_gemm_over_every_token():
    """Σₙ W·Xₙ·Gₙ·Xₙᵀ: L = W·X·G (node layout) and R = Xᵀ (the samples themselves) exist for one token GEMM."""
    operands = [Operand("W", (d / 4, d), False), Operand("X", (d, T), True), Operand("G", (T, T), True),
                Operand("X", (T, d), True, True)]
    plans = plan_products(operands, size)
    assert "batched" in plans[0, 3] and "transposed" in plans[3, 4]


def test_a_transposed_node_is_read_as_the_transpose_of_its_untransposed_form():
    X = MatrixSymbol("X", 3, 4)
    g = MatrixSymbol("g", 3, 1)
    untransposed = HadamardProduct(g * OneMatrix(1, 4), X)
    written = Transpose(untransposed).doit()
    assert transposed_form(written) == untransposed
    assert transposed_form(untransposed) is None


def test_the_transformer_block_keeps_its_normalised_tokens_once():
    """LN₁(X) and LN₁(X)ᵀ are one kept array, so ∂L/∂W_q = Σₙ K·G·X̂ᵀ is a GEMM over every token: the backward has
    no per-sample d×d product, and its loops over samples are the T×T products of attention (16, not 43)."""
    source = flux.TransformerBlock(8, 2, 16, dtype=np.float64).kernels.source
    backward = source[source.index("def backward("):]
    assert "np.empty((N, Δ.shape[2], Δ.shape[2])" not in backward
    assert backward.count("for n in range(N):\n        np.dot") <= 16
