"""What the tile layout costs and how close it stays to one pass: full-size tiles against sized tiles.

``lwayrt upscale`` cuts an image larger than ``--tile`` into tiles. The layout before 2026-12-02 gave every tile
the full ``tile`` size, so neighbours overlapped by whatever was left over (a 1024-px side at tile 512 took three
512-px tiles, 1536 px of work); ``lway_rt.runtime.tiling.axis_tile`` now sizes them to the smallest that still
overlaps by twice ``--tile-overlap`` (and at least 64 px) (three 384-px tiles). This script measures both layouts side by side in one
run, with the old one restored by replacing ``axis_tile`` with its rule (``min(tile, length)``):

* pixels computed over the image's pixels, for common photo sizes at the default tile 512 / overlap 32
  (arithmetic, no model run);
* wall time (best of two runs, one for the RRDBNet) and the largest / mean difference from a one-pass output,
  for real photos used as LR images at tile 256 / overlap 32 (so a few tiles fit a small CPU), with
  realesr-animevideov3 and realsr-df2k-x4.

    .venv/bin/python benchmarks/tiling_layout.py --threads 1 --force   # rewrites benchmarks/results/tiling_layout_cpu.json

Without ``--out`` the script refuses to replace an existing default file unless given ``--force``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, add_threads, nonnegative_int, parse_run_args, positive_int  # noqa: E402
SIZES = ((640, 480), (1024, 768), (1280, 720), (1500, 1000), (1920, 1080), (2048, 1536), (4000, 3000))
# (model, photo, repeats): the photos (400x600, 300x451, 512x512 RGB) are LR images in their own right; the RRDBNet,
# whose receptive field reaches furthest across a seam, on one of them (a pass takes about a minute on 2 CPU cores)
RUNS = (("realesr-animevideov3", "coffee", 2), ("realesr-animevideov3", "chelsea", 2),
        ("realesr-animevideov3", "astronaut", 2), ("realsr-df2k-x4", "chelsea", 1))


def _old_axis_tile(length: int, tile: int, overlap: int, multiple: int = 1) -> int:
    return min(tile, length)


def _work(w: int, h: int, tile: int, overlap: int, axis) -> float:
    """Input pixels the model computes over the image's own, for the layout ``axis`` gives."""
    from lway_rt.runtime.tiling import tile_starts

    total = 1
    for side in (w, h):
        t = axis(side, tile, overlap)
        total *= t * len(tile_starts(side, t, overlap))
    return total / (w * h)


def main(argv=None) -> int:
    from lway_rt.bench.machine import load_average, write_benchmark_record
    from lway_rt.io.images import bundled_photo
    from lway_rt.io.store import load_model
    from lway_rt.runtime import tiling

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/tiling_layout_cpu.json")
    ap.add_argument("--tile", type=positive_int, default=256)
    ap.add_argument("--overlap", type=nonnegative_int, default=32)
    add_threads(ap)
    args = parse_run_args(ap, argv)
    new_axis = tiling.axis_tile
    work = [{"size": [w, h], "tile": 512, "overlap": 32, "full_tiles": round(_work(w, h, 512, 32, _old_axis_tile), 3),
             "sized_tiles": round(_work(w, h, 512, 32, new_axis), 3)} for w, h in SIZES]
    for r in work:
        print(f"{r['size'][0]}x{r['size'][1]} at 512/32: {r['full_tiles']:.2f}x the pixels with full tiles, "
              f"{r['sized_tiles']:.2f}x sized", flush=True)

    load_start = load_average()
    cfg = tiling.TileConfig(args.tile, args.overlap)
    rows = []

    def timed(fn, repeat):
        best, out = float("inf"), None
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        return out, best

    for model, photo, repeat in RUNS:
        desc = load_model(model)
        img = bundled_photo(photo)
        x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        row = {"model": model, "photo": photo, "lr_size": [int(x.shape[-1]), int(x.shape[-2])], "tile": args.tile,
               "overlap": args.overlap, "repeats": repeat}
        whole, row["whole_s"] = timed(lambda: tiling.upscale_tensor(desc.model, x, desc.scale, tiling.TileConfig(0)),
                                      repeat)
        whole = whole.clamp(0, 1)
        for name, axis in (("full_tiles", _old_axis_tile), ("sized_tiles", new_axis)):
            tiling.axis_tile = axis  # upscale_tensor looks it up at call time
            try:
                y, secs = timed(lambda: tiling.upscale_tensor(desc.model, x, desc.scale, cfg), repeat)
            finally:
                tiling.axis_tile = new_axis
            diff = (y.clamp(0, 1) - whole).abs()
            row[name] = {"s": round(secs, 3), "work": round(_work(row["lr_size"][0], row["lr_size"][1], args.tile,
                                                                  args.overlap, axis), 3),
                         "max_levels": round(float(diff.max()) * 255, 3), "mean_abs": float(diff.mean())}
        row["whole_s"] = round(row["whole_s"], 3)
        row["sized_over_full_time"] = round(row["sized_tiles"]["s"] / row["full_tiles"]["s"], 3)
        rows.append(row)
        print(f"{model} {photo} {row['lr_size']}: one pass {row['whole_s']:.1f}s; full tiles {row['full_tiles']['s']:.1f}s "
              f"(max {row['full_tiles']['max_levels']:.2f} levels); sized tiles {row['sized_tiles']['s']:.1f}s "
              f"(max {row['sized_tiles']['max_levels']:.2f} levels): {row['sized_over_full_time']:.2f}x the time",
              flush=True)
    write_benchmark_record(args.out, "lway_rt.tiling-layout/1", load_start, {"torch_threads": torch.get_num_threads()}, work_at_default_tile=work, rows=rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
