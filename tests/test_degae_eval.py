"""Stage 1 at reduced size: a short real training run beats identity, and its embedding matters;
and the shipped checkpoint meets the stage-1 targets on the full evaluation protocol.

The short run's thresholds hold across the batch streams measured (150 iterations, width 16,
48-px crops, seeds 0 and 1, and 300 iterations for both seeds): same-size gain +0.27 to +1.07 dB,
round-trip gain +2.3 to +3.8 dB, same-size ablation gap +0.97 to +1.98 dB, same-size separation
0.28 to 0.33 (measured when the ratio still paired crops of one photo too; comparing crops of different photos
only, 300 iterations gave 0.415 / 0.505 for seeds 0 / 1 on the 2-core AMD EPYC VM, hence the bound of 0.75 here, while
the shipped checkpoint is held to the target 0.5), blur gain +0.50 to +1.82 dB. The run is 300 iterations: 150 was at the edge on another CPU (an
Intel Xeon with AVX-512/AMX, one thread, 2026-12-02: seed 0 gave a round-trip gain of +0.99 dB against the 1 dB
asserted, same-size +0.26), where 300 gave same-size +0.81 / +1.06 dB, round trip +3.43 / +3.81 dB, blur
+1.24 / +1.77 dB, separation 0.27 / 0.32, ablation gap +1.73 / +1.96 dB for seeds 0 / 1. Two properties did *not* hold for every such short run and
are asserted only on the shipped checkpoint: a zero embedding 1 dB worse than the image's own (it
was 0.4 to 0.6 dB for seed 0) and a round-trip separation below 0.5 (1.93 once).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from lway_rt.cli import main
from lway_rt.degae import load_stage1
from lway_rt.degae.evaluate import EvalConfig, evaluate_stage1
from lway_rt.degae.train import TrainConfig, train

EVAL = EvalConfig(crop=48, crops_per_image=3, draws=10)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "tiny.safetensors"
    # R with its input skip: 300 CPU iterations learn enough with it (the shipped no-skip recipe
    # needs the thousands of a GPU run)
    cfg = TrainConfig(out=str(out), crop=48, batch=4, iters=300, embed_dim=32, width=16, blocks=2,
                      head_widths=(32, 64, 64), lr=2e-3, ckpt_every=300, seed=0, skip=True)
    train(cfg)
    return out


@pytest.fixture(scope="module")
def report(tiny_ckpt):
    return evaluate_stage1(load_stage1(tiny_ckpt), EVAL)


@pytest.mark.slow
def test_short_run_beats_identity(report):
    same, rt = report["geometries"]["same_size"], report["geometries"]["roundtrip_x4"]
    assert same["gain_db"] > 0.2, same
    assert rt["gain_db"] > 1.0, rt
    # blur is what a deterministic R reproduces best
    assert same["per_kind"]["blur"]["gain_db"] > 0.3


@pytest.mark.slow
def test_short_run_embedding_matters(report):
    same = report["geometries"]["same_size"]
    assert same["separation_ratio"] < 0.75, same["separation_ratio"]  # one draw on two photos: nearer than two draws
    assert same["ablation_gap_db"] > 0.5, same  # own embedding beats another draw's on the same image
    assert same["cross_image"] > same["shuffled"]  # the same draw read from another image still helps


@pytest.mark.slow
def test_report_excludes_no_degradation_draws(report):
    same = report["geometries"]["same_size"]
    assert math.isfinite(same["identity"])
    nd = same["no_degradation_draws"]
    assert nd["n"] > 0 and "identity" not in nd
    assert report["recon_psnr"] == same["recon"] and report["identity_psnr"] == same["identity"]
    assert set(report["presets"]["same_size"]) == {"motion-blur", "box-downscale", "sharpen-jpeg420", "resize-sensor-noise"}


@pytest.mark.slow
def test_eval_cli_writes_json(tiny_ckpt, tmp_path):
    dest = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(tiny_ckpt), "--json", str(dest), "--crop", "48",
                                    "--crops-per-image", "1", "--draws", "4"])
    assert res.exit_code == 0, res.output
    data = json.loads(dest.read_text())
    for key in ("recon_psnr", "identity_psnr", "separation_ratio", "ablation", "per_kind"):
        assert key in data or key in data["geometries"]["same_size"]
    assert "separation" in res.output and "ablation" in res.output


def test_eval_says_which_way_is_better_and_when_the_encoder_is_untrained(tiny_ckpt, tmp_path):
    """An untrained stage 1 met the separation target, reconstructing worse than the identity baseline, and nothing
    said which way the numbers are good (57L-2)."""
    from lway_rt.degae import Stage1, save_stage1

    save_stage1(tmp_path / "fresh.safetensors", Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16),
                                                               seed=0).freeze())
    args = ["eval-degae", "--crop", "48", "--crops-per-image", "1", "--draws", "4"]
    res = CliRunner().invoke(main, [*args, "--checkpoint", str(tmp_path / "fresh.safetensors")])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "(higher is better for recon, gain and the ablation gap; lower for separation" in text
    assert "dB worse than the identity baseline (the degraded image itself) on these 4 draws, fewer than the 24 the " \
        "targets are read on: measure with more --draws; a stage 1 that stays below it has not learnt to re-degrade " \
        "these images (train it longer)" in text, text  # (a few draws said as such: 57M-3)
    trained = CliRunner().invoke(main, [*args, "--checkpoint", str(tiny_ckpt)])  # (it beats identity: no such note)
    assert trained.exit_code == 0 and "worse than the identity baseline" not in trained.output, trained.output


def test_eval_json_to_stdout_and_through_links_and_never_into_a_device(tiny_ckpt, tmp_path, monkeypatch):
    """`--json /dev/stdout` replaced the link with a regular file (as root) and printed nothing; `--json -` wrote a file
    named '-'; a --json that is a link was replaced by a plain file. Now '-' prints the report alone on standard
    output (the summary goes to standard error), './-' names a file '-' (it printed to standard output too: the path
    was compared after pathlib had dropped the './'), a link is written through, and a device or pipe is refused."""
    import os
    import stat

    args = ["eval-degae", "--checkpoint", str(tiny_ckpt), "--crop", "48", "--crops-per-image", "1", "--draws", "4"]
    import inspect

    apart = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}  # click < 8.2
    res = CliRunner(**apart).invoke(main, [*args, "--json", "-"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(c))  # the whole of stdout is the report
    assert "geometries" in report and "ablation" in res.stderr and not (tmp_path / "-").exists()
    monkeypatch.chdir(tmp_path)
    named = CliRunner(**apart).invoke(main, [*args, "--json", "./-"])
    assert named.exit_code == 0 and "geometries" not in named.stdout, named.output
    assert json.loads((tmp_path / "-").read_text())["checkpoint"] == str(tiny_ckpt)
    real = tmp_path / "reports" / "latest-real.json"
    real.parent.mkdir()
    real.write_text(res.stdout)  # an earlier report, which a rerun may replace
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    res = CliRunner().invoke(main, [*args, "--json", str(link)])
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and json.loads(real.read_text())["checkpoint"] == str(tiny_ckpt)  # written through
    assert f"wrote {link} (the earlier report there replaced)" in res.output  # (it said only "wrote")
    assert "replaced" not in named.output  # (a new file)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    res = CliRunner().invoke(main, [*args, "--json", str(fifo)])
    assert res.exit_code == 1 and "is not a regular file (a device or pipe)" in res.output, res.output
    assert "recon" not in res.output and stat.S_ISFIFO(os.stat(fifo).st_mode)  # said before the evaluation
    from lway_rt.errors import OutputError
    from lway_rt.io.weights import atomic_write_bytes

    with pytest.raises(OutputError, match="is not a regular file"):  # every atomic write refuses one
        atomic_write_bytes(fifo, b"{}")


def test_eval_of_one_image_says_what_is_undefined_and_writes_strict_json(tmp_path, astronaut):
    from PIL import Image

    from lway_rt.degae import Stage1, save_stage1

    save_stage1(tmp_path / "s1.safetensors", Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16),
                                                            seed=0).freeze(), {"iterations": 40, "recipe": {"iters": 300}})
    (tmp_path / "one").mkdir()
    Image.fromarray(astronaut[:128, :128]).save(tmp_path / "one" / "a.png")
    dest = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(tmp_path / "s1.safetensors"), "--data",
                                    str(tmp_path / "one"), "--crop", "48", "--crops-per-image", "1", "--draws", "2",
                                    "--json", str(dest)])
    assert res.exit_code == 0, res.output
    assert "separation_ratio undefined" in res.output and "more images in --data" in res.output
    assert "separation undefined" in res.output and "nan" not in res.output, res.output  # not printed as a number
    assert "written at iteration 40 of 300: a run that had not finished" in res.output  # scored, and said so
    data = json.loads(dest.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert data["separation_ratio"] is None
    # seed 18 draws two same-size draws that degrade nothing: the ablation's numbers are undefined too, and said so
    # (they printed as "own nan ... gap +nan dB"; review 54C C3)
    Image.fromarray(astronaut[128:256, :128]).save(tmp_path / "one" / "b.png")
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(tmp_path / "s1.safetensors"), "--data",
                                    str(tmp_path / "one"), "--crop", "48", "--crops-per-image", "1", "--draws", "2",
                                    "--seed", "18"])
    assert res.exit_code == 0, res.output
    assert "ablation: own undefined" in res.output and "nan" not in res.output, res.output


def _fresh_ckpt(path, scale=None):
    from lway_rt.degae import Stage1, save_stage1

    s1 = Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=0).freeze()
    if scale is not None:  # weights blown up by a step at a huge learning rate: finite, so they could be saved
        with torch.no_grad():
            for p in s1.reconstructor.parameters():
                p.fill_(scale)
    save_stage1(path, s1, {"iterations": 1, "recipe": {"iters": 1}})
    return path


def test_cross_image_pairs_are_crops_of_different_images(tmp_path, astronaut):
    """'cross_image' and the separation ratio paired crop i with crop i-1, mostly of the same photo (6 of 8 pairs on
    the default held-out set), and with one photo reported a crop of it as 'another image'."""
    from PIL import Image

    ckpt = _fresh_ckpt(tmp_path / "s1.safetensors")
    (tmp_path / "one").mkdir()
    Image.fromarray(astronaut[:192, :192]).save(tmp_path / "one" / "a.png")
    dest = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(ckpt), "--data", str(tmp_path / "one"), "--crop",
                                    "48", "--crops-per-image", "3", "--draws", "3", "--json", str(dest)])
    assert res.exit_code == 0, res.output
    assert "cross-image undefined" in res.output and "separation undefined" in res.output, res.output
    assert "separation_ratio and the cross-image ablation undefined" in res.output and "more images in --data" in res.output
    data = json.loads(dest.read_text())
    assert data["settings"]["n_crops"] == 3
    for geo in data["geometries"].values():
        assert geo["cross_image"] is None and geo["separation_ratio"] is None, geo
    assert data["ablation"]["cross_image"] is None and data["separation_ratio"] is None
    two = evaluate_stage1(load_stage1(ckpt), EvalConfig(crop=48, crops_per_image=2, draws=3))  # chelsea and coffee
    assert math.isfinite(two["separation_ratio"]) and math.isfinite(two["ablation"]["cross_image"])
    from lway_rt.degae.evaluate import other_image

    owner = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # the default: 4 crops of each of 2 photos
    partner = other_image(owner)
    assert (owner[partner] != owner).all() and sorted(partner.tolist()) == list(range(8))
    uneven = torch.tensor([0, 0, 0, 1, 2, 2])
    assert (uneven[other_image(uneven)] != uneven).all()
    assert other_image(torch.tensor([0, 0, 0])) is None


def test_a_checkpoint_that_outputs_nan_is_named_not_the_data(tmp_path):
    """It printed 'recon_psnr nan' and blamed the data ('every draw came out clean, or one image only')."""
    ckpt = _fresh_ckpt(tmp_path / "blown.safetensors", scale=1e30)
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(ckpt), "--crop", "48", "--crops-per-image", "1",
                                    "--draws", "2"])
    assert res.exit_code == 1 and "the stage-1 checkpoint outputs NaN/inf" in res.output, res.output
    assert "came out clean" not in res.output and "nan" not in res.output.replace("NaN", ""), res.output


def test_the_presets_noise_follows_seed_and_the_default_is_unchanged(tmp_path, monkeypatch):
    """The presets' noise seeds were 101 + crop whatever --seed said."""
    import lway_rt.degae.evaluate as ev

    seeds, preset = [], ev.eval_preset

    def recorded(name, seed=0, roundtrip=1):
        seeds.append(seed)
        return preset(name, seed=seed, roundtrip=roundtrip)

    monkeypatch.setattr(ev, "eval_preset", recorded)
    s1 = load_stage1(_fresh_ckpt(tmp_path / "s1.safetensors"))
    cfg = EvalConfig(crop=48, crops_per_image=1, draws=2, geometries=(1,))
    evaluate_stage1(s1, cfg)
    assert cfg.seed == 20240302 and sorted(set(seeds)) == [101, 102]  # two crops: as before
    found = {}
    for seed in (0, 1, 20240303):
        seeds.clear()
        found[seed] = evaluate_stage1(s1, EvalConfig(**{**cfg.__dict__, "seed": seed}))["presets"]
        assert len(set(seeds)) == 2 and not {101, 102} & set(seeds), (seed, seeds)
    assert found[0] != found[1]


