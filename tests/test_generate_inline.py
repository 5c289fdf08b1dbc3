"""Pasting generated kernels into their callers (flux.generate.inline): the result runs as the calls did."""
import pytest

from flux.generate.inline import inline_calls, paste_kernels

SCALE = '''def scale(x, out, k):
    """out ← k·x"""
    N = x.shape[0]
    for n in range(N):  # N rows
        out[n] = k * x[n]
'''

SUMS = '''def sums(a, b):
    """a + b, a − b"""
    total = a + b
    return total, a - b
'''

DRIVER = '''def driver(xs, l0·k):
    """the caller"""
    N = 5
    outs = xs * 0
    for t in range(2):
        scale(xs[t], outs[t], l0·k)
    s, d = sums(xs, N)
    return outs, s, d, N
'''


def run(source: str, name: str, *arguments):
    import numpy as np

    space = {"np": np}
    exec(source, space)  # noqa: S102 (our own generated text)
    return space[name](*arguments)


def test_pasted_code_computes_what_the_calls_did():
    import numpy as np

    xs = np.arange(6.0).reshape(2, 3)
    expected = run(SCALE + SUMS + DRIVER, "driver", xs, 3.0)
    (pasted,) = paste_kernels([SCALE, SUMS, DRIVER], {"scale", "sums"})
    assert "scale(" not in pasted and "sums(" not in pasted
    assert "# scale: out ← k·x" in pasted and "# N rows" in pasted  # the maths and comments stay
    for got, want in zip(run(pasted, "driver", xs, 3.0), expected):
        np.testing.assert_array_equal(got, want)  # the caller's N is not the callee's


def test_locals_are_renamed_apart_and_arguments_bound_once():
    pasted = inline_calls(DRIVER, {"scale": SCALE})
    assert "scale_x_ = xs[t]" in pasted and "scale_out_ = outs[t]" in pasted  # an expression: bound once
    assert "l0·k * scale_x_[scale_n_]" in pasted  # a plain name (a sub-model's l0·k too) is used as it is
    assert "for scale_n_ in range(scale_N_):" in pasted


def test_a_kernel_still_called_inside_an_expression_is_kept():
    caller = "def f(a):\n    return sums(a, a)[0] + 1\n"
    assert paste_kernels([SUMS, caller], {"sums"}) == [SUMS, caller]


def test_what_cannot_be_pasted_is_refused():
    early = "def g(a):\n    if a:\n        return 1\n    return 2\n"
    with pytest.raises(ValueError, match="return before"):
        inline_calls("def f(a):\n    x = g(a)\n", {"g": early})
    keyword = "def g(a):\n    order = 1\n    return np.array(a, order='C')\n"
    with pytest.raises(ValueError, match="keyword"):
        inline_calls("def f(a):\n    x = g(a)\n", {"g": keyword})
