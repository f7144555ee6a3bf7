"""Y-channel PSNR/SSIM as the SR literature computes them, checked against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lway_rt.io.images import resize_bicubic
from lway_rt.metrics import psnr, psnr_y, ssim, ssim_y, to_y


@pytest.fixture(scope="module")
def pair(hr_crop):
    """HR crop and its x4 bicubic round trip: a realistic SR-quality pair."""
    lr = resize_bicubic(hr_crop, (64, 64))
    return hr_crop, resize_bicubic(lr, (256, 256))


def test_to_y_is_bt601_studio_range():
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    y = to_y(px)[0]
    np.testing.assert_allclose(y, [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)
    # float [0, 1] and uint16 inputs mean the same picture
    np.testing.assert_allclose(to_y(px.astype(np.float32) / 255.0), to_y(px), atol=1e-4)
    np.testing.assert_allclose(to_y(px.astype(np.uint16) * 257), to_y(px), atol=1e-9)


@pytest.mark.parametrize("border", [0, 4, 8])
def test_psnr_y_matches_skimage(pair, border):
    hr, sr = pair
    ref_y, sr_y = to_y(hr), to_y(sr)
    if border:
        ref_y, sr_y = ref_y[border:-border, border:-border], sr_y[border:-border, border:-border]
    expected = peak_signal_noise_ratio(ref_y, sr_y, data_range=255)
    assert psnr_y(sr, hr, crop_border=border) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("border", [0, 4])
def test_ssim_y_matches_skimage(pair, border):
    hr, sr = pair
    ref_y, sr_y = to_y(hr), to_y(sr)
    if border:
        ref_y, sr_y = ref_y[border:-border, border:-border], sr_y[border:-border, border:-border]
    expected = structural_similarity(ref_y, sr_y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
    got = ssim_y(sr, hr, crop_border=border)
    assert got == pytest.approx(expected, abs=2e-5)
    assert 0.5 < got < 0.95


def test_border_crop_changes_the_score(pair):
    hr, sr = pair
    damaged = sr.copy()
    damaged[:4] = 0  # garbage only in the border
    assert psnr_y(damaged, hr, crop_border=4) == pytest.approx(psnr_y(sr, hr, crop_border=4))
    assert psnr_y(damaged, hr, crop_border=0) < psnr_y(sr, hr, crop_border=0) - 3


def test_identical_and_different_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert psnr_y(a, a) == float("inf")
    assert ssim_y(a, a) == pytest.approx(1.0)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert 20 < psnr_y(b, a) < 40 and ssim_y(b, a) < 0.99
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a[..., 0], a[:-1, :, 0])
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(a[..., 0], a[:-1, :, 0])


def test_uint8_and_float_inputs_agree(pair):
    hr, sr = pair
    assert psnr_y(sr.astype(np.float64) / 255.0, hr.astype(np.float64) / 255.0, 4) == pytest.approx(psnr_y(sr, hr, 4), abs=1e-6)
    assert ssim_y(sr.astype(np.float32) / 255.0, hr, 4) == pytest.approx(ssim_y(sr, hr, 4), abs=1e-5)


def test_integer_arrays_and_a_grey_against_rgb_pair_are_refused():
    """An int64 array was scaled as a float in [0, 1] (47.0 dB as uint8, -1.1 dB as int64), and a 2-D image (taken as
    luminance) against an RGB one (mapped to 16..235) scored a mid-grey picture 41.8 dB against itself (review 48A
    A2, A3)."""
    grey = np.full((32, 32), 128, np.uint8)
    rgb = np.repeat(grey[..., None], 3, 2)
    assert psnr_y(rgb, rgb) == math.inf and psnr_y(grey, grey) == math.inf
    with pytest.raises(ValueError, match="one image is 2-D"):
        psnr_y(grey, rgb)
    with pytest.raises(ValueError, match="one image is 2-D"):
        ssim_y(rgb, grey)
    with pytest.raises(TypeError, match="not int64"):
        psnr_y(rgb.astype(np.int64), rgb)
    with pytest.raises(TypeError, match="not bool"):
        to_y(rgb > 0)