def test_eval_cli_errors(tmp_path):
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(tmp_path / "none.safetensors")])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "does not exist" in res.output
    for args, message in ((["--crop", "30"], "--crop 30: use at least 24 pixels and a multiple of 4"),
                          (["--draws", "1"], "--draws 1: use at least 2"),
                          (["--crops-per-image", "0"], "--crops-per-image 0: use at least 1")):
        res = CliRunner().invoke(main, ["eval-degae", *args])  # each bad option named, with what it takes
        assert res.exit_code == 1 and message in res.output, res.output
    res = CliRunner().invoke(main, ["eval-degae", "--seed", "-1"])  # numpy refused it in a traceback
    assert res.exit_code == 2 and "'--seed': -1 is not in the range x>=0" in res.output, res.output
    # --json is checked before the evaluation: a folder, or a file that is not a JSON report, is refused
    photo = tmp_path / "keep.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    package = tmp_path / "package.json"  # any JSON file was taken for an earlier report, and replaced
    package.write_text('{"name": "my-app", "version": "1.0.0"}')
    for target, message in ((tmp_path, "is a folder"), (photo, "exists and is not an eval-degae report"),
                            (package, "exists and is not an eval-degae report"),
                            (photo / "r.json", "keep.png is a file, not a folder")):
        res = CliRunner().invoke(main, ["eval-degae", "--json", str(target)])
        assert res.exit_code == 1 and message in res.output, res.output
    assert photo.read_bytes().startswith(b"\x89PNG") and "my-app" in package.read_text()
    for flag in ("--json", "--checkpoint"):  # an unset variable: the advice is not '.', which is no file
        res = CliRunner().invoke(main, ["eval-degae", flag, ""])
        assert res.exit_code == 2 and "is empty: name a file" in res.output and "'.'" not in res.output, res.output


