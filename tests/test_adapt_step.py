"""The pure adaptation step: it learns, it touches only S, and it never lets NaN into the weights."""

from __future__ import annotations

import copy

import pytest
import torch

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.embed import compute_embeddings, prepare_stage1
from lway_rt.adapt.loop import select_trainable
from lway_rt.adapt.patches import AdaptImage, bicubic_down, fixed_patches, sample_batch
from lway_rt.adapt.step import adapt_step
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.errors import InputError

@pytest.fixture(scope="module")
def stage1():
    from lway_rt.degae import Stage1

    return Stage1.fresh(embed_dim=16, width=8, blocks=2, head_widths=(16, 16, 16), seed=1).freeze()


@pytest.fixture()
def images(hr_crop):
    lr1 = torch.from_numpy(hr_crop[::4, ::4].copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)  # 64x64
    lr2 = torch.from_numpy(hr_crop[100:180:2, 40:200:4].copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)  # 40x40
    return [AdaptImage.from_lr("a", lr1, 4), AdaptImage.from_lr("b", lr2, 4)]


def _tiny_s(seed=0):
    torch.manual_seed(seed)
    return SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).eval()


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_lway_step_learns_and_only_touches_s(stage1, images):
    s = _tiny_s()
    recon, emb = prepare_stage1(stage1, [im.up for im in images])
    assert emb.shape == (2, 16)
    e_before, r_before = _snapshot(stage1.encoder), _snapshot(stage1.reconstructor)
    s_before = _snapshot(s)
    # a fixed objective (weight map of the target) must go down on a fixed batch
    cfg = AdaptConfig(lr=1e-2, patch_size=16, batch_size=4, hf_source="target")
    opt = torch.optim.Adam(s.parameters(), lr=cfg.lr)
    batch = sample_batch(images, 4, 16, 4, torch.Generator().manual_seed(0))
    assert set(batch.index.tolist()) <= {0, 1}
    losses = [adapt_step(s, opt, batch, recon, cfg)["loss"] for _ in range(10)]
    assert losses[-1] < 0.9 * losses[0], losses
    # S changed, E and R are bit-identical (and got no gradients)
    assert any(not torch.equal(v, s.state_dict()[k]) for k, v in s_before.items())
    for before, module in ((e_before, stage1.encoder), (r_before, stage1.reconstructor)):
        for k, v in module.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert all(p.grad is None for p in module.parameters())


def test_embeddings_are_computed_once_per_image_and_match_the_encoder(stage1, images):
    emb = compute_embeddings([im.up for im in images], stage1)
    with torch.no_grad():
        direct = stage1.encoder(images[1].up)
    torch.testing.assert_close(emb[1:2], direct)


@pytest.mark.parametrize("loss,target", [("naive", "sr"), ("identity", "sr"), ("lway", "lr"), ("lway", "lr-recon")])
def test_other_losses_and_targets_learn(stage1, images, loss, target):
    s = _tiny_s(1)
    embed_in = [im.lr if target == "lr-recon" else im.up for im in images]
    recon = prepare_stage1(stage1, embed_in)[0] if loss == "lway" else None
    cfg = AdaptConfig(lr=1e-2, patch_size=16, batch_size=2, loss=loss, target=target, hf_source="target")
    opt = torch.optim.Adam(s.parameters(), lr=cfg.lr)
    batch = sample_batch(images, 2, 16, 4, torch.Generator().manual_seed(3))
    losses = [adapt_step(s, opt, batch, recon, cfg)["loss"] for _ in range(8)]
    assert losses[-1] < losses[0]


def test_naive_loss_is_downsampled_sr_against_lr(images):
    s = _tiny_s(2)
    batch = fixed_patches(images, 16, 4)
    cfg = AdaptConfig(loss="naive", hf_weight=False)
    from lway_rt.adapt.losses import adaptation_loss

    with torch.no_grad():
        sr = s(batch.lr)
        loss, _ = adaptation_loss(sr, batch, None, cfg)
        expected = (bicubic_down(sr, 4) - batch.lr).abs().mean()
    torch.testing.assert_close(loss, expected)


