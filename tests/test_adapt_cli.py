"""``lwayrt adapt`` end to end at tiny size: outputs, reloadable weights, bad input, kill and resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
from collections import Counter

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lway_rt.adapt.loop import CHECKPOINT, super_resolve
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.cli import main
from lway_rt.io.images import read_image, to_tensor, to_uint8
from lway_rt.io.store import load_model
from lway_rt.io.weights import save_safetensors, state_dict_sha256

from adapt_cli_common import (
    LONG_RUN, _digests, _long_run_stopped_after_a_checkpoint, _per_image_then_fewer, _replace_args, _run,
    _stop_before_the_first_step, _stopped_when, _stopping_on_call, make_files,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory, hr_crop):
    return make_files(tmp_path_factory, hr_crop)


def test_adapt_end_to_end_and_reload(files, tmp_path):
    out = tmp_path / "out"
    code, text = _run(["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out),
                       "--stage1", str(files / "stage1.safetensors"), "--iterations", "6", "--patch-size", "16",
                       "--batch-size", "2", "--snapshot-every", "3", "--lr", "1e-3"])
    assert code == 0, text
    assert "6 iterations, completed" in text
    for name in ("adapted.safetensors", "report.json", "config.json", "curves.png", "contact_sheet.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["iterations_run"] == 6 and report["stage1"]["embed_dim"] == 16
    assert [im["name"] for im in report["images"]] == ["alpha", "grey", "rgb"]
    assert [Path(im["source"]).name for im in report["images"]] == ["alpha.png", "grey.png", "rgb.png"]
    assert json.loads((out / "config.json").read_text())["iterations"] == 6
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[0] > 3 * 64  # three rows of 4x crops
    # the grey input's row is grey, as its written image is (58G-1: the network's colour fringes showed); the rows,
    # under a 14-px caption strip, are the runs of lines not all background
    drawn = (sheet[14:] != 24).any(-1).any(1)
    starts = [y for y in range(len(drawn)) if drawn[y] and (y == 0 or not drawn[y - 1])]
    ends = [y for y in range(len(drawn)) if drawn[y] and (y == len(drawn) - 1 or not drawn[y + 1])]
    assert len(starts) == 3, (starts, ends)
    bands = {name: sheet[14 + a:15 + b].astype(int) for name, a, b in zip(report["contact_sheet_rows"], starts, ends)}
    assert (bands["grey"][..., 0] == bands["grey"][..., 1]).all() and (bands["grey"][..., 1] == bands["grey"][..., 2]).all()
    assert (bands["rgb"][..., 0] != bands["rgb"][..., 2]).any()
    # grey stays grey, alpha stays, every output is x4
    modes = {p.stem: Image.open(p) for p in (out / "sr").iterdir()}
    assert modes["grey"].mode == "L" and modes["alpha"].mode == "RGBA" and modes["rgb"].mode == "RGB"
    assert modes["rgb"].size == (192, 160) and modes["alpha"].size == (176, 128)
    assert np.asarray(modes["alpha"])[:16, :16, 3].max() < 60  # the transparent corner stays transparent
    # the weights reload through the model store with the base model's architecture and names...
    desc = load_model(str(out / "adapted.safetensors"))
    base = load_model(str(files / "tiny.safetensors"))
    assert desc.arch == base.arch and desc.spec.hparams == base.spec.hparams
    assert list(desc.model.state_dict()) == list(base.model.state_dict())
    assert desc.metadata["base_sha256"] == state_dict_sha256(base.model.state_dict())
    assert state_dict_sha256(desc.model.state_dict()) != desc.metadata["base_sha256"]
    assert json.loads(desc.metadata["recipe"])["loss"] == "lway"
    # ...and reproduce the image adapt wrote
    x = to_tensor(read_image(files / "lr" / "rgb.png").rgb)
    again = super_resolve(desc.model, x, 4)[0].permute(1, 2, 0).numpy()
    written = np.asarray(Image.open(out / "sr" / "rgb.png"))
    # (the writer runs NHWC on the CPU, as upscale does: within a level of the default layout)
    assert np.abs(to_uint8(again).astype(int) - written.astype(int)).max() <= 1
    # lwayrt upscale with the adapted weights and its defaults gives the same image, pixel for pixel
    code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(out / "adapted.safetensors"),
                       "-o", str(tmp_path / "up")])
    assert code == 0, text
    (up,) = (tmp_path / "up").iterdir()
    assert np.array_equal(np.asarray(Image.open(up)), written)
    # alpha and grey too: adapt upsamples alpha with the adapted model, as upscale does by default (--alpha model)
    code, text = _run(["upscale", str(files / "lr" / "alpha.png"), str(files / "lr" / "grey.png"),
                       "-m", str(out / "adapted.safetensors"), "-o", str(tmp_path / "up_more")])
    assert code == 0, text
    for name in ("alpha", "grey"):
        (up,) = (tmp_path / "up_more").glob(f"{name}_*")
        assert np.array_equal(np.asarray(Image.open(up)), np.asarray(modes[name])), name


def test_detail_guard_from_the_command_line(files, tmp_path):
    """--detail-guard/--detail-guard-ratio reach the run (also with the anchor off), its log and the weights' recipe."""
    out = tmp_path / "guard"
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "-o", str(out),
                       "--stage1", str(files / "stage1.safetensors"), "--iterations", "3", "--patch-size", "16",
                       "--batch-size", "2", "--anchor-weight", "0", "--detail-guard", "2", "--detail-guard-ratio", "1.1", "-q"])
    assert code == 0, text
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["detail_guard"] == 2 and cfg["detail_guard_ratio"] == 1.1
    report = json.loads((out / "report.json").read_text())
    assert all("detail" in h for h in report["history"])
    recipe = json.loads(load_model(str(out / "adapted.safetensors")).metadata["recipe"])
    assert recipe["detail_guard"] == 2 and recipe["detail_guard_ratio"] == 1.1
    assert "detail_guard_gate" not in recipe


def test_trust_gated_detail_guard_from_the_command_line(files, tmp_path):
    out = tmp_path / "gated"
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "-o", str(out),
                       "--stage1", str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16",
                       "--batch-size", "2", "--detail-guard", "2", "--detail-guard-gate", "trust"])
    assert code == 0, text
    assert "detail guard per image (trust gate): rgb" in text
    assert json.loads((out / "config.json").read_text())["detail_guard_gate"] == "trust"
    assert 0 <= json.loads((out / "report.json").read_text())["images"][0]["guard_gate"] <= 1
    recipe = json.loads(load_model(str(out / "adapted.safetensors")).metadata["recipe"])
    assert recipe["detail_guard_gate"] == "trust"


def test_hf_norm_from_the_command_line(files, tmp_path):
    out = tmp_path / "hfnorm"
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "-o", str(out),
                       "--stage1", str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16",
                       "--batch-size", "2", "--hf-norm", "batch", "-q"])
    assert code == 0, text
    assert json.loads((out / "config.json").read_text())["hf_norm"] == "batch"
    assert json.loads(load_model(str(out / "adapted.safetensors")).metadata["recipe"])["hf_norm"] == "batch"


def test_naive_per_image_needs_no_stage1(files, tmp_path):
    out = tmp_path / "naive"
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), str(files / "lr" / "grey.png"), "-m",
                       str(files / "tiny.safetensors"), "-o", str(out), "--loss", "naive", "--mode", "per-image",
                       "--iterations", "3", "--patch-size", "16", "--batch-size", "1", "--trainable", "body.2,body.3", "--lr-schedule", "cosine", "-q"])
    assert code == 0, text
    summary = json.loads((out / "report.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["rgb", "grey"]
    for name in ("rgb", "grey"):
        rep = json.loads((out / name / "report.json").read_text())
        assert rep["stage1"] is None and rep["config"]["trainable"] == ["body.2", "body.3"]
        assert rep["config"]["lr_schedule"] == "cosine" and rep["history"][-1]["lr"] < rep["history"][0]["lr"]
        assert (out / name / "sr" / f"{name}.png").is_file()


@pytest.mark.parametrize("args,message", [
    (["--patch-size", "40"], "smaller than the 40-px patch: use --patch-size 32 or less"),
    (["--trainable", "head."], "--trainable head. matches no parameter"),
    (["--lr", "0"], "error: --lr must be in (0, 1)"),
    (["--strength", "1.5"], "error: --strength must be in (0, 1]"),
    (["--ema", "1"], "error: --ema must be in [0, 1)"),
    (["--detail-guard", "1", "--detail-guard-ratio", "0.5"], "error: --detail-guard-ratio must be a number >= 1"),
    (["--loss", "naive", "--detail-guard", "1", "--detail-guard-gate", "trust"], "only the lway loss has"),
    (["--loss", "naive", "--sup-degradation", "stage1"], "error: --sup-degradation 'stage1' degrades the synthetic pairs"),
    (["--stage1", "missing.safetensors"], "stage-1 checkpoint missing.safetensors does not exist"),
    (["--loss", "naive"], "--stage1 is used by the lway loss and by --mode per-group only"),  # not ignored unread
    (["--trainable", "body.1,nosuch"], "--trainable 'nosuch' matches no module or parameter"),
    (["--anchor-weight", "-1"], "error: --anchor-weight must be >= 0 (0: off), got -1.0"),
    (["--guard-factor", "-1"], "error: --guard-factor must be >= 0 (0: off), got -1.0"),  # it shared one message
    (["--anchor-pool", "100"], "--anchor-pool 100 (HR pixels) is larger than an output patch, --patch-size 16 x the "
                               "model's scale 4 = 64 pixels: use 64 or less"),  # a traceback at the first step
    (["--patch-size", "3"], "--patch-size 3 is too small: use 4 or more LR pixels"),  # it said 16, 4-15 are taken
])
def test_bad_input_is_one_line_error(files, tmp_path, args, message):
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "o"), "--stage1", str(files / "stage1.safetensors"),
                                    "--patch-size", "16", *args])  # the inputs fit; a later --patch-size wins
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and message in res.output, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o").exists()  # a refused run leaves nothing behind, not even an empty folder


@pytest.mark.parametrize("args,message", [
    (["--sup-weight", "0", "--sup-data", "/nonexist"], "error: --sup-data is for the supervised term, which "
                                                       "--sup-weight 0 turns off: drop it, or give --sup-weight above 0"),
    (["--sup-weight", "0", "--sup-batch", "2", "--sup-degradation", "lr"], "--sup-batch and --sup-degradation are for "
                                                                           "the supervised term"),
    (["--loss", "naive", "--encoder-backend", "tensorrt"], "--encoder-backend is for stage 1's encoder E, which only "
                                                           "the lway loss and --mode per-group run (this run: --loss "
                                                           "naive, --mode folder (the default))"),
    (["--loss", "identity", "--target", "lr"], "--target is for the size stage 1 reads and re-degrades at, which "
                                               "only the lway loss and --mode per-group use (this run: --loss "
                                               "identity, --mode folder (the default)): drop it, or use --loss lway"),
    (["--eval-every", "5", "--patience", "1"], "--eval-every and --patience are for the ground-truth evaluations, "
                                               "which run only with --gt: drop them, or add --gt"),
    (["--anchor-weight", "0", "--anchor-pool", "1000"], "--anchor-pool is for the anchor, which --anchor-weight 0 "
                                                        "turns off"),
    (["--anchor-weight", "0", "--anchor-trust", "1", "--anchor-trust-scope", "image"],
     "--anchor-trust and --anchor-trust-scope are for the anchor"),
    (["--loss", "naive", "--anchor-trust", "1"], "--anchor-trust is for the anchor's backbone trust, which stage 1 "
                                                 "judges, and only the lway loss loads it (this run: --loss naive)"),
    (["--anchor-trust", "0", "--anchor-trust-scope", "image"], "--anchor-trust-scope is for the anchor's backbone "
                                                               "trust, which --anchor-trust 0 turns off"),
    (["--detail-guard-ratio", "3", "--detail-guard-gate", "trust"], "--detail-guard-ratio and --detail-guard-gate are "
                                                                    "for the detail guard, which --detail-guard 0 (the "
                                                                    "default) turns off"),
    (["--detail-guard", "0", "--detail-guard-ratio", "3"], "which --detail-guard 0 turns off"),
    (["--no-hf-weight", "--hf-mode", "channel", "--hf-source", "target", "--hf-norm", "batch"],
     "--hf-mode, --hf-source and --hf-norm are for the wavelet weight map, which --no-hf-weight turns off: drop them, "
     "or drop --no-hf-weight"),
    (["--loss", "supervised", "--hf-norm", "batch"], "--hf-norm is for the wavelet weight map of the self-supervised "
                                                     "term, which --loss supervised leaves out"),
    # the config check's field names, named as the flags typed wherever they stand in its message
    (["--loss", "supervised", "--sup-weight", "0"], "needs --sup-weight > 0"),
    (["--trainable", ","], "error: --trainable names must be non-empty strings"),
])
def test_a_flag_for_a_part_its_settings_turn_off_is_refused(files, tmp_path, monkeypatch, args, message):
    """It was ignored without a word, while --stage1, --groups and the perceptual flags were refused alike."""
    from lway_rt.adapt import loop

    monkeypatch.setattr(loop, "adapt", lambda *a, **k: pytest.fail("a refused run must not start"))
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "o"), *args])
    assert res.exit_code == 1 and res.output.startswith("error: ") and message in res.output, res.output
    assert len(res.output.splitlines()) == 1 and "adapt config:" not in res.output, res.output


def test_target_is_taken_where_stage_1_reads_it(files, tmp_path, monkeypatch):
    """--mode per-group embeds the images at --target's size whatever the loss, so there it is not refused."""
    from lway_rt.adapt import loop

    seen = []
    monkeypatch.setattr(loop, "adapt", lambda inputs, model, out, config, **k: seen.append(config) or [])
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "o"), "--stage1", str(files / "stage1.safetensors"), "--loss",
                                    "naive", "--mode", "per-group", "--target", "lr"])
    assert res.exit_code == 0 and seen[0].target == "lr", res.output


def test_settings_from_the_config_file_are_not_refused_as_unused_flags(files, tmp_path, monkeypatch):
    """Only typed flags are refused: a --config file may keep settings for parts another setting turns off."""
    from lway_rt.adapt import loop

    seen = []
    monkeypatch.setattr(loop, "adapt", lambda inputs, model, out, config, **k: seen.append(config) or [])
    (tmp_path / "c.toml").write_text("[adapt]\nsup_weight = 0\nsup_batch = 2\nanchor_weight = 0\nanchor_pool = 4\n"
                                     "detail_guard_ratio = 3\nhf_weight = false\nhf_mode = 'channel'\neval_every = 5\n"
                                     "encoder_backend = 'onnxruntime'\nloss = 'naive'\n")
    base = ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(tmp_path / "o"), "--config",
            str(tmp_path / "c.toml")]
    res = CliRunner().invoke(main, base)
    assert res.exit_code == 0 and seen[0].sup_batch == 2 and seen[0].anchor_pool == 4, res.output
    # a flag typed for a part the file turns off is refused, and the message says where the setting came from
    res = CliRunner().invoke(main, [*base, "--sup-data", str(tmp_path)])
    assert res.exit_code == 1 and "which sup_weight = 0 in --config turns off" in res.output, res.output
    res = CliRunner().invoke(main, [*base, "--hf-norm", "batch"])
    assert res.exit_code == 1 and "which hf_weight = false in --config turns off: drop it, or set hf_weight = true " \
                                  "there" in res.output, res.output
    # the flag that turns the part back on makes the others count
    res = CliRunner().invoke(main, [*base, "--sup-weight", "1", "--sup-data", str(tmp_path)])
    assert res.exit_code == 0 and seen[-1].sup_data == str(tmp_path), res.output


def test_out_folder_that_cannot_be_made_is_one_line(files, tmp_path):
    (tmp_path / "afile").write_text("x")
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "afile" / "o"), "--stage1", str(files / "stage1.safetensors"),
                                    "--patch-size", "16", "--iterations", "1"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]  # after the embedding, before training
    assert len(errors) == 1 and errors[0].startswith("error: cannot create output folder "), res.output
    assert "choose another --out folder" in errors[0] and "iteration" not in res.output


