"""The upscale demo (``lway_rt.demo``, behind ``lwayrt demo``) at tiny size: one bundled photo,
the 0.6 M-parameter pretrained model, a 96-px crop. Its numbers must be the written images' scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lway_rt.errors import InputError


def test_upscale_demo_scores_what_it_writes(tmp_path):
    from lway_rt.demo import DemoConfig, run_upscale_demo
    from lway_rt.metrics import psnr_y, ssim_y

    cfg = DemoConfig(out_dir=tmp_path / "demo", photos=("chelsea",), models=("realesr-animevideov3",), crop=96)
    logs: list[str] = []
    res = run_upscale_demo(cfg, log=logs.append)
    out = tmp_path / "demo"
    summary = json.loads((out / "results.json").read_text())
    assert res.methods == ["bicubic", "realesr-animevideov3"]
    assert set(summary["mean"]) == {"bicubic", "realesr-animevideov3"}
    hr = np.asarray(Image.open(out / "chelsea_hr.png"))
    lr = np.asarray(Image.open(out / "chelsea_lr.png"))
    assert hr.shape == (96, 96, 3) and lr.shape == (24, 24, 3)
    for method in ("bicubic", "realesr-animevideov3"):
        img = np.asarray(Image.open(out / f"chelsea_{method}.png"))
        assert img.shape == hr.shape
        assert summary["photos"][0]["psnr"][method] == pytest.approx(psnr_y(img, hr, crop_border=4), abs=1e-6)
        assert summary["photos"][0]["ssim"][method] == pytest.approx(ssim_y(img, hr, crop_border=4), abs=1e-6)
    # a real SR network is not bicubic: it sharpens (different image, finite score)
    sr = np.asarray(Image.open(out / "chelsea_realesr-animevideov3.png")).astype(np.float32)
    bic = np.asarray(Image.open(out / "chelsea_bicubic.png")).astype(np.float32)
    assert np.abs(sr - bic).mean() > 1.0
    assert 15.0 < summary["mean"]["realesr-animevideov3"]["psnr"] < 60.0
    strip = np.asarray(Image.open(out / "chelsea_compare.png"))
    assert strip.shape[1] >= 4 * 96  # LR, bicubic, SR, HR side by side
    assert any("chelsea" in line for line in logs)


@pytest.mark.parametrize("kw, match", [
    (dict(photos=("lena",)), "unknown demo photo"),
    (dict(crop=90), "multiple of 4"),
    (dict(crop=32), "at least 64"),
    (dict(models=()), "at least one"),
])
def test_demo_config_refuses_bad_settings(kw, match, tmp_path):
    from lway_rt.demo import DemoConfig

    with pytest.raises(InputError, match=match):
        DemoConfig(out_dir=tmp_path, **kw)


def test_demo_refuses_a_model_of_another_scale(tmp_path):
    from lway_rt.demo import DemoConfig, run_upscale_demo

    with pytest.raises(InputError, match="x4"):
        run_upscale_demo(DemoConfig(out_dir=tmp_path, photos=("chelsea",), models=("realesr-animevideov3",), crop=96,
                                    scale=2), log=lambda m: None)
