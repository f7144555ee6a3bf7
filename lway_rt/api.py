"""Upscaling in your own Python code: frames from a video decoder, arrays from a pipeline.

    >>> from lway_rt.api import Upscaler
    >>> up = Upscaler("run/")                  # what `lwayrt upscale -m run/` runs: adapted weights, their cap
    >>> big = up(frame)                        # HxWx3 uint8 RGB in, (4H)x(4W)x3 uint8 out
    >>> big = up(frame_bgr, bgr=True)          # OpenCV's channel order, both ways
    >>> half = up(frame, outscale=2)           # the model's output resized to 2x the input (Lanczos)

The model is anything ``lwayrt upscale -m`` takes (a store name, a .pth/.safetensors file, an .onnx file from
``lwayrt export``, an ``lwayrt adapt`` --out folder, per-group ones included) and is loaded once. An array is
upscaled as ``lwayrt upscale`` upscales an image file of the same samples: the same tiles, detail cap, alpha handling
and rounding, so a PNG that command writes and ``Upscaler(...)(array)`` hold the same samples.

Arrays: HxW (grey), HxWx1, HxWx2 (grey and alpha), HxWx3 (RGB) or HxWx4 (RGBA); uint8, uint16 (either byte order) or
float in [0, 1] (samples within 1e-6 of it are clipped); or a Pillow image, taken by what it shows (a palette, CMYK
or YCbCr image as its RGB, a 16-bit grey one as uint16, as a file of it is read; Pillow reads 16-bit colour files as
8 bits, said with a ``UserWarning``). The output has the input's channels and dtype (native byte
order; float inputs give float32). Errors are ``lway_rt.errors.LwayError``s of one line: ``InputError`` for a bad
setting or array, ``ModelError`` for a model that does not load; where the command's message names one of its options,
the message here names the keyword (``--tile 65``: ``tile=65``, ``--device cpu``: ``device="cpu"``, ``-m NAME``:
``model="NAME"``).

The design follows Real-ESRGAN's ``RealESRGANer.enhance`` (an array in, an array out, the model held between calls,
``outscale`` per call); the code is this project's.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np

from lway_rt.errors import InputError, LwayError

__all__ = ["Upscaler"]

_ARRAY = Path("<array>")  # the name an array goes by where a file's path would be (a per-group route)

#: ``lwayrt upscale``'s options that are keywords here, and an option's value in a message: a number, a word the
#: options take or a placeholder (NAME_OR_FILE, C); a path, which may hold spaces, is left as it stands
_OPTION = re.compile(r"--(tile-overlap|tile|device|fp16|detail-cap|base-model|outscale|alpha|stage1)\b"
                     r"(?: (-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w/]|\.\w)|(?:cpu|cuda(?::\d+)?|mps|auto|off|model|bicubic)\b(?![/.])"
                     r"|[A-Z][A-Z_]*(?![\w:/.\\])))?")
_QUOTED_COMMAND = re.compile(r"('lwayrt [^']*')")  # another command's options, quoted: left as that command takes them
_MODEL = re.compile(r"(?<![\w-])-m (?:'([^']*)'|([^\s'(),;]+?))(?=[.]?(?:[\s),;]|$))")  # -m NAME: the model keyword


def _keyword(match: re.Match) -> str:
    name, value = match.group(1).replace("-", "_"), match.group(2)
    if name == "fp16":
        return "fp16=True" if value is None else f"fp16=True {value}"
    if value is None:
        return name
    if re.fullmatch(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?|[A-Z][A-Z_]*", value):
        return f"{name}={value}"
    return f'{name}="{value}"'


def _keywords(message: str) -> str:
    """``message`` with this command's options named as the keywords they are here, quoted commands left alone."""
    def own(part: str) -> str:
        part = _MODEL.sub(lambda m: f'model="{m.group(1) if m.group(1) is not None else m.group(2)}"', part)
        return _OPTION.sub(_keyword, part)

    return "".join(part if _QUOTED_COMMAND.fullmatch(part) else own(part) for part in _QUOTED_COMMAND.split(message))