def test_broken_link_among_the_inputs_is_one_line(files, tmp_path):
    d = tmp_path / "lr"
    shutil.copytree(files / "lr", d)
    (d / "zz.png").symlink_to(tmp_path / "moved.png")
    res = CliRunner().invoke(main, ["adapt", str(d), "-m", str(files / "tiny.safetensors"), "-o", str(tmp_path / "o"),
                                    "--stage1", str(files / "stage1.safetensors"), "--patch-size", "16"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.startswith("error: ") and "zz.png is a link to " in res.output and "mend or remove" in res.output
    assert not (tmp_path / "o").exists()


def test_inputs_sharing_a_stem_are_named_by_their_ending(tmp_path, hr_crop):
    """photo.jpg and photo.png: each output is named after its own file, not numbered in listing order."""
    from lway_rt.adapt._imageio import read_inputs

    d = tmp_path / "in"
    d.mkdir()
    Image.fromarray(hr_crop[:32, :40]).save(d / "photo.png")
    Image.fromarray(hr_crop[32:64, :48]).save(d / "photo.jpg", quality=95)
    Image.fromarray(hr_crop[:32, :32]).save(d / "other.png")
    (tmp_path / "more").mkdir()
    Image.fromarray(hr_crop[:16, :16]).save(tmp_path / "more" / "photo.png")
    got = {im.name: (im.path.parent.name, im.path.name) for im in read_inputs([d, tmp_path / "more"])}
    assert got == {"other": ("in", "other.png"), "photo_jpg": ("in", "photo.jpg"), "photo_png": ("in", "photo.png"),
                   "photo_png_2": ("more", "photo.png")}


def test_inputs_whose_stems_differ_only_in_case_get_names_apart_in_any_case(tmp_path, hr_crop):
    """a/Photo.png and b/photo.png would write one sr/ file on macOS or Windows (a run's folder copied there too)."""
    from lway_rt.adapt._imageio import read_inputs

    for sub, name in (("a", "Photo.png"), ("b", "photo.png"), ("b", "PHOTO_png.png")):
        (tmp_path / sub).mkdir(exist_ok=True)
        Image.fromarray(hr_crop[:16, :16]).save(tmp_path / sub / name)
    names = [im.name for im in read_inputs([tmp_path / "a" / "Photo.png", tmp_path / "b"])]
    assert len({n.casefold() for n in names}) == 3, names
    assert names == ["Photo_png", "PHOTO_png_2", "photo_png_3"]  # each keeps its own spelling


def test_colour_hidden_under_clear_pixels_does_not_reach_the_adaptation(tmp_path, hr_crop):
    from lway_rt.adapt._imageio import read_inputs

    rgba = np.dstack([hr_crop[:32, :40], np.full((32, 40), 255, np.uint8)])
    rgba[:, :12, 3] = 0
    other = rgba.copy()
    other[:, :12, :3] = (0, 255, 0)  # the same picture with green under its clear pixels
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(other, "RGBA").save(tmp_path / "b.png")
    a, b = read_inputs([tmp_path / "a.png", tmp_path / "b.png"])
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.rgb[:, 12:], hr_crop[:32, 12:40].astype(np.float32) / 255)


def test_kill_and_resume(files, tmp_path):
    out = tmp_path / "killed"
    args, _, _ = _long_run_stopped_after_a_checkpoint(files, out, signal.SIGKILL)
    assert not (out / "adapted.safetensors").exists(), "the run finished before it could be killed"
    code, text = _run(args)
    assert code == 1 and "--resume" in text
    # refused runs leave the record of the interrupted one as it was: "rerun with the same ones" stays answerable
    recorded = (out / "config.json").read_bytes()
    for extra in (["--lr", "3e-4"], ["--lr", "3e-4", "--resume"]):
        code, text = _run([*args, *extra])
        assert code == 1 and (out / "config.json").read_bytes() == recorded, text
    assert "pass --overwrite instead of --resume to start again there" in text, text  # the way on in this folder
    # what a kill mid-write leaves (hidden temporary files) goes once a run holds the folder; other files stay
    (out / "sr").mkdir(exist_ok=True)
    from lway_rt.io.weights import temp_prefix

    killed = [out / f"{temp_prefix('checkpoint.pt')}k1ll3d.tmp", out / f"{temp_prefix('report.json')}x.tmp",
              out / "sr" / f"{temp_prefix('rgb.png')}y.tmp"]
    for f in killed:
        f.write_bytes(b"cut short")
    # hidden files of the user's that merely look alike (no temporary file's tag) were removed too
    mine = [out / ".my-notes.tmp", out / ".report.json.my-notes.tmp", out / "sr" / ".rgb.png.v1.tmp"]
    for f in mine:
        f.write_text("mine")
    code, text = _run([*args, "--resume"])
    assert code == 0, text
    assert not any(f.exists() for f in killed) and all(f.read_text() == "mine" for f in mine)
    report = json.loads((out / "report.json").read_text())
    assert report["iterations_run"] == LONG_RUN and len(report["resumed_from"]) == 1, report["stopped"]
    assert 0 < report["resumed_from"][0] < LONG_RUN and report["resumed_from"][0] % 5 == 0
    assert len(report["history"]) == LONG_RUN
    assert not (out / CHECKPOINT).exists()


def test_a_folder_of_that_name_is_never_removed_by_a_run(files, tmp_path):
    """Every finished run removed OUT/.replaced with whatever it held, --overwrite or not: a folder of the user's of
    that name was deleted without a word. Only a folder the command made (it holds its mark) is removed."""
    from lway_rt.adapt.runfolder import ASIDE

    out = tmp_path / "out"
    (out / ASIDE).mkdir(parents=True)
    (out / ASIDE / "notes.txt").write_text("my notes")
    code, text = _run(["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
                       str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16", "-q"])
    assert code == 0, text
    assert (out / ASIDE / "notes.txt").read_text() == "my notes"


def test_a_second_run_into_a_folder_in_use_is_refused(files, tmp_path, held_elsewhere):
    out = tmp_path / "busy"
    out.mkdir()
    args = ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
            str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16", "-q"]
    with held_elsewhere(out):  # as a run in another process holds it
        code, text = _run(args)
    assert code == 1 and f"another run is writing to {out} right now" in text, text
    assert not list(out.iterdir())  # nothing written, not even config.json
    for mode in ("per-image",):
        with held_elsewhere(out):
            code, text = _run([*args, "--mode", mode])
        assert code == 1 and "another run is writing to" in text, text
    code, text = _run(args)  # released: the run goes ahead
    assert code == 0, text


def test_sr_outputs_keep_the_inputs_colour_profile_exif_dpi_and_png_text(files, tmp_path, hr_crop):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tags = Image.Exif()
    tags[0x0110] = "Phone 12"
    lr = tmp_path / "lr"
    lr.mkdir()
    Image.fromarray(hr_crop[:128:4, :128:4]).save(lr / "cam.jpg", quality=95, icc_profile=icc, exif=tags, dpi=(300, 300))
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_text("Title", "harbour")
    text.add_text("lwayrt-adapt", '{"weights": "of the run that made this input"}')  # not carried over
    text.add(b"gAMA", (100000).to_bytes(4, "big"))
    Image.fromarray(hr_crop[1:128:4, :128:4]).save(lr / "scan.png", pnginfo=text)
    out = tmp_path / "out"
    code, text = _run(["adapt", str(lr), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
                       str(files / "stage1.safetensors"), "--iterations", "1", "--patch-size", "16", "-q"])
    assert code == 0, text
    with Image.open(out / "sr" / "cam.png") as im:  # a wide-gamut photo written untagged would shift its colours
        assert im.info.get("icc_profile") == icc and im.getexif().get(0x0110) == "Phone 12"
        assert im.info["dpi"] == pytest.approx((300, 300), rel=1e-3)
    with Image.open(out / "sr" / "scan.png") as im:  # a PNG's gamma and text, and the record of this run's image
        made = json.loads(im.text.pop("lwayrt-adapt"))
        assert im.text == {"Title": "harbour"} and im.info["gamma"] == pytest.approx(1.0)
    weights = json.loads((out / "report.json").read_text())["model"]["adapted_sha256"]
    assert made["weights"] == weights[:32] and made["detail_cap"] is None


def test_a_busy_folder_is_refused_before_anything_is_loaded(files, tmp_path, held_elsewhere):
    """The refusal comes first, not after seconds of loading, nor as another complaint (a --resume whose checkpoint
    the running run is rewriting would have been told the checkpoint differs)."""

    out = tmp_path / "busy"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(b"being written by the other run")
    for model in (str(tmp_path / "not-there.safetensors"), str(files / "tiny.safetensors")):
        args = ["adapt", str(files / "lr"), "-m", model, "-o", str(out), "--stage1", str(files / "stage1.safetensors"),
                "--iterations", "2", "--patch-size", "16", "-q", "--resume"]
        with held_elsewhere(out):
            code, text = _run(args)
        assert code == 1 and f"another run is writing to {out} right now" in text, text
        assert "checkpoint" not in text and "not-there" not in text


def test_a_stage1_checkpoint_from_a_run_under_way_is_named(files, tmp_path):
    from lway_rt.degae import load_stage1, save_stage1

    half = tmp_path / "half.safetensors"
    save_stage1(half, load_stage1(files / "stage1.safetensors"), {"iterations": 100, "recipe": {"iters": 300}})
    args = ["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "--iterations", "1",
            "--patch-size", "16", "--batch-size", "1"]
    code, text = _run([*args, "-o", str(tmp_path / "a"), "--stage1", str(half)])
    assert code == 0 and "written at iteration 100 of 300: a run that had not finished" in text, text
    code, text = _run([*args, "-o", str(tmp_path / "b"), "--stage1", str(files / "stage1.safetensors")])
    assert code == 0 and "had not finished" not in text, text


def test_interrupted_run_of_several_says_resume(files, tmp_path):
    """Ctrl-C in the second of several per-image runs: the advice is --resume (a plain rerun would refuse the
    finished first run), and --resume keeps that run and finishes the others."""
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.loop import adapt
    from lway_rt.errors import Interrupted

    armed = []

    def log(msg):
        if msg.startswith("grey: adapting"):
            armed.append(msg)
        if armed and msg.startswith("iteration 10/"):
            raise KeyboardInterrupt  # as Ctrl-C lands in the second run's loop, before its first checkpoint

    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=1, mode="per-image", checkpoint_every=50)
    with pytest.raises(Interrupted, match=r"run the same command with --resume \(the runs finished before it are kept\)"):
        adapt([files / "lr"], str(files / "tiny.safetensors"), tmp_path / "pi", cfg,
              stage1=str(files / "stage1.safetensors"), log=log)
    first = (tmp_path / "pi" / "alpha" / "adapted.safetensors").read_bytes()
    results = adapt([files / "lr"], str(files / "tiny.safetensors"), tmp_path / "pi", cfg,
                    stage1=str(files / "stage1.safetensors"), resume=True)
    assert len(results) == 3 and (tmp_path / "pi" / "alpha" / "adapted.safetensors").read_bytes() == first


def test_per_image_resume_checks_each_finished_run_and_keeps_the_summary(files, tmp_path):
    out = tmp_path / "each"
    base = ["adapt", "-o", str(out), "--loss", "naive", "--mode", "per-image", "--iterations", "2",
            "--patch-size", "16", "--batch-size", "1", "-q"]
    tiny = ["-m", str(files / "tiny.safetensors")]
    code, text = _run([*base, str(files / "lr"), *tiny])
    assert code == 0, text
    code, text = _run([*base, str(files / "lr"), *tiny])
    assert code == 1 and "holds the runs of an earlier --mode per-image adaptation" in text, text
    # another model on resume: the finished run of that image is not passed off as its adaptation
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_safetensors(other, SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).state_dict(), {"name": "other"})
    config = (out / "config.json").read_bytes()
    code, text = _run([*base, str(files / "lr"), "-m", str(other), "--resume", "--lr", "1e-3"])
    assert code == 1 and "made with other settings: --lr " in text, text
    assert (out / "config.json").read_bytes() == config  # refused before anything was written
    # the same settings on a subset: kept, and the summary still lists every run
    code, text = _run([*base, str(files / "lr" / "rgb.png"), *tiny, "--resume"])
    assert code == 0, text
    summary = json.loads((out / "report.json").read_text())
    assert sorted(r["name"] for r in summary["runs"]) == ["alpha", "grey", "rgb"]


def test_a_quoted_pattern_names_the_folder_to_give(files, tmp_path):
    code, text = _run(["adapt", str(files / "lr" / "*.png"), "-m", str(files / "tiny.safetensors"), "-o",
                       str(tmp_path / "o")])
    assert code == 1 and text.startswith(f"error: input {files / 'lr' / '*.png'} does not exist; lwayrt does not "
                                         f"expand patterns: give the folder {files / 'lr'} instead"), text
    assert not (tmp_path / "o").exists()


def test_out_folder_may_not_be_an_input_folder(files, tmp_path):
    import shutil

    lr = tmp_path / "mine"
    shutil.copytree(files / "lr", lr)
    code, text = _run(["adapt", str(lr), "-m", str(files / "tiny.safetensors"), "-o", str(lr), "--loss", "naive",
                       "--iterations", "2", "--patch-size", "16"])
    assert code == 1 and "is an input folder" in text, text
    assert sorted(p.name for p in lr.iterdir()) == ["alpha.png", "grey.png", "rgb.png"]


def test_cuda_asked_for_without_a_gpu_is_one_line(files, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "o"), "--device", "cuda"])
    assert res.exit_code == 1 and res.output.startswith("error: --device cuda asked for, but PyTorch sees no CUDA GPU")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_says_what_was_kept_and_how_to_continue(files, tmp_path, sig):
    """SIGINT (Ctrl-C) after a checkpoint: exit status 130 and one line naming the checkpoint and --resume; SIGTERM
    (kill, timeout, a batch scheduler) and SIGHUP (the terminal closed) the same line, not a silent exit, with the
    shell's status for each (143, 129)."""
    out = tmp_path / "stopped"
    _, proc, text = _long_run_stopped_after_a_checkpoint(files, out, sig, from_outside=True)
    assert proc.returncode == 128 + sig, text
    line = text.strip().splitlines()[-1]
    assert re.fullmatch(r"adaptation interrupted at iteration \d+; the checkpoint of iteration \d+ is kept in .*checkpoint\.pt: "
                        r"run the same command with --resume to continue", line), text
    assert "Traceback" not in text and (out / CHECKPOINT).exists() and not (out / "adapted.safetensors").exists()


def _stopping_run(files, out) -> list[str]:
    return ["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
            str(files / "stage1.safetensors"), "--iterations", "40", "--patch-size", "16", "--batch-size", "2",
            "--checkpoint-every", "5", "-q"]


def test_a_stop_whose_keyboardinterrupt_was_lost_still_stops_the_run(files, tmp_path, monkeypatch):
    """CPython raises a signal's KeyboardInterrupt wherever the main thread runs Python code next; in a finalizer (a
    ``__del__``) it is printed as "Exception ignored" and dropped. The stop is recorded and the loop stops before its
    next step: a SIGTERM had let a run go on to its last iteration and exit 0. (Lost while the run set up: in the loop
    a first stop waits for the step in hand and raises nothing.)"""
    import lway_rt.adapt.loop as loop

    real, steps = loop.compute_embeddings, []

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, and its KeyboardInterrupt goes nowhere

    def embed(*args, **kwargs):
        Finalized()  # made and dropped at once: its __del__ runs now
        return real(*args, **kwargs)

    lost = []
    monkeypatch.setattr(loop, "compute_embeddings", embed)
    monkeypatch.setattr(loop, "fast_adapt_step", lambda *a, **k: steps.append(1))
    monkeypatch.setattr(sys, "unraisablehook", lambda u: lost.append(u.exc_type))  # ("Exception ignored in ...")
    out = tmp_path / "o"
    code, text = _run(_stopping_run(files, out))
    assert code == 143, text
    assert lost == [KeyboardInterrupt]  # the handler's exception did not reach the loop
    assert text.strip().splitlines()[-1].startswith("adaptation interrupted at iteration 0; no checkpoint had been "
                                                    "written yet"), text
    assert not steps and not (out / "adapted.safetensors").exists()


