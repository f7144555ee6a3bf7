"""Quality benchmark of stage 2: does LWay adaptation improve a real pretrained SR network?

Protocol (DESIGN §6), fixed before any number was seen:
- HR: random crops (``--crop`` px, positions drawn from the seed) of scikit-image's bundled photos.
- LR: x4 bicubic downscaling (Pillow, antialiased), then one of stage 1's *evaluation presets*
  (``lway_rt.degae.degrade.EVAL_PRESETS``: degradations its training sampler never draws) applied at
  LR size with the seed's noise.
- For every (preset, seed): one model adapted on the folder of that preset's LR crops, with a fixed
  number of iterations and NO ground-truth stopping, for each of the ``naive`` baseline
  (bicubic-downsampled SR vs LR), the ``identity`` control (R replaced by the identity) and ``lway``.
- ``--sup-weight W`` (default: the adapt default, 1): every method also keeps LWay's supervised
  term, an L1 on synthetic (LR, HR) pairs made each step from clean photos (``--sup-photos``,
  scikit-image photos outside the evaluation set, so no ground truth leaks into it); the
  ``supervised`` control runs that term alone, so LWay's self-supervised part is measured against it.
  ``--sup-weight 0`` is LWay's self-supervised loss alone.
- Y-PSNR / SSIM (BT.601 Y, border of 4 px cropped) of bicubic, the unadapted backbone, naive,
  identity and LWay, per image and on average; the JSON records machine, versions and command.

Done-when of the stage-2 issue: mean LWay gain over the unadapted backbone >= +0.3 dB, LWay beats
naive, and no image loses more than 0.1 dB. The script reports those checks; it does not tune
anything towards them.

    .venv/bin/python benchmarks/quality.py --out q.json         # defaults, ~20 min on 1 CPU thread
    .venv/bin/python benchmarks/quality.py --folder all --blend 0.5 --force   # rewrites benchmarks/results/quality.json
    .venv/bin/python benchmarks/quality.py --model realsr-df2k-x4 --photos 2 --iterations 100 --out df2k.json
    .venv/bin/python benchmarks/quality.py --sup-weight 0 --methods naive identity lway --out benchmarks/results/quality_nosup.json
    .venv/bin/python benchmarks/quality.py --folder image --seeds 1 --out a.json   # one model per crop
    .venv/bin/python benchmarks/quality.py --merge both.json a.json b.json          # runs split by seed (per folder: or preset)
    .venv/bin/python benchmarks/quality.py --presets sharpen-jpeg420 jpeg420-only sharpen-only --seeds 3 4 --out abl.json  # ablation
    python benchmarks/quality.py --model realesrgan-x4plus --device cuda --score-device cuda --out x4plus.json   # on a GPU (gpu_backbone.sh)
    .venv/bin/python benchmarks/quality.py --markdown benchmarks/results/quality.json   # README table

Without ``--out`` the results go to ``benchmarks/results/quality.json``, a committed file: the script refuses to
replace it unless given ``--force``. A file named with ``--out`` (or ``--merge OUT``) is written, replacing one there.
Every file is written atomically (a temporary file beside it, renamed over it) as strict JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, command_line, nonnegative_int, positive_int, resolve_out, write_json  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "immunohistochemistry", "grass", "brick")
METHODS = ("bicubic", "unadapted", "naive", "identity", "supervised", "lway")
# ablations of an evaluation preset (``--presets``; never part of the default set): the preset with one of its
# operations left out, same crops, same parameters, to tell which operation a result comes from
ABLATION_PRESETS = {"jpeg420-only": ("sharpen-jpeg420", "sharpen"), "sharpen-only": ("sharpen-jpeg420", "jpeg_subsampled")}
# clean photos for the optional supervised term: none of them is among PHOTOS[:6] (the default evaluation set)
SUP_PHOTOS = ("hubble_deep_field", "retina", "camera", "coins", "gravel", "grass", "brick")


def load_photo(name: str) -> np.ndarray:
    from lway_rt.io.images import bundled_photo

    return bundled_photo(name)


def make_pairs(photos, preset: str, seed: int, crop: int, scale: int):
    """(name, HR uint8, LR float32 HxWx3) for each photo: a seeded random crop, x4 down, preset."""
    from lway_rt.degae.degrade import Degradation, apply_degradation, eval_preset
    from lway_rt.io.images import resize_bicubic

    rng = np.random.default_rng(seed)
    out = []
    for k, name in enumerate(photos):
        img = load_photo(name)
        top = int(rng.integers(0, img.shape[0] - crop + 1))
        left = int(rng.integers(0, img.shape[1] - crop + 1))
        hr = np.ascontiguousarray(img[top:top + crop, left:left + crop])
        lr8 = resize_bicubic(hr, (crop // scale, crop // scale))
        x = torch.from_numpy(np.array(lr8)).permute(2, 0, 1).float() / 255.0
        if preset in ABLATION_PRESETS:
            base, left_out = ABLATION_PRESETS[preset]
            full = eval_preset(base, seed=1000 * seed + k)
            deg = Degradation(tuple(op for op in full.ops if op.name != left_out), full.seed, full.roundtrip)
        else:
            deg = eval_preset(preset, seed=1000 * seed + k)
        y = apply_degradation(x, deg)
        out.append((f"{name}@{top},{left}", hr, y.permute(1, 2, 0).numpy().astype(np.float32)))
    return out


def _same_photo(name: str) -> str:
    return "motorcycle" if name.startswith("motorcycle") else name  # motorcycle = motorcycle_left


def write_sup_photos(names, evaluated, folder: Path) -> Path:
    """The supervised term's clean photos as PNGs in ``folder``; refuses unknown or evaluated photos."""
    from PIL import Image

    from lway_rt.errors import LwayError

    leaks = sorted({_same_photo(n) for n in names} & {_same_photo(n) for n in evaluated})
    if leaks:
        raise SystemExit(f"--sup-photos: {', '.join(leaks)} {'is' if len(leaks) == 1 else 'are'} also evaluated "
                         "(--photos): the supervised term would see that ground truth; leave it out of --sup-photos")
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            img = load_photo(name)
        except LwayError as exc:
            raise SystemExit(f"--sup-photos: cannot load {name!r} ({exc}); name scikit-image bundled photos") from None
        Image.fromarray(img).save(folder / f"{name}.png")
    return folder


