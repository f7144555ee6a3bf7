"""The adaptation driver: NaN recovery, drift guard, ground-truth stopping, resume reproducibility."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lway_rt.adapt._imageio import from_array
from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.loop import CHECKPOINT, adapt_images
from lway_rt.archs.registry import detect
from lway_rt.archs.descriptor import ModelDescriptor
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.errors import InputError, Interrupted
from lway_rt.io.images import resize_bicubic
from lway_rt.io.weights import load_state_file

class FaultySRVGG(SRVGGNetCompact):
    """A real SRVGGNetCompact whose training forwards return NaN on chosen calls (fault injection)."""

    def __init__(self, bad_calls, **kw):
        super().__init__(**kw)
        self.bad_calls = set(bad_calls)
        self.calls = 0

    def forward(self, x):
        y = super().forward(x)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.bad_calls or (-1 in self.bad_calls and self.calls >= min(self.bad_calls - {-1})):
                return y * float("nan")
        return y


def _desc(model):
    spec = detect(model.state_dict())
    return ModelDescriptor(model=model.eval(), spec=spec, name="tiny")


def _tiny(seed=0, cls=SRVGGNetCompact, **kw):
    torch.manual_seed(seed)
    return cls(num_feat=8, num_conv=2, upscale=4, **kw)


@pytest.fixture(scope="module")
def stage1():
    from lway_rt.degae import Stage1

    return Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=2).freeze()


@pytest.fixture()
def inputs(hr_crop):
    return [from_array("face", hr_crop[:160:4, :160:4]), from_array("suit", hr_crop[96::4, 64::4])]


def _weights(result_model_state):
    return {k: v.clone() for k, v in result_model_state.items()}



def _interrupt_at(it, inputs, model_seed, cfg, out, stage1):
    """Run ``adapt_images`` into ``out`` and stop it with Ctrl-C (KeyboardInterrupt) at iteration ``it``'s log line: it
    stops with ``Interrupted``, naming the checkpoint it keeps and how to continue."""
    def interrupt(msg):
        if msg.startswith(f"iteration {it}/"):
            raise KeyboardInterrupt

    last = it - it % cfg.checkpoint_every
    kept = (rf"the checkpoint of iteration {last} is kept in .*checkpoint\.pt: run the same command with --resume" if last
            else rf"no checkpoint had been written yet \(one every {cfg.checkpoint_every} steps\): run the command again")
    with pytest.raises(Interrupted, match=rf"adaptation interrupted at iteration {it}; {kept}"):
        adapt_images(inputs, _desc(_tiny(model_seed)), cfg, out, stage1=stage1, log=interrupt)


def _assert_same_weights(a_path, b_path) -> dict:
    """The two written weight files hold bit-identical tensors; returns the first's metadata."""
    a, meta = load_state_file(a_path)
    b, _ = load_state_file(b_path)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    return meta


def test_transient_nan_is_skipped_and_lowers_lr(tmp_path, inputs, stage1):
    desc = _desc(_tiny(cls=FaultySRVGG, bad_calls={3, 4}))
    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, guard_every=4)
    res = adapt_images(inputs, desc, cfg, tmp_path / "out", stage1=stage1)
    rep = res.report
    assert rep["stopped"] == "completed" and rep["iterations_run"] == 12
    skipped = [h["it"] for h in rep["history"] if h["skipped"]]
    assert skipped == [3, 4]
    # the report on disk is strict JSON: a skipped step's loss was written as NaN / Infinity, which strict readers
    # (JSON.parse) refuse
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert [h["loss"] for h in on_disk["history"] if h["skipped"]] == [None, None]
    assert rep["history"][-1]["lr"] == pytest.approx(1e-3 / 4)
    assert any("non-finite loss" in e for e in rep["events"])
    state, meta = load_state_file(res.weights)
    assert all(torch.isfinite(v).all() for v in state.values())
    assert meta["base_sha256"] == rep["model"]["base_sha256"]


def test_a_run_whose_last_steps_are_skipped_still_judges_the_weights_it_writes(tmp_path, inputs, stage1):
    """Skipped last steps (a streak under --max-bad-steps) ended the loop before its final checks: the weights written,
    those before the streak, were never judged by the drift guard nor, with --gt, scored (an earlier evaluation won
    even where these were better), and the contact sheet had no snapshot of them."""
    gt = {img.name: np.kron(img.rgb, np.ones((4, 4, 1), np.float32)) for img in inputs}
    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, guard_every=4, eval_every=4,
                      snapshot_every=4)
    res = adapt_images(inputs, _desc(_tiny(cls=FaultySRVGG, bad_calls={11, 12})), cfg, tmp_path / "out",
                       stage1=stage1, gt=gt)
    rep = res.report
    assert [h["it"] for h in rep["history"] if h["skipped"]] == [11, 12] and rep["stopped"] == "completed", rep["events"]
    assert [v["it"] for v in rep["fixed_patch_loss"]] == [0, 4, 8, 10], rep["fixed_patch_loss"]
    assert [e["it"] for e in rep["evals"]] == [0, 4, 8, 10], rep["evals"]
    assert rep["final_iteration"] in [e["it"] for e in rep["evals"]]  # the weights written are ones scored


def test_skip_message_gives_the_rate_the_next_step_uses_under_cosine(tmp_path, inputs, stage1):
    desc = _desc(_tiny(cls=FaultySRVGG, bad_calls={3}))
    cfg = AdaptConfig(iterations=8, patch_size=16, batch_size=2, lr=1e-3, guard_every=4, lr_schedule="cosine")
    rep = adapt_images(inputs, desc, cfg, tmp_path / "out", stage1=stage1, write_outputs=False).report
    msg = next(e for e in rep["events"] if "non-finite loss" in e)
    said = float(msg.split("lr now ")[1].split()[0])
    assert said == pytest.approx(rep["history"][3]["lr"], rel=1e-2)  # step 4, the one after the skip
    assert rep["history"][3]["lr"] < 1e-3 / 2  # halved, and the schedule's factor below 1 on top
    assert "cosine" in msg