def test_a_stop_signal_in_a_step_saves_that_step_and_says_so(files, tmp_path, monkeypatch):
    """A SIGTERM (a batch scheduler ending the job) in step 7 of a run that saves every 5 steps: the step finishes, its
    state is saved, and the line names that checkpoint; a message at the signal says why the run goes on a moment."""
    import lway_rt.adapt.loop as loop

    real, calls = loop.fast_adapt_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "fast_adapt_step", step)
    out = tmp_path / "o"
    code, text = _run(_stopping_run(files, out))
    assert code == 143, text
    assert "stopping after the step in hand, to save it (SIGTERM again: stop now" in text, text  # (no Ctrl-C here)
    assert text.strip().splitlines()[-1].startswith("adaptation interrupted at iteration 7; the checkpoint of "
                                                    "iteration 7 is kept in "), text
    assert len(calls) == 7 and torch.load(out / CHECKPOINT, weights_only=True)["st"]["it"] == 7


@pytest.mark.parametrize("at", [5, 10])
def test_a_stop_just_after_a_checkpoint_names_that_checkpoint(files, tmp_path, monkeypatch, at):
    """A stop between the new checkpoint taking the old one's place and the loop's next line named the checkpoint
    before it, or said none had been written, beside a checkpoint --resume continues from."""
    import lway_rt.adapt.loop as loop

    real = loop._save_checkpoint

    def save(path, state):
        real(path, state)
        if state["st"]["it"] == at:
            raise KeyboardInterrupt  # as a Ctrl-C just after the rename

    monkeypatch.setattr(loop, "_save_checkpoint", save)
    out = tmp_path / "o"
    code, text = _run(_stopping_run(files, out))
    assert code == 130, text
    assert text.strip().splitlines()[-1].startswith(f"adaptation interrupted at iteration {at}; the checkpoint of "
                                                    f"iteration {at} is kept in "), text
    assert torch.load(out / CHECKPOINT, weights_only=True)["st"]["it"] == at


def test_adapt_takes_detail_cap_off_as_the_other_commands_do(files, tmp_path):
    """adapt documents --detail-cap's default as off, but refused 'off' ("is not a number") where upscale, export and
    serve-bench take it; typed, it also overrides a cap from --config."""
    (tmp_path / "capped.toml").write_text("[adapt]\ndetail_cap = 1.2\n")
    common = [str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "--stage1",
              str(files / "stage1.safetensors"), "--iterations", "1", "--patch-size", "16", "-q"]
    code, text = _run(["adapt", *common, "-o", str(tmp_path / "off"), "--detail-cap", "off",
                       "--config", str(tmp_path / "capped.toml")])
    assert code == 0, text
    assert json.loads((tmp_path / "off" / "config.json").read_text())["detail_cap"] is None
    code, text = _run(["adapt", *common, "-o", str(tmp_path / "cap"), "--config", str(tmp_path / "capped.toml")])
    assert code == 0 and json.loads((tmp_path / "cap" / "config.json").read_text())["detail_cap"] == 1.2, text


def test_detail_cap_holds_written_images_and_upscale_repeats_it(files, tmp_path):
    """--detail-cap 1: every written image has at most the unadapted image's fine detail (blended towards it where
    the adapted model adds more), the weights are those of the uncapped run, and upscale repeats the images."""
    from lway_rt.adapt.wavelet import detail_cap, detail_energy

    common = ["-m", str(files / "tiny.safetensors"), "--stage1", str(files / "stage1.safetensors"), "--iterations", "4",
              "--patch-size", "16", "--batch-size", "2", "--lr", "3e-2", "-q"]
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(tmp_path / "plain"), *common])
    assert code == 0, text
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(tmp_path / "cap"), *common, "--detail-cap", "1"])
    assert code == 0, text
    plain, capped = (load_model(str(tmp_path / d / "adapted.safetensors")) for d in ("plain", "cap"))
    assert state_dict_sha256(plain.model.state_dict()) == state_dict_sha256(capped.model.state_dict())
    assert capped.metadata["detail_cap"] == "1.0" and "detail_cap" not in plain.metadata
    report = json.loads((tmp_path / "cap" / "report.json").read_text())
    (entry,) = report["images"]
    assert report["detail_cap"]["cap"] == 1.0 and 0 <= entry["detail_cap_s"] <= 1
    # the written image is the blend wavelet.detail_cap makes of the unadapted and the adapted image
    x = to_tensor(read_image(files / "lr" / "rgb.png").rgb)
    base = load_model(str(files / "tiny.safetensors"))
    want, s = detail_cap(super_resolve(base.model, x, 4), super_resolve(capped.model, x, 4), 1.0, 4)
    assert float(s[0]) == pytest.approx(entry["detail_cap_s"], abs=1e-4)
    written = np.asarray(Image.open(tmp_path / "cap" / "sr" / "rgb.png"))
    # (written as upscale runs it, NHWC on the CPU: within a level of the default layout)
    assert np.abs(to_uint8(want[0].permute(1, 2, 0).numpy()).astype(int) - written.astype(int)).max() <= 1
    assert entry["detail_cap_s"] < 1  # this run adds detail, so cap 1 holds it: no more than the unadapted image's
    if entry["detail_cap_s"] < 1:
        assert float(detail_energy(want, 4)[0]) <= float(detail_energy(super_resolve(base.model, x, 4), 4)[0]) * (1 + 1e-6)
        assert not np.array_equal(written, np.asarray(Image.open(tmp_path / "plain" / "sr" / "rgb.png")))
    # upscale reads the cap from the weights and finds the base model where adapt loaded it
    code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(tmp_path / "cap" / "adapted.safetensors"),
                       "-o", str(tmp_path / "up")])
    assert code == 0, text
    (up,) = (tmp_path / "up").iterdir()
    assert np.array_equal(np.asarray(Image.open(up)), written)
    # --detail-cap off gives the adapted model's own image
    code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(tmp_path / "cap" / "adapted.safetensors"),
                       "-o", str(tmp_path / "off"), "--detail-cap", "off"])
    plain_img = np.asarray(Image.open(tmp_path / "plain" / "sr" / "rgb.png"))
    assert code == 0 and np.array_equal(np.asarray(Image.open(next((tmp_path / "off").iterdir()))), plain_img)
    # with --gt, "after" is of the image written (capped), the network's own beside it: it gave the uncapped
    # network's numbers for an image it did not write (review 50G G2)
    from lway_rt.metrics import psnr_y

    gt = tmp_path / "gt"
    gt.mkdir()
    hr = plain_img  # (the adapted network's own image: its weights are the best the evaluations find)
    Image.fromarray(hr).save(gt / "rgb.png")
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(tmp_path / "judged"), *common, "--detail-cap",
                       "1", "--gt", str(gt), "--eval-every", "4"])
    assert code == 0, text
    report = json.loads((tmp_path / "judged" / "report.json").read_text())
    (entry,) = report["images"]
    judged = np.asarray(Image.open(tmp_path / "judged" / "sr" / "rgb.png")).astype(np.float32) / 255.0
    own = psnr_y(judged, hr.astype(np.float32) / 255.0, 4)
    assert entry["detail_cap_s"] < 1 and abs(entry["after"]["psnr"] - own) < 0.02, (entry, own)
    assert abs(entry["after_uncapped"]["psnr"] - own) > 0.05, (entry, own)  # (what it had said)
    assert report["mean"]["psnr_after"] == entry["after"]["psnr"]
    assert report["mean"]["psnr_after_uncapped"] == entry["after_uncapped"]["psnr"]


@pytest.mark.parametrize("args,message", [
    (["--detail-cap", "x"], "must be auto, off or a number >= 1"),
    (["--detail-cap", "0.5"], "must be auto, off or a number >= 1"),
    (["--detail-cap", "1.2", "--base-model", "nosuchmodel"], "needs the unadapted model nosuchmodel"),
    # a recorded name that is no store model is said so, not with a "did you mean" of another model (whose weights
    # its hash would then refuse)
    (["--detail-cap", "1.2", "--base-model", "realesr-animevideov3-lway"],
     "(realesr-animevideov3-lway is not a model in the store): pass --base-model"),
])
def test_upscale_detail_cap_refusals(files, tmp_path, args, message):
    code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"),
                       "-o", str(tmp_path / "o"), *args])
    assert code != 0 and message in text, text


def test_upscale_detail_cap_checks_the_base_model(files, tmp_path):
    """A base model other than the one the weights were adapted from is refused; adapt refuses a cap below 1."""
    torch.manual_seed(12345)  # not the tiny model's seed: an earlier test may leave the global generator anywhere
    other = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    save_safetensors(tmp_path / "other.safetensors", other.state_dict(), {"name": "other"})
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "-o",
                       str(tmp_path / "a"), "--loss", "naive", "--iterations", "1", "--patch-size", "16",
                       "--detail-cap", "1.5"])
    assert code == 0 and "adapted.safetensors: 1 iteration, completed" in text, text  # (not "1 iterations")
    assert "target sr, 1 iteration," in text, text  # (its progress line too)
    code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(tmp_path / "a" / "adapted.safetensors"),
                       "-o", str(tmp_path / "o"), "--base-model", str(tmp_path / "other.safetensors")])
    assert code != 0 and "is not the model these weights were adapted from" in text, text
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "-o",
                       str(tmp_path / "b"), "--loss", "naive", "--iterations", "1", "--patch-size", "16", "--detail-cap", "0.5"])
    assert code != 0 and "--detail-cap must be a number >= 1" in text and "or off (unset), got 0.5" in text, text


def test_detail_cap_is_not_part_of_the_recipe():
    """The cap shapes the written images, not the weights: the recipe (and so --resume's fingerprint) ignores it."""
    from lway_rt.adapt.config import AdaptConfig

    assert AdaptConfig(detail_cap=1.2).recipe_json() == AdaptConfig().recipe_json()
    assert AdaptConfig(detail_cap=1.2).to_dict()["detail_cap"] == 1.2


def test_upscale_outputs_beside_the_frames_are_not_adapted_on(tmp_path):
    """'upscale frames -o frames' leaves frame_x4.png (its PNG records the run) beside each frame: adapt took them in
    as inputs (another degradation, 16x the pixels, written again at x16) without a word. They are left out and
    named, as upscale leaves them out; named as files, or alone in a folder, they are taken."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from lway_rt.adapt._imageio import list_images
    from lway_rt.upscale import RUN_KEY

    d = tmp_path / "frames"
    d.mkdir()
    info = PngInfo()
    info.add_text(RUN_KEY.decode(), "0123456789abcdef")
    for i in (1, 2):
        Image.new("RGB", (16, 12)).save(d / f"f{i}.png")
        Image.new("RGB", (64, 48)).save(d / f"f{i}_x4.png", pnginfo=info)
    notes: list[str] = []
    assert list_images([d], notes) == [d / "f1.png", d / "f2.png"]
    assert notes == [f"note: 2 image(s) in {d} were written by lwayrt upscale (each records the run), e.g. "
                     "f1_x4.png: left out, not adapted on; name such a file to adapt on it anyway"]
    assert list_images([d / "f1_x4.png"]) == [d / "f1_x4.png"]
    for i in (1, 2):
        (d / f"f{i}.png").unlink()
    assert list_images([d]) == [d / "f1_x4.png", d / "f2_x4.png"]


def test_the_contact_sheet_shows_frames_spread_over_the_clip(files, tmp_path, hr_crop):
    """Its rows were the first six inputs in name order (six near-identical frames of a clip) labelled by their
    first 12 characters ('shot01_frame' on every row); they are spread over the inputs in frame order, the names
    kept whole or with their end (the frame number), and report.json names them."""
    from lway_rt.adapt.loop import _row_label

    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(1, 13):
        Image.fromarray(hr_crop[4 * i:4 * i + 128:4, :128:4]).save(clip / f"shot01_frame_{i}.png")

    def frames_shown(out: Path) -> tuple[list[int], str]:  # the rows' frame numbers, in frame order, and the output
        code, text = _run(["adapt", str(clip), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
                           str(files / "stage1.safetensors"), "--iterations", "1", "--patch-size", "16",
                           "--batch-size", "2"])
        assert code == 0, text
        rows = json.loads((out / "report.json").read_text())["contact_sheet_rows"]
        return [int(n.rsplit("_", 1)[1]) for n in rows], text  # (top to bottom: in frame order, 5 above 10)

    shown, text = frames_shown(tmp_path / "out")
    assert shown == [1, 3, 5, 8, 10, 12]
    assert _row_label("shot01_frame_000001") == "shot01_frame_000001"
    assert _row_label("a_very_long_take_name_shot01_frame_000001") == "a_very_lon..frame_000001"
    assert "flat" not in text
    # a clip that fades in from black (JPEG-like noise of a level on the black): the rows are spread over the
    # frames that show something, and a note names the flat ones, which give no training patches
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        black = rng.integers(0, 2, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(black).save(clip / f"shot01_frame_{i}.png")
    shown, text = frames_shown(tmp_path / "fade")
    assert shown == [6, 7, 8, 10, 11, 12]
    assert "note: shot01_frame_1, shot01_frame_2, shot01_frame_3 and 2 more (5 of 12 input(s)) are one flat colour " \
        "(a fade from black, a blank card): no training patches are drawn from them" in text, text


def test_flat_frames_give_no_training_patches(files, tmp_path, hr_crop):
    """A clip's black frames (a fade, the frames between two shots) took their share of every batch, so a third of
    black frames left a third of the training to black, and the guard's fixed patches, the first eight inputs, watched
    black. Frames after the footage in name order that are one flat colour leave the run as it is without them: the
    same weights, bit for bit; its sr/ images are still written. Every frame flat: adapted on as before, with a note."""
    from safetensors.torch import load_file

    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(1, 4):
        Image.fromarray(hr_crop[8 * i:8 * i + 128:4, :128:4]).save(clip / f"frame_{i}.png")
    args = ["-m", str(files / "tiny.safetensors"), "--stage1", str(files / "stage1.safetensors"), "--iterations", "3",
            "--patch-size", "16", "--batch-size", "2", "--lr", "1e-3"]
    code, text = _run(["adapt", str(clip), "-o", str(tmp_path / "footage"), *args])
    assert code == 0, text
    rng = np.random.default_rng(1)
    for i in range(4, 7):
        Image.fromarray(rng.integers(0, 2, (32, 32, 3), dtype=np.uint8)).save(clip / f"frame_{i}.png")
    code, text = _run(["adapt", str(clip), "-o", str(tmp_path / "faded"), *args])
    assert code == 0, text
    assert "(3 of 6 input(s)) are one flat colour" in text, text
    assert sorted(p.name for p in (tmp_path / "faded" / "sr").iterdir()) == [f"frame_{i}.png" for i in range(1, 7)]
    report = json.loads((tmp_path / "faded" / "report.json").read_text())
    assert [i["name"] for i in report["images"] if i.get("flat")] == ["frame_4", "frame_5", "frame_6"]
    assert not set(report["detail_flag"]["images"]) & {"frame_4", "frame_5", "frame_6"}  # (ratios of near-zero detail)
    alone = load_file(str(tmp_path / "footage" / "adapted.safetensors"))
    faded = load_file(str(tmp_path / "faded" / "adapted.safetensors"))
    base = load_file(str(files / "tiny.safetensors"))
    assert any(not torch.equal(alone[k], base[k]) for k in base)  # (it adapted)
    assert all(torch.equal(alone[k], faded[k]) for k in alone)
    black = tmp_path / "black"
    black.mkdir()
    for i in range(4, 7):
        (clip / f"frame_{i}.png").rename(black / f"frame_{i}.png")
    code, text = _run(["adapt", str(black), "-o", str(tmp_path / "blank"), *args])
    assert code == 0, text
    assert "(3 of 3 input(s)) are one flat colour (a fade from black, a blank card): there is no detail to adapt on" \
        in text, text


def test_passes_over_every_frame_are_announced_before_they_start(files, tmp_path, hr_crop, monkeypatch):
    """On a clip, embedding every frame and weighing the backbone on each took minutes of silence on a CPU (13 s and
    18 s for 30 small frames): from 8 inputs a line says what runs before it starts; a few images get none. Writing
    sr/ (an hour for a long clip, after the last iteration's "0 s left") and each pass say how far they are every
    PROGRESS_PERIOD seconds (here after each image), and a run on many inputs without --sample is pointed to it.
    Measuring the detail each image gained (report.json's detail_change) had been a minute of silence on 300 frames."""
    from lway_rt.adapt import loop

    monkeypatch.setattr(loop, "PROGRESS_PERIOD", 0.0)
    monkeypatch.setattr(loop, "MANY_INPUTS", 8)
    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(8):
        Image.fromarray(hr_crop[4 * i:4 * i + 128:4, :128:4]).save(clip / f"f{i}.png")
    args = ["-m", str(files / "tiny.safetensors"), "--stage1", str(files / "stage1.safetensors"), "--iterations", "1",
            "--patch-size", "16", "--batch-size", "2"]
    code, text = _run(["adapt", str(clip), "-o", str(tmp_path / "out"), *args])
    assert code == 0, text
    lines = text.splitlines()
    def counted(start: int, verb: str) -> int:  # the lines of a pass after its first; the index of the next line
        for k in range(1, 8):
            assert re.fullmatch(rf"{verb} {k} of 8 (SR )?image\(s\), about \d+ s left", lines[start + k]), text
        return start + 8

    first = lines.index("embedding 8 image(s) with stage 1's encoder ...")
    assert lines[counted(first, "embedded")].startswith("embedded 8 image(s)")
    weigh = lines.index("weighing the unadapted network's output on 8 image(s) with stage 1 ...")
    assert lines[counted(weigh, "weighed")].startswith("anchor x"), text
    counted(lines.index("measuring the detail the adaptation added on 8 image(s) ..."), "measured")
    counted(lines.index(f"writing 8 SR image(s) to {tmp_path / 'out' / 'sr'}"), "wrote")
    assert "note: adapting on all 8 inputs: each is held in memory, embedded and written to sr/ at full size; for the " \
        "frames of a clip, --sample 32 adapts on a spread of them" in text, text
    code, text = _run(["adapt", str(clip / "f0.png"), "-o", str(tmp_path / "one"), *args])
    assert code == 0 and not re.search("embedding|weighing|measuring|writing", text), text
    assert "--sample 32" not in text


def test_sample_adapts_on_frames_spread_over_the_inputs(files, tmp_path):
    """--sample N takes N inputs spread evenly in frame order (first and last included), adapts on those only and
    says how to treat the others; the choice is recorded and a bad N is refused in one line."""
    from lway_rt.adapt._imageio import spread

    assert spread(list(range(10)), 4) == [0, 3, 6, 9] and spread(list(range(10)), 1) == [4]
    assert spread(list(range(3)), 5) == spread(list(range(3)), None) == [0, 1, 2]
    # ffmpeg's %d.png: 1, 10, 11 ... 19, 2, 20 ... in name order; the sample is spread over the frame numbers
    frames = sorted(f"clip/{i}.png" for i in range(1, 24))
    assert spread(frames, 4) == ["clip/1.png", "clip/16.png", "clip/23.png", "clip/8.png"]
    out = tmp_path / "sampled"
    code, text = _run(["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out),
                       "--stage1", str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16",
                       "--batch-size", "2", "--sample", "2"])
    assert code == 0, text
    assert "adapting on 2 of 3 input(s), spread evenly in frame order" in text
    assert sorted(p.name for p in (out / "sr").iterdir()) == ["alpha.png", "rgb.png"]  # alpha, grey, rgb: first, last
    assert json.loads((out / "config.json").read_text())["sample"] == 2
    # a frame added to the folder since: the same command picks other frames, and the refusal to resume says why
    import shutil

    grown = tmp_path / "grown"
    shutil.copytree(files / "lr", grown)
    shutil.copy(files / "lr" / "rgb.png", grown / "zz.png")
    code, text = _run(["adapt", str(grown), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
                       str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16", "--batch-size",
                       "2", "--sample", "2", "--resume"])
    assert code == 1 and "no zz.png (this command's input); rgb.png too (not in this command's inputs) (--sample 2 " \
        "spreads its choice over the inputs as they are now: frames added to or removed from a folder since change " \
        "which it takes)" in text, text
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "bad"), "--sample", "0"])
    assert res.exit_code == 2 and "--sample" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "bad"), "--seed", "-1"])  # torch took -1 as 2**64 - 1
    assert res.exit_code == 2 and "'--seed': -1 is not in the range x>=0" in res.output, res.output


