"""The stage-2 driver: adapt a pretrained SR network S to a set of LR images (LWay).

Order of work for one run (one model for a folder, or one per image):
1. read the inputs, upsample each LR bicubically once, embed each with E once and prepare R's
   per-image constants once (``fast.FastReconstructor``);
2. loop the step (``fast.fast_adapt_step``: ``step.adapt_step``'s arithmetic, arranged for speed) over
   random patch batches; every ``guard_every`` steps measure the loss on a
   fixed patch set (wavelet weight of the target: a fixed yardstick) and roll back to the last good
   weights (halving the learning rate) when it jumps
   (drift guard, DESIGN §2.5); a non-finite step is skipped and lowers the learning rate, and if that
   persists the run stops with the last good weights; with ``sup_weight > 0`` each step also gets
   synthetic (LR, HR) pairs from clean photos, a function of (seed, iteration) (``synthetic.py``);
3. with ground truth, evaluate Y-PSNR/SSIM every ``eval_every`` steps, keep the best weights and stop
   after ``patience`` evaluations without gain; without it, run the fixed number of steps and keep
   snapshots of fixed crops for the contact sheet;
4. write the adapted weights (same architecture and parameter names as S), the SR image of every
   input, ``report.json``, ``curves.png``, ``contact_sheet.png`` and ``config.json``.

Checkpoints are written atomically every ``checkpoint_every`` steps; ``resume=True`` continues a
killed run from the last one (same settings required) and reproduces the uninterrupted result.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace as dc_replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lway_rt.adapt._imageio import InputImage, list_images, natural_order, read_inputs, spread
from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.embed import compute_embeddings, embedding_input, freeze_stage1
from lway_rt.adapt.fast import FastReconstructor, SpeedOptions, fast_adapt_step, make_optimizer
from lway_rt.adapt.losses import TRUST_MAX_SIDE, adaptation_loss, backbone_trust, guard_gates, trust_losses
from lway_rt.adapt.patches import DIHEDRAL, AdaptImage, bicubic_up, check_patch_fits, fixed_patches, sample_batch
from lway_rt.adapt.perceptual import build_perceptual
from lway_rt.adapt.runfolder import (
    ASIDE, CHECKPOINT, SR_WRITTEN, WEIGHTS, _REPORT_FORMAT, _SR_WRITTEN_BEFORE, _SUMMARY_FORMAT, _aside_mark,
    _aside_state, _aside_words, _check_out_folder, _clear_previous_run, _existing_run, _finish_replacing, _is_aside,
    _replacing_run_done, _written_summary,
    _ledger_line, _make_aside, _mark_aside, _read_json_dict, _read_ledger, _refuse_a_restore_under_way,
    _refuse_foreign, _remove_killed_writes, _remove_run_folder, _runs_aside_words, report_images,
    _RUN_NAMES, SR_KEY, _ledger_images, image_sha256, refuse_another_resume, refuse_users_images, refuse_while_restoring,
    restore_words, run_damage, run_mode,
)
from lway_rt.adapt.synthetic import SyntheticPairs, stage1_degraded
from lway_rt.adapt.wavelet import detail_energy
from lway_rt.archs.registry import our_names
from lway_rt.bench.machine import cpu_model
from lway_rt.errors import (STOPS, InputError, Interrupted, ModelError, OutputError, TrainingError, duration,
                            finishing_steps, listing, shell_word)
from lway_rt.io.weights import atomic_write_bytes, atomic_write_json, ensure_writable_dir, exclusive_run, file_id

__all__ = ["adapt", "adapt_images", "select_trainable", "super_resolve", "interpolate_weights", "RunResult", "CHECKPOINT",
           "WEIGHTS"]

RUN_AGAIN = "run the command again"  # a run of several (per image / per group) says --resume
SNAPSHOT_LIMIT = 6  # images shown on the contact sheet, spread over the inputs

# report.json's detail_change: adapted / unadapted fine detail of each image; at or above this the run names the
# image to check first. On the committed quality runs, crops at or above 1.2 lost more than 0.1 dB in 12 % of cases,
# those below in 0.5 % (14 of the 15 such losses were above; benchmarks/detail_flag.py, read off those same crops).
DETAIL_FLAG = 1.2
SHEET_COLUMNS = 10  # snapshot columns at most (evenly thinned)
_SAY_BEFORE = 8  # inputs from which a pass over every image is announced before it starts, not only after
PROGRESS_PERIOD = 15.0  # seconds between the lines that say how far a pass over every image is
# luma standard deviation (of [0, 1] pixels) under which an image, or the contact sheet's crop of it, is one flat
# colour: a frame of a fade from black, a blank title card
FLAT_STD = 2 / 255
MANY_INPUTS = 64  # inputs from which a run without --sample is pointed to it (each is held, embedded and written)

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    weights: Path
    report: dict
    sr_paths: tuple[Path, ...]
    model: nn.Module | None = None  # the adapted S in memory (None for a run skipped on --resume)


# ------------------------------------------------------------------------------------------
# model helpers


def select_trainable(model: nn.Module, arch: str, trainable: str | Sequence[str]) -> list[str]:
    """Set ``requires_grad`` per the recipe; returns the names of the trainable parameters.

    ``body`` keeps the first layer and the last (upsampling/output) layers frozen: RRDBNet trains
    ``body.*`` and ``conv_body``; SRVGGNetCompact trains the middle ``body`` convs and activations.
    """
    names = [n for n, _ in model.named_parameters()]
    if trainable == "all":
        chosen = names
    elif trainable == "body":
        if arch == "RRDBNet":
            chosen = [n for n in names if n.startswith(("body.", "conv_body."))]
        elif arch == "SRVGGNetCompact":
            idx = sorted({int(n.split(".")[1]) for n in names if n.startswith("body.")})
            first, last = idx[0], idx[-1]
            chosen = [n for n in names if n.startswith("body.") and first + 1 < int(n.split(".")[1]) < last]
        else:
            raise InputError(f"'body' is not defined for {arch}; name modules or parameters with --trainable instead")
    else:
        prefixes = tuple(trainable)

        def under(n: str, q: str) -> bool:  # a module's name or a parameter's, whole: body.1 is not body.10 (57C1)
            return n == q or n.startswith(q.rstrip(".") + ".")

        chosen = [n for n in names if any(under(n, q) for q in prefixes)]
        idle = [q for q in prefixes if not any(under(n, q) for n in names)]
        if chosen and idle:  # a typo among good prefixes would otherwise train less than asked, silently
            raise InputError(f"--trainable {idle[0]!r} matches no module or parameter of this {arch}; names look like "
                             f"{', '.join(names[:4])}, …")
    if not chosen:
        sample = ", ".join(names[:4])
        given = trainable if isinstance(trainable, str) else ",".join(trainable)
        raise InputError(f"--trainable {given} matches no parameter of this {arch}; names look like {sample}, …")
    keep = set(chosen)
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep)
    return chosen


def whole_image_tiles(tile: int | None = None):
    """How adapt runs S on whole images: as ``lwayrt upscale`` does by default, ``tile``-px tiles (None: upscale's
    512) blended across upscale's 32-px overlap, 0 for one pass; an image no larger than a tile takes one pass."""
    from lway_rt.upscale import UpscaleConfig

    return UpscaleConfig(tile=UpscaleConfig.tile if tile is None else tile).tiles


def super_resolve(model: nn.Module, lr: torch.Tensor, scale: int, multiple: int = 1, tile: int | None = None) -> torch.Tensor:
    """S on a whole image (1, 3, h, w) -> (1, 3, h*s, w*s) clamped to [0, 1], in ``whole_image_tiles(tile)``:
    ``tile=0`` runs the image in one pass; a positive ``tile`` cuts it into seam-blended tiles with
    ``lway_rt.runtime.tiling`` (the code ``lwayrt upscale`` uses); ``None`` is upscale's default tile.
    """
    from lway_rt.runtime.tiling import upscale_tensor

    return upscale_tensor(model, lr, scale, whole_image_tiles(tile), multiple=multiple).clamp_(0, 1)


def _row_label(name: str, width: int = 24) -> str:
    """A contact-sheet row's name: whole up to ``width`` characters, else its start and end (a frame's number is
    at the end: 'shot01_frame_000001' and '..._000002' were both 'shot01_frame')."""
    return name if len(name) <= width else f"{name[:width // 2 - 2]}..{name[-(width - width // 2):]}"


def detail_change(model: nn.Module, base: nn.Module, data: Sequence[AdaptImage], scale: int, multiple: int = 1,
                  max_side: int = TRUST_MAX_SIDE, progress: Callable[[int], None] | None = None,
                  base_energy: Sequence[float] | None = None) -> list[float]:
    """Per image: the fine detail (``wavelet.detail_energy``) of ``model``'s output over ``base``'s, on a centre
    crop of at most ``max_side`` LR pixels a side (as the anchor trust measures). No ground truth is needed;
    above 1 the adapted model adds detail (on the quality benchmark, where it made crops worse it had added
    more than 1.1x, nearly always more than 1.2x). ``progress`` is called with the number of images done.
    ``base_energy``: ``base``'s fine detail on each image's crop, measured already (``losses.trust_losses``)."""
    out = []
    with torch.no_grad():
        for k, im in enumerate(data):
            t, l, side = im.centre_window(max_side, multiple)
            lr = im.lr[..., t:t + side, l:l + side]
            e_base = float(detail_energy(super_resolve(base, lr, scale, multiple, 0), scale)[0]) \
                if base_energy is None else base_energy[k]
            e_new = float(detail_energy(super_resolve(model, lr, scale, multiple, 0), scale)[0])
            out.append(e_new / e_base if e_base > 0 else 1.0)
            if progress is not None:
                progress(len(out))
    return out


