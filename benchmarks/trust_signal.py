"""Stage 1's judgement of the backbone on each crop of the quality protocol, before any adaptation.

For every crop (``quality.py``'s photos, presets and seeds), the LWay loss of the unadapted
backbone's output and of bicubic upsampling, measured as ``lwayrt adapt`` measures them for the
anchor trust and the detail guard's gate (``lway_rt.adapt.losses.trust_losses``): ``r = L_bicubic /
L_S0`` below 1 means R(S0(x)) explains the LR worse than R(bicubic(x)). Also the gate
``detail_guard_gate='trust'`` would give the crop (``guard_gates``). Forward passes only: seconds on a
CPU. Used to declare round 16 (``quality_sweep.py``) before it ran.

    .venv/bin/python benchmarks/trust_signal.py --seeds 1 2 3 4 5 6 7 8 --force   # rewrites trust_signal.json

Without ``--out`` (here, group_signal.py and objective_check.py) the script refuses to replace its existing
default file under ``benchmarks/results/`` unless given ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, command_line, positive_int, resolve_out, write_json  # noqa: E402


def protocol_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The arguments of a forward-pass-only look at quality.py's crops (this script, group_signal.py,
    objective_check.py); parse them with ``parse_protocol``."""
    from quality import ABLATION_PRESETS, PHOTOS

    from lway_rt.degae.degrade import EVAL_PRESETS

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", default="realesr-animevideov3")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4])
    ap.add_argument("--presets", nargs="+", default=list(EVAL_PRESETS), choices=[*EVAL_PRESETS, *ABLATION_PRESETS],
                    metavar="PRESET", help=f"from {', '.join([*EVAL_PRESETS, *ABLATION_PRESETS])} [the first {len(EVAL_PRESETS)}]")
    ap.add_argument("--photos", type=int, default=6, choices=range(1, len(PHOTOS) + 1), metavar="N",
                    help=f"how many of quality.py's photos (1-{len(PHOTOS)})")
    ap.add_argument("--crop", type=positive_int, default=192)
    add_out(ap, ROOT / "benchmarks" / "results" / out)
    return ap


def parse_protocol(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``ap.parse_args(argv)``, then the output rule (an existing default file needs --force)."""
    args = ap.parse_args(argv)
    resolve_out(ap, args)
    return args


def main(argv=None) -> int:
    args = parse_protocol(protocol_parser(__doc__, "trust_signal.json"), argv)

    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.losses import guard_gates, trust_losses
    from lway_rt.degae import load_stage1
    from lway_rt.io.store import load_model

    t0 = time.perf_counter()
    desc, stage1 = load_model(args.model), load_stage1(None)
    cfg = AdaptConfig()
    rows = []
    for seed, preset, _, data, recon in protocol_folders(args, desc, stage1):
        info = trust_losses(data, desc.model, recon, cfg, desc.scale, desc.size_multiple)
        for d, i, g in zip(data, info, guard_gates(info).tolist()):
            rows.append({"seed": seed, "preset": preset, "image": d.name,
                         "loss_unadapted": round(i["loss_unadapted"], 6), "loss_bicubic": round(i["loss_bicubic"], 6),
                         "ratio": round(i["loss_bicubic"] / i["loss_unadapted"], 4), "gate": round(g, 4)})
    by_preset = {p: {"mean_ratio": round(sum(r["ratio"] for r in rows if r["preset"] == p)
                                         / sum(r["preset"] == p for r in rows), 4),
                     "below_0.9": sum(r["ratio"] < 0.9 for r in rows if r["preset"] == p),
                     "of": sum(r["preset"] == p for r in rows)} for p in args.presets}
    out = write_signal(args, argv, "trust_signal.py", "stage 1's per-crop judgement of the backbone", desc, stage1, t0,
                       by_preset=by_preset, crops=rows)
    for p, v in by_preset.items():
        print(f"{p:22s} mean r {v['mean_ratio']:.3f}, below 0.9 on {v['below_0.9']}/{v['of']}")
    print(f"wrote {out}")
    return 0


def protocol_folders(args, desc, stage1):
    """Per (seed, preset) of ``args``: the seed and preset, quality.py's (name, HR, LR) crops of ``args.photos``
    photos, their ``AdaptImage``s and stage 1's reconstructor prepared with their embeddings (of the upsampled LRs,
    as adapt's default target reads them)."""
    from quality import PHOTOS, make_pairs

    from lway_rt.adapt.embed import prepare_stage1
    from lway_rt.adapt.patches import AdaptImage

    for seed in args.seeds:
        for preset in args.presets:
            pairs = make_pairs(PHOTOS[: args.photos], preset, seed, args.crop, desc.scale)
            data = [AdaptImage.from_lr(name, torch.from_numpy(lr).permute(2, 0, 1)[None], desc.scale)
                    for name, _, lr in pairs]
            yield seed, preset, pairs, data, prepare_stage1(stage1, [d.up for d in data])[0]


def write_signal(args, argv, script: str, what: str, desc, stage1, t0: float, **fields) -> Path:
    """Write such a look's JSON to ``args.out``: what it is, its command, machine, model and stage 1, ``fields``, time."""
    from quality import machine

    from lway_rt.io.weights import state_dict_sha256

    return write_json(args.out, {
        "benchmark": f"lway_rt {what} (benchmarks/{script})",
        "command": command_line(script, argv),
        "machine": machine(), "model": {"name": args.model, "sha256": state_dict_sha256(desc.model.state_dict())},
        "stage1_sha256": state_dict_sha256(stage1.state_dict()),
        **fields, "total_seconds": round(time.perf_counter() - t0, 1)})


if __name__ == "__main__":
    sys.exit(main())
