"""One run-time state per model, never saved or copied; one parameter, one optimiser state; refused steps change
nothing; array-likes and exact integers as inputs; shared functions from many threads (issue 12: items 2, 3, 6,
12 (inputs), 13, 14 and part of 15)."""
import copy
import json
import pickle
import subprocess
import sys
import threading
import zipfile

import numpy as np
import pytest

import flux
from flux import Chain, Dense
from flux.run.state import RuntimeState, runtime_of
from models import perceptron

rng = np.random.default_rng(12)


def data(n=6, k=3, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, k)), r.standard_normal((n, k))


def manual_dense(params, prefix, x, activation=np.tanh):
    return activation(x @ params[prefix + "W"].T + params[prefix + "b"])


# ---- item 2: save → load (fresh process) → train acts on the arrays `params` shows ----------------------------------

SAVE = """
import sys, numpy as np, flux
model = flux.Chain(flux.Dense(3, 4, flux.tanh, rng=0, dtype=np.float64), flux.Dense(4, 2, rng=1, dtype=np.float64))
x = np.linspace(-1, 1, 15).reshape(5, 3)
model(x)
model.back(np.ones((5, 2)))
model.update(lr=0.1)
model(x)  # the cached flat parameter lists exist when saving
flux.save(model, sys.argv[1])
"""

TRAIN_AFTER_LOAD = """
import json, sys, numpy as np, flux
model = flux.load(sys.argv[1])
x = np.linspace(-1, 1, 15).reshape(5, 3)
for _ in range(3):
    model(x)
    model.back(np.ones((5, 2)))
    model.update(lr=0.1)
p = model.params
expected = np.tanh(x @ p["0.W"].T + p["0.b"]) @ p["1.W"].T + p["1.b"]
print(json.dumps({"max_difference": float(np.abs(model(x) - expected).max())}))
"""


def test_training_after_load_in_a_fresh_process_acts_on_the_parameters_shown(tmp_path):
    path = tmp_path / "model.flux"
    subprocess.run([sys.executable, "-c", SAVE, str(path)], check=True, capture_output=True, text=True)
    with zipfile.ZipFile(path) as archive:  # nothing of the run-time state is in the file
        names = archive.namelist()
    with np.load(path, allow_pickle=False) as saved:
        description = str(saved["__flux__"])
    assert not any("_flat" in n or "_runtime" in n for n in names)
    assert "_flat" not in description and "_runtime" not in description and "_program" not in description
    done = subprocess.run([sys.executable, "-c", TRAIN_AFTER_LOAD, str(path)], check=True, capture_output=True,
                          text=True)
    assert json.loads(done.stdout.splitlines()[-1])["max_difference"] < 1e-12


def test_loaded_model_kernels_take_the_arrays_params_shows(tmp_path):
    model = Chain(Dense(3, 4, flux.tanh, rng=0, dtype=np.float64), Dense(4, 2, rng=1, dtype=np.float64))
    model(np.ones((2, 3)))
    flux.save(model, tmp_path / "m.flux")
    loaded = flux.load(tmp_path / "m.flux")
    params, grads = loaded.flat_arrays()
    assert all(a is b for a, b in zip(params, loaded.params.values()))
    assert all(a is b for a, b in zip(grads, loaded.grads.values()))
    assert isinstance(runtime_of(loaded), RuntimeState) and runtime_of(loaded) is not runtime_of(model)


# ---- item 3: tied layers, one optimiser state on every path -------------------------------------------------------

def tied_or_not(tied):
    first = Dense(3, 3, flux.tanh, rng=3, dtype=np.float64)
    second = first if tied else Dense(3, 3, flux.tanh, rng=4, dtype=np.float64)
    return Chain(first, second)


OPTIMISERS = {"SGD": lambda: flux.SGD(0.1), "Momentum": lambda: flux.Momentum(0.1, rho=0.9),
              "Adam": lambda: flux.Adam(0.1)}


def by_update(model, optimiser, x, t, steps):
    for _ in range(steps):
        _, Δ = flux.mse.value_and_gradient(model(x), t)
        model.back(Δ)
        model.update(optimiser)


def by_compile_step(model, optimiser, x, t, steps):
    step = flux.compile_step(model, flux.mse, optimiser)
    for _ in range(steps):
        step(x, t)


def by_train(model, optimiser, x, t, steps):
    flux.train(model, flux.mse, (x, t), optimiser, epochs=steps, batch_size=len(x), shuffle=False, progress=False)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("optimiser", list(OPTIMISERS))