def test_persistent_nan_stops_with_last_good_weights(tmp_path, inputs, stage1):
    cfg = AdaptConfig(iterations=30, patch_size=16, batch_size=2, lr=1e-3, max_bad_steps=3, guard_factor=0)
    faulty = adapt_images(inputs, _desc(_tiny(cls=FaultySRVGG, bad_calls={6, -1})), cfg, tmp_path / "a", stage1=stage1)
    rep = faulty.report
    assert rep["iterations_run"] == 8 and "non-finite loss or gradient for 3 steps" in rep["stopped"]
    assert rep["final_iteration"] == 5
    # the weights written are exactly those after 5 good steps of the same run
    clean = adapt_images(inputs, _desc(_tiny()), cfg.replace(iterations=5), tmp_path / "b", stage1=stage1)
    _assert_same_weights(faulty.weights, clean.weights)


def test_persistent_nan_after_a_blow_up_keeps_weights_the_drift_guard_passes(tmp_path, inputs, stage1):
    """Two huge steps (lr 0.9) leave finite but useless weights, then every loss is NaN: the stop must not write the
    weights before the streak as "good" unjudged (the drift guard had not run since iteration 0)."""
    cfg = AdaptConfig(iterations=30, patch_size=16, batch_size=2, lr=0.9, max_bad_steps=3)
    base = _tiny()
    res = adapt_images(inputs, _desc(_tiny(cls=FaultySRVGG, bad_calls={3, -1})), cfg, tmp_path / "a", stage1=stage1)
    rep = res.report
    assert "weights of iteration 2 failed the drift guard: rolled back to iteration 0" in rep["stopped"]
    assert rep["final_iteration"] == 0 and rep["rollbacks"] == 1
    assert rep["fixed_patch_loss"][-1]["it"] == 2  # the weights judged are iteration 2's, not the streak's end
    judged = rep["events"][-1]
    # no step follows it, and it is said as judged at the stop, not as a step after the skipped ones (57C2)
    assert judged.startswith("the weights of iteration 2, judged as the run stops: fixed-patch loss") and \
        "lr now" not in judged, judged
    state, _ = load_state_file(res.weights)
    for k, v in base.state_dict().items():
        assert torch.equal(state[k], v), k  # the unadapted weights, not the blown-up ones


def test_drift_guard_rolls_back_a_diverging_run(tmp_path, inputs, stage1):
    cfg = AdaptConfig(iterations=40, patch_size=16, batch_size=2, lr=0.2, guard_every=5, max_bad_steps=20,
                      hf_source="target")
    guarded = adapt_images(inputs, _desc(_tiny(1)), cfg, tmp_path / "g", stage1=stage1, write_outputs=False).report
    free = adapt_images(inputs, _desc(_tiny(1)), cfg.replace(guard_factor=0), tmp_path / "f", stage1=stage1,
                        write_outputs=False).report
    assert guarded["rollbacks"] > 0
    assert any("rolled back" in e for e in guarded["events"])
    best = min(v["loss"] for v in guarded["fixed_patch_loss"])
    g_last = guarded["fixed_patch_loss"][-1]["loss"]
    f_last = free["fixed_patch_loss"][-1]["loss"]
    assert f_last > 2 * best  # without the guard the run drifted away...
    assert guarded["history"][-1]["lr"] < cfg.lr  # ...with it, the lr was lowered after each rollback
    assert g_last < f_last


def test_ground_truth_keeps_the_best_and_stops_on_patience(tmp_path, hr_crop, stage1):
    hr = hr_crop[:128, :128]
    lr = resize_bicubic(hr, (32, 32))
    img = from_array("crop", lr)
    cfg = AdaptConfig(iterations=200, patch_size=16, batch_size=2, lr=0.05, eval_every=5, patience=2, guard_factor=0)
    res = adapt_images([img], _desc(_tiny(2)), cfg, tmp_path / "gt", stage1=stage1,
                       gt={"crop": hr.astype("float32") / 255.0})
    rep = res.report
    evals = rep["evals"]
    assert rep["iterations_run"] < 200 and rep["stopped"].startswith("early stop")
    best = max(evals, key=lambda e: e["psnr"])
    assert rep["final_iteration"] == best["it"]
    assert rep["mean"]["psnr_after"] == pytest.approx(best["psnr"], abs=1e-9)
    assert rep["mean"]["psnr_before"] == pytest.approx(evals[0]["psnr"], abs=1e-9)
    assert rep["images"][0]["after"]["psnr"] >= rep["images"][0]["before"]["psnr"]


