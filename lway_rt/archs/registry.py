"""The one list of supported SR architectures, and detection from a state dict.

Each entry says which keys identify it and how to read its hyper-parameters from tensor shapes
(the spandrel approach): no try/except chain, no file scanning at import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from lway_rt.archs.descriptor import ArchSpec, ModelDescriptor
from lway_rt.archs.rrdbnet import RRDBNet
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.errors import ModelError

__all__ = ["ARCHS", "ArchEntry", "detect", "build", "from_state_dict", "unwrap_state_dict"]

StateDict = Mapping[str, torch.Tensor]


def _max_index(state: StateDict, pattern: str) -> int:
    rx = re.compile(pattern)
    found = [int(m.group(1)) for k in state if (m := rx.match(k))]
    return max(found) if found else -1


def _detect_rrdbnet(state: StateDict) -> ArchSpec:
    num_feat, in_flat = state["conv_first.weight"].shape[:2]
    num_out_ch = state["conv_last.weight"].shape[0]
    ratio = in_flat // num_out_ch
    scale = {1: 4, 4: 2, 16: 1}.get(ratio)
    if scale is None or in_flat % num_out_ch:
        raise ModelError(
            f"RRDBNet with {in_flat} input channels and {num_out_ch} output channels matches no known scale "
            "(expected input = output x 1, 4 or 16 for x4, x2, x1)"
        )
    num_block = _max_index(state, r"body\.(\d+)\.rdb1\.conv1\.weight") + 1
    num_grow_ch = state["body.0.rdb1.conv1.weight"].shape[0]
    hp = dict(
        num_in_ch=num_out_ch, num_out_ch=num_out_ch, scale=scale,
        num_feat=int(num_feat), num_block=num_block, num_grow_ch=int(num_grow_ch),
    )
    return ArchSpec(
        arch="RRDBNet", hparams=hp, scale=scale, in_channels=num_out_ch, out_channels=num_out_ch,
        size_multiple={4: 1, 2: 2, 1: 4}[scale], min_size={4: 1, 2: 2, 1: 4}[scale],
    )


def _detect_srvgg(state: StateDict) -> ArchSpec:
    last = _max_index(state, r"body\.(\d+)\.weight")
    first = state["body.0.weight"]
    num_feat, num_in_ch = first.shape[:2]
    out_flat = state[f"body.{last}.weight"].shape[0]
    upscale = math.isqrt(out_flat // num_in_ch)
    if upscale * upscale * num_in_ch != out_flat or last % 2:
        raise ModelError(f"SRVGGNetCompact-like state dict with a last conv of {out_flat} channels has no integer scale")
    act_type = "prelu" if "body.1.weight" in state else "lrelu"
    hp = dict(
        num_in_ch=int(num_in_ch), num_out_ch=int(num_in_ch), num_feat=int(num_feat),
        num_conv=(last - 2) // 2, upscale=upscale, act_type=act_type,
    )
    return ArchSpec(
        arch="SRVGGNetCompact", hparams=hp, scale=upscale, in_channels=int(num_in_ch), out_channels=int(num_in_ch),
    )


@dataclass(frozen=True)
class ArchEntry:
    name: str
    required_keys: tuple[str, ...]
    detect: Callable[[StateDict], ArchSpec]
    build: Callable[..., nn.Module]


ARCHS: tuple[ArchEntry, ...] = (
    ArchEntry(
        "RRDBNet",
        ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight",
         "conv_up2.weight", "conv_hr.weight", "conv_last.weight"),
        _detect_rrdbnet,
        RRDBNet,
    ),
    ArchEntry(
        "SRVGGNetCompact",
        ("body.0.weight", "body.0.bias", "body.2.weight"),
        _detect_srvgg,
        SRVGGNetCompact,
    ),
)
_BY_NAME = {e.name: e for e in ARCHS}


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Accept BasicSR/Real-ESRGAN checkpoint wrappers: ``params_ema`` first, then ``params``."""
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params", "state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                return unwrap_state_dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return {k.removeprefix("module."): v for k, v in tensors.items()}
    raise ModelError("checkpoint holds no tensors: expected a state dict (optionally under 'params_ema' or 'params')")


def detect(state: StateDict) -> ArchSpec:
    """Work out architecture and hyper-parameters from a state dict's keys and shapes."""
    for entry in ARCHS:
        if all(k in state for k in entry.required_keys):
            return entry.detect(state)
    keys = sorted(state)
    sample = ", ".join(keys[:6]) + (", …" if len(keys) > 6 else "")
    near = []
    for entry in ARCHS:
        hit = [k for k in entry.required_keys if k in state]
        if hit:
            missing = [k for k in entry.required_keys if k not in state]
            near.append(f"{entry.name} (has {len(hit)}/{len(entry.required_keys)} keys, missing {', '.join(missing[:3])})")
    detail = "; closest: " + "; ".join(near) if near else ""
    raise ModelError(
        f"unsupported architecture: {len(keys)} tensors ({sample}) match none of "
        f"{', '.join(e.name for e in ARCHS)}{detail}. Supported are Real-ESRGAN/BasicSR RRDBNet and SRVGGNetCompact weights."
    )


def build(spec: ArchSpec) -> nn.Module:
    return _BY_NAME[spec.arch].build(**spec.hparams)


def from_state_dict(state: StateDict, *, name: str | None = None, source: str | None = None,
                    metadata: dict[str, str] | None = None) -> ModelDescriptor:
    """Detect, build and load; refuse NaN/inf weights and any key mismatch."""
    where = f"{source}: " if source else ""
    # a training framework's batch-norm step counter carries no weight; neither architecture has batch norm
    try:
        state = {k: v for k, v in unwrap_state_dict(state).items() if not k.endswith("num_batches_tracked")}
        spec = detect(state)
    except ModelError as exc:
        raise ModelError(f"{where}{exc}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"{where}the weights hold NaN or infinite values in {len(bad)} tensors (first: {bad[0]}): the "
                         "file is corrupt (or the training diverged); re-export or re-download it")
    model = build(spec)
    own = model.state_dict()
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise ModelError(f"{where}{k} has shape {list(v.shape)} where {spec.arch} x{spec.scale} has "
                             f"{list(own[k].shape)}: a variant of the architecture lway_rt does not build")
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ModelError(f"{where}the weights do not fit {spec.arch} x{spec.scale} as detected (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}): a variant of the architecture lway_rt does not build")
    model.eval()
    return ModelDescriptor(model=model, spec=spec, name=name, source=source, metadata=dict(metadata or {}))
