"""Haar wavelet transform in torch, and the high-frequency weight map of LWay's loss.

LWay (Chen et al., CVPR 2024) weights its reconstruction loss by the high-frequency energy of the
reconstructed image: the L2 norm of the three detail bands of ``pywt.dwt2(img, 'haar')``,
normalised to [0, 1]. ``pywt`` stays the reference; this module reproduces it in torch (tested to
1e-6) so the map is computed on the same device as the loss, batched, without a numpy round trip.

Conventions matched to PyWavelets 1.x, ``mode='symmetric'`` (its default):
- for a 2x2 block [[a, b], [c, d]]: cA = (a+b+c+d)/2, cH = (a+b-c-d)/2, cV = (a-b+c-d)/2,
  cD = (a-b-c+d)/2;
- an odd side is extended by repeating its last row/column (half-sample symmetric extension, which
  for a length-2 filter is exactly one repeated sample), so the output has ``ceil(n/2)`` samples.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["haar_dwt2", "hf_energy", "hf_weight", "detail_energy", "detail_ratio", "detail_cap", "cap_fraction",
           "luma_detail", "HF_MODES"]

HF_MODES = ("luma", "channel")

# BT.601 luma weights; only the relative weights matter after min-max normalisation.
_LUMA = (0.299, 0.587, 0.114)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luminance of ``(B, 3, H, W)``, ``(B, 1, H, W)``, in ``x``'s dtype."""
    return (x * torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def haar_dwt2(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Single-level 2-D Haar DWT of the last two dims: returns (cA, cH, cV, cD) like ``pywt.dwt2``."""
    if x.dim() < 2:
        raise ValueError(f"haar_dwt2 needs at least 2 dims, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        lead = x.shape[:-2]
        flat = x.reshape(-1, 1, h, w)
        flat = F.pad(flat, (0, w % 2, 0, h % 2), mode="replicate")
        x = flat.reshape(*lead, h + h % 2, w + w % 2)
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    ca = (a + b + c + d) * 0.5
    ch = (a + b - c - d) * 0.5
    cv = (a - b + c - d) * 0.5
    cd = (a - b - c + d) * 0.5
    return ca, ch, cv, cd


def hf_energy(x: torch.Tensor) -> torch.Tensor:
    """sqrt(cH^2 + cV^2 + cD^2) at half resolution (same leading dims as ``x``)."""
    _, ch, cv, cd = haar_dwt2(x)
    return torch.sqrt(ch * ch + cv * cv + cd * cd)


HF_NORMS = ("patch", "batch")


def hf_weight(img: torch.Tensor, mode: str = "luma", eps: float = 1e-12, norm: str = "patch") -> torch.Tensor:
    """High-frequency weight map of a batch ``(B, C, H, W)``, detached, in [0, 1], full size.

    ``mode='luma'`` (default) takes the map of the BT.601 luminance and shares it across channels:
    edges and texture are where the eye and the Y-PSNR look, and one map keeps a colour fringe in
    one channel from steering the weight. ``mode='channel'`` takes one map per channel.
    ``norm='patch'`` (default, as LWay describes it): each image's map (each channel's, in channel
    mode) is min-max normalised on its own, so a near-flat patch's faint texture gets the same
    range of weight as a textured patch's edges. ``norm='batch'``: one min and max over the whole
    batch (per channel in channel mode), so patches weigh by their detail against each other. A
    flat image (max == min) gets an all-zero map. The half-size map is brought back to full size by
    nearest x2 and cropped to ``H x W`` for odd sizes.
    """
    if mode not in HF_MODES:
        raise ValueError(f"unknown HF weight mode {mode!r}; use one of {', '.join(HF_MODES)}")
    if norm not in HF_NORMS:
        raise ValueError(f"unknown HF weight normalisation {norm!r}; use one of {', '.join(HF_NORMS)}")
    if img.dim() != 4:
        raise ValueError(f"hf_weight expects (B, C, H, W), got shape {tuple(img.shape)}")
    with torch.no_grad():
        x = img.detach().float()
        b, c, h, w = x.shape
        if mode == "luma" and c == 3:
            x = _luma(x)
        elif mode == "luma":
            x = x.mean(dim=1, keepdim=True)
        e = hf_energy(x)  # (B, C', ceil(H/2), ceil(W/2))
        flat = e.flatten(2) if norm == "patch" else e.transpose(0, 1).flatten(1)[None]  # (1, C', B*h*w)
        lo = flat.min(dim=2, keepdim=True).values
        hi = flat.max(dim=2, keepdim=True).values
        span = hi - lo
        scaled = torch.where(span > eps, (flat - lo) / span.clamp_min(eps), torch.zeros_like(flat))
        if norm == "patch":
            e = scaled.view_as(e)
        else:
            e = scaled[0].view(e.shape[1], e.shape[0], *e.shape[2:]).transpose(0, 1)
        full = e.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., :h, :w]
        if full.shape[1] == 1 and c != 1:
            full = full.expand(b, c, h, w)
        return full.to(img.dtype)


def detail_energy(img: torch.Tensor, border: int = 0) -> torch.Tensor:
    """Fine detail of a batch ``(B, 3, H, W)``: the summed energy of the one-level Haar detail bands of its
    BT.601 luminance, ``border`` pixels cropped from each side; one number per image, ``(B,)`` (float64 input stays
    float64, anything else is computed in float32).
    (``benchmarks/quality.py``'s ``hf_ratio`` is this of an output over this of the truth.)"""
    with torch.no_grad():
        x = img.detach()
        return _detail_sum(x if x.dtype == torch.float64 else x.float(), border)


def detail_ratio(img: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per image, ``detail_energy(img) / detail_energy(ref)`` of two ``(B, 3, H, W)`` batches, differentiable in
    ``img`` (``ref`` is detached): the training-side detail guard's measure (``AdaptConfig.detail_guard``)."""
    return _detail_sum(img, 0) / (_detail_sum(ref.detach(), 0) + eps)


def _detail_sum(x: torch.Tensor, border: int) -> torch.Tensor:
    """The summed squares of ``luma_detail(x, border)`` per image, ``(B,)``, in ``x``'s dtype, with its graph."""
    d = luma_detail(x, border)
    return (d * d).sum(dim=(1, 2, 3))


def luma_detail(x: torch.Tensor, border: int) -> torch.Tensor:
    """The three one-level Haar detail bands of the BT.601 luminance of ``(B, 3, H, W)``, stacked ``(B, 3, h, w)``."""
    if border:
        x = x[..., border:-border, border:-border]
    y = _luma(x)
    y = y[..., : y.shape[-2] // 2 * 2, : y.shape[-1] // 2 * 2]
    _, ch, cv, cd = haar_dwt2(y)
    return torch.cat([ch, cv, cd], dim=1)


def cap_fraction(d0: torch.Tensor, dd: torch.Tensor, cap: float) -> torch.Tensor:
    """Per image, the largest s in [0, 1] with energy(d0 + s dd) <= cap x energy(d0), for detail bands ``d0`` (the
    unadapted image's) and ``dd`` (of adapted - unadapted), ``(B, ...)``; ``(B,)`` in their dtype. The energy is the
    quadratic A + 2 B s + C s^2, so s is its root; written with ``torch.where`` (no data-dependent branch), so the
    exported graph of ``export.capped`` computes it too."""
    d0, dd = d0.flatten(1), dd.flatten(1)
    a, b, c = (d0 * d0).sum(1), (d0 * dd).sum(1), (dd * dd).sum(1)
    within = a + 2 * b + c <= cap * a
    floor = 1e-300 if c.dtype == torch.float64 else 1e-30  # C = 0 is within the cap; the floor only avoids 0 / 0
    root = (-b + torch.sqrt(torch.clamp(b * b + c * a * (cap - 1), min=0.0))) / torch.clamp(c, min=floor)
    return torch.where(within, torch.ones_like(a), torch.clamp(root, 0.0, 1.0))  # c = 0 (no change) is within: a <= cap a


def detail_cap(base: torch.Tensor, new: torch.Tensor, cap: float, border: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Hold the fine detail an adapted output adds over the unadapted one at ``cap``x, per image, by blending.

    ``base`` and ``new`` are the unadapted and adapted model's outputs of the same inputs, ``(B, 3, H, W)``.
    Returns ``(out, s)``: ``out = base + s (new - base)`` with, per image, the largest ``s`` in [0, 1] whose
    ``detail_energy`` (``border`` px cropped) is at most ``cap`` x that of ``base`` (``s = 1`` where ``new``
    is within the cap already). The Haar transform is linear, so the energy of the blend is a quadratic in
    ``s``, ``A + 2 B s + C s^2``, and ``s`` is its root: no search. No ground truth is used: on the quality
    benchmark the crops adaptation made worse were those where it had added the most detail (``detail_flag``).
    """
    if cap < 1:
        raise ValueError(f"detail cap must be at least 1 (1: no more detail than the unadapted output), got {cap}")
    if base.shape != new.shape or base.dim() != 4:
        raise ValueError(f"detail_cap needs two (B, 3, H, W) batches of one shape, got {tuple(base.shape)} and {tuple(new.shape)}")
    with torch.no_grad():
        x0 = base.detach().double()
        s = cap_fraction(luma_detail(x0, border), luma_detail(new.detach().double() - x0, border), cap)
        k = s.to(base.dtype).view(-1, 1, 1, 1)
        out = torch.where(k == 1, new, base + k * (new - base))  # within the cap: exactly ``new``
    return out, s
