"""The fast stage-2 step computes what the plain one computes.

``lway_rt.adapt.fast`` re-arranges the step (per-image constants folded into R's kernels,
channels-last, one sync): the reconstructor must equal ``Reconstructor.forward`` and DegAE's
grouped form, the loss must equal ``losses.adaptation_loss`` for every loss/target/weight choice,
and one step must move the weights as ``step.adapt_step`` does. Small R, real pretrained backbone.
"""

from __future__ import annotations

import copy

import pytest
import torch

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.embed import PreparedReconstructor
from lway_rt.adapt.fast import (FastReconstructor, SpeedOptions, fast_adapt_step, fast_adaptation_loss, make_optimizer,
                                prepare_backbone)
from lway_rt.adapt.losses import adaptation_loss
from lway_rt.adapt.patches import AdaptImage, sample_batch
from lway_rt.adapt.step import adapt_step
from lway_rt.adapt.synthetic import synthetic_pairs
from lway_rt.degae.nets import Reconstructor
from lway_rt.errors import InputError

OPTIONS = [SpeedOptions(), SpeedOptions(channels_last=False), SpeedOptions(fold_constants=False),
           SpeedOptions(channels_last=False, fold_constants=False)]


def _add_synthetic(batch, hr_crop, n: int = 2, seed: int = 0):
    """Give ``batch`` synthetic supervised pairs (as the loop does when sup_weight > 0)."""
    import numpy as np

    photo = torch.from_numpy(hr_crop.copy()).permute(2, 0, 1).float() / 255
    batch.sup_lr, batch.sup_hr = synthetic_pairs(np.random.default_rng(seed), [photo], n, batch.lr.shape[-1], 4)
    return batch


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return bool(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) < tol)


@pytest.fixture(scope="module")
def images(hr_crop):
    lr = torch.from_numpy(hr_crop[::4, ::4].copy()).permute(2, 0, 1).unsqueeze(0).float() / 255  # 64x64
    lr2 = torch.from_numpy(hr_crop[1::4, 2::4].copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    return [AdaptImage.from_lr("a", lr, 4), AdaptImage.from_lr("b", lr2.flip(-1), 4)]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: f"cl{int(o.channels_last)}-fold{int(o.fold_constants)}")
@pytest.mark.parametrize("skip", [False, True])
def test_reconstructor_matches_module_and_grouped_form(options, skip):
    torch.manual_seed(1)
    r = Reconstructor(embed_dim=24, width=16, blocks=2, skip=skip).eval().requires_grad_(False)
    e = torch.randn(3, 24)
    clean = torch.rand(5, 3, 20, 24)
    index = torch.tensor([2, 0, 1, 2, 0])
    want = r(clean, e[index])
    fast = FastReconstructor(r, e, options)
    assert _close(fast(clean, index), want)
    # one image's batch through its folded kernels; DegAE's grouped form as the second reference
    one = torch.full((5,), 1, dtype=torch.long)
    want1 = r(clean, e[one])
    assert _close(fast(clean, one, image=1), want1)
    grouped = clean
    x = r.act(r.conv_first(grouped))
    for block in r.blocks:
        x = block.mod.reference(block.res(x), e[one])
    ref = r.conv_last(r.act(r.conv_hr(x))) + (clean if skip else 0)
    assert _close(fast(clean, one, image=1), ref)
    if options.channels_last:
        assert fast(clean, one, image=1).is_contiguous(memory_format=torch.channels_last)


def test_reconstructor_gradient_reaches_the_input_only(recon_net):
    e = torch.randn(1, 24)
    fast = FastReconstructor(recon_net, e)
    clean = torch.rand(2, 3, 16, 16, requires_grad=True)
    clean2 = clean.detach().clone().requires_grad_(True)
    fast(clean, torch.zeros(2, dtype=torch.long)).square().sum().backward()
    recon_net(clean2, e.expand(2, -1)).square().sum().backward()
    assert _close(clean.grad, clean2.grad, 1e-4)
    assert all(p.grad is None for p in recon_net.parameters())


