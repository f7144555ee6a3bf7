"""Upscale images and folders with an SR model: the library behind ``lwayrt upscale``.

Three layers, each usable alone:

* :func:`upscale_rgb` — one HxWx3 float array through a model descriptor (tiled, padded).
* :func:`upscale_image` — a :class:`~lway_rt.io.images.LoadedImage`, alpha and grey included.
* :func:`upscale_files` — files and folders to an output folder, batch-safe: a bad image is
  recorded as a failure and the others are still processed; an input is never overwritten.

A folder written by ``lwayrt adapt --mode per-group`` holds one model per group of inputs; given as the
model, each image is sent to the group whose stage-1 embedding centre is nearest to its own
(:class:`GroupRouter`), so new footage from one of the sources gets that source's model.

Alpha is upscaled separately from the colour, by default with the SR model itself on the alpha
replicated to three channels (sharp mask edges, as Real-ESRGAN does), or bicubic on request; a
fully opaque alpha is just enlarged without running anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lway_rt.adapt._imageio import natural_order
from lway_rt.archs.descriptor import ModelDescriptor
from lway_rt.errors import InputError, Interrupted, LwayError, ModelError, listing, note, stop_if_asked
from lway_rt.io.images import (
    IMAGE_SUFFIXES, WRITE_SUFFIXES, LoadedImage, all_finite, broken_link_message, fill_hidden_colour, format_loss_note, frames_note,
    image_samples, missing_input_message, no_images_message, read_image, settle_alpha, to_numpy, to_tensor, unread_files_note,
    write_samples,
)
from lway_rt.io.weights import NAME_MAX, case_insensitive, ensure_writable_dir
from lway_rt.runtime.tiling import TileConfig, upscale_tensor
from lway_rt.runtime.device import check_device_spelling

__all__ = ["UpscaleConfig", "Failure", "ROUTE_REACH", "Route", "UpscaleReport", "DetailCap", "GroupRouter", "prepare_model",
           "prepare_detail_cap", "prepare_router", "upscale_rgb",
           "upscale_colour", "upscale_alpha", "upscale_image", "inference_copy",
           "scaled_size", "collect_inputs", "earlier_outputs", "up_to_date", "plan_outputs", "upscale_files",
           "written_by_upscale"]


# input pixels. realesr-animevideov3, tiled vs whole, max 8-bit levels off on 64-px noise / a 96-px photo crop:
# tile 16 overlap 4: 77 / 22; 24/8: 38 / 11; 32/8: 13 / 9; 48/16: 1 / 1 (the default overlap is 32)
MIN_TILE = 32


@dataclass(frozen=True)
class UpscaleConfig:
    """Everything ``lwayrt upscale`` decides besides the inputs (validated on construction)."""

    model: str = "realesr-animevideov3"
    tile: int = 512
    tile_overlap: int = 32
    tile_chosen: bool = True  # False: --tile was left at its default, so a model that cannot be tiled runs whole images
    blend: str = "linear"
    device: str = "cpu"
    fp16: bool = False
    suffix: str | None = None  # None: "_x{scale}" (the --outscale where given)
    format: str = "png"  # "png" or "same"
    alpha: str = "model"  # "model" or "bicubic"
    recursive: bool = False
    scale: int | None = None  # if given, the model must have this scale
    detail_cap: str = "auto"  # "auto" (what adapted weights record), "off", or a number >= 1
    base_model: str | None = None  # the unadapted model the cap compares with [the weights' metadata]
    stage1: str | None = None  # a per-group adaptation's stage-1 checkpoint [the one its groups.json records]
    skip_existing: bool = False  # leave outputs already there (newer than their input, of the model's size) alone
    outscale: float | None = None  # resize the model's output to this x the input (None: the model's scale)

    def __post_init__(self):
        if self.detail_cap not in ("auto", "off"):
            try:
                ok = 1.0 <= float(self.detail_cap) < float("inf")
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(f"--detail-cap must be auto, off or a number >= 1, not {self.detail_cap!r}")
        if self.tile < 0 or self.tile_overlap < 0:
            raise InputError("--tile and --tile-overlap must be >= 0")
        if not self.model.lower().endswith(".onnx"):  # an .onnx may refuse tiles altogether: see _prepare_onnx
            self.check_overlap()
        if self.format not in ("png", "same"):
            raise InputError(f"--format must be 'png' or 'same', not {self.format!r}")
        if self.alpha not in ("model", "bicubic"):
            raise InputError(f"--alpha must be 'model' or 'bicubic', not {self.alpha!r}")
        check_device_spelling(self.device)
        if self.fp16 and self.device == "cpu" and not self.model.lower().endswith(".onnx"):  # an .onnx: see _prepare_onnx
            raise InputError("--fp16 runs on a CUDA GPU only: add --device cuda, or drop --fp16 on the CPU")
        if self.outscale is not None and not 0 < self.outscale <= 64:
            raise InputError(f"--outscale must be a number above 0 (64 at most), not {self.outscale:g}")
        if self.suffix is not None and ("/" in self.suffix or "\\" in self.suffix):
            raise InputError(f"--suffix must not contain a path separator: {self.suffix!r}")
        if self.suffix is not None and any(ord(c) < 32 or ord(c) == 127 for c in self.suffix):
            # (a new line in a file name breaks most scripts that list the folder)
            raise InputError(f"--suffix must not contain a control character (a new line, a tab): {self.suffix!r}")
        if self.suffix is not None and (size := len(os.fsencode(self.suffix))) + len("a.png") > NAME_MAX:  # (one line,
            # not a failure per input: 57F-7)
            raise InputError(f"--suffix is {size} bytes: with any name and ending, an output's name would be more than "
                             f"the {NAME_MAX} bytes a file name may have; shorten it")

    def check_overlap(self) -> None:
        least = max(MIN_TILE, 2 * self.tile_overlap + 1)  # the smallest tile this overlap takes
        if 0 < self.tile < MIN_TILE:
            raise InputError(f"--tile {self.tile} is too small: tiles under {MIN_TILE} px change the picture at their "
                             f"seams: use --tile {least} or more (more than twice --tile-overlap {self.tile_overlap}), "
                             "or 0 for whole images")
        if self.tile and self.tile <= 2 * self.tile_overlap:
            raise InputError(f"--tile {self.tile} must be more than twice --tile-overlap {self.tile_overlap}: "
                             f"use --tile {least} or more, or a smaller --tile-overlap")

    @property
    def tiles(self) -> TileConfig:
        return TileConfig(self.tile, self.tile_overlap, self.blend)


@dataclass(frozen=True)
class Failure:
    path: Path
    message: str


# An image whose distance (1 - cosine) to its nearest group centre is more than this many times that group's farthest
# own image's is reported as unlike every group. benchmarks/group_signal.py (reach, seeds 1-8 of the quality protocol):
# new crops from the groups' own sources exceed 1x in 7.4 % of cases, 2x in 1.6 % (at most 6.6 % for one seed's
# groups); crops from sources no group was adapted on (groups of sharpen + JPEG and box crops) exceed 2x in 99.7 %
# (sensor noise) and 38 % (mild motion blur, near box downscaling) of cases.
ROUTE_REACH = 2.0


@dataclass(frozen=True)
class Route:
    """Where a per-group adaptation's router sent one image."""

    path: Path
    group: str
    similarity: float  # cosine of the image's embedding to the group's centre
    floor: float  # the lowest cosine of the group's own images to its centre (``route_floors``: NaN, none measured)
    borrowed: bool = False  # a group of one image (or copies of one): ``floor`` is the widest other group's

    @property
    def inside(self) -> bool:
        """Within ``ROUTE_REACH`` x the distance of the group's farthest own image (else: unlike every group's); with
        no spread measured (every group of one image), not judged."""
        from lway_rt.adapt.groups import reach_ratio

        return not math.isfinite(self.floor) or float(reach_ratio(self.similarity, self.floor)) <= ROUTE_REACH + 1e-6

    def unlike_note(self) -> str | None:
        """What to tell of an image outside every group's reach (``inside`` false), else None."""
        if self.inside:
            return None
        spread = (f"a group of one image or copies of one, judged by the widest group's spread, {1 - self.floor:.2g}"
                  if self.borrowed
                  else f"whose own images lie within {1 - self.floor:.2g}")
        return (f"{self.path} is unlike the images every group was adapted on ({1 - self.similarity:.2g} from the "
                f"nearest centre, {self.group}'s, {spread}); its model may not suit it")


