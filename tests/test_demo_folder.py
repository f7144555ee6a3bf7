"""The demo's --out folder (``lway_rt.demo``): which files are the demo's, what a rerun removes, and what is checked
before the folder is touched. Mostly the folder functions alone; the demo itself only at its smallest size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lway_rt.errors import InputError, ModelError


def _quiet(msg):
    pass


def _tiny_model(path, scale=4):
    from lway_rt.archs.srvgg import SRVGGNetCompact

    torch.manual_seed(0)
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=scale).state_dict(), path)
    return path


def _files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _earlier_demo(out, files=("chelsea_hr.png", "results.json")):
    """A folder a finished demo wrote: its files, listed in its manifest."""
    from lway_rt.demo import MANIFEST

    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("demo's")
    (out / MANIFEST).write_text(json.dumps({"files": list(files), "complete": True}))


def _legacy_results(out, photos=("chelsea",), models=("realesr-animevideov3",)):
    """The results.json of a demo from before the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {"config": {"out_dir": str(out), "photos": list(photos), "models": list(models), "crop": 64, "scale": 4},
               "metric": "Y-PSNR", "models": {},
               "photos": [{"photo": p, "psnr": {m: 30.0 for m in ("bicubic", *models)}, "ssim": {}, "seconds": {},
                           "files": {}} for p in photos],
               "mean": {}}
    (out / "results.json").write_text(json.dumps(summary))


# 1. a folder without a manifest: only the names that demo writes are its own


def test_a_folder_without_manifest_is_taken_only_with_nothing_but_the_demos_names_in_it(tmp_path):
    from lway_rt.demo import claim_out_dir

    out = tmp_path / "old"
    _legacy_results(out, models=("realesr-animevideov3", "/models/tiny_x4.pth"))
    demo = ["chelsea_hr.png", "chelsea_lr.png", "chelsea_bicubic.png", "chelsea_realesr-animevideov3.png",
            "chelsea_/models/tiny_x4.pth.png",  # how older demos named a model given as a path
            "chelsea_compare.png",
            "adapt/results.json", "adapt/chelsea_compare.png", "adapt/hr/chelsea.png", "adapt/lr/chelsea.png",
            "adapt/run/adapted.safetensors", "adapt/run/sr/chelsea.png", "adapt/identity_control/report.json",
            "deploy/results.json", "deploy/serve_bench.json", "deploy/adapted.sr.fp32.abc.onnx",
            "deploy/adapted.sr.fp32.abc.json"]
    for name in demo:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("demo's")
    (out / "adapt" / "results.json").write_text(json.dumps(
        {"config": {"photos": ["chelsea"]}, "metric": "Y-PSNR", "psnr": {"chelsea": {}}, "ssim": {}, "mean_psnr": {}}))
    (out / "deploy" / "results.json").write_text(json.dumps(
        {"onnx": {"fp32": "/elsewhere/adapted.sr.fp32.abc.onnx"}, "parity": {}, "serve_bench": []}))
    for mine in ("notes.txt", "mine/data.txt", "adapt/notes.txt", "deploy/mine.onnx", "coffee_hr.png"):
        (out / mine).parent.mkdir(parents=True, exist_ok=True)
        (out / mine).write_text("mine")
        with pytest.raises(InputError, match=r"not a demo's \(e.g. " + mine.replace(".", r"\.")):
            claim_out_dir(out, log=_quiet)
        assert (out / mine).read_text() == "mine" and all((out / n).is_file() for n in demo)
        (out / mine).unlink()
    (out / "mine").rmdir()
    logs = []
    claim_out_dir(out, log=logs.append)  # nothing but the older demo's names: taken, its files removed
    assert _files(out) == [".lwayrt-demo.json"] and any("removed the" in m for m in logs)


# 2, 3. every model loaded and checked before the folder is claimed


