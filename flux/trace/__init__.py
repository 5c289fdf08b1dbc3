"""The language layers are written in (param, state, hadamard, …) and tracing forward on SymPy symbols."""
