"""The data: raw text (download stage) and token ids (prepare stage), and their batching.

Kept free of imports: the config reads ``builtin`` without the loaders.
"""
