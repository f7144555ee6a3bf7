"""Read and write the images users hand to ``lwayrt``, without losing what they care about.

Every image becomes a :class:`LoadedImage`: float32 RGB in [0, 1] for the network, plus what is
needed to write the result back the way it came in (grey stays grey, 16-bit stays 16-bit in
PNG/TIFF, an alpha channel comes back as RGBA). EXIF orientation is applied on reading, so the
network sees the picture upright, as viewers show it.

Pillow decodes everything except one case it truncates: 16-bit *colour* PNG/TIFF (it keeps only
the high byte). For those the file is decoded twice by Pillow's own decoder, once keeping the
high and once the low byte of each sample, and the halves are joined. 16-bit colour files are
written by small encoders here (PNG: zlib + Sub filter; TIFF: baseline, Deflate-coded with horizontal prediction).

Writes are atomic (temporary file beside the target, then rename) via
:func:`lway_rt.io.weights.atomic_path`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import struct
import sys
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lway_rt.errors import InputError, OutputError, shell_word

__all__ = [
    "bundled_photo", "format_loss_note",
    "IMAGE_SUFFIXES", "WRITE_SUFFIXES", "VIDEO_SUFFIXES", "LoadedImage", "no_images_message", "read_image",
    "write_image", "to_tensor", "to_numpy", "to_uint8", "resize_bicubic",
]

#: file endings ``lwayrt`` reads when it walks a folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".avif", ".tif", ".tiff", ".bmp", ".gif", ".ico",
                  ".ppm", ".pgm", ".pnm", ".pbm", ".tga")  # read
READ_FORMATS = "PNG, JPEG, WebP, AVIF, TIFF, BMP, GIF, ICO, PPM/PGM/PBM/PNM, TGA"  # (as a person names them: 58A-2)
_FORMAT_BY_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".webp": "WEBP",
                     ".avif": "AVIF", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
WRITE_SUFFIXES = tuple(_FORMAT_BY_SUFFIX)  # written (a GIF or ICO input's output is a PNG)
_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
#: video containers: lwayrt reads frames as images, and says how to get them from one of these
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".mts", ".m2ts", ".wmv", ".flv",
                  ".y4m", ".ts", ".3gp", ".3g2", ".vob", ".mxf", ".ogv", ".dv", ".divx", ".asf", ".f4v", ".mod",
                  ".tod",
                  # raw streams (a dashcam's, a CCTV recorder's, an encoder's -f h264): adapt took them for images
                  ".h264", ".264", ".avc", ".h26l", ".hevc", ".h265", ".265", ".m2v", ".mpv", ".m1v", ".ivf", ".obu")
_EXIF_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "AVIF")  # formats whose EXIF block is metadata beside the picture


@dataclass(frozen=True)
class LoadedImage:
    """An image as the network needs it, plus how to write it back.

    ``rgb``: HxWx3 float32 in [0, 1] (grey images are replicated to three channels).
    ``alpha``: HxW float32 in [0, 1], or None. ``bit_depth``: 8 or 16 bits per sample.
    ``grey``: the file had no colour. ``mode``: Pillow's mode of the file (``P``, ``LA``, ``I;16`` …).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    grey: bool = False
    mode: str = "RGB"
    format: str | None = None
    icc_profile: bytes | None = None
    frames: int = 1  # frames or pages in the file (animated GIF/WebP, multi-page TIFF); only the first is read
    lossless: bool = False  # a lossless WebP: written back lossless with --format same
    exif: bytes | None = None  # the file's EXIF block (camera, date, GPS …), carried to outputs (``write_image``)
    dpi: tuple[float, float] | None = None  # the (x, y) pixels per inch the file records, carried to outputs
    png_chunks: tuple[tuple[bytes, bytes], ...] = ()  # a PNG's colour and text chunks (``_png_chunks``), to PNG outputs
    frames_damaged: bool = False  # a later frame or page is cut short or damaged (``frames``: those up to it, and it)
    uncarried: tuple[str, ...] = ()  # metadata blocks the file holds that outputs do not carry ("XMP", "IPTC")

    def __post_init__(self):
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"rgb must be HxWx3, got {self.rgb.shape}")
        if self.alpha is not None and self.alpha.shape != self.rgb.shape[:2]:
            raise ValueError(f"alpha must be HxW = {self.rgb.shape[:2]}, got {self.alpha.shape}")
        if self.bit_depth not in (8, 16):
            raise ValueError(f"bit_depth must be 8 or 16, got {self.bit_depth}")

    @classmethod
    def from_planes(cls, x: np.ndarray, bit_depth: int, **fields) -> LoadedImage:
        """HxWxC float32 samples in [0, 1] (C: 1 grey, 2 grey and alpha, 3 RGB, 4 RGBA) as an image: grey replicated
        to three channels, the alpha its own plane; ``fields``: the other fields (mode, format, ICC profile ...)."""
        c = x.shape[2]
        rgb = np.repeat(x[..., :1], 3, axis=2) if c <= 2 else np.ascontiguousarray(x[..., :3])
        alpha = x[..., c - 1].copy() if c in (2, 4) else None
        return cls(rgb, alpha, bit_depth, c <= 2, **fields)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


# --------------------------------------------------------------------------------------------
# reading


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes): re-copy or re-export the image")
    try:
        return Image.open(path)
    except PermissionError as exc:  # not "corrupt": the file is fine, this user may not read it
        raise InputError(f"{path} cannot be read ({exc.strerror}): check its permissions") from None
    except UnidentifiedImageError:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            raise InputError(_video_advice(path)) from None
        if (size := _header_size(path)) is not None and 0 in size:
            raise InputError(_no_pixels(path, *size)) from None
        if kind := _signature(path):  # its first bytes are an image's, the rest is not: cut short or damaged
            raise InputError(f"{path} starts as a {kind} file but cannot be read (cut short or damaged); re-copy or "
                             "re-export it") from None
        raise InputError(f"{path} is not a readable image (supported: {READ_FORMATS})"
                         + _convert_hint([Path(path)])) from None
    except Image.DecompressionBombError as exc:
        raise InputError(_too_many_pixels(path, exc)) from None
    except OSError as exc:
        raise InputError(f"{path} cannot be opened ({exc}): the file is corrupt; re-copy or re-export it") from None


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"II*\0", "TIFF"),
               (b"MM\0*", "TIFF"))


def _signature(path: Path) -> str | None:
    """The image format whose signature ``path`` starts with (WebP's RIFF....WEBP too), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _too_many_pixels(path: Path, exc: Exception) -> str:
    """The refusal of an image over twice Pillow's pixel limit (a guard against decompression bombs), with a way on:
    such a picture, if real, is cut into pieces first (its x4 output would not fit in memory anyway)."""
    q = shell_word
    return (f"{path}: {str(exc).rstrip('.')}; if the picture is real, cut it into pieces first, e.g. mkdir pieces && "
            f"magick {q(str(path))} -crop 4000x4000 +repage pieces/{q(path.stem)}_%03d.png")


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) a PNG's or BMP's header records, read without Pillow (which refuses a file of width or height 0
    as "cannot identify"), or None for another or unreadable file."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"BM") and len(head) >= 26 and int.from_bytes(head[14:18], "little") >= 40:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)  # (a negative height: rows stored top down)
    return None


def _no_pixels(path: Path, width: int, height: int) -> str:
    return f"{path} holds no pixels (its header says {width}x{height}): re-export the image"


#: the starts of Pillow's warnings about damaged EXIF blocks and TIFF directories, which it reads in part (the
#: picture is read, and what could be read of its metadata carried, as a block Pillow cannot parse is left out)
_PILLOW_METADATA_WARNINGS = ("Corrupt EXIF data", "Possibly corrupt EXIF data", "Truncated File Read",
                             "Tag data larger than file", "Tag offset too large", "Metadata Warning")


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Pillow's warnings that would print as raw Python warnings about what the reader handles already silenced:
    ``_PILLOW_METADATA_WARNINGS``, and DecompressionBombWarning, for an image of ``Image.MAX_IMAGE_PIXELS`` (89
    megapixels) up to twice that, which is read (beyond that Pillow refuses it, and the reader says so in one line)."""
    from PIL import Image

    from lway_rt.io.weights import WARNING_FILTERS

    with WARNING_FILTERS, warnings.catch_warnings():  # (one thread at a time: see WARNING_FILTERS)
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        for message in _PILLOW_METADATA_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def _video_advice(video: Path, folder: Path | None = None) -> str:
    frames = video.parent / f"{video.stem}_frames"
    where = f"folder {folder} holds no images, only video ({video.name})" if folder else f"{video} is a video"
    q = shell_word
    # (-fps_mode passthrough: each picture once; a raw 12.5 fps .h264 stream's were written twice: 56G4)
    return (f"{where}: lwayrt reads images; extract its frames first (mkdir {q(str(frames))} && ffmpeg -i {q(str(video))} "
            f"-fps_mode passthrough {q(f'{frames}/%06d.png')}) and give it that folder, or give the video file itself "
            "to 'lwayrt upscale-video' (all of it, with its audio) or 'lwayrt adapt' (frames spread over it)")


