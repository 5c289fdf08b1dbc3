"""Memoised `doit` while a model is traced and derived: SymPy's `.doit()` walks a whole expression tree, and the VJP rules call
it on every gradient they build, which holds the forward values it multiplies. In a Transformer block a forward value
(a layer norm of X, an attention head) appears in many places, so the trees are exponentially larger than the graph
of distinct nodes: deriving one block did not finish in 15 minutes. `doit` is a pure function of an immutable
expression, so while `memoised_doit()` is active each distinct node is simplified once (the graph, not the tree).
"""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager

_lock = threading.RLock()


def _classes() -> list:
    import sympy
    from sympy.matrices.expressions import hadamard, matadd, matmul, matpow, special, transpose

    candidates = [sympy.Basic, matmul.MatMul, matadd.MatAdd, hadamard.HadamardProduct, hadamard.HadamardPower,
                  transpose.Transpose, matpow.MatPow, special.ZeroMatrix, special.OneMatrix, special.Identity]
    return [c for c in candidates if "doit" in c.__dict__]


@contextmanager
def memoised_doit():
    """Within the block, `expr.doit(**hints)` of a SymPy object is computed once per distinct (expr, hints)."""
    with _lock:
        memo: dict = {}
        saved = {cls: cls.__dict__["doit"] for cls in _classes()}

        def wrap(cls, original):
            @functools.wraps(original)
            def doit(self, **hints):
                key = (type(self), self, tuple(sorted(hints.items())))
                try:
                    return memo[key]
                except KeyError:
                    result = memo[key] = original(self, **hints)
                    return result
                except TypeError:  # an unhashable hint
                    return original(self, **hints)

            return doit

        for cls, original in saved.items():
            setattr(cls, "doit", wrap(cls, original))
        from . import broadcast

        plain = broadcast.without_scalar_factors
        broadcast.without_scalar_factors = functools.lru_cache(maxsize=None)(plain)  # it recurses by this name
        try:
            yield
        finally:
            broadcast.without_scalar_factors = plain
            for cls, original in saved.items():
                setattr(cls, "doit", original)
