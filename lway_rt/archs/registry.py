"""The one list of supported SR architectures, and detection from a state dict.

Each entry says which keys identify it and how to read its hyper-parameters from tensor shapes
(the spandrel approach): no try/except chain, no file scanning at import.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lway_rt.archs.descriptor import ArchSpec, ModelDescriptor
from lway_rt.archs.rrdbnet import RRDBNet
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.errors import listing
from lway_rt.errors import ModelError

__all__ = ["ARCHS", "ArchEntry", "WeightsRefused", "detect", "build", "check_state_dict", "from_state_dict",
           "esrgan_full_names", "esrgan_names", "our_names", "unwrap_state_dict"]

StateDict = Mapping[str, torch.Tensor]

#: the weight dtypes a network is loaded from (cast to float32 on load)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


REDOWNLOAD = "re-export or re-download it"  # what the refusals of a damaged file advise (the store advises its own)
VARIANT = "a variant of the architecture lway_rt does not build"  # the refusal of tensors of another layout


class WeightsRefused(ModelError):
    """A state dict that does not load; ``status`` is the short reason ``lwayrt models list`` shows."""

    def __init__(self, message: str, status: str, advice: str | None = None):
        super().__init__(f"{message}: {advice}" if advice else message)
        self.status = status
        self.advice = advice  # what the message advises, at its end: the store advises its own repair instead


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _counter_refused(key: str, value: torch.Tensor, status: str, missing: Sequence[str] = ()) -> WeightsRefused:
    """The refusal of a one-value tensor saved beside the weights (a training counter or flag: ``iter``, ``step``,
    ``best_psnr``), naming the tensors ``missing`` beside it."""
    shown = f"{value.item():g}" if value.is_floating_point() else value.item()
    gone = f", and {listing(missing, 3)} {'is' if len(missing) == 1 else 'are'} missing" if missing else ""
    return WeightsRefused(f"{key} is one {_dtype_name(value.dtype)} value ({shown}), not a weight (a training counter "
                          f"or flag saved with the weights?){gone}", status, "save the network's weights alone, "
                          "torch.save(model.state_dict(), 'weights.pth')")


def _check_tensors(state: StateDict) -> None:
    """Names that are strings, dense float tensors: what ``detect`` and loading can read at all."""
    for k, v in state.items():
        if not isinstance(k, str):
            raise WeightsRefused(f"the state dict has a key {k!r} ({type(k).__name__}) where tensor names are strings: "
                                 "it is no network's state dict; re-save the weights with "
                                 "torch.save(model.state_dict(), 'weights.pth')", "bad keys")
        if not isinstance(v, torch.Tensor):
            raise WeightsRefused(f"{k} is a {type(v).__name__}, not a tensor", "bad keys",
                                 "re-save the weights with torch.save(model.state_dict(), 'weights.pth')")
        if v.layout != torch.strided:
            raise WeightsRefused(f"{k} is a sparse tensor ({str(v.layout).removeprefix('torch.')})", "sparse tensors",
                                 "re-save the weights dense (tensor.to_dense())")
        if v.dtype not in FLOAT_DTYPES and v.numel() == 1 and not v.is_complex():  # one value: no weight (57D-1,
            if "." not in k:  # 57G-1: a counter saved as tensor([5]) too); a top-level one is refused by
                continue  # _check_state_dict, as a float one is, with the tensors missing beside it (57K-5, 57M-1)
            raise _counter_refused(k, v, "bad keys")
        if v.dtype not in FLOAT_DTYPES:  # int8 or fp8 would run without their scales, complex loses half, bool...
            quantised = v.dtype != torch.bool and not v.is_complex()
            why, fix = (("quantised weights need their scales and a runtime of their own",
                         "pass the float weights they were quantised from") if quantised else
                        ("no SR network holds such weights", "pass the network's float weights"))
            raise WeightsRefused(f"{k} holds {_dtype_name(v.dtype)} values, and lway_rt loads float16, bfloat16, float32 "
                                 f"or float64 weights only ({why})", f"{_dtype_name(v.dtype)} weights", fix)


def _conv_shape(state: StateDict, key: str) -> tuple[int, int, int, int]:
    """The shape of a conv weight ``detect`` reads hyper-parameters from: 4-D, no dimension 0."""
    if key not in state:
        raise WeightsRefused(f"{key} is missing: the file is incomplete; {REDOWNLOAD}", "missing keys")
    shape = tuple(int(n) for n in state[key].shape)
    if len(shape) != 4 or 0 in shape:
        raise WeightsRefused(f"{key} has shape {list(shape)} where a conv weight (4-D, no empty dimension) belongs: "
                             f"the file is damaged or of another network; {REDOWNLOAD}", "wrong shapes")
    return shape  # type: ignore[return-value]


def _check_sequence(state: StateDict, arch: str, step: int = 1) -> int:
    """The number of numbered layers (``body.N.``), which must be exactly 0, step, 2*step, ...: one stray or
    missing number would otherwise size the network (``body.400.`` in a 1-block file: 401 blocks built before the
    missing keys show). Raises naming the first key out of sequence."""
    found: dict[int, str] = {}
    for k in sorted(state):
        if (m := re.match(r"body\.(\d+)\.", k)):
            found.setdefault(int(m.group(1)), k)
    expected = range(0, step * len(found), step)
    if set(found) == set(expected):
        return len(found)
    numbering = f"{arch}'s body layers are numbered 0, {step}, {2 * step}, ... without gaps"
    off = sorted(i for i in found if i % step)
    if off:
        raise WeightsRefused(f"{found[off[0]]} is out of sequence: {numbering} (a LeakyReLU variant holds no "
                             f"activation weights): the file is damaged or holds keys of another network; {REDOWNLOAD}",
                             "stray keys")
    missing = next(i for i in expected if i not in found)
    after = min(i for i in found if i > missing)
    raise WeightsRefused(f"{found[after]} is out of sequence: {numbering} (body.{missing} is missing): the file is "
                         f"damaged or holds keys of another network; {REDOWNLOAD}", "stray keys")


def _detect_rrdbnet(state: StateDict) -> ArchSpec:
    num_feat, in_flat = _conv_shape(state, "conv_first.weight")[:2]
    num_out_ch = _conv_shape(state, "conv_last.weight")[0]
    ratio = in_flat // num_out_ch
    scale = {1: 4, 4: 2, 16: 1}.get(ratio)
    if scale is None or in_flat % num_out_ch:
        raise WeightsRefused(
            f"RRDBNet with {in_flat} input channels and {num_out_ch} output channels matches no known scale "
            "(expected input = output x 1, 4 or 16 for x4, x2, x1)", "no known scale"
        )
    num_block = _check_sequence(state, "RRDBNet")
    num_grow_ch = _conv_shape(state, "body.0.rdb1.conv1.weight")[0]
    hp = dict(
        num_in_ch=num_out_ch, num_out_ch=num_out_ch, scale=scale,
        num_feat=int(num_feat), num_block=num_block, num_grow_ch=int(num_grow_ch),
    )
    return ArchSpec(
        arch="RRDBNet", hparams=hp, scale=scale, in_channels=num_out_ch, out_channels=num_out_ch,
        size_multiple={4: 1, 2: 2, 1: 4}[scale], min_size={4: 1, 2: 2, 1: 4}[scale],
    )


def _detect_srvgg(state: StateDict) -> ArchSpec:
    act_type = "prelu" if "body.1.weight" in state else "lrelu"
    # conv, act, conv, act, ..., conv: PReLU acts hold weights (every number used), LeakyReLU ones none (even only)
    step = 1 if act_type == "prelu" else 2
    last = step * (_check_sequence(state, "SRVGGNetCompact", step) - 1)
    if last % 2:
        raise WeightsRefused(f"body.{last}.weight, the last numbered layer, is an activation where SRVGGNetCompact "
                             f"ends in a conv: the file is incomplete; {REDOWNLOAD}", "missing keys")
    num_feat, num_in_ch = _conv_shape(state, "body.0.weight")[:2]
    out_flat = _conv_shape(state, f"body.{last}.weight")[0]
    upscale = math.isqrt(out_flat // num_in_ch)
    if upscale * upscale * num_in_ch != out_flat:
        raise WeightsRefused(f"SRVGGNetCompact-like state dict with a last conv of {out_flat} channels has no integer "
                             "scale", "no known scale")
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


# the two layouts of ESRGAN's own code (the weights of the same RRDBNet under other names): the first (2018), one
# nn.Sequential "model" with numbered layers and the RRDB trunk in a shortcut block's "sub", in which most community x4
# ESRGAN models are published; and the second (2019, the ESRGAN repository's RRDB_ESRGAN_x4.pth), named layers
_OLD_RDB = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)")
_OLD_X4 = {0: "conv_first", 3: "conv_up1", 6: "conv_up2", 8: "conv_hr", 10: "conv_last"}  # model.N of the x4 layout
_NEW_RDB = re.compile(r"RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])\.(weight|bias)")
_NEW_TOP = {"conv_first": "conv_first", "trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2",
            "HRconv": "conv_hr", "conv_last": "conv_last"}


def _esrgan_layout(state: Mapping) -> tuple[str, int] | None:
    """Which layout of ESRGAN's own code ``state`` is in ("first" / "second") and its number of RRDB blocks; None
    for any other state dict."""
    if "RRDB_trunk.0.RDB1.conv1.weight" in state:
        found = [m for k in state if isinstance(k, str) and (m := _NEW_RDB.fullmatch(k))]
        return "second", 1 + max(int(m[1]) for m in found)
    if "model.0.weight" in state and "model.1.sub.0.RDB1.conv1.0.weight" in state:
        found = [m for k in state if isinstance(k, str) and (m := _OLD_RDB.fullmatch(k))]
        return "first", 1 + max(int(m[1]) for m in found)
    return None


def _esrgan_map(layout: str, blocks: int) -> dict[str, str]:
    """``{ours: theirs}`` for every tensor of an x4 RRDBNet of ``blocks`` blocks in that layout."""
    tops = {v: f"model.{k}" for k, v in _OLD_X4.items()} | {"conv_body": f"model.1.sub.{blocks}"} \
        if layout == "first" else {v: k for k, v in _NEW_TOP.items()}
    names = {f"{layer}.{kind}": f"{theirs}.{kind}" for layer, theirs in tops.items() for kind in ("weight", "bias")}
    for i in range(blocks):
        for j in (1, 2, 3):
            for c in range(1, 6):
                for kind in ("weight", "bias"):
                    names[f"body.{i}.rdb{j}.conv{c}.{kind}"] = f"model.1.sub.{i}.RDB{j}.conv{c}.0.{kind}" \
                        if layout == "first" else f"RRDB_trunk.{i}.RDB{j}.conv{c}.{kind}"
    return names


def esrgan_full_names(state: Mapping) -> dict[str, str]:
    """``{ours: theirs}`` for every tensor an x4 RRDBNet holds, where ``state`` is in a layout of ESRGAN's own code
    (also those it lacks: a refusal names them as the file would); ``{}`` otherwise. The first layout's x2 / x8 / x1
    models upsample another number of times, a network lway_rt does not build (``WeightsRefused``)."""
    found = _esrgan_layout(state)
    if found is None:
        return {}
    layout, blocks = found
    if layout == "first":
        tops = {int(m[1]) for k in state if isinstance(k, str) and (m := _OLD_TOP.fullmatch(k))}
        if tops != set(_OLD_X4):
            ups = len(tops) - 3  # (the first conv, and the two after the upsampling)
            scale = f"an x{2 ** ups} network" if ups >= 0 else "a network"
            raise WeightsRefused(f"these are ESRGAN weights in its first code's layout (model.0, model.1.sub ...) of "
                                 f"{scale} with layers model.{', model.'.join(map(str, sorted(tops)))}: lway_rt builds "
                                 f"that network at x4 only (model.{', model.'.join(map(str, _OLD_X4))})", "unsupported",
                                 "use an x4 model" + (", or Real-ESRGAN's x2plus for x2" if ups == 1 else ""))
    return _esrgan_map(layout, blocks)


def esrgan_names(state: Mapping) -> dict[str, str]:
    """Real-ESRGAN's RRDBNet name of each tensor of a state dict in one of the layouts of ESRGAN's own code, as
    ``{ours: theirs}``; ``{}`` for any other state dict. The first layout (``model.0``, ``model.1.sub.N.RDBj.convk.0``,
    ``model.3`` ...: most community x4 ESRGAN models) and the second (``conv_first``, ``RRDB_trunk.N.RDBj.convk``,
    ``trunk_conv``, ``upconv1`` ...) hold the same network (LeakyReLU 0.2, residuals scaled by 0.2, nearest-neighbour
    x2 upsampling twice) under other names. (The layouts are those spandrel and chaiNNer read as "old" and "new"
    ESRGAN; the mapping is ours.)"""
    return {ours: theirs for ours, theirs in esrgan_full_names(state).items() if theirs in state}


def _in_file_names(exc: WeightsRefused, full: dict[str, str]) -> WeightsRefused:
    """``exc`` naming each tensor as the file does (``full``: ``{ours: theirs}``), where a refusal found it under our
    name."""
    text = str(exc).removesuffix(f": {exc.advice}") if exc.advice else str(exc)

    def theirs(m: re.Match) -> str:
        name = m[0].rstrip(".")
        return full.get(name, name) + m[0][len(name):]

    return WeightsRefused(re.sub(r"[A-Za-z_][\w.]*", theirs, text), exc.status, exc.advice)


def our_names(state: Mapping) -> dict:
    """``state`` with Real-ESRGAN's names where it holds ESRGAN's own (``esrgan_names``; the keys that layout does not
    name kept as they are, for the key check to name them); otherwise ``state`` as it is."""
    names = esrgan_names(state)
    if not names:
        return dict(state)
    theirs = set(names.values())
    return {**{ours: state[k] for ours, k in names.items()}, **{k: v for k, v in state.items() if k not in theirs}}


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel's, torch.compile's: the network's names after them


def _unprefixed(key: str) -> str:
    """``key`` without the prefixes a wrapper around the network adds to its state dict's names (either, both)."""
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def _is_a_network(inner: Mapping) -> bool:
    """Whether the tensors of ``inner`` (a state dict under a key of a checkpoint) are a supported network's."""
    try:
        detect({_unprefixed(k): v for k, v in inner.items() if isinstance(k, str) and isinstance(v, torch.Tensor)})
    except Exception:  # noqa: BLE001 - any refusal: not one
        return False
    return True


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Accept BasicSR/Real-ESRGAN checkpoint wrappers: ``params_ema`` first, then ``params``."""
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params", "state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner:
                return unwrap_state_dict(inner)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:  # a key that is no string is refused by detect, by name
            return {_unprefixed(k) if isinstance(k, str) else k: v for k, v in tensors.items()}
        held = {k: sum(isinstance(v, torch.Tensor) for v in inner.values()) for k, inner in obj.items()
                if isinstance(inner, Mapping)}
        if any(held.values()):  # (a GAN's checkpoint: {'g': ..., 'd': ...}) the one that is a supported network
            best = next((k for k in held if held[k] and _is_a_network(obj[k])), max(held, key=held.get))
            under = ", ".join(f"{k!r} ({n} tensor{'s' * (n != 1)})" for k, n in held.items() if n)
            raise ModelError(f"checkpoint holds no tensors at its top level, but state dicts under {under}: save the "
                             f"network's own, e.g. torch.save(torch.load(FILE)[{best!r}], 'weights.pth'), and pass "
                             "that file")
    if isinstance(obj, torch.Tensor):  # (torch.save of one tensor: a layer's weights, an image)
        raise ModelError(f"checkpoint holds one tensor (of shape {tuple(obj.shape)}), not a network's: expected a state "
                         "dict (optionally under 'params_ema' or 'params')")
    if isinstance(obj, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in obj):  # (tensors without names)
        raise ModelError(f"checkpoint holds a {type(obj).__name__} of {len(obj)} tensors without names, not a state "
                         "dict: expected one (optionally under 'params_ema' or 'params'), e.g. torch.save(model.state_dict())")
    raise ModelError("checkpoint holds no tensors: expected a state dict (optionally under 'params_ema' or 'params')")


def detect(state: StateDict) -> ArchSpec:
    """Work out architecture and hyper-parameters from a state dict's keys and shapes.

    Refuses (``WeightsRefused``, naming the key) what no network loads: keys that are no strings, sparse or
    non-float tensors, a conv weight it reads that is not 4-D, numbered layers with a gap or a stray number."""
    _check_tensors(state)
    full = esrgan_full_names(state)
    try:
        return _detect(our_names(state))
    except WeightsRefused as exc:
        raise _in_file_names(exc, full) if full else exc from None


def _detect(state: StateDict) -> ArchSpec:
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
    first = {k.split(".", 1)[0] for k in keys if isinstance(k, str)}
    if len(first) == 1 and all(isinstance(k, str) and "." in k for k in keys):  # one prefix on every name (a
        # Lightning module's self.model): said where the names without it are a network's
        (prefix,) = first
        inner = our_names({k.split(".", 1)[1]: v for k, v in state.items()})
        if any(all(k in inner for k in e.required_keys) for e in ARCHS):
            detail += (f". Every name starts with '{prefix}.', and the names after it are a supported network's: save "
                       f"those, e.g. sd = torch.load(FILE); sd = sd.get('state_dict', sd); "
                       f"torch.save({{k.removeprefix('{prefix}.'): v for k, v in sd.items()}}, 'weights.pth')")
    raise WeightsRefused(
        f"unsupported architecture: {len(keys)} tensors ({sample}) match none of "
        f"{', '.join(e.name for e in ARCHS)}{detail}. Supported are Real-ESRGAN/BasicSR RRDBNet (also under ESRGAN's own names, x4) and SRVGGNetCompact weights.",
        "unsupported",
    )


def build(spec: ArchSpec) -> nn.Module:
    return _BY_NAME[spec.arch].build(**spec.hparams)


def check_state_dict(state: StateDict) -> ArchSpec:
    """Every check ``from_state_dict`` makes, without building the network (its shapes come from a copy on the meta
    device): what ``lwayrt models list`` reports for a file. Raises ``WeightsRefused`` (naming tensors as the file
    does)."""
    spec = detect(state)
    full = esrgan_full_names(state)
    try:
        return _check_state_dict(our_names(state), spec)
    except WeightsRefused as exc:
        raise _in_file_names(exc, full) if full else exc from None


def _check_state_dict(state: StateDict, spec: ArchSpec) -> ArchSpec:
    with torch.device("meta"):
        own = build(spec).state_dict()
    # a counter or flag saved beside the weights (a top-level name, one value: iter, step, best_psnr = -inf), said as
    # such before the values are judged (57I-9; 57K-4: an infinite one was called corrupt weights)
    counters = [k for k in state if k not in own and "." not in k and state[k].numel() == 1]
    if counters:  # (the missing ones said too: 57K-5)
        raise _counter_refused(counters[0], state[counters[0]], "extra keys", [k for k in own if k not in state])
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise WeightsRefused(f"the weights hold NaN or infinite values in {len(bad)} tensor{'s' * (len(bad) > 1)} "
                             f"({listing(bad, 3)}): the file "
                             f"is corrupt (or the training diverged); {REDOWNLOAD}", "NaN weights")
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise WeightsRefused(f"{k} has shape {list(v.shape)} where {spec.arch} x{spec.scale} has "
                                 f"{list(own[k].shape)}: {VARIANT}",
                                 "wrong shapes")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = ([f"missing {listing(missing, 3)}"] if missing else []) + \
            ([f"unexpected {listing(unexpected, 3)}"] if unexpected else [])
        said = f"the weights do not fit {spec.arch} x{spec.scale} as detected ({'; '.join(parts)})"
        if unexpected:
            raise WeightsRefused(f"{said}: {VARIANT}", "missing keys" if missing else "extra keys")
        raise WeightsRefused(said, "missing keys", f"the file is incomplete (or {VARIANT}); {REDOWNLOAD}")  # (with
        # something to do: 57D-4)
    return spec


def _recorded_activation(spec: ArchSpec, metadata: dict[str, str] | None) -> ArchSpec:
    """An SRVGGNetCompact's activation as its file records it (``hparams``, as lwayrt writes them): the tensors tell
    PReLU (it has weights) from the others, not ReLU from LeakyReLU, taken for LeakyReLU unless recorded."""
    if spec.arch != "SRVGGNetCompact" or spec.hparams.get("act_type") != "lrelu" or not metadata:
        return spec
    try:
        recorded = json.loads(metadata.get("hparams", "{}")).get("act_type")
    except (ValueError, AttributeError):
        return spec
    if recorded != "relu":
        return spec
    return dataclasses.replace(spec, hparams={**spec.hparams, "act_type": "relu"})


def without_step_counters(state: StateDict) -> StateDict:
    """``state`` without a training framework's batch-norm step counters (``num_batches_tracked``, int64): they
    carry no weight, and neither architecture has batch norm."""
    return {k: v for k, v in state.items() if not (isinstance(k, str) and k.endswith("num_batches_tracked"))}


def from_state_dict(state: StateDict, *, name: str | None = None, source: str | None = None,
                    metadata: dict[str, str] | None = None) -> ModelDescriptor:
    """Detect, build and load; refuse NaN/inf weights, non-float tensors and any key mismatch (``check_state_dict``),
    before the network is built."""
    where = f"{source}: " if source else ""
    try:
        state = without_step_counters(unwrap_state_dict(state))
        spec = check_state_dict(state)
        names = esrgan_names(state)
        state = our_names(state)
    except WeightsRefused as exc:
        raise WeightsRefused(f"{where}{str(exc).removesuffix(f': {exc.advice}') if exc.advice else exc}", exc.status,
                             exc.advice) from None
    except ModelError as exc:
        raise ModelError(f"{where}{exc}") from None
    spec = _recorded_activation(spec, metadata)
    with torch.device("meta"):
        model = build(spec)
    # every parameter is in the checked state dict: allocate without the random init, then load
    model = model.to_empty(device="cpu")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    model.eval()
    return ModelDescriptor(model=model, spec=spec, name=name, source=source, metadata=dict(metadata or {}),
                           file_names=names)