def test_lr_recon_degrades_the_downsampled_output_at_lr_size(stage1, images):
    """target lr-recon: x̂ = R(down(S(x)), e) at LR size against the LR; with R = identity it is naive."""
    from lway_rt.adapt.losses import adaptation_loss

    s = _tiny_s(2)
    batch = fixed_patches(images, 16, 4)
    seen = []

    def recon(clean, index):
        seen.append(tuple(clean.shape))
        return clean * 0.5

    cfg = AdaptConfig(loss="lway", target="lr-recon", hf_weight=False)
    with torch.no_grad():
        sr = s(batch.lr)
        loss, _ = adaptation_loss(sr, batch, recon, cfg)
        naive, _ = adaptation_loss(sr, batch, lambda c, i: c, cfg)
        naive_ref, _ = adaptation_loss(sr, batch, None, cfg.replace(loss="naive"))
    assert seen == [tuple(batch.lr.shape)]  # R ran on LR-size patches
    torch.testing.assert_close(loss, (bicubic_down(sr, 4) * 0.5 - batch.lr).abs().mean())
    torch.testing.assert_close(naive, naive_ref)


def test_anchor_pool_ties_only_the_coarse_picture(images):
    """anchor_pool k: the anchor compares k x k block means, so a change with zero mean in every
    block costs nothing there, while the pixel-wise anchor (k = 1) charges it."""
    from lway_rt.adapt.losses import adaptation_loss

    batch = fixed_patches(images, 16, 4)
    ref = torch.rand(batch.lr.shape[0], 3, 64, 64)
    batch.anchor = ref
    checker = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 0.2 - 0.1  # zero mean per 2x2 block
    cfg = AdaptConfig(loss="naive", hf_weight=False, anchor_weight=1.0)
    parts = {k: adaptation_loss(ref + checker, batch, None, cfg.replace(anchor_pool=k))[1]["anchor"] for k in (1, 2, 4)}
    assert parts[1] == pytest.approx(0.1, abs=1e-6)
    assert parts[2] < 1e-6 and parts[4] < 1e-6
    shifted = adaptation_loss(ref + 0.05, batch, None, cfg.replace(anchor_pool=4))[1]["anchor"]
    assert shifted == pytest.approx(0.05, abs=1e-6)  # a change of tone is still charged in full
    with pytest.raises(InputError, match="anchor_pool"):
        AdaptConfig(anchor_pool=0)


def test_trainable_subset_freezes_the_rest(stage1, images):
    s = _tiny_s(3)
    chosen = select_trainable(s, "SRVGGNetCompact", "body")
    assert chosen and all(not n.startswith(("body.0.", "body.1.", "body.6.")) for n in chosen)
    before = _snapshot(s)
    recon, _ = prepare_stage1(stage1, [im.up for im in images])
    cfg = AdaptConfig(lr=1e-2, patch_size=16, batch_size=2, trainable="body")
    opt = torch.optim.Adam([p for p in s.parameters() if p.requires_grad], lr=cfg.lr)
    adapt_step(s, opt, sample_batch(images, 2, 16, 4, torch.Generator().manual_seed(0)), recon, cfg)
    after = s.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]) == (k not in chosen), k
    with pytest.raises(InputError, match="matches no parameter"):
        select_trainable(_tiny_s(), "SRVGGNetCompact", ("nonexistent.",))


def test_trainable_names_take_what_lies_under_them_not_longer_numbers():
    """--trainable body.0,body.1 trained body.10 ... body.19 too: the names were matched as text prefixes (57C1)."""
    from lway_rt.archs.srvgg import SRVGGNetCompact

    s = SRVGGNetCompact(num_conv=8)  # body.0 ... body.19: the first conv, its PReLU, 8 convs and PReLUs, the last
    chosen = select_trainable(s, "SRVGGNetCompact", ("body.0", "body.1"))
    assert chosen == ["body.0.weight", "body.0.bias", "body.1.weight"], chosen
    assert select_trainable(s, "SRVGGNetCompact", ("body.1.",)) == ["body.1.weight"]  # a trailing dot as given
    assert select_trainable(s, "SRVGGNetCompact", ("body.0.bias",)) == ["body.0.bias"]  # a parameter by its name
    with pytest.raises(InputError, match="--trainable 'body.0.b' matches no module or parameter"):  # (not part of a name)
        select_trainable(s, "SRVGGNetCompact", ("body.1", "body.0.b"))


