"""The one place a dimension becomes code: where each symbolic size is read from, and a size expression as text.

    size_codes([W (h×n), x (batched n)]) → {h: "W.shape[0]", n: "W.shape[1]"}
    dimension_code(2·h, {h: "W.shape[0]"}) → "2*W.shape[0]"

Batched arrays hold one sample per row (a batched vector of k entries is (N, k)), so their feature size is axis 1.
"""
from __future__ import annotations

import sympy


def size_codes(arguments: list) -> dict[sympy.Symbol, str]:
    """Where a kernel reads each symbolic dimension from: the first argument array that has it."""
    sizes: dict[sympy.Symbol, str] = {}
    for a in arguments:
        rows, cols = a.symbol.shape
        if a.batched:
            axes = [(rows if cols == 1 else cols, 1)]
        elif cols == 1 or rows == 1:
            axes = [(rows if cols == 1 else cols, 0)]
        else:
            axes = [(rows, 0), (cols, 1)]
        for dim, axis in axes:
            if isinstance(dim, sympy.Symbol) and dim not in sizes:
                sizes[dim] = f"{a.name}.shape[{axis}]"
    return sizes


def dimension_code(dim, sources: dict) -> str | None:
    """Code for a dimension (a number or an expression in size symbols), or None when a symbol has no source."""
    dim = sympy.sympify(dim)
    if dim.is_Integer:
        return str(dim)
    if not all(s in sources for s in dim.free_symbols):
        return None
    return str(dim.xreplace({s: sympy.Symbol(sources[s]) for s in dim.free_symbols}))


def size_code(dim, sources: dict) -> str:
    """Code for a dimension read off the argument arrays, parenthesised unless one number or one size; a dimension
    no argument has is a CodegenError."""
    from .forms import CodegenError

    dim = sympy.sympify(dim)
    code = dimension_code(dim, sources)
    if code is None:
        raise CodegenError(f"no argument array has the dimension {dim}")
    return code if dim.is_Symbol or dim.is_Integer else f"({code})"


def sizes_function(name: str, doc: str, arguments: list, dims: list, sources: dict) -> str:
    """Plain Python `def name(arguments): return (size of each dim, None where the arguments do not fix it)`."""
    codes = [dimension_code(dim, sources) or "None" for dim in dims]
    return "\n".join([f"def {name}({', '.join(arguments)}):", f'    """{doc}"""',
                      f"    return ({', '.join(codes)}{',' if len(codes) == 1 else ''})"])
