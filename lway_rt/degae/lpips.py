"""LPIPS (AlexNet) as a training loss, from weights the user supplies.

Design origin: Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric" (CVPR 2018; ``richzhang/PerceptualSimilarity``, BSD-2): AlexNet features at five ReLUs,
each unit-normalised over channels, squared differences weighted by learnt 1x1 layers, averaged
over space and summed. Written anew; no weights ship with the project (they cannot be fetched
offline), so ``load_lpips`` reads them from files:

- the AlexNet backbone as torchvision names it (``features.0.weight`` ...) or as the ``lpips``
  package's full state dict names it (``net.slice1.0.weight`` ...);
- the linear layers as the ``lpips`` package names them (``lin0.model.1.weight`` ...), e.g. its
  ``weights/v0.1/alex.pth``.

One file with both (``lpips.LPIPS(net="alex").state_dict()``) or two files, merged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lway_rt.errors import ModelError, listing

__all__ = ["LPIPSAlex", "load_lpips"]

_CONV = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1), 10: (256, 256, 3, 1, 1)}
_TAPS = (1, 4, 7, 9, 11)  # ReLU outputs that feed the metric
_CHANNELS = (64, 192, 384, 256, 256)


class LPIPSAlex(nn.Module):
    """d(x, y) per image for (B, 3, H, W) inputs in [0, 1]; frozen."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(12):
            if i in _CONV:
                cin, cout, k, s, p = _CONV[i]
                layers.append(nn.Conv2d(cin, cout, k, s, p))
            elif i in (2, 5):
                layers.append(nn.MaxPool2d(3, 2))
            else:
                layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.lin = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The unit-normalised features at the five taps."""
        h = ((2 * x - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def distance_maps(self, taps_x: list[torch.Tensor], taps_y: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per tap, the learnt-weighted squared feature difference, ``(B, 1, h, w)`` at that tap's size
        (LPIPS is the sum over taps of their spatial means; a spatially weighted LPIPS weights these)."""
        return [lin((fx - fy).pow(2)) for lin, fx, fy in zip(self.lin, taps_x, taps_y)]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = 0.0
        for m in self.distance_maps(self.taps(x), self.taps(y)):
            d = d + m.mean(dim=(2, 3))
        return d.flatten()


def _read(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"LPIPS weights file {path} does not exist")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        from lway_rt.io.weights import torch_load_tensors

        obj = torch_load_tensors(path)
    except ModelError as exc:  # a TorchScript module, named
        raise ModelError(f"LPIPS weights file {exc}") from None
    except Exception as exc:
        raise ModelError(f"cannot read LPIPS weights {path} ({type(exc).__name__}); pass a .pth or .safetensors file") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path} does not hold a state dict")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def load_lpips(paths: Sequence[str | Path], device: str = "cpu") -> tuple[LPIPSAlex, str]:
    """Build LPIPS-AlexNet from user-supplied weight files; returns (frozen module, sha256 of its weights)."""
    from lway_rt.io.weights import state_dict_sha256

    if not paths:
        raise ModelError("LPIPS needs weight files: pass --lpips-weights (AlexNet backbone and LPIPS linear layers)")
    state: dict[str, torch.Tensor] = {}
    for p in paths:
        for k, v in _read(Path(p)).items():
            k = re.sub(r"^(module\.)", "", k)
            m = re.match(r"^net\.slice\d\.(\d+)\.(weight|bias)$", k)
            if m:
                state[f"features.{m.group(1)}.{m.group(2)}"] = v
            elif re.match(r"^features\.\d+\.(weight|bias)$", k):
                state[k] = v
            elif (m := re.match(r"^lin(\d)\.model\.1\.weight$", k)) or (m := re.match(r"^lin(\d)\.weight$", k)):
                state[f"lin.{m.group(1)}.weight"] = v
    net = LPIPSAlex()
    expected = {k for k in net.state_dict() if k not in ("shift", "scale")}
    missing = sorted(expected - set(state))
    if missing:
        what = "AlexNet backbone (torchvision 'features.*' or lpips 'net.slice*')" if any(k.startswith("features") for k in missing) \
            else "LPIPS linear layers ('lin0.model.1.weight' ...)"
        raise ModelError(f"LPIPS weights incomplete: the {what} are missing ({listing(missing, 1)}); "
                         "pass both files to --lpips-weights, or use --perceptual trunk-l1")
    try:
        net.load_state_dict({k: state[k] for k in expected}, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"LPIPS weights have unexpected shapes ({str(exc).splitlines()[-1].strip()}); "
                         "only the AlexNet variant is supported") from exc
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, state_dict_sha256({k: state[k] for k in sorted(expected)})