@contextlib.contextmanager
def _in_keywords():
    """An error raised inside, in this API's words: the options its message names as the keywords they are here."""
    try:
        yield
    except LwayError as exc:
        if len(exc.args) == 1 and isinstance(exc.args[0], str):
            exc.args = (_keywords(exc.args[0]),)
        raise


class Upscaler:
    """A model ready to upscale arrays (see the module's text). Options are ``lwayrt upscale``'s: ``tile`` (0: whole
    images; None: the command's default, which a capped export turns to whole images), ``tile_overlap``, ``device``,
    ``fp16``, ``detail_cap`` ("auto", "off" or a number >= 1), ``base_model``, ``outscale`` (the default of each
    call's), ``alpha`` ("model" or "bicubic") and ``stage1`` (for a per-group folder). A bad setting or a model that
    does not load raises here, not at the first call.

    With a per-group folder, ``last_route`` is where the last array went (``lway_rt.upscale.Route``: its ``group``,
    ``similarity``, ``inside``), and an array unlike every group's images gives a ``UserWarning``, as the command notes
    it; otherwise, and after a call that raised, ``last_route`` is None. It is the instance's: threads that share an
    Upscaler (calls at once are safe) read each other's; give each thread its own to read it."""

    def __init__(self, model: str | Path = "realesr-animevideov3", *, tile: int | None = None, tile_overlap: int = 32,
                 device: str = "cpu", fp16: bool = False, detail_cap: str | float = "auto", base_model: str | None = None,
                 outscale: float | None = None, alpha: str = "model", stage1: str | None = None):
        from lway_rt.upscale import Route, UpscaleConfig, prepare_run

        if isinstance(detail_cap, bool) or not isinstance(detail_cap, (str, int, float, np.integer, np.floating)):
            raise InputError(f"detail_cap is \"auto\", \"off\" or a number >= 1, not {detail_cap!r}")
        if not isinstance(detail_cap, str) and not 1 <= float(detail_cap) < float("inf"):  # said as the number given
            raise InputError(f"detail_cap must be auto, off or a number >= 1, not {float(detail_cap):g}")  # (it was
            # '0.5'; inf was 'inf' in quotes, as a string: 57E-2)
        if not isinstance(device, str):  # (None was said as the string 'None': 57E-2)
            raise InputError(f"device is a string such as \"cpu\" or \"cuda\", not {device!r}")
        with _in_keywords():
            config = UpscaleConfig(model=str(model), tile=512 if tile is None else _count("tile", tile),
                                   tile_overlap=_count("tile_overlap", tile_overlap), tile_chosen=tile is not None,
                                   device=str(device), fp16=_flag("fp16", fp16),
                                   detail_cap=detail_cap if isinstance(detail_cap, str) else repr(float(detail_cap)),
                                   base_model=base_model, outscale=_outscale(outscale), alpha=alpha, stage1=stage1)
            self._config, self._desc, self._router, self._cap, _ = prepare_run(config)  # (its notes point at the
            # caller's line: errors.note)
        self.last_route: Route | None = None

    @property
    def scale(self) -> int:
        """The model's own scale (x4 for every packaged model)."""
        return self._desc.scale

    @property
    def factor(self) -> float:
        """How many times the input's size an output is by default (``outscale``, else the model's scale)."""
        return self._desc.scale if self._config.outscale is None else self._config.outscale

    def __call__(self, image: np.ndarray, *, bgr: bool = False, outscale: float | None = None) -> np.ndarray:
        """``image`` upscaled (see the module's text); ``bgr``: the array's colour channels are in OpenCV's order
        (BGR, BGRA), and so are the output's; ``outscale``: this call's, in place of the one the Upscaler was made
        with."""
        import dataclasses
        import warnings

        from lway_rt.io.images import LoadedImage, _luminance, image_samples
        from lway_rt.upscale import route_and_upscale

        self.last_route = None  # (a call that raises leaves no earlier array's route to be read as its own)
        with _in_keywords():
            config = self._config if outscale is None else dataclasses.replace(self._config, outscale=_outscale(outscale))
        arr = _as_array(image)
        planes, depth = _planes(arr)
        bgr = _flag("bgr", bgr)
        if bgr and planes.shape[2] >= 3:
            planes = planes[..., [2, 1, 0, *range(3, planes.shape[2])]]
        img = LoadedImage.from_planes(planes, 16 if depth == 16 else 8)
        grey = img.grey
        with _in_keywords():
            up, self.last_route = route_and_upscale(config, self._desc, self._cap, self._router, img, _ARRAY)
        if self.last_route is not None and (unlike := self.last_route.unlike_note()):
            warnings.warn(unlike.replace(str(_ARRAY), "the array"), UserWarning, stacklevel=2)
        if depth is not None:  # the samples the command writes to a PNG file, rounded alike
            out = image_samples(_ARRAY.with_suffix(".png"), up.rgb, up.alpha, bit_depth=depth, grey=grey)
        else:
            colour = _luminance(up.rgb)[..., None] if grey else up.rgb
            out = colour if up.alpha is None else np.concatenate([colour, up.alpha[..., None]], axis=2)
            out = out.astype(np.float32, copy=False)
        out = out[..., None] if out.ndim == 2 else out
        if bgr and out.shape[2] >= 3:
            out = out[..., [2, 1, 0, *range(3, out.shape[2])]]
        # one pixel's samples side by side, as the caller's array had them (OpenCV draws only into such arrays; the
        # reordered channels had come out plane by plane)
        return np.ascontiguousarray(out[..., 0] if arr.ndim == 2 else out)


