"""Sequences as matrices (issue 17): a sample is a d×T matrix (`flux.tokens`), attention written as maths, derived,
displayed, compiled by the token printer, compared with NumPy and gradchecked in float64 (< 1e-6), with T changing
between calls of one model."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import flux
from flux import LayerNorm
from flux.layers.attention import MultiHeadAttention, TransformerBlock
from tests.test_show import katex_node_path  # noqa: F401  (the session fixture: KaTeX for node)

D, K, V, N = 5, 3, 4, 3
RNG = np.random.default_rng(1717)


class SelfAttention(flux.Model):
    """y = Wv·X·softmax(XᵀWkᵀWq·X/√k) by columns: the issue's layer as written."""

    Wq = flux.param("k", "d"); Wk = flux.param("k", "d"); Wv = flux.param("v", "d")  # noqa: E702
    X = flux.tokens("d")

    def forward(self, X):
        Q, K, V = self.Wq * X, self.Wk * X, self.Wv * X
        A = flux.softmax(K.T * Q / flux.sqrt(self.k), axis=0)
        return V * A


class CausalAttention(SelfAttention):
    def forward(self, X):
        Q, K, V = self.Wq * X, self.Wk * X, self.Wv * X
        return V * flux.softmax(flux.causal(K.T * Q / flux.sqrt(self.k)), axis=0)


class RowAttention(SelfAttention):
    """The row convention: A = softmax(QᵀK) over rows, y = V·Aᵀ (the same maths as SelfAttention)."""

    def forward(self, X):
        Q, K, V = self.Wq * X, self.Wk * X, self.Wv * X
        return V * flux.softmax(Q.T * K / flux.sqrt(self.k), axis=1).T


def build(cls, dtype=np.float64):
    return cls(Wq=RNG.normal(size=(K, D)), Wk=RNG.normal(size=(K, D)), Wv=RNG.normal(size=(V, D)), dtype=dtype)


def reference(model, X, causal=False):
    """NumPy, sample by sample, in the maths' orientation (X[n].T is d×T)."""
    p = {k: v.astype(np.float64) for k, v in model.params.items()}
    out = []
    for x in X.astype(np.float64):
        x = x.T
        Q, Kx, Vx = p["Wq"] @ x, p["Wk"] @ x, p["Wv"] @ x
        S = Kx.T @ Q / np.sqrt(K)
        if causal:
            S[np.tril_indices(S.shape[0], -1)] = -np.inf  # key i after query j
        A = np.exp(S - S.max(axis=0))
        out.append((Vx @ (A / A.sum(axis=0))).T)
    return np.array(out)


@pytest.fixture(scope="module")
def attention():
    return build(SelfAttention)


@pytest.fixture(scope="module")
def causal():
    return build(CausalAttention)


def test_forward_matches_numpy_for_any_T(attention):
    for T in (7, 1, 3):
        X = RNG.normal(size=(N, T, D))
        y = attention(X)
        assert y.shape == (N, T, V)
        np.testing.assert_allclose(y, reference(attention, X), rtol=1e-12, atol=1e-12)


def test_gradcheck_every_parameter_and_the_tokens(attention):
    assert flux.gradcheck(attention, RNG.normal(size=(N, 6, D))) < 1e-6


def test_T_differs_between_calls_of_one_model(attention):
    program = attention.kernels
    for T in (2, 9):
        assert flux.gradcheck(attention, RNG.normal(size=(2, T, D))) < 1e-6
    assert attention.kernels is program  # one kernel whatever T


def test_backward_against_numpy_by_finite_differences_of_the_reference(attention):
    """∂L/∂X from the kernel equals central differences of the NumPy reference (independent of flux's forward)."""
    X = RNG.normal(size=(1, 4, D))
    R = RNG.normal(size=(1, 4, V))
    attention(X)
    dX = attention.back(R)
    attention.zero_grad()
    numeric = np.zeros_like(X)
    for index in np.ndindex(X.shape):
        plus, minus = X.copy(), X.copy()
        plus[index] += 1e-6
        minus[index] -= 1e-6
        numeric[index] = (np.sum(R * reference(attention, plus)) - np.sum(R * reference(attention, minus))) / 2e-6
    np.testing.assert_allclose(dX, numeric, rtol=1e-6, atol=1e-8)


