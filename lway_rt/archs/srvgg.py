"""SRVGGNetCompact: the compact VGG-style SR network of Real-ESRGAN.

Design: Real-ESRGAN's ``realesr-animevideov3`` / ``realesr-general-x4v3`` family (BSD-3-Clause);
parameter names follow Real-ESRGAN so its ``.pth`` files load unchanged. Written anew here.
A plain stack of 3x3 convs and activations at LR size, a pixel shuffle, and the nearest-upsampled
input added as the base image.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SRVGGNetCompact"]


def _activation(kind: str, num_feat: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(num_parameters=num_feat)
    if kind == "lrelu":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {kind!r} (prelu, lrelu, relu)")


class SRVGGNetCompact(nn.Module):
    """``body`` = conv, act, ``num_conv`` x (conv, act), conv to ``out*upscale**2``; then shuffle."""

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
        act_type: str = "prelu",
    ):
        super().__init__()
        if num_in_ch != num_out_ch:
            raise ValueError("SRVGGNetCompact adds the upsampled input: num_in_ch must equal num_out_ch")
        self.num_in_ch = num_in_ch
        self.num_out_ch = num_out_ch
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), _activation(act_type, num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        base = F.interpolate(x, scale_factor=float(self.upscale), mode="nearest")
        if torch.jit.is_scripting():  # a scripted copy (TorchScript cannot compile the export check): as written
            return out + base
        if torch.is_grad_enabled() or torch.onnx.is_in_onnx_export() or out.dtype != base.dtype:
            return out + base  # (under autocast the shuffled output is bf16/fp16: the sum is promoted to fp32)
        # inference: the sum into the shuffled output, not a third image-sized tensor (an upscale in one pass peaked
        # at the three: 12 bytes an output pixel each)
        return out.add_(base)
