"""The token printer: per-sample matrices (a sequence X ∈ ℝ^{d×T} per sample) → the source of one numba kernel.

Layout. A batched value M ∈ ℝ^{r×c} per sample is held as an (N, c, r) array: sample n's Mᵀ, one row per column
(per token), as the caller's (N, T, d) inputs are. A parameter is a plain array (W: (m, n), b: (m,)).

    elementwise nodes   one loop nest per stored node, n, then j over columns, then i over rows (contiguous);
                        a node read once is inlined into its consumer (fused), a transpose swaps the indices
    products            token_products.py: W·X as one GEMM over all N·T columns, per-sample products as a loop
                        over n of np.dot into a preallocated (N, ·, ·) array, Σₙ as GEMMs over N·T rows
    softmax by columns  one pass per column (a row of the array): max, exp, normalise; its argument inlined

Each node type has one `_element_<Node>` method (its scalar code at a maths index (i, j)) or one
`_statement_<Node>` method (statements that fill an array), like the vector printer in printer.py.
"""
from __future__ import annotations

from collections import Counter

import sympy
from sympy import HadamardPower, HadamardProduct, Identity, MatAdd, MatMul, MatrixSymbol, OneMatrix, Transpose, \
    ZeroMatrix
from sympy.matrices.expressions.matexpr import MatrixExpr
from sympy.matrices.expressions.slice import MatrixSlice

from .forms import INDENT, CodegenError, describe
from .scalars import power_code, scalar_code
from .sizes import dimension_code
from .statements import matrix_power
from .token_products import TokenProducts, scaled_product
from .token_workspace import buffers_of, share_buffers
from ..maths.elementwise import FUNCTIONS, Z
from ..maths.graph import Dependence, matrix_children, topological_order
from ..maths.matrices import Causal, CausalZeros, RowSpread
from ..maths.nodes import Apply, Spread

ELEMENTWISE = (MatAdd, HadamardProduct, HadamardPower, Apply, Transpose, OneMatrix, ZeroMatrix, Identity, Causal,
               CausalZeros, RowSpread, Spread, MatrixSlice)


def token_size_codes(arguments: list) -> dict:
    """Where a kernel reads each dimension: a batched (N, c, r) array gives r (axis 2) and c (axis 1)."""
    sizes: dict = {}
    for a in arguments:
        rows, cols = a.symbol.shape
        if a.batched:
            axes = [(rows, 2), (cols, 1)]
        elif cols == 1:
            axes = [(rows, 0)]
        else:
            axes = [(rows, 0), (cols, 1)]
        for dim, axis in axes:
            if isinstance(dim, sympy.Symbol) and dim not in sizes:
                sizes[dim] = f"{a.name}.shape[{axis}]"
    return sizes


