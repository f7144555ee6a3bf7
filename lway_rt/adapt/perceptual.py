"""The weighted perceptual term of the adaptation loss (DESIGN §2.4: "HF-weighted L1 + a weighted
perceptual term when available").

LWay adds a perceptual distance to its wavelet-weighted L1 and weights both by the same
high-frequency map. Two distances are offered, compared between the same prediction and target as
the L1 (x̂ and the upsampled LR for the ``lway`` loss):

- ``trunk-l1``: an L1 between the features of a frozen pretrained trunk (the first layers of a real
  SR network, the trunk stage 1's encoder reads, ``lway_rt.degae.trunk``): available offline,
  the substitute stage-1 training uses too. The trunk keeps the image size, so the weight map
  multiplies the channel-mean feature difference pixel by pixel.
- ``lpips``: LPIPS-AlexNet from weights the user supplies (``lway_rt.degae.lpips``); its per-layer
  distance maps are smaller than the image, so the weight map is average-pooled to each layer's
  size before it multiplies them.

Both follow the L1's convention: ``mean(weight * distance)``, and with no weight map (``--no-hf-weight``)
the plain mean. The networks are frozen; gradients flow through them to S's output only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lway_rt.adapt.config import PERCEPTUALS

__all__ = ["Perceptual", "build_perceptual"]


def _pool_to(weight: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The weight map averaged over channels and brought to ``size`` (area average; unchanged when it fits)."""
    w = weight.mean(dim=1, keepdim=True)
    return w if tuple(w.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(w, size)


class Perceptual:
    """``term(pred, target, weight)``: the weighted perceptual distance, a scalar tensor.

    ``kind`` is ``trunk-l1`` (``net`` maps (B, 3, H, W) to features) or ``lpips`` (``net`` is an
    ``LPIPSAlex``). ``digest`` names the network's weights for the run's report.
    """

    def __init__(self, kind: str, net: nn.Module, digest: str = ""):
        if kind not in PERCEPTUALS[1:]:
            raise ValueError(f"unknown perceptual term {kind!r}; use one of {', '.join(PERCEPTUALS[1:])}")
        self.kind, self.net, self.digest = kind, net.eval(), digest
        for p in self.net.parameters():
            p.requires_grad_(False)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "lpips":
            return self._lpips(pred, target, weight)
        f_pred = self.net(pred)
        with torch.no_grad():
            f_target = self.net(target)
        diff = (f_pred - f_target).abs().mean(dim=1, keepdim=True)
        return diff.mean() if weight is None else (diff * _pool_to(weight, diff.shape[-2:])).mean()

    def _lpips(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            taps_target = self.net.taps(target)
        total = pred.new_zeros(())
        for d in self.net.distance_maps(self.net.taps(pred), taps_target):  # (B, 1, h, w) per layer
            total = total + (d.mean() if weight is None else (d * _pool_to(weight, d.shape[-2:])).mean())
        return total

    def to(self, device) -> Perceptual:
        self.net.to(device)
        return self


def build_perceptual(kind: str, *, stage1=None, lpips_weights=(), device: str = "cpu") -> Perceptual | None:
    """The run's perceptual term: None for ``none``; the stage-1 encoder's trunk (or, without a stage 1,
    the default trunk rebuilt from the model store) for ``trunk-l1``; LPIPS from ``lpips_weights``."""
    if kind == "none":
        return None
    if kind == "lpips":
        from lway_rt.degae.lpips import load_lpips

        net, digest = load_lpips(list(lpips_weights), device=device)
        return Perceptual("lpips", net, digest)
    if stage1 is not None:
        from lway_rt.io.weights import state_dict_sha256

        trunk = stage1.encoder.trunk
        return Perceptual("trunk-l1", trunk, state_dict_sha256(trunk.state_dict())).to(device)
    from lway_rt.degae.trunk import DEFAULT_TRUNK, build_trunk

    trunk, _, digest = build_trunk(DEFAULT_TRUNK, device=device)
    return Perceptual("trunk-l1", trunk, digest)