@pytest.mark.parametrize("kind, error, match", [
    ("unreadable", ModelError, "is a PyTorch checkpoint that cannot be read"),
    ("onnx", ModelError, "ONNX"),
    ("x2", InputError, "is x2; the demo compares x4 models"),
    ("adapt-x2", InputError, "--adapt-model .* is x2; the adaptation step adapts x4 models"),
])
def test_a_model_that_cannot_run_is_refused_before_the_earlier_demos_files_are_removed(tmp_path, kind, error, match):
    from lway_rt.adapt.demo import AdaptDemoConfig
    from lway_rt.demo import DemoConfig, run_demo

    out = tmp_path / "demo"
    out.mkdir()
    _earlier_demo(out)
    model, adapt_model = "realesr-animevideov3", "realesr-animevideov3"
    if kind == "unreadable":
        model = tmp_path / "bad.pth"
        model.write_bytes(b"\x80\x02garbage" * 10)
    elif kind == "onnx":
        model = tmp_path / "net.onnx"
        model.write_bytes(b"\x08\x07onnx")
    elif kind == "x2":
        model = _tiny_model(tmp_path / "tiny_x2.pth", scale=2)
    else:
        adapt_model = str(_tiny_model(tmp_path / "tiny_x2.pth", scale=2))
    adapt_config = None
    if kind == "adapt-x2":
        from lway_rt.degae import Stage1, save_stage1

        save_stage1(tmp_path / "s1.safetensors",
                    Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=4).freeze())
        adapt_config = AdaptDemoConfig(out_dir=out / "adapt", photos=("chelsea",), model=adapt_model, crop=128,
                                       iterations=1, stage1=str(tmp_path / "s1.safetensors"))
    with pytest.raises(error, match=match):
        run_demo(DemoConfig(out_dir=out, photos=("chelsea",), models=(str(model),), crop=64), adapt_config, log=_quiet)
    assert _files(out) == [".lwayrt-demo.json", "chelsea_hr.png", "results.json"]  # the earlier demo's, untouched


# 4. a model given as a file: named by its stem, not by its path


def test_model_labels_are_safe_file_names_and_unique():
    from lway_rt.demo import model_labels

    assert model_labels(["realesr-animevideov3", "/a/tiny_x4.pth", "/b/tiny_x4.safetensors", "runs/adapted/",
                         "C:\\m\\odd name.pth", "/x/hr.pth"]) == {
        "realesr-animevideov3": "realesr-animevideov3", "/a/tiny_x4.pth": "tiny_x4",
        "/b/tiny_x4.safetensors": "tiny_x4-2", "runs/adapted/": "adapted", "C:\\m\\odd name.pth": "odd_name",
        "/x/hr.pth": "hr-2"}


def test_a_model_given_as_a_path_names_files_by_its_stem_and_results_keep_the_path(tmp_path):
    from lway_rt.demo import MANIFEST, DemoConfig, run_demo, upscale_demo_files

    model = str(_tiny_model(tmp_path / "tiny_x4.pth"))
    out = tmp_path / "demo"
    config = DemoConfig(out_dir=out, photos=("chelsea",), models=(model,), crop=64)
    result, _, _ = run_demo(config, log=_quiet)
    assert result.methods == ["bicubic", "tiny_x4"]
    assert all(p.parent == out for p in out.iterdir()) and not any(p.is_dir() for p in out.iterdir())
    assert (out / "chelsea_tiny_x4.png").is_file() and "chelsea_tiny_x4.png" in upscale_demo_files(config)
    summary = json.loads((out / "results.json").read_text())
    assert summary["models"]["tiny_x4"]["model"] == model and summary["config"]["models"] == [model]
    assert json.loads((out / MANIFEST).read_text())["files"] == sorted(p.name for p in out.iterdir()
                                                                        if p.name != MANIFEST)


# 5. a crop larger than a photo, refused before anything


def test_demo_config_refuses_a_crop_larger_than_a_photo(tmp_path):
    from lway_rt.demo import DemoConfig

    with pytest.raises(InputError, match=r"--crop 320 is larger than photo chelsea \(451x300\): use at most 300"):
        DemoConfig(out_dir=tmp_path, photos=("astronaut", "chelsea"), crop=320)
    DemoConfig(out_dir=tmp_path, photos=("chelsea",), crop=300)


# 6. what a step wrote is the demo's, not a file the user saved into the folder meanwhile


