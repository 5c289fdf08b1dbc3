"""Printers from derived maths to code: the numba printer, feed-forward, recurrent and training-step modules."""
