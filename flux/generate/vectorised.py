"""The NumPy printer: SymPy matrix expressions → one plain-Python function of whole-array NumPy operations.

The sibling of the numba printer (`flux.generate.printer`): `vector_kernel_source` takes the same `Argument`s and
`Result`s as `generate_kernel_source`, and its functions take and return exactly what the numba kernels do:

    a batched vector (k entries per sample)   (N, k)        W·x → x @ W.T: one GEMM, the batch stays in rows
    a parameter vector / a scalar             (k,) / (1,)   broadcast over the batch by NumPy
    a parameter matrix                        (m, n)

Each node is one NumPy expression (`_code_<Node>`); a node read more than once, or made by statements (products,
softmax, slices, blocks), is held in a temporary. A constant (1, 0, s·1) stays a broadcastable scalar inside
expressions and is broadcast to its full shape only where an array is needed (`materialise`). Parameter gradients
are per-sample expressions summed over the batch: Σₙ δₙ xₙᵀ becomes δᵀX, as in the numba printer.
"""
from __future__ import annotations

from collections import Counter

import sympy
from sympy import HadamardPower, HadamardProduct, Identity, MatAdd, MatMul, OneMatrix, Transpose, ZeroMatrix
from sympy.matrices.expressions.matexpr import MatrixExpr
from sympy.printing.pycode import pycode

from .forms import INDENT, CodegenError, describe, form, is_scalar
from .sizes import size_code, size_codes
from .vector_batch_sums import VectorBatchSums
from .vector_functions import apply_code, uses_argument_twice
from ..maths.graph import Dependence, matrix_children, topological_order
from ..maths.nodes import Apply, Spread

ELEMENTWISE = (MatAdd, HadamardProduct, HadamardPower, Apply, Spread, OneMatrix, ZeroMatrix, Identity, Transpose)


def vector_kernel_source(name: str, arguments: list, results: list, doc: str = "", *,
                         extra_arguments: list[str] = (), epilogue: list[str] = (), per_step: bool = False) -> str:
    """The source of `def name(arguments…, extra_arguments…)` computing `results` with whole-array NumPy (see
    `flux.generate.printer.Result` for the modes). `per_step` (a recurrent cell's kernel) changes nothing here: every
    product is one np.dot call whatever its size."""
    return VectorWriter(arguments, results).write(name, doc, list(extra_arguments), list(epilogue))