def test_resume_reproduces_the_uninterrupted_run(tmp_path, inputs, stage1):
    cfg = AdaptConfig(iterations=16, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5, guard_every=4,
                      snapshot_every=4)
    full = adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "full", stage1=stage1)
    # an interrupted run: Ctrl-C (KeyboardInterrupt) right after iteration 10's checkpoint
    part_dir = tmp_path / "part"
    _interrupt_at(10, inputs, 3, cfg, part_dir, stage1)
    assert (part_dir / CHECKPOINT).exists() and not (part_dir / "adapted.safetensors").exists()
    _interrupt_at(10, inputs, 3, cfg.replace(checkpoint_every=20), tmp_path / "early", stage1)  # before the first one
    assert not (tmp_path / "early" / CHECKPOINT).exists()
    with pytest.raises(InputError, match="--resume"):
        adapt_images(inputs, _desc(_tiny(3)), cfg, part_dir, stage1=stage1)
    with pytest.raises(InputError, match=r"other settings: --lr \S+ \(this command: 0.002\)"):  # the setting named
        adapt_images(inputs, _desc(_tiny(3)), cfg.replace(lr=2e-3), part_dir, stage1=stage1, resume=True)
    # the refusal names what changed: the checkpoint records each input's and each network's hash
    with pytest.raises(InputError, match=rf"made with {inputs[1].name} too \(not in this command's inputs\): rerun"):
        adapt_images(inputs[:1], _desc(_tiny(3)), cfg, part_dir, stage1=stage1, resume=True)
    with pytest.raises(InputError, match=r"made with another model \(its weights differ from this command's\): rerun"):
        adapt_images(inputs, _desc(_tiny(4)), cfg, part_dir, stage1=stage1, resume=True)
    # ground truth, a detail cap or an alpha channel the run did not have: each makes other weights or images (the
    # resume went on without the best-weights choice, kept the uncapped images, kept the stale alpha)
    gt = {img.name: np.kron(img.rgb, np.ones((4, 4, 1), np.float32)) for img in inputs}
    with pytest.raises(InputError, match=r"made with no ground truth \(this command has --gt\): rerun"):
        adapt_images(inputs, _desc(_tiny(3)), cfg, part_dir, stage1=stage1, resume=True, gt=gt)
    with pytest.raises(InputError, match=r"other settings: --detail-cap unset \(this command: 1\): rerun"):
        adapt_images(inputs, _desc(_tiny(3)), cfg.replace(detail_cap=1.0), part_dir, stage1=stage1, resume=True)
    clear = [dataclasses.replace(inputs[0], image=dataclasses.replace(inputs[0].image,
                                                                      alpha=np.ones(inputs[0].size, np.float32))),
             inputs[1]]
    with pytest.raises(InputError, match=rf"made with other pixels or alpha in {inputs[0].name}: rerun"):
        adapt_images(clear, _desc(_tiny(3)), cfg, part_dir, stage1=stage1, resume=True)
    # a checkpoint from before the parts were recorded: the refusal lists what may have changed
    ck_file = part_dir / CHECKPOINT
    original = ck_file.read_bytes()
    ck = torch.load(ck_file, weights_only=True)
    del ck["fingerprint_parts"]
    torch.save(ck, ck_file)
    agree = r"other inputs \(their pixels or alpha\), other ground truth \(--gt, or none\) or its --eval-every, or " \
        r"another model, stage 1 or perceptual weights \(the settings agree\)"
    with pytest.raises(InputError, match=agree):
        adapt_images(clear, _desc(_tiny(3)), cfg, part_dir, stage1=stage1, resume=True)
    ck_file.write_bytes(original)
    resumed = adapt_images(inputs, _desc(_tiny(3)), cfg, part_dir, stage1=stage1, resume=True)
    assert resumed.report["resumed_from"] == [10]
    assert not (part_dir / CHECKPOINT).exists()
    _assert_same_weights(full.weights, resumed.weights)
    assert [h["loss"] for h in full.report["history"]] == [h["loss"] for h in resumed.report["history"]]


def test_a_resume_with_another_snapshot_crop_keeps_the_sheets_window(tmp_path, inputs, stage1):
    """--snapshot-crop is no part of the run, so a resume may give another: the snapshots taken before it showed one
    window and those after it another, side by side under one row. The run's window is kept, and said."""
    from PIL import Image

    cfg = AdaptConfig(iterations=16, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5, snapshot_every=4,
                      snapshot_crop=32)
    full = adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "full", stage1=stage1)
    _interrupt_at(10, inputs, 3, cfg, tmp_path / "part", stage1)
    said = []
    resumed = adapt_images(inputs, _desc(_tiny(3)), cfg.replace(snapshot_crop=24), tmp_path / "part", stage1=stage1,
                           resume=True, log=said.append)
    assert "note: the contact sheet keeps the run's --snapshot-crop 32, the window of the snapshots it took before " \
        "this resume" in said, said
    sheets = [np.asarray(Image.open(r.out_dir / "contact_sheet.png")) for r in (full, resumed)]
    assert sheets[0].shape == sheets[1].shape and np.array_equal(*sheets)


@pytest.mark.parametrize("in_step, signals, at, kept", [(7, 1, 7, 7), (7, 2, 6, 5), (6, 1, 5, 5)])
def test_a_stop_signal_saves_the_step_in_hand_and_a_second_stops_at_once(tmp_path, inputs, stage1, monkeypatch,
                                                                         in_step, signals, at, kept):
    """Under the CLI's signal handlers, a Ctrl-C or SIGTERM in a step let that step finish and saved its state: the run
    resumes from the step it stopped at, as if never stopped (it had lost every step since the last periodic
    checkpoint, up to --checkpoint-every). A second signal stops at once and keeps the last periodic checkpoint, as
    does one in the step after a checkpoint (nothing to lose but the step in hand)."""
    import signal

    import lway_rt.adapt.loop as loop
    from lway_rt.cli import _stop_on_signals
    from lway_rt.errors import STOPS

    cfg = AdaptConfig(iterations=16, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5, guard_every=4,
                      snapshot_every=4)
    full = adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "full", stage1=stage1)
    real, calls = loop.fast_adapt_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == in_step:  # in that step, before its update
            for sig in (signal.SIGTERM, signal.SIGTERM)[:signals]:  # (SIGINT: ignored in a background job)
                signal.raise_signal(sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "fast_adapt_step", step)
    previous = _stop_on_signals()
    try:
        with pytest.raises(Interrupted, match=rf"adaptation interrupted at iteration {at}; the checkpoint of "
                                              rf"iteration {kept} is kept in .*: run the same command with --resume"):
            adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "part", stage1=stage1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        STOPS.clear()
    assert torch.load(tmp_path / "part" / CHECKPOINT, weights_only=True)["st"]["it"] == kept
    monkeypatch.undo()
    resumed = adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "part", stage1=stage1, resume=True)
    assert resumed.report["resumed_from"] == [kept]
    _assert_same_weights(full.weights, resumed.weights)
    assert [h["loss"] for h in full.report["history"]] == [h["loss"] for h in resumed.report["history"]]


