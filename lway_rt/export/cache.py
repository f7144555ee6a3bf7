"""Cache keys for exported artifacts, shared by the ONNX Runtime and TensorRT paths.

A key is the SHA-256 of a canonical JSON of every input that changes the artifact. A second
export with the same inputs finds a ready manifest carrying the same key (and a file whose hash
matches) and reuses the artifact; change anything in the key and the artifact is rebuilt.

ONNX key fields: what is exported (sr / encoder), architecture and hyper-parameters, the SHA-256
of the weights as loaded, precision and I/O dtype, opset, the shape mode (dynamic, or the static
tile), the fp16 keep-lists, and the versions of torch, onnx and onnxscript (a new exporter may
emit a different graph).

TensorRT engine key fields (DESIGN.md section 5): the ONNX file's content hash, the shapes
(static, or min/opt/max), precision and I/O dtype, workspace, optimisation level, builder flags,
the TensorRT version, and the GPU's name and compute capability.

File names carry the first 12 hex digits of the key: ``<label>.<what>.<precision>[.<HxW>].<key12>.onnx``
and ``....<engine-key12>.engine``, each with a ``.json`` manifest beside it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lway_rt.bench.machine import package_versions as installed_versions

__all__ = [
    "KEY_VERSION", "make_key", "file_sha256", "package_versions", "onnx_key_fields", "engine_key_fields",
    "artifact_label", "artifact_stem", "safe_label",
]

KEY_VERSION = 1  # bump when the meaning of a field changes


def make_key(fields: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``fields`` (sorted keys, no whitespace)."""
    blob = json.dumps({"key_version": KEY_VERSION, **fields}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Versions that matter for an export (read with importlib.metadata, not ``__version__``)."""
    import platform

    out = installed_versions(("lway_rt", "torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "numpy", *extra))
    out["python"] = platform.python_version()
    return {k: v for k, v in out.items() if v is not None}


def onnx_key_fields(*, what: str, arch: str, hparams: Mapping[str, Any], weights_sha256: str, precision: str,
                    opset: int, shape_mode: str, tile: tuple[int, int] | None, keep_fp32_ops: tuple[str, ...],
                    keep_fp32_nodes: tuple[str, ...], batch: int | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "artifact": "onnx", "what": what, "arch": arch, "hparams": dict(hparams), "weights_sha256": weights_sha256,
        "precision": precision, "io_dtype": "float32", "opset": opset, "shape_mode": shape_mode,
        "tile": list(tile) if tile else None, "batch": batch,
        # lway_rt's release (not its commit, which an edit of any file or a pull changes): what it writes into the
        # graph (its metadata, the fp16 pass, the cap's blend) may change with a release, and a file of the release
        # before is then no cache hit (57B-3, 57F-1)
        "versions": {k: v for k, v in installed_versions(("lway_rt", "torch", "onnx", "onnxscript")).items()
                     if k != "lway_rt_commit"},
        # the file describes itself (lway_rt.* metadata_props, export.pipeline.onnx_metadata): files exported before
        # it did are not cache hits, so a capped one moved away from its manifest is never tiled; 2: the output said
        # unclipped, the encoder's input said the upsampled LR (57B-2, 57B-9)
        "metadata": 2,
    }
    if precision == "fp16":
        fields["keep_fp32_ops"] = sorted(keep_fp32_ops)
        fields["keep_fp32_nodes"] = sorted(keep_fp32_nodes)
    return fields


def engine_key_fields(*, onnx_sha256: str, shapes: Mapping[str, Any], precision: str, workspace_mib: int,
                      optimization_level: int, flags: tuple[str, ...], trt_version: str, gpu_name: str,
                      compute_capability: str) -> dict[str, Any]:
    return {
        "artifact": "tensorrt-engine", "onnx_sha256": onnx_sha256, "shapes": dict(shapes), "precision": precision,
        "io_dtype": "float32", "workspace_mib": workspace_mib, "optimization_level": optimization_level,
        "flags": sorted(flags), "tensorrt": trt_version, "gpu": gpu_name, "compute_capability": compute_capability,
    }


# bytes of a label in an export's file names: the rest of the longest name, an engine's
# (".encoder.fp16.4096x4096.<key 12>.<key 12>.engine", 56 bytes), fits in a file name's 255 beside it
LABEL_MAX = 191


def safe_label(text: str) -> str:
    """A file-name-safe label: letters and digits (any script: 'ünï' stays, it is not cut to 'n'), '-', '_' and '.'
    only."""
    label = re.sub(r"[^\w.-]+", "-", text).strip(".-")
    return label or "model"


def artifact_label(label: str) -> str:
    """The model's label as it begins its export's file names: ``safe_label``'s, cut to ``LABEL_MAX`` bytes (the key
    keeps names apart), so the longest file (an engine's) stays a legal file name: a store name of 230-243 bytes,
    which a file name takes, had made every export of it fail."""
    from lway_rt.io.weights import _cut_utf8

    return _cut_utf8(safe_label(label).encode(), LABEL_MAX)


def artifact_stem(label: str, what: str, precision: str, key: str, tile: tuple[int, int] | None = None) -> str:
    """The name an export's files share: the model's label (``artifact_label``), what it holds, its precision, its
    tile and its key."""
    parts = [artifact_label(label), what, precision]
    if tile:
        parts.append(f"{tile[0]}x{tile[1]}")
    parts.append(key[:12])
    return ".".join(parts)
