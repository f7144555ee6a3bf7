"""The weighted perceptual term of stage 2 (``--perceptual trunk-l1 | lpips``).

The distances must be what they say (an L1 of trunk features; LPIPS), weighted by the wavelet map pixel for pixel
or pooled to each LPIPS layer; the step must add ``perceptual_scale`` times it, move only S (the trunk, E and R stay
bit-identical), agree between the plain and the fast step, and the CLI must run it end to end and refuse it where
it cannot run.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.embed import PreparedReconstructor
from lway_rt.adapt.fast import FastReconstructor, SpeedOptions, fast_adapt_step, prepare_backbone
from lway_rt.adapt.losses import adaptation_loss
from lway_rt.adapt.patches import AdaptImage, sample_batch
from lway_rt.adapt.perceptual import Perceptual, build_perceptual
from lway_rt.adapt.step import adapt_step
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.cli import main
from lway_rt.degae.lpips import LPIPSAlex
from lway_rt.errors import InputError


def _trunk(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.PReLU(8), torch.nn.Conv2d(8, 8, 3, padding=1))


def _tiny_s(seed=0):
    torch.manual_seed(seed)
    return SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).eval()


@pytest.fixture(scope="module")
def images(hr_crop):
    lr = torch.from_numpy(hr_crop[::4, ::4].copy()).permute(2, 0, 1).unsqueeze(0).float() / 255  # 64x64
    return [AdaptImage.from_lr("a", lr, 4)]


def test_trunk_l1_is_the_weighted_l1_of_the_features():
    net = _trunk()
    term = Perceptual("trunk-l1", net)
    p, t = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        plain = F.l1_loss(net(p), net(t))
        assert float(term(p, t, None)) == pytest.approx(float(plain), rel=1e-6)
        assert float(term(p, t, torch.ones(2, 3, 16, 16))) == pytest.approx(float(plain), rel=1e-6)
        w = torch.zeros(2, 3, 16, 16)
        w[..., :8, :] = 1.0
        half = (net(p) - net(t)).abs().mean(1)[..., :8, :].sum() / (2 * 16 * 16)
        assert float(term(p, t, w)) == pytest.approx(float(half), rel=1e-5)
        far = t.clone()
        far[..., 12:, :] += 0.5  # a difference only where the weight is 0 (beyond the 3x3 convs' reach) costs nothing
        assert float(term(far, t, w)) == 0.0


def test_gradient_reaches_the_prediction_not_the_network():
    net = _trunk()
    term = Perceptual("trunk-l1", net)
    p = torch.rand(1, 3, 16, 16, requires_grad=True)
    term(p, torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(q.grad is None and not q.requires_grad for q in net.parameters())


def test_weighted_lpips_pools_the_map_to_each_layer():
    torch.manual_seed(1)
    net = LPIPSAlex().eval()
    for lin in net.lin:  # LPIPS's linear layers are non-negative
        lin.weight.data.abs_()
    term = Perceptual("lpips", net)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = float(net(x, y).mean())
        assert float(term(x, y, None)) == pytest.approx(ref, rel=1e-5)
        assert float(term(x, y, torch.ones(2, 3, 64, 64))) == pytest.approx(ref, rel=1e-5)
        assert float(term(x, y, torch.full((2, 3, 64, 64), 0.25))) == pytest.approx(0.25 * ref, rel=1e-5)
        w = torch.zeros(2, 1, 64, 64)
        w[..., :32] = 1.0
        assert 0.0 < float(term(x, y, w)) < ref
        assert float(term(x, y, torch.zeros(2, 1, 64, 64))) == 0.0


def test_step_adds_the_scaled_term_and_moves_only_s(recon_net, images):
    config = AdaptConfig(patch_size=16, batch_size=2, lr=1e-3, sup_weight=0.0, perceptual="trunk-l1",
                         perceptual_weight=0.5)
    trunk = _trunk(2)
    term = Perceptual("trunk-l1", trunk)
    recon = PreparedReconstructor(recon_net, torch.randn(1, 24))
    batch = sample_batch(images, 2, 16, 4, torch.Generator().manual_seed(3))
    s = _tiny_s()
    with torch.no_grad():
        without = float(adaptation_loss(s(batch.lr), batch, recon, config.without_perceptual())[0])
        loss, parts = adaptation_loss(s(batch.lr), batch, recon, config, perceptual=term)
    assert parts["perc"] > 0 and float(loss) == pytest.approx(without + 0.5 * parts["perc"], rel=1e-6)
    with pytest.raises(ValueError, match="needs its network"):
        adaptation_loss(s(batch.lr), batch, recon, config)
    trunk_before = copy.deepcopy(trunk.state_dict())
    r_before = copy.deepcopy(recon_net.state_dict())
    s_before = copy.deepcopy(s.state_dict())
    m = adapt_step(s, torch.optim.Adam(s.parameters(), lr=config.lr), batch, recon, config, perceptual=term)
    assert not m["skipped"] and m["perc"] == pytest.approx(parts["perc"], rel=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(s.state_dict().values(), s_before.values()))
    for k, v in trunk.state_dict().items():
        assert torch.equal(v, trunk_before[k]), k
    for k, v in recon_net.state_dict().items():
        assert torch.equal(v, r_before[k]), k


def test_fast_step_matches_the_plain_step_with_the_term(recon_net, images):
    config = AdaptConfig(patch_size=16, batch_size=3, lr=1e-3, sup_weight=0.0, anchor_weight=0.3, perceptual="trunk-l1")
    term = Perceptual("trunk-l1", _trunk(4))
    e = torch.randn(1, 24)
    batch = sample_batch(images, 3, 16, 4, torch.Generator().manual_seed(5))
    base = _tiny_s(1)
    with torch.no_grad():
        batch.anchor = base(batch.lr)
    plain = copy.deepcopy(base)
    m_plain = adapt_step(plain, torch.optim.SGD(plain.parameters(), lr=config.lr), batch,
                         PreparedReconstructor(recon_net, e), config, perceptual=term)
    quick = copy.deepcopy(base)
    options = SpeedOptions()
    m = fast_adapt_step(prepare_backbone(quick, options), torch.optim.SGD(quick.parameters(), lr=config.lr), batch,
                        FastReconstructor(recon_net, e, options), config, options, perceptual=term)
    assert m["perc"] == pytest.approx(m_plain["perc"], rel=1e-5) and m["perc"] > 0
    assert m["loss"] == pytest.approx(m_plain["loss"], rel=1e-5)
    for (name, a), b in zip(quick.state_dict().items(), plain.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), name


def test_config_defaults_and_refusals():
    assert AdaptConfig().perceptual == "none" and AdaptConfig().perceptual_scale == 0.0
    assert AdaptConfig(perceptual="trunk-l1").perceptual_scale == 0.07
    assert AdaptConfig(perceptual="trunk-l1", perceptual_weight=0.3).perceptual_scale == 0.3
    assert AdaptConfig(perceptual="lpips", lpips_weights=["a.pth"]).perceptual_scale == 1.0
    # an unset weight follows the kind, also through replace()
    assert AdaptConfig().replace(perceptual="trunk-l1").perceptual_scale == 0.07
    assert AdaptConfig.from_dict(AdaptConfig(perceptual="lpips", lpips_weights=["a.pth"]).to_dict()).lpips_weights == ("a.pth",)
    with pytest.raises(InputError, match="unknown perceptual term 'vgg'"):
        AdaptConfig(perceptual="vgg")
    with pytest.raises(InputError, match="needs its weights .* --lpips-weights"):
        AdaptConfig(perceptual="lpips")
    with pytest.raises(InputError, match="perceptual_weight must be a finite number >= 0"):
        AdaptConfig(perceptual="trunk-l1", perceptual_weight=-1.0)
    with pytest.raises(InputError, match="supervised loss has no self-supervised prediction"):
        AdaptConfig(loss="supervised", perceptual="trunk-l1")
    with pytest.raises(InputError, match="without a perceptual term: add --perceptual"):
        AdaptConfig(perceptual_weight=0.5)
    with pytest.raises(InputError, match="without a perceptual term"):
        AdaptConfig(lpips_weights=["a.pth"])
    with pytest.raises(InputError, match="use --perceptual lpips with them"):
        AdaptConfig(perceptual="trunk-l1", lpips_weights=["a.pth"])
    assert AdaptConfig(perceptual_weight=0.0).perceptual_scale == 0.0  # an explicit 0 with no term is harmless
    assert build_perceptual("none") is None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, hr_crop, lpips_file):
    """A tiny S, a tiny stage 1 (on the store's real trunk), one 48x48 LR input and random LPIPS weights."""
    from PIL import Image

    from lway_rt.degae import Stage1, save_stage1
    from lway_rt.io.weights import save_safetensors

    root = tmp_path_factory.mktemp("perceptual")
    save_safetensors(root / "tiny.safetensors", _tiny_s().state_dict(), {"name": "tiny"})
    save_stage1(root / "stage1.safetensors", Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16),
                                                          seed=3).freeze())
    Image.fromarray(hr_crop[:192:4, :192:4]).save(root / "lr.png")
    lpips_file(root / "lpips.pth")
    return root


