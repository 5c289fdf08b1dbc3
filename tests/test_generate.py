"""The generators: one module template (imports read off the printed code), kernels, names."""
import numpy as np

from flux import cache
from flux.generate.module import imports_for, module_source


def test_imports_are_read_off_the_printed_code():
    assert imports_for("real(1)") == "import numpy as np"
    code = "@njit\ndef f(a):\n    return math.sqrt(fast_exp(a)) + all_finite(a)"
    assert imports_for(code) == ("import math\n\nimport numpy as np\nfrom numba import njit\n\n"
                                 "from flux.fastmath import all_finite, fast_exp")
    assert "import math" not in imports_for('"""the maths."""\nx = np.e')  # `maths.` is not `math.`
    assert imports_for("@njit\ndef f(a, b, c):\n    dot_into(a, b, c)\n    return np.dot(a, b)").endswith(
        "from flux.products import dot_into")  # np.dot is NumPy's own, not flux.products.dot


def test_every_module_has_the_markers_the_cache_checks():
    text = module_source("k1", "doc", np.dtype(np.float32), metadata={"model": "M"},
                         helpers=["def h():\n    return None\n"], kernels=["def k(a):\n    return np.tanh(a)\n"])
    assert text.startswith(f"{cache.KEY_LINE}k1\n") and text.rstrip().endswith(cache.END)
    assert '@njit(cache=True, nogil=True, error_model="numpy")\ndef k(a):' in text
    namespace = {}
    exec(compile(text.replace("@njit(", "@(lambda **options: lambda f: f)("), "<generated>", "exec"), namespace)
    assert namespace["METADATA"] == {"model": "M"} and namespace["real"] is np.float32
    assert namespace["k"](np.float32(0.0)) == 0.0 and namespace["h"]() is None


def test_a_dimension_becomes_code_in_one_place():
    import sympy

    from flux.generate.printer import Argument
    from flux.generate.sizes import dimension_code, size_codes

    h, n = sympy.symbols("h n")
    W, x = sympy.MatrixSymbol("W", h, n), sympy.MatrixSymbol("x", n, 1)
    sources = size_codes([Argument(x, "x", True), Argument(W, "W", False)])
    assert sources == {n: "x.shape[1]", h: "W.shape[0]"}
    assert dimension_code(2 * h + n, sources) in ("2*W.shape[0] + x.shape[1]", "x.shape[1] + 2*W.shape[0]")
    assert dimension_code(3, sources) == "3" and dimension_code(sympy.Symbol("k"), sources) is None


def test_contiguous_transposes_rewrite_only_parameter_times_sample():
    import sympy

    from flux.derive.simplify import contiguous_transposes
    from flux.maths.graph import Dependence

    h, n = sympy.symbols("h n")
    W, U = sympy.MatrixSymbol("W", h, n), sympy.MatrixSymbol("U", h, h)
    x, b = sympy.MatrixSymbol("x", n, 1), sympy.MatrixSymbol("b", h, 1)
    expr = W * x + U * b
    rewritten, copies = contiguous_transposes(expr, {W: "W_T", U: "U_T"}, Dependence([x]))
    assert list(copies) == [W] and copies[W].name == "W_T" and copies[W].shape == (n, h)
    assert rewritten == sympy.Transpose(copies[W]) * x + U * b  # U·b reads no sample: left alone
    assert rewritten.subs(copies[W], W.T).doit() == expr


def test_the_drivers_are_printed_from_a_frozen_plan():
    import dataclasses

    import flux
    from flux.generate.recurrent import CellWriter
    from flux.generate.printer import Argument
    from flux.generate.names import identifier
    from flux.derive.recurrence import split_cell
    from flux.generate.drivers import backward_driver, forward_driver
    from flux.pipeline import derivation_of

    cell = split_cell(derivation_of(flux.LSTM(3, 4, rng=0)))
    params = [Argument(p, identifier(name), False) for name, p in cell.params.items()]
    inputs = [Argument(x, identifier(x.name), True) for x in cell.inputs]
    kernels, plan = CellWriter(cell, params, inputs).kernels()
    assert any(k.startswith("def cell_forward(") for k in kernels)
    assert any(k.startswith("def cell_backward(") for k in kernels)
    before = dataclasses.asdict(plan)
    texts = forward_driver(plan), backward_driver(plan)
    assert dataclasses.asdict(plan) == before and (forward_driver(plan), backward_driver(plan)) == texts
    try:
        plan.kept = []
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("the plan is frozen")


