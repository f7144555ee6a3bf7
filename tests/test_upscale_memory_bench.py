"""``benchmarks/upscale_memory.py``: one tiny image upscaled tiled and in one pass, each in its own ``lwayrt upscale``
process, records peak RSS figures that are real (positive, finite, above the baseline child's), the outputs those
runs wrote, and the tile layout ``upscale_tensor`` really uses. Runs in the session's private model store."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("upscale_memory")


@pytest.mark.slow
def test_a_tiny_run_records_real_peaks_above_the_baseline(bench, model_store, tmp_path):
    out = tmp_path / "memory.json"
    assert bench.main(["--sizes", "48", "--tiles", "32", "0", "--tile-overlap", "8", "--repeats", "1",
                       "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["memory.json"]  # written in place of a temporary file
    rec = json.loads(out.read_text())
    assert (model_store / "models" / "realesr-animevideov3.safetensors").exists()  # the private store, not the user's
    assert rec["format"] == bench.FORMAT and rec["command"].startswith("python benchmarks/upscale_memory.py --sizes 48")
    assert rec["date"] and "wait4" in rec["measurement"]
    assert rec["machine"]["cpu_model"] and rec["machine"]["logical_cores"] >= 1
    assert all(rec["packages"][p] for p in ("torch", "numpy", "Pillow"))
    assert rec["model"]["scale"] == 4 and rec["failures"] == []
    base = rec["baseline"]["peak_rss_mb"]
    assert math.isfinite(base) and base > 0

    rows = {r["tile"]: r for r in rec["rows"]}
    assert set(rows) == {32, 0}
    assert (rows[32]["tiles"], rows[32]["tile_px"]) == (4, [32, 32])  # really tiled: 2 x 2 tiles of 32 px
    assert (rows[0]["tiles"], rows[0]["tile_px"]) == (1, [48, 48])
    for tile, row in rows.items():
        assert row["input_size"] == [48, 48] and row["output_size"] == [192, 192]
        assert row["ok"] and row["outputs_checked"]
        assert f"--tile {tile}" in row["command"] and ("--tile-overlap 8" in row["command"]) == bool(tile)
        [run] = row["runs"]
        assert run["returncode"] == 0
        assert run["output_file"]["size"] == [192, 192] and run["output_file"]["bytes"] > 0
        for key in ("peak_rss_mb", "baseline_mb", "wall_s", "cpu_s"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["baseline_mb"] == base
        assert row["peak_rss_mb"] >= base  # the run does everything the baseline does, and then the image
        assert row["peak_rss_mb"] == round(run["peak_rss_kb"] / 1024, 1)
        per_px = row["bytes_per_output_pixel_above_baseline"]
        assert math.isfinite(per_px) and per_px >= 0
        # from the unrounded peaks: the two figures here are each rounded to 0.1 MB (off by up to 0.05 MB each)
        assert per_px == pytest.approx((row["peak_rss_mb"] - base) * 2**20 / 192**2, abs=0.1001 * 2**20 / 192**2)
    assert rec["per_tile_setting"] == {"tile_32": None, "one_pass": None}  # one size: no slope


@pytest.mark.parametrize("w,h,tile,overlap,multiple", [(48, 48, 32, 8, 1), (600, 600, 128, 32, 1), (150, 150, 128, 32, 1),
                                                       (90, 70, 40, 8, 4), (64, 64, 0, 32, 1), (300, 200, 512, 32, 2)])
def test_tile_layout_is_the_one_upscale_tensor_runs(bench, w, h, tile, overlap, multiple):
    from lway_rt.runtime.tiling import TileConfig, upscale_tensor

    seen = []

    def fn(x):
        seen.append(list(x.shape[-2:]))
        return x.repeat_interleave(2, -1).repeat_interleave(2, -2)

    upscale_tensor(fn, torch.zeros(1, 3, h, w), 2, TileConfig(tile, overlap), multiple=multiple)
    count, size = bench.tile_layout(w, h, tile, overlap, multiple)
    assert count == len(seen) and all(s == size for s in seen)


def test_sizes_slope_and_bad_tiles(bench, tmp_path):
    assert bench.image_size("64x48") == (64, 48) and bench.image_size("7") == (7, 7)
    for bad in ("0", "64x", "1x2x3", "ax4"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.image_size(bad)
    a, b = bench.slope([(1e5, 3e8 + 25 * 1e5), (4e5, 3e8 + 25 * 4e5), (9e5, 3e8 + 25 * 9e5)])
    assert a == pytest.approx(25) and b == pytest.approx(3e8)
    assert bench.slope([(5, 1), (5, 2)]) is None
    with pytest.raises(SystemExit) as stop:  # upscale would refuse --tile 16: a usage error before any run
        bench.main(["--tiles", "16", "--out", str(tmp_path / "x.json")])
    assert stop.value.code == 2 and not (tmp_path / "x.json").exists()
