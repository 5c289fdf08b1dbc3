"""The numba printer for one time step of a recurrent cell: every array it needs is the caller's, nothing allocated.

    cell_forward(…, work1_, work2_, …)        the temporaries of one step live in work buffers the driver made once
    t1 = work1_                               (N, k) before the time loop (or the fused step's workspace, once per
    step_product_into(h, U_T, t1)             shape) and reuses at every t; the per-step products go straight into
                                              their buffer (or into the caller's output slot), never a new array

`StepKernelWriter` is the `KernelWriter` of `flux.generate.printer` with two changes: `allocation` hands out a
work buffer instead of `np.empty`, and a product of parameters and a batched column (h·Uᵀ, δ·U) is printed as
`flux.small_products.step_product_into` into its buffer. `work_shapes` lists each buffer's shape for the driver:
(batch, k) for a batched value (`BATCH` stands for the batch size N), or the parameter-sized shape.
"""
from __future__ import annotations

import sympy
from sympy import MatMul, Transpose

from .forms import describe, form
from .printer import Argument, KernelWriter, Result

BATCH = sympy.Symbol("N_batch")  # the batch size in a work buffer's shape; the driver prints it as N


def generate_step_kernel_source(name: str, arguments: list[Argument], results: list[Result],
                                doc: str = "") -> tuple[str, list[tuple]]:
    """The source of `def name(arguments…, work1_, work2_, …)` computing `results` for one time step, and the
    shape of each work buffer it takes (`BATCH` for the batch size)."""
    writer = StepKernelWriter(arguments, results, per_step=True)
    source = writer.write(name, doc, [f"work{k}_" for k in range(1, len(writer.work_shapes) + 1)])
    # `write` prints the signature after planning: the buffers it planned are all known by then
    return source, list(writer.work_shapes)


class StepKernelWriter(KernelWriter):
    """A `KernelWriter` whose temporaries are work buffers of the caller (see the module docstring)."""

    def __init__(self, arguments: list[Argument], results: list[Result], per_step: bool = True):
        super().__init__(arguments, results, per_step)
        self.work_shapes: list[tuple] = []

    def write(self, name: str, doc: str, extra_arguments: list[str] = (), epilogue: list[str] = ()) -> str:
        """As `KernelWriter.write`, with the work buffers (known only once the body is planned) as the last arguments."""
        text = super().write(name, doc, [], epilogue)
        buffers = "".join(f", work{k}_" for k in range(1, len(self.work_shapes) + 1))
        header, rest = text.split("):\n", 1)
        return f"{header}{buffers}):\n{rest}"

    def allocation(self, node) -> str:
        """The next work buffer, shaped like `node` (one row per sample when batched)."""
        if self.batched(node):
            shape = (BATCH, node.shape[0] * node.shape[1])
        elif form(node) == "mat":
            shape = tuple(node.shape)
        else:
            shape = (node.shape[0] * node.shape[1],)
        self.work_shapes.append(shape)
        return f"work{len(self.work_shapes)}_"

    def _statement_MatMul(self, node):
        """U·…·V·x of a batched column x: each product into a work buffer (the last into the node's own output
        slot when it is a written result), by `step_product_into`; anything else as `KernelWriter` prints it."""
        coefficient, factors = node.as_coeff_matrices()
        batched_column = self.batched(factors[-1]) and form(factors[-1]) == "col"
        if not batched_column or any(self.batched(f) for f in factors[:-1]):
            return super()._statement_MatMul(node)
        product = factors[-1]
        code = self.array(product)
        for k, left in enumerate(reversed(factors[:-1])):
            last = k == len(factors) - 2
            product = MatMul(left, product)
            out = self.targets.get(node) if last and coefficient == 1 and node in self.targets else None
            if out is None:
                out = self.temporary()
                self.emit(f"{out} = {self.allocation(product)}")
            transposed = self.array(left.arg) if isinstance(left, Transpose) else f"{self.array(left)}.T"
            self.emit(f"step_product_into({code}, {transposed}, {out})  # {describe(product, self.arrays)}")
            code = out
        if coefficient != 1:
            self.emit("for n in range(N):")
            self.emit(f"    for j in range({code}.shape[1]):")
            self.emit(f"        {code}[n, j] *= {self.number(coefficient)}")
        return code
