"""Image reading/writing: formats, bit depths, modes, EXIF orientation, bad files, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image, ImageCms, ImageOps

from lway_rt.errors import InputError, OutputError
from lway_rt.io.images import (
    _exif_orient, read_image, resize_bicubic, to_numpy, to_tensor, to_uint8, write_image,
)


@pytest.fixture(scope="module")
def photo(astronaut) -> np.ndarray:
    return np.ascontiguousarray(astronaut[100:148:2, 150:214:2])  # 24x32, textured


def _planes(img):
    """The file's samples back as the reader sees them: grey or RGB, plus alpha."""
    base = img.rgb[..., :1] if img.grey else img.rgb
    return np.concatenate([base] + ([img.alpha[..., None]] if img.alpha is not None else []), axis=2)


# ---------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("suffix,mode", [(s, m) for s in (".png", ".webp", ".tif", ".bmp") for m in ("RGB", "RGBA", "L", "LA")
                                         if not (s == ".bmp" and "A" in m)])  # BMP: no (readable) alpha
def test_lossless_8bit_formats_read_exactly(tmp_path, photo, suffix, mode):
    rng = np.random.default_rng(1)
    alpha = rng.integers(0, 256, photo.shape[:2], dtype=np.uint8)
    grey = np.asarray(Image.fromarray(photo).convert("L"))
    arr = {"RGB": photo, "RGBA": np.dstack([photo, alpha]), "L": grey, "LA": np.dstack([grey, alpha])}[mode]
    path = tmp_path / f"x{suffix}"
    opts = {"lossless": True, "exact": True} if suffix == ".webp" else {}
    Image.fromarray(arr, mode).save(path, **opts)
    img = read_image(path)
    assert img.bit_depth == 8 and img.rgb.dtype == np.float32 and img.rgb.shape == (24, 32, 3)
    assert img.grey == (mode in ("L", "LA") and suffix != ".webp")  # WebP stores grey as colour
    assert (img.alpha is not None) == ("A" in mode)
    got = np.round(_planes(img) * 255).astype(np.uint8)
    want = arr if arr.ndim == 3 else arr[..., None]
    if img.grey or mode not in ("L", "LA"):
        np.testing.assert_array_equal(got, want)
    else:  # grey decoded as RGB: every channel equals the grey value
        np.testing.assert_array_equal(got[..., 0], want[..., 0])


def test_jpeg_reads_close_to_source(tmp_path, photo):
    path = tmp_path / "x.jpg"
    Image.fromarray(photo).save(path, quality=98, subsampling=0)
    img = read_image(path)
    assert img.format == "JPEG" and not img.grey and img.alpha is None
    assert np.abs(img.rgb * 255 - photo).mean() < 2.0


@pytest.mark.parametrize("transparency", [False, True])
def test_palette_images(tmp_path, photo, transparency):
    pal = Image.fromarray(photo).quantize(16)
    if transparency:
        pal.info["transparency"] = 3
    path = tmp_path / "p.png"
    pal.save(path, **({"transparency": 3} if transparency else {}))
    img = read_image(path)
    assert img.mode == "P"
    expected = np.asarray(pal.convert("RGB"))
    np.testing.assert_array_equal(np.round(img.rgb * 255).astype(np.uint8), expected)
    if transparency:
        idx = np.asarray(pal)
        np.testing.assert_array_equal(img.alpha == 0, idx == 3)
        assert img.alpha[idx != 3].min() == 1.0
    else:
        assert img.alpha is None


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_keeps_all_bits(tmp_path, suffix):
    g = np.random.default_rng(2).integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(g).save(tmp_path / f"g{suffix}")
    img = read_image(tmp_path / f"g{suffix}")
    assert img.bit_depth == 16 and img.grey
    np.testing.assert_array_equal(np.round(img.rgb[..., 0] * 65535).astype(np.uint16), g)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_16bit_colour_tiff_from_tifffile_keeps_all_bits(tmp_path, channels, compression):
    """Pillow alone would truncate these to 8 bits; the reader must not."""
    a = np.random.default_rng(3).integers(0, 65536, (18, 25, channels), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", a, photometric="rgb", compression=compression,
                     extrasamples=[2] if channels == 4 else None)
    img = read_image(tmp_path / "c.tif")
    assert img.bit_depth == 16 and not img.grey
    np.testing.assert_array_equal(np.round(_planes(img) * 65535).astype(np.uint16), a)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_planar_tiff_reads_exactly(tmp_path, channels, dtype):
    """Planes stored one after another: Pillow unpacks 16-bit ones as 8-bit samples (noise); the reader must not."""
    top = np.iinfo(dtype).max
    a = np.random.default_rng(4).integers(0, top + 1, (19, 26, channels), dtype=dtype)
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(a, 2, 0), photometric="rgb", planarconfig="separate",
                     extrasamples=[2] if channels == 4 else None)
    img = read_image(tmp_path / "p.tif")
    assert img.bit_depth == (16 if dtype == np.uint16 else 8) and not img.grey and (img.alpha is not None) == (channels == 4)
    np.testing.assert_array_equal(np.round(_planes(img) * top).astype(dtype), a)


