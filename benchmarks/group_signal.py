"""How ``adapt --mode per-group`` groups each mixed folder of the quality protocol, before any adaptation.

For every seed, the crops of all presets (``quality.py --folder all``'s mixed folder) are embedded by the
shipped stage 1's E, as ``lwayrt adapt`` embeds them, and grouped by ``lway_rt.adapt.groups.group_embeddings``
(``--groups auto``, or a count). Recorded per seed: the silhouette of each k tried, the groups chosen and how many
crops of each preset each group holds, and for each preset the share of its crops in one group (``together``).
Forward passes only: seconds on a CPU. Used to declare round 17 (``quality_sweep.py``) before it ran.

``reach`` (with two seeds or more) measures what ``lwayrt upscale``'s warning about an image unlike every group
rests on: with each seed's groups as an adaptation's, every crop of the other seeds (new footage from the same
sources) is sent to its nearest centre, and its distance there (1 - cosine) is divided by the group's own reach (its
farthest member's distance). Recorded: how often that ratio exceeds 1, 2, 3 and 4 (false alarms, since the
sources are the same) and, with groups made of the sharpen + JPEG and box-downscale crops only, the ratio's share
above each factor for the crops of the two presets left out (sources no group was adapted on).

    .venv/bin/python benchmarks/group_signal.py --seeds 1 2 3 4 5 6 7 8 --force   # rewrites group_signal.json
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


FACTORS = (1, 2, 3, 4)
KNOWN = ("sharpen-jpeg420", "box-downscale")  # the sources the groups of the unseen-sources check are made of


def _reach(args, desc, stage1, groups) -> dict:
    """Distance of other seeds' crops to their nearest group centre, over that group's reach (see the docstring)."""
    import numpy as np
    from quality import PHOTOS, make_pairs

    from lway_rt.adapt.embed import compute_embeddings, embedding_input
    from lway_rt.adapt.groups import group_embeddings, nearest_group, reach_ratio

    crops, emb = {}, {}
    for seed in args.seeds:
        crops[seed] = [preset for preset in args.presets for _ in PHOTOS[: args.photos]]
        xs = [embedding_input(torch.from_numpy(lr).permute(2, 0, 1), desc.scale) for preset in args.presets
              for _, _, lr in make_pairs(PHOTOS[: args.photos], preset, seed, args.crop, desc.scale)]
        with torch.no_grad():
            emb[seed] = compute_embeddings(xs, stage1).numpy()

    def ratios(seed, keep):
        idx = [i for i, p in enumerate(crops[seed]) if keep(p)]
        g = group_embeddings(emb[seed][idx], groups, seed=0)
        centres, floors = np.array(g.centres), np.array(g.floors)
        out = {}
        for other in args.seeds:
            if other != seed:
                best, sim = nearest_group(emb[other], centres)
                for p, r in zip(crops[other], reach_ratio(sim, floors[best])):
                    out.setdefault(p, []).append(float(r))
        return out

    def shares(values):
        v = np.array(values)
        return {"crops": len(v), **{f"above_{f}": round(float((v > f).mean()), 4) for f in FACTORS},
                "median": round(float(np.median(v)), 3), "max": round(float(v.max()), 3)}

    same, unseen = {}, {}
    for seed in args.seeds:
        r = ratios(seed, lambda p: True)
        same[seed] = shares([x for v in r.values() for x in v])
        r = ratios(seed, lambda p: p in KNOWN)
        unseen[seed] = {p: shares(v) for p, v in r.items() if p not in KNOWN}
        print(f"reach, groups of seed {seed}: same sources above 1 / 2: {same[seed]['above_1']:.3f} / "
              f"{same[seed]['above_2']:.3f}; unseen sources above 2: "
              + ", ".join(f"{p} {v['above_2']:.2f}" for p, v in unseen[seed].items()), flush=True)
    return {"factors": list(FACTORS), "same_sources": same, "unseen_sources": {"groups_of": list(KNOWN), **unseen}}


def main(argv=None) -> int:
    from quality import groups_arg
    from trust_signal import parse_protocol, protocol_parser, write_signal

    ap = protocol_parser(__doc__, "group_signal.json")
    ap.add_argument("--groups", default="auto", type=groups_arg, help="a count, or auto [auto]")
    args = parse_protocol(ap, argv)
    groups = args.groups

    from quality import PHOTOS, make_pairs

    from lway_rt.adapt._imageio import from_array
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.loop import group_inputs
    from lway_rt.degae import load_stage1
    from lway_rt.io.store import load_model

    t0 = time.perf_counter()
    desc, stage1 = load_model(args.model), load_stage1(None)
    cfg = AdaptConfig(mode="per-group", groups=groups)
    seeds = []
    for seed in args.seeds:
        crops = [(preset, name, lr) for preset in args.presets
                 for name, _, lr in make_pairs(PHOTOS[: args.photos], preset, seed, args.crop, desc.scale)]
        images = [from_array(f"{preset}_{name}", lr) for preset, name, lr in crops]
        with torch.no_grad():
            g = group_inputs(images, desc, cfg, stage1)
        members = [[crops[i][0] for i in m] for m in g.members()]
        together = {p: round(max(m.count(p) for m in members) / sum(c[0] == p for c in crops), 4) for p in args.presets}
        seeds.append({"seed": seed, "groups": g.count, "silhouettes": g.silhouettes, "together": together,
                      "by_group": [dict(Counter(m)) for m in members],
                      "members": [[f"{crops[i][0]}/{crops[i][1]}" for i in m] for m in g.members()]})
        print(f"seed {seed}: {g.count} group(s): "
              + " | ".join(", ".join(f"{p} {c}" for p, c in Counter(m).items()) for m in members), flush=True)
    reach = _reach(args, desc, stage1, groups) if len(args.seeds) > 1 else None
    out = write_signal(args, argv, "group_signal.py", "grouping of the quality protocol's mixed folders by stage 1", desc,
                       stage1, t0, groups=groups, seeds=seeds, **({"reach": reach} if reach else {}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
