"""Honest evaluation of a stage-1 checkpoint on photos and degradation draws it never saw.

Reported per geometry (same size, and the x4 round trip stage 2 relies on):
- reconstruction PSNR of R(clean, E(degraded)) against the degraded image, beside the identity
  baseline PSNR(clean, degraded); draws without any degradation are reported apart (the identity
  PSNR is infinite there);
- the embedding ablation (DESIGN.md section 2.5): the same reconstruction with the embedding of
  another draw on the same image ("shuffled"), a zero embedding, and the same draw read from
  another image ("cross_image": each crop's draw read from a crop of another photo); own minus
  shuffled is the gap that shows E carries information;
- separation ratio: mean distance between embeddings of one draw on crops of different images over
  mean distance between different draws on one crop (lower is better).
  Both compare images: with one image (all crops from one photo) they are undefined (NaN; null in
  the JSON), not a crop of the same photo passed off as another image;
- the same reconstruction numbers per degradation type and on the named evaluation presets, each with an
  operation the training sampler never draws (their colour noise and JPEG are ones it draws). The presets' noise follows ``seed`` too (the default
  seed renders them as they always were).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lway_rt.degae import Stage1
from lway_rt.degae.data import BUNDLED_HELDOUT, as_float, load_bundled, load_folder
from lway_rt.degae.degrade import EVAL_PRESETS, SynthConfig, apply_degradation, eval_preset, kinds_of, sample_degradation
from lway_rt.errors import listing

__all__ = ["EvalConfig", "evaluate_stage1", "psnr"]


DEFAULT_SEED = 20240302


@dataclass(frozen=True)
class EvalConfig:
    data: str | None = None  # folder of held-out clean photos; None = bundled held-out photos
    crop: int = 96
    crops_per_image: int = 4
    draws: int = 24
    seed: int = DEFAULT_SEED  # the draws, their noise and the presets' noise; independent of any training seed
    geometries: tuple[int, ...] = (1, 4)
    batch: int = 16

    def __post_init__(self):
        if self.crop < 24 or any(self.crop % g for g in self.geometries):
            step = math.lcm(*self.geometries)
            raise ValueError(f"--crop {self.crop}: use at least 24 pixels and a multiple of {step} (the round-trip "
                             f"scales are {', '.join(f'x{g}' for g in self.geometries)}), e.g. --crop 96")
        if self.draws < 2:
            raise ValueError(f"--draws {self.draws}: use at least 2 (the separation ratio compares draws)")
        if self.crops_per_image < 1:
            raise ValueError(f"--crops-per-image {self.crops_per_image}: use at least 1")


def trained_on(s1: Stage1, folder: str | Path | None, crop: int = 0) -> tuple[bool, int | None, int]:
    """What ``s1`` saw of ``folder``, from one read of its images: whether it was trained on the folder (one its run
    recorded: each resumed part records its --data; or one holding the same images: the ``data_sha256`` each part
    records; or one whose every image it trained on under any name), so its numbers there are not held-out; how many
    of the folder's images it was trained on, wherever they lay then (the same bytes: the ``data_photos`` each part
    records, or for a part trained on the bundled photos, their files'; None for a checkpoint that records neither:
    not known); and how many images the folder holds. ``folder`` None: the bundled held-out photos, by their files.
    ``crop``: images with a side under it, which the evaluation leaves out, are not counted (the folder is still the
    one it was trained on or not as a whole)."""
    from lway_rt.degae.data import BUNDLED_HELDOUT, bundled_digests, folder_digests, same_file

    parts = [s for s in (s1.meta.get("segments") or []) if isinstance(s, dict)]
    if folder is None:
        sha, here = None, bundled_digests(BUNDLED_HELDOUT) or []
    else:
        sha, here = folder_digests(Path(folder), crop)
    seen = _photos_seen(s1, parts)
    some = None if seen is None else sum(d in seen for d in here)
    whole = (folder is not None and any(same_file(s.get("data"), str(folder)) for s in parts)
             or sha in {s.get("data_sha256") for s in parts} - {None}
             or bool(here and some == len(here)))
    return whole, some, len(here)


def _photos_seen(s1: Stage1, parts: list[dict]) -> set[str] | None:
    """The digests of the photos ``s1`` was trained on, as far as it records them (None: it records none). A part
    trained on the bundled photos (its ``data`` None; before parts recorded it, the recipe's) records no digests:
    their scikit-image files give them (a folder holding copies of them was counted as never seen)."""
    from lway_rt.degae.data import BUNDLED_TRAIN, bundled_digests

    seen = {d for s in parts for d in (s.get("data_photos") or []) if isinstance(d, str)}
    known = any("data_photos" in s for s in parts)
    recipe = s1.meta.get("recipe") if isinstance(s1.meta.get("recipe"), dict) else {}
    said = s1.meta.get("data")
    if any(s.get("data", recipe.get("data", "")) is None for s in parts) or (not parts and recipe.get("data", "") is None):
        names = said.split(":", 1)[1].split(",") if isinstance(said, str) and said.startswith("bundled ") \
            and ":" in said else BUNDLED_TRAIN
        bundled = bundled_digests([n.strip() for n in names])
        if bundled is not None:
            seen |= set(bundled)
            known = True
    return seen if known else None


def _realisations(clean: torch.Tensor, d) -> torch.Tensor:
    """Draw ``d`` on each crop of ``clean`` (N, 3, H, W), a noise realisation each (seed + 7919 i), its parameters
    (the correlated noise's channel mix too) shared."""
    shared: dict = {}
    return torch.stack([apply_degradation(clean[i].cpu(), d.with_seed(d.seed + 7919 * i), shared)
                        for i in range(clean.shape[0])])


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image RGB PSNR (dB) of (N, 3, H, W) tensors in [0, 1]; inf where identical."""
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def _too_small(images: dict[str, torch.Tensor], crop: int) -> dict[str, str]:
    """The images with a side under ``crop``, by name, with their size (WxH)."""
    return {n: f"{t.shape[2]}x{t.shape[1]}" for n, t in images.items() if min(t.shape[1:]) < crop}


def _crops(images: dict[str, torch.Tensor], crop: int, per_image: int, step: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``per_image`` most textured non-overlapping crops of each image (flat sky or walls tell
    nothing about a degradation, and every degradation leaves them nearly unchanged), and the index of
    the image each crop comes from (images left out for their size count too)."""
    out, owner = [], []
    for k, img in enumerate(images.values()):
        h, w = img.shape[1:]
        if min(h, w) < crop:
            continue
        img = as_float(img)  # a compact (uint8) photo: float for this image only
        tiles = [(y, x) for y in range(0, h - crop + 1, crop) for x in range(0, w - crop + 1, crop)]
        grey = img.mean(0)

        def texture(yx):
            t = grey[yx[0]:yx[0] + crop, yx[1]:yx[1] + crop]
            return float((t[1:] - t[:-1]).abs().mean() + (t[:, 1:] - t[:, :-1]).abs().mean())

        picked = [img[:, y:y + crop, x:x + crop] for y, x in sorted(tiles, key=texture, reverse=True)[:per_image]]
        out += picked
        owner += [k] * len(picked)
    if not out:
        from lway_rt.errors import InputError

        fit = max(min(t.shape[1:]) for t in images.values()) // step * step  # the largest crop one image takes
        way = f"use --crop {fit} or less, or larger photos" if fit >= 24 else "use photos of at least 24 px a side"
        raise InputError(f"no evaluation image is at least {crop} px on each side (sizes: "
                         f"{listing((f'{n} {s}' for n, s in _too_small(images, crop).items()), 5)}); {way}")
    return torch.stack(out), torch.tensor(owner)


def other_image(owner: torch.Tensor) -> torch.Tensor | None:
    """For each crop, a crop of another image: the crop of the same rank (or the last one there is) in the next
    image, in turn; None when every crop is from one image."""
    images = list(dict.fromkeys(owner.tolist()))
    if len(images) < 2:
        return None
    members = {k: [i for i, o in enumerate(owner.tolist()) if o == k] for k in images}
    partner = []
    for i, o in enumerate(owner.tolist()):
        rank = members[o].index(i)
        nxt = members[images[(images.index(o) + 1) % len(images)]]
        partner.append(nxt[min(rank, len(nxt) - 1)])
    return torch.tensor(partner)


def _nonfinite(what: str, t: torch.Tensor) -> None:
    """ModelError when ``t`` (a checkpoint's outputs) holds NaN/inf: its numbers would be NaN, or means over the rest."""
    bad = int((~torch.isfinite(t.flatten(1))).any(1).sum())
    if bad:
        from lway_rt.errors import ModelError

        raise ModelError(f"the stage-1 checkpoint outputs NaN/inf: {what} of {bad} of {t.shape[0]} evaluation inputs; "
                         "its weights are broken (a training run that blew up?): evaluate another checkpoint, or train "
                         "it again with a lower --lr")


@torch.no_grad()
def _batched(fn, *tensors, batch: int, layout: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[i:i + batch].contiguous(memory_format=layout) if t.dim() == 4 else t[i:i + batch]
                           for t in tensors)) for i in range(0, n, batch)])


