"""Reconstructor cost: non-fused modulated conv (static weights, factors prepared once per image)
against DegAE's fused grouped-conv form, at stage-2 patch sizes, on this machine's CPU.

    .venv/bin/python benchmarks/stage1_modconv_speed.py --threads 1 --reps 5 --force   # rewrites stage1_modconv_speed.json

Both forms are checked to agree (max abs difference recorded) before timing; the ratio is
measured side by side in one run. Without ``--out`` the script refuses to replace an existing
``benchmarks/results/stage1_modconv_speed.json`` unless given ``--force``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from lway_rt.bench.machine import machine_info

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import add_out, command_line, positive_int, resolve_out, write_json  # noqa: E402


def _time(fn, reps: int) -> list[float]:
    fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--reps", type=positive_int, default=10)
    add_out(ap, Path(__file__).resolve().parent / "results" / "stage1_modconv_speed.json")
    args = ap.parse_args(argv)
    resolve_out(ap, args)
    torch.set_num_threads(args.threads)
    from lway_rt.degae.nets import Reconstructor

    rows = []
    for width in (32, 64):
        torch.manual_seed(0)
        r = Reconstructor(512, width, 4, skip=True).eval()
        for batch, size in ((4, 128), (16, 64)):
            x = torch.rand(batch, 3, size, size)
            e = torch.randn(batch, 512)

            def fused():
                h = r.act(r.conv_first(x))
                for b in r.blocks:
                    h = b.mod.reference(b.res(h), e)
                return r.conv_last(r.act(r.conv_hr(h))) + x

            prepared = r.prepare(e)
            with torch.no_grad():
                diff = float((fused() - r.apply(x, prepared)).abs().max())
                t_fused = _time(fused, args.reps)
                t_nonfused = _time(lambda: r(x, e), args.reps)
                t_prepared = _time(lambda: r.apply(x, prepared), args.reps)
            row = {"width": width, "batch": batch, "size": size, "max_abs_diff": diff,
                   "fused_grouped_ms": round(statistics.median(t_fused), 2),
                   "nonfused_ms": round(statistics.median(t_nonfused), 2),
                   "nonfused_prepared_ms": round(statistics.median(t_prepared), 2)}
            row["speedup_prepared_vs_fused"] = round(row["fused_grouped_ms"] / row["nonfused_prepared_ms"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json(args.out, {
        "rows": rows, "machine": machine_info(), "threads": args.threads,
        "torch": torch.__version__, "note": "median ms over reps, forward only, eval mode; shared CPU",
        "command": command_line("stage1_modconv_speed.py", argv)})


if __name__ == "__main__":
    main()