def upscale_crop(net: torch.nn.Module, lr: np.ndarray, desc, device: str = "cpu") -> np.ndarray:
    """``net``'s image of one LR crop (HxWx3 float) at ``desc.scale``, in one pass on ``device``, as HxWx3 float on
    the CPU (``adapt``'s ``super_resolve``)."""
    from lway_rt.adapt.loop import super_resolve

    x = torch.from_numpy(lr).permute(2, 0, 1).unsqueeze(0).to(device)
    with torch.no_grad():
        return super_resolve(net.to(device), x, desc.scale, desc.size_multiple, 0)[0].permute(1, 2, 0).cpu().numpy()


def blended(base: torch.nn.Module, adapted: torch.nn.Module, a: float) -> torch.nn.Module:
    """A copy of ``adapted`` at strength ``a``: what ``lwayrt adapt --strength a`` writes."""
    import copy

    from lway_rt.adapt.loop import interpolate_weights

    net = copy.deepcopy(adapted)
    interpolate_weights(net, base.state_dict(), a)
    return net.eval()


def summarize(rows: list[dict], methods: list[str], presets: list[str]) -> dict:
    """Means, per-preset means, gains over the unadapted backbone and the done-when checks of ``rows``."""
    mean = {m: {"psnr": round(float(np.mean([r[m]["psnr"] for r in rows])), 4),
                "ssim": round(float(np.mean([r[m]["ssim"] for r in rows])), 5)} for m in methods}
    by_preset = {}
    for preset in presets:
        sel = [r for r in rows if r["preset"] == preset]
        by_preset[preset] = {m: round(float(np.mean([r[m]["psnr"] for r in sel])), 4) for m in methods}

    def gain_stats(sel, m):
        d = np.array([r[m]["psnr"] - r["unadapted"]["psnr"] for r in sel])
        if not len(d):
            return None
        return {"mean_db": round(float(d.mean()), 4), "min_db": round(float(d.min()), 4),
                "max_db": round(float(d.max()), 4), "improved": int((d > 0).sum()), "of": len(d)}

    # DESIGN §2.5: a gain only where the backbone is worse than bicubic may be a pull towards
    # bicubic; the subset where the unadapted backbone already beats bicubic is reported apart.
    strong = [r for r in rows if r["unadapted"]["psnr"] > r["bicubic"]["psnr"]]
    gains = {m: gain_stats(rows, m) for m in methods[2:]}
    done = None
    if "lway" in methods:
        done = {
            "mean_gain_ge_0.3dB": gains["lway"]["mean_db"] >= 0.3,
            "beats_naive": ("naive" in methods and mean["lway"]["psnr"] > mean["naive"]["psnr"]),
            "no_image_loses_more_than_0.1dB": gains["lway"]["min_db"] >= -0.1,
        }
        if "supervised" in methods:
            done["beats_supervised_only_control"] = mean["lway"]["psnr"] > mean["supervised"]["psnr"]
        if "identity" in methods:
            done["beats_identity_control (not required, DESIGN §2.5)"] = mean["lway"]["psnr"] > mean["identity"]["psnr"]
    # the same checks for lway's images with --detail-cap or --self-check, against plain naive
    capped = {m: {"mean_gain_ge_0.3dB": gains[m]["mean_db"] >= 0.3,
                  "beats_naive": "naive" in methods and mean[m]["psnr"] > mean["naive"]["psnr"],
                  "no_image_loses_more_than_0.1dB": gains[m]["min_db"] >= -0.1}
              for m in methods if m.startswith(("lway+cap", "lway+self"))}
    hf = {}
    if all("hf_ratio" in r[m] for r in rows for m in methods):  # files written before the ratio have none
        hf = {p: {m: round(float(np.mean([r[m]["hf_ratio"] for r in rows if r["preset"] == p])), 4) for m in methods}
              for p in presets}
    return {"n_crops": len(rows), "unadapted_beats_bicubic_on": f"{len(strong)}/{len(rows)} crops",
            "mean": mean, "mean_psnr_by_preset": by_preset, **({"mean_hf_ratio_by_preset": hf} if hf else {}), "gain_over_unadapted": gains,
            "gain_over_unadapted_where_it_beats_bicubic": {m: gain_stats(strong, m) for m in methods[2:]},
            "done_when": done, **({"done_when_detail_cap": capped} if capped else {})}