def test_planar_16bit_cmyk_tiff_is_refused_not_read_as_rgba(tmp_path):
    a = np.random.default_rng(9).integers(0, 65536, (4, 10, 12), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", a, photometric="separated", planarconfig="separate")
    with pytest.raises(InputError, match=r"c.tif: a TIFF in this colour model \(photometric 5\)"):
        read_image(tmp_path / "c.tif")


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_white_is_zero_tiffs_are_not_read_as_negatives(tmp_path, dtype):
    """Pillow reads 16-bit and float WhiteIsZero grey as the negative; 8-bit it reads right."""
    stored = np.random.default_rng(10).random((9, 13)).astype(np.float32)
    data = (stored * 65535).round().astype(np.uint16) if dtype == np.uint16 else stored
    tifffile.imwrite(tmp_path / "w.tif", data, photometric="miniswhite")
    img = read_image(tmp_path / "w.tif")
    expected = 1.0 - (data.astype(np.float32) / 65535 if dtype == np.uint16 else stored)
    np.testing.assert_allclose(img.rgb[..., 0], expected, atol=1e-6)


@pytest.mark.parametrize("planar", ["separate", "contig"])
def test_16bit_premultiplied_alpha_is_divided_out(tmp_path, planar):
    a = np.random.default_rng(11).integers(1, 65536, (7, 9), dtype=np.uint16)
    colour = np.random.default_rng(12).random((7, 9, 3))
    stored = np.concatenate([colour * a[..., None], a[..., None]], axis=2).round().astype(np.uint16)
    data = np.moveaxis(stored, 2, 0) if planar == "separate" else stored
    tifffile.imwrite(tmp_path / "p.tif", data, photometric="rgb", planarconfig=planar, extrasamples=[1])
    img = read_image(tmp_path / "p.tif")
    np.testing.assert_allclose(img.alpha, a / 65535, atol=1e-6)
    assert (np.abs(img.rgb - colour) <= 0.51 / a[..., None] + 1e-6).all()  # the stored rounding, divided by alpha


def test_float_tiff_with_nan_and_image_size_of_tiffs_pillow_cannot_open(tmp_path):
    from lway_rt.io.images import image_size

    f = np.random.default_rng(13).random((15, 21, 3), dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f, photometric="rgb")
    assert image_size(tmp_path / "f.tif") == (21, 15)
    f[0, 0, 0] = np.nan
    tifffile.imwrite(tmp_path / "n.tif", f, photometric="rgb")
    with pytest.raises(InputError, match="n.tif holds NaN or infinite samples"):
        read_image(tmp_path / "n.tif")


def test_planar_16bit_tiff_turned_by_its_orientation_tag(tmp_path):
    a = np.random.default_rng(5).integers(0, 65536, (19, 26, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", np.moveaxis(a, 2, 0), photometric="rgb", planarconfig="separate",
                     extratags=[(274, "H", 1, 6, True)])
    img = read_image(tmp_path / "p.tif")
    np.testing.assert_array_equal(np.round(img.rgb * 65535).astype(np.uint16), _exif_orient(a, 6))


def test_floating_point_tiffs_in_0_1_are_read_and_others_refused(tmp_path):
    """Colour float TIFFs (Pillow opens none) are read; samples outside 0-1 are refused rather than clipped."""
    f = np.random.default_rng(6).random((15, 21, 3), dtype=np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f, photometric="rgb")
    img = read_image(tmp_path / "f.tif")
    assert img.bit_depth == 16 and not img.grey
    np.testing.assert_array_equal(img.rgb, f)
    tifffile.imwrite(tmp_path / "f255.tif", f * 255, photometric="rgb")
    with pytest.raises(InputError, match=r"f255.tif holds floating-point samples from .* to .*, outside 0-1"):
        read_image(tmp_path / "f255.tif")
    Image.fromarray(f[..., 0] * 255).save(tmp_path / "g255.tif")  # grey float: Pillow's mode F
    with pytest.raises(InputError, match=r"g255.tif: the image holds floating-point samples .* outside 0-1"):
        read_image(tmp_path / "g255.tif")
    g = f[..., 0].copy()
    g[3, 4] = np.nan
    Image.fromarray(g).save(tmp_path / "gnan.tif")  # the same NaN message on Pillow's path as on tifffile's
    with pytest.raises(InputError, match=r"gnan.tif: the image holds NaN or infinite samples"):
        read_image(tmp_path / "gnan.tif")


@pytest.mark.parametrize("kind", ["rgb8", "grey8", "rgb16", "grey16"])
def test_png_colour_key_transparency_becomes_alpha(tmp_path, kind):
    """A tRNS colour key on an RGB or grey PNG (PNG optimisers write these for all-or-nothing alpha) is alpha."""
    import struct
    import zlib

    from lway_rt.io.images import _png16

    wide = kind.endswith("16")
    dtype, top = (np.uint16, 65535) if wide else (np.uint8, 255)
    a = np.random.default_rng(7).integers(1, top, (12, 10, 3 if kind.startswith("rgb") else 1), dtype=dtype)
    a[:, :4] = 0  # the keyed colour: black
    path = tmp_path / "k.png"
    if wide and kind.startswith("rgb"):
        raw = _png16(a)  # Pillow writes no 16-bit colour; add the tRNS chunk (before IDAT) by hand
        key = struct.pack(">HHH", 0, 0, 0)
        chunk = struct.pack(">I", 6) + b"tRNS" + key + struct.pack(">I", zlib.crc32(b"tRNS" + key))
        i = raw.index(b"IDAT") - 4
        path.write_bytes(raw[:i] + chunk + raw[i:])
    else:
        Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(path, transparency=0 if a.shape[2] == 1 else (0, 0, 0))
    img = read_image(path)
    assert img.alpha is not None, kind
    np.testing.assert_array_equal(img.alpha, np.where((a == 0).all(axis=2), 0.0, 1.0).astype(np.float32))
    assert img.bit_depth == (16 if wide else 8) and img.grey == kind.startswith("grey")
    out = write_image(tmp_path / "o.png", img.rgb, img.alpha, bit_depth=img.bit_depth, grey=img.grey)
    with Image.open(out) as im:
        assert im.mode in ("RGBA", "LA") or (wide and read_image(out).alpha is not None)


@pytest.mark.parametrize("bits, key", [(1, 0), (1, 1), (2, 1), (4, 1)])
def test_a_low_bit_grey_png_colour_key_is_alpha(tmp_path, bits, key):
    """A 1/2/4-bit grey PNG's tRNS key is a stored value: Pillow scales the pixels to 8 bits and not the key, so no
    pixel matched it (2, 4 bits) or it was not read at all (1 bit), and the clear areas came out opaque, unsaid
    (review 52I I1; white, a 1-bit scan's usual clear colour, was still missed: 52N N1)."""
    top = (1 << bits) - 1
    stored = np.arange(12 * 10).reshape(12, 10) % (top + 1)
    path = tmp_path / "k.png"
    if bits == 1:
        Image.fromarray((stored * 255).astype(np.uint8)).convert("1").save(path, transparency=key)
    else:  # (Pillow writes the stored values' top bits and the key as given)
        Image.fromarray((stored * 255 // top).astype(np.uint8)).save(path, bits=bits, transparency=key)
    img = read_image(path)
    assert img.grey and img.alpha is not None, bits
    np.testing.assert_array_equal(img.alpha, np.where(stored == key, 0.0, 1.0).astype(np.float32))
    np.testing.assert_allclose(img.rgb[..., 0], stored / top, atol=1e-6)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_round_trip(tmp_path, suffix, channels):
    rng = np.random.default_rng(channels)
    a = rng.integers(0, 65536, (17, 23, channels), dtype=np.uint16)
    grey = channels in (1, 2)
    rgb = np.repeat(a[..., :1], 3, axis=2) if grey else a[..., :3]
    alpha = a[..., -1] if channels in (2, 4) else None
    path = write_image(tmp_path / f"o{suffix}", rgb / 65535.0, None if alpha is None else alpha / 65535.0,
                       bit_depth=16, grey=grey)
    img = read_image(path)
    assert img.bit_depth == 16
    assert img.grey == (grey and not (suffix == ".tif" and channels == 2))  # TIFF grey+alpha is written as RGBA
    np.testing.assert_array_equal(np.round(img.rgb * 65535).astype(np.uint16), rgb)
    if alpha is None:
        assert img.alpha is None
    else:
        np.testing.assert_array_equal(np.round(img.alpha * 65535).astype(np.uint16), alpha)
    # Pillow's own reading (exact for grey, the high byte for colour) sees the same file
    with Image.open(path) as im:
        plain = np.asarray(im)
    if plain.dtype == np.uint16:
        np.testing.assert_array_equal(plain, rgb[..., 0])
    else:
        np.testing.assert_array_equal(plain[..., :3].astype(np.uint16), rgb >> 8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, photo, orientation):
    im = Image.fromarray(photo)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    im.save(path, exif=exif)
    img = read_image(path)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert img.rgb.shape[:2] == expected.shape[:2]
    assert img.rgb.shape[:2] == (photo.shape[:2] if orientation < 5 else photo.shape[1::-1])
    np.testing.assert_array_equal(np.round(img.rgb * 255).astype(np.uint8), expected)
    # the numpy path used for 16-bit colour agrees with Pillow's for every orientation
    np.testing.assert_array_equal(_exif_orient(photo, orientation), expected)


# ---------------------------------------------------------------------------------------- bad files


def test_missing_empty_folder_and_non_image(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)
    (tmp_path / "text.png").write_text("this is not a picture\n")
    with pytest.raises(InputError, match="not a readable image"):
        read_image(tmp_path / "text.png")
    # the formats the refusal and upscale's help name are every one a folder gives (PPM … and TGA were left out of
    # both, in the run that read them: 58A-2)
    from click.testing import CliRunner

    from lway_rt.cli import main
    from lway_rt.io.images import IMAGE_SUFFIXES

    (tmp_path / "bad.tga").write_bytes(b"x")
    with pytest.raises(InputError) as err:
        read_image(tmp_path / "bad.tga")
    said = str(err.value).split("(supported: ", 1)[1].split(")", 1)[0].upper()
    helped = " ".join(CliRunner().invoke(main, ["upscale", "--help"]).output.split()).upper()
    names = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".tif": "TIFF"}
    for suffix in IMAGE_SUFFIXES:
        name = names.get(suffix, suffix[1:].upper())
        assert name in said and name in helped, (suffix, said)


@pytest.mark.parametrize("suffix,keep", [(".png", 0.5), (".jpg", 0.5), (".webp", 0.5), (".tif", 0.5), (".png", 0.02)])
def test_truncated_files_give_one_line_errors(tmp_path, photo, suffix, keep):
    big = np.ascontiguousarray(np.tile(photo, (4, 4, 1)))
    path = tmp_path / f"t{suffix}"
    Image.fromarray(big).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(16, int(len(data) * keep))])
    with pytest.raises(InputError) as err:
        read_image(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_corrupt_png_payload(tmp_path, photo):
    path = tmp_path / "c.png"
    Image.fromarray(photo).save(path)
    data = bytearray(path.read_bytes())
    idat = data.index(b"IDAT")
    for i in range(idat + 8, idat + 40):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt"):
        read_image(path)


# ---------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_write_formats_and_modes(tmp_path, photo, suffix):
    rgb = photo.astype(np.float32) / 255
    alpha = np.linspace(0, 1, photo.shape[1], dtype=np.float32)[None].repeat(photo.shape[0], 0)
    for grey in (False, True):
        for a in (None, alpha):
            path = write_image(tmp_path / f"o{int(grey)}{a is None}{suffix}", rgb, a, grey=grey)
            back = read_image(path)
            assert back.rgb.shape == rgb.shape
            has_alpha = a is not None and suffix not in (".jpg", ".bmp")
            assert (back.alpha is not None) == has_alpha
            if suffix in (".png", ".bmp") or (suffix == ".tif" and a is None):
                assert back.grey == grey
            if grey:
                ref = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
                assert np.abs(back.rgb[..., 0] - ref).mean() < (0.03 if suffix in (".jpg", ".webp") else 1 / 255)
            elif suffix not in (".jpg", ".webp"):
                np.testing.assert_array_equal(np.round(back.rgb * 255).astype(np.uint8), photo)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files were left behind"


def test_write_refuses_nan_and_bad_targets(tmp_path, photo):
    rgb = photo.astype(np.float32) / 255
    bad = rgb.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(OutputError, match="NaN"):
        write_image(tmp_path / "nan.png", bad)
    assert not (tmp_path / "nan.png").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_image(blocker / "sub" / "o.png", rgb)
    with pytest.raises(OutputError, match="unknown image format"):
        write_image(tmp_path / "o.gif", rgb)


def test_write_replaces_atomically_and_keeps_old_file_on_failure(tmp_path, photo):
    path = tmp_path / "o.png"
    write_image(path, photo.astype(np.float32) / 255)
    before = path.read_bytes()
    with pytest.raises(OutputError):
        write_image(path, np.full(photo.shape, np.nan, np.float32))
    assert path.read_bytes() == before
    write_image(path, 1 - photo.astype(np.float32) / 255)
    assert path.read_bytes() != before and not list(tmp_path.glob(".*.tmp"))
    assert (path.stat().st_mode & 0o777) != 0o600  # not the temp file's private mode
    # a file made private (or otherwise) keeps its mode when it is replaced: it came back 0644, readable by all
    for mode in (0o600, 0o640):
        path.chmod(mode)
        write_image(path, photo.astype(np.float32) / 255)
        assert path.stat().st_mode & 0o777 == mode


def test_a_killed_writes_temporary_file_is_swept_once_stale(tmp_path):
    """kill -9 mid-write leaves a hidden temporary file; the next write of that file removes it once it is a day old,
    and leaves a fresh one (another process may be writing it) and other files alone."""
    import os
    import time

    from lway_rt.io.weights import atomic_write_bytes

    elsewhere = "lw00000000p1"  # as temp_prefix names a writer of another machine (not known to be gone)
    stale, fresh, other = (tmp_path / f".w.bin.{elsewhere}.abc.tmp", tmp_path / f".w.bin.{elsewhere}.def.tmp",
                           tmp_path / f".x.bin.{elsewhere}.ghi.tmp")
    mine = tmp_path / ".w.bin.my-notes.tmp"  # a hidden file of the user's that merely ends in .tmp: never removed
    for f in (stale, fresh, other, mine):
        f.write_bytes(b"partial")
    old = time.time() - 25 * 3600
    for f in (stale, other, mine):
        os.utime(f, (old, old))
    atomic_write_bytes(tmp_path / "w.bin", b"whole")
    assert (tmp_path / "w.bin").read_bytes() == b"whole"
    assert not stale.exists() and fresh.exists() and other.exists() and mine.exists()


def test_a_temporary_file_whose_writer_was_killed_is_swept_at_once(tmp_path):
    """Left by kill -9, it waited a day while reruns wrote the same name: one named by a process of this machine that
    no longer runs goes at the next write of its name; a live process's (this one's) stays."""
    import subprocess
    import sys

    from lway_rt.io.weights import atomic_write_bytes, temp_prefix

    code = "import os, sys; from lway_rt.io.weights import temp_prefix; print(temp_prefix(sys.argv[1]))"
    dead = subprocess.run([sys.executable, "-c", code, "w.bin"], capture_output=True, text=True, check=True).stdout.strip()
    gone, alive = tmp_path / f"{dead}abc12345.tmp", tmp_path / f"{temp_prefix('w.bin')}def67890.tmp"
    for f in (gone, alive):
        f.write_bytes(b"partial")
    atomic_write_bytes(tmp_path / "w.bin", b"whole")
    assert (tmp_path / "w.bin").read_bytes() == b"whole" and not gone.exists() and alive.exists()


def test_a_probe_file_a_kill_left_goes_with_the_next_probe_and_with_adapts_clean_up(tmp_path):
    """A kill while a command probed a folder for writing left an empty hidden file there for good, and one left in an
    adapt run folder stayed after --restore; so did a kill while a per-group folder's groups.json was written."""
    import subprocess
    import sys

    from lway_rt.adapt.runfolder import _remove_killed_writes
    from lway_rt.io.weights import ensure_writable_dir, temp_prefix

    code = "import sys; from lway_rt.io.weights import temp_prefix; print(*map(temp_prefix, sys.argv[1:]))"
    dead = subprocess.run([sys.executable, "-c", code, "write-probe", "case-probe", "groups.json"], capture_output=True,
                          text=True, check=True).stdout.split()
    left = [tmp_path / f"{d}x1y2z3.tmp" for d in dead]
    alive = tmp_path / f"{temp_prefix('write-probe')}a1b2c3.tmp"  # (this process's: another command's probe now)
    for f in (*left, alive):
        f.write_bytes(b"")
    ensure_writable_dir(tmp_path, "-o folder")
    assert [f.exists() for f in left] == [False, False, True] and alive.exists()
    run = tmp_path / "run"
    run.mkdir()
    again = [run / f.name for f in left]
    for f in again:
        f.write_bytes(b"")
    _remove_killed_writes(run)
    assert not any(f.exists() for f in again) and alive.exists()


def test_working_folders_of_killed_runs_are_swept_once_stale(tmp_path, monkeypatch):
    """kill -9 during an export's parity check or a benchmark leaves its lwayrt-* folder in the system's temporary
    folder; the next run removes those a day old, and leaves a fresh one (a run under way) and other folders alone."""
    import os
    import tempfile
    import time

    from lway_rt.io import weights

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(weights, "_temp_dirs_swept", False)
    made = {}
    for name in ("lwayrt-bench-abc", "lwayrt-parity-def", "mine-ghi"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_fp32.onnx").write_bytes(b"onnx")
        made[name] = tmp_path / name
    old = time.time() - 25 * 3600
    for name in ("lwayrt-bench-abc", "mine-ghi"):
        os.utime(made[name], (old, old))
    weights.sweep_stale_temp_dirs()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lwayrt-parity-def", "mine-ghi"]


def test_output_folder_check_makes_missing_folders_and_names_the_option(tmp_path, unwritable):
    from lway_rt.io.weights import ensure_writable_dir

    ensure_writable_dir(tmp_path / "a" / "b", "-o folder")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())  # no probe left
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=r"^cannot create output folder .*afile/sub: .*; choose another -o folder$"):
        ensure_writable_dir(tmp_path / "afile" / "sub", "-o folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    undo = unwritable(locked)
    try:  # an existing folder that takes no files (as root too: os.access would have said yes)
        with pytest.raises(OutputError, match=r"^cannot write to .*locked: .*; choose another --out folder$"):
            ensure_writable_dir(locked, "--out folder")
    finally:
        undo()
    assert not list(locked.iterdir())


def test_case_insensitive_file_systems_are_told_by_a_probe(tmp_path):
    from lway_rt.io.weights import case_insensitive

    (tmp_path / "Aa.txt").write_text("x")
    expected = (tmp_path / "aA.txt").exists()  # this folder's own answer
    (tmp_path / "Aa.txt").unlink()
    assert case_insensitive(tmp_path) is expected
    assert not list(tmp_path.iterdir())  # no probe left
    assert case_insensitive(tmp_path / "missing") is False  # cannot be told: the probe cannot be written


@pytest.mark.parametrize("shape", [(37, 53), (1, 40), (40, 1), (5, 3)])
def test_fill_hidden_colour_depends_only_on_visible_pixels(shape):
    from lway_rt.io.images import fill_hidden_colour

    rng = np.random.default_rng(8)
    rgb = rng.random(shape + (3,), dtype=np.float32)
    alpha = (rng.random(shape) > 0.7).astype(np.float32) * rng.choice([0.5, 1.0], shape).astype(np.float32)
    alpha.flat[0] = 1.0  # something is visible
    other = np.where(alpha[..., None] > 0, rgb, rng.random(shape + (3,), dtype=np.float32))
    a, b = fill_hidden_colour(rgb, alpha), fill_hidden_colour(other, alpha)
    np.testing.assert_array_equal(a, b)  # whatever hid under the clear pixels is gone
    np.testing.assert_array_equal(a[alpha > 0], rgb[alpha > 0])  # any alpha keeps its colour
    assert a.dtype == np.float32 and np.isfinite(a).all() and a.min() >= rgb.min() and a.max() <= rgb.max()
    assert fill_hidden_colour(rgb, None) is rgb and fill_hidden_colour(rgb, np.zeros(shape, np.float32)) is rgb


def test_fill_hidden_colour_takes_the_nearby_colour():
    """A clear band beside a red and a blue half is filled red next to red and blue next to blue."""
    from lway_rt.io.images import fill_hidden_colour

    rgb = np.zeros((16, 32, 3), np.float32)
    rgb[:, :16, 0] = 1.0
    rgb[:, 16:, 2] = 1.0
    alpha = np.ones((16, 32), np.float32)
    alpha[4:12] = 0.0
    out = fill_hidden_colour(rgb, alpha)
    assert out[8, 2, 0] > 0.9 and out[8, 2, 2] < 0.1 and out[8, 29, 2] > 0.9 and out[8, 29, 0] < 0.1


# ---------------------------------------------------------------------------------------- helpers


def test_tensor_round_trip(photo):
    t = to_tensor(photo)
    assert t.shape == (1, 3, 24, 32) and t.dtype == torch.float32 and float(t.max()) <= 1.0
    np.testing.assert_array_equal(to_uint8(to_numpy(t)), photo)
    g = to_tensor(np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    assert g.shape == (1, 1, 3, 4) and float(g.max()) == pytest.approx(55000 / 65535)
    with pytest.raises(ValueError, match="batch of one"):
        to_numpy(torch.zeros(2, 3, 4, 4))


def test_resize_bicubic_float_and_uint8_agree(photo):
    small8 = resize_bicubic(photo, (16, 12))
    smallf = resize_bicubic(photo.astype(np.float32) / 255, (16, 12))
    assert small8.dtype == np.uint8 and small8.shape == (12, 16, 3) and smallf.shape == (12, 16, 3)
    assert np.abs(smallf * 255 - small8).max() <= 1.0 + 1e-3


def test_bundled_photo_is_rgb_uint8_for_colour_grey_and_stereo():
    from lway_rt.io.images import bundled_photo

    astro = bundled_photo("astronaut")
    grey = bundled_photo("camera")
    left, right = bundled_photo("motorcycle"), bundled_photo("motorcycle_right")
    for img in (astro, grey, left, right):
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert np.array_equal(grey[..., 0], grey[..., 2])
    assert left.shape == right.shape and not np.array_equal(left, right)
    with pytest.raises(InputError, match="no photo named"):
        bundled_photo("not_a_photo")


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_keeps_its_icc_profile(tmp_path, suffix, channels):
    """A wide-gamut 16-bit photo keeps its profile (our own PNG/TIFF encoders write it), and the pixels stay exact."""
    icc = _srgb_profile()
    rng = np.random.default_rng(channels)
    a = rng.integers(0, 65536, (9, 13, channels), dtype=np.uint16)
    path = write_image(tmp_path / f"o{suffix}", a[..., :3] / 65535.0, a[..., 3] / 65535.0 if channels == 4 else None,
                       bit_depth=16, icc_profile=icc)
    with Image.open(path) as im:
        assert im.info.get("icc_profile") == icc  # Pillow finds it where viewers look
    img = read_image(path)
    assert img.icc_profile == icc and img.bit_depth == 16
    np.testing.assert_array_equal(np.round(img.rgb * 65535).astype(np.uint16), a[..., :3])
    # and it survives a round trip through the reader and writer again
    again = write_image(tmp_path / f"p{suffix}", img.rgb, img.alpha, bit_depth=16, icc_profile=img.icc_profile)
    assert read_image(again).icc_profile == icc


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_profiles_of_another_colour_space_are_not_written(tmp_path, photo, suffix):
    """A CMYK file's profile does not describe the RGB written from it, nor an RGB profile a grey image: dropped."""
    rgb_icc = _srgb_profile()
    cmyk_icc = rgb_icc[:16] + b"CMYK" + rgb_icc[20:]
    kept = write_image(tmp_path / f"rgb{suffix}", photo / 255.0, icc_profile=rgb_icc)
    dropped = write_image(tmp_path / f"cmyk{suffix}", photo / 255.0, icc_profile=cmyk_icc)
    grey = write_image(tmp_path / f"grey{suffix}", photo / 255.0, grey=True, icc_profile=rgb_icc)
    assert read_image(kept).icc_profile == rgb_icc
    assert read_image(dropped).icc_profile is None
    assert read_image(grey).icc_profile is None and read_image(grey).grey


def test_cmyk_jpeg_with_its_profile_upscales_to_rgb_without_it(tmp_path, photo):
    """The reader turns CMYK into RGB; the written RGB file must not carry the CMYK profile (viewers would
    mis-render it)."""
    cmyk_icc = (lambda p: p[:16] + b"CMYK" + p[20:])(_srgb_profile())
    src = tmp_path / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(src, icc_profile=cmyk_icc)
    img = read_image(src)
    assert img.icc_profile == cmyk_icc  # read as it is...
    out = write_image(tmp_path / "out.png", img.rgb, icc_profile=img.icc_profile)
    with Image.open(out) as im:
        assert im.mode == "RGB" and "icc_profile" not in im.info  # ...but not written onto RGB


def _camera_jpeg(path, h=40, w=60, orientation=6):
    """A JPEG as a phone writes it: stored sideways with an orientation tag, camera model, date, Exif pixel size."""
    tags = Image.Exif()
    tags[0x0110], tags[0x0112], tags[0x0132] = "Phone 12", orientation, "2024:05:01 10:00:00"
    tags[0x0100], tags[0x0101] = w, h  # ImageWidth / ImageLength in the main block, as some phones write them
    sub = tags.get_ifd(0x8769)
    sub[0xA002], sub[0xA003], sub[0x9003] = w, h, "2024:05:01 10:00:00"
    stored = np.zeros((h, w, 3), np.uint8)
    stored[:10, :, 0] = 255  # a red band along the stored top edge
    Image.fromarray(stored).save(path, exif=tags, quality=95)
    return path


@pytest.mark.parametrize("suffix,depth", [(".png", 8), (".png", 16), (".jpg", 8), (".webp", 8), (".avif", 8),
                                          (".tif", 8)])
def test_exif_is_carried_upright_with_the_new_size(tmp_path, suffix, depth):
    img = read_image(_camera_jpeg(tmp_path / "cam.jpg"))
    assert img.rgb.shape == (60, 40, 3) and img.exif  # turned upright on reading
    up = np.repeat(np.repeat(img.rgb, 2, 0), 2, 1)
    out = write_image(tmp_path / f"out{suffix}", up, bit_depth=depth, exif=img.exif)
    with Image.open(out) as im:
        tags = im.getexif()
        assert tags.get(0x0110) == "Phone 12" and tags.get(0x0132) == "2024:05:01 10:00:00"
        assert 0x0112 not in tags  # kept, a viewer would turn the upright pixels again
        assert (tags.get_ifd(0x8769).get(0xA002), tags.get_ifd(0x8769).get(0xA003)) == (80, 120)
        assert (tags.get(0x0100), tags.get(0x0101)) == (80, 120)  # (they had kept the input's stored 60 x 40)
    again = read_image(out)
    assert again.rgb.shape == (120, 80, 3)
    np.testing.assert_allclose(again.rgb[:, -10:, 0].mean(), 1.0, atol=0.05)  # the band stays on the right


def test_exif_that_cannot_be_carried_is_left_out_not_fatal(tmp_path):
    rgb = np.full((8, 8, 3), 0.5, np.float32)
    assert "exif" not in Image.open(write_image(tmp_path / "a.png", rgb, exif=b"Exif\x00\x00garbage")).info
    assert Image.open(write_image(tmp_path / "a.bmp", rgb, exif=read_image(_camera_jpeg(tmp_path / "c.jpg")).exif))
    big = Image.Exif()
    big[0x010E] = "x" * 70000  # an ImageDescription too long for a JPEG's 64 KB EXIF segment
    out = write_image(tmp_path / "big.jpg", rgb, exif=big.tobytes())
    assert read_image(out).exif is None
    assert read_image(write_image(tmp_path / "big.png", rgb, exif=big.tobytes())).exif  # PNG has room


@pytest.mark.parametrize("suffix,depth,channels", [(".png", 8, 3), (".png", 16, 3), (".png", 16, 1), (".jpg", 8, 3),
                                                   (".tif", 8, 3), (".tif", 16, 4), (".bmp", 8, 3)])
def test_dpi_is_carried(tmp_path, suffix, depth, channels):
    """A 300 x 150 dpi scan stays 300 x 150 dpi (the print grows with the pixels, as an editor's resample does)."""
    src = tmp_path / f"scan{suffix}"
    pixels = (np.arange(8 * 12 * channels, dtype=np.uint16).reshape(8, 12, channels) * 50).astype(
        np.uint16 if depth == 16 else np.uint8)
    if depth == 16:
        if suffix == ".tif":
            tifffile.imwrite(src, pixels, photometric="rgb", extrasamples=[2], resolution=(300, 150),
                             resolutionunit="INCH")
        else:
            write_image(src, np.repeat(pixels[..., :1], 3, 2) / 65535.0, bit_depth=16, grey=channels == 1,
                        dpi=(300, 150))
    else:
        Image.fromarray(pixels).save(src, dpi=(300, 150))
    img = read_image(src)
    assert img.dpi is not None and img.dpi == pytest.approx((300, 150), rel=1e-3), img.dpi
    out = write_image(tmp_path / f"out{suffix}", np.repeat(np.repeat(img.rgb, 2, 0), 2, 1), bit_depth=img.bit_depth,
                      grey=img.grey, alpha=None if img.alpha is None else np.repeat(np.repeat(img.alpha, 2, 0), 2, 1),
                      dpi=img.dpi)
    again = read_image(out)
    assert again.bit_depth == img.bit_depth and again.dpi == pytest.approx((300, 150), rel=1e-3), again.dpi
    plain = read_image(write_image(tmp_path / f"plain{suffix}", img.rgb, bit_depth=depth)).dpi
    assert plain is None or plain[0] != pytest.approx(300, rel=1e-3)  # the dpi came from the argument


def test_dpi_turns_with_the_pixels_and_zero_is_not_carried(tmp_path):
    sideways = _camera_jpeg(tmp_path / "cam.jpg", orientation=6)
    with Image.open(sideways) as im:
        im.save(tmp_path / "scan.jpg", exif=im.getexif(), dpi=(300, 100), quality=95)
    assert read_image(tmp_path / "scan.jpg").dpi == (100, 300)  # x and y swap when the picture turns upright
    tags = Image.Exif()
    tags[0x0112], tags[0x011A], tags[0x011B], tags[0x0128] = 6, 300.0, 100.0, 2  # EXIF's own resolution, too
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "tagged.jpg", exif=tags, dpi=(300, 100))
    img = read_image(tmp_path / "tagged.jpg")
    with Image.open(write_image(tmp_path / "out.jpg", img.rgb, exif=img.exif, dpi=img.dpi)) as im:
        assert im.info["dpi"] == (100, 300) and (im.getexif()[0x011A], im.getexif()[0x011B]) == (100.0, 300.0)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "zero.jpg", dpi=(0, 0))
    assert read_image(tmp_path / "zero.jpg").dpi is None


def test_a_jpeg_whose_exif_records_no_resolution_gets_none_written(tmp_path):
    """Pillow reads a JPEG with EXIF but no resolution (JFIF aspect ratio only) as 72 dpi: it was written to outputs."""
    tags = Image.Exif()
    tags[0x010F] = "Camera"
    Image.fromarray(np.full((6, 10, 3), 100, np.uint8)).save(tmp_path / "cam.jpg", exif=tags)
    with Image.open(tmp_path / "cam.jpg") as im:
        assert im.info.get("dpi") == (72, 72) and im.info.get("jfif_unit") == 0  # what Pillow makes of it
    img = read_image(tmp_path / "cam.jpg")
    assert img.dpi is None
    for suffix in (".png", ".jpg"):
        assert read_image(write_image(tmp_path / f"out{suffix}", img.rgb, exif=img.exif, dpi=img.dpi)).dpi is None
    tags[0x011A], tags[0x011B], tags[0x0128] = 240.0, 240.0, 2  # the EXIF's own resolution is still read
    Image.fromarray(np.full((6, 10, 3), 100, np.uint8)).save(tmp_path / "res.jpg", exif=tags)
    assert read_image(tmp_path / "res.jpg").dpi == pytest.approx((240, 240))
    # both sides, and per centimetre: Pillow reads XResolution alone, as (x, x), so a 300 x 150 scan became square
    tags[0x011A], tags[0x011B], tags[0x0112] = 300.0, 150.0, 6
    Image.fromarray(np.full((6, 10, 3), 100, np.uint8)).save(tmp_path / "wide.jpg", exif=tags)
    assert read_image(tmp_path / "wide.jpg").dpi == pytest.approx((150, 300))  # turned upright with the pixels
    tags[0x011A], tags[0x011B], tags[0x0128], tags[0x0112] = 100.0, 50.0, 3, 1
    Image.fromarray(np.full((6, 10, 3), 100, np.uint8)).save(tmp_path / "cm.jpg", exif=tags)
    assert read_image(tmp_path / "cm.jpg").dpi == pytest.approx((254, 127))


def _mpo(path, exif: Image.Exif, second_type: int | None) -> Path:
    """A camera's JPEG with a second picture in its MP index (Pillow writes it as an MPO); ``second_type``: the MP
    type written into that picture's entry (0x010001: a large preview), as cameras write it, or Pillow's own."""
    import struct

    a = (np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(path, format="MPO", save_all=True, append_images=[Image.fromarray(a)],
                            exif=exif.tobytes())
    if second_type is not None:
        data = bytearray(path.read_bytes())
        h = data.index(b"MPF\x00") + 4  # the MP index: a TIFF-style header, one IFD, 16-byte entries
        end = "<" if data[h:h + 2] == b"II" else ">"
        ifd = h + struct.unpack(end + "I", data[h + 4:h + 8])[0]
        for i in range(struct.unpack(end + "H", data[ifd:ifd + 2])[0]):
            tag, _, _, off = struct.unpack(end + "HHII", data[ifd + 2 + 12 * i:ifd + 14 + 12 * i])
            if tag == 0xB002:
                data[h + off + 16:h + off + 20] = struct.pack(end + "I", second_type)
        path.write_bytes(bytes(data))
    return path


def test_a_camera_jpeg_with_previews_reads_as_one_jpeg(tmp_path):
    """Pillow opens a camera JPEG that carries large previews (an MP index) as an MPO: its dpi was read as square or
    made up (72) where a plain JPEG's is read from the EXIF block, and every such photo got the several-frames note.
    The previews are not counted; a second picture of another kind (a stereo pair's) still is."""
    tags = Image.Exif()
    tags[0x010F], tags[0x011A], tags[0x011B], tags[0x0128] = "Camera", 300.0, 150.0, 2
    preview = _mpo(tmp_path / "cam.jpg", tags, 0x010001)
    with Image.open(preview) as im:
        assert im.format == "MPO" and im.info.get("dpi") == (300, 300)  # what Pillow makes of it
    img = read_image(preview)
    assert img.dpi == pytest.approx((300, 150)) and img.frames == 1
    assert read_image(_mpo(tmp_path / "pair.jpg", tags, None)).frames == 2  # Pillow's own type: another picture
    del tags[0x011A], tags[0x011B], tags[0x0128]
    assert read_image(_mpo(tmp_path / "bare.jpg", tags, 0x010001)).dpi is None  # not Pillow's made-up 72 dpi


def test_an_output_gains_no_empty_exif_sub_ifd(tmp_path):
    """Carrying EXIF asked for its Exif sub-IFD to update the pixel size, which made an empty one in every output
    whose input had none."""
    tags = Image.Exif()
    tags[0x010F] = "Camera"
    Image.fromarray(np.full((6, 10, 3), 100, np.uint8)).save(tmp_path / "cam.jpg", exif=tags)
    img = read_image(tmp_path / "cam.jpg")
    with Image.open(write_image(tmp_path / "out.png", img.rgb, exif=img.exif)) as im:
        assert im.getexif().get(0x010F) == "Camera" and 0x8769 not in im.getexif()


def test_a_tiff_without_resolution_gets_none_written(tmp_path):
    """Pillow reads a TIFF with no resolution tags as 1 dpi: carried, a 160-px output printed 160 inches wide."""
    Image.fromarray(np.full((6, 10, 3), 100, np.uint8)).save(tmp_path / "plain.tif")
    img = read_image(tmp_path / "plain.tif")
    assert img.dpi is None
    for suffix in (".tif", ".png", ".jpg"):
        out = write_image(tmp_path / f"out{suffix}", img.rgb, exif=img.exif, dpi=img.dpi)
        assert read_image(out).dpi is None, suffix
    with tifffile.TiffFile(tmp_path / "out.tif") as t:
        assert not {282, 283} & {tag.code for tag in t.pages[0].tags.values()}


@pytest.mark.parametrize("depth", [8, 16])
def test_a_tiffs_camera_metadata_is_carried_and_its_layout_is_not(tmp_path, depth):
    tags = Image.Exif()
    tags[0x010F], tags[0x0132], tags[0x013B], tags[0x8298] = "Cam", "2020:01:01 00:00:00", "Me", "(c) Me"
    if depth == 8:
        Image.fromarray(np.full((6, 10, 3), 100, np.uint8)).save(tmp_path / "t.tif", exif=tags, dpi=(300, 300))
    else:  # as a raw converter writes it: 16 bits, the metadata as TIFF tags
        tifffile.imwrite(tmp_path / "t.tif", np.full((6, 10, 3), 20000, np.uint16), photometric="rgb",
                         metadata=None, extratags=[(271, "s", 0, "Cam", True), (306, "s", 0, "2020:01:01 00:00:00", True),
                                                   (315, "s", 0, "Me", True), (33432, "s", 0, "(c) Me", True)])
    img = read_image(tmp_path / "t.tif")
    assert img.exif
    for suffix in (".png", ".jpg", ".tif"):
        out = write_image(tmp_path / f"out{suffix}", np.repeat(np.repeat(img.rgb, 2, 0), 2, 1), exif=img.exif)
        with Image.open(out) as im:
            got = im.getexif()
            assert [got.get(k) for k in (0x010F, 0x0132, 0x013B, 0x8298)] == ["Cam", "2020:01:01 00:00:00", "Me",
                                                                              "(c) Me"], (suffix, dict(got))
            assert im.size == (20, 12)  # the input's width, height and strips were not carried over the output's
    Image.fromarray(np.full((6, 10, 3), 100, np.uint8)).save(tmp_path / "bare.tif")
    assert read_image(tmp_path / "bare.tif").exif is None


@pytest.mark.parametrize("layout", ["premultiplied", "planar", "float"])
def test_a_tiff_read_through_tifffile_keeps_its_metadata_and_resolution(tmp_path, layout):
    """A 16-bit TIFF Pillow misreads (premultiplied alpha, planar samples) or a floating-point one it cannot open is
    read through tifffile, which returned the pixels only: its resolution, artist and copyright were dropped with no
    word, where the same file with unassociated alpha kept them (review 53B B3)."""
    a = np.full((6, 10, 4), 30000, np.uint16)
    a[..., 3] = 65535
    kw = dict(photometric="rgb", resolution=(300, 150), resolutionunit="INCH",
              extratags=[(315, "s", 0, "Me", True), (33432, "s", 0, "(c) Me", True)])
    if layout == "premultiplied":
        tifffile.imwrite(tmp_path / "t.tif", a, extrasamples=[1], **kw)
    elif layout == "planar":
        tifffile.imwrite(tmp_path / "t.tif", np.moveaxis(a[..., :3], 2, 0), planarconfig="separate", **kw)
    else:
        tifffile.imwrite(tmp_path / "t.tif", a[..., :3].astype(np.float32) / 65535, **kw)
    img = read_image(tmp_path / "t.tif")
    assert img.bit_depth == 16 and img.dpi is not None and np.allclose(img.dpi, (300, 150), atol=0.01), img.dpi
    out = write_image(tmp_path / "out.png", img.rgb, exif=img.exif, dpi=img.dpi)
    with Image.open(out) as im:
        assert [im.getexif().get(k) for k in (0x013B, 0x8298)] == ["Me", "(c) Me"]


def _png_with(tmp_path, name, chunks, depth=8):
    """A PNG with extra chunks (type, data) inserted after its header, as an editor or a generator writes them."""
    import struct
    import zlib

    plain = tmp_path / f"plain-{name}"
    arr = np.random.default_rng(0).integers(0, 256 if depth == 8 else 65536, (8, 12, 3))
    write_image(plain, arr / (255.0 if depth == 8 else 65535.0), bit_depth=depth)
    data = plain.read_bytes()
    extra = b"".join(struct.pack(">I", len(c)) + t + c + struct.pack(">I", zlib.crc32(t + c) & 0xFFFFFFFF)
                     for t, c in chunks)
    (tmp_path / name).write_bytes(data[:33] + extra + data[33:])
    return tmp_path / name


@pytest.mark.parametrize("depth", [8, 16])
def test_a_pngs_gamma_colour_and_text_chunks_go_to_png_outputs(tmp_path, depth):
    import struct

    chroma = struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
    src = _png_with(tmp_path, "in.png", [(b"gAMA", struct.pack(">I", 100000)), (b"cHRM", chroma),
                                         (b"tEXt", b"parameters\0a cat, steps 20"),
                                         (b"tEXt", b"XML:com.adobe.xmp\0<x:xmpmeta tiff:Orientation='6'/>"),
                                         (b"iTXt", b"Title\0\0\0en\0\0A title")], depth)
    img = read_image(src)
    assert [k for k, _ in img.png_chunks] == [b"gAMA", b"cHRM", b"tEXt", b"iTXt"]  # the XMP packet is not carried
    out = write_image(tmp_path / "out.png", np.repeat(np.repeat(img.rgb, 2, 0), 2, 1), bit_depth=depth,
                      png_chunks=img.png_chunks)
    with Image.open(out) as im:
        assert im.info["gamma"] == pytest.approx(1.0) and im.info["chromaticity"][0] == pytest.approx(0.3127)
        assert im.text == {"parameters": "a cat, steps 20", "Title": "A title"} and im.size == (24, 16)
    assert read_image(out).bit_depth == depth
    # an ICC profile describes the colour instead of sRGB: the standard allows one of the two
    srgb = read_image(_png_with(tmp_path, "srgb.png", [(b"sRGB", b"\0")], depth))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(write_image(tmp_path / "s.png", srgb.rgb, bit_depth=depth, png_chunks=srgb.png_chunks)) as im:
        assert im.info.get("srgb") == 0
    with Image.open(write_image(tmp_path / "si.png", srgb.rgb, bit_depth=depth, icc_profile=icc,
                                png_chunks=srgb.png_chunks)) as im:
        assert "srgb" not in im.info and im.info.get("icc_profile")
    with Image.open(write_image(tmp_path / "out.jpg", img.rgb, png_chunks=img.png_chunks)) as im:
        assert im.format == "JPEG"  # a JPEG has no place for them


def test_a_long_name_writes_and_one_too_long_is_one_line(tmp_path):
    """The temporary file's name is ~40 bytes longer than its file's: outputs of 220-255 bytes, legal names, failed
    with 'cannot write to FOLDER: File name too long; choose another output folder'. A long name's temporary file
    is shortened; a name no file may have is said as such."""
    from lway_rt.io.weights import NAME_MAX, atomic_write_bytes, temp_prefix

    for name in ("a" * (NAME_MAX - 4) + ".png", "é" * 125 + ".png"):  # 255 and 254 bytes (é is 2 in UTF-8)
        atomic_write_bytes(tmp_path / name, b"whole")
        assert (tmp_path / name).read_bytes() == b"whole"
        assert len(temp_prefix(name).encode()) + 8 + 9 <= NAME_MAX  # mkstemp's 8, ".onnx.tmp"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a" * 251 + ".png", "é" * 125 + ".png"])
    with pytest.raises(OutputError, match=r"its name is 256 bytes, more than the 255 a file name may have; give it a "
                                          "shorter name"):
        atomic_write_bytes(tmp_path / ("b" * 252 + ".png"), b"x")


def test_a_full_disk_or_a_file_size_limit_is_one_line(tmp_path):
    """A write cut short (ENOSPC, EFBIG) ended in a traceback for weights, checkpoints (torch's 'unexpected pos'),
    ONNX files and reports; each is now the OutputError a command prints in one line, and no file is left."""
    import subprocess
    import sys

    code = """
import resource, sys, torch
from pathlib import Path
from lway_rt.errors import OutputError
from lway_rt.io.weights import atomic_write_bytes, save_safetensors, save_torch
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
out = Path(sys.argv[1])
for name, write in (("w.safetensors", lambda p: save_safetensors(p, {"w": torch.ones(10000)})),
                    ("checkpoint.pt", lambda p: save_torch({"w": torch.ones(10000)}, p)),
                    ("model.onnx", lambda p: atomic_write_bytes(p, bytes(100000)))):
    try:
        write(out / name)
        print("written", name)
    except OutputError as exc:
        print(exc)
"""
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 3, res.stdout
    for name, line in zip(("w.safetensors", "checkpoint.pt", "model.onnx"), lines):
        assert line.startswith(f"cannot write {tmp_path / name}: ") and line.endswith("make room, or choose another "
                                                                                     "output folder"), line
    assert "File too large" in lines[0] and "the write stopped part-way" in lines[1]
    assert not list(tmp_path.iterdir())  # neither the files nor their temporary files


def test_a_full_disk_names_the_file_asked_for_and_the_folder_to_change(tmp_path):
    """export's line named its hidden temporary file (.NAME.lw…onnx.tmp) and models import advised 'another output
    folder', which it has none of (57A-2, 57A-3): the write is cut short by a file-size limit, as a full disk cuts it."""
    import os
    import subprocess
    import sys

    from lway_rt.io.store import import_model

    import_model("realesr-animevideov3")  # (in the session's store, before the limit: export reads it)
    code = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
from lway_rt.cli import main
sys.argv = ["lwayrt", *sys.argv[1:]]
main()
"""
    out = tmp_path / "ex"
    res = subprocess.run([sys.executable, "-c", code, "export", "-m", "realesr-animevideov3", "--out", str(out), "-q"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    (line,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: cannot write {out}/realesr-animevideov3.sr.fp32.") and ".onnx: " in line, line
    assert ".tmp" not in line and not out.exists(), line
    home = tmp_path / "home"
    res = subprocess.run([sys.executable, "-c", code, "models", "import", "realesr-animevideov3"], capture_output=True,
                         text=True, env={**os.environ, "LWAYRT_HOME": str(home)})
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip() == f"error: cannot write {home}/models/realesr-animevideov3.safetensors: File too large; " \
        "make room, or choose another LWAYRT_HOME (the model store's folder)", res.stderr
    assert not list((home / "models").iterdir())


def test_a_cut_write_carries_its_file_and_reason_apart(tmp_path):
    """export and train-degae say a full disk of another file (the one asked for) or with what was kept: they read the
    file and the system's words from the error, where they cut and replaced the text of its message; it pickles."""
    import errno
    import pickle

    from lway_rt.errors import OutputError, WriteFailed
    from lway_rt.io import weights

    with pytest.raises(WriteFailed) as err, weights.atomic_path(tmp_path / "m.onnx", folder="LWAYRT_HOME") as tmp:
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")  # (as the disk fills)
    assert (err.value.path, err.value.reason, err.value.folder) == (tmp_path / "m.onnx", "No space left on device",
                                                                    "LWAYRT_HOME")
    again = pickle.loads(pickle.dumps(err.value))
    assert isinstance(again, OutputError) and str(again) == str(err.value) == (
        f"cannot write {tmp_path / 'm.onnx'}: No space left on device; make room, or choose another LWAYRT_HOME")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "RGBA", "LA", "P", "CMYK"])