def route_floors(floors: Sequence[float], sizes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(floors to judge routes by, which are borrowed). A group of one image (or of copies of one) lies at its centre
    (floor 1), so every other image was flagged as unlike it: such a group takes the widest spread (lowest floor) of
    the groups of two or more different images, or NaN (not judged) when there is none."""
    floors = np.asarray(floors, dtype=np.float64).copy()
    single = (np.asarray(sizes) < 2) | (floors >= 1 - 1e-9)  # (copies of one image lie at their centre too: every
    # image was flagged, their spread printed as -4.4e-16: 58C-3)
    measured = floors[~single]
    floors[single] = measured.min() if measured.size else np.nan
    return floors, single


@dataclass
class UpscaleReport:
    written: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)  # per-group adaptations only
    notes: list[str] = field(default_factory=list)  # written, with something the user should know
    kept: list[Path] = field(default_factory=list)  # outputs already there, left alone (skip_existing)
    remade: list[Path] = field(default_factory=list)  # outputs there of another model or settings, made again
    uncarried: list[tuple[Path, Path, tuple[str, ...]]] = field(default_factory=list)  # (input, output, XMP/IPTC)

    @property
    def ok(self) -> bool:
        return not self.failures


# --------------------------------------------------------------------------------------------
# the model


def prepare_model(config: UpscaleConfig) -> ModelDescriptor:
    """Load the model named in ``config`` and put it on its device and precision (or raise)."""
    from lway_rt.io.store import load_model
    from lway_rt.runtime.device import check_torch_device
    from lway_rt.runtime.onnx_model import ENGINE_SUFFIXES, ONNX_SUFFIX, load_onnx_model

    if Path(config.model).suffix.lower() in (ONNX_SUFFIX, *ENGINE_SUFFIXES):
        return _prepare_onnx(config, load_onnx_model(config.model, device=config.device))
    check_torch_device(config.device)
    desc = load_model(config.model, device=config.device)
    label = desc.name or desc.source or desc.arch
    if config.scale is not None and config.scale != desc.scale:
        hint = f" (-s {config.scale} resizes this model's output to x{config.scale})" if 0 < config.scale <= 64 else ""
        raise InputError(f"model {label} upscales x{desc.scale}, not x{config.scale}: pick a x{config.scale} model or drop "
                         f"--scale{hint}")  # (-s takes up to 64: the hint is given where it works)
    refuse_channels(desc, f"model {label}")
    if config.fp16:
        if not desc.fp16_safe:
            raise InputError(f"model {label} is not safe in fp16 (its activations overflow): drop --fp16")
        desc.model.half()
    _cpu_layout(desc.model)
    return desc


def refuse_channels(desc: ModelDescriptor, label: str) -> None:
    """upscale runs RGB and grey networks (``ModelDescriptor.require_rgb`` is the check of the commands that need
    RGB)."""
    if desc.in_channels not in (1, 3):
        raise ModelError(f"{label} takes {desc.in_channels}-channel input; only RGB (3) and grey (1) models can upscale "
                         "images: 'lwayrt export' makes an ONNX file of it for a runtime of your own")


def cap_off_refused(name: str, verb: str) -> InputError:
    """The refusal of ``--detail-cap off`` for an exported file that holds its cap in the graph (upscale ``verb``
    "run", serve-bench "time"): the option cannot apply, so it is not ignored."""
    return InputError(f"{name} holds a detail cap fixed at export, so --detail-cap off cannot apply: {verb} a file "
                      "exported with 'lwayrt export --detail-cap off', or drop the option")


def _cpu_layout(module: torch.nn.Module) -> None:
    """A network that runs on the CPU is held in channels-last (NHWC), its input made so in ``_model_fn``: oneDNN's
    convolutions then skip a layout reorder around every layer (``benchmarks/cpu_memory_format.py``,
    ``cpu_memory_format.json``, 2 threads on a loaded 2-core EPYC: 0.65-0.88x the time, median 0.74x, over
    realesr-animevideov3 and realsr-df2k-x4, whole and tiled); outputs agree within 0.003 8-bit levels (0.0007 in
    that run, 0.0021 on other images)."""
    param = next(module.parameters(), None)
    if param is not None and param.device.type == "cpu":
        module.to(memory_format=torch.channels_last)


def _prepare_onnx(config: UpscaleConfig, desc: ModelDescriptor) -> ModelDescriptor:
    """Checks for an ONNX file (``runtime.onnx_model``): its precision and any detail cap were fixed at export."""
    label = Path(config.model).name
    if config.scale is not None and config.scale != desc.scale:
        raise InputError(f"model {label} upscales x{desc.scale}, not x{config.scale}: pick a x{config.scale} model or drop --scale")
    refuse_channels(desc, label)
    if config.fp16:
        if (desc.metadata or {}).get("onnx_precision") == "fp16":
            raise InputError(f"{label} is a half-precision (fp16) file already, and runs as exported: drop --fp16")
        raise InputError(f"{label} runs in the precision it was exported in: drop --fp16 (export with --precision fp16 "
                         "for a half-precision file)")
    if config.detail_cap not in ("auto", "off") or config.base_model:
        raise InputError(f"{label} runs as exported: a detail cap goes into the file at export ('lwayrt export "
                         "--detail-cap'), so drop --detail-cap / --base-model here")
    if not desc.tiling_safe and config.detail_cap == "off":  # the cap is in the graph: 'off' would be ignored
        raise cap_off_refused(label, "run")
    if not desc.tiling_safe and config.tile and config.tile_chosen:
        raise InputError(f"{label} holds a detail cap measured on each input it is given, so tiles would each be capped "
                         "on their own: add --tile 0 (whole images, as 'lwayrt upscale' caps them)")
    if desc.tiling_safe:  # after the refusal of tiles, which makes the overlap moot (as it is for whole images)
        config.check_overlap()
    meta = desc.metadata or {}
    if meta.get("onnx_precision") == "unknown (no manifest)":  # (the docs tell these apart: say which this is)
        note(f"{label} has neither a manifest nor lway_rt's metadata (exported elsewhere): its scale was probed, and "
             "nothing checked its images against a PyTorch model")
    elif meta.get("described_by"):
        note(f"{label} runs without its manifest (the .json 'lwayrt export' wrote beside it): the parity check it "
             "passed then cannot be confirmed here")
    return desc


@dataclass(frozen=True)
class DetailCap:
    """What ``--detail-cap`` needs: the cap and the unadapted model the adapted images are held against."""

    cap: float
    base: ModelDescriptor


def prepare_detail_cap(config: UpscaleConfig, desc: ModelDescriptor) -> DetailCap | None:
    """The detail cap to apply with ``desc`` (None: none). ``auto`` takes the one ``lwayrt adapt --detail-cap``
    recorded in the weights, so upscale repeats adapt's images; the base model comes from ``--base-model`` or
    the weights' ``base_model`` and must hash to their ``base_sha256`` when they record one."""
    from lway_rt.io.store import load_recorded_model

    meta = desc.metadata or {}
    if config.detail_cap == "off" or (config.detail_cap == "auto" and "detail_cap" not in meta):
        if config.base_model:  # asked for, and nothing would use it: say so rather than ignore it
            why = "--detail-cap off" if config.detail_cap == "off" else "these weights record no detail cap"
            raise InputError(f"--base-model is the model the detail cap compares with, and {why}: drop --base-model, "
                             "or add --detail-cap C")
        return None
    cap = float(meta["detail_cap"] if config.detail_cap == "auto" else config.detail_cap)
    # --base-model, else the name the weights give (a store name), else the file adapt loaded it from
    specs = [config.base_model] if config.base_model else \
        list(dict.fromkeys(v for v in (meta.get("base_model"), meta.get("base_source")) if v))
    if not specs and not {"adapted_sha256", "detail_cap"} & set(meta):  # a packaged or user model, not adapted
        raise InputError("--detail-cap limits how far adapted weights move from the model they were adapted from, and "
                         "these weights are not lwayrt adapt's: drop --detail-cap (or give the unadapted model with "
                         "--base-model NAME_OR_FILE if they were adapted elsewhere)")
    if not specs:
        raise InputError("--detail-cap compares with the unadapted model, and these weights do not name one: "
                         "add --base-model NAME_OR_FILE, or --detail-cap off")
    base, reasons = load_recorded_model(specs, meta.get("base_sha256"), device=config.device)
    if base is None:
        if any(r.endswith("(sha256 differs)") for r in reasons):
            raise InputError(f"{' / '.join(specs)} is not the model these weights were adapted from (sha256 differs): "
                             "pass that one with --base-model FILE, or --detail-cap off")
        raise InputError(f"the detail cap ({cap:g}) needs the unadapted model {' or '.join(specs)}, which "
                         f"does not load ({'; '.join(reasons)}): pass --base-model NAME_OR_FILE, or --detail-cap off")
    spec = config.base_model or base.source
    if base.scale != desc.scale:
        raise InputError(f"--base-model {spec} upscales x{base.scale}, the adapted model x{desc.scale}: pass its base model")
    if config.fp16:
        base.model.half()
    _cpu_layout(base.model)
    return DetailCap(cap, base)


@dataclass
class GroupRouter:
    """The models of an ``lwayrt adapt --mode per-group`` folder and what sends an image to one of them.

    Stage 1's E (the checkpoint the groups were made with, checked by its sha256) reads the image as the
    grouping did (``embed.embedding_input``); the image goes to the group with the nearest centre
    (``groups.nearest_group``). ``floors`` are each group's members' lowest cosine to its centre: an image more
    than ``ROUTE_REACH`` times as far from the centre as that is unlike every image the group was adapted on,
    and the route says so.
    """

    folder: Path
    names: list[str]
    models: dict[str, ModelDescriptor]
    caps: dict[str, DetailCap | None]
    centres: np.ndarray
    floors: np.ndarray
    stage1: object
    embedding_input: str  # "sr" (bicubic-upsampled LR) or "lr"
    scale: int
    device: str = "cpu"
    borrowed: np.ndarray | None = None  # per group: its floor is another group's (``route_floors``)

    def route(self, path: Path, rgb: np.ndarray) -> Route:
        from lway_rt.adapt.embed import compute_embeddings, embedding_input
        from lway_rt.adapt.groups import nearest_group
        from lway_rt.degae import MIN_ENCODER_SIDE

        x = embedding_input(to_tensor(rgb, device=self.device), self.scale, "lr-recon" if self.embedding_input == "lr" else "sr")
        if min(x.shape[-2:]) < MIN_ENCODER_SIDE:  # said in the image's own size (it was the encoder input's, 4x it)
            least = math.ceil(MIN_ENCODER_SIDE * rgb.shape[0] / x.shape[-2]) if x.shape[-2] < MIN_ENCODER_SIDE else \
                math.ceil(MIN_ENCODER_SIDE * rgb.shape[1] / x.shape[-1])
            raise InputError(f"{path.name} is {rgb.shape[1]}x{rgb.shape[0]} px, below the {least} px a side that a "
                             "per-group folder's routing (stage 1's encoder) reads: upscale it with one group's weights")
        emb = compute_embeddings([x], self.stage1)
        best, sim = nearest_group(emb, self.centres)
        g = int(best[0])
        return Route(path, self.names[g], float(sim[0]), float(self.floors[g]),
                     bool(self.borrowed is not None and self.borrowed[g]))


def per_group_record(spec: str) -> tuple[Path, dict] | None:
    """``(folder, groups.json)`` when ``spec`` is a per-group adaptation folder, else None. A store name means the
    store, as everywhere a model is asked for, even when the current folder holds such a folder of that name."""
    import json

    from lway_rt.io.store import is_store_name

    if is_store_name(spec):
        return None  # as resolve_model_path decides: "./NAME" reaches the folder
    folder = Path(spec).expanduser()
    path = folder / "groups.json"
    if folder.is_dir():  # (first: its groups.json may be one a stopped --restore has not put back yet, or removed)
        from lway_rt.adapt.runfolder import refuse_while_restoring

        refuse_while_restoring(folder)
    if not (folder.is_dir() and path.is_file()):
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} cannot be read ({exc}): pass one of the folder's models instead") from None
    if not isinstance(record, dict) or "members" not in record:
        raise InputError(f"{path} is not a groups file written by 'lwayrt adapt --mode per-group'")
    return folder, record


