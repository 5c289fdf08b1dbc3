"""Built-in layers, written in the same syntax as user layers."""
