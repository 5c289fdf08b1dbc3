"""Arrays through compiled kernels, no SymPy: the runtime state and typed tapes (state.py), input checks done once
(inputs.py), feed-forward calls (feedforward.py), sequences through the time loops (sequences.py)."""