def _load_stage1_for(routing: dict, folder: Path, config: UpscaleConfig):
    """The stage-1 checkpoint the groups were made with: --stage1, else the one groups.json's ``routing`` record
    names, else the shipped one; its sha256 must match the record's."""
    from lway_rt.degae import default_checkpoint_path, load_stage1
    from lway_rt.io.weights import state_dict_sha256

    want = routing["stage1_sha256"]
    recorded = routing.get("stage1")
    specs = [config.stage1] if config.stage1 else \
        [p for p in (None if recorded in (None, "shipped") else recorded, str(default_checkpoint_path())) if p]
    if config.stage1 and not Path(config.stage1).expanduser().is_file():
        raise InputError(f"--stage1 {config.stage1} does not exist: pass the stage-1 checkpoint the groups in {folder} "
                         "were made with" + (", or drop --stage1 (they were made with the shipped one)"
                                             if recorded in (None, "shipped") else f" ({recorded})"))
    for spec in specs:
        if not Path(spec).is_file():
            continue
        s1 = load_stage1(spec, device=config.device)
        if state_dict_sha256(s1.state_dict()) == want:
            return s1
        if config.stage1:
            raise InputError(f"--stage1 {spec} is not the stage-1 checkpoint the groups in {folder} were made with "
                             f"(sha256 {want[:12]}...): pass that one")
    where = config.stage1 or (recorded if recorded not in (None, "shipped") else "the shipped checkpoint")
    if recorded not in (None, "shipped") and Path(recorded).is_file():  # (a train-degae --resume or --overwrite
        # there replaced it: "not at" a file that is there could not be followed)
        raise InputError(f"the groups in {folder} were made with the stage-1 checkpoint {recorded} as it was then "
                         f"(sha256 {want[:12]}...), and that file holds another one now (trained further or again "
                         "since?): pass a copy of the one they were made with with --stage1 FILE, pass one of the "
                         "folder's models, or adapt again")
    raise InputError(f"the groups in {folder} were made with a stage-1 checkpoint (sha256 {want[:12]}...) that is not "
                     f"at {where}: pass it with --stage1 FILE, or pass one of the folder's models")


def prepare_router(config: UpscaleConfig) -> GroupRouter | None:
    """The router of the per-group adaptation folder ``config.model`` names (None: the model is not one)."""

    from lway_rt.adapt.loop import WEIGHTS

    found = per_group_record(config.model)
    if found is None:
        return None
    folder, record = found
    names = list(record["members"])
    routing = record.get("routing")
    if not routing:
        raise InputError(f"{folder} was adapted before per-group adaptations recorded their groups' centres: pass one "
                         f"of its models ({', '.join(f'{n}/{WEIGHTS}' for n in names[:3])})")
    _refuse_a_half_replaced_grouping(folder, record)
    missing = [n for n in names if not (folder / n / WEIGHTS).is_file()]
    if missing:
        raise InputError(f"{folder}: {', '.join(missing)} not adapted yet (no {WEIGHTS}): finish the run with "
                         "'lwayrt adapt ... --resume', or pass one of the finished models")
    try:
        centres = np.array([routing["centres"][n] for n in names], dtype=np.float64)
        floors = np.array([routing["floors"][n] for n in names], dtype=np.float64)
        embed_from, scale = str(routing["embedding_input"]), int(routing["scale"])
        if "stage1_sha256" not in routing or centres.ndim != 2:
            raise ValueError("no stage-1 hash or centres")
        if not np.isfinite(centres).all():  # (every image went to a NaN centre, said as "nan from it": 58C-4)
            raise ValueError("a centre is not a number")
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{folder / 'groups.json'} is incomplete ({type(exc).__name__}: {exc}): adapt again, or pass "
                         "one of the folder's models") from None
    models, caps = {}, {}
    for n in names:
        cfg = dataclasses.replace(config, model=str(folder / n / WEIGHTS))
        models[n] = prepare_model(cfg)
        caps[n] = prepare_detail_cap(cfg, models[n])
    stage1 = _load_stage1_for(routing, folder, config)
    if centres.shape[1] != stage1.embed_dim:  # (a traceback from the matrix product: 58C-4)
        raise InputError(f"{folder / 'groups.json'} is incomplete (its centres have {centres.shape[1]} numbers, stage "
                         f"1 embeds in {stage1.embed_dim}): adapt again, or pass one of the folder's models")
    floors, borrowed = route_floors(floors, [len(record["members"][n]) for n in names])
    return GroupRouter(folder, names, models, caps, centres, floors, stage1, embed_from, scale, config.device, borrowed)