@pytest.mark.slow
def test_shipped_checkpoint_meets_the_stage1_targets():
    """The shipped checkpoint on the evaluation command's own protocol (held-out photos and draws):
    at least 3 dB over the identity baseline and a separation ratio below 0.5 (same-size geometry,
    the one `eval-degae` headlines), and its own embedding beats a shuffled one in both geometries.
    Measured: +3.02 dB, separation 0.142 (benchmarks/results/stage1_eval.json; +3.01 / 0.145 before a draw's crops
    shared its correlated noise's channel mix, 0.125 before the ratio compared crops
    of different photos only), ablation gaps +2.6 / +2.1 dB (the earlier skip checkpoint: +3.53 dB,
    stage1_eval_skip8801.json)."""
    report = evaluate_stage1(load_stage1(), EvalConfig())
    same = report["geometries"]["same_size"]
    assert report["recon_psnr"] - report["identity_psnr"] >= 3.0, same
    assert report["separation_ratio"] < 0.5, same
    for geo in report["geometries"].values():
        assert geo["ablation_gap_db"] > 1.0, geo
        assert geo["zero"] < geo["recon"] - 1.0, geo


def test_the_evaluation_runs_channels_last_on_the_cpu_and_puts_the_weights_back(tiny_ckpt, load_benchmark):
    """On the CPU, E and R run channels-last for the evaluation (faster there: benchmarks/stage1_eval_layout.py);
    the report is the default layout's to float rounding, and the checkpoint keeps the very weight tensors it had
    (a later training step is not moved into another layout)."""
    s1 = load_stage1(tiny_ckpt)
    nets = (s1.encoder, s1.reconstructor)
    kept = [(p, p.data_ptr(), p.stride()) for m in nets for p in m.parameters()]
    seen = []
    for m in (s1.reconstructor.conv_last, s1.encoder.trunk):
        m.register_forward_hook(lambda m, i, o: seen.append(i[0].is_contiguous(memory_format=torch.channels_last)))
    cfg = EvalConfig(crop=48, crops_per_image=1, draws=2)
    nhwc = evaluate_stage1(s1, cfg)
    assert seen and all(seen), "the default evaluation on the CPU ran in NCHW"
    assert all((p.data_ptr(), p.stride()) == (ptr, st) for p, ptr, st in kept), "the weights were not put back"
    seen.clear()
    plain = evaluate_stage1(s1, cfg, channels_last=False)
    assert seen and not any(seen)
    compare = load_benchmark("stage1_eval_layout").report_difference  # the benchmark's comparison of the two
    worst, where, _ = compare(nhwc, plain)
    assert worst <= 2e-3, (worst, where)  # the reports round to 3-4 decimals: float rounding moves a last digit
    plain["geometries"]["same_size"]["per_kind"]["blur"]["recon"] += 0.01
    assert compare(nhwc, plain)[:2] == (pytest.approx(0.01, abs=2e-3), ".geometries.same_size.per_kind.blur.recon")


