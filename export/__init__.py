"""mnt.export: the PyTorch reference model, checkpoints, and (next) ONNX/TensorRT export.

Importing this package does not import torch; its submodules do.
"""
