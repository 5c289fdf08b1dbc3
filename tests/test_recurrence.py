"""Recurrence: cells traced once, run over sequences by compiled time loops; BPTT checked by finite differences."""
import inspect

import numpy as np
import pytest

import flux
from flux import GRU, LSTM, Chain, Dense, Recurrent, σ

rng = np.random.default_rng(11)


class LearnableStart(flux.Model):
    """An Elman cell whose initial state h₀ is a parameter: h_t = tanh(W x_t + U h_{t−1} + b), y_t = h_t."""

    W = flux.param("h", "x")
    U = flux.param("h", "h")
    b = flux.param("h")
    hidden = flux.state("h", learnable=True)

    def forward(self, x):
        self.hidden = flux.tanh(self.W * x + self.U * self.hidden + self.b)
        return self.hidden


def recurrent(dtype=np.float64):
    return Recurrent(3, 5, 2, rng=0, dtype=dtype)


def lstm(dtype=np.float64):
    return LSTM(3, 4, rng=1, dtype=dtype)


def gru(dtype=np.float64):
    return GRU(3, 4, rng=2, dtype=dtype)


def sequence(n=3, steps=7, features=3):
    return rng.standard_normal((n, steps, features))


def random_initial(model, n=3):
    return {name: 0.5 * rng.standard_normal((n, size)) for name, size in
            zip(model.kernels.metadata["states"], model.kernels.module.state_sizes(
                *(model.params[k] for k in model.kernels.metadata["params"])))}


# ---- gradients -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 2, 7])
@pytest.mark.parametrize("make", [recurrent, lstm, gru])
def test_bptt_gradcheck_including_the_initial_state(make, steps):
    model = make()
    xs = sequence(steps=steps)
    assert flux.gradcheck(model, xs, initial=random_initial(model)) < 1e-6
    assert flux.gradcheck(model, xs) < 1e-6  # from h₀ = 0


def test_learnable_initial_state_is_a_parameter_with_a_gradient():
    model = LearnableStart(W=rng.standard_normal((4, 3)), U=0.5 * rng.standard_normal((4, 4)), b=np.zeros(4),
                           hidden0=rng.standard_normal(4), dtype=np.float64)
    assert list(model.params) == ["W", "U", "b", "hidden0"]
    assert flux.gradcheck(model, sequence(steps=5)) < 1e-6  # perturbs hidden0 like any parameter
    xs = sequence(steps=5)
    model(xs)
    model.back(np.ones((3, 5, 4)))
    np.testing.assert_allclose(model.grads["hidden0"], model.state_grads["hidden"].sum(axis=0))
    before = model.hidden0.copy() if hasattr(model, "hidden0") else model.params["hidden0"].copy()
    model.update(lr=0.1)
    assert not np.array_equal(before, model.params["hidden0"])
    # a chunk that continues a carried state does not send gradient into h₀
    model(xs)
    model(xs, carry=True)
    model.back(np.ones((3, 5, 4)))
    assert not model.grads["hidden0"].any()



class ReadsBothStates(flux.Model):
    """An output reading h_{t−1}, h_t and x_t: h_t = tanh(W x_t + U h_{t−1} + b), y_t = (V h_{t−1}) ⊙ h_t + A x_t."""

    W = flux.param("h", "x"); U = flux.param("h", "h"); b = flux.param("h")  # noqa: E702
    V = flux.param("h", "h"); A = flux.param("h", "x")  # noqa: E702
    hidden = flux.state("h")

    def forward(self, x):
        previous = self.hidden
        self.hidden = flux.tanh(self.W * x + self.U * self.hidden + self.b)
        return flux.hadamard(self.V * previous, self.hidden) + self.A * x


@pytest.mark.parametrize("steps", [1, 3])
def test_a_readout_of_both_states_and_the_input_gradchecks(steps):
    model = ReadsBothStates(W=rng.standard_normal((4, 3)), U=0.5 * rng.standard_normal((4, 4)), b=np.zeros(4),
                            V=rng.standard_normal((4, 4)), A=rng.standard_normal((4, 3)), dtype=np.float64)
    assert flux.gradcheck(model, sequence(steps=steps), initial=random_initial(model)) < 1e-6