def _refuse_a_half_replaced_grouping(folder: Path, record: dict) -> None:
    """Refuse the per-group folder ``folder`` where its groups.json (``record``) and its run folders are not one
    adaptation: a per-group --overwrite stopped part-way (or a --restore stopped part-way) writes the new grouping first
    and replaces the runs one by one, so upscale had sent images, silently, to the old runs' models by the new groups'
    centres (a group's model adapted on other images). Each run's report names the images it was adapted on."""
    from lway_rt.adapt.runfolder import ASIDE, _aside_state, _read_json_dict, _written_summary, restore_words

    state = _aside_state(folder / ASIDE)  # (an unfinished --restore was refused with the folder: per_group_record)
    way_on = (f"finish it with the same 'lwayrt adapt' command with --resume in place of --overwrite, or "
              f"{restore_words(folder)} to have the earlier runs back")
    if state == "cut short" or (state == "kept" and _written_summary(folder) is None):
        raise InputError(f"{folder} holds a per-group --overwrite that was stopped part-way: its groups are the new "
                         f"command's and its models partly the runs it replaces; {way_on}")
    for name, members in record["members"].items():
        report = _read_json_dict(folder / str(name) / "report.json") or {}
        images = report.get("images")
        made_on = sorted(str(i.get("name")) for i in images if isinstance(i, dict)) if isinstance(images, list) else None
        if made_on is not None and made_on != sorted(map(str, members)):
            if state == "kept":  # (an --overwrite's kept runs are there: it stopped after writing the new grouping)
                raise InputError(f"{folder}: {name}'s model was adapted on other images than its group in groups.json "
                                 f"lists (a per-group --overwrite stopped part-way?): {way_on}")
            raise InputError(f"{folder}: {name}'s model was adapted on other images than groups.json lists for it "
                             f"(edited since?): put back the members {folder / str(name) / 'report.json'} names, or "
                             "adapt again (--overwrite)")  # (--resume and --restore were advised: both refuse)


def uncarried_note(uncarried: Sequence[tuple[Path, Path | str, Sequence[str]]], outputs: str = "the outputs") -> str:
    """The note for inputs whose XMP / IPTC blocks (``LoadedImage.uncarried``) their outputs do not carry: (input,
    output, blocks) each, the first named in an exiftool command that copies them over."""
    from lway_rt.errors import shell_word as q

    src, dest, _ = uncarried[0]
    kinds = " and ".join(sorted({b for *_, bs in uncarried for b in bs}, reverse=True))
    return (f"{len(uncarried)} input(s) hold {kinds} metadata (captions, keywords, rights …; as {src}) that {outputs} "
            f"do not carry (EXIF, ICC profile and DPI are carried): copy it over with exiftool, e.g. exiftool "
            f"-tagsFromFile {q(str(src))} -xmp:all -iptc:all '-XMP-tiff:Orientation=' -overwrite_original "
            f"{q(str(dest))} (the output is upright: its XMP must not turn it again)")


def cmyk_note(src: Path, dest: str) -> str:
    """The network works in RGB: a print shop's CMYK file comes back as RGB, so it is said."""
    return f"{src} is CMYK: {dest} is RGB (convert it back in an editor if it goes to print)"


def _placement(desc: ModelDescriptor) -> tuple[torch.device, torch.dtype]:
    """Where the network takes its input and in which dtype (an ONNX Runtime network: host float32)."""
    param = next(desc.model.parameters(), None)
    return (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)


def _model_fn(desc: ModelDescriptor) -> Callable[[torch.Tensor], torch.Tensor]:
    device, dtype = _placement(desc)
    nhwc = device.type == "cpu" and any(p.dim() == 4 and not p.is_contiguous()
                                        and p.is_contiguous(memory_format=torch.channels_last)
                                        for p in desc.model.parameters())  # held so by _cpu_layout

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, dtype)
        return desc.model(x.contiguous(memory_format=torch.channels_last) if nhwc else x)

    return run


_LUMA = (0.299, 0.587, 0.114)  # BT.601, as a grey model's luma is made and a grey image is read


