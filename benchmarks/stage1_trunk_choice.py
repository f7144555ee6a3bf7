"""Pick the stage-1 encoder trunk (and the reconstructor's skip) by measurement.

Trains each variant for the same short schedule with the project's own training code, then runs
the held-out evaluation (reduced size) and records reconstruction PSNR, the embedding-ablation gap,
the separation ratio and the seconds per iteration. Writes benchmarks/results/stage1_trunk_choice.json (or
``--out``), adding each variant's row to the rows already there, the file rewritten after each variant; without
``--out`` the committed file is changed only with ``--force``.

    .venv/bin/python benchmarks/stage1_trunk_choice.py --force [--iters 300] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import add_out, positive_int, resolve_out, write_json  # noqa: E402

VARIANTS = {
    "srvgg2-noskip": dict(trunk_model="realesr-animevideov3", trunk_layers=2, skip=False),
    "srvgg2-skip": dict(trunk_model="realesr-animevideov3", trunk_layers=2, skip=True),
    "srvgg4-skip": dict(trunk_model="realesr-animevideov3", trunk_layers=4, skip=True),
    "rrdb1-skip": dict(trunk_model="realsr-df2k-x4", trunk_layers=1, skip=True),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=positive_int, default=300)
    ap.add_argument("--only", nargs="*", choices=sorted(VARIANTS))
    add_out(ap, Path(__file__).resolve().parent / "results" / "stage1_trunk_choice.json")
    args = ap.parse_args(argv)
    resolve_out(ap, args)
    torch.set_num_threads(1)
    from lway_rt.degae import load_stage1
    from lway_rt.degae.degrade import SynthConfig
    from lway_rt.degae.evaluate import EvalConfig, evaluate_stage1
    from lway_rt.degae.train import TrainConfig, train

    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    results.setdefault("variants", {})
    ecfg = EvalConfig(crop=64, crops_per_image=2, draws=12)
    for name, kw in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(out=f"{tmp}/s1.safetensors", crop=64, batch=8, iters=args.iters, width=32, lr=5e-4,
                              ckpt_every=args.iters, synth=SynthConfig(p_roundtrip=0.5), **kw)
            t0 = time.time()
            train(cfg)
            sec = time.time() - t0
            rep = evaluate_stage1(load_stage1(cfg.out), ecfg)
        row = {"config": kw, "iters": args.iters, "sec_per_iter": round(sec / args.iters, 3)}
        for geo, g in rep["geometries"].items():
            row[geo] = {k: g[k] for k in ("recon", "identity", "gain_db", "shuffled", "zero", "cross_image",
                                         "ablation_gap_db", "separation_ratio")}
        results["variants"][name] = row
        print(name, json.dumps(row), flush=True)
        results["settings"] = {"train": "crop 64, batch 8, width 32, lr 5e-4, p_roundtrip 0.5, seed 0",
                               "eval": "held-out chelsea+coffee, 4 crops of 64 px, 12 draws per geometry",
                               "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread, shared 2-core CPU",
                               "torch": torch.__version__}
        write_json(out_path, results)


if __name__ == "__main__":
    main()