def test_only_the_state_update_runs_inside_the_time_loop():
    module = recurrent().kernels.module
    forward, backward = (inspect.getsource(f.py_func) for f in (module.forward, module.backward))
    step = time_loop(forward) + time_loop(backward)  # the cell kernels, pasted into the drivers' loops
    products = [line for line in step if "step_product_into(" in line]  # flux.small_products
    assert products and not any("Why" in line for line in products)  # the readout's GEMM is not per step
    assert any("Whh_T, " in line for line in products)  # the loop's GEMM reads a contiguous Whhᵀ
    readout = [line for line in forward.splitlines() if "dot(" in line and line not in time_loop(forward)]
    assert any("Why.T)" in line for line in readout)  # y_t from every h_t at once, after the loop


def test_the_cell_kernels_are_compiled_only_inside_the_drivers():
    module = recurrent().kernels.module  # numba would compile a called kernel alone and again in its caller
    compiled = {name for name, value in vars(module).items() if hasattr(value, "py_func")}
    assert {"forward", "backward"} <= compiled and not compiled & {"cell_forward", "cell_backward", "project",
                                                                   "readout", "readout_backward", "gradients"}


def time_loop(source: str) -> list[str]:
    """The lines of the `for t in range(…)` loop of a driver's source."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("for t in range("))
    depth = len(lines[start]) - len(lines[start].lstrip())
    body = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= depth:
            break
        body.append(line)
    return body


# ---- forward semantics ---------------------------------------------------------------------------------

def test_the_seeds_recurrent_matches_numpy():
    model = recurrent()
    xs = sequence()
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    h, expected = np.zeros((3, 5)), []
    for t in range(xs.shape[1]):
        h = sig(xs[:, t] @ model.Wxh.T + h @ model.Whh.T + model.bh)
        expected.append(sig(xs[:, t] @ model.Wxy.T + h @ model.Why.T + model.by))
    ys = model(xs)
    assert ys.shape == (3, 7, 2)
    np.testing.assert_allclose(ys, np.stack(expected, axis=1), rtol=1e-12)
    np.testing.assert_allclose(model.state["hidden"], h, rtol=1e-12)
    assert model.hidden is model.state["hidden"]  # the state descriptor shows the carried value


def test_step_by_step_matches_the_whole_sequence():
    model = lstm()
    xs = sequence(steps=6)
    whole = model(xs)
    model.reset()
    assert model.state == {"h": None, "c": None}
    stepped = np.stack([model.step(xs[:, t]) for t in range(6)], axis=1)
    np.testing.assert_allclose(stepped, whole, rtol=1e-12)
    model.reset()
    single = np.stack([model.step(xs[1, t]) for t in range(6)])
    np.testing.assert_allclose(single, whole[1], rtol=1e-12)
    dx = model.back(np.ones(4))  # back through the last step only (truncated)
    assert dx.shape == (3,)


def test_truncated_bptt_in_chunks_gives_the_same_outputs():
    model = gru()
    xs = sequence(steps=9)
    whole = model(xs)
    chunks = [model(xs[:, :4]), model(xs[:, 4:7], carry=True), model(xs[:, 7:], carry=True)]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole, rtol=1e-12)
    # the last chunk's gradient stops at its start: ∂L/∂h at the chunk boundary is reported, not propagated
    dx = model.back(np.ones((3, 2, 4)))
    assert dx.shape == (3, 2, 3)
    assert model.state_grads["h"].shape == (3, 4) and model.state_grads["h"].any()


def test_initial_state_given_or_reset():
    model = recurrent()
    xs = sequence(steps=4)
    h0 = rng.standard_normal((3, 5))
    a = model(xs, initial=h0)
    model.reset(h0)
    b = model(xs, carry=True)
    np.testing.assert_allclose(a, b)
    c = model(xs, initial=h0[0])  # one state for every sample
    np.testing.assert_allclose(c[0], a[0])
    assert not np.allclose(model(xs), a)


def test_lstm_inside_a_chain_is_recurrent_and_gradchecks():
    model = Chain(LSTM(3, 6, rng=0, dtype=np.float64), Dense(6, 2, σ, rng=1, dtype=np.float64))
    xs = sequence(steps=5)
    ys = model(xs)
    assert ys.shape == (3, 5, 2)
    np.testing.assert_allclose(ys, model.layers[1](model.layers[0](xs).reshape(-1, 6)).reshape(3, 5, 2))
    assert set(model.state) == {"0.h", "0.c"}
    assert model.layers[0].h is model.state["0.h"]
    assert flux.gradcheck(model, xs, initial=random_initial(model)) < 1e-6


def test_compiled_once_whatever_the_sequence_length():
    model = LSTM(4, 8, rng=0)
    program = model.kernels
    model(rng.standard_normal((2, 10, 4)).astype(np.float32))
    model.back(np.ones((2, 10, 8), np.float32))
    model(rng.standard_normal((2, 1000, 4)).astype(np.float32))
    model.back(np.ones((2, 1000, 8), np.float32))
    assert model.kernels is program and LSTM(4, 8).kernels is program
    assert len(program.forward.function.signatures) == 1 and len(program.backward.function.signatures) == 1
    assert "range(T)" in program.source and "1000" not in program.source
    assert program.metadata["hoisted"]  # the input projections W·x_t run before the loop, one GEMM for all t


# ---- errors: specific, and nothing half-done -------------------------------------------------------------

def snapshot(model):
    return ({k: v.copy() for k, v in model.params.items()}, {k: v.copy() for k, v in model.grads.items()},
            {k: None if v is None else v.copy() for k, v in model.state.items()})


def assert_unchanged(model, before):
    params, grads, states = before
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, params[k])
    for k, v in model.grads.items():
        np.testing.assert_array_equal(v, grads[k])
    for k, v in model.state.items():
        assert (v is None and states[k] is None) or np.array_equal(v, states[k])


@pytest.fixture
def used():
    """A Recurrent that has run and accumulated gradient, so a failed call could visibly damage it."""
    model = recurrent()
    model(sequence(steps=4))
    model.back(np.ones((3, 4, 2)))
    model(sequence(steps=4))
    return model


@pytest.mark.parametrize("call, error, words", [
    (lambda m: m(rng.standard_normal((3, 3))), ValueError, ["Recurrent", "x", "(N, T, 3)", "(3, 3)", "step"]),
    (lambda m: m(rng.standard_normal((3, 4, 5))), ValueError, ["Recurrent", "x", "3 features", "(3, 4, 5)"]),
    (lambda m: m(rng.standard_normal((3, 0, 3))), ValueError, ["Recurrent", "x", "one time step"]),
    (lambda m: m(np.full((3, 4, 3), 2**53 + 1)), TypeError, ["Recurrent", "x", "floating-point"]),
    (lambda m: m(sequence(steps=4), initial=np.zeros((3, 6))), ValueError, ["Recurrent", "hidden", "(3, 5)", "(3, 6)"]),
    (lambda m: m(sequence(steps=4), initial={"c": np.zeros(5)}), ValueError, ["Recurrent", "no state c", "hidden"]),
    (lambda m: m(sequence(n=2, steps=4), carry=True), ValueError, ["Recurrent", "carried state hidden", "reset"]),
    (lambda m: m.back(np.ones((3, 5, 2))), ValueError, ["Recurrent.back", "Δ", "T = 4", "(3, 4, 2)", "(3, 5, 2)"]),
    (lambda m: m.back(np.ones((3, 4, 3))), ValueError, ["Recurrent.back", "Δ", "(3, 4, 2)", "(3, 4, 3)"]),
    (lambda m: m.back(np.ones((3, 2))), ValueError, ["Recurrent.back", "Δ", "(3, 4, 2)"]),
    (lambda m: m.reset(np.zeros(7)), ValueError, ["Recurrent", "hidden", "(5,)"]),
])
def test_bad_input_is_refused_and_nothing_changes(used, call, error, words):
    before = snapshot(used)
    with pytest.raises(error) as caught:
        call(used)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
    assert_unchanged(used, before)


def test_back_twice_and_options_on_a_feedforward_model():
    model = recurrent()
    model(sequence(steps=2))
    model.back(np.ones((3, 2, 2)))
    with pytest.raises(RuntimeError, match="Recurrent.back: there is no forward pass"):
        model.back(np.ones((3, 2, 2)))
    with pytest.raises(TypeError, match="Dense is not recurrent"):
        Dense(3, 2)(np.ones((2, 3), np.float32), carry=True)
    with pytest.raises(TypeError, match="not recurrent"):
        Dense(3, 2).reset()