@pytest.mark.parametrize("complete", [True, False])
def test_a_file_the_user_saves_during_a_run_is_not_recorded_as_the_demos(tmp_path, complete):
    from lway_rt.demo import MANIFEST, begin_step, claim_out_dir, record_out_dir

    out = tmp_path / "demo"
    claim_out_dir(out, log=_quiet)
    begin_step(out, ["chelsea_hr.png", "results.json"])
    (out / "chelsea_hr.png").write_text("demo's")
    (out / "notes.txt").write_text("mine")  # saved while the demo runs
    begin_step(out, ["adapt/results.json", "adapt/chelsea_compare.png", "adapt/hr/chelsea.png", "adapt/lr/chelsea.png",
                     "adapt/run", "adapt/identity_control"])  # what the adaptation step writes
    (out / "adapt" / "hr").mkdir(parents=True)
    (out / "adapt" / "hr" / "chelsea.png").write_text("demo's")
    (out / "adapt" / "todo.txt").write_text("mine")
    record_out_dir(out, complete=complete)
    assert json.loads((out / MANIFEST).read_text())["files"] == ["adapt/hr/chelsea.png", "chelsea_hr.png"]
    for mine in ("notes.txt", "adapt/todo.txt"):
        with pytest.raises(InputError, match="not a demo's"):
            claim_out_dir(out, log=_quiet)
        assert (out / mine).read_text() == "mine"
        (out / mine).unlink()
    claim_out_dir(out, log=_quiet)
    assert _files(out) == [MANIFEST]


# 7. the user's empty folders stay; only those the removal emptied go


def test_a_rerun_keeps_the_users_empty_folders(tmp_path):
    from lway_rt.demo import claim_out_dir

    out = tmp_path / "demo"
    out.mkdir()
    _earlier_demo(out, ["chelsea_hr.png", "adapt/run/sr/chelsea.png", "deploy/results.json"])
    (out / "empty").mkdir()
    (out / "adapt" / "keep").mkdir()
    claim_out_dir(out, log=_quiet)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [".lwayrt-demo.json", "adapt", "adapt/keep",
                                                                       "empty"]


# 8. the manifest's temporary file of a killed demo does not block the rerun


def test_a_leftover_temporary_manifest_of_a_killed_demo_does_not_block_the_rerun(tmp_path):
    from lway_rt.demo import MANIFEST, claim_out_dir
    from lway_rt.io.weights import temp_prefix

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    out = tmp_path / "demo"
    out.mkdir()
    _earlier_demo(out)
    mine = temp_prefix(MANIFEST)
    leftovers = [out / f"{mine.replace(f'p{os.getpid()}.', f'p{gone.pid}.')}x1y2z3.tmp",  # its writer is gone
                 out / f"{mine}a1b2c3.tmp"]  # a writer that seems alive (a process id used again): still the demo's
    for f in leftovers:
        f.write_text('{"files": [')
    claim_out_dir(out, log=_quiet)
    assert _files(out) == [MANIFEST]


# 9. a photo given twice is one; --deploy without adaptation says it does not run


def test_photos_given_twice_are_one(tmp_path):
    from lway_rt.adapt.demo import AdaptDemoConfig
    from lway_rt.demo import DemoConfig, upscale_demo_files

    config = DemoConfig(out_dir=tmp_path, photos=("chelsea", "coffee", "chelsea"),
                        models=("realesr-animevideov3", "realesr-animevideov3"), crop=64)
    assert config.photos == ("chelsea", "coffee") and config.models == ("realesr-animevideov3",)
    assert len(upscale_demo_files(config)) == len(set(upscale_demo_files(config))) == 2 * 5 + 1
    assert AdaptDemoConfig(out_dir=tmp_path, photos=("chelsea", "chelsea"), crop=128).photos == ("chelsea",)


def test_deploy_with_no_adapt_says_it_does_not_run(tmp_path):
    from click.testing import CliRunner

    from lway_rt.cli import main

    args = ["demo", "--photo", "chelsea", "--model", "realesr-animevideov3", "--crop", "64", "--no-adapt"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a"), "--deploy"])
    assert res.exit_code == 0 and "note: --deploy exports the adapted network" in res.output, res.output
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])  # --deploy by default: no note
    assert res.exit_code == 0 and "note:" not in res.output, res.output