def test_eval_says_which_images_are_too_small_and_leaves_them_out_of_the_report(tmp_path, astronaut):
    """Images smaller than --crop were skipped without a word and still listed as evaluated."""
    from PIL import Image

    from lway_rt.degae import Stage1, save_stage1

    ckpt = tmp_path / "s1.safetensors"
    save_stage1(ckpt, Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=0).freeze(),
                {"iterations": 1, "recipe": {"iters": 1}})
    (tmp_path / "mixed").mkdir()
    Image.fromarray(astronaut[:128, :128]).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(astronaut[:40, :60]).save(tmp_path / "mixed" / "small.png")
    dest = tmp_path / "r.json"
    args = ["eval-degae", "--checkpoint", str(ckpt), "--crop", "48", "--crops-per-image", "1", "--draws", "2"]
    res = CliRunner().invoke(main, [*args, "--data", str(tmp_path / "mixed"), "--json", str(dest)])
    assert res.exit_code == 0, res.output
    assert "note: 1 image(s) smaller than the 48-px crop left out of the evaluation: small.png (60x40)" in res.output
    settings = json.loads(dest.read_text())["settings"]
    assert settings["images"] == ["a.png"] and list(settings["skipped_images"]) == ["small.png"]
    (tmp_path / "mixed" / "a.png").unlink()
    res = CliRunner().invoke(main, [*args, "--data", str(tmp_path / "mixed")])
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
    assert "no evaluation image is at least 48 px on each side (sizes: small.png 60x40); use --crop 40 or less, or " \
           "larger photos" in res.output  # a crop that works (it said "a smaller --crop")
    for i in range(7):  # many: named up to five, and counted
        Image.new("RGB", (30, 30)).save(tmp_path / "mixed" / f"tiny{i}.png")
    res = CliRunner().invoke(main, [*args, "--data", str(tmp_path / "mixed")])
    assert res.exit_code == 1 and "tiny3.png 30x30 and 3 more); use --crop 40 or less" in res.output, res.output


