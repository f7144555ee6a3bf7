"""The CPU-only arrangements of the fast step compute what they replace.

``FastReconstructor`` runs R one patch at a time on the CPU (``SpeedOptions.recon_chunk``) and the
step gives S's PReLUs a vectorised backward (``_FastPReLU``, ``SpeedOptions.fast_prelu``): same
outputs, same gradients, same update as the whole-batch R and ATen's PReLU.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.fast import (FastReconstructor, SpeedOptions, _backbone_mode, _FastPReLU, _FastPReLUMode,
                                fast_adapt_step, prepare_backbone)
from lway_rt.adapt.patches import AdaptImage, sample_batch
from lway_rt.degae.nets import Reconstructor
from lway_rt.errors import InputError


@pytest.mark.parametrize("channels,dtype,channels_last", [(8, torch.float64, True), (8, torch.float32, False),
                                                          (1, torch.float64, False), (1, torch.float32, True)])
def test_fast_prelu_matches_aten(channels, dtype, channels_last):
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 6, dtype=dtype)
    x[0, :, 0, :2] = 0.0  # the kink: ATen's convention (slope side) must be kept
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.rand(channels, dtype=dtype)
    g = torch.randn(x.shape, dtype=dtype)
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    y1 = F.prelu(x1, w1)
    y1.backward(g)
    y2 = _FastPReLU.apply(x2, w2)
    y2.backward(g)
    assert torch.equal(y1, y2)
    assert torch.equal(x1.grad, x2.grad)  # exact: the slope map is 1 or the slope itself
    assert torch.allclose(w1.grad, w2.grad, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=0)
    if channels_last:
        assert x2.grad.is_contiguous(memory_format=torch.channels_last)


def test_fast_prelu_gradcheck():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    x[x.abs() < 1e-3] = 0.5  # away from the kink, where finite differences are meaningless
    w = torch.rand(3, dtype=torch.float64)
    assert torch.autograd.gradcheck(_FastPReLU.apply, (x.requires_grad_(), w.requires_grad_()))


def test_prelu_mode_redirects_only_prelu():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.PReLU(4), torch.nn.ReLU())
    x = torch.rand(2, 3, 8, 8)
    want = m(x)
    with _FastPReLUMode():
        got = m(x)
        plain = F.prelu(x, torch.full((3,), 0.2))  # plain tensors: still the same forward
    assert torch.equal(got, want)
    assert type(got.grad_fn.next_functions[0][0]).__name__ == "_FastPReLUBackward"
    assert torch.equal(plain, F.prelu(x, torch.full((3,), 0.2)))


def test_prelu_mode_is_cpu_default_and_off_with_autocast_or_compile():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert isinstance(_backbone_mode(SpeedOptions(), cpu), _FastPReLUMode)
    assert not isinstance(_backbone_mode(SpeedOptions(), gpu), _FastPReLUMode)
    assert isinstance(_backbone_mode(SpeedOptions(fast_prelu=True), gpu), _FastPReLUMode)
    assert not isinstance(_backbone_mode(SpeedOptions(fast_prelu=False), cpu), _FastPReLUMode)
    assert not isinstance(_backbone_mode(SpeedOptions(autocast="bf16"), cpu), _FastPReLUMode)
    assert not isinstance(_backbone_mode(SpeedOptions(compile=True), cpu), _FastPReLUMode)


def test_recon_chunk_option():
    assert SpeedOptions().chunk_for(torch.device("cpu")) == 1
    assert SpeedOptions().chunk_for(torch.device("cuda")) == 0
    assert SpeedOptions(recon_chunk=3).chunk_for(torch.device("cuda")) == 3
    with pytest.raises(InputError):
        SpeedOptions(recon_chunk=-1)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("mixed", [False, True], ids=["one-image", "mixed"])
def test_chunked_reconstructor_matches_whole_batch(channels_last, mixed):
    torch.manual_seed(2)
    r = Reconstructor(embed_dim=24, width=16, blocks=2, skip=True).eval().requires_grad_(False).double()
    e = torch.randn(3 if mixed else 1, 24, dtype=torch.float64)
    index = torch.tensor([2, 0, 1, 2, 0]) if mixed else torch.zeros(5, dtype=torch.long)
    clean = torch.rand(5, 3, 20, 24, dtype=torch.float64)
    g = torch.randn(5, 3, 20, 24, dtype=torch.float64)
    outs, grads = [], []
    for chunk in (0, 1, 2, 5, 8):
        fast = FastReconstructor(r, e, SpeedOptions(channels_last=channels_last, recon_chunk=chunk))
        x = clean.clone().requires_grad_()
        out = fast(x, index)
        out.backward(g)
        outs.append(out)
        grads.append(x.grad)
        if channels_last:
            assert out.is_contiguous(memory_format=torch.channels_last)
    for out, grad in zip(outs[1:], grads[1:]):
        assert torch.allclose(out, outs[0], rtol=1e-12, atol=1e-14)
        assert torch.allclose(grad, grads[0], rtol=1e-12, atol=1e-14)


@pytest.fixture(scope="module")
def backbone():
    """The real pretrained realesr-animevideov3 backbone (PReLU activations), in float64."""
    from lway_rt.io.store import load_model

    return copy.deepcopy(load_model("realesr-animevideov3").model).eval().double().requires_grad_(True)


def test_step_with_cpu_paths_moves_weights_like_without(backbone, hr_crop):
    torch.manual_seed(3)
    lr = torch.from_numpy(hr_crop[::4, ::4].copy()).permute(2, 0, 1).unsqueeze(0).double() / 255
    images = [AdaptImage.from_lr("a", lr, 4)]
    config = AdaptConfig(patch_size=16, batch_size=3, lr=1e-3)
    batch = sample_batch(images, 3, 16, 4, torch.Generator().manual_seed(4))
    r = Reconstructor(embed_dim=24, width=16, blocks=2, skip=True).eval().requires_grad_(False).double()
    e = torch.randn(1, 24, dtype=torch.float64)
    results = {}
    for name, options in {"new": SpeedOptions(), "whole": SpeedOptions(recon_chunk=0, fast_prelu=False)}.items():
        model = copy.deepcopy(backbone)
        opt = torch.optim.SGD(model.parameters(), lr=config.lr)  # update = lr x gradient
        m = fast_adapt_step(prepare_backbone(model, options), opt, batch, FastReconstructor(r, e, options), config,
                            options)
        assert not m["skipped"]
        results[name] = (m, model.state_dict())
    (m_new, new), (m_old, old) = results["new"], results["whole"]
    assert m_new["loss"] == pytest.approx(m_old["loss"], rel=1e-12)
    assert m_new["grad_norm"] == pytest.approx(m_old["grad_norm"], rel=1e-10)
    for name, a in new.items():
        assert torch.allclose(a, old[name], rtol=1e-10, atol=1e-13), name