def test_a_turned_tiff_is_read_upright_in_every_mode(tmp_path, mode):
    """Pillow 13 turns a TIFF of EXIF orientation 5-8 upright as it loads it, and scrambles the pixels of
    uncompressed grey, 16-bit grey, RGBA, palette and CMYK ones (it maps them from the file at the turned size); the
    size image_size reads then disagreed with the picture (a rerun refused its own output). Every orientation gives
    the upright picture, the size image_size says, and the dpi turned with it. Palette and CMYK pictures, which
    tifffile does not read, came out 90 degrees off and scrambled."""
    from lway_rt.io.images import _exif_orient, image_size

    ramp = np.arange(15).reshape(3, 5)
    arr = (ramp * 3000).astype(np.uint16) if mode == "I;16" else \
        (ramp * 10).astype(np.uint8) if mode in ("L", "P") else np.dstack([(ramp * 10).astype(np.uint8)] * len(mode))
    first = (arr if arr.ndim == 2 else arr[..., 0]).astype(np.float32) / (65535.0 if mode == "I;16" else 255.0)
    def picture():
        im = Image.fromarray(arr, None if mode == "I;16" else mode)
        if mode == "P":  # a palette that tells every index apart
            im.putpalette([v for i in range(256) for v in (255 - i, i, 0)])
        return im

    if mode in ("P", "CMYK"):  # colour through a palette / ink conversion: the unturned file's reading, checked below
        picture().save(tmp_path / "plain.tif")
        first = read_image(tmp_path / "plain.tif").rgb[..., 0]
        assert first.shape == (3, 5) and len(np.unique(first)) == 15
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        path = tmp_path / f"o{o}.tif"
        picture().save(path, exif=exif.tobytes(), dpi=(300, 150))
        img = read_image(path)
        want = _exif_orient(first, o)
        assert img.rgb.shape[:2] == want.shape and np.allclose(img.rgb[..., 0], want, atol=1e-6), (mode, o)
        assert image_size(path) == (want.shape[1], want.shape[0]), (mode, o)
        assert img.dpi == ((150, 300) if o >= 5 else (300, 150)), (mode, o, img.dpi)