@contextlib.contextmanager
def _held_channels_last(*modules: torch.nn.Module):
    """The modules' 4-D weights held channels-last (NHWC) while the block runs, the very tensors they had put back
    after: on the CPU oneDNN's convolutions then skip a layout reorder around every layer, as ``lwayrt upscale``'s
    networks do (``upscale._cpu_layout``): the evaluation in 0.69x the time on the 2-core VM, the same report. For
    inference only: a training step took 1.10x (``benchmarks/stage1_eval_layout.py``, ``stage1_eval_layout.json``)."""
    held = [(p, p.data) for m in modules for p in m.parameters() if p.dim() == 4]
    try:
        for p, data in held:
            p.data = data.contiguous(memory_format=torch.channels_last)
        yield
    finally:
        for p, data in held:
            p.data = data


def _shown(x: float, fmt: str) -> str:
    return format(x, fmt) if math.isfinite(x) else "undefined"


def _mean(x) -> float:
    x = [float(v) for v in x if math.isfinite(float(v))]
    return round(sum(x) / len(x), 3) if x else float("nan")


def _recon_block(s1: Stage1, clean: torch.Tensor, deg: torch.Tensor, emb: torch.Tensor, shuffled: torch.Tensor,
                 cross: torch.Tensor | None, batch: int, layout: torch.memory_format) -> dict[str, torch.Tensor]:
    rec = s1.reconstructor
    outs = {"recon": emb, "shuffled": shuffled, "zero": torch.zeros_like(emb)}
    if cross is not None:
        outs["cross_image"] = cross
    res = {"identity": psnr(clean, deg)}
    for name, e in outs.items():
        x = _batched(rec, clean, e, batch=batch, layout=layout)
        _nonfinite(f"the reconstructions ({name} embedding)", x)
        res[name] = psnr(x, deg)
    return {k: res[k] for k in ("recon", "identity", "shuffled", "zero", "cross_image") if k in res}


