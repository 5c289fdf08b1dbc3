"""Regression tests for bugs found by the second round of probing flux as a demanding user and a hostile file author.

Each test failed before its fix (the commit naming the bug). Behaviour probes run on the NumPy tier (nothing to
compile); numeric ones on numba too. Small sizes and the session's kernel cache keep it fast.
"""
import numpy as np
import pytest

import flux
from test_probes import rewrite_description

F64 = np.float64


@pytest.fixture
def numpy_tier(monkeypatch):
    monkeypatch.setenv("FLUX_TIER", "numpy")


# ---- a per-sample scalar times a matrix inside a quadratic form ------------------------------------------------


class ScaledInside(flux.Model):
    """y = xᵀ·(Σ(x)·W)·x + (xᵀ·(mean(x)·W))ᵀ."""
    W = flux.param("n", "n")

    def forward(self, x):
        return x.T * (flux.total(x) * self.W) * x + (x.T * (flux.mean(x) * self.W)).T


@pytest.mark.parametrize("tier", ["numpy", "numba"])
def test_a_per_sample_scalar_times_a_matrix_inside_a_quadratic_form(monkeypatch, tier):
    """Bug: xᵀ·(Σ(x)·W)·x was refused ("the per-sample scalar total(x) times a matrix is a matrix per sample")
    although it is the per-sample scalar Σ(x)·(xᵀ·W·x), which was accepted."""
    monkeypatch.setenv("FLUX_TIER", tier)
    rng = np.random.default_rng(3)
    model = ScaledInside(W=rng.standard_normal((3, 3)), dtype=F64)
    x = rng.standard_normal((4, 3))
    W = model.params["W"]
    s, m = x.sum(axis=1, keepdims=True), x.mean(axis=1, keepdims=True)
    expected = s * np.einsum("ni,ij,nj->n", x, W, x)[:, None] + m * (x @ W)
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)
    assert flux.gradcheck(model, x) < 1e-6


# ---- attributes forward reads, changed in place: the new value, never the stale one -----------------------------


class Coefficients(flux.Model):
    """y = c₀·(W·x) + c₁·x + d["shift"]·1 + a₀·x (c a list, d a dict, a an array: attributes forward reads)."""
    W = flux.param("n", "n")

    def forward(self, x):
        return self.c[0] * (self.W * x) + self.c[1] * x + self.d["shift"] + self.a[0] * x


def coefficients_model() -> Coefficients:
    model = Coefficients(W=np.eye(2), dtype=F64)
    model.c, model.d, model.a = [1.0, 2.0], {"shift": 0.0}, np.array([0.0])
    return model


def test_a_list_dict_or_array_attribute_changed_in_place_is_seen(numpy_tier):
    """Bug: `m.c[0] = 5.0` set no attribute, so the kernel kept computing with the old value, silently (the README
    said "assign it again"). Also: a NumPy number in forward (`self.a[0] * x`, `np.sqrt(2) * x`) failed to trace
    ("'Symbol' object cannot be interpreted as an integer")."""
    model, x = coefficients_model(), np.ones((1, 2))
    np.testing.assert_array_equal(model(x), 3 * x)
    model.c[0] = 5.0
    np.testing.assert_array_equal(model(x), 7 * x)
    model.d["shift"] = 1.0
    np.testing.assert_array_equal(model(x), 8 * x)
    model.a[0] = 2.0
    np.testing.assert_array_equal(model(x), 10 * x)
    model.back(np.ones((1, 2)))
    np.testing.assert_array_equal(model.grads["W"], 5 * np.ones((2, 2)))


class NumPyNumbers(flux.Model):
    def forward(self, x):
        return np.sqrt(2.0) * x + np.float32(0.5) * x - x / np.float64(4) + np.int64(3)


def test_numpy_numbers_on_either_side_of_a_symbol(numpy_tier):
    x = np.array([[1.0, -2.0]])
    np.testing.assert_allclose(NumPyNumbers(dtype=F64)(x), (np.sqrt(2) + 0.25) * x + 3, rtol=1e-15)