def image_subfolders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` (not hidden) that hold images of their own: a folder's images are read without
    its sub-folders, which are named so that none is left out unsaid (one level only: a cheap look, not a walk)."""
    try:
        subs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        return [d for d in subs if any(q.suffix.lower() in IMAGE_SUFFIXES and not q.name.startswith(".")
                                       for q in d.iterdir())]
    except OSError:
        return []


def frames_note(path: Path, frames: int, done: str, damaged: bool = False) -> str:
    """The note for a file of several frames or pages (an animated GIF or WebP, a multi-page TIFF), of which only the
    first was read; ``done`` says what was made of it ("upscaled"). ImageMagick reads all three kinds (ffmpeg, named
    here before, reads neither a TIFF's later pages nor an animated WebP). ``damaged``: frame ``frames`` is cut short
    or damaged (``LoadedImage.frames_damaged``)."""
    if damaged:
        return (f"{path} is cut short or damaged at frame or page {frames}: only the first was {done} (re-copy or "
                "re-export it for the others)")
    q = shell_word
    return (f"{path} holds {frames} frames or pages: only the first was {done} (to take them all, extract them first, "
            f"e.g. mkdir frames && magick {q(str(path))} -coalesce frames/%06d.png)")


def no_images_message(folder: Path, hint: str = "") -> str:
    """The one-line error for a folder with no image in it; a folder of videos is told how to get frames from them."""
    try:
        video = next((f for f in sorted(Path(folder).iterdir()) if f.suffix.lower() in VIDEO_SUFFIXES
                      and not f.name.startswith(".") and f.is_file()), None)
    except OSError:
        video = None
    if video is not None:
        return _video_advice(video, Path(folder))
    try:
        files = sorted(f for f in Path(folder).iterdir() if not f.name.startswith("."))
    except OSError:
        files = []
    return f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}){hint or _convert_hint(files, folder=True)}"


def _ppm_maxval(im) -> int | None:
    """The largest sample value of a Pillow image just opened from a binary colour PPM (P6) whose samples are 16-bit
    (a maxval above 255), which Pillow reads as 8 bits; None for any other."""
    tiles = getattr(im, "tile", None) or []
    if getattr(im, "format", None) != "PPM" or len(tiles) != 1 or tiles[0].codec_name != "ppm":
        return None
    args = tiles[0].args
    maxval = args[1] if isinstance(args, tuple) and len(args) == 2 and args[0] == "RGB" else None
    return maxval if isinstance(maxval, int) and maxval > 255 else None


def _sixteen_bit_ppm(path: Path, im) -> tuple[np.ndarray, int] | None:
    """A 16-bit colour PPM's samples (``_ppm_maxval``), read from the file as big-endian 16-bit values and scaled from
    its maxval to 0-65535, as ``_sixteen_bit_colour`` gives a PNG's; None for any other image."""
    maxval = _ppm_maxval(im)
    if maxval is None:
        return None
    (tile,) = im.tile
    width, height = im.size
    with open(path, "rb") as f:
        f.seek(tile.offset)
        data = f.read(width * height * 6)
    if len(data) < width * height * 6:
        raise OSError(f"{len(data)} of its {width * height * 6} sample bytes")
    samples = np.frombuffer(data, ">u2").reshape(height, width, 3).astype(np.float64)
    return np.round(np.clip(samples, 0, maxval) * (65535.0 / maxval)).astype(np.uint16), 1


def read_as_8_bits(im) -> bool:
    """Whether Pillow truncates the 16-bit colour samples of this just-opened image to 8 bits as it loads them (a
    16-bit RGB/RGBA/LA PNG or TIFF, a 16-bit colour PPM), which ``read_image`` reads whole."""
    return sixteen_bit_rawmode(im) is not None or _ppm_maxval(im) is not None


def sixteen_bit_rawmode(im) -> str | None:
    """The raw mode (``RGB;16B`` ...) of a Pillow image just opened from a 16-bit RGB/RGBA/LA file, whose samples
    Pillow truncates to 8 bits as it loads them; None for any other (or one already loaded)."""
    modes = {_tile_raw_mode(t) for t in (getattr(im, "tile", None) or [])}
    if len(modes) != 1:
        return None
    raw = modes.pop()
    if raw is None:
        return None
    base, _, kind = raw.partition(";")
    return raw if kind in ("16B", "16L", "16N") and base in ("RGB", "RGBA", "LA") else None


def _sixteen_bit_colour(path: Path, im) -> tuple[np.ndarray, int] | None:
    """Full 16-bit samples of a 16-bit RGB/RGBA/LA file that Pillow would truncate to 8 bits, and the EXIF orientation
    still to be applied to them (Pillow 13 turns a TIFF upright as it loads it, and drops its orientation tag: 1)."""
    from PIL import Image

    raw = sixteen_bit_rawmode(im)
    if raw is None:
        return None
    base, _, kind = raw.partition(";")
    if kind == "16N":  # libtiff hands over samples in the machine's byte order
        kind = "16L" if sys.byteorder == "little" else "16B"
    swapped = f"{base};{'16L' if kind == '16B' else '16B'}"
    left = []  # the orientation the decoded copies still carry

    def decode(rm: str, as_mode: str | None = None) -> np.ndarray:
        with Image.open(path) as again:
            tiles = []
            for t in again.tile:
                args = rm if isinstance(t.args, str) else (rm, *t.args[1:])
                tiles.append(t._replace(args=args))
            again.tile = tiles
            if as_mode:
                again._mode = as_mode
            again.load()
            left.append(again.getexif().get(0x0112, 1))
            return np.asarray(again).astype(np.uint16)

    if raw == "LA;16B":
        # Same 4 bytes per pixel as 8-bit RGBA: read the bytes as they are and pair them up.
        b = decode("RGBA", "RGBA")
        return np.stack([(b[..., 0] << 8) | b[..., 1], (b[..., 2] << 8) | b[..., 3]], axis=2), left[0]
    try:
        # The unpacker keeps the sample's most significant byte; with the byte order declared
        # the other way round it keeps the least significant one.
        high = decode(raw)
        low = decode(swapped)
    except ValueError:  # a layout Pillow has no unpacker for: fall back to its 8-bit reading
        return None
    return (high << 8) | low, left[0]


def _frames(path: Path, im) -> tuple[int, bool]:
    """How many frames or pages the open file ``im`` holds, and whether a later one is cut short or damaged (a cut
    animated GIF or multi-page TIFF: Pillow fails as it steps to it). For a damaged file, the frames before the damaged
    one and that one. The large previews a camera stores in its JPEG (an MPO file) are not counted. Leaves ``im`` at
    any of its frames."""
    from PIL import Image

    if getattr(im, "format", None) == "MPO":
        try:
            kinds = [str(e["Attribute"]["MPType"]) for e in im.mpinfo[0xB002]]
            return max(1, sum("Thumbnail" not in k for k in kinds)), False
        except Exception:  # noqa: BLE001 - an index Pillow could not parse: count the frames it finds
            pass
    try:
        n = int(getattr(im, "n_frames", 1) or 1)
    except Exception:  # noqa: BLE001 - IndexError (GIF), TypeError (TIFF), struct.error …: the first frame was read
        pass
    else:
        bad = _first_cut_frame(path, n, gif=getattr(im, "format", None) == "GIF") if n > 1 else None
        return (n, False) if bad is None else (bad + 1, True)
    n = 1
    try:
        with Image.open(path) as again:  # ``im`` is left mid-way: step through a fresh copy to find where it breaks
            while True:
                again.seek(n)
                n += 1
    except EOFError:
        return n, False
    except Exception:  # noqa: BLE001 - as above
        return n + 1, True


def _first_cut_frame(path: Path, n: int, gif: bool = False) -> int | None:
    """The first of the ``n`` frames of ``path`` whose pixels cannot be read (its header whole, its data cut short:
    58A-3), or None. A file is cut at its end, so the last frame is read first, and the others only when it fails; a
    GIF (``gif``: Pillow read it as one) that holds its trailer is not decoded at all (reaching its last frame decodes
    every frame: 0.7 s for 150 frames of 640x480, 58H-5)."""
    from PIL import Image

    if gif and reaches_its_end(path):
        return None
    with Image.open(path) as again:
        try:
            again.seek(n - 1)
            again.load()
            return None
        except Exception:  # noqa: BLE001 - "image file is truncated", a decoder's error …
            pass
    with Image.open(path) as again:
        for k in range(1, n):
            try:
                again.seek(k)
                again.load()
            except Exception:  # noqa: BLE001 - as above
                return k
    return n - 1


# formats footage and photos come in that Pillow does not read: named, with how to convert them
_CONVERT_FIRST = {".exr": "EXR", ".dpx": "DPX", ".cin": "Cineon", ".hdr": "Radiance HDR", ".dng": "raw", ".cr2": "raw",
                  ".cr3": "raw", ".nef": "raw", ".arw": "raw", ".raf": "raw", ".orf": "raw", ".rw2": "raw",
                  ".heic": "HEIC", ".heif": "HEIF", ".jxl": "JPEG XL", ".psd": "Photoshop"}


def _convert_hint(files: list[Path], folder: bool = False) -> str:
    """``; convert ...`` for files of a format lwayrt does not read but a converter does (EXR and DPX frames, camera
    raw, HEIC), from the first such file; empty for any other file. ``folder``: the files are a folder's."""
    first = next((Path(f) for f in files if Path(f).suffix.lower() in _CONVERT_FIRST), None)
    if first is None:
        return ""
    kind = _CONVERT_FIRST[first.suffix.lower()]
    q = shell_word
    if folder:
        how = f"cd {q(str(first.parent))} && mkdir png && magick mogrify -path png -format png -depth 16 {q('*' + first.suffix)}"
        return (f"; it holds {kind} files ({first.name}): convert them to 16-bit PNG first (e.g. {how}) and give "
                f"{first.parent / 'png'}")
    return (f"; {kind} files are not read: convert it to a 16-bit PNG first (e.g. magick {q(str(first))} -depth 16 "
            f"{q(str(first.with_suffix('.png')))})")


def unread_files_note(folder: Path, files: list[Path]) -> str | None:
    """The note for a folder whose images were read beside files of a format lwayrt does not read (HEIC photos among a
    phone's JPEGs, a camera's raw files beside its JPEGs): they are left out, which had gone unsaid. None without
    such files."""
    from lway_rt.errors import listing

    unread = sorted(Path(f) for f in files if Path(f).suffix.lower() in _CONVERT_FIRST)
    if not unread:
        return None
    return (f"{folder} also holds {len(unread)} file(s) that lwayrt does not read ({listing((f.name for f in unread), 3)}): "
            f"left out{_convert_hint(unread, folder=True)}")


def missing_input_message(path: Path) -> str:
    """The one line for an input path that names nothing: a link to nothing, or a name that does not exist. A
    pattern the shell did not expand (quoted ``'frames/*.png'``, or ffmpeg's ``frame_%04d.png``) is told to give the
    folder instead."""
    if path.is_symlink():
        return broken_link_message(path)
    text = f"input {path} does not exist"
    glob = any(c in path.name for c in "*?[")
    if (glob or _PRINTF.search(path.name)) and _pattern_matches(path):
        text += (f"; lwayrt does not expand patterns: give the folder {shell_word(str(path.parent))} instead (every image "
                 "in it is read, in name order)" + (", or leave the pattern unquoted for the shell to expand" if glob
                                                     else ""))
    return text


_PRINTF = re.compile(r"%0?\d*d")  # ffmpeg's frame-number pattern in a name (frame_%04d.png)


def _pattern_matches(path: Path) -> bool:
    """Whether ``path``'s name, read as a shell glob or as ffmpeg's ``%04d`` pattern, names a file in its folder: a
    name that merely holds such characters ('sale 50%discount.png', 'photo [2].png') is a mistyped name, and a folder
    that does not exist is no folder to give instead."""
    import fnmatch

    try:
        names = os.listdir(path.parent)
    except OSError:
        return False
    printf = re.compile(r"\d+".join(re.escape(part) for part in _PRINTF.split(path.name)))
    return any(fnmatch.fnmatchcase(n, path.name) or printf.fullmatch(n) for n in names)


def broken_link_message(path: Path) -> str:
    """What to say about a symbolic link whose target is gone (a folder walk would otherwise skip it silently), or
    that leads back to itself."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link that loops ({path} -> {os.readlink(path)} -> ...): mend or remove the link"
    return f"{path} is a link to {os.readlink(path)}, which does not exist: mend or remove the link"


def _is_tiff(path: str | Path) -> bool:
    """Whether the file starts with a TIFF header (little- or big-endian); False for a file that cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in (b"II*\x00", b"MM\x00*")
    except OSError:
        return False


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of the upright image from the file's header (nothing decoded), or None if it cannot be read."""
    from PIL import Image

    try:
        if _is_tiff(path):  # Pillow opens no floating-point colour TIFF: the header as tifffile reads it
            import tifffile

            with tifffile.TiffFile(path) as tf:
                page = tf.pages[0]
                w, h = int(page.imagewidth), int(page.imagelength)
                tag = page.tags.get(274)
                turned = tag is not None and int(tag.value) in (5, 6, 7, 8)
        else:
            with _quiet_pillow(), Image.open(path) as im:
                w, h = im.size
                turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # the orientations that swap the sides
    except Exception:  # noqa: BLE001 - any file that cannot be opened is simply not sized
        return None
    return (h, w) if turned else (w, h)


def reaches_its_end(path: str | Path) -> bool:
    """Whether an image file holds its own end: a PNG its IEND chunk, a JPEG its end marker, a WebP the length its
    RIFF header gives (other formats are not checked: True). Reads the file's first and last bytes only: a file
    cut short (a copy or sync stopped part-way) has a whole header, which is all ``image_size`` reads."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            size = f.seek(0, 2)
            f.seek(max(0, size - 12))
            tail = f.read()
    except OSError:
        return False
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return tail.endswith(b"IEND\xaeB`\x82")
    if head.startswith(b"\xff\xd8"):
        return tail.endswith(b"\xff\xd9")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return struct.unpack("<I", head[4:8])[0] + 8 <= size
    if head[:4] == b"GIF8":  # its last block's terminator, then its trailer (a cut file ends in 0x3b by chance: 58I-2)
        return tail.endswith(b"\x00\x3b")
    return True