def test_one_pair_builder_for_feed_forward_models_and_row_kernels():
    import flux
    from flux.generate.kernel_pair import kernel_pair
    from flux.generate.printer import Argument
    from flux.pipeline import derivation_of

    derivation = derivation_of(flux.Dense(3, 2, "tanh", rng=0))
    params = [Argument(p, name, False) for name, p in derivation.params.items()]
    inputs = [Argument(x, "x", True) for x in derivation.inputs]
    pair = kernel_pair(derivation, ("f", "b"), inputs, params, ["y"], "kept", ("", "its VJP"))
    assert pair.forward.startswith("def f(x, W, b):") and pair.outputs == ["y"] and pair.kept == []
    assert pair.outputs_read == ["y"]  # tanh′ = 1 − y²: backward reads the output, not z
    assert pair.backward.startswith("def b(Δ, x, W, b, y, grad_W, grad_b):") and pair.leaf_gradients == [0]


def test_the_shared_product_helpers_compute_what_numpy_does():
    from flux.products import add_into, copy_into, dot, dot_into

    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(dot(a, b.T), a @ b.T, rtol=1e-14)
    out = np.empty((4, 4))
    dot_into(a.T, a, out)
    np.testing.assert_allclose(out, a.T @ a, rtol=1e-14)
    total = np.ones((5, 3))
    add_into(total, a @ b.T, 0.5)
    np.testing.assert_allclose(total, 1 + 0.5 * (a @ b.T), rtol=1e-14)
    copy_into(total[1], b[:, 0])
    np.testing.assert_array_equal(total[1], b[:, 0])


def test_generated_kernels_leave_the_costly_numpy_calls_to_compiled_helpers():
    """What costs numba seconds per module (np.dot re-typed, np.max/np.sum reductions, array statements that pull
    in the shape-error formatter) is printed as calls of flux.products' cached helpers or as plain loops."""
    import re

    import flux

    import inspect

    dense = flux.Chain(flux.Dense(4, 3, flux.relu), flux.Dense(3, 2))
    step = flux.compile_step(dense, flux.logitcrossentropy, flux.Adam())
    sources = [dense.kernels.source, flux.LSTM(2, 3).kernels.source, inspect.getsource(step.module)]
    for source in sources:
        assert not re.search(r"np\.(dot|max|sum|isfinite)\(", source), source
        # an array statement (h_seq[0] = h_initial, Δ += from_seq[t]); a name bound to a view (a pasted kernel's
        # argument: cell_forward_x_ = x_seq[t]) is no array statement
        assert not re.search(r"^\s+\w+(\[0\] | \+)= \w+_(initial|seq\[t\])$", source, re.M), source
    assert "dot(" in sources[0] and "copy_into(" in sources[1] and "add_into(" in sources[1]


def test_an_expression_returned_twice_is_two_outputs():
    """`return W·x, W·x` (and the same for tokens) generated a backward with a duplicate argument (a module that
    did not load); each output is now its own argument, and ∂L/∂x sums both upstream gradients."""
    import flux

    rng = np.random.default_rng(5)

    class Twice(flux.Model):
        W = flux.param("k", "d")

        def forward(self, x):
            return self.W * x, self.W * x

    class TwiceTokens(flux.Model):
        W = flux.param("k", "d")
        X = flux.tokens("d")

        def forward(self, X):
            return self.W * X, self.W * X

    for model_class, shape in ((Twice, (4, 3)), (TwiceTokens, (2, 4, 3))):
        model = model_class(W=rng.normal(size=(2, 3)), dtype=np.float64)
        x = rng.normal(size=shape)
        W = model.params["W"]
        y1, y2 = model(x)
        np.testing.assert_allclose(y1, x @ W.T, rtol=1e-12)
        np.testing.assert_allclose(y2, x @ W.T, rtol=1e-12)
        d1, d2 = rng.normal(size=y1.shape), rng.normal(size=y1.shape)
        np.testing.assert_allclose(model.back((d1, d2)), (d1 + d2) @ W, rtol=1e-12)
        expected = ((d1 + d2).reshape(-1, 2).T @ x.reshape(-1, 3))
        np.testing.assert_allclose(model.grads["W"], expected, rtol=1e-12)