def chain_of_three(activation=None):
    return [flux.Dense(2, 2, rng=1, dtype=F64), flux.Dense(2, 2, activation, rng=2, dtype=F64)]


def test_a_chains_layer_replaced_in_place_or_reordered_is_used(numpy_tier):
    """Bug: `chain.layers[1] = other` kept computing the old layer's maths, `chain.layers.append(d)` failed inside
    the kernel call (input_sizes() takes 4 positional arguments but 6 were given), and `chain.layers = [b, a]`
    (an assignment: the maths re-traced) ran with the parameters in their old order: a(b(x)) computed as b(a(x))."""
    a, b = chain_of_three()
    chain, x = flux.Chain(a, b), np.random.default_rng(0).standard_normal((4, 2))
    chain(x)
    c = flux.Dense(2, 2, flux.tanh, rng=3, dtype=F64)
    chain.layers[1] = c
    np.testing.assert_allclose(chain(x), c(a(x)), rtol=1e-14)
    chain.layers = [c, a]
    np.testing.assert_allclose(chain(x), a(c(x)), rtol=1e-14)
    chain.layers[0], chain.layers[1] = chain.layers[1], chain.layers[0]
    np.testing.assert_allclose(chain(x), c(a(x)), rtol=1e-14)
    chain.layers.append(flux.Dense(2, 1, rng=4, dtype=F64))
    np.testing.assert_allclose(chain(x), chain.layers[2](c(a(x))), rtol=1e-14)
    assert sorted(chain.params) == ["0.W", "0.b", "1.W", "1.b", "2.W", "2.b"]
    assert flux.gradcheck(chain, x) < 1e-6


class Scaled(flux.Model):
    """y = α·(W·x)."""
    W = flux.param("n", "n")

    def forward(self, x):
        return self.alpha * (self.W * x)


def test_compile_step_follows_attributes_changed_after_it_was_made(numpy_tier):
    """Bug: a step compiled before `m.alpha = 3.0` (or `m.c[0] = 5.0`, or a Chain's layers reordered) went on
    computing the old maths: the loss read 4 where it is 9."""
    model, x, t = Scaled(W=np.eye(2), dtype=F64), np.ones((1, 2)), np.zeros((1, 2))
    model.alpha = 2.0
    step = flux.compile_step(model, flux.mse, flux.SGD(0.0))
    assert step(x, t) == 4.0
    model.alpha = 3.0
    assert step(x, t) == 9.0
    listed = coefficients_model()
    step = flux.compile_step(listed, flux.mse, flux.SGD(0.0))
    assert step(x, t) == 9.0
    listed.c[0] = 5.0
    assert step(x, t) == 49.0
    a, b = chain_of_three(flux.tanh)
    chain = flux.Chain(a, b)
    step = flux.compile_step(chain, flux.mse, flux.SGD(0.0))
    step(x, t)
    chain.layers = [b, a]
    assert step(x, t) == pytest.approx(flux.mse(a(b(x)), t), rel=1e-14)


@pytest.mark.parametrize("how", ["load", "pickle", "deepcopy"])
def test_changing_an_attribute_of_a_loaded_unpickled_or_copied_model_changes_its_maths(numpy_tier, tmp_path, how):
    """Bug: only models made by their constructor re-traced after `m.alpha = 3.0`: a model from flux.load, pickle or
    copy.deepcopy went on computing 2·W·x, silently."""
    import copy
    import pickle

    model = Scaled(W=np.eye(2), dtype=F64)
    model.alpha = 2.0
    flux.save(model, tmp_path / "scaled.npz")
    other = {"load": lambda: flux.load(tmp_path / "scaled.npz", classes=[Scaled]),
             "pickle": lambda: pickle.loads(pickle.dumps(model)), "deepcopy": lambda: copy.deepcopy(model)}[how]()
    x = np.ones((1, 2))
    np.testing.assert_array_equal(other(x), 2 * x)
    other.alpha = 3.0
    np.testing.assert_array_equal(other(x), 3 * x)


