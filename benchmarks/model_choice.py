"""Which packaged model to pick for photos: Y-PSNR / SSIM of each against bicubic, and its compute.

Each of the demo's bundled photos (scikit-image) is cropped at the demo's place, downscaled x4 with bicubic (the
classic SR benchmark degradation: no blur, noise or compression beyond it) and upscaled again by bicubic and by each
packaged model in one pass; Y-PSNR and SSIM against the crop (4-px border left out, as everywhere in lway_rt), and the
multiply-adds each network does per input pixel (``lway_rt.bench.flops``), are recorded. Real footage is degraded
otherwise (that is what ``lwayrt adapt`` is for); this is only the first question a user asks: which model on photos.

    .venv/bin/python benchmarks/model_choice.py --force   # rewrites benchmarks/results/model_choice_cpu.json
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
from _args import add_out, add_threads, parse_run_args, positive_int  # noqa: E402

MODELS = ("realesr-animevideov3", "realsr-df2k-x4", "realesrgan-x4plus", "realesrgan-x4plus-anime")


def main(argv=None) -> int:
    from lway_rt.bench.flops import count_macs
    from lway_rt.bench.machine import load_average, write_benchmark_record
    from lway_rt.demo import PHOTOS, make_lr, sample_photo
    from lway_rt.io.images import resize_bicubic, to_uint8
    from lway_rt.io.store import load_model
    from lway_rt.metrics import psnr_y, ssim_y
    from lway_rt.runtime.tiling import TileConfig
    from lway_rt.upscale import upscale_rgb

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/model_choice_cpu.json")
    ap.add_argument("--crop", type=positive_int, default=256, help="HR crop side in pixels (a multiple of 4)")
    add_threads(ap)
    args = parse_run_args(ap, argv)
    load_start = load_average()
    crops = {name: sample_photo(name, args.crop) for name in PHOTOS}
    lrs = {name: make_lr(hr, 4) for name, hr in crops.items()}
    rows = []
    for name, hr in crops.items():
        bic = resize_bicubic(lrs[name], (hr.shape[1], hr.shape[0]))
        rows.append({"model": "bicubic", "photo": name, "psnr_y": round(psnr_y(bic, hr, crop_border=4), 3),
                     "ssim_y": round(ssim_y(bic, hr, crop_border=4), 4)})
    macs = {}
    for model in MODELS:
        desc = load_model(model)
        macs[model] = count_macs(desc.model, (1, 3, 64, 64))["total"] / (64 * 64)
        for name, hr in crops.items():
            with torch.inference_mode():
                sr = to_uint8(upscale_rgb(desc, lrs[name].astype(np.float32) / 255.0, TileConfig(0)))
            rows.append({"model": model, "photo": name, "psnr_y": round(psnr_y(sr, hr, crop_border=4), 3),
                         "ssim_y": round(ssim_y(sr, hr, crop_border=4), 4)})
            print(f"{model} {name}: {rows[-1]['psnr_y']:.2f} dB", flush=True)
    mean = {}
    for model in ("bicubic", *MODELS):
        mine = [r for r in rows if r["model"] == model]
        mean[model] = {"psnr_y": round(float(np.mean([r["psnr_y"] for r in mine])), 3),
                       "ssim_y": round(float(np.mean([r["ssim_y"] for r in mine])), 4),
                       "photos_above_bicubic": None if model == "bicubic" else sum(
                           r["psnr_y"] > next(b["psnr_y"] for b in rows if b["model"] == "bicubic"
                                              and b["photo"] == r["photo"]) for r in mine),
                       "macs_per_input_pixel": None if model == "bicubic" else round(macs[model])}
        print(f"{model}: mean {mean[model]['psnr_y']:.2f} dB, SSIM {mean[model]['ssim_y']:.4f}")
    write_benchmark_record(args.out, "lway_rt.model-choice/1", load_start, crop=args.crop, photos=list(PHOTOS),
                           degradation="x4 bicubic downscale (8-bit)", mean=mean, rows=rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
