"""Derived gradients of sequences of tokens (issue 17) proven on models nobody wrote by hand.

Hypothesis draws a token layer (X ∈ ℝ^{d×T} per sample, `flux.tokens("d")`) from the matrix vocabulary — W·M, the
same through transposes ((MᵀWᵀ)ᵀ), + b broadcast over the tokens, sums, differences, Hadamard products, powers,
elementwise powers, numbers against matrices, elementwise functions, K̃ᵀQ̃ products of two token matrices (T×T per sample, scaled by
1/√k), softmax by columns and by rows, causal masks along either axis, V·A, per-token rows (1ᵀM, mean) broadcast
against a matrix — with one or two outputs (one compiled kernel pair
for both), random sizes (1 included), N and T (1 included). Each model's forward is checked against a NumPy
evaluation of the same drawn tree, sample by sample, for two values of T, and every derived gradient against
central finite differences (float64, < 1e-6).

Every draw compiles fresh numba kernels, so CI runs a few fixed examples (`derandomize=True`, < 60 s);
`FLUX_LONG_TESTS=1 pytest -m slow tests/test_properties_tokens.py` runs many more, with new random draws.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import erf

import flux
from tests.test_properties import CI_SETTINGS as VECTOR_CI_SETTINGS
from tests.test_properties import LONG, LONG_SETTINGS

# The vector properties' settings (fixed draws in CI, no shrinking; FLUX_LONG_TESTS=1 for a long random run), with
# fewer CI examples: every draw compiles a token kernel pair.
CI_SETTINGS = settings(VECTOR_CI_SETTINGS, max_examples=3)
TOLERANCE = 1e-6


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


# name → (the flux function, its NumPy reference)
FUNCTIONS = {
    "tanh": (lambda m: flux.tanh(m), np.tanh),
    "σ": (lambda m: flux.σ(m), sigmoid),
    "softplus": (lambda m: flux.softplus(m), lambda z: np.logaddexp(0, z)),
    "gelu": (lambda m: flux.gelu(m), lambda z: z * (1 + erf(z / np.sqrt(2))) / 2),
    "silu": (lambda m: flux.silu(m), lambda z: z * sigmoid(z)),
    "softsign": (lambda m: flux.softsign(m), lambda z: z / (1 + np.abs(z))),
    "exp∘tanh": (lambda m: flux.exp(flux.tanh(m)), lambda z: np.exp(np.tanh(z))),
}
NUMBER_FORMS = ["c+M", "c-M", "M-c", "c*M"]


# ---- drawing a tree: tuples naming what a user writes ----------------------------------------------------

class Builder:
    """Draws trees for one model; `params` collects name → dims ("d" and "k" are the two feature sizes)."""

    def __init__(self, draw):
        self.draw, self.params = draw, {}

    def param(self, *dims) -> str:
        same = [n for n, d in self.params.items() if d == dims]
        if same and self.draw(st.booleans()):  # a shared weight: its gradients accumulate
            return self.draw(st.sampled_from(same))
        name = f"p{len(self.params)}"
        self.params[name] = dims
        return name

    def tokens(self, dim: str, depth: int) -> tuple:
        """A tree computing a dim×T matrix; returns (tree, bounded: |values| ≲ 2)."""
        draw = self.draw
        kinds = ["leaf"] if depth <= 0 else [
            "leaf", "matmul", "tmatmul", "bias", "add", "sub", "hadamard", "f", "power", "number", "attend",
            "attend", "row", "pooled"]
        kind = draw(st.sampled_from(kinds))
        if kind == "leaf":
            if dim == "d" and draw(st.booleans()):
                return ("X",), False
            return ("matmul", self.param(dim, "d"), ("X",)), False
        if kind in ("matmul", "tmatmul"):
            inner = draw(st.sampled_from(["d", "k"]))
            return (kind, self.param(dim, inner), self.tokens(inner, depth - 1)[0]), False
        if kind == "bias":
            return ("bias", self.param(dim), self.tokens(dim, depth - 1)[0]), False
        if kind in ("add", "sub", "hadamard"):
            (a, bounded_a), (b, bounded_b) = self.tokens(dim, depth - 1), self.tokens(dim, depth - 1)
            kind = "add" if kind == "sub" and a == b else kind  # a − a ignores the input
            return (kind, a, b), bounded_a and bounded_b
        if kind == "f":
            name = draw(st.sampled_from(sorted(FUNCTIONS)))
            return ("f", name, self.tokens(dim, depth - 1)[0]), name in ("tanh", "σ", "softsign", "exp∘tanh")
        if kind == "power":  # M^{∘p} (flux.hadamard_power: `**` of a matrix is the matrix power) of a bounded M
            child, bounded = self.tokens(dim, depth - 1)
            return ("power", draw(st.sampled_from([2, 3])), child if bounded else ("f", "tanh", child)), True
        if kind == "number":
            child, bounded = self.tokens(dim, depth - 1)
            return ("number", draw(st.sampled_from([1, 0.5, -2.0])), draw(st.sampled_from(NUMBER_FORMS)),
                    child), bounded
        if kind == "attend":  # V·A, A a T×T matrix
            return ("attend", self.tokens(dim, depth - 1)[0], self.square(depth - 1)), False
        if kind == "row":  # a per-token row (1ᵀM or mean) against a matrix
            how = draw(st.sampled_from(["center", "gate", "divide", "total"]))
            source = self.tokens(draw(st.sampled_from(["d", "k"])), depth - 1)[0]
            return ("row", how, self.tokens(dim, depth - 1)[0], source), False
        # a per-sample scalar s = tanh(Σ_t mean(M)_t) scaling a bias vector, broadcast over the tokens
        source = self.tokens(draw(st.sampled_from(["d", "k"])), depth - 1)[0]
        return ("pooled", self.param(dim), self.tokens(dim, depth - 1)[0], source), False

    def square(self, depth: int) -> tuple:
        """A tree computing a T×T matrix (attention scores or weights)."""
        draw = self.draw
        kind = draw(st.sampled_from(["softmax", "softmax", "tanh", "transpose", "hadamard"] if depth > 0 else
                                    ["softmax", "tanh"]))
        if kind in ("softmax", "tanh"):
            a_dim, b_dim = draw(st.sampled_from(["d", "k"])), draw(st.sampled_from(["d", "k"]))
            scores = ("scores", self.param("k", a_dim), self.param("k", b_dim), self.tokens(a_dim, depth - 1)[0],
                      self.tokens(b_dim, depth - 1)[0], draw(st.booleans()))
            if kind == "tanh":
                return ("f", "tanh", scores)
            return ("softmax", draw(st.sampled_from([0, 1])), draw(st.booleans()), scores)
        if kind == "transpose":
            return ("transpose", self.square(depth - 1))
        return ("hadamard", self.square(depth - 1), self.square(depth - 1))


# ---- evaluating a tree: on flux's symbols (the model's forward) and in NumPy (the reference) -----------------

def build(tree, model, X):
    """What a user writes in `forward`, for this tree."""
    kind, *args = tree
    p = model.__dict__["_params"] if "_params" in model.__dict__ else {}
    if kind == "X":
        return X
    if kind == "matmul":
        return p[args[0]] * build(args[1], model, X)
    if kind == "tmatmul":
        return (build(args[1], model, X).T * p[args[0]].T).T
    if kind == "bias":
        return build(args[1], model, X) + p[args[0]]
    if kind in ("add", "sub", "hadamard"):
        a, b = build(args[0], model, X), build(args[1], model, X)
        return a + b if kind == "add" else a - b if kind == "sub" else flux.hadamard(a, b)
    if kind == "f":
        return FUNCTIONS[args[0]][0](build(args[1], model, X))
    if kind == "power":
        return flux.hadamard_power(build(args[1], model, X), args[0])
    if kind == "number":
        c, form, m = args[0], args[1], build(args[2], model, X)
        return {"c+M": lambda: c + m, "c-M": lambda: c - m, "M-c": lambda: m - c, "c*M": lambda: c * m}[form]()
    if kind == "attend":
        return build(args[0], model, X) * build(args[1], model, X)
    if kind == "scores":
        Wk, Wq, a, b, scaled = args
        S = (p[Wk] * build(a, model, X)).T * (p[Wq] * build(b, model, X))
        return S / flux.sqrt(model.k) if scaled else S
    if kind == "softmax":
        axis, masked, S = args[0], args[1], build(args[2], model, X)
        return flux.softmax(flux.causal(S, axis=axis) if masked else S, axis=axis)
    if kind == "transpose":
        return build(args[0], model, X).T
    if kind == "row":
        how, m, source = args[0], build(args[1], model, X), build(args[2], model, X)
        if how == "center":
            return m - flux.mean(source)
        if how == "gate":
            return flux.hadamard(m, flux.σ(flux.mean(source)))
        # σ(1ᵀM / 2) rather than σ(1ᵀM): a function applied to flux.total(M) itself hangs (see
        # test_a_function_of_a_token_node_itself_is_traced, skipped until flux.trace.language.is_symbolic knows
        # flux.maths.matrices' nodes)
        if how == "divide":
            return m / (1 + flux.σ(flux.total(source) / 2))
        return m + flux.tanh(flux.total(source) / 2)
    b, m, source = p[args[0]], build(args[1], model, X), build(args[2], model, X)
    return m + flux.tanh(flux.total(flux.mean(source).T)) * b


def reference(tree, p: dict, X: np.ndarray, k: int) -> np.ndarray:
    """The same maths in NumPy for one sample, X ∈ ℝ^{d×T} (columns are tokens)."""
    kind, *args = tree
    if kind == "X":
        return X
    if kind == "matmul":
        return p[args[0]] @ reference(args[1], p, X, k)
    if kind == "tmatmul":
        return (reference(args[1], p, X, k).T @ p[args[0]].T).T
    if kind == "bias":
        return reference(args[1], p, X, k) + p[args[0]][:, None]
    if kind in ("add", "sub", "hadamard"):
        a, b = reference(args[0], p, X, k), reference(args[1], p, X, k)
        return a + b if kind == "add" else a - b if kind == "sub" else a * b
    if kind == "f":
        return FUNCTIONS[args[0]][1](reference(args[1], p, X, k))
    if kind == "power":
        return reference(args[1], p, X, k) ** args[0]
    if kind == "number":
        c, form, m = args[0], args[1], reference(args[2], p, X, k)
        return {"c+M": c + m, "c-M": c - m, "M-c": m - c, "c*M": c * m}[form]
    if kind == "attend":
        return reference(args[0], p, X, k) @ reference(args[1], p, X, k)
    if kind == "scores":
        Wk, Wq, a, b, scaled = args
        S = (p[Wk] @ reference(a, p, X, k)).T @ (p[Wq] @ reference(b, p, X, k))
        return S / np.sqrt(k) if scaled else S
    if kind == "softmax":
        axis, masked, S = args[0], args[1], reference(args[2], p, X, k).copy()
        if masked:  # the key after the query: below the diagonal (keys in rows, axis 0) or above it (axis 1)
            S[np.tril_indices(len(S), -1) if axis == 0 else np.triu_indices(len(S), 1)] = -np.inf
        E = np.exp(S - S.max(axis=axis, keepdims=True))
        return E / E.sum(axis=axis, keepdims=True)
    if kind == "transpose":
        return reference(args[0], p, X, k).T
    if kind == "row":
        how, m, source = args[0], reference(args[1], p, X, k), reference(args[2], p, X, k)
        if how == "center":
            return m - source.mean(axis=0)
        if how == "gate":
            return m * sigmoid(source.mean(axis=0))
        if how == "divide":
            return m / (1 + sigmoid(source.sum(axis=0) / 2))
        return m + np.tanh(source.sum(axis=0) / 2)
    b, m, source = p[args[0]], reference(args[1], p, X, k), reference(args[2], p, X, k)
    return m + np.tanh(source.mean(axis=0).sum()) * b[:, None]


# ---- models ---------------------------------------------------------------------------------------------

def make_class(params: dict, outputs: list) -> type:
    def forward(self, X):
        ys = [build(tree, self, X) for tree in outputs]
        return ys[0] if len(ys) == 1 else tuple(ys)

    namespace = {name: flux.param(*dims) for name, dims in params.items()}
    namespace.update(X=flux.tokens("d"), forward=forward)
    return type("DrawnTokens", (flux.Model,), namespace)


@st.composite
def token_models(draw):
    """(model, trees, sizes, rng, description): a drawn token layer with one or two outputs, float64."""
    builder = Builder(draw)
    builder.param("k", "d")  # the attention dimension k is declared (self.k reads as a number)
    outputs = [builder.tokens(draw(st.sampled_from(["d", "k"])), draw(st.integers(2, 3)))[0]
               for _ in range(draw(st.integers(1, 2)))]
    sizes = {"d": draw(st.integers(1, 4)), "k": draw(st.integers(1, 3))}
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = {}
    for name, dims in builder.params.items():
        fan_in = sizes[dims[1]] if len(dims) == 2 else 1
        values[name] = rng.standard_normal(tuple(sizes[d] for d in dims)) / np.sqrt(fan_in)
    model = make_class(builder.params, outputs)(dtype=np.float64, **values)
    return model, outputs, sizes, rng, f"sizes={sizes}: outputs {outputs}"


def check(example, batch: int, tokens: tuple) -> None:
    model, outputs, sizes, rng, description = example
    for T in tokens:
        X = rng.standard_normal((batch, T, sizes["d"]))
        ys = model(X)
        ys = ys if isinstance(ys, tuple) else (ys,)
        for y, tree in zip(ys, outputs):
            expected = np.array([reference(tree, model.params, x.T, sizes["k"]).T for x in X])
            np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-10, err_msg=f"T={T}: {description}")
        model.back(tuple(np.zeros_like(y) for y in ys) if len(ys) > 1 else np.zeros_like(ys[0]))
        error = flux.gradcheck(model, X, raise_on_failure=False)
        assert error < TOLERANCE, f"relative error {error:.2e} at T={T} for {description}"


@st.composite
def examples(draw):
    """(a drawn model, N, two values of T)."""
    return draw(token_models()), draw(st.integers(1, 3)), (draw(st.integers(1, 5)), draw(st.integers(2, 4)))


@CI_SETTINGS
@given(examples())
def test_random_token_layers_have_correct_forward_and_gradients(drawn):
    example, batch, tokens = drawn
    check(example, batch, tokens)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="long property run: set FLUX_LONG_TESTS=1")
@LONG_SETTINGS
@given(examples())
def test_random_token_layers_long_run(drawn):
    example, batch, tokens = drawn
    check(example, batch, tokens)


class TransposedStack(flux.Model):
    """Y = W·[A₀·X; A₁·X], y = X·tanh(YᵀY): Yᵀ holds the transposed stack [XᵀA₀ᵀ, XᵀA₁ᵀ], a block matrix of one row,
    whose VJP raised IndexError until the rule took blocks side by side (found by two MultiHeadAttentions in a
    Chain: the second reads the first's stacked heads through Xᵀ)."""

    A = flux.param("k", "d")
    W = flux.param("d", "k")
    X = flux.tokens("d")

    def forward(self, X):
        Y = self.W * flux.concat(self.A[0:1, :] * X, self.A[1:2, :] * X)
        return X * flux.tanh(Y.T * Y)


def test_the_gradient_through_a_transposed_stack():
    rng = np.random.default_rng(17)
    model = TransposedStack(A=rng.normal(size=(2, 3)) / 2, W=rng.normal(size=(3, 2)) / 2, dtype=np.float64)
    X = rng.normal(size=(2, 4, 3))
    Y = X @ model.params["A"].T @ model.params["W"].T  # (N, T, d): rows are tokens
    np.testing.assert_allclose(model(X), np.tanh(Y @ Y.transpose(0, 2, 1)) @ X, rtol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6


def test_a_function_of_a_token_node_itself_is_traced():
    class Rows(flux.Model):
        W = flux.param("k", "d")
        X = flux.tokens("d")

        def forward(self, X):
            return self.W * X * flux.tanh(flux.softmax(X.T * X, axis=0)) + flux.tanh(flux.total(X))

    assert "tanh" in repr(Rows.derivation)  # traced, not run on numbers inside its own trace (that hung)
    rng = np.random.default_rng(1)
    model = Rows(W=rng.normal(size=(2, 3)), dtype=np.float64)
    X = rng.normal(size=(2, 4, 3))
    expected = []
    for x in X:  # one sample: columns are tokens
        A = np.exp(x @ x.T) / np.exp(x @ x.T).sum(axis=0, keepdims=True)
        expected.append((model.params["W"] @ x.T @ np.tanh(A) + np.tanh(x.T.sum(axis=0, keepdims=True))).T)
    np.testing.assert_allclose(model(X), np.stack(expected), rtol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6


def test_a_pooled_scalar_scales_a_bias():
    class Pooled(flux.Model):
        W = flux.param("k", "d")
        b = flux.param("k")
        X = flux.tokens("d")

        def forward(self, X):
            return self.W * X + flux.tanh(flux.total(flux.mean(X).T)) * self.b

    rng = np.random.default_rng(3)
    model = Pooled(W=rng.normal(size=(2, 3)), b=rng.normal(size=2), dtype=np.float64)
    X = rng.normal(size=(2, 4, 3))
    W, b = model.params["W"], model.params["b"]
    pooled = np.tanh(X.mean(axis=2).sum(axis=1))  # per sample: Σ over tokens of each token's mean
    np.testing.assert_allclose(model(X), X @ W.T + pooled[:, None, None] * b, rtol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6


def test_a_power_of_a_non_square_matrix_is_refused_when_the_class_is_defined():
    """(W·X)**2 of a k×T token matrix has no matrix power: refused naming hadamard_power (it was a CodegenError
    at the first call)."""
    with pytest.raises(flux.DefinitionError, match=r"not square.*hadamard_power"):
        class Squared(flux.Model):
            W = flux.param("k", "d")
            X = flux.tokens("d")

            def forward(self, X):
                return (self.W * X) ** 2

        Squared.derivation


def test_a_square_parameter_applied_twice_to_the_tokens():
    """W·(W·X) folds into W²·X: the token printer computes W² once per call (it had no code for MatPow)."""
    class Twice(flux.Model):
        W = flux.param("d", "d")
        X = flux.tokens("d")

        def forward(self, X):
            return flux.tanh(self.W * (self.W * X))

    rng = np.random.default_rng(2)
    model = Twice(W=rng.normal(size=(3, 3)) / 2, dtype=np.float64)
    X = rng.normal(size=(2, 4, 3))
    W = model.params["W"]
    np.testing.assert_allclose(model(X), np.tanh(X @ (W @ W).T), rtol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6
