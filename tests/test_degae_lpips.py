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