def _tensor(img: InputImage, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.rgb)).permute(2, 0, 1).unsqueeze(0).to(device)


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return (t[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)


def _clone_state(module_or_opt) -> dict:
    return copy.deepcopy(module_or_opt.state_dict())


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


# ------------------------------------------------------------------------------------------
# ground truth


def _load_gt(gt_dir: Path, images: Sequence[InputImage], scale: int) -> dict[str, np.ndarray]:
    from lway_rt.io.images import IMAGE_SUFFIXES, read_image

    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        why = "is a file" if gt_dir.exists() else "does not exist"
        raise InputError(f"--gt {gt_dir} {why}: pass the folder of ground-truth images named like the inputs, or leave "
                         "--gt out")
    by_stem: dict[str, list[Path]] = {}
    for f in sorted(gt_dir.iterdir()):
        if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."):
            by_stem.setdefault(f.stem, []).append(f)
    stems = Counter(img.path.stem if img.path is not None else img.name for img in images)
    names = Counter(img.path.name for img in images if img.path is not None)
    by_name = {f.name: f for found in by_stem.values() for f in found}
    out, missing, shared = {}, [], []
    for img in images:
        stem = img.path.stem if img.path is not None else img.name
        # the name this run gives the input (its outputs' name) first; the file's own stem only if no other input
        # has it, or one ground truth would be scored against two inputs; inputs that share a stem but not their
        # file name (dup.png, dup.jpg) take the ground truth of their whole file name
        shares = stems[stem] > 1
        key = img.name if shares or img.name in by_stem else stem
        whole = img.path.name if shares and img.path is not None and names[img.path.name] == 1 else None
        if key not in by_stem and whole in by_name:
            p = by_name[whole]
        elif key not in by_stem:
            (shared if shares else missing).append(key)
            continue
        elif len(by_stem[key]) > 1:
            raise InputError(f"--gt {gt_dir} holds {' and '.join(f.name for f in by_stem[key])} for one input: keep one")
        else:
            p = by_stem[key][0]
        gt = read_image(p).rgb
        h, w = img.size
        if not (h * scale <= gt.shape[0] < (h + 1) * scale and w * scale <= gt.shape[1] < (w + 1) * scale):
            raise InputError(f"ground truth {p.name} is {gt.shape[1]}x{gt.shape[0]} px but input {stem} x{scale} is "
                             f"{w * scale}x{h * scale}: pass HR images that match the LR inputs")
        out[img.name] = gt[: h * scale, : w * scale]
    if missing:
        raise InputError(f"no ground truth in {gt_dir} for {', '.join(missing[:3])}"
                         f"{' …' if len(missing) > 3 else ''}: name HR files like their LR inputs")
    if shared:
        raise InputError(f"inputs that share a file name are told apart by the names this run gives them: name their "
                         f"ground truths in {gt_dir} {', '.join(shared[:3])}{' …' if len(shared) > 3 else ''} (any "
                         "image ending; where only their endings differ, their own file names do too)")
    return out


def _evaluate(model, tensors, gt, scale, multiple, tile=None) -> tuple[float, float, dict[str, dict[str, float]]]:
    from lway_rt.metrics import psnr_y, ssim_y

    per = {}
    for name, lr in tensors.items():
        sr = super_resolve(model, lr, scale, multiple, tile)[0].permute(1, 2, 0).cpu().numpy()
        per[name] = {"psnr": psnr_y(sr, gt[name], scale), "ssim": ssim_y(sr, gt[name], scale)}
    return (float(np.mean([v["psnr"] for v in per.values()])), float(np.mean([v["ssim"] for v in per.values()])), per)


def _evaluate_capped(desc, model: nn.Module, base: nn.Module, images: Sequence[InputImage], gt, scale: int,
                     config: AdaptConfig) -> dict[str, dict[str, float]]:
    """Y-PSNR / SSIM against ``gt`` of the images a run with ``--detail-cap`` writes: each made as
    ``_write_sr_images`` makes it (upscale's code, tiling and cap against ``base``'s image), before rounding."""
    from lway_rt.metrics import psnr_y, ssim_y
    from lway_rt.upscale import DetailCap, inference_copy, upscale_colour

    tiles = whole_image_tiles(config.tile)
    writer = inference_copy(desc, model, config.device)
    cap = DetailCap(config.detail_cap, inference_copy(desc, base, config.device))
    per = {}
    for img in images:
        sr, _ = upscale_colour(writer, img.image.rgb, tiles, cap)
        per[img.name] = {"psnr": psnr_y(sr, gt[img.name], scale), "ssim": ssim_y(sr, gt[img.name], scale)}
    return per


# ------------------------------------------------------------------------------------------
# checkpoints


def _image_bytes(img: InputImage) -> list[bytes]:
    """What of one input enters the fingerprint, its name aside: pixels, and alpha / grey / depth where they count."""
    parts = [np.ascontiguousarray(img.rgb).tobytes()]
    if img.image.alpha is not None:  # written into the SR image (a changed alpha was kept stale)
        parts.append(b"alpha" + np.ascontiguousarray(img.image.alpha).tobytes())
    if img.image.grey or img.image.bit_depth != 8:  # how the SR image is written
        parts.append(f"grey={img.image.grey},bits={img.image.bit_depth}".encode())
    return parts


def _fingerprint(config: AdaptConfig, base_sha: str, stage1_sha: str | None, images: Sequence[InputImage],
                 perceptual_sha: str = "", gt: dict[str, np.ndarray] | None = None, sup_sha: str = "",
                 each: dict[str, dict[str, str]] | None = None, tile: bool = True) -> str:
    """What a run's weights and images come from. Parts added since the first version enter only where they are
    used (a cap, ground truth, an alpha channel, a grey or 16-bit input), so other runs' fingerprints hold. ``each``:
    filled with every input's and ground truth's own digest (``{"images": {...}, "gt": {...}}``) from the same bytes,
    for ``_fingerprint_parts``."""
    def own(name: str, kind: str, chunks: list[bytes]) -> None:
        if each is not None:
            d = hashlib.sha256()
            for c in chunks:
                d.update(c)
            each.setdefault(kind, {})[name] = d.hexdigest()[:16]

    h = hashlib.sha256()
    h.update(config.recipe_json().encode())
    h.update(base_sha.encode())
    h.update(str(stage1_sha).encode())
    h.update(perceptual_sha.encode())  # the perceptual term's weights (nothing without one: old fingerprints hold)
    if config.detail_cap is not None:  # the cap shapes the written images (a resume kept the uncapped ones)
        h.update(f"detail_cap={config.detail_cap!r}".encode())
    if sup_sha:  # the --sup-data photos themselves: a folder whose photos changed was taken for the same
        h.update(f"sup_data={sup_sha}".encode())
    for img in images:
        h.update(os.fsencode(img.name))
        chunks = _image_bytes(img)
        for part in chunks:
            h.update(part)
        own(img.name, "images", chunks)
    if gt is not None:  # with ground truth the best evaluated weights are kept: a resume without it, or with another
        h.update(f"gt,eval_every={config.eval_every}".encode())  # (or its evaluations' spacing), makes other weights
        used = whole_image_tiles(config.tile).tile  # so does the tiling of its evaluations (seams move the Y-PSNR
        if tile and used != whole_image_tiles().tile:  # that picks them); the default, unset or given, adds nothing
            h.update(f"tile={used}".encode())  # (``tile`` False: as runs made before it counted, ``same_run``)
        for img in images:
            if img.name in gt:
                truth = np.ascontiguousarray(gt[img.name]).tobytes()
                h.update(os.fsencode(img.name) + truth)
                own(img.name, "gt", [truth])
    return h.hexdigest()


def _fingerprint_parts(base_sha: str, stage1_sha: str | None, images: Sequence[InputImage], perceptual_sha: str,
                       gt: dict[str, np.ndarray] | None, sup_sha: str, each: dict[str, dict[str, str]]) -> dict:
    """The fingerprint's inputs one by one (the settings aside: the recipe records them), each hashed alone, for
    checkpoints and reports: a refused resume can then name what changed (``_changed_parts``). ``each``: the inputs'
    and ground truth's digests ``_fingerprint`` made."""
    return {"model": base_sha[:16], "stage1": None if stage1_sha is None else stage1_sha[:16],
            "perceptual": perceptual_sha[:16], "sup_data": sup_sha[:16], "images": each.get("images", {}),
            "files": {img.name: img.path.name if img.path is not None else img.name for img in images},  # to name them
            "gt": None if gt is None else each.get("gt", {})}


def _changed_parts(then: dict | None, now: dict, sample: int | None = None) -> str | None:
    """What differs between a run's recorded ``_fingerprint_parts`` and this command's, in words that follow "the run
    was made with"; None where the run recorded none (made before they were recorded) or none differs. ``sample``:
    this command's --sample, which picks other frames once frames are added to or removed from a folder."""
    if not isinstance(then, dict):
        return None
    said = []
    for key, words in (("model", "another model (its weights differ from this command's)"),
                       ("stage1", "another stage-1 checkpoint"), ("perceptual", "other perceptual-term weights"),
                       ("sup_data", "other photos in --sup-data")):
        if key in then and then[key] != now[key]:
            said.append(words)
    old, new = then.get("images"), now["images"]
    files = {**(then.get("files") if isinstance(then.get("files"), dict) else {}), **now.get("files", {})}

    def listed(names: list[str]) -> str:
        return listing((files.get(n, n) for n in names), 3)

    if isinstance(old, dict):
        if added := [n for n in new if n not in old]:
            said.append(f"no {listed(added)} (this command's input{'s' if len(added) > 1 else ''})")
        if gone := [n for n in old if n not in new]:
            said.append(f"{listed(gone)} too (not in this command's inputs)")
        if sample is not None and (added or gone):  # (on the clause it explains, before any about changed pixels)
            said[-1] += (f" (--sample {sample} spreads its choice over the inputs as they are now: frames added to or "
                         "removed from a folder since change which it takes)")
        changed = [n for n in new if n in old and old[n] != new[n]]
        if changed and not added and not gone and sorted(map(str, old.values())) == sorted(map(str, new.values())):
            # the same pixels under other names: inputs sharing a file name are named by their order (x_png, x_png_2)
            said.append("its inputs in another order (those that share a file name are told apart by their order: "
                        "give them in the order the run had)")
        elif changed:
            said.append(f"other pixels or alpha in {listed(changed)}")
        if not added and not gone and not changed and list(old) != list(new):
            said.append("its inputs in another order")
    if "gt" in then and then["gt"] != now["gt"]:
        said.append("no ground truth (this command has --gt)" if then["gt"] is None else
                    "ground truth (--gt; this command has none)" if now["gt"] is None else "other ground truth (--gt)")
    return "; ".join(said) or None


class _Fingerprinter:
    """The fingerprint of a run of some images (checkpoints and reports record it), and its parts: ``adapt_images``
    takes its own from here, and ``adapt`` compares it with the runs already in a folder before it starts any, without
    running anything. The parts every run shares (model, stage 1, perceptual term, --sup-data) are hashed once."""

    def __init__(self, config: AdaptConfig, desc, stage1, perceptual=False):
        from lway_rt.io.weights import state_dict_sha256

        if perceptual is False:  # the term the run already built (None for none), else it is built here
            perceptual = build_perceptual(config.perceptual, stage1=stage1 if config.loss == "lway" else None,
                                          lpips_weights=config.lpips_weights, device="cpu")
        self.config = config
        self.stage1_sha = state_dict_sha256(stage1.state_dict()) if config.loss == "lway" and stage1 is not None else None
        self.base_sha, self.perceptual_sha = state_dict_sha256(desc.model.state_dict()), perceptual.digest if perceptual else ""
        self.sup_sha = ""
        if config.sup_data is not None and config.sup_weight > 0 and Path(config.sup_data).is_dir():
            from lway_rt.degae.data import folder_digest

            self.sup_sha = folder_digest(Path(config.sup_data))

    def __call__(self, images: Sequence[InputImage], gt: dict[str, np.ndarray] | None = None) -> str:
        return _fingerprint(self.config, self.base_sha, self.stage1_sha, images, self.perceptual_sha, gt, self.sup_sha)

    def with_parts(self, images: Sequence[InputImage], gt: dict[str, np.ndarray] | None = None) -> tuple[str, dict]:
        """The fingerprint and its parts, from one pass over the images' bytes."""
        each: dict[str, dict[str, str]] = {}
        fingerprint = _fingerprint(self.config, self.base_sha, self.stage1_sha, images, self.perceptual_sha, gt,
                                   self.sup_sha, each)
        return fingerprint, _fingerprint_parts(self.base_sha, self.stage1_sha, images, self.perceptual_sha, gt,
                                               self.sup_sha, each)

    def same_run(self, recorded, fingerprint: str, recorded_config, images: Sequence[InputImage],
                 gt: dict[str, np.ndarray] | None = None) -> bool:
        """Whether a run recorded with the fingerprint ``recorded`` (and ``recorded_config``, its config or recipe) is
        this one, whose fingerprint is ``fingerprint``. The recipe in a fingerprint spells --sup-data and
        --lpips-weights as they were given: a run from before they were made absolute recorded them relative, and
        the same photos may be named through a link. Where the spellings differ but name the same files (their
        contents are in the fingerprint already), the fingerprint is made again with the recorded spelling."""
        if recorded == fingerprint:
            return True
        if recorded and gt is not None and isinstance(recorded_config, dict) and "tile" in recorded_config \
                and recorded_config["tile"] == self.config.tile and recorded == _fingerprint(
                self.config, self.base_sha, self.stage1_sha, images, self.perceptual_sha, gt, self.sup_sha, tile=False):
            return True  # a --gt run made before its --tile counted, with this --tile (its report's configuration)
        if not recorded or not isinstance(recorded_config, dict):
            return False
        changes: dict = {}
        then = recorded_config.get("sup_data")
        if then != self.config.sup_data and _same_files("sup_data", then, self.config.sup_data):
            changes["sup_data"] = then
        then = recorded_config.get("lpips_weights")
        now = tuple(self.config.lpips_weights or ())
        if isinstance(then, list) and tuple(then) != now and _same_files("lpips_weights", then, now):
            changes["lpips_weights"] = tuple(then)
        if not changes:
            return False
        try:
            config = self.config.replace(**changes)
        except InputError:
            return False
        return recorded == _fingerprint(config, self.base_sha, self.stage1_sha, images, self.perceptual_sha, gt,
                                        self.sup_sha)


def _same_files(key: str, then, now) -> bool:
    """Whether ``then`` (what a run recorded for --sup-data or --lpips-weights, ``key``) and ``now`` (this command's)
    name the same files, however each is spelled; False for any other setting."""
    if key == "sup_data":
        return isinstance(then, str) and isinstance(now, str) and _same_path(then, now)
    if key == "lpips_weights":
        return isinstance(then, (list, tuple)) and isinstance(now, (list, tuple)) and len(then) == len(now) \
            and all(isinstance(a, str) and _same_path(a, b) for a, b in zip(then, now))
    return False


def _same_path(then: str, now: str) -> bool:
    """Whether the path a run recorded (``then``, perhaps relative to the folder the command was run from, as before
    such paths were made absolute) and this command's (``now``, absolute) name the same file or folder from here."""
    try:
        return Path(then).expanduser().absolute() == Path(now) or os.path.realpath(then) == os.path.realpath(now)
    except (OSError, ValueError):
        return False


def _absolute(path) -> str:
    return str(Path(path).absolute()) if path else ""


class _PassLines:
    """The lines that say how far a pass over every image is (``template`` with ``{k}`` and ``{n}``: "wrote {k} of
    {n} SR image(s)"), at most one every ``PROGRESS_PERIOD`` seconds, with the time left; called with the number of
    images done after each one. Nothing after the last image (the pass's own line follows)."""

    def __init__(self, log: Log, n: int, template: str):
        self.log, self.n, self.template = log, n, template
        self.t0 = self.said = time.perf_counter()

    def __call__(self, k: int) -> None:
        now = time.perf_counter()
        if 0 < k < self.n and now - self.said >= PROGRESS_PERIOD:
            self.said = now
            self.log(self.template.format(k=k, n=self.n) + f", about {duration((now - self.t0) / k * (self.n - k))} left")


def _flat(lr: torch.Tensor) -> bool:
    """Whether an LR image (1, 3, h, w) in [0, 1] is one flat colour: its luma varies by less than ``FLAT_STD``."""
    y = 0.299 * lr[:, 0] + 0.587 * lr[:, 1] + 0.114 * lr[:, 2]
    return y.numel() < 2 or float(y.float().std()) < FLAT_STD


def _sheet_rows(data: Sequence[AdaptImage], crop: int, multiple: int) -> list[AdaptImage]:
    """The images the contact sheet shows, top to bottom in frame order (ffmpeg's 6.png above 11.png):
    ``SNAPSHOT_LIMIT`` spread over the inputs (frames over the clip), of those whose shown crop is not one flat colour
    (a clip that fades in from black had half its rows black); all of them only when every crop is flat."""
    def shows_something(d: AdaptImage) -> bool:
        t, l, c = d.centre_window(crop, multiple)
        return not _flat(d.lr[..., t:t + c, l:l + c])

    return sorted(spread([d for d in data if shows_something(d)] or list(data), SNAPSHOT_LIMIT), key=natural_order)




def _sr_record(weights_sha: str, input_digest: str | None, config: AdaptConfig, s: float | None) -> dict:
    """What an sr/ image records of how it was made (the adapted weights, its input, the cap, tiling and device, and
    the cap's blend factor s): a resumed run that stopped while writing sr/ keeps the images that record the same."""
    return {"weights": weights_sha[:32], "input": input_digest, "detail_cap": config.detail_cap, "tile": config.tile,
            "device": config.device, "s": s}


def _write_sr_images(desc, model: nn.Module, base: nn.Module, images: Sequence[InputImage], out_dir: Path,
                     config: AdaptConfig, device: str, log: Log | None = None, weights_sha: str | None = None,
                     digests: dict | None = None, keep_written: bool = False,
                     ledger: Path | None = None) -> tuple[list[Path], dict[str, float]]:
    """Write ``sr/<name>.png`` of each image through ``lwayrt upscale``'s own code, layout and default tiling, so that
    upscale with the adapted weights gives them again pixel for pixel; returns the paths and, with ``--detail-cap``,
    each capped image's blend factor s (held at the cap against ``base``'s image: ``wavelet.detail_cap``). ``log``
    gets a line before the first of several images and one every ``PROGRESS_PERIOD`` seconds with the time left (a
    clip's frames take minutes to hours after the last iteration). With ``weights_sha`` (the adapted weights' hash)
    each image records how it was made (``_sr_record``, ``digests``: the inputs' by name); ``ledger`` (a JSON file)
    gets each written file's SHA-256 and record; with ``keep_written`` (a resumed run) an image already there that the
    ledger lists with the same record, its file unchanged since, is kept, not made again: a run stopped an hour into
    writing a clip's frames had made every one again."""
    from lway_rt.export.cache import file_sha256
    from lway_rt.io.images import write_image
    from lway_rt.upscale import DetailCap, inference_copy, upscale_alpha, upscale_colour

    tiles = whole_image_tiles(config.tile)
    writer = inference_copy(desc, model, device)
    cap = DetailCap(config.detail_cap, inference_copy(desc, base, device)) if config.detail_cap is not None else None
    sr_paths, cap_s = [], {}
    log = log or (lambda msg: None)
    digests = digests or {}

    def record(img: InputImage, s: float | None) -> dict | None:
        return None if weights_sha is None else _sr_record(weights_sha, digests.get(img.name), config, s)

    earlier = _read_ledger(ledger) if ledger is not None else {}
    written = earlier if keep_written else {}
    kept = {}  # name: its record, of the images a resumed run keeps
    for img in images if weights_sha is not None else ():
        entry, dest = written.get(img.name), out_dir / "sr" / f"{img.name}.png"
        made = entry.get("record") if isinstance(entry, dict) else None
        if isinstance(made, dict) and made == record(img, made.get("s")) and dest.is_file() and \
                image_sha256(dest) == entry.get("sha256"):
            kept[img.name] = made
    if ledger is not None:  # begun again with the kept images' lines (lines cut short go); the other images the list
        # held that are still as it wrote them stay named as the run's until each is written again (a stop before then
        # would leave them to be taken for the user's)
        still = sorted(_ledger_images(ledger.parent) - set(kept))
        atomic_write_bytes(ledger, ("".join(_ledger_line(n, written[n]["sha256"], kept[n]) for n in kept)
                                    + "".join(_ledger_line(n, earlier[n].get("sha256"), earlier[n].get("record"),
                                                          was=earlier[n].get("was"))
                                              for n in still)).encode())  # (with its SHA-256: edited, it is yours)
    todo = [img for img in images if img.name not in kept]
    if kept:
        log(f"{len(kept)} SR image(s) in {out_dir / 'sr'} were written before the run stopped: kept")
    if len(todo) > 1:
        log(f"writing {len(todo)} SR image(s) to {out_dir / 'sr'}")
    done = _PassLines(log, len(todo), "wrote {k} of {n} SR image(s)")
    k = 0
    for img in images:
        dest = out_dir / "sr" / f"{img.name}.png"
        if img.name in kept:
            if kept[img.name].get("s") is not None:
                cap_s[img.name] = float(kept[img.name]["s"])
            sr_paths.append(dest)
            continue
        done(k)
        k += 1
        sr, s = upscale_colour(writer, img.image.rgb, tiles, cap)
        if s is not None:
            cap_s[img.name] = s
        # alpha through the adapted model, as lwayrt upscale's default (--alpha model)
        alpha = upscale_alpha(writer, img.image.alpha, tiles, cap=cap) if img.image.alpha is not None else None
        made = record(img, s)
        # named with its bytes' SHA-256 (and the file's it replaces) once they are encoded, just before they take the
        # file's place: a stop at any moment leaves the list naming whatever the file then holds as the run's, and
        # an edit of it after the stop as the user's
        was = image_sha256(dest) if ledger is not None and dest.is_file() else None

        def name_it(tmp: Path, name: str = img.name, made: dict | None = made, was: str | None = was) -> None:
            with open(ledger, "a", encoding="utf-8") as f:
                f.write(_ledger_line(name, file_sha256(tmp), made, was=was))

        sr_paths.append(write_image(dest, sr, alpha, bit_depth=img.image.bit_depth, grey=img.image.grey,
                                    icc_profile=img.image.icc_profile, exif=img.image.exif, dpi=img.image.dpi,
                                    png_chunks=img.image.png_chunks,
                                    records=((SR_KEY, json.dumps(made)),) if made is not None else (),
                                    before_replace=name_it if ledger is not None else None))
    return sr_paths, cap_s


def _rewrite_missing_images(out_dir: Path, report: dict, desc, images: Sequence[InputImage], config: AdaptConfig,
                            device: str) -> int | None:
    """A finished run whose weights are intact and whose only damage is missing ``sr/`` images gets those images
    written again from its weights (what upscale would give), not a whole new adaptation; returns how many were
    written, or None where more is damaged (the run is then run again)."""
    from lway_rt.io.weights import load_state_file, state_dict_sha256

    missing = [img for img in images if not (out_dir / "sr" / f"{img.name}.png").is_file()]
    listed = set(report_images(report))
    if not missing or not listed >= {f"sr/{img.name}.png" for img in images}:
        return None
    if run_damage(out_dir, report, [img.name for img in images], [f"sr/{img.name}.png" for img in missing]) is not None:
        return None  # weights changed, or a listed picture gone too
    state = our_names(load_state_file(out_dir / WEIGHTS)[0])  # (written with the base model's file's names)
    tile = (report.get("config") or {}).get("tile", config.tile)
    if tile != config.tile and (tile is None or isinstance(tile, int)):  # as the run wrote its other images
        config = dc_replace(config, tile=tile)
    model = copy.deepcopy(desc.model)
    model.load_state_dict(state)
    parts = report.get("fingerprint_parts")
    _write_sr_images(desc, model.to(device).eval(), desc.model, missing, out_dir, config, device,
                     weights_sha=state_dict_sha256(state),
                     digests=parts.get("images") if isinstance(parts, dict) else None)
    return len(missing)


def _kept_result(out_dir: Path, report: dict) -> RunResult:
    """A finished run kept as it is (``--resume``), as the result of this call."""
    return RunResult(out_dir, out_dir / WEIGHTS, report, tuple(out_dir / rel for rel in report_images(report)))


def _save_checkpoint(path: Path, state: dict) -> None:
    from lway_rt.io.weights import save_torch

    save_torch(state, path)


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: say so rather than crash deep inside torch
        raise InputError(f"checkpoint {path} cannot be read ({type(exc).__name__}); delete it and run without --resume") from exc


# ------------------------------------------------------------------------------------------
# the run


def adapt_images(images: Sequence[InputImage], desc, config: AdaptConfig, out_dir: Path, *, stage1=None,
                 gt: dict[str, np.ndarray] | None = None, resume: bool = False, log: Log | None = None,
                 write_outputs: bool = True, embeddings: torch.Tensor | None = None, overwrite: bool = False,
                 note: Log | None = None, aside_until_end: bool = False) -> RunResult:
    """Adapt one model to ``images`` (already read) and write its outputs into ``out_dir``.

    ``desc`` is the base model's ``ModelDescriptor`` (left untouched); ``stage1`` a frozen
    ``lway_rt.degae.Stage1`` (needed for ``loss='lway'`` only); ``gt`` maps image names to HR arrays.
    ``embeddings``: stage 1's embeddings of ``images``, one row each in order, where they were computed
    already as this run would (``group_inputs``'s, in per-group mode); otherwise E runs here.

    ``out_dir`` is never replaced by accident: an unfinished run there continues with ``resume`` (same inputs and
    settings) or is refused; a finished one is kept as it is with ``resume`` when it was made with these inputs and
    settings (its report's fingerprint), and is replaced only with ``overwrite``. Nothing in ``out_dir`` is written
    before those checks pass, and while it runs no other run can write there (``exclusive_run``).

    ``aside_until_end``: one of several runs of a command (per-image, per-group), which keeps the finished run an
    overwrite replaces (``_clear_previous_run``) when it finishes and says nothing of it when stopped: the command
    removes them all once every run is made, or speaks of them all.
    """
    with contextlib.ExitStack() as held:
        words = (lambda: "") if aside_until_end else (lambda: _aside_words(Path(out_dir)))  # (the command says it)
        try:
            return _adapt_images(images, desc, config, out_dir, held, stage1=stage1, gt=gt, resume=resume, log=log,
                                 write_outputs=write_outputs, embeddings=embeddings, overwrite=overwrite, note=note,
                                 aside_until_end=aside_until_end)
        except KeyboardInterrupt:  # outside the loop (which says more): while preparing, or writing the outputs
            ckpt = Path(out_dir) / CHECKPOINT
            if ckpt.exists():
                raise _saying(Interrupted(_resume_words(f"interrupted; the checkpoint in {ckpt} is kept: run the same "
                                                        "command with --resume to finish the run", overwrite
                                                        and not aside_until_end)), words()) from None
            if words():
                raise _saying(Interrupted("interrupted"), words()) from None
            raise
        except Interrupted as exc:
            raise _saying(Interrupted(_resume_words(str(exc), overwrite and not aside_until_end)), words()) from None
        except Exception:  # a refusal or a failure (a full disk, a NaN stop): the run kept aside is said all the same
            if said := words():
                (note or log or (lambda msg: None))(said)
            raise


def _resume_words(message: str, overwrite: bool) -> str:
    """``message``, whose advice to run the same command with --resume says "in place of --overwrite" where the
    command was an --overwrite (both flags together are refused)."""
    if not overwrite:
        return message
    return re.sub(r"run the same command with --resume(?! in place of --overwrite)",
                  "run the same command with --resume in place of --overwrite", message)


def _saying(exc: Interrupted, words: str) -> Interrupted:
    """``exc``, saying ``words`` too (where the finished run that --overwrite replaces is kept), when there are any."""
    return Interrupted(f"{exc}; {words}") if words else exc


def _adapt_images(images: Sequence[InputImage], desc, config: AdaptConfig, out_dir: Path, held: contextlib.ExitStack, *,
                  stage1=None, gt: dict[str, np.ndarray] | None = None, resume: bool = False, log: Log | None = None,
                  write_outputs: bool = True, embeddings: torch.Tensor | None = None, overwrite: bool = False,
                  note: Log | None = None, aside_until_end: bool = False) -> RunResult:
    """``adapt_images``' work, in its phases: set up S and the data; check what ``out_dir`` holds against this run
    (``_accept_run``); embed and weigh the inputs with stage 1; train (``_Training``); write the outputs."""
    from lway_rt.io.weights import state_dict_sha256

    log = log or (lambda msg: None)
    note = note or log
    out_dir = Path(out_dir)  # made once the run is accepted: a refused one leaves no empty folder behind
    top = out_dir.parent if aside_until_end else None  # (where a --restore of a run of several is run)
    finished = _existing_run(out_dir, resume, overwrite, top)
    t_start = time.perf_counter()
    device = config.device
    scale, multiple = desc.scale, desc.size_multiple
    if config.patch_size % multiple:
        raise InputError(f"{desc.arch} x{scale} needs inputs in multiples of {multiple} px: use a --patch-size that is")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)

    base_state = desc.model.state_dict()
    base_sha = state_dict_sha256(base_state)
    model = copy.deepcopy(desc.model).to(device).eval()
    trainable = select_trainable(model, desc.arch, config.trainable)
    params = [p for n, p in model.named_parameters() if p.requires_grad]
    # fp32 speed options (R channels-last with folded per-image constants, fused Adam, one sync per
    # step): step.adapt_step's arithmetic, measured by benchmarks/adapt_speed.py. S's weights keep
    # their layout, so full-image inference matches the unadapted model's bit for bit at iteration 0.
    speed = SpeedOptions()
    opt = make_optimizer(params, config, speed)
    anchor_model = None
    if config.anchor_weight > 0 or config.detail_guard > 0:  # the guard compares with the unadapted output too
        anchor_model = copy.deepcopy(desc.model).to(device).eval()
        for p in anchor_model.parameters():
            p.requires_grad_(False)

    # --- data: LR, bicubic upsampling, embeddings, R's constants (each once per image)
    tensors = {img.name: _tensor(img, device) for img in images}
    data = [AdaptImage.from_lr(img.name, tensors[img.name], scale) for img in images]
    check_patch_fits([(d.name, d.size) for d in data], config.patch_size)
    config.check_scale(scale)
    # supervised pairs (LWay's supervised half): clean photos loaded once, pairs drawn per iteration
    # from (seed, iteration), so they leave the patch sampler's generator alone and survive a resume
    sup_pairs = SyntheticPairs.from_config(config, scale) if config.sup_weight > 0 else None
    # the perceptual term's network (read before any work, so bad LPIPS files fail first)
    perceptual = build_perceptual(config.perceptual, stage1=stage1 if config.loss == "lway" else None,
                                  lpips_weights=config.lpips_weights, device=device)
    if perceptual is not None:
        log(f"perceptual term: {perceptual.kind} x{config.perceptual_scale:g} (weights {perceptual.digest[:12]})")
    if config.loss == "lway" and stage1 is None:
        raise ModelError("the lway loss needs a stage-1 network: pass --stage1 PATH (or use --loss naive)")
    fingerprinter = _Fingerprinter(config, desc, stage1, perceptual)
    fingerprint, fingerprint_parts = fingerprinter.with_parts(images, gt)
    accepted = _accept_run(out_dir, finished, fingerprinter, fingerprint, fingerprint_parts, images, gt, desc, config,
                           resume=resume, overwrite=overwrite, write_outputs=write_outputs,
                           aside_until_end=aside_until_end, log=log)
    if isinstance(accepted, RunResult):  # a finished run kept as it is (or with its missing SR images written again)
        return accepted
    ck, redo = accepted
    accepted = None

    flat, pool = _training_pool(data, note)
    # a checkpoint holds the embeddings and the weighing of its run's inputs (the same inputs and stage 1: checked), which
    # took minutes for a clip's frames on a CPU: a resumed run takes them from it (an earlier version's has none)
    taken = "the grouping's"
    if ck is not None and isinstance(ck.get("embeddings"), torch.Tensor) and len(ck["embeddings"]) == len(data):
        embeddings, taken = ck["embeddings"], "the checkpoint's"
    weighed = ck.get("weighed") if ck is not None and len(ck.get("weighed") or ()) == len(data) else None
    # E once per image: after the checks above, so a refused or kept run does no work and prints no progress first
    recon, stage1_info, embed_s = (_embed(data, stage1, embeddings, config, scale, speed, log, taken=taken)
                                   if config.loss == "lway" else (None, None, 0.0))
    trust, trust_info, gates, weighed = _weigh(data, anchor_model, recon, config, scale, multiple, pool, log,
                                               losses=weighed)
    fixed = fixed_patches(data, config.patch_size, scale, pool=pool)
    if anchor_model is not None:
        with torch.no_grad():
            fixed.anchor = anchor_model(fixed.lr)
    if gt is not None:
        gt = {k: v for k, v in gt.items() if k in tensors}
    training = _Training(model, opt, params, gen, config, speed, data, pool, scale, multiple, fixed, recon, perceptual,
                         anchor_model, trust, gates, sup_pairs, tensors, gt, log)
    training.resume(ck, resume)
    ck = None  # its weights are in the model and optimiser now
    shown = training.choose_snapshots()

    ensure_writable_dir(out_dir, "--out folder")
    still_ours = held.enter_context(exclusive_run(out_dir, "--out folder"))
    _remove_killed_writes(out_dir)  # under the lock: no run writes here now, so they are a killed run's
    if not (resume or overwrite):
        _existing_run(out_dir, resume, overwrite, top)  # again, under the lock: a run may have finished there meanwhile
    if _aside_state(out_dir / ASIDE) == "discarding" or (  # an overwrite here finished, and a stop cut short the
            not aside_until_end and _replacing_run_done(out_dir)):  # removal of the run it replaced (or came after its
        _finish_replacing(out_dir)  # report, before the mark said so: an --overwrite had deleted that finished run and
        # kept the old one): that goes first
    if overwrite or redo or _aside_state(out_dir / ASIDE) in ("cut short", "restoring"):  # (a move aside a stop cut
        # short is finished before this run writes anything: the files still here are the replaced run's)
        if aside := _clear_previous_run(out_dir, keep_finished=overwrite and write_outputs, replacing=fingerprint):
            log(f"the finished run this one replaces is kept in {aside} until "
                f"{'every run of the command' if aside_until_end else 'this one'} finishes")
            _say_room(out_dir, aside, note)
    if aside_until_end:
        _joins_the_command(out_dir)
    if write_outputs:
        atomic_write_json(out_dir / "config.json", config.to_dict())  # the run is accepted: what it was asked to do

    gt_metrics_before = None
    if gt is not None:
        base_copy = copy.deepcopy(desc.model).to(device).eval()
        _, _, gt_metrics_before = _evaluate(base_copy, tensors, gt, scale, multiple, config.tile)
        del base_copy

    training.start()
    iterations = f"{config.iterations} iteration{'' if config.iterations == 1 else 's'}"
    log(f"adapting {desc.arch} x{scale} on {len(data)} image(s): {len(trainable)} trainable tensors, "
        f"loss {config.loss}, target {config.target}, {iterations}"
        + (f", supervised term x{config.sup_weight:g} on {sup_pairs.n} synthetic pair(s) a step from "
           f"{len(sup_pairs.photos)} clean photo(s)" if sup_pairs is not None else "")
        + (f", detail guard x{config.detail_guard:g} above {config.detail_guard_ratio:g}x the unadapted output's detail"
           + (" (per image, trust gate)" if gates is not None else "") if config.detail_guard > 0 else ""))
    training.run(out_dir / CHECKPOINT, still_ours, fingerprint=fingerprint, fingerprint_parts=fingerprint_parts,
                 embeddings=None if recon is None else recon.embeddings.cpu(), weighed=weighed)
    final_it, final_state = training.final_weights(base_state)
    st = training.st

    report = {
        "format": _REPORT_FORMAT,
        "model": {"name": desc.name, "source": desc.source, "arch": desc.arch, "scale": scale,
                  "hparams": desc.spec.hparams, "base_sha256": base_sha},
        "stage1": stage1_info,
        "perceptual": None if perceptual is None else {"kind": perceptual.kind, "weight": config.perceptual_scale,
                                                       "sha256": perceptual.digest},
        "config": config.to_dict(),
        "trainable_tensors": len(trainable),
        "trainable_params": int(sum(p.numel() for p in params)),
        "supervised": None if sup_pairs is None else {
            "weight": config.sup_weight, "pairs_per_step": sup_pairs.n, "photos": len(sup_pairs.photos),
            "data": config.sup_data or "bundled stage-1 training photos"},
        "images": [{"name": d.name, **({"source": str(images[k].path)} if images[k].path is not None else {}),
                    "size": list(d.size), **({"trust": trust_info[k]} if trust_info else {}),
                    **({"guard_gate": round(float(gates[k]), 4)} if gates is not None else {}),
                    **({"flat": True} if k in flat else {})}  # one flat colour: no training patches (unless all are)
                   for k, d in enumerate(data)],
        "iterations_run": st["it"],
        "final_iteration": final_it,
        "stopped": st["stopped"] or "completed",
        "events": st["events"],
        "rollbacks": st["rollbacks"],
        "history": st["history"],
        "fixed_patch_loss": st["val"],
        "evals": st["evals"],
        "resumed_from": st["resumed_from"],
        "fingerprint": fingerprint,  # inputs, model, stage 1 and recipe: --resume keeps a finished run only if equal
        "fingerprint_parts": fingerprint_parts,  # each of them hashed alone: a refusal names which changed
        "timings": {"embed_s": round(embed_s, 4), "train_s": round(st["train_s"], 3),
                    "ms_per_iteration": round(1000 * st["train_s"] / max(1, st["it"]), 2),
                    "total_s_this_process": None},
        "machine": {"cpu": cpu_model(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": device},
    }
    base = anchor_model if anchor_model is not None else copy.deepcopy(desc.model).to(device).eval()
    known = [w.get("detail_unadapted") for w in weighed] if weighed else None  # (a checkpoint of an earlier
    _flag_detail(report, model, base, data, flat, scale, multiple, log, note,  # version's weighing has none)
                 base_energy=known if known and all(isinstance(e, float) for e in known) else None)
    if gt is not None:
        _, _, network = _evaluate(model, tensors, gt, scale, multiple, config.tile)
        # with --detail-cap, "after" is of the images the run writes (each blended towards the unadapted one), and
        # the network's own numbers are kept beside it as "after_uncapped": they differ on every image the cap holds
        per = {"before": gt_metrics_before, "after": network}
        if config.detail_cap is not None:
            per.update(after=_evaluate_capped(desc, model, base, images, gt, scale, config), after_uncapped=network)
        for entry in report["images"]:
            entry.update({when: metrics[entry["name"]] for when, metrics in per.items()})
        report["mean"] = {f"{m}_{when}": float(np.mean([v[m] for v in metrics.values()]))
                          for when, metrics in per.items() for m in ("psnr", "ssim")}
    if not write_outputs:
        report["timings"]["total_s_this_process"] = round(time.perf_counter() - t_start, 3)
        (out_dir / CHECKPOINT).unlink(missing_ok=True)
        return RunResult(out_dir, out_dir / WEIGHTS, report, (), model)
    return _write_run(out_dir, report, training, final_state, final_it, shown, base, images, desc, stage1_info,
                      fingerprint_parts, still_ours, t_start, aside_until_end=aside_until_end)


def _accept_run(out_dir: Path, finished: dict | None, fingerprinter: _Fingerprinter, fingerprint: str,
                fingerprint_parts: dict, images: Sequence[InputImage], gt, desc, config: AdaptConfig, *, resume: bool,
                overwrite: bool, write_outputs: bool, aside_until_end: bool, log: Log):
    """What ``out_dir`` holds, checked against this run before any work is done: the checkpoint ``--resume``
    continues, and whether a damaged finished run is run again, as ``(checkpoint or None, redo)``; or the finished run
    kept (a ``RunResult``); or an ``InputError`` saying why the run is refused."""
    ckpt_path = out_dir / CHECKPOINT
    replacing = _aside_mark(out_dir / ASIDE).get("replacing")
    if resume and not overwrite and finished is None and not ckpt_path.exists() \
            and _aside_state(out_dir / ASIDE) in ("kept", "cut short") \
            and not (isinstance(replacing, str)  # (--sup-data spelled otherwise for the same photos is the same run)
                     and fingerprinter.same_run(replacing, fingerprint, _read_json_dict(out_dir / "config.json") or {},
                                                images, gt)):  # (the replacing run had not begun: a --resume of
        # another command would start its own and, finished, remove the kept run)
        differs = ("this command has other inputs, model or settings than that overwrite" if isinstance(replacing, str)
                   else "nothing records what that overwrite was asked to adapt")
        raise InputError(f"{out_dir} holds no checkpoint to resume, and the finished run a stopped --overwrite replaces "
                         f"is kept aside there: {differs}; run that --overwrite command again, or "
                         f"{restore_words(out_dir.parent if aside_until_end else out_dir)} to have the run back")

    def refuse_other(what: str, then: dict | None, recipe: dict | None, advice: str) -> None:
        """Refuse the run when ``then`` (a fingerprint's record) was made with other inputs or settings."""
        if fingerprinter.same_run((then or {}).get("fingerprint"), fingerprint, recipe, images, gt):
            return
        made = _made_with(config, recipe, _read_json_dict(out_dir / "config.json"),
                          changed=_changed_parts((then or {}).get("fingerprint_parts"), fingerprint_parts,
                                                 config.sample),
                          gt=gt is not None)
        raise InputError(f"{what} was made with {made}: {advice}")

    if resume and ckpt_path.exists():
        ck = _load_checkpoint(ckpt_path)
        refuse_other(f"the checkpoint in {out_dir}", ck, _recipe_of(ck),
                     f"rerun with the same ones ({_same_settings(out_dir)}), pass --overwrite instead of --resume to "
                     "start again there, or drop --resume and choose another --out folder")
        return ck, False
    if finished is not None and resume and not overwrite:
        if not finished:
            raise InputError(f"{out_dir / 'report.json'} cannot be read, so the finished run there cannot be checked "
                             "against these inputs and settings: pass --overwrite to run it again, or choose another "
                             "--out folder")
        refuse_other(f"the finished run in {out_dir}", finished, finished.get("config"),
                     "rerun with the same ones, choose another --out folder, or pass --overwrite to replace it")
        damage = run_damage(out_dir, finished, [img.name for img in images] if write_outputs else ())
        # the run an --overwrite killed after its report, before it removed the run it replaced: that goes now (it
        # stayed kept aside for good, and every plain rerun was refused as if a run there had not finished)
        done_replacing = not aside_until_end and _replacing_run_done(out_dir)
        if damage is None:
            log(f"{out_dir} is complete with these inputs and settings: kept as it is")
            if done_replacing:
                _finish_replacing(out_dir)
            return _kept_result(out_dir, finished)
        rewritten = (_rewrite_missing_images(out_dir, finished, desc, images, config, config.device) if write_outputs
                     else None)
        if rewritten is not None:
            log(f"{out_dir}: the finished run was missing {rewritten} SR image(s): wrote them again from its "
                f"{WEIGHTS}, which is intact")
            if done_replacing:
                _finish_replacing(out_dir)
            return _kept_result(out_dir, finished)
        log(f"{out_dir}: the finished run is damaged ({damage}): running it again")
        return None, True
    if resume and not overwrite and (out_dir / "report.json").is_file() and not (out_dir / WEIGHTS).exists():
        orphan = _read_json_dict(out_dir / "report.json") or {}
        refuse_other(f"the run in {out_dir} (its report; its {WEIGHTS} is missing)", orphan, orphan.get("config"),
                     "rerun with the same ones, choose another --out folder, or pass --overwrite to replace it")
        log(f"{out_dir}: the finished run is damaged (its {WEIGHTS} is missing): running it again")
        return None, True
    return None, False


def _joins_the_command(sub: Path) -> None:
    """A run folder of a per-image or per-group command joins its folder's mark (``runs``), for --restore to remove
    where the kept summary does not list it, and for the command's end to remove the run it keeps aside: once the run
    it held, if any, is moved aside or cleared, and before the run writes anything. It joined as the run began, before
    its checks: a stop in between left a finished run of an earlier command, untouched, listed for --restore to
    delete."""
    aside = sub.parent / ASIDE
    if _aside_state(aside) != "kept":
        return
    mark = _aside_mark(aside)
    runs, joined = (mark.get(key) if isinstance(mark.get(key), list) else [] for key in ("runs", "joined"))
    if sub.name not in runs or sub.name not in joined:
        _mark_aside(aside, complete=True, runs=[*runs, sub.name] if sub.name not in runs else runs,
                    joined=[*joined, sub.name] if sub.name not in joined else joined)


def _say_room(out_dir: Path, aside: Path, note: Log) -> None:
    """Say, before any work, where the disk under ``out_dir`` has less room than the run kept aside in ``aside``
    takes: the new run writes about as much (the same inputs' images, the weights), and the kept run stays until the
    new one is written. A clip's run stopped on a full disk after hours of work, the kept run safe but the time lost."""
    try:
        kept = sum(p.stat().st_size for p in aside.rglob("*") if p.is_file() and not p.is_symlink())
        free = shutil.disk_usage(out_dir).free
    except OSError:
        return
    if free < kept:
        note(f"the disk under {out_dir} has {free / 1e6:.0f} MB free, and this run writes about as much as the run it "
             f"replaces, which stays in {aside} until it finishes ({kept / 1e6:.0f} MB): make room now, or it may stop "
             "on a full disk (the kept run stays, for --restore)")


def _training_pool(data: Sequence[AdaptImage], note: Log) -> tuple[set[int], list[int] | None]:
    """The inputs of one flat colour, and the ones the training patches and the guard's fixed patches come from.

    Those are the inputs that are not one flat colour (a fade from black had its black frames take their share of
    every batch, and the yardstick watched black); all of them (``None``) when every one is flat or none is. Without
    a flat input the draws are those of every earlier version."""
    flat = {k for k, d in enumerate(data) if _flat(d.lr)}
    pool = [k for k in range(len(data)) if k not in flat] if 0 < len(flat) < len(data) else None
    if flat:
        names = [data[k].name for k in sorted(flat)]
        note(f"{listing(names, 3)} ({len(flat)} of {len(data)} input(s)) {'is' if len(flat) == 1 else 'are'} one flat "
             "colour (a fade from black, a blank card): "
             + ("no training patches are drawn from them; their sr/ images are written all the same" if pool else
                "there is no detail to adapt on; adapt on frames that show the footage"))
    return flat, pool


def _embed(data: Sequence[AdaptImage], stage1, embeddings: torch.Tensor | None, config: AdaptConfig, scale: int,
           speed: SpeedOptions, log: Log, taken: str = "the grouping's") -> tuple[FastReconstructor, dict, float]:
    """E once per image (or ``embeddings`` computed already, one row an image: ``taken`` says whose), and R with those
    embeddings folded in: ``(R, what report.json says of stage 1, seconds)``."""
    from lway_rt.io.weights import state_dict_sha256

    t0 = time.perf_counter()
    stage1.encoder.to(config.device)
    stage1.reconstructor.to(config.device)
    # E reads the degradation at the scale R will apply it: the upsampled LR, or the LR itself
    freeze_stage1(stage1)
    if embeddings is not None:
        if embeddings.shape[0] != len(data):
            raise ValueError(f"{embeddings.shape[0]} embeddings given for {len(data)} images")
        emb = embeddings.to(config.device)
    else:
        if len(data) >= _SAY_BEFORE:  # seconds a frame on a CPU: not minutes of silence on a clip
            log(f"embedding {len(data)} image(s) with stage 1's encoder ...")
        emb = compute_embeddings([embedding_input(d.lr, scale, config.target) for d in data], stage1,
                                 backend=config.encoder_backend,
                                 progress=_PassLines(log, len(data), "embedded {k} of {n} image(s)"))
    recon = FastReconstructor(stage1.reconstructor, emb, speed)
    embed_s = time.perf_counter() - t0
    stage1_info = {"sha256": state_dict_sha256(stage1.state_dict()), "embed_dim": int(emb.shape[1]),
                   **{k: stage1.meta[k] for k in ("width", "blocks", "trunk_model", "trunk_layers", "source")
                      if k in stage1.meta}}
    log(f"embedded {len(data)} image(s) once with E in {embed_s:.2f}s" if embeddings is None
        else f"took {taken} embeddings of {len(data)} image(s)")
    return recon, stage1_info, embed_s


def _weigh(data: Sequence[AdaptImage], anchor_model: nn.Module | None, recon, config: AdaptConfig, scale: int,
           multiple: int, pool: list[int] | None, log: Log, losses: list[dict] | None = None):
    """The unadapted network's output on each image, weighed with stage 1 where the anchor's backbone trust or the
    detail guard's trust gate asks for it (``losses``: that weighing, done already): ``(trust per image, its report
    entries, gate per image, the weighing)``, each ``None`` where not asked for."""
    trust, trust_info, gates = None, None, None
    wants_trust = anchor_model is not None and config.anchor_weight > 0 and config.anchor_trust > 0 and recon is not None
    wants_gate = config.detail_guard > 0 and config.detail_guard_gate == "trust" and recon is not None
    if not (wants_trust or wants_gate):
        return trust, trust_info, gates, None
    if losses is not None:
        log(f"took the checkpoint's weighing of {len(data)} image(s)")
    else:
        if len(data) >= _SAY_BEFORE:
            log(f"weighing the unadapted network's output on {len(data)} image(s) with stage 1 ...")
        losses = trust_losses(data, anchor_model, recon, config, scale, multiple,
                              progress=_PassLines(log, len(data), "weighed {k} of {n} image(s)"))
    if wants_gate:
        gates = guard_gates(losses)
        log("detail guard per image (trust gate): " + listing((f"{d.name} {g:.2f}" for d, g in zip(data, gates.tolist())), 8))
        gates = gates.to(config.device)
    if wants_trust:
        trust, trust_info = backbone_trust(losses, config, among=pool)
        trust = trust.to(config.device)
        if config.anchor_trust_scope == "run":
            log(f"anchor x{trust_info[0]['anchor_factor']:.2f} (backbone trust pooled over "
                f"{len(data) if pool is None else len(pool)} image(s))")
        else:
            log("anchor per image (backbone trust): " + listing((f"{d.name} {t['anchor_factor']:.2f}"
                                                                for d, t in zip(data, trust_info)), 8))
    return trust, trust_info, gates, losses


@dataclass(eq=False)
class _Training:
    """S's training: the loop over random patch batches, the checks that judge its weights (the drift guard, the
    ground-truth evaluation), the snapshots for the contact sheet, and ``st``, what a checkpoint carries besides the
    weights, the optimiser and the patch generator."""

    model: nn.Module
    opt: torch.optim.Optimizer
    params: list[torch.Tensor]
    gen: torch.Generator
    config: AdaptConfig
    speed: SpeedOptions
    data: Sequence[AdaptImage]
    pool: list[int] | None
    scale: int
    multiple: int
    fixed: object  # patches.FixedPatches: the drift guard's yardstick patches
    recon: FastReconstructor | None
    perceptual: object
    anchor_model: nn.Module | None
    trust: torch.Tensor | None
    gates: torch.Tensor | None
    sup_pairs: SyntheticPairs | None
    tensors: dict[str, torch.Tensor]
    gt: dict[str, np.ndarray] | None
    log: Log

    def __post_init__(self):
        config = self.config
        # The guard's yardstick: the training loss on fixed patches, but with the wavelet weight taken of
        # the (fixed) target, so a rise means a worse fit, not a moved weight map; without the anchor
        # term, which is 0 at the start (a yardstick of 0 would call any step a jump: the supervised
        # control with an anchor was rolled back until it stopped).
        self.yardstick = config.replace(hf_source="target", anchor_weight=0.0, detail_guard=0.0)
        self.snap_in: list[torch.Tensor] = []  # fixed crops for the contact sheet (LR centre crops)
        self.st = {
            "it": 0, "lr": config.lr, "history": [], "val": [], "evals": [], "events": [],
            "best_val": None, "good_model": None, "good_opt": None, "good_it": 0, "rollbacks": 0, "bad_streak": 0,
            "best_psnr": None, "best_model": None, "best_it": 0, "no_improve": 0, "snapshots": {},
            "snapshot_names": None, "snapshot_crop": None, "train_s": 0.0,
            "stopped": None, "resumed_from": [], "rolled_at": None,  # the iteration of the last rollback
            # --ema: the moving average of the trainable weights, from the base ones (and its copy at the last good
            # check)
            "ema": [p.detach().clone() for p in self.params] if config.ema > 0 else None, "good_ema": None,
        }

    @contextlib.contextmanager
    def averaged(self):
        """S with the moving average of its weights in place (--ema), its own weights back afterwards."""
        if self.st["ema"] is None:
            yield
            return
        own = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.st["ema"])
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, own)

    def fixed_loss(self) -> float:
        with torch.no_grad():
            loss, _ = adaptation_loss(self.model(self.fixed.lr), self.fixed, self.recon, self.yardstick,
                                      perceptual=self.perceptual)
        return float(loss)

    def snapshot(self) -> list[torch.Tensor]:
        with self.averaged():
            return [torch.from_numpy(_to_uint8(super_resolve(self.model, x, self.scale, self.multiple, 0)))
                    for x in self.snap_in]

    def resume(self, ck: dict | None, resume: bool) -> None:
        """Take up the checkpoint ``ck`` (checked against this run before anything was done)."""
        st = self.st
        if ck is None:
            if resume:
                self.log("no checkpoint to resume from: starting from the beginning")
            return
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.gen.set_state(ck["gen"])
        st.update(ck["st"])
        st["snapshots"] = {int(k): v for k, v in st["snapshots"].items()}
        for key in ("ema", "good_ema"):  # the checkpoint is read onto the CPU
            if st[key] is not None:
                st[key] = [t.to(self.config.device) for t in st[key]]
        st["resumed_from"] = list(st["resumed_from"]) + [st["it"]]
        _set_lr(self.opt, st["lr"])
        self.log(f"resumed from iteration {st['it']}")

    def choose_snapshots(self) -> list[AdaptImage]:
        """The images the contact sheet shows, and their crops (``snap_in``)."""
        st, data = self.st, self.data
        # the window of the snapshots taken so far (a resume with another --snapshot-crop had put two windows side by
        # side under one row); a checkpoint of an earlier version that recorded none: this command's
        if st["snapshot_crop"] is None or not st["snapshots"]:
            st["snapshot_crop"] = self.config.snapshot_crop
        elif st["snapshot_crop"] != self.config.snapshot_crop:
            self.log(f"note: the contact sheet keeps the run's --snapshot-crop {st['snapshot_crop']}, the window of the "
                     "snapshots it took before this resume")
        crop = st["snapshot_crop"]
        if st["snapshot_names"] is None:  # images spread over the inputs (frames over the clip); a checkpoint of an
            # earlier version that recorded no names showed the first ones
            st["snapshot_names"] = [d.name for d in (data[:SNAPSHOT_LIMIT] if st["snapshots"] else
                                                     _sheet_rows(data, crop, self.multiple))]
        by_name = {d.name: d for d in data}
        shown = [by_name[n] for n in st["snapshot_names"]]
        for d in shown:
            t, l, c = d.centre_window(crop, self.multiple)
            self.snap_in.append(d.lr[..., t:t + c, l:l + c])
        return shown

    def lr_now(self) -> str:
        """The learning rate after a halving, as the next step will use it (the schedule's factor included)."""
        config = self.config
        nxt = self.st["lr"] * config.lr_factor(min(self.st["it"], config.iterations - 1))
        return f"lr now {nxt:.3g}" + (f" (base {self.st['lr']:.3g} x the cosine schedule)"
                                      if config.lr_schedule != "constant" else "")

    def guard_check(self, at: int | None = None) -> None:
        """The drift guard on S's weights now, which are those of iteration ``at`` (default: the current one; a
        streak of skipped steps leaves them as they were before it). ``at`` given: the run stops after this check."""
        st, config = self.st, self.config
        stopping, at = at is not None, st["it"] if at is None else at
        last = stopping or at >= config.iterations  # no step follows this check
        val = self.fixed_loss()
        st["val"].append({"it": at, "loss": val})
        best = st["best_val"]
        jumped = config.guard_factor > 0 and best is not None and val > config.guard_factor * best
        if not math.isfinite(val) or jumped:
            if st["good_model"] is None:
                raise TrainingError("the loss on the fixed patches is not finite for the unadapted model: "
                                    "check the inputs and the stage-1 checkpoint")
            self.model.load_state_dict(st["good_model"])
            self.opt.load_state_dict(st["good_opt"])
            if st["ema"] is not None:
                st["ema"] = [t.clone() for t in st["good_ema"]]
            st["lr"] *= 0.5
            _set_lr(self.opt, st["lr"])
            st["rollbacks"] += 1
            st["rolled_at"] = at
            how = f"is not finite ({val})" if not math.isfinite(val) else \
                f"{val:.4g} jumped above {config.guard_factor:g}x the best {best:.4g}"
            when = f"the weights of iteration {at}, judged as the run stops" if stopping else f"iteration {at}"
            msg = (f"{when}: fixed-patch loss {how}; rolled back to iteration {st['good_it']}"
                   + ("" if last else f", {self.lr_now()}"))
            st["events"].append(msg)
            self.log(msg)
            if st["rollbacks"] > config.max_bad_steps:
                st["stopped"] = f"rolled back {st['rollbacks']} times; stopped with the weights of iteration {st['good_it']}"
            elif last and not stopping:  # at the last iteration: the run ends on the weights it rolled back to
                st["stopped"] = f"rolled back at the last iteration ({at}); stopped with the weights of iteration {st['good_it']}"
            return
        st["best_val"] = val if best is None else min(best, val)
        st["good_model"], st["good_opt"], st["good_it"] = _clone_state(self.model), _clone_state(self.opt), at
        if st["ema"] is not None:
            st["good_ema"] = [t.clone() for t in st["ema"]]

    def _checks_after_skips(self) -> None:
        """The checks a run's last step makes (drift guard, ground truth, snapshot), where its last steps were skipped:
        on the weights before the streak, which no check had judged."""
        st = self.st
        last = st["it"] - st["bad_streak"]
        if last != st["good_it"]:
            self.guard_check(at=last)
        held = st["good_it"] if st["rolled_at"] == last else last  # rolled back: S holds good_it's weights
        if self.gt is not None:
            self.gt_check(at=held)
        if held not in st["snapshots"]:
            st["snapshots"][held] = self.snapshot()

    def gt_check(self, at: int | None = None) -> None:
        """Y-PSNR/SSIM of S's weights now, those of iteration ``at`` (default: the current one, or the one a rollback
        just went back to); the best are kept."""
        st, config = self.st, self.config
        if at is None:  # just rolled back: S holds good_it's weights
            at = st["good_it"] if st["rolled_at"] == st["it"] else st["it"]
        if at != st["it"] and any(e["it"] == at for e in st["evals"]):
            return  # those weights were evaluated at their own iteration
        with self.averaged():
            psnr, ssim, _ = _evaluate(self.model, self.tensors, self.gt, self.scale, self.multiple, config.tile)
            evaluated = _clone_state(self.model) if st["best_psnr"] is None or psnr > st["best_psnr"] else None
        st["evals"].append({"it": at, "psnr": psnr, "ssim": ssim})
        st["evals"].sort(key=lambda e: e["it"])  # one labelled with the weights' earlier iteration
        if evaluated is not None:
            st["best_psnr"], st["best_model"], st["best_it"], st["no_improve"] = psnr, evaluated, at, 0
        else:
            st["no_improve"] += 1
            if st["no_improve"] >= config.patience:
                st["stopped"] = (f"early stop at iteration {st['it']}: no Y-PSNR gain for {config.patience} evaluations; "
                                 f"kept iteration {st['best_it']} ({st['best_psnr']:.3f} dB)")

    def start(self) -> None:
        """The checks of the unadapted weights, and its snapshot: at iteration 0 (a resumed run had them)."""
        if self.st["it"] == 0:
            self.guard_check()
            if self.gt is not None:
                self.gt_check()
            self.st["snapshots"][0] = self.snapshot()

    def batch(self):
        """The next step's batch: random patches (and turns), the anchor's outputs, the supervised pairs."""
        config, st = self.config, self.st
        batch = sample_batch(self.data, config.batch_size, config.patch_size, self.scale, self.gen, pool=self.pool)
        if config.augment == "dihedral":  # drawn after the positions, so runs without it keep their draws
            batch.turn = torch.randint(DIHEDRAL, (config.batch_size,), generator=self.gen)
        if self.anchor_model is not None:
            with torch.no_grad():
                batch.anchor = self.anchor_model(batch.lr)
            if self.trust is not None:
                batch.anchor_scale = self.trust[batch.index]
            if self.gates is not None:
                batch.guard_scale = self.gates[batch.index]
        if self.sup_pairs is not None:
            batch.sup_lr, batch.sup_hr = self.sup_pairs.batch(st["it"] + 1)
            if config.sup_degradation == "stage1":  # R and the run's embeddings degrade the clean crops
                batch.sup_lr = stage1_degraded(self.recon, batch.sup_hr,
                                               self.sup_pairs.images(st["it"] + 1, len(self.data)), self.scale,
                                               config.target)
        return batch

    def run(self, ckpt_path: Path, still_ours: Callable[[], None], **identity) -> None:
        """Step until the last iteration or a stop, with a checkpoint (``identity`` and the state) every
        ``checkpoint_every`` steps; a Ctrl-C is an ``Interrupted`` that says which checkpoint is kept. Under the CLI a
        first stop signal lets the step in hand finish (``finishing_steps``) and saves its state, so that ``--resume``
        goes on from there; a second stops at once, keeping the last checkpoint."""
        config, st = self.config, self.st
        t_loop, it_loop = time.perf_counter(), st["it"]
        train_s0 = st["train_s"]
        last_ckpt = st["it"] if st["resumed_from"] else None  # the iteration the checkpoint on disk holds
        saving = None  # (the iteration of the checkpoint being written, and the file it replaces)

        def save() -> None:
            nonlocal saving, last_ckpt
            still_ours()  # --out deleted meanwhile: a checkpoint would make it anew, unlocked
            st["train_s"] = train_s0 + time.perf_counter() - t_loop
            saving = (st["it"], file_id(ckpt_path))
            _save_checkpoint(ckpt_path, {**identity, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
                                         "gen": self.gen.get_state(), "st": st, "recipe": config.recipe_json()})
            last_ckpt = st["it"]

        def unsaved() -> bool:
            """Whether steps were made since the checkpoint on disk (or since the start)."""
            return st["it"] not in (last_ckpt, 0)

        def stop_here() -> None:
            """A stop asked for (``STOPS``) while a step ran: that step's state saved (where there is one to save), then
            stopped as a Ctrl-C stops it. A stop whose KeyboardInterrupt was lost elsewhere stops here too."""
            if STOPS:
                if unsaved():
                    save()
                raise KeyboardInterrupt

        try:
            with finishing_steps() as steps:
                while st["it"] < config.iterations and st["stopped"] is None:
                    stop_here()
                    steps.unsaved = unsaved()  # a stop in the next step waits for it then
                    batch = self.batch()
                    step_lr = st["lr"] * config.lr_factor(st["it"])  # --lr-schedule on top of the guard's halvings
                    _set_lr(self.opt, step_lr)
                    m = fast_adapt_step(self.model, self.opt, batch, self.recon, config, self.speed,
                                        perceptual=self.perceptual)
                    st["it"] += 1
                    rec = {"it": st["it"], "loss": m["loss"], "skipped": m["skipped"], "lr": step_lr}
                    for part in ("anchor", "detail", "sup", "perc"):
                        if part in m:
                            rec[part] = m[part]
                    st["history"].append(rec)
                    if m["skipped"]:
                        if self._skipped(m["reason"]):
                            break
                        if st["it"] == config.iterations:  # the last step skipped: the run's final checks, on the
                            self._checks_after_skips()  # weights the streak left (they had not been judged)
                        continue
                    st["bad_streak"] = 0
                    if st["ema"] is not None:
                        with torch.no_grad():
                            torch._foreach_lerp_(st["ema"], self.params, 1.0 - config.ema)
                    done = st["it"] == config.iterations
                    if st["it"] % config.guard_every == 0 or done:
                        self.guard_check()
                    if self.gt is not None and (st["it"] % config.eval_every == 0 or done):
                        self.gt_check()
                    if st["it"] % config.snapshot_every == 0 or done:
                        st["snapshots"][st["it"]] = self.snapshot()
                    st["train_s"] = train_s0 + time.perf_counter() - t_loop
                    if st["it"] % config.checkpoint_every == 0 and not done and st["stopped"] is None:
                        save()
                    if st["it"] % 10 == 0:
                        rate = (time.perf_counter() - t_loop) / max(1, st["it"] - it_loop)  # this process's steps only
                        self.log(f"iteration {st['it']}/{config.iterations}: loss {m['loss']:.4g}, {rate:.2g} s/it, "
                                 f"about {duration(rate * (config.iterations - st['it']))} left")
                if st["it"] != last_ckpt:  # the state after the last step: a stop while the outputs are made (the
                    save()  # detail measure, sr/) resumes there, keeping the images written, not from an earlier
                    # checkpoint (or none: a run shorter than an interval)
                stop_here()  # (a stop during the last step, or the save after it)
        except KeyboardInterrupt:
            if saving and saving[0] != last_ckpt and file_id(ckpt_path) not in (None, saving[1]):
                last_ckpt = saving[0]  # the stop came after the new checkpoint took the old one's place
            kept = (f"the checkpoint of iteration {last_ckpt} is kept in {ckpt_path}: run the same command with --resume "
                    "to continue" if last_ckpt else f"no checkpoint had been written yet (one every "
                    f"{config.checkpoint_every} steps): {RUN_AGAIN}")
            raise Interrupted(f"adaptation interrupted at iteration {st['it']}; {kept}") from None
        st["train_s"] = train_s0 + time.perf_counter() - t_loop
        if st["stopped"]:
            self.log(st["stopped"])

    def _skipped(self, reason: str) -> bool:
        """A step skipped (a non-finite loss or gradient): halve the learning rate; stop (``True``) after too many in
        a row, with the last good weights."""
        st, config = self.st, self.config
        st["bad_streak"] += 1
        st["lr"] *= 0.5
        _set_lr(self.opt, st["lr"])
        msg = f"iteration {st['it']}: {reason}, step skipped; {self.lr_now()}"
        st["events"].append(msg)
        self.log(msg)
        if st["bad_streak"] < config.max_bad_steps:
            return False
        last, rollbacks = st["it"] - st["bad_streak"], st["rollbacks"]
        if last != st["good_it"]:  # the weights before the streak: judged by the drift guard first
            self.guard_check(at=last)  # (a huge step can leave them finite but useless, the next loss at 1e33)
        what = f"non-finite loss or gradient for {st['bad_streak']} steps in a row"
        if st["rollbacks"] > rollbacks:  # (a non-finite loss is judged with the guard off too: 57C2)
            failed = "failed the drift guard" if math.isfinite(st["val"][-1]["loss"]) else \
                "give a non-finite loss on the fixed patches"
            st["stopped"] = (f"{what}, and the weights of iteration {last} {failed}: rolled back to iteration "
                             f"{st['good_it']} and stopped there")
        else:
            st["stopped"] = f"{what}; stopped with the last good weights (iteration {last})"
        return True

    def final_weights(self, base_state: dict[str, torch.Tensor]) -> tuple[int, dict[str, torch.Tensor]]:
        """Put the final weights in S (best by ground truth, else the last good ones; the moving average, the
        strength) and check them: ``(their iteration, S's state on the CPU)``."""
        st, config, model = self.st, self.config, self.model
        best_by_gt = self.gt is not None and st["best_model"] is not None
        if best_by_gt:
            model.load_state_dict(st["best_model"])
            final_it = st["best_it"]
        elif st["stopped"] and st["good_model"] is not None and "rolled back" in st["stopped"]:
            model.load_state_dict(st["good_model"])
            final_it = st["good_it"]
        else:
            final_it = st["it"] - st["bad_streak"]
        if st["ema"] is not None and not best_by_gt:
            with torch.no_grad():  # the average (after a rollback: the one kept with the good weights)
                torch._foreach_copy_(self.params, st["ema"])
            self.log(f"wrote the moving average of the weights (decay {config.ema:g})")
        st["ema"] = None  # the final weights are in S now: the final snapshot shows them as they are
        if config.strength != 1.0:
            interpolate_weights(model, base_state, config.strength)
            self.log(f"blended the adapted weights with the base ones at strength {config.strength:g}")
        final_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if set(final_state) != set(base_state):  # same architecture, same names: a loader relies on it
            raise TrainingError("internal error: the adapted state dict's names differ from the base model's")
        bad = [k for k, v in final_state.items() if not torch.isfinite(v).all()]
        if bad:
            raise TrainingError(f"adapted weights are not finite ({bad[0]}); nothing was written")
        return final_it, final_state


