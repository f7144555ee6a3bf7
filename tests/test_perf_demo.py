"""The upscale demo (``lway_rt.demo``, behind ``lwayrt demo``) at tiny size: one bundled photo,
the 0.6 M-parameter pretrained model, a 96-px crop. Its numbers must be the written images' scores."""

from __future__ import annotations

import json
import os
import threading
import time

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


def _small(out, photo="chelsea"):
    from lway_rt.demo import DemoConfig

    return DemoConfig(out_dir=out, photos=(photo,), models=("realesr-animevideov3",), crop=64)


def test_demo_refuses_a_folder_of_the_users_files_and_touches_nothing(tmp_path):
    from click.testing import CliRunner

    from lway_rt.cli import main
    from lway_rt.demo import run_demo

    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.json").write_text('{"my": "numbers"}')
    (out / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match="not a demo's"):
        run_demo(_small(out), log=lambda m: None)
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--photo", "chelsea", "--model", "realesr-animevideov3",
                                    "--crop", "64", "--no-adapt"])
    assert res.exit_code != 0 and "choose a new or empty folder" in res.output and "Traceback" not in res.output
    assert (out / "results.json").read_text() == '{"my": "numbers"}'
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "results.json"]
    (out / "results.json").unlink()
    (out / "notes.txt").unlink()
    run_demo(_small(out), log=lambda m: None)  # an empty folder is taken
    assert (out / "results.json").is_file()


def test_demo_rerun_replaces_its_own_files_and_refuses_the_users(tmp_path):
    from lway_rt.demo import MANIFEST, run_demo

    out = tmp_path / "demo"
    run_demo(_small(out, "chelsea"), log=lambda m: None)
    listed = json.loads((out / MANIFEST).read_text())
    assert listed["complete"] and "chelsea_hr.png" in listed["files"] and "results.json" in listed["files"]
    logs: list[str] = []
    run_demo(_small(out, "coffee"), log=logs.append)
    names = {p.name for p in out.iterdir()}
    assert "coffee_hr.png" in names and not any(n.startswith("chelsea_") for n in names)  # no stale run beside it
    assert any("removed the" in m for m in logs)
    # files of the user's put into the demo's folder afterwards: under a name the demo writes, or any other
    for name in ("astronaut_hr.png", "my_notes.txt"):
        (out / name).write_text("mine")
        with pytest.raises(InputError, match="not a demo's"):
            run_demo(_small(out, "astronaut"), log=lambda m: None)
        assert (out / name).read_text() == "mine" and (out / "coffee_hr.png").is_file()
        (out / name).unlink()


def test_demo_checks_its_models_before_touching_the_folder(tmp_path):
    from lway_rt.demo import DemoConfig, run_demo
    from lway_rt.errors import ModelError

    out = tmp_path / "demo"
    with pytest.raises(ModelError, match="unknown model 'nosuch'"):
        run_demo(DemoConfig(out_dir=out, photos=("chelsea",), models=("nosuch",), crop=64), log=lambda m: None)
    assert not out.exists()


def test_demo_rerun_after_a_stopped_demo_clears_its_partial_files_only(tmp_path):
    from lway_rt.demo import MANIFEST, begin_step, claim_out_dir, run_demo

    out = tmp_path / "demo"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    with pytest.raises(InputError):  # a folder of the user's files is refused ...
        claim_out_dir(out, log=lambda m: None)
    (out / "mine.txt").unlink()
    claim_out_dir(out, log=lambda m: None)  # ... an empty one is claimed; the demo is then stopped part-way:
    begin_step(out, ["rocket_hr.png", "results.json"])
    (out / "rocket_hr.png").write_bytes(b"done")  # a first step finished ...
    begin_step(out, ["adapt"])
    (out / "adapt" / "run").mkdir(parents=True)  # ... and the next one was cut short
    (out / "adapt" / "run" / "x.png").write_bytes(b"partial")
    (out / ".results.json.abc123.tmp").write_bytes(b"")  # a name it did not reach in that step: refused below
    record = json.loads((out / MANIFEST).read_text())
    assert not record["complete"] and record["files"] == ["rocket_hr.png"] and record["pending"] == ["adapt"]
    with pytest.raises(InputError, match="not a demo's"):
        run_demo(_small(out, "chelsea"), log=lambda m: None)
    (out / ".results.json.abc123.tmp").unlink()
    # a file of the user's put in afterwards, or moved in with its older date into the step's folder, is theirs
    (out / "my_notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not a demo's \(e.g. my_notes.txt\)"):
        run_demo(_small(out, "chelsea"), log=lambda m: None)
    (out / "my_notes.txt").unlink()
    old = out / "adapt" / "old.png"
    old.write_text("mine")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    with pytest.raises(InputError, match="not a demo's"):
        run_demo(_small(out, "chelsea"), log=lambda m: None)
    assert old.read_text() == "mine" and (out / "adapt" / "run" / "x.png").is_file()
    old.unlink()
    run_demo(_small(out, "chelsea"), log=lambda m: None)  # only the stopped demo's files there: taken
    assert not (out / "rocket_hr.png").exists() and not (out / "adapt").exists()
    assert (out / "chelsea_hr.png").is_file() and json.loads((out / MANIFEST).read_text())["complete"]


def test_two_demos_into_one_folder_the_second_is_refused(tmp_path):
    from lway_rt.demo import run_demo
    from lway_rt.errors import OutputError
    from lway_rt.io.weights import exclusive_run

    out = tmp_path / "demo"
    done = threading.Event()
    release = threading.Event()

    def other_demo():  # holds the folder's lock as a running demo does
        with exclusive_run(tmp_path / ".demo.lock", "--out"):
            done.set()
            release.wait(30)

    t = threading.Thread(target=other_demo)
    t.start()
    try:
        assert done.wait(30)
        with pytest.raises(OutputError, match="another run is writing to .*demo right now"):
            run_demo(_small(out, "chelsea"), log=lambda m: None)
        assert not out.exists()
    finally:
        release.set()
        t.join()
    run_demo(_small(out, "chelsea"), log=lambda m: None)
    assert (out / "chelsea_hr.png").is_file() and not (tmp_path / ".demo.lock").exists()


def test_demo_takes_a_folder_written_before_the_manifest_and_an_unreadable_manifest_is_refused(tmp_path):
    from lway_rt.demo import MANIFEST, run_demo, run_upscale_demo

    out = tmp_path / "old"
    run_upscale_demo(_small(out, "chelsea"), log=lambda m: None)  # what an older demo left: no manifest
    assert not (out / MANIFEST).exists()
    run_demo(_small(out, "coffee"), log=lambda m: None)
    files = json.loads((out / MANIFEST).read_text())["files"]
    assert "coffee_hr.png" in files and not (out / "chelsea_hr.png").exists()  # the older demo's files were its own
    (out / MANIFEST).write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        run_demo(_small(out, "coffee"), log=lambda m: None)
    assert (out / "coffee_hr.png").is_file()
