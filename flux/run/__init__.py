"""Arrays through compiled kernels, no SymPy: input checks, tapes, sequences."""
