"""An adapted SR network with its per-image detail cap, as one exportable graph.

``lwayrt adapt --detail-cap C`` writes each image as unadapted + s (adapted - unadapted), with the largest s in
[0, 1] whose fine detail (``wavelet.detail_energy``: the Haar detail energy of Y, the scale's border cropped) is at
most C x the unadapted image's; ``lwayrt upscale`` repeats it with the base model. An engine of the adapted network
alone cannot, so ``lwayrt export`` builds ``CappedSR``: both networks on the same input and the blend, written
with ops an ONNX exporter keeps in the graph (no data-dependent Python branch, no float64), so the exported file
gives the capped image. It is applied per input the engine is given: whole frames reproduce ``upscale --tile 0``;
a caller that tiles caps each tile.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lway_rt.adapt.wavelet import cap_fraction, luma_detail

__all__ = ["DetailCapBlend", "CappedSR", "capped_descriptor", "capped_sr_exportable", "fp32_nodes", "CAP_MODULE"]

CAP_MODULE = "cap"  # the blend's module path in CappedSR: kept in fp32 by the fp16 pass (its sums exceed fp16's range)


class DetailCapBlend(nn.Module):
    """``wavelet.detail_cap(base, new, cap, border)`` for ``(B, 3, H, W)`` batches, in float32 (where the exported
    graph runs) instead of float64, per image: the same detail bands (``wavelet.luma_detail``) and closed form
    (``wavelet.cap_fraction``)."""

    def __init__(self, cap: float, border: int):
        super().__init__()
        if not cap >= 1:
            raise ValueError(f"detail cap must be at least 1, got {cap}")
        self.cap, self.border = float(cap), int(border)

    def forward(self, base: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        x0, step = base.float(), new.float() - base.float()
        s = cap_fraction(luma_detail(x0, self.border), luma_detail(step, self.border), self.cap)
        return (x0 + s.view(-1, 1, 1, 1) * step).to(new.dtype)


class CappedSR(nn.Module):
    """The unadapted and the adapted network on one input, each output clamped to [0, 1] (as ``adapt`` and
    ``upscale`` clamp the images they cap), blended by ``DetailCapBlend``."""

    def __init__(self, base: nn.Module, adapted: nn.Module, cap: float, border: int):
        super().__init__()
        self.base, self.adapted = base, adapted
        setattr(self, CAP_MODULE, DetailCapBlend(cap, border))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, CAP_MODULE)(self.base(x).clamp(0, 1), self.adapted(x).clamp(0, 1))


def fp32_nodes(module: nn.Module) -> tuple[str, ...]:
    """Module paths an fp16 export of ``module`` must keep in fp32: the blend of a ``CappedSR``, else none."""
    return (CAP_MODULE,) if isinstance(module, CappedSR) else ()


def capped_descriptor(desc, base_desc, cap: float):
    """``desc`` (adapted weights) held at ``cap`` against ``base_desc`` (its unadapted model), as a
    ``ModelDescriptor`` whose network is the ``CappedSR`` (what ``serve-bench`` deploys): the scale's border is
    cropped as ``upscale`` crops it, the size rules cover both networks and keep a 2 x 2 block inside the border,
    and it is not tiling-safe (each tile would be capped on its own)."""
    from dataclasses import replace

    from lway_rt.archs.descriptor import ModelDescriptor

    module = CappedSR(base_desc.model.eval(), desc.model.eval(), cap, desc.scale).eval()
    spec = replace(desc.spec, size_multiple=max(desc.size_multiple, base_desc.size_multiple),
                   min_size=max(desc.min_size, base_desc.min_size, math.ceil((2 + 2 * desc.scale) / desc.scale)),
                   fp16_safe=desc.fp16_safe and base_desc.fp16_safe, tiling_safe=False)
    return ModelDescriptor(module, spec, name=desc.name, source=desc.source, metadata=dict(desc.metadata or {}))


def capped_sr_exportable(desc, base_desc, cap: float, *, label: str | None = None, model_spec: str | None = None,
                         base_spec: str | None = None):
    """The ``Exportable`` of ``desc`` (adapted weights) held at ``cap`` against ``base_desc`` (its unadapted model),
    with the scale's border cropped as ``upscale`` crops it; its weights hash covers both networks."""
    from lway_rt.export.pipeline import Exportable, sr_exportable
    from lway_rt.io.weights import state_dict_sha256

    plain = sr_exportable(desc, label=label, model_spec=model_spec)
    capped = capped_descriptor(desc, base_desc, cap)
    base_sha = state_dict_sha256(base_desc.model.state_dict())
    hparams = {**plain.hparams, "detail_cap": float(cap), "detail_cap_border": desc.scale, "base_sha256": base_sha}
    from lway_rt.io.store import loadable_spec

    source = {**plain.source, "detail_cap": {"cap": float(cap), "base_model": base_spec or loadable_spec(base_desc),
                                             "base_sha256": base_sha, "adapted_sha256": plain.weights_sha256}}
    return Exportable(capped.model, "sr", "image", f"{plain.label}-cap{cap:g}", plain.arch, hparams,
                      state_dict_sha256(capped.model.state_dict()), plain.in_channels,
                      capped.size_multiple, capped.min_size, source)
