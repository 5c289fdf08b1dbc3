"""Elementwise functions as models with no parameters: σ(x) computes on arrays, traces on symbols, has `back`."""
from __future__ import annotations

from ..model import Model


class Elementwise(Model):
    """y = f(x), applied to every entry; f is a built-in of `flux.maths.elementwise.FUNCTIONS` named by `function`,
    or, made by `flux.elementwise`, the scalar SymPy expression `definition` in z shown as `function`."""

    def __init__(self, function: str, definition=None, doc: str | None = None):
        super().__init__()
        self.function = function
        self.definition = definition
        if doc is not None:
            self.__doc__ = doc  # the function's equation, shown by help() in a notebook (`gelu?`)

    def forward(self, x):
        from ..maths.elementwise import FUNCTIONS, register
        from ..maths.nodes import Apply

        if not getattr(x, "is_Matrix", True):  # a number in the maths (a dimension: flux.sqrt(self.k))
            key = self.function if self.definition is None else register(self.function, self.definition)
            return FUNCTIONS[key].scalar(x)
        # a user's function is keyed by its name and definition: two "gelu"s never share a kernel
        return Apply(self.function if self.definition is None else register(self.function, self.definition), x)

    @property
    def equation(self) -> str:
        """The function's definition, f(z) = …, as text (`flux.latex(f)` shows the derivation)."""
        from ..maths.elementwise import FUNCTIONS

        definition = FUNCTIONS[self.function].definition if self.definition is None else self.definition
        return f"{self.function}(z) = {definition}"

    def __repr__(self) -> str:
        return self.function


def elementwise(name, f=None) -> Elementwise:
    """Your own elementwise function from a scalar SymPy expression: y = f(x) on every entry.

        gelu = flux.elementwise("gelu", lambda z: z * (1 + sympy.erf(z / sympy.sqrt(2))) / 2)

    or as a decorator, `@flux.elementwise` on `def gelu(z): …` (named after the function) or
    `@flux.elementwise("gelu")`. It is a model with no parameters, like `flux.tanh`; its derivative is SymPy's.
    A function with no numba form is refused here, naming it.
    """
    if callable(name) and f is None:
        return elementwise(name.__name__, name)
    if f is None:
        return lambda function: elementwise(name, function)
    import sympy

    from ..generate.scalars import check_numba_form
    from ..maths.elementwise import Z, register

    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"flux.elementwise needs a name that is an identifier, got {name!r}")
    definition = sympy.sympify(f(Z))
    if not isinstance(definition, sympy.Expr) or definition.is_Matrix or not definition.free_symbols <= {Z}:
        raise TypeError(f"the elementwise function {name!r} must map a scalar z to a scalar expression in z, "
                        f"got {definition!r}")
    check_numba_form(name, definition, Z)
    from ..maths.elementwise import FUNCTIONS, Y

    function = FUNCTIONS[register(name, definition)]
    check_numba_form(name + "′", function.derivative.subs(Y, definition), Z)
    return Elementwise(name, definition)


class SoftmaxFunction(Elementwise):
    """y = softmax(x) = e^{x − max x} / 1ᵀe^{x − max x}, per sample (column-wise), max-shifted."""

    def __init__(self):
        super().__init__("softmax")

    def forward(self, x):
        from ..maths.nodes import Softmax

        return Softmax(x)

    def __call__(self, x, *, axis=None):
        """softmax(x); on a per-sample matrix, `axis=0` makes each column a distribution, `axis=1` each row."""
        if axis is None:
            return super().__call__(x)
        if type(x).__module__.startswith("numpy"):
            raise TypeError("flux.softmax(…, axis=…) is maths for a forward (per-sample matrices), not for arrays")
        from ..maths.matrices import softmax_along

        return softmax_along(x, axis)


σ = sigmoid = Elementwise("σ")
softmax = SoftmaxFunction()
tanh = Elementwise("tanh")
relu = Elementwise("relu")
softplus = Elementwise("softplus")
exp = Elementwise("exp")
log = Elementwise("log")
sqrt = Elementwise("sqrt")
abs = Elementwise("abs")
square = Elementwise("square")

# Activations by name, as Keras takes them (Dense(4, 3, "relu")); both spellings of σ. Every other entry of
# flux's table of elementwise functions (erf, gelu, silu, elu, leakyrelu, softsign, …) is found by `function_named`.
BY_NAME: dict[str, Elementwise] = {
    "sigmoid": σ, "σ": σ, "tanh": tanh, "relu": relu, "softplus": softplus, "softmax": softmax, "exp": exp,
    "log": log, "sqrt": sqrt, "abs": abs, "square": square,
}
ALIASES = {"swish": "silu"}
_from_table: dict[str, Elementwise] = {}


def function_named(name: str) -> Elementwise | None:
    """flux's elementwise function called `name` (flux.gelu, Dense(…, "gelu")), or None: the ones above, else an
    entry of flux.maths.elementwise's table, read on demand (it needs SymPy), so a new built-in is one table entry."""
    if name in BY_NAME or name in _from_table:
        return BY_NAME.get(name) or _from_table[name]
    if not name.isidentifier() or name.startswith("_"):
        return None
    from ..maths.elementwise import FUNCTIONS

    entry = FUNCTIONS.get(ALIASES.get(name, name))
    if entry is None or not entry.public:
        return None
    _from_table[name] = Elementwise(entry.name, doc=entry.doc or None)
    return _from_table[name]


def function_names() -> list[str]:
    """Every name `function_named` knows."""
    from ..maths.elementwise import FUNCTIONS

    table = [n for n, f in FUNCTIONS.items() if f.public and n.isidentifier()]
    return list(BY_NAME) + [n for n in [*table, *ALIASES] if n not in BY_NAME]


# NumPy/math/SciPy function names → flux's function with the same maths, for the error that suggests it.
NUMPY_EQUIVALENTS: dict[str, str] = {"absolute": "abs", "fabs": "abs", "expit": "sigmoid"}
