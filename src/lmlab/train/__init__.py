"""The train stage: Lightning around the plain Transformer (module, data, callbacks, fit)."""
