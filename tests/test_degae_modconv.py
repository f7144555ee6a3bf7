"""The non-fused modulated conv equals DegAE's grouped-conv form; R's prepare/apply split is exact."""

from __future__ import annotations

import pytest
import torch

from lway_rt.degae.modconv import ModulatedConv, demodulation, grouped_modulated_conv
from lway_rt.degae.nets import Reconstructor


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
@pytest.mark.parametrize("channels,embed", [(16, 32), (64, 512)])
def test_nonfused_equals_grouped(batch, channels, embed):
    torch.manual_seed(batch * 7 + channels)
    m = ModulatedConv(channels, embed).double()
    with torch.no_grad():
        m.modulation.weight.mul_(3.0)  # styles far from 1, so the demodulation matters
    x = torch.randn(batch, channels, 19, 23, dtype=torch.float64)
    e = torch.randn(batch, embed, dtype=torch.float64)
    torch.testing.assert_close(m(x, e), m.reference(x, e), atol=1e-5, rtol=0)
    # and in float32, as it runs in practice
    m32, x32, e32 = m.float(), x.float(), e.float()
    torch.testing.assert_close(m32(x32, e32), m32.reference(x32, e32), atol=1e-5, rtol=1e-4)


def test_images_in_a_batch_are_independent():
    torch.manual_seed(0)
    w = torch.randn(8, 8, 3, 3)
    style = torch.randn(3, 8)
    x = torch.randn(3, 8, 10, 10)
    full = grouped_modulated_conv(x, w, style)
    for i in range(3):
        torch.testing.assert_close(grouped_modulated_conv(x[i:i + 1], w, style[i:i + 1]), full[i:i + 1])


def test_demodulation_normalises_each_output_kernel():
    torch.manual_seed(1)
    w = torch.randn(6, 4, 3, 3)
    style = torch.randn(2, 4)
    d = demodulation(w, style)
    wmod = w[None] * style[:, None, :, None, None] * d[:, :, None, None, None]
    norms = wmod.pow(2).sum(dim=(2, 3, 4))
    torch.testing.assert_close(norms, torch.ones_like(norms), atol=1e-5, rtol=0)


@pytest.mark.parametrize("skip", [False, True])
def test_reconstructor_prepare_apply_equals_forward(skip):
    torch.manual_seed(2)
    r = Reconstructor(embed_dim=24, width=16, blocks=3, skip=skip).eval()
    clean = torch.rand(2, 3, 30, 26)
    e = torch.randn(2, 24)
    prepared = r.prepare(e)
    assert len(prepared) == 3
    out = r(clean, e)
    assert out.shape == clean.shape
    torch.testing.assert_close(r.apply(clean, prepared), out, atol=0, rtol=0)
    torch.testing.assert_close(r(clean, e), out, atol=0, rtol=0)  # deterministic: no noise injection
    # the embedding actually changes the output
    assert (r(clean, e.flip(0)) - out).abs().max() > 1e-4
    with pytest.raises(ValueError, match="embedding must be"):
        r.prepare(torch.randn(2, 23))
