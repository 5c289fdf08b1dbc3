"""Sinusoidal positional encoding (issue 17): the table against Vaswani et al.'s formula, y = X + P for whatever T
the call has, no parameters and ∂L/∂X = Δ exactly, and its place in a Chain before token layers."""
import numpy as np
import pytest

import flux
from flux.layers.attention import MultiHeadAttention

RNG = np.random.default_rng(1718)


def test_the_table_is_the_formula():
    T, d = 7, 6
    table = flux.positional_encoding(T, d)
    assert table.shape == (T, d) and table.dtype == np.float64
    for t in range(T):
        for i in range(d // 2):
            angle = t / 10000 ** (2 * i / d)
            assert table[t, 2 * i] == pytest.approx(np.sin(angle), abs=1e-15)
            assert table[t, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-15)
    odd = flux.positional_encoding(3, 5, np.float32)  # an odd d ends with a sine
    assert odd.dtype == np.float32 and odd[2, 4] == pytest.approx(np.sin(2 / 10000 ** (4 / 5)))
    np.testing.assert_array_equal(flux.positional_encoding(T, d)[:4], flux.positional_encoding(4, d))


@pytest.fixture(scope="module")
def encoding():
    return flux.PositionalEncoding(6)


def test_adds_the_table_for_the_calls_T(encoding):
    assert encoding.parameter_count == 0
    for T in (5, 1, 9):
        X = RNG.normal(size=(3, T, 6))
        np.testing.assert_array_equal(encoding(X), X + flux.positional_encoding(T, 6))
    one = RNG.normal(size=(4, 6)).astype(np.float32)
    y = encoding(one)
    assert y.dtype == np.float32 and y.shape == (4, 6)
    np.testing.assert_allclose(y, one + flux.positional_encoding(4, 6, np.float32), rtol=1e-6)


def test_the_gradient_is_the_identity(encoding):
    X = RNG.normal(size=(2, 4, 6))
    encoding(X)
    Δ = RNG.normal(size=X.shape)
    np.testing.assert_array_equal(encoding.back(Δ), Δ)
    assert flux.gradcheck(encoding, RNG.normal(size=(2, 3, 6))) < 1e-6
    assert "∂L/∂X = Δ" in repr(encoding.derivation)


def test_a_table_of_your_own(encoding):
    X, P = RNG.normal(size=(2, 3, 6)), RNG.normal(size=(2, 3, 6))
    np.testing.assert_array_equal(encoding(X, P), X + P)
    assert len(encoding.back(np.ones_like(X))) == 2


def test_wrong_shapes_are_refused_naming_the_layer(encoding):
    with pytest.raises(ValueError, match=r"PositionalEncoding: input X must have shape \(N, T, 6\)"):
        encoding(np.zeros((2, 3, 5)))
    with pytest.raises(TypeError, match="PositionalEncoding: d must be a positive integer"):
        flux.PositionalEncoding(0)


def test_first_in_a_chain_before_attention():
    """The table runs on arrays, then the attention's own kernel (the one test_attention compiles)."""
    attention = MultiHeadAttention(6, 2, causal=True, rng=4, dtype=np.float64)
    chain = flux.Chain(flux.PositionalEncoding(6), attention)
    assert chain.parts() == [chain[0], attention]
    X = RNG.normal(size=(2, 5, 6))
    np.testing.assert_allclose(chain(X), attention(X + flux.positional_encoding(5, 6)), rtol=1e-12)
    assert flux.gradcheck(chain, X) < 1e-6
    assert flux.gradcheck(chain, RNG.normal(size=(2, 3, 6))) < 1e-6  # T changes between calls


def test_inside_a_model_compiled_as_one_kernel_it_says_what_to_do():
    class Encoded(flux.Model):
        X = flux.tokens("d")
        pe = flux.PositionalEncoding

        def forward(self, X):
            return self.pe(X)

    with pytest.raises(flux.DefinitionError, match="PositionalEncoding inside a model compiled as one kernel"):
        Encoded(pe=flux.PositionalEncoding(4)).derivation


class Mix(flux.Model):
    """A small token layer: y = tanh(W·X), W ∈ ℝ^{d×d}."""

    W = flux.param("d", "d")
    X = flux.tokens("d")

    def forward(self, X):
        return flux.tanh(self.W * X)


def test_a_chain_of_token_layers_is_a_token_model_and_trains():
    """Chain(PositionalEncoding, Mix, Dense): the table on arrays, then ONE kernel for the token layer and the
    per-token Dense (the Chain's input is declared as its first layer's: tokens); flux.train takes labels (N, T)."""
    rng = np.random.default_rng(7)
    chain = flux.Chain(flux.PositionalEncoding(4), Mix(W=rng.normal(size=(4, 4)) / 2, dtype=np.float64),
                       flux.Dense(4, 3, rng=6, dtype=np.float64))
    encoding, fused = chain.parts()
    assert encoding is chain[0] and isinstance(fused, flux.Chain) and fused.layers == chain.layers[1:]
    X = rng.normal(size=(6, 5, 4))
    assert chain(X).shape == (6, 5, 3)
    assert flux.gradcheck(chain, X) < 1e-6
    labels = rng.integers(0, 3, size=(6, 5))
    history = flux.train(chain, flux.logitcrossentropy, (X, labels), flux.Adam(0.05), epochs=60, batch_size=6,
                         progress=False)
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    step = flux.compile_step(fused, flux.logitcrossentropy, flux.SGD(0.1))  # the token part, fused; labels (N, T)
    encoded = chain[0](X)
    expected = flux.logitcrossentropy(fused(encoded), labels)  # before the step's update
    assert step(encoded, labels) == pytest.approx(expected, rel=1e-12)
