"""Training data of stage 2: each LR image, its bicubic upsampling, and random patch pairs.

E and R see the LR bicubic-upsampled to SR size (DESIGN §2.4); patches are cut at the same positions
from the LR and from its upsampling (LR position times the scale). The upsampling is not kept: each
window of it is made from the LR window under it plus a margin wider than the bicubic kernel
(``upsampled_window``), which gives the whole image's values (bit for bit at scales 2 and 4) while
an image costs its LR only, not the scale² times larger upsampling (a 1080p frame: 25 MB instead of
420 MB). A batch may mix images: each patch carries the index of its image, so the loss can pick
that image's reconstructor constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from lway_rt.adapt.config import MIN_PATCH
from lway_rt.errors import InputError

__all__ = ["AdaptImage", "Batch", "bicubic_up", "bicubic_down", "upsampled_window", "sample_batch", "fixed_patches", "dihedral",
           "undo_dihedral", "DIHEDRAL"]

DIHEDRAL = 8  # the symmetries of a square: 4 rotations, each with and without a left-right flip


def bicubic_up(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling by an integer scale, clamped to [0, 1]."""
    return F.interpolate(x, scale_factor=float(scale), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def upsampled_window(lr: torch.Tensor, scale: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """``bicubic_up(lr, scale)[..., top:top + height, left:left + width]`` (a window in SR pixels) from the LR window
    under it plus a 3-px margin (the bicubic kernel reaches 2 px), so only that window is upsampled; where the window
    meets the image's edge, the edge is the LR's own, as in the whole image's upsampling."""
    box = []
    for n, start, size in ((lr.shape[-2], top, height), (lr.shape[-1], left, width)):
        lo, hi = max(0, start // scale - 3), min(n, -(-(start + size) // scale) + 3)
        box.append((lo, hi, start - lo * scale, size))
    (y0, y1, dy, sh), (x0, x1, dx, sw) = box
    return bicubic_up(lr[..., y0:y1, x0:x1], scale)[..., dy:dy + sh, dx:dx + sw]


def bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Anti-aliased bicubic downsampling by an integer scale (the PIL / MATLAB ``imresize`` kind)."""
    h, w = x.shape[-2:]
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=True)


def _turn(x: torch.Tensor, code: int) -> torch.Tensor:
    x = x.flip(-1) if code >= 4 else x
    return torch.rot90(x, code % 4, dims=(-2, -1))


def _unturn(x: torch.Tensor, code: int) -> torch.Tensor:
    x = torch.rot90(x, -(code % 4), dims=(-2, -1))
    return x.flip(-1) if code >= 4 else x


def dihedral(x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
    """Patch ``i`` of ``x`` (N, C, p, p) flipped left-right when ``codes[i] >= 4``, then turned by
    ``codes[i] % 4`` quarter turns (``AdaptConfig.augment``); ``codes`` None returns ``x`` itself."""
    if codes is None:
        return x
    return torch.stack([_turn(x[i], int(c)) for i, c in enumerate(codes.tolist())])


def undo_dihedral(x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
    """The inverse of ``dihedral`` with the same codes (any patch size: S's output is ``scale`` x larger)."""
    if codes is None:
        return x
    return torch.stack([_unturn(x[i], int(c)) for i, c in enumerate(codes.tolist())])


@dataclass
class AdaptImage:
    """One LR input prepared for adaptation (tensors on the run's device, batch dim 1)."""

    name: str
    lr: torch.Tensor  # (1, 3, h, w) in [0, 1]
    scale: int

    @classmethod
    def from_lr(cls, name: str, lr: torch.Tensor, scale: int) -> AdaptImage:
        if lr.dim() == 3:
            lr = lr.unsqueeze(0)
        return cls(name, lr, int(scale))

    @property
    def up(self) -> torch.Tensor:
        """The whole bicubic upsampling ``(1, 3, h*s, w*s)``, made on each call (the loop takes windows instead)."""
        return bicubic_up(self.lr, self.scale)

    def up_window(self, top: int, left: int, height: int, width: int) -> torch.Tensor:
        """The upsampling under the LR window ``[top:top + height, left:left + width]`` (LR pixels)."""
        s = self.scale
        return upsampled_window(self.lr, s, top * s, left * s, height * s, width * s)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.lr.shape[-2]), int(self.lr.shape[-1])

    def centre_window(self, side: int, multiple: int = 1) -> tuple[int, int, int]:
        """``(top, left, side)`` of the centred square LR window of at most ``side`` px whose side is a multiple
        of ``multiple`` (the crops the anchor trust, the detail change and the contact sheet look at)."""
        h, w = self.size
        side = min(side, h, w)
        side -= side % multiple
        return (h - side) // 2, (w - side) // 2, side


@dataclass
class Batch:
    """Patch pairs for one step. ``index[i]`` is the image that patch ``i`` was cut from.

    ``sup_lr``/``sup_hr`` are the step's synthetic supervised pairs (``synthetic.py``), set by the
    driver when ``sup_weight > 0``; they are not cut from the test images.
    """

    lr: torch.Tensor  # (B, 3, p, p)
    up: torch.Tensor  # (B, 3, p*s, p*s)
    index: torch.Tensor  # (B,) long
    anchor: torch.Tensor | None = None  # the unadapted model's output on ``lr`` (drift guard)
    anchor_scale: torch.Tensor | None = None  # (B,) per-patch factor on the anchor term (anchor_trust)
    guard_scale: torch.Tensor | None = None  # (B,) per-patch factor on the detail guard (detail_guard_gate)
    sup_lr: torch.Tensor | None = None  # (B', 3, p, p) degraded synthetic LR
    sup_hr: torch.Tensor | None = None  # (B', 3, p*s, p*s) its clean HR
    turn: torch.Tensor | None = None  # (B,) dihedral codes: S sees dihedral(lr, turn) (AdaptConfig.augment)


def check_patch_fits(sizes: Sequence[tuple[str, tuple[int, int]]], patch: int) -> None:
    """Images (name, (height, width)) smaller than the patch are refused with the largest patch size that would work."""
    small = [(name, hw) for name, hw in sizes if min(hw) < patch]
    if small:
        name, (h, w) = small[0]
        smallest = min(min(hw) for _, hw in sizes)
        more = f" (and {len(small) - 1} more)" if len(small) > 1 else ""
        if smallest < MIN_PATCH:  # no patch size would do: do not offer one the settings refuse
            name, (h, w) = next((name, hw) for name, hw in sizes if min(hw) == smallest)
            raise InputError(f"image {name} is {w}x{h} px, too small to adapt on (patches are at least {MIN_PATCH} px, "
                             "16 or more to learn from): leave it out, or adapt on larger images of the same source")
        raise InputError(f"image {name} is {w}x{h} px{more}, smaller than the {patch}-px patch: "
                         f"use --patch-size {smallest} or less, or leave that image out")


def _cut(images: list[AdaptImage], idx: list[int], tops: list[int], lefts: list[int], patch: int, scale: int) -> Batch:
    lr = torch.cat([images[i].lr[..., t:t + patch, l:l + patch] for i, t, l in zip(idx, tops, lefts)])
    up = torch.cat([images[i].up_window(t, l, patch, patch) for i, t, l in zip(idx, tops, lefts)])
    return Batch(lr=lr, up=up, index=torch.tensor(idx, dtype=torch.long, device=lr.device))


def sample_batch(images: list[AdaptImage], batch_size: int, patch: int, scale: int, gen: torch.Generator,
                 only: int | None = None, pool: Sequence[int] | None = None) -> Batch:
    """``batch_size`` random patches; each from a random image (of the indices ``pool``, or all), or from image
    ``only``. Without ``pool`` the draws are those of every earlier version."""
    if only is not None:
        idx = [only] * batch_size
    elif pool is None:
        idx = torch.randint(len(images), (batch_size,), generator=gen).tolist()
    else:
        idx = [pool[j] for j in torch.randint(len(pool), (batch_size,), generator=gen).tolist()]
    tops, lefts = [], []
    for i in idx:
        h, w = images[i].size
        tops.append(int(torch.randint(h - patch + 1, (1,), generator=gen)))
        lefts.append(int(torch.randint(w - patch + 1, (1,), generator=gen)))
    return _cut(images, idx, tops, lefts, patch, scale)


def fixed_patches(images: list[AdaptImage], patch: int, scale: int, limit: int = 8,
                  pool: Sequence[int] | None = None) -> Batch:
    """One centred patch from each of the first ``limit`` images (of the indices ``pool``, or all): a fixed set to
    watch the loss on."""
    chosen = list(range(len(images)) if pool is None else pool)[:limit]
    tops = [(images[i].size[0] - patch) // 2 for i in chosen]
    lefts = [(images[i].size[1] - patch) // 2 for i in chosen]
    return _cut(images, chosen, tops, lefts, patch, scale)