def _uncarried_metadata(im) -> tuple[str, ...]:
    """The metadata blocks of the open file ``im`` that outputs do not carry: its XMP packet (which can hold the old
    orientation and size) and its IPTC record (captions, keywords, rights), so that their loss can be said."""
    from PIL import IptcImagePlugin

    try:
        iptc = bool(IptcImagePlugin.getiptcinfo(im))
    except Exception:  # noqa: BLE001 - a record Pillow cannot parse is a record all the same
        iptc = True
    return tuple(name for name, there in (("XMP", bool(im.info.get("xmp"))), ("IPTC", iptc)) if there)


def read_image(path: str | Path) -> LoadedImage:
    """Read PNG, JPEG, WebP, TIFF or BMP (8/16-bit, grey, RGB, RGBA, LA, palette), upright. Of a file with several
    frames or pages the first is read, and ``frames`` says how many there were."""
    with _quiet_pillow():
        return _read_image(Path(path))


def _read_image(path: Path) -> LoadedImage:
    from PIL import Image

    try:
        im = _open(path)
    except InputError:
        if path.is_file() and _is_tiff(path):  # a TIFF Pillow cannot open (floating-point colour)
            return _read_tiff_samples(path)
        raise
    try:
        with im:
            fmt = im.format
            icc = im.info.get("icc_profile")
            orig_mode = im.mode
            if fmt == "TIFF" and _pillow_misreads_tiff(im):  # its metadata as Pillow reads it all the same (53B B3)
                return _with_metadata(_read_tiff_samples(path), im, fmt, im.getexif(),
                                      im.tag_v2.get(0x0112, 1) in (5, 6, 7, 8))
            turned_tiff = fmt == "TIFF" and im.tag_v2.get(0x0112, 1) in (5, 6, 7, 8)  # Pillow turns it as it loads
            bits = _low_grey_bits(im) if fmt == "PNG" else 8  # (read before loading, which empties the tiles)
            try:
                full = _sixteen_bit_colour(path, im) if fmt in _SIXTEEN_BIT_FORMATS else _sixteen_bit_ppm(path, im)
                if full is None:
                    im.load()
            except (OSError, SyntaxError, ValueError, struct.error, zlib.error) as exc:
                raise InputError(f"{path} is truncated or corrupt ({exc}); re-copy or re-export it") from None
            tags = im.getexif()
            orientation = tags.get(0x0112, 1)
            if full is not None:  # the samples decoded from a copy of the file, which Pillow may have turned already
                full, left = full
            img = _decode(im, full, left if full is not None else orientation, orig_mode, fmt, icc, bits)
            if turned_tiff and full is None:
                # Pillow (13) turns a TIFF of orientation 5-8 upright while loading it, and scrambles the pixels of
                # grey, 16-bit grey and RGBA ones: the samples as tifffile reads them, turned here
                try:
                    samples = _read_tiff_samples(path)
                except InputError:
                    samples = None
                if samples is not None and (samples.alpha is None) == (img.alpha is None):
                    img = replace(img, rgb=samples.rgb, alpha=samples.alpha)
                else:  # palette, CMYK, YCbCr, Lab: tifffile reads none of them (Pillow scrambles raw palette and CMYK)
                    img = _tiff_from_memory(path, orig_mode, icc)
            if fmt == "WEBP" and _webp_is_lossless(path):
                img = replace(img, lossless=True)
            if fmt == "PNG":
                img = replace(img, png_chunks=_png_chunks(path))
            # (Pillow dropped a TIFF's orientation tag as it turned it)
            img = _with_metadata(img, im, fmt, tags, turned_tiff or orientation in (5, 6, 7, 8))
            frames, damaged = _frames(path, im)  # last: counting moves ``im`` to other frames
            return replace(img, frames=frames, frames_damaged=damaged) if frames > 1 else img
    except InputError as exc:
        if str(path) in str(exc):
            raise
        raise InputError(f"{path}: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise InputError(_too_many_pixels(path, exc)) from None
    except OSError as exc:  # late decoding failures (e.g. a truncated JPEG) surface here
        raise InputError(f"{path} is truncated or corrupt ({exc}); re-copy or re-export it") from None


def _with_metadata(img: LoadedImage, im, fmt: str, tags, turned: bool) -> LoadedImage:
    """``img`` with the metadata of the file Pillow opened as ``im`` (its EXIF ``tags``): the EXIF block (of a TIFF its
    metadata tags only: most describe its layout), the resolution, turned with the pixels where they were ``turned``
    upright, and what is not carried (XMP, IPTC)."""
    if fmt in _EXIF_FORMATS and len(tags):
        img = replace(img, exif=tags.tobytes())
    elif fmt == "TIFF" and (exif := _tiff_exif(tags)):
        img = replace(img, exif=exif)
    dpi = _dpi(_exif_dpi(tags) if fmt in ("JPEG", "MPO") and im.info.get("jfif_unit") not in (1, 2)
               else im.info.get("dpi")) if _records_dpi(im, fmt, tags) else None
    if dpi is not None:
        img = replace(img, dpi=dpi[::-1] if turned else dpi)
    if uncarried := _uncarried_metadata(im):
        img = replace(img, uncarried=uncarried)
    return img


#: PNG chunks carried from a PNG input to PNG outputs: how its samples are to be shown (gamma, primaries, sRGB
#: intent, HDR coding), which the network's output keeps, and its text (titles, authors, generation parameters)
_PNG_COLOUR_CHUNKS = (b"cHRM", b"cICP", b"gAMA", b"sRGB")
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
#: text whose keyword holds other metadata blocks (XMP, ImageMagick's raw EXIF): they can hold an orientation and the
#: old size, which no longer describe the upright, larger output
# (lwayrt's own: the record of the run that made an input, not of this output)
_PNG_TEXT_NOT_CARRIED = (b"XML:com.adobe.xmp", b"Raw profile type", b"lwayrt-upscale\0", b"lwayrt-upscale-input\0",
                         b"lwayrt-adapt\0")
_PNG_CHUNKS_MAX = 1 << 20  # bytes in all: chunks past this are left out


def _walk_png(path: Path, want: Callable[[bytes, int], bool]) -> Iterator[tuple[bytes, bytes]]:
    """(type, data) of the chunks of a PNG file, up to IEND, that ``want(type, length)`` asks for (the others are
    skipped unread); nothing where the file is not a PNG, and no more where it is cut short."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return
        while header := f.read(8):
            if len(header) < 8:
                return
            length, kind = struct.unpack(">I", header[:4])[0], header[4:]
            if kind == b"IEND":
                return
            if want(kind, length):
                data = f.read(length)
                if len(data) < length:
                    return
                yield kind, data
                f.seek(4, 1)  # the CRC
            else:
                f.seek(length + 4, 1)


def _png_chunks(path: Path) -> tuple[tuple[bytes, bytes], ...]:
    """The colour and text chunks of a PNG file, in file order, as (type, data); () where the file cannot be walked."""
    found, total = [], 0

    def want(kind: bytes, length: int) -> bool:
        return (kind in _PNG_COLOUR_CHUNKS or kind in _PNG_TEXT_CHUNKS) and total + length <= _PNG_CHUNKS_MAX

    try:
        for kind, data in _walk_png(path, want):
            if kind in _PNG_COLOUR_CHUNKS or not data.startswith(_PNG_TEXT_NOT_CARRIED):
                found.append((kind, data))
                total += len(data)
    except OSError:
        return ()
    return tuple(found)


def png_text(path: str | Path, keyword: bytes) -> str | None:
    """The text a PNG file holds under ``keyword`` in a tEXt chunk (None: none, or not a readable PNG)."""
    try:
        for _, data in _walk_png(Path(path), lambda kind, length: kind == b"tEXt" and length < 4096):
            name, _, text = data.partition(b"\0")
            if name == keyword:
                return text.decode("latin-1")
    except OSError:
        pass
    return None


def file_text(path: str | Path, keyword: bytes) -> str | None:
    """The text an image file records under ``keyword`` (``write_samples``' ``records``): a PNG's tEXt chunk or a
    line of a JPEG's comment. None: none, a format that holds none, or a file that cannot be read."""
    path = Path(path)
    fmt = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt == "PNG":
        return png_text(path, keyword)
    if fmt != "JPEG":
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:  # (the header only: the scan is not decoded)
            comments = [data for kind, data in getattr(im, "applist", []) if kind == "COM"]
    except Exception:  # not a readable JPEG: no record
        return None
    for comment in comments:
        for line in comment.split(b"\n"):
            name, sep, text = line.partition(b"\0")
            if sep and name == keyword:
                return text.decode("latin-1")
    return None


#: the tags of a TIFF's first directory that are metadata, not layout (description, make, model, software, date,
#: artist, host computer, copyright), and its Exif and GPS directories
_TIFF_METADATA_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x013C, 0x8298)
_TIFF_METADATA_IFDS = (0x8769, 0x8825)


def _layout_description(text) -> bool:
    """Whether a TIFF's ImageDescription describes its layout, not its picture, as tifffile reads it: tifffile's
    shape JSON (``{"shape": [12, 16]}``, or ``shape=(…)``) or ImageJ's (``ImageJ=…``). Carried to an output of
    another size and layout, tifffile would then read the output's shape from it and warn that it does not match."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    if not isinstance(text, str):
        return False
    return (text[:1] == "{" and '"shape":' in text) or text[:6] == "shape=" or text[:7] in ("ImageJ=", "SCIFIO=")


def _tiff_exif(tags) -> bytes | None:
    """An EXIF block of a TIFF's metadata (``_TIFF_METADATA_TAGS`` and the Exif and GPS directories), or None where
    it has none or they cannot be read: of a TIFF input, and of any input for a TIFF output, whose layout tags
    (photometric, fill order …) are the writer's own. The Exif directory's Interoperability pointer is left out: it is
    an offset into the file it came from, which Pillow's TIFF writer would carry as it is, pointing nowhere."""
    from PIL import Image

    try:
        out = Image.Exif()
        for tag in _TIFF_METADATA_TAGS:
            if tag in tags and not (tag == 0x010E and _layout_description(tags[tag])):
                out[tag] = tags[tag]
        for tag in _TIFF_METADATA_IFDS:
            if tag in tags and (sub := tags.get_ifd(tag)):
                out.get_ifd(tag).update({k: v for k, v in sub.items() if k != 0xA005})
        return out.tobytes() if len(out) or any(out.get_ifd(t) for t in _TIFF_METADATA_IFDS) else None
    except Exception:  # noqa: BLE001 - a malformed directory: the picture is read without its metadata
        return None


def _records_dpi(im, fmt: str, tags) -> bool:
    """Whether the file records the resolution Pillow reports: Pillow reads a TIFF without resolution tags as 1 dpi,
    and a JPEG with an EXIF block but no resolution in it (nor in a JFIF header with a unit) as 72 dpi."""
    if fmt == "TIFF":
        return 282 in getattr(im, "tag_v2", {})
    if fmt in ("JPEG", "MPO") and im.info.get("jfif_unit") not in (1, 2):  # MPO: a camera's JPEG with previews
        return 0x011A in tags and 0x0128 in tags  # where Pillow reads EXIF's resolution, it needs both
    return True


def _exif_dpi(tags) -> tuple[float, float] | None:
    """A JPEG's resolution from its EXIF block, both sides: Pillow reads only XResolution, as (x, x)."""
    try:
        x = float(tags[0x011A])
        y = float(tags.get(0x011B, x))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    per_cm = tags.get(0x0128) == 3
    return (x * 2.54, y * 2.54) if per_cm else (x, y)


def _dpi(value) -> tuple[float, float] | None:
    """Pillow's ``info["dpi"]`` as two positive finite numbers, or None (absent, 0 or garbage in the file)."""
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x, y) if all(np.isfinite(v) and 0 < v < 1e6 for v in (x, y)) else None