def test_nan_loss_or_gradient_never_reaches_the_weights(stage1, images):
    s = _tiny_s(4)
    recon, _ = prepare_stage1(stage1, [im.up for im in images])
    cfg = AdaptConfig(lr=1e-2, patch_size=16, batch_size=2)
    opt = torch.optim.Adam(s.parameters(), lr=cfg.lr)
    good = sample_batch(images, 2, 16, 4, torch.Generator().manual_seed(0))
    adapt_step(s, opt, good, recon, cfg)  # Adam state exists, as mid-run
    before, opt_before = _snapshot(s), copy.deepcopy(opt.state_dict())
    bad = copy.copy(good)
    bad.lr = good.lr.clone()
    bad.lr[0, 1, 3, 5] = float("nan")
    m = adapt_step(s, opt, bad, recon, cfg)
    assert m["skipped"] and m["reason"] == "non-finite loss"
    for k, v in s.state_dict().items():
        assert torch.equal(v, before[k])
    assert opt.state_dict()["state"][0]["step"] == opt_before["state"][0]["step"]
    # a finite loss with a non-finite gradient (injected by a hook on one weight) is skipped as well
    handle = s.body[0].weight.register_hook(lambda g: g * float("inf"))
    m = adapt_step(s, opt, good, recon, cfg)
    handle.remove()
    assert m["skipped"] and m["reason"] == "non-finite gradient" and m["loss"] == m["loss"]
    for k, v in s.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in s.parameters())


def test_config_validates_on_construction():
    with pytest.raises(InputError, match="unknown loss"):
        AdaptConfig(loss="perceptual")
    with pytest.raises(InputError, match="lr must be"):
        AdaptConfig(lr=0)
    with pytest.raises(InputError, match="iterations"):
        AdaptConfig(iterations=0)
    with pytest.raises(InputError, match="unknown keys"):
        AdaptConfig.from_dict({"iters": 3})
    with pytest.raises(InputError, match="guard_factor"):
        AdaptConfig(guard_factor=1.0)
    for key in ("anchor_weight", "guard_factor", "detail_guard", "lr"):  # nan from a --config file passed "< 0" checks
        for value in (float("nan"), float("inf")):
            with pytest.raises(InputError):
                AdaptConfig.from_dict({key: value})
    with pytest.raises(InputError, match="anchor_weight must be a finite number, got nan"):
        AdaptConfig.from_dict({"anchor_weight": float("nan")})
    for bad in (0, 2.5, True):  # a TOML --config can give any of these
        with pytest.raises(InputError, match="sample must be a (positive number of inputs|whole number or unset)"):
            AdaptConfig(sample=bad)
    # wrong types from a --config file: each a one-line refusal (a float seed failed inside torch, an int trainable
    # with a TypeError, a string "false" was a true hf_weight, a string beta failed a comparison)
    for values, message in (({"seed": 1.5}, "seed must be a whole number, got 1.5"),
                            ({"seed": -1}, "seed must be 0 or a positive whole number, got -1"),  # torch took it
                            ({"trainable": 5}, "trainable must be all, body or a list"),
                            ({"hf_weight": "false"}, "hf_weight must be true or false, got 'false'"),
                            ({"iterations": True}, "iterations must be a whole number, got True"),
                            ({"lr": "1e-4"}, "lr must be a number, got '1e-4'"),
                            ({"mode": 3}, "mode must be a string, got 3"),
                            ({"tile": "auto"}, "tile must be a whole number or unset"),
                            ({"adam_betas": ["a", 0.9]}, "adam_betas must be two numbers"),
                            ({"lpips_weights": [5]}, r"lpips_weights must be weight files \(paths\), got \[5\]"),
                            ({"lpips_weights": 5}, "lpips_weights must be weight files"),
                            ({"lpips_weights": [""]}, "lpips_weights must be weight files"),
                            ({"notes": 5}, "notes must be a table of notes, got 5")):
        with pytest.raises(InputError, match=message):
            AdaptConfig.from_dict(values)
    cfg = AdaptConfig.from_dict({"anchor_weight": 1, "tile": None, "groups": 2, "mode": "per-group"})  # TOML ints
    assert cfg.anchor_weight == 1 and cfg.groups == 2
    cfg = AdaptConfig.from_dict({"trainable": ["body.2", "body.3"], "iterations": 5})
    assert cfg.trainable == ("body.2", "body.3") and cfg.to_dict()["trainable"] == ["body.2", "body.3"]
    with pytest.raises(Exception):
        cfg.lr = 1.0  # frozen