@pytest.mark.parametrize("make, name, value, message", [
    (lambda: flux.MultiHeadAttention(4, 2, dtype=F64), "heads", 3, "must be a multiple of heads = 3"),
    (lambda: flux.Dropout(0.5), "p", 1.0, "p must be a probability"),
    (lambda: flux.LayerNorm(3), "eps", -1.0, "eps must be a positive number"),
])
def test_an_attribute_the_constructor_would_refuse_is_refused_when_assigned(numpy_tier, make, name, value, message):
    """Bug: `attention.heads = 3` on a MultiHeadAttention(4, 2) was taken, and its next call returned uninitialised
    memory (entries of 1e+44 and 1e+169) on both tiers, silently; the constructor and flux.load refuse it."""
    model = make()
    before = getattr(model, name)
    with pytest.raises((TypeError, ValueError), match=message):
        setattr(model, name, value)
    assert getattr(model, name) == before


# ---- precision --------------------------------------------------------------------------------------------------


def test_a_float64_step_keeps_its_targets_in_float64_whatever_the_loss_computed_last(numpy_tier):
    """Bug: the fused step converted the target to the loss's own precision, the one of its last use — float32 for a
    loss first used by the step: a float64 model trained on targets rounded to float32 (loss off by 3e-9)."""
    flux.mse(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32))  # flux.mse now computes in float32
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    model = flux.Dense(3, 2, rng=1, dtype=F64)
    W, b = model.params["W"].copy(), model.params["b"].copy()
    loss = flux.compile_step(model, flux.mse, flux.SGD(0.1))(x, t)
    y = x @ W.T + b
    assert loss == pytest.approx(((y - t) ** 2).mean(), rel=1e-15, abs=0)
    np.testing.assert_allclose(model.params["W"], W - 0.1 * (2 * (y - t) / y.size).T @ x, rtol=1e-14)


# ---- model files --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["gelu", "silu", "swish", "erf", "elu", "leakyrelu", "softsign", "relu"])
def test_a_layer_with_any_built_in_function_saves_and_loads(numpy_tier, tmp_path, activation):
    """Bug: a Dense with a function of flux's table (gelu, silu, erf, elu, leakyrelu, softsign) saved, as a model
    with its docstring for an attribute, and then never loaded ("sets an attribute named '__doc__' on Elementwise,
    which is not a plain attribute name")."""
    model = flux.Dense(3, 2, activation, rng=0, dtype=F64)
    path = tmp_path / "dense.npz"
    flux.save(model, path)
    loaded = flux.load(path)
    assert loaded.activation.function == model.activation.function
    x = np.random.default_rng(0).standard_normal((2, 3))
    np.testing.assert_array_equal(loaded(x), model(x))


# ---- chains of sequence layers ------------------------------------------------------------------------------------


def test_a_feed_forward_layer_before_attention_applies_to_every_token(numpy_tier):
    """Bug: Chain(Dense(3, 2), MultiHeadAttention(2, 1)) took column vectors (its first layer's input), so the
    attention ran on a vector and failed while generating code ("flux's NumPy printer has no code for ColumnSoftmax
    nodes"); an input projection before attention is a token model, the Dense on every token."""
    rng = np.random.default_rng(0)
    dense, attention = flux.Dense(3, 2, flux.tanh, rng=1, dtype=F64), flux.MultiHeadAttention(2, 1, dtype=F64)
    chain, X = flux.Chain(dense, attention), rng.standard_normal((2, 3, 3))
    np.testing.assert_allclose(chain(X), attention(np.stack([dense(x) for x in X])), rtol=1e-12, atol=1e-15)
    assert flux.gradcheck(chain, X) < 1e-6


