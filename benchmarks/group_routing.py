"""New images from known sources: one model per group with routing, against one model over the whole folder.

``lwayrt adapt --mode per-group`` adapts one model per group of a folder's inputs and ``lwayrt upscale -m OUT/``
sends each new image to the model of the group whose stage-1 centre is nearest. ``quality.py`` measures the adapted
images themselves; this script measures what the feature is for: footage that arrives after the adaptation, from the
same sources.

Protocol (``quality.py``'s, CPU-sized): the user's footage is the mixed folder of one seed (every evaluation preset's
crops of the bundled photos, ``--adapt-seed``); new footage is the same presets' crops of other seeds
(``--new-seeds``: other crops of the photos and other degradation draws, never seen by either adaptation). Two
adaptations of the footage with adapt's default recipe and seed, the shipped stage 1 and the bundled clean photos not
evaluated for the supervised pairs: ``folder`` (one model) and ``per-group`` (``--groups auto``), both through
``lway_rt.adapt.loop.adapt`` as the CLI runs them. Every crop, adapted or new, is upscaled by the unadapted model, the
folder model and the model its group's router picks (``lway_rt.upscale.prepare_router``, as ``lwayrt upscale`` does:
for the adapted crops that is their own group's model) and scored against its ground truth (Y-PSNR, SSIM). Recorded
per crop: the scores, the group and the cosine to its centre; per set (adapted, new): mean gain over the unadapted
model and worst crop of each method, per preset, and how many new crops of each preset went to each group.

    .venv/bin/python benchmarks/group_routing.py --adapt-seed 3 --new-seeds 4 5 6 --force   # rewrites group_routing.json

Without ``--out`` the script refuses to replace an existing ``benchmarks/results/group_routing.json`` unless given
``--force``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, command_line, positive_int, resolve_out, write_json  # noqa: E402

METHODS = ("unadapted", "folder", "per-group")


def _stats(rows: list[dict]) -> dict:
    out = {"crops": len(rows)}
    for m in METHODS[1:]:
        d = np.array([r[m]["psnr"] - r["unadapted"]["psnr"] for r in rows])
        out[m] = {"mean_gain_db": round(float(d.mean()), 4), "worst_db": round(float(d.min()), 4),
                  "improved": int((d > 0).sum()), "below_-0.1": int((d < -0.1).sum())}
    return out


def summarize(rows: list[dict], presets: list[str]) -> dict:
    """Per set (adapted, new): each method's gain over the unadapted model, overall and per preset; routing counts."""
    out = {}
    for kind in ("adapted", "new"):
        sel = [r for r in rows if r["set"] == kind]
        if not sel:
            continue
        out[kind] = {"all": _stats(sel),
                     "by_preset": {p: _stats([r for r in sel if r["preset"] == p]) for p in presets}}
    new = [r for r in rows if r["set"] == "new"]
    out["new_routes"] = {p: {g: sum(r["group"] == g for r in new if r["preset"] == p)
                             for g in sorted({r["group"] for r in new})} for p in presets}
    return out


