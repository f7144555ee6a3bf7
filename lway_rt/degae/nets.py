"""Stage-1 networks: the degradation encoder E and the reconstructor R.

Design origin: DegAE (Liu et al., "Degradation Autoencoder", CVPR 2023,
``lyh-18/DegAE_DegradationAutoencoder``, Apache-2.0): ``DeepDegradationEncoder_v2`` for E and
``MSRResNet_Head`` with StyleGAN2 modulation for R, as LWay (CVPR 2024) uses them. Written anew.

E = frozen pretrained feature trunk -> trainable head (3 x conv k4 s2 + LeakyReLU) -> global average
pool -> 1x1 projection to the embedding. R = conv -> N x (residual block, modulated conv) -> conv,
LeakyReLU, conv -> RGB, same size as its input, deterministic (no noise injection).

The trunk is third-party pretrained weights: it is rebuilt from the model store at load time and
verified by hash, never stored in a stage-1 checkpoint (see ``trunk.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lway_rt.degae.modconv import ModulatedConv

__all__ = ["DegradationEncoder", "Reconstructor", "MIN_ENCODER_SIDE"]

MIN_ENCODER_SIDE = 22  # three valid k4/s2 convs need 22 px


class DegradationEncoder(nn.Module):
    """x (B, 3, H, W) in [0, 1], H, W >= 22 -> embedding e (B, embed_dim).

    ``trunk`` maps RGB to (B, trunk_channels, H, W) features and stays frozen; only ``head`` and
    ``proj`` train. ``trainable_state_dict`` is what a checkpoint stores.
    """

    def __init__(self, trunk: nn.Module, trunk_channels: int, embed_dim: int = 512,
                 head_widths: Sequence[int] = (128, 256, 512)):
        super().__init__()
        self.trunk = trunk
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.embed_dim = embed_dim
        layers: list[nn.Module] = []
        c = trunk_channels
        for w in head_widths:
            layers += [nn.Conv2d(c, w, 4, 2, 0), nn.LeakyReLU(0.1)]
            c = w
        self.head = nn.Sequential(*layers)
        self.proj = nn.Sequential(
            nn.Conv2d(c, embed_dim, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(embed_dim, embed_dim, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(embed_dim, embed_dim, 1),
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()  # frozen: never in training mode
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen trunk's features (no gradient flows into the trunk's weights)."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < MIN_ENCODER_SIDE or x.shape[-2] < MIN_ENCODER_SIDE:
            raise ValueError(f"the degradation encoder needs images of at least {MIN_ENCODER_SIDE}x{MIN_ENCODER_SIDE} px, "
                             f"got {tuple(x.shape[-2:])}")
        f = self.head(self.features(x))
        return self.proj(f.mean(dim=(2, 3), keepdim=True)).flatten(1)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("trunk.")}


class _ResBlock(nn.Module):
    def __init__(self, nf: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class _ModBlock(nn.Module):
    """Residual block, then a modulated conv driven by the embedding (DegAE's modulation block)."""

    def __init__(self, nf: int, embed_dim: int):
        super().__init__()
        self.res = _ResBlock(nf)
        self.mod = ModulatedConv(nf, embed_dim)

    def forward(self, x: torch.Tensor, factors) -> torch.Tensor:
        return self.mod.apply(self.res(x), factors)


class Reconstructor(nn.Module):
    """forward(clean (B,3,H,W), e (B,D)) -> clean degraded the way e describes, same size.

    ``prepare(e)`` computes the per-image constants (each block's style scales and demodulation
    factors) once; ``apply(clean, prepare(e))`` then runs only static convolutions.
    """

    def __init__(self, embed_dim: int = 512, width: int = 64, blocks: int = 4, skip: bool = False):
        super().__init__()
        self.embed_dim = embed_dim
        self.width = width
        # skip=True adds the clean input to the output (R predicts the degradation as a residual).
        # DegAE has no such skip, nor has the shipped checkpoint; it shortens training a lot on a CPU.
        self.skip = skip
        self.conv_first = nn.Conv2d(3, width, 3, 1, 1)
        self.blocks = nn.ModuleList(_ModBlock(width, embed_dim) for _ in range(blocks))
        self.conv_hr = nn.Conv2d(width, width, 3, 1, 1)
        self.conv_last = nn.Conv2d(width, 3, 3, 1, 1)
        self.act = nn.LeakyReLU(0.1)
        if skip:  # start close to the identity, so the residual is learnt from a sensible point
            with torch.no_grad():
                self.conv_last.weight.mul_(0.1)
                self.conv_last.bias.zero_()

    def prepare(self, e: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        if e.dim() != 2 or e.shape[1] != self.embed_dim:
            raise ValueError(f"embedding must be (B, {self.embed_dim}), got {tuple(e.shape)}")
        return tuple(b.mod.factors(e) for b in self.blocks)

    def apply(self, clean: torch.Tensor, prepared) -> torch.Tensor:
        if len(prepared) != len(self.blocks):
            raise ValueError("prepared factors come from a reconstructor with another block count")
        x = self.act(self.conv_first(clean))
        for block, factors in zip(self.blocks, prepared):
            x = block(x, factors)
        out = self.conv_last(self.act(self.conv_hr(x)))
        return out + clean if self.skip else out

    def forward(self, clean: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.apply(clean, self.prepare(e))