def _fast(files, *extra):
    return ["-m", str(files / "tiny.safetensors"), "--stage1", str(files / "stage1.safetensors"), "--iterations", "1",
            "--patch-size", "16", "-q", *extra]


def test_inputs_where_the_run_writes_are_refused_untouched(files, tmp_path):
    """Inputs in OUT/sr were replaced by their own outputs; inputs directly in OUT were read back next time."""
    nest = tmp_path / "nest"
    shutil.copytree(files / "lr", nest / "sr")
    before = _digests(nest)
    code, text = _run(["adapt", str(nest / "sr"), "-o", str(nest), *_fast(files)])
    assert code == 1 and "lies where the run in --out" in text and "choose another --out folder" in text, text
    assert _digests(nest) == before
    flat = tmp_path / "flat"
    shutil.copytree(files / "lr", flat)
    code, text = _run(["adapt", str(flat / "rgb.png"), str(flat / "grey.png"), "-o", str(flat), *_fast(files)])
    assert code == 1 and "lies where the run" in text, text
    assert sorted(p.name for p in flat.iterdir()) == ["alpha.png", "grey.png", "rgb.png"]
    linked = tmp_path / "linked"  # a run whose sr/ the user replaced by a link to the inputs
    shutil.copytree(files / "lr", linked / "in")
    code, text = _run(["adapt", str(linked / "in"), "-o", str(linked / "out"), *_fast(files)])
    assert code == 0, text
    shutil.rmtree(linked / "out" / "sr")
    (linked / "out" / "sr").symlink_to(linked / "in")
    before = _digests(linked / "in")
    code, text = _run(["adapt", str(linked / "in"), "-o", str(linked / "out"), *_fast(files, "--overwrite")])
    assert code == 1 and "lies where the run" in text, text
    assert _digests(linked / "in") == before
    mine = tmp_path / "project"  # inputs in a folder of their own under OUT are fine
    shutil.copytree(files / "lr", mine / "lr")
    code, text = _run(["adapt", str(mine / "lr"), "-o", str(mine), *_fast(files)])
    assert code == 0, text


def test_a_run_of_another_mode_is_never_replaced(files, tmp_path):
    """--resume with another --mode replaced a finished folder run's report (its weights orphaned), and a folder run
    was written over a per-group adaptation."""
    out = tmp_path / "out"
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files)])
    assert code == 0, text
    before = _digests(out)
    for flags in ([], ["--resume"], ["--overwrite"]):
        code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--mode", "per-image", *flags)])
        assert code == 1 and "holds a --mode folder adaptation, not --mode per-image" in text, text
    assert _digests(out) == before
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--resume")])
    assert code == 0 and _digests(out) == before, text  # still this finished run, kept as it is
    grouped = tmp_path / "grouped"
    code, text = _run(["adapt", str(files / "lr"), "-o", str(grouped), *_fast(files, "--mode", "per-group", "--groups", "2")])
    assert code == 0, text
    before = _digests(grouped)
    for flags in ([], ["--resume"], ["--overwrite"]):
        code, text = _run(["adapt", str(files / "lr"), "-o", str(grouped), *_fast(files, *flags)])
        assert code == 1 and "holds a --mode per-group adaptation, not --mode folder" in text, text
    assert _digests(grouped) == before


def test_files_of_the_users_are_not_written_over(files, tmp_path):
    out = tmp_path / "mine"
    (out / "sr").mkdir(parents=True)
    (out / "config.json").write_text('{"my": "settings"}')
    (out / "notes.txt").write_text("keep")
    before = _digests(out)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files)])
    assert code == 1 and "holds config.json, sr/ but no adaptation run" in text, text
    assert _digests(out) == before
    per_image = tmp_path / "per-image"
    (per_image / "rgb").mkdir(parents=True)  # a folder of the user's named as one input's run
    code, text = _run(["adapt", str(files / "lr"), "-o", str(per_image), *_fast(files, "--mode", "per-image")])
    assert code == 1 and "holds rgb/ but no adaptation run" in text, text
    upscaled = tmp_path / "upscaled"  # per-image runs write no sr/ at the top: a user's sr/ there stays and is no bar
    (upscaled / "sr").mkdir(parents=True)
    (upscaled / "sr" / "a.png").write_bytes(b"mine")
    code, text = _run(["adapt", str(files / "lr"), "-o", str(upscaled), *_fast(files, "--mode", "per-image")])
    assert code == 0 and (upscaled / "sr" / "a.png").read_bytes() == b"mine", text
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep")  # files under other names are left alone, the run goes ahead
    code, text = _run(["adapt", str(files / "lr"), "-o", str(other), *_fast(files)])
    assert code == 0 and (other / "notes.txt").read_text() == "keep", text
    srfile = tmp_path / "srfile"
    code, text = _run(["adapt", str(files / "lr"), "-o", str(srfile), *_fast(files)])
    assert code == 0, text
    shutil.rmtree(srfile / "sr")
    (srfile / "sr").write_text("x")
    code, text = _run(["adapt", str(files / "lr"), "-o", str(srfile), *_fast(files, "--overwrite")])
    assert code == 1 and "sr is a file, where the run writes its images" in text, text


def test_per_image_names_that_are_the_runs_own_files_are_refused(files, tmp_path):
    lr = tmp_path / "lr"
    lr.mkdir()
    shutil.copy(files / "lr" / "rgb.png", lr / "report.json.png")
    code, text = _run(["adapt", str(lr), "-o", str(tmp_path / "out"), *_fast(files, "--mode", "per-image")])
    assert code == 1 and "an input named report.json would get the run folder" in text, text
    assert not (tmp_path / "out").exists()


def test_an_interrupted_multi_run_without_resume_names_resume(files, tmp_path):
    out = tmp_path / "out"
    (out / "grey").mkdir(parents=True)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--mode", "per-image")])
    assert code == 1, text  # a folder of the user's under an input's name: refused (no run there)
    shutil.rmtree(out)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--mode", "per-image")])
    assert code == 0, text
    (out / "report.json").unlink()  # as after a kill between the runs: config.json and finished sub-runs
    weights = {p: p.read_bytes() for p in out.glob("*/adapted.safetensors")}
    assert len(weights) == 3
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--mode", "per-image")])
    assert code == 1 and "pass --resume to keep those made with these inputs" in text, text
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--mode", "per-image", "--resume")])
    assert code == 0 and {p: p.read_bytes() for p in weights} == weights, text  # kept, not made again
    assert (out / "report.json").is_file()


def test_an_existing_out_folder_is_locked_before_anything_is_loaded(files, tmp_path, monkeypatch):
    """A second run started while the first was still loading got past the early check, loaded everything, then was
    refused: the first now holds the lock from its start (exclusive_run is re-entrant within its thread)."""
    import fcntl
    import os

    import lway_rt.io.store as store
    from lway_rt.adapt.loop import adapt

    out = tmp_path / "out"
    out.mkdir()
    seen = []
    real = store.load_model

    def probing_load(*args, **kw):  # another process trying the folder while this run loads its model
        fd = os.open(out, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append("free")
        except BlockingIOError:
            seen.append("locked")
        finally:
            os.close(fd)
        return real(*args, **kw)

    monkeypatch.setattr(store, "load_model", probing_load)
    from lway_rt.adapt.config import AdaptConfig

    adapt([files / "lr"], str(files / "tiny.safetensors"), out, AdaptConfig(iterations=1, patch_size=16),
          stage1=str(files / "stage1.safetensors"))
    assert seen and seen[0] == "locked"
    assert (out / "adapted.safetensors").is_file()


def test_a_run_of_several_stopped_while_setting_up_names_resume(files, tmp_path):
    """A stop before the first run's first step printed a bare 'interrupted', and the plain rerun was then refused."""
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.loop import adapt
    from lway_rt.errors import Interrupted

    def stop_in_setup(msg):
        if msg.startswith("adapting ") and "image(s):" in msg and "trainable tensors" in msg:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(Interrupted, match=r"alpha: interrupted before its first checkpoint; run the same command with "
                       r"--resume"):
        adapt([files / "lr"], str(files / "tiny.safetensors"), out, AdaptConfig(iterations=1, patch_size=16,
              mode="per-image"), stage1=str(files / "stage1.safetensors"), log=stop_in_setup)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--mode", "per-image", "--resume")])
    assert code == 0 and len(list(out.glob("*/adapted.safetensors"))) == 3, text


def test_a_run_of_several_stopped_after_its_last_step_does_not_say_before_its_first(files, tmp_path, monkeypatch):
    """A stop while a per-image run measured its detail change, after every iteration, said "interrupted before its
    first step", then "before its first checkpoint": the state after the last step is a checkpoint, which it names."""
    import lway_rt.adapt.loop as loop

    _stopping_on_call(monkeypatch, loop, "detail_change", 1)
    out = tmp_path / "out"
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--mode", "per-image")])
    assert code == 130 and f"alpha: interrupted; the checkpoint in {out / 'alpha' / 'checkpoint.pt'} is kept: run the " \
        "same command with --resume" in " ".join(text.split()), text
    assert "first step" not in text and "first checkpoint" not in text, text


@pytest.mark.parametrize("mode, stopping", [("folder", ("detail_change", 1)), ("per-image", ("detail_change", 2)),
                                             ("folder", ("fast_adapt_step", 2))])  # (in training, after a checkpoint)
def test_a_stopped_overwrite_advises_resume_in_place_of_overwrite(files, tmp_path, monkeypatch, mode, stopping):
    """An --overwrite stopped while it made its outputs (or in training) said "run the same command with --resume",
    which, with --overwrite still in it, is refused ("pass one of them"). It says "in place of --overwrite"."""
    import lway_rt.adapt.loop as loop

    out = tmp_path / "out"
    args = ["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", mode]
    assert _run(args)[0] == 0
    _stopping_on_call(monkeypatch, loop, *stopping)
    args += ["--iterations", "3", "--checkpoint-every", "1"]
    code, text = _run([*args, "--overwrite"])
    monkeypatch.undo()
    assert code == 130 and "run the same command with --resume in place of --overwrite" in " ".join(text.split()), text
    code, text = _run([*args, "--resume"])
    assert code == 0, text


def _tiny_adapt(files, out, *extra):
    return ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
            str(files / "stage1.safetensors"), "--iterations", "3", "--patch-size", "16", "--batch-size", "1", "-q",
            *extra]


def test_a_weights_file_without_its_run_is_never_written_over(files, tmp_path):
    """adapted.safetensors alone in --out (the user's own, or a run whose report is gone) is refused without
    --overwrite, --resume included: nothing says what it is."""
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "adapted.safetensors").write_bytes(b"mine")
    for extra in ((), ("--resume",), ("--overwrite",)):
        code, text = _run(_tiny_adapt(files, out, *extra))
        assert code == 1 and "holds adapted.safetensors but no adaptation run" in text, text
        assert (out / "adapted.safetensors").read_bytes() == b"mine"
    # a per-image run writes no file of that name: it runs beside it and leaves it alone
    code, text = _run(_tiny_adapt(files, out, "--mode", "per-image"))
    assert code == 0 and (out / "adapted.safetensors").read_bytes() == b"mine", text
    # a run of ours stopped while writing its outputs (its config is there, no report): --resume runs it again
    stopped = tmp_path / "stopped"
    assert _run(_tiny_adapt(files, stopped))[0] == 0
    (stopped / "report.json").unlink()
    code, text = _run(_tiny_adapt(files, stopped))
    assert code == 1 and "did not finish writing its outputs" in text, text
    code, text = _run(_tiny_adapt(files, stopped, "--resume"))
    assert code == 0 and (stopped / "report.json").is_file(), text
    # a report whose weights are gone: run again with --resume (or --overwrite), refused without a flag
    done = tmp_path / "done"
    assert _run(_tiny_adapt(files, done))[0] == 0
    (done / "adapted.safetensors").unlink()
    code, text = _run(_tiny_adapt(files, done))
    assert code == 1 and "whose adapted.safetensors is missing" in text, text
    code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(done), "-o", str(tmp_path / "up")])
    assert code == 1 and "whose adapted.safetensors is missing" in text and "--resume" in text, text
    code, text = _run([a for a in _tiny_adapt(files, done, "--resume") if a != "-q"])
    assert code == 0 and "damaged (its adapted.safetensors is missing): running it again" in text, text
    assert (done / "adapted.safetensors").is_file()
    # ...but not a report of other inputs or settings: that run is not this one's to replace
    (done / "adapted.safetensors").unlink()
    code, text = _run(_tiny_adapt(files, done, "--resume", "--lr", "1e-3"))
    assert code == 1 and "was made with other settings: --lr " in text and "(this command: 0.001)" in text, text
    assert (done / "report.json").is_file()


