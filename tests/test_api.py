"""``lway_rt.api.Upscaler``: arrays in, arrays out, with the same pixels ``lwayrt upscale`` writes for the same
samples (real realesr-animevideov3 weights, real files written by the command)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lway_rt.api import Upscaler
from lway_rt.cli import main
from lway_rt.errors import InputError, LwayError

MODEL = "realesr-animevideov3"


@pytest.fixture(scope="module")
def small(astronaut) -> np.ndarray:
    return np.ascontiguousarray(astronaut[100:356:8, 150:406:8])  # 32x32 photo


@pytest.fixture(scope="module")
def upscaler() -> Upscaler:
    return Upscaler(MODEL)


def _command(tmp_path, arrays: dict[str, np.ndarray], *args) -> dict[str, np.ndarray]:
    """What ``lwayrt upscale`` writes for each array saved as a PNG."""
    src = tmp_path / "in"
    src.mkdir()
    for name, arr in arrays.items():
        Image.fromarray(arr).save(src / f"{name}.png")
    res = CliRunner().invoke(main, ["upscale", str(src), "-o", str(tmp_path / "out"), *args])
    assert res.exit_code == 0, res.output
    return {name: np.asarray(Image.open(tmp_path / "out" / f"{name}_x4.png")) for name in arrays}


def test_arrays_come_back_as_the_files_upscale_writes(tmp_path, small, upscaler):
    alpha = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    arrays = {"rgb": small, "rgba": np.dstack([small, alpha]), "grey": small[..., 1],
              "grey16": small[..., 1].astype(np.uint16) * 257}
    written = _command(tmp_path, arrays, "-m", MODEL)
    assert upscaler.scale == 4 and upscaler.factor == 4
    for name, arr in arrays.items():
        out = upscaler(arr)
        assert out.dtype == arr.dtype and out.shape == (128, 128, *arr.shape[2:]), (name, out.shape, out.dtype)
        assert np.array_equal(out, written[name]), name


def test_a_low_bit_grey_pillow_image_keeps_its_transparency_as_the_command_does(tmp_path, upscaler):
    """A 1/2/4-bit grey PNG with a tRNS key, opened with Pillow and given to the Upscaler, came back opaque where the
    command, reading the file, keeps its clear areas (review 52N N2)."""
    stored = np.arange(32 * 32).reshape(32, 32) // 4 % 4
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((stored * 85).astype(np.uint8)).save(src / "two.png", bits=2, transparency=1)
    Image.fromarray((stored % 2 * 255).astype(np.uint8)).convert("1").save(src / "one.png", transparency=1)
    res = CliRunner().invoke(main, ["upscale", str(src), "-o", str(tmp_path / "out"), "-m", MODEL])
    assert res.exit_code == 0, res.output
    for name in ("two", "one"):
        written = np.asarray(Image.open(tmp_path / "out" / f"{name}_x4.png"))
        assert written.shape == (128, 128, 2) and written[..., 1].min() == 0, name  # grey + alpha, clear areas
        assert np.array_equal(upscaler(Image.open(src / f"{name}.png")), written), name


def test_a_gif_just_opened_with_pillow_gives_the_commands_samples(tmp_path, small, upscaler):
    """Any GIF opened with Pillow and handed over unloaded ended in AttributeError ('int' object has no attribute
    'partition'): its codec's arguments were taken for a raw mode (review 53B B2)."""
    first = Image.fromarray(small).quantize(64)
    first.save(tmp_path / "plain.gif")
    first.save(tmp_path / "clear.gif", transparency=0)
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "plain.gif"), str(tmp_path / "clear.gif"), "-o",
                                    str(tmp_path / "out"), "-m", MODEL])
    assert res.exit_code == 0, res.output
    for name in ("plain", "clear"):
        got = upscaler(Image.open(tmp_path / f"{name}.gif"))
        assert np.array_equal(got, np.asarray(Image.open(tmp_path / "out" / f"{name}_x4.png"))), name
    # QOI and XBM tiles carry no codec arguments at all: TypeError (review 53D D6)
    Image.fromarray(small).save(tmp_path / "x.qoi")
    Image.fromarray(small).convert("1").save(tmp_path / "x.xbm")
    for name in ("x.qoi", "x.xbm"):
        with Image.open(tmp_path / name) as im:
            loaded = im.copy()
        assert np.array_equal(upscaler(Image.open(tmp_path / name)), upscaler(loaded)), name