@pytest.mark.parametrize("extra,kind", [
    (["--perceptual", "trunk-l1"], "trunk-l1"),
    (["--perceptual", "trunk-l1", "--loss", "naive"], "trunk-l1"),  # no stage 1: the default trunk from the store
    (["--perceptual", "lpips", "--perceptual-weight", "0.5", "--lpips-weights", "LPIPS"], "lpips"),
])
def test_cli_runs_the_term_end_to_end(tiny, tmp_path, extra, kind):
    out = tmp_path / "out"
    extra = [str(tiny / "lpips.pth") if a == "LPIPS" else a for a in extra]
    # the naive loss reads no stage 1 (--stage1 with it is refused): its trunk comes from the store
    stage1 = [] if "naive" in extra else ["--stage1", str(tiny / "stage1.safetensors")]
    res = CliRunner().invoke(main, ["adapt", str(tiny / "lr.png"), "-m", str(tiny / "tiny.safetensors"), "-o", str(out),
                                    *stage1, "--iterations", "3", "--patch-size", "16",
                                    "--batch-size", "2", "--sup-weight", "0", *extra])
    assert res.exit_code == 0, res.output
    assert f"perceptual term: {kind}" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["perceptual"]["kind"] == kind and len(report["perceptual"]["sha256"]) == 64
    assert report["perceptual"]["weight"] == (0.5 if kind == "lpips" else 0.07)
    assert all(h["perc"] > 0 for h in report["history"])


def test_cli_refuses_what_cannot_run(tiny, tmp_path):
    base = ["adapt", str(tiny / "lr.png"), "-m", str(tiny / "tiny.safetensors"), "-o", str(tmp_path / "o"),
            "--stage1", str(tiny / "stage1.safetensors")]
    res = CliRunner().invoke(main, [*base, "--perceptual", "lpips"])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "--lpips-weights" in res.output
    res = CliRunner().invoke(main, [*base, "--perceptual", "lpips", "--lpips-weights", str(tiny / "lr.png")])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "LPIPS weights" in res.output, res.output
    res = CliRunner().invoke(main, [*base, "--perceptual", "vgg"])
    assert res.exit_code != 0 and "'vgg' is not one of 'none', 'trunk-l1', 'lpips'" in res.output