class _Bicubic(torch.nn.Module):
    """A 'backbone' that is bicubic upsampling itself."""

    def forward(self, x):
        from lway_rt.adapt.patches import bicubic_up

        return bicubic_up(x, 4)


class _Noisy(_Bicubic):
    """Bicubic plus a fixed ripple: a backbone whose output explains the LR worse than bicubic."""

    def forward(self, x):
        return super().forward(x) + 0.3 * torch.sin(torch.arange(x.shape[-1] * 4, dtype=x.dtype) * 2.1)


def test_backbone_trust_is_the_loss_ratio_to_bicubic_capped_at_one(stage1, images):
    """anchor_trust: factor = min(1, L(bicubic) / L(S0)) ** T with L the run's own loss on a centre
    crop; a backbone that is bicubic gets exactly 1, a worse one less, and T = 2 squares it."""
    from lway_rt.adapt.losses import backbone_trust, loss_terms, trust_losses
    from lway_rt.adapt.patches import Batch

    recon, _ = prepare_stage1(stage1, [im.up for im in images])
    cfg = AdaptConfig(anchor_trust=1.0, anchor_trust_scope="image")
    same, _ = backbone_trust(trust_losses(images, _Bicubic(), recon, cfg, 4, max_side=32), cfg)
    assert same.tolist() == [1.0, 1.0]

    f1, info = backbone_trust(trust_losses(images, _Noisy(), recon, cfg, 4, max_side=32), cfg)
    cfg2 = cfg.replace(anchor_trust=2.0)
    f2, _ = backbone_trust(trust_losses(images, _Noisy(), recon, cfg2, 4, max_side=32), cfg2)
    assert all(0 < f < 1 for f in f1.tolist())
    torch.testing.assert_close(f2, f1 ** 2)
    # the first image by hand: its 32-px centre crop (64x64 LR)
    im = images[0]
    lr, up = im.lr[..., 16:48, 16:48], im.up[..., 64:192, 64:192]
    b = Batch(lr=lr, up=up, index=torch.zeros(1, dtype=torch.long))
    plain = cfg.replace(anchor_weight=0.0, sup_weight=0.0)
    with torch.no_grad():
        l_s0 = float(loss_terms(_Noisy()(lr), b, lambda x: recon(x, b.index), plain)[0])
        l_bic = float(loss_terms(_Bicubic()(lr), b, lambda x: recon(x, b.index), plain)[0])
    assert info[0]["anchor_factor"] == pytest.approx(l_bic / l_s0, rel=1e-3)


