"""Regression tests for bugs found by the fourth round of probing (today's token workspace, written-parameter
refusals and layers with their own `back`).

Each test failed before its fix. Behaviour probes run on the NumPy tier (nothing to compile).
"""
import numpy as np
import pytest

import flux
from test_probes2 import F64, numpy_tier  # noqa: F401  (numpy_tier is a fixture: FLUX_TIER=numpy)


class Halved(flux.Dense):
    """A Dense whose own `back` halves Δ: a Chain holding it runs its layers in turn."""

    def back(self, Δ):
        return super().back(0.5 * Δ)


class Exact(flux.Dense):
    """A Dense with its own (exact) back: runs alone in a Chain, and gradcheck checks it."""

    def back(self, Δ):
        return super().back(Δ)


@pytest.mark.parametrize("make", [
    lambda: flux.Chain(flux.Recurrent(3, 4, 2, rng=1, dtype=F64), Halved(2, 2, rng=2, dtype=F64)),
    lambda: flux.Chain(flux.Recurrent(3, 4, 2, rng=1, dtype=F64), flux.Dense(2, 2, rng=2, dtype=F64), fuse=False),
])
def test_a_chain_run_in_turn_refuses_initial_and_carry_rather_than_ignore_them(numpy_tier, make):
    """Bug: a Chain running its layers in turn (a layer with its own back, fuse=False) dropped initial= and
    carry=True silently: chain(xs, initial=h₀) returned chain(xs), as if from zero."""
    chain = make()
    xs = np.random.default_rng(11).standard_normal((2, 4, 3))
    y = chain(xs)
    for options in ({"initial": np.ones((2, 4))}, {"carry": True}):
        with pytest.raises(TypeError, match=rf"Chain: {next(iter(options))}= cannot be applied: this Chain runs its "
                                            "layers in turn"):
            chain(xs, **options)
    np.testing.assert_array_equal(chain(xs), y)
    assert chain.back(np.ones_like(y)).shape == xs.shape


def test_step_reset_and_state_of_a_chain_run_in_turn_say_why_they_cannot_run(numpy_tier):
    """Bug: chain.reset(), chain.step(x) and chain.state of a Chain holding a layer with its own back raised
    "Chain.back: … put that layer in a Chain", naming a method not called and advice already followed."""
    chain = flux.Chain(flux.Recurrent(3, 4, 2, rng=1, dtype=F64), Halved(2, 2, rng=2, dtype=F64))
    calls = {"reset": lambda: chain.reset(), "step": lambda: chain.step(np.ones((2, 3))), "state": lambda: chain.state}
    for caller, call in calls.items():
        with pytest.raises(TypeError, match=r"Chain.step, reset and state: Chain holds a sub-model that overrides "
                                            r"Halved.back, so it runs its layers in turn"):
            call()
    plain = flux.Chain(flux.Recurrent(3, 4, 2, rng=1, dtype=F64), flux.Dense(2, 2, rng=2, dtype=F64))
    plain.reset()
    assert plain.step(np.ones((2, 3))).shape == (2, 2) and plain.state["0.hidden"].shape == (2, 4)


def test_gradcheck_of_a_chain_with_a_training_dropout_says_to_call_eval(numpy_tier):
    """Bug: gradcheck of a Chain holding a training Dropout (beside a layer with its own back) reported every
    gradient wrong ("relative error 1.00e+00"): each call drew a new mask. In eval mode it checks."""
    chain = flux.Chain(flux.Chain(Halved(3, 3, rng=1, dtype=F64), flux.Dropout(0.3)), flux.Dense(3, 2, dtype=F64))
    x = np.random.default_rng(12).standard_normal((4, 3))
    with pytest.raises(TypeError, match=r"gradcheck: Chain holds a Dropout in training mode.*call chain.eval\(\)"):
        flux.gradcheck(chain, x)
    exact = flux.Chain(flux.Chain(Exact(3, 3, rng=1, dtype=F64), flux.Dropout(0.3)), flux.Dense(3, 2, dtype=F64))
    assert flux.gradcheck(exact.eval(), x) < 1e-6


@pytest.mark.parametrize("make", [
    lambda: flux.Chain(Halved(3, 3, rng=1, dtype=F64), flux.Dense(3, 2, rng=2, dtype=F64)),
    lambda: flux.Chain(flux.Dense(3, 3, rng=1, dtype=F64), flux.Dense(3, 2, rng=2, dtype=F64), fuse=False),
])
def test_a_chain_run_in_turn_refuses_a_written_parameter_before_any_layer_s_back(numpy_tier, make):
    """Bug: with a first layer's parameter written between chain(x) and chain.back(Δ), the last layer's back ran
    (adding its gradients) before the first refused "Dense.back: … Nothing was changed": the top layer's gradients
    stayed, to be applied stale by a later update."""
    chain = make()
    x = np.random.default_rng(13).standard_normal((4, 3))
    y = chain(x)
    chain.layers[0].params["b"] = np.ones(3)
    with pytest.raises(RuntimeError, match=r"Chain.back: parameter\(s\) 0\.b changed after the forward pass"):
        chain.back(np.ones_like(y))
    assert all(not g.any() for g in chain.grads.values())
    y = chain(x)
    assert chain.back(np.ones_like(y)).shape == x.shape


class Refusing(flux.Dense):
    """A Dense whose own `back` raises (a user's check failing), after flux ran the layers above it."""

    def back(self, Δ):
        raise ValueError("Refusing.back: Δ refused")


def test_a_user_back_raising_in_a_chain_leaves_no_gradient_of_the_layers_above(numpy_tier):
    """Bug: a Chain running its layers in turn back-propagated through the top layer, whose gradients were added,
    then a user's own `back` below it raised: the model was left half-updated (the next update applied them)."""
    rng = np.random.default_rng(5)
    top = flux.Dense(2, 2, rng=3, dtype=F64)
    chain = flux.Chain(flux.Dense(3, 2, rng=1, dtype=F64), Refusing(2, 2, rng=2, dtype=F64), top)
    x = rng.standard_normal((4, 3))
    chain(x)
    with pytest.raises(ValueError, match="Refusing.back: Δ refused"):
        chain.back(np.ones((4, 2)))
    assert all(not g.any() for g in chain.grads.values())
    with pytest.raises(RuntimeError, match="Chain.update: no gradient has been accumulated"):
        chain.update(lr=0.1)  # nothing is pending
