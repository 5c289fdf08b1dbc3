"""The vocabulary every stage shares: matrix nodes, the elementwise table, graph walks. Imports no other flux module."""
