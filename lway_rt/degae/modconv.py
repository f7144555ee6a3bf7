"""StyleGAN2-style modulated convolution, written in the non-fused form.

Design origin: StyleGAN2 (Karras et al., 2020) weight modulation/demodulation, as used by DegAE's
``StyleGAN2_mod`` (``lyh-18/DegAE_DegradationAutoencoder``, Apache-2.0) to drive the reconstructor
with a degradation embedding. Written anew here.

DegAE builds one weight per image (``weight * style``, demodulated) and runs a grouped conv over the
batch. The same arithmetic, reordered, is: scale the *input* channels by the style, run one fixed
conv, scale the *output* channels by the demodulation factor. That form keeps the conv weights
static (exports to ONNX with a free batch dimension, fuses in TensorRT) and lets the per-image
factors be computed once per embedding. ``grouped_modulated_conv`` keeps DegAE's form as the
reference the equivalence test and the benchmarks compare against.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ModulatedConv", "grouped_modulated_conv", "demodulation"]


def demodulation(weight: torch.Tensor, style: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image, per-output-channel demodulation factor (B, C_out).

    ``weight`` (C_out, C_in, k, k) already includes the equalised-lr scale; ``style`` is (B, C_in).
    rsqrt(sum_{i,kh,kw} (w[o,i,kh,kw] * s[b,i])^2 + eps) = rsqrt(sum_i s[b,i]^2 * W2[o,i] + eps).
    """
    w2 = weight.pow(2).sum(dim=(2, 3))  # (C_out, C_in)
    return torch.rsqrt(style.pow(2) @ w2.t() + eps)


def grouped_modulated_conv(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """DegAE's fused form: one modulated, demodulated kernel per image, run as a grouped conv.

    ``x`` (B, C_in, H, W); ``weight`` (C_out, C_in, k, k) including the equalised-lr scale;
    ``style`` (B, C_in). Returns (B, C_out, H, W). Reference implementation only.
    """
    b, c_in, h, w = x.shape
    c_out, _, k, _ = weight.shape
    wmod = weight.unsqueeze(0) * style.view(b, 1, c_in, 1, 1)
    demod = torch.rsqrt(wmod.pow(2).sum(dim=(2, 3, 4)) + eps)
    wmod = wmod * demod.view(b, c_out, 1, 1, 1)
    out = F.conv2d(x.reshape(1, b * c_in, h, w), wmod.reshape(b * c_out, c_in, k, k), padding=k // 2, groups=b)
    return out.view(b, c_out, h, w)


class ModulatedConv(nn.Module):
    """Modulated 3x3 conv followed by a plain 3x3 conv + LeakyReLU(0.1) (DegAE's block tail).

    ``style_from(e)`` gives the (B, C) input-channel scales, ``factors(e)`` the pair
    (style, demod) that ``apply`` needs; ``forward(x, e)`` = ``apply(x, factors(e))``.
    No noise injection: the reconstructor must be deterministic.
    """

    def __init__(self, channels: int, embed_dim: int, kernel_size: int = 3):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size
        self.scale = 1.0 / math.sqrt(channels * kernel_size**2)
        self.modulation = nn.Conv2d(embed_dim, channels, 1)
        # Bias 1: the block starts as a plain conv and the embedding's influence grows from there
        # (a zero-initialised style gives the encoder no gradient at the start).
        nn.init.ones_(self.modulation.bias)
        self.weight = nn.Parameter(torch.randn(channels, channels, kernel_size, kernel_size))
        self.conv_last = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = nn.LeakyReLU(0.1)

    def factors(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        style = self.modulation(e.reshape(e.shape[0], -1, 1, 1)).flatten(1)  # (B, C_in)
        return style, demodulation(self.weight * self.scale, style)

    def apply(self, x: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        style, demod = factors
        y = F.conv2d(x * style[:, :, None, None], self.weight * self.scale, padding=self.kernel_size // 2)
        y = y * demod[:, :, None, None]
        return self.act(self.conv_last(y))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.factors(e))

    def reference(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The same block computed in DegAE's grouped-conv form (for tests and benchmarks)."""
        style, _ = self.factors(e)
        y = grouped_modulated_conv(x, self.weight * self.scale, style)
        return self.act(self.conv_last(y))
