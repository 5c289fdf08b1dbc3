"""What a token model's backward reads from its forward (flux.generate.token_kept): a head's Q, K and V and the
stacked heads are kept, not recomputed, and the gradients stay exact (gradcheck, float64, < 1e-6)."""
from __future__ import annotations

import numpy as np
import pytest
from sympy import BlockMatrix, MatrixSymbol, Transpose

import flux
from flux.generate.token_kept import node_layout_runs, product_runs, with_products
from flux.generate.token_products import Operand
from flux.layers.attention import MultiHeadAttention

W, X, A, B = MatrixSymbol("W", 2, 3), MatrixSymbol("X", 3, 4), MatrixSymbol("A", 4, 4), MatrixSymbol("B", 2, 4)
RNG = np.random.default_rng(1717)


def test_a_run_is_found_as_written_and_as_its_transpose():
    """W·X inside W·X·A, and Xᵀ·Wᵀ = (W·X)ᵀ inside Aᵀ·Xᵀ·Wᵀ."""
    known = {(W, X)}
    flipped = {(Transpose(X), Transpose(W)): (W, X)}
    assert product_runs([W, X, A], known, flipped) == [(((W, X), False), (0, 2))]
    assert product_runs([Transpose(A), Transpose(X), Transpose(W)], known, flipped) == [(((W, X), True), (1, 3))]
    assert product_runs([A, Transpose(A)], known, flipped) == []


def test_a_kept_product_replaces_its_run_in_every_chain_and_block():
    V = MatrixSymbol("V", 2, 4)  # the kept array holding W·X
    assert with_products(BlockMatrix([[W * X * A], [B]]), {(W, X): V}) == BlockMatrix([[V * A], [B]])
    assert with_products(A.T * X.T * W.T + A * X.T * W.T, {(W, X): V}) == A.T * V.T + A * V.T
    assert with_products(3 * W * X, {(W, X): V}) == 3 * V


def test_a_product_held_as_the_samples_themselves_stands_for_its_transpose():
    """Xᵀ·Wᵀ computed over every token holds (W·X)ᵀ per sample: the node layout of W·X."""
    runs = {(Transpose(X), Transpose(W)): Operand("t1", (4, 2), True, True), (W, X): Operand("t2", (2, 4), True)}
    assert node_layout_runs(runs) == {(W, X)}


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_reads_its_heads_from_the_forward(causal):
    """Heads by slicing: no head's W⁽ⁱ⁾·X is recomputed by backward (a GEMM of the tokens assigned to a new array)
    and ∂L/∂W_o reads the stacked heads the forward kept (the generated text only: nothing is compiled)."""
    source = MultiHeadAttention(6, 3, causal=causal, dtype=np.float64).kernels.source
    backward = source[source.index("def backward("):]
    assert "= np.dot(X.reshape(" not in backward
    assert "grad_Wo += np.dot(Δ.reshape((N * Δ.shape[1], Δ.shape[2])).T, kept" in backward


@pytest.mark.parametrize("heads, causal", [(1, False), (3, True)])
def test_multi_head_attention_with_kept_heads_is_exact(heads, causal):
    """One head (the planner merges W_kᵀ·W_q) and three causal heads (Q, K, V and the stacked heads kept)."""
    model = MultiHeadAttention(6, heads, causal=causal, rng=heads, dtype=np.float64)
    assert flux.gradcheck(model, RNG.normal(size=(2, 4, 6))) < 1e-6
