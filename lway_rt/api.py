"""Upscaling in your own Python code: frames from a video decoder, arrays from a pipeline.

    >>> from lway_rt.api import Upscaler
    >>> up = Upscaler("run/")                  # what `lwayrt upscale -m run/` runs: adapted weights, their cap
    >>> big = up(frame)                        # HxWx3 uint8 RGB in, (4H)x(4W)x3 uint8 out
    >>> big = up(frame_bgr, bgr=True)          # OpenCV's channel order, both ways

The model is anything ``lwayrt upscale -m`` takes (a store name, a .pth/.safetensors file, an .onnx file from
``lwayrt export``, an ``lwayrt adapt`` --out folder, per-group ones included) and is loaded once. An array is
upscaled as ``lwayrt upscale`` upscales an image file of the same samples: the same tiles, detail cap, alpha handling
and rounding, so an 8-bit PNG that command writes and ``Upscaler(...)(array)`` hold the same pixels.

Arrays: HxW (grey), HxWx1, HxWx3 (RGB) or HxWx4 (RGBA); uint8, uint16 or float in [0, 1]. The output has the input's
channels and dtype (float inputs give float32). The design follows Real-ESRGAN's ``RealESRGANer.enhance`` (an array
in, an array out, the model held between calls); the code is this project's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lway_rt.errors import InputError

__all__ = ["Upscaler"]

_ARRAY = Path("<array>")  # the name an array goes by where a file's path would be (a per-group route)


class Upscaler:
    """A model ready to upscale arrays (see the module's text). Options are ``lwayrt upscale``'s: ``tile`` (0: whole
    images; None: the command's default, which a capped export turns to whole images), ``tile_overlap``, ``device``,
    ``fp16``, ``detail_cap`` ("auto", "off" or a number >= 1), ``base_model``, ``outscale``, ``alpha`` ("model" or
    "bicubic") and ``stage1`` (for a per-group folder). Bad settings or a model that does not load raise
    ``lway_rt.errors.InputError`` (or another ``LwayError``) here, not at the first call."""

    def __init__(self, model: str | Path = "realesr-animevideov3", *, tile: int | None = None, tile_overlap: int = 32,
                 device: str = "cpu", fp16: bool = False, detail_cap: str | float = "auto", base_model: str | None = None,
                 outscale: float | None = None, alpha: str = "model", stage1: str | None = None):
        from lway_rt.upscale import UpscaleConfig, prepare_run

        config = UpscaleConfig(model=str(model), tile=512 if tile is None else int(tile), tile_overlap=tile_overlap,
                               tile_chosen=tile is not None, device=device, fp16=fp16,
                               detail_cap=detail_cap if isinstance(detail_cap, str) else f"{float(detail_cap):g}",
                               base_model=base_model, outscale=outscale, alpha=alpha, stage1=stage1)
        self._config, self._desc, self._router, self._cap, _ = prepare_run(config)
        #: how many times the input's size an output is (the model's scale, or ``outscale``)
        self.factor: float = self._desc.scale if outscale is None else float(outscale)

    @property
    def scale(self) -> int:
        """The model's own scale (x4 for every packaged model)."""
        return self._desc.scale

    def __call__(self, image: np.ndarray, *, bgr: bool = False) -> np.ndarray:
        """``image`` upscaled (see the module's text); ``bgr``: the array's colour channels are in OpenCV's order
        (BGR, BGRA), and so are the output's."""
        from lway_rt.io.images import LoadedImage, _luminance, image_samples
        from lway_rt.upscale import route_and_upscale

        arr = np.asarray(image)
        planes, depth = _planes(arr)
        if bgr and planes.shape[2] >= 3:
            planes = planes[..., [2, 1, 0, *range(3, planes.shape[2])]]
        grey = planes.shape[2] in (1, 2)
        rgb = np.repeat(planes[..., :1], 3, axis=2) if grey else planes[..., :3]
        alpha = planes[..., -1] if planes.shape[2] in (2, 4) else None
        img = LoadedImage(np.ascontiguousarray(rgb), None if alpha is None else np.ascontiguousarray(alpha),
                          bit_depth=16 if depth == 16 else 8, grey=grey)
        up, _ = route_and_upscale(self._config, self._desc, self._cap, self._router, img, _ARRAY)
        if depth is not None:  # the samples the command writes to a PNG file, rounded alike
            out = image_samples(_ARRAY.with_suffix(".png"), up.rgb, up.alpha, bit_depth=depth, grey=grey)
        else:
            colour = _luminance(up.rgb)[..., None] if grey else up.rgb
            out = colour if up.alpha is None else np.concatenate([colour, up.alpha[..., None]], axis=2)
            out = out.astype(np.float32, copy=False)
        out = out[..., None] if out.ndim == 2 else out
        if bgr and out.shape[2] >= 3:
            out = out[..., [2, 1, 0, *range(3, out.shape[2])]]
        return out[..., 0] if arr.ndim == 2 else out


def _planes(arr: np.ndarray) -> tuple[np.ndarray, int | None]:
    """HxWxC float32 samples in [0, 1] of an input array, and its bit depth (None for a float array)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(f"an image array is HxW, HxWx1, HxWx3 or HxWx4, not of shape {tuple(np.shape(arr))}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, 8
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0, 16
    if arr.dtype.kind == "f":
        planes = arr.astype(np.float32)
        if not np.isfinite(planes).all() or planes.min() < 0.0 or planes.max() > 1.0:
            raise InputError("a float image array holds samples in [0, 1] (NaN and inf refused): divide 8-bit values "
                             "by 255, or pass the uint8 array itself")
        return planes, None
    raise InputError(f"an image array is uint8, uint16 or float in [0, 1], not {arr.dtype}: convert it first")
