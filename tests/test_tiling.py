"""Tiled inference: tile layout, blend weights, exactness for local models, and agreement with a
whole-image pass for real pretrained networks (the tolerances below are measured values with margin)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from lway_rt.archs.rrdbnet import RRDBNet
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.io.images import LoadedImage, resize_bicubic, to_tensor
from lway_rt.io.store import load_model
from lway_rt.runtime.tiling import TileConfig, axis_tile, blend_weights, pad_to_multiple, tile_starts, upscale_tensor
from lway_rt.upscale import UpscaleConfig, upscale_image


@pytest.fixture(scope="module")
def lr_photo(astronaut) -> torch.Tensor:
    """The astronaut photo bicubic-downscaled x4 (128x128), as a 1x3xHxW tensor."""
    return to_tensor(resize_bicubic(astronaut, (128, 128)))


@pytest.mark.parametrize("length", [8, 37, 64, 100, 257])
@pytest.mark.parametrize("tile,overlap", [(16, 4), (24, 8), (32, 0), (64, 16)])
@pytest.mark.parametrize("multiple", [1, 2, 4])
def test_tile_starts_cover_align_and_overlap(length, tile, overlap, multiple):
    length = -(-length // multiple) * multiple
    starts = tile_starts(length, tile, overlap, multiple)
    t = min(tile, length)
    assert starts[0] == 0 and starts[-1] + t == length
    assert all(s % multiple == 0 for s in starts)
    assert all(b > a and a + t - b >= overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("length", [37, 100, 257, 513, 1000, 1500, 4000])
@pytest.mark.parametrize("tile,overlap", [(24, 8), (64, 16), (512, 32)])
@pytest.mark.parametrize("multiple", [1, 2, 4])
def test_axis_tile_covers_with_the_overlap_and_computes_less(length, tile, overlap, multiple):
    """Sized tiles: as many as full tiles would need, never larger than the tile, at least the requested overlap
    (twice it where that fits in the tile), and never more pixels computed than full-size tiles."""
    length = -(-length // multiple) * multiple
    tile = tile // multiple * multiple
    t = axis_tile(length, tile, overlap, multiple)
    starts = tile_starts(length, t, overlap, multiple)
    assert t <= min(tile, length) and t % multiple == 0 and starts[0] == 0 and starts[-1] + t == length
    gaps = [a + t - b for a, b in zip(starts, starts[1:])]
    assert all(g >= overlap for g in gaps)
    assert len(starts) == len(tile_starts(length, min(tile, length), overlap, multiple))
    if t < tile:  # made smaller than the tile: it kept twice the overlap
        assert all(g >= 2 * overlap for g in gaps), gaps


def test_sized_tiles_keep_seams_hidden_with_a_small_overlap(astronaut):
    """--tile-overlap 8: full tiles hid their seams in the leftover overlap; sized tiles keep at least 64 px, so the
    tiled output stays within a level of one pass (it was 7 levels off before that floor)."""
    desc = load_model("realesr-animevideov3")
    x = to_tensor(resize_bicubic(astronaut, (128, 128)))[..., :97, :130]
    whole = upscale_tensor(desc.model, x, 4, TileConfig(0)).clamp(0, 1)
    for tile in (96, 80):
        diff = (upscale_tensor(desc.model, x, 4, TileConfig(tile, 8)).clamp(0, 1) - whole).abs()
        assert float(diff.max()) * 255 < 1.0, (tile, float(diff.max()) * 255)


def test_a_tile_no_larger_than_the_size_multiple_still_finishes():
    """--tile 5 --tile-overlap 2 on a model that needs multiples of 4: the tile is 4 px, no overlap fits (this looped
    for ever); tile_starts says so instead of looping."""
    x = torch.rand(1, 3, 33, 65)
    y = upscale_tensor(lambda z: z, x, 1, TileConfig(5, 2), multiple=4)
    assert y.shape == x.shape and torch.equal(y, x)
    with pytest.raises(ValueError, match="cannot start on multiples of 4"):
        tile_starts(36, 4, 1, 4)


def test_sized_tiles_cost_less_than_full_ones_on_a_common_photo_size():
    """1500x1000 at the default 512 / 32: full tiles computed 2.1x the image's pixels; sized ones 1.27x."""
    def work(axis):
        return np.prod([axis(n) * len(tile_starts(n, axis(n), 32)) for n in (1500, 1000)]) / 1.5e6

    full, sized = work(lambda n: min(512, n)), work(lambda n: axis_tile(n, 512, 32))
    assert full > 2.0 and sized < 1.3