def _flag_detail(report: dict, model: nn.Module, base: nn.Module, data: Sequence[AdaptImage], flat: set[int],
                 scale: int, multiple: int, log: Log, note: Log, base_energy: Sequence[float] | None = None) -> None:
    """Which images gained the most fine detail (no ground truth needed): where to look first. Each image's
    ``detail_change`` and its window go into ``report``, and the images at or above ``DETAIL_FLAG`` are named."""
    if len(data) >= _SAY_BEFORE:  # two passes of a crop a frame: a minute of silence after the last iteration
        log(f"measuring the detail the adaptation added on {len(data)} image(s) ...")
    changes = detail_change(model, base, data, scale, multiple,
                            progress=_PassLines(log, len(data), "measured {k} of {n} image(s)"), base_energy=base_energy)
    for entry, c, d in zip(report["images"], changes, data):
        entry["detail_change"] = round(c, 4)
        entry["detail_window"] = list(d.centre_window(TRUST_MAX_SIDE, multiple))  # top, left, side in LR pixels
    # (not an input of one flat colour: its ratio is of two near-zero detail energies, and it was not trained on)
    flagged = sorted((c, d.name) for k, (c, d) in enumerate(zip(changes, data)) if c >= DETAIL_FLAG and k not in flat)[::-1]
    report["detail_flag"] = {"threshold": DETAIL_FLAG, "images": [n for _, n in flagged]}
    if flagged:
        names = listing((f"{n} ({c:.2f}x)" for c, n in flagged), 5)
        note(f"most fine detail added (adapted / unadapted, >= {DETAIL_FLAG:g}x): {names}; check these images first "
             "(on the quality benchmark such crops were the ones adaptation made worse, when it did)")


