"""File formats, the lowest jaxmm layer: weight files (state dicts) and JSON lines.

Imports nothing else from jaxmm, so every other layer (nn, models, data, train, eval,
retrieval) can read and write through it.
"""
