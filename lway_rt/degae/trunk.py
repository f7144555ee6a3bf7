"""The encoder's frozen feature trunk: the first layers of a real pretrained SR network.

DegAE's encoder reads the features of an SR network trained on clean data (its MSRResNet trunk).
Those weights are not available offline, so the trunk here is cut from a network in the project's
model store. Third-party weights are never copied into a stage-1 checkpoint: the checkpoint names
the store model, the cut (``layers``) and the SHA-256 of the trunk tensors, and ``build_trunk``
rebuilds and verifies it at load time.

Supported cuts:
- ``realesr-animevideov3`` (SRVGGNetCompact): the first ``layers`` conv + PReLU pairs, 64 channels.
- ``realsr-df2k-x4`` / ``realesrgan-x4plus`` / ``realesrgan-x4plus-anime`` (RRDBNet): ``conv_first``
  and the first ``layers`` RRDB blocks, 64 channels (far more expensive per layer).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from lway_rt.errors import ModelError

__all__ = ["TrunkSpec", "build_trunk", "DEFAULT_TRUNK"]


@dataclass(frozen=True)
class TrunkSpec:
    model: str = "realesr-animevideov3"
    layers: int = 2

    def __post_init__(self):
        if self.layers < 1:
            raise ValueError("trunk layers must be >= 1")


DEFAULT_TRUNK = TrunkSpec()


def build_trunk(spec: TrunkSpec, expect_sha256: str | None = None, device: str = "cpu") -> tuple[nn.Module, int, str]:
    """Return (frozen trunk in eval mode, output channels, sha256 of its tensors)."""
    from lway_rt.io.store import PackageNotInstalled, load_model
    from lway_rt.io.weights import state_dict_sha256

    try:
        desc = load_model(spec.model)
    except PackageNotInstalled as exc:  # say why this model is needed: the user may have given a weights file of
        # their own (adapt's default loss, eval-degae, train-degae seemed to ask for a model they were not given: 56B4)
        raise PackageNotInstalled(f"stage 1's degradation encoder starts with the first layers of {spec.model}, read "
                                  f"from the model store: {exc}") from None
    desc.require_rgb(spec.model, "stage 1's encoder trunk is cut from", ModelError)  # it reads RGB photos
    net = desc.model
    if desc.spec.arch == "SRVGGNetCompact":
        n_conv = desc.spec.hparams.get("num_conv", 16) + 1
        if spec.layers > n_conv:
            raise ModelError(f"{spec.model} has {n_conv} conv layers before its output conv; use trunk layers <= {n_conv}")
        trunk = nn.Sequential(*[copy.deepcopy(m) for m in list(net.body)[: 2 * spec.layers]])
        channels = net.body[0].out_channels
    elif desc.spec.arch == "RRDBNet":
        if getattr(net, "unshuffle", 1) != 1:
            raise ModelError(f"{spec.model} unshuffles its input (x1/x2 model); pick an x4 RRDBNet as the trunk")
        if spec.layers > len(net.body):
            raise ModelError(f"{spec.model} has {len(net.body)} RRDB blocks; use trunk layers <= {len(net.body)}")
        trunk = nn.Sequential(copy.deepcopy(net.conv_first), *[copy.deepcopy(b) for b in list(net.body)[: spec.layers]])
        channels = net.conv_first.out_channels
    else:
        raise ModelError(f"{spec.model} ({desc.spec.arch}) cannot serve as the encoder trunk; "
                         "use realesr-animevideov3 or an RRDBNet x4 model")
    trunk = trunk.to(device).eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    digest = state_dict_sha256(trunk.state_dict())
    if expect_sha256 and digest != expect_sha256:
        raise ModelError(f"the encoder trunk rebuilt from '{spec.model}' (first {spec.layers} layers) differs from the one "
                         f"this checkpoint was trained with (sha256 {digest[:12]} != {expect_sha256[:12]}); re-import the "
                         f"model with 'lwayrt models import --force {spec.model}' or retrain stage 1")
    return trunk, channels, digest
