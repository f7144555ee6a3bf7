"""The optional supervised term of stage 2 (LWay's supervised half): synthetic pairs and the step.

Pairs are a pure function of (photos, seed, iteration); the term adds ``sup_weight * L1(S(LR), HR)``
to the self-supervised loss, identically in the plain and the fast step, and moves only S.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.embed import prepare_stage1
from lway_rt.adapt.fast import FastReconstructor, fast_adapt_step
from lway_rt.adapt.patches import AdaptImage, sample_batch
from lway_rt.adapt.step import adapt_step
from lway_rt.adapt.synthetic import SyntheticPairs, load_clean_photos
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.errors import InputError, Interrupted


@pytest.fixture(scope="module")
def stage1():
    from lway_rt.degae import Stage1

    return Stage1.fresh(embed_dim=16, width=8, blocks=2, head_widths=(16, 16, 16), seed=1).freeze()


@pytest.fixture(scope="module")
def photos(hr_crop):
    """Two small 'clean photos' (tensors) cut from the astronaut crop."""
    t = torch.from_numpy(hr_crop.copy()).permute(2, 0, 1).float() / 255
    return [t[:, :160, :200].contiguous(), t[:, 96:, 64:].contiguous()]


@pytest.fixture()
def images(hr_crop):
    lr = torch.from_numpy(hr_crop[::4, ::4].copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)  # 64x64
    return [AdaptImage.from_lr("a", lr, 4)]


def _tiny_s(seed=0):
    torch.manual_seed(seed)
    return SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).eval()


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_synthetic_pairs_are_a_function_of_seed_and_iteration(photos):
    pairs = SyntheticPairs(photos, n=3, patch=16, scale=4, seed=5)
    lr, hr = pairs.batch(7)
    assert lr.shape == (3, 3, 16, 16) and hr.shape == (3, 3, 64, 64)
    assert lr.dtype == hr.dtype == torch.float32
    assert 0 <= float(lr.min()) and float(lr.max()) <= 1
    assert torch.equal(lr, (lr * 255).round() / 255)  # 8-bit levels
    again = SyntheticPairs(photos, n=3, patch=16, scale=4, seed=5).batch(7)  # a fresh object: as after a resume
    assert torch.equal(again[0], lr) and torch.equal(again[1], hr)
    other_it, other_seed = pairs.batch(8), SyntheticPairs(photos, n=3, patch=16, scale=4, seed=6).batch(7)
    assert not torch.equal(other_it[1], hr) and not torch.equal(other_seed[1], hr)
    # LR is the (degraded) antialiased downscale of HR: close to it at low frequencies
    from lway_rt.adapt.patches import bicubic_down

    assert float((bicubic_down(hr, 4) - lr).abs().mean()) < 0.25


def test_classic_order_blurs_at_hr_then_degrades_at_lr(photos):
    """sup_degradation='classic': the same HR crops and draws as 'lr', but the blur acts on the HR
    crop before the downscale, so LR differs and is usually sharper than blurring at LR size."""
    from lway_rt.degae.degrade import Degradation, Op, apply_degradation
    from lway_rt.adapt.patches import bicubic_down
    from lway_rt.adapt.synthetic import synthetic_pairs

    a = synthetic_pairs(np.random.default_rng(3), photos, 6, 16, 4, "lr")
    b = synthetic_pairs(np.random.default_rng(3), photos, 6, 16, 4, "classic")
    assert torch.equal(a[1], b[1])  # same HR crops
    assert b[0].shape == (6, 3, 16, 16) and torch.equal(b[0], (b[0] * 255).round() / 255)
    assert not torch.equal(a[0], b[0])
    again = synthetic_pairs(np.random.default_rng(3), photos, 6, 16, 4, "classic")
    assert torch.equal(again[0], b[0])
    # the blur of one draw: at HR (classic) it leaves the LR closer to the clean downscale than at LR
    blur = Degradation((Op("blur_iso", {"sigma": 2.0}),), 0)
    hr = photos[0][:, :64, :64]
    clean = bicubic_down(hr[None], 4)[0]
    at_lr = apply_degradation(clean, blur)
    at_hr = bicubic_down(apply_degradation(hr, blur)[None], 4)[0]
    assert (at_hr - clean).abs().mean() < (at_lr - clean).abs().mean()
    with pytest.raises(InputError, match="sup_degradation"):
        AdaptConfig(sup_degradation="hr")


def test_stage1_pairs_are_r_with_a_drawn_images_embedding(stage1, photos, hr_crop):
    """sup_degradation='stage1': each pair's LR is R(HR crop) with the embedding of the run image drawn for it,
    then x4 bicubic down and 8-bit; the images drawn are a function of (seed, iteration) alone."""
    from lway_rt.adapt.patches import bicubic_down
    from lway_rt.adapt.synthetic import stage1_degraded

    lr = torch.from_numpy(hr_crop[::4, ::4].copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    ims = [AdaptImage.from_lr("a", lr, 4), AdaptImage.from_lr("b", lr.flip(-1).mul(0.6), 4)]
    recon, emb = prepare_stage1(stage1, [im.up for im in ims])
    assert not torch.equal(emb[0], emb[1])
    pairs = SyntheticPairs(photos, n=6, patch=16, scale=4, seed=5, order="stage1")
    clean_lr, hr = pairs.batch(3)
    assert torch.allclose(clean_lr, bicubic_down(hr, 4).clamp(0, 1), atol=0.5 / 255)  # no classic degradation
    idx = pairs.images(3, len(ims))
    assert idx.shape == (6,) and idx.dtype == torch.long and set(idx.tolist()) <= {0, 1}
    assert torch.equal(SyntheticPairs(photos, n=6, patch=16, scale=4, seed=5, order="stage1").images(3, 2), idx)
    assert any(not torch.equal(pairs.images(it, 2), idx) for it in range(4, 9))
    for target in ("sr", "lr-recon"):
        out = stage1_degraded(FastReconstructor(stage1.reconstructor, emb), hr, idx, 4, target)
        assert out.shape == (6, 3, 16, 16) and torch.equal(out, (out * 255).round() / 255)
        for i in range(6):  # pair by pair through the reference R, with that pair's image alone
            one = torch.tensor([int(idx[i])])
            with torch.no_grad():
                ref = (recon(bicubic_down(hr[i:i + 1], 4).clamp(0, 1), one) if target == "lr-recon"
                       else bicubic_down(recon(hr[i:i + 1], one), 4))
            assert (out[i] - ref[0].clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-4
        # the other image's embedding gives other pairs: the draw matters
        assert not torch.equal(out, stage1_degraded(FastReconstructor(stage1.reconstructor, emb), hr, 1 - idx, 4, target))
    # only the lway loss loads R
    with pytest.raises(InputError, match="stage1"):
        AdaptConfig(loss="naive", sup_weight=1.0, sup_degradation="stage1")
    AdaptConfig(loss="naive", sup_weight=0.0, sup_degradation="stage1")  # no pairs: nothing to degrade


def test_loop_with_stage1_pairs_trains_and_resumes_to_the_uninterrupted_run(stage1, cli_files, tmp_path, hr_crop):
    from lway_rt.adapt._imageio import from_array
    from lway_rt.adapt.loop import adapt_images
    from lway_rt.io.store import load_model

    desc = load_model(str(cli_files / "tiny.safetensors"))
    inputs = [from_array("a", hr_crop[::4, ::4].astype(np.float32) / 255),
              from_array("b", hr_crop[1::4, 2::4].astype(np.float32)[:, ::-1] / 255 * 0.7)]
    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5, snapshot_every=100,
                      sup_weight=0.5, sup_data=str(cli_files / "clean"), sup_degradation="stage1", anchor_weight=0.0)
    full = adapt_images(inputs, desc, cfg, tmp_path / "full", stage1=stage1, write_outputs=False)
    hist = full.report["history"]
    assert len(hist) == 12 and all(math.isfinite(h["sup"]) and h["sup"] > 0 for h in hist)
    classic = adapt_images(inputs, desc, cfg.replace(sup_degradation="classic"), tmp_path / "classic", stage1=stage1,
                           write_outputs=False)
    assert [h["sup"] for h in classic.report["history"]] != [h["sup"] for h in hist]

    def interrupt(msg):
        if msg.startswith("iteration 10/"):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        adapt_images(inputs, desc, cfg, tmp_path / "part", stage1=stage1, log=interrupt, write_outputs=False)
    resumed = adapt_images(inputs, desc, cfg, tmp_path / "part", stage1=stage1, resume=True, write_outputs=False)
    assert resumed.report["resumed_from"] == [10]
    assert [(h["loss"], h["sup"]) for h in resumed.report["history"]] == [(h["loss"], h["sup"]) for h in hist]


def test_clean_photos_from_folder_and_errors(tmp_path, hr_crop):
    (tmp_path / "p").mkdir()
    Image.fromarray(hr_crop).save(tmp_path / "p" / "a.png")
    held = load_clean_photos(tmp_path / "p", 128)
    assert [tuple(t.shape) for t in held] == [(3, 256, 256)] and held[0].dtype == torch.uint8  # a quarter of float32
    floats = [held[0].float() / 255]  # the same photos held as float give the same pairs, to the bit
    for order in ("lr", "classic"):
        a = SyntheticPairs(held, n=2, patch=16, scale=4, seed=3, order=order).batch(4)
        b = SyntheticPairs(floats, n=2, patch=16, scale=4, seed=3, order=order).batch(4)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(InputError, match="--sup-data .* is not a folder"):
        load_clean_photos(tmp_path / "missing", 128)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        load_clean_photos(tmp_path / "empty", 128)
    with pytest.raises(InputError, match="smaller than the 512-px HR crop"):
        load_clean_photos(tmp_path / "p", 512)
    # no folder: stage 1's bundled training photos
    from lway_rt.degae.data import BUNDLED_TRAIN

    pairs = SyntheticPairs.from_config(AdaptConfig(sup_weight=1.0, patch_size=16, batch_size=3, seed=2), 4)
    assert len(pairs.photos) == len(BUNDLED_TRAIN) and (pairs.n, pairs.patch, pairs.seed) == (3, 16, 2)


def test_supervised_term_adds_to_the_loss_in_both_steps_and_moves_only_s(stage1, images, photos):
    recon, emb = prepare_stage1(stage1, [im.up for im in images])
    fast_recon = FastReconstructor(stage1.reconstructor, emb)
    batch = sample_batch(images, 2, 16, 4, torch.Generator().manual_seed(0))
    batch.sup_lr, batch.sup_hr = SyntheticPairs(photos, n=2, patch=16, scale=4, seed=0).batch(1)
    w = 0.7
    results = {}
    for weight in (0.0, w):
        cfg = AdaptConfig(lr=1e-3, patch_size=16, batch_size=2, sup_weight=weight)
        for name, step in (("plain", lambda s, o, c: adapt_step(s, o, batch, recon, c)),
                           ("fast", lambda s, o, c: fast_adapt_step(s, o, batch, fast_recon, c))):
            s = _tiny_s()
            opt = torch.optim.SGD(s.parameters(), lr=cfg.lr)
            e_before, r_before = _snapshot(stage1.encoder), _snapshot(stage1.reconstructor)
            m = step(s, opt, cfg)
            assert not m["skipped"], m
            results[name, weight] = (m, _snapshot(s))
            for before, module in ((e_before, stage1.encoder), (r_before, stage1.reconstructor)):
                assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
                assert all(p.grad is None for p in module.parameters())
    start = _snapshot(_tiny_s())
    for name in ("plain", "fast"):
        off, on = results[name, 0.0][0], results[name, w][0]
        assert "sup" not in off
        assert math.isfinite(on["sup"]) and on["sup"] > 0
        assert on["l1"] == pytest.approx(off["l1"], rel=1e-6)  # same self-supervised part on the same batch
        assert on["loss"] == pytest.approx(off["loss"] + w * on["sup"], rel=1e-6)
        # the term has a gradient: S moves differently with it
        moved = results[name, w][1]
        assert any(not torch.equal(moved[k], results[name, 0.0][1][k]) for k in start)
        assert any(not torch.equal(moved[k], start[k]) for k in start)
    plain, fast = results["plain", w][0], results["fast", w][0]
    assert fast["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert fast["sup"] == pytest.approx(plain["sup"], rel=1e-5)
    assert fast["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)


def test_supervised_term_is_skipped_without_pairs_or_weight(images, photos):
    s = _tiny_s(1)
    batch = sample_batch(images, 2, 16, 4, torch.Generator().manual_seed(1))
    cfg = AdaptConfig(patch_size=16, batch_size=2, loss="naive", sup_weight=1.0)
    opt = torch.optim.SGD(s.parameters(), lr=1e-3)
    assert "sup" not in adapt_step(s, opt, batch, None, cfg)  # no pairs in the batch: nothing to add
    batch.sup_lr, batch.sup_hr = SyntheticPairs(photos, n=1, patch=16, scale=4, seed=0).batch(1)
    assert "sup" not in adapt_step(s, opt, batch, None, cfg.replace(sup_weight=0.0))


def test_supervised_only_control_trains_s_on_the_pairs_alone(images, photos):
    """loss='supervised' (the control for the supervised term): no self-supervised part, the same
    total in both step paths, and S moves; it is refused without a positive sup_weight."""
    with pytest.raises(InputError, match="sup_weight"):
        AdaptConfig(loss="supervised", sup_weight=0.0)
    batch = sample_batch(images, 2, 16, 4, torch.Generator().manual_seed(2))
    batch.sup_lr, batch.sup_hr = SyntheticPairs(photos, n=2, patch=16, scale=4, seed=0).batch(3)
    cfg = AdaptConfig(lr=1e-3, patch_size=16, batch_size=2, loss="supervised", sup_weight=0.5)
    out = {}
    for name, step in (("plain", adapt_step), ("fast", fast_adapt_step)):
        s = _tiny_s(2)
        start = _snapshot(s)
        m = step(s, torch.optim.SGD(s.parameters(), lr=cfg.lr), batch, None, cfg)
        assert m["l1"] == 0.0 and m["sup"] > 0
        assert m["loss"] == pytest.approx(0.5 * m["sup"], rel=1e-6)
        assert any(not torch.equal(v, start[k]) for k, v in _snapshot(s).items())
        out[name] = m
    assert out["fast"]["loss"] == pytest.approx(out["plain"]["loss"], rel=1e-5)


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), True, "1"])
def test_config_rejects_bad_sup_weight(value):
    with pytest.raises(InputError, match="sup_weight"):
        AdaptConfig(sup_weight=value)


def test_config_records_sup_settings():
    with pytest.raises(InputError, match="sup_batch"):
        AdaptConfig(sup_batch=0)
    cfg = AdaptConfig(sup_weight=0.5, sup_data="photos", sup_batch=2)
    assert cfg.sup_batch_size == 2 and AdaptConfig(batch_size=3).sup_batch_size == 3
    d = json.loads(cfg.recipe_json())  # the resume fingerprint and checkpoint metadata hash this
    assert (d["sup_weight"], d["sup_data"], d["sup_batch"]) == (0.5, "photos", 2)
    assert AdaptConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.recipe_json() != cfg.replace(sup_weight=0.25).recipe_json()


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, hr_crop):
    from lway_rt.io.weights import save_safetensors

    root = tmp_path_factory.mktemp("adapt_sup_cli")
    save_safetensors(root / "tiny.safetensors", _tiny_s().state_dict(), {"name": "tiny"})
    (root / "lr").mkdir()
    Image.fromarray(hr_crop[:160:4, :192:4]).save(root / "lr" / "rgb.png")  # 40x48
    (root / "clean").mkdir()
    Image.fromarray(hr_crop).save(root / "clean" / "photo.png")
    return root


def test_cli_sup_weight_end_to_end(cli_files, tmp_path):
    from lway_rt.cli import main

    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["adapt", str(cli_files / "lr"), "-m", str(cli_files / "tiny.safetensors"), "-o",
                                    str(out), "--loss", "naive", "--iterations", "3", "--patch-size", "16",
                                    "--batch-size", "2", "--sup-weight", "0.5", "--sup-data", str(cli_files / "clean"),
                                    "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["sup_weight"] == 0.5 and report["config"]["sup_data"] == str(cli_files / "clean")
    assert json.loads((out / "config.json").read_text())["sup_weight"] == 0.5
    assert report["supervised"]["photos"] == 1 and report["supervised"]["pairs_per_step"] == 2
    assert len(report["history"]) == 3
    for rec in report["history"]:
        assert math.isfinite(rec["sup"]) and rec["sup"] > 0 and rec["loss"] > 0.5 * rec["sup"]
    from lway_rt.io.store import load_model

    assert json.loads(load_model(str(out / "adapted.safetensors")).metadata["recipe"])["sup_weight"] == 0.5


def test_cli_bad_sup_data_is_one_line_error(cli_files, tmp_path):
    from lway_rt.cli import main

    res = CliRunner().invoke(main, ["adapt", str(cli_files / "lr"), "-m", str(cli_files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "o"), "--loss", "naive", "--iterations", "2", "--patch-size", "16",
                                    "--sup-weight", "1", "--sup-data", str(tmp_path / "nowhere")])
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and "--sup-data" in res.output and "not a folder" in res.output, res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(main, ["adapt", str(cli_files / "lr"), "-m", str(cli_files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "o2"), "--loss", "naive", "--sup-weight", "-1"])
    assert res.exit_code == 1 and res.output.startswith("error: --sup-weight must be"), res.output


def test_loop_with_supervised_term_resumes_to_the_uninterrupted_run(cli_files, tmp_path, hr_crop):
    from lway_rt.adapt._imageio import from_array
    from lway_rt.adapt.loop import CHECKPOINT, adapt_images
    from lway_rt.io.store import load_model

    desc = load_model(str(cli_files / "tiny.safetensors"))
    inputs = [from_array("a", hr_crop[::4, ::4].astype(np.float32) / 255)]
    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, loss="naive", checkpoint_every=5,
                      snapshot_every=100, sup_weight=0.5, sup_data=str(cli_files / "clean"))
    full = adapt_images(inputs, desc, cfg, tmp_path / "full", write_outputs=False)

    def interrupt(msg):
        if msg.startswith("iteration 10/"):
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        adapt_images(inputs, desc, cfg, tmp_path / "part", log=interrupt, write_outputs=False)
    assert (tmp_path / "part" / CHECKPOINT).exists()
    with pytest.raises(InputError, match=r"other settings: --sup-weight \S+ \(this command: 0.25\)"):
        adapt_images(inputs, desc, cfg.replace(sup_weight=0.25), tmp_path / "part", resume=True, write_outputs=False)
    resumed = adapt_images(inputs, desc, cfg, tmp_path / "part", resume=True, write_outputs=False)
    assert resumed.report["resumed_from"] == [10]
    assert [(h["loss"], h["sup"]) for h in full.report["history"]] == \
        [(h["loss"], h["sup"]) for h in resumed.report["history"]]
    off = adapt_images(inputs, desc, cfg.replace(sup_weight=0.0), tmp_path / "off", write_outputs=False)
    assert "sup" not in off.report["history"][0] and off.report["supervised"] is None
    # same patches (the pairs draw from their own stream), so the self-supervised loss starts equal
    assert full.report["history"][0]["loss"] > off.report["history"][0]["loss"]


def test_supervised_control_with_an_anchor_runs_to_the_end(cli_files, tmp_path, hr_crop):
    """The drift guard's yardstick leaves the anchor out: for the supervised control it is 0 at the
    start, and an anchor-including yardstick called every later check a jump and stopped the run."""
    from lway_rt.adapt._imageio import from_array
    from lway_rt.adapt.loop import adapt_images
    from lway_rt.io.store import load_model

    desc = load_model(str(cli_files / "tiny.safetensors"))
    inputs = [from_array("a", hr_crop[::4, ::4].astype(np.float32) / 255)]
    cfg = AdaptConfig(iterations=30, patch_size=16, batch_size=2, lr=1e-3, loss="supervised", guard_every=5,
                      sup_weight=1.0, anchor_weight=0.2, sup_data=str(cli_files / "clean"))
    res = adapt_images(inputs, desc, cfg, tmp_path / "o", write_outputs=False)
    assert res.report["stopped"] == "completed" and res.report["rollbacks"] == 0
    assert all("anchor" in h and "sup" in h for h in res.report["history"])
    assert any(not torch.equal(v, desc.model.state_dict()[k]) for k, v in res.model.state_dict().items())


def test_a_config_file_takes_groups_as_the_command_line_does_and_knows_a_summary_report(tmp_path):
    """groups = "AUTO" or "3" in --config was refused though --groups AUTO / 3 work; a per-image or per-group run's
    report.json given as --config listed some 70 unknown keys instead of pointing at the config.json beside it."""
    from lway_rt.adapt.config import load_toml_defaults

    for word, value in (("AUTO", "auto"), ("Auto", "auto"), ("3", 3)):
        (tmp_path / "g.toml").write_text(f'[adapt]\nmode = "per-group"\ngroups = "{word}"\n')
        assert AdaptConfig.from_dict(load_toml_defaults(tmp_path / "g.toml")).groups == value
    (tmp_path / "g.toml").write_text('[adapt]\nmode = "per-group"\ngroups = "some"\n')
    with pytest.raises(InputError, match="groups must be a positive number of groups or auto, got 'some'"):
        AdaptConfig.from_dict(load_toml_defaults(tmp_path / "g.toml"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps({"format": "lway_rt.adapt-runs/1", "mode": "per-group", "runs": []}))
    (run / "config.json").write_text(json.dumps({"mode": "per-group"}))
    with pytest.raises(InputError, match=r"is a run's report, not its settings: pass the config.json beside it"):
        load_toml_defaults(run / "report.json")
