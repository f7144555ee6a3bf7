"""The stage-2 quality scripts: ``benchmarks/quality.py`` end to end at tiny size (real backbone,
shipped stage 1, real degradations) and ``benchmarks/quality_sweep.py``'s selection rule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quality_script_scores_every_method_and_strength(tmp_path):
    import torch

    quality = _load("quality")
    out = tmp_path / "q.json"
    threads = ["--threads", str(torch.get_num_threads())]  # the script sets torch's thread count
    quality.main([*threads, "--photos", "2", "--crop", "96", "--patch-size", "16", "--iterations", "3", "--presets", "box-downscale",
                  "--seeds", "1", "--methods", "naive", "lway", "--blend", "0.5", "--detail-cap", "1", "--folder", "all",
                  "--sup-photos", "camera,coins", "--out", str(out)])
    res = json.loads(out.read_text())
    methods = ["bicubic", "unadapted", "naive", "lway", "naive@0.5", "naive+cap1", "lway@0.5", "lway+cap1"]
    assert list(res["mean"]) == methods and res["n_crops"] == 2
    assert res["adapt_config"]["sup_weight"] == 3.0 and res["adapt_config"]["anchor_weight"] == 0.2
    for row in res["per_image"]:
        assert set(methods) <= set(row)
        # half strength is a different model from both ends (3 steps at lr 5e-5 move S a little)
        assert row["lway@0.5"]["psnr"] != row["lway"]["psnr"] or row["lway"]["psnr"] == row["unadapted"]["psnr"]
        # cap 1: no more fine detail than the unadapted image; where the adapted one has no more, it is kept as is
        cap = row["lway+cap1"]
        assert 0 <= cap["cap_s"] <= 1 and cap["hf_ratio"] <= row["unadapted"]["hf_ratio"] * 1.001 + 1e-4 \
            or cap["cap_s"] == 1 and cap == {**row["lway"], "cap_s": 1.0}
    assert set(res["done_when_detail_cap"]) == {"lway+cap1"}
    gains = res["gain_over_unadapted"]
    assert set(gains) == set(methods[2:]) and all(g["of"] == 2 for g in gains.values())
    assert set(res["done_when"]) >= {"mean_gain_ge_0.3dB", "beats_naive", "no_image_loses_more_than_0.1dB"}
    # the supervised photos may not be evaluated photos
    with pytest.raises(SystemExit, match="also evaluated"):
        quality.main([*threads, "--photos", "1", "--crop", "96", "--patch-size", "16", "--iterations", "1", "--presets",
                      "box-downscale", "--seeds", "1", "--methods", "naive", "--sup-photos", "astronaut",
                      "--out", str(tmp_path / "x.json")])


def test_self_check_moves_back_to_where_lways_own_term_is_lowest(tmp_path):
    """--self-check: each LWay image is replaced by the blend towards the unadapted image that LWay's term (as
    objective_check.py computes it for the same crop) rates lowest; its scores follow from that blend."""
    import torch

    quality, objective = _load("quality"), _load("objective_check")
    out, look = tmp_path / "q.json", tmp_path / "o.json"
    common = ["--photos", "2", "--crop", "96", "--presets", "sharpen-jpeg420", "--seeds", "1"]
    threads = ["--threads", str(torch.get_num_threads())]
    quality.main([*threads, *common, "--patch-size", "16", "--iterations", "6", "--lr", "1e-3", "--methods", "lway",
                  "--self-check", "--folder", "all", "--sup-photos", "camera", "--out", str(out)])
    objective.main([*threads, *common, "--out", str(look)])
    res, crops = json.loads(out.read_text()), json.loads(look.read_text())["crops"]
    assert list(res["mean"]) == ["bicubic", "unadapted", "lway", "lway+self"]
    assert set(res["done_when_detail_cap"]) == {"lway+self"}
    for row, crop in zip(res["per_image"], crops):
        held = row["lway+self"]
        losses, s = held["self_losses"], held["self_s"]
        assert len(losses) == len(quality.SELF_CHECK_GRID) and losses[quality.SELF_CHECK_GRID.index(s)] == min(losses)
        # at s = 0 the term is the one objective_check measures at the unadapted output of the same crop
        assert crop["image"] == row["image"] and abs(losses[0] - crop["loss_unadapted"]) <= 1e-5 * crop["loss_unadapted"]
        if s == 1.0:
            assert {k: held[k] for k in row["lway"]} == row["lway"]
        elif s == 0.0:
            assert held["psnr"] == row["unadapted"]["psnr"]
        else:  # a true blend: its error lies between the ends' (squared error is convex along the way)
            assert held["psnr"] >= min(row["lway"]["psnr"], row["unadapted"]["psnr"]) - 1e-3
    # on the CPU only (stage 1 is evaluated there)
    with pytest.raises(SystemExit):
        quality.main([*common, "--methods", "lway", "--self-check", "--device", "cuda", "--out", str(out)])


def test_ablation_presets_leave_one_operation_out_of_the_same_crops():
    import numpy as np

    quality = _load("quality")
    full, no_sharpen, no_jpeg = (quality.make_pairs(["astronaut"], p, 3, 96, 4)
                                 for p in ("sharpen-jpeg420", "jpeg420-only", "sharpen-only"))
    assert full[0][0] == no_sharpen[0][0] == no_jpeg[0][0]  # the same crop
    assert np.array_equal(full[0][1], no_sharpen[0][1])
    lrs = [p[0][2] for p in (full, no_sharpen, no_jpeg)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(lrs) for b in lrs[i + 1:])
    # sharpening adds fine detail: the sharpened LR has more high-frequency energy than the unsharpened one
    hf = [float(np.abs(np.diff(lr, axis=0)).mean()) for lr in lrs]
    assert hf[0] > hf[1] and hf[2] > hf[1]
    # the detail ratio: a bicubic upscale is softer than the truth, the truth itself is 1
    from lway_rt.adapt.patches import bicubic_up
    import torch

    hr = full[0][1]
    up = bicubic_up(torch.from_numpy(lrs[1]).permute(2, 0, 1)[None], 4)[0].permute(1, 2, 0).numpy()
    assert quality.hf_ratio(up, hr, 4) < 0.8 and quality.hf_ratio(hr.astype(np.float64) / 255, hr, 4) == 1.0


def test_sweep_rule_takes_the_best_mean_among_safe_variants_else_the_best_worst():
    sweep = _load("quality_sweep")
    rows = {"a": {"mean_gain_db": 0.62, "worst_db": -0.6}, "b": {"mean_gain_db": 0.55, "worst_db": -0.03},
            "c": {"mean_gain_db": 0.45, "worst_db": -0.04}, "d": {"mean_gain_db": 0.25, "worst_db": 0.0}}
    assert sweep.choose(rows) == "b"
    rows["b"]["worst_db"] = -0.2
    assert sweep.choose(rows) == "c"
    del rows["c"]
    assert sweep.choose(rows) == "d"  # nothing qualifies: the best worst crop
    assert set(sweep.VARIANTS) >= {"sup1", "anchor0.2-sup3"}


def _tiny_quality_args(*more: str) -> list[str]:
    import torch

    return ["--threads", str(torch.get_num_threads()), "--photos", "1", "--crop", "96", "--patch-size", "16",
            "--iterations", "2", "--methods", "naive", "lway", "--sup-photos", "camera", *more]


def _split_merged_and_joint(quality, tmp_path, common: list[str], flag: str, a: list[str], b: list[str]):
    """quality.py run on ``flag a``, on ``flag b`` and on ``flag a b``: (the first two merged, the joint run)."""
    for values, name in ((a, "a"), (b, "b"), (a + b, "ab")):
        quality.main([*common, flag, *values, "--out", str(tmp_path / f"{name}.json")])
    quality.merge(str(tmp_path / "m.json"), [str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    merged, joint = (json.loads((tmp_path / f).read_text()) for f in ("m.json", "ab.json"))
    for key in ("n_crops", "mean", "mean_psnr_by_preset", "gain_over_unadapted", "done_when", "per_image"):
        assert merged[key] == joint[key], key
    return merged, joint


def test_runs_split_by_seed_merge_into_the_joint_run(tmp_path):
    quality = _load("quality")
    common = _tiny_quality_args("--presets", "box-downscale", "--folder", "image")
    merged, joint = _split_merged_and_joint(quality, tmp_path, common, "--seeds", ["1"], ["2"])
    assert merged["protocol"]["seeds"] == [1, 2] and joint["protocol"]["mode"] == "one model per crop"
    other = json.loads((tmp_path / "a.json").read_text())
    other["adapt_config"]["lr"] = 1e-4
    (tmp_path / "c.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="adapt_config differs"):
        quality.merge(str(tmp_path / "x.json"), [str(tmp_path / "b.json"), str(tmp_path / "c.json")])


def test_per_folder_runs_split_by_preset_merge_into_the_joint_run(tmp_path):
    quality = _load("quality")
    common = _tiny_quality_args("--seeds", "1", "--folder", "preset")
    merged, _ = _split_merged_and_joint(quality, tmp_path, common, "--presets", ["box-downscale"], ["motion-blur"])
    assert merged["protocol"]["presets"] == ["box-downscale", "motion-blur"] and merged["protocol"]["seeds"] == [1]
    with pytest.raises(SystemExit, match="box-downscale, seed 1 is in"):
        quality.merge(str(tmp_path / "x.json"), [str(tmp_path / "a.json"), str(tmp_path / "ab.json")])
    assert merged["protocol"]["folder"] == "preset"
    for f in ("a", "b"):  # files written before the protocol recorded its folder setting merge as before
        old = json.loads((tmp_path / f"{f}.json").read_text())
        del old["protocol"]["folder"]
        (tmp_path / f"old_{f}.json").write_text(json.dumps(old))
    quality.merge(str(tmp_path / "z.json"), [str(tmp_path / "old_a.json"), str(tmp_path / "old_b.json")])
    assert json.loads((tmp_path / "z.json").read_text())["mean"] == merged["mean"]
    # a mixed folder's model saw every preset: such runs are split by seed only
    for r, preset in (("a", "box-downscale"), ("b", "motion-blur")):
        quality.main(_tiny_quality_args("--seeds", "1", "--folder", "all", "--presets", preset,
                                        "--out", str(tmp_path / f"all_{r}.json")))
    with pytest.raises(SystemExit, match="other than the seeds"):
        quality.merge(str(tmp_path / "y.json"), [str(tmp_path / "all_a.json"), str(tmp_path / "all_b.json")])


def test_both_settings_rule_needs_every_check_in_both_and_keeps_the_default_otherwise():
    sweep = _load("quality_sweep")

    def r(mean, worst, beats=True):
        return {"mean_gain_db": mean, "worst_db": worst, "beats_naive": beats}

    rows = {"base": {"all": r(0.50, -0.04), "preset": r(0.29, -0.15)},
            "x": {"all": r(0.45, -0.05), "preset": r(0.35, -0.08)},
            "y": {"all": r(0.60, -0.02), "preset": r(0.32, -0.09)},
            "z": {"all": r(0.70, -0.01), "preset": r(0.50, -0.02, beats=False)}}
    chosen, qualified = sweep.choose_both(rows, "base")
    assert chosen == "x"  # x's smaller mean (0.35) beats y's (0.32); z does not beat naive
    assert qualified == {"base": False, "x": True, "y": True, "z": False}
    rows["x"]["all"]["worst_db"] = -0.11
    rows["y"]["preset"]["mean_gain_db"] = 0.29
    assert sweep.choose_both(rows, "base") == ("base", {"base": False, "x": False, "y": False, "z": False})
    assert "anchor0.2" in sweep.BOTH_VARIANTS and set(sweep.SETTINGS) == {"all", "preset"}


def test_round3_join_applies_the_rule_to_complete_rows_only(tmp_path):
    """``--round3 --reuse A B --join``: rows of partial runs are joined, the rule sees only variants
    with both settings, rows whose flags changed are dropped, and nothing is run."""
    sweep = _load("quality_sweep")

    def row(mean, worst):
        return {"mean_gain_db": mean, "worst_db": worst, "beats_naive": True}

    v = sweep.ROUND3_VARIANTS
    a = {"variants": {"default": {"flags": v["default"], "all": row(0.55, -0.06), "preset": row(0.37, -0.04)},
                      "it400": {"flags": v["it400"], "all": row(0.60, -0.01)}},  # one setting only: killed
         "machine": {"cpu": "A"}}
    b = {"variants": {"s1-noskip": {"flags": v["s1-noskip"], "all": row(0.58, -0.05), "preset": row(0.40, -0.09)},
                      "s1-w64": {"flags": ["--changed"], "all": row(0.9, 0.0), "preset": row(0.9, 0.0)}},
         "machine": {"cpu": "B"}}
    for name, data in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(json.dumps(data))
    out = tmp_path / "joined.json"
    sweep.main(["--round3", "--reuse", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--join", "--out", str(out)])
    res = json.loads(out.read_text())
    assert set(res["variants"]) == {"default", "it400", "s1-noskip"}  # s1-w64's flags no longer match
    assert res["qualified"] == {"default": True, "s1-noskip": True} and res["chosen"] == "s1-noskip"
    assert res["complete"] is False and res["machine"] == {"cpu": "A"}
    assert res["variants"]["s1-noskip"]["reused_from"] == "b.json"
    # without the reference row nothing is chosen
    del a["variants"]["default"]
    (tmp_path / "a.json").write_text(json.dumps(a))
    sweep.main(["--round3", "--reuse", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--join", "--out", str(out)])
    assert json.loads(out.read_text())["chosen"] == "default"


def test_round4_rule_needs_a_better_worst_crop_and_keeps_the_mean_near_the_default(tmp_path):
    """RULE_4: a qualifier replaces the default only with a worst crop >= 0.02 dB higher (over both settings)
    and a smaller mean at most 0.05 dB lower; the default's row comes from round 3's shipped stage 1."""
    sweep = _load("quality_sweep")

    def r(mean, worst):
        return {"mean_gain_db": mean, "worst_db": worst, "beats_naive": True}

    rows = {"default": {"all": r(0.55, -0.03), "preset": r(0.38, -0.05)},
            "a": {"all": r(0.50, -0.02), "preset": r(0.34, -0.04)},  # worst only 0.01 higher
            "b": {"all": r(0.60, -0.02), "preset": r(0.32, -0.02)},  # smaller mean 0.06 lower
            "c": {"all": r(0.52, -0.01), "preset": r(0.34, -0.03)},
            "d": {"all": r(0.52, 0.00), "preset": r(0.29, 0.00)}}  # does not qualify
    chosen, qualified = sweep.choose_round4(rows)
    assert chosen == "c" and qualified == {"default": True, "a": True, "b": True, "c": True, "d": False}
    rows["c"]["preset"]["worst_db"] = -0.04
    assert sweep.choose_round4(rows)[0] == "default"
    # the join: the reference row is round 3's, and rows made with another shipped stage 1 are refused
    ref = json.loads((ROOT / "benchmarks" / "results" / sweep.ROUND4_REFERENCE[0]).read_text())
    ref_row = ref["variants"][sweep.ROUND4_REFERENCE[1]]
    mine = {"variants": {"it100": {"flags": sweep.ROUND4_VARIANTS["it100"], "stage1_sha256": ref_row["stage1_sha256"],
                                   "all": r(0.50, -0.01), "preset": r(0.33, -0.02)}}, "machine": {"cpu": "A"}}
    (tmp_path / "a.json").write_text(json.dumps(mine))
    out = tmp_path / "r4.json"
    sweep.main(["--round4", "--reuse", str(tmp_path / "a.json"), "--join", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["variants"]["default"]["preset"] == ref_row["preset"] and "round3" in res["variants"]["default"]["reused_from"]
    small_ref = min(ref_row[s]["mean_gain_db"] for s in sweep.SETTINGS)
    worst_ref = min(ref_row[s]["worst_db"] for s in sweep.SETTINGS)
    assert res["chosen"] == ("it100" if 0.33 >= small_ref - 0.05 and -0.02 >= worst_ref + 0.02 else "default")
    mine["variants"]["it100"]["stage1_sha256"] = "0" * 64
    (tmp_path / "a.json").write_text(json.dumps(mine))
    with pytest.raises(SystemExit, match="different shipped stage-1"):
        sweep.main(["--round4", "--reuse", str(tmp_path / "a.json"), "--join", "--out", str(out)])


def test_adapt_variance_rule_and_split():
    """adapt_variance.py: the pick is the highest mean worst crop among variants keeping 80 % of the default's
    mean gain, the default when none beats it; the test split's seeds are refused."""
    av = _load("adapt_variance")
    runs = lambda *pairs: [{"mean_gain_db": m, "worst_db": w, "crops_db": [w, m]} for m, w in pairs]  # noqa: E731
    s = {k: av.summarise(v) for k, v in {"default": runs((1.0, -0.5), (1.2, 0.1)),  # mean worst -0.2
                                         "a": runs((0.7, 0.2), (0.8, 0.3)),  # mean 0.75 < 0.8 x 1.1
                                         "b": runs((0.9, -0.1), (1.0, 0.0)),  # mean worst -0.05
                                         "c": runs((1.1, -0.6), (1.3, -0.4))}.items()}
    assert s["default"]["mean_worst_db"] == -0.2 and s["default"]["crops_below_-0.1dB"] == 1
    assert s["default"]["sd_folder_gain_db"] == pytest.approx(0.1414, abs=1e-4)
    assert av.choose(s) == "b"
    s["b"]["mean_worst_db"] = -0.3
    assert av.choose(s) == "default"
    # a default that loses on average (a smoke run's) still qualifies: max() over no variant had crashed after every
    # run had finished, writing nothing (review 51A A1); a variant losing less than 1.2x as much may beat it
    loss = {k: av.summarise(v) for k, v in {"default": runs((-0.05, -0.1), (-0.05, -0.1)),
                                            "a": runs((-0.07, 0.0), (-0.05, 0.0)),  # mean -0.06 >= 1.2 x -0.05
                                            "b": runs((-0.2, 0.1), (-0.2, 0.1))}.items()}  # loses 4x as much
    assert av.choose({"default": loss["default"]}) == "default"
    assert av.choose(loss) == "a"
    loss["a"]["mean_gain_db"] = -0.07
    assert av.choose(loss) == "default"
    with pytest.raises(SystemExit):
        av.main(["--seeds", "1", "2"])


