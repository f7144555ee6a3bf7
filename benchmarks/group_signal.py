"""How ``adapt --mode per-group`` groups each mixed folder of the quality protocol, before any adaptation.

For every seed, the crops of all presets (``quality.py --folder all``'s mixed folder) are embedded by the
shipped stage 1's E, as ``lwayrt adapt`` embeds them, and grouped by ``lway_rt.adapt.groups.group_embeddings``
(``--groups auto``, or a count). Recorded per seed: the silhouette of each k tried, the groups chosen and how many
crops of each preset each group holds, and for each preset the share of its crops in one group (``together``).
Forward passes only: seconds on a CPU. Used to declare round 17 (``quality_sweep.py``) before it ran.

    .venv/bin/python benchmarks/group_signal.py --seeds 1 2 3 4 5 6 7 8
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


def main(argv=None) -> int:
    from trust_signal import protocol_parser, write_signal

    ap = protocol_parser(__doc__, "group_signal.json")
    ap.add_argument("--groups", default="auto", help="a count, or auto [auto]")
    args = ap.parse_args(argv)
    groups = args.groups if args.groups == "auto" else int(args.groups)

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
    out = write_signal(args, argv, "group_signal.py", "grouping of the quality protocol's mixed folders by stage 1", desc,
                       stage1, t0, groups=groups, seeds=seeds)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
