"""Channels-last on the CPU: does ``lwayrt upscale`` get faster when the network runs in NHWC?

PyTorch's CPU convolutions (oneDNN) work in a blocked or NHWC layout; a network held in NCHW pays a layout
reorder around every convolution. ``serve-bench`` measured ``torch+cl`` at 0.73x the latency of ``torch`` for
realesr-animevideov3 at 256x256 (``serve_bench_cpu_ort_tuning.json``). This script measures what
``lwayrt upscale`` itself would gain, side by side in one run: the same bundled photos as LR images, one pass
(``--tile 0``) and the default tiling, each model in NCHW and in channels-last, interleaved round by round so
that load drift on a shared machine falls on both (the median of the rounds is kept), and the largest difference
between the two outputs.

    .venv/bin/python benchmarks/cpu_memory_format.py --force   # rewrites benchmarks/results/cpu_memory_format.json

Without ``--out`` the script refuses to replace an existing default file unless given ``--force``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, add_threads, parse_run_args, positive_int  # noqa: E402
# (model, photo, LR crop side, tile sizes: 0 = one pass): the compact model on whole photos (about 512 px) in one
# pass and in 256-px tiles; the RRDBNet, about 20x the work, on 96-px crops in one pass
RUNS = (("realesr-animevideov3", "chelsea", 512, (0, 256)), ("realesr-animevideov3", "coffee", 512, (0, 256)),
        ("realesr-animevideov3", "astronaut", 512, (0, 256)), ("realsr-df2k-x4", "chelsea", 96, (0,)),
        ("realsr-df2k-x4", "coffee", 96, (0,)))


def main(argv=None) -> int:
    from lway_rt.bench.machine import load_average, write_benchmark_record
    from lway_rt.io.images import bundled_photo
    from lway_rt.io.store import load_model
    from lway_rt.runtime.tiling import TileConfig, upscale_tensor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/cpu_memory_format.json")
    ap.add_argument("--rounds", type=positive_int, default=3)
    add_threads(ap)
    args = parse_run_args(ap, argv)
    load_start = load_average()
    rows = []
    for model, photo, side, tile_sizes in RUNS:
        desc = load_model(model)
        nchw = desc.model.eval()
        nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
        img = bundled_photo(photo)[:side, :side]
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()
        row = {"model": model, "photo": photo, "lr_size": [int(x.shape[-1]), int(x.shape[-2])], "rounds": args.rounds}
        for tile in tile_sizes:
            name, tiles = ("one_pass", TileConfig(0)) if not tile else (f"tiled_{tile}_32", TileConfig(tile, 32))
            runs = {"nchw": (nchw, lambda t: t), "channels_last": (nhwc, lambda t: t.contiguous(memory_format=torch.channels_last))}
            times: dict[str, list[float]] = {k: [] for k in runs}
            outs = {}
            with torch.inference_mode():
                for r in range(args.rounds + 1):  # round 0 warms up both
                    for k in (list(runs) if r % 2 else list(runs)[::-1]):  # alternate who goes first
                        net, fmt = runs[k]
                        t0 = time.perf_counter()
                        y = upscale_tensor(lambda t, net=net, fmt=fmt: net(fmt(t)), x, desc.scale, tiles)
                        if r:
                            times[k].append(time.perf_counter() - t0)
                        outs[k] = y
            med = {k: statistics.median(v) for k, v in times.items()}
            row[name] = {"median_s": {k: round(v, 4) for k, v in med.items()},
                         "channels_last_over_nchw": round(med["channels_last"] / med["nchw"], 3),
                         "max_levels": round(float((outs["nchw"].clamp(0, 1) - outs["channels_last"].clamp(0, 1))
                                                   .abs().max()) * 255, 4)}
            print(f"{model} {photo} {side}px {name}: nchw {med['nchw']:.3f}s, channels-last {med['channels_last']:.3f}s "
                  f"({row[name]['channels_last_over_nchw']:.2f}x), max diff {row[name]['max_levels']:.4f} levels",
                  flush=True)
        rows.append(row)
    ratios = [v["channels_last_over_nchw"] for r in rows for v in r.values() if isinstance(v, dict)]
    write_benchmark_record(args.out, "lway_rt.cpu-memory-format/1", load_start, {"torch_threads": torch.get_num_threads()},
                           ratio_median=statistics.median(ratios), ratio_range=[min(ratios), max(ratios)], rows=rows)
    print(f"channels-last / NCHW time: median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