def test_a_resumed_run_takes_the_embeddings_and_the_weighing_from_its_checkpoint(tmp_path, inputs, stage1, monkeypatch):
    """A resumed run embedded every input and weighed the unadapted output on each again (minutes for a clip's frames on
    a CPU); the checkpoint holds both (its inputs and stage 1 are checked to be this run's), and the run's weights are
    those of the uninterrupted run."""
    import lway_rt.adapt.loop as loop

    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5)
    assert cfg.anchor_weight > 0 and cfg.anchor_trust > 0  # (the default recipe weighs)
    full = adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "full", stage1=stage1)
    _interrupt_at(10, inputs, 3, cfg, tmp_path / "part", stage1)
    monkeypatch.setattr(loop, "compute_embeddings", lambda *a, **k: pytest.fail("embedded again"))
    monkeypatch.setattr(loop, "trust_losses", lambda *a, **k: pytest.fail("weighed again"))
    said = []
    resumed = adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "part", stage1=stage1, resume=True,
                           log=said.append)
    assert resumed.report["resumed_from"] == [10] and f"took the checkpoint's embeddings of {len(inputs)} image(s)" \
        in said and f"took the checkpoint's weighing of {len(inputs)} image(s)" in said, said
    _assert_same_weights(full.weights, resumed.weights)
    assert resumed.report["images"] == full.report["images"]  # (the trust each input got, among the rest)


def test_images_smaller_than_the_patch_are_refused(tmp_path, hr_crop, stage1):
    imgs = [from_array("big", hr_crop[:64, :64]), from_array("tiny", hr_crop[:12, :20])]
    with pytest.raises(InputError, match=r"tiny is 20x12 px, smaller than the 16-px patch: use --patch-size 12"):
        adapt_images(imgs, _desc(_tiny()), AdaptConfig(patch_size=16), tmp_path / "o", stage1=stage1)
    # no patch size the settings accept would fit: say so instead of offering --patch-size 3
    imgs = [from_array("big", hr_crop[:64, :64]), from_array("sliver", hr_crop[:3, :7])]
    with pytest.raises(InputError, match=r"sliver is 7x3 px, too small to adapt on \(patches are at least 4 px"):
        adapt_images(imgs, _desc(_tiny()), AdaptConfig(patch_size=16), tmp_path / "o", stage1=stage1)
    assert not (tmp_path / "o").exists()


def test_lr_recon_target_embeds_the_lr_itself(tmp_path, inputs, stage1):
    """With target lr-recon, E reads each LR at its own size (R degrades at that scale), once per image."""
    shapes = []
    hook = stage1.encoder.register_forward_pre_hook(lambda mod, args: shapes.append(tuple(args[0].shape[-2:])))
    try:
        cfg = AdaptConfig(iterations=4, patch_size=16, batch_size=2, lr=1e-3, target="lr-recon")
        res = adapt_images(inputs, _desc(_tiny()), cfg, tmp_path / "out", stage1=stage1, write_outputs=False)
    finally:
        hook.remove()
    assert shapes == [im.size for im in inputs]
    assert res.report["iterations_run"] == 4 and res.report["stopped"] == "completed"


def test_strength_writes_the_interpolated_weights(tmp_path, inputs, stage1):
    """strength s writes base + s (adapted - base) of the same run, and its SR images come from those weights."""
    base = _tiny(5)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    cfg = AdaptConfig(iterations=6, patch_size=16, batch_size=2, lr=1e-2, snapshot_every=3)
    full = adapt_images(inputs, _desc(_tiny(5)), cfg, tmp_path / "full", stage1=stage1)
    half = adapt_images(inputs, _desc(_tiny(5)), cfg.replace(strength=0.25), tmp_path / "half", stage1=stage1)
    w_full, _ = load_state_file(full.weights)
    w_half, meta = load_state_file(half.weights)
    moved = 0
    for k, v in w_half.items():
        torch.testing.assert_close(v, base_state[k] + 0.25 * (w_full[k] - base_state[k]), rtol=0, atol=1e-6)
        moved += not torch.equal(v, base_state[k])
    assert moved and '"strength": 0.25' in meta["recipe"]
    assert half.report["config"]["strength"] == 0.25
    # the model that wrote the SR images is the blended one
    assert all(torch.equal(v.cpu(), w_half[k]) for k, v in half.model.state_dict().items())
    with pytest.raises(InputError, match="strength must be in"):
        AdaptConfig(strength=0.0)
    with pytest.raises(InputError, match="strength must be in"):
        AdaptConfig(strength=1.5)


def test_anchor_trust_is_measured_once_and_reported_per_image(tmp_path, inputs, stage1):
    cfg = AdaptConfig(iterations=3, patch_size=16, batch_size=2, lr=1e-3, anchor_trust=2.0, anchor_trust_scope="image")
    res = adapt_images(inputs, _desc(_tiny()), cfg, tmp_path / "out", stage1=stage1, write_outputs=False)
    trust = [im["trust"] for im in res.report["images"]]
    assert len(trust) == len(inputs)
    for t in trust:
        assert 0 < t["anchor_factor"] <= 1
        assert t["anchor_factor"] == pytest.approx(min(1.0, t["loss_bicubic"] / t["loss_unadapted"]) ** 2, rel=1e-3)
    # the default pools the judgement over the run: one factor from the summed losses
    assert AdaptConfig().anchor_trust == 2.0 and AdaptConfig().anchor_trust_scope == "run"
    res = adapt_images(inputs, _desc(_tiny()), cfg.replace(anchor_trust_scope="run"), tmp_path / "run", stage1=stage1,
                       write_outputs=False)
    pooled = [im["trust"] for im in res.report["images"]]
    want = min(1.0, sum(t["loss_bicubic"] for t in pooled) / sum(t["loss_unadapted"] for t in pooled)) ** 2
    assert all(t["anchor_factor"] == pytest.approx(want, rel=1e-3) for t in pooled)
    # the naive loss has no reconstructor to judge with: the plain anchor, nothing reported
    res = adapt_images(inputs, _desc(_tiny()), cfg.replace(loss="naive"), tmp_path / "naive", write_outputs=False)
    assert all("trust" not in im for im in res.report["images"])


