"""Tracing and the language: a forward that cannot become maths is refused at definition, with a DefinitionError
naming what the user wrote (an unsupported function, a shape mismatch, a Python `if` on a symbol, a result that is
not a matrix, an assignment to anything but a declared state, a declared state never assigned)."""
import numpy as np
import pytest
import sympy

import flux
from flux.trace.language import DefinitionError


# ---- refused at definition ----------------------------------------------------------------------------------

def definition_error(forward, params=None):
    namespace = {"forward": forward}
    for name, dims in (params or {"W": ("m", "n"), "b": ("m",)}).items():
        namespace[name] = flux.param(*dims)
    cls = type("Broken", (flux.Model,), namespace)
    with pytest.raises(flux.DefinitionError) as info:
        cls.derivation
    return str(info.value)


def test_unsupported_function_is_refused_at_definition():
    message = definition_error(lambda self, x: sympy.sin(self.W * x))
    assert "Broken.forward" in message


def test_shape_inconsistent_expression_is_refused():
    message = definition_error(lambda self, x: self.W * x + self.c, {"W": ("m", "n"), "c": ("n",)})
    assert "Broken: shape mismatch in `W*x + c`" in message and "m vs n" in message


def test_python_if_on_a_symbol_is_refused():
    def forward(self, x):
        if self.W * x:
            return x
        return x

    assert "Python `if`" in definition_error(forward)


def test_non_matrix_result_is_refused():
    assert "must return a matrix expression" in definition_error(lambda self, x: 3.0)


# ---- issue 12, item 5: forward assigns declared states, and each of them --------------------------------------------

class Typo(flux.Model):
    hidden = flux.state("h")
    W = flux.param("h", "n")
    U = flux.param("h", "h")

    def forward(self, x):
        self.hiden = flux.tanh(self.W * x + self.U * self.hidden)
        return self.hiden


class NeverAssigned(flux.Model):
    hidden = flux.state("h")
    W = flux.param("h", "n")

    def forward(self, x):
        return flux.tanh(self.W * x)


class AssignsParameter(flux.Model):
    W = flux.param("m", "n")

    def forward(self, x):
        self.W = self.W * 2
        return self.W * x


def test_a_typo_in_a_state_assignment_is_a_definition_error_naming_both():
    model = Typo(W=np.ones((2, 3)), U=np.eye(2))
    with pytest.raises(DefinitionError, match=r"Typo.forward assigns self.hiden, .*not a declared state.*declared: "
                                              r"hidden"):
        model(np.ones((1, 4, 3), dtype=np.float32))
    with pytest.raises(DefinitionError, match="hiden"):
        Typo.derivation


def test_a_declared_state_never_assigned_is_a_definition_error():
    with pytest.raises(DefinitionError, match="NeverAssigned declares the state hidden .* never assigns self.hidden"):
        NeverAssigned(W=np.ones((2, 3)))(np.ones((1, 4, 3), dtype=np.float32))


def test_forward_assigning_a_parameter_is_a_definition_error():
    with pytest.raises(DefinitionError, match=r"assigns self.W, which is not a declared state \(declared: none\)"):
        AssignsParameter(W=np.ones((2, 3)))(np.ones((1, 3), dtype=np.float32))
