"""How far tiled upscaling is from one pass over the whole image, for the packaged models and tile settings.

``lwayrt upscale`` cuts large images into tiles that overlap and blends them across the overlap
(``lway_rt.runtime.tiling``); each tile sees less context at its border than the whole image gives, so the
outputs differ near seams. This measures, per model, photo and (tile, overlap), the largest and the mean
absolute difference on a [0, 1] scale (x255: 8-bit levels) between the tiled and the one-pass output, on
x4-downscaled scikit-image photos (LR up to 128x128, so several tiles per image).

    .venv/bin/python benchmarks/tiling_seams.py --force   # rewrites benchmarks/results/tiling_seams_cpu.json

Without ``--out`` the script refuses to replace an existing default file unless given ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, add_threads, parse_run_args  # noqa: E402
MODELS = ("realesr-animevideov3", "realsr-df2k-x4")
PHOTOS = ("astronaut", "chelsea", "coffee")
SETTINGS = ((48, 16), (64, 16), (64, 24), (80, 32), (96, 32))  # (tile, overlap) in LR pixels; upscale's default overlap is 32


def main(argv=None) -> int:
    from lway_rt.bench.machine import load_average, write_benchmark_record
    from lway_rt.io.images import bundled_photo, resize_bicubic
    from lway_rt.io.store import load_model
    from lway_rt.runtime.tiling import TileConfig, upscale_tensor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/tiling_seams_cpu.json")
    add_threads(ap)
    args = parse_run_args(ap, argv)
    rows, load_start = [], load_average()
    for name in MODELS:
        desc = load_model(name)
        for photo in PHOTOS:
            img = bundled_photo(photo)
            lr = np.asarray(resize_bicubic(img, (img.shape[1] // 4, img.shape[0] // 4)))[:128, :128]
            x = torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
            with torch.no_grad():
                whole = upscale_tensor(desc.model, x, desc.scale, TileConfig(0)).clamp(0, 1)
                for tile, overlap in SETTINGS:
                    diff = (upscale_tensor(desc.model, x, desc.scale, TileConfig(tile, overlap)).clamp(0, 1) - whole).abs()
                    rows.append({"model": name, "photo": photo, "lr_size": list(x.shape[-2:]), "tile": tile,
                                 "overlap": overlap, "max_abs": round(float(diff.max()), 5),
                                 "max_levels": round(float(diff.max()) * 255, 2), "mean_abs": float(diff.mean())})
                    print(f"{name} {photo} tile {tile}/{overlap}: max {rows[-1]['max_levels']:.1f} levels, "
                          f"mean {rows[-1]['mean_abs']:.1e}", flush=True)
    worst = {}
    for r in rows:
        key = f"{r['model']} tile {r['tile']}/{r['overlap']}"
        worst[key] = max(worst.get(key, 0.0), r["max_levels"])
    write_benchmark_record(args.out, "lway_rt.tiling-seams/1", load_start, worst_levels_per_setting=worst, rows=rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
