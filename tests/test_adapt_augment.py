"""``augment='dihedral'``: S sees each test patch flipped/turned and its output is turned back before the loss.

The turns must be exact inverses, S must really see the turned patch (the loss is that of the turned-back output,
which differs from the plain one for a network that is not rotation-equivariant), the fast step must agree with
the plain one, and a run with turns must resume to the uninterrupted run's weights.
"""

from __future__ import annotations

import copy

import pytest
import torch

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.embed import PreparedReconstructor
from lway_rt.adapt.fast import FastReconstructor, SpeedOptions, fast_adapt_step, prepare_backbone
from lway_rt.adapt.losses import adaptation_loss
from lway_rt.adapt.patches import DIHEDRAL, AdaptImage, dihedral, sample_batch, undo_dihedral
from lway_rt.adapt.step import adapt_step
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.errors import InputError


@pytest.fixture(scope="module")
def images(hr_crop):
    lr = torch.from_numpy(hr_crop[::4, ::4].copy()).permute(2, 0, 1).unsqueeze(0).float() / 255  # 64x64
    return [AdaptImage.from_lr("a", lr, 4)]


def _tiny_s(seed=0):
    torch.manual_seed(seed)
    return SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).eval()


def test_the_eight_turns_are_distinct_and_undone_exactly():
    x = torch.rand(DIHEDRAL, 3, 8, 8)
    same = x[:1].expand(DIHEDRAL, -1, -1, -1)
    codes = torch.arange(DIHEDRAL)
    turned = dihedral(same, codes)
    assert len({tuple(t.flatten().tolist()) for t in turned}) == DIHEDRAL  # 8 different pictures of one patch
    assert torch.equal(turned[0], x[0])  # code 0 is the patch as cut
    assert torch.equal(turned[1], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert torch.equal(turned[4], x[0].flip(-1))
    assert torch.equal(undo_dihedral(dihedral(x, codes), codes), x)
    big = torch.rand(DIHEDRAL, 3, 32, 32)  # S's output is scale x larger than its input: undo works at any size
    assert torch.equal(dihedral(undo_dihedral(big, codes), codes), big)
    assert dihedral(x, None) is x and undo_dihedral(x, None) is x


def test_step_takes_the_loss_of_the_turned_back_output(recon_net, images):
    config = AdaptConfig(patch_size=16, batch_size=4, lr=1e-3, sup_weight=0.0)
    e = torch.randn(1, 24)
    batch = sample_batch(images, 4, 16, 4, torch.Generator().manual_seed(2))
    batch.turn = torch.tensor([1, 2, 5, 7])
    recon = PreparedReconstructor(recon_net, e)
    s = _tiny_s()
    with torch.no_grad():
        want = float(adaptation_loss(undo_dihedral(s(dihedral(batch.lr, batch.turn)), batch.turn), batch, recon, config)[0])
        plain = float(adaptation_loss(s(batch.lr), batch, recon, config)[0])
    assert abs(want - plain) > 1e-4 * plain  # S is not rotation-equivariant: the turns change what it sees
    m = adapt_step(s, torch.optim.SGD(s.parameters(), lr=config.lr), batch, recon, config)
    assert not m["skipped"] and m["loss"] == pytest.approx(want, rel=1e-6)


def test_fast_step_turns_like_the_plain_step(recon_net, images):
    config = AdaptConfig(patch_size=16, batch_size=3, lr=1e-3, sup_weight=0.0, anchor_weight=0.5)
    e = torch.randn(1, 24)
    batch = sample_batch(images, 3, 16, 4, torch.Generator().manual_seed(4))
    batch.turn = torch.tensor([3, 4, 6])
    base = _tiny_s(1)
    with torch.no_grad():
        batch.anchor = base(batch.lr)  # the anchor: the unadapted output on the patch as cut
    plain = copy.deepcopy(base)
    m_plain = adapt_step(plain, torch.optim.SGD(plain.parameters(), lr=config.lr), batch,
                         PreparedReconstructor(recon_net, e), config)
    quick = copy.deepcopy(base)
    options = SpeedOptions()
    m = fast_adapt_step(prepare_backbone(quick, options), torch.optim.SGD(quick.parameters(), lr=config.lr), batch,
                        FastReconstructor(recon_net, e, options), config, options)
    assert m["loss"] == pytest.approx(m_plain["loss"], rel=1e-5)
    assert m["anchor"] > 0  # a turned output compared with the anchor as cut: S does not give the same picture
    for (name, a), b in zip(quick.state_dict().items(), plain.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), name


def test_config_and_cli_accept_only_known_augments():
    assert AdaptConfig().augment == "none"
    assert AdaptConfig(augment="dihedral").to_dict()["augment"] == "dihedral"
    with pytest.raises(InputError, match="unknown augment 'rot'; use one of none, dihedral"):
        AdaptConfig(augment="rot")
    from click.testing import CliRunner

    from lway_rt.cli import main

    res = CliRunner().invoke(main, ["adapt", "x.png", "-m", "realesr-animevideov3", "-o", "o", "--augment", "flip"])
    assert res.exit_code != 0 and "'flip' is not one of 'none', 'dihedral'" in res.output