def test_a_refused_resume_says_where_the_runs_settings_are(files, tmp_path):
    """A --resume that left out the run's --patch-size was told only that the images are smaller than the default
    patch (the user guessed sizes), and one with other settings was not told that the run's config.json holds them."""
    out = tmp_path / "stopped"
    args, proc, text = _long_run_stopped_after_a_checkpoint(files, out, signal.SIGINT)
    assert (out / CHECKPOINT).is_file(), text
    at = args.index("--patch-size")
    code, text = _run([*args[:at], *args[at + 2:], "--resume"])
    assert code == 1 and "smaller than the 48-px patch" in text and f"(the run in {out} was made with --patch-size 16: " \
        f"--config {out / 'config.json'} gives its settings with --resume)" in " ".join(text.split()), text
    code, text = _run([*args, "--resume", "--lr", "1e-3"])
    assert code == 1 and "made with other settings: --lr " in text and \
        f"rerun with the same ones (--config {out / 'config.json'} gives its settings)" in " ".join(text.split()), text


def test_inputs_sharing_a_name_given_in_another_order_are_said_so(files, tmp_path, hr_crop):
    """d1/x.png and d2/x.png are named x_png and x_png_2 by their order: the same two given the other way round were
    refused as 'other pixels or alpha in x.png, x.png'."""
    for folder, crop in (("d1", hr_crop[:128:4, :128:4]), ("d2", hr_crop[128::4, 128::4])):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.ascontiguousarray(crop)).save(tmp_path / folder / "x.png")
    out = tmp_path / "run"
    rest = ["-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1", str(files / "stage1.safetensors"),
            "--iterations", "1", "--patch-size", "16", "-q"]
    assert _run(["adapt", str(tmp_path / "d1" / "x.png"), str(tmp_path / "d2" / "x.png"), *rest])[0] == 0
    code, text = _run(["adapt", str(tmp_path / "d2" / "x.png"), str(tmp_path / "d1" / "x.png"), *rest, "--resume"])
    assert code == 1 and "made with its inputs in another order (those that share a file name are told apart by " \
        "their order: give them in the order the run had)" in " ".join(text.split()), text
    assert "other pixels" not in text


def test_restore_of_one_run_of_a_per_image_folder_is_sent_to_the_folder(files, tmp_path, held_elsewhere):
    """--restore OUT/a, one run folder of a per-image adaptation, was not refused even while a command held OUT (it
    locks OUT, not a run folder between that run's making): it put a's old run back under the command, whose summary
    then described the new one. The folder's own --restore puts back every run."""
    out = tmp_path / "each"
    assert _run(_tiny_adapt(files, out, "--mode", "per-image"))[0] == 0
    with held_elsewhere(out):  # a per-image command running there
        code, text = _run(["adapt", "--restore", str(out / "rgb")])
    assert code == 1 and f"{out / 'rgb'} is one run of the per-image adaptation in {out}: lwayrt adapt --restore " \
        f"{out} puts back every run" in " ".join(text.split()), text
    # what a kill mid-write of the folder's own summary or routing left goes when a command holds it (they stayed)
    from lway_rt.io.weights import temp_prefix

    killed = [out / f"{temp_prefix('report.json')}k1ll3d.tmp", out / f"{temp_prefix('groups.json')}k1ll3d.tmp"]
    for f in killed:
        f.write_bytes(b"{")
    assert _run(_tiny_adapt(files, out, "--mode", "per-image", "--resume"))[0] == 0
    assert not any(f.exists() for f in killed)


def test_a_per_image_input_named_like_the_folders_own_files_is_refused_in_any_case(files, tmp_path):
    """Report.json.png would get the run folder Report.json, which macOS's and Windows' file systems take for the
    folder's report.json: only the exact name was refused."""
    for n, name in enumerate(("report.json", "Report.json")):
        lr = tmp_path / f"in{n}"
        lr.mkdir()
        shutil.copy(files / "lr" / "rgb.png", lr / f"{name}.png")
        code, text = _run(["adapt", str(lr), "-m", str(files / "tiny.safetensors"), "-o", str(tmp_path / f"o{n}"),
                           "--mode", "per-image", "--iterations", "1", "--patch-size", "16", "--stage1",
                           str(files / "stage1.safetensors"), "-q"])
        assert code == 1 and f"an input named {name} would get the run folder" in text, text


def test_a_refused_resume_names_the_input_that_changed(files, tmp_path):
    """The refusal to resume said only "other inputs (their pixels or alpha), ... or another model, stage 1 or
    perceptual weights": checkpoints and reports now record each input's hash, so it names the one that changed,
    one run per image (--mode per-image) as in one model for the folder."""
    lr = tmp_path / "lr"
    shutil.copytree(files / "lr", lr)
    for mode in ("folder", "per-image"):
        out = tmp_path / mode
        args = [*_tiny_adapt(files, out, "--mode", mode)]
        args[1] = str(lr)
        assert _run(args)[0] == 0
        Image.fromarray(255 - np.asarray(Image.open(files / "lr" / "rgb.png"))).save(lr / "rgb.png")
        code, text = _run([*args, "--resume"])
        assert code == 1 and "made with other pixels or alpha in rgb.png: rerun" in text, (mode, text)
        shutil.copy(files / "lr" / "rgb.png", lr / "rgb.png")


@pytest.mark.parametrize("damage", ["truncated", "changed", "image gone", "image gone from the report too"])
def test_resume_runs_a_damaged_finished_run_again(files, tmp_path, damage):
    """--resume calls a finished run complete only when its weights are the ones its report records and the
    images it lists are there; upscale refuses weights that differ from the hash adapt recorded in them."""
    out = tmp_path / "run"
    assert _run(_tiny_adapt(files, out))[0] == 0
    weights = out / "adapted.safetensors"
    good = weights.read_bytes()
    recorded = load_model(str(weights)).metadata["adapted_sha256"]
    if damage == "truncated":
        weights.write_bytes(good[: len(good) // 2])
    elif damage == "changed":  # bytes zeroed inside the last tensor: the file still reads
        weights.write_bytes(good[:-64] + bytes(64))
    else:
        before, inode = np.asarray(Image.open(out / "sr" / "grey.png")), weights.stat().st_ino
        (out / "sr" / "grey.png").unlink()
        if damage.endswith("too"):  # an edited list: each input's image is looked for all the same
            report = json.loads((out / "report.json").read_text())
            report["images"] = [e for e in report["images"] if e["name"] != "grey"]
            (out / "report.json").write_text(json.dumps(report))
    if not damage.startswith("image gone"):
        code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(weights), "-o", str(tmp_path / "up")])
        assert code == 1 and "Traceback" not in text, text
        assert ("adapted_sha256" if damage == "changed" else "cannot be read (cut short or damaged since lwayrt adapt "
                "wrote it): run the same lwayrt adapt command again with --resume") in " ".join(text.split()), text  # (not
        # "re-download or re-export it": 58C-5)
        assert damage != "changed" or "again with --resume" in text, text  # the gentle repair, tested below
        if damage in ("truncated", "changed"):  # a copy elsewhere is copied again: a --resume of its whole run would
            # not mend it (58I-4)
            copy = tmp_path / "mine.safetensors"
            copy.write_bytes(weights.read_bytes())
            code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(copy), "-o", str(tmp_path / "up")])
            assert code == 1 and "it is a copy of weights lwayrt adapt wrote: copy the adapted.safetensors of its " \
                "run folder again" in " ".join(text.split()), text
        if damage == "truncated":  # cut within its header too: known by its name in a run folder
            half = weights.read_bytes()
            weights.write_bytes(good[:20])
            code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(weights), "-o", str(tmp_path / "up")])
            assert code == 1 and "cannot be read (cut short or damaged since lwayrt adapt wrote it)" in text, text
            weights.write_bytes(half)
    code, text = _run([a for a in _tiny_adapt(files, out, "--resume") if a != "-q"])
    if damage == "image gone":  # intact weights: only the image is written again, from them, without adapting
        assert code == 0 and "missing 1 SR image(s): wrote them again" in text, text
        assert "running it again" not in text and weights.stat().st_ino == inode  # not written again (atomically)
        assert np.array_equal(np.asarray(Image.open(out / "sr" / "grey.png")), before)
        # recording how it was made, as the run had: the same record as its neighbour's but for the input
        made = {n: json.loads(Image.open(out / "sr" / f"{n}.png").text["lwayrt-adapt"]) for n in ("grey", "rgb")}
        assert made["grey"]["weights"] == made["rgb"]["weights"] and made["grey"]["input"] != made["rgb"]["input"]
    else:
        assert code == 0 and "the finished run is damaged" in text and "running it again" in text, text
    again = load_model(str(weights))  # the same run, made again
    assert state_dict_sha256(again.model.state_dict()) == recorded == again.metadata["adapted_sha256"]
    assert (out / "sr" / "grey.png").is_file()
    code, text = _run([a for a in _tiny_adapt(files, out, "--resume") if a != "-q"])
    assert code == 0 and "complete with these inputs and settings: kept as it is" in text, text


def test_resume_of_a_finished_run_with_ground_truth_or_a_cap_it_lacked_is_refused(files, tmp_path):
    """--resume --gt (or --detail-cap) on a finished run without them said 'kept as it is': no best-weights choice,
    no Y-PSNR, uncapped images. Now refused, the folder untouched; the same command still keeps the run."""
    out = tmp_path / "run"
    assert _run(_tiny_adapt(files, out))[0] == 0
    gt = tmp_path / "gt"
    gt.mkdir()
    for p in (files / "lr").iterdir():
        im = Image.open(p)
        im.resize((im.width * 4, im.height * 4), Image.BICUBIC).save(gt / p.name)
    before = _digests(out)
    code, text = _run(_tiny_adapt(files, out, "--resume", "--gt", str(gt)))
    assert code == 1 and "made with no ground truth (this command has --gt): rerun" in text, text
    code, text = _run(_tiny_adapt(files, out, "--resume", "--detail-cap", "1"))
    assert code == 1 and "--detail-cap unset (this command: 1)" in text, text
    assert _digests(out) == before
    code, text = _run([a for a in _tiny_adapt(files, out, "--resume") if a != "-q"])
    assert code == 0 and "kept as it is" in text and _digests(out) == before, text
    # with ground truth the evaluations' spacing picks the weights kept: a change of it alone is named (it got the
    # list of every possible cause, "... or its --eval-every, or another model ...")
    judged = tmp_path / "judged"
    assert _run(_tiny_adapt(files, judged, "--gt", str(gt), "--eval-every", "1"))[0] == 0
    code, text = _run(_tiny_adapt(files, judged, "--resume", "--gt", str(gt), "--eval-every", "2"))
    assert code == 1 and "made with other settings: --eval-every 1 (this command: 2): rerun" in text, text


def test_ground_truth_named_like_inputs_that_differ_only_in_ending_is_taken(files, tmp_path, hr_crop):
    """dup.png and dup.jpg with ground truths dup.png and dup.jpg (named like their inputs, as --help says) were
    refused: 'name their ground truths dup_jpg, dup_png', the names the run gives them."""
    lr, gt = tmp_path / "lr", tmp_path / "gt"
    lr.mkdir()
    gt.mkdir()
    for ending, crop in ((".png", hr_crop[:128, :128]), (".jpg", hr_crop[128:, 128:])):
        hr = Image.fromarray(np.ascontiguousarray(crop))
        hr.resize((32, 32), Image.BICUBIC).save(lr / f"dup{ending}", quality=95)
        hr.save(gt / f"dup{ending}", quality=95)
    out = tmp_path / "run"
    code, text = _run(["adapt", str(lr), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
                       str(files / "stage1.safetensors"), "--iterations", "1", "--patch-size", "16", "--gt", str(gt),
                       "-q"])
    assert code == 0, text
    (gt / "dup.jpg").unlink()  # one missing: still named by the run's names
    code, text = _run(["adapt", str(lr), "-m", str(files / "tiny.safetensors"), "-o", str(tmp_path / "again"),
                       "--stage1", str(files / "stage1.safetensors"), "--iterations", "1", "--patch-size", "16",
                       "--gt", str(gt), "-q"])
    assert code == 1 and f"name their ground truths in {gt} dup_jpg" in text, text


def test_with_ground_truth_the_tiling_of_its_evaluations_is_part_of_the_run(files, tmp_path, monkeypatch):
    """With --gt, the Y-PSNR that picks the weights kept is measured with --tile (seams move it): a resume with another
    --tile was accepted, comparing scores of two tilings. And sr/ images a resume writes again are made with the
    run's own --tile, as the rest of sr/ was, not this command's."""
    from lway_rt.adapt import loop

    gt = tmp_path / "gt"
    gt.mkdir()
    for p in (files / "lr").iterdir():
        im = Image.open(p)
        im.resize((im.width * 4, im.height * 4), Image.BICUBIC).save(gt / p.name)
    out = tmp_path / "judged"
    assert _run(_tiny_adapt(files, out, "--gt", str(gt), "--tile", "80"))[0] == 0
    code, text = _run(_tiny_adapt(files, out, "--resume", "--gt", str(gt), "--tile", "0"))
    assert code == 1 and "made with other settings: --tile 80 (this command: 0)" in text, text
    code, text = _run([a for a in _tiny_adapt(files, out, "--resume", "--gt", str(gt), "--tile", "80") if a != "-q"])
    assert code == 0 and "kept as it is" in text, text
    (out / "sr" / "rgb.png").unlink()
    tiles, real_print = [], loop._fingerprint
    real = loop._write_sr_images
    monkeypatch.setattr(loop, "_write_sr_images", lambda *a, **k: tiles.append(a[5].tile) or real(*a, **k))
    code, text = _run(_tiny_adapt(files, out, "--resume", "--gt", str(gt), "--tile", "80"))
    assert code == 0 and tiles == [80] and (out / "sr" / "rgb.png").is_file(), (tiles, text)
    # --tile 512 is the default's tiling: the same run
    code, text = _run([a for a in _tiny_adapt(files, tmp_path / "dflt", "--gt", str(gt))])
    code, text = _run([a for a in _tiny_adapt(files, tmp_path / "dflt", "--resume", "--gt", str(gt), "--tile", "512")
                       if a != "-q"])
    assert code == 0 and "kept as it is" in text, text
    code, text = _run(_tiny_adapt(files, tmp_path / "dflt", "--resume", "--gt", str(gt), "--tile", "80"))
    assert code == 1 and "--tile unset (this command: 80)" in text, text
    # a --gt --tile 80 run made before the tile counted (its print without it) resumes with --tile 80 as it did
    monkeypatch.setattr(loop, "_fingerprint", lambda *a, **k: real_print(*a, **{**k, "tile": False}))
    assert _run(_tiny_adapt(files, tmp_path / "older", "--gt", str(gt), "--tile", "80"))[0] == 0
    monkeypatch.setattr(loop, "_fingerprint", real_print)
    code, text = _run([a for a in _tiny_adapt(files, tmp_path / "older", "--resume", "--gt", str(gt), "--tile", "80")
                       if a != "-q"])
    assert code == 0 and "kept as it is" in text, text
    plain = tmp_path / "plain"  # without --gt the tile is no part of the run: a resume may change it
    assert _run(_tiny_adapt(files, plain, "--tile", "80"))[0] == 0
    (plain / "sr" / "rgb.png").unlink()
    tiles.clear()
    code, text = _run(_tiny_adapt(files, plain, "--resume"))
    assert code == 0 and tiles == [80], (tiles, text)


def test_resume_with_an_unreadable_report_says_so(files, tmp_path):
    out = tmp_path / "run"
    assert _run(_tiny_adapt(files, out))[0] == 0
    (out / "report.json").write_text('{"broken')
    code, text = _run(_tiny_adapt(files, out, "--resume"))
    assert code == 1 and "report.json cannot be read" in text and "--overwrite" in text, text


def test_overwrite_removes_only_the_old_runs_images(files, tmp_path):
    """An edited report cannot make --overwrite delete a file outside the run's sr/ folder."""
    out = tmp_path / "run"
    assert _run(_tiny_adapt(files, out))[0] == 0
    (out / "notes.txt").write_text("mine")
    report = json.loads((out / "report.json").read_text())
    report["images"].append({"sr": "notes.txt"})  # (the run's own images stay listed: their names are its to write)
    (out / "report.json").write_text(json.dumps(report))
    assert _run(_tiny_adapt(files, out, "--overwrite"))[0] == 0
    assert (out / "notes.txt").read_text() == "mine"


