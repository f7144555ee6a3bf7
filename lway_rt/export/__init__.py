"""Deployment: torch -> ONNX (fp32/fp16) -> [TensorRT engine], with parity gates, an artifact cache and refit.

Stages (``onnx_export.py``, ``tensorrt.py``) are small lazily evaluated callables in the manner
of Polygraphy's loaders; ``pipeline.py`` chains them with the cache (``cache.py``), the parity
gate (``parity.py``) and manifests (``manifest.py``); ``profile.py`` reads the target profiles in
the repository's ``export/`` folder; ``encoder_backend.py`` gives stage 2 an embedding function
backed by torch, ONNX Runtime or TensorRT.

Importing this package loads neither onnx, onnxruntime nor tensorrt.
"""

from __future__ import annotations

__all__ = ["export_onnx"]


def export_onnx(desc_or_module, out_path, **kwargs):
    """See ``lway_rt.export.onnx_export.export_onnx`` (imported lazily: it needs torch's ONNX exporter)."""
    from lway_rt.export.onnx_export import export_onnx as _export_onnx

    return _export_onnx(desc_or_module, out_path, **kwargs)