def _with_colour(luma: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """RGB from a grey network's upscaled luma (1x1xHxW, on the CPU or its device) and the input's colour differences
    R - Y and B - Y (1x2xhxw), enlarged bicubic to its size; G is what keeps the luma the network made."""
    diff = torch.nn.functional.interpolate(diff.to(luma.device, luma.dtype), size=luma.shape[-2:], mode="bicubic",
                                           align_corners=False)
    r, b = luma + diff[:, :1], luma + diff[:, 1:]
    g = (luma - _LUMA[0] * r - _LUMA[2] * b) / _LUMA[1]
    return torch.cat([r, g, b], 1).clamp_(0.0, 1.0)


def upscale_rgb(desc: ModelDescriptor, rgb: np.ndarray, tiles: TileConfig = TileConfig()) -> np.ndarray:
    """HxWx3 float in [0, 1] -> (H*s)x(W*s)x3 float32 in [0, 1]."""
    h, w = rgb.shape[:2]
    if min(h, w) < desc.min_size:
        raise InputError(f"image is {w}x{h}, smaller than the model's minimum side of {desc.min_size} px")
    device, _ = _placement(desc)
    x = to_tensor(rgb, device=device)
    grey_model = desc.in_channels == 1
    colour = None
    if grey_model:  # the network sharpens the luma (BT.601) and the colour differences are enlarged bicubic, as an SR
        # network trained on Y is used on colour photos: colour inputs came out grey
        luma = (x * torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if not torch.equal(x[:, :1].expand_as(x), x):
            colour = (x[:, 0::2] - luma).cpu()  # R - Y, B - Y
        x = luma
    if not tiles.tile and device.type != "cpu":
        out_device = device
    else:
        out_device = "cpu"
    try:
        y = upscale_tensor(_model_fn(desc), x, desc.scale, tiles, multiple=desc.size_multiple, out_device=out_device)
    except torch.OutOfMemoryError:
        raise InputError(f"out of memory on {device} for a {w}x{h} image: use a smaller --tile") from None
    except ValueError as exc:  # the output's size disagrees with the scale the model claims (an edited manifest, say)
        raise InputError(f"{exc}: the model does not upscale by the scale it records") from None
    except RuntimeError as exc:  # the CPU allocator reports exhaustion as a plain RuntimeError
        if "allocate" not in str(exc):
            raise
        raise InputError(f"out of memory for a {w}x{h} image: use a smaller --tile") from None
    y = y.clamp_(0.0, 1.0)
    if colour is not None:
        y = _with_colour(y, colour)
    elif grey_model:  # clamped first: an expanded view cannot be written in place
        y = y.expand(-1, 3, -1, -1)
    out = to_numpy(y)
    if not all_finite(out):
        raise InputError("the model produced NaN/inf pixels (with --fp16 the activations may overflow: try without it)")
    return out


def upscale_alpha(desc: ModelDescriptor, alpha: np.ndarray, tiles: TileConfig, mode: str = "model",
                  cap: DetailCap | None = None) -> np.ndarray:
    """An HxW alpha in [0, 1] upscaled with the model on it replicated to three channels (``mode`` "model", settled
    so clear and opaque areas stay exactly so; held at the detail cap as the colour is, as an exported capped graph
    does to whatever it is given) or bicubic; a fully opaque or fully clear one is only enlarged (on a tiny image the
    network's border effects left a clear one at 3-4 of 255)."""
    s = desc.scale
    h, w = alpha.shape
    if float(alpha.min()) == 1.0:
        return np.ones((h * s, w * s), np.float32)
    if float(alpha.max()) == 0.0:
        return np.zeros((h * s, w * s), np.float32)
    if mode == "model":
        out = settle_alpha(upscale_colour(desc, np.repeat(alpha[..., None], 3, axis=2), tiles, cap)[0].mean(axis=2))
        return _held_where_settled(out, alpha, s)
    t = torch.nn.functional.interpolate(to_tensor(alpha), scale_factor=s, mode="bicubic", align_corners=False)
    return to_numpy(t.clamp_(0.0, 1.0))[..., 0]


def _held_where_settled(out: np.ndarray, alpha: np.ndarray, scale: int) -> np.ndarray:
    """``out``, the model's alpha, exactly opaque (clear) over each input pixel that is opaque (clear) with all its
    neighbours: on a strip 1-6 px tall the network's alpha drifted 1-4 levels inside a fully opaque area, past
    ``settle_alpha``'s 1.5 levels, so a mask of it was 98 % opaque in places (review 49H H2)."""
    from torch.nn import functional as F

    a = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None, None]
    opaque = -F.max_pool2d(-a, 3, stride=1, padding=1)[0, 0].numpy() == 1.0  # (the image's edge: its own pixels)
    clear = F.max_pool2d(a, 3, stride=1, padding=1)[0, 0].numpy() == 0.0
    block = np.ones((scale, scale), bool)
    out = np.where(np.kron(opaque, block), np.float32(1.0), out)
    return np.where(np.kron(clear, block), np.float32(0.0), out).astype(np.float32)


def _factor(config: UpscaleConfig, desc: ModelDescriptor) -> float:
    """How many times the input's size an output is: ``--outscale``, else the model's scale."""
    return desc.scale if config.outscale is None else config.outscale


def scaled_size(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """(width, height) of an output ``factor`` x ``size``, rounded half up: the one rule for every size check."""
    return int(size[0] * factor + 0.5), int(size[1] * factor + 0.5)


def _lanczos(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One float plane in [0, 1] resized to (width, height) with Lanczos (at float precision: 16-bit survives),
    clipped back into [0, 1] (the filter's lobes overshoot at edges)."""
    from PIL import Image

    if (plane.shape[1], plane.shape[0]) == size:
        return plane
    out = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F").resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def upscale_colour(desc: ModelDescriptor, rgb: np.ndarray, tiles: TileConfig, cap: DetailCap | None = None
                   ) -> tuple[np.ndarray, float | None]:
    """``upscale_rgb``, held at ``cap.cap`` x the fine detail of ``cap.base``'s image when a cap is given
    (``wavelet.detail_cap``); also the cap's blend factor s (1: the adapted image as it is; None without a cap)."""
    out = upscale_rgb(desc, rgb, tiles)
    if cap is None:
        return out, None
    from lway_rt.adapt.wavelet import detail_cap

    base = upscale_rgb(cap.base, rgb, tiles)
    held, s = detail_cap(to_tensor(base), to_tensor(out), cap.cap, desc.scale)
    return to_numpy(held), float(s[0])


def inference_copy(desc: ModelDescriptor, model: torch.nn.Module | None = None, device: str | None = None
                   ) -> ModelDescriptor:
    """``desc`` with a copy of ``model`` (default: its own) in eval mode, laid out as ``prepare_model`` lays out
    what upscale runs (``_cpu_layout``): ``lwayrt adapt`` writes its images through such a copy, so upscale with
    the adapted weights gives the same pixels, and the network it trained keeps its layout."""
    import copy

    net = copy.deepcopy(desc.model if model is None else model).eval()
    if device is not None:
        net.to(device)
    _cpu_layout(net)
    return dataclasses.replace(desc, model=net)


def upscale_image(desc: ModelDescriptor, img: LoadedImage, config: UpscaleConfig = UpscaleConfig(),
                  cap: DetailCap | None = None) -> LoadedImage:
    """Upscale colour (and alpha, separately); keeps grey/bit depth/ICC/EXIF for writing back. With ``cap``, the
    colour is held at ``cap.cap`` x the fine detail of ``cap.base``'s image (``wavelet.detail_cap``). With
    ``config.outscale`` the model's output is resized (Lanczos) to that many times the input, as Real-ESRGAN's
    ``--outscale`` does (a x4 model for x2 output)."""
    size = None
    if config.outscale is not None and config.outscale != desc.scale:  # checked before the model runs
        h, w = img.rgb.shape[:2]
        size = scaled_size((w, h), config.outscale)
        if min(size) < 1:
            raise InputError(f"--outscale {config.outscale:g} makes this {w}x{h} image {size[0]}x{size[1]} px: use a "
                             "larger --outscale")
    colour = fill_hidden_colour(img.rgb, img.alpha)  # what fully transparent pixels hide must not bleed into the edge
    rgb, _ = upscale_colour(desc, colour, config.tiles, cap)
    alpha = upscale_alpha(desc, img.alpha, config.tiles, config.alpha, cap) if img.alpha is not None else None
    if size is not None:
        rgb = np.stack([_lanczos(rgb[..., c], size) for c in range(3)], axis=2)
        alpha = settle_alpha(_lanczos(alpha, size)) if alpha is not None else None
    return LoadedImage(rgb, alpha, img.bit_depth, img.grey, img.mode, img.format, img.icc_profile, exif=img.exif,
                       dpi=img.dpi, png_chunks=img.png_chunks)


# --------------------------------------------------------------------------------------------
# files and folders


def collect_inputs(inputs: Sequence[str | Path], recursive: bool = False, out_dir: Path | None = None,
                   aliases: list[tuple[Path, Path]] | None = None, outputs: list[Path] | None = None,
                   notes: list[str] | None = None) -> tuple[list[tuple[Path, Path]], list[Failure]]:
    """(file, path relative to the output folder's root) for every input image, plus the inputs
    that gave nothing (missing path, folder without images) as failures.

    A file is taken as given (even with an unusual ending: reading it decides); a folder
    contributes its image files (by ending), recursively with ``recursive`` (links to folders followed), keeping the
    sub-folder layout. Hidden files are skipped, and so is ``out_dir`` when it lies inside a folder walked
    recursively (a second run must not upscale the first run's outputs; images there that no run of this command
    wrote are named in ``notes``). A file reached twice (named
    twice, or named and inside a named folder) is taken once; one reached under another path (a link to it) is
    added to ``aliases`` as (that path, the path taken). Files of a folder that this command wrote (their PNG
    records the run, ``RUN_KEY``) beside images it did not write are added to ``outputs``: an earlier run's
    outputs among the originals (another -o folder inside the one walked, or another --suffix), which the caller
    leaves out; a folder holding only such outputs is taken as meant. Without ``recursive``, sub-folders holding
    images (but the output folder) are named in ``notes``. Raises if nothing at all is usable.
    """
    from lway_rt.io.images import image_subfolders

    found: list[tuple[Path, Path]] = []
    problems: list[Failure] = []
    seen: dict[Path, Path] = {}  # resolved file -> the path it was taken under
    skip = out_dir.expanduser().resolve() if out_dir is not None else None

    def take(f: Path, rel: Path) -> None:
        key = f.resolve()
        if key not in seen:
            seen[key] = f
            found.append((f, rel))
        elif aliases is not None and f.absolute() != seen[key].absolute():
            aliases.append((f, seen[key]))

    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            inner_out = skip is not None and skip != p.resolve() and skip.is_relative_to(p.resolve())
            every = _folder_files(p, recursive)
            listed = sorted((f for f in every if f.suffix.lower() in IMAGE_SUFFIXES), key=natural_order)  # (frame_2
            # before frame_10, as adapt reads a clip's frames and the progress line names them)
            inside = [f for f in listed if f.is_file() and f.resolve().is_relative_to(skip)] if inner_out else []
            out_files = set(inside)
            files = [f for f in listed if f.is_file() and f not in out_files]
            if inside and notes is not None:  # an output's own files go unsaid; a user's image there is named
                left = [f for f in inside if not written_by_upscale(f)]
                if left:
                    shown = listing((f.name for f in left), 3)
                    notes.append(f"{len(left)} image(s) in the output folder {out_dir} ({shown}) are not upscaled: "
                                 f"an output folder inside {p} is never read as input; move them out of it to "
                                 "upscale them")
            broken = [Failure(f, broken_link_message(f)) for f in listed if f.is_symlink() and not f.exists()]
            problems += broken
            if not files and not broken:
                subs = not recursive and any(d.is_dir() and not d.name.startswith(".") and d.resolve() != skip
                                             for d in p.iterdir())  # the hint only where there are sub-folders
                hint = " (add --recursive to look in sub-folders)" if subs else ""
                problems.append(Failure(p, no_images_message(p, hint)))
            for f in files:
                take(f, f.relative_to(p))
            if files and notes is not None and (unread := unread_files_note(p, every)):
                notes.append(unread)  # (a folder of them alone is refused, with the same advice)
            nested = [d for d in image_subfolders(p) if d.resolve() != skip] if files and not recursive else []
            nested = [d for d in nested if not _outputs_only(d)]  # (--recursive would leave those out too)
            if nested and notes is not None:
                shown = listing(nested, 3)
                notes.append(f"the images in sub-folders of {p} ({shown}) are not read: add --recursive to upscale "
                             "them too")
            if outputs is not None:
                made = [f for f in files if written_by_upscale(f)]
                if made and len(made) < len(files):
                    outputs += made
        elif p.exists():
            take(p, Path(p.name))
        else:
            problems.append(Failure(p, missing_input_message(p)))
    if not found:
        raise InputError("; ".join(f.message for f in problems) if problems else "no input images given")
    return found, problems


def _folder_files(folder: Path, recursive: bool) -> list[Path]:
    """The files of ``folder`` (not hidden), with ``recursive`` those of its sub-folders too, links to folders
    followed (``Path.glob`` left them out, without a word) but never into a folder already walked (a link to an
    ancestor or a sibling)."""
    if not recursive:
        return [f for f in folder.iterdir() if not f.name.startswith(".")]
    found: list[Path] = []
    walked: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in files if not f.startswith(".")]
    return found


def _output_path(src: Path, rel: Path, out_dir: Path, suffix: str, fmt: str) -> Path:
    ext = ".png" if fmt == "png" else src.suffix.lower()
    if ext not in WRITE_SUFFIXES:
        ext = ".png"
    return out_dir / rel.parent / f"{rel.stem}{suffix}{ext}"


def earlier_outputs(items: Iterable[tuple[Path, Path]], out_dir: Path, suffix: str, fmt: str, scale: float
                    ) -> dict[Path, Path]:
    """{input: the input it is the output of} for inputs an earlier run of the same command wrote: with ``-o`` the
    input folder itself, a second run finds ``a_x4.png`` beside ``a.png``. One counts as an earlier output only if it
    has exactly the name this run, or a run with the other ``--format``, gives another input's output (``a_x4.png``
    or ``a_x4.jpg`` beside ``a.jpg``), exactly ``scale`` x that input's size, and, a PNG, records a run; it is then
    not upscaled again (to x16), and this run writes that input's output over it (unless that input is itself an
    earlier output) instead of refusing it as an input the run must not overwrite."""
    items = list(items)
    by_path = {src.resolve(): src for src, _ in items}
    found: dict[Path, Path] = {}
    for src, rel in items:
        for form in dict.fromkeys((fmt, "png", "same")):  # an earlier run may have used the other --format
            dest = _output_path(src, rel, out_dir, suffix, form).resolve()
            other = by_path.get(dest)
            if other is None or dest == src.resolve() or other in found:
                continue
            if output_sized(src, other, scale) and _may_be_ours(other):
                found[other] = src
    return found


RUN_KEY = b"lwayrt-upscale"  # the keyword a PNG or JPEG output records its run key under (``run_key``, ``file_text``)
# ... and the input it was made from (JSON: its name, path and SHA-256): photo.png's run took photo.jpg's output, made
# by an earlier run under the same name, for its own (replaced without a word, or "already there" with --skip-existing)
SOURCE_KEY = b"lwayrt-upscale-input"


def _model_identity(desc: ModelDescriptor) -> str:
    """The network's weights by their tensors (``state_dict_sha256``); an exported ONNX file by the tensors its
    manifest says it was exported from (fp32: the same network as those weights in PyTorch), else by its bytes."""
    import hashlib

    from lway_rt.io.weights import state_dict_sha256

    meta = desc.metadata or {}
    if meta.get("exported_sha256"):
        precision = meta.get("onnx_precision", "fp32")
        return meta["exported_sha256"] + ("" if precision == "fp32" else f"+{precision}")
    state = desc.model.state_dict()
    if state:
        return state_dict_sha256(state)
    h = hashlib.sha256()
    with open(desc.source, "rb") as f:  # an ONNX file without a manifest
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_key(config: UpscaleConfig, desc: ModelDescriptor, cap: DetailCap | None, router: GroupRouter | None,
            alpha: bool = True) -> str:
    """What decides an output's picture, as one hash: the model's weights (each group's, with a per-group folder),
    the detail cap and the model it holds the images against, and the alpha mode (``alpha``: for an image with an
    alpha channel; for one without, the mode cannot change the picture and is left out). Tiling, the device and the backend
    change the picture only in the last bits: an output of the same weights made with other such settings (or from
    their fp32 ONNX export) is taken for this run's; fp16 weights count as other weights."""
    import hashlib

    def part(d: ModelDescriptor, c: DetailCap | None) -> list:
        meta = d.metadata or {}
        if meta.get("exported_detail_cap"):  # the cap is in the exported graph
            return [_model_identity(d), [float(meta["exported_detail_cap"]), meta.get("exported_base_sha256")]]
        return [_model_identity(d), None if c is None else [float(c.cap), _model_identity(c.base)]]

    parts = [[name, part(router.models[name], router.caps[name])] for name in router.names] if router is not None \
        else part(desc, cap)
    return hashlib.sha256(json.dumps([parts, config.alpha if alpha else None]).encode()).hexdigest()[:16]


def written_by_upscale(path: Path) -> bool:
    """``path`` is a PNG or JPEG that records a run of this command (every PNG and JPEG output does)."""
    from lway_rt.io.images import file_text

    return file_text(path, RUN_KEY) is not None


def _outputs_only(folder: Path) -> bool:
    """Whether every image in ``folder`` (not its sub-folders) records a run of this command: an earlier run's -o
    folder, which a walk with --recursive leaves out, so no note advises it."""
    try:
        images = [q for q in folder.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith(".")]
    except OSError:
        return False
    return bool(images) and all(written_by_upscale(q) for q in images)


def _may_be_ours(path: Path) -> bool:
    """Whether ``path`` may be an output of this command: a file that records a run (every PNG and JPEG output does),
    a JPEG that records none (an earlier version's output, written before JPEGs recorded it), or a file of a format
    that records none (a WebP, TIFF ... of ``--format same``)."""
    return path.suffix.lower() != ".png" or written_by_upscale(path)


def _source_record(src: Path) -> str:
    """What an output records of its input (``SOURCE_KEY``): its name, where it was and its bytes' SHA-256, as JSON."""
    from lway_rt.export.cache import file_sha256

    return json.dumps({"name": src.name, "path": str(src.resolve()), "sha256": file_sha256(src)})


def _made_from_another(src: Path, dest: Path) -> str | None:
    """The input an earlier run made ``dest`` from, where that is not ``src`` (None: ``src``, or a file that records
    none): one of another name (photo.jpg's output, for photo.png), or of this name elsewhere with other bytes (a
    second camera card's DSC_0001.JPG, the first card there or not). ``src`` is the one where it is where the output
    records, edited since or not, or holds the same bytes (moved or copied)."""
    from lway_rt.export.cache import file_sha256
    from lway_rt.io.images import file_text

    if not dest.is_file():
        return None
    try:
        made = json.loads(file_text(dest, SOURCE_KEY) or "null")
    except ValueError:
        return None
    if not isinstance(made, dict) or not isinstance(made.get("name"), str) or not isinstance(made.get("path"), str):
        return None
    if made["path"] == str(src.resolve()) or made.get("sha256") == file_sha256(src):
        return None
    return made["name"] if made["name"] != src.name else made["path"]


def made_otherwise(dest: Path, key: str | tuple[str, ...]) -> bool:
    """``dest`` records (in its PNG text or JPEG comment) that a run of another model or settings made it:
    ``--skip-existing`` would otherwise keep another model's output of the same scale, which has the right size and
    date. An output with no record (a WebP, TIFF ..., or an earlier version's JPEG) is judged by its size and date
    alone."""
    from lway_rt.io.images import file_text

    made = file_text(dest, RUN_KEY)
    return made is not None and made not in ((key,) if isinstance(key, str) else key)


def _refuse_a_file_not_ours(src: Path, dest: Path, scale: float) -> None:
    """Raise if ``dest`` holds something an output of ``src`` may not replace: a folder, a PNG that does not record a
    run of this command (every PNG output does), or another file that is not an image of ``src``'s output size (a
    WebP, TIFF ... output records no run, nor does a JPEG output of a version before JPEGs recorded it). The user's own
    file that bears an output's name is kept."""
    from lway_rt.io.images import image_size

    if not dest.exists():  # nothing there, or a link to a file not made yet (written through, as atomic_path says)
        return
    if dest.is_dir():
        raise InputError(f"output {dest} is a folder: move it, or choose another -o folder or --suffix")
    if dest.suffix.lower() == ".png":
        if not _may_be_ours(dest):
            raise InputError(f"{dest} exists and was not written by lwayrt upscale (its PNG records no run): move it, "
                             "or choose another -o folder or --suffix")
        return
    if written_by_upscale(dest):  # a JPEG output records its run too: replaced as a PNG is, whatever its size (58A-1:
        return  # another --outscale was refused as "not an output of" the input its comment names)
    size = image_size(src)
    if size is None:  # reading the input will say what is wrong with it
        return
    want = scaled_size(size, scale)
    if image_size(dest) != want:
        raise InputError(f"{dest} exists and is not an output of {src.name} (that would be {want[0]}x{want[1]} "
                         "pixels): move it, or choose another -o folder or --suffix")


def up_to_date(src: Path, dest: Path, scale: float) -> bool:
    """Whether ``dest`` already holds ``src``'s output: a file at least as new as ``src`` with exactly ``scale`` x its
    size, whole. Outputs are written atomically, but a copy or sync of the folder stopped part-way leaves a file cut
    short with its header whole; one older than its input (the input was edited since) or of another size (another
    model's scale) is not taken either."""
    from lway_rt.io.images import reaches_its_end

    try:
        if not dest.is_file() or dest.stat().st_mtime < src.stat().st_mtime:
            return False
    except OSError:
        return False
    return output_sized(src, dest, scale) and reaches_its_end(dest)


def _ours_of_another_size(src: Path, dest: Path, scale: float) -> bool:
    """Whether ``dest`` is a file an earlier run wrote (it records one: a PNG or JPEG) as ``src``'s output, after
    ``src`` last changed, at another size than ``scale`` gives: the output of another ``-s`` or model, which this run
    replaces."""
    try:
        if not dest.is_file() or dest.stat().st_mtime < src.stat().st_mtime:
            return False
    except OSError:
        return False
    return written_by_upscale(dest) and not output_sized(src, dest, scale)


def output_sized(src: Path, dest: Path, scale: float) -> bool:
    """Whether ``dest`` is an image of exactly ``scale`` x ``src``'s size (False where either is not readable)."""
    from lway_rt.io.images import image_size

    size = image_size(src)
    return size is not None and image_size(dest) == scaled_size(size, scale)


def _file_key(p: Path, fold_case: bool) -> str:
    """The file ``p`` names, as a string to compare: resolved, and on a file system that does not tell case apart
    (``fold_case``: macOS's, Windows') lower-cased and in one Unicode form. macOS's also takes a name's composed and
    decomposed accents (``café`` typed and ``café`` pasted) for one name; Windows' tells them apart, and is folded so
    too (two such names are refused as one output, rather than one written over the other). Lower-cased, not
    case-folded: neither takes ``Straße`` for ``Strasse``."""
    s = str(Path(p).resolve())
    return unicodedata.normalize("NFD", s).lower() if fold_case else s


def output_name_too_long(dest: Path) -> str | None:
    """Why ``dest``'s name cannot be a file's (more bytes than a file name may have), or None: said per input, where
    the system's own error had stopped the whole batch."""
    if (size := len(os.fsencode(dest.name))) <= NAME_MAX:
        return None
    return (f"its output name ({dest.name[:24]}...{dest.name[-16:]}) would be {size} bytes, more than the {NAME_MAX} "
            "a file name may have: rename the input shorter, or give a shorter --suffix")


def plan_outputs(items: Iterable[tuple[Path, Path]], out_dir: Path, suffix: str, fmt: str,
                 protected: Iterable[Path] = (), fold_case: bool = False,
                 collisions: dict[Path, tuple[Path, Path, Path]] | None = None) -> list[tuple[Path, Path | None, str | None]]:
    """(input, output or None, reason) per image: refuses to overwrite an input (or a ``protected`` file, an input
    left out) or another output. With ``fold_case`` (``out_dir`` is on a case-insensitive file system) names that
    differ only in case are one file. An input refused for another's output name is added to ``collisions`` as
    input -> (the input that has the name, that input's output, this input's output)."""
    def where(p: Path) -> str:
        return _file_key(p, fold_case)

    items = list(items)
    inputs = {where(p) for p, _ in items} | {where(p) for p in protected}
    taken: dict[str, tuple[Path, Path]] = {}
    plan = []
    for src, rel in items:
        dest = _output_path(src, rel, out_dir, suffix, fmt)
        if too_long := output_name_too_long(dest):  # (the system refuses the name: checking for an earlier output
            plan.append((src, None, too_long))   # under it raised, and stopped the batch)
            continue
        key = where(dest)
        if key in inputs:
            plan.append((src, None, f"output {dest} would overwrite an input: choose another -o folder or --suffix"))
        elif key in taken:
            # same stem, different endings (a.jpg, a.png): --format same keeps them apart where it keeps both endings
            # (a GIF or ICO is written as PNG all the same); otherwise only names do
            first, first_rel = taken[key]
            apart = fmt == "png" and where(_output_path(src, rel, out_dir, suffix, "same")) != \
                where(_output_path(first, first_rel, out_dir, suffix, "same"))
            other = "use --format same" if apart else "upscale them into separate -o folders"
            mine = _output_path(first, first_rel, out_dir, suffix, fmt)
            case = f" ({mine.name} here: this file system does not tell case apart)" if mine.name != dest.name else ""
            plan.append((src, None, f"output {dest} is also the output of {first}{case}: rename one of them or {other}"))
            if collisions is not None:
                collisions[src] = (first, mine, dest)
        else:
            taken[key] = (src, rel)
            plan.append((src, dest, None))
    return plan


def _refuse_outputs_over_their_inputs(items: list[tuple[Path, Path]], out_dir: Path, suffix: str, fmt: str) -> None:
    """``-o`` an input folder with ``--suffix ''``: inputs whose output has their own name. Refused as one line
    before anything is written; refused one by one, the rest of the batch (a JPEG frame's PNG output, among the
    frames) would have been written into the frames folder."""
    fold = case_insensitive(out_dir)
    own = [src for src, rel in items
           if _file_key(_output_path(src, rel, out_dir, suffix, fmt), fold) == _file_key(src, fold)]
    if own:
        raise InputError(f"-o {out_dir} with --suffix '{suffix}' gives {len(own)} input(s) their own name as output "
                         f"(as {own[0]}), which would overwrite them: choose another -o folder or a --suffix; nothing "
                         "was written")


def prepare_run(config: UpscaleConfig, desc: ModelDescriptor | None = None
                ) -> tuple[UpscaleConfig, ModelDescriptor, GroupRouter | None, DetailCap | None, bool]:
    """What every image of a run goes through: ``(config, model, router, cap, whole)``. The model is ``desc`` where
    given; the router, where ``config.model`` is a per-group adaptation folder, sends each image to its group's model;
    the cap is the detail cap of the weights; ``whole`` is True where a capped export must see whole images, and the
    config returned then has ``tile`` 0."""
    router = None if desc is not None else prepare_router(config)
    if config.stage1 and router is None:
        raise InputError("--stage1 is for a per-group adaptation folder (the --out of 'lwayrt adapt --mode per-group') "
                         "given as the model: drop it")
    if router is not None:
        desc = router.models[router.names[0]]  # every group's model has the base model's scale
    desc = desc or prepare_model(config)
    whole = bool(not desc.tiling_safe and config.tile and not config.tile_chosen)
    if whole:  # a capped export caps what it is given: each image goes in whole, as upscale caps torch weights
        config = dataclasses.replace(config, tile=0)
    cap = None if router is not None else prepare_detail_cap(config, desc)
    return config, desc, router, cap, whole


def route_and_upscale(config: UpscaleConfig, desc: ModelDescriptor, cap: DetailCap | None, router: GroupRouter | None,
                      img: LoadedImage, src: Path) -> tuple[LoadedImage, Route | None]:
    """One image through the run ``prepare_run`` made: to its group's model (and that model's cap) where a router
    is given, else to ``desc`` (held at ``cap``)."""
    route = None
    if router is not None:
        # on the colour adapt embedded: what fully transparent pixels hide is filled from the visible ones
        route = router.route(src, fill_hidden_colour(img.rgb, img.alpha) if img.alpha is not None else img.rgb)
        desc, cap = router.models[route.group], router.caps[route.group]
    return upscale_image(desc, img, config, cap), route


def upscale_files(inputs: Sequence[str | Path], out_dir: str | Path, config: UpscaleConfig, *,
                  desc: ModelDescriptor | None = None, progress: Callable[[Path], None] | None = None,
                  on_start: Callable[[int], None] | None = None) -> UpscaleReport:
    """Upscale every input image into ``out_dir``; errors on one image do not stop the others.

    Raises only for problems that concern the whole batch (no inputs, unusable output folder,
    model that cannot load); per-image problems land in the report's ``failures``.
    """
    out_dir = Path(out_dir).expanduser()
    aliases: list[tuple[Path, Path]] = []
    made_here: list[Path] = []  # outputs of earlier runs found among the originals in folders given
    folder_notes: list[str] = []
    items, problems = collect_inputs(inputs, config.recursive, out_dir, aliases, made_here, folder_notes)
    config, desc, router, cap, whole = prepare_run(config, desc)
    made = not out_dir.exists()
    ensure_writable_dir(out_dir, "-o folder")  # once the model is ready: a refused model leaves no empty folder behind
    factor = _factor(config, desc)
    suffix = f"_x{factor:g}" if config.suffix is None else config.suffix
    earlier = earlier_outputs(items, out_dir, suffix, config.format, factor)
    again = set(made_here) - set(earlier)  # ``earlier`` ones are noted and handled below
    collisions: dict[Path, tuple[Path, Path, Path]] = {}
    todo = [(src, rel) for src, rel in items if src not in earlier and src not in again]
    _refuse_outputs_over_their_inputs(todo, out_dir, suffix, config.format)
    plan = plan_outputs(todo, out_dir, suffix, config.format, protected=again, fold_case=case_insensitive(out_dir),
                        collisions=collisions)
    report = UpscaleReport(failures=list(problems), notes=folder_notes)
    if again:
        first = next(f for f in made_here if f in again)
        report.notes.append(f"{len(again)} image(s) in the folders given were written by lwayrt upscale (each "
                            f"records the run), e.g. {first}: left out, not upscaled again; name such a file to "
                            "upscale it anyway")
    if whole:
        report.notes.append(f"{Path(config.model).name} holds a detail cap measured on each input it is given: images "
                            "run whole (--tile 0), not in tiles that would each be capped on their own")
    if aliases:  # a link to an image already among the inputs: upscaled once, under the name first reached
        link, first = aliases[0]
        more = f" (and {len(aliases) - 1} more)" if len(aliases) > 1 else ""
        report.notes.append(f"{link} is the same file as {first}{more}: upscaled once, as {first.name}'s output")
    key = (run_key(config, desc, cap, router), run_key(config, desc, cap, router, alpha=False))
    if len(earlier) > 3:
        out, src = next(iter(earlier.items()))
        report.notes.append(f"{len(earlier)} inputs have the name and size of other inputs' outputs (as {out} of {src}): "
                            "taken for an earlier run's outputs, not upscaled again")
    else:
        mine = {dest.resolve() for _, dest, _ in plan if dest is not None}
        report.notes += [f"{out} has the name and size of {src}'s output: taken for an earlier run's output, not "
                         "upscaled again" + (" (this run writes it anew)" if out.resolve() in mine and not
                                             config.skip_existing else "")
                         for out, src in earlier.items()]
    if on_start:
        on_start(len(plan))
    try:
        holder: dict[Path, Path] = {}  # output -> the input that has its name now
        for src, dest, reason in plan:
            stop_if_asked()
            name = None
            if src in collisions:  # the input that had the name failed (a damaged file): this one takes it
                first, name, own = collisions[src]
                if holder.get(name, first) in {f.path for f in report.failures}:
                    dest, reason = own, None
            _upscale_one(src, dest, reason, config, desc, cap, router, report, progress, key)
            if dest is not None:
                holder[name or dest] = src
    except KeyboardInterrupt as exc:
        done = len(report.written) + len(report.kept)
        todo = sum(dest is not None for _, dest, _ in plan)
        failed = len(report.failures) - len(problems)  # planned images that failed before the interrupt
        failed = f", {failed} failed" if failed else ""
        if _drop_if_empty(out_dir, made, report):
            raise Interrupted(f"interrupted before any image was written{failed} (the -o folder {out_dir} it made is "
                              "removed again): run the same command again") from exc
        raise Interrupted(f"interrupted: {done} of {todo} image(s) are in {out_dir}{failed}; run the same command with "
                          "--skip-existing to upscale only the rest") from exc
    _drop_if_empty(out_dir, made, report)  # every image failed
    if report.uncarried:  # an archive's captions, keywords and rights: lost without a word, had they been
        report.notes.append(uncarried_note(report.uncarried))
    unrecorded = [p for p in report.kept if not written_by_upscale(p)]  # kept on their name, size and date alone
    if unrecorded:  # (a PNG or JPEG output records the run that made it)
        kinds = "/".join(sorted({p.suffix.lstrip(".").upper() for p in unrecorded}))
        report.notes.append(f"{len(unrecorded)} output(s) kept by --skip-existing are {kinds} files (as {unrecorded[0]}), "
                            "which do not record the model that made them: if the model or its settings changed since, "
                            "run without --skip-existing to make them again")
    return report


def _drop_if_empty(out_dir: Path, made: bool, report: UpscaleReport) -> bool:
    """Remove ``out_dir`` when this run made it and it is still empty (every image failed, or a stop came before the
    first was written): no empty folder of the run's making is left behind. True when it was removed."""
    try:
        if made and not report.written and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
            return True
    except OSError:  # something appeared there meanwhile, or it cannot be removed: left as it is
        pass
    return False


def _upscale_one(src: Path, dest: Path | None, reason: str | None, config: UpscaleConfig, desc: ModelDescriptor,
                 cap: DetailCap | None, router: GroupRouter | None, report: UpscaleReport,
                 progress: Callable[[Path], None] | None, key: tuple[str, str] | None = None) -> None:
    """One planned image into ``report`` (written, kept or failed); a failure is recorded, not raised. ``key``: the
    run's key for an image with alpha and for one without (``run_key``)."""
    try:
        if dest is None:
            raise InputError(reason)
        if other := _made_from_another(src, dest):
            raise InputError(f"{dest} is the output of {other}, made by an earlier run, not of {src}: move it, or "
                             "choose another -o folder or --suffix" + ("" if Path(other).name == src.name else
                                                                        " (--format same keeps each input's file type apart)"))
        remade = False
        factor = _factor(config, desc)
        # (a PNG that records no run is the user's, of the right size by chance: refused below, as without the flag)
        if config.skip_existing and up_to_date(src, dest, factor) and _may_be_ours(dest):
            if key is None or not made_otherwise(dest, key):
                report.kept.append(dest)
                return
            remade = True
        elif config.skip_existing and _ours_of_another_size(src, dest, factor):
            remade = True  # another scale (-s, or a model of another scale) under the same name: counted too
        _refuse_a_file_not_ours(src, dest, factor)
        img = read_image(src)
        up, route = route_and_upscale(config, desc, cap, router, img, src)
        if route is not None:
            report.routes.append(route)
        mine = None if key is None else key[0] if up.alpha is not None else key[1]
        records = ((RUN_KEY, mine), (SOURCE_KEY, _source_record(src))) if mine else ()
        loss = format_loss_note(src, dest, up)  # --format same into a format that holds less than the file
        meta = {"icc_profile": up.icc_profile, "exif": up.exif, "dpi": up.dpi, "png_chunks": up.png_chunks}
        samples = image_samples(dest, up.rgb, up.alpha, bit_depth=up.bit_depth, grey=up.grey)
        del up  # the float output (12 bytes a pixel against 3) goes before the file is encoded
        write_samples(dest, samples, lossless=img.lossless, records=records, **meta)
        report.written.append(dest)
        if remade:  # counted once it is written (a failure is a failure)
            report.remade.append(dest)
        if img.frames > 1:
            report.notes.append(frames_note(src, img.frames, "upscaled", img.frames_damaged))
        if loss:
            report.notes.append(loss)
        if img.uncarried:
            report.uncarried.append((src, dest, img.uncarried))
        if img.mode == "CMYK":
            report.notes.append(cmyk_note(src, dest.name))
    except LwayError as exc:
        msg = str(exc)
        if str(src) not in msg:
            msg = f"{src}: {msg}"
        report.failures.append(Failure(src, msg))
    except BaseException:  # a stop (Ctrl-C) or a bug: the image is not done, so the progress does not count it
        progress = None
        raise
    finally:
        if progress:
            progress(src)