def test_an_unfinished_runs_checkpoint_is_not_taken_for_a_model(files, tmp_path, held_elsewhere):
    out = tmp_path / "stopped"
    args, proc, text = _long_run_stopped_after_a_checkpoint(files, out, signal.SIGINT)
    assert (out / CHECKPOINT).is_file(), text
    for model in (out / CHECKPOINT, out):
        code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(model), "-o", str(tmp_path / "up")])
        assert code == 1 and "unfinished lwayrt adapt run" in text and "--resume" in text, text
    # one killed before its first checkpoint holds only its config.json
    (out / CHECKPOINT).unlink()
    for command in (["export", "-m", str(out), "--out", str(tmp_path / "exp")], ["serve-bench", "-m", str(out)]):
        code, text = _run(command)
        assert code == 1 and "stopped before its first checkpoint" in text and "run the same adapt command" in text, text
    with held_elsewhere(out):  # a run still writing there: "run it again" would be refused as busy
        code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(out), "-o", str(tmp_path / "up")])
    assert code == 1 and "holds an lwayrt adapt run that is still running" in text and "wait for it" in text, text


def test_the_base_model_is_recorded_by_absolute_path(files, tmp_path, monkeypatch):
    """A base model given by a relative path is found again from any folder (the detail cap needs it)."""
    monkeypatch.chdir(files)
    out = tmp_path / "capped"
    code, text = _run(["adapt", "lr", "-m", "tiny.safetensors", "-o", str(out), "--stage1", "stage1.safetensors",
                       "--iterations", "2", "--patch-size", "16", "--detail-cap", "1.0", "-q"])
    assert code == 0, text
    meta = load_model(str(out / "adapted.safetensors")).metadata
    assert meta["base_source"] == str(files / "tiny.safetensors")
    # weights adapted from adapted weights name their base by its file: the name in its metadata ('<base>-lway')
    # reaches no model
    again = tmp_path / "again"
    code, text = _run(["adapt", "lr", "-m", str(out / "adapted.safetensors"), "-o", str(again), "--stage1",
                       "stage1.safetensors", "--iterations", "1", "--patch-size", "16", "-q"])
    assert code == 0, text
    meta = load_model(str(again / "adapted.safetensors")).metadata
    assert meta["base_model"] == meta["base_source"] == str(out / "adapted.safetensors"), meta
    monkeypatch.chdir(tmp_path)
    code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(out / "adapted.safetensors"), "-o", "up"])
    assert code == 0, text
    assert np.array_equal(np.asarray(Image.open(tmp_path / "up" / "rgb_x4.png")),
                          np.asarray(Image.open(out / "sr" / "rgb.png")))


def test_a_per_image_folder_with_unreadable_records_is_still_known_by_its_runs(files, tmp_path):
    out = tmp_path / "each"
    args = [a for a in _tiny_adapt(files, out, "--mode", "per-image") if a != "-q"]
    assert _run(args)[0] == 0
    for name in ("report.json", "config.json"):
        (out / name).write_text("{")
    code, text = _run([a for a in args if a not in ("--mode", "per-image")])
    assert code == 1 and "holds a --mode per-image adaptation" in text, text
    code, text = _run([*args, "--resume"])
    assert code == 0 and text.count("already adapted with these inputs and settings, skipped") == 3, text


def test_a_folder_run_kept_in_a_sub_folder_is_not_taken_for_a_per_image_adaptation(files, tmp_path):
    """A project folder holding a finished --mode folder run in a sub-folder (proj/run1/) was called "a --mode
    per-image adaptation", and the advised --mode per-image --resume then wrote a per-image adaptation beside it. The
    runs in sub-folders count only where they record a per-image or per-group mode."""
    import shutil

    proj = tmp_path / "proj"
    run = tmp_path / "run"
    args = [a for a in _tiny_adapt(files, run) if a != "-q"]
    assert _run(args)[0] == 0
    shutil.copytree(run, proj / "run1")
    kept = _digests(proj)
    code, text = _run([a if a != str(run) else str(proj) for a in args])
    assert code == 0 and "per-image" not in text, text
    assert (proj / "adapted.safetensors").is_file() and {k: v for k, v in _digests(proj).items()
                                                         if k.startswith("run1/")} == kept


def test_a_sub_folder_with_a_weights_file_of_the_users_is_not_a_run(files, tmp_path):
    """A sub-folder holding only the user's adapted.safetensors (and notes) made --out "a --mode per-image
    adaptation", as a lone weights file at the top does not."""
    import shutil

    run = tmp_path / "run"
    args = [a for a in _tiny_adapt(files, run) if a != "-q"]
    assert _run(args)[0] == 0
    mine = tmp_path / "proj" / "mine"
    mine.mkdir(parents=True)
    shutil.copy(run / "adapted.safetensors", mine)
    (mine / "notes.txt").write_text("mine")
    code, text = _run([a if a != str(run) else str(tmp_path / "proj") for a in args])
    assert code == 0 and "per-image" not in text, text
    assert (mine / "notes.txt").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == [
        "adapted.safetensors", "notes.txt"]


def test_config_file_keys_in_an_adapt_table_or_at_the_top(tmp_path):
    """--help says both layouts are read: an [adapt] table, or the keys at the file's top level."""
    from lway_rt.adapt.config import load_toml_defaults
    from lway_rt.errors import InputError

    (tmp_path / "table.toml").write_text("[adapt]\niterations = 7\nbatch-size = 2\n")
    (tmp_path / "top.toml").write_text("iterations = 7\nbatch-size = 2\n")
    (tmp_path / "bad.toml").write_text("adapt = 3\n")
    for name in ("table.toml", "top.toml"):
        assert load_toml_defaults(tmp_path / name) == {"iterations": 7, "batch_size": 2}
    with pytest.raises(InputError, match=r"\[adapt\] must be a table"):
        load_toml_defaults(tmp_path / "bad.toml")
    # both: the top-level keys were dropped without a word (a 4-iteration recipe ran 200 iterations)
    (tmp_path / "both.toml").write_text("iterations = 4\npatch-size = 24\n[adapt]\nlr = 1e-5\n")
    with pytest.raises(InputError, match=r"settings both at its top level \(iterations, patch-size\) and in \[adapt\]"):
        load_toml_defaults(tmp_path / "both.toml")


def test_a_bad_value_from_the_config_file_keeps_the_file_s_key_name(files, tmp_path):
    """Flags are named as typed (--patch-size); a value read from --config keeps its key (patch_size)."""
    (tmp_path / "c.toml").write_text("[adapt]\nema = 1.0\n")
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "o"), "--config", str(tmp_path / "c.toml")])
    assert res.exit_code == 1 and res.output.startswith("error: adapt config: ema must be in [0, 1)"), res.output


def test_a_stop_before_the_first_checkpoint_says_there_is_nothing_to_resume(files, tmp_path, monkeypatch):
    """Ctrl-C while the run was embedding its inputs printed the generic line for finished files ('run the same
    command again for the rest'); adapt says what it means for an adaptation, and the plain rerun works."""
    import lway_rt.adapt.loop as loop

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(loop, "compute_embeddings", ctrl_c)
        res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-o", str(out), *_fast(files)])
    assert res.exit_code == 130, res.output
    assert "adaptation interrupted before its first checkpoint: there is nothing to resume; run the same command " \
        "again" in res.output and "for the rest" not in res.output, res.output
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_fast(files)])
    assert code == 0 and (out / "adapted.safetensors").is_file(), text
    # with --resume, a stop while it loads leaves what --out holds as it was, which the message must not deny (it
    # said 'nothing to resume; it starts from the beginning' beside a checkpoint that --resume would continue)
    with monkeypatch.context() as m:  # (a finished run is checked before anything is embedded: stopped while hashing)
        m.setattr(loop._Fingerprinter, "with_parts", ctrl_c)
        res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-o", str(out), *_fast(files, "--resume")])
    assert res.exit_code == 130 and "adaptation interrupted; run the same command (with --resume) again to take up " \
        f"the run in {out}" in res.output and "nothing to resume" not in res.output, res.output


def test_images_in_sub_folders_are_named_not_skipped_unsaid(files, tmp_path):
    """adapt reads a folder's own images: sub-folders with images are named in a note (they were left out without a
    word), and a folder whose images are all in sub-folders says so instead of 'holds no images'."""
    import shutil

    top, only = tmp_path / "top", tmp_path / "only"
    (top / "more").mkdir(parents=True)
    (only / "frames").mkdir(parents=True)
    shutil.copy(files / "lr" / "rgb.png", top / "a.png")
    shutil.copy(files / "lr" / "rgb.png", top / "more" / "b.png")
    shutil.copy(files / "lr" / "rgb.png", only / "frames" / "c.png")
    code, text = _run(["adapt", str(top), "-o", str(tmp_path / "o1"), *[a for a in _fast(files) if a != "-q"]])
    assert code == 0 and f"the images in sub-folders of {top} ({top / 'more'}) are not read: name those folders" in text, text
    assert [p.name for p in (tmp_path / "o1" / "sr").iterdir()] == ["a.png"]
    res = CliRunner().invoke(main, ["adapt", str(only), "-o", str(tmp_path / "o2"), *_fast(files)])
    assert res.exit_code == 1 and f"its sub-folders {only / 'frames'} do: name them as inputs" in res.output, res.output


def test_file_names_not_in_utf8_or_too_long_for_their_image(files, tmp_path):
    """A file name that is not UTF-8 (bytes a camera or an old archive wrote) crashed the run's fingerprint; a name
    whose SR image name would pass the file-name limit (two inputs sharing a long stem get _png / _jpg) failed only
    after the training, leaving a half-written sr/."""
    import os

    src = tmp_path / "in"
    src.mkdir()
    odd = os.fsdecode(b"bad\xff.png")
    shutil.copy(files / "lr" / "rgb.png", src / odd)
    out = tmp_path / "out"
    code, text = _run(_tiny_adapt(files, out)[:1] + [str(src)] + _tiny_adapt(files, out)[2:])
    assert code == 0, text
    assert (out / "sr" / odd).is_file()
    long = tmp_path / "long"
    long.mkdir()
    stem = "c" * 248
    shutil.copy(files / "lr" / "rgb.png", long / f"{stem}.png")
    Image.open(files / "lr" / "rgb.png").save(long / f"{stem}.jpg")
    out = tmp_path / "out2"
    code, text = _run(_tiny_adapt(files, out)[:1] + [str(long)] + _tiny_adapt(files, out)[2:])
    assert code == 1 and "would give the SR image a name of 256 bytes, more than the 255 a file name may have: " \
        "rename it shorter" in text, text
    assert not out.exists()


def test_a_file_of_several_frames_is_adapted_on_its_first_with_a_note(files, tmp_path):
    """upscale said so; adapt read the first frame of an animated GIF or a multi-page TIFF without a word."""
    src = tmp_path / "in"
    src.mkdir()
    rgb = Image.open(files / "lr" / "rgb.png")
    rgb.save(src / "pages.tif", save_all=True, append_images=[rgb.transpose(Image.FLIP_LEFT_RIGHT)])
    out = tmp_path / "out"
    code, text = _run([a for a in _tiny_adapt(files, out) if a != "-q"][:1] + [str(src)] +
                      [a for a in _tiny_adapt(files, out) if a != "-q"][2:])
    assert code == 0, text
    assert f"note: {src / 'pages.tif'} holds 2 frames or pages: only the first was adapted on and written" in text, text


def test_a_cmyk_input_and_one_with_xmp_are_said_as_upscale_says_them(files, tmp_path):
    """upscale says a CMYK input's output is RGB and that XMP / IPTC is not carried; adapt wrote its sr/ images the
    same way without a word (review 52J J1)."""
    src = tmp_path / "in"
    src.mkdir()
    rgb = Image.open(files / "lr" / "rgb.png").convert("RGB")
    rgb.convert("CMYK").save(src / "print.jpg", quality=95)
    rgb.save(src / "tagged.jpg", quality=95, xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/">Jane</x:xmpmeta>')
    out = tmp_path / "out"
    args = [a for a in _tiny_adapt(files, out) if a != "-q"]
    code, text = _run(args[:1] + [str(src)] + args[2:])
    said = " ".join(text.split())
    assert code == 0, text
    assert said.count(f"note: {src / 'print.jpg'} is CMYK: its SR image ({out / 'sr' / 'print.png'}) is RGB") == 1, \
        text
    assert said.count(f"1 input(s) hold XMP metadata (captions, keywords, rights …; as {src / 'tagged.jpg'}) that "
                      "their SR images do not carry") == 1, text
    assert f"{out / 'sr' / 'tagged.png'} (the output is upright" in said and (out / "sr" / "tagged.png").is_file(), text
    each = tmp_path / "each"  # each run's own folder (review 52N N4: the notes named OUT/sr/ in every mode)
    code, text = _run(args[:1] + [str(src)] + [a if a != str(out) else str(each) for a in args[2:]] +
                      ["--mode", "per-image"])
    said = " ".join(text.split())
    assert code == 0 and f"its SR image ({each / 'print' / 'sr' / 'print.png'}) is RGB" in said, text
    assert f"{each / 'tagged' / 'sr' / 'tagged.png'} (the output is upright" in said, text
    assert (each / "print" / "sr" / "print.png").is_file()


def test_a_file_cut_in_a_later_frame_is_adapted_on_its_first_and_the_note_says_where(files, tmp_path):
    """The note said the file holds N frames (and how to extract them) when frame N was where it breaks."""
    import io

    src = tmp_path / "in"
    src.mkdir()
    rgb = Image.open(files / "lr" / "rgb.png").convert("RGB")
    frames = [f.quantize(64) for f in (rgb, rgb.transpose(Image.FLIP_LEFT_RIGHT), rgb.transpose(Image.FLIP_TOP_BOTTOM))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    (src / "cut.gif").write_bytes(buf.getvalue()[:int(len(buf.getvalue()) * 0.7)])
    out = tmp_path / "out"
    args = [a for a in _tiny_adapt(files, out) if a != "-q"]
    code, text = _run(args[:1] + [str(src)] + args[2:])
    assert code == 0, text
    assert "is cut short or damaged at frame or page" in " ".join(text.split()), text


def test_a_users_folder_named_after_an_input_is_never_written_over(files, tmp_path):
    """Per-image --resume / --overwrite into a folder of earlier runs: a sub-folder named after a new input that holds
    the user's files but no run was taken for a run's folder, its config.json, report.json and sr/ image replaced
    without a word. It is refused, for both flags, and left as it was; a run stopped before its first checkpoint
    (only its config.json) is still continued."""
    import shutil

    out = tmp_path / "each"
    base = ["adapt", "-o", str(out), *_fast(files, "--mode", "per-image")]
    code, text = _run([*base, str(files / "lr" / "rgb.png")])
    assert code == 0, text
    mine = out / "grey"
    (mine / "sr").mkdir(parents=True)
    (mine / "config.json").write_text('{"mine": 1}')
    shutil.copy(files / "lr" / "rgb.png", mine / "sr" / "grey.png")
    before = _digests(mine)
    for flag in ("--resume", "--overwrite"):
        code, text = _run([*base, str(files / "lr" / "rgb.png"), str(files / "lr" / "grey.png"), flag])
        assert code == 1 and f"{mine} holds config.json, sr/ but no adaptation run: the run would write over them; " \
            "move them, or choose another --out folder" in " ".join(text.split()), (flag, text)
        assert _digests(mine) == before
    shutil.rmtree(mine)  # a run stopped before its first checkpoint left only its config.json: continued
    mine.mkdir()
    (mine / "config.json").write_bytes((out / "rgb" / "config.json").read_bytes())
    code, text = _run([*base, str(files / "lr" / "rgb.png"), str(files / "lr" / "grey.png"), "--resume"])
    assert code == 0 and (mine / "adapted.safetensors").is_file(), text


def test_overwrite_never_replaces_a_users_image_in_sr(files, tmp_path):
    """Folder mode --overwrite removes the old run's images (its report lists them); a file of the user's in sr/ under
    the name of one of the new inputs' images was replaced. It is refused, and left as it was."""
    import shutil

    out = tmp_path / "run"
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(out), *_fast(files)])
    assert code == 0, text
    shutil.copy(files / "lr" / "rgb.png", out / "sr" / "grey.png")
    mine = (out / "sr" / "grey.png").read_bytes()
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), str(files / "lr" / "grey.png"), "-o", str(out),
                       *_fast(files), "--overwrite"])
    assert code == 1 and f"{out / 'sr' / 'grey.png'} is not an image of the run in {out} (neither its report nor its " \
        "list of images written names it)" in " ".join(text.split()), text
    assert (out / "sr" / "grey.png").read_bytes() == mine
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(out), *_fast(files), "--overwrite"])
    assert code == 0 and (out / "sr" / "grey.png").read_bytes() == mine, text  # not an input: kept, as before


