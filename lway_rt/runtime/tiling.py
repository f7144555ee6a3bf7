"""Tiled inference: run an SR network on images too large for one pass, seam-free.

Works with any callable that maps an NCHW batch to an NCHW batch ``scale`` times larger (a torch
module, an ONNX Runtime or TensorRT session wrapped in a function). The idea is the one of
Real-ESRGAN's ``tile``/``tile_pad`` options; the layout and blending here are our own:

* The image is reflect-padded at the bottom/right to the model's size multiple (pixel-unshuffle
  variants need H and W divisible by 2 or 4) and the output cropped back.
* Along each axis the image takes as many tiles as ``tile`` needs, all of one size (at most
  ``tile``): the smallest that gives neighbours twice ``overlap`` and at least 64 px where that
  fits (``axis_tile``),
  so an image a little larger than a tile does not pay for full tiles that overlap by the
  leftover. Tiles start on multiples of the size multiple, so each sees the same pixel grouping as
  a whole-image pass would. Their starts are spread evenly; neighbours overlap by at least
  ``overlap`` input pixels.
* Where two tiles overlap, each output pixel is taken from both with weights that sum to one:
  ``"linear"`` ramps from one tile to the other across a band centred in the overlap (half the
  overlap wide, so a tile's outermost, context-starved pixels get no weight); ``"crop"``
  cuts hard in the middle of the overlap (each pixel comes from the tile where it is most
  central). Weights are separable, so the 2-D blend sums to one as well.

``tile=0`` runs the whole (padded) image in one pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = ["TileConfig", "axis_tile", "tile_starts", "tile_layout", "blend_weights", "pad_to_multiple", "upscale_tensor",
           "tile_progress"]

# what ``upscale_tensor`` calls after each tile, (tiles done, tiles of the image), where a caller set it
_TILE_HOOK: ContextVar[Callable[[int, int], None] | None] = ContextVar("lway_rt_tile_hook", default=None)


@contextlib.contextmanager
def tile_progress(hook: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, ``hook(done, total)`` is called after each tile of a tiled image (a large image on a CPU
    takes minutes, and its progress was said only once it was written)."""
    token = _TILE_HOOK.set(hook)
    try:
        yield
    finally:
        _TILE_HOOK.reset(token)

ModelFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class TileConfig:
    """How to cut an image into tiles. ``tile`` and ``overlap`` are in input pixels."""

    tile: int = 0
    overlap: int = 16
    blend: str = "linear"

    def __post_init__(self):
        if self.tile < 0:
            raise ValueError(f"tile must be 0 (whole image) or positive, got {self.tile}")
        if self.overlap < 0:
            raise ValueError(f"tile overlap must be >= 0, got {self.overlap}")
        if self.tile and self.tile <= 2 * self.overlap:
            raise ValueError(f"tile ({self.tile}) must be more than twice the overlap ({self.overlap}): "
                             "raise the tile size or lower the overlap")
        if self.blend not in ("linear", "crop"):
            raise ValueError(f"blend must be 'linear' or 'crop', not {self.blend!r}")


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of equal tiles covering ``[0, length)``; each a multiple of ``multiple``.

    ``length`` and ``tile`` must already be multiples of ``multiple``.
    """
    if tile >= length:
        return [0]
    if tile - overlap < multiple:
        raise ValueError(f"tiles of {tile} px overlapping by {overlap} cannot start on multiples of {multiple} px")
    n = math.ceil((length - overlap) / (tile - overlap))
    span = length - tile
    starts = sorted({min(span, int(round(span * i / (n - 1) / multiple)) * multiple) for i in range(n)})
    # Rounding to the multiple can shrink a gap below `overlap`'s complement; add tiles if it did.
    while any(b - a > tile - overlap for a, b in zip(starts, starts[1:])):
        n += 1
        starts = sorted({min(span, int(round(span * i / (n - 1) / multiple)) * multiple) for i in range(n)})
    return starts


def blend_weights(starts: list[int], tile: int, length: int, scale: int, overlap: int,
                  mode: str = "linear") -> list[torch.Tensor]:
    """1-D output-space weights, one per tile (length ``tile*scale``); they sum to 1 at every pixel."""
    out_len, t_out = length * scale, min(tile, length) * scale
    # Transition band between tile i and i+1: centred in their overlap, half the requested
    # overlap wide (so even the band's ends keep a quarter overlap of context; measured better
    # than ramping across the whole overlap), and never reaching the neighbouring bands.
    mids, widths = [], []
    for a, b in zip(starts, starts[1:]):
        lo, hi = b * scale, (a + min(tile, length)) * scale  # overlap of the two tiles, output px
        mids.append((lo + hi) / 2.0)
        widths.append(0.0 if mode == "crop" else float(min(hi - lo, overlap * scale)) / 2.0)
    for i in range(len(mids)):
        gap_l = mids[i] - mids[i - 1] if i > 0 else math.inf
        gap_r = mids[i + 1] - mids[i] if i + 1 < len(mids) else math.inf
        widths[i] = min(widths[i], gap_l, gap_r)
    pos = torch.arange(out_len, dtype=torch.float64) + 0.5

    def ramp(i: int) -> torch.Tensor:  # 0 before band i, 1 after it
        if widths[i] == 0:
            return (pos >= mids[i]).double()
        return ((pos - (mids[i] - widths[i] / 2)) / widths[i]).clamp(0.0, 1.0)

    weights = []
    for k, s in enumerate(starts):
        w = torch.ones(out_len, dtype=torch.float64)
        if k > 0:
            w = w * ramp(k - 1)
        if k + 1 < len(starts):
            w = w * (1.0 - ramp(k))
        weights.append(w[s * scale:s * scale + t_out].float())
    return weights


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad H and W at the bottom/right up to a multiple: reflect where possible, else replicate."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


ROOMY_OVERLAP = 64  # input px sized tiles keep between neighbours at least, where the tile size allows


def axis_tile(length: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """The tile size along one axis. The side takes as many tiles as ``tile`` needs to cover it with ``overlap``;
    a full ``tile`` each would overlap by whatever is left over (a 1500-px side at 512 / 32: four tiles, 183 px
    apart from the stride, 2.1x the pixels of a 1500x1000 image computed over both axes). Each is instead made as
    small as still gives neighbours twice ``overlap`` and at least ``ROOMY_OVERLAP`` px (more context at the seams
    than the minimum, where that fits in ``tile``: with a small ``--tile-overlap`` the leftover used to hide the
    seams), a multiple of ``multiple``: 423 px there, 1.3x the pixels."""
    if tile >= length:
        return length
    n = math.ceil((length - overlap) / (tile - overlap))
    wide = max(2 * overlap, ROOMY_OVERLAP)
    roomy = math.ceil((length + (n - 1) * wide) / n / multiple) * multiple
    return min(tile, roomy)


def tile_layout(height: int, width: int, config: TileConfig, multiple: int = 1) -> tuple[int, int, int]:
    """``(tile height, tile width, overlap)`` of the tiles ``upscale_tensor`` cuts from an image padded to
    ``height`` x ``width`` (multiples of ``multiple``) with ``config.tile`` > 0: what each call to the model sees."""
    tile = max(multiple, config.tile // multiple * multiple)
    # a tile must advance by at least one size multiple past its overlap, or no layout covers the image
    overlap = max(0, min(config.overlap, tile // 2 - 1, tile - multiple)) if tile > 2 else 0
    return axis_tile(height, tile, overlap, multiple), axis_tile(width, tile, overlap, multiple), overlap


@torch.no_grad()
def upscale_tensor(fn: ModelFn, x: torch.Tensor, scale: int, config: TileConfig = TileConfig(), *,
                   multiple: int = 1, out_device: str | torch.device | None = None) -> torch.Tensor:
    """Run ``fn`` over ``x`` (NCHW float) tile by tile; returns NCHW float32, ``scale`` times larger.

    Tiles are cut from ``x`` where it lives (move it to the model's device first); the output is
    assembled on ``out_device`` (default: ``x``'s device), so a GPU only ever holds one tile's output. A tiled
    output is laid out channels last (an NCHW view of NHWC memory), so ``to_numpy`` needs no copy of it.
    """
    if x.ndim != 4:
        raise ValueError(f"expected an NCHW batch, got shape {tuple(x.shape)}")
    out_device = x.device if out_device is None else torch.device(out_device)
    n, _, h, w = x.shape
    xp = pad_to_multiple(x, multiple)
    hp, wp = xp.shape[-2:]
    if config.tile == 0 or (config.tile >= hp and config.tile >= wp):
        y = fn(xp).to(out_device, torch.float32)
        _check_out(y, xp, scale)
        return y[..., : h * scale, : w * scale]

    th, tw, overlap = tile_layout(hp, wp, config, multiple)
    ys, xs = tile_starts(hp, th, overlap, multiple), tile_starts(wp, tw, overlap, multiple)
    wy = blend_weights(ys, th, hp, scale, overlap, config.blend)
    wx = blend_weights(xs, tw, wp, scale, overlap, config.blend)
    out = None
    hook, done = _TILE_HOOK.get(), 0
    for y0, wgt_y in zip(ys, wy):
        for x0, wgt_x in zip(xs, wx):
            if hook is not None and done:  # (after a tile, once the next is about to begin: the last is the image's)
                hook(done, len(ys) * len(xs))
            done += 1
            patch = xp[..., y0:y0 + th, x0:x0 + tw]
            y = fn(patch).to(out_device, torch.float32)
            _check_out(y, patch, scale)
            if out is None:  # channels last: a caller's HxWxC array of the image is then a view, not a copy
                out = torch.zeros(n, hp * scale, wp * scale, y.shape[1], dtype=torch.float32, device=out_device)
            wgt = (wgt_y.to(out_device)[:, None] * wgt_x.to(out_device)[None, :])
            out[:, y0 * scale:(y0 + th) * scale, x0 * scale:(x0 + tw) * scale] += (y * wgt).permute(0, 2, 3, 1)
    return out.permute(0, 3, 1, 2)[..., : h * scale, : w * scale]


def _check_out(y: torch.Tensor, x: torch.Tensor, scale: int) -> None:
    want = (x.shape[-2] * scale, x.shape[-1] * scale)
    if tuple(y.shape[-2:]) != want:
        raise ValueError(f"model returned {tuple(y.shape[-2:])} for a {tuple(x.shape[-2:])} input, expected {want} (x{scale})")
