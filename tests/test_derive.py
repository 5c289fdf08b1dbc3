"""The reverse-mode rules, checked symbolically and on explicit matrices."""
import pytest
import sympy
from sympy import HadamardProduct, MatrixSymbol, OneMatrix, Symbol

from flux.derive.rules import backward_expressions
from flux.maths.elementwise import FUNCTIONS
from flux.maths.nodes import Apply

m, n = Symbol("m"), Symbol("n")
W, x, b = MatrixSymbol("W", m, n), MatrixSymbol("x", n, 1), MatrixSymbol("b", m, 1)
Δ = MatrixSymbol("Δ", m, 1)


def test_perceptron_gradients_are_written_through_the_output():
    y = Apply("σ", W * x + b)
    gradients = backward_expressions({"y": y}, {"y": Δ}, [W, b, x])
    δ = HadamardProduct(Δ, y, OneMatrix(m, 1) - y).doit()
    assert gradients["b"] == δ
    assert gradients["W"] == δ * x.T
    assert gradients["x"] == W.T * δ
    assert not any(isinstance(a, sympy.exp) for a in sympy.preorder_traversal(gradients["W"]))


@pytest.mark.parametrize("name, expected", [
    ("σ", "y*(1 - y)"), ("tanh", "1 - y**2"), ("relu", "heaviside(y)"), ("exp", "y"), ("sqrt", "1/(2*y)"),
    ("log", "1/z"), ("square", "2*z"), ("softplus", "sigmoid(z)"), ("abs", "sign(z)"),
])
def test_elementwise_derivatives_use_forward_values(name, expected):
    assert str(FUNCTIONS[name].derivative) == expected


def test_unused_symbol_gets_zero_gradient():
    c = MatrixSymbol("c", m, 1)
    gradients = backward_expressions({"y": W * x}, {"y": Δ}, [c])
    assert gradients["c"] == sympy.ZeroMatrix(m, 1)


def test_shared_subexpression_gradients_add_up_on_explicit_matrices():
    """y = z ⊙ z with z = W x: the derived ∂L/∂W equals the explicit entrywise derivative."""
    W2, x2, Δ2 = MatrixSymbol("W", 2, 3), MatrixSymbol("x", 3, 1), MatrixSymbol("Δ", 2, 1)
    z = W2 * x2
    y = HadamardProduct(z, z)
    gradient = backward_expressions({"y": y}, {"y": Δ2}, [W2])["W"]
    loss = (Δ2.as_explicit().T * y.as_explicit())[0, 0]
    explicit = sympy.Matrix(2, 3, lambda i, j: sympy.diff(loss, W2[i, j]))
    assert sympy.simplify(gradient.as_explicit() - explicit) == sympy.zeros(2, 3)