def test_per_image_overwrite_removes_the_replaced_runs(files, tmp_path):
    """--overwrite of a per-image adaptation with fewer inputs left the old runs' folders (weights, images) beside the
    new ones: the summary listed one run, the folder held three models for upscale to route between. The replaced
    runs go, as folder mode's old images do; a file of the user's in one keeps that folder and the file."""
    out = tmp_path / "each"
    base = ["adapt", "-o", str(out), *_fast(files, "--mode", "per-image")]
    code, text = _run([*base, str(files / "lr")])
    assert code == 0 and sorted(p.parent.name for p in out.glob("*/adapted.safetensors")) == ["alpha", "grey", "rgb"]
    (out / "grey" / "notes.txt").write_text("mine")
    code, text = _run([*base, str(files / "lr" / "rgb.png"), "--overwrite"])
    assert code == 0, text
    assert [p.parent.name for p in out.glob("*/adapted.safetensors")] == ["rgb"]
    assert not (out / "alpha").exists() and [p.name for p in (out / "grey").iterdir()] == ["notes.txt"]
    assert [r["name"] for r in json.loads((out / "report.json").read_text())["runs"]] == ["rgb"]


def test_a_runs_config_json_runs_the_same_recipe_again(files, tmp_path):
    """--config took TOML only, so the config.json a run writes ("the resolved configuration") was refused as "not
    valid TOML"; it is read as the run's settings, and the run made with it is the same, bit for bit."""
    first, again = tmp_path / "first", tmp_path / "again"
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(first), *_fast(files, "--lr", "2e-3",
                                                                                          "--seed", "5")])
    assert code == 0, text
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(again), "-m", str(files / "tiny.safetensors"),
                       "--stage1", str(files / "stage1.safetensors"), "-q", "--config", str(first / "config.json")])
    assert code == 0, text
    assert json.loads((again / "config.json").read_text()) == json.loads((first / "config.json").read_text())
    _a, _b = load_model(str(first / "adapted.safetensors")), load_model(str(again / "adapted.safetensors"))
    assert state_dict_sha256(_a.model.state_dict()) == state_dict_sha256(_b.model.state_dict())
    (tmp_path / "bad.json").write_text("[1, 2]")
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(tmp_path / "x"), *_fast(files),
                       "--config", str(tmp_path / "bad.json")])
    assert code == 1 and "is not an object of settings" in text, text
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(tmp_path / "x"), *_fast(files),
                       "--config", str(first / "report.json")])  # an easy slip: it listed some 70 unknown keys
    assert code == 1 and f"is a run's report, not its settings: pass the config.json beside it (--config " \
        f"{first / 'config.json'})" in text, text


def test_resume_notices_other_photos_in_sup_data(files, tmp_path, hr_crop):
    """--sup-data entered the fingerprint as its path only: a finished run was "kept as it is" on --resume after the
    folder's photos changed (and an interrupted one continued on other photos). The photos' bytes are hashed now."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(hr_crop[:96, :96]).save(photos / "a.png")
    out = tmp_path / "run"
    args = ["adapt", str(files / "lr" / "rgb.png"), "-o", str(out), *_fast(files, "--sup-data", str(photos))]
    assert _run(args)[0] == 0
    args = [a for a in args if a != "-q"]
    code, text = _run([*args, "--resume"])
    assert code == 0 and "kept as it is" in text, text
    Image.fromarray(hr_crop[96:192, :96]).save(photos / "b.png")
    code, text = _run([*args, "--resume"])
    assert code == 1 and "other photos in --sup-data" in text, text


def test_sup_data_is_recorded_absolute_so_the_run_goes_on_from_any_folder(files, tmp_path, hr_crop, monkeypatch):
    """--sup-data typed relative was recorded (config.json) and fingerprinted as typed: --config OUT/config.json run
    from another folder looked for the photos there, and naming the same folder from elsewhere was another run."""
    (tmp_path / "work" / "photos").mkdir(parents=True)
    Image.fromarray(hr_crop[:96, :96]).save(tmp_path / "work" / "photos" / "a.png")
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path / "work")
    args = ["adapt", str(files / "lr" / "rgb.png"), "-o", str(out), *_fast(files, "--sup-weight", "1")]
    assert _run([*args, "--sup-data", "photos"])[0] == 0
    recorded = json.loads((out / "config.json").read_text())["sup_data"]
    assert recorded == str(tmp_path / "work" / "photos")
    monkeypatch.chdir(tmp_path)
    code, text = _run([*[a for a in args if a != "-q"], "--sup-data", "work/photos", "--resume"])
    assert code == 0 and "kept as it is" in text, text
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(tmp_path / "again"), *_fast(files),
                       "--config", str(out / "config.json")])
    assert code == 0, text
    assert json.loads((tmp_path / "again" / "config.json").read_text())["sup_data"] == recorded


def test_the_summary_line_says_which_weights_were_kept(files, tmp_path):
    """A run whose steps all blew up keeps the unadapted weights (its report's final_iteration 0); the summary line
    said only "N iterations, stopped: ...", as if those iterations' weights were written."""
    out = tmp_path / "blown"
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(out), "-m", str(files / "tiny.safetensors"),
                       "--stage1", str(files / "stage1.safetensors"), "--iterations", "8", "--patch-size", "16",
                       "--lr", "0.9", "-q"])
    report = json.loads((out / "report.json").read_text())
    assert code == 0 and report["final_iteration"] == 0 < report["iterations_run"], (text, report["stopped"])
    assert f"{out / 'adapted.safetensors'}: {report['iterations_run']} iterations" in text
    assert text.rstrip().endswith("; the unadapted weights kept"), text


def test_quiet_keeps_the_notes_about_inputs_not_read(files, tmp_path):
    """-q printed the summary alone, hiding the note that the images in a sub-folder were not read (upscale -q
    keeps its notes): now only the progress lines go."""
    import shutil

    lr = tmp_path / "lr"
    shutil.copytree(files / "lr", lr)
    (lr / "more").mkdir()
    shutil.copy(lr / "rgb.png", lr / "more" / "rgb2.png")
    code, text = _run(["adapt", str(lr), "-m", str(files / "tiny.safetensors"), "-o", str(tmp_path / "out"), "--stage1",
                       str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16", "--batch-size",
                       "1", "-q"])
    assert code == 0, text
    assert "note: the images in sub-folders of" in text and "embedded" not in text and "iteration" in text, text
    import inspect

    apart = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}  # click < 8.2
    res = CliRunner(**apart).invoke(main, ["adapt", str(lr), "-m", str(files / "tiny.safetensors"), "-o",
                                           str(tmp_path / "out2"), "--loss", "naive", "--iterations", "1",
                                           "--patch-size", "16", "-q"])
    assert res.exit_code == 0 and "note: the images in sub-folders of" in res.stderr, res.output  # as upscale's
    assert "sub-folders" not in res.stdout


def test_a_run_that_recorded_sup_data_relative_goes_on(files, tmp_path, hr_crop, monkeypatch):
    """Runs made before --sup-data was made absolute recorded it as typed (relative): the same command then refused
    to resume them, the killed one too ("--sup-data photos (this command: /abs/photos)"), and the same photos named
    through a link were another run. The photos' contents are in the fingerprint: a spelling that names the same
    folder is the same run. A checkpoint made with other settings is refused before E embeds anything."""
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.loop import adapt_images, read_inputs
    from lway_rt.degae import load_stage1
    from lway_rt.errors import Interrupted

    (tmp_path / "photos").mkdir()
    Image.fromarray(hr_crop[:96, :96]).save(tmp_path / "photos" / "a.png")
    (tmp_path / "link").symlink_to(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    desc, s1 = load_model(str(files / "tiny.safetensors")), load_stage1(files / "stage1.safetensors")
    images = read_inputs([files / "lr" / "rgb.png"])
    old = dict(iterations=2, patch_size=16, batch_size=1, sup_weight=1.0, sup_data="photos")
    adapt_images(images, desc, AdaptConfig(**old), tmp_path / "done", stage1=s1)  # as the library recorded it then

    def stop_after_a_checkpoint(msg):
        if msg.startswith("iteration") and (tmp_path / "killed" / CHECKPOINT).exists():
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        adapt_images(images, desc, AdaptConfig(**{**old, "iterations": 400, "checkpoint_every": 2}),
                     tmp_path / "killed", stage1=s1, log=stop_after_a_checkpoint)
    assert json.loads(torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)["recipe"])["sup_data"] == "photos"
    args = ["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "--stage1",
            str(files / "stage1.safetensors"), "--patch-size", "16", "--batch-size", "1", "--sup-weight", "1",
            "--resume"]
    for data in ("photos", "link", str(tmp_path / "photos")):
        code, text = _run([*args, "-o", "done", "--iterations", "2", "--sup-data", data])
        assert code == 0 and "kept as it is" in text, (data, text)
    code, text = _run([*args, "-o", "killed", "--iterations", "400", "--checkpoint-every", "2", "--sup-data",
                       "photos", "--lr", "1e-4"])
    assert code == 1 and "made with other settings: --lr 5e-05 (this command: 0.0001)" in text, text
    assert "sup-data" not in text and "embedded" not in text, text  # no work, no progress before the refusal
    code, text = _run([*args, "-o", "killed", "--iterations", "6", "--sup-data", "photos"])  # (6: the run is shorter)
    assert code == 1 and "--iterations 400 (this command: 6)" in text and "sup-data" not in text, text
    code, text = _run([*args, "-o", "killed", "--iterations", "400", "--checkpoint-every", "2", "--sup-data", "photos"])
    assert code == 0 and "resumed from iteration" in text and "400 iterations, completed" in text, text


def test_natural_order_reads_digit_runs_as_numbers_and_takes_any_name():
    """Frame 2 before frame 10; a name with a superscript digit ('frame1²', which str.isdigit calls a digit and int
    refuses) had stopped adapt with a traceback on building the contact sheet; equal numbers spelled apart (010 and
    10) keep one order whichever comes first."""
    from lway_rt.adapt._imageio import natural_order

    names = ["frame10.png", "frame2.png", "frame1².png", "frame1.png", "Frame3.png", "frame_٣.png"]
    assert sorted(names, key=natural_order) == ["frame1.png", "frame1².png", "frame2.png", "Frame3.png", "frame10.png",
                                                "frame_٣.png"]
    assert sorted(["f_10", "f_010"], key=natural_order) == sorted(["f_010", "f_10"], key=natural_order)


def test_a_refused_resume_explains_sample_on_the_frames_added_or_removed():
    """The --sample explanation followed whatever clause came last, so it read as the reason for changed pixels."""
    from lway_rt.adapt.loop import _changed_parts

    said = _changed_parts({"images": {"f1": "a", "f2": "b", "f3": "c"}},
                          {"images": {"f1": "a", "f3": "X", "f4": "d"}}, sample=2)
    assert said.startswith("no f4 (this command's input); f2 too (not in this command's inputs) (--sample 2 spreads its "
                           "choice over the inputs as they are now") and said.endswith("; other pixels or alpha in f3"), said


def _clip_stopped_in_sr(files, tmp_path, hr_crop, iterations: int, every: int):
    """A clip of ten frames adapted (``iterations``, a checkpoint every ``every``) and stopped once four of its sr/
    images are written: (the command's arguments, its --out folder, the process, its output)."""
    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(10):
        Image.fromarray(np.ascontiguousarray(hr_crop[i * 4:i * 4 + 192, :192])).save(clip / f"f{i:02d}.png")
    out = tmp_path / "out"
    args = ["adapt", str(clip), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
            str(files / "stage1.safetensors"), "--iterations", str(iterations), "--patch-size", "16", "--batch-size",
            "2", "--checkpoint-every", str(every)]
    proc, text = _stopped_when(args, lambda: (out / "sr").is_dir() and len(list((out / "sr").glob("f*.png"))) >= 4,
                               "the fourth sr/ image")
    return args, out, proc, text


def test_a_run_stopped_while_writing_sr_keeps_the_images_written_when_resumed(files, tmp_path, hr_crop, monkeypatch):
    """Stopped while it wrote sr/ (an hour of a clip's frames after the last iteration), --resume made every image again;
    it keeps those that record the same adapted weights, input, cap and tiling, and the images equal an uninterrupted
    run's. An image that records other weights (or none) is made again."""
    args, out, proc, text = _clip_stopped_in_sr(files, tmp_path, hr_crop, 4, 2)
    written = {p.name: p.stat().st_mtime_ns for p in (out / "sr").glob("f*.png")}
    assert proc.returncode == 130 and 4 <= len(written) < 10, text
    from PIL.PngImagePlugin import PngInfo

    first, second = sorted(written)[:2]
    Image.open(out / "sr" / first).save(out / "sr" / first)  # (re-saved: its record is gone)
    with Image.open(out / "sr" / second) as im:  # edited, its record carried over: the user's all the same
        info = PngInfo()
        for k, v in im.text.items():
            info.add_text(k, v)
        Image.fromarray(255 - np.asarray(im)).save(out / "sr" / second, pnginfo=info)
    assert "lwayrt-adapt" in Image.open(out / "sr" / second).text
    for name in (first, second):
        written[name] = (out / "sr" / name).stat().st_mtime_ns
    # (the stop may fall between an image and its line in the list of those written: that one is made again)
    lines = [json.loads(line) for line in (out / ".sr-written.jsonl").read_text().splitlines()]
    # lines appended: each image named with its bytes' SHA-256 just before they take the file's place
    assert lines and all("sha256" in e for e in lines), lines
    listed = {f"{e['name']}.png" for e in lines if "sha256" in e} - {first, second}
    code, text = _run([*args, "--resume"])  # edited since the stop: the user's, not written over
    assert code == 1 and "is not an image of the run" in text, text
    for name in (first, second):  # moved away, they are made again
        (out / "sr" / name).unlink()
    from lway_rt.adapt import runfolder
    from lway_rt.export import cache

    getattr(runfolder, "_SHA_READ", {}).clear()  # (as a new command finds it)
    real_sha, read = cache.file_sha256, Counter()
    monkeypatch.setattr(cache, "file_sha256", lambda path, *a: read.update([Path(path).name]) or real_sha(path, *a))
    code, text = _run([*args, "--resume"])
    monkeypatch.undo()
    # each listed image is read once (checked against the user's edits, then kept): it had been read three times
    assert read and all(read[n] == 1 for n in listed), read
    assert code == 0 and f"{len(listed)} SR image(s) in {out / 'sr'} were written before the run stopped: kept" \
        in text, text
    after = {p.name: p.stat().st_mtime_ns for p in (out / "sr").glob("f*.png")}
    assert len(after) == 10 and after[first] != written[first] and after[second] != written[second]
    assert listed and all(after[n] == written[n] for n in listed)
    assert not (out / ".sr-written.jsonl").exists()  # the list of images written so far goes with the finished run
    whole = tmp_path / "whole"
    code, text = _run([*args[:5], str(whole), *args[6:]])
    assert code == 0, text
    for name in after:
        assert np.array_equal(np.asarray(Image.open(out / "sr" / name)), np.asarray(Image.open(whole / "sr" / name)))


def test_a_run_shorter_than_a_checkpoint_interval_stopped_while_writing_sr_resumes_there(files, tmp_path, hr_crop):
    """A run of fewer iterations than --checkpoint-every, stopped while it wrote sr/, said "interrupted before its
    first checkpoint: there is nothing to resume; run the same command again", which was then refused (the folder held
    its weights), and --resume trained again from the start and wrote every image anew. The state after the last step
    is a checkpoint now: --resume goes on from there, keeping the images written."""
    args, out, proc, text = _clip_stopped_in_sr(files, tmp_path, hr_crop, 3, 20)
    assert proc.returncode == 130 and "--resume" in text and "nothing to resume" not in text, text
    lines = [json.loads(line) for line in (out / ".sr-written.jsonl").read_text().splitlines()]
    listed = {f"{e['name']}.png": (out / "sr" / f"{e['name']}.png").stat().st_mtime_ns for e in lines}
    code, text = _run([*args, "--resume"])
    assert code == 0 and "no checkpoint to resume from" not in text, text
    assert f"{len(listed)} SR image(s) in {out / 'sr'} were written before the run stopped: kept" in text, text
    assert listed and all((out / "sr" / n).stat().st_mtime_ns == t for n, t in listed.items())
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from"] == [3] and len(report["history"]) == 3, report["resumed_from"]
    assert not (out / "checkpoint.pt").exists()