def _write_run(out_dir: Path, report: dict, training: _Training, final_state: dict[str, torch.Tensor], final_it: int,
               shown: Sequence[AdaptImage], base: nn.Module, images: Sequence[InputImage], desc, stage1_info: dict | None,
               fingerprint_parts: dict, still_ours: Callable[[], None], t_start: float, *,
               aside_until_end: bool) -> RunResult:
    """Write the run's outputs into ``out_dir``: the adapted weights, the SR images, the contact sheet, the curves,
    the report; then remove the checkpoint and finish replacing the run an overwrite kept aside."""
    from lway_rt.io.store import loadable_spec
    from lway_rt.io.weights import save_safetensors, state_dict_sha256

    config, st, data, model, log = training.config, training.st, training.data, training.model, training.log
    scale = desc.scale
    adapted_sha = state_dict_sha256(final_state)
    meta = {
        "format": "lway_rt.sr/1",
        "name": f"{desc.name or desc.arch}-lway",
        "arch": desc.arch,
        "scale": str(scale),
        "hparams": json.dumps(desc.spec.hparams),
        # as -m loads it again: its store name, else its file, absolute (the name in a file's own metadata, adapted
        # weights' "<base>-lway", reaches no model); base_source is that file (the detail cap looks there too)
        "base_model": loadable_spec(desc),
        "base_source": _absolute(desc.source),
        "base_sha256": report["model"]["base_sha256"],
        "adapted_sha256": adapted_sha,
        "recipe": config.recipe_json(),
        "stage1_sha256": (stage1_info or {}).get("sha256", ""),
        "inputs": json.dumps([d.name for d in data]),
        "iterations": str(final_it),
        **({"detail_cap": repr(float(config.detail_cap))} if config.detail_cap is not None else {}),
        "description": f"{desc.name or desc.arch} adapted with LWay stage 2 ({config.loss} loss) to {len(data)} image(s)",
    }
    weights_path = out_dir / WEIGHTS
    still_ours()  # --out deleted meanwhile (another run may lock the new one): nothing written, not "completed"
    save_safetensors(weights_path, desc.in_file_names(final_state), meta)  # hashed above by the network's names
    report["model"]["adapted_sha256"] = adapted_sha
    report["weights"] = WEIGHTS

    sr_dir = out_dir / "sr"
    sr_paths, cap_s = _write_sr_images(desc, model, base, images, out_dir, config, config.device, log,
                                       weights_sha=adapted_sha, digests=fingerprint_parts.get("images"),
                                       keep_written=bool(st["resumed_from"]), ledger=out_dir / SR_WRITTEN)
    for entry, p in zip(report["images"], sr_paths):
        entry["sr"] = str(p.relative_to(out_dir))
        if entry["name"] in cap_s:
            entry["detail_cap_s"] = round(cap_s[entry["name"]], 4)
    if config.detail_cap is not None:
        capped = sorted(n for n, v in cap_s.items() if v < 1)
        report["detail_cap"] = {"cap": config.detail_cap, "images_capped": capped}
        log(f"detail cap {config.detail_cap:g}: {len(capped)} of {len(cap_s)} image(s) blended towards the unadapted one"
            + (f" ({', '.join(capped[:5])}{' ...' if len(capped) > 5 else ''})" if capped else ""))

    _contact_sheet(out_dir / "contact_sheet.png", training, shown, final_it, cap_s,
                   grey={img.name for img in images if img.image.grey})
    report["contact_sheet"] = "contact_sheet.png"
    report["contact_sheet_rows"] = list(st["snapshot_names"])  # the images its rows show, top to bottom
    from lway_rt.adapt.visual import can_plot, save_curves

    if can_plot():
        save_curves(out_dir / "curves.png", st["history"], st["val"], st["evals"],
                    title=f"{desc.name or desc.arch}: {config.loss} loss, {len(data)} image(s)",
                    kept=final_it if final_it != st["it"] else None)
        report["curves"] = "curves.png"
    else:
        report["curves"] = None
        report["events"].append("curves.png not drawn: install the 'plot' extra (matplotlib)")

    atomic_write_json(out_dir / "config.json", config.to_dict())
    report["timings"]["total_s_this_process"] = round(time.perf_counter() - t_start, 3)
    atomic_write_json(out_dir / "report.json", report)
    (out_dir / CHECKPOINT).unlink(missing_ok=True)
    (out_dir / SR_WRITTEN).unlink(missing_ok=True)
    (out_dir / _SR_WRITTEN_BEFORE).unlink(missing_ok=True)
    if not aside_until_end:
        _finish_replacing(out_dir)
    log(f"wrote {weights_path} and {len(sr_paths)} SR image(s) to {sr_dir}")
    return RunResult(out_dir, weights_path, report, tuple(sr_paths), model)


