"""The names generated code uses: its own (fixed words and families), and a user's symbol names turned into code.

A user's name is used as it is when it cannot collide with anything generated code calls its own; otherwise it is
encoded (y → v_y_79), so every valid identifier works and two names never become one.
"""
from __future__ import annotations

import builtins
import keyword
import re
import unicodedata

# Names generated code uses for itself. A user's name becomes a code name only if it cannot be one of these, nor
# one of them with a prefix or suffix the generators add (grad_W, hidden_seq, W_T, …); otherwise it is encoded.
GENERATED_NAMES = {
    "N", "T", "n", "j", "r", "c", "t", "i", "acc", "shift", "real", "np", "njit", "math", "rows", "scale",
    "loss", "step_count", "update", "θ", "g", "forward", "backward", "project", "project_backward", "readout",
    "readout_backward", "cell_forward", "cell_backward", "gradients", "input_sizes", "check_params", "state_sizes",
    "METADATA", "fast_exp", "fast_sigmoid", "fast_tanh", "all_finite", "grad", "new", "from", "opt", "hyper",
}
GENERATED_FAMILIES = re.compile(r"(t|y|u|kept|pkept|rkept|factor|from_readout|from_projection)\d*")
GENERATED_PREFIXES = ("grad_", "new_", "from_", "opt_", "hyper_", "v_")
GENERATED_SUFFIXES = ("_seq", "_initial", "_last", "_out", "_t", "_T", "_old", "_")
RESERVED = GENERATED_NAMES | set(keyword.kwlist) | set(dir(builtins))


def identifier(name: str) -> str:
    """The code name of a symbol the user named (dotted for sub-models: "0.W" → "l0·W"), injective.

    A name that could clash with anything generated code calls its own (a builtin, a generated local, grad_W
    beside W, hidden_seq beside hidden, a name Python would NFKC-normalise into another) is encoded instead:
    "v_" + its letters + "_" + the hex of its UTF-8 bytes, e.g. y → v_y_79. Every valid identifier works.
    """
    text = ("l" if name[:1].isdigit() else "") + name.replace(".", "·")
    plain = (text.isidentifier() and unicodedata.normalize("NFKC", text) == text and "·" not in name
             and not re.match(r"l\d", name) and text not in RESERVED and not GENERATED_FAMILIES.fullmatch(text)
             and not text.startswith(GENERATED_PREFIXES) and not text.endswith(GENERATED_SUFFIXES))
    if plain:
        return text
    letters = re.sub(r"\W", "_", unicodedata.normalize("NFKC", name)).strip("_")
    encoded = f"v_{letters}_{name.encode().hex()}"  # the hex after the last "_" alone decides the name
    return encoded if letters and encoded.isidentifier() else f"v_{name.encode().hex()}"