class VectorWriter(VectorBatchSums):
    """Writes one function: each result's expression, its shared nodes held in temporaries."""

    def __init__(self, arguments: list, results: list):
        self.arguments, self.results = arguments, results
        self.batched = Dependence(a.symbol for a in arguments if a.batched)
        self.arrays: dict = {a.symbol: a.name for a in arguments}  # node → a name holding its array
        self.narrow: dict = {}  # node → its covers() when its held array is narrower (a spread c·1 kept as (N, 1))
        self.fresh: set = set()  # names of arrays made here (never views of arguments)
        self.sizes = size_codes(arguments)
        self.batch = next((f"{a.name}.shape[0]" for a in arguments if a.batched), "1")
        self.lines: list[str] = []
        self.temporaries = 0
        self.uses = Counter()
        for node in topological_order([r.expr for r in results]):
            for child in matrix_children(node):
                self.uses[child] += 1
        for result in results:  # a result read by another is used twice
            self.uses[result.expr] += 1

    # ---- the function ---------------------------------------------------------------------------------

    def write(self, name: str, doc: str, extra_arguments: list, epilogue: list) -> str:
        returned, unwritten = [], set()
        for result in self.results:
            if result.mode in ("accumulate", "assign"):
                if result.mode == "assign":
                    unwritten.add(result.into)
                self.batch_sum(result.expr, result.into, sympy.S.One, unwritten)
                if result.into in unwritten:  # nothing was summed into it: 0
                    self.add_into(result.into, "real(0)", unwritten)
            elif result.mode == "write":
                self.emit(f"{result.into}[...] = {self.materialise(result.expr)}")
                self.arrays.setdefault(result.expr, result.into)
            elif result.mode == "mean":
                self.emit(f"{result.name} = np.sum({self.materialise(result.expr)}) / N")
                returned.append(result.name)
            else:
                if self.batched(result.expr) and form(result.expr) == "mat":
                    raise CodegenError(f"a per-sample matrix cannot be a batched result: {result.expr}")
                code = self.materialise(result.expr)
                returned.append(f"np.array({code}, order='C')" if self.is_view(code) else code)
        lines = [f"N = {self.batch}"] + self.lines + list(epilogue)
        arguments = ", ".join([a.name for a in self.arguments] + list(extra_arguments))
        doc_line = f'{INDENT}"""{doc}"""\n' if doc else ""
        body = "\n".join(INDENT + line for line in lines)
        end = f"{INDENT}return {', '.join(returned)}{',' if len(returned) == 1 else ''}\n" \
            if returned and not epilogue else ""
        return f"def {name}({arguments}):\n{doc_line}{body}\n{end}"

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def temporary(self, code: str, fresh: bool = True) -> str:
        """A new name for `code`'s value; `fresh`: a new array, never a view of an argument."""
        self.temporaries += 1
        name = f"t{self.temporaries}"
        self.emit(f"{name} = {code}")
        if fresh:
            self.fresh.add(name)
        return name

    def is_view(self, code: str) -> bool:
        """Whether `code` may be an argument, a view of one or a broadcast (a result is then copied)."""
        return (code.isidentifier() and code not in self.fresh) or code.endswith(".T") or \
            code.startswith("np.broadcast_to(")

    # ---- sizes and numbers ----------------------------------------------------------------------------

    def size(self, dim) -> str:
        return size_code(dim, self.sizes)

    def number(self, value) -> str:
        """A constant in the function's float type (π, √2, 1/k with k a size read off the arrays)."""
        value = sympy.sympify(value)
        if value.is_Integer:
            return f"real({int(value)})"
        if value.free_symbols:
            missing = [s for s in value.free_symbols if s not in self.sizes]
            if missing:
                raise CodegenError(f"no argument array has the dimension {missing[0]}")
            return f"real({pycode(value.xreplace({s: sympy.Symbol(self.sizes[s]) for s in value.free_symbols}))})"
        return f"real({float(value)!r})"

    def layout(self, node: MatrixExpr, batched: bool | None = None) -> str:
        """The shape of the array holding `node`: (N, k) batched, (m, n) a matrix, (k,) otherwise."""
        rows, cols = node.shape
        if self.batched(node) if batched is None else batched:
            return f"(N, {self.size(rows * cols)})"
        if form(node) == "mat":
            return f"({self.size(rows)}, {self.size(cols)})"
        return f"({self.size(rows * cols)},)"

    # ---- nodes: full arrays and broadcastable expressions ------------------------------------------------

    def materialise(self, node: MatrixExpr, batched: bool = False) -> str:
        """A name or expression whose value is the node's full array (with `batched`, (N, k) even for a node
        that is the same for every sample)."""
        code = self.code(node)
        batch, entries = self.covers(node)
        if not entries or not batch or (batched and not self.batched(node)):
            return f"np.broadcast_to({code}, {self.layout(node, batched or None)})"
        return code

    def covers(self, node: MatrixExpr) -> tuple[bool, bool]:
        """Whether the node's expression spans the batch axis (when it is batched) and all its entries; a
        constant (real(1)) or a spread scalar spans neither and is broadcast by whatever reads it."""
        if node in self.narrow:
            return self.narrow[node]
        if node in self.arrays or not isinstance(node, ELEMENTWISE + (MatMul,)):
            return True, True
        if isinstance(node, MatMul) and not self.elementwise_product(node):
            return True, True
        if isinstance(node, (OneMatrix, ZeroMatrix)):
            return True, False
        if isinstance(node, Identity):
            return True, form(node) == "mat"
        if isinstance(node, Spread):
            batch, entries = self.covers(node.argument)
            return batch, entries and node.shape[0] == 1
        if isinstance(node, Transpose):
            return self.covers(node.arg)
        children = matrix_children(node)
        batch = not self.batched(node) or any(self.batched(c) and self.covers(c)[0] for c in children)
        entries = any(self.covers(c)[1] and c.shape[0] * c.shape[1] == node.shape[0] * node.shape[1]
                      and (form(c) != "mat" or c.shape == node.shape) for c in children)
        return batch, entries

    def code(self, node: MatrixExpr) -> str:
        """An expression for the node (a name if it is held in an array)."""
        if node in self.arrays:
            return self.arrays[node]
        method = getattr(self, f"_code_{type(node).__name__}", None)
        if method is None:
            raise CodegenError(f"flux's NumPy printer has no code for {type(node).__name__} nodes (in {node})")
        code = method(node)
        statement = not isinstance(node, ELEMENTWISE) and not (isinstance(node, MatMul) and self.elementwise_product(node))
        if node in self.arrays:  # the method stored it itself
            return self.arrays[node]
        if (self.uses[node] > 1 or statement) and not isinstance(node, (OneMatrix, ZeroMatrix, Transpose)):
            if self.covers(node) != (True, True):  # held as broadcastable: a product reading it spreads it
                self.narrow[node] = self.covers(node)
            if not code.isidentifier():
                code = self.temporary(code, fresh=not self.is_view(code))
            self.arrays[node] = code
        return code

    def elementwise_product(self, node: MatMul) -> bool:
        """A product with at most one factor that is not (1, 1): a broadcast, not a GEMM."""
        return len([f for f in node.as_coeff_matrices()[1] if not is_scalar(f)]) <= 1

    # ---- elementwise nodes --------------------------------------------------------------------------

    def _code_MatAdd(self, node):
        terms = sorted((self.code(t) for t in node.args), key=lambda term: term.startswith("-"))
        code = terms[0]
        for term in terms[1:]:
            code += f" - {term[1:]}" if term.startswith("-") and term[1:].startswith("(") else f" + {term}"
        return f"({code})"

    def _code_HadamardProduct(self, node):
        return f"({' * '.join(self.code(a) for a in node.args)})"

    def _code_HadamardPower(self, node):
        base, power = node.args
        code = self.code(base)
        power = sympy.sympify(power)
        if power == -1:
            return f"(real(1) / {code})"
        if power == sympy.S.Half:
            return f"np.sqrt({code})"
        if power == -sympy.S.Half:
            return f"(real(1) / np.sqrt({code}))"
        if power.is_Integer:
            return f"({code} ** {int(power)})"
        return f"({code} ** {self.number(power)})"

    def _code_Apply(self, node):
        argument = self.code(node.argument)
        if not argument.isidentifier() and uses_argument_twice(node.function):
            argument = self.temporary(argument)
        return apply_code(node.function, argument)

    def _code_Spread(self, node):
        return self.code(node.argument)

    def _code_Transpose(self, node):
        if form(node) == "mat":
            return f"{self.code(node.arg)}.T"
        return self.code(node.arg)

    def _code_OneMatrix(self, node):
        return "real(1)"

    def _code_ZeroMatrix(self, node):
        return "real(0)"

    def _code_Identity(self, node):
        return f"np.eye({self.size(node.shape[0])}, dtype=real)" if form(node) == "mat" else "real(1)"

    # ---- products ---------------------------------------------------------------------------------------

    def _code_MatMul(self, node):
        coefficient, factors = node.as_coeff_matrices()
        scalars = [self.code(f) for f in factors if is_scalar(f)]
        matrices = [f for f in factors if not is_scalar(f)]
        if coefficient != 1:
            scalars.insert(0, "-1" if coefficient == -1 else self.number(coefficient))
        if len(matrices) <= 1:
            parts = scalars + [self.code(m) for m in matrices]
            if parts and parts[0] == "-1":
                return f"-({' * '.join(parts[1:])})" if len(parts) > 1 else "real(-1)"
            return f"({' * '.join(parts)})"
        if self.batched(matrices[-1]) and form(matrices[-1]) == "col":
            product = matrices[-1]
            code = self.materialise(product)
            for left in reversed(matrices[:-1]):  # U·(…·x): applied from the right, the batch stays in rows
                code = self.product(left, self.materialise(left), product, code)
                product = MatMul(left, product)
        else:
            product = matrices[0]
            code = self.materialise(product)
            for right in matrices[1:]:
                code = self.product(product, code, right, self.materialise(right))
                product = MatMul(product, right)
        if not scalars:
            return code
        if scalars[0] == "-1":
            return f"-({' * '.join(scalars[1:] + [code])})"
        return f"({' * '.join(scalars + [code])})"

    def product(self, left, left_code: str, right, right_code: str) -> str:
        """Code for left·right, both non-scalar, in the array layout (batched vectors as (N, k) rows)."""
        batched_left, batched_right = self.batched(left), self.batched(right)
        forms = (form(left), form(right))
        if batched_left and batched_right:
            if forms == ("row", "col"):
                return self.temporary(f"np.sum({left_code} * {right_code}, axis=1, keepdims=True)")
        elif batched_right:
            if forms[1] == "col":
                if forms[0] == "row":
                    return self.temporary(f"({right_code} @ {left_code})[:, None]")
                transposed = self.materialise(left.arg) if isinstance(left, Transpose) else f"{left_code}.T"
                return self.temporary(f"{right_code} @ {transposed}")
        elif batched_left:
            if forms[0] == "row":
                return self.temporary(f"({left_code} @ {right_code})" + ("[:, None]" if forms[1] == "col" else ""))
        elif forms == ("col", "row"):
            return self.temporary(f"np.outer({left_code}, {right_code})")
        elif forms == ("row", "col"):
            return self.temporary(f"np.dot({left_code}, {right_code}).reshape(1)")
        else:
            return self.temporary(f"{left_code} @ {right_code}")
        raise CodegenError(f"a per-sample matrix product is not supported: {left} * {right}")

    # ---- statements -------------------------------------------------------------------------------------

    def _code_MatPow(self, node):  # Wᵖ of a parameter matrix (p a positive integer)
        return self.temporary(f"np.linalg.matrix_power({self.code(node.args[0])}, {int(node.args[1])})")

    def _code_Total(self, node):
        return f"np.sum({self.materialise(node.argument)}, axis=-1, keepdims=True)"

    def _code_Softmax(self, node):
        z = self.materialise(node.argument)
        e = self.temporary(f"np.exp({z} - np.max({z}, axis=-1, keepdims=True))")
        return f"{e} / np.sum({e}, axis=-1, keepdims=True)"

    def _code_LogSumExp(self, node):
        z = self.materialise(node.argument)
        shift = self.temporary(f"np.max({z}, axis=-1, keepdims=True)")
        return f"{shift} + np.log(np.sum(np.exp({z} - {shift}), axis=-1, keepdims=True))"

    def _code_MatrixSlice(self, node):
        parent, (start, stop, _), (column_start, column_stop, _) = node.args
        array, batched = self.materialise(parent), self.batched(parent)
        available = f"{array}.shape[{1 if batched else 0}]"
        message = f"the slice {describe(node)} reaches past the end of its vector"
        self.emit(f"if {available} < {self.size(stop)}:")
        self.emit(f"{INDENT}raise ValueError({message!r})")  # a Python literal, whatever the maths' text holds
        rows = f"int({self.size(start)}):int({self.size(stop)})"  # k/2 is a float in Python; whole (check_whole_slices)
        if batched:
            code = f"{array}[:, {rows}]"
        elif form(parent) == "mat":
            code = f"{array}[{rows}, int({self.size(column_start)}):int({self.size(column_stop)})]"
            code += "[0]" if form(node) == "row" else ""  # one row of W is a row vector, 1-D as bᵀ is
        else:
            code = f"{array}[{rows}]"
        name = self.temporary(code, fresh=False)
        self.arrays[node] = name  # a view: copied if it is returned (see `write`)
        return name

    def _code_BlockMatrix(self, node):
        batched = self.batched(node)
        blocks = [f"np.zeros({self.layout(b, batched)}, dtype=real)" if isinstance(b, ZeroMatrix)
                  else self.materialise(b, batched) for b in node.blocks]
        return f"np.concatenate(({', '.join(blocks)},), axis=-1)"