def test_bgr_arrays_and_float_arrays(small, upscaler):
    rgb = upscaler(small)
    assert np.array_equal(upscaler(np.ascontiguousarray(small[..., ::-1]), bgr=True), rgb[..., ::-1])
    rgba = np.dstack([small, np.full(small.shape[:2], 255, np.uint8)])
    bgra = upscaler(rgba[..., [2, 1, 0, 3]], bgr=True)
    assert np.array_equal(bgra[..., [2, 1, 0, 3]], upscaler(rgba))
    # laid out pixel by pixel, as OpenCV draws into (the reordered channels had come back plane by plane)
    for out in (bgra, upscaler(small, bgr=True), upscaler(small), upscaler(small[..., 0]), upscaler(rgba)):
        assert out.flags.c_contiguous, out.strides
    floats = upscaler(small.astype(np.float64) / 255.0)  # the same samples as floats: the same image, unrounded
    assert floats.dtype == np.float32 and floats.shape == rgb.shape
    assert np.abs(floats * 255.0 - rgb).max() <= 0.5 + 1e-3


def test_adapted_weights_with_a_detail_cap_give_the_commands_pixels(tmp_path, small, capped_weights):
    """Weights adapt wrote with --detail-cap are run with their cap, as upscale -m runs them."""
    written = _command(tmp_path, {"rgb": small}, "-m", str(capped_weights), "--tile", "0")
    capped = Upscaler(capped_weights, tile=0)
    assert np.array_equal(capped(small), written["rgb"])
    assert not np.array_equal(Upscaler(capped_weights, tile=0, detail_cap="off")(small), written["rgb"])


def test_outscale_per_call_byte_order_and_rounding_noise(small, upscaler):
    """As RealESRGANer.enhance(img, outscale=...): a call's outscale, without loading the model again; a big-endian
    16-bit array is a 16-bit array; float samples a rounding error outside [0, 1] are clipped, not refused."""
    made = Upscaler(MODEL, outscale=2)
    assert made.factor == 2 and np.array_equal(upscaler(small, outscale=2), made(small))
    assert upscaler(small, outscale=2).shape == (64, 64, 3) and upscaler.factor == 4
    grey16 = small[..., 1].astype(np.uint16) * 257
    assert np.array_equal(upscaler(grey16.astype(">u2")), upscaler(grey16))
    floats = small.astype(np.float32) / 255.0
    noisy = floats + np.where(small == 0, -1e-9, np.where(small == 255, 1e-7, 0.0)).astype(np.float32)
    assert np.array_equal(upscaler(noisy), upscaler(np.clip(noisy, 0, 1)))


@pytest.mark.parametrize("array, said", [
    (np.zeros((8, 8, 5), np.uint8), "HxW, HxWx1, HxWx2, HxWx3 or HxWx4 of at least 1x1 pixels, not of shape (8, 8, 5)"),
    (np.zeros((2, 8, 8, 3), np.uint8), "not of shape (2, 8, 8, 3)"),
    (np.zeros((5, 0), np.uint8), "not of shape (5, 0)"),
    (np.zeros((8, 8, 3), np.int64), "uint8, uint16 or float in [0, 1], not int64"),
    (np.zeros((8, 8), np.int32), "as int32: .astype(np.uint16)"),
    (np.full((8, 8, 3), 2.0), "this one spans 2 to 2: divide 8-bit values by 255"),
    (np.full((8, 8, 3), -0.5), "spans -0.5 to -0.5"),
    (np.full((8, 8, 3), np.nan, np.float32), "holds NaN or inf samples"),
    (np.full((8, 8, 3), 1e39), "this one spans 1e+39 to 1e+39"),  # (float32's inf: it was called NaN or inf; 48E E3)
    ("photo.png", "an Upscaler takes an image array, not a file name (photo.png): read it first"),  # (48E E2)
])
def test_bad_arrays_are_one_line_errors(upscaler, array, said):
    with pytest.raises(InputError) as err:
        upscaler(array)
    assert said in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_device_an_onnx_file_cannot_run_on_here_is_a_bad_setting(tmp_path, anime_onnx):
    """device="cuda" with an exported file where ONNX Runtime has no CUDA provider raised ProviderFallbackError,
    which 'except InputError' (a bad setting, as with a torch model) missed, advising 'the CPU provider' (57E-1)."""
    import onnxruntime

    path = anime_onnx(tmp_path / "exp")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():  # (onnxruntime-gpu on a GPU runs it)
        with pytest.raises(InputError) as err:
            Upscaler(path, device="cuda")
        assert str(err.value).startswith('device="cuda" asked for, but ONNX Runtime') and \
            str(err.value).endswith('or use device="cpu"'), err.value