def test_adaptation_options_with_no_adapt_are_refused(tmp_path):
    """--no-adapt ran without a word about --stage1 /nonexist --adapt-crop 7 (every adaptation option was ignored)."""
    from click.testing import CliRunner

    from lway_rt.cli import main

    args = ["demo", "--photo", "chelsea", "--model", "realesr-animevideov3", "--crop", "64", "--no-adapt",
            "--out", str(tmp_path / "d")]
    for extra, named in ((["--stage1", str(tmp_path / "none.safetensors"), "--adapt-crop", "7"],
                          "--adapt-crop and --stage1 are"),
                         (["--preset", "box-downscale"], "--preset is"), (["--iterations", "5"], "--iterations is"),
                         (["--adapt-model", "realsr-df2k-x4"], "--adapt-model is")):
        res = CliRunner().invoke(main, [*args, *extra])
        assert res.exit_code == 1 and res.output.startswith(f"error: {named} for the adaptation step, which "
                                                            "--no-adapt leaves out: drop "), res.output
        assert len(res.output.splitlines()) == 1 and not (tmp_path / "d").exists(), res.output


def test_an_empty_model_name_names_the_option_given(tmp_path):
    """demo --model '' said "pass -m with a name", an option demo does not have."""
    from click.testing import CliRunner

    from lway_rt.cli import main
    from lway_rt.errors import ModelError
    from lway_rt.io.store import resolve_model_path

    for option in ("--model", "--adapt-model"):
        res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), option, ""])
        assert res.exit_code == 2 and f"'{option}': is empty: name a model or its file" in res.output, res.output
        assert "-m " not in res.output and not (tmp_path / "d").exists(), res.output
    with pytest.raises(ModelError) as err:  # the library's own word, for any caller: no option named
        resolve_model_path("")
    assert "-m" not in str(err.value) and "no model given (an empty name)" in str(err.value)


