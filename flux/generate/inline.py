"""Paste a generated kernel's body into the driver that calls it, so numba compiles it once, inside that driver.

    cell_forward(x_seq[t], h_seq[t], W, …)        →      # cell_forward: one time step: …
                                                          cell_forward_x_ = x_seq[t]
                                                          cell_forward_N_ = cell_forward_x_.shape[0]
                                                          for cell_forward_n_ in range(cell_forward_N_): …

numba links every callee's LLVM IR into its caller and optimises it again there: a cell kernel called from a
driver was typed, lowered, optimised and emitted to machine code on its own, then optimised again inside the
driver (and once more inside a fused step's driver); pasted, it is compiled once. The callee's locals are renamed
`<callee>_<name>_` (no user's name ends in _: flux.generate.names); a parameter given a plain name is that name,
any other argument is bound once at the top; the callee's final `return a, b` becomes the call's assignment.
Comments are kept (the generated code is for people). Only statement calls are pasted (`f(…)`, `a, b = f(…)`),
and only functions whose one `return` is the last statement — what flux's kernel printers write.
"""
from __future__ import annotations

import ast
import re


def paste_kernels(functions: list[str], pasted: set[str]) -> list[str]:
    """A module's functions (sources) with each function named in `pasted` pasted into every caller that calls it
    as a statement (its own callees pasted first); a pasted function nothing calls any more is dropped."""
    sources = {function_name(f): f for f in functions}
    done: dict[str, str] = {}

    def resolved(name: str) -> str:
        if name not in done:
            called = {c: resolved(c) for c in pasted & sources.keys() if c != name and calls(sources[name], c)}
            done[name] = inline_calls(sources[name], called) if called else sources[name]
        return done[name]

    kept = {name: resolved(name) for name in sources if name not in pasted}
    needed = [name for name in sources if name in pasted and any(calls(s, name) for s in kept.values())]
    kept.update({name: resolved(name) for name in needed})
    return [kept[name] for name in sources if name in kept]


def function_name(source: str) -> str:
    """The name of the function `source` defines."""
    return ast.parse(source).body[0].name


def calls(source: str, name: str) -> bool:
    """Whether `source` calls `name`."""
    return re.search(rf"(?<![\w.]){re.escape(name)}\(", source) is not None


def inline_calls(caller: str, callees: dict[str, str]) -> str:
    """`caller`'s source with every statement calling a function of `callees` (name → source) replaced by its body."""
    parsed = {name: Callee(source) for name, source in callees.items()}
    lines = []
    for line in caller.splitlines():
        indent = line[:len(line) - len(line.lstrip())]
        call = statement_call(line.strip(), parsed)
        if call is None:
            lines.append(line)
            continue
        targets, name, arguments = call
        lines += [indent + text for text in parsed[name].pasted(targets, arguments)]
    return "\n".join(lines) + "\n"


class Callee:
    """A function's parameters, body lines (without its docstring and final return) and returned expression."""

    def __init__(self, source: str):
        (function,) = ast.parse(source).body
        self.name = function.name
        self.parameters = [a.arg for a in function.args.args]
        body = function.body
        self.doc = ""
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            self.doc = str(body[0].value.value).split("\n")[0]
            body = body[1:]
        self.returned = None
        if body and isinstance(body[-1], ast.Return):
            self.returned = body[-1].value
            body = body[:-1]
        if any(isinstance(node, ast.Return) for statement in body for node in ast.walk(statement)):
            raise ValueError(f"flux: cannot paste {self.name}: a return before its last statement")
        self.locals = set(self.parameters) | {node.id for statement in body for node in ast.walk(statement)
                                              if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
        keywords = {node.arg for node in ast.walk(function) if isinstance(node, ast.keyword)}
        if keywords & self.locals:  # renaming the local would rename the keyword: order=… stays order=…
            raise ValueError(f"flux: cannot paste {self.name}: a local named like a keyword argument "
                             f"({', '.join(sorted(keywords & self.locals))})")
        lines = source.splitlines()
        base = body[0].col_offset if body else 0
        self.body = [line[base:] for line in lines[body[0].lineno - 1:body[-1].end_lineno]] if body else []
        self.returned_text = ast.get_source_segment(source, self.returned) if self.returned is not None else None

    def pasted(self, targets: str | None, arguments: list[str]) -> list[str]:
        """The body with its locals renamed and its parameters bound to `arguments`; `targets = returned` last."""
        if len(arguments) != len(self.parameters):
            raise ValueError(f"flux: {self.name} takes {len(self.parameters)} arguments; the driver passes "
                             f"{len(arguments)}")
        names = {n: f"{self.name}_{n}_" for n in self.locals}  # no user's name ends in _ (names.py)
        bindings = []
        for parameter, argument in zip(self.parameters, arguments):
            if argument.isidentifier():
                names[parameter] = argument
            else:
                bindings.append(f"{names[parameter]} = {argument}")
        lines = [f"# {self.name}: {self.doc}" if self.doc else f"# {self.name}"] + bindings
        lines += renamed("\n".join(self.body), names).splitlines() if self.body else []
        if self.returned_text is not None:
            value = renamed(self.returned_text, names)
            lines.append(f"{targets} = {value}" if targets else value)
        return lines


def statement_call(statement: str, callees: dict) -> tuple[str | None, str, list[str]] | None:
    """(targets or None, callee, argument texts) when `statement` is one call of a callee, else None."""
    try:
        (node,) = ast.parse(statement).body
    except (SyntaxError, ValueError):  # a loop's header, an `else:` … : not a statement on its own
        return None
    if isinstance(node, ast.Expr):
        targets, value = None, node.value
    elif isinstance(node, ast.Assign) and len(node.targets) == 1:
        targets, value = ast.get_source_segment(statement, node.targets[0]), node.value
    else:
        return None
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in callees):
        return None
    if value.keywords:
        raise ValueError(f"flux: cannot paste a call of {value.func.id} with keyword arguments")
    return targets, value.func.id, [ast.get_source_segment(statement, a) for a in value.args]


def renamed(code: str, names: dict[str, str]) -> str:
    """`code` with each name renamed by `names`: not an attribute (x.shape), nor inside a string or a comment. The
    pattern reads the names flux prints (a sub-model's "0.W" is the identifier l0·W, which Python accepts)."""
    def rename(match: re.Match) -> str:
        return names.get(match.group(0), match.group(0)) if match.lastgroup == "name" else match.group(0)
    return TOKENS.sub(rename, code)


TOKENS = re.compile(r"""(?P<string>'[^'\n]*'|"[^"\n]*")|(?P<comment>#[^\n]*)|(?P<name>(?<![\w·.])[^\W\d][\w·]*)""")
