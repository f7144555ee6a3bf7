"""Inference backends behind one interface (torch, ONNX Runtime, TensorRT) and tiled inference.

Kept import-free: each backend module imports its heavy package only when used.
"""