def test_single_image_run_uses_folded_kernels_without_reading_index(recon_net):
    e = torch.randn(1, 24)
    fast = FastReconstructor(recon_net, e)
    clean = torch.rand(2, 3, 16, 16)
    # an index that would be out of range if read: the single-image path must not need it
    out = fast(clean, torch.tensor([5, 7]))
    assert _close(out, recon_net(clean, e.expand(2, -1)))


@pytest.mark.parametrize("kw", [dict(), dict(target="lr"), dict(target="lr-recon"), dict(hf_weight=False), dict(hf_source="target"),
                                dict(hf_mode="channel"), dict(loss="naive"), dict(loss="identity"),
                                dict(anchor_weight=0.5), dict(anchor_weight=0.5, anchor_pool=4),
                                dict(sup_weight=0.5)], ids=str)
def test_loss_matches_adaptation_loss(kw, recon_net, images, hr_crop):
    config = AdaptConfig(patch_size=16, batch_size=3, **kw)
    e = torch.randn(2, 24)
    gen = torch.Generator().manual_seed(3)
    batch = sample_batch(images, 3, 16, 4, gen)
    sr = torch.rand(3, 3, 64, 64)
    if config.anchor_weight:
        batch.anchor = torch.rand(3, 3, 64, 64)
    sup_sr = None
    if config.sup_weight:
        _add_synthetic(batch, hr_crop)
        sup_sr = torch.rand(2, 3, 64, 64)
    want, want_parts = adaptation_loss(sr, batch, PreparedReconstructor(recon_net, e), config, sup_sr)
    got, parts = fast_adaptation_loss(sr, batch, FastReconstructor(recon_net, e), config, None, sup_sr)
    assert abs(float(got) - float(want)) <= 1e-5 * abs(float(want))
    assert set(parts) == set(want_parts)
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in parts.values())


@pytest.mark.parametrize("options,sup_weight", [(SpeedOptions(), 0.0), (SpeedOptions(backbone_channels_last=True), 0.0),
                                                (SpeedOptions(channels_last=False, fused_adam=False), 0.0),
                                                (SpeedOptions(), 0.5), (SpeedOptions(channels_last=False), 0.5)],
                         ids=["fast", "fast-s-nhwc", "nchw-foreach", "fast-sup", "nchw-sup"])
def test_step_moves_weights_like_adapt_step(options, sup_weight, recon_net, images, srvgg_tiny, hr_crop):
    config = AdaptConfig(patch_size=16, batch_size=2, lr=1e-3, sup_weight=sup_weight)
    e = torch.randn(1, 24)
    data = images[:1]
    batch = sample_batch(data, 2, 16, 4, torch.Generator().manual_seed(5))
    if sup_weight:  # the fast step runs S once on test and synthetic patches together; the plain one twice
        _add_synthetic(batch, hr_crop, n=3)
    # SGD: the update is lr x gradient, so equal weights mean equal gradients (Adam's first step,
    # lr x sign(g) for tiny g, would turn rounding differences into +-lr jumps)
    plain = copy.deepcopy(srvgg_tiny)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=config.lr)
    m_plain = adapt_step(plain, opt_plain, batch, PreparedReconstructor(recon_net, e), config)
    quick = copy.deepcopy(srvgg_tiny)
    opt = torch.optim.SGD(quick.parameters(), lr=config.lr)
    call = prepare_backbone(quick, options)
    m = fast_adapt_step(call, opt, batch, FastReconstructor(recon_net, e, options), config, options)
    assert not m["skipped"] and not m_plain["skipped"]
    assert set(m) == set(m_plain)
    assert ("sup" in m) == bool(sup_weight)
    assert m["loss"] == pytest.approx(m_plain["loss"], rel=1e-5)
    assert m["grad_norm"] == pytest.approx(m_plain["grad_norm"], rel=1e-4)
    before = srvgg_tiny.state_dict()
    moved = 0
    for (name, a), b in zip(quick.state_dict().items(), plain.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), name
        moved += int(not torch.equal(a, before[name]))
    assert moved > 0  # the step did update S


def test_optimizer_is_the_loops_adam(srvgg_tiny):
    config = AdaptConfig(lr=3e-5, adam_betas=(0.8, 0.99))
    opt = make_optimizer(srvgg_tiny.parameters(), config)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam) and group["fused"]
    assert group["lr"] == 3e-5 and group["betas"] == (0.8, 0.99)
    assert not make_optimizer(srvgg_tiny.parameters(), config, SpeedOptions(fused_adam=False)).param_groups[0]["fused"]


