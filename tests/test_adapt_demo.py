"""The adaptation step of the demo, at tiny size: real backbone, bundled photo, unseen preset."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from click.testing import CliRunner

from lway_rt.bench.schema import validate
from lway_rt.cli import main
from lway_rt.errors import InputError


def test_adapt_demo_scores_after_adapting(tmp_path):
    from lway_rt.adapt.demo import AdaptDemoConfig, run_adapt_demo
    from lway_rt.degae import Stage1, save_stage1
    from lway_rt.metrics import psnr_y

    s1 = Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=4).freeze()
    save_stage1(tmp_path / "s1.safetensors", s1)
    cfg = AdaptDemoConfig(out_dir=tmp_path / "demo", photos=("chelsea",), preset="motion-blur", crop=128, iterations=2,
                          stage1=str(tmp_path / "s1.safetensors"))
    logs = []
    res = run_adapt_demo(cfg, log=logs.append)
    out = tmp_path / "demo"
    summary = json.loads((out / "results.json").read_text())
    assert list(summary["mean_psnr"]) == ["bicubic", "unadapted", "identity control", "adapted"]
    assert (out / "identity_control" / "adapted.safetensors").is_file()
    assert (out / "run" / "contact_sheet.png").is_file() and (out / "chelsea_compare.png").is_file()
    # the numbers are the images' real scores
    hr = np.asarray(Image.open(out / "hr" / "chelsea.png"))
    sr = np.asarray(Image.open(out / "run" / "sr" / "chelsea.png"))
    assert res.psnr["chelsea"]["adapted"] == pytest.approx(psnr_y(sr, hr, 4), abs=1e-5)
    assert res.report["iterations_run"] == 2 and any("chelsea" in m for m in logs)
    assert summary["supervised_photos"] and "chelsea" not in summary["supervised_photos"]
    lr = np.asarray(Image.open(out / "lr" / "chelsea.png"))
    assert lr.shape == (32, 32, 3)


def test_the_demo_does_not_train_on_the_photos_it_scores(tmp_path):
    """The supervised term's default clean photos (stage 1's) hold astronaut and rocket, two of the photos the demo
    scores: it fitted the network to clean crops of the ground truth that then scored it. The demo gives the term
    the others only, and records them."""
    from lway_rt.adapt.demo import supervised_photos_apart
    from lway_rt.degae.data import BUNDLED_TRAIN

    assert {"astronaut", "rocket"} <= set(BUNDLED_TRAIN)
    names = supervised_photos_apart(("astronaut", "chelsea", "coffee", "rocket"), tmp_path)
    assert names and not {"astronaut", "rocket"} & set(names)
    assert sorted(p.stem for p in tmp_path.iterdir()) == sorted(names)
    (tmp_path / "m").mkdir()
    assert "motorcycle_right" not in supervised_photos_apart(("motorcycle_left",), tmp_path / "m")  # one scene


def test_adapt_demo_config_refuses_unknown_preset(tmp_path):
    from lway_rt.adapt.demo import AdaptDemoConfig

    with pytest.raises(InputError, match="motion-blur"):
        AdaptDemoConfig(out_dir=tmp_path, preset="fog")
    # a crop no photo holds is refused before minutes of adaptation, not after them
    with pytest.raises(InputError, match=r"--adapt-crop 1024 is larger than photo astronaut \(512x512\): use at most 512"):
        AdaptDemoConfig(out_dir=tmp_path, photos=("astronaut",), crop=1024)


def test_adapt_demo_refuses_a_model_of_another_scale_before_any_work(tmp_path):
    """An x2 --adapt-model ended in a ValueError traceback after both adaptations had run (the step is x4 throughout)."""
    from lway_rt.adapt.demo import AdaptDemoConfig, run_adapt_demo
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.degae import Stage1, save_stage1

    torch = pytest.importorskip("torch")
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).state_dict(), tmp_path / "tiny_x2.pth")
    save_stage1(tmp_path / "s1.safetensors",
                Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=4).freeze())
    cfg = AdaptDemoConfig(out_dir=tmp_path / "demo", photos=("chelsea",), model=str(tmp_path / "tiny_x2.pth"),
                          crop=128, iterations=1, stage1=str(tmp_path / "s1.safetensors"))
    logs = []
    with pytest.raises(InputError, match=r"^--adapt-model .*tiny_x2.pth is x2; the adaptation step adapts x4 models: "
                                         r"pass an x4 one"):
        run_adapt_demo(cfg, log=logs.append)
    assert not (tmp_path / "demo").exists() and logs == []


def test_lwayrt_demo_tells_the_whole_story_at_tiny_size(tmp_path):
    from lway_rt.degae import Stage1, save_stage1

    s1 = Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=5).freeze()
    save_stage1(tmp_path / "s1.safetensors", s1)
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--photo", "coffee", "--model", "realesr-animevideov3",
                                    "--crop", "96", "--iterations", "2", "--adapt-crop", "128", "--preset",
                                    "box-downscale", "--stage1", str(tmp_path / "s1.safetensors")])
    assert res.exit_code == 0, res.output
    assert "adaptation of realesr-animevideov3 to 'box-downscale'" in res.output
    assert "identity control" in res.output
    # not a terminal (a log): each line whole, not wrapped at 80 columns
    assert any(re.fullmatch(r"coffee: bicubic [\d.]+ dB, realesr-animevideov3 [\d.]+ dB", line)
               for line in res.output.splitlines()), res.output
    assert "adaptation: realesr-animevideov3 on 1 crops degraded with 'box-downscale' (a degradation stage 1 never " \
           "trained on)" in res.output.splitlines(), res.output
    # the deployment step: the adapted network's ONNX files passed the gate, the file gives adapt's images, and
    # serve-bench verified and timed both backends
    deploy = json.loads((out / "deploy" / "results.json").read_text())
    assert set(deploy["onnx"]) == {"fp32", "fp16"} and all(Path(p).is_file() for p in deploy["onnx"].values())
    assert all(line.startswith("parity passed") for line in deploy["parity"].values())
    assert deploy["onnx_max_levels"] <= 1
    assert [r["backend"] for r in deploy["serve_bench"]] == ["torch", "ort-cpu"]
    assert all(r["psnr_db"] >= 50 and r["images_per_s"] > 0 for r in deploy["serve_bench"])
    assert validate(json.loads((out / "deploy" / "serve_bench.json").read_text())) == []
    assert (out / "deploy" / "serve_bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "x PyTorch" in res.output and "within" in res.output
    for row in json.loads((out / "deploy" / "serve_bench.json").read_text())["results"]:  # e.g. unsteady timing
        assert not row.get("note") or row["note"] in res.output.replace("\n", " "), res.output
    assert (out / "results.json").is_file() and (out / "adapt" / "results.json").is_file()
    for name in ("results.json", "adapt/results.json", "deploy/results.json"):  # strict JSON: no NaN / Infinity
        json.loads((out / name).read_text(), parse_constant=lambda c: pytest.fail(f"{name} holds {c}"))
    summary = json.loads((out / "adapt" / "results.json").read_text())
    assert summary["config"]["iterations"] == 2 and list(summary["psnr"]) == ["coffee"]
    assert (out / "adapt" / "coffee_compare.png").is_file() and (out / "adapt" / "run" / "contact_sheet.png").is_file()
    record = json.loads((out / ".lwayrt-demo.json").read_text())  # every step's files are listed as the demo's
    assert record["complete"] and {"results.json", "adapt/results.json", "deploy/results.json"} <= set(record["files"])


def test_a_stopped_demo_says_to_run_it_again_and_the_rerun_takes_its_folder(tmp_path):
    """SIGTERM during the adaptation step: exit 143 at once and the demo's own advice (not adapt's --resume, which the
    demo has no option for; nor does it wait to save the step in hand, as adapt does); its folder lists the finished step's files and the step it was in, and a rerun takes it."""
    from lway_rt.degae import Stage1, save_stage1

    s1 = Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=5).freeze()
    save_stage1(tmp_path / "s1.safetensors", s1)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--photo", "coffee", "--model", "realesr-animevideov3", "--crop", "96",
            "--adapt-crop", "128", "--preset", "box-downscale", "--stage1", str(tmp_path / "s1.safetensors")]
    proc = subprocess.Popen([sys.executable, "-c", "from lway_rt.cli import main; main()", *args, "--iterations", "2000"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not (out / "adapt" / "run" / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        text = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 143, text
    assert "demo interrupted: run it again with the same --out" in text and "--resume" not in text, text
    assert "stopping after the step in hand" not in text, text  # at once: no step is saved for a run never resumed
    record = json.loads((out / ".lwayrt-demo.json").read_text())
    # stopped, the demo listed what it had written by name, the running step's files too: nothing is left to date
    assert not record["complete"] and record["pending"] == [] and "coffee_hr.png" in record["files"]
    assert "adapt/run/checkpoint.pt" in record["files"] and "adapt/run/config.json" in record["files"]
    for mine in (out / "mine.txt", out / "adapt" / "notes.txt", out / "adapt" / "run" / "mine" / "data.txt"):
        mine.parent.mkdir(exist_ok=True)
        mine.write_text("mine")  # put there after the stop, also inside the stopped step's folder: refused
        res = CliRunner().invoke(main, [*args, "--iterations", "2"])
        assert res.exit_code == 1 and f"not a demo's (e.g. {mine.relative_to(out)})" in res.output, res.output
        assert mine.read_text() == "mine"
        mine.unlink()
    res = CliRunner().invoke(main, [*args, "--iterations", "2", "--no-deploy"])  # (the deploy step is tested above)
    assert res.exit_code == 0 and "removed the" in res.output, res.output
    assert json.loads((out / ".lwayrt-demo.json").read_text())["complete"]
    assert json.loads((out / "adapt" / "results.json").read_text())["config"]["iterations"] == 2


def test_a_stop_in_the_demos_adaptation_does_not_wait_to_save_the_step(tmp_path, monkeypatch):
    """adapt lets a first stop finish the step in hand and saves it for --resume; the demo is never resumed (it starts
    over), so a stop there is at once, without that save or its message."""
    import lway_rt.adapt.loop as loop
    from lway_rt.degae import Stage1, save_stage1

    s1 = Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=5).freeze()
    save_stage1(tmp_path / "s1.safetensors", s1)
    real, calls = loop.fast_adapt_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "fast_adapt_step", step)
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--photo", "coffee", "--model", "realesr-animevideov3",
                                    "--crop", "96", "--adapt-crop", "128", "--preset", "box-downscale", "--no-deploy",
                                    "--stage1", str(tmp_path / "s1.safetensors"), "--iterations", "10"])
    assert res.exit_code == 143 and "demo interrupted: run it again" in res.output, res.output
    assert "stopping after the step in hand" not in res.output and len(calls) == 3, res.output
    assert not (out / "adapt" / "run" / "checkpoint.pt").exists()