def test_round5_takes_the_spread_rounds_pick_only_when_it_qualifies_in_both_settings():
    sweep = _load("quality_sweep")

    def r(mean, worst, beats=True):
        return {"mean_gain_db": mean, "worst_db": worst, "beats_naive": beats}

    rows = {"default": {"all": r(0.55, -0.03), "preset": r(0.38, -0.05)},
            "pick": {"all": r(0.45, -0.09), "preset": r(0.31, -0.02)}}
    assert sweep.choose_round5(rows) == ("pick", {"default": True, "pick": True})  # a lower mean is no bar
    rows["pick"]["preset"] = r(0.31, -0.02, beats=False)
    assert sweep.choose_round5(rows)[0] == "default"
    rows["pick"]["preset"] = r(0.29, -0.02)
    assert sweep.choose_round5(rows)[0] == "default"
    assert sweep.choose_round5({"default": rows["default"]}) == ("default", {"default": True})


def test_adapt_trajectory_scores_the_unadapted_model_first_and_every_step(tmp_path):
    """adapt_trajectory.py at 2 steps: step 0's Y-PSNR is the unadapted backbone's mean over the folder's crops,
    scored independently here; one score per step after it; the loss parts are recorded."""
    import numpy as np
    import torch

    traj = _load("adapt_trajectory")
    q = _load("quality")
    out = tmp_path / "t.json"
    traj.main(["--preset", "box-downscale", "--seed", "3", "--iterations", "2", "--every", "1", "--out", str(out)])
    res = json.loads(out.read_text())
    assert [e["it"] for e in res["psnr_by_step"]] == [0, 1, 2] and res["adapt_seed"] == 3
    from lway_rt.adapt.loop import super_resolve
    from lway_rt.io.store import load_model

    desc = load_model("realesr-animevideov3")
    pairs = q.make_pairs(q.PHOTOS[:6], "box-downscale", 3, 192, 4)
    unadapted = np.mean([q.score(super_resolve(desc.model, torch.from_numpy(lr).permute(2, 0, 1)[None], 4, 1, 0)[0]
                                 .permute(1, 2, 0).numpy(), hr, 4)["psnr"] for _, hr, lr in pairs])
    assert res["psnr_by_step"][0]["psnr"] == pytest.approx(unadapted, abs=2e-3)
    assert res["psnr_by_step"][1]["psnr"] != res["psnr_by_step"][0]["psnr"]
    assert {"loss", "sup", "anchor"} <= set(res["loss_by_step"][-1]) and res["fixed_patch_loss"][0]["it"] == 0