def test_ema_writes_the_moving_average_of_the_trajectory(tmp_path, inputs, stage1):
    """--ema d writes avg_k = d avg_(k-1) + (1 - d) theta_k from avg_0 = the base weights, where theta_k are the
    weights the same run without averaging reaches after k steps; training itself is unchanged."""
    base_state = {k: v.clone() for k, v in _tiny(6).state_dict().items()}
    cfg = AdaptConfig(iterations=4, patch_size=16, batch_size=2, lr=1e-2, snapshot_every=2, guard_factor=0)
    plain = [adapt_images(inputs, _desc(_tiny(6)), cfg.replace(iterations=k), tmp_path / f"k{k}", stage1=stage1,
                          write_outputs=False) for k in range(1, 5)]
    avg = {k: v.clone() for k, v in base_state.items()}
    for run in plain:
        for k, v in run.model.state_dict().items():
            avg[k] = 0.5 * avg[k] + 0.5 * v
    ema = adapt_images(inputs, _desc(_tiny(6)), cfg.replace(ema=0.5), tmp_path / "ema", stage1=stage1)
    assert [h["loss"] for h in ema.report["history"]] == [h["loss"] for h in plain[-1].report["history"]]
    written, meta = load_state_file(ema.weights)
    for k, v in written.items():
        torch.testing.assert_close(v, avg[k], rtol=0, atol=1e-6)
    assert not torch.equal(written["body.0.weight"], plain[-1].model.state_dict()["body.0.weight"])
    assert '"ema": 0.5' in meta["recipe"]
    assert all(torch.equal(v.cpu(), written[k]) for k, v in ema.model.state_dict().items())  # it wrote sr/ too
    for bad in (1.0, -0.1, True):
        with pytest.raises(InputError, match="ema must be (in|a number)"):
            AdaptConfig(ema=bad)


def test_resume_with_ema_reproduces_the_uninterrupted_run(tmp_path, inputs, stage1):
    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5, ema=0.9)
    full = adapt_images(inputs, _desc(_tiny(7)), cfg, tmp_path / "full", stage1=stage1)
    _interrupt_at(10, inputs, 7, cfg, tmp_path / "part", stage1)
    resumed = adapt_images(inputs, _desc(_tiny(7)), cfg, tmp_path / "part", stage1=stage1, resume=True)
    assert resumed.report["resumed_from"] == [10]
    _assert_same_weights(full.weights, resumed.weights)


def test_dihedral_augment_changes_the_run_and_resumes_exactly(tmp_path, inputs, stage1):
    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5, augment="dihedral")
    full = adapt_images(inputs, _desc(_tiny(9)), cfg, tmp_path / "full", stage1=stage1)
    plain = adapt_images(inputs, _desc(_tiny(9)), cfg.replace(augment="none"), tmp_path / "plain", stage1=stage1,
                         write_outputs=False)
    assert full.report["history"][0]["loss"] != plain.report["history"][0]["loss"]  # S saw turned patches
    assert full.report["config"]["augment"] == "dihedral"
    _interrupt_at(10, inputs, 9, cfg, tmp_path / "part", stage1)
    resumed = adapt_images(inputs, _desc(_tiny(9)), cfg, tmp_path / "part", stage1=stage1, resume=True)
    assert resumed.report["resumed_from"] == [10]
    _assert_same_weights(full.weights, resumed.weights)  # the turns come from the checkpointed generator


def test_cosine_lr_schedule_scales_each_step_and_resumes_exactly(tmp_path, inputs, stage1):
    """--lr-schedule cosine takes step i (0-based) with lr (1 + cos(pi i / N)) / 2; constant keeps lr; a resumed
    cosine run continues the schedule where it stopped and writes the uninterrupted run's weights."""
    import math

    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5, guard_factor=0)
    const = adapt_images(inputs, _desc(_tiny(8)), cfg, tmp_path / "const", stage1=stage1, write_outputs=False)
    assert [h["lr"] for h in const.report["history"]] == [1e-3] * 12
    cos_cfg = cfg.replace(lr_schedule="cosine")
    full = adapt_images(inputs, _desc(_tiny(8)), cos_cfg, tmp_path / "full", stage1=stage1)
    lrs = [h["lr"] for h in full.report["history"]]
    assert lrs == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * i / 12)) for i in range(12)], rel=1e-12)
    assert lrs[0] == 1e-3 and lrs[-1] < 0.02 * 1e-3
    # same first step (same lr), then the runs part
    assert full.report["history"][0]["loss"] == const.report["history"][0]["loss"]
    assert any(not torch.equal(a, b) for a, b in zip(full.model.state_dict().values(), const.model.state_dict().values()))

    _interrupt_at(10, inputs, 8, cos_cfg, tmp_path / "part", stage1)
    resumed = adapt_images(inputs, _desc(_tiny(8)), cos_cfg, tmp_path / "part", stage1=stage1, resume=True)
    assert resumed.report["resumed_from"] == [10]
    assert [h["lr"] for h in resumed.report["history"]] == lrs
    meta = _assert_same_weights(full.weights, resumed.weights)
    assert '"lr_schedule": "cosine"' in meta["recipe"]
    with pytest.raises(InputError, match="unknown lr_schedule"):
        AdaptConfig(lr_schedule="linear")


def test_progress_lines_give_the_rate_and_the_time_left(tmp_path, inputs, stage1):
    from lway_rt.errors import duration as _duration

    assert [_duration(s) for s in (0.4, 59.6, 200, 3599, 3900)] == ["0 s", "1 min 00 s", "3 min 20 s", "59 min 59 s",
                                                                   "1 h 05 min"]
    lines = []
    cfg = AdaptConfig(iterations=20, patch_size=16, batch_size=1, sup_weight=0.0)
    adapt_images(inputs, _desc(_tiny()), cfg, tmp_path / "o", stage1=stage1, log=lines.append, write_outputs=False)
    steps = [m for m in lines if m.startswith("iteration ")]
    assert [m.split(":")[0] for m in steps] == ["iteration 10/20", "iteration 20/20"]
    assert all(" s/it, about " in m for m in steps) and steps[-1].endswith("about 0 s left")


