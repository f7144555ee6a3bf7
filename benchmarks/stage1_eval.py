"""Evaluate the shipped stage-1 checkpoint (or --checkpoint) and record the report with machine info.

    .venv/bin/python benchmarks/stage1_eval.py [--checkpoint PATH] [--out benchmarks/results/stage1_eval.json]

Same numbers as ``lwayrt eval-degae --json``; adds the machine, versions and wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lway_rt.bench.machine import machine_info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "stage1_eval.json"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lway_rt.degae import load_stage1
    from lway_rt.degae.evaluate import EvalConfig, evaluate_stage1

    t0 = time.time()
    s1 = load_stage1(args.checkpoint)
    report = evaluate_stage1(s1, EvalConfig(), log=print)
    report["checkpoint"] = args.checkpoint or "shipped default (lway_rt/degae/checkpoints/stage1_default.safetensors)"
    report["checkpoint_meta"] = s1.meta
    report["run"] = {"seconds": round(time.time() - t0, 1), "machine": machine_info(),
                     "torch": torch.__version__, "threads": args.threads,
                     "command": "python benchmarks/stage1_eval.py" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"recon {report['recon_psnr']} dB vs identity {report['identity_psnr']} dB, separation {report['separation_ratio']}, "
          f"ablation gap {report['ablation']['gap_db']} dB -> {args.out}")


if __name__ == "__main__":
    main()