def test_non_finite_loss_never_reaches_the_weights(recon_net, images, srvgg_tiny):
    config = AdaptConfig(patch_size=16, batch_size=2)
    batch = sample_batch(images[:1], 2, 16, 4, torch.Generator().manual_seed(6))
    batch.up[0, 0, 0, 0] = float("nan")
    model = copy.deepcopy(srvgg_tiny)
    opt = make_optimizer(model.parameters(), config)
    call = prepare_backbone(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    m = fast_adapt_step(call, opt, batch, FastReconstructor(recon_net, torch.randn(1, 24)), config)
    assert m["skipped"] and "non-finite" in m["reason"]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_channels_last_weights_save_and_reload(srvgg_tiny, tmp_path):
    from lway_rt.io.weights import load_state_file, save_safetensors

    model = prepare_backbone(copy.deepcopy(srvgg_tiny), SpeedOptions(backbone_channels_last=True))
    assert any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters())
    save_safetensors(tmp_path / "w.safetensors", model.state_dict(), {})
    state, _ = load_state_file(tmp_path / "w.safetensors")
    assert all(torch.equal(state[k], v) for k, v in srvgg_tiny.state_dict().items())


def test_bad_autocast_is_refused():
    with pytest.raises(InputError, match="autocast"):
        SpeedOptions(autocast="int8")


@pytest.fixture(scope="module")
def srvgg_tiny():
    """The real pretrained realesr-animevideov3 backbone (0.6 M parameters), trainable."""
    from lway_rt.io.store import load_model

    model = copy.deepcopy(load_model("realesr-animevideov3").model).eval()
    return model.requires_grad_(True)


def test_fp16_loss_scaling_gives_unscaled_gradients(recon_net, images, srvgg_tiny):
    """fp16 autocast: the gradients after the step's unscaling match fp32 ones (CPU fp16 kernels are
    slow but exist; only the arithmetic is checked here)."""
    config = AdaptConfig(patch_size=16, batch_size=2, lr=1e-3)
    batch = sample_batch(images[:1], 2, 16, 4, torch.Generator().manual_seed(7))
    e = torch.randn(1, 24)
    norms = {}
    for mode in ("off", "fp16"):
        options = SpeedOptions(autocast=mode)
        model = copy.deepcopy(srvgg_tiny)
        opt = make_optimizer(model.parameters(), config, options)
        m = fast_adapt_step(prepare_backbone(model, options), opt, batch, FastReconstructor(recon_net, e, options),
                            config, options)
        assert not m["skipped"]
        norms[mode] = m["grad_norm"]
    assert norms["fp16"] == pytest.approx(norms["off"], rel=0.05)


def test_autocast_covers_s_and_r_while_the_weight_map_stays_fp32(recon_net, images, srvgg_tiny, monkeypatch):
    """As documented: autocast runs S's and R's forward passes; the wavelet weight map (and the loss's reductions)
    are computed in fp32 outside it (they ran under it, the map from bf16 arithmetic)."""
    from lway_rt.adapt import losses

    seen = {}
    real_hf = losses.hf_weight

    def hf_spy(x, *args, **kwargs):
        seen["hf"] = (torch.is_autocast_enabled("cpu"), x.dtype)
        return real_hf(x, *args, **kwargs)

    monkeypatch.setattr(losses, "hf_weight", hf_spy)
    options = SpeedOptions(autocast="bf16")
    rec = FastReconstructor(recon_net, torch.randn(1, 24), options)

    def recon(x, index):
        out = rec(x, index)
        seen["r"] = out.dtype
        return out

    config = AdaptConfig(patch_size=16, batch_size=2, lr=1e-3)
    batch = sample_batch(images[:1], 2, 16, 4, torch.Generator().manual_seed(7))
    model = copy.deepcopy(srvgg_tiny)
    m = fast_adapt_step(prepare_backbone(model, options), make_optimizer(model.parameters(), config, options), batch,
                        recon, config, options)
    assert not m["skipped"]
    assert seen["r"] == torch.bfloat16 and seen["hf"] == (False, torch.float32)