def test_restore_of_something_that_is_no_run_folder_is_one_line(tmp_path):
    """--restore on a path that is not there, a file, or a folder with nothing kept aside: one line, exit status 1 or
    click's 2, and nothing made."""
    code, said = _run(["adapt", "--restore", str(tmp_path / "nope")])
    assert code == 1 and f"{tmp_path / 'nope'} is not a folder: give the --out folder" in said, said
    assert not (tmp_path / "nope").exists()
    (tmp_path / "file.png").write_bytes(b"x")
    code, said = _run(["adapt", "--restore", str(tmp_path / "file.png")])
    assert code == 2 and "is a file" in said, said
    code, said = _run(["adapt", "--restore", str(tmp_path)])
    assert code == 1 and "holds no run that --overwrite kept aside" in said, said


def test_an_out_folder_that_cannot_be_written_is_said_before_any_work(files, tmp_path, monkeypatch):
    """An --out that cannot be made or written (a typo under a file, a read-only mount), or that another run holds,
    was found only after every input was embedded and weighed (51 s for 40 small frames on a CPU). It is made, checked
    and locked first now; a command refused later leaves no folder it made behind."""
    import lway_rt.adapt.loop as loop

    monkeypatch.setattr(loop, "compute_embeddings", lambda *a, **k: pytest.fail("work began before --out was checked"))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, text = _run(["adapt", str(files / "lr"), *_replace_args(files), "-o", str(blocker / "out")])
    assert code == 1 and "cannot create output folder" in text and len(text.splitlines()) == 1, text
    monkeypatch.undo()
    code, text = _run(["adapt", str(files / "lr"), *_replace_args(files)[2:], "-m", str(tmp_path / "none.safetensors"),
                       "-o", str(tmp_path / "new" / "out")])
    assert code == 1 and not (tmp_path / "new").exists(), text
    # what it made, not what a path spelled through a missing folder names (mine/ is the user's), nor what it made
    # before a name too long for the file system was refused
    (tmp_path / "mine").mkdir()
    for out in (tmp_path / "zz" / ".." / "mine", tmp_path / "deep" / ("x" * 300)):
        code, text = _run(["adapt", str(files / "lr"), *_replace_args(files)[2:], "-m",
                           str(tmp_path / "none.safetensors"), "-o", str(out)])
        assert code == 1 and (tmp_path / "mine").is_dir() and not (tmp_path / "deep").exists(), text
    # through a link: LINK/../new is new/ beside the folder LINK leads to (it was "cannot write to", and left there)
    (tmp_path / "far" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "far" / "sub")
    code, text = _run(["adapt", str(files / "lr"), *_replace_args(files)[2:], "-m", str(tmp_path / "none.safetensors"),
                       "-o", os.path.join(tmp_path / "link", "..", "new")])
    assert code == 1 and "none.safetensors" in text and sorted(os.listdir(tmp_path / "far")) == ["sub"], text


def test_progress_goes_to_stderr_and_the_result_to_stdout(files, tmp_path):
    """adapt printed its progress (embedding, iterations, images written) on standard output, where upscale, export
    and serve-bench keep only their results: `adapt ... > result.txt` captured every progress line."""
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-o", str(tmp_path / "o"),
                                    *[a for a in _replace_args(files) if a != "-q"]])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() and all("iterations, completed" in line for line in res.stdout.splitlines()), \
        res.stdout
    assert "adapting" in res.stderr, res.stderr


def test_a_per_image_overwrite_leaves_a_groups_json_of_the_users(files, tmp_path, monkeypatch):
    """A per-image command writes no groups.json, but its --overwrite moved one at the top of the folder aside with the
    summary and deleted it when it finished (and --restore took it for the stopped command's)."""
    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    assert _run(["adapt", *args])[0] == 0
    (out / "groups.json").write_text("mine")
    assert _run(["adapt", *args, "--overwrite"])[0] == 0
    assert (out / "groups.json").read_text() == "mine"
    _stop_before_the_first_step(monkeypatch, [*args, "--overwrite"])
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 0 and (out / "groups.json").read_text() == "mine", text


def test_the_end_of_an_overwrite_is_finished_before_a_resume_counts_the_runs(files, tmp_path, monkeypatch):
    """A stop after a per-image overwrite had finished, while a run it no longer listed was being removed: a --resume
    of the old inputs counted that run as done, then finished the removal (the folder gone) and still listed it."""
    import lway_rt.adapt.runfolder as runfolder

    out, fewer = _per_image_then_fewer(files, tmp_path)
    with monkeypatch.context() as m:
        m.setattr(runfolder, "_remove_run_folder", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        code, text = _run(["adapt", str(fewer), "-o", str(out), *_replace_args(files), "--mode", "per-image",
                           "--overwrite"])
    assert code == 130 and (out / "alpha" / "adapted.safetensors").is_file(), text
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image",
                       "--resume"])
    assert code == 0 and (out / "alpha" / "adapted.safetensors").is_file(), text
    assert "alpha: already adapted" not in text, text
    summary = json.loads((out / "report.json").read_text())
    assert sorted(e["name"] for e in summary["runs"]) == ["alpha", "grey", "rgb"]


def test_a_stop_at_the_end_of_an_overwrite_of_runs_without_a_summary(files, tmp_path, monkeypatch):
    """A first per-image command stopped in its last run leaves its runs and no summary: an --overwrite of that
    folder made no mark of its own end, so a stop while the replaced runs were removed one by one left a mix that
    --restore put back, new runs beside old ones. Such a folder gets the mark too."""
    import lway_rt.adapt.loop as loop
    import lway_rt.adapt.runfolder as runfolder
    from lway_rt.adapt.runfolder import ASIDE

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    with monkeypatch.context() as m:
        _stopping_on_call(m, loop, "adapt_images", 3)
        assert _run(["adapt", *args])[0] == 130
    assert not (out / "report.json").exists() and (out / "alpha" / "adapted.safetensors").is_file()
    real_finish = runfolder._finish_replacing

    def stop_in_a_run_folder(folder, *a, **k):
        if Path(folder) != out:
            raise KeyboardInterrupt
        return real_finish(folder, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(runfolder, "_finish_replacing", stop_in_a_run_folder)
        code, text = _run(["adapt", *args, "--overwrite", "--seed", "4"])
    assert code == 130 and "interrupted after the adaptation finished" in text, text
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 1 and "nothing to restore" in text and not list(out.rglob(ASIDE)), text
    for name in ("alpha", "grey", "rgb"):
        assert json.loads((out / name / "report.json").read_text())["config"]["seed"] == 4


def test_resume_after_a_stopped_per_image_overwrite_needs_its_inputs_and_settings(files, tmp_path, monkeypatch):
    """--resume may take up a run folder a stopped per-image --overwrite was replacing (no checkpoint yet) only as that
    overwrite asked: with other pixels under an input's name it had started anew and, finished, deleted the run kept
    for --restore. And a stop while a run folder's old run was moved aside (its sr/ image still there) left both the
    advised --resume and the --overwrite refused, the tool's own image taken for the user's."""
    import lway_rt.adapt.loop as loop
    import lway_rt.adapt.runfolder as runfolder
    from lway_rt.adapt.runfolder import ASIDE

    out, _ = _per_image_then_fewer(files, tmp_path)
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    with monkeypatch.context() as m:
        _stopping_on_call(m, loop, "fast_adapt_step", 1)  # in alpha's run, before its first checkpoint
        assert _run(["adapt", *args, "--overwrite"])[0] == 130
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(files / "lr" / "rgb.png", other / "alpha.png")  # another picture under alpha's name
    for name in ("grey.png", "rgb.png"):  # (the overwrite's inputs otherwise: fewer are refused as such)
        shutil.copy(files / "lr" / name, other / name)
    kept = _digests(out / "alpha" / ASIDE)
    code, text = _run(["adapt", str(other), *args[1:], "--resume"])
    assert code == 1 and "other inputs, model or settings than that overwrite" in text, text
    assert _digests(out / "alpha" / ASIDE) == kept
    assert _run(["adapt", "--restore", str(out)])[0] == 0
    # stopped on the move of alpha's sr/ image aside (the top's summary and config, then its report, weights,
    # pictures and config went first): the rerun and the --resume are both taken
    for flag in ("--resume", "--overwrite"):
        with monkeypatch.context() as m:
            _stopping_on_call(m, runfolder.shutil, "move", 8)
            assert _run(["adapt", *args, "--overwrite"])[0] == 130
        assert runfolder._aside_state(out / "alpha" / ASIDE) == "cut short"
        assert (out / "alpha" / "sr" / "alpha.png").is_file()
        code, text = _run(["adapt", *args, flag])
        assert code == 0 and not list(out.rglob(ASIDE)), text


def test_restore_removes_the_new_run_folders_of_a_folder_without_a_summary(files, tmp_path, monkeypatch):
    """The replaced folder's own first command had been stopped (its runs, no summary): --restore of an --overwrite
    stopped in a new input's run said it had put everything back and left that new run folder."""
    import lway_rt.adapt.loop as loop

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    with monkeypatch.context() as m:
        _stopping_on_call(m, loop, "adapt_images", 3)  # alpha and grey made, rgb not: no summary
        assert _run(["adapt", *args])[0] == 130
    before = _digests(out)
    more = tmp_path / "more"
    more.mkdir()
    for name in ("alpha.png", "grey.png"):
        shutil.copy(files / "lr" / name, more / name)
    shutil.copy(files / "lr" / "rgb.png", more / "new.png")
    with monkeypatch.context() as m:
        _stopping_on_call(m, loop, "fast_adapt_step", 5)  # (alpha and grey take two steps each): in new's run
        assert _run(["adapt", str(more), *args[1:], "--overwrite"])[0] == 130
    assert (out / "new").is_dir()
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 0 and "removed the stopped command's run(s) of new" in text and _digests(out) == before, text


def test_an_image_of_the_users_in_sr_is_kept_whatever_the_rerun(files, tmp_path, monkeypatch):
    """A picture the user put in sr/ under an input's name, after a run stopped before it wrote any image, was written
    over by the plain rerun the stop message advised, or by --resume (and in a per-image run folder by any of them):
    only --overwrite, or a run whose list of images existed, checked sr/."""
    for mode, mine, flags in (("folder", "sr/rgb.png", ((), ("--resume",), ("--overwrite",))),
                              ("per-image", "alpha/sr/alpha.png", (("--resume",), ("--overwrite",)))):
        out = tmp_path / mode
        args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", mode]
        _stop_before_the_first_step(monkeypatch, args)  # (per image: in alpha's run, the first)
        mine = out / mine
        mine.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mine)
        kept = mine.read_bytes()
        for extra in flags:
            code, text = _run(["adapt", *args, *extra])
            assert code == 1 and f"{mine} is not an image of the run" in text and mine.read_bytes() == kept, text


def test_resume_after_a_stopped_overwrite_takes_the_same_photos_spelled_otherwise(files, tmp_path, monkeypatch, hr_crop):
    """--sup-data through a link to the same folder is the same run for a checkpoint or a finished run, but the
    check of a --resume after a stopped --overwrite compared fingerprints as strings, and refused it."""
    from lway_rt.adapt.runfolder import ASIDE

    clean = tmp_path / "clean"
    clean.mkdir()
    Image.fromarray(np.ascontiguousarray(hr_crop[:128, :128])).save(clean / "c.png")
    (tmp_path / "link").symlink_to(clean)
    out = tmp_path / "out"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--sup-weight", "1"]
    assert _run(["adapt", *args, "--sup-data", str(clean)])[0] == 0
    _stop_before_the_first_step(monkeypatch, [*args, "--sup-data", str(clean), "--overwrite"])
    code, text = _run(["adapt", *args, "--sup-data", str(tmp_path / "link"), "--resume"])
    assert code == 0 and not (out / ASIDE).exists(), text


def test_every_unreadable_frame_is_named(files, tmp_path):
    """adapt named only the first frame it could not read: a clip with two damaged frames took a fix and a rerun
    for each. Every one is named (the first's reason given), and nothing is written."""
    clip = tmp_path / "clip"
    clip.mkdir()
    for name in ("rgb.png", "grey.png", "alpha.png"):
        shutil.copy(files / "lr" / name, clip / name)
    for name in ("grey.png", "rgb.png"):
        (clip / name).write_bytes((files / "lr" / name).read_bytes()[:200])
    code, text = _run(["adapt", str(clip), "-o", str(tmp_path / "out"), *_replace_args(files)])
    assert code == 1 and "2 of 3 inputs cannot be read (grey.png, rgb.png)" in text and "truncated" in text, text
    assert len(text.splitlines()) == 1 and not (tmp_path / "out").exists(), text


def test_an_overwrite_says_when_the_disk_lacks_room_for_the_new_run(files, tmp_path, monkeypatch):
    """--overwrite keeps the run it replaces until the new one is written, which needs about as much room: a run on a
    nearly full disk stopped there after all its work. It says so before the work, and runs all the same."""
    import lway_rt.adapt.loop as loop

    out = tmp_path / "out"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    real = shutil.disk_usage
    monkeypatch.setattr(loop.shutil, "disk_usage", lambda path: real(path)._replace(free=size // 2))
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1], "3", "--overwrite"])
    assert code == 0 and "MB free, and this run writes about as much as the run it replaces" in text, text
    monkeypatch.setattr(loop.shutil, "disk_usage", lambda path: real(path)._replace(free=size * 2))
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--overwrite"])
    assert code == 0 and "MB free" not in text, text


def test_adapt_writes_esrgan_weights_under_their_own_names(files, tmp_path, to_esrgan):
    """A model under the names of ESRGAN's first code (model.0, model.1.sub.N.RDBj.convk.0 ...) is adapted, and its
    adapted weights keep those names (the same parameter names as the input model, which other ESRGAN tools load);
    upscale reproduces adapt's images from them, --resume recognises the finished run and writes a missing image
    again from them."""
    from lway_rt.archs.rrdbnet import RRDBNet
    from lway_rt.io.weights import load_state_file

    torch.manual_seed(1)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4, scale=4)
    old = to_esrgan(net.state_dict())
    torch.save(old, tmp_path / "esrgan.pth")
    out = tmp_path / "out"
    args = ["adapt", str(files / "lr" / "rgb.png"), "-m", str(tmp_path / "esrgan.pth"), "-o", str(out), "--stage1",
            str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16", "--lr", "1e-3", "-q"]
    code, text = _run(args)
    assert code == 0, text
    adapted, _ = load_state_file(out / "adapted.safetensors")
    assert set(adapted) == set(old) and any(not torch.equal(adapted[k], old[k]) for k in old)
    code, text = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(out / "adapted.safetensors"), "-o",
                       str(tmp_path / "up"), "-q"])
    assert code == 0, text
    up = next((tmp_path / "up").glob("rgb*.png"))
    assert np.array_equal(np.asarray(Image.open(up)), np.asarray(Image.open(out / "sr" / "rgb.png")))
    code, text = _run([*args[:-1], "--resume"])
    assert code == 0 and "kept as it is" in text, text
    written = (out / "sr" / "rgb.png").read_bytes()
    (out / "sr" / "rgb.png").unlink()
    code, text = _run([*args, "--resume"])
    assert code == 0 and (out / "sr" / "rgb.png").read_bytes() == written, text


def test_a_missing_gt_folder_says_what_to_pass(files, tmp_path):
    """--gt naming nothing said only 'is not a folder' (review 48C C5): it says whether it is a file or missing, and
    what to pass."""
    gt = tmp_path / "missing"
    code, text = _run(_tiny_adapt(files, tmp_path / "out", "--gt", str(gt)))
    assert code == 1 and f"--gt {gt} does not exist: pass the folder of ground-truth images named like the inputs, " \
        "or leave --gt out" in " ".join(text.split()), text
    code, text = _run(_tiny_adapt(files, tmp_path / "out", "--gt", str(files / "tiny.safetensors")))
    assert code == 2 and "tiny.safetensors is a file, and this option names a folder: name a folder" in \
        " ".join(text.split()), text