def test_soup_is_the_elementwise_mean_of_the_members():
    import torch

    q = _load("quality")
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([5])}
    c = {"w": torch.tensor([2.0, 1.0]), "n": torch.tensor([7])}
    m = q.mean_weights([a, b, c])
    assert torch.equal(m["w"], torch.tensor([2.0, 3.0])) and torch.equal(m["n"], torch.tensor([3]))
    assert m["w"].dtype == torch.float32


def test_round6_counts_passing_runs_over_seeds_and_keeps_the_default_on_a_tie():
    """RULE_6: the candidate needs more of its six runs (3 seeds x 2 settings) passing mean >= 0.3 and worst >= -0.1
    than the default, with its mean over the runs at most 0.05 dB below the default's."""
    sweep = _load("quality_sweep")

    def runs(*pairs):
        keys = [f"{s}@{o}" for o in sweep.ROUND6_OFFSETS for s in sweep.SETTINGS]
        return {k: {"mean_gain_db": m, "worst_db": w} for k, (m, w) in zip(keys, pairs)}

    default = runs((0.55, -0.03), (0.38, -0.05), (0.50, -0.05), (0.40, -0.07), (0.45, -0.2), (0.20, -0.77))  # 4 pass
    cand = runs((0.50, -0.02), (0.35, -0.04), (0.48, -0.01), (0.31, -0.09), (0.40, -0.08), (0.29, -0.05))  # 5 pass
    chosen, summary = sweep.choose_round6({"default": default, "cosine": cand})
    assert summary["default"]["passed"] == 4 and summary["cosine"]["passed"] == 5 and chosen == "cosine"
    assert summary["default"]["mean_gain_db"] == pytest.approx(0.4133, abs=1e-4) and summary["default"]["min_worst_db"] == -0.77
    cand["preset@2"]["mean_gain_db"] = 0.31  # 6 pass, still chosen
    assert sweep.choose_round6({"default": default, "cosine": cand})[0] == "cosine"
    for k in cand:  # the mean falls more than 0.05 dB below the default's: no
        cand[k]["mean_gain_db"] = 0.305
    assert sweep.choose_round6({"default": default, "cosine": cand})[0] == "default"
    assert sweep.choose_round6({"default": default, "cosine": default})[0] == "default"  # a tie keeps the default


