"""What the benchmark feeds the backends: real photo crops, and tiled inference.

Inputs are crops of the photos bundled with scikit-image (the ``samples`` extra), area-downscaled
by 2 so they look like low-resolution footage rather than camera-sharp pixels; without
scikit-image a deterministic synthetic texture is used and the report says so. Real images matter
for the verification step: fp16 overflow or a wrong colour order shows on photos, not on noise.

Tiled rows cut and blend windows as ``lwayrt upscale --tile`` does (``runtime.tiling``: every window of an
image one size, so an engine needs one tile shape; each side's windows as small as still overlap well, starting
on the model's size multiple; seams blended), one image's window per backend call, so they time what upscale
runs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lway_rt.errors import InputError

__all__ = ["sample_batch", "tiled_run"]

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def _photos() -> tuple[list[np.ndarray], str]:
    import importlib.util

    if importlib.util.find_spec("skimage") is None:
        return [], "synthetic"
    from skimage import data

    return [getattr(data, name)() for name in _PHOTOS], "skimage:" + ",".join(_PHOTOS)


def _synthetic(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients plus edges and fine stripes: structure at every scale, deterministic."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    f = rng.uniform(0.05, 0.4, size=3)
    img = np.stack([0.5 + 0.5 * np.sin(xx * f[c] + yy * f[(c + 1) % 3]) for c in range(3)], -1)
    img[(xx // 16 + yy // 16) % 2 == 0] *= 0.6
    return (img * 255).astype(np.uint8)


def sample_batch(batch: int, height: int, width: int, *, seed: int = 0) -> tuple[np.ndarray, str]:
    """``batch`` different HxW RGB crops as NCHW float32 in [0, 1], and where they came from."""
    from PIL import Image

    photos, source = _photos()
    out = np.empty((batch, 3, height, width), np.float32)
    rng = np.random.default_rng(seed)
    for i in range(batch):
        if photos:
            photo = photos[i % len(photos)]
            if photo.ndim == 2:
                photo = np.repeat(photo[..., None], 3, -1)
            img = Image.fromarray(photo[..., :3])
            # Downscale by 2 (area), or less if the crop would not fit, then crop at a random place.
            # (factor < 1: the photo is smaller than the crop and is upscaled to cover it.)
            factor = min(2.0, img.width / width, img.height / height)
            if factor >= 1 / 16:
                size = (max(width, round(img.width / factor)), max(height, round(img.height / factor)))
                img = np.asarray(img.resize(size, Image.Resampling.BOX if factor >= 1 else Image.Resampling.BICUBIC))
                top = int(rng.integers(0, img.shape[0] - height + 1))
                left = int(rng.integers(0, img.shape[1] - width + 1))
                crop = img[top:top + height, left:left + width]
            else:  # a long thin crop (99999x1) had enlarged the whole photo to 30 GB to cut one row: the part it
                # needs is cut first and enlarged 16x, and what that still lacks is mirrored in
                rows, cols = min(img.height, -(-height // 16) + 1), min(img.width, -(-width // 16) + 1)
                top = int(rng.integers(0, img.height - rows + 1))
                left = int(rng.integers(0, img.width - cols + 1))
                part = img.crop((left, top, left + cols, top + rows)).resize((16 * cols, 16 * rows),
                                                                             Image.Resampling.BICUBIC)
                crop = np.asarray(part)[:height, :width]
                crop = np.pad(crop, ((0, height - crop.shape[0]), (0, width - crop.shape[1]), (0, 0)), mode="symmetric")
        else:
            crop = _synthetic(height, width, seed + i)
        out[i] = crop.transpose(2, 0, 1).astype(np.float32) / 255.0
    return out, source


def tiled_run(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, tile: int, overlap: int, scale: int,
              multiple: int = 1) -> np.ndarray:
    """Upscale NCHW ``x`` (sides multiples of ``multiple``) window by window with ``run`` as ``lwayrt upscale --tile
    TILE --tile-overlap OVERLAP`` does, one image's window per call, and blend the result."""
    import torch

    from lway_rt.runtime.tiling import TileConfig, upscale_tensor

    if tile <= 2 * overlap:
        raise InputError(f"tile {tile} is too small for an overlap of {overlap}: use a tile larger than {2 * overlap}")

    def window(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(run(np.ascontiguousarray(t.numpy())))

    config = TileConfig(tile, overlap)
    return np.concatenate([upscale_tensor(window, torch.from_numpy(x[b:b + 1]), scale, config,
                                          multiple=multiple).contiguous().numpy() for b in range(x.shape[0])])
