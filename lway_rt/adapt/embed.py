"""Degradation embeddings of the inputs: E runs once per image, never per iteration.

``compute_embeddings`` is the one place embeddings are computed, so a deployment backend (ONNX
Runtime, TensorRT) can replace eager PyTorch here without touching the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lway_rt.errors import InputError
from lway_rt.export.encoder_backend import BACKENDS, make_encoder_fn

__all__ = ["compute_embeddings", "embedding_input", "freeze_stage1", "prepare_stage1", "PreparedReconstructor", "select_prepared", "EMBED_MAX_SIDE", "BACKENDS"]

# E pools globally, so the degradation of a large image is read from a centred crop of this many
# SR-size pixels a side; it bounds the cost of one encoder pass on big photos.
EMBED_MAX_SIDE = 512


def _centre_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return x[..., top:top + min(h, side), left:left + min(w, side)]


def embedding_input(lr: torch.Tensor, scale: int, target: str = "sr", max_side: int = EMBED_MAX_SIDE) -> torch.Tensor:
    """What E reads of one LR image ``(1, 3, h, w)`` (or ``(3, h, w)``), as ``compute_embeddings`` would crop it from
    the whole bicubic-upsampled image (the LR itself for the ``lr-recon`` target), without upsampling the whole image:
    only the LR window under the centred crop, plus a margin wider than the bicubic kernel, is upsampled (so a
    large photo costs one 512-px crop, and the crop's values are those of the whole image's upsampling)."""
    from lway_rt.adapt.patches import upsampled_window

    lr = lr.unsqueeze(0) if lr.dim() == 3 else lr
    if target == "lr-recon":
        return _centre_crop(lr, max_side)
    (top, height), (left, width) = ((max(0, (n * scale - max_side) // 2), min(n * scale, max_side)) for n in lr.shape[-2:])
    return upsampled_window(lr, scale, top, left, height, width)


def compute_embeddings(images: Sequence[torch.Tensor], stage1, backend: str = "torch",
                       max_side: int = EMBED_MAX_SIDE, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Embeddings ``(N, D)`` of N images (the bicubic-upsampled LRs, or the LRs themselves for the
    ``lr-recon`` target), each ``(3, H, W)`` or ``(1, 3, H, W)``. ``progress`` is called with the number of images
    embedded after each one.

    Images may differ in size (each runs alone). ``stage1`` is a ``lway_rt.degae.Stage1``.
    ``backend`` "onnxruntime" or "tensorrt" exports E once (parity-gated, cached beside the model
    store) and runs the exported graph instead of eager PyTorch.
    """
    from lway_rt.degae import MIN_ENCODER_SIDE

    if backend not in BACKENDS:
        raise InputError(f"encoder backend {backend!r} is not available; use one of {', '.join(BACKENDS)}")
    enc = stage1.encoder
    was_training = enc.training
    enc.eval()
    run = make_encoder_fn(stage1, backend)
    out = []
    try:
        with torch.no_grad():
            for x in images:
                x = x.unsqueeze(0) if x.dim() == 3 else x
                if min(x.shape[-2:]) < MIN_ENCODER_SIDE:
                    raise InputError(f"an encoder input of {x.shape[-1]}x{x.shape[-2]} px is below the encoder's "
                                     f"minimum of {MIN_ENCODER_SIDE} px a side: use larger images")
                out.append(run(_centre_crop(x, max_side)))
                if progress is not None:
                    progress(len(out))
    finally:
        enc.train(was_training)
    return torch.cat(out)


def select_prepared(prepared, index: torch.Tensor):
    """Pick rows ``index`` of every tensor in R's prepared constants (batch dimension first)."""
    if isinstance(prepared, torch.Tensor):
        return prepared.index_select(0, index)
    if isinstance(prepared, (tuple, list)):
        return type(prepared)(select_prepared(p, index) for p in prepared)
    raise TypeError(f"unexpected prepared constant of type {type(prepared).__name__}")


class PreparedReconstructor:
    """The frozen R with every input image's constants computed once (``R.prepare`` of all embeddings).

    Calling it with clean patches and their image indices runs ``R.apply`` with those images'
    constants, so a batch may mix images.
    """

    def __init__(self, reconstructor, embeddings: torch.Tensor):
        self.reconstructor = reconstructor
        with torch.no_grad():
            self.prepared = reconstructor.prepare(embeddings)
        self.count = int(embeddings.shape[0])

    def __call__(self, clean: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.reconstructor.apply(clean, select_prepared(self.prepared, index))


def freeze_stage1(stage1) -> None:
    """E and R in eval mode with no gradients: stage 2 never trains them."""
    for m in (stage1.encoder, stage1.reconstructor):
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)


def prepare_stage1(stage1, up_images: Sequence[torch.Tensor], backend: str = "torch") -> tuple[PreparedReconstructor, torch.Tensor]:
    """Freeze stage 1, embed every image once and prepare R's constants: (callable R, embeddings)."""
    freeze_stage1(stage1)
    emb = compute_embeddings(up_images, stage1, backend=backend)
    return PreparedReconstructor(stage1.reconstructor, emb), emb