def test_a_note_on_loading_points_at_the_callers_line(tmp_path, anime_onnx):
    """A file moved without its manifest gives a Notice as it loads; it pointed at a line inside lway_rt, so a filter
    by module or a look at the location misled (57E-3). It points at the line that made the Upscaler."""
    import shutil
    import warnings

    from lway_rt.errors import Notice

    alone = tmp_path / "alone" / "moved.onnx"
    alone.parent.mkdir()
    shutil.copy(anime_onnx(tmp_path / "exp"), alone)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        Upscaler(alone)
    (note,) = [w for w in said if issubclass(w.category, Notice)]
    assert "moved.onnx runs without its manifest" in str(note.message) and note.filename == __file__, \
        (note.filename, note.message)
    # Python's own rules hold, as for any warning of that line: once per line by default (57I-3: a first mend that
    # recorded the notes and warned again gave one per Upscaler made in a loop)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("default")
        for _ in range(3):
            Upscaler(alone)
    assert len([w for w in said if issubclass(w.category, Notice)]) == 1, [str(w.message) for w in said]


def test_bad_settings_and_models_are_refused_when_made(tmp_path):
    with pytest.raises(InputError, match="^tile and tile_overlap must be >= 0"):  # in keywords, not the command's options
        Upscaler(MODEL, tile=-1)
    with pytest.raises(InputError, match="^detail_cap must be auto, off or a number >= 1, not 0.5$"):
        Upscaler(MODEL, detail_cap=0.5)  # (the number given, not the string '0.5': review 48E E7)
    with pytest.raises(InputError, match="^detail_cap must be auto, off or a number >= 1, not 0$"):
        Upscaler(MODEL, detail_cap=np.int64(0))  # a numpy number is a number, as tile= takes one (it was 'not np.int64')
    with pytest.raises(InputError) as err:
        Upscaler(MODEL, tile=10)
    assert "use tile=65 or more (more than twice tile_overlap=32)" in str(err.value) and "--" not in str(err.value)
    if not torch.cuda.is_available():
        with pytest.raises(LwayError, match='use device="cpu"'):
            Upscaler(MODEL, device="cuda")
    with pytest.raises(InputError, match=r"^outscale must be a number above 0"):  # a call's own, too
        Upscaler(MODEL)(np.zeros((8, 8, 3), np.uint8), outscale=-2)
    # values written with an exponent, infinity and None are said as the keyword values they are (57E-2: 'outscale
    # 1e-300' without its '=', 'inf' in quotes as if a string, and None as the string 'None')
    with pytest.raises(InputError, match=r"^outscale=1e-300 makes this 8x8 image 0x0 px"):
        Upscaler(MODEL)(np.zeros((8, 8, 3), np.uint8), outscale=1e-300)
    with pytest.raises(InputError, match=r"^detail_cap must be auto, off or a number >= 1, not inf$"):
        Upscaler(MODEL, detail_cap=float("inf"))
    with pytest.raises(InputError, match=r'^device is a string such as "cpu" or "cuda", not None$'):
        Upscaler(MODEL, device=None)

    with pytest.raises(LwayError) as err:
        Upscaler(tmp_path / "missing.safetensors")
    assert "missing.safetensors" in str(err.value)
    with pytest.raises(LwayError) as err:  # a store model's file name given for it: its keyword, not "-m"
        Upscaler(f"{MODEL}.safetensors")
    assert f'the store\'s model of that name is model="{MODEL}"' in str(err.value), str(err.value)
    for kwargs, said in (({"tile": "abc"}, "tile is a whole number of pixels, not 'abc'"),
                         ({"tile": 33.9}, "tile is a whole number of pixels, not 33.9"),
                         ({"tile_overlap": "8"}, "tile_overlap is a whole number of pixels, not '8'"),
                         ({"outscale": "2"}, "outscale is a number"),
                         ({"detail_cap": None}, "detail_cap is \"auto\", \"off\" or a number >= 1, not None"),
                         ({"detail_cap": True}, "not True"),
                         ({"fp16": "False"}, "fp16 is True or False, not 'False'")):  # (taken as fp16=True)
        with pytest.raises(InputError) as err:  # (they failed deep inside, or were taken as 33 and 1)
            Upscaler(MODEL, **kwargs)
        assert said in str(err.value), (kwargs, str(err.value))
    with pytest.raises(InputError, match=r"^bgr is True or False, not 'no'"):  # (taken as bgr=True: channels swapped)
        Upscaler(MODEL)(np.zeros((8, 8, 3), np.uint8), bgr="no")
    assert Upscaler(MODEL, fp16=np.bool_(False))(np.zeros((8, 8, 3), np.uint8), bgr=np.bool_(True)).shape == (32, 32, 3)

