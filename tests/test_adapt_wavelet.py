"""The torch Haar transform and HF weight against PyWavelets, the reference."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from lway_rt.adapt.wavelet import haar_dwt2, hf_energy, hf_weight


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (1, 3, 16, 10), (2, 3, 15, 17), (1, 1, 1, 2)])
def test_haar_dwt2_matches_pywt(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    ca, (ch, cv, cd) = pywt.dwt2(x, "haar")  # symmetric mode, over the last two axes
    got = haar_dwt2(torch.from_numpy(x))
    for ref, g in zip((ca, ch, cv, cd), got):
        assert g.shape == ref.shape
        np.testing.assert_allclose(g.numpy(), ref, atol=1e-6, rtol=0)


def test_haar_dwt2_float32_photo(hr_crop):
    x = hr_crop[:63, :65].astype(np.float32).transpose(2, 0, 1) / 255.0
    ref = pywt.dwt2(x.astype(np.float64), "haar")
    got = haar_dwt2(torch.from_numpy(x))
    np.testing.assert_allclose(got[0].numpy(), ref[0], atol=1e-6)
    for g, r in zip(got[1:], ref[1]):
        np.testing.assert_allclose(g.numpy(), r, atol=1e-6)


def _reference_map(img: np.ndarray) -> np.ndarray:
    """HF map the way LWay's README describes it, with pywt: norm of the details, min-max, nearest x2."""
    _, (ch, cv, cd) = pywt.dwt2(img, "haar")
    e = np.sqrt(ch**2 + cv**2 + cd**2)
    e = (e - e.min()) / (e.max() - e.min())
    return np.repeat(np.repeat(e, 2, axis=0), 2, axis=1)[: img.shape[0], : img.shape[1]]


def test_hf_weight_luma_matches_pywt_reference(hr_crop):
    rgb = hr_crop[:45, :50].astype(np.float64) / 255.0
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    ref = _reference_map(luma)
    x = torch.from_numpy(rgb.transpose(2, 0, 1)).unsqueeze(0)
    w = hf_weight(x, "luma")
    assert w.shape == x.shape
    for c in range(3):  # one map shared by the channels
        np.testing.assert_allclose(w[0, c].numpy(), ref, atol=1e-6)


def test_hf_weight_channel_mode_is_per_channel(hr_crop):
    rgb = hr_crop[:32, :32].astype(np.float64) / 255.0
    x = torch.from_numpy(rgb.transpose(2, 0, 1)).unsqueeze(0).repeat(2, 1, 1, 1)
    x[1] = x[1].flip(-1)
    w = hf_weight(x, "channel")
    for b, img in enumerate((rgb, rgb[:, ::-1])):
        for c in range(3):
            np.testing.assert_allclose(w[b, c].numpy(), _reference_map(np.ascontiguousarray(img[..., c])), atol=1e-6)


def test_hf_weight_is_detached_normalised_and_safe_on_flat_images():
    x = torch.rand(3, 3, 20, 22, requires_grad=True)
    w = hf_weight(x * 2)
    assert not w.requires_grad
    assert float(w.min()) == 0.0 and float(w.max()) == pytest.approx(1.0)
    for b in range(3):  # per-image normalisation: each image reaches 0 and 1
        assert float(w[b].min()) == 0.0 and float(w[b].max()) == pytest.approx(1.0)
    flat = hf_weight(torch.full((1, 3, 8, 8), 0.5))
    assert torch.equal(flat, torch.zeros_like(flat))


def _reference_batch_maps(imgs: list[np.ndarray]) -> list[np.ndarray]:
    """The pywt maps of several images min-max normalised together (one min and max over all of them)."""
    es = []
    for img in imgs:
        _, (ch, cv, cd) = pywt.dwt2(img, "haar")
        es.append(np.sqrt(ch**2 + cv**2 + cd**2))
    lo, hi = min(e.min() for e in es), max(e.max() for e in es)
    return [np.repeat(np.repeat((e - lo) / (hi - lo), 2, axis=0), 2, axis=1)[: img.shape[0], : img.shape[1]]
            for e, img in zip(es, imgs)]


