"""Does the LWay loss point at the truth? Stage 2's objective judged with the ground truth, per crop.

Adaptation can only be as right as the loss it descends. For every crop of ``quality.py``'s protocol
(photos, presets, seeds), this script evaluates the self-supervised LWay term exactly as ``lwayrt
adapt`` computes it (``losses.loss_terms`` with the default config's target and wavelet weight; no
anchor, supervised or perceptual term; the whole crop; stage 1's embedding of the crop's LR) at:

- the unadapted backbone's output S0, bicubic upsampling, and the ground truth HR;
- points on the straight way from S0 to the truth, S0 + t (HR - S0) for t = 1/4, 1/2, 3/4
  (``line_min_t``: where on that way, t = 0 ... 1, the loss is lowest);

and the gradient of the loss at S0: ``descent_cosine`` = cos(-dL/dSR, HR - S0) over the whole crop
(RGB, [0, 1]). Its sign says whether an infinitesimal step down the loss in pixel space moves S0
towards the truth (lowers its squared error) or away from it. Adaptation steps in weight space, so
this is the objective's direction, not the optimiser's. ``truth_ratio`` = L(HR) / L(S0): below 1
the loss prefers the truth to S0 (``prefers_truth`` counts those crops), above 1 it prefers S0. The
same measures for the naive baseline's term (bicubic-downsampled SR against the LR, no stage 1) sit
beside them under ``naive``: what stage 1 adds to the objective. ``--mix W...`` judges LWay's term
plus W times the naive term the same way (``lway+Wnaive``), and ``--variants`` LWay's term under other
settings of ``adapt`` (``--target lr`` / ``lr-recon``, ``--no-hf-weight``, ``--hf-source target``): a
look at a candidate objective before any adaptation runs, and, for the settings already measured, a
check of how far the look predicts them.

With ``--gains FILE...`` (quality.py JSONs), each crop's measured LWay gains over the unadapted
backbone are joined by (seed, preset, image) and the summary relates them to the two measures
(Spearman rank correlations; the crops that lost more than 0.1 dB in any run). ``--stage1 C`` judges
another stage-1 checkpoint the same way (one whose term prefers the truth to S0 more often gives stage 2
a loss that leads towards it). Forward passes and one backward pass of R per crop and term: about
4 minutes for 8 seeds (192 crops) on one CPU core, 14 with three ``--mix`` weights. The committed
``results/objective_check.json``:

    R=benchmarks/results
    .venv/bin/python benchmarks/objective_check.py --force --mix 0.5 1 2 --gains \
        $R/quality_cap_nvidia-h200/quality_realesr-animevideov3_{all,preset}_adaptseed{0,1,2}.json \
        $R/heldout_seeds56_all.json $R/heldout_seeds56_preset.json \
        $R/heldout_seeds78_all.json $R/heldout_seeds78_preset.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _args import positive_int  # noqa: E402
from trust_signal import parse_protocol, protocol_folders, protocol_parser, write_signal  # noqa: E402

LINE_POINTS = (0.25, 0.5, 0.75)
LOSS_LIMIT_DB = 0.1  # the stage-2 bar's worst-crop check
OTHER_FIELDS = ("loss_unadapted", "loss_truth", "truth_ratio", "descent_cosine", "monotone_to_truth", "line_min_t")


# LWay's term under other settings of ``lwayrt adapt`` (the rounds that measured them: docs/quality-history.md)
VARIANTS = {"target-lr": {"target": "lr"}, "lr-recon": {"target": "lr-recon"},
            "no-hf-weight": {"hf_weight": False}, "hf-target": {"hf_source": "target"}}


def mix_name(w: float) -> str:
    return f"lway+{w:g}naive"


def crop_measures(sr0: torch.Tensor, hr: torch.Tensor, lr: torch.Tensor, loss, scale: int, bicubic: bool = True) -> dict:
    """The term ``loss(x) -> scalar tensor`` at S0, the truth and points between S0 and the truth, and the
    descent cosine at S0; with ``bicubic``, also at bicubic upsampling (``loss_bicubic``: what stage 1's trust
    reads, wanted of LWay's own term only). ``sr0``, ``hr``: (1, 3, H, W) in [0, 1]; ``lr``: (1, 3, h, w)."""
    from lway_rt.adapt.patches import bicubic_up

    x = sr0.clone().requires_grad_(True)
    l_s0 = loss(x)
    (grad,) = torch.autograd.grad(l_s0, x)
    way = hr - sr0
    cos = float(torch.sum(-grad * way) / (grad.norm() * way.norm()).clamp_min(1e-20))
    with torch.no_grad():
        l_hr = float(loss(hr))
        l_bic = {"loss_bicubic": round(float(loss(bicubic_up(lr, scale))), 6)} if bicubic else {}
        line = [float(loss(sr0 + t * way)) for t in LINE_POINTS]
    l_s0 = float(l_s0.detach())
    path = [l_s0, *line, l_hr]
    return {"loss_unadapted": round(l_s0, 6), **l_bic, "loss_truth": round(l_hr, 6),
            "loss_line": [round(v, 6) for v in line], "truth_ratio": round(l_hr / l_s0, 4),
            "descent_cosine": round(cos, 4), "monotone_to_truth": all(b < a for a, b in zip(path, path[1:])),
            "line_min_t": (0.0, *LINE_POINTS, 1.0)[int(np.argmin(path))]}


def term(lr: torch.Tensor, up: torch.Tensor, reconstruct, config):
    """The self-supervised term of ``config`` (its other terms off) for one whole crop, as ``lwayrt adapt``
    computes it (``losses.loss_terms``); ``reconstruct(x)`` is R with the crop's embedding (``lway`` only)."""
    from lway_rt.adapt.losses import loss_terms
    from lway_rt.adapt.patches import Batch

    batch = Batch(lr=lr, up=up, index=torch.zeros(1, dtype=torch.long))
    return lambda x: loss_terms(x, batch, reconstruct, config)[0]


def join_gains(rows: list[dict], files: list[str]) -> list[str]:
    """Add each crop's LWay gains (dB over unadapted) from quality.py JSONs under ``gains`` {file stem: dB}."""
    index = {(r["seed"], r["preset"], r["image"]): r for r in rows}
    labels = []
    for f in files:
        data = json.loads(Path(f).read_text())
        label = Path(f).stem
        labels.append(label)
        for p in data["per_image"]:
            row = index.get((p["seed"], p["preset"], p["image"]))
            if row is not None and "lway" in p:
                row.setdefault("gains", {})[label] = round(p["lway"]["psnr"] - p["unadapted"]["psnr"], 4)
    return labels


def spearman(a, b) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None where it is undefined (fewer than two values,
    or one side constant)."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    def ranks(v):
        v = np.asarray(v, float)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for x in np.unique(v):  # ties share their mean rank
            m = v == x
            r[m] = r[m].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def rounded(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def summarize(rows: list[dict], presets: list[str], others: list[str]) -> dict:
    """Counts over all crops and per preset, for LWay's term and each of ``others``; with gains, how they relate."""
    def counts(ms: list[dict]) -> dict:  # one term's measures over some crops
        return {"prefers_truth": sum(m["truth_ratio"] < 1 for m in ms),
                "descent_towards_truth": sum(m["descent_cosine"] > 0 for m in ms),
                "mean_descent_cosine": round(float(np.mean([m["descent_cosine"] for m in ms])), 4),
                "line_min_within_quarter": sum(m["line_min_t"] <= 0.25 for m in ms)}

    def part(sel: list[dict]) -> dict:
        return {"crops": len(sel), **counts(sel),
                "mean_truth_ratio": round(float(np.mean([r["truth_ratio"] for r in sel])), 4),
                "monotone_to_truth": sum(r["monotone_to_truth"] for r in sel),
                **{name: counts([r[name] for r in sel]) for name in others}}

    def trust_vs_truth(sel: list[dict]) -> float:
        # stage 1's judgement of the backbone without the truth (r = L_bicubic / L_S0, what the anchor trust and the
        # detail guard's gate read) against the truth's ranking: does the former stand in for the latter?
        return rounded(spearman([r["loss_bicubic"] / r["loss_unadapted"] for r in sel], [r["truth_ratio"] for r in sel]))

    out = {"all": part(rows), "by_preset": {p: part([r for r in rows if r["preset"] == p]) for p in presets},
           "spearman_trust_r_vs_truth_ratio": {"all": trust_vs_truth(rows),
                                               **{p: trust_vs_truth([r for r in rows if r["preset"] == p])
                                                  for p in presets}}}
    joined = [r for r in rows if r.get("gains")]
    if joined:
        mean_gain = [float(np.mean(list(r["gains"].values()))) for r in joined]
        losers = [r for r in joined if min(r["gains"].values()) < -LOSS_LIMIT_DB]
        out["gains"] = {
            "crops_joined": len(joined),
            "spearman_mean_gain_vs_descent_cosine": rounded(spearman(mean_gain, [r["descent_cosine"] for r in joined])),
            "spearman_mean_gain_vs_truth_ratio": rounded(spearman(mean_gain, [r["truth_ratio"] for r in joined])),
            "crops_losing_over_limit": len(losers),
            "losers_with_descent_away_from_truth": sum(r["descent_cosine"] <= 0 for r in losers),
            "losers_preferring_unadapted": sum(r["truth_ratio"] >= 1 for r in losers),
            "others_with_descent_away_from_truth": sum(r["descent_cosine"] <= 0 for r in joined if r not in losers),
            "others_preferring_unadapted": sum(r["truth_ratio"] >= 1 for r in joined if r not in losers),
            "others": len(joined) - len(losers),
            "losers": [{k: r[k] for k in ("seed", "preset", "image", "truth_ratio", "descent_cosine", "gains")}
                       for r in sorted(losers, key=lambda r: min(r["gains"].values()))],
        }
    return out


def main(argv=None) -> int:
    ap = protocol_parser(__doc__, "objective_check.json")
    ap.set_defaults(seeds=[1, 2, 3, 4, 5, 6, 7, 8])
    ap.add_argument("--gains", nargs="*", default=[], help="quality.py JSONs whose per-crop LWay gains to join")
    ap.add_argument("--stage1", default=None, help="stage-1 checkpoint to judge (default: the shipped one)")
    ap.add_argument("--mix", nargs="*", type=float, default=[],
                    help="also judge LWay's term plus W times the naive term, for each W")
    ap.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS),
                    help="also judge LWay's term under these settings of adapt (target, wavelet weight)")
    ap.add_argument("--threads", type=positive_int, default=1)
    args = parse_protocol(ap, argv)
    if args.stage1 and not Path(args.stage1).is_file():
        ap.error(f"--stage1: no such file {args.stage1}")
    for f in args.gains:
        if not Path(f).is_file():
            ap.error(f"--gains: no such file {f}")
    torch.set_num_threads(args.threads)

    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.embed import freeze_stage1, prepare_stage1
    from lway_rt.adapt.loop import super_resolve
    from lway_rt.degae import load_stage1
    from lway_rt.io.store import load_model

    t0 = time.perf_counter()
    desc, stage1 = load_model(args.model), load_stage1(args.stage1)
    freeze_stage1(stage1)
    # the LWay term alone, as the default recipe computes it
    cfg = AdaptConfig().without_perceptual().replace(anchor_weight=0.0, sup_weight=0.0, detail_guard=0.0)
    naive_cfg = cfg.replace(loss="naive")
    others = ["naive", *map(mix_name, args.mix), *args.variants]
    rows = []
    for seed, preset, pairs, data, recon in protocol_folders(args, desc, stage1):
        # lr-recon: E reads the LR itself (as adapt does for that target)
        recon_lr = prepare_stage1(stage1, [d.lr for d in data])[0] if "lr-recon" in args.variants else None
        for i, ((name, hr8, _), d) in enumerate(zip(pairs, data)):
            hr = torch.from_numpy(hr8).permute(2, 0, 1)[None].float() / 255.0
            with torch.no_grad():
                sr0 = super_resolve(desc.model, d.lr, desc.scale, desc.size_multiple, 0)
            index = torch.full((1,), i, dtype=torch.long)
            lway = term(d.lr, d.up, lambda x, ix=index: recon(x, ix), cfg)
            naive = term(d.lr, d.up, None, naive_cfg)
            terms = {"naive": naive, **{mix_name(w): (lambda x, w=w, lw=lway, nv=naive: lw(x) + w * nv(x))
                                        for w in args.mix},
                     **{v: term(d.lr, d.up, lambda x, ix=index, r=recon_lr if v == "lr-recon" else recon: r(x, ix),
                                cfg.replace(**VARIANTS[v])) for v in args.variants}}
            rows.append({"seed": seed, "preset": preset, "image": name,
                         **crop_measures(sr0, hr, d.lr, lway, desc.scale),
                         **{k: {f: v for f, v in crop_measures(sr0, hr, d.lr, fn, desc.scale, bicubic=False).items()
                                if f in OTHER_FIELDS} for k, fn in terms.items()}})
        print(f"seed {seed} {preset}: {len(data)} crops", flush=True)
    labels = join_gains(rows, args.gains)
    summary = summarize(rows, list(args.presets), others)
    out = write_signal(args, argv, "objective_check.py", "stage-2 objective against the ground truth", desc, stage1, t0,
                       loss={"target": cfg.target, "hf_weight": cfg.hf_weight, "hf_source": cfg.hf_source,
                             "terms": "LWay term only, whole crop; beside it: " + ", ".join(others)},
                       gains_from=labels, **summary, crops=rows)
    for p, v in summary["by_preset"].items():
        print(f"{p:22s} prefers the truth to S0 {v['prefers_truth']}/{v['crops']} (mean ratio {v['mean_truth_ratio']:.3f}), "
              f"descent towards truth {v['descent_towards_truth']}/{v['crops']} (mean cos {v['mean_descent_cosine']:+.3f}), "
              f"lowest within a quarter of the way {v['line_min_within_quarter']}/{v['crops']}")
        for name in others:
            nv = v[name]
            print(f"  {name:20s} prefers the truth {nv['prefers_truth']}/{v['crops']}, descent towards truth "
                  f"{nv['descent_towards_truth']}/{v['crops']} (mean cos {nv['mean_descent_cosine']:+.3f}), lowest within "
                  f"a quarter {nv['line_min_within_quarter']}/{v['crops']}")
    if "gains" in summary:
        g = summary["gains"]
        print(f"{g['crops_joined']} crops with gains: spearman(gain, cos) {g['spearman_mean_gain_vs_descent_cosine']}, "
              f"(gain, truth ratio) {g['spearman_mean_gain_vs_truth_ratio']}; {g['crops_losing_over_limit']} lost "
              f"> {LOSS_LIMIT_DB} dB in a run, {g['losers_with_descent_away_from_truth']} of them with descent away "
              f"from the truth (others: {g['others_with_descent_away_from_truth']}/{g['others']}), "
              f"{g['losers_preferring_unadapted']} where the loss prefers S0 to the truth "
              f"(others: {g['others_preferring_unadapted']}/{g['others']})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