class TokenKernelWriter(TokenProducts):
    """Writes one kernel over token arrays: results in order, each node's statements before its first use."""

    def __init__(self, arguments: list, results: list, workspace: bool = False, borrowed: tuple = ({}, ())):
        self.arguments = arguments
        self.borrowed = borrowed  # (inherited, spare): another kernel's buffers this one may use (token_workspace)
        self.returned_buffers: list = []  # with a workspace: the buffer of each returned array (None: not one)
        # with a workspace, every batched array is one of the caller's buffers, work_[k] (token_step.py), its
        # shape (N, dims…) recorded here; otherwise a new array per call
        self.workspace: list | None = [] if workspace else None
        self.results = results
        self.batched = Dependence(a.symbol for a in arguments if a.batched)
        self.arrays: dict = {a.symbol: a.name for a in arguments}
        self.held: dict = {}  # a batched product held as the samples themselves, (N, r, c) (token_products.py)
        self.written = {r.expr for r in results if r.mode == "new"}  # returned: always in node layout
        self.leaves = {a.symbol for a in arguments}
        self.sizes = token_size_codes(arguments)
        self.batch = next((f"{a.name}.shape[0]" for a in arguments if a.batched), "1")
        self.lines: list[str] = []
        self.temporaries = 0
        self.products: dict = {}  # (kind, left operand, right operand) → the product's Operand (token_products.py)
        self.computed: dict = {}  # a product's code → the array holding it (token_products.py)
        self.runs: dict = {}  # a run of a chain's factors (a tuple) → the Operand of its product (token_products.py)
        self.uses = Counter()
        order = topological_order([r.expr for r in results])
        for node in order:
            for child in matrix_children(node):
                self.uses[child] += 1
        for node in reversed(order):  # a broadcast read k times reads its row k times: the row is stored, not
            if isinstance(node, (RowSpread, Spread)) and self.uses[node] > 1:  # its (N, c, r) spread
                self.uses[node.argument] = max(self.uses[node.argument], self.uses[node])

    # ---- writing --------------------------------------------------------------------------------------

    def write(self, name: str, doc: str) -> str:
        returned = []
        for result in self.results:
            if result.mode == "accumulate":
                self.emit(f"# {result.into} += Σₙ {describe(result.expr)}")
                self.batch_sum(result.expr, result.into, sympy.S.One)
            elif result.mode == "new":
                if not self.batched(result.expr):
                    raise CodegenError(f"a result that does not depend on the tokens has no batch: {result.expr}")
                array = self.array(result.expr)
                returned.append(f"{array}.copy()" if result.expr in self.leaves else array)
            else:
                raise CodegenError(f"the token printer has no {result.mode!r} results")
        if self.workspace is not None:
            self.lines, self.workspace = share_buffers(self.lines, self.workspace, set(returned), *self.borrowed)
            self.returned_buffers = buffers_of(self.lines, returned)
        arguments = ", ".join([a.name for a in self.arguments] + (["work_"] if self.workspace is not None else []))
        body = "\n".join(INDENT + line for line in [f"N = {self.batch}"] + self.lines)
        ret = f"{INDENT}return {', '.join(returned)}{',' if len(returned) == 1 else ''}\n" if returned else ""
        return f'def {name}({arguments}):\n{INDENT}"""{doc}"""\n{body}\n{ret}'

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def temporary(self) -> str:
        self.temporaries += 1
        return f"t{self.temporaries}"

    def size(self, dim) -> str:
        """Code for a size, an integer: k/4 (a head of MultiHeadAttention) is (k // 4)."""
        numerator, denominator = sympy.fraction(sympy.together(sympy.sympify(dim)))
        code = dimension_code(numerator, self.sizes)
        if code is None:
            raise CodegenError(f"no argument array has the dimension {dim}")
        if denominator != 1:
            return f"(({code}) // {dimension_code(denominator, self.sizes)})"
        return code if numerator.is_Atom else f"({code})"

    def size_list(self, dims) -> str:
        """Code for sizes, comma-separated."""
        return ", ".join(self.size(d) for d in dims)

    def number(self, value) -> str:
        """A constant in the kernel's float type; a dimension in it (1/√k) is read from the arrays."""
        value = sympy.sympify(value)
        return scalar_code(value, {s: f"real({self.size(s)})" for s in value.free_symbols})

    def allocation(self, node: MatrixExpr) -> str:
        rows, cols = node.shape
        if self.batched(node):
            return self.buffer((cols, rows))
        return f"np.empty(({self.size(rows)}, {self.size(cols)}), dtype=real)"

    def buffer(self, dims: tuple) -> str:
        """A batched (N, dims…) array: a workspace buffer, or a new one."""
        if self.workspace is None:
            return f"np.empty((N, {self.size_list(dims)}), dtype=real)"
        self.workspace.append(tuple(dims))
        return f"work_[{len(self.workspace) - 1}]"

    # ---- planning: which nodes are stored ---------------------------------------------------------------

    def is_elementwise(self, node: MatrixExpr) -> bool:
        if isinstance(node, MatMul):
            return len(node.as_coeff_matrices()[1]) == 1
        return isinstance(node, ELEMENTWISE)

    def inlined(self, node: MatrixExpr) -> bool:
        """Computed inside its consumer's loop: a constant, a transpose, or an elementwise node read once."""
        if node in self.arrays or isinstance(node, MatrixSymbol):
            return False
        if isinstance(node, (OneMatrix, ZeroMatrix, Identity, Transpose)):
            return True
        return self.is_elementwise(node) and (self.uses[node] <= 1 or self.is_read(node, top=True))

    def is_read(self, node: MatrixExpr, top: bool = False) -> bool:
        """A stored value read through a broadcast, a transpose or a slice, times a constant at most (1·γᵀ,
        −μ·1ᵀ/d): recomputed in every consumer's loop rather than written out as a full array."""
        if node in self.arrays or isinstance(node, MatrixSymbol) or (not top and not self.inlined(node)):
            return True  # stored: read in place
        if isinstance(node, (RowSpread, Transpose, MatrixSlice)):
            return self.is_read(matrix_children(node)[0])
        if isinstance(node, MatMul):
            coefficient, factors = node.as_coeff_matrices()
            return len(factors) == 1 and self.is_read(factors[0])
        return False

    def prepare(self, node: MatrixExpr) -> None:
        """Write the statements of every stored node an inlined `node` reads."""
        if self.inlined(node):
            for child in matrix_children(node):
                self.prepare(child)
        else:
            self.hold(node)

    def array(self, node: MatrixExpr) -> str:
        """The name of a C-contiguous array holding `node` (batched: (N, c, r)), writing its statements if needed."""
        if node in self.arrays:
            return self.arrays[node]
        if self.is_elementwise(node):
            name = self.elementwise_loop(node)
        else:
            method = getattr(self, f"_statement_{type(node).__name__}", None)
            if method is None:
                raise CodegenError(f"flux has no token code for {type(node).__name__} nodes (in {node})")
            name = method(node)
        self.arrays[node] = name
        return name

    # ---- elementwise nodes ----------------------------------------------------------------------------

    def elementwise_loop(self, node: MatrixExpr) -> str:
        for child in matrix_children(node):
            self.prepare(child)
        name = self.temporary()
        rows, cols = node.shape
        self.emit(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        code = self.expand(node, "i", "j")
        if self.batched(node):
            self.emit("for n in range(N):")
            self.emit(f"{INDENT}for j in range({self.size(cols)}):")
            self.emit(f"{INDENT * 2}for i in range({self.size(rows)}):")
            self.emit(f"{INDENT * 3}{name}[n, j, i] = {code}")
        else:
            self.emit(f"for i in range({self.size(rows)}):")
            self.emit(f"{INDENT}for j in range({self.size(cols)}):")
            self.emit(f"{INDENT * 2}{name}[i, j] = {code}")
        return name

    def element(self, node: MatrixExpr, i: str, j: str) -> str:
        """Scalar code for node[i, j] (maths orientation) inside a loop over n (when batched), j and i."""
        if node in self.arrays or not self.inlined(node):
            return self.read(node, i, j)
        return self.expand(node, i, j)

    def expand(self, node: MatrixExpr, i: str, j: str) -> str:
        return getattr(self, f"_element_{type(node).__name__}")(node, i, j)

    def read(self, node: MatrixExpr, i: str, j: str) -> str:
        if self.batched(node) and node not in self.arrays:
            flipped = self.stored_transpose(node)
            if flipped is not None:  # Mᵀ written with its transposes at the leaves, M already stored: read it
                return self.read(flipped, j, i)
            scaled = scaled_product(node)
            if scaled is not None:  # c·(A·B): the product read and scaled in the loop, never a scaled copy
                return f"({self.number(scaled[0])} * {self.read(scaled[1], i, j)})"
            self.hold(node)
            if node in self.held:
                return f"{self.held[node]}[n, {i}, {j}]"
        array = self.array(node)
        if self.batched(node):
            return f"{array}[n, {j}, {i}]"
        if node in self.leaves and node.shape[1] == 1:  # a vector parameter is 1-D
            return f"{array}[{i}]"
        return f"{array}[{i}, {j}]"

    def _element_MatAdd(self, node, i, j):
        terms = [self.element(t, i, j) for t in node.args]
        terms.sort(key=lambda term: term.startswith("-"))
        code = terms[0]
        for term in terms[1:]:
            code += f" - {term[1:]}" if term.startswith("-") else f" + {term}"
        return f"({code})"

    def _element_MatMul(self, node, i, j):
        coefficient, (factor,) = node.as_coeff_matrices()
        code = self.element(factor, i, j)
        if coefficient == -1:
            return f"-{code}"
        return f"({self.number(coefficient)} * {code})"

    def _element_HadamardProduct(self, node, i, j):
        return f"({' * '.join(self.element(a, i, j) for a in node.args)})"

    def _element_HadamardPower(self, node, i, j):
        base, power = node.args
        return power_code(self.element(base, i, j), power, self.number)

    def _element_Apply(self, node, i, j):
        function, argument = FUNCTIONS[node.function], self.element(node.argument, i, j)
        return function.code.format(z=argument) if function.code else scalar_code(function.definition, {Z: argument})

    def _element_Transpose(self, node, i, j):
        return self.element(node.arg, j, i)

    def _element_OneMatrix(self, node, i, j):
        return "real(1)"

    def _element_ZeroMatrix(self, node, i, j):
        return "real(0)"

    def _element_Identity(self, node, i, j):
        return f"real({i} == {j})"

    def _element_Causal(self, node, i, j):
        return f"({self.element(node.argument, i, j)} if {i} <= {j} else real(-np.inf))"

    def _element_CausalZeros(self, node, i, j):
        return f"({self.element(node.argument, i, j)} if {i} <= {j} else real(0))"

    def _element_RowSpread(self, node, i, j):
        return self.element(node.argument, "0", j)

    def _element_Spread(self, node, i, j):
        """(s·1)ᵢⱼ = s: a per-sample scalar (a 1×1 matrix) at every entry."""
        return self.element(node.argument, "0", "0")

    def _element_MatrixSlice(self, node, i, j):
        parent, (start, _, _), (column, _, _) = node.args
        row = i if start == 0 else f"{self.size(start)} + {i}"
        col = j if column == 0 else f"{self.size(column)} + {j}"
        return self.element(parent, row, col)

    # ---- statements -----------------------------------------------------------------------------------

    def _statement_ColumnSoftmax(self, node):
        """Aᵢⱼ = e^{Sᵢⱼ − mⱼ} / Σₖ e^{Sₖⱼ − mⱼ}, mⱼ = maxₖ Sₖⱼ: S written into A, then `softmax_rows(A)`
        (flux.fastmath), one column (a row of the array) at a time."""
        argument = node.argument
        if not self.batched(node):
            raise CodegenError(f"a softmax by columns of parameters only is not supported: {node}")
        self.prepare(argument)
        name = self.temporary()
        rows, cols = node.shape
        value = self.element(argument, "i", "j")
        self.emit(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        self.emit("for n in range(N):")
        self.emit(f"{INDENT}for j in range({self.size(cols)}):")
        self.emit(f"{INDENT * 2}for i in range({self.size(rows)}):")
        self.emit(f"{INDENT * 3}{name}[n, j, i] = {value}")
        self.emit(f"softmax_rows({name})  # each column (a row here) ← its max-shifted exponentials over their sum")
        return name

    def _statement_ColumnTotals(self, node):
        """(1ᵀM)ⱼ = Σᵢ Mᵢⱼ."""
        argument = node.argument
        self.prepare(argument)
        name = self.temporary()
        rows, cols = argument.shape
        value = self.element(argument, "i", "j")
        self.emit(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        if self.batched(node):
            self.emit("for n in range(N):")
            indent = INDENT
        else:
            indent = ""
        self.emit(f"{indent}for j in range({self.size(cols)}):")
        self.emit(f"{indent}{INDENT}acc = real(0)")
        self.emit(f"{indent}{INDENT}for i in range({self.size(rows)}):")
        self.emit(f"{indent}{INDENT * 2}acc += {value}")
        self.emit(f"{indent}{INDENT}{name}[n, j, 0] = acc" if self.batched(node) else f"{indent}{INDENT}{name}[0, j] = acc")
        return name

    def _statement_Total(self, node):
        """Σᵢ zᵢ = 1ᵀz: the column totals of a one-column z."""
        return self._statement_ColumnTotals(node)

    def _statement_MatPow(self, node):
        return matrix_power(self, node)

    def _statement_BlockMatrix(self, node):
        """[H₁; H₂; …] (or [A, B], a transposed stack): each block written at its row and column offsets."""
        name = self.temporary()
        self.emit(f"{name} = {self.allocation(node)}  # {describe(node, self.arrays)}")
        grid = node.blocks
        top = sympy.S.Zero
        for r in range(grid.shape[0]):
            left = sympy.S.Zero
            for c in range(grid.shape[1]):
                block = grid[r, c]
                self.block(name, node, block, top, left)
                left += block.shape[1]
            top += grid[r, 0].shape[0]
        return name

    def block(self, name: str, node, block, top, left) -> None:
        """Write one block of a block matrix into `name` at (top, left)."""
        if not isinstance(block, ZeroMatrix):
            self.prepare(block)
        value = "real(0)" if isinstance(block, ZeroMatrix) else self.element(block, "i", "j")
        rows, cols = block.shape
        row = "i" if top == 0 else f"{self.size(top)} + i"
        col = "j" if left == 0 else f"{self.size(left)} + j"
        if self.batched(node):
            self.emit("for n in range(N):")
            self.emit(f"{INDENT}for j in range({self.size(cols)}):")
            self.emit(f"{INDENT * 2}for i in range({self.size(rows)}):")
            self.emit(f"{INDENT * 3}{name}[n, {col}, {row}] = {value}")
        else:
            self.emit(f"for i in range({self.size(rows)}):")
            self.emit(f"{INDENT}for j in range({self.size(cols)}):")
            self.emit(f"{INDENT * 2}{name}[{row}, {col}] = {value}")