@pytest.mark.parametrize("mode", ["linear", "crop"])
@pytest.mark.parametrize("length,tile,overlap,scale", [(100, 32, 8, 4), (64, 40, 8, 2), (257, 64, 16, 3), (50, 50, 10, 4),
                                                       (90, 21, 10, 1)])
def test_blend_weights_sum_to_one(mode, length, tile, overlap, scale):
    starts = tile_starts(length, tile, overlap)
    ws = blend_weights(starts, tile, length, scale, overlap, mode)
    total = torch.zeros(length * scale, dtype=torch.float64)
    for s, w in zip(starts, ws):
        assert w.shape == (min(tile, length) * scale,) and (w >= 0).all() and (w <= 1).all()
        total[s * scale:s * scale + w.numel()] += w.double()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)
    if len(starts) > 1:  # a tile's outermost pixels never count (they lack context)
        assert ws[0][-1] == 0 and ws[1][0] == 0


def _local(scale):
    """A model with no spatial context: tiling must reproduce it exactly."""
    return lambda x: F.interpolate(x, scale_factor=scale, mode="nearest") * 0.8 + 0.1


@pytest.mark.parametrize("mode", ["linear", "crop"])
@pytest.mark.parametrize("h,w,tile,overlap,multiple", [(37, 53, 16, 4, 1), (30, 45, 12, 2, 2), (33, 17, 16, 4, 4),
                                                        (5, 7, 8, 2, 4)])
def test_context_free_model_is_reproduced_exactly(mode, h, w, tile, overlap, multiple):
    x = torch.rand(2, 3, h, w)
    ref = _local(3)(x)
    y = upscale_tensor(_local(3), x, 3, TileConfig(tile, overlap, mode), multiple=multiple)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode,tile,overlap", [("crop", 24, 10), ("linear", 40, 18)])
def test_small_receptive_field_model_is_exact_with_enough_overlap(mode, tile, overlap):
    """SRVGGNetCompact with 4 convs sees 4 px around each pixel: once the kept part of every
    overlap has that much context, the tiled result equals the whole-image result."""
    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).eval()
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        ref = net(x)
    y = upscale_tensor(net, x, 2, TileConfig(tile, overlap, mode))
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)
    # with too little overlap the seams show: the exactness above is not an accident
    rough = upscale_tensor(net, x, 2, TileConfig(16, 2, mode))
    assert (rough - ref).abs().max() > 1e-3


def test_pixel_unshuffle_model_with_odd_size_is_padded_and_cropped():
    torch.manual_seed(0)
    net = RRDBNet(scale=2, num_feat=8, num_block=1, num_grow_ch=4).eval()
    x = torch.rand(1, 3, 23, 31)  # not a multiple of 2
    whole = upscale_tensor(net, x, 2, TileConfig(0), multiple=2)
    tiled = upscale_tensor(net, x, 2, TileConfig(16, 4), multiple=2)
    assert whole.shape == tiled.shape == (1, 3, 46, 62)
    assert (tiled - whole).abs().max() < 0.05


def test_pad_to_multiple_reflects_and_falls_back_to_replicate():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    p = pad_to_multiple(x, 4)
    assert p.shape == (1, 1, 4, 4)
    torch.testing.assert_close(p[0, 0, 3], x[0, 0, 1])  # reflected row
    tiny = torch.rand(1, 3, 1, 2)
    q = pad_to_multiple(tiny, 4)
    assert q.shape == (1, 3, 4, 4) and torch.equal(q[..., 3, 3], tiny[..., 0, 1])


def test_tile_config_validation():
    with pytest.raises(ValueError, match="more than twice the overlap"):
        TileConfig(16, 8)
    with pytest.raises(ValueError, match=">= 0"):
        TileConfig(16, -1)
    with pytest.raises(ValueError, match="blend"):
        TileConfig(16, 2, "gaussian")


def test_wrong_output_size_is_reported():
    with pytest.raises(ValueError, match="expected"):
        upscale_tensor(_local(2), torch.rand(1, 3, 8, 8), 4, TileConfig(0))


