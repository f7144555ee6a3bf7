"""The adaptation losses: LWay, the naive self-supervised baseline and the identity-R control.

All three are an L1 between a prediction made from S's output and something computed from the LR
alone, optionally weighted by the Haar high-frequency map of the prediction (``wavelet.hf_weight``,
detached, as LWay weights x̂; or of the target, ``hf_source='target'``):

- ``lway``: x̂ = R(S(x), e). Target ``sr``: x̂ against the bicubic-upsampled LR. Target ``lr``:
  bicubic-downsampled x̂ against the LR.
- ``naive``: bicubic-downsampled S(x) against the LR (no reconstructor).
- ``identity``: S(x) against the bicubic-upsampled LR (R replaced by the identity; DESIGN §2.5).

An optional anchor term ties S(x) to the unadapted model's output on the same patch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.patches import Batch, bicubic_down
from lway_rt.adapt.wavelet import hf_weight

__all__ = ["weighted_l1", "adaptation_loss"]

Reconstruct = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    diff = (pred - target).abs()
    return (diff * weight).mean() if weight is not None else diff.mean()


def adaptation_loss(sr: torch.Tensor, batch: Batch, recon: Reconstruct | None,
                    config: AdaptConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of S's output ``sr`` for ``batch``; returns (loss tensor, its parts as floats)."""
    scale = sr.shape[-1] // batch.lr.shape[-1]
    if config.loss == "lway":
        if recon is None:
            raise ValueError("the lway loss needs the prepared stage-1 reconstructor")
        x_hat = recon(sr, batch.index)
        pred, target = (x_hat, batch.up) if config.target == "sr" else (bicubic_down(x_hat, scale), batch.lr)
    elif config.loss == "naive":
        pred, target = bicubic_down(sr, scale), batch.lr
    elif config.loss == "identity":
        pred, target = sr, batch.up
    else:  # AdaptConfig validates this; kept for direct callers
        raise ValueError(f"unknown loss {config.loss!r}")
    weight = None
    if config.hf_weight:
        weight = hf_weight(pred if config.hf_source == "pred" else target, config.hf_mode)
    main = weighted_l1(pred, target, weight)
    parts = {"l1": float(main.detach())}
    loss = main
    if config.anchor_weight > 0 and batch.anchor is not None:
        anchor = (sr - batch.anchor).abs().mean()
        parts["anchor"] = float(anchor.detach())
        loss = loss + config.anchor_weight * anchor
    return loss, parts