def test_sweep_runs_keep_the_patch_size_of_their_rounds_and_quality_follows_adapt(tmp_path):
    """Rounds 1-12 ran at 32-px patches (the default then): the sweep's runs still do unless a variant names its own
    size; quality.py alone follows ``lwayrt adapt``'s default."""
    import torch

    from lway_rt.adapt.config import AdaptConfig

    sweep = _load("quality_sweep")
    tiny = ["--photos", "1", "--crop", "192", "--iterations", "1", "--presets", "box-downscale", "--methods", "naive",
            "--folder", "all", "--sup-photos", "camera"]
    then = sweep.run_quality("then", tmp_path / "a.json", tiny, seeds=["1"])
    own = sweep.run_quality("own", tmp_path / "b.json", [*tiny, "--patch-size", "40"], seeds=["1"])
    assert then["adapt_config"]["patch_size"] == 32 and own["adapt_config"]["patch_size"] == 40
    _load("quality").main([*tiny, "--seeds", "1", "--threads", str(torch.get_num_threads()), "--out", str(tmp_path / "c.json")])
    now = json.loads((tmp_path / "c.json").read_text())
    assert now["adapt_config"]["patch_size"] == AdaptConfig().patch_size == 48


@pytest.mark.parametrize("round_no, cand, extra", [(13, "perc-trunk", ["--perceptual", "trunk-l1"]),
                                                    (14, "cap1.2", ["--detail-cap", "1.2"]),
                                                    (15, "guard3", ["--detail-guard", "3"]),
                                                    (16, "gate8", ["--detail-guard", "8", "--detail-guard-gate", "trust"])])
def test_rounds_13_to_16_measure_against_round11s_48px_runs(round_no, cand, extra):
    """Rounds 13 to 16: the reference is the default since round 11 (48-px patches): its flags are round 11's "patch48" flags,
    so ``--reuse quality_dev_sweep_round11.json`` supplies its six runs, and the rule keeps it unless beaten."""
    sweep = _load("quality_sweep")
    r11 = json.loads((ROOT / "benchmarks" / "results" / "quality_dev_sweep_round11.json").read_text())
    variants, _ = sweep.LATER_ROUNDS[round_no]
    ref = sweep.ROUND_REFERENCE[round_no]
    assert variants[ref] == r11["variants"]["patch48"]["flags"]
    assert len(r11["variants"]["patch48"]["runs"]) == 6
    assert variants[cand] == [*variants[ref], *extra]
    runs = r11["variants"]["patch48"]["runs"]
    assert sweep.choose_round6({ref: runs, cand: runs}, ref)[0] == ref  # a tie keeps the reference
    worse = {k: {**r, "worst_db": -0.5} for k, r in runs.items()}
    assert sweep.choose_round6({ref: worse, cand: runs}, ref)[0] == cand


