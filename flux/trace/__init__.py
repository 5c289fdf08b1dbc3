"""The language layers are written in (language.py: param, state, hadamard, …), tracing forward on SymPy symbols
(tracing.py), and the definition-time shape rules (shapes.py)."""