def hf_ratio(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """Fine detail of ``sr`` relative to the truth: the energy of the one-level Haar detail bands (LH, HL, HH)
    of its Y channel over the same of ``hr`` (``border`` px cropped). Above 1: more fine detail, halo or
    ringing than the HR has; below 1: softer."""
    from lway_rt.adapt.wavelet import detail_energy  # what adapt's report.json detail_change compares

    def energy(img):
        x = np.asarray(img, dtype=np.float64) / (255.0 if np.asarray(img).dtype == np.uint8 else 1.0)
        return float(detail_energy(torch.from_numpy(x).permute(2, 0, 1)[None], border)[0])

    return energy(sr) / max(energy(hr), 1e-12)


def score(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float]:
    from lway_rt.metrics import psnr_y, ssim_y

    return {"psnr": round(psnr_y(sr, hr, scale), 4), "ssim": round(ssim_y(sr, hr, scale), 5),
            "hf_ratio": round(hf_ratio(sr, hr, scale), 4)}


SELF_CHECK_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def self_check(base: np.ndarray, sr: np.ndarray, lway_term) -> tuple[np.ndarray, float, list[float]]:
    """The point of the straight way from the unadapted image ``base`` to the adapted one ``sr`` (HxWx3 in [0, 1])
    that LWay's own term rates best: ``lway_term(x)`` (x: (1, 3, H, W)) at base + s (sr - base) for s on
    ``SELF_CHECK_GRID``; returns (that image, its s, the term at every s). No ground truth: the question is whether
    the adapted image explains the input at least as well as the unadapted one under the objective it was trained on
    (whole image, no anchor, supervised or perceptual term), and if not, how far back towards it the term wants."""
    u, a = (torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1)[None].float() for v in (base, sr))
    with torch.no_grad():
        losses = [float(lway_term(u + s * (a - u))) for s in SELF_CHECK_GRID]
    s = SELF_CHECK_GRID[int(np.argmin(losses))]
    out = sr if s == 1.0 else (u + s * (a - u))[0].permute(1, 2, 0).numpy()
    return out, s, [round(v, 6) for v in losses]


def mean_weights(states: list[dict]) -> dict:
    """The element-wise mean of state dicts of one architecture (a "model soup" of fine-tunes from one base);
    non-floating-point entries are taken from the first."""
    return {n: torch.stack([m[n].float() for m in states]).mean(0).to(t.dtype) if t.is_floating_point() else t
            for n, t in states[0].items()}


def machine() -> dict:
    from lway_rt.bench.machine import machine_info, package_versions

    info = machine_info()
    return {"cpu": info["cpu_model"], "cores": info["logical_cores"], "torch_threads": torch.get_num_threads(),
            "python": info["python"], "platform": platform.platform(), "details": info,
            "versions": package_versions(("torch", "numpy", "PyWavelets", "scikit-image", "lway_rt"))}