def test_resume_with_the_perceptual_term_and_its_weights_checked(tmp_path, inputs, stage1, lpips_file):
    weights = lpips_file(tmp_path / "lpips.pth", 0)
    cfg = AdaptConfig(iterations=12, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5, sup_weight=0.0,
                      perceptual="lpips", lpips_weights=(weights,))
    full = adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "full", stage1=stage1)
    assert all(h["perc"] > 0 for h in full.report["history"])
    _interrupt_at(10, inputs, 3, cfg, tmp_path / "part", stage1)
    resumed = adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "part", stage1=stage1, resume=True)
    _assert_same_weights(full.weights, resumed.weights)
    _interrupt_at(10, inputs, 3, cfg, tmp_path / "other", stage1)
    lpips_file(tmp_path / "lpips.pth", 1)  # the same path, other weights: not the run that was interrupted
    with pytest.raises(InputError, match="made with other perceptual-term weights: rerun"):
        adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "other", stage1=stage1, resume=True)


def test_detail_change_is_the_ratio_of_fine_detail_and_flags_images(tmp_path, inputs, stage1):
    from lway_rt.adapt.loop import DETAIL_FLAG, detail_change
    from lway_rt.adapt.patches import AdaptImage
    from lway_rt.adapt.wavelet import detail_energy, haar_dwt2

    x = torch.rand(2, 3, 10, 12)
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    _, ch, cv, cd = haar_dwt2(y[:, None, 1:-1, 1:-1])
    assert torch.allclose(detail_energy(x, border=1), (ch ** 2 + cv ** 2 + cd ** 2).sum(dim=(1, 2, 3)))
    assert torch.allclose(detail_energy(x + 0.3), detail_energy(x), rtol=1e-5)  # a brightness shift is no detail
    from lway_rt.adapt.patches import bicubic_up

    class Soft(torch.nn.Module):  # bicubic x4 at half contrast (inside [0, 1], so no clamp interferes)
        def forward(self, t):
            return 0.25 + 0.5 * bicubic_up(t, 4).clamp(0, 1)

    class Sharper(Soft):  # the same with its deviation from the image mean doubled: 4x the detail energy
        def forward(self, t):
            o = super().forward(t)
            return 2 * o - o.mean(dim=(2, 3), keepdim=True)

    data = [AdaptImage.from_lr(im.name, torch.from_numpy(im.rgb).permute(2, 0, 1)[None], 4) for im in inputs]
    assert detail_change(Soft(), Soft(), data, 4) == [1.0, 1.0]
    assert detail_change(Sharper(), Soft(), data, 4) == pytest.approx([4.0, 4.0], rel=1e-2)  # a few px clamp
    assert detail_change(Soft(), Sharper(), data, 4) == pytest.approx([0.25, 0.25], rel=1e-2)
    cfg = AdaptConfig(iterations=4, patch_size=16, batch_size=2, lr=1e-3, sup_weight=0.0)
    rep = adapt_images(inputs, _desc(_tiny(1)), cfg, tmp_path / "o", stage1=stage1, write_outputs=False).report
    changes = {im["name"]: im["detail_change"] for im in rep["images"]}
    assert set(changes) == {"face", "suit"} and all(c > 0 for c in changes.values())
    # where it was measured (a centre crop of at most 128 LR px), so that a user can look at the same pixels
    assert [im["detail_window"] for im in rep["images"]] == [list(d.centre_window(128)) for d in data]
    assert rep["detail_flag"]["threshold"] == DETAIL_FLAG
    assert rep["detail_flag"]["images"] == sorted((n for n, c in changes.items() if c >= DETAIL_FLAG),
                                                  key=lambda n: -changes[n])


def test_detail_guard_runs_without_the_anchor_and_is_logged(tmp_path, inputs, stage1):
    """The guard needs the unadapted output: with anchor_weight 0 the driver still makes it, every step records the
    guard's part, and no anchor part appears."""
    cfg = AdaptConfig(iterations=3, patch_size=16, batch_size=2, sup_weight=0.0, anchor_weight=0.0, detail_guard=1.0,
                      detail_guard_ratio=1.0)
    rep = adapt_images(inputs, _desc(_tiny()), cfg, tmp_path / "out", stage1=stage1, write_outputs=False).report
    assert all("detail" in h and h["detail"] >= 0 and "anchor" not in h for h in rep["history"])
    plain = adapt_images(inputs, _desc(_tiny()), cfg.replace(detail_guard=0.0), tmp_path / "plain", stage1=stage1,
                         write_outputs=False).report
    assert all("detail" not in h for h in plain["history"])


def test_trust_gated_guard_records_each_images_gate(tmp_path, inputs, stage1):
    """detail_guard_gate trust: the driver measures stage 1's judgement once, gives every image its gate (in
    report.json beside the anchor trust) and trains with the gated guard; the weights differ from the ungated run's."""
    from lway_rt.adapt.losses import GATE_POWER

    cfg = AdaptConfig(iterations=3, patch_size=16, batch_size=2, sup_weight=0.0, detail_guard=1.0, detail_guard_ratio=1.0,
                      detail_guard_gate="trust")
    rep = adapt_images(inputs, _desc(_tiny()), cfg, tmp_path / "gated", stage1=stage1, write_outputs=False).report
    assert all("detail" in h for h in rep["history"])
    for im in rep["images"]:
        r = min(1.0, im["trust"]["loss_bicubic"] / im["trust"]["loss_unadapted"])
        assert im["guard_gate"] == pytest.approx(1 - r ** GATE_POWER, abs=2e-3)
    plain = adapt_images(inputs, _desc(_tiny()), cfg.replace(detail_guard_gate="none"), tmp_path / "plain",
                         stage1=stage1, write_outputs=False).report
    assert all("guard_gate" not in im for im in plain["images"])