@pytest.mark.parametrize("dtype", [np.uint32, np.int32])
def test_a_tiff_of_32_bit_integers_is_refused_not_clipped(tmp_path, dtype):
    """Pillow opens it as mode I, which was taken for 16-bit: most of a 0-4e9 ramp came out white, the rest black."""
    ramp = np.linspace(0, 2e9, 32 * 32).astype(dtype).reshape(32, 32)
    tifffile.imwrite(tmp_path / "wide.tif", ramp)
    signed = "signed " if np.dtype(dtype).kind == "i" else ""
    with pytest.raises(InputError, match=rf"wide.tif holds {signed}{np.dtype(dtype).name} samples"):
        read_image(tmp_path / "wide.tif")


@pytest.mark.parametrize("dtype", [np.int16, np.int8])
def test_a_tiff_of_signed_samples_is_refused_not_clipped(tmp_path, dtype):
    """Pillow opens a signed 16-bit TIFF as mode I: its negative samples were clipped to black and the rest read as
    unsigned, upscaled with no word."""
    ramp = (np.mgrid[0:40, 0:56][1] * 2 - 50).astype(dtype)
    tifffile.imwrite(tmp_path / "signed.tif", ramp)
    with pytest.raises(InputError, match=rf"signed.tif holds signed {np.dtype(dtype).name} samples, whose negative "
                                         "values are no brightness an image has: save it as an unsigned 8/16-bit"):
        read_image(tmp_path / "signed.tif")


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("compression", [None, "zlib"])
def test_a_turned_16bit_colour_tiff_is_turned_once_as_its_8bit_twin(tmp_path, channels, compression):
    """Pillow 13 turns a TIFF upright as it loads it; the 16-bit colour path decodes a copy of the file (which Pillow
    turned) and then turned it again by the orientation tag: 2-4 came back unflipped, 5-8 with the sides swapped
    back, unlike image_size (so --skip-existing redid the file every run)."""
    from lway_rt.io.images import image_size

    a16 = np.random.default_rng(5).integers(0, 65536, (6, 10, channels), dtype=np.uint16)
    a8 = (a16 >> 8).astype(np.uint8)
    for o in range(1, 9):
        imgs = []
        for arr in (a16, a8):
            path = tmp_path / f"o{o}_{arr.dtype}.tif"
            tifffile.imwrite(path, arr, photometric="rgb", compression=compression,
                             extrasamples=[2] if channels == 4 else None, extratags=[(274, 3, 1, o, True)])
            imgs.append(read_image(path))
            want = _exif_orient(arr, o)
            assert image_size(path) == (want.shape[1], want.shape[0]), (o, arr.dtype)
        deep, twin = imgs
        assert deep.bit_depth == 16 and twin.bit_depth == 8
        want = _exif_orient(a16, o)
        np.testing.assert_array_equal(np.round(_planes(deep) * 65535).astype(np.uint16), want, err_msg=f"{o}")
        np.testing.assert_array_equal(np.round(_planes(deep) * 65535).astype(np.uint16) >> 8,
                                      np.round(_planes(twin) * 255).astype(np.uint16), err_msg=f"{o}")