def _contact_sheet(path: Path, training: _Training, shown: Sequence[AdaptImage], final_it: int,
                   cap_s: dict[str, float], grey: set[str] = frozenset()) -> None:
    """The contact sheet: each shown image's crop as bicubic | unadapted | snapshots ... | final (as written); the
    crops of a ``grey`` input in grey, as its images are written (58G-1: the network's colour fringes showed)."""
    from lway_rt.adapt.visual import save_contact_sheet

    config, st, scale = training.config, training.st, training.scale
    its = sorted(st["snapshots"])
    if len(its) > SHEET_COLUMNS:
        its = sorted({its[round(i * (len(its) - 1) / (SHEET_COLUMNS - 1))] for i in range(SHEET_COLUMNS)})
    if its and its[-1] == final_it == st["it"] and config.strength == 1.0 and config.detail_cap is None:
        its = its[:-1]  # the final column shows that snapshot already
    final_snap = training.snapshot()
    if cap_s and 0 in st["snapshots"]:  # the final column as written: each crop blended with its image's s
        final_snap = [f if cap_s.get(d.name, 1.0) == 1.0 else
                      (u.double() + cap_s[d.name] * (f.double() - u.double())).round().to(torch.uint8)
                      for f, u, d in zip(final_snap, st["snapshots"][0], shown)]
    rows = [[_to_uint8(bicubic_up(x, scale))] + [st["snapshots"][i][k].numpy() for i in its] + [final_snap[k]]
            for k, x in enumerate(training.snap_in)]
    from lway_rt.io.images import _luminance  # (the weights a grey image is written with)

    for row, d in zip(rows, shown):
        if d.name in grey:
            row[:] = [np.repeat(np.round(_luminance(np.asarray(t, np.float64))).astype(np.uint8)[..., None], 3, axis=-1)
                      for t in row]
    # the weights written: where not the last iteration's (the best with ground truth, the last good one after bad
    # steps), this column comes after later snapshots and says so (review 56A-3)
    final = "final" if final_it == st["it"] else "written"
    final_label = f"{final} (it {final_it})" if config.strength == 1.0 else f"{final} (it {final_it}, x{config.strength:g})"
    if config.detail_cap is not None:
        final_label = f"{final_label[:-1]}, cap {config.detail_cap:g})"
    labels = ["bicubic"] + [("unadapted" if i == 0 else f"it {i}") for i in its] + [final_label]
    save_contact_sheet(path, rows, labels, [_row_label(d.name) for d in shown])