def test_demo_bad_out_or_stage1_is_one_line_before_any_work(tmp_path):
    """--out in a folder that takes no files ended in a FileNotFoundError traceback from the run lock; a --stage1
    that does not exist was found only after the comparison step's minutes."""
    small = ["--model", "realesr-animevideov3", "--adapt-model", "realesr-animevideov3"]
    res = CliRunner().invoke(main, ["demo", "--out", "/proc/lwayrt-demo", "--no-adapt", "--no-deploy", *small[:2]])
    assert res.exit_code == 1 and res.output.splitlines()[-1].startswith("error: cannot write to /proc: ") \
        and "choose another --out" in res.output and "Traceback" not in res.output, res.output
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "--stage1", str(tmp_path / "gone.safetensors"),
                                    *small])
    assert res.exit_code == 1 and "gone.safetensors does not exist" in res.output, res.output
    assert "adapting" not in res.output and not (tmp_path / "d").exists(), res.output


def test_demo_names_an_unfinished_stage1_checkpoint(tmp_path):
    """adapt and eval-degae note a stage-1 checkpoint written part-way through its training; the demo said nothing."""
    from lway_rt.degae import Stage1, save_stage1

    s1 = Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=4).freeze()
    s1.meta.update(iterations=70, recipe={"iters": 3000})
    save_stage1(tmp_path / "w4.safetensors", s1)
    res = CliRunner().invoke(main, ["demo", "--out", "/proc/lwayrt-demo", "--stage1", str(tmp_path / "w4.safetensors"),
                                    "--model", "realesr-animevideov3", "--adapt-model", "realesr-animevideov3"])
    assert res.exit_code == 1, res.output  # (refused for its --out after the checks: nothing is run)
    assert "was written at iteration 70 of 3000" in res.output, res.output