def test_a_json_folder_that_takes_no_file_is_refused_before_the_evaluation(tmp_path, monkeypatch):
    """The report's folder was tried only when the report was written, after the whole evaluation (minutes)."""
    import lway_rt.degae.evaluate as ev

    def never(*a, **k):
        raise AssertionError("the evaluation ran")

    monkeypatch.setattr(ev, "evaluate_stage1", never)
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc (a folder no file can be made in, even by root)")
    res = CliRunner().invoke(main, ["eval-degae", "--json", "/proc/lwayrt-report.json"])
    assert res.exit_code != 0
    assert "cannot write to /proc" in res.output and "choose another --json" in res.output, res.output


def test_a_missing_json_folder_is_made_only_to_write_the_report(tiny_ckpt, tmp_path, monkeypatch):
    """It was made before the evaluation, so an evaluation that then failed left an empty folder behind."""
    import lway_rt.degae.evaluate as ev
    from lway_rt.errors import InputError

    real = ev.evaluate_stage1

    def fails(*a, **k):
        raise InputError("the evaluation failed")

    monkeypatch.setattr(ev, "evaluate_stage1", fails)
    dest = tmp_path / "new" / "deeper" / "r.json"
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(tiny_ckpt), "--json", str(dest)])
    assert res.exit_code == 1 and "the evaluation failed" in res.output, res.output
    assert not (tmp_path / "new").exists()
    if Path("/proc/self").is_dir():  # a missing folder where none can be made is still refused first
        res = CliRunner().invoke(main, ["eval-degae", "--json", "/proc/lwayrt-new/r.json"])
        assert res.exit_code == 1 and "cannot create output folder /proc/lwayrt-new in /proc" in res.output, res.output
    monkeypatch.setattr(ev, "evaluate_stage1", real)
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(tiny_ckpt), "--json", str(dest), "--crop", "48",
                                    "--crops-per-image", "1", "--draws", "2"])
    assert res.exit_code == 0 and json.loads(dest.read_text())["settings"]["crop"] == 48, res.output