def test_anchor_scale_weights_each_patch_of_the_anchor(images):
    from lway_rt.adapt.losses import adaptation_loss

    batch = fixed_patches(images, 16, 4)  # two patches
    sr = torch.rand(2, 3, 64, 64)
    batch.anchor = sr + torch.tensor([0.1, 0.3]).view(2, 1, 1, 1)
    cfg = AdaptConfig(loss="naive", hf_weight=False, anchor_weight=1.0)
    assert adaptation_loss(sr, batch, None, cfg)[1]["anchor"] == pytest.approx(0.2, abs=1e-6)
    batch.anchor_scale = torch.tensor([1.0, 0.5])
    assert adaptation_loss(sr, batch, None, cfg)[1]["anchor"] == pytest.approx((0.1 + 0.15) / 2, abs=1e-6)
    with pytest.raises(InputError, match="anchor_trust"):
        AdaptConfig(anchor_trust=-1)


def test_run_scope_pools_the_trust_into_one_factor(stage1, images):
    from lway_rt.adapt.losses import backbone_trust, trust_losses

    recon, _ = prepare_stage1(stage1, [im.up for im in images])
    cfg = AdaptConfig(anchor_trust=2.0, anchor_trust_scope="run")
    f, info = backbone_trust(trust_losses(images, _Noisy(), recon, cfg, 4, max_side=32), cfg)
    want = (sum(d["loss_bicubic"] for d in info) / sum(d["loss_unadapted"] for d in info)) ** 2
    assert f.tolist() == pytest.approx([want, want], rel=1e-3)
    with pytest.raises(InputError, match="anchor_trust_scope"):
        AdaptConfig(anchor_trust_scope="folder")


def test_detail_guard_charges_only_detail_above_the_ratio(images):
    """detail_guard: relu(detail ratio - detail_guard_ratio) per patch, the ratio being the Haar-Y detail energy of S's
    output over the unadapted output's; less detail, or a change of tone, costs nothing; the gradient pushes the
    detail down."""
    from lway_rt.adapt.losses import adaptation_loss, loss_terms
    from lway_rt.adapt.wavelet import detail_energy, detail_ratio

    batch = fixed_patches(images, 16, 4)
    torch.manual_seed(0)
    ref = torch.rand(batch.lr.shape[0], 3, 64, 64) * 0.5 + 0.25
    batch.anchor = ref
    mean = ref.mean(dim=(2, 3), keepdim=True)
    cfg = AdaptConfig(loss="naive", hf_weight=False, anchor_weight=0.0, detail_guard=1.0, detail_guard_ratio=1.2)
    sharper = mean + 1.5 * (ref - mean)  # 2.25x the detail energy
    assert torch.allclose(detail_ratio(sharper, ref), torch.full((ref.shape[0],), 2.25), atol=1e-4)
    assert torch.allclose(detail_ratio(sharper, ref), (detail_energy(sharper) / detail_energy(ref)).float(), rtol=1e-4)
    parts = adaptation_loss(sharper, batch, None, cfg)[1]
    assert parts["detail"] == pytest.approx(2.25 - 1.2, abs=1e-4)
    assert "anchor" not in parts
    for calm in (mean + 0.9 * (ref - mean), ref + 0.1):  # less detail; the same detail a tone brighter
        assert adaptation_loss(calm, batch, None, cfg)[1]["detail"] == pytest.approx(0.0, abs=1e-6)
    x = sharper.clone().requires_grad_(True)
    loss, _ = loss_terms(x, batch, None, cfg.replace(loss="naive"))
    guard_only = cfg.replace(detail_guard=0.0)
    loss0, _ = loss_terms(x, batch, None, guard_only)
    (g,) = torch.autograd.grad(loss - loss0, x)
    assert float((g * (x.detach() - mean)).sum()) > 0  # descending the gradient shrinks the detail
    assert "detail" not in adaptation_loss(sharper, batch, None, guard_only)[1]  # off: no term
    with pytest.raises(InputError, match="detail_guard_ratio"):
        AdaptConfig(detail_guard=1.0, detail_guard_ratio=0.9)
    with pytest.raises(InputError, match="detail_guard"):
        AdaptConfig(detail_guard=-1.0)
    # off, the recipe (and resumable checkpoints' fingerprints) are what they were before the option existed
    assert "detail_guard" not in AdaptConfig().recipe_json()
    assert '"detail_guard": 0.5' in AdaptConfig(detail_guard=0.5).recipe_json()