def test_round16_stops_once_no_candidate_can_beat_the_reference():
    """The stop rule: decided once the reference's runs are known and no candidate, even passing all its remaining
    runs, can pass more than the reference."""
    sweep = _load("quality_sweep")
    keys = ["preset@0", "all@0", "preset@1"]
    ok, bad = {"mean_gain_db": 0.4, "worst_db": -0.05}, {"mean_gain_db": 0.4, "worst_db": -0.2}
    ref = {"preset@0": ok, "all@0": ok, "preset@1": bad}  # 2 of 3
    assert not sweep.decided_early({"ref": {"preset@0": ok}, "c": {}}, keys, "ref")  # the reference is not known yet
    assert not sweep.decided_early({"ref": ref, "c": {"preset@0": ok}}, keys, "ref")  # 1 + 2 left > 2
    assert sweep.decided_early({"ref": ref, "c": {"preset@0": bad}}, keys, "ref")  # at most 2: cannot beat it
    assert not sweep.decided_early({"ref": ref, "c": {"preset@0": bad}, "d": {}}, keys, "ref")  # d still can
    assert 16 in sweep.ROUND_STOP_WHEN_DECIDED


def test_a_stopped_round_ends_its_runs_and_starts_no_more():
    """Leaving ``finished`` early (the stop rule) ends the running child processes and starts none of the queued
    ones, also one a worker picks up as the stop happens (round 16 once lost 14 min to that race)."""
    import time

    sweep = _load("quality_sweep")
    started = []

    def job(seconds):
        started.append(seconds)
        code, _ = sweep.run_child(["sleep", str(seconds)], f"sleep {seconds}")
        return {"code": code}

    t0 = time.perf_counter()
    calls = {"quick": (job, 0), "slow": (job, 60), **{f"queued{i}": (job, 60) for i in range(3)}}
    try:
        for key, res in sweep.finished(calls, 2):
            assert key == "quick" and res["code"] == 0
            break
        assert time.perf_counter() - t0 < 30 and not sweep._CHILDREN
        assert len(started) <= 3  # quick, slow and at most the one picked up as it stopped (then ended)
    finally:
        sweep._STOPPING.clear()
    assert [k for k, _ in sweep.finished({"a": (job, 0), "b": (job, 0)}, 2)] and not sweep._STOPPING  # ran out: no stop