def main(argv=None) -> int:
    from quality import ABLATION_PRESETS, PHOTOS, groups_arg

    from lway_rt.degae.degrade import EVAL_PRESETS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="realesr-animevideov3")
    ap.add_argument("--adapt-seed", type=int, default=3, help="the seed of the footage both adaptations see")
    ap.add_argument("--new-seeds", nargs="+", type=int, default=[4, 5, 6], help="seeds of the new footage")
    ap.add_argument("--presets", nargs="+", default=list(EVAL_PRESETS), choices=[*EVAL_PRESETS, *ABLATION_PRESETS],
                    metavar="PRESET", help=f"from {', '.join([*EVAL_PRESETS, *ABLATION_PRESETS])} [the first {len(EVAL_PRESETS)}]")
    ap.add_argument("--photos", type=int, default=6, choices=range(1, len(PHOTOS) + 1), metavar="N",
                    help=f"how many of quality.py's photos (1-{len(PHOTOS)})")
    ap.add_argument("--crop", type=positive_int, default=192)
    ap.add_argument("--iterations", type=positive_int, default=None, help="[adapt's default]")
    ap.add_argument("--patch-size", type=positive_int, default=None, help="[adapt's default]")
    ap.add_argument("--groups", default="auto", type=groups_arg, help="adapt --groups: a count or auto [auto]")
    ap.add_argument("--threads", type=positive_int, default=1)
    add_out(ap, ROOT / "benchmarks" / "results" / "group_routing.json")
    args = ap.parse_args(argv)
    resolve_out(ap, args)
    torch.set_num_threads(args.threads)
    groups = args.groups

    from quality import PHOTOS, SUP_PHOTOS, machine, make_pairs, score, upscale_crop, write_sup_photos

    from lway_rt.adapt._imageio import from_array
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.loop import WEIGHTS, adapt
    from lway_rt.degae import load_stage1
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import state_dict_sha256
    from lway_rt.upscale import UpscaleConfig, prepare_router

    t0 = time.perf_counter()
    desc = load_model(args.model)
    stage1 = load_stage1(None)
    photos = PHOTOS[: args.photos]
    scale = desc.scale

    def crops(seed):
        return [(preset, name, hr, lr) for preset in args.presets
                for name, hr, lr in make_pairs(photos, preset, seed, args.crop, scale)]

    footage = crops(args.adapt_seed)
    images = [from_array(f"{preset}_{name}", lr) for preset, name, _, lr in footage]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        sup = write_sup_photos(SUP_PHOTOS, photos, Path(tmp) / "sup_photos")
        extra = {k: v for k, v in (("iterations", args.iterations), ("patch_size", args.patch_size)) if v}
        base = AdaptConfig(seed=args.adapt_seed, sup_data=str(sup), snapshot_every=10**9, eval_every=10**9,
                           checkpoint_every=10**9, **extra)
        for mode in ("folder", "per-group"):
            cfg = base.replace(mode=mode, **({"groups": groups} if mode == "per-group" else {}))
            t = time.perf_counter()
            print(f"adapting ({mode}) {len(images)} crops of seed {args.adapt_seed}", flush=True)
            adapt(images, args.model, Path(tmp) / mode, cfg, stage1=stage1)
            runs[mode] = {"seconds": round(time.perf_counter() - t, 1)}
        folder_net = load_model(str(Path(tmp) / "folder" / WEIGHTS)).model
        router = prepare_router(UpscaleConfig(model=str(Path(tmp) / "per-group")))
        record = json.loads((Path(tmp) / "per-group" / "groups.json").read_text())
        runs["per-group"].update(members=record["members"], silhouettes=record["silhouettes"])
        rows = []
        for kind, seed in [("adapted", args.adapt_seed)] + [("new", s) for s in args.new_seeds]:
            for preset, name, hr, lr in (footage if kind == "adapted" else crops(seed)):
                route = router.route(Path(f"{preset}_{name}"), lr)
                row = {"set": kind, "seed": seed, "preset": preset, "image": name, "group": route.group,
                       "cosine": round(route.similarity, 6), "inside": route.inside}
                for method, net in (("unadapted", desc.model), ("folder", folder_net),
                                    ("per-group", router.models[route.group].model)):
                    row[method] = score(upscale_crop(net, lr, desc), hr, scale)
                rows.append(row)
            print(f"scored seed {seed} ({kind})", flush=True)
    adapted_members = {f"{r['preset']}_{r['image']}": r["group"] for r in rows if r["set"] == "adapted"}
    own = {n: g for g, names in record["members"].items() for n in names}
    result = {
        "benchmark": "lway_rt per-group adaptation with routing vs one folder model, on new footage "
                     "(benchmarks/group_routing.py)",
        "command": command_line("group_routing.py", argv),
        "machine": machine(), "model": {"name": args.model, "sha256": state_dict_sha256(desc.model.state_dict())},
        "stage1_sha256": state_dict_sha256(stage1.state_dict()),
        "protocol": {"adapt_seed": args.adapt_seed, "new_seeds": args.new_seeds, "presets": args.presets,
                     "photos": list(photos), "crop": args.crop, "groups": groups, "recipe": base.to_dict()},
        "adapted_crops_routed_to_own_group": sum(adapted_members[n] == g for n, g in own.items()),
        "runs": runs, "summary": summarize(rows, args.presets), "rows": rows,
        "total_seconds": round(time.perf_counter() - t0, 1)}
    out = write_json(args.out, result)
    s = result["summary"]
    for kind in ("adapted", "new"):
        if kind in s:
            a = s[kind]["all"]
            print(f"{kind:8s} ({a['crops']} crops): " + "; ".join(
                f"{m} {a[m]['mean_gain_db']:+.3f} dB, worst {a[m]['worst_db']:+.3f}" for m in METHODS[1:]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