def test_ground_truth_of_inputs_that_share_a_file_name(tmp_path):
    """a/x.png and b/x.png were both scored against gt/x.png; two files for one input were chosen between silently."""
    from lway_rt.adapt._imageio import read_inputs
    from lway_rt.adapt.loop import _load_gt

    rng = np.random.default_rng(0)
    lr = {k: (rng.random((8, 8, 3)) * 255).astype(np.uint8) for k in "ab"}
    hr = {k: (rng.random((16, 16, 3)) * 255).astype(np.uint8) for k in "ab"}
    for k in "ab":
        (tmp_path / k).mkdir()
        Image.fromarray(lr[k]).save(tmp_path / k / "x.png")
    Image.fromarray(lr["a"]).save(tmp_path / "y.png")
    images = read_inputs([tmp_path / "a", tmp_path / "b", tmp_path / "y.png"])
    assert [i.name for i in images] == ["x_png", "x_png_2", "y"]
    gt = tmp_path / "gt"
    gt.mkdir()
    Image.fromarray(hr["a"]).save(gt / "x.png")
    Image.fromarray(hr["a"]).save(gt / "y.png")
    with pytest.raises(InputError, match="name their ground truths in .* x_png, x_png_2"):
        _load_gt(gt, images, 2)
    (gt / "x.png").rename(gt / "x_png.png")
    Image.fromarray(hr["b"]).save(gt / "x_png_2.png")
    got = _load_gt(gt, images, 2)
    assert np.array_equal(got["x_png"], hr["a"] / np.float32(255)) and "y" in got
    assert np.array_equal(got["x_png_2"], hr["b"] / np.float32(255))
    Image.fromarray(hr["a"]).save(gt / "y.jpg", quality=95)
    with pytest.raises(InputError, match="holds y.jpg and y.png for one input: keep one"):
        _load_gt(gt, images, 2)


def test_a_rollback_at_the_last_iteration_ends_on_the_weights_it_rolled_back_to(tmp_path, inputs, stage1):
    """The drift guard's check at the last iteration rolled back to iteration 0's weights, which were written, while
    the report and the weights' metadata said 'iteration 3, completed' (and 'lr now' for a step that never came);
    with ground truth the rolled-back weights were scored as iteration 3's."""
    from safetensors import safe_open

    cfg = AdaptConfig(iterations=3, patch_size=16, batch_size=2, lr=0.5)
    base = _tiny()
    res = adapt_images(inputs, _desc(_tiny()), cfg, tmp_path / "a", stage1=stage1)
    rep = res.report
    assert rep["rollbacks"] == 1 and rep["iterations_run"] == 3, rep["events"]
    assert rep["stopped"] == "rolled back at the last iteration (3); stopped with the weights of iteration 0"
    assert rep["final_iteration"] == 0 and "lr now" not in rep["events"][-1]
    state, _ = load_state_file(res.weights)
    assert all(torch.equal(state[k], v) for k, v in base.state_dict().items())  # iteration 0's, as said
    with safe_open(str(res.weights), "pt") as f:
        assert f.metadata()["iterations"] == "0"
    gt = {img.name: np.kron(img.rgb, np.ones((4, 4, 1), np.float32)) for img in inputs}
    res = adapt_images(inputs, _desc(_tiny()), cfg.replace(eval_every=1), tmp_path / "gt", stage1=stage1, gt=gt)
    evals = [e["it"] for e in res.report["evals"]]
    assert evals == sorted(evals) and evals.count(0) == 1 and 3 not in evals, evals  # iteration 0's, scored once
    assert res.report["final_iteration"] in evals  # the weights written are ones scored, under their own iteration


def test_an_out_folder_deleted_during_the_run_stops_it_unwritten(tmp_path, inputs, stage1):
    """The run's lock is on the --out folder: deleted mid-run, the run made it anew unlocked at its next write, so a
    second run into that name went ahead beside it and both said 'completed' over one folder. Now the run stops at
    its next write with the one-line OutputError, and writes nothing more."""
    import shutil

    from lway_rt.errors import OutputError

    out = tmp_path / "out"
    cfg = AdaptConfig(iterations=20, patch_size=16, batch_size=2, lr=1e-3, checkpoint_every=5)

    def log(msg):
        if msg.startswith("iteration 10/"):
            shutil.rmtree(out)

    with pytest.raises(OutputError, match=r"out was deleted or replaced while this run wrote to it \(another run may "
                                          r"be writing there now\): this run stops without writing its results"):
        adapt_images(inputs, _desc(_tiny(4)), cfg, out, stage1=stage1, log=log)
    assert not out.exists()
    out.mkdir()  # and, made again before the end (as another run would), the weights are not written into it
    with pytest.raises(OutputError, match="deleted or replaced"):
        adapt_images(inputs, _desc(_tiny(4)), cfg.replace(checkpoint_every=50), out, stage1=stage1,
                     log=lambda m: (shutil.rmtree(out), out.mkdir()) if m.startswith("iteration 10/") else None)
    assert list(out.iterdir()) == []


def test_the_images_to_check_first_are_a_note_not_progress(tmp_path, inputs, stage1, monkeypatch):
    """The line naming the images that gained the most detail goes to ``note`` (which `adapt -q` keeps), not to
    ``log`` (the progress that -q silences); with no ``note`` it goes to ``log`` as before."""
    import lway_rt.adapt.loop as loop

    monkeypatch.setattr(loop, "DETAIL_FLAG", 0.0)  # every image counts as flagged
    cfg = AdaptConfig(iterations=2, patch_size=16, batch_size=1, sup_weight=0.0)
    logged, noted = [], []
    adapt_images(inputs, _desc(_tiny(1)), cfg, tmp_path / "a", stage1=stage1, write_outputs=False,
                 log=logged.append, note=noted.append)
    assert [line for line in noted if "check these images first" in line] and noted[0].startswith("most fine detail")
    assert not [line for line in logged if "check these images first" in line] and logged
    logged = []
    adapt_images(inputs, _desc(_tiny(1)), cfg, tmp_path / "b", stage1=stage1, write_outputs=False, log=logged.append)
    assert [line for line in logged if "check these images first" in line]