def _summary(rows: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, float]:
    """Means over the (draw, crop) pairs of ``mask`` where every row is finite: a draw that rounds to no change on a
    crop (an infinite identity PSNR) leaves that pair out of all of them, so each mean and the gain between two are
    over the same crops (the identity mean had been over fewer than the reconstruction's)."""
    keep = mask.clone()
    for v in rows.values():
        keep &= torch.isfinite(v)
    out = {"n": int(keep.sum())}
    if int(mask.sum()) > out["n"]:
        out["n_unchanged"] = int(mask.sum()) - out["n"]  # (left out: a degradation that changed nothing there)
    for k, v in rows.items():
        out[k] = _mean(v[keep])
    if "identity" in out:
        out["gain_db"] = round(out["recon"] - out["identity"], 3)
    out["ablation_gap_db"] = round(out["recon"] - out["shuffled"], 3)
    return out


@torch.no_grad()
def evaluate_stage1(s1: Stage1, cfg: EvalConfig = EvalConfig(), log=None, note=None, *,
                    channels_last: bool | None = None) -> dict:
    """Run the whole evaluation; returns the JSON-ready report. ``log`` gets the per-geometry summaries, ``note``
    (a line) the images left out for being smaller than the crop, and those with transparent pixels.

    ``channels_last`` (default: where the checkpoint is on the CPU) runs E and R in channels-last memory layout, their
    weights put back as they were after; the numbers agree with the default layout's to float rounding."""
    dev = next(s1.reconstructor.parameters()).device
    if not (dev.type == "cpu" if channels_last is None else channels_last):
        return _evaluate(s1, cfg, log, note, torch.contiguous_format)
    with _held_channels_last(s1.encoder, s1.reconstructor):
        return _evaluate(s1, cfg, log, note, torch.channels_last)