def _cut_multi_frame(tmp_path, photo, suffix):
    """A 3-frame GIF or 3-page TIFF cut short in its later frames, and its first frame as read from the whole file."""
    import io

    frames = [photo, photo[::-1].copy(), photo[:, ::-1].copy()]
    pics = [Image.fromarray(f).quantize(64) if suffix == ".gif" else Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    pics[0].save(buf, "GIF" if suffix == ".gif" else "TIFF", save_all=True, append_images=pics[1:])
    whole, cut = tmp_path / f"whole{suffix}", tmp_path / f"cut{suffix}"
    whole.write_bytes(buf.getvalue())
    # GIF: into its third frame's pixels; TIFF (Pillow writes each page's directory after its pixels): into the second
    cut.write_bytes(buf.getvalue()[:int(len(buf.getvalue()) * (0.7 if suffix == ".gif" else 0.5))])
    return cut, read_image(whole)


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_a_multi_frame_file_cut_in_a_later_frame_gives_its_first_and_says_so(tmp_path, photo, suffix):
    """Counting the frames stepped into the cut one: IndexError (GIF) or TypeError (TIFF), a traceback that ended a
    whole batch. The first frame is read, as for a whole file, and the note says where the file is cut."""
    import warnings

    from lway_rt.io.images import frames_note

    cut, whole = _cut_multi_frame(tmp_path, photo, suffix)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor a raw Pillow warning ("Corrupt EXIF data" from the cut directory)
        img = read_image(cut)
    np.testing.assert_array_equal(img.rgb, whole.rgb)
    assert whole.frames == 3 and not whole.frames_damaged
    assert img.frames_damaged and img.frames in (2, 3)  # the frames up to the damaged one, and it
    note = frames_note(cut, img.frames, "upscaled", img.frames_damaged)
    assert note == f"{cut} is cut short or damaged at frame or page {img.frames}: only the first was upscaled " \
                   "(re-copy or re-export it for the others)"
    # cut in a later frame's pixels with its header whole: the count was found, and the note said the file holds 3
    # good frames to extract (58A-3)
    data = (tmp_path / f"whole{suffix}").read_bytes()
    for keep in (0.8, 0.9, 0.97):
        cut.write_bytes(data[:int(len(data) * keep)])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            img = read_image(cut)
        np.testing.assert_array_equal(img.rgb, whole.rgb)
        assert img.frames_damaged and img.frames in (2, 3), (keep, img.frames)
    if suffix == ".gif":  # a cut GIF whose last byte is the trailer's by chance is still found (58I-2)
        data = (tmp_path / "whole.gif").read_bytes()
        at = next(k for k in range(len(data) * 7 // 10, len(data) - 2) if data[k - 1] == 0x3B and data[k - 2] != 0)
        cut.write_bytes(data[:at])
        assert read_image(cut).frames_damaged
    if suffix == ".gif":  # a whole GIF (its trailer there) is not decoded to its last frame to check (58H-5)
        from PIL import Image as PILImage

        from lway_rt.io import images

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(PILImage, "open", lambda *a, **k: pytest.fail("a whole GIF was decoded"))
            assert images._first_cut_frame(tmp_path / "whole.gif", 3, gif=True) is None


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_an_animated_lossless_webp_is_known_lossless(tmp_path, mode):
    """The lossless check looked only at top-level VP8L/VP8 chunks, not into an animation's ANMF frames: a lossless
    animated WebP was written lossy with --format same."""
    from lway_rt.io.images import _webp_is_lossless

    rng = np.random.default_rng(2)
    frames = [Image.fromarray(rng.integers(0, 256, (12, 16, len(mode)), dtype=np.uint8), mode) for _ in range(3)]
    frames[0].save(tmp_path / "ll.webp", save_all=True, append_images=frames[1:], lossless=True)
    frames[0].save(tmp_path / "lossy.webp", save_all=True, append_images=frames[1:], quality=80)
    ll, lossy = read_image(tmp_path / "ll.webp"), read_image(tmp_path / "lossy.webp")
    assert ll.frames == lossy.frames == 3
    assert ll.lossless and not lossy.lossless
    assert _webp_is_lossless(tmp_path / "ll.webp") and not _webp_is_lossless(tmp_path / "lossy.webp")
    (tmp_path / "bad.webp").write_bytes(b"RIFF\x04\x00\x00\x00WEBP")  # no picture at all: not lossless
    assert not _webp_is_lossless(tmp_path / "bad.webp")


@pytest.mark.parametrize("depth", [8, 16])
def test_tifffiles_shape_description_is_not_carried(tmp_path, depth, caplog):
    """tifffile writes the array's shape as JSON in ImageDescription; carried into an output of another size, tifffile
    read the output's shape from it and warned "shaped series shape does not match page shape". A description of
    the picture is carried."""
    arr = np.full((6, 10, 3), 100 if depth == 8 else 20000, np.uint8 if depth == 8 else np.uint16)
    tifffile.imwrite(tmp_path / "shaped.tif", arr, photometric="rgb", extratags=[(271, "s", 0, "Cam", True)])
    tifffile.imwrite(tmp_path / "told.tif", arr, photometric="rgb", description="A sunset", metadata=None)
    with tifffile.TiffFile(tmp_path / "shaped.tif") as tf:
        assert tf.pages[0].description.startswith('{"shape": [6, 10, 3]')  # what tifffile writes by default
    shaped, told = read_image(tmp_path / "shaped.tif"), read_image(tmp_path / "told.tif")
    for name, img, description in (("shaped", shaped, None), ("told", told, "A sunset")):
        out = write_image(tmp_path / f"{name}_x2.tif", np.repeat(np.repeat(img.rgb, 2, 0), 2, 1), exif=img.exif)
        with Image.open(out) as im:
            assert im.getexif().get(0x010E) == description, name
        caplog.clear()
        with tifffile.TiffFile(out) as tf:
            assert tf.series[0].shape == (12, 20, 3)
        assert "does not match" not in caplog.text, caplog.text
    exif = Image.Exif()
    exif.load(shaped.exif)
    assert exif.get(0x010F) == "Cam" and 0x010E not in exif  # the camera's make is still carried


def test_pillows_warnings_are_not_printed_raw(tmp_path, photo, monkeypatch):
    """An image over Pillow's pixel limit (89 megapixels) but under twice it is read, with a DecompressionBombWarning
    printed raw; past twice it is refused in one line. A damaged EXIF block is read in part ("Corrupt EXIF data"):
    the picture is read, and no raw warning printed."""
    import warnings

    from lway_rt.io.images import image_size

    Image.fromarray(photo).save(tmp_path / "big.png")  # 24x32 = 768 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "big.png").rgb.shape == (24, 32, 3)
        assert image_size(tmp_path / "big.png") == (32, 24)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)
    with pytest.raises(InputError, match="big.png: Image size \\(768 pixels\\) exceeds limit") as refused:
        read_image(tmp_path / "big.png")
    assert str(refused.value).endswith(f"if the picture is real, cut it into pieces first, e.g. mkdir pieces && "
                                       f"magick {tmp_path / 'big.png'} -crop 4000x4000 +repage pieces/big_%03d.png")
    monkeypatch.undo()
    exif = Image.Exif()
    exif[0x010F] = "Cam"
    Image.fromarray(photo).save(tmp_path / "cut_exif.jpg", exif=exif.tobytes()[:14])  # the directory cut off
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = read_image(tmp_path / "cut_exif.jpg")
        assert image_size(tmp_path / "cut_exif.jpg") == (32, 24)
    assert img.rgb.shape == (24, 32, 3)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_an_image_of_no_pixels_is_said_to_have_none(tmp_path, suffix):
    """A 0x5 PNG was "not a readable image (supported: PNG …)", as if it were not an image at all."""
    import io
    import struct

    path = tmp_path / f"zero{suffix}"
    if suffix == ".tif":
        with tifffile.TiffWriter(path) as tw, pytest.warns(UserWarning, match="zero-size"):
            tw.write(np.zeros((0, 5), np.uint8))
        want = "holds no pixels"
    else:
        buf = io.BytesIO()
        Image.new("RGB", (1, 5)).save(buf, suffix[1:].upper())
        data = bytearray(buf.getvalue())
        if suffix == ".png":
            import zlib

            data[16:20] = struct.pack(">I", 0)
            data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
        else:
            data[18:22] = struct.pack("<i", 0)
        path.write_bytes(bytes(data))
        want = r"holds no pixels \(its header says 0x5\): re-export the image"
    with pytest.raises(InputError, match=want) as err:
        read_image(path)
    assert str(path) in str(err.value) and "not a readable image" not in str(err.value)


def test_settled_alpha_has_no_step_two_runtimes_could_straddle():
    """Near-opaque and near-clear values are made exactly so, and those just beyond are drawn out to meet them: at a
    hard threshold a 1e-6 difference between PyTorch's and ONNX Runtime's alpha (a palette PNG's colour-key mask)
    came out 2 levels apart (1e-5 here, one grid step), where an fp32 file's images are to match within one."""
    from lway_rt.io.images import settle_alpha

    a = np.linspace(0.0, 1.0, 200001, dtype=np.float32)
    for x in (a, a + np.float32(1e-5)):
        s, mid = settle_alpha(x), (x > 3 / 255) & (x < 1 - 3 / 255)
        assert s[x <= 1.5 / 255].max() == 0.0 and s[x >= 1 - 1.5 / 255].min() == 1.0
        assert np.array_equal(s[mid], x[mid])
    levels = lambda x: np.floor(settle_alpha(x) * 255 + 0.5)  # noqa: E731
    assert np.abs(levels(a + np.float32(1e-5)) - levels(a)).max() <= 1  # (the step: a runtime 1e-5 apart)


def test_files_of_formats_not_read_beside_images_are_named_in_a_note(tmp_path):
    """A phone's folder of JPEGs and HEIC photos, or a camera's RAW + JPEG: the JPEGs were upscaled (or adapted on)
    and the others left out without a word, while a folder of them alone was refused with how to convert them."""
    from lway_rt.adapt._imageio import list_images
    from lway_rt.upscale import collect_inputs

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.jpg")
    for name in ("IMG_2.HEIC", "IMG_1.CR2", "notes.txt", "a.xmp"):
        (tmp_path / name).write_bytes(b"\0" * 24)
    notes: list[str] = []
    found, problems = collect_inputs([tmp_path], notes=notes)
    assert [f.name for f, _ in found] == ["a.jpg"] and not problems
    assert len(notes) == 1 and notes[0].startswith(f"{tmp_path} also holds 2 file(s) that lwayrt does not read "
                                                   "(IMG_1.CR2, IMG_2.HEIC): left out; it holds raw files"), notes
    said: list[str] = []
    assert [p.name for p in list_images([tmp_path], said)] == ["a.jpg"]
    assert said == [f"note: {notes[0]}"]
    for name in ("IMG_2.HEIC", "IMG_1.CR2"):
        (tmp_path / name).unlink()
    notes, said = [], []
    collect_inputs([tmp_path], notes=notes)
    list_images([tmp_path], said)
    assert notes == [] and said == []  # a .txt or .xmp beside the images is nothing to say


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_a_file_cut_short_does_not_reach_its_end(tmp_path, fmt):
    """What --skip-existing checks of an output before it keeps it: its header alone (all image_size reads) may be
    whole in a file cut short."""
    from lway_rt.io.images import image_size, reaches_its_end

    path = tmp_path / f"img.{fmt.lower()}"
    exif = Image.Exif()
    exif[0x010F] = "camera"  # (Pillow reads no PNG's size without decoding it where no EXIF comes before its pixels)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path, fmt, exif=exif)
    assert reaches_its_end(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    assert image_size(path) == (None if fmt == "WEBP" else (80, 64))  # (Pillow opens a WebP by decoding it)
    assert reaches_its_end(path) == (fmt == "TIFF")  # (a TIFF's end is not checked)


def test_a_jpeg_cut_in_its_header_says_to_copy_it_again(tmp_path):
    """A JPEG cut short said 'the file is corrupt' and no more, where a cut PNG says what to do (review 48C C6)."""
    import io

    from PIL import Image

    from lway_rt.errors import InputError
    from lway_rt.io.images import read_image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(buf, "JPEG")
    cut = tmp_path / "cut.jpg"
    for n in range(20, len(buf.getvalue()), 7):  # cut where the reader meets the end (at opening or decoding)
        cut.write_bytes(buf.getvalue()[:n])
        try:
            read_image(cut)
        except InputError as exc:
            assert "re-copy or re-export it" in str(exc), (n, str(exc))


def test_ppm_and_pgm_files_are_read_in_folders_and_16_bit_colour_keeps_its_bits(tmp_path):
    """A folder's .ppm/.pgm files were left out without a note (read when named), and a 16-bit colour PPM (P6, maxval
    above 255) was read as 8 bits, unsaid (review 50H H1): both are read, the PPM's samples scaled from its maxval."""
    import numpy as np

    from lway_rt.io.images import read_image
    from lway_rt.upscale import collect_inputs

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, (6, 5, 3)).astype(">u2")
    (tmp_path / "a.ppm").write_bytes(b"P6\n5 6\n65535\n" + rgb.tobytes())
    (tmp_path / "b.pgm").write_bytes(b"P5\n5 6\n65535\n" + rgb[..., 0].tobytes())
    small = rng.integers(0, 1001, (6, 5, 3)).astype(">u2")
    (tmp_path / "c.pnm").write_bytes(b"P6\n5 6\n1000\n" + small.tobytes())
    (tmp_path / "d.ppm").write_bytes(b"P6\n5 6\n255\n" + rgb.astype(np.uint8).tobytes())
    found, failed = collect_inputs([tmp_path])
    assert [p.name for p, _ in found] == ["a.ppm", "b.pgm", "c.pnm", "d.ppm"] and not failed
    a = read_image(tmp_path / "a.ppm")
    assert a.bit_depth == 16 and np.array_equal(np.round(a.rgb * 65535).astype(np.uint16), rgb.astype(np.uint16))
    assert read_image(tmp_path / "b.pgm").bit_depth == 16
    c = read_image(tmp_path / "c.pnm")
    assert c.bit_depth == 16 and np.abs(c.rgb - small / 1000.0).max() < 1e-5
    d = read_image(tmp_path / "d.ppm")
    assert d.bit_depth == 8 and np.array_equal(np.round(d.rgb * 255).astype(np.uint8), rgb.astype(np.uint8))
    (tmp_path / "cut.ppm").write_bytes(b"P6\n5 6\n65535\n" + rgb.tobytes()[:50])
    with pytest.raises(InputError, match="cut.ppm is truncated or corrupt"):
        read_image(tmp_path / "cut.ppm")


@pytest.mark.parametrize("kind", ["rgb8", "grey8", "rgba8", "grey16", "rgb16", "rgba16"])
def test_tiff_outputs_are_deflate_coded_and_read_back_exactly(tmp_path, astronaut, kind):
    """TIFF outputs are compressed losslessly (Deflate with horizontal prediction: review 50H H2 found them written
    uncompressed, 6x an LZW scan's size), 8-bit ones still carrying EXIF, and every reader gets the samples back."""
    from lway_rt.io.images import write_samples

    x = np.ascontiguousarray(astronaut[:200, :150])
    base = {"rgb8": x, "grey8": x[..., 0], "rgba8": np.dstack([x, x[..., 2]])}
    wide = {k.replace("8", "16"): (v.astype(np.uint16) * 257 + 3) for k, v in base.items()}
    arr = {**base, **wide}[kind]
    exif = read_image(_camera_jpeg(tmp_path / "cam.jpg")).exif
    out = write_samples(tmp_path / "out.tif", arr, exif=exif, dpi=(300, 150))
    assert out.stat().st_size < 0.7 * arr.nbytes
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert (int(page.compression), int(page.predictor)) == (8, 2)  # Adobe Deflate, horizontal differencing
        np.testing.assert_array_equal(page.asarray().reshape(arr.shape), arr)
    if kind in ("rgb8", "grey8", "rgba8", "grey16"):  # what Pillow opens
        with Image.open(out) as im:
            np.testing.assert_array_equal(np.asarray(im).reshape(arr.shape), arr)
            assert im.info["dpi"] == pytest.approx((300, 150))
            if kind.endswith("8") or kind == "grey16":
                assert im.getexif().get(0x0110) == "Phone 12"
    again = read_image(out)
    assert again.bit_depth == (16 if "16" in kind else 8)
    got = np.round(_planes(again) * (65535 if "16" in kind else 255))
    np.testing.assert_array_equal(got.reshape(arr.shape), arr)


def test_a_tiff_not_laid_out_as_expected_is_written_uncompressed(tmp_path, monkeypatch):
    """_deflate_tiff rewrites only a one-page file whose strips end it; anything else it leaves to the plain writer,
    which must then write the samples as they are (no predictor declared over undifferenced samples)."""
    from lway_rt.io import images

    arr = (np.arange(40 * 30 * 3) % 251).astype(np.uint8).reshape(40, 30, 3)
    tags = Image.Exif()
    tags[317] = 2
    one = tmp_path / "one.tif"
    Image.fromarray(arr).save(one, exif=tags)  # as write_samples has Pillow write it
    raw = bytearray(one.read_bytes())
    assert images._deflate_tiff(bytes(raw)) is not None
    ifd = int.from_bytes(raw[4:8], "little")
    n = int.from_bytes(raw[ifd:ifd + 2], "little")
    raw[ifd + 2 + 12 * n:ifd + 6 + 12 * n] = (8).to_bytes(4, "little")  # a second page
    assert images._deflate_tiff(bytes(raw)) is None
    packed = tmp_path / "packed.tif"
    Image.fromarray(arr).save(packed, compression="tiff_adobe_deflate")
    assert images._deflate_tiff(packed.read_bytes()) is None  # compressed already
    monkeypatch.setattr(images, "_deflate_tiff", lambda raw: None)
    for a in (arr, arr.astype(np.uint16) * 257):
        out = images.write_samples(tmp_path / f"plain{a.dtype}.tif", a)
        with tifffile.TiffFile(out) as tf:
            assert int(tf.pages[0].compression) == 1 and int(tf.pages[0].predictor) == 1
            np.testing.assert_array_equal(tf.pages[0].asarray(), a)


def test_a_tiff_output_keeps_its_own_layout_whatever_the_carried_exif_says(tmp_path):
    """A JPEG's EXIF may hold TIFF layout tags (photometric, fill order) and an Interoperability pointer, an offset
    into that JPEG: carried into a TIFF output they overrode its own layout (YCbCr: colours off by 235 levels; fill
    order 2: a file nobody could decode) and left a pointer to nowhere (review 51D D1, D2). Only metadata goes."""
    import warnings

    from lway_rt.io.images import write_samples

    y, x = np.mgrid[0:40, 0:48]
    arr = np.stack([x * 5, y * 6, (x + y) * 2], 2).astype(np.uint8)
    tags = Image.Exif()
    tags[0x010F] = "Maker"
    tags[0x0106], tags[0x010A] = 6, 2  # PhotometricInterpretation YCbCr, FillOrder reversed
    tags.get_ifd(0x8769).update({0x9003: "2024:05:01 10:00:00", 0xA005: 670})  # DateTimeOriginal, Interop pointer
    out = write_samples(tmp_path / "out.tif", arr, exif=tags.tobytes())
    np.testing.assert_array_equal(np.round(read_image(out).rgb * 255), arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns of corrupt EXIF at a pointer to nowhere
        with Image.open(out) as im:
            np.testing.assert_array_equal(np.asarray(im), arr)
            carried = im.getexif()
            assert carried[0x010F] == "Maker" and carried.get_ifd(0x8769) == {0x9003: "2024:05:01 10:00:00"}
    np.testing.assert_array_equal(tifffile.imread(out), arr)