def test_a_fused_chain_of_a_token_layer_and_a_recurrent_layer_is_refused_clearly(tmp_path):
    """Bug: Chain(MultiHeadAttention, LSTM) failed at the first call with a DefinitionError printing a whole page of
    the traced expression, Chain(LSTM, MultiHeadAttention) with "NumPy printer has no code for ColumnSoftmax"; a
    file saying fuse=True is refused when it loads."""
    for layers in [(flux.MultiHeadAttention(4, 2), flux.LSTM(4, 3)), (flux.LSTM(4, 4), flux.MultiHeadAttention(4, 2))]:
        with pytest.raises(TypeError, match=r"takes sequences of tokens and layer \d \((LSTM|MultiHeadAttention)\) "
                                            r"is recurrent.*fuse=False"):
            flux.Chain(*layers)
        unfused = flux.Chain(*layers, fuse=False)  # each layer's own kernels in turn: fine
    path = tmp_path / "chain.npz"
    flux.save(unfused, path)
    rewrite_description(path, lambda description: description["model"]["attributes"].update(fuse=True))
    with pytest.raises(ValueError, match="flux.load: .*takes sequences of tokens"):
        flux.load(path)


# ---- losses -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [flux.crossentropy, flux.logitcrossentropy])
def test_bool_class_labels_are_refused_as_labels(numpy_tier, loss):
    """Bug: bool labels (N,) were read as ONE sample's target of N features: "input target has batch size 1 but
    prediction has 5", and in a step "must have 4 features along its last axis, got shape (5,)"."""
    model, x = flux.Dense(3, 4, rng=0, dtype=F64), np.ones((5, 3))
    labels = np.array([True, False, True, False, True])
    with pytest.raises(TypeError, match="reads as class labels, but its dtype is bool; class labels must be integers"):
        loss(model(x), labels)
    with pytest.raises(TypeError, match="its dtype is bool"):
        flux.compile_step(model, loss, flux.SGD(0.1))(x, labels)


# ---- per-sample matrices: shapes that cannot be, refused where they are written ------------------------------------


class StackedTransposed(flux.Model):
    X = flux.tokens("d")
    W = flux.param("e", "d")

    def forward(self, X):
        return X * flux.softmax(flux.concat(self.W * X, X).T * flux.concat(self.W * X, X), axis=0)


class StackedTimesTokens(flux.Model):
    X = flux.tokens("d")
    W = flux.param("e", "d")

    def forward(self, X):
        return (flux.concat(self.W * X, X).T * X).T


def test_the_transpose_of_a_stack_of_token_matrices_times_the_stack():
    """Bug: Cᵀ·C with C = [W·X; X] was refused ("would fix the size e to 1"): the shape rule read the transposed
    stack [XᵀWᵀ, Xᵀ] (blocks side by side, T rows each) as a stack of columns."""
    rng = np.random.default_rng(2)
    model, X = StackedTransposed(W=rng.standard_normal((3, 2)), dtype=F64), rng.standard_normal((2, 3, 2))
    expected = []
    for x in X:  # one sample: columns are tokens
        C = np.concatenate([model.params["W"] @ x.T, x.T])
        S = C.T @ C
        A = np.exp(S - S.max(axis=0)) / np.exp(S - S.max(axis=0)).sum(axis=0)
        expected.append((x.T @ A).T)
    np.testing.assert_allclose(model(X), np.stack(expected), rtol=1e-12)
    assert flux.gradcheck(model, X) < 1e-6


def test_a_product_of_a_stack_and_one_of_its_parts_is_a_shape_error():
    """Bug: concat(W·X, X)ᵀ·X (T×(e+d) times d×T) passed the shape check (a rigid size against a sum was left to
    the arrays) and failed in the derivation with a bare IndexError; d + e can never equal d."""
    with pytest.raises(flux.DefinitionError, match=r"has d \+ e rows \(d vs d \+ e\)"):
        StackedTimesTokens.derivation


# ---- row slices of a parameter in a feed-forward model ----------------------------------------------------------


class RowSlices(flux.Model):
    """y = [W[0:2]·x; W[2:4]·x] + b[0:4] (a parameter in row slices: heads by slicing, outside attention)."""
    W = flux.param("k", "d")
    b = flux.param("m")

    def forward(self, x):
        return flux.concat(self.W[0:2, :] * x, self.W[2:4, :] * x) + self.b[0:4]


