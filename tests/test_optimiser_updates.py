"""The built-in optimisers' kernels ship compiled once (flux/optimiser_updates.py): exactly what their rules print,
called by every fused step's `update`; any other rule is printed into the step's module as before."""
import numpy as np
import pytest

from flux import optimiser_updates
from flux.generate import optimiser_update
from flux.generate.module import OPTIMISER_UPDATES, imports_for
from flux.optimisers import BUILT_IN, Adam, Optimiser


def test_the_shipped_file_is_what_the_rules_print():
    expected = optimiser_update.shipped_module_source(list(BUILT_IN))
    assert optimiser_update.SHIPPED_FILE.read_text(encoding="utf-8") == expected, \
        "flux/optimiser_updates.py is out of date: run python -m flux.generate.optimiser_update"
    assert OPTIMISER_UPDATES == tuple(optimiser_update.shipped_name(cls.__name__) for cls in BUILT_IN)


@pytest.mark.parametrize("cls", BUILT_IN, ids=lambda cls: cls.__name__)
def test_a_built_in_update_calls_its_shipped_kernel(cls):
    source = optimiser_update.update_source(cls.rules(), cls.__name__)
    name = optimiser_update.shipped_name(cls.__name__)
    assert f"    {name}(θ_, g_, " in source and "for i in range" not in source
    assert f"from flux.optimiser_updates import {name}" in imports_for(source)


class Lion(Optimiser):
    """A rule flux does not ship: θ ← θ − lr·g/2 (it is printed into the module)."""

    defaults = {"lr": None}

    @staticmethod
    def rule(θ, g, t, lr):
        return {"θ": θ - lr * g / 2}


def test_another_rule_is_printed_into_the_module():
    source = optimiser_update.update_source(Lion.rules(), "Lion")
    assert source == optimiser_update.rule_kernel_source(Lion.rules(), "Lion")
    assert "for i in range(θ_.size):" in source and "_update(" not in source


def test_a_rule_under_a_built_in_name_is_not_taken_for_it():
    class Adam(Lion):  # the name of a built-in, another rule: the shipped adam_update must not be called
        pass

    source = optimiser_update.update_source(Adam.rules(), "Adam")
    assert "adam_update" not in source and "θ_[i] = " in source


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_shipped_adam_kernel_computes_the_rule(dtype):
    rng = np.random.default_rng(3)
    θ, g, m, v = (rng.standard_normal(7).astype(dtype) for _ in range(4))
    v = np.abs(v)
    h = {name: dtype(value) for name, value in Adam.defaults.items()}
    expected = Adam.update_function()(θ, g, dtype(2), m, v, *h.values())
    optimiser_updates.adam_update(θ, g, m, v, dtype(2), *h.values())
    tolerance = 1e-6 if dtype == np.float32 else 1e-12
    for got, want in zip((m, v, θ), expected):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