@pytest.mark.parametrize("mode", ["luma", "channel"])
def test_hf_weight_batch_norm_matches_pywt_over_the_batch(hr_crop, mode):
    rgb = hr_crop[:31, :34].astype(np.float64) / 255.0
    flat = 0.5 + 0.1 * (rgb - 0.5)  # the same picture with a tenth of its detail
    x = torch.from_numpy(np.stack([rgb, flat, rgb[::-1]]).transpose(0, 3, 1, 2).copy())
    w = hf_weight(x, mode, norm="batch")
    assert w.shape == x.shape
    planes = (lambda im: [im @ np.array([0.299, 0.587, 0.114])]) if mode == "luma" else \
        (lambda im: [np.ascontiguousarray(im[..., c]) for c in range(3)])
    per_plane = [planes(im) for im in (rgb, flat, rgb[::-1])]  # [image][plane]
    for p in range(len(per_plane[0])):
        refs = _reference_batch_maps([planes_of[p] for planes_of in per_plane])
        for b, ref in enumerate(refs):
            for c in ([0, 1, 2] if mode == "luma" else [p]):
                np.testing.assert_allclose(w[b, c].numpy(), ref, atol=1e-6)
    # the low-detail image weighs less than the textured ones; per patch it would reach 1 like them
    assert float(w[1].max()) == pytest.approx(0.1, abs=0.02)
    assert float(hf_weight(x, mode)[1].max()) == pytest.approx(1.0)


def test_hf_weight_batch_norm_of_one_image_is_the_patch_norm(hr_crop):
    x = torch.from_numpy(hr_crop[:20, :26].astype(np.float32).transpose(2, 0, 1) / 255.0)[None]
    assert torch.equal(hf_weight(x, norm="batch"), hf_weight(x, norm="patch"))
    with pytest.raises(ValueError, match="patch, batch"):
        hf_weight(x, norm="image")


def test_hf_energy_sees_edges_not_flat_regions():
    x = torch.zeros(1, 1, 16, 16)
    x[..., :, 9:] = 1.0  # a vertical edge between columns 8 and 9 (inside a 2x2 block)
    e = hf_energy(x)
    assert float(e[..., :, 4].min()) > 0 and float(e[..., :, :4].abs().max()) == 0


def test_hf_weight_rejects_bad_mode():
    with pytest.raises(ValueError, match="luma"):
        hf_weight(torch.rand(1, 3, 8, 8), "ycbcr")


def test_detail_cap_holds_added_detail_at_the_cap_and_no_lower():
    from lway_rt.adapt.wavelet import detail_cap, detail_energy

    g = torch.Generator().manual_seed(3)
    base = torch.rand(4, 3, 36, 36, generator=g, dtype=torch.float64) * 0.5 + 0.25
    sharp = base + 0.6 * (base - torch.nn.functional.avg_pool2d(base, 3, 1, 1))  # correlated extra detail
    noisy = base + 0.15 * torch.randn(base.shape, generator=g, dtype=torch.float64)
    soft = torch.nn.functional.avg_pool2d(base, 3, 1, 1)
    new = torch.stack([sharp[0], noisy[1], soft[2], base[3]])
    out, s = detail_cap(base, new, 1.2, border=2)
    ratio = detail_energy(out, 2) / detail_energy(base, 2)
    before = detail_energy(new, 2) / detail_energy(base, 2)
    assert before[0] > 1.2 and before[1] > 1.2 and before[2] < 1 and before[3] == pytest.approx(1)
    assert s[0] < 1 and s[1] < 1 and ratio[0] == pytest.approx(1.2, rel=1e-9) and ratio[1] == pytest.approx(1.2, rel=1e-9)
    assert s[2] == 1 and s[3] == 1 and torch.equal(out[2:], new[2:])  # within the cap: untouched
    for k in (0, 1):  # the largest such s: a little more strength breaks the cap
        more = base[k:k + 1] + (s[k] + 1e-3) * (new[k:k + 1] - base[k:k + 1])
        assert detail_energy(more, 2)[0] > 1.2 * detail_energy(base[k:k + 1], 2)[0]
        assert torch.allclose(out[k], base[k] + s[k] * (new[k] - base[k]))
    # float32 images come back float32; a cap below 1 or mismatched shapes are refused
    out32, _ = detail_cap(base.float(), new.float(), 1.2)
    assert out32.dtype == torch.float32
    with pytest.raises(ValueError, match="at least 1"):
        detail_cap(base, new, 0.9)
    with pytest.raises(ValueError, match="one shape"):
        detail_cap(base, new[:2], 1.2)
