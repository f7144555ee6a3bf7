"""Embeddings for stage 2 from the backend of your choice: torch, ONNX Runtime or TensorRT.

Stage 2 computes one embedding per image with the frozen encoder E. ``make_encoder_fn`` returns a
function ``x -> e`` (x: (B, 3, H, W) in [0, 1], H, W >= 22; e: (B, D) float32) that runs E in
eager torch, or exports E once (cached under ``cache_dir``, parity-gated to 1e-4 relative) and
runs the ONNX with ONNX Runtime or a TensorRT engine. The function accepts and returns the same
type it is given: a torch tensor (returned on the input's device) or a numpy array.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lway_rt.errors import InputError

__all__ = ["BACKENDS", "make_encoder_fn", "default_cache_dir"]

BACKENDS = ("torch", "onnxruntime", "tensorrt")
EncoderFn = Callable[[torch.Tensor | np.ndarray], torch.Tensor | np.ndarray]


def default_cache_dir() -> Path:
    """``$LWAYRT_HOME/engines`` (beside the model store)."""
    from lway_rt.io.store import store_dir

    return store_dir().parent / "engines"


def _wrap_numpy(run: Callable[[np.ndarray], np.ndarray]) -> EncoderFn:
    def fn(x):
        if isinstance(x, torch.Tensor):
            out = run(x.detach().float().cpu().numpy())
            return torch.from_numpy(out).to(x.device)
        return run(np.asarray(x, dtype=np.float32))

    return fn


def make_encoder_fn(stage1, backend: str = "torch", *, cache_dir: str | Path | None = None, precision: str = "fp32",
                    label: str | None = None, threads: int | None = None, log=None) -> EncoderFn:
    """A function computing ``stage1.encoder``'s embeddings with ``backend``.

    ``onnxruntime``/``tensorrt`` export the encoder on first use into ``cache_dir`` (default
    ``$LWAYRT_HOME/engines``) and reuse it afterwards (same cache keys as ``lwayrt export``).
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown encoder backend {backend!r}; use one of {', '.join(BACKENDS)}")
    encoder = stage1.encoder.eval()
    if backend == "torch":
        def torch_fn(x):
            # Run in the encoder's own dtype and device (an fp64 copy stays fp64, as a reference must).
            param = next(encoder.parameters())
            with torch.no_grad():
                if isinstance(x, torch.Tensor):
                    return encoder(x.to(param.dtype))
                return encoder(torch.from_numpy(np.asarray(x, np.float32)).to(param.device, param.dtype)).cpu().numpy()

        return torch_fn

    from lway_rt.export.pipeline import encoder_exportable, export_artifacts
    from lway_rt.export.profile import ExportProfile

    if backend == "tensorrt":  # fail fast, before exporting anything
        from lway_rt.export.tensorrt import require_tensorrt

        require_tensorrt("the tensorrt encoder backend", "use the onnxruntime or torch encoder backend")
    # The exporter and the parity reference run on the CPU; keep the caller's module where it is.
    device = next(encoder.parameters()).device
    cpu_stage1 = stage1 if device.type == "cpu" else _cpu_copy(stage1)
    digest_label = label or f"stage1-{stage1.meta.get('trunk_model', 'encoder')}"
    ex = encoder_exportable(cpu_stage1, label=digest_label)
    profile = ExportProfile(name="encoder", precision=precision, engine="tensorrt" if backend == "tensorrt" else "none")
    (res,) = export_artifacts(ex, profile, out_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
                              log=log or (lambda _m: None))
    if backend == "onnxruntime":
        from lway_rt.runtime.ort import create_session, run_session

        session = create_session(res.onnx_path, threads=threads)
        return _wrap_numpy(lambda x: run_session(session, x))

    from lway_rt.export.tensorrt import TrtRunner, load_engine

    handle = load_engine(res.engine_path.read_bytes())
    if handle is None:
        raise InputError(f"TensorRT cannot load {res.engine_path}; delete it and retry")
    return _wrap_numpy(TrtRunner(handle))


def _cpu_copy(stage1):
    import copy

    s = copy.copy(stage1)
    s.encoder = copy.deepcopy(stage1.encoder).cpu()
    return s