def interpolate_weights(model: nn.Module, base_state: dict[str, torch.Tensor], strength: float) -> None:
    """Move ``model``'s floating-point weights to ``base + strength * (current - base)``, in place.

    Network interpolation between a model and the one it was fine-tuned from (the idea of ESRGAN's
    PSNR-to-GAN blend and Real-ESRGAN's denoise strength): 1 leaves the model as it is, 0 gives
    the base model back.
    """
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                base = base_state[name].to(device=t.device, dtype=t.dtype)
                t.copy_(base + strength * (t - base))


def group_inputs(images: Sequence[InputImage], desc, config: AdaptConfig, stage1, log: Log | None = None):
    """Group ``images`` by stage 1's embedding of their degradation (``lway_rt.adapt.groups``).

    E reads each image as the lway loss would (the bicubic-upsampled LR, or the LR itself for the
    ``lr-recon`` target), once; ``config.groups`` is a count or ``auto``. The grouping keeps those
    embeddings (``Grouping.embeddings``), so each group's run need not compute them again.
    """
    from lway_rt.adapt.groups import group_embeddings

    data = [AdaptImage.from_lr(img.name, _tensor(img, config.device), desc.scale) for img in images]
    check_patch_fits([(d.name, d.size) for d in data], config.patch_size)  # the usual one-line error before E sees a small image
    stage1.encoder.to(config.device)
    emb = compute_embeddings([embedding_input(d.lr, desc.scale, config.target) for d in data], stage1,
                             backend=config.encoder_backend)
    grouping = dc_replace(group_embeddings(emb, config.groups, seed=config.seed), embeddings=emb)
    if log is not None:
        from lway_rt.adapt.groups import AUTO_MIN_SILHOUETTE, MIN_GROUP_SIZE

        tried = ", ".join(f"k={k} {s:.2f}" for k, s in grouping.silhouettes.items())
        why = ""
        if config.groups == "auto" and grouping.count == 1:  # say why one, and how to ask for more
            why = (f": no split into groups of at least {MIN_GROUP_SIZE} images each" if not tried else
                   f": no split clear enough (silhouette under {AUTO_MIN_SILHOUETTE:g})")
            why += "; --groups N splits them into N"
        elif isinstance(config.groups, int) and grouping.count < config.groups:  # (58C-2: unsaid, as if ignored)
            why = (f", not the {config.groups} asked for: stage 1's embedding tells only {grouping.count} kind(s) "
                   "apart among them (copies of one image, or images degraded alike)")
        log(f"grouped {len(images)} image(s) into {grouping.count} by stage 1's embedding"
            + (f" (silhouette {tried})" if tried else "") + why)
    return grouping


