"""Evaluate the shipped stage-1 checkpoint (or --checkpoint) and record the report with machine info.

    .venv/bin/python benchmarks/stage1_eval.py --force            # rewrites benchmarks/results/stage1_eval.json
    .venv/bin/python benchmarks/stage1_eval.py --checkpoint PATH --out FILE

Same numbers as ``lwayrt eval-degae --json``; adds the machine, versions and wall time. Without ``--out`` the
script refuses to replace an existing ``stage1_eval.json`` unless given ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from lway_rt.bench.machine import machine_info

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import add_out, command_line, positive_int, resolve_out, write_json  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=None)
    add_out(ap, Path(__file__).resolve().parent / "results" / "stage1_eval.json")
    ap.add_argument("--threads", type=positive_int, default=1)
    args = ap.parse_args(argv)
    resolve_out(ap, args)
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
                     "command": command_line("stage1_eval.py", argv)}
    write_json(args.out, report)
    print(f"recon {report['recon_psnr']} dB vs identity {report['identity_psnr']} dB, separation {report['separation_ratio']}, "
          f"ablation gap {report['ablation']['gap_db']} dB -> {args.out}")


if __name__ == "__main__":
    main()