def test_causal_mask(causal):
    X = RNG.normal(size=(N, 6, D))
    y = causal(X)
    np.testing.assert_allclose(y, reference(causal, X, causal=True), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(causal(X[:, :3]), y[:, :3], rtol=1e-12, atol=1e-12)  # the future is never read
    assert flux.gradcheck(causal, X) < 1e-6
    assert flux.gradcheck(causal, RNG.normal(size=(2, 3, D))) < 1e-6


def test_softmax_over_rows_is_the_transposed_convention(attention):
    rows = build(RowAttention)
    rows.params.update(attention.params)
    X = RNG.normal(size=(N, 5, D))
    np.testing.assert_allclose(rows(X), attention(X), rtol=1e-12, atol=1e-12)
    assert flux.gradcheck(rows, X) < 1e-6


def test_causal_along_rows_is_the_transposed_convention(causal):
    class CausalRows(SelfAttention):
        def forward(self, X):
            Q, K, V = self.Wq * X, self.Wk * X, self.Wv * X
            return V * flux.softmax(flux.causal(Q.T * K / flux.sqrt(self.k), axis=1), axis=1).T

    rows = build(CausalRows)
    rows.params.update(causal.params)
    X = RNG.normal(size=(2, 4, D))
    np.testing.assert_allclose(rows(X), causal(X), rtol=1e-12, atol=1e-12)


def test_one_sequence_and_float32():
    model = build(SelfAttention, np.float32)
    X = RNG.normal(size=(5, D)).astype(np.float32)
    y = model(X)
    assert y.shape == (5, V) and y.dtype == np.float32
    np.testing.assert_allclose(y, reference(model, X[None])[0], rtol=2e-5, atol=2e-5)
    assert model.back(np.ones((5, V), np.float32)).shape == (5, D)


def test_bad_token_arrays_are_refused_naming_the_model_and_the_input(attention):
    with pytest.raises(ValueError, match=r"SelfAttention: input X must have 5 features"):
        attention(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"SelfAttention: input X is a sequence of tokens.*\(N, T, 5\)"):
        attention(np.zeros(5))


def test_the_derivation_is_shown_in_text_and_latex():
    text = repr(SelfAttention.derivation)
    for gradient in ("∂L/∂Wq", "∂L/∂Wk", "∂L/∂Wv", "∂L/∂X", "softmax"):
        assert gradient in text
    latex = flux.latex(SelfAttention)
    assert r"\operatorname{softmax}" in latex and "W_q" in latex
    assert "causal" in repr(CausalAttention.derivation) and "mask" in repr(CausalAttention.derivation)
    assert r"\operatorname{causal}" in flux.latex(CausalAttention)


def test_the_derivations_typeset_in_katex(katex_node_path):
    blocks = [flux.latex(cls.derivation) for cls in (SelfAttention, CausalAttention, TokenNorm)]
    blocks.append(flux.latex(MultiHeadAttention(4, 2, causal=True).derivation))
    result = subprocess.run(["node", str(Path(__file__).with_name("katex_render.js"))], input=json.dumps(blocks),
                            capture_output=True, text=True, check=True, timeout=120,
                            env={**os.environ, "NODE_PATH": katex_node_path})
    failures = [(block, error) for block, error in zip(blocks, json.loads(result.stdout)) if error]
    assert not failures, failures


def test_one_gemm_over_every_token_for_shared_parameters(attention):
    """W·X is one np.dot over an (N·T, d) view, never a loop over samples."""
    source = attention.kernels.source
    assert "np.dot(X.reshape((N * X.shape[1], X.shape[2])), Wv.T)" in source


# ---- built-in layers: per-token Dense, LayerNorm, MultiHeadAttention, TransformerBlock --------------------------

class TokenDense(flux.Model):
    """An existing layer on every token: y = tanh(W·X + b·1ᵀ)."""

    dense = flux.Dense
    X = flux.tokens("n")

    def forward(self, X):
        return self.dense(X)


def test_an_existing_layer_on_every_token():
    model = TokenDense(dense=flux.Dense(D, 3, "tanh", rng=1, dtype=np.float64))
    model.params["dense.b"] = RNG.normal(size=3)
    X = RNG.normal(size=(N, 4, D))
    expected = np.tanh(X @ model.params["dense.W"].T + model.params["dense.b"])
    np.testing.assert_allclose(model(X), expected, rtol=1e-12, atol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6


class TokenNorm(flux.Model):
    """flux.LayerNorm (written for a vector) on every token of a sequence: μ and σ² per column of X."""

    norm = LayerNorm
    X = flux.tokens("d")

    def forward(self, X):
        return self.norm(X)


def test_layer_norm_per_token():
    model = TokenNorm(norm=LayerNorm(D, dtype=np.float64))
    model.params.update({"norm.γ": RNG.normal(size=D), "norm.β": RNG.normal(size=D)})
    X = RNG.normal(size=(N, 4, D))
    expected = model.params["norm.γ"] * (X - X.mean(-1, keepdims=True)) / np.sqrt(X.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(model(X), expected + model.params["norm.β"], rtol=1e-10, atol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6


def multi_head_reference(model, X, heads, causal=False):
    p = model.params
    size = p["Wq"].shape[0] // heads
    out = []
    for x in X:
        x, parts = x.T, []
        for h in range(heads):
            r = slice(h * size, (h + 1) * size)
            Q, Kx, Vx = p["Wq"][r] @ x, p["Wk"][r] @ x, p["Wv"][r] @ x
            S = Kx.T @ Q / np.sqrt(size)
            if causal:
                S[np.tril_indices(S.shape[0], -1)] = -np.inf
            A = np.exp(S - S.max(axis=0))
            parts.append(Vx @ (A / A.sum(axis=0)))
        out.append((p["Wo"] @ np.vstack(parts)).T)
    return np.array(out)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention(causal):
    model = MultiHeadAttention(6, 2, causal=causal, rng=2, dtype=np.float64)
    X = RNG.normal(size=(N, 5, 6))
    np.testing.assert_allclose(model(X), multi_head_reference(model, X, 2, causal), rtol=1e-10, atol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6
    assert flux.gradcheck(model, RNG.normal(size=(2, 2, 6))) < 1e-6


def test_multi_head_attention_refuses_heads_that_do_not_divide_d():
    with pytest.raises(ValueError, match="d = 6 must be a multiple of heads = 4"):
        MultiHeadAttention(6, 4)


def test_transformer_block_gradcheck_with_a_causal_mask():
    block = TransformerBlock(6, 2, 8, causal=True, rng=3, dtype=np.float64)
    for name, value in block.params.items():  # gains and biases away from 1 and 0, so their gradients matter
        block.params[name] = value + 0.1 * RNG.normal(size=value.shape)
    X = RNG.normal(size=(2, 5, 6))
    y = block(X)
    p = block.params

    def norm(x, which):
        return p[f"{which}.γ"] * (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) \
            + p[f"{which}.β"]

    heads = MultiHeadAttention(6, 2, causal=True, dtype=np.float64)
    heads.params.update({k: p[f"attention.{k}"] for k in ("Wq", "Wk", "Wv", "Wo")})
    Z = X + multi_head_reference(heads, norm(X, "ln1"), 2, causal=True)
    hidden = np.maximum(norm(Z, "ln2") @ p["up.W"].T + p["up.b"], 0)
    np.testing.assert_allclose(y, Z + hidden @ p["down.W"].T + p["down.b"], rtol=1e-10, atol=1e-10)
    assert flux.gradcheck(block, X) < 1e-6
