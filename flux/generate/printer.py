"""The numba printer: SymPy matrix expressions → the source of one numba kernel.

The maths is per sample; the kernel works on batches. A batched column (or row) vector of k entries is an
(N, k) array, one sample per row; parameters are plain arrays (1-D for vectors, 2-D for matrices). Matrix
products go to BLAS through `np.dot`; runs of elementwise operations over the same shape are fused into one
loop whose intermediates live in scalars; a node is written to an array only when something needs the array
(BLAS, a reduction, a second use, or a result). Parameter gradients are per-sample expressions summed over the
batch: Σₙ δₙ xₙᵀ becomes one GEMM, δᵀX.

Each node type has one `_element_<Node>` method (its scalar code at a loop index) or one `_statement_<Node>`
method (statements that fill an array), mirroring the LaTeX printer in `display.py`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import sympy
from sympy import (
    HadamardPower, HadamardProduct, Identity, MatAdd, MatMul, MatrixSymbol, OneMatrix, Transpose, ZeroMatrix,
)
from sympy.matrices.expressions.matexpr import MatrixExpr

from .sizes import dimension_code, size_codes
from ..maths.graph import Dependence, matrix_children, topological_order
from ..maths.elementwise import FUNCTIONS
from ..maths.nodes import Apply, Spread


@dataclass(frozen=True)
class Argument:
    """A kernel argument: a leaf symbol of the maths and the array that holds it."""

    symbol: MatrixSymbol
    name: str
    batched: bool


@dataclass(frozen=True)
class Result:
    """What a kernel produces from `expr`.

    mode "new": a new array, returned; "accumulate": Σ over the batch added into the argument `into`;
    "assign": Σ over the batch written into `into` (its old contents ignored); "write": the array computed
    straight into the argument `into` (e.g. a slice of a caller's buffer), nothing returned;
    "mean": the batch mean of a per-sample (1, 1) value, returned as a number.
    """

    name: str
    expr: MatrixExpr
    mode: str = "new"
    into: str | None = None


class CodegenError(TypeError):
    """The maths cannot be turned into a batched kernel (e.g. a per-sample matrix outside a gradient)."""


ELEMENTWISE = (MatAdd, HadamardProduct, HadamardPower, Apply, Spread, OneMatrix, ZeroMatrix, Identity, Transpose)
INDENT = "    "


def generate_kernel_source(name: str, arguments: list[Argument], results: list[Result], doc: str = "", *,
                           extra_arguments: list[str] = (), prologue: list[str] = (), epilogue: list[str] = ()) -> str:
    """The source of `def name(arguments…, extra_arguments…)`, computing `results` (see `Result`).

    `prologue` lines run first; `epilogue` lines run after the results are computed and, when given, end the
    function themselves (they must return).
    """
    writer = KernelWriter(arguments, results)
    writer.blocks.extend(prologue)
    return writer.write(name, doc, list(extra_arguments), list(epilogue))


class KernelWriter:
    """Writes one kernel: plans which nodes become arrays, then prints statements in dependency order."""

    def __init__(self, arguments: list[Argument], results: list[Result]):
        self.arguments = arguments
        self.results = results
        self.batched = Dependence(a.symbol for a in arguments if a.batched)  # per sample: reads a batched argument
        self.arrays: dict[MatrixExpr, str] = {a.symbol: a.name for a in arguments}
        self.sizes = size_codes(arguments)
        self.batch = next((f"{a.name}.shape[0]" for a in arguments if a.batched), "1")
        self.blocks: list = []  # plain statement lines and fused `Loop`s, in order
        self.unwritten: set = set()  # "assign" targets no contribution has been written to yet
        self.targets: dict = {}  # node → the argument a "write" result puts it in (its loop fills it directly)
        for result in reversed(results):
            if result.mode == "write":
                self.targets[result.expr] = result.into
        self.temporaries = 0
        self.uses = Counter()
        for node in topological_order([r.expr for r in results]):
            for child in matrix_children(node):
                self.uses[child] += 1

    # ---- planning -------------------------------------------------------------------------------------

    def is_elementwise(self, node: MatrixExpr) -> bool:
        if isinstance(node, MatMul):  # a product with (1, 1) factors is a broadcast, not a GEMM
            return len([f for f in node.as_coeff_matrices()[1] if not is_scalar(f)]) <= 1
        if isinstance(node, Transpose):
            return form(node) != "mat" or not self.batched(node)
        return isinstance(node, ELEMENTWISE)

    def inlined(self, node: MatrixExpr) -> bool:
        """Computed inside its consumer's loop rather than stored."""
        if node in self.arrays or isinstance(node, MatrixSymbol) or node in self.targets:
            return False
        if isinstance(node, (OneMatrix, ZeroMatrix, Identity)):
            return True
        return self.is_elementwise(node) and self.uses[node] <= 1 and form(node) != "mat"

    # ---- writing --------------------------------------------------------------------------------------

    def write(self, name: str, doc: str, extra_arguments: list[str] = (), epilogue: list[str] = ()) -> str:
        arguments = ", ".join([a.name for a in self.arguments] + list(extra_arguments))
        self.blocks.insert(0, f"N = {self.batch}")
        returned = []
        for result in self.results:
            if result.mode in ("accumulate", "assign"):
                self.emit(f"# {result.into} {'+' if result.mode == 'accumulate' else ''}= Σₙ {describe(result.expr)}")
                if result.mode == "assign":
                    self.unwritten.add(result.into)
                self.batch_sum(result.expr, result.into, sympy.S.One)
                if result.into in self.unwritten:  # nothing contributed: the sum is zero
                    self.emit(f"{result.into}.fill(real(0))")
            elif result.mode == "write":
                array = self.array(result.expr)
                if array != result.into:  # computed elsewhere (BLAS, an argument, another target): copied in
                    self.emit(f"{result.into}[:] = {array}")
            elif result.mode == "mean":
                total = self.array(result.expr)
                self.emit(f"{result.name} = np.sum({total}) / N")
                returned.append(result.name)
            else:
                if self.batched(result.expr) and form(result.expr) == "mat":
                    raise CodegenError(f"a per-sample matrix cannot be a batched result: {result.expr}")
                array = self.array(result.expr)
                if isinstance(result.expr, MatrixSymbol) or array != self.arrays.get(result.expr):
                    array = f"{array}.copy()"  # never hand back an argument (or a view of one) as a result
                returned.append(array)
        self.blocks.extend(epilogue)
        lines = []
        for block in self.blocks:
            lines.extend(block.lines() if isinstance(block, Loop) else [block])
        body = "\n".join(INDENT + line for line in lines)
        doc_line = f'{INDENT}"""{doc}"""\n' if doc else ""
        ret = f"{INDENT}return {', '.join(returned)}{',' if len(returned) == 1 else ''}\n" if returned and not epilogue else ""
        return f"def {name}({arguments}):\n{doc_line}{body}\n{ret}"

    def emit(self, line: str) -> None:
        """Write a plain statement; it ends any fused loop before it."""
        self.blocks.append(line)

    @property
    def open_loop(self) -> Loop | None:
        return self.blocks[-1] if self.blocks and isinstance(self.blocks[-1], Loop) else None

    def temporary(self) -> str:
        self.temporaries += 1
        return f"t{self.temporaries}"

    def size(self, dim) -> str:
        """Code for a dimension, read from the argument arrays (parenthesised unless one number or one size)."""
        dim = sympy.sympify(dim)
        code = dimension_code(dim, self.sizes)
        if code is None:
            raise CodegenError(f"no argument array has the dimension {dim}")
        return code if dim.is_Symbol or dim.is_Integer else f"({code})"

    def number(self, value) -> str:
        """A scalar constant in the kernel's float type; sizes (1/k in a mean) are read from the arrays."""
        value = sympy.sympify(value)
        if value.free_symbols:
            return f"real({self.size(value)})"
        if value.is_Integer:
            return f"real({int(value)})"
        return f"real({float(value)!r})"

    def entries(self, node: MatrixExpr) -> str:
        """Entries per sample of a vector node (rows × cols with one of them 1)."""
        rows, cols = node.shape
        return self.size(rows * cols)

    def allocation(self, node: MatrixExpr) -> str:
        if self.batched(node):
            return f"np.empty((N, {self.entries(node)}), dtype=real)"
        if form(node) == "mat":
            return f"np.empty(({self.size(node.shape[0])}, {self.size(node.shape[1])}), dtype=real)"
        return f"np.empty({self.entries(node)}, dtype=real)"

    def array(self, node: MatrixExpr) -> str:
        """The name of an array holding `node`, writing the statements that fill it if needed."""
        if node in self.arrays:
            return self.arrays[node]
        if isinstance(node, Transpose) and not self.batched(node):
            return f"{self.array(node.arg)}.T" if form(node) == "mat" else self.array(node.arg)
        if isinstance(node, Transpose):
            return self.array(node.arg)
        if self.is_elementwise(node):
            name = self.elementwise_loop(node)
        else:
            method = getattr(self, f"_statement_{type(node).__name__}", None)
            if method is None:
                raise CodegenError(f"flux has no code for {type(node).__name__} nodes (in {node})")
            name = method(node)
        self.arrays[node] = name
        return name

    def space(self, node: MatrixExpr) -> tuple:
        """The loop nest an elementwise node is computed in."""
        if self.batched(node):
            return ("batch", "1" if is_scalar(node) else self.entries(node))
        if form(node) == "mat":
            return ("matrix", self.size(node.shape[0]), self.size(node.shape[1]))
        return ("vector", self.entries(node))

    def elementwise_loop(self, node: MatrixExpr) -> str:
        """Compute an elementwise node into a new array, inside the open loop when it runs over the same shape."""
        for child in matrix_children(node):  # arrays this loop reads are written before it
            self.prepare(child)
        space = self.space(node)
        loop = self.open_loop
        if loop is None or loop.space != space or space[0] == "matrix":
            loop = Loop(space)
            self.blocks.append(loop)
        name = self.targets.get(node) or self.temporary()
        if node not in self.targets:
            loop.allocations.append(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        index = loop_index(space)
        local = f"{name}_"
        loop.body.append(f"{local} = {self.expand(node, index)}")
        loop.body.append(f"{name}[{', '.join(index)}] = {local}")
        loop.locals[node] = local
        return name

    def prepare(self, node: MatrixExpr) -> None:
        """Make sure a node that will be read inside a loop is either inlinable or already an array."""
        if self.inlined(node):
            for child in matrix_children(node):
                self.prepare(child)
        elif node not in self.arrays:
            self.array(node)

    def element(self, node: MatrixExpr, index: tuple) -> str:
        """Scalar code for node[index] inside a loop."""
        if self.open_loop and node in self.open_loop.locals:
            return self.open_loop.locals[node]
        if node in self.arrays or not self.inlined(node):
            return self.read(node, index)
        return self.expand(node, index)

    def expand(self, node: MatrixExpr, index: tuple) -> str:
        """Scalar code for node[index] from its children's elements."""
        return getattr(self, f"_element_{type(node).__name__}")(node, index)

    def read(self, node: MatrixExpr, index: tuple) -> str:
        """Read an array-held node at a loop index, broadcasting scalars and bias vectors over the batch."""
        array = self.array(node)
        batched = self.batched(node)
        if form(node) == "mat" and not batched:
            return f"{array}[{index[0]}, {index[1]}]" if len(index) == 2 else f"{array}[0, 0]"
        if batched:
            return f"{array}[n, 0]" if is_scalar(node) else f"{array}[n, {index[-1]}]"
        return f"{array}[0]" if is_scalar(node) else f"{array}[{index[-1]}]"

    # ---- elementwise nodes: scalar code at an index -------------------------------------------------

    def _element_MatAdd(self, node, index):
        terms = [self.element(t, index) for t in node.args]
        terms.sort(key=lambda term: term.startswith("-"))  # 1 - y rather than -y + 1
        code = terms[0]
        for term in terms[1:]:
            code += f" - {term[1:]}" if term.startswith("-") else f" + {term}"
        return f"({code})"

    def _element_MatMul(self, node, index):
        coefficient, factors = node.as_coeff_matrices()
        scalar_index = ("n", "0") if self.batched(node) else ("0",)
        parts = [self.element(f, index if not is_scalar(f) else scalar_index) for f in factors]
        if coefficient == -1:
            return "-" + " * ".join(parts) if len(parts) == 1 else f"-({' * '.join(parts)})"
        if coefficient != 1:
            parts.insert(0, self.number(coefficient))
        return f"({' * '.join(parts)})"

    def _element_HadamardProduct(self, node, index):
        return f"({' * '.join(self.element(a, index) for a in node.args)})"

    def _element_HadamardPower(self, node, index):
        base, power = node.args
        code = self.element(base, index)
        if power == -1:
            return f"(real(1) / {code})"
        if sympy.sympify(power).is_Integer:
            return f"({code} ** {power})"
        return f"({code} ** {self.number(power)})"

    def _element_Apply(self, node, index):
        return FUNCTIONS[node.function].code.format(z=self.element(node.argument, index))

    def _element_Spread(self, node, index):
        return self.element(node.argument, ("n", "0") if self.batched(node) else ("0",))

    def _element_Transpose(self, node, index):
        if form(node) == "mat":
            return self.element(node.arg, tuple(reversed(index)))
        return self.element(node.arg, index)

    def _element_OneMatrix(self, node, index):
        return "real(1)"

    def _element_ZeroMatrix(self, node, index):
        return "real(0)"

    def _element_Identity(self, node, index):
        return "real(1)" if len(index) < 2 or index[0] == "n" else f"real({index[0]} == {index[1]})"

    # ---- statement nodes: arrays filled by BLAS, reductions and copies -------------------------------

    def _statement_MatMul(self, node):
        coefficient, factors = node.as_coeff_matrices()
        factors = [f for f in factors]
        if self.batched(factors[-1]) and form(factors[-1]) == "col":
            product = factors[-1]
            code = self.array(product)
            for left in reversed(factors[:-1]):  # U·(…·x): apply from the right, batch stays in rows
                code = self.product(left, product, code)
                product = MatMul(left, product)
        else:
            product = factors[0]
            code = self.array(product)
            for right in factors[1:]:
                code = self.product_left(product, code, right)
                product = MatMul(product, right)
        name = self.temporary()
        scale = "" if coefficient == 1 else f"{self.number(coefficient)} * "
        self.emit(f"{name} = {scale}{code}  # {describe(node, self.arrays)}")
        return name

    def product(self, left: MatrixExpr, right: MatrixExpr, right_code: str) -> str:
        """Code for left·right where right is a batched column held as (N, k)."""
        if self.batched(left):
            if form(left) == "row":  # row·col per sample: a dot product each
                return self.rowwise_dot(self.array(left), right_code)
            raise CodegenError(f"a per-sample matrix product is not supported: {left} * {right}")
        if form(left) == "row":
            return f"np.dot({right_code}, {self.array(left)}).reshape((N, 1))"
        return f"np.dot({right_code}, {self.transposed(left)})"

    def product_left(self, left: MatrixExpr, left_code: str, right: MatrixExpr) -> str:
        """Code for left·right, left held as an array (batched rows or unbatched)."""
        if self.batched(left) and self.batched(right):
            if form(left) == "row" and form(right) == "col":
                return self.rowwise_dot(left_code, self.array(right))
            raise CodegenError(f"a per-sample matrix product is not supported: {left} * {right}")
        if self.batched(right):
            return self.product(left, right, self.array(right))
        if self.batched(left) and form(right) == "col":
            return f"np.dot({left_code}, {self.array(right)}).reshape((N, 1))"
        if not self.batched(left) and form(left) == "col" and form(right) == "row":
            return f"np.outer({left_code}, {self.array(right)})"
        return f"np.dot({left_code}, {self.array(right)})"

    def transposed(self, node: MatrixExpr) -> str:
        return self.array(node.arg) if isinstance(node, Transpose) else f"{self.array(node)}.T"

    def rowwise_dot(self, a: str, b: str) -> str:
        name = self.temporary()
        self.emit(f"{name} = np.sum({a} * {b}, axis=1).reshape((N, 1))")
        return name

    def _statement_Total(self, node):
        argument = node.argument
        self.prepare(argument)
        name = self.temporary()
        self.emit(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        if self.batched(node):
            self.emit("for n in range(N):")
            self.emit(f"{INDENT}acc = real(0)")
            self.emit(f"{INDENT}for j in range({self.entries(argument)}):")
            self.emit(f"{INDENT * 2}acc += {self.element(argument, ('n', 'j'))}")
            self.emit(f"{INDENT}{name}[n, 0] = acc")
        else:
            self.emit(f"{name}[0] = np.sum({self.array(argument)})")
        return name

    def _statement_Softmax(self, node):
        z = self.array(node.argument)
        name = self.temporary()
        self.emit(f"{name} = np.empty_like({z})  # {describe(node, self.arrays)}, max-shifted")
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}shift = np.max({z}[n])")
        self.emit(f"{INDENT}acc = real(0)")
        self.emit(f"{INDENT}for j in range({z}.shape[1]):")
        self.emit(f"{INDENT * 2}{name}[n, j] = fast_exp({z}[n, j] - shift)")
        self.emit(f"{INDENT * 2}acc += {name}[n, j]")
        self.emit(f"{INDENT}for j in range({z}.shape[1]):")
        self.emit(f"{INDENT * 2}{name}[n, j] /= acc")
        return name

    def _statement_LogSumExp(self, node):
        z = self.array(node.argument)
        name = self.temporary()
        self.emit(f"{name} = np.empty((N, 1), dtype=real)  # {describe(node, self.arrays)}, max-shifted")
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}shift = np.max({z}[n])")
        self.emit(f"{INDENT}acc = real(0)")
        self.emit(f"{INDENT}for j in range({z}.shape[1]):")
        self.emit(f"{INDENT * 2}acc += fast_exp({z}[n, j] - shift)")
        self.emit(f"{INDENT}{name}[n, 0] = shift + np.log(acc)")
        return name

    def _statement_MatrixSlice(self, node):
        parent, (start, stop, _), _ = node.args
        array = self.array(parent)
        name = self.temporary()
        columns = f"{self.size(start)}:{self.size(stop)}"
        available = f"{array}.shape[{1 if self.batched(parent) else 0}]"
        self.emit(f"if {available} < {self.size(stop)}:")
        where = describe(node).replace("\\", "").replace('"', "'")
        self.emit(f'{INDENT}raise ValueError("the slice {where} reaches past the end of its vector")')
        self.emit(f"{name} = np.ascontiguousarray({array}[:, {columns}])" if self.batched(parent) else f"{name} = {array}[{columns}]")
        return name

    def _statement_BlockMatrix(self, node):
        name = self.temporary()
        blocks = [(b, None if isinstance(b, ZeroMatrix) else self.array(b)) for b in node.blocks]
        self.emit(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        offset = sympy.S.Zero
        for block, array in blocks:
            stop = offset + block.shape[0]
            span = f"{self.size(offset)}:{self.size(stop)}"
            target = f"{name}[:, {span}]" if self.batched(node) else f"{name}[{span}]"
            if array is None:
                self.emit(f"{target} = real(0)")
            elif self.batched(node) and not self.batched(block):
                self.emit(f"{target} = {array}")
            else:
                self.emit(f"{target} = {array}")
            offset = stop
        return name

    # ---- sums over the batch (parameter gradients) ---------------------------------------------------

    def batch_sum(self, expr: MatrixExpr, into: str, coefficient) -> None:
        """into += coefficient · Σₙ expr(sample n)."""
        expr = expr.doit() if isinstance(expr, Transpose) else expr
        if isinstance(expr, ZeroMatrix):
            return
        if isinstance(expr, MatAdd):
            for term in expr.args:
                self.batch_sum(term, into, coefficient)
            return
        if isinstance(expr, MatMul):
            c, factors = expr.as_coeff_matrices()
            if len(factors) == 1:
                return self.batch_sum(factors[0], into, coefficient * c)
            if not self.is_elementwise(expr):
                return self.batch_sum_product(list(factors), into, coefficient * c)
        if not self.batched(expr):
            value = self.array(expr)
            self.start_writing(into)
            self.emit(f"{into} += {self.number(coefficient)} * N * {value}")
            return
        if form(expr) == "mat":
            raise CodegenError(f"cannot sum this per-sample matrix over the batch: {expr}")
        self.prepare(expr)
        self.start_writing(into)
        scale = "" if coefficient == 1 else f"{self.number(coefficient)} * "
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}for j in range({self.entries(expr)}):")
        self.emit(f"{INDENT * 2}{into}[j] += {scale}{self.element(expr, ('n', 'j'))}")

    def batch_sum_product(self, factors: list, into: str, coefficient) -> None:
        """Σₙ U·aₙ·bₙᵀ·V = U·(AᵀB)·V: the outer products of a batch as one GEMM."""
        batched = [i for i, f in enumerate(factors) if self.batched(f)]
        prefix, suffix = factors[:batched[0]], factors[batched[-1] + 1:]
        middle = factors[batched[0]:batched[-1] + 1]
        if len(middle) == 2 and form(middle[0]) == "col" and form(middle[1]) == "row":
            a, b = self.array(middle[0]), self.array(middle[1])
            if into in self.unwritten and coefficient == 1 and not prefix and not suffix:
                self.unwritten.discard(into)
                self.emit(f"np.dot({a}.T, {b}, {into})")  # written straight into the gradient: no temporary
                return
            code = f"np.dot({a}.T, {b})"
        elif len(middle) == 1:
            summed = self.temporary()
            self.emit(f"{summed} = np.zeros({self.entries(middle[0])}, dtype=real)")
            self.batch_sum(middle[0], summed, sympy.S.One)
            code = summed
        else:
            raise CodegenError(f"cannot sum this per-sample product over the batch: {MatMul(*factors)}")
        for left in reversed(prefix):
            code = f"np.dot({self.array(left)}, {code})"
        for right in suffix:
            code = f"np.dot({code}, {self.array(right)})"
        scale = "" if coefficient == 1 else f"{self.number(coefficient)} * "
        self.start_writing(into)
        self.emit(f"{into} += {scale}{code}")

    def start_writing(self, into: str) -> None:
        """Before the first `+=` into an "assign" target, clear it."""
        if into in self.unwritten:
            self.unwritten.discard(into)
            self.emit(f"{into}.fill(real(0))")


class Loop:
    """A fused loop nest: the arrays it fills (allocated above it) and one scalar statement per step."""

    def __init__(self, space: tuple):
        self.space = space
        self.allocations: list[str] = []
        self.body: list[str] = []
        self.locals: dict = {}  # node → the scalar holding it inside this loop

    def lines(self) -> list[str]:
        header = loop_header(self.space)
        depth = INDENT * len(header)
        return self.allocations + header + [depth + line for line in self.body]


def loop_header(space: tuple) -> list[str]:
    if space[0] == "batch" and space[1] == "1":
        return ["for n in range(N):"]
    if space[0] == "batch":
        return ["for n in range(N):", f"{INDENT}for j in range({space[1]}):"]
    if space[0] == "matrix":
        return [f"for r in range({space[1]}):", f"{INDENT}for c in range({space[2]}):"]
    return [f"for j in range({space[1]}):"]


def loop_index(space: tuple) -> tuple:
    if space[0] == "batch":
        return ("n", "0") if space[1] == "1" else ("n", "j")
    if space[0] == "matrix":
        return ("r", "c")
    return ("j",)


def form(node: MatrixExpr) -> str:
    """'scalar', 'col', 'row' or 'mat': the per-sample shape class of a node."""
    rows, cols = node.shape
    if rows == 1 and cols == 1:
        return "scalar"
    if cols == 1:
        return "col"
    if rows == 1:
        return "row"
    return "mat"


def is_scalar(node: MatrixExpr) -> bool:
    return node.shape[0] == 1 and node.shape[1] == 1





def describe(node: MatrixExpr, named: dict | None = None, width: int = 90) -> str:
    """A one-line comment for a node in textbook notation, with already-computed parts shown by their names."""
    from ..show.printers import expression_text

    names = {k: v for k, v in (named or {}).items() if k != node}
    try:
        text = expression_text(node, names)
    except Exception:  # a comment is never worth failing code generation over
        text = sympy.sstr(node)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
