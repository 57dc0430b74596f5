"""mnt.export: the PyTorch reference model, checkpoints, per-component ONNX export with
parity gates, and the mnt-export CLI.

Importing this package does not import torch; its submodules do.
"""