def test_error_keywords_leave_other_commands_and_paths_as_they_are():
    from lway_rt.api import _keywords

    quoted = "a detail cap goes into the file at export ('lwayrt export --detail-cap'), so drop --detail-cap here"
    assert _keywords(quoted) == ("a detail cap goes into the file at export ('lwayrt export --detail-cap'), so drop "
                                 "detail_cap here")
    # a path may hold spaces or a drive letter: the option is named, the path left whole
    assert _keywords("--stage1 /tmp/my dir/s1.pt does not exist") == "stage1 /tmp/my dir/s1.pt does not exist"
    assert _keywords("--base-model C:/x.pth upscales x2") == "base_model C:/x.pth upscales x2"
    assert _keywords("use --detail-cap 1.2.") == "use detail_cap=1.2."
    # the model: its keyword, a shell-quoted name unquoted; inside a quoted command, -m stays
    assert _keywords("it is there already (-m 'my model')") == 'it is there already (model="my model")'
    assert _keywords("run it ('lwayrt upscale -m x'), or -m y.") == "run it ('lwayrt upscale -m x'), or model=\"y\"."


def test_pillow_images_are_taken_by_what_they_show(small, upscaler):
    """A palette, CMYK or YCbCr Pillow image went through np.asarray as its raw samples: palette indices upscaled as a
    grey image, CMY as RGB with K as alpha (review 48E E1). Each is taken as the picture it shows, as a file is."""
    im = Image.fromarray(small)
    rgb = upscaler(small)
    assert np.array_equal(upscaler(im), rgb)
    for mode in ("CMYK", "YCbCr", "RGBX"):
        out = upscaler(im.convert(mode))
        assert out.shape == rgb.shape and np.abs(out.astype(int) - rgb).mean() < 2.0, mode  # (the conversion's rounding)
    palette = im.convert("P")
    assert np.array_equal(upscaler(palette), upscaler(np.asarray(palette.convert("RGB"))))



def test_a_pillow_image_with_an_exif_orientation_comes_upright_as_the_command_writes_it(tmp_path, small, upscaler):
    """A camera's JPEG held sideways (EXIF orientation 6), opened with Pillow, came back sideways from the API where
    `lwayrt upscale` writes it upright (review 49H H1)."""
    wide = np.ascontiguousarray(np.concatenate([small, small[:16]], axis=0))  # 48x32: its turn shows in its shape
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "turned.jpg", quality=95, exif=exif)
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "turned.jpg"), "-o", str(tmp_path / "out"), "-m", MODEL])
    assert res.exit_code == 0, res.output
    written = np.asarray(Image.open(tmp_path / "out" / "turned_x4.png"))
    out = upscaler(Image.open(tmp_path / "turned.jpg"))
    assert out.shape == written.shape == (128, 192, 3) and np.array_equal(out, written)
    # turned upright by the caller (Pillow's transpose keeps the EXIF tag): taken as it is, not turned twice (49L L5)
    upright = Image.open(tmp_path / "turned.jpg").transpose(Image.Transpose.ROTATE_270)
    assert upright.getexif().get(0x0112) == 6 and np.array_equal(upscaler(upright), written)


def test_an_onnx_file_that_does_not_load_is_a_model_error(tmp_path):
    """The documented ModelError 'for a model that does not load' was an InputError for an .onnx file (missing,
    damaged, not an SR network), so `except ModelError` missed it (review 48E E4)."""
    from lway_rt.errors import ModelError

    (tmp_path / "bad.onnx").write_text("garbage")
    for name, said in (("bad.onnx", "ONNX Runtime cannot load"), ("missing.onnx", "does not exist")):
        with pytest.raises(ModelError, match=said):
            Upscaler(tmp_path / name)


