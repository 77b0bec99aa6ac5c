"""The model: architecture fields, the plain nn.Module, its loss, the model file, presets, export.

Kept free of imports: the config reads ``architecture`` without torch.
"""