def adapt(inputs, model: str, out_dir: str | Path, config: AdaptConfig | None = None, *, stage1=None,
          gt_dir: str | Path | None = None, resume: bool = False, log: Log | None = None,
          overwrite: bool = False, note: Log | None = None) -> list[RunResult]:
    """The library entry point behind ``lwayrt adapt``.

    ``inputs``: image files/folders (or ``InputImage`` objects); ``model``: store name or weights
    path; ``stage1``: a ``Stage1``, a checkpoint path, or None for the shipped one (loaded for the
    lway loss and for grouping). In ``per-image`` mode each image gets its own run in
    ``out_dir/<name>/``; in ``per-group`` mode each group of images in ``out_dir/group-<n>/``, the
    grouping in ``out_dir/groups.json``. ``resume`` / ``overwrite``: see ``adapt_images`` (each run is checked);
    ``out_dir`` may not be one of the input folders (the run's pictures would become inputs of the next run).
    ``log`` gets the progress lines; ``note`` (default: ``log``) the lines to read even when progress is silenced:
    inputs not read, an unfinished stage 1, the images to check first.
    """
    from lway_rt.runtime.device import check_torch_device

    config = _absolute_paths(config or AdaptConfig())
    check_torch_device(config.device)
    log = log or (lambda msg: None)
    note = note or log
    out_dir = Path(out_dir)
    for item in inputs:
        if isinstance(item, (str, Path)) and Path(item).is_dir() and Path(item).resolve() == out_dir.resolve():
            raise InputError(f"--out {out_dir} is an input folder: the run's pictures would mix with your images (and be "
                             "read as inputs next time); choose another --out folder")
    # made, checked and locked at once, not after the model, stage 1 and the inputs are loaded, embedded and weighed (an
    # unwritable --out, or one another run holds, was said minutes in); a command refused later leaves none it made
    target = Path(os.path.realpath(out_dir))  # as the OS takes it ("new/../mine" names mine/, which is there; a link's
    # "LINK/../new" is new/ beside the folder LINK leads to)
    made = [p for p in (target, *target.parents) if not os.path.lexists(p)]
    with contextlib.ExitStack() as held:
        try:
            ensure_writable_dir(out_dir, "--out folder")
            held.enter_context(exclusive_run(out_dir, "--out folder"))
            return _adapt(inputs, model, out_dir, config, stage1=stage1, gt_dir=gt_dir, resume=resume, log=log,
                          overwrite=overwrite, note=note)
        except BaseException:
            for folder in made:  # only while empty (what a run wrote before it stopped stays), and not while another
                try:  # run holds it (one begun in a folder this command made meanwhile)
                    if not os.path.isdir(folder):  # (not made, or its name too long to make)
                        continue
                    with exclusive_run(folder, "--out folder"):
                        folder.rmdir()
                except (OSError, OutputError):
                    break
            raise


def _check_run_folders(out_dir: Path, runs: Sequence[tuple[str, list[InputImage]]], config: AdaptConfig,
                       fingerprinter: _Fingerprinter | None, fingerprints: dict[str, str], command: str | None, gt, *,
                       resume: bool, overwrite: bool) -> tuple[dict[str, dict], set[str]]:
    """Check every run folder of a per-image or per-group command in ``out_dir`` against it before any run is made:
    returns the finished runs ``--resume`` keeps as they are (by name), and the run folders it replaces as
    ``--overwrite`` does (a --resume that takes up a stopped overwrite: the run folders that overwrite had not reached,
    whose runs it replaces); raises ``InputError`` for any refused. ``fingerprints``: each run's fingerprint (made by
    ``fingerprinter``), by run folder; ``command``: the command's (``_command_fingerprint``). (A --restore under way
    was refused before: ``refuse_while_restoring``.)"""
    fingerprint_of = fingerprinter if resume and not overwrite else None
    kept: dict[str, dict] = {}  # finished runs --resume keeps as they are
    unreached = _unreached_by_the_overwrite(out_dir, command) if fingerprint_of is not None else set()
    replaced: set[str] = set()
    # a --resume that takes up a stopped --overwrite: its run folders, no other; the run folders it had not reached
    # still hold the runs it replaces, which this command replaces as well where the folder's mark records it as that
    # overwrite (its inputs, model and settings), else checks as any run (one made with others is refused: it had
    # replaced every run and deleted the kept ones)
    if resume and not overwrite:
        refuse_another_resume(out_dir, [name for name, _ in runs])
    for name, group in runs:
        sub = out_dir / name
        finished = _existing_run(sub, resume, overwrite, out_dir)
        _refuse_foreign(sub, finished)
        if sub.is_dir():  # an image of the user's in a run folder's sr/, under an input's name
            refuse_users_images(sub, [img.name for img in group])
        if fingerprint_of is None:
            continue
        ckpt = sub / CHECKPOINT
        if finished == {} and not ckpt.exists():
            raise InputError(f"{sub / 'report.json'} cannot be read, so the finished run there cannot be checked "
                             "against these inputs and settings: pass --overwrite to run them again, or choose another "
                             "--out folder")
        ck = _load_checkpoint(ckpt) if ckpt.exists() else None
        recorded = ck.get("fingerprint") if ck is not None else \
            None if finished is None else finished.get("fingerprint", "")
        then = _recipe_of(ck) if ck is not None else (finished or {}).get("config")
        if recorded is not None and not fingerprint_of.same_run(recorded, fingerprints[name], then, group, gt):
            if name in unreached:  # the run the overwrite replaces (or a stopped one it clears), as it would have
                replaced.add(name)
                continue
            changed = _changed_parts((ck if ck is not None else finished or {}).get("fingerprint_parts"),
                                     fingerprint_of.with_parts(group, gt)[1], config.sample)
            made = _made_with(config, then, _read_json_dict(sub / "config.json"), changed=changed,
                              gt=gt is not None)
            stopped = _aside_state(out_dir / ASIDE) in ("kept", "cut short")
            raise InputError(f"the run in {sub} was made with {made}: rerun with the same "
                             "ones, choose another --out folder, or pass --overwrite to replace it" + (
                                 "; the folder holds the runs a stopped --overwrite replaces, and this --resume is not "
                                 f"that overwrite ({_how_not_that_overwrite(out_dir, fingerprints)}): run that "
                                 f"--overwrite again, or {restore_words(out_dir)} to have them back" if stopped else ""))
        if finished is not None and run_damage(sub, finished, [img.name for img in group]) is None:
            # (a damaged one runs again: adapt_images says so)
            kept[name] = finished
    return kept, replaced


def _how_not_that_overwrite(out_dir: Path, fingerprints: dict[str, str]) -> str:
    """How a --resume with these run ``fingerprints`` differs from the stopped --overwrite whose mark is in
    ``out_dir``: the run folders whose inputs differ where only some do (their pixels or alpha changed since), else
    the inputs' pixels, model or settings (a mark from before it recorded each run's fingerprint says no more)."""
    recorded = _aside_mark(out_dir / ASIDE).get("fingerprints")
    if isinstance(recorded, dict) and recorded.keys() == fingerprints.keys():
        changed = [name for name, fp in fingerprints.items() if recorded[name] != fp]
        if 0 < len(changed) < len(fingerprints):
            return (f"the inputs of {listing(changed, 5)} differ from that overwrite's: their pixels or alpha changed "
                    "since")
    return "its inputs' pixels, model or settings differ"


