"""The generators: one module template (imports read off the printed code), kernels, names."""
import numpy as np

from flux import cache
from flux.generate.module import imports_for, module_source


def test_imports_are_read_off_the_printed_code():
    assert imports_for("real(1)") == "import numpy as np"
    code = "@njit\ndef f(a):\n    return math.sqrt(fast_exp(a)) + all_finite(a)"
    assert imports_for(code) == ("import math\n\nimport numpy as np\nfrom numba import njit\n\n"
                                 "from flux.fastmath import all_finite, fast_exp")
    assert "import math" not in imports_for('"""the maths."""\nx = np.e')  # `maths.` is not `math.`


def test_every_module_has_the_markers_the_cache_checks():
    text = module_source("k1", "doc", np.dtype(np.float32), metadata={"model": "M"},
                         helpers=["def h():\n    return None\n"], kernels=["def k(a):\n    return np.tanh(a)\n"])
    assert text.startswith(f"{cache.KEY_LINE}k1\n") and text.rstrip().endswith(cache.END)
    assert '@njit(cache=True, nogil=True, error_model="numpy")\ndef k(a):' in text
    namespace = {}
    exec(compile(text.replace("@njit(", "@(lambda **options: lambda f: f)("), "<generated>", "exec"), namespace)
    assert namespace["METADATA"] == {"model": "M"} and namespace["real"] is np.float32
    assert namespace["k"](np.float32(0.0)) == 0.0 and namespace["h"]() is None