def test_guard_gates_follow_stage1s_judgement_of_the_backbone(stage1, images):
    """detail_guard_gate trust: per image 1 - min(1, L_bicubic / L_S0) ** 2, from the same losses as the anchor trust:
    0 for a backbone that explains the LR as well as bicubic, between 0 and 1 for a worse one; always per image."""
    from lway_rt.adapt.losses import backbone_trust, guard_gates, trust_losses

    recon, _ = prepare_stage1(stage1, [im.up for im in images])
    cfg = AdaptConfig(anchor_trust_scope="run")
    assert guard_gates(trust_losses(images, _Bicubic(), recon, cfg, 4, max_side=32)).tolist() == [0.0, 0.0]
    info = trust_losses(images, _Noisy(), recon, cfg, 4, max_side=32)
    gates = guard_gates(info)
    want = [1 - (d["loss_bicubic"] / d["loss_unadapted"]) ** 2 for d in info]
    assert gates.tolist() == pytest.approx(want, rel=1e-5) and all(0 < g < 1 for g in want)
    assert want[0] != pytest.approx(want[1])  # per image, though the anchor trust pools over the run
    pooled, _ = backbone_trust(info, cfg)
    assert pooled[0] == pooled[1]


def test_guard_scale_weights_each_patch_of_the_detail_guard(images):
    from lway_rt.adapt.losses import adaptation_loss

    batch = fixed_patches(images, 16, 4)  # two patches
    torch.manual_seed(0)
    ref = torch.rand(2, 3, 64, 64) * 0.5 + 0.25
    mean = ref.mean(dim=(2, 3), keepdim=True)
    batch.anchor = ref
    cfg = AdaptConfig(loss="naive", hf_weight=False, anchor_weight=0.0, detail_guard=1.0, detail_guard_ratio=1.2)
    sharper = mean + 1.5 * (ref - mean)  # ratio 2.25 on both patches
    assert adaptation_loss(sharper, batch, None, cfg)[1]["detail"] == pytest.approx(1.05, abs=1e-4)
    batch.guard_scale = torch.tensor([1.0, 0.0])
    assert adaptation_loss(sharper, batch, None, cfg)[1]["detail"] == pytest.approx(1.05 / 2, abs=1e-4)


def test_detail_guard_gate_is_checked_and_kept_out_of_the_recipe_when_off():
    with pytest.raises(InputError, match="detail_guard_gate must be one of none, trust"):
        AdaptConfig(detail_guard=1.0, detail_guard_gate="detail")
    with pytest.raises(InputError, match="only the lway loss has"):
        AdaptConfig(loss="naive", detail_guard=1.0, detail_guard_gate="trust")
    AdaptConfig(loss="naive", detail_guard=0.0, detail_guard_gate="trust")  # no guard, nothing to gate
    assert "detail_guard_gate" not in AdaptConfig(detail_guard=1.0).recipe_json()
    assert "detail_guard_gate" not in AdaptConfig(detail_guard_gate="trust").recipe_json()  # guard off
    assert '"detail_guard_gate": "trust"' in AdaptConfig(detail_guard=1.0, detail_guard_gate="trust").recipe_json()