def test_update_compile_step_and_train_agree(tied, optimiser):
    x, t = data()
    results = []
    for path in (by_update, by_compile_step, by_train):
        model, opt = tied_or_not(tied), OPTIMISERS[optimiser]()
        path(model, opt, x, t, steps=4)
        assert opt.step_count == 4
        results.append((model.params, opt))
    (reference, ref_opt), *others = results
    for params, opt in others:
        for name in reference:
            np.testing.assert_allclose(params[name], reference[name], rtol=1e-9, atol=1e-12, err_msg=name)
        for kind in ref_opt.state_names:  # one state per distinct array, under the same names
            assert set(opt.state[kind]) == set(ref_opt.state[kind])
            for name, value in ref_opt.state[kind].items():
                np.testing.assert_allclose(opt.state[kind][name], value, rtol=1e-9, atol=1e-12)
    if tied:
        params = results[1][0]
        assert params["0.W"] is params["1.W"]
        for kind in ref_opt.state_names:
            assert set(ref_opt.state[kind]) == {"0.W", "0.b"}


def test_tied_adam_is_one_parameter_with_the_summed_gradient():
    """The tied chain's Adam step is the one-parameter step on ∂L/∂W summed over both uses (by hand)."""
    x, t = data()
    model, opt = tied_or_not(True), flux.Adam(0.1)
    W0, b0 = model.params["0.W"].copy(), model.params["0.b"].copy()
    step = flux.compile_step(model, flux.mse, opt)
    step(x, t)
    reference = tied_or_not(True)
    _, Δ = flux.mse.value_and_gradient(reference(x), t)
    reference.back(Δ)
    g = reference.grads["0.W"]
    np.testing.assert_allclose(reference.grads["1.W"], g)  # one array: both uses summed in it
    # Adam's first step moves every entry by lr·g/(|g| + ε): by lr, against the sign of the summed gradient
    np.testing.assert_allclose(model.params["0.W"], W0 - 0.1 * g / (np.abs(g) + 1e-8), rtol=1e-7)
    assert not np.allclose(model.params["0.b"], b0)


# ---- item 6: update(lr=…) refuses bad steps and changes nothing ---------------------------------------------------

def snapshot(model):
    return ({k: v.copy() for k, v in model.params.items()}, {k: g.copy() for k, g in model.grads.items()},
            runtime_of(model).has_grads)


def assert_unchanged(model, before):
    params, grads, has_grads = before
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, params[k])
    for k, g in model.grads.items():
        np.testing.assert_array_equal(g, grads[k])
    assert runtime_of(model).has_grads == has_grads


def with_gradients(dtype=np.float64):
    model = perceptron(dtype=dtype)
    model(rng.standard_normal((4, 5)))
    model.back(rng.standard_normal((4, 3)))
    return model


@pytest.mark.parametrize("lr, error, words", [
    (float("nan"), ValueError, "lr must be finite and non-negative"),
    (float("inf"), ValueError, "lr must be finite and non-negative"),
    (-0.1, ValueError, "lr must be finite and non-negative"),
    ("0.1", TypeError, "lr must be a number"),
])
def test_update_validates_lr_like_sgd_and_changes_nothing(lr, error, words):
    model = with_gradients()
    before = snapshot(model)
    with pytest.raises(error, match=words):
        model.update(lr=lr)
    with pytest.raises(error, match=words):
        flux.SGD(lr)
    assert_unchanged(model, before)