def test_the_sr_ledger_is_appended_to_and_a_line_cut_short_is_passed_over(tmp_path):
    """The list of sr/ images written so far was one JSON file rewritten whole after each image (about 800 s and 17 GB
    written for 10,000 frames); it is one line per image, appended, and a kill that cuts the last line short costs
    only that image (made again), not the list."""
    from lway_rt.adapt.runfolder import _ledger_line, _read_ledger

    ledger = tmp_path / ".sr-written.jsonl"
    ledger.write_text(_ledger_line("f1", "a" * 64, {"s": 1.0}) + _ledger_line("f2", "b" * 64, None)
                      + _ledger_line("f1", "c" * 64, {"s": 0.5}) + '{"name": "f3", "sha2')
    entries = _read_ledger(ledger)
    assert set(entries) == {"f1", "f2"} and entries["f1"]["sha256"] == "c" * 64 and entries["f1"]["record"] == {"s": 0.5}
    assert _read_ledger(tmp_path / "missing.jsonl") == {}
    assert json.loads(_ledger_line("x", "d", {"s": float("nan")}))["record"] == {"s": None}  # strict JSON, one line


def test_image_sha256_reads_a_file_again_once_it_changes(tmp_path):
    """sr/ images are hashed once a command, known by their stat: a file rewritten since (same size, its modification
    time put back) is read again, not taken for what it held."""
    import hashlib

    from lway_rt.adapt.runfolder import image_sha256

    path = tmp_path / "f.png"
    path.write_bytes(b"a" * 64)
    first = image_sha256(path)
    assert first == hashlib.sha256(b"a" * 64).hexdigest() and image_sha256(path) == first
    before = path.stat()
    path.write_bytes(b"b" * 64)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # (only its change time tells)
    assert image_sha256(path) == hashlib.sha256(b"b" * 64).hexdigest()


def test_the_detail_change_takes_the_unadapted_detail_from_the_weighing(tmp_path, inputs, stage1, monkeypatch):
    """detail_change ran the unadapted network on each image's crop again after the weighing had run it on that same
    crop (a quarter of the passes over a clip's frames after training); it takes that detail from the weighing, and
    the ratios are those it measured itself."""
    import lway_rt.adapt.loop as loop

    seen = []
    real = loop.detail_change

    def measured(model, base, data, scale, multiple=1, **kw):
        changes = real(model, base, data, scale, multiple, **kw)
        seen.append((kw.get("base_energy"), changes, real(model, base, data, scale, multiple)))
        return changes

    monkeypatch.setattr(loop, "detail_change", measured)
    cfg = AdaptConfig(iterations=4, patch_size=16, batch_size=2)
    assert cfg.anchor_weight > 0 and cfg.anchor_trust > 0
    adapt_images(inputs, _desc(_tiny(3)), cfg, tmp_path / "run", stage1=stage1)
    (given, changes, fresh), = seen
    assert given is not None and len(given) == len(inputs) and changes == fresh



def test_a_fixed_patch_loss_that_is_not_finite_is_said_so(tmp_path, inputs, stage1, monkeypatch):
    """The drift guard rolled back on a NaN fixed-patch loss saying it had "jumped above 2x the best" (review 49C C1;
    seen with --lr 0.9, whose huge step left weights that overflow on the fixed patches): a NaN jumps above nothing,
    so the event says the loss is not finite. (Fault injection: the fixed-patch loss of the second check is NaN.)"""
    from lway_rt.adapt import loop

    measured = loop._Training.fixed_loss
    calls = []

    def nan_at_the_second_check(self):
        calls.append(measured(self))
        return float("nan") if len(calls) == 2 else calls[-1]

    monkeypatch.setattr(loop._Training, "fixed_loss", nan_at_the_second_check)
    cfg = AdaptConfig(iterations=4, patch_size=16, batch_size=2, guard_every=2)
    rep = adapt_images(inputs, _desc(_tiny()), cfg, tmp_path / "a", stage1=stage1, write_outputs=False).report
    assert rep["events"][0].startswith("iteration 2: fixed-patch loss is not finite (nan); rolled back to iteration 0"), \
        rep["events"]
    assert rep["rollbacks"] == 1 and not any("jumped" in e for e in rep["events"]), rep["events"]


def test_a_stop_on_weights_with_a_non_finite_loss_is_not_put_on_the_drift_guard(tmp_path, inputs, stage1, monkeypatch):
    """With --guard-factor 0 (the drift guard off), a streak of NaN steps whose weights before it give a NaN fixed-patch
    loss stopped saying those weights 'failed the drift guard' (57C2): a non-finite loss is judged with the guard off
    too, and said as such. (Fault injection: the training forwards from the third are NaN, and so is the fixed-patch
    loss of the weights judged at the stop.)"""
    from lway_rt.adapt import loop

    measured = loop._Training.fixed_loss
    calls = []

    def nan_at_the_stop(self):
        calls.append(measured(self))
        return float("nan") if len(calls) == 2 else calls[-1]

    monkeypatch.setattr(loop._Training, "fixed_loss", nan_at_the_stop)
    cfg = AdaptConfig(iterations=30, patch_size=16, batch_size=2, max_bad_steps=3, guard_factor=0)
    rep = adapt_images(inputs, _desc(_tiny(cls=FaultySRVGG, bad_calls={3, -1})), cfg, tmp_path / "a", stage1=stage1,
                       write_outputs=False).report
    assert rep["stopped"] == ("non-finite loss or gradient for 3 steps in a row, and the weights of iteration 2 give a "
                              "non-finite loss on the fixed patches: rolled back to iteration 0 and stopped there"), rep
    assert rep["events"][-1].startswith("the weights of iteration 2, judged as the run stops: fixed-patch loss is not "
                                        "finite (nan); rolled back to iteration 0"), rep["events"]