def test_demo_models_may_be_comma_separated_as_photos_are(tmp_path):
    """--model a,b as --model a --model b, as --photo takes them and as --help prints the default; a file whose name
    holds a comma is taken whole."""
    import torch

    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors

    torch.manual_seed(0)
    tiny = tmp_path / "tiny, x4.safetensors"
    save_safetensors(tiny, SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).state_dict(), {"name": "tiny"})
    out = tmp_path / "demo"
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--photo", "coffee", "--crop", "64", "--no-adapt",
                                    "--no-deploy", "--model", f"realesr-animevideov3,{tiny}"])
    assert res.exit_code == 1 and "unknown model" in res.output  # split: "tiny" and " x4.safetensors" are no models
    for option in ("--model", "--photo"):  # only commas: it ran the defaults, unsaid (review 48C C9)
        res = CliRunner().invoke(main, ["demo", "--out", str(out), "--no-adapt", "--no-deploy", option, ",,"])
        assert res.exit_code == 1 and f"{option} names nothing (only commas): name one or more, or leave {option} " \
            "out" in res.output and not out.exists(), res.output
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--photo", "coffee", "--crop", "64", "--no-adapt",
                                    "--no-deploy", "--model", "realesr-animevideov3,realesr-animevideov3", "--model",
                                    str(tiny)])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("coffee: "))
    assert line.count("realesr-animevideov3") == 1 and "tiny" in line, res.output


def test_a_folder_of_the_users_files_is_refused_before_any_model_loads(tmp_path, monkeypatch):
    """demo -o FOLDER holding the user's files imported and loaded its models (minutes on a first run) before it
    refused the folder (review 48C C10)."""
    import lway_rt.demo as demo_mod

    def loading(*args, **kwargs):
        raise AssertionError("a model was loaded before --out was checked")

    monkeypatch.setattr(demo_mod, "_load_demo_model", loading)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "photo.png").write_bytes(b"mine")
    res = CliRunner().invoke(main, ["demo", "--out", str(out), "--no-adapt", "--no-deploy"])
    assert res.exit_code == 1 and "holds 1 file(s) that are not a demo's (e.g. photo.png)" in res.output, res.output
    assert (out / "photo.png").read_bytes() == b"mine"
