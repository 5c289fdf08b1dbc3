"""Optimisers: each update against its textbook formula in NumPy, state kept by name, refused on another model."""
import numpy as np
import pytest
import sympy

import flux
from flux.optimisers import SGD, Adam, Momentum, Nesterov, Optimiser, RMSProp
from models import TwoTower, perceptron

rng = np.random.default_rng(7)


def with_gradients(model, grads):
    """Set the model's accumulated gradients directly (as back() would), so a step is fully hand-computable."""
    for name, g in model.grads.items():
        np.copyto(g, grads[name])
    model._set_has_grads(True)


def textbook(name, θ, g, state, t, h):
    """One step of each optimiser written plainly in NumPy (float64): returns new θ and new state."""
    if name == "SGD":
        return θ - h["lr"] * g, {}
    if name == "Momentum":
        v = h["rho"] * state.get("v", 0) - h["lr"] * g
        return θ + v, {"v": v}
    if name == "Nesterov":
        v = h["rho"] * state.get("v", 0) - h["lr"] * g
        return θ + h["rho"] * v - h["lr"] * g, {"v": v}
    if name == "RMSProp":
        a = h["rho"] * state.get("a", 0) + (1 - h["rho"]) * g**2
        return θ - h["lr"] * g / (np.sqrt(a) + h["eps"]), {"a": a}
    if name == "Adam":
        m = h["beta1"] * state.get("m", 0) + (1 - h["beta1"]) * g
        v = h["beta2"] * state.get("v", 0) + (1 - h["beta2"]) * g**2
        m_hat, v_hat = m / (1 - h["beta1"]**t), v / (1 - h["beta2"]**t)
        return θ - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"]), {"m": m, "v": v}
    raise AssertionError(name)


OPTIMISERS = [
    (SGD, {"lr": 0.1}),
    (Momentum, {"lr": 0.1, "rho": 0.8}),
    (Nesterov, {"lr": 0.1, "rho": 0.8}),
    (RMSProp, {"lr": 0.01, "rho": 0.7, "eps": 1e-8}),
    (Adam, {"lr": 0.01, "beta1": 0.8, "beta2": 0.9, "eps": 1e-8}),
]


@pytest.mark.parametrize("cls, hyper", OPTIMISERS, ids=[c.__name__ for c, _ in OPTIMISERS])
def test_two_steps_match_the_textbook_formula(cls, hyper):
    model = perceptron(m=2, n=3)
    optimiser = cls(**hyper)
    expected = {k: p.copy() for k, p in model.params.items()}
    state: dict = {k: {} for k in expected}
    for t in (1, 2):
        grads = {k: rng.standard_normal(p.shape) for k, p in expected.items()}
        with_gradients(model, grads)
        model.update(optimiser)
        for k in expected:
            expected[k], state[k] = textbook(cls.__name__, expected[k], grads[k], state[k], t, hyper)
        for k, p in model.params.items():
            np.testing.assert_allclose(p, expected[k], rtol=1e-12, atol=1e-14)
            for s, value in state[k].items():
                np.testing.assert_allclose(optimiser.state[s][k], value, rtol=1e-12, atol=1e-14)
        assert all(not g.any() for g in model.grads.values())  # update zeroed the gradients
    assert optimiser.step_count == 2


def test_updates_keep_the_parameter_dtype():
    model = perceptron(m=2, n=3, dtype=np.float32)
    optimiser = Adam(lr=0.1)
    with_gradients(model, {k: np.ones(p.shape) for k, p in model.params.items()})
    model.update(optimiser)
    assert all(p.dtype == np.float32 for p in model.params.values())
    assert all(a.dtype == np.float32 for s in optimiser.state.values() for a in s.values())


def test_rules_are_sympy_data_in_documented_symbols():
    rules = Adam.rules()
    assert list(rules.updates) == ["m", "v", "θ"] == rules.targets
    assert set(rules.hyperparameters) == {"lr", "beta1", "beta2", "eps"}
    free = set().union(*(e.free_symbols for e in rules.updates.values()))
    assert free <= set(rules.arguments)
    # the θ rule, evaluated by SymPy at a point, agrees with the textbook formula
    point = {rules.theta: 1.0, rules.gradient: 0.5, rules.step: 3, rules.state["m"]: 0.2, rules.state["v"]: 0.1,
             **{rules.hyperparameters[k]: v for k, v in {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8}.items()}}
    θ, _ = textbook("Adam", 1.0, 0.5, {"m": 0.2, "v": 0.1}, 3, {"lr": 0.01, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8})
    assert float(rules.updates["θ"].subs(point)) == pytest.approx(θ, rel=1e-12)
    assert isinstance(SGD.rules().updates["θ"], sympy.Expr)


