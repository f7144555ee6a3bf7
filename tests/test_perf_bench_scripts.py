"""The performance scripts' own pieces: the plain reference in ``benchmarks/adapt_speed.py`` computes
LWay's loss (so the speed ratio compares like with like), the memory estimate adds up, and
``benchmarks/gpu_check.sh`` parses and explains itself. Small R; the real 0.6 M-parameter backbone."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.embed import compute_embeddings
from lway_rt.adapt.patches import AdaptImage, sample_batch
from lway_rt.adapt.wavelet import hf_weight

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("adapt_speed")


@pytest.fixture(scope="module")
def setup(hr_crop):
    from lway_rt.degae import Stage1
    from lway_rt.io.store import load_model

    desc = load_model("realesr-animevideov3")
    s1 = Stage1.fresh(embed_dim=16, width=8, blocks=2, head_widths=(16, 16, 16), seed=2, skip=True).freeze()
    lr = torch.from_numpy(hr_crop[::4, ::4].copy()).permute(2, 0, 1).unsqueeze(0).float() / 255  # 64x64 LR
    image = AdaptImage.from_lr("crop", lr, 4)
    emb = compute_embeddings([image.up], s1)
    batch = sample_batch([image], 2, 16, 4, torch.Generator().manual_seed(0))
    return desc, s1, image, emb, batch


def test_pywt_weight_equals_the_torch_weight(bench):
    x = torch.rand(3, 3, 34, 40, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(bench.pywt_hf_weight(x), hf_weight(x, "luma"), atol=1e-6)


def test_reference_reconstructor_is_r(bench, setup):
    _, s1, _, emb, batch = setup
    clean = torch.rand(2, 3, 24, 24)
    e = emb.expand(2, -1)
    want = s1.reconstructor(clean, e)
    assert torch.allclose(bench.reference_reconstruct(s1.reconstructor, clean, e), want, atol=1e-5)


def test_every_fp32_variant_computes_the_reference_loss(bench, setup):
    desc, s1, image, emb, batch = setup
    config = AdaptConfig(patch_size=16, batch_size=2)
    names = list(bench.FP64_CHECKED)
    first = bench.first_losses(names, desc.model, s1, image, config, batch, torch.float64)
    ref = first["reference"]
    assert ref > 0
    for v in names:
        assert abs(first[v] - ref) <= bench.LOSS_RTOL * ref, v
    # and the check can fail: a different weight map is a different loss
    variant = bench.Variant("ours-fast", desc.model, s1, image, emb, config.replace(hf_mode="channel"))
    assert abs(variant.first_loss(batch) - bench.Variant("reference", desc.model, s1, image, emb, config)
               .first_loss(batch)) > 1e-4 * ref


def test_each_variant_steps_and_memory_estimate_adds_up(bench, setup):
    desc, s1, image, emb, batch = setup
    config = AdaptConfig(patch_size=16, batch_size=2)
    for name in ("reference", "ours-plain", "ours-fast", "ours-bf16"):
        v = bench.Variant(name, desc.model, s1, image, emb, config)
        before = copy.deepcopy(v.model.state_dict())
        loss = v.step(batch)
        assert np.isfinite(loss)
        assert any(not torch.equal(a, before[k]) for k, a in v.model.state_dict().items()), name
    est = bench.estimate_step_memory(bench.Variant("ours-fast", desc.model, s1, image, emb, config), batch)
    n_params = sum(p.numel() for p in desc.model.parameters())
    assert est["params_mb"] == pytest.approx(n_params * 4 / 2**20, abs=0.1)
    assert est["adam_state_mb"] == pytest.approx(2 * est["params_mb"], abs=0.2)
    assert est["saved_activations_mb"] > est["largest_saved_mb"] > 0
    assert est["estimated_loop_peak_mb"] > est["estimated_step_peak_mb"] > est["saved_activations_mb"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_script_parses_and_explains_itself(tmp_path):
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert out.returncode == 2 and "OUTDIR" in out.stdout and "--cpu-smoke" in out.stdout
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_stage1_coverage_script_trains_the_wider_family_and_judges_it(tmp_path):
    """benchmarks/gpu_stage1_coverage.sh --cpu-smoke, train and objective steps: a tiny stage 1 whose recipe records
    motion blur and sharpening, judged by objective_check.py with that checkpoint; bad steps and no arguments refused."""
    import json
    import sys

    from lway_rt.degae import load_stage1
    from lway_rt.io.weights import state_dict_sha256

    script = ROOT / "benchmarks" / "gpu_stage1_coverage.sh"
    env = {**__import__("os").environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "OUTDIR" in out.stdout and "--cpu-smoke" in out.stdout
    out = subprocess.run(["bash", str(script), "--cpu-smoke", str(tmp_path / "x"), "tune"], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 2 and "unknown step 'tune'" in out.stderr
    run = tmp_path / "cov"
    out = subprocess.run(["bash", str(script), "--cpu-smoke", str(run), "train", "objective"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    s1 = load_stage1(run / "stage1_wide.safetensors")
    synth = s1.meta["recipe"]["synth"]
    assert (synth["p_motion"], synth["p_sharpen"]) == (0.3, 0.3)
    res = json.loads((run / "objective_wide_s3.json").read_text())
    assert res["stage1_sha256"] == state_dict_sha256(s1.state_dict()) and len(res["crops"]) == 1
    assert (run / "eval_wide.json").is_file() and not (run / "quality").exists()


def test_memory_child_measures_what_the_parent_was_asked_for(bench, monkeypatch):
    """--memory runs the loop in a child process: every option that shapes that run reaches it (--patch-size 32 was
    once measured at the default 48)."""
    calls = []

    class Done:
        returncode, stdout, stderr = 0, "{}\n", ""

    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    parent = bench.parse_args(["--memory", "--patch-size", "32", "--threads", "2", "--lr-size", "64", "--photo", "coffee",
                               "--seed", "5", "--memory-iterations", "3", "--stage1", "shipped", "--model", "realsr-df2k-x4"])
    bench.measure_loop_memory(parent)
    (cmd,) = calls
    child = bench.parse_args(cmd[2:])
    assert child.memory_child
    for name in ("model", "device", "threads", "stage1", "photo", "lr_size", "seed", "memory_iterations", "patch_size"):
        assert getattr(child, name) == getattr(parent, name), name


@pytest.mark.parametrize("args", [["--warmup", "-1"], ["--threads", "0"], ["--rounds", "0"], ["--patch-size", "0"]])
def test_speed_options_refuse_bad_values_with_a_usage_line(bench, args, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(args)
    assert exc.value.code == 2 and f"argument {args[0]}:" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_backbone_merges_a_one_seed_run_and_exits_non_zero_on_failed_units(tmp_path):
    """benchmarks/gpu_backbone.sh --cpu-smoke, one seed, mixed folders, offset 0: the one unit is merged (a merge of
    one part), a relative OUTDIR is the caller's, a stage-1 path with a space arrives whole; then with a unit that
    fails, the script says so and exits 1."""
    import os
    import sys

    from lway_rt.degae import default_checkpoint_path

    script = ROOT / "benchmarks" / "gpu_backbone.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    ckpt = tmp_path / "stage 1.safetensors"
    shutil.copy(default_checkpoint_path(), ckpt)
    env = {**os.environ, "PYTHON": sys.executable, "MODEL": "realesr-animevideov3", "SETTINGS": "all", "OFFSETS": "0",
           "SEEDS": "3", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(["bash", str(script), "--cpu-smoke", "rel", "--stage1", str(ckpt)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = (tmp_path / "rel" / "summary.txt").read_text()
    assert "quality_realesr-animevideov3_all_adaptseed0.json: lway" in summary and "(exit 0)" in summary
    assert (tmp_path / "rel" / "results.tgz").is_file() and not (ROOT / "rel").exists()
    out = subprocess.run(["bash", str(script), "--cpu-smoke", str(tmp_path / "bad")], cwd=tmp_path,
                         env={**env, "EXTRA": "--bogus"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "failed or skipped units: all_o0_s3" in (tmp_path / "bad" / "summary.txt").read_text()


def test_export_speed_times_both_ways_and_compares_their_outputs(load_benchmark, tmp_path):
    """benchmarks/export_speed.py (its JSON backs the export-speed claim) on a tiny RRDBNet, whose LeakyReLUs are
    in place: both ways timed, outputs compared under ONNX Runtime; a model that does not load is a usage error, not
    a traceback after the timing (56F6)."""
    import json

    from lway_rt.archs.rrdbnet import RRDBNet

    torch.manual_seed(0)
    weights = tmp_path / "tiny.pth"
    torch.save(RRDBNet(num_feat=8, num_block=1, num_grow_ch=4).state_dict(), weights)
    script = load_benchmark("export_speed")
    out = tmp_path / "speed.json"
    assert script.main(["--models", str(weights), "--rounds", "1", "--threads", "1", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["in_place_modules"] > 0 and row["max_abs_output_diff"] <= 1e-6, row
    assert set(row["median_s"]) == {"in_place", "out_of_place"} and all(v >= 0 for v in row["median_s"].values())
    with pytest.raises(SystemExit) as stop:
        script.main(["--models", "nosuchmodel", "--out", str(tmp_path / "none.json")])
    assert stop.value.code == 2 and not (tmp_path / "none.json").exists()
