"""Synthetic (LR, HR) pairs for the optional supervised term of stage 2.

Idea credit: LWay (Chen et al., "Low-Res Leads the Way: Improving Generalization for
Super-Resolution by Self-Supervised Learning", CVPR 2024) describes its framework as merging
supervised pre-training with self-supervised learning: while the self-supervised loss adapts the SR
network to the test images, a supervised loss on synthetic pairs keeps it a restorer, so it does
not drift towards reproducing the input's noise and compression artefacts. This module is written
anew for this project and builds the pairs with stage 1's own degradation sampler.

One pair: a random crop of side ``patch * scale`` from a clean photo (random flip / rotation,
``lway_rt.degae.data.random_crops``) is the HR; the LR comes from one random draw of stage 1's
sampler (blur, noise, JPEG or clean; no scale round trip), quantised to 8 bits: with the default
``classic`` order the draw's blur acts on the HR crop, then the antialiased bicubic downscale by
``scale``, then its noise and JPEG; with ``lr`` the whole draw acts after the downscale. With
``stage1`` the driver makes the LR with stage 1's R and the embedding of one of the run's images
(``stage1_degraded``; the image of each pair from ``SyntheticPairs.images``). A step's pairs are a pure function of
(photos, seed, iteration), so a resumed run draws the same ones as an uninterrupted run, and the
self-supervised patch sampling is untouched by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lway_rt.adapt.patches import bicubic_down
from lway_rt.degae.degrade import quantise
from lway_rt.errors import InputError

__all__ = ["SyntheticPairs", "load_clean_photos", "synthetic_pairs", "stage1_degraded", "SUP_STREAM", "SUP_IMAGE_STREAM"]

SUP_STREAM = 7919  # a constant in the seed sequence: this stream never collides with other seeded draws
SUP_IMAGE_STREAM = 7927  # the stream of which run image's embedding degrades each pair (sup_degradation stage1)


def load_clean_photos(folder: str | Path | None, min_side: int) -> list[torch.Tensor]:
    """Clean photos as (3, H, W) tensors: every image in ``folder``, or stage 1's bundled training photos; 8-bit ones
    held as uint8 (a quarter of float32's memory), whose crops ``synthetic_pairs`` makes float."""
    from lway_rt.degae.data import BUNDLED_TRAIN, load_bundled, load_folder

    if folder is None:
        photos = load_bundled(BUNDLED_TRAIN, feature="the supervised term's default clean photos",
                              alternative="pass a folder of clean photos with --sup-data, or turn the term off with --sup-weight 0",
                              compact=True)
    else:
        photos = load_folder(Path(folder), option="--sup-data", compact=True)
    small = [f"{n} ({t.shape[2]}x{t.shape[1]})" for n, t in photos.items() if min(t.shape[1:]) < min_side]
    if small:
        raise InputError(f"{len(small)} clean photo(s) for the supervised term are smaller than the {min_side}-px HR crop "
                         f"(patch size x scale): {', '.join(small[:3])}; use larger photos or a smaller --patch-size")
    return list(photos.values())


def synthetic_pairs(rng: np.random.Generator, photos: list[torch.Tensor], n: int, patch: int,
                    scale: int, order: str = "lr") -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs: LR (n, 3, patch, patch) and HR (n, 3, patch*scale, patch*scale), both in [0, 1].

    ``order="lr"``: the whole draw at LR size after the downscale; ``"classic"``: the draw's blur
    on the HR crop before the downscale, its noise and JPEG after it (``AdaptConfig.sup_degradation``).
    """
    from lway_rt.degae.data import random_crops
    from lway_rt.degae.degrade import Degradation, SynthConfig, apply_degradation, sample_degradation

    hr, _ = random_crops(rng, photos, n, patch * scale)
    synth = SynthConfig(p_roundtrip=0.0)
    draws = [sample_degradation(rng, synth) for _ in range(n)]
    if order == "classic":
        pre = [Degradation(tuple(o for o in d.ops if o.name.startswith("blur")), d.seed) for d in draws]
        post = [Degradation(tuple(o for o in d.ops if not o.name.startswith("blur")), d.seed + 1) for d in draws]
        blurred = torch.stack([apply_degradation(x, d) if d.ops else x for x, d in zip(hr, pre)])
        clean = bicubic_down(blurred, scale).clamp_(0.0, 1.0)
        lr = torch.stack([apply_degradation(x, d) for x, d in zip(clean, post)])
    elif order == "lr":
        clean = bicubic_down(hr, scale).clamp_(0.0, 1.0)
        lr = torch.stack([apply_degradation(x, d) for x, d in zip(clean, draws)])  # clamped, 8-bit
    elif order == "stage1":  # the clean HR only: the driver degrades it with R (stage1_degraded)
        lr = quantise(bicubic_down(hr, scale))
    else:
        raise ValueError(f"unknown order {order!r}")
    return lr, hr


def stage1_degraded(recon, hr: torch.Tensor, index: torch.Tensor, scale: int, target: str = "sr") -> torch.Tensor:
    """The LR of ``sup_degradation='stage1'`` pairs: stage 1's R with image ``index[i]``'s embedding applied to
    clean HR crop ``i``, x``scale`` bicubic down, 8-bit. ``recon(clean, index)`` is the run's prepared R; with
    ``target='lr-recon'`` R acts on the downscaled crop, at the scale it was embedded for."""
    with torch.no_grad():
        if target == "lr-recon":
            return quantise(recon(bicubic_down(hr, scale).clamp_(0.0, 1.0), index))
        return quantise(bicubic_down(recon(hr, index), scale))


@dataclass
class SyntheticPairs:
    """The driver's source of supervised pairs: clean photos loaded once, a batch per (seed, iteration)."""

    photos: list[torch.Tensor]
    n: int
    patch: int
    scale: int
    seed: int
    device: str | torch.device = "cpu"
    order: str = "lr"

    @classmethod
    def from_config(cls, config, scale: int) -> SyntheticPairs:
        photos = load_clean_photos(config.sup_data, config.patch_size * scale)
        return cls(photos, config.sup_batch_size, config.patch_size, scale, config.seed, config.device,
                   config.sup_degradation)

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairs of step ``iteration``: the same for the same (seed, iteration), different across iterations."""
        rng = np.random.default_rng([int(self.seed) % 2**64, SUP_STREAM, int(iteration)])
        lr, hr = synthetic_pairs(rng, self.photos, self.n, self.patch, self.scale, self.order)
        return lr.to(self.device), hr.to(self.device)

    def images(self, iteration: int, count: int) -> torch.Tensor:
        """Which of the run's ``count`` images degrades each pair of step ``iteration`` (``sup_degradation='stage1'``):
        a pure function of (seed, iteration), drawn apart from the pairs themselves."""
        rng = np.random.default_rng([int(self.seed) % 2**64, SUP_IMAGE_STREAM, int(iteration)])
        return torch.from_numpy(rng.integers(0, count, size=self.n)).to(self.device)
