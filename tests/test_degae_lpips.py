"""LPIPS-AlexNet from user-supplied weight files (both naming schemes), and training with it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lway_rt.degae import load_stage1
from lway_rt.degae.lpips import LPIPSAlex, load_lpips
from lway_rt.degae.train import TrainConfig, train
from lway_rt.errors import InputError, ModelError

SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}  # lpips package: features index -> slice number


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    ref = LPIPSAlex()
    for lin in ref.lin:
        torch.nn.init.uniform_(lin.weight, 0.0, 0.2)  # LPIPS linear weights are non-negative
    d = tmp_path_factory.mktemp("lpips")
    full = {f"net.slice{SLICE_OF[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v
            for k, v in ref.state_dict().items() if k.startswith("features.")}
    full.update({f"lin{i}.model.1.weight": lin.weight.detach().clone() for i, lin in enumerate(ref.lin)})
    full["scaling_layer.shift"] = ref.shift.clone()
    torch.save(full, d / "lpips_alex_full.pth")
    torch.save({k: v for k, v in ref.state_dict().items() if k.startswith("features.")}, d / "alexnet_features.pth")
    torch.save({f"lin{i}.model.1.weight": lin.weight.detach().clone() for i, lin in enumerate(ref.lin)}, d / "alex.pth")
    return d, ref


def test_both_naming_schemes_load_the_same_metric(weights):
    d, ref = weights
    a, ha = load_lpips([d / "lpips_alex_full.pth"])
    b, hb = load_lpips([d / "alexnet_features.pth", d / "alex.pth"])
    assert ha == hb
    x = torch.rand(2, 3, 64, 64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    torch.testing.assert_close(a(x, y), b(x, y))
    torch.testing.assert_close(a(x, y), ref(x, y))


def test_metric_properties(weights):
    d, _ = weights
    net, _ = load_lpips([d / "lpips_alex_full.pth"])
    x = torch.rand(2, 3, 64, 64)
    assert torch.all(net(x, x).abs() < 1e-6)
    small = net(x, (x + 0.02 * torch.randn_like(x)).clamp(0, 1))
    large = net(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1))
    assert torch.all(small > 0) and torch.all(large > small)
    y = x.clone().requires_grad_(True)
    net(x, (y + 0.1).clamp(0, 1)).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in net.parameters())


def test_incomplete_weights_are_refused(weights, tmp_path):
    d, _ = weights
    with pytest.raises(ModelError, match="linear layers"):
        load_lpips([d / "alexnet_features.pth"])
    with pytest.raises(ModelError, match="AlexNet backbone"):
        load_lpips([d / "alex.pth"])
    with pytest.raises(ModelError, match="does not exist"):
        load_lpips([tmp_path / "nope.pth"])
    with pytest.raises(InputError, match="--lpips-weights"):
        TrainConfig(perceptual="lpips")


def test_training_with_lpips_records_it(weights, tmp_path, astronaut):
    d, _ = weights
    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(astronaut[:96, :96]).save(data / "a.png")
    Image.fromarray(astronaut[200:296, 200:296]).save(data / "b.png")
    out = tmp_path / "s1.safetensors"
    cfg = TrainConfig(out=str(out), data=str(data), crop=64, batch=2, iters=2, ckpt_every=2, embed_dim=16, width=8,
                      blocks=2, head_widths=(16, 16, 16), perceptual="lpips", w_perceptual=0.1,
                      lpips_weights=(str(d / "lpips_alex_full.pth"),))
    res = train(cfg)
    assert "perc" in res.last and res.last["perc"] > 0
    meta = load_stage1(out).meta
    assert meta["perceptual_ran"].startswith("LPIPS-AlexNet")
    assert meta["recipe"]["lpips_weights"] == ["lpips_alex_full.pth"]


def test_a_crop_too_small_for_lpips_is_refused_in_a_line(weights, tmp_path, astronaut):
    """--crop 24 or 28 with --perceptual lpips was accepted, then failed in AlexNet's max-pool with a traceback.
    31 px is the least LPIPS-AlexNet takes; with round trips (on by default) the crop is a multiple of 4: 32."""
    from lway_rt.degae.degrade import SynthConfig
    from lway_rt.degae.lpips import LPIPSAlex

    with pytest.raises(RuntimeError):  # what the refused sizes did
        LPIPSAlex()(torch.rand(1, 3, 30, 30), torch.rand(1, 3, 30, 30))
    LPIPSAlex()(torch.rand(1, 3, 31, 31), torch.rand(1, 3, 31, 31))
    d, _ = weights
    kw = dict(perceptual="lpips", lpips_weights=(str(d / "lpips_alex_full.pth"),))
    for crop in (24, 28):
        with pytest.raises(InputError, match=rf"--perceptual lpips needs --crop 32 or more .* got {crop}"):
            TrainConfig(crop=crop, **kw)
    with pytest.raises(InputError, match=r"--perceptual lpips needs --crop 31 or more .* got 30"):
        TrainConfig(crop=30, synth=SynthConfig(p_roundtrip=0.0), **kw)
    TrainConfig(crop=31, synth=SynthConfig(p_roundtrip=0.0), **kw)
    TrainConfig(crop=24, w_perceptual=0.0, **kw)  # LPIPS never runs
    data = tmp_path / "photos"
    data.mkdir()
    Image.fromarray(astronaut[:96, :96]).save(data / "a.png")
    Image.fromarray(astronaut[200:296, 200:296]).save(data / "b.png")
    res = train(TrainConfig(out=str(tmp_path / "s1.safetensors"), data=str(data), crop=32, batch=2, iters=1, embed_dim=16,
                            width=8, blocks=2, head_widths=(16, 16, 16), threads=1, **kw))
    assert res.last["perc"] > 0  # the least crop allowed trains
    from lway_rt.cli import main
    from click.testing import CliRunner

    res = CliRunner().invoke(main, ["train-degae", "--crop", "28", "--perceptual", "lpips", "--lpips-weights",
                                    str(d / "lpips_alex_full.pth"), "--out", str(tmp_path / "c.safetensors")])
    assert res.exit_code == 1 and res.output.startswith("error: --perceptual lpips needs --crop 32") \
        and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_a_torchscript_lpips_file_is_named_without_torchs_warning(tmp_path):
    """It was 'cannot read LPIPS weights (RuntimeError)', below torch's two-line warning about the archive."""
    import warnings

    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 1, 1)), tmp_path / "scripted.pth")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ModelError, match=r"scripted.pth is a TorchScript module \(torch.jit.save\), not a state "
                                             r"dict: save its weights with torch.save\(torch.jit.load"):
            load_lpips([tmp_path / "scripted.pth"])
    assert not [w for w in seen if "TorchScript archive" in str(w.message)], [str(w.message) for w in seen]