@pytest.mark.parametrize("tier", ["numpy", "numba"])
def test_a_parameter_used_in_row_slices_gets_its_gradient_by_rows(monkeypatch, tier):
    """Bug: ∂L/∂W = [Δ[0:2]·xᵀ; Δ[2:4]·xᵀ; 0] could not be summed over the batch: "cannot sum this per-sample matrix
    over the batch" at the first call, on both tiers, for W[0:2, :]·x in any feed-forward model."""
    monkeypatch.setenv("FLUX_TIER", tier)
    rng = np.random.default_rng(0)
    model = RowSlices(W=rng.standard_normal((5, 3)), b=rng.standard_normal(6), dtype=F64)
    x = rng.standard_normal((4, 3))
    W, b = model.params["W"], model.params["b"]
    np.testing.assert_allclose(model(x), x @ W[0:4].T + b[0:4], rtol=1e-13)
    assert flux.gradcheck(model, x) < 1e-6
    model.zero_grad()
    model(x)
    model.back(np.ones((4, 4)))
    np.testing.assert_allclose(model.grads["W"][0:4], np.ones((4, 4)).T @ x, rtol=1e-13)
    assert not model.grads["W"][4].any() and not model.grads["b"][4:].any()  # rows no slice reads: 0


class Halves(flux.Model):
    """y = [W[0:k/2]·x; W[k/2:k]·x]: slices at a size computed from a dimension."""
    W = flux.param("k", "d")

    def forward(self, x):
        half = self.k / 2
        return flux.concat(self.W[0:half, :] * x, self.W[half:2 * half, :] * x)


@pytest.mark.parametrize("tier", ["numpy", "numba"])
def test_slices_at_a_computed_size_are_whole_or_refused(monkeypatch, tier):
    """Bug: W[0:k/2, :] failed on the NumPy tier for every k (a float slice index, k/2 = 2.0), and with k = 3 the
    numba tier sliced 1.5 rows silently; a bound that is not a whole number is now a ValueError naming the slice."""
    monkeypatch.setenv("FLUX_TIER", tier)
    x = np.random.default_rng(1).standard_normal((2, 2))
    model = Halves(W=np.arange(8.0).reshape(4, 2), dtype=F64)
    np.testing.assert_allclose(model(x), x @ model.params["W"].T, rtol=1e-14)
    assert flux.gradcheck(model, x) < 1e-6
    with pytest.raises(ValueError, match=r"Halves: the slice W\[:k/2, :\] has the bound k/2 = 3/2 .*whole number"):
        Halves(W=np.ones((3, 2)), dtype=F64)(x)
    odd = Halves(W=np.ones((3, 2)), dtype=F64)  # a fused step that never called the model checks it too
    with pytest.raises(ValueError, match=r"Halves: the slice W\[:k/2, :\] has the bound k/2 = 3/2 .*whole number"):
        flux.compile_step(odd, flux.mse, flux.SGD(0.1))(x, np.zeros((2, 2)))
    np.testing.assert_array_equal(odd.params["W"], np.ones((3, 2)))


# ---- feed-forward layers on (N, T, k): every row a sample, as PyTorch's Linear on (*, k) ----------------------


@pytest.mark.parametrize("tier", ["numpy", "numba"])
def test_a_feed_forward_layer_takes_more_leading_axes_as_rows(monkeypatch, tier):
    """Bug (probe, left open by its helper): a Dense or a training Dropout after a recurrent layer got (N, T, k) and
    refused it ("must have shape (N, features)"), so Chain(LSTM, Dropout, Dense) could not train."""
    monkeypatch.setenv("FLUX_TIER", tier)
    rng = np.random.default_rng(5)
    dense = flux.Dense(4, 3, flux.tanh, rng=1, dtype=F64)
    rows = flux.Dense(4, 3, flux.tanh, rng=1, dtype=F64)
    x, Δ = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 3))
    y = dense(x)
    np.testing.assert_array_equal(y, rows(x.reshape(10, 4)).reshape(2, 5, 3))
    with pytest.raises(ValueError, match=r"Dense.back: Δ must have the output's shape \(2, 5, 3\), got \(10, 3\)"):
        dense.back(Δ.reshape(10, 3))
    dx = dense.back(Δ)  # the failed back changed nothing and kept the forward pass
    np.testing.assert_array_equal(dx, rows.back(Δ.reshape(10, 3)).reshape(2, 5, 4))
    for name in ("W", "b"):
        np.testing.assert_array_equal(dense.grads[name], rows.grads[name])
    with pytest.raises(ValueError, match=r"Bilinear: inputs with more than a batch axis must all have the same shape"):
        flux.Bilinear(4, 4, 2, dtype=F64)(x, x[:, :3])