def test_an_undefined_separation_of_any_geometry_is_explained(tiny_ckpt):
    """With few --draws the x4 round trip printed "separation undefined" with no note (only the main geometry had one)."""
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(tiny_ckpt), "--crop", "48", "--crops-per-image", "1",
                                    "--draws", "2", "--seed", "4"])  # draws whose x4 round trip has one degrading draw
    assert res.exit_code == 0, res.output
    assert "[roundtrip_x4]" in res.output and "separation undefined" in res.output
    # (a clean draw's x4 round trip degrades the image all the same: 'too few of the draws degrade the image' read
    # wrong beside its numbers)
    assert "note: the roundtrip_x4 separation undefined (it compares distinct degradations, and too few draws add " \
        "one: a draw of no degradation of its own, whatever its round trip, counts as none): use more --draws" \
        in " ".join(res.output.split()), res.output


def test_held_out_photos_are_held_as_uint8_and_give_the_float_crops_to_the_bit(tmp_path, astronaut):
    """eval-degae held every --data photo as float32 (12 bytes a pixel) for the whole evaluation; it now holds 8-bit
    photos as uint8, as training does, and only the crops become float, equal to the bit to the float loader's."""
    from PIL import Image

    from lway_rt.degae.data import load_folder
    from lway_rt.degae.evaluate import _crops

    (tmp_path / "d").mkdir()
    Image.fromarray(astronaut[:200, :160]).save(tmp_path / "d" / "a.png")
    Image.fromarray(astronaut[100:, 200:]).save(tmp_path / "d" / "b.png")
    compact, full = load_folder(tmp_path / "d", compact=True), load_folder(tmp_path / "d")
    assert {t.dtype for t in compact.values()} == {torch.uint8}
    crops, owner = _crops(compact, 48, 3)
    want, want_owner = _crops(full, 48, 3)
    assert crops.dtype == torch.float32 and torch.equal(crops, want) and torch.equal(owner, want_owner)