def _webp_is_lossless(path: Path) -> bool:
    """Whether a WebP file's picture is coded losslessly (a ``VP8L`` chunk, not ``VP8 ``); of an animated one, whether
    every frame (``ANMF`` chunk: a 16-byte frame header, then its own chunks) is."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return False
        coded = []  # the kind of every picture's bitstream, in file order

        def walk(end: int | None) -> bool:  # the chunks up to ``end`` (None: the file's end); False: cut short
            while end is None or f.tell() + 8 <= end:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return end is None
                kind, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                after = f.tell() + size + (size & 1)
                if kind in (b"VP8L", b"VP8 "):
                    coded.append(kind)
                elif kind == b"ANMF" and size >= 16:
                    f.seek(16, 1)
                    if not walk(f.tell() + size - 16):
                        return False
                f.seek(after)
            return True

        return walk(None) and bool(coded) and all(kind == b"VP8L" for kind in coded)


def _pillow_misreads_tiff(im) -> bool:
    """TIFF layouts Pillow decodes wrongly or not at all: planes stored one after another (PlanarConfiguration 2)
    with more than 8 bits a sample (Pillow unpacks them as 8-bit: noise), floating-point colour, and 32-bit or signed
    integer samples (which tifffile's reader then refuses in one line)."""
    tags = im.tag_v2

    def largest(tag: int, default: int) -> int:
        v = tags.get(tag, default)
        return max(v) if isinstance(v, tuple) else v

    planar_wide = tags.get(284, 1) == 2 and largest(258, 8) > 8
    float_colour = largest(339, 1) == 3 and tags.get(277, 1) >= 2
    white_is_zero = tags.get(262) == 0 and (largest(258, 8) > 8 or largest(339, 1) == 3)  # Pillow reads a negative
    premultiplied = tags.get(338) in (1, (1,)) and largest(258, 8) > 8  # associated alpha: Pillow's 16-bit path not
    wide_int = largest(258, 8) > 16 and largest(339, 1) != 3  # 32-bit integers: Pillow's "I", read as 16-bit, clipped
    signed = largest(339, 1) == 2  # signed integers: Pillow's int16 "I" had its negative samples clipped to black
    return planar_wide or float_colour or white_is_zero or premultiplied or wide_int or signed


def _read_tiff_samples(path: Path) -> LoadedImage:
    """The first page of a TIFF Pillow cannot read, through tifffile: 16-bit samples kept, float samples in [0, 1]."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages[0]
            arr, axes, frames = page.asarray(), page.axes, len(tf.pages)
            photometric = int(page.photometric)
            associated = 1 in tuple(int(e) for e in (page.extrasamples or ()))
            tag = page.tags.get(274)
            orientation = int(tag.value) if tag is not None else 1
            tag = page.tags.get(34675)  # InterColorProfile
            icc = bytes(tag.value) if tag is not None else None
            meta = {code: tag.value for code in (*_TIFF_METADATA_TAGS, 282, 283, 296) if (tag := page.tags.get(code))}
    except Exception as exc:  # noqa: BLE001 - an unsupported compression, a cut file: one line either way
        raise InputError(f"{path}: this TIFF layout cannot be read ({exc}); save it as PNG or as an 8/16-bit TIFF") from None
    if photometric not in (0, 1, 2):  # WhiteIsZero or BlackIsZero grey, or RGB; not CMYK, Lab, YCbCr
        raise InputError(f"{path}: a TIFF in this colour model (photometric {photometric}) is read only as 8-bit "
                         "contiguous samples: save it as an RGB or grey image")
    if axes.startswith("S") and arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    if arr.size == 0:
        raise InputError(_no_pixels(path, int(page.imagewidth), int(page.imagelength)))
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{path}: a TIFF of shape {arr.shape} ({axes}) is not an image this tool reads; save it as PNG")
    if arr.dtype.kind == "f":
        depth, x = 16, _float_samples(arr, str(path))
    elif arr.dtype == np.uint16:
        depth, x = 16, arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.uint8:
        depth, x = 8, arr.astype(np.float32) / 255.0
    elif arr.dtype.kind == "i":
        raise InputError(f"{path} holds signed {arr.dtype} samples, whose negative values are no brightness an image "
                         "has: save it as an unsigned 8/16-bit or 0-1 floating-point image")
    else:
        raise InputError(f"{path} holds {arr.dtype} samples: save it as an 8/16-bit or 0-1 floating-point image")
    if photometric == 0:  # WhiteIsZero: the stored value is the darkness
        x[..., :1] = 1.0 - x[..., :1]
    x = _exif_orient(x, orientation)
    c = x.shape[2]
    if c in (2, 4) and associated:  # premultiplied colour: divide the alpha back out
        a = x[..., c - 1:]
        x[..., :c - 1] = np.where(a > 0, np.clip(x[..., :c - 1] / np.maximum(a, 1e-12), 0.0, 1.0), 0.0)
    img = LoadedImage.from_planes(x, depth, mode=f"{'L' if c <= 2 else 'RGB'}{'A' if c in (2, 4) else ''};{arr.dtype}",
                                  format="TIFF", icc_profile=icc, **_tifffile_metadata(meta, orientation in (5, 6, 7, 8)))
    return replace(img, frames=frames) if frames > 1 else img


def _tifffile_metadata(meta: dict, turned: bool) -> dict:
    """``exif`` and ``dpi`` of a TIFF Pillow cannot open (floating-point colour), from the tag values tifffile read
    (``meta``: the metadata tags' text, the resolution tags): its description, make, model, software, date, artist
    and copyright, and its resolution, turned with the pixels where they were ``turned`` upright (53B B3). A TIFF
    Pillow opens gets them, and its Exif and GPS directories, from Pillow (``_with_metadata``)."""
    from PIL import Image

    out, got = Image.Exif(), {}
    for code in _TIFF_METADATA_TAGS:
        if isinstance(text := meta.get(code), str) and not (code == 0x010E and _layout_description(text)):
            out[code] = text
    if len(out):
        got["exif"] = out.tobytes()
    per_inch = {1: None, 2: 1.0, 3: 2.54}.get(meta.get(296, 2), None)  # (no unit: a ratio of sides, no resolution)
    try:
        x, y = (float(v[0]) / float(v[1]) if isinstance(v, tuple) else float(v) for v in (meta[282], meta.get(283, meta[282])))
        dpi = _dpi((x * per_inch, y * per_inch)) if per_inch else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        dpi = None
    if dpi is not None:
        got["dpi"] = dpi[::-1] if turned else dpi
    return got


def _decode(im, full: np.ndarray | None, orientation: int, orig_mode: str, fmt: str | None, icc: bytes | None,
            grey_bits: int = 8) -> LoadedImage:
    """The loaded picture, upright: ``full`` holds 16-bit colour samples when Pillow could not; ``grey_bits``: the
    bits per sample of a grey PNG (``_low_grey_bits``, read before it was loaded)."""
    from PIL import ImageOps

    if full is not None:
        key = im.info.get("transparency")
        if isinstance(key, tuple) and full.shape[2] == 3:  # a 16-bit RGB PNG's tRNS colour key: that colour is clear
            full = np.concatenate([full, np.where((full == np.array(key, np.uint16)).all(axis=2), 0, 65535)
                                   .astype(np.uint16)[..., None]], axis=2)
        arr = _exif_orient(full.astype(np.float32) / 65535.0, orientation)
        if orig_mode == "LA" or arr.shape[2] == 2:
            return LoadedImage(np.repeat(arr[..., :1], 3, axis=2), arr[..., 1].copy(), 16, True, "LA;16", fmt, icc)
        alpha = arr[..., 3].copy() if arr.shape[2] == 4 else None
        return LoadedImage(np.ascontiguousarray(arr[..., :3]), alpha, 16, False, orig_mode + ";16", fmt, icc)
    return _from_pil(ImageOps.exif_transpose(keyed_grey(im, grey_bits)), orig_mode, fmt, icc)


def keyed_grey(im, bits: int):
    """``im`` as it is, or, for a grey ("1" or "L") Pillow image with a tRNS key, a copy in mode "L" whose key is the
    8-bit level its pixels show (then read as any 8-bit grey key: converted to "LA"), for a PNG of ``bits`` bits per
    sample (``_low_grey_bits``). Pillow scales a 2/4-bit PNG's pixels to 8 bits and not its key (no pixel matched
    it), and gives a 1-bit one's as 0 or 255 (read as 0 or 1 by older releases) and drops it converting to "L": the
    clear areas came out opaque."""
    key = im.info.get("transparency")
    if im.mode not in ("1", "L") or not isinstance(key, int):
        return im
    grey = im.convert("L")  # (a copy: the caller's image keeps its info)
    grey.info["transparency"] = (255 if key else 0) if im.mode == "1" else \
        key * 255 // ((1 << bits) - 1) if bits < 8 else key
    return grey


def _tile_raw_mode(tile) -> str | None:
    """The raw mode a Pillow tile is decoded with (``RGB;16B``, ``L;2`` ...), or None where its codec takes other
    arguments (a GIF's bit count: review 53B B2) or none (QOI, XBM: 53D D6)."""
    args = tile.args[0] if isinstance(tile.args, tuple) and tile.args else tile.args
    return args if isinstance(args, str) else None


def _low_grey_bits(im) -> int:
    """The bits per sample a grey PNG stores (1, 2, 4 or 8), from the raw mode Pillow decodes it with (before the
    image is loaded: loading empties its tiles)."""
    raw = _tile_raw_mode(im.tile[0]) if getattr(im, "tile", None) else None
    return {"1": 1, "L;1": 1, "L;2": 2, "L;4": 4}.get(raw, 1 if im.mode == "1" else 8)


def _tiff_from_memory(path: Path, orig_mode: str, icc: bytes | None) -> LoadedImage:
    """A TIFF of orientation 5-8 read from memory. Pillow (13) maps an uncompressed file's samples straight from the
    file at the turned size, which scrambles them (palette, CMYK, grey); read from a buffer it decodes them at their
    stored size and turns them upright as it loads them, as it does for compressed files."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(path.read_bytes())) as im:
        im.load()
        return _from_pil(im, orig_mode, "TIFF", icc)


def _exif_orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """The eight EXIF orientations, for arrays Pillow cannot hold (same result as exif_transpose)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.swapaxes(a, 0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(arr)) if op else arr


def _float_samples(arr: np.ndarray, subject: str) -> np.ndarray:
    """Floating-point samples as float32, refused unless finite and within 0-1 (clipping would whiten or blacken the
    picture silently; a 0-255 float grey came out mostly white)."""
    if not np.isfinite(arr).all():
        raise InputError(f"{subject} holds NaN or infinite samples: save it without them")
    lo, hi = float(arr.min()), float(arr.max())
    if not (lo >= 0.0 and hi <= 1.0):
        raise InputError(f"{subject} holds floating-point samples from {lo:g} to {hi:g}, outside 0-1: scale it to 0-1 "
                         "or save it as an 8/16-bit image")
    return arr.astype(np.float32)


def _from_pil(im, orig_mode: str, fmt: str | None, icc: bytes | None) -> LoadedImage:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        raw = np.asarray(im)
        key = im.info.get("transparency")  # a 16-bit grey PNG's tRNS key: that grey level is clear
        alpha = (raw != key).astype(np.float32) if isinstance(key, int) else None
        grey = np.clip(raw.astype(np.float32) / 65535.0, 0.0, 1.0)
        return LoadedImage(np.repeat(grey[..., None], 3, axis=2), alpha, 16, True, orig_mode, fmt, icc)
    if mode == "F":
        grey = _float_samples(np.asarray(im), "the image")
        return LoadedImage(np.repeat(grey[..., None], 3, axis=2), None, 16, True, orig_mode, fmt, icc)
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    elif mode in ("RGB", "L") and "transparency" in im.info:  # a tRNS colour key (PNG optimisers write these)
        im = im.convert("RGBA" if mode == "RGB" else "LA")
        mode = im.mode
    elif mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    elif mode == "La":
        im = im.convert("LA")
        mode = "LA"
    elif mode == "1":  # (with a tRNS key, made "L" with it by keyed_grey)
        im = im.convert("L")
        mode = "L"
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
        im = im.convert("RGB")
        mode = "RGB"
    arr = np.asarray(im).astype(np.float32) / 255.0
    if mode == "L":
        return LoadedImage(np.repeat(arr[..., None], 3, axis=2), None, 8, True, orig_mode, fmt, icc)
    if mode == "LA":
        return LoadedImage(np.repeat(arr[..., :1], 3, axis=2), arr[..., 1].copy(), 8, True, orig_mode, fmt, icc)
    if mode == "RGBA":
        return LoadedImage(np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy(), 8, False, orig_mode, fmt, icc)
    if mode == "RGB":
        return LoadedImage(np.ascontiguousarray(arr), None, 8, False, orig_mode, fmt, icc)
    raise InputError(f"image mode {orig_mode} is not supported; convert the image to RGB or greyscale first")


# --------------------------------------------------------------------------------------------
# writing


def _luminance(rgb: np.ndarray) -> np.ndarray:
    # BT.601 weights: a grey input stays grey on output even if the network tinted it slightly.
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def all_finite(x: np.ndarray) -> bool:
    """``np.isfinite(x).all()`` a block of rows at a time: the whole image's boolean mask (a byte a sample) is not
    made at once, where an upscale's output is at its largest."""
    rows = max(1, (1 << 20) // max(1, x[:1].size))
    return all(np.isfinite(x[r:r + rows]).all() for r in range(0, x.shape[0], rows))


def _quantise(x: np.ndarray, depth: int, out: np.ndarray | None = None) -> np.ndarray:
    """[0, 1] floats -> 8/16-bit samples, rounded half to even, into ``out`` when given. Done a block of rows at a
    time: whole-image float temporaries cost 36 bytes per RGB pixel, most of an upscale's peak memory."""
    top = 65535.0 if depth == 16 else 255.0
    if out is None:
        out = np.empty(x.shape, np.uint16 if depth == 16 else np.uint8)
    rows = max(1, (1 << 20) // max(1, x[:1].size))  # about a million samples per block
    for r in range(0, x.shape[0], rows):
        block = np.clip(x[r:r + rows], 0.0, 1.0)
        block *= top
        np.round(block, out=block)
        out[r:r + rows] = block
    return out


def _icc_fits(icc: bytes | None, colour: bool) -> bool:
    """Whether an ICC profile describes the samples written: its data colour space (header bytes 16-20) must be
    RGB for colour output and GRAY for grey; a CMYK file's profile does not describe the RGB we write from it."""
    return bool(icc) and len(icc) >= 20 and icc[16:20] == (b"RGB " if colour else b"GRAY")


def _png16(arr: np.ndarray, icc: bytes | None = None, exif: bytes | None = None,
           dpi: tuple[float, float] | None = None, extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB, RGBA) with the Sub filter on every row, its ICC profile, EXIF, dpi and
    ``extra`` chunks (colour and text; an sRGB chunk is left out beside an ICC profile, as the PNG standard asks)."""
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    rows = arr.astype(">u2").reshape(h, w * ch).view(np.uint8).reshape(h, w * ch * 2)
    bpp = 2 * ch
    filtered = rows.copy()
    filtered[:, bpp:] = rows[:, bpp:] - rows[:, :-bpp]  # uint8 arithmetic wraps mod 256, as PNG wants
    body = np.concatenate([np.ones((h, 1), np.uint8), filtered], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    iccp = chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc)) if icc else b""
    exif_chunk = chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")) if exif else b""
    phys = chunk(b"pHYs", struct.pack(">IIB", *(round(v / 0.0254) for v in dpi), 1)) if dpi else b""  # per metre
    extras = b"".join(chunk(kind, data) for kind, data in extra if not (icc and kind == b"sRGB"))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)) + iccp
            + extras + phys + exif_chunk + chunk(b"IDAT", zlib.compress(body, 6)) + chunk(b"IEND", b""))


def _tiff16(arr: np.ndarray, icc: bytes | None = None, dpi: tuple[float, float] | None = None, *,
            predictor: bool = True) -> bytes:
    """A little-endian baseline TIFF with 16-bit samples (one strip), its ICC profile and dpi: uncompressed, with
    (``predictor``) Predictor 2 declared for ``_deflate_tiff`` to apply."""
    h, w = arr.shape[:2]
    ch = 1 if arr.ndim == 2 else arr.shape[2]
    data = arr.astype("<u2").tobytes()
    entries = []  # (tag, type, count, value-or-offset payload)
    extra = b""
    header = 8
    n_entries = 10 + predictor + (1 if ch in (2, 4) else 0) + (1 if icc else 0) + (3 if dpi else 0)
    ifd_size = 2 + 12 * n_entries + 4
    extra_off = header + ifd_size
    bits_payload = struct.pack("<" + "H" * ch, *([16] * ch))
    if ch > 2:
        bits_ref = extra_off + len(extra)
        extra += bits_payload
    if dpi:  # two RATIONALs: hundredths of a pixel per inch
        res_ref = extra_off + len(extra)
        extra += b"".join(struct.pack("<II", round(v * 100), 100) for v in dpi)
    if icc:
        icc_ref = extra_off + len(extra)
        extra += icc + (b"\0" if len(icc) % 2 else b"")  # word-aligned offsets after it
    data_off = extra_off + len(extra)
    SHORT, LONG, RATIONAL, UNDEFINED = 3, 4, 5, 7
    entries.append((256, LONG, 1, w))
    entries.append((257, LONG, 1, h))
    entries.append((258, SHORT, ch, bits_ref if ch > 2 else (16 | (16 << 16) if ch == 2 else 16)))
    entries.append((259, SHORT, 1, 1))  # no compression
    entries.append((262, SHORT, 1, 2 if ch >= 3 else 1))  # RGB or BlackIsZero
    entries.append((273, LONG, 1, data_off))
    entries.append((277, SHORT, 1, ch))
    entries.append((278, LONG, 1, h))
    entries.append((279, LONG, 1, len(data)))
    entries.append((284, SHORT, 1, 1))  # chunky
    if predictor:
        entries.append((317, SHORT, 1, 2))  # horizontal differencing (applied by _deflate_tiff)
    if ch in (2, 4):
        entries.append((338, SHORT, 1, 2))  # unassociated alpha
    if dpi:
        entries += [(282, RATIONAL, 1, res_ref), (283, RATIONAL, 1, res_ref + 8), (296, SHORT, 1, 2)]  # per inch
    if icc:
        entries.append((34675, UNDEFINED, len(icc), icc_ref))  # InterColorProfile
    entries.sort()
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if typ == SHORT and count == 1:
            ifd += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, typ, count, value)
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", header) + ifd + extra + data


def _deflate_tiff(raw: bytes | memoryview) -> bytearray | None:
    """A one-page chunky TIFF written uncompressed with Predictor 2 declared (``_tiff16``; Pillow given tag 317),
    its strips differenced along each row and Deflate-coded, as an editor's "ZIP with prediction": 24-54 % of the
    uncompressed bytes on photos. Done to the finished file so that Pillow's own writer keeps carrying EXIF, which
    its libtiff writer, the one that compresses, refuses. The strips must be the file's last bytes, one after
    another (as both writers lay them out) and every tag as expected: otherwise None, and the caller writes the
    file without compression."""
    order = {b"II": "<", b"MM": ">"}.get(bytes(raw[:2]))
    if order is None or raw[2:4] != (b"*\0" if order == "<" else b"\0*"):
        return None
    (ifd,) = struct.unpack_from(order + "I", raw, 4)
    (n,) = struct.unpack_from(order + "H", raw, ifd)
    entries = {}  # tag: (type, count, position of its value field)
    for k in range(n):
        tag, typ, count = struct.unpack_from(order + "HHI", raw, ifd + 2 + 12 * k)
        entries[tag] = (typ, count, ifd + 2 + 12 * k + 8)
    if struct.unpack_from(order + "I", raw, ifd + 2 + 12 * n)[0] != 0:  # a second page: not ours to rewrite
        return None

    def values(tag: int) -> list[int] | None:
        if tag not in entries:
            return None
        typ, count, at = entries[tag]
        size = {3: 2, 4: 4}.get(typ)
        if size is None:
            return None
        if size * count > 4:
            (at,) = struct.unpack_from(order + "I", raw, at)
        return list(struct.unpack_from(order + ("H" if size == 2 else "I") * count, raw, at))

    width, height = (values(256) or [0])[0], (values(257) or [0])[0]
    bits, spp = values(258), (values(277) or [1])[0]
    offsets, counts = values(273), values(279)
    rows = min((values(278) or [height])[0], height)
    if (values(259) != [1] or values(317) != [2] or (values(284) or [1]) != [1] or not bits or len(set(bits)) != 1
            or bits[0] not in (8, 16) or len(bits) != spp or offsets is None or counts is None or rows < 1
            or entries[273][0] != 4 or entries[279][0] != 4 or len(offsets) != len(counts)
            or len(offsets) != -(-height // rows)):
        return None
    dtype = np.dtype(np.uint8 if bits[0] == 8 else order + "u2")
    row_bytes = width * spp * dtype.itemsize
    start = offsets[0]
    for k, (off, cnt) in enumerate(zip(offsets, counts)):
        if off != (start if k == 0 else offsets[k - 1] + counts[k - 1]) or cnt != min(rows, height - k * rows) * row_bytes:
            return None
    if start + sum(counts) != len(raw):
        return None
    out = bytearray(raw[:start])
    new_offsets, new_counts = [], []
    for off, cnt in zip(offsets, counts):
        strip = np.frombuffer(raw, dtype, cnt // dtype.itemsize, off).reshape(-1, width, spp)
        new_offsets.append(len(out))
        coder = zlib.compressobj(6)
        for top in range(0, len(strip), 64):  # a few MB at a time: a whole strip may be the whole image
            block = strip[top:top + 64]
            moved = np.empty_like(block)
            moved[:, 0] = block[:, 0]
            np.subtract(block[:, 1:], block[:, :-1], out=moved[:, 1:])  # unsigned: wraps, as the spec says
            out += coder.compress(moved.tobytes())
        out += coder.flush()
        new_counts.append(len(out) - new_offsets[-1])

    def put(tag: int, numbers: list[int]) -> None:
        typ, count, at = entries[tag]
        if 4 * count > 4:
            (at,) = struct.unpack_from(order + "I", out, at)
        struct.pack_into(order + "I" * count, out, at, *numbers)

    put(273, new_offsets)
    put(279, new_counts)
    struct.pack_into(order + "H", out, entries[259][2], 8)  # Adobe Deflate
    return out


def _save_tiff(im, dest: Path, opts: dict) -> None:
    """``im`` saved by Pillow as a TIFF at ``dest`` with ``opts`` (its EXIF among them), Deflate-coded: Pillow's raw
    writer, which keeps EXIF, is told of Predictor 2, and ``_deflate_tiff`` applies it and codes the strips; where the
    rewrite declines, the file is saved again without it, uncompressed."""
    from PIL import Image

    tags = Image.Exif()
    if opts.get("exif"):
        tags.load(opts["exif"])
    tags[317] = 2
    buf = io.BytesIO()
    im.save(buf, format="TIFF", **{**opts, "exif": tags})
    if (packed := _deflate_tiff(buf.getbuffer())) is not None:  # (a view: no copy of Pillow's file)
        dest.write_bytes(packed)
        return
    del tags[317]
    im.save(dest, format="TIFF", **{**opts, "exif": tags})


def _write_format(path: Path) -> str:
    """The format ``write_image`` writes to ``path``, from its suffix; an unknown one is refused."""
    fmt = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"{path}: unknown image format {path.suffix!r}; use .png, .jpg, .webp, .avif, .tif or .bmp")
    return fmt


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, *, bit_depth: int = 8,
                grey: bool = False, icc_profile: bytes | None = None, quality: int = 95, lossless: bool = False,
                exif: bytes | None = None, dpi: tuple[float, float] | None = None,
                png_chunks: tuple[tuple[bytes, bytes], ...] = (), records: tuple[tuple[bytes, str], ...] = (),
                before_replace: Callable[[Path], None] | None = None) -> Path:
    """Write HxWx3 float RGB in [0, 1] (plus optional HxW alpha) atomically; the suffix picks the format.

    16-bit is kept for PNG and TIFF and reduced to 8 bits elsewhere; alpha is dropped for JPEG
    and BMP, which cannot (portably) hold it; ``lossless`` codes a WebP losslessly. ``exif`` (an input's
    ``LoadedImage.exif``) is carried with its orientation dropped (the pixels are upright) and its pixel
    dimensions set to this image's (all formats but BMP and 16-bit colour TIFF). ``dpi`` (``LoadedImage.dpi``) is kept as
    it was, as an image editor keeps it when it resamples (the print grows with the pixels), in PNG, JPEG, TIFF and
    BMP (WebP and AVIF record it only in the EXIF block). ``png_chunks`` (``LoadedImage.png_chunks``: a PNG
    input's gamma, primaries, sRGB intent and text) go into PNG outputs only. Returns the path written.
    ``image_samples`` then ``write_samples``, for a caller that frees its floats between the two.
    """
    samples = image_samples(path, rgb, alpha, bit_depth=bit_depth, grey=grey)
    return write_samples(path, samples, icc_profile=icc_profile, quality=quality, lossless=lossless, exif=exif,
                         dpi=dpi, png_chunks=png_chunks, records=records, before_replace=before_replace)


def image_samples(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, *, bit_depth: int = 8,
                  grey: bool = False) -> np.ndarray:
    """The integer samples ``write_samples`` writes to ``path`` (its suffix picks the format) for HxWx3 float RGB in
    [0, 1] and an optional HxW alpha: 8 or 16 bits as the format holds, grey as one plane, alpha dropped where the
    format cannot hold it. Refuses NaN/inf pixels. With them, the caller can let go of the float image (four times
    the samples' size for 8 bits) before the file is encoded: most of an upscale's peak memory at the write."""
    path = Path(path)
    fmt = _write_format(path)
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3, got {rgb.shape}")
    if not all_finite(rgb):
        raise OutputError(f"refusing to write {path}: the image has NaN/inf pixels (the model's output is broken)")
    if fmt in ("JPEG", "BMP"):
        alpha = None  # JPEG has no alpha; BMP's 32-bit alpha is ignored by most readers, Pillow included
    depth = bit_depth if fmt in _SIXTEEN_BIT_FORMATS else 8
    planes = [_luminance(rgb)[..., None]] if grey else [rgb]
    if alpha is not None:
        planes.append(np.asarray(alpha, dtype=np.float32)[..., None])
    arr = np.empty((*rgb.shape[:2], sum(p.shape[2] for p in planes)), np.uint16 if depth == 16 else np.uint8)
    start = 0
    for plane in planes:  # straight into the samples written: no float copy of the whole image
        _quantise(plane, depth, arr[..., start:start + plane.shape[2]])
        start += plane.shape[2]
    if arr.shape[2] == 1:
        arr = arr[..., 0]
    elif arr.shape[2] == 2 and fmt == "TIFF":
        arr = arr[..., [0, 0, 0, 1]]  # grey+alpha is not portable in these formats: write RGBA
    return arr


def write_samples(path: str | Path, arr: np.ndarray, *, icc_profile: bytes | None = None, quality: int = 95,
                  lossless: bool = False, exif: bytes | None = None, dpi: tuple[float, float] | None = None,
                  png_chunks: tuple[tuple[bytes, bytes], ...] = (),
                  records: tuple[tuple[bytes, str], ...] = (),
                  before_replace: Callable[[Path], None] | None = None) -> Path:
    """Write ``image_samples(path, ...)``'s samples atomically, with the metadata ``write_image`` describes.
    ``records`` (keyword, text: what made the file, read back by ``file_text``) go into a PNG's text chunks or a
    JPEG's comment; the other formats hold none. ``before_replace`` gets the finished temporary file just before it
    takes ``path``'s place (a list of the files written can name the new bytes first)."""
    from PIL import Image

    from lway_rt.io.weights import atomic_path

    path = Path(path)
    fmt = _write_format(path)
    if records and fmt == "PNG":
        png_chunks = (*png_chunks, *((b"tEXt", key + b"\0" + text.encode("latin-1")) for key, text in records))
    if arr.dtype not in (np.uint8, np.uint16) or arr.ndim not in (2, 3):
        raise ValueError(f"samples must be HxW or HxWxC uint8/uint16 (image_samples), got {arr.dtype} {arr.shape}")
    depth = 16 if arr.dtype == np.uint16 else 8
    if not _icc_fits(icc_profile, colour=arr.ndim == 3 and arr.shape[2] >= 3):
        icc_profile = None
    exif = _exif_for(exif, arr.shape[1], arr.shape[0], fmt) if exif else None
    try:
        with atomic_path(path) as tmp:
            if depth == 16 and (arr.ndim == 3):
                if fmt == "PNG":
                    tmp.write_bytes(_png16(arr, icc_profile, exif, dpi, png_chunks))
                else:
                    tmp.write_bytes(_deflate_tiff(_tiff16(arr, icc_profile, dpi))
                                    or _tiff16(arr, icc_profile, dpi, predictor=False))
            else:
                if arr.ndim == 2:
                    im = Image.fromarray(arr)  # L or I;16
                else:
                    im = Image.fromarray(arr, {2: "LA", 3: "RGB", 4: "RGBA"}[arr.shape[2]])
                opts: dict = {}
                if icc_profile and fmt in ("PNG", "JPEG", "WEBP", "AVIF", "TIFF"):
                    opts["icc_profile"] = icc_profile
                if exif:
                    opts["exif"] = exif
                if dpi and fmt in ("PNG", "JPEG", "TIFF", "BMP"):
                    opts["dpi"] = dpi
                if png_chunks and fmt == "PNG":
                    from PIL.PngImagePlugin import PngInfo

                    opts["pnginfo"] = info = PngInfo()
                    for kind, data in png_chunks:
                        info.add(kind, data)
                if fmt == "JPEG":
                    opts.update(quality=quality, subsampling=0)
                    if records:  # one COM segment, a line per record
                        opts["comment"] = b"\n".join(key + b"\0" + text.encode("latin-1") for key, text in records)
                elif fmt == "AVIF":
                    opts.update(quality=quality)
                elif fmt == "WEBP":
                    opts.update(lossless=True, quality=100, method=4) if lossless else opts.update(quality=quality)
                if fmt == "TIFF":
                    _save_tiff(im, tmp, opts)
                else:
                    im.save(tmp, format=fmt, **opts)
            if before_replace is not None:  # (either branch: the file is whole here)
                before_replace(tmp)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}; choose another output folder") from None
    return path


def format_loss_note(src: Path, dest: Path, img: LoadedImage) -> str | None:
    """The note for ``img`` (read from ``src``) written to ``dest`` in a format that cannot hold its 16-bit samples
    or its alpha (``write_image``: 16 bits in PNG and TIFF only, no alpha in JPEG and BMP), as ``--format same``
    writes the format the name's ending says: a PNG with alpha named .jpg becomes a JPEG without it. None where
    nothing is lost."""
    fmt = _FORMAT_BY_SUFFIX.get(Path(dest).suffix.lower())
    deep = img.bit_depth == 16 and fmt not in _SIXTEEN_BIT_FORMATS
    clear = img.alpha is not None and fmt in ("JPEG", "BMP")
    if fmt is None or not (deep or clear):
        return None
    has = " and ".join(what for what, lost in (("16-bit samples", deep), ("alpha", clear)) if lost)
    written = " and ".join(what for what, lost in (("8-bit", deep), ("without alpha", clear)) if lost)
    named = _FORMAT_BY_SUFFIX.get(Path(src).suffix.lower())
    named = f" (a {img.format} file named {Path(src).suffix})" if img.format and named and named != img.format else ""
    show = {"WEBP": "WebP"}.get(fmt, fmt)
    return (f"{src}{named} has {has}: {Path(dest).name} is a{'n' if show == 'AVIF' else ''} {show}, written {written} "
            f"(--format png keeps {'it' if clear and not deep else 'them'})")


def _exif_for(exif: bytes, width: int, height: int, fmt: str) -> bytes | None:
    """An input's EXIF block for an output ``width`` x ``height``: the orientation tag dropped (the pixels were turned
    upright on reading; kept, a viewer would turn them again) and the Exif pixel dimensions set to the output's.
    None where the format holds no EXIF here, or the block cannot be parsed or is too long for a JPEG (64 KB): the
    picture is written without it rather than not at all."""
    from PIL import Image

    if fmt == "BMP":
        return None
    try:
        tags = Image.Exif()
        tags.load(exif)
        if tags.pop(0x0112, None) in (5, 6, 7, 8) and 0x011A in tags and 0x011B in tags:  # the picture was turned:
            tags[0x011A], tags[0x011B] = tags[0x011B], tags[0x011A]  # its x and y resolution turn with it
        sub = tags.get_ifd(0x8769) if 0x8769 in tags else {}  # the Exif sub-IFD (asking for it makes an empty one)
        if 0xA002 in sub or 0xA003 in sub:
            sub[0xA002], sub[0xA003] = width, height
        if 0x0100 in tags or 0x0101 in tags:  # ImageWidth / ImageLength, which some phones write in the main block
            tags[0x0100], tags[0x0101] = width, height
        data = _tiff_exif(tags) if fmt == "TIFF" else tags.tobytes()
    except Exception:  # noqa: BLE001 - a malformed block from some camera or editor: leave it out
        return None
    return None if fmt == "JPEG" and len(data) > 65000 else data


def settle_alpha(alpha: np.ndarray) -> np.ndarray:
    """An alpha plane upscaled by an SR network, with values within 1.5 8-bit levels of clear or opaque made exactly
    so: the network leaves opaque areas at 254 and specks of 1 in clear ones, which a mask must not have. Between 1.5
    and 3 levels the values are drawn out linearly to meet them, so that the map has no step: at a hard threshold a
    difference of 1e-6 between two runtimes of the same network (PyTorch, ONNX Runtime) had become 2 levels."""
    a = np.asarray(alpha, dtype=np.float32)
    near, far = 1.5 / 255, 3.0 / 255

    def ramp(d: np.ndarray) -> np.ndarray:  # a distance from clear (or opaque): 0 up to 1.5 levels, d itself from 3
        return np.clip((d - near) * (far / (far - near)), 0.0, None)

    return np.where(a < far, ramp(a), np.where(a > 1.0 - far, 1.0 - ramp(1.0 - a), a)).astype(np.float32)


def fill_hidden_colour(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``rgb`` with the colour under fully transparent pixels replaced by the colour of the visible pixels
    around them (a push-pull fill: visible colour averaged down an image pyramid, then brought back up where
    nothing is visible). A network's receptive field reaches across the alpha edge, so the colour hidden there
    (often black, or anything an editor left) would otherwise bleed into the visible edge of the output; after
    the fill the output no longer depends on it. Pixels with any alpha keep their colour."""
    import torch.nn.functional as F

    if alpha is None:
        return rgb
    seen = np.asarray(alpha) > 0
    if seen.all() or not seen.any():
        return rgb
    w = torch.from_numpy(seen.astype(np.float32))[None, None]
    c = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None] * w
    levels = [(c, w)]
    while max(c.shape[-2:]) > 1:  # down to one pixel, which sees something since some pixel is visible
        k = (min(2, c.shape[-2]), min(2, c.shape[-1]))
        c, w = F.avg_pool2d(c, k, ceil_mode=True), F.avg_pool2d(w, k, ceil_mode=True)
        levels.append((c, w))
    filled = None
    for c, w in reversed(levels):  # coarse to fine: where a level sees nothing, the coarser level's colour
        own = c / w.clamp_min(1e-12)
        if filled is not None:
            up = F.interpolate(filled, size=c.shape[-2:], mode="bilinear", align_corners=False)
            own = torch.where(w > 0, own, up)
        filled = own
    out = filled[0].permute(1, 2, 0).numpy()
    return np.where(seen[..., None], rgb, out).astype(np.float32)


# --------------------------------------------------------------------------------------------
# arrays <-> tensors


def to_tensor(img: np.ndarray, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """HxWxC (or HxW) array -> 1xCxHxW tensor; uint8/uint16 are scaled to [0, 1]."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    if arr.ndim == 2:
        arr = arr[..., None]
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)
    return t.to(device=device, dtype=dtype)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """1xCxHxW (or CxHxW) tensor -> HxWxC float32 array (no clamping)."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got {t.shape[0]}")
        t = t[0]
    return t.detach().to("cpu", torch.float32).permute(1, 2, 0).contiguous().numpy()


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8, rounded (as SR papers save their outputs)."""
    return _quantise(np.asarray(arr, dtype=np.float32), 8)


def resize_bicubic(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of an HxWxC / HxW float image to ``size`` = (width, height), with Pillow's
    antialiasing when shrinking (close to MATLAB ``imresize``, the SR literature's degradation).

    uint8 in -> uint8 out (Pillow's 8-bit path, as SR datasets are made); float in -> float32 out.
    """
    from PIL import Image

    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC))
    arr = arr.astype(np.float32)
    planes = arr[..., None] if arr.ndim == 2 else arr
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c]), "F").resize(size, Image.Resampling.BICUBIC))
                    for c in range(planes.shape[2])], axis=2)
    return out[..., 0] if arr.ndim == 2 else out


def bundled_photo(name: str, *, feature: str = "the bundled sample photos", alternative: str | None = None) -> np.ndarray:
    """One of scikit-image's bundled photos as HxWx3 uint8 RGB (grey replicated, alpha dropped).

    ``motorcycle`` (or ``motorcycle_left``) and ``motorcycle_right`` are the two views of the stereo
    pair. Needs the ``samples`` extra; ``feature``/``alternative`` go into the error if it is missing.
    """
    from lway_rt.errors import require

    data = require("skimage.data", "samples", feature, alternative)
    if name.startswith("motorcycle"):
        left, right, _ = data.stereo_motorcycle()
        img = right if name.endswith("right") else left
    else:
        loader = getattr(data, name, None)
        if loader is None or not callable(loader):
            raise InputError(f"scikit-image bundles no photo named {name!r}")
        img = loader()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])