def test_adapt_step_reports_the_detail_guard(images):
    model = _tiny_s()
    ref = copy.deepcopy(model)
    batch = sample_batch(images, 2, 16, 4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        batch.anchor = ref(batch.lr) * 0.5  # half the amplitude: S's own output has 4x the reference's detail
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    m = adapt_step(model, opt, batch, None, AdaptConfig(loss="naive", anchor_weight=0.0, sup_weight=0.0, detail_guard=1.0))
    assert m["detail"] == pytest.approx(4.0 - 1.2, rel=1e-3)


@pytest.mark.parametrize("scale,tol", [(4, 0.0), (2, 0.0), (3, 1e-4), (1, 0.0)])
def test_patches_cut_the_whole_images_upsampling(scale, tol):
    """Each patch's SR-size target is made from its LR window only; it must equal the window of the whole image's
    bicubic upsampling (bit for bit at scales 1, 2 and 4), at the image's edges as inside."""
    from lway_rt.adapt.patches import bicubic_up, upsampled_window

    lr = torch.rand(1, 3, 37, 50, generator=torch.Generator().manual_seed(scale))
    im = AdaptImage.from_lr("x", lr, scale)
    whole = bicubic_up(lr, scale)
    assert torch.equal(im.up, whole)
    batch = sample_batch([im], 64, 12, scale, torch.Generator().manual_seed(0))
    windows = lr[0].unfold(1, 12, 1).unfold(2, 12, 1)  # (3, 26, 39, 12, 12): every 12-px LR window
    for k in range(64):  # where each random patch was cut (random noise: one place only), and its target there
        same = (windows == batch.lr[k][:, None, None]).flatten(-2).all(-1).all(0)
        (t, l), = same.nonzero().tolist()
        want = whole[0, :, t * scale:(t + 12) * scale, l * scale:(l + 12) * scale]
        assert (batch.up[k] - want).abs().max().item() <= tol
    for top, left, h, w in ((0, 0, 5, 7), (30, 44, 7, 6), (3, 9, 34, 41), (0, 0, 37, 50)):  # edges, inside, whole
        got = upsampled_window(lr, scale, top * scale, left * scale, h * scale, w * scale)
        assert (got - whole[..., top * scale:(top + h) * scale, left * scale:(left + w) * scale]).abs().max().item() <= tol


def test_an_adaptation_image_holds_its_lr_only():
    """A 1080p frame costs its 25 MB LR, not the 400 MB of its x4 upsampling (footage has many frames)."""
    import gc
    import os

    def rss_mb():
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    lr = torch.rand(1, 3, 1080, 1920)
    gc.collect()
    before = rss_mb()
    frames = [AdaptImage.from_lr(f"f{i}", lr, 4) for i in range(3)]
    batch = sample_batch(frames, 4, 48, 4, torch.Generator().manual_seed(0))
    assert batch.up.shape == (4, 3, 192, 192)
    assert rss_mb() - before < 100  # three whole upsamplings would be 1.2 GB


def test_hf_norm_is_checked_reaches_the_loss_and_stays_out_of_the_recipe_at_its_default():
    from lway_rt.adapt.losses import adaptation_loss
    from lway_rt.adapt.patches import Batch, bicubic_up

    with pytest.raises(InputError, match="unknown hf_norm 'image'"):
        AdaptConfig(hf_norm="image")
    assert "hf_norm" not in AdaptConfig().recipe_json()  # the default: fingerprints of earlier runs hold
    assert '"hf_norm": "batch"' in AdaptConfig(hf_norm="batch").recipe_json()
    g = torch.Generator().manual_seed(5)
    lr = torch.rand(2, 3, 8, 8, generator=g)
    lr[1] = 0.5 + 0.05 * (lr[1] - 0.5)  # a near-flat patch beside a textured one
    batch = Batch(lr=lr, up=bicubic_up(lr, 2), index=torch.arange(2))
    sr = batch.up + 0.05 * torch.rand(batch.up.shape, generator=g)
    cfg = AdaptConfig(loss="identity", anchor_weight=0.0, sup_weight=0.0).without_perceptual()
    per_patch = adaptation_loss(sr, batch, None, cfg)[0]
    per_batch = adaptation_loss(sr, batch, None, cfg.replace(hf_norm="batch"))[0]
    assert float(per_batch) < float(per_patch)  # the flat patch's weights shrink
    for b in range(2):  # an image alone gives the same loss either way
        one = Batch(lr=lr[b:b + 1], up=batch.up[b:b + 1], index=torch.zeros(1, dtype=torch.long))
        assert float(adaptation_loss(sr[b:b + 1], one, None, cfg)[0]) == pytest.approx(
            float(adaptation_loss(sr[b:b + 1], one, None, cfg.replace(hf_norm="batch"))[0]), rel=1e-6)