def test_demo_takes_photos_comma_separated_and_o_for_out(tmp_path):
    """The help's default list looks comma-separated, but 'astronaut,chelsea' was an unknown photo; adapt and upscale
    take -o, demo took only --out."""
    from click.testing import CliRunner

    from lway_rt.cli import main

    res = CliRunner().invoke(main, ["demo", "--photo", "chelsea,coffee", "--model", "realesr-animevideov3", "--crop", "64",
                                    "--no-adapt", "-o", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "d" / "chelsea_hr.png").is_file() and (tmp_path / "d" / "coffee_hr.png").is_file()


def test_compare_strip_captions_stay_over_their_own_picture():
    """With --crop 64 the captions of the compare strip ran into each other, unreadable (review 50A A1): a caption
    wider than its picture takes more lines, and a word wider than it is cut; none reaches into a gap or a neighbour."""
    import numpy as np

    from lway_rt.demo import _labelled_strip

    w, gap = 64, 4
    labels = ["LR x4 (nearest)", "bicubic 22.10 dB", "realesr-animevideov3 23.45 dB", "HR (ground truth)"]
    strip = _labelled_strip([np.full((w, w, 3), 255, np.uint8)] * 4, labels)
    band = strip.shape[0] - w
    assert band > 22  # (two lines)
    ink = (strip[:band] < 128).any(axis=(0, 2))
    for i in range(1, 4):
        start = i * (w + gap)
        assert not ink[start - gap - 2:start].any(), f"a caption runs into the gap before picture {i}"
    assert all(ink[i * (w + gap):i * (w + gap) + w].any() for i in range(4))
    wide = _labelled_strip([np.full((256, 256, 3), 255, np.uint8)] * 4, labels)
    assert wide.shape[0] - 256 == 22  # one line where they fit, as before
    # every letter kept: names cut short had made realesrgan-x4plus and realesrgan-x4plus-anime alike (50L L4)
    from PIL import Image, ImageDraw

    from lway_rt.demo import _label_lines

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for label in (*labels, "realesrgan-x4plus 22.10 dB", "realesrgan-x4plus-anime 21.00 dB", "x" * 40):
        lines = _label_lines(draw, label, w - 8)
        assert "".join(lines).replace(" ", "") == label.replace(" ", ""), lines
        assert all(draw.textlength(line) <= w - 8 for line in lines), lines


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_a_missing_deploy_package_is_said_before_the_demos_steps(tmp_path, monkeypatch, missing):
    """With the models and samples extras but not onnx, the demo ran its upscale and adaptation steps (minutes) and
    then failed at the deploy step advising export's own way out, "keep using the torch backend" (review 56B6)."""
    from click.testing import CliRunner

    from lway_rt.cli import main

    monkeypatch.setitem(sys.modules, missing, None)  # as an install without the onnx extra has it
    out = tmp_path / "d"
    res = CliRunner().invoke(main, ["demo", "--photo", "chelsea", "--model", "realesr-animevideov3", "--crop", "64",
                                    "--out", str(out)])
    last = res.output.strip().splitlines()[-1]  # (after the model's first import into the store, if said)
    assert res.exit_code == 1 and last.startswith(f"error: the demo's deploy step (ONNX export, ONNX Runtime) needs the "
                                                  f"'{missing}' package"), res.output
    assert "pass --no-deploy" in res.output and "torch backend" not in res.output and not out.exists(), res.output


def test_the_deploy_step_keeps_its_numbers_without_matplotlib(tmp_path, monkeypatch):
    """Without the plot extra the deploy step timed both backends and then failed on the chart, its serve_bench.json
    and results.json never written (review 56B7): the numbers are kept, the picture said to be left out."""
    from lway_rt.deploy_demo import DeployDemoConfig, run_deploy_demo
    from lway_rt.io.images import write_image
    from lway_rt.io.store import load_model
    from lway_rt.upscale import upscale_rgb
    from lway_rt.runtime.tiling import TileConfig
    import numpy as np

    weights = _tiny_model(tmp_path / "tiny.pth")
    desc = load_model(str(weights))
    lr, sr = tmp_path / "lr", tmp_path / "sr"
    lr.mkdir()
    sr.mkdir()
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    write_image(lr / "a.png", img)
    with torch.inference_mode():
        write_image(sr / "a.png", np.clip(upscale_rgb(desc, img, TileConfig(0)), 0, 1))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    said = []
    result = run_deploy_demo(DeployDemoConfig(weights=weights, lr_dir=lr, sr_dir=sr, out_dir=tmp_path / "deploy",
                                              bench_size=16, bench_seconds=0.05), log=said.append)
    assert (tmp_path / "deploy" / "serve_bench.json").is_file() and (tmp_path / "deploy" / "results.json").is_file()
    assert not (tmp_path / "deploy" / "serve_bench.png").exists() and result.bench
    assert any("no serve_bench.png: matplotlib is not installed" in line for line in said), said


def test_the_demos_lines_keep_square_brackets(tmp_path):
    """The demo's lines went through rich's markup: a step's advice (pip install 'lway_rt[plot]') and a folder named
    out[plot] lost their brackets (review 56E4)."""
    from click.testing import CliRunner

    from lway_rt.cli import main

    out = tmp_path / "out[plot]"
    res = CliRunner().invoke(main, ["demo", "--photo", "chelsea", "--model", "realesr-animevideov3", "--crop", "64",
                                    "--no-adapt", "--out", str(out)])
    assert res.exit_code == 0 and f"results.json are in {out.resolve()}" in " ".join(res.output.split()), res.output
    # progress on standard error, results on standard output, as every command prints them (56K3)
    assert "chelsea: bicubic" in res.stderr and "chelsea: bicubic" not in res.stdout, (res.stdout, res.stderr)
    assert "x4 super-resolution, Y-PSNR" in res.stdout


def test_a_demo_that_cannot_adapt_says_so_before_its_steps(tmp_path, monkeypatch):
    """Without the models extra and with models of the user's, the demo wrote its whole upscale step and then failed
    at the adaptation step: stage 1's trunk comes from a packaged model (56K1)."""
    from click.testing import CliRunner

    from lway_rt.cli import main
    from lway_rt.io.store import SOURCES

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "home"))  # an empty store: the package would be read
    for package in {src.package for src in SOURCES.values()}:
        monkeypatch.setitem(sys.modules, package, None)  # as an install without the models extra has it
    mine = _tiny_model(tmp_path / "mine.pth")
    out = tmp_path / "d"
    res = CliRunner().invoke(main, ["demo", "--photo", "chelsea", "-m", str(mine), "--adapt-model", str(mine),
                                    "--crop", "64", "--no-deploy", "--out", str(out)])
    assert res.exit_code == 1 and "error: the adaptation step: stage 1's degradation encoder starts with the first " \
        "layers of realesr-animevideov3" in res.output and res.output.rstrip().endswith("or pass --no-adapt"), res.output
    assert not out.exists()
