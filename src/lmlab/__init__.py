"""lmlab: reproducible Transformer experiments."""