def test_update_refuses_an_lr_that_overflows_the_model_dtype():
    model = with_gradients(np.float32)
    before = snapshot(model)
    with pytest.raises(ValueError, match="too large for float32"):
        model.update(lr=1e39)
    assert_unchanged(model, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_update_refuses_non_finite_gradients_naming_the_parameter(bad):
    model = with_gradients()
    model.grads["b"][1] = bad
    before = snapshot(model)
    with pytest.raises(FloatingPointError, match=r"Perceptron.update: the gradient of parameter 'b' is not finite"):
        model.update(lr=0.1)
    assert_unchanged(model, before)


def test_update_refuses_a_step_that_overflows():
    model = with_gradients(np.float32)
    model.grads["W"][...] = 3e38
    before = snapshot(model)
    with pytest.raises(FloatingPointError, match="the update of parameter 'W'"):
        model.update(lr=10.0)
    assert_unchanged(model, before)


def test_update_with_a_number_for_an_optimiser_says_use_lr():
    model = with_gradients()
    before = snapshot(model)
    with pytest.raises(TypeError, match=r"expected an optimiser .* got 0.1; .*perceptron.update\(lr=0.1\)"):
        model.update(0.1)
    with pytest.raises(TypeError, match="not both"):
        model.update(flux.SGD(0.1), lr=0.1)
    assert_unchanged(model, before)


# ---- item 12: exact integers, bools and array-likes as inputs -----------------------------------------------------

class OnlyDLPack:
    """An array-like offering only the DLPack protocol (as a JAX or torch array does, among others)."""

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


class OnlyArray:
    """An array-like offering only __array__ (a CPU torch tensor does)."""

    def __init__(self, array):
        self.array = np.asarray(array)

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def test_integer_and_bool_inputs_exactly_representable_are_accepted():
    model = Dense(2, 1, flux.σ, rng=0)  # float32
    xor = [[0, 0], [0, 1], [1, 0], [1, 1]]
    expected = model(np.array(xor, dtype=np.float32))
    np.testing.assert_array_equal(model(xor), expected)
    np.testing.assert_array_equal(model(np.array(xor, dtype=np.int8)), expected)
    np.testing.assert_array_equal(model(np.array(xor, dtype=bool)), expected)
    np.testing.assert_array_equal(model(np.array(xor, dtype=np.uint64)), expected)
    assert model(np.array([2**24, 0])).dtype == np.float32  # 2²⁴ is exact in float32
    with pytest.raises(TypeError, match=r"Dense: input x must be a floating-point array, got dtype int64 with values "
                                        r"not exactly representable in float32"):
        model(np.array([[2**24 + 1, 0]]))
    model(np.array(xor, dtype=np.float32))
    dx = model.back(np.ones((4, 1), dtype=np.int32))  # Δ too
    model(np.array(xor, dtype=np.float32))
    np.testing.assert_array_equal(model.back(np.ones((4, 1), dtype=np.float32)), dx)


def test_array_likes_work_as_inputs_and_gradients():
    model = Dense(3, 2, flux.tanh, rng=1, dtype=np.float64)
    x = rng.standard_normal((4, 3))
    expected = model(x)
    dx = model.back(np.ones((4, 2)))
    for wrap in (OnlyDLPack, OnlyArray):
        np.testing.assert_array_equal(model(wrap(x)), expected)
        np.testing.assert_array_equal(model.back(wrap(np.ones((4, 2)))), dx)


def test_sequences_accept_exact_integers_and_array_likes():
    model = flux.Recurrent(3, 4, 2, rng=0, dtype=np.float64)
    xs = np.arange(24).reshape(2, 4, 3) % 3
    expected = model(xs.astype(np.float64))
    np.testing.assert_array_equal(model(xs), expected)
    np.testing.assert_array_equal(model(OnlyDLPack(xs.astype(np.float64))), expected)
    dxs = model.back(np.ones((2, 4, 2), dtype=int))
    model(xs)
    np.testing.assert_array_equal(model.back(np.ones((2, 4, 2))), dxs)
    with pytest.raises(TypeError, match="floating-point"):
        model(np.full((2, 4, 3), 2**53 + 1))


# ---- item 13: pickle and deepcopy at any time; the copy is independent --------------------------------------------

@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
@pytest.mark.parametrize("when", ["new", "after forward", "after training", "between forward and back"])
def test_models_copy_at_any_time_and_the_copy_is_independent(how, when):
    x, t = data(k=3)
    model = Chain(Dense(3, 3, flux.tanh, rng=0, dtype=np.float64), flux.tanh, Dense(3, 3, rng=1, dtype=np.float64))
    if when != "new":
        _, Δ = flux.mse.value_and_gradient(model(x), t)
        if when != "between forward and back":
            model.back(Δ)
            model.update(flux.Adam(0.01))
    clone = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    assert runtime_of(clone) is not runtime_of(model) and runtime_of(clone).tape is None
    for name, p in model.params.items():
        assert clone.params[name] is not p
        np.testing.assert_array_equal(clone.params[name], p)
    np.testing.assert_array_equal(clone(x), model(x))
    before = {k: v.copy() for k, v in model.params.items()}
    for _ in range(2):  # train the copy only
        _, Δ = flux.mse.value_and_gradient(clone(x), t)
        clone.back(Δ)
        clone.update(lr=0.1)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
    assert not np.allclose(clone.params["0.W"], before["0.W"])
    p = clone.params
    np.testing.assert_allclose(clone(x), np.tanh(np.tanh(x @ p["0.W"].T + p["0.b"])) @ p["2.W"].T + p["2.b"],
                               rtol=1e-12)


def test_a_copy_keeps_tied_layers_tied_and_gradients_pending():
    model = tied_or_not(True)
    x, t = data()
    _, Δ = flux.mse.value_and_gradient(model(x), t)
    model.back(Δ)
    clone = copy.deepcopy(model)
    assert clone.params["0.W"] is clone.params["1.W"]
    np.testing.assert_array_equal(clone.grads["0.W"], model.grads["0.W"])
    clone.update(lr=0.1)  # the accumulated gradients travel with the copy
    model.update(lr=0.1)
    np.testing.assert_array_equal(clone.params["0.W"], model.params["0.W"])


def test_pickled_models_do_not_carry_compiled_code():
    model = perceptron()
    model(rng.standard_normal((2, 5)))
    assert runtime_of(model).program is not None
    assert b"numba" not in pickle.dumps(model) and b"RuntimeState" not in pickle.dumps(model)


# ---- item 14: shared functions and losses from several threads ----------------------------------------------------

def test_shared_loss_and_function_from_two_threads_with_their_own_models():
    """Each thread has its own Dense; flux.mse and flux.tanh are shared objects. Never "no forward pass"."""
    errors, results = [], {}
    x = {0: rng.standard_normal((7, 4)), 1: rng.standard_normal((7, 4)).astype(np.float32)}  # 1/7: inexact
    t = {k: rng.standard_normal((7, 3)).astype(v.dtype) for k, v in x.items()}

    def work(k, iterations=800):
        model = Dense(4, 3, rng=k, dtype=x[k].dtype)
        try:
            for _ in range(iterations):
                h = flux.tanh(model(x[k]))
                value, Δ = flux.mse.value_and_gradient(h, t[k])
                model.back(flux.tanh.back(Δ))
            results[k] = (value, model.grads["W"].copy())
        except Exception as error:  # noqa: BLE001 - collected and reported below
            errors.append(error)

    work(0, 10)  # the float64 thread's gradient after 10 passes, alone
    alone = results[0][1]

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors[:3]
    for k in (0, 1):  # each thread's numbers are its own model's, in its own precision
        model = Dense(4, 3, rng=k, dtype=x[k].dtype)
        y = np.tanh(model(x[k]))
        value, _ = flux.mse.value_and_gradient(y, t[k])
        assert results[k][0] == pytest.approx(value, rel=1e-5)
        assert results[k][1].dtype == x[k].dtype
    np.testing.assert_allclose(results[0][1], alone * 80, rtol=1e-12)  # float64 throughout, never float32's 1/7


# ---- item 15: step() on a feed-forward model; assigning into params -----------------------------------------------

def test_step_on_a_non_recurrent_model_is_a_clear_error():
    with pytest.raises(TypeError, match=r"Perceptron.step: Perceptron is not recurrent .*perceptron\(x\)"):
        perceptron().step(np.ones(5))


def test_assigning_into_params_copies_into_the_parameter_with_checks():
    model = perceptron()
    W = model.params["W"]
    x = rng.standard_normal((2, 5))
    model(x)
    model.params["W"] = np.zeros((3, 5))
    assert model.params["W"] is W and not W.any()  # the same array: kernels, caches and optimisers see it
    np.testing.assert_allclose(model(x), 1 / (1 + np.exp(-model.params["b"])) * np.ones((2, 1)))
    model.params["W"] = [[1] * 5] * 3  # exact integers, like inputs
    np.testing.assert_array_equal(W, 1.0)
    with pytest.raises(ValueError, match=r"Perceptron: parameter W has shape \(3, 5\), got \(5, 3\)"):
        model.params["W"] = np.zeros((5, 3))
    with pytest.raises(KeyError, match="no parameter 'V'"):
        model.params["V"] = np.zeros(3)
    with pytest.raises(TypeError, match="cannot be added or removed"):
        del model.params["W"]
    np.testing.assert_array_equal(W, 1.0)
    chain = Chain(perceptron(), perceptron())
    chain.params.update({"0.b": np.full(3, 2.0)})
    np.testing.assert_array_equal(chain[0].b, 2.0)