def test_upscalers_made_in_threads_leave_the_warning_filters_as_they_were(tmp_path):
    """warnings.catch_warnings puts back the process's one filter list: Upscalers of a .pth file made in four threads
    at once left torch_load_tensors's two 'ignore' filters behind in 8 of 10 trials (review 48E E5)."""
    import threading
    import warnings

    from lway_rt.io.store import resolve_model_path
    from lway_rt.io.weights import load_state_file

    state, _ = load_state_file(resolve_model_path(MODEL))
    torch.save(state, tmp_path / "model.pth")
    Upscaler(tmp_path / "model.pth")
    before = list(warnings.filters)
    for _ in range(5):
        threads = [threading.Thread(target=Upscaler, args=(tmp_path / "model.pth",)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert warnings.filters == before


def test_pillow_images_of_16_bit_and_float_files_give_the_commands_samples(tmp_path, small, upscaler):
    """A 16-bit grey PNG with a transparent grey level (tRNS) came back opaque from the API, where the command makes
    those pixels clear; a 16-bit PGM (Pillow's mode I) and a float image (F) were refused as holding no 8- or 16-bit
    samples, where the command reads them (review 50B B1, B2)."""
    import struct
    import zlib

    from lway_rt.io.images import read_image

    grey16 = small[..., 1].astype(np.uint16) * 257
    key = 12345  # a corner of one grey level the file calls clear
    grey16[grey16 == key] += 1
    grey16[:12, :12] = key

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in grey16)
    (tmp_path / "key.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 16, 0, 0, 0, 0))
                                       + chunk(b"tRNS", struct.pack(">H", key)) + chunk(b"IDAT", zlib.compress(rows))
                                       + chunk(b"IEND", b""))
    (tmp_path / "g16.pgm").write_bytes(b"P5\n32 32\n65535\n" + grey16.astype(">u2").tobytes())
    im = Image.open(tmp_path / "key.png")
    assert im.mode.startswith("I;16") and im.info["transparency"] == key  # (what Pillow gives)
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "key.png"), str(tmp_path / "g16.pgm"), "-o",
                                    str(tmp_path / "out"), "-m", MODEL])
    assert res.exit_code == 0, res.output
    keyed = upscaler(im)
    written = read_image(tmp_path / "out" / "key_x4.png")
    assert keyed.dtype == np.uint16 and keyed.shape == (128, 128, 2)
    def samples(x):  # (as the file holds them)
        return np.round(x * 65535.0).astype(np.uint16)

    assert written.alpha is not None and (keyed[..., 1] == 0).any() and (keyed[..., 1] == 65535).any()
    assert np.array_equal(keyed[..., 1], samples(written.alpha)) and written.bit_depth == 16
    assert np.array_equal(keyed[..., 0], samples(written.rgb[..., 0]))
    pgm = Image.open(tmp_path / "g16.pgm")
    assert pgm.mode == "I"
    out = upscaler(pgm)
    assert out.dtype == np.uint16 and np.array_equal(out, samples(read_image(tmp_path / "out" / "g16_x4.png").rgb[..., 0]))
    floats = upscaler(Image.fromarray(grey16.astype(np.float32) / 65535.0, mode="F"))
    assert floats.dtype == np.float32 and floats.shape == out.shape and np.abs(floats * 65535.0 - out).max() <= 0.5 + 1e-2


def test_pillow_images_that_cannot_be_read_and_non_arrays_are_one_line_errors(tmp_path, small, upscaler):
    """A cut file's or a closed Pillow image raised Pillow's OSError / ValueError, not the documented LwayError; None
    (a failed cv2.imread), a file's bytes and a list were told of shapes or of 16-bit PGM files (review 50B B4, B5);
    a 16-bit colour PNG, which Pillow reads as 8 bits, is warned of (B3)."""
    import io

    Image.fromarray(small).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    closed = Image.open(tmp_path / "a.png")
    closed.close()
    for image, said in ((Image.open(tmp_path / "cut.png"), "the Pillow image cannot be read ("),
                        (closed, "the Pillow image cannot be read ("),
                        (None, "not None (cv2.imread returns None"),
                        (data, "not a file's bytes: decode them first"),
                        (small.tolist(), "not a list: make one first")):
        with pytest.raises(InputError) as err:
            upscaler(image)
        assert said in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(InputError) as err:
        upscaler(np.zeros((8, 8, 3), np.int64))
    assert "PGM" not in str(err.value)  # (the int32 advice is for int32)
    assert np.array_equal(upscaler(Image.open(io.BytesIO(data))), upscaler(small))
    assert np.array_equal(upscaler(memoryview(small)), upscaler(small))  # an array's buffer is its samples (50L L1)
    # a 16-bit RGB PNG: Pillow gives its 8-bit samples, said
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rgb16 = small.astype(">u2") * 257
    rows = b"".join(b"\0" + row.tobytes() for row in rgb16)
    (tmp_path / "rgb16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 16, 2, 0, 0, 0))
                                         + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    with pytest.warns(UserWarning, match="opened from a 16-bit PNG file, which Pillow reads as 8 bits"):
        assert upscaler(Image.open(tmp_path / "rgb16.png")).dtype == np.uint8
    (tmp_path / "rgb16.ppm").write_bytes(b"P6\n32 32\n65535\n" + rgb16.tobytes())  # (50H H1)
    with pytest.warns(UserWarning, match="opened from a 16-bit PPM file, which Pillow reads as 8 bits"):
        assert upscaler(Image.open(tmp_path / "rgb16.ppm")).dtype == np.uint8