def test_state_dict_round_trip_continues_identically():
    first, second = perceptron(m=2, n=3), perceptron(m=2, n=3)
    optimiser = Adam(lr=0.05)
    steps = [{k: rng.standard_normal(p.shape) for k, p in first.params.items()} for _ in range(4)]
    for grads in steps[:2]:
        for model in (first, second):
            with_gradients(model, grads)
        first.update(optimiser)
        second.update(lr=0.0)  # keep second's parameters in step with first's
        for k, p in second.params.items():
            np.copyto(p, first.params[k])
    saved = optimiser.state_dict()
    resumed = Adam()
    resumed.load_state_dict(saved)
    assert resumed.hyperparameters == optimiser.hyperparameters and resumed.step_count == 2
    for grads in steps[2:]:
        with_gradients(first, grads)
        first.update(optimiser)
        with_gradients(second, grads)
        second.update(resumed)
    for k in first.params:
        np.testing.assert_array_equal(first.params[k], second.params[k])


def test_state_dict_of_another_optimiser_is_refused_untouched():
    adam = Adam(lr=0.1)
    model = perceptron(m=2, n=3)
    with_gradients(model, {k: np.ones(p.shape) for k, p in model.params.items()})
    model.update(adam)
    rms = RMSProp()
    with pytest.raises(ValueError, match="belongs to 'Adam'"):
        rms.load_state_dict(adam.state_dict())
    broken = adam.state_dict()
    broken["state"]["m"]["W"] = np.zeros((5, 5))
    before = adam.state_dict()
    with pytest.raises(ValueError, match="'W'"):
        adam.load_state_dict(broken)
    for s in before["state"]:
        for k, a in before["state"][s].items():
            np.testing.assert_array_equal(adam.state[s][k], a)


@pytest.mark.parametrize("cls, hyper", [OPTIMISERS[0], OPTIMISERS[-1]], ids=["SGD", "Adam"])
def test_optimiser_of_another_model_is_refused_naming_the_parameter(cls, hyper):
    optimiser = cls(**hyper)
    used = perceptron(m=2, n=3)
    with_gradients(used, {k: np.ones(p.shape) for k, p in used.params.items()})
    used.update(optimiser)
    other = perceptron(m=4, n=3)
    with_gradients(other, {k: np.ones(p.shape) for k, p in other.params.items()})
    before = {k: p.copy() for k, p in other.params.items()}
    state_before = optimiser.state_dict()
    with pytest.raises(ValueError, match=r"parameter 'W'.*\(4, 3\).*\(2, 3\)"):
        other.update(optimiser)
    for k, p in other.params.items():
        np.testing.assert_array_equal(p, before[k])
    assert optimiser.step_count == state_before["step_count"]
    nested = TwoTower(a=perceptron(m=2, n=3), b=perceptron(m=2, n=3, seed=1), dtype=np.float64)
    with_gradients(nested, {k: np.ones(p.shape) for k, p in nested.params.items()})
    with pytest.raises(ValueError, match="'a.W'"):
        nested.update(optimiser)


def test_a_non_finite_update_changes_nothing():
    model = perceptron(m=2, n=3)
    optimiser = Momentum(lr=0.1)
    with_gradients(model, {k: np.ones(p.shape) for k, p in model.params.items()})
    model.update(optimiser)
    before = {k: p.copy() for k, p in model.params.items()}
    velocity = {k: v.copy() for k, v in optimiser.state["v"].items()}
    grads = {k: np.ones(p.shape) for k, p in model.params.items()}
    grads["b"][0] = np.nan
    with_gradients(model, grads)
    with pytest.raises(FloatingPointError, match="'b'"):
        model.update(optimiser)
    for k, p in model.params.items():
        np.testing.assert_array_equal(p, before[k])
        np.testing.assert_array_equal(optimiser.state["v"][k], velocity[k])
    assert optimiser.step_count == 1


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="beta1"):
        Adam(beta1=1.0)
    with pytest.raises(TypeError, match="lr"):
        SGD(lr="fast")
    with pytest.raises(ValueError, match="lr"):
        Momentum(lr=-1.0)


def test_a_custom_optimiser_is_one_rule():
    class SignSGD(Optimiser):
        """θ ← θ − lr·sign(g)."""

        defaults = {"lr": None}

        def __init__(self, lr):
            super().__init__(lr=lr)

        @staticmethod
        def rule(θ, g, t, lr):
            return {"θ": θ - lr * sympy.sign(g)}

    model = perceptron(m=2, n=3)
    before = model.params["W"].copy()
    with_gradients(model, {k: np.full(p.shape, -3.0) for k, p in model.params.items()})
    model.update(SignSGD(lr=0.5))
    np.testing.assert_allclose(model.params["W"], before + 0.5)


def test_exported_from_flux():
    assert (flux.SGD, flux.Momentum, flux.Nesterov, flux.RMSProp, flux.Adam) == (SGD, Momentum, Nesterov, RMSProp, Adam)


def test_a_shared_layer_is_updated_once_per_step():
    shared = flux.Dense(2, 2, rng=0, dtype=np.float64)
    model = flux.Chain(shared, shared)
    assert model.params["0.W"] is model.params["1.W"]
    before = shared.W.copy()
    with_gradients(model, {k: np.ones(p.shape) for k, p in model.params.items()})
    model.update(SGD(lr=0.5))
    np.testing.assert_allclose(shared.W, before - 0.5)