def _count(name: str, value) -> int:
    """A whole number of pixels given as ``name``, refused in one line otherwise (33.9 or "8" were taken as 33, or
    failed deep inside)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} is a whole number of pixels, not {value!r}")
    return int(value)


def _flag(name: str, value) -> bool:
    """``True`` or ``False`` given as ``name``, refused in one line otherwise (``fp16="False"`` was taken as true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} is True or False, not {value!r}")
    return bool(value)


def _outscale(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"outscale is a number (the output's size over the input's) or None, not {value!r}")
    return float(value)


_PIL_AS = {"P": None, "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
           "HSV": "RGB", "RGBX": "RGB"}  # (P: RGBA where it has a transparent colour, else RGB)


def _as_array(image) -> np.ndarray:
    """The caller's image as an array of samples. A Pillow image is taken by what it shows, as ``lwayrt upscale`` reads
    a file: a palette, CMYK, YCbCr ... image had its raw samples (palette indices, CMY with K as alpha) upscaled as if
    they were grey or RGB, unsaid; a file's image as ``Image.open`` gives it, with an EXIF orientation (a camera's JPEG
    held sideways), is turned upright, as the command turns the file (``PIL.ImageOps.exif_transpose``), and an image
    the caller made or turned is taken as it is. A file name is refused with what to do."""
    if isinstance(image, (str, Path)):
        raise InputError(f"an Upscaler takes an image array, not a file name ({image}): read it first, e.g. "
                         "np.asarray(PIL.Image.open(path)), or upscale files with 'lwayrt upscale'")
    if image is None:  # (what cv2.imread gives for a file it cannot read)
        raise InputError("an Upscaler takes an image array, not None (cv2.imread returns None for a file it cannot "
                         "read: check its path)")
    if isinstance(image, (bytes, bytearray)):  # (a memoryview of an array is that array's samples)
        raise InputError("an Upscaler takes an image array, not a file's bytes: decode them first, e.g. "
                         "np.asarray(PIL.Image.open(io.BytesIO(data)))")
    mode = getattr(image, "mode", None)
    if isinstance(image, (list, tuple)):
        raise InputError(f"an Upscaler takes an image array, not a {type(image).__name__}: make one first, e.g. "
                         "np.asarray(rows, dtype=np.uint8)")
    if not (isinstance(mode, str) and hasattr(image, "convert") and hasattr(image, "info")):  # not a PIL.Image.Image
        return np.asarray(image)
    try:  # (Pillow decodes a file's image here: a cut or closed one fails here)
        return _pil_samples(image, mode)
    except (OSError, ValueError) as exc:
        raise InputError(f"the Pillow image cannot be read ({exc}): re-open the file, or re-copy it if it is "
                         "damaged") from None