def test_quality_gives_the_detail_guard_to_lway_only(tmp_path):
    import torch

    quality = _load("quality")
    out = tmp_path / "g.json"
    quality.main(["--photos", "1", "--iterations", "2", "--presets", "box-downscale", "--methods", "naive", "lway",
                  "--folder", "all", "--sup-photos", "camera", "--seeds", "1", "--detail-guard", "3",
                  "--detail-guard-ratio", "1.1", "--detail-guard-gate", "trust", "--threads", str(torch.get_num_threads()),
                  "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["adapt_config"]["detail_guard"] == 3 and res["adapt_config"]["detail_guard_ratio"] == 1.1
    assert {r["method"]: r["detail_guard"] for r in res["runs"]} == {"naive": 0.0, "lway": 3.0}
    assert {r["method"]: r["detail_guard_gate"] for r in res["runs"]} == {"naive": "none", "lway": "trust"}


def test_quality_runs_lway_with_the_perceptual_term_beside_the_baselines(tmp_path):
    import torch

    quality = _load("quality")
    out = tmp_path / "p.json"
    quality.main(["--photos", "1", "--iterations", "2", "--presets", "box-downscale", "--methods", "naive", "lway",
                  "--folder", "all", "--sup-photos", "camera", "--seeds", "1", "--perceptual", "trunk-l1", "--perceptual-weight", "0.1",
                  "--threads", str(torch.get_num_threads()), "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["adapt_config"]["perceptual"] == "trunk-l1" and res["adapt_config"]["perceptual_weight"] == 0.1
    assert {r["method"] for r in res["runs"]} == {"naive", "lway"}


def test_detail_flag_reproduces_its_committed_result(tmp_path):
    """benchmarks/detail_flag.py reads the committed quality results only: rerun, it gives the committed JSON."""
    import shlex

    script = _load("detail_flag")
    out = tmp_path / "d e.json"  # a space: the recorded command is shell-quoted, so it can be pasted back
    script.main(["--out", str(out)])
    now = json.loads(out.read_text())
    assert shlex.split(now["command"]) == ["python", "benchmarks/detail_flag.py", "--out", str(out)]
    committed = json.loads((ROOT / "benchmarks" / "results" / "detail_flag.json").read_text())
    assert {k: v for k, v in now.items() if k != "command"} == {k: v for k, v in committed.items() if k != "command"}
    assert now["losers_flagged"] <= now["lost_over_0.1dB"] <= now["crops"]
    assert sum(b["crops"] for b in now["bands"]) == now["crops"]


def test_round14_caps_share_one_adaptation_per_run():
    """Round 14's candidates differ from the reference only by --detail-cap: one quality.py run (the reference's
    adaptation) scores every cap, and each candidate's row is its lway+capC."""
    sweep = _load("quality_sweep")
    variants, rule = sweep.LATER_ROUNDS[14]
    assert rule == sweep.RULE_7
    ref = variants[sweep.ROUND_REFERENCE[14]]
    assert sweep.split_cap(ref) == (ref, None)
    caps = {n: sweep.split_cap(f) for n, f in variants.items() if n != "patch48"}
    assert {c for _, c in caps.values()} == {"1.2", "1.1", "1"} and all(base == ref for base, _ in caps.values())
    # round 19's self-check is the same kind of candidate: the reference's adaptation scored as lway+self
    variants = sweep.LATER_ROUNDS[19][0]
    assert sweep.split_cap(variants["self-check"]) == (variants[sweep.ROUND_REFERENCE[19]], "self")
    assert [sweep.scored_as(c) for c in ("self", "1.2", "1")] == ["lway+self", "lway+cap1.2", "lway+cap1"]


def test_quality_groups_a_mixed_folder_and_keeps_a_small_folder_whole(tmp_path):
    """--groups auto: a folder of 6 crops cannot hold two groups of 4, so it is adapted exactly as without grouping
    (round 17 reuses round 16's per-folder runs on this); the mixed folder of two presets splits by preset."""
    import torch

    quality = _load("quality")
    common = ["--photos", "6", "--crop", "192", "--iterations", "1", "--methods", "lway", "--seeds", "3",
              "--sup-photos", "camera", "--threads", str(torch.get_num_threads())]
    one, grouped = tmp_path / "one.json", tmp_path / "grouped.json"
    quality.main([*common, "--presets", "sharpen-jpeg420", "--out", str(one)])
    quality.main([*common, "--presets", "sharpen-jpeg420", "--groups", "auto", "--out", str(grouped)])
    a, b = (json.loads(p.read_text()) for p in (one, grouped))
    assert [r["lway"] for r in a["per_image"]] == [r["lway"] for r in b["per_image"]]
    assert {r["group"] for r in b["per_image"]} == {1} and b["protocol"]["groups"] == "auto"
    mixed = tmp_path / "mixed.json"
    quality.main([*common, "--presets", "sharpen-jpeg420", "box-downscale", "--folder", "all", "--groups", "auto",
                  "--out", str(mixed)])
    res = json.loads(mixed.read_text())
    by_group = {}
    for r in res["per_image"]:
        by_group.setdefault(r["group"], set()).add(r["preset"])
    assert sorted(map(sorted, by_group.values())) == [["box-downscale"], ["sharpen-jpeg420"]]
    assert [r["group"] for r in res["runs"]] == [1, 2] and all(r["images"] == 6 for r in res["runs"])


def test_round17_takes_round16s_per_folder_gate8_runs_as_its_own(tmp_path):
    """Round 17's candidate is round 16's gate8 plus --groups auto; its per-folder runs (and only those) come from
    round 16, runs made after that round's stop included; the reference's six from round 11."""
    sweep = _load("quality_sweep")
    variants, rule = sweep.LATER_ROUNDS[17]
    assert rule == sweep.RULE_6 and sweep.ROUND_REFERENCE[17] == "patch48"
    assert variants["group-gate8"] == [*sweep.ROUND16_VARIANTS["gate8"], "--groups", "auto"]
    results = ROOT / "benchmarks" / "results"
    out = tmp_path / "r17.json"
    sweep.main(["--round17", "--join", "--reuse", str(results / "quality_dev_sweep_round11.json"),
                str(results / "quality_dev_sweep_round16.json"), "--out", str(out)])
    res = json.loads(out.read_text())
    runs = res["variants"]["group-gate8"]["runs"]
    assert sorted(runs) == ["preset@0", "preset@1", "preset@2"] and not res["complete"]
    r16 = json.loads((results / "quality_dev_sweep_round16.json").read_text())["variants"]["gate8"]
    assert runs["preset@2"]["mean_gain_db"] == r16["runs_after_stop"]["preset@2"]["mean_gain_db"]
    assert len(res["variants"]["patch48"]["runs"]) == 6


def test_signal_scripts_record_their_look_with_one_writer(tmp_path):
    """group_signal.py: each seed's mixed folder, grouped as adapt --mode per-group would, the six sharpen + JPEG crops
    in one group; trust_signal.py beside it; both JSONs carry the same header from ``write_signal``."""
    g_out, t_out = tmp_path / "g.json", tmp_path / "t.json"
    _load("group_signal").main(["--seeds", "3", "--out", str(g_out)])
    _load("trust_signal").main(["--seeds", "3", "--presets", "box-downscale", "--photos", "2", "--out", str(t_out)])
    g, t = (json.loads(p.read_text()) for p in (g_out, t_out))
    (seed,) = g["seeds"]
    assert seed["groups"] == 2 and seed["together"]["sharpen-jpeg420"] == 1.0
    assert sorted(len(m) for m in seed["members"]) == [6, 18] and g["groups"] == "auto"
    assert len(t["crops"]) == 2 and 0 <= t["crops"][0]["gate"] <= 1
    for res, script in ((g, "group_signal.py"), (t, "trust_signal.py")):
        assert res["command"].startswith(f"python benchmarks/{script}") and res["benchmark"].endswith(f"(benchmarks/{script})")
        assert len(res["stage1_sha256"]) == 64 and res["total_seconds"] > 0


def test_group_signal_reach_separates_new_footage_from_unseen_sources(tmp_path):
    """The measurement behind upscale's warning (ROUTE_REACH): crops of another seed from the groups' own sources
    rarely lie beyond 2x a group's reach; sensor-noise crops, a source the sharpen + JPEG / box groups never saw, do."""
    from lway_rt.upscale import ROUTE_REACH

    out = tmp_path / "g.json"
    _load("group_signal").main(["--seeds", "3", "4", "--out", str(out)])
    reach = json.loads(out.read_text())["reach"]
    assert ROUTE_REACH in reach["factors"]
    for seed in ("3", "4"):
        same, unseen = reach["same_sources"][seed], reach["unseen_sources"][seed]
        assert same["crops"] == 24 and same["above_1"] >= same["above_2"] >= same["above_4"]
        assert same["above_2"] <= 0.1 and unseen["resize-sensor-noise"]["above_2"] >= 0.9


@pytest.mark.parametrize("script", ["quality", "group_signal", "group_routing"])
@pytest.mark.parametrize("value", ["two", "0", "-1"])
def test_groups_option_refuses_bad_values_with_a_usage_line(script, value, capsys):
    with pytest.raises(SystemExit) as exc:
        _load(script).main(["--groups", value])
    assert exc.value.code == 2
    assert f"argument --groups: '{value}' is neither a positive number of groups nor auto" in capsys.readouterr().err


def test_group_routing_sends_new_crops_to_their_sources_group(tmp_path):
    """benchmarks/group_routing.py at tiny size: two adaptations through adapt(), the router of lwayrt upscale."""
    out = tmp_path / "routing.json"
    _load("group_routing").main(["--photos", "3", "--crop", "96", "--iterations", "1", "--patch-size", "16", "--presets",
                                 "sharpen-jpeg420", "box-downscale", "--groups", "2", "--new-seeds", "4", "--out", str(out)])
    r = json.loads(out.read_text())
    members = r["runs"]["per-group"]["members"]
    holds = {g: {n.split("_", 1)[0] for n in names} for g, names in members.items()}
    assert sorted(map(sorted, holds.values())) == [["box-downscale"], ["sharpen-jpeg420"]]
    assert r["adapted_crops_routed_to_own_group"] == 6
    for row in r["rows"]:  # every crop, adapted or new, goes to the group of its preset
        assert holds[row["group"]] == {row["preset"]}
        assert row["folder"]["psnr"] != row["unadapted"]["psnr"]
    s = r["summary"]
    assert s["new"]["all"]["crops"] == 6 and s["new_routes"]["box-downscale"][next(
        g for g, p in holds.items() if p == {"box-downscale"})] == 3


def test_objective_check_measures_the_way_to_a_truth_made_by_hand():
    """objective_check.crop_measures: with the "truth" a small step down the loss's gradient from S0, the descent
    cosine is 1 and the loss prefers the truth to S0; a step up gives -1 and the loss prefers S0; for LWay (with R), naive and
    a mix of both."""
    import torch

    script, quality = _load("objective_check"), _load("quality")
    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.embed import freeze_stage1, prepare_stage1
    from lway_rt.adapt.patches import AdaptImage
    from lway_rt.degae import load_stage1

    ((name, _, lr),) = quality.make_pairs(quality.PHOTOS[:1], "box-downscale", 3, 96, 4)
    im = AdaptImage.from_lr(name, torch.from_numpy(lr).permute(2, 0, 1)[None], 4)
    stage1 = load_stage1(None)
    freeze_stage1(stage1)
    recon, _ = prepare_stage1(stage1, [im.up])
    index = torch.zeros(1, dtype=torch.long)
    cfg = AdaptConfig().without_perceptual().replace(anchor_weight=0.0, sup_weight=0.0, detail_guard=0.0)
    sr0 = im.up.clamp(0, 1) * 0.9 + 0.05  # any image inside [0, 1]
    lway = script.term(im.lr, im.up, lambda x: recon(x, index), cfg)
    naive = script.term(im.lr, im.up, None, cfg.replace(loss="naive"))
    for loss in (lway, naive, lambda x: lway(x) + 2 * naive(x)):
        x = sr0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(x), x)
        step = 1e-2 * g / g.norm()  # smaller steps drown in float32 rounding of R
        down = script.crop_measures(sr0, sr0 - step, im.lr, loss, 4)
        up = script.crop_measures(sr0, sr0 + step, im.lr, loss, 4)
        assert down["descent_cosine"] == pytest.approx(1.0, abs=1e-3) and down["truth_ratio"] < 1
        assert down["monotone_to_truth"] and down["line_min_t"] == 1.0
        assert up["descent_cosine"] == pytest.approx(-1.0, abs=1e-3) and up["truth_ratio"] > 1
        assert up["line_min_t"] == 0.0 and not up["monotone_to_truth"]
        assert down["loss_unadapted"] == up["loss_unadapted"] > 0


def test_objective_check_reproduces_its_committed_crops_and_joins_gains(tmp_path):
    """objective_check.py on two committed crops gives the committed measures, joins their gains from a quality JSON
    by (seed, preset, image), and ranks by Spearman's rho (ties share ranks)."""
    script = _load("objective_check")
    assert script.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert script.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / 3**0.5)
    assert script.spearman([1], [2]) is None and script.spearman([1, 1], [1, 2]) is None  # undefined, not NaN
    gains = ROOT / "benchmarks" / "results" / "quality_cap_nvidia-h200" / "quality_realesr-animevideov3_all_adaptseed0.json"
    out = tmp_path / "o.json"
    script.main(["--seeds", "2", "--presets", "sharpen-jpeg420", "--photos", "2", "--gains", str(gains), "--mix", "1",
                 "--out", str(out)])
    now = json.loads(out.read_text())
    committed = {(r["seed"], r["preset"], r["image"]): r
                 for r in json.loads((ROOT / "benchmarks" / "results" / "objective_check.json").read_text())["crops"]}
    quality_rows = {(r["seed"], r["preset"], r["image"]): r for r in json.loads(gains.read_text())["per_image"]}
    assert len(now["crops"]) == 2 and now["gains_from"] == [gains.stem]
    for row in now["crops"]:
        key = (row["seed"], row["preset"], row["image"])
        old = committed[key]
        for k in ("loss_unadapted", "loss_truth", "truth_ratio", "descent_cosine"):
            assert row[k] == pytest.approx(old[k], rel=1e-3, abs=1e-4), k
        for name in ("naive", "lway+1naive"):
            assert row[name]["truth_ratio"] == pytest.approx(old[name]["truth_ratio"], rel=1e-3)
        assert row["lway+1naive"]["truth_ratio"] == pytest.approx(
            (row["loss_truth"] + row["naive"]["loss_truth"]) / (row["loss_unadapted"] + row["naive"]["loss_unadapted"]), rel=1e-3)
        q = quality_rows[key]
        assert row["gains"][gains.stem] == pytest.approx(q["lway"]["psnr"] - q["unadapted"]["psnr"], abs=1e-4)
    assert now["gains"]["crops_joined"] == 2 and now["all"]["crops"] == 2
    assert abs(now["spearman_trust_r_vs_truth_ratio"]["all"]) == pytest.approx(1.0)  # two crops: rho is +-1


# ---- the scripts' command lines and result files (benchmarks/_args.py)

def test_quality_merges_a_single_part_from_the_command_line(tmp_path):
    """``quality.py --merge OUT PART``: one part is a merge too (gpu_backbone.sh merges a one-seed run so), not an
    argparse error."""
    import subprocess
    import sys

    part = ROOT / "benchmarks" / "results" / "heldout_seeds78_all_s7.json"
    out = tmp_path / "one.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--merge", str(out), str(part)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged, original = json.loads(out.read_text()), json.loads(part.read_text())
    assert merged["mean"] == original["mean"] and merged["per_image"] == original["per_image"]


def test_quality_writes_strict_json(tmp_path):
    """An undefined number (a NaN score) is written as null, never as the NaN token JSON readers refuse."""
    quality = _load("quality")
    part = json.loads((ROOT / "benchmarks" / "results" / "heldout_seeds78_all_s7.json").read_text())
    part["per_image"][0]["lway"]["psnr"] = float("nan")
    (tmp_path / "p.json").write_text(json.dumps(part))
    quality.merge(str(tmp_path / "m.json"), [str(tmp_path / "p.json")])

    def refuse(token):
        raise ValueError(f"non-standard JSON: {token}")

    merged = json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse)
    assert merged["per_image"][0]["lway"]["psnr"] is None


@pytest.mark.parametrize("script, args, message", [
    ("quality", ["--presets", "bogus"], "argument --presets: invalid choice: 'bogus'"),
    ("quality", ["--photos", "0"], "argument --photos: invalid choice: 0"),
    ("quality", ["--threads", "0"], "argument --threads: '0' is not a positive whole number"),
    ("quality_sweep", ["--jobs", "0"], "argument --jobs: '0' is not a positive whole number"),
    ("adapt_variance", ["--jobs", "0"], "argument --jobs: '0' is not a positive whole number"),
    # a seed written 01 is seed 1, of the test split; the child runs would fail at once on --bogus were it let through
    ("adapt_variance", ["--seeds", "01", "3", "--only", "default", "--offsets", "0", "--quality-args=--bogus"],
     "seeds 1 and 2 are the benchmark's test split"),
    ("objective_check", ["--threads", "0"], "argument --threads: '0' is not a positive whole number"),
    ("trust_signal", ["--photos", "9"], "argument --photos: invalid choice: 9"),
    ("group_routing", ["--threads", "0"], "argument --threads: '0' is not a positive whole number"),
    ("tiling_seams", ["--threads", "0"], "argument --threads: '0' is not a positive whole number"),
    ("model_choice", ["--crop", "0"], "argument --crop: '0' is not a positive whole number"),
    ("stage1_eval", ["--threads", "-1"], "argument --threads: '-1' is not a positive whole number"),
])
def test_bad_arguments_stop_with_a_usage_line(script, args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _load(script).main([*args, "--out", str(tmp_path / "x.json")])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("script, args, default", [
    ("quality", [], "quality.json"), ("quality_sweep", ["--round4", "--join"], "quality_dev_sweep_round4.json"),
    ("adapt_variance", [], "adapt_variance.json"), ("detail_flag", [], "detail_flag.json"),
    ("trust_signal", [], "trust_signal.json"), ("group_signal", [], "group_signal.json"),
    ("objective_check", [], "objective_check.json"), ("group_routing", [], "group_routing.json"),
    ("adapt_trajectory", ["--adapt-seed-offset", "1"], "adapt_trajectory_sharpen-jpeg420_seed3_adapt103.json"),
    ("stage1_eval", [], "stage1_eval.json"), ("stage1_modconv_speed", [], "stage1_modconv_speed.json"),
    ("stage1_trunk_choice", [], "stage1_trunk_choice.json"), ("cpu_memory_format", [], "cpu_memory_format.json"),
    ("tiling_layout", [], "tiling_layout_cpu.json"), ("tiling_seams", [], "tiling_seams_cpu.json"),
    ("model_choice", [], "model_choice_cpu.json"),
])
def test_scripts_keep_their_committed_default_output_without_force(script, args, default, capsys):
    """Without --out, a script whose default file exists stops before any work: the committed result stays."""
    committed = ROOT / "benchmarks" / "results" / default
    before = committed.read_bytes()
    with pytest.raises(SystemExit) as exc:
        _load(script).main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"benchmarks/results/{default} exists" in err and "--force" in err
    assert committed.read_bytes() == before


def test_model_choice_records_each_models_real_scores(tmp_path):
    """benchmarks/model_choice.py at a small crop: every packaged model and bicubic on every demo photo, the scores
    those images really have, and each network's compute."""
    from lway_rt.demo import PHOTOS, make_lr, sample_photo
    from lway_rt.io.images import resize_bicubic
    from lway_rt.metrics import psnr_y

    assert _load("model_choice").main(["--crop", "128", "--out", str(tmp_path / "m.json")]) == 0
    got = json.loads((tmp_path / "m.json").read_text())
    assert {r["model"] for r in got["rows"]} == {"bicubic", *_load("model_choice").MODELS}
    assert len(got["rows"]) == 5 * len(PHOTOS)
    hr = sample_photo("chelsea", 128)
    bic = next(r for r in got["rows"] if r["model"] == "bicubic" and r["photo"] == "chelsea")
    assert bic["psnr_y"] == pytest.approx(psnr_y(resize_bicubic(make_lr(hr, 4), (128, 128)), hr, crop_border=4), abs=1e-3)
    assert got["mean"]["realsr-df2k-x4"]["macs_per_input_pixel"] > 20 * got["mean"]["realesr-animevideov3"][
        "macs_per_input_pixel"]


def test_default_output_is_replaced_only_when_asked(tmp_path, monkeypatch, capsys):
    """detail_flag.py in a copy of the tree: its existing default output is kept; --force, or naming it with --out,
    replaces it."""
    import shutil

    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    shutil.copy(ROOT / "benchmarks" / "results" / "quality_patch48.json", results)
    (results / "detail_flag.json").write_text("kept\n")
    script = _load("detail_flag")
    monkeypatch.setattr(script, "ROOT", tmp_path)
    with pytest.raises(SystemExit) as exc:
        script.main([])
    assert exc.value.code == 2 and "--force" in capsys.readouterr().err
    assert (results / "detail_flag.json").read_text() == "kept\n"
    script.main(["--force"])
    assert json.loads((results / "detail_flag.json").read_text())["files"] == ["quality_patch48.json"]
    (results / "detail_flag.json").write_text("kept\n")
    script.main(["--out", str(results / "detail_flag.json")])
    assert json.loads((results / "detail_flag.json").read_text())["crops"] > 0


def test_output_rule_lets_a_sweep_resume_its_own_file(tmp_path):
    """quality_sweep.py's --reuse of its own (default) output carries the run on: no --force needed for that file."""
    import argparse

    bench_args = _load("_args")
    ap = argparse.ArgumentParser()
    bench_args.add_out(ap, None)
    default = tmp_path / "sweep.json"
    assert bench_args.resolve_out(ap, ap.parse_args([]), default) == default  # nothing there yet
    default.write_text("{}")
    with pytest.raises(SystemExit):
        bench_args.resolve_out(ap, ap.parse_args([]), default)
    with pytest.raises(SystemExit):
        bench_args.resolve_out(ap, ap.parse_args([]), default, resumed=[str(tmp_path / "other.json")])
    assert bench_args.resolve_out(ap, ap.parse_args([]), default, resumed=[str(default)]) == default
    assert bench_args.resolve_out(ap, ap.parse_args(["--force"]), default) == default


def test_results_are_written_whole_or_not_at_all(tmp_path):
    """write_json: strict JSON; a value that cannot be written leaves the earlier file as it was and no temporary."""
    bench_args = _load("_args")
    out = tmp_path / "r.json"
    bench_args.write_json(out, {"x": float("nan"), "y": [float("inf"), 1.5]})
    assert json.loads(out.read_text()) == {"x": None, "y": [None, 1.5]}
    with pytest.raises(TypeError):
        bench_args.write_json(out, {"x": object()})
    assert json.loads(out.read_text())["y"] == [None, 1.5] and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_the_merge_and_markdown_forms_say_their_usage():
    """quality.py --help names --merge and --markdown (57J-5); --markdown without its file said 'unrecognized
    arguments: --markdown' (57K-7)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "quality.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    text = " ".join(out.stdout.split())  # (argparse wraps the epilog)
    assert out.returncode == 0 and "--merge OUT PART" in text and "--markdown RESULT.json" in text, text
    for args, usage in ((["--markdown"], "usage: quality.py --markdown RESULT.json"),
                        (["--merge", "x.json"], "usage: quality.py --merge OUT PART [PART ...]")):
        res = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True)
        assert res.returncode == 1 and res.stderr.strip() == usage, (args, res.stderr)