def test_a_folder_the_checkpoint_was_trained_on_is_said_not_held_out(tmp_path, astronaut, monkeypatch):
    """eval-degae on the checkpoint's own training photos reported its numbers as held-out, with no word; the folder
    it recorded, or another holding the same images, is now named, and the report says so."""
    import shutil

    import numpy as np
    from PIL import Image

    photos, other = tmp_path / "train", tmp_path / "other"
    photos.mkdir()
    other.mkdir()
    Image.fromarray(astronaut[:128, :128]).save(photos / "a.png")
    Image.fromarray(astronaut[300:420, 250:400]).save(photos / "b.png")
    Image.fromarray(np.ascontiguousarray(astronaut[200:328, 300:428])).save(other / "c.png")
    Image.fromarray(np.ascontiguousarray(astronaut[100:228, 50:178])).save(other / "d.png")
    out = tmp_path / "s1.safetensors"
    train(TrainConfig(out=str(out), data=str(photos), iters=1, threads=1, crop=32, batch=2, embed_dim=16, width=8,
                      blocks=2, head_widths=(16, 16, 16)))
    shutil.copytree(photos, tmp_path / "copy")
    for folder, seen in ((photos, True), (tmp_path / "copy", True), (other, False)):
        dest = tmp_path / f"{folder.name}.json"
        res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(out), "--data", str(folder), "--crop", "32",
                                        "--crops-per-image", "1", "--draws", "2", "--json", str(dest)])
        assert res.exit_code == 0, res.output
        said = f"note: {out} was trained on the photos in {folder}: its numbers there are not held-out" in res.output
        assert said == seen, (folder, res.output)
        settings = json.loads(dest.read_text())["settings"]
        assert settings["trained_on_data"] is seen and settings["data"] == str(folder.absolute())
        assert settings["trained_on_photos"] == (2 if seen else 0)
    # its photos beside one smaller than the crop, which the evaluation leaves out: every photo evaluated is one it
    # trained on, so not held-out (the small one was counted: "1 of the 3 ... not wholly"; review 54C C2)
    Image.new("RGB", (20, 20)).save(tmp_path / "copy" / "small.png")
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(out), "--data", str(tmp_path / "copy"), "--crop",
                                    "32", "--crops-per-image", "1", "--draws", "2", "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0 and "small.png (20x20)" in res.output, res.output
    assert f"was trained on the photos in {tmp_path / 'copy'}: its numbers there are not held-out" in res.output
    settings = json.loads((tmp_path / "s.json").read_text())["settings"]
    assert settings["trained_on_data"] is True and settings["trained_on_photos"] == 2, settings
    import tifffile  # the small one a float TIFF, which Pillow cannot open and the reader reads (54D D3)

    (tmp_path / "copy" / "small.png").unlink()
    tifffile.imwrite(tmp_path / "copy" / "small.tif", np.full((20, 20, 3), 0.5, np.float32), photometric="rgb")
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(out), "--data", str(tmp_path / "copy"), "--crop",
                                    "32", "--crops-per-image", "1", "--draws", "2", "--json", str(tmp_path / "s.json")])
    assert res.exit_code == 0 and "small.tif (20x20)" in res.output, res.output
    assert json.loads((tmp_path / "s.json").read_text())["settings"]["trained_on_data"] is True, res.output
    # a folder holding some of its photos, renamed, beside others: counted and said (review 47H H5: it was not)
    shutil.copy(photos / "b.png", other / "renamed.png")
    import lway_rt.export.cache as cache

    hashed, real_sha = [], cache.file_sha256
    monkeypatch.setattr(cache, "file_sha256", lambda p, *a, **k: hashed.append(Path(p).name) or real_sha(p, *a, **k))
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(out), "--data", str(other), "--crop", "32",
                                    "--crops-per-image", "1", "--draws", "2", "--json", str(tmp_path / "mixed.json")])
    assert res.exit_code == 0, res.output
    assert f"note: {out} was trained on 1 of the 3 photos in {other} (the same files, under any name): its numbers " \
           "there are not wholly held-out" in res.output, res.output
    settings = json.loads((tmp_path / "mixed.json").read_text())["settings"]
    assert settings["trained_on_data"] is False and settings["trained_on_photos"] == 1
    assert sorted(hashed) == ["c.png", "d.png", "renamed.png"], hashed  # each photo read once (it was read twice)
    monkeypatch.undo()
    # all of its photos under other names: not held-out, as the folder itself (review 49L L2)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for p in photos.iterdir():
        shutil.copy(p, renamed / f"copy of {p.name}")
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(out), "--data", str(renamed), "--crop", "32",
                                    "--crops-per-image", "1", "--draws", "2", "--json", str(tmp_path / "renamed.json")])
    assert res.exit_code == 0 and f"note: {out} was trained on the photos in {renamed}: its numbers there are not " \
        "held-out" in res.output and "of the" not in res.output, res.output
    settings = json.loads((tmp_path / "renamed.json").read_text())["settings"]
    assert settings["trained_on_data"] is True and settings["trained_on_photos"] == 2
    # a checkpoint that records no photos (written before they were): not known, not 0
    from lway_rt.degae import Stage1, save_stage1

    old = tmp_path / "old.safetensors"
    save_stage1(old, Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16)).freeze(),
                {"iterations": 1, "recipe": {"iters": 1}, "segments": [{"from": 0, "to": 1, "data": str(photos)}]})
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(old), "--data", str(other), "--crop", "32",
                                    "--crops-per-image", "1", "--draws", "2", "--json", str(tmp_path / "old.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "old.json").read_text())["settings"]["trained_on_photos"] is None


def test_the_held_out_count_reads_sizes_as_the_reader_does_without_pillows_warnings(tmp_path, monkeypatch):
    """The count's size check opened each photo with Pillow outside the reader's warning filter: a photo over Pillow's
    pixel limit printed a raw DecompressionBombWarning (54D D2)."""
    import warnings

    from PIL import Image

    from lway_rt.degae.data import folder_digests

    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")
    Image.new("RGB", (20, 40)).save(tmp_path / "narrow.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 is then a "bomb" (up to twice the limit: read)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        _, kept = folder_digests(tmp_path, 32)
    assert not said, [str(w.message) for w in said]
    assert len(kept) == 1  # the 20-px-wide one left out, as the evaluation leaves it out


def test_the_bundled_photos_a_checkpoint_saw_are_counted(tmp_path):
    """Review 52E E1: the default evaluation photos were reported never seen (0) without a look, though a checkpoint
    trained on copies of them records their bytes; and a checkpoint trained on the bundled photos (which records no
    digests) was said to know nothing of a folder holding a copy of one of them. Both are counted and said now."""
    import shutil

    import skimage.data

    from lway_rt.degae import Stage1, save_stage1

    files = Path(skimage.data.__file__).parent
    photos = tmp_path / "mine"
    photos.mkdir()
    for name in ("chelsea.png", "coffee.png", "astronaut.png"):
        shutil.copy(files / name, photos / f"my {name}")
    out = tmp_path / "s1.safetensors"
    train(TrainConfig(out=str(out), data=str(photos), iters=1, threads=1, crop=32, batch=2, embed_dim=16, width=8,
                      blocks=1, head_widths=(16, 16, 16)))
    args = ["--crop", "32", "--crops-per-image", "1", "--draws", "2"]
    res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(out), *args, "--json", str(tmp_path / "d.json")])
    assert res.exit_code == 0 and f"note: {out} was trained on the bundled evaluation photos (chelsea, coffee): its " \
        "numbers there are not held-out" in " ".join(res.output.split()), res.output
    settings = json.loads((tmp_path / "d.json").read_text())["settings"]
    assert settings["trained_on_data"] is True and settings["trained_on_photos"] == 2
    # trained on the bundled photos: a part's data None (or, before parts recorded it, the recipe's), no digests
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(files / "astronaut.png", mixed / "a.png")
    shutil.copy(files / "coffee.png", mixed / "b.png")
    net = Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16)).freeze()
    for i, meta in enumerate(({"segments": [{"from": 0, "to": 1, "data": None}]},
                              {"segments": [{"from": 0, "to": 1}], "recipe": {"iters": 1, "data": None}})):
        bundled = tmp_path / f"bundled{i}.safetensors"
        save_stage1(bundled, net, {"iterations": 1, "recipe": {"iters": 1}, **meta,
                                   "data": "bundled scikit-image photos: astronaut,rocket"})
        dest = tmp_path / f"b{i}.json"
        res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(bundled), "--data", str(mixed), *args,
                                        "--json", str(dest)])
        assert res.exit_code == 0 and f"was trained on 1 of the 2 photos in {mixed}" in " ".join(res.output.split()), \
            res.output
        assert json.loads(dest.read_text())["settings"]["trained_on_photos"] == 1
        res = CliRunner().invoke(main, ["eval-degae", "--checkpoint", str(bundled), *args, "--json", str(dest)])
        assert res.exit_code == 0 and "was trained on" not in res.output, res.output  # (known: none of them)
        assert json.loads(dest.read_text())["settings"]["trained_on_photos"] == 0


def test_a_draw_that_changes_nothing_on_a_crop_leaves_that_crop_out_of_every_mean():
    """An infinite identity PSNR (a draw rounding to no change on one crop) had been left out of the identity mean
    alone, so the gain compared a mean over three crops with one over four (review 47H H6)."""
    from lway_rt.degae.evaluate import _summary

    rows = {"recon": torch.tensor([[30.0, 31.0, 32.0, 40.0]]), "identity": torch.tensor([[29.0, 30.0, 31.0, math.inf]]),
            "shuffled": torch.tensor([[29.5, 30.5, 31.5, 39.0]])}
    out = _summary(rows, torch.ones(1, 4, dtype=torch.bool))
    assert out["n"] == 3 and out["n_unchanged"] == 1
    assert out["recon"] == 31.0 and out["identity"] == 30.0 and out["gain_db"] == 1.0
    assert out["ablation_gap_db"] == 0.5
    whole = _summary({k: v[:, :3] for k, v in rows.items()}, torch.ones(1, 3, dtype=torch.bool))
    assert whole["n"] == 3 and "n_unchanged" not in whole and whole["gain_db"] == 1.0