def _pil_samples(image, mode: str) -> np.ndarray:
    """A Pillow image's samples as ``lwayrt upscale`` reads its file (``io.images._from_pil``): 16-bit grey (``I;16``,
    and ``I``, which Pillow opens a 16-bit PGM or PNG as) as uint16, with a PNG's transparent grey level as alpha;
    floats (``F``) as float32."""
    import warnings

    from lway_rt.io.images import _low_grey_bits, keyed_grey, read_as_8_bits

    if read_as_8_bits(image):
        warnings.warn(f"this Pillow image was opened from a 16-bit {getattr(image, 'format', None) or 'colour'} file, "
                      "which Pillow reads as 8 bits: the array returned is 8-bit; for the file's 16-bit samples, pass "
                      "them as a uint16 array (e.g. read with imageio or tifffile), or upscale the file with 'lwayrt "
                      "upscale'", UserWarning, stacklevel=4)
    bits = _low_grey_bits(image) if getattr(image, "format", None) == "PNG" else 8  # (before a transpose loads it)
    if _turned(image):
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
    image = keyed_grey(image, bits)  # a 1/2/4-bit grey PNG's tRNS key as the level its pixels show (it was missed)
    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        raw = np.asarray(image)
        grey = np.clip(raw, 0, 65535).astype(np.uint16) if mode == "I" else raw
        key = image.info.get("transparency")  # a 16-bit grey PNG's tRNS key: that grey level is clear
        if isinstance(key, int):
            return np.dstack([grey, np.where(raw == key, 0, 65535).astype(np.uint16)])
        return grey
    if mode in ("RGB", "L") and "transparency" in image.info:  # a colour key: that colour is clear
        image = image.convert("RGBA" if mode == "RGB" else "LA")
    elif mode in _PIL_AS:
        image = image.convert(_PIL_AS[mode] or ("RGBA" if "transparency" in image.info else "RGB"))
    return np.asarray(image)


def _turned(image) -> bool:
    """Whether a Pillow image is a file's as opened (``format`` set: a transposed, rotated, converted or copied image
    has none, and keeps its EXIF orientation, which it no longer shows) with an EXIF orientation other than upright
    (1): a camera's JPEG held sideways, as ``lwayrt upscale`` would read the file."""
    if getattr(image, "format", None) is None:  # (the caller's own image: taken as it is)
        return False
    try:
        return image.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 - EXIF that cannot be read: taken as it is stored, as Pillow shows it
        return False


def _planes(arr: np.ndarray) -> tuple[np.ndarray, int | None]:
    """HxWxC float32 samples in [0, 1] of an input array, and its bit depth (None for a float array)."""
    shape = tuple(np.shape(arr))
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(f"an image array is HxW, HxWx1, HxWx2, HxWx3 or HxWx4 of at least 1x1 pixels, not of shape "
                         f"{shape}")
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if kind == "u" and size == 1:
        return arr.astype(np.float32) / 255.0, 8
    if kind == "u" and size == 2:  # (either byte order)
        return arr.astype(np.float32) / 65535.0, 16
    if kind == "f":  # (checked in its own type: float64's 1e39 had become inf as float32, and been called so)
        if not np.isfinite(arr).all():
            raise InputError("the float image array holds NaN or inf samples: replace them, e.g. with np.nan_to_num")
        low, high = float(arr.min()), float(arr.max())
        if low < -1e-6 or high > 1.0 + 1e-6:
            raise InputError(f"a float image array holds samples in [0, 1], and this one spans {low:g} to {high:g}: "
                             "divide 8-bit values by 255 (16-bit by 65535), or pass the integer array itself")
        planes = arr.astype(np.float32)
        return np.clip(planes, 0.0, 1.0, out=planes), None
    advice = " (Pillow opens 16-bit PGM and PNG files as int32: .astype(np.uint16))" if arr.dtype == np.int32 else ""
    raise InputError(f"an image array is uint8, uint16 or float in [0, 1], not {arr.dtype}: convert it first{advice}")