def test_a_recurrent_chain_with_dropout_trains_step_by_step(numpy_tier):
    """Chain(LSTM, Dropout, Dense) in training mode runs the Dropout and the Dense on the LSTM's (N, T, h) output;
    the result and ∂L/∂x are those of the layers called one by one with the same mask."""
    rng = np.random.default_rng(6)
    lstm, dense = flux.LSTM(3, 4, rng=0, dtype=F64), flux.Dense(4, 2, rng=2, dtype=F64)
    chain = flux.Chain(lstm, flux.Dropout(0.5, rng=1), dense)
    x, Δ = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 5, 2))
    y = chain(x)
    dx = chain.back(Δ)
    alone = [flux.LSTM(3, 4, rng=0, dtype=F64), flux.Dropout(0.5, rng=1), flux.Dense(4, 2, rng=2, dtype=F64)]
    h = alone[0](x)
    z = alone[2](alone[1](h))
    np.testing.assert_allclose(y, z, rtol=1e-12)
    np.testing.assert_allclose(dx, alone[0].back(alone[1].back(alone[2].back(Δ))), rtol=1e-12)
    history = flux.train(chain, flux.mse, (x, rng.standard_normal((2, 5, 2))), flux.SGD(0.1), epochs=3,
                         batch_size=2, progress=False)
    assert len(history["loss"]) == 3 and np.all(np.isfinite(history["loss"]))


@pytest.mark.parametrize("tier", ["numpy", "numba"])
def test_the_fused_step_of_a_feed_forward_model_takes_more_leading_axes_as_rows(monkeypatch, tier):
    """compile_step (and so flux.train) on (N, T, k) inputs is the step on the N·T rows, as model(x) is."""
    monkeypatch.setenv("FLUX_TIER", tier)
    rng = np.random.default_rng(7)
    x, t, labels = rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 3)), rng.integers(0, 3, (2, 5))
    for loss, target, rows_target in ((flux.mse, t, t.reshape(10, 3)), (flux.logitcrossentropy, labels,
                                                                           labels.reshape(10))):
        models = [flux.Dense(4, 3, flux.tanh, rng=1, dtype=F64) for _ in range(2)]
        steps = [flux.compile_step(m, loss, flux.Adam(0.01)) for m in models]
        for _ in range(2):
            assert steps[0](x, target) == steps[1](x.reshape(10, 4), rows_target)
        for name in ("W", "b"):
            np.testing.assert_array_equal(models[0].params[name], models[1].params[name])
    with pytest.raises(ValueError, match=r"Dense: x has shape \(2, 5, 4\), so the target must have shape "
                                         r"\(2, 5, out\) or class labels \(2, 5\), got \(2, 4, 3\)"):
        steps[0](x, t[:, :4])


def test_a_ragged_list_input_is_refused_naming_the_model(numpy_tier):
    """A ragged list got NumPy's "setting an array element with a sequence", naming neither model nor input."""
    dense = flux.Dense(2, 3, rng=0)
    for call in (lambda: dense([[1.0, 2.0], [3.0]]),
                 lambda: flux.compile_step(dense, flux.mse, flux.SGD(0.1))([[1.0, 2.0], [3.0]], np.zeros((2, 3)))):
        with pytest.raises(ValueError, match=r"Dense: input x is not a rectangular array of numbers"):
            call()