def _command_fingerprint(fingerprints: dict[str, str], config: AdaptConfig) -> str:
    """What a per-image or per-group command makes: its mode and every run folder's name and run fingerprint (inputs,
    model and settings; ``fingerprints``, in the command's order). A stopped --overwrite records it in its folder's
    mark, and a --resume with the same one is that overwrite taken up."""
    parts = [config.mode, config.groups, [[name, fp] for name, fp in fingerprints.items()]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _unreached_by_the_overwrite(out_dir: Path, command: str | None) -> set[str]:
    """The run folders a stopped --overwrite into the per-image or per-group folder ``out_dir`` had not reached (their
    runs are the ones it replaces, not yet moved aside), where this command (fingerprint ``command``) is that
    overwrite; else none."""
    mark = _aside_mark(out_dir / ASIDE) if _aside_state(out_dir / ASIDE) in ("kept", "cut short") else {}
    planned, started = mark.get("planned"), mark.get("joined")  # (not "runs": a stopped overwrite's before it too)
    if command is None or mark.get("replacing") != command or not isinstance(planned, list) \
            or not isinstance(started, list):
        return set()
    return set(map(str, planned)) - set(map(str, started))


def _check_grouping(out_dir: Path, record: dict) -> None:
    """Refuse a per-group --resume into ``out_dir`` whose grouping (``record``, as groups.json holds it) is not the
    interrupted run's there: another --groups, or inputs that group otherwise."""
    groups_path = out_dir / "groups.json"
    if not groups_path.exists() or _aside_state(out_dir / ASIDE) == "cut short":  # (cut short: a stopped --overwrite
        # was moving the replaced run's summary aside, groups.json last, so the one here is that run's, not the
        # grouping this --resume takes up: the mark's fingerprint judges that)
        return
    old = _read_json_dict(groups_path)
    other_ways = (f"; the folder holds the runs a stopped --overwrite replaces: run that --overwrite again, or "
                  f"{restore_words(out_dir)} to have them back" if _aside_state(out_dir / ASIDE) == "kept" else "")
    if old is None:
        raise InputError(f"{groups_path} cannot be read, so the interrupted run cannot be checked against these "
                         "inputs: pass --overwrite to run it again, or choose another --out folder")
    if old.get("members") != record["members"] and old.get("groups") != record["groups"]:
        raise InputError(f"the run in {out_dir} was made with --groups {old.get('groups')} (this "
                         f"command: --groups {record['groups']}): rerun with --groups {old.get('groups')} to "
                         "continue it, or choose another --out folder" + other_ways)
    if old.get("members") != record["members"]:
        def names(members) -> set[str]:
            return {str(n) for m in members.values() if isinstance(m, list) for n in m} \
                if isinstance(members, dict) else set()

        then, now = names(old.get("members")), names(record["members"])
        added, gone = sorted(now - then), sorted(then - now)
        why = "; ".join([*([f"{listing(added, 3)} {'is' if len(added) == 1 else 'are'} new to it"] if added else []),
                         *([f"{listing(gone, 3)} of its inputs {'is' if len(gone) == 1 else 'are'} not given"]
                           if gone else [])]) or "an image's pixels changed?"  # (the same names grouped otherwise)
        raise InputError(f"the inputs group differently from the run in {out_dir} ({why}): give the inputs it was "
                         "adapted on, or adapt these into a new --out folder" + other_ways)


def _absolute_paths(config: AdaptConfig) -> AdaptConfig:
    """``config`` with its folders and files (--sup-data, --lpips-weights) made absolute, as config.json records them
    and the recipe fingerprints them: a run is then resumed, or rerun with ``--config OUT/config.json``, from any
    folder, and the same photos named from another folder are the same run."""
    def absolute(p: str) -> str:
        return str(Path(p).expanduser().absolute())

    changes: dict = {}
    if config.sup_data is not None:
        changes["sup_data"] = absolute(config.sup_data)
    if config.lpips_weights:
        changes["lpips_weights"] = tuple(absolute(p) for p in config.lpips_weights)
    return config.replace(**changes) if changes else config


def _made_with(config: AdaptConfig, *records: dict | None, changed: str | None = None, gt: bool = False) -> str:
    """How a run differs from this command, for the refusal to resume or keep it: the settings that shape the weights
    which the first record of its configuration at hand (a report's or checkpoint's, else its ``config.json``) holds
    otherwise, as flags with both values; then ``changed`` (``_changed_parts``: which inputs or weights differ, where
    the run recorded them); else the inputs or the weights of the model, stage 1 or perceptual term (the settings
    agree); else, with no record, any of them. With ``gt`` (this command has --gt) --eval-every counts too, as the
    fingerprint counts it; --sup-data and --lpips-weights spelled otherwise for the same files do not differ."""
    then, now = next((r for r in records if isinstance(r, dict)), None), json.loads(config.recipe_json())
    if then is None or not set(now) <= set(then):
        return changed or "other inputs, model or settings"
    held = next((r for r in records if isinstance(r, dict) and "detail_cap" in r), None)  # a config.json's
    if held is not None:  # the cap is not in the recipe (the record of a checkpoint)
        then, now["detail_cap"] = {**then, "detail_cap": held["detail_cap"]}, config.detail_cap
    spaced = next((r for r in records if isinstance(r, dict) and "eval_every" in r), None)
    if gt and spaced is not None:  # neither are they in the recipe (the evaluations keep the best weights)
        then, now["eval_every"] = {**then, "eval_every": spaced["eval_every"]}, config.eval_every
        if "tile" in spaced:
            then, now["tile"] = {**then, "tile": spaced["tile"]}, config.tile

    diffs = [k for k in now if then[k] != now[k] and not _same_files(k, then[k], now[k])]
    if not diffs and changed:
        return changed
    if not diffs:
        sup = ", other photos in --sup-data" if config.sup_data is not None and config.sup_weight > 0 else ""
        return (f"other inputs (their pixels or alpha), other ground truth (--gt, or none) or its --eval-every{sup}, "
                "or another model, stage 1 or perceptual weights (the settings agree)")

    def show(v) -> str:
        return "unset" if v is None else ("on" if v else "off") if isinstance(v, bool) else \
            ",".join(map(str, v)) if isinstance(v, list) else format(v, "g") if isinstance(v, float) else str(v)

    return "other settings: " + "; ".join(f"--{k.replace('_', '-')} {show(then[k])} (this command: {show(now[k])})"
                                          for k in diffs) + (f"; and {changed}" if changed else "")


def _same_settings(out_dir: Path) -> str:
    """How to give a run's own settings again: its config.json as --config (the settings a refused resume left out)."""
    return f"--config {shell_word(str(out_dir / 'config.json'))} gives its settings"


def _recipe_of(ck: dict) -> dict | None:
    """The recipe a checkpoint records (None: one written before checkpoints recorded it)."""
    try:
        return json.loads(ck["recipe"])
    except (KeyError, TypeError, ValueError):
        return None


def _adapt(inputs, model: str, out_dir: Path, config: AdaptConfig, *, stage1, gt_dir, resume: bool, log: Log,
           overwrite: bool, note: Log) -> list[RunResult]:
    """``adapt`` once its --out folder (where it exists) is locked for this run."""
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import state_dict_sha256

    summary_path = out_dir / "report.json"
    loaded = bool(inputs) and all(isinstance(i, InputImage) for i in inputs)
    notes: list[str] = []
    given = list(inputs) if loaded else list_images(inputs, notes)  # paths are listed once, only the chosen ones read
    for line in notes:
        note(line)
    if _aside_state(out_dir / ASIDE) == "discarding":  # an overwrite here finished, and a stop cut short the removal of
        _finish_replacing(out_dir)  # what it replaced: done first (under adapt()'s lock), before the runs are checked
    _remove_killed_writes(out_dir)  # (a per-image or per-group folder's own: its summary and groups.json, too)
    def sr_image(name: str) -> str:  # (for the notes on inputs: a per-group run's group, N, is not known yet)
        run = {"per-image": name, "per-group": "group-N"}.get(config.mode)
        return str(out_dir / run / "sr" / f"{name}.png" if run else out_dir / "sr" / f"{name}.png")

    images = spread(given, config.sample) if loaded else read_inputs(spread(given, config.sample), notes := [],
                                                                      sr_image)
    for line in notes:  # files of several frames: the first is read
        note(line)
    refuse_while_restoring(out_dir)  # first: the folder's other refusals judge a half-restored folder
    _check_out_folder(out_dir, config, images, [] if loaded else given, resume, overwrite)
    if config.sample is not None and len(images) < len(given):
        log(f"adapting on {len(images)} of {len(given)} input(s), spread evenly in frame order (--sample); "
            "'lwayrt upscale' the others with the adapted weights")
    elif config.sample is not None and not loaded:  # (images given in memory, a video's frames: the caller's pick)
        log(f"--sample {config.sample}: there are {len(given)} input(s), all of them adapted on")
    elif len(images) >= MANY_INPUTS:
        note(f"adapting on all {len(images)} inputs: each is held in memory, embedded and written to sr/ at full size; "
             f"for the frames of a clip, --sample 32 adapts on a spread of them in a fraction of the time, and 'lwayrt "
             "upscale' with the adapted weights writes the rest")
    # the usual one-line error for an image smaller than the patch, before anything is loaded or made
    try:
        check_patch_fits([(i.name, tuple(i.rgb.shape[:2])) for i in images], config.patch_size)
    except InputError as exc:  # a --resume that left out the run's own --patch-size is told it
        ran = (_read_json_dict(out_dir / "config.json") or {}).get("patch_size") if resume else None
        if isinstance(ran, int) and ran != config.patch_size:
            raise InputError(f"{exc} (the run in {out_dir} was made with --patch-size {ran}: {_same_settings(out_dir)} "
                             "with --resume)") from None
        raise
    desc = load_model(model, device=config.device)
    config.check_scale(desc.scale)
    desc.require_rgb(str(model), "adapt fine-tunes")  # stage 1, the loss and the inputs (grey ones made RGB) are RGB
    # where stage 1 came from, for groups.json (upscale embeds new images with the same one): a file, the shipped one
    stage1_path = "shipped" if stage1 is None else str(Path(stage1).resolve()) if isinstance(stage1, (str, Path)) else None
    if (config.loss == "lway" or config.mode == "per-group") and (stage1 is None or isinstance(stage1, (str, Path))):
        from lway_rt.degae import load_stage1, unfinished_note

        stage1 = load_stage1(stage1, device=config.device)
        if unfinished := unfinished_note(stage1, stage1_path):
            note(unfinished)
    gt = _load_gt(Path(gt_dir), images, desc.scale) if gt_dir is not None else None
    if config.mode == "folder":
        return [adapt_images(images, desc, config, out_dir, stage1=stage1, gt=gt, resume=resume, log=log, note=note,
                             overwrite=overwrite)]
    # (another --mode's summary was refused by _check_out_folder)
    top_summary = (_read_json_dict(summary_path) or {}) if resume or overwrite else {}
    # (an overwrite stopped before it finished had kept the summary aside: the runs it lists are still the folder's)
    old_summary = top_summary or ((_read_json_dict(out_dir / ASIDE / "report.json") or {})
                                  if (resume or overwrite) and _aside_state(out_dir / ASIDE) in ("kept", "cut short") else {})
    groups_path = record = None
    if config.mode == "per-image":
        runs = [(img.name, [img]) for img in images]
    else:
        # grouped in the order of their names, not of the command line: the same images named in another order group,
        # are numbered and run alike, so a --resume so given takes the run up (58C-6: it was refused as "an image's
        # pixels changed?"); a folder's images come in that order anyway
        ordered = sorted(images, key=lambda img: img.name)
        grouping = group_inputs(ordered, desc, config, stage1, log)
        runs = [(f"group-{k + 1}", [ordered[i] for i in members]) for k, members in enumerate(grouping.members())]
        group_emb = {f"group-{k + 1}": grouping.embeddings[members] for k, members in enumerate(grouping.members())}
        record = {"format": "lway_rt.adapt-groups/1", "groups": config.groups, "silhouettes": grouping.silhouettes,
                  "members": {name: [img.name for img in group] for name, group in runs},
                  # what lwayrt upscale needs to send a new image to its group's model (lway_rt.upscale.GroupRouter)
                  "routing": {"stage1_sha256": state_dict_sha256(stage1.state_dict()), "stage1": stage1_path,
                              "embedding_input": "lr" if config.target == "lr-recon" else "sr", "scale": desc.scale,
                              "centres": {name: list(c) for (name, _), c in zip(runs, grouping.centres)},
                              "floors": {name: f for (name, _), f in zip(runs, grouping.floors)}}}
        groups_path = out_dir / "groups.json"
        if resume and not overwrite:
            _check_grouping(out_dir, record)
    # every run already in the folder is checked before any is made: a refused command leaves the folder as it was
    fingerprinter = _Fingerprinter(config, desc, stage1) if resume or overwrite else None
    fingerprints = {name: fingerprinter(group, gt) for name, group in runs} if fingerprinter is not None else {}
    command = _command_fingerprint(fingerprints, config) if fingerprinter is not None else None
    kept, replaced = _check_run_folders(out_dir, runs, config, fingerprinter, fingerprints, command, gt, resume=resume,
                                        overwrite=overwrite)
    if (done := _written_summary(out_dir)) is not None:  # an overwrite here finished (its summary written after every
        # run), and a stop came before it removed what it replaced (an --overwrite then deleted those finished runs and
        # kept the older ones): that goes first, with the replaced runs it did not make again, as it would have; once
        # this command is accepted (any command had removed them, one then refused too, though the stop message
        # offered --restore to have them back)
        new = {str(e.get("name")) for e in done if isinstance(e, dict)}
        old = (_read_json_dict(out_dir / ASIDE / "report.json") or {}).get("runs")
        _finish_replacing(out_dir, drop=[str(e.get("name")) for e in old if isinstance(e, dict)
                                         and str(e.get("name")) not in new] if isinstance(old, list) else [])
    ensure_writable_dir(out_dir, "--out folder")
    with exclusive_run(out_dir, "--out folder"):  # one run of several at a time in a folder, as for a single run
        # the folder's summary and routing are kept aside with each run folder's run until every run is made (or put
        # back: --restore); a move cut short is finished first, and one kept from before a stopped command stays
        aside = out_dir / ASIDE
        state = _aside_state(aside)
        _refuse_a_restore_under_way(out_dir, aside)
        again = "run the same command with --resume" + (" in place of --overwrite" if overwrite else "")
        # (a folder that holds runs gets the mark even without a summary: it is where the end of the command is
        # recorded, after which what was replaced is only removed, never put back)
        if state == "cut short" or (state is None and overwrite and (top_summary.get("runs") is not None
                                                                     or run_mode(out_dir) is not None)):
            if state is None:
                aside = _make_aside(out_dir, runs=[], planned=[name for name, _ in runs], replacing=command,
                                    joined=[], fingerprints=fingerprints)  # (each run folder joins the runs as its old
                # run is moved aside)
            for name in _RUN_NAMES[config.mode]:  # (a groups.json of the user's in a per-image folder stays)
                if (out_dir / name).is_file():
                    shutil.move(out_dir / name, aside / name)
            _mark_aside(aside, complete=True)
        if overwrite and _aside_state(aside) == "kept":  # (an overwrite again after a stopped one replaces the runs now)
            _mark_aside(aside, complete=True, planned=[name for name, _ in runs], replacing=command, joined=[],
                        fingerprints=fingerprints)
        # this command replaces the runs the summary listed: an --overwrite, or a --resume that takes one up
        replacing = overwrite or (resume and command is not None and _aside_state(aside) in ("kept", "cut short")
                                  and _aside_mark(aside).get("replacing") == command)
        atomic_write_json(out_dir / "config.json", config.to_dict())
        if record is not None:
            atomic_write_json(groups_path, record)
        results = []
        for name, group in runs:
            sub = out_dir / name
            if name in kept:  # its fingerprint was checked above
                log(f"{name}: already adapted with these inputs and settings, skipped")
                results.append(_kept_result(sub, kept[name]))
                continue
            log(f"{name}: adapting its own model" + ("" if config.mode == "per-image" else
                                                      f" for {len(group)} image(s): {', '.join(i.name for i in group)}"))
            emb = group_emb.get(name) if config.mode == "per-group" and config.loss == "lway" else None
            try:
                results.append(adapt_images(group, desc, config, sub, stage1=stage1, gt=gt, log=log, embeddings=emb,
                                            resume=resume and name not in replaced, overwrite=overwrite or name in
                                            replaced, note=note, aside_until_end=True))
            except Interrupted as exc:  # without --resume the runs finished before this one would be refused
                raise Interrupted(_resume_words(f"{name}: {exc}", overwrite).replace(
                    RUN_AGAIN, f"{again} (the runs finished before it are kept)") + _runs_aside_words(out_dir)) from None
            except KeyboardInterrupt:  # before the run's first checkpoint: setting up (after its last step the state
                # is a checkpoint, which adapt_images names)
                raise Interrupted(f"{name}: interrupted before its first checkpoint; {again} (the runs finished before it "
                                  "are kept)" + _runs_aside_words(out_dir)) from None
            except Exception:  # a refusal or a failure: the runs kept aside are said all the same
                if words := _runs_aside_words(out_dir):
                    note(words.removeprefix("; "))
                raise
        entries = [{"name": r.out_dir.name, "weights": str(r.weights.relative_to(out_dir)),
                    "images": [Path(p).stem for p in r.sr_paths],
                    "stopped": r.report["stopped"], "mean": r.report.get("mean")} for r in results]
        names = {e["name"] for e in entries}
        earlier = [e for e in old_summary.get("runs", []) if isinstance(e, dict) and e.get("name") not in names]
        # the runs it replaced that this one did not make again go too (as folder mode's old images do), once the new
        # summary is written; runs of an earlier invocation into this folder that this one did not touch stay in it
        dropped = [str(e.get("name", "")) for e in earlier] if replacing else []
        started = _aside_mark(aside).get("runs") if replacing else None  # and those a stopped command this one
        for name in started if isinstance(started, list) else ():  # replaces had started (they stayed: review 41I, I1)
            if str(name) not in names and str(name) not in dropped:
                dropped.append(str(name))
        kept_before = [] if replacing else [e for e in earlier if (out_dir / str(e.get("weights", ""))).is_file()]
        summary = {"format": _SUMMARY_FORMAT, "mode": config.mode,
                   "runs": entries + kept_before}
        atomic_write_json(out_dir / "report.json", summary)
        # every run is made: the runs replaced go, the folder's mark saying so first (from then on a stop leaves them
        # to be removed by the next command, never put back over the new runs by --restore)
        if _is_aside(aside):
            _finish_replacing(out_dir, drop=dropped)
        else:
            for name in dropped:
                _remove_run_folder(out_dir, name)
        for r in results:
            _finish_replacing(r.out_dir)
        return results