def _evaluate(s1: Stage1, cfg: EvalConfig, log, note, layout: torch.memory_format) -> dict:
    log = log or (lambda s: None)
    dev = next(s1.reconstructor.parameters()).device
    # held as uint8 where a photo is 8-bit (3 bytes a pixel, not 12): only the crops become float
    notes: list[str] = []
    images = load_folder(cfg.data, compact=True, notes=notes) if cfg.data is not None else \
        load_bundled(BUNDLED_HELDOUT, feature="the evaluation on the bundled held-out photos", compact=True)
    for line in notes if note is not None else ():  # (images with transparent pixels)
        note(line)
    clean, owner = _crops(images, cfg.crop, cfg.crops_per_image, math.lcm(*cfg.geometries))
    clean = clean.to(dev)
    skipped = _too_small(images, cfg.crop)
    if skipped and note is not None:
        named = listing((f"{n} ({s})" for n, s in skipped.items()), 10)
        note(f"note: {len(skipped)} image(s) smaller than the {cfg.crop}-px crop left out of the evaluation: {named}; "
             "use a smaller --crop to include them")
    n_img = clean.shape[0]
    enc = s1.encoder
    report: dict = {"settings": {**asdict(cfg), "images": [n for n in images if n not in skipped],
                                 "skipped_images": {n: f"{s}, smaller than the {cfg.crop}-px crop" for n, s in skipped.items()},
                                 "n_crops": n_img}, "geometries": {}, "presets": {}}
    for g in cfg.geometries:
        rng = np.random.default_rng(cfg.seed + g)
        draws = [sample_degradation(rng, SynthConfig()).with_roundtrip(g) for _ in range(cfg.draws)]
        # deg[j, i]: draw j on crop i, noise realisation per (j, i), the draw's parameters shared by its crops
        deg = torch.stack([_realisations(clean, d) for d in draws]).to(dev)
        nd = len(draws)
        emb = _batched(enc, deg.flatten(0, 1), batch=cfg.batch, layout=layout)
        _nonfinite("the embeddings", emb)
        emb = emb.view(nd, n_img, -1)
        shift_d = torch.roll(torch.arange(nd), 1)  # another draw, same crop
        partner = other_image(owner)  # same draw, a crop of another image (None: one image only)
        rows = _recon_block(s1, clean.repeat(nd, 1, 1, 1), deg.flatten(0, 1), emb.flatten(0, 1),
                            emb[shift_d].flatten(0, 1), None if partner is None else emb[:, partner].flatten(0, 1),
                            cfg.batch, layout)
        rows = {k: v.view(nd, n_img).cpu() for k, v in rows.items()}
        identity_draw = torch.tensor([d.is_identity for d in draws])[:, None].expand(nd, n_img)
        geo = {"draws": [d.describe() for d in draws]}
        geo.update(_summary(rows, ~identity_draw))
        geo.setdefault("cross_image", float("nan"))  # one image only: there is no other image to read the draw from
        geo["no_degradation_draws"] = _summary({k: v for k, v in rows.items() if k != "identity"}, identity_draw) \
            if identity_draw.any() else {"n": 0}
        per_kind = defaultdict(list)
        for j, d in enumerate(draws):
            per_kind[kinds_of(d)].append(j)
        geo["per_kind"] = {}
        for kind, js in sorted(per_kind.items()):
            m = torch.zeros(nd, n_img, dtype=torch.bool)
            m[js] = True
            # same-size clean draws: identity is exact (infinite PSNR), so it is left out
            sub = {k: v for k, v in rows.items() if not (k == "identity" and kind == "clean" and g == 1)}
            geo["per_kind"][kind] = _summary(sub, m)
        # separation over draws that actually degrade (distinct clean draws are one degradation)
        real = [j for j, d in enumerate(draws) if d.ops]
        e = emb[real].cpu()
        within = torch.cdist(e, e)  # (draws, crops, crops): one draw, pairs of crops
        w_mask = owner[:, None] != owner[None, :]  # crops of different images only
        within_mean = within[:, w_mask].mean() if w_mask.any() else torch.tensor(float("nan"))
        et = e.transpose(0, 1)  # (crops, draws, D)
        between = torch.cdist(et, et)
        b_mask = ~torch.eye(len(real), dtype=torch.bool)
        between_mean = between[:, b_mask].mean()
        geo["separation_ratio"] = round(float(within_mean / between_mean), 4)
        geo["embedding_within_draw"] = round(float(within_mean), 4)
        geo["embedding_between_draws"] = round(float(between_mean), 4)
        name = "same_size" if g == 1 else f"roundtrip_x{g}"
        report["geometries"][name] = geo
        log(f"{name}: recon {geo['recon']:.2f} dB vs identity {geo['identity']:.2f} dB (gain {geo['gain_db']:+.2f}); "
            f"shuffled {geo['shuffled']:.2f}, zero {geo['zero']:.2f}, cross-image {_shown(geo['cross_image'], '.2f')}; "
            f"separation {_shown(geo['separation_ratio'], '.3f')}")
        # presets the sampler never draws; their noise seeds follow cfg.seed (101 + crop at the default seed, as they
        # always were; another seed moves them by a whole multiple of the crop count: seeds less than 2**32 apart never
        # share a noise seed)
        preset_seed = 101 + n_img * ((cfg.seed - DEFAULT_SEED) % 2**32)
        names = list(EVAL_PRESETS)
        pdeg = torch.stack([torch.stack([apply_degradation(clean[i].cpu(), eval_preset(p, seed=preset_seed + i, roundtrip=g))
                                         for i in range(n_img)]) for p in names]).to(dev)
        pemb = _batched(enc, pdeg.flatten(0, 1), batch=cfg.batch, layout=layout)
        _nonfinite("the embeddings of the presets", pemb)
        pemb = pemb.view(len(names), n_img, -1)
        prow = _recon_block(s1, clean.repeat(len(names), 1, 1, 1), pdeg.flatten(0, 1), pemb.flatten(0, 1),
                            torch.roll(pemb, 1, 0).flatten(0, 1), None, cfg.batch, layout)
        prow = {k: v.view(len(names), n_img).cpu() for k, v in prow.items()}
        report["presets"][name] = {}
        for pi, p in enumerate(names):
            m = torch.zeros(len(names), n_img, dtype=torch.bool)
            m[pi] = True
            report["presets"][name][p] = _summary(prow, m)
    main = report["geometries"]["same_size" if 1 in cfg.geometries else next(iter(report["geometries"]))]
    report.update({
        "geometry": "same_size" if 1 in cfg.geometries else next(iter(report["geometries"])),
        "recon_psnr": main["recon"], "identity_psnr": main["identity"], "gain_db": main["gain_db"],
        "separation_ratio": main["separation_ratio"],
        "ablation": {k: main[k] for k in ("recon", "shuffled", "zero", "cross_image")} | {"gap_db": main["ablation_gap_db"]},
    })
    return report
