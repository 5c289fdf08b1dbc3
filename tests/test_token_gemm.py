"""The token code's products and workspace (flux/generate/token_products.py, token_workspace.py, token_step.py):
products held as the samples themselves and scaled where read, a fused step whose (N, …) arrays are a workspace
made once per (N, T) and shared by arrays whose lives do not overlap; gradients exact (gradcheck, float64)."""
import re

import numpy as np
import pytest
import sympy

import flux
from flux.generate.token_workspace import share_buffers
from flux.layers.attention import MultiHeadAttention, TransformerBlock

RNG = np.random.default_rng(1701)


@pytest.fixture(scope="module")
def heads3():
    """A 3-head causal attention (the maths of tests/test_token_kept.py's: one compiled module for both)."""
    return MultiHeadAttention(6, 3, causal=True, rng=4, dtype=np.float64)


def test_gradcheck_three_head_causal_attention(heads3):
    assert flux.gradcheck(heads3, RNG.normal(size=(2, 5, 6))) < 1e-6


@pytest.fixture(scope="module")
def block():
    return TransformerBlock(4, 2, 6, rng=5, dtype=np.float64)  # the maths of tests/test_token_step.py's block


def test_gradcheck_transformer_block(block):
    assert flux.gradcheck(block, RNG.normal(size=(2, 4, 4))) < 1e-6


def test_backward_reads_products_in_place_without_copies(block):
    """The layer norm's ∂L/∂X̂ reaches each head's product as X̂ᵀ's: the GEMM over every token gives it as the
    samples themselves, read as [n, i, j] where it is summed (no copy into the other layout), 1/√k applied there
    (no scaled copy)."""
    backward = block.kernels.backward.source
    assert "(the samples themselves)" in backward
    assert not re.search(r"^\s*t\d+ = \(real\(2\) / np.sqrt[^\n]*\* t\d+$", backward, re.MULTILINE)


def test_fused_step_of_three_heads_equals_the_separate_calls(heads3):
    fused = MultiHeadAttention(6, 3, causal=True, rng=4, dtype=np.float64)
    step = flux.compile_step(fused, flux.mse, flux.SGD(0.1))
    for tokens in (5, 5, 3):
        X, target = RNG.normal(size=(2, tokens, 6)), RNG.uniform(-0.5, 0.5, (2, tokens, 6))
        buffers = step._workspaces[0][1] if step._workspaces else None
        value, Δ = flux.mse.value_and_gradient(heads3(X), target)
        heads3.back(Δ)
        heads3.update(flux.SGD(0.1))
        assert step(X, target) == pytest.approx(value, rel=1e-12)
        assert (step._workspaces[0][1] is buffers) == (tokens == 5 and buffers is not None)  # remade when T changes
    for key, value in heads3.params.items():
        np.testing.assert_allclose(fused.params[key], value, rtol=1e-10, atol=1e-12, err_msg=key)
    kernels = step.module.forward.py_func.__code__.co_varnames + step.module.backward.py_func.__code__.co_varnames
    assert "work_" in kernels
    source = open(step.module.__file__).read().split("def forward(")[1].split("def loss_forward(")[0]
    assert "np.empty((N," not in source  # every per-sample array of the kernels is a workspace buffer


def test_share_buffers_gives_a_dead_array_s_buffer_of_its_shape():
    d, T = sympy.symbols("d T")
    lines = ["t1 = work_[0]", "use(t1)", "t2 = work_[1]", "t3 = work_[2]", "use(t2, t3)  # t1", "t4 = work_[3]",
             "use(t4)"]
    shapes = [(T, d), (T, d), (T, T), (T, d)]
    renamed, kept = share_buffers(lines, shapes, {"t4"})
    assert renamed == ["t1 = work_[0]", "use(t1)", "t2 = work_[0]", "t3 = work_[1]", "use(t2, t3)  # t1",
                       "t4 = work_[0]", "use(t4)"]  # t1's buffer, then t2's once read for the last time
    assert kept == [(T, d), (T, T)]
    returned, _ = share_buffers(["t1 = work_[0]", "t2 = work_[1]", "use(t2)", "t3 = work_[2]"],
                                [(d,), (d,), (d,)], {"t1"})
    assert returned[-1] == "t3 = work_[1]"  # a returned array lives to the end: t3 takes t2's buffer, not t1's


def test_share_buffers_borrows_another_kernel_s_buffers_once_read():
    """Backward takes the forward's buffer of a kept array after its last read, and forward's spare ones at once."""
    d, T = sympy.symbols("d T")
    lines = ["t1 = work_[0]", "use(kept1, t1)", "t2 = work_[1]", "use(t2)"]
    renamed, kept = share_buffers(lines, [(T, T), (T, d)], set(), {"kept1": ((T, d), "forward[0]")},
                                  [((T, T), "forward[1]")])
    assert renamed == ["t1 = work_[0]", "use(kept1, t1)", "t2 = work_[1]", "use(t2)"]
    assert kept == ["forward[1]", "forward[0]"]  # no new buffer: t1 takes the spare, t2 kept1's once read