# Real pretrained networks: measured max |tiled - whole| on these inputs (float output, [0, 1]):
#   realesr-animevideov3, 120x100 LR, tile 64 / overlap 16:  linear 0.0039, crop 0.0018
#   realsr-df2k-x4,        64x64 LR, tile 48 / overlap 16:  linear 0.0089, crop 0.0154
@pytest.mark.parametrize("mode,tol", [("linear", 0.01), ("crop", 0.005)])
def test_animevideov3_tiled_matches_whole(lr_photo, mode, tol):
    desc = load_model("realesr-animevideov3")
    x = lr_photo[..., :120, :100]
    whole = upscale_tensor(desc.model, x, 4, TileConfig(0))
    tiled = upscale_tensor(desc.model, x, 4, TileConfig(64, 16, mode))
    diff = (tiled - whole).abs()
    assert diff.max() < tol, float(diff.max())
    assert diff.mean() < 1e-4


@pytest.mark.slow
def test_realsr_tiled_matches_whole(lr_photo):
    desc = load_model("realsr-df2k-x4")
    x = lr_photo[..., 20:84, 30:94]
    whole = upscale_tensor(desc.model, x, 4, TileConfig(0))
    tiled = upscale_tensor(desc.model, x, 4, TileConfig(48, 16, "linear"))
    diff = (tiled - whole).abs()
    assert diff.max() < 0.02, float(diff.max())
    assert diff.mean() < 5e-4


def test_alpha_is_upscaled_separately(lr_photo):
    desc = load_model("realesr-animevideov3")
    rgb = lr_photo[0, :, :24, :32].permute(1, 2, 0).numpy()
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (24, 1))
    img = LoadedImage(rgb, ramp)
    by_model = upscale_image(desc, img, UpscaleConfig(tile=0, alpha="model"))
    by_bicubic = upscale_image(desc, img, UpscaleConfig(tile=0, alpha="bicubic"))
    ideal = np.clip(((np.arange(128) + 0.5) / 4 - 0.5) / 31, 0, 1)  # the ramp at output pixel centres
    for out, tol in ((by_model, 0.06), (by_bicubic, 0.005)):
        assert out.alpha.shape == (96, 128) and out.rgb.shape == (96, 128, 3)
        assert 0 <= out.alpha.min() and out.alpha.max() <= 1
        # a horizontal ramp stays a horizontal ramp (away from the image border)
        assert np.abs(out.alpha.mean(axis=0) - ideal)[4:-4].max() < tol
    # colour does not depend on how alpha was handled
    np.testing.assert_array_equal(by_model.rgb, by_bicubic.rgb)
    opaque = upscale_image(desc, LoadedImage(rgb, np.ones((24, 32), np.float32)))
    assert (opaque.alpha == 1).all()


def test_a_tiled_output_reaches_numpy_without_a_copy():
    """The tiled output is assembled channels last, so the HxWxC array an upscale writes is a view of it: a whole
    float copy (12 bytes per output pixel) was most of the difference between a 200x200 and a 600x600 upscale's peak
    memory (627 MB -> 443 MB at 600x600 with this and the blockwise quantisation below). Same values as NCHW."""
    from lway_rt.io.images import to_numpy

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2))
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        y = upscale_tensor(net, x, 2, TileConfig(24, 4))
        whole = net(x)
    assert y.shape == (1, 3, 80, 112) and torch.allclose(y, whole, atol=1e-5)
    arr = to_numpy(y.clamp_(0, 1))
    assert np.shares_memory(arr, y.numpy()) and arr.shape == (80, 112, 3)
    assert np.allclose(arr, whole.clamp(0, 1)[0].permute(1, 2, 0).numpy(), atol=1e-5)


@pytest.mark.parametrize("depth", [8, 16])
def test_blockwise_quantisation_matches_the_whole_image_formula(depth):
    """_quantise works a block of rows at a time into the samples written; its result is the one-expression formula's
    (round half to even, clipped), on values at and beside every half step and out of range, grey and RGB."""
    from lway_rt.io.images import _quantise

    top = 65535.0 if depth == 16 else 255.0
    rng = np.random.default_rng(0)
    halves = (np.arange(int(top)) + 0.5) / top
    for x in (rng.uniform(-0.1, 1.1, (1100, 1300, 3)).astype(np.float32),
              np.resize(np.concatenate([halves, np.nextafter(halves, 2), np.nextafter(halves, -1)]),
                        (7000, 700)).astype(np.float32)):  # two blocks each
        want = np.round(np.clip(x, 0.0, 1.0) * top).astype(np.uint16 if depth == 16 else np.uint8)
        got = _quantise(x, depth)
        assert got.dtype == want.dtype and np.array_equal(got, want)
