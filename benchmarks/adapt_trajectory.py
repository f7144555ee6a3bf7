"""Ground-truth Y-PSNR along one stage-2 run: how a folder's quality moves between the steps.

A diagnostic, not a recipe: the default recipe adapts one folder of ``quality.py`` (one preset, one
data seed, the six crops) with ground truth scored every ``--every`` steps but never used to stop or
choose (patience infinite; the scores come from the same ``--gt`` evaluation ``lwayrt adapt`` runs).
It records those scores, the loss's parts every 10 steps (total, anchor, supervised) and the
fixed-patch self-supervised loss the drift guard watches.

    .venv/bin/python benchmarks/adapt_trajectory.py --preset sharpen-jpeg420 --seed 3 --adapt-seed-offset 1 --force

Without ``--out`` it writes ``benchmarks/results/adapt_trajectory_PRESET_seedS_adaptA.json`` and refuses to replace
an existing one (the command above rewrites a committed file) unless given ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import quality as Q  # noqa: E402  the benchmark's crops, degradations and supervised photos
from _args import add_out, command_line, nonnegative_int, positive_int, resolve_out, write_json  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from lway_rt.degae.degrade import EVAL_PRESETS

    ap.add_argument("--preset", default="sharpen-jpeg420", choices=[*EVAL_PRESETS, *Q.ABLATION_PRESETS])
    ap.add_argument("--seed", type=int, default=3, help="data seed (3, 4: the development split)")
    ap.add_argument("--adapt-seed-offset", type=nonnegative_int, default=0, help="adaptation seed = data seed + 100 x this")
    ap.add_argument("--every", type=positive_int, default=20, help="steps between ground-truth scores")
    ap.add_argument("--iterations", type=positive_int, default=200)
    add_out(ap, None, "the trajectory [benchmarks/results/adapt_trajectory_PRESET_seedS_adaptA.json]")
    args = ap.parse_args(argv)
    aseed = args.seed + 100 * args.adapt_seed_offset
    out = resolve_out(ap, args, ROOT / "benchmarks" / "results" / f"adapt_trajectory_{args.preset}_seed{args.seed}_adapt{aseed}.json")
    torch.set_num_threads(1)

    from lway_rt.adapt._imageio import from_array
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.loop import adapt_images
    from lway_rt.degae import load_stage1
    from lway_rt.io.store import load_model

    desc = load_model("realesr-animevideov3")
    stage1 = load_stage1(None)
    photos = Q.PHOTOS[:6]
    pairs = Q.make_pairs(photos, args.preset, args.seed, 192, desc.scale)
    images = [from_array(name, lr) for name, _, lr in pairs]
    gt = {name: hr for name, hr, _ in pairs}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sup = str(Q.write_sup_photos(Q.SUP_PHOTOS, photos, Path(tmp) / "sup"))
        cfg = AdaptConfig(iterations=args.iterations, seed=aseed, sup_data=sup, checkpoint_every=10**9,
                          snapshot_every=10**9, eval_every=args.every, patience=10**9)
        rep = adapt_images(images, desc, cfg, Path(tmp) / "run", stage1=stage1, gt=gt, write_outputs=False).report
    write_json(out, {
        "benchmark": "lway_rt stage-2 trajectory with ground truth scored, never used (benchmarks/adapt_trajectory.py)",
        "command": command_line("adapt_trajectory.py", argv),
        "preset": args.preset, "data_seed": args.seed, "adapt_seed": aseed, "crops": [n for n, _, _ in pairs],
        "psnr_by_step": [{"it": e["it"], "psnr": round(e["psnr"], 4), "ssim": round(e["ssim"], 5)} for e in rep["evals"]],
        "loss_by_step": [{k: (round(h[k], 6) if k != "it" else h[k]) for k in ("it", "loss", "anchor", "sup") if k in h}
                         for h in rep["history"][::10]],
        "fixed_patch_loss": [{"it": v["it"], "loss": round(v["loss"], 6)} for v in rep["fixed_patch_loss"]],
        "trust": rep["images"][0].get("trust"), "rollbacks": rep["rollbacks"],
        "adapt_config": rep["config"] | {"sup_data": "temporary folder of quality.SUP_PHOTOS (PNG)"},
        "machine": rep["machine"], "total_seconds": round(time.perf_counter() - t0, 1)})
    print("Y-PSNR by step: " + ", ".join(f"{e['it']}: {e['psnr']:.2f}" for e in rep["evals"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
