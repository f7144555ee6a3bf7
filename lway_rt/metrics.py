"""PSNR and SSIM as the SR literature computes them.

Y channel of BT.601 YCbCr (the MATLAB ``rgb2ycbcr`` convention used by BasicSR and most papers),
images in [0, 255], a ``crop_border`` of ``scale`` pixels removed. SSIM uses the Gaussian window
(11x11, sigma 1.5) of Wang et al. 2004. Inputs: HxWx3 (RGB) or HxW arrays, uint8/uint16 or float
in [0, 1].
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_y", "psnr", "ssim", "psnr_y", "ssim_y"]


def _as_255(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float64)
    if img.dtype == np.uint16:
        return img.astype(np.float64) / 257.0
    if img.dtype.kind not in "f":  # an int32/int64 or bool array had been scaled as a float one in [0, 1]
        raise TypeError(f"images must be uint8, uint16 or float in [0, 1], not {img.dtype}: convert it first")
    return img.astype(np.float64) * 255.0


def to_y(img: np.ndarray) -> np.ndarray:
    """RGB -> Y (BT.601, 16..235), in [0, 255] float64; a 2-D image is taken as luminance already."""
    x = _as_255(img)
    if x.ndim == 2:
        return x
    if x.shape[-1] == 4:
        x = x[..., :3]
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _crop(x: np.ndarray, border: int) -> np.ndarray:
    return x[border:-border, border:-border] if border > 0 else x


def psnr(a: np.ndarray, b: np.ndarray, crop_border: int = 0, data_range: float = 255.0) -> float:
    """PSNR of two same-shaped arrays already in [0, data_range]."""
    a, b = _crop(np.asarray(a, np.float64), crop_border), _crop(np.asarray(b, np.float64), crop_border)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    ax = np.arange(size) - size // 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(x, w.shape)
    return np.einsum("ijkl,kl->ij", win, w)


def ssim(a: np.ndarray, b: np.ndarray, crop_border: int = 0, data_range: float = 255.0) -> float:
    """Single-channel SSIM with an 11x11 Gaussian window, valid region only (as BasicSR)."""
    a, b = _crop(np.asarray(a, np.float64), crop_border), _crop(np.asarray(b, np.float64), crop_border)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    w = _gaussian_window()
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    saa = _filter_valid(a * a, w) - mu_a**2
    sbb = _filter_valid(b * b, w) - mu_b**2
    sab = _filter_valid(a * b, w) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(m.mean())


def _same_kind(sr: np.ndarray, hr: np.ndarray) -> None:
    """A 2-D image is luminance already (BasicSR's convention) and an RGB one is mapped to 16..235: a pair of one of
    each compared two scales of one picture (a mid-grey image scored 41.8 dB against itself)."""
    if np.ndim(sr) != np.ndim(hr):
        raise ValueError(f"one image is 2-D (luminance) and the other has channels ({np.shape(sr)} vs "
                         f"{np.shape(hr)}): give both as RGB, or both as 2-D")


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    _same_kind(sr, hr)
    return psnr(to_y(sr), to_y(hr), crop_border)


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0) -> float:
    _same_kind(sr, hr)
    return ssim(to_y(sr), to_y(hr), crop_border)