def markdown(result: dict) -> str:
    """The README table of a results file: mean Y-PSNR per preset and overall, SSIM, gains."""
    methods = list(result["mean"])
    lines = ["| preset | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for preset, row in result["mean_psnr_by_preset"].items():
        lines.append(f"| {preset} | " + " | ".join(f"{row[m]:.2f}" for m in methods) + " |")
    lines.append("| **mean Y-PSNR (dB)** | " + " | ".join(f"**{result['mean'][m]['psnr']:.2f}**" for m in methods) + " |")
    lines.append("| mean SSIM | " + " | ".join(f"{result['mean'][m]['ssim']:.4f}" for m in methods) + " |")
    gains = result["gain_over_unadapted"]
    lines.append("| gain vs unadapted: mean / worst (dB), improved | | | " + " | ".join(
        f"{gains[m]['mean_db']:+.2f} / {gains[m]['min_db']:+.2f}, {gains[m]['improved']}/{gains[m]['of']}"
        for m in methods[2:]) + " |")
    strong = result.get("gain_over_unadapted_where_it_beats_bicubic") or {}
    if strong and all(strong.get(m) for m in methods[2:]):
        lines.append(f"| same, on the {strong[methods[2]]['of']} crops where unadapted beats bicubic | | | " + " | ".join(
            f"{strong[m]['mean_db']:+.2f} / {strong[m]['min_db']:+.2f}, {strong[m]['improved']}/{strong[m]['of']}"
            for m in methods[2:]) + " |")
    mach = result["machine"]
    sup = result["adapt_config"].get("sup_weight", 0.0)
    sup_note = (f", supervised term x{sup:g} on {', '.join(result['protocol']['sup_photos'])}" if sup else "")
    lines.append("")
    lines.append(f"{result['n_crops']} crops, {result['model']['name']}, {result['protocol']['mode']}{sup_note}; "
                 f"{mach['cpu']}, {mach['cores']} cores, torch {mach['versions']['torch']} ({mach['torch_threads']} thread); "
                 f"`{result['command']}`, {result['total_seconds'] / 60:.0f} min.")
    return "\n".join(lines)



def groups_arg(value: str):
    """``--groups``: auto or a positive count (argparse then stops with a one-line usage error)."""
    if value == "auto":
        return value
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise argparse.ArgumentTypeError(f"{value!r} is neither a positive number of groups nor auto")

def main(argv=None) -> int:
    from lway_rt.degae.degrade import EVAL_PRESETS

    if argv is None and len(sys.argv) >= 2 and sys.argv[1] == "--markdown":
        if len(sys.argv) != 3:
            raise SystemExit("usage: quality.py --markdown RESULT.json")
        print(markdown(json.loads(Path(sys.argv[2]).read_text())))
        return 0
    if argv is None and len(sys.argv) >= 2 and sys.argv[1] == "--merge":
        if len(sys.argv) < 4:
            raise SystemExit("usage: quality.py --merge OUT PART [PART ...]")
        return merge(sys.argv[2], sys.argv[3:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=(
        "Two other forms, each alone and first on the line: quality.py --merge OUT PART "
        "[PART ...] merges runs split by seed or preset into OUT; quality.py --markdown RESULT.json prints a result's "
        "table."))
    ap.add_argument("--model", default="realesr-animevideov3")
    ap.add_argument("--stage1", default=None, help="stage-1 checkpoint (default: the shipped one)")
    ap.add_argument("--presets", nargs="+", default=list(EVAL_PRESETS), choices=[*EVAL_PRESETS, *ABLATION_PRESETS],
                    metavar="PRESET", help=f"from {', '.join([*EVAL_PRESETS, *ABLATION_PRESETS])} [the first {len(EVAL_PRESETS)}]")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--photos", type=int, default=6, choices=range(1, len(PHOTOS) + 1), metavar="N",
                    help=f"how many of {', '.join(PHOTOS)} (1-{len(PHOTOS)})")
    ap.add_argument("--crop", type=positive_int, default=192, help="HR crop side (LR = crop / 4)")
    ap.add_argument("--iterations", type=positive_int, default=200)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--patch-size", type=positive_int, default=None, help="adapt --patch-size [the adapt default, 48]")
    ap.add_argument("--batch-size", type=positive_int, default=4)
    ap.add_argument("--augment", default="none", choices=["none", "dihedral"], help="adapt --augment")
    ap.add_argument("--target", default="sr", choices=["sr", "lr", "lr-recon"])
    ap.add_argument("--trainable", default="all")
    ap.add_argument("--hf-source", default="pred", choices=["pred", "target"])
    ap.add_argument("--hf-norm", default="patch", choices=["patch", "batch"],
                    help="adapt --hf-norm: the wavelet map normalised per patch (LWay) or over a step's batch")
    ap.add_argument("--no-hf-weight", action="store_true", help="adapt --no-hf-weight: plain L1 instead of the wavelet-weighted one")
    ap.add_argument("--anchor-weight", type=float, default=None,
                    help="L1 tying S's output to the unadapted model's on the same patch [the adapt default]")
    ap.add_argument("--anchor-pool", type=int, default=None,
                    help="compare S's output with the unadapted one after a KxK average pool [the adapt default]")
    ap.add_argument("--anchor-trust", type=float, default=None,
                    help="scale each image's anchor by min(1, L_bicubic/L_unadapted)^T (lway only) [the adapt default]")
    ap.add_argument("--anchor-trust-scope", default=None, choices=["image", "run"],
                    help="one trust factor per image, or pooled over the adapted folder [the adapt default]")
    ap.add_argument("--sup-weight", type=float, default=None,
                    help="weight of a supervised L1 on synthetic LR/HR pairs made from clean photos (keeps S a restorer) "
                         "[the adapt default; 0: off]")
    ap.add_argument("--sup-degradation", default=None, choices=["lr", "classic", "stage1"],
                    help="how the supervised pairs' LR is made [the adapt default]")
    ap.add_argument("--sup-photos", default=",".join(SUP_PHOTOS),
                    help="comma list of scikit-image photos for those pairs; none may be an evaluated photo (with --photos 7 "
                         "or 8, leave grass/brick out)")
    ap.add_argument("--methods", nargs="+", default=["naive", "identity", "supervised", "lway"], choices=["naive", "identity", "supervised", "lway"])
    ap.add_argument("--folder", default="preset", choices=["preset", "all", "image"],
                    help="one adapted model per (preset, seed) folder, per seed over all presets' crops, or per crop")
    ap.add_argument("--groups", default=None, type=groups_arg,
                    help="group each folder's crops by stage 1's embedding and adapt one model per group, as adapt "
                         "--mode per-group --groups GROUPS (a count or auto) [off]")
    ap.add_argument("--adapt-seed-offset", type=nonnegative_int, default=0,
                    help="adapt with seed (data seed + 100 x this): same crops and degradations, other patch and pair "
                         "draws (how much of a result is the adaptation's own randomness)")
    ap.add_argument("--sup-batch", type=positive_int, default=None, help="synthetic pairs a step (default: --batch-size)")
    ap.add_argument("--soup", type=positive_int, default=1,
                    help="experiment: score the mean weights of K adaptations with other seeds (K x the time)")
    ap.add_argument("--ema", type=float, default=0.0, help="adapt --ema: write the weights' moving average (0: off)")
    ap.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine"], help="adapt --lr-schedule")
    ap.add_argument("--perceptual", default="none", choices=["none", "trunk-l1"],
                    help="adapt --perceptual, for the lway method (the baselines keep none)")
    ap.add_argument("--perceptual-weight", type=float, default=None, help="adapt --perceptual-weight [the adapt default]")
    ap.add_argument("--detail-guard", type=float, default=0.0,
                    help="adapt --detail-guard, for the lway method (the baselines keep 0) [0: off]")
    ap.add_argument("--detail-guard-ratio", type=float, default=None, help="adapt --detail-guard-ratio [the adapt default]")
    ap.add_argument("--detail-guard-gate", default="none", choices=["none", "trust"], help="adapt --detail-guard-gate")
    ap.add_argument("--blend", nargs="+", type=float, default=[],
                    help="also score each adapted model with its weights interpolated towards the unadapted ones: "
                         "theta0 + a (theta - theta0), reported as METHOD@a (adapt --strength a)")
    ap.add_argument("--detail-cap", nargs="+", type=float, default=[],
                    help="also score each adapted model's images with their added fine detail held at C x the "
                         "unadapted image's (wavelet.detail_cap: a per-image blend, no ground truth), as METHOD+capC")
    ap.add_argument("--self-check", action="store_true",
                    help="also score each LWay image moved back towards the unadapted one as far as LWay's own term "
                         "(whole image, other terms off) prefers, on a grid of blends (no ground truth), as lway+self")
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--device", default="cpu",
                    help="where the adaptation runs (cpu, cuda); every score is computed on --score-device")
    ap.add_argument("--score-device", default="cpu",
                    help="where every model (unadapted too) makes the images that are scored; on cuda, in full fp32 "
                         "(TF32 off, adaptation included), for large backbones a CPU core scores slowly")
    add_out(ap, ROOT / "benchmarks" / "results" / "quality.json")
    args = ap.parse_args(argv)
    resolve_out(ap, args)
    torch.set_num_threads(args.threads)
    groups = args.groups
    if args.self_check and (args.device != "cpu" or args.score_device != "cpu"):
        ap.error("--self-check evaluates stage 1 on the CPU: leave --device and --score-device at cpu")
    if args.score_device != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    from lway_rt.adapt.config import AdaptConfig

    if args.sup_weight is None:
        args.sup_weight = AdaptConfig.sup_weight
    if args.anchor_weight is None:
        args.anchor_weight = AdaptConfig.anchor_weight
    if args.sup_weight == 0 and "supervised" in args.methods:
        args.methods = [m for m in args.methods if m != "supervised"]  # its term is off: nothing to control
    sup_photos = [n.strip() for n in args.sup_photos.split(",") if n.strip()]
    if args.sup_weight > 0 and not sup_photos:
        ap.error("--sup-photos names no photo")

    from lway_rt.adapt._imageio import from_array
    from lway_rt.adapt.loop import adapt_images, group_inputs
    from lway_rt.adapt.patches import bicubic_up
    from lway_rt.adapt.wavelet import detail_cap
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import state_dict_sha256

    desc = load_model(args.model)
    scale = desc.scale
    stage1, stage1_info = None, None
    if "lway" in args.methods or groups is not None:  # grouping reads stage 1's embeddings
        from lway_rt.degae import default_checkpoint_path, load_stage1

        stage1 = load_stage1(args.stage1)
        path = Path(args.stage1) if args.stage1 else default_checkpoint_path()
        stage1_info = {"path": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
                       "sha256": state_dict_sha256(stage1.state_dict()),
                       "meta": {k: v for k, v in stage1.meta.items() if isinstance(v, (str, int, float, list))}}
    trainable = args.trainable if args.trainable in ("all", "body") else tuple(args.trainable.split(","))
    base_cfg = AdaptConfig(iterations=args.iterations, lr=args.lr, batch_size=args.batch_size,
                           target=args.target, trainable=trainable, hf_source=args.hf_source, hf_norm=args.hf_norm,
                           hf_weight=not args.no_hf_weight,
                           anchor_weight=args.anchor_weight, sup_weight=args.sup_weight, checkpoint_every=10**9,
                           **({"sup_degradation": args.sup_degradation} if args.sup_degradation else {}),
                           **({"anchor_pool": args.anchor_pool} if args.anchor_pool else {}),
                           **({"patch_size": args.patch_size} if args.patch_size else {}),
                           **({"anchor_trust": args.anchor_trust} if args.anchor_trust is not None else {}),
                           **({"anchor_trust_scope": args.anchor_trust_scope} if args.anchor_trust_scope else {}),
                           snapshot_every=10**9, eval_every=10**9, device=args.device, ema=args.ema,
                           sup_batch=args.sup_batch, lr_schedule=args.lr_schedule,
                           augment=args.augment, perceptual=args.perceptual, perceptual_weight=args.perceptual_weight,
                           detail_guard=args.detail_guard, detail_guard_gate=args.detail_guard_gate,
                           **({"detail_guard_ratio": args.detail_guard_ratio} if args.detail_guard_ratio else {}))
    def upscaled(net: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
        return upscale_crop(net, lr, desc, args.score_device)

    self_term = None
    if args.self_check and "lway" in args.methods:
        from objective_check import term  # the LWay term of one whole crop, as adapt computes it

        from lway_rt.adapt.embed import prepare_stage1
        from lway_rt.adapt.patches import AdaptImage

        term_cfg = base_cfg.without_perceptual().replace(anchor_weight=0.0, sup_weight=0.0, detail_guard=0.0)

        def self_term(lrs: list[np.ndarray]):
            """One LWay term per crop of a folder: stage 1 embeds each crop's upsampled LR (the LR itself for the
            lr-recon target), as adapt does."""
            data = [AdaptImage.from_lr(str(i), torch.from_numpy(lr).permute(2, 0, 1)[None], scale)
                    for i, lr in enumerate(lrs)]
            recon = prepare_stage1(stage1, [d.lr if term_cfg.target == "lr-recon" else d.up for d in data])[0]
            return [term(d.lr, d.up, lambda x, ix=torch.full((1,), i, dtype=torch.long): recon(x, ix), term_cfg)
                    for i, d in enumerate(data)]

    photos = PHOTOS[: args.photos]
    rows, runs, base_sr = [], [], {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sup_data = None
        if args.sup_weight > 0:
            sup_data = str(write_sup_photos(sup_photos, photos, Path(tmp) / "sup_photos"))
        # a "folder" is what one adapted model serves: one preset's crops (default), or every
        # preset's crops of a seed (a mixed folder, as footage from several sources would be)
        # ``image``: one model per crop (adapt --mode per-image). With --groups, each folder's crops are grouped
        # (adapt --mode per-group), once, the same groups for every method, and each group gets its own model
        folders = ([(seed, [p], None) for p in args.presets for seed in args.seeds] if args.folder == "preset"
                   else [(seed, [p], k) for p in args.presets for seed in args.seeds for k in range(len(photos))]
                   if args.folder == "image" else [(seed, list(args.presets), None) for seed in args.seeds])
        for seed, presets, only in folders:
            pairs = [(preset, *pair) for preset in presets for pair in make_pairs(photos, preset, seed, args.crop, scale)]
            if only is not None:
                pairs = pairs[only:only + 1]
            keys = [f"{preset}/{name}" for preset, name, _, _ in pairs]
            images = [from_array(key.replace("/", "_"), lr) for key, (_, _, _, lr) in zip(keys, pairs)]
            per = {key: {"preset": preset, "seed": seed, "image": name} for key, (preset, name, _, _) in zip(keys, pairs)}
            for key, (_, _, hr, lr) in zip(keys, pairs):
                x = torch.from_numpy(lr).permute(2, 0, 1).unsqueeze(0)
                per[key]["bicubic"] = score(bicubic_up(x, scale)[0].permute(1, 2, 0).numpy(), hr, scale)
                base_sr[key] = upscaled(desc.model, lr)
                per[key]["unadapted"] = score(base_sr[key], hr, scale)
            label = (f"{presets[0]}:{pairs[0][1]}" if only is not None else presets[0]) if len(presets) == 1 \
                else "all-presets"
            subsets = [list(range(len(keys)))]
            if groups is not None:
                grouping = group_inputs(images, desc, base_cfg.replace(mode="per-group", groups=groups), stage1)
                subsets = grouping.members()
                for k, members in enumerate(subsets):
                    for i in members:
                        per[keys[i]]["group"] = k + 1
                print(f"seed {seed}: {len(subsets)} group(s) of {', '.join(str(len(m)) for m in subsets)} crops "
                      f"(silhouettes {grouping.silhouettes})", flush=True)
            if self_term is not None:
                terms = dict(zip(keys, self_term([lr for _, _, _, lr in pairs])))
            for method in args.methods:
                for gi, members in enumerate(subsets):
                    sub_keys, sub_pairs = [keys[i] for i in members], [pairs[i] for i in members]
                    sub_label = label if len(subsets) == 1 else f"{label}-g{gi + 1}"
                    # the baselines have no R to make stage-1 pairs with: they keep the usual pairs
                    no_r = {"sup_degradation": "classic"} if method != "lway" and base_cfg.sup_degradation == "stage1" else {}
                    cfg = base_cfg if method == "lway" else base_cfg.without_perceptual().replace(detail_guard=0.0, detail_guard_gate="none")  # the lway run's terms only
                    cfg = cfg.replace(loss=method, seed=seed + 100 * args.adapt_seed_offset, sup_data=sup_data, **no_r)
                    t0 = time.perf_counter()
                    # --soup K (experiment): K adaptations of the same inputs, seeds + 0, 1000, ...; their mean weights
                    # per group, the grouping's embeddings (E has read these crops already), as adapt does
                    emb = grouping.embeddings[members] if groups is not None and method == "lway" else None
                    soup = [adapt_images([images[i] for i in members], desc, cfg.replace(seed=cfg.seed + 1000 * k),
                                         Path(tmp) / f"{sub_label}-{seed}-{method}-{k}",
                                         stage1=stage1 if method == "lway" else None, write_outputs=False,
                                         embeddings=emb)
                            for k in range(args.soup)]
                    res = soup[0]
                    for m in soup:
                        m.model.to(args.score_device)  # scored where the unadapted backbone is
                    if len(soup) > 1:
                        res.model.load_state_dict(mean_weights([m.model.state_dict() for m in soup]))
                    dt = time.perf_counter() - t0
                    for name, net in [(method, res.model), *((f"{method}@{a:g}", blended(desc.model, res.model, a))
                                                             for a in args.blend)]:
                        for key, (_, _, hr, lr) in zip(sub_keys, sub_pairs):
                            sr = upscaled(net, lr)
                            per[key][name] = score(sr, hr, scale)
                            for c in args.detail_cap if name == method else ():
                                u, a = (torch.from_numpy(v).permute(2, 0, 1)[None] for v in (base_sr[key], sr))
                                capped, s = detail_cap(u, a, c, scale)
                                per[key][f"{name}+cap{c:g}"] = {**score(capped[0].permute(1, 2, 0).numpy(), hr, scale),
                                                                "cap_s": round(float(s[0]), 4)}
                            if name == "lway" and self_term is not None:
                                fn = terms[key]
                                held, s, losses = self_check(base_sr[key], sr, fn)
                                per[key]["lway+self"] = {**score(held, hr, scale), "self_s": s, "self_losses": losses}
                    runs.append({"folder": label, "seed": seed, "method": method, "images": len(members),
                                 **({"group": gi + 1, "crops": sub_keys} if groups is not None else {}),
                                 "seconds": round(dt, 2), "ms_per_iteration": res.report["timings"]["ms_per_iteration"],
                                 "stopped": res.report["stopped"], "rollbacks": res.report["rollbacks"],
                                 "iterations_run": res.report["iterations_run"],
                                 **({"detail_guard": cfg.detail_guard, "detail_guard_gate": cfg.detail_guard_gate}
                                    if base_cfg.detail_guard > 0 else {})})
                    mean_gain = np.mean([per[k][method]["psnr"] - per[k]["unadapted"]["psnr"] for k in sub_keys])
                    print(f"{sub_label:20s} seed {seed} {method:8s} {dt:7.1f}s  mean gain over unadapted {mean_gain:+.3f} dB",
                          flush=True)
            rows.extend(per.values())

    methods = [m for m in METHODS if m in ("bicubic", "unadapted") or m in args.methods]
    methods += [f"{m}{v}" for m in methods[2:] for v in [*(f"@{a:g}" for a in args.blend),
                                                        *(f"+cap{c:g}" for c in args.detail_cap)]]
    if self_term is not None:
        methods.append("lway+self")
    summary = summarize(rows, methods, args.presets)
    result = {
        "benchmark": "lway_rt stage-2 quality (benchmarks/quality.py)",
        "command": shlex.join([sys.executable.split("/")[-1], "benchmarks/quality.py",
                               *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "model": {"name": args.model, "arch": desc.arch, "scale": scale,
                  "sha256": state_dict_sha256(desc.model.state_dict())},
        "stage1": stage1_info,
        "protocol": {"photos": list(photos), "crop": args.crop, "presets": args.presets, "seeds": args.seeds,
                     "lr_generation": "Pillow bicubic x1/4 (uint8), then the preset at LR size",
                     "metric": "Y (BT.601) PSNR/SSIM, 4-px border cropped", "stopping": "fixed iterations, no ground truth",
                     "adapt_device": args.device,
                     **({"score_device": f"{args.score_device} (fp32, TF32 off)"} if args.score_device != "cpu" else {}),
                     "adapt_seed": f"data seed + {100 * args.adapt_seed_offset}",
                     **({"soup": f"mean weights of {args.soup} adaptations, seeds + 0, 1000, ..."} if args.soup > 1 else {}),
                     "mode": ("one model per (preset, seed) folder" if args.folder == "preset"
                              else "one model per crop" if args.folder == "image"
                              else "one model per seed over all presets' crops")
                             + (f", its crops grouped by stage 1's embedding, one model per group (groups {groups})"
                                if groups is not None else ""),
                     "folder": args.folder,
                     **({"groups": groups} if groups is not None else {}),
                     "sup_weight": args.sup_weight,
                     "sup_photos": sup_photos if args.sup_weight > 0 else []},
        "adapt_config": {**base_cfg.to_dict(),
                         **({"sup_data": "temporary folder of protocol.sup_photos (PNG)"} if args.sup_weight > 0 else {})},
        **summary,
        "runs": runs,
        "per_image": rows,
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    out = write_json(args.out, result)
    print(f"\n{len(rows)} crops, {result['total_seconds']} s; mean Y-PSNR / SSIM:")
    print_summary(result)
    print(f"wrote {out}")
    return 0


def print_summary(result: dict) -> None:
    mean, gains = result["mean"], result["gain_over_unadapted"]
    methods, done = list(mean), result["done_when"]
    gains_where_backbone_beats_bicubic = result["gain_over_unadapted_where_it_beats_bicubic"]
    for m in methods:
        g = f"  ({gains[m]['mean_db']:+.3f} dB vs unadapted, worst {gains[m]['min_db']:+.3f}, " \
            f"{gains[m]['improved']}/{gains[m]['of']} improved)" if m in gains else ""
        print(f"  {m:10s} {mean[m]['psnr']:.3f} dB  {mean[m]['ssim']:.4f}{g}")
    for m, g in gains_where_backbone_beats_bicubic.items():
        if g:
            print(f"  {m:10s} on the {g['of']} crops where unadapted beats bicubic: {g['mean_db']:+.3f} dB, "
                  f"worst {g['min_db']:+.3f}, {g['improved']}/{g['of']} improved")
    if done:
        print("done-when:", ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in done.items()))
    for m, checks in result.get("done_when_detail_cap", {}).items():
        print(f"done-when, {m}:", ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items()))


def merge(out: str, parts: list[str]) -> int:
    """One results file from runs split by seed (same protocol and recipe): rows joined, summary recomputed.

    Runs with one model per (preset, seed) folder or per crop may also be split by preset, since their
    folders never mix presets; a (preset, seed) present in two files is refused."""
    results = [json.loads(Path(p).read_text()) for p in parts]
    first = results[0]
    folder = first["protocol"].get("folder")  # files before it was recorded: read it from the mode's wording
    by_preset = folder != "all" if folder else not first["protocol"]["mode"].startswith("one model per seed")
    free = ("seeds", "presets") if by_preset else ("seeds",)
    for r in results[1:]:
        for key in ("model", "stage1", "adapt_config"):
            if {k: v for k, v in (r[key] or {}).items() if k != "seed"} != \
                    {k: v for k, v in (first[key] or {}).items() if k != "seed"}:
                raise SystemExit(f"--merge: {key} differs between {parts[0]} and the other files")
        if {k: v for k, v in r["protocol"].items() if k not in free} != \
                {k: v for k, v in first["protocol"].items() if k not in free}:
            raise SystemExit(f"--merge: the protocols differ (other than the {' and '.join(free)})")
        if list(r["mean"]) != list(first["mean"]):
            raise SystemExit(f"--merge: the methods differ between {parts[0]} and the other files")
    seen = set()
    for p, r in zip(parts, results):
        for pair in {(row["preset"], row["seed"]) for row in r["per_image"]}:
            if pair in seen:
                raise SystemExit(f"--merge: preset {pair[0]}, seed {pair[1]} is in {p} and an earlier file")
            seen.add(pair)
    rows = [row for r in results for row in r["per_image"]]
    presets = list(dict.fromkeys(pr for r in results for pr in r["protocol"]["presets"]))
    seeds = list(dict.fromkeys(s for r in results for s in r["protocol"]["seeds"]))
    merged = {**first, "command": command_line("quality.py", ["--merge", str(out), *map(str, parts)]),
              "merged_from": [{"file": p, "command": r["command"]} for p, r in zip(parts, results)],
              "protocol": {**first["protocol"], "seeds": seeds, "presets": presets},
              **summarize(rows, list(first["mean"]), presets),
              "runs": [run for r in results for run in r["runs"]], "per_image": rows,
              "total_seconds": round(sum(r["total_seconds"] for r in results), 1)}
    write_json(out, merged)
    print(f"{len(rows)} crops from {len(parts)} files; mean Y-PSNR / SSIM:")
    print_summary(merged)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
