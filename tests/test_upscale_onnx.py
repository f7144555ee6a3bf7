"""``lwayrt upscale -m exported.onnx``: an exported file runs in ONNX Runtime and writes the images the torch
network writes (whole and tiled, grey and alpha), its manifest is checked, and what it cannot do is refused in one
line. Real exports of realesr-animevideov3, real ONNX Runtime sessions."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lway_rt.cli import main
from lway_rt.errors import ModelError
from lway_rt.runtime.onnx_model import load_onnx_model

MODEL = "realesr-animevideov3"


def _export(model: str, out: Path, *extra: str) -> Path:
    res = CliRunner().invoke(main, ["export", "-m", model, "--out", str(out), *extra])
    assert res.exit_code == 0, res.output
    (path,) = sorted(out.glob("*.sr.fp*.onnx"))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, anime_onnx) -> Path:
    return anime_onnx(tmp_path_factory.mktemp("exp"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut) -> Path:
    d = tmp_path_factory.mktemp("in")
    crop = np.ascontiguousarray(astronaut[60:380:4, 100:436:4])  # 80x84
    Image.fromarray(crop).save(d / "photo.png")
    alpha = np.tile(np.linspace(0, 255, crop.shape[1]).astype(np.uint8), (crop.shape[0], 1))
    Image.fromarray(np.dstack([crop, alpha]), "RGBA").save(d / "cutout.png")
    Image.fromarray(crop[..., 1].astype(np.uint16) * 257).save(d / "grey16.png")
    return d


def _upscale(model, inputs, out, *extra):
    return CliRunner().invoke(main, ["upscale", str(inputs), "-o", str(out), "-m", str(model), *extra])


def _levels(a: Path, b: Path) -> int:
    """Largest difference in 8-bit levels (16-bit images: in 1/257ths of their levels)."""
    x, y = (np.asarray(Image.open(p)).astype(np.int64) for p in (a, b))
    assert x.shape == y.shape
    div = 257 if Image.open(a).mode.startswith("I") else 1
    return int(np.abs(x - y).max() // div)


@pytest.mark.parametrize("tile", ["0", "32"])
def test_onnx_file_writes_the_torch_networks_images(exported, photos, tmp_path, tile):
    ref, got = tmp_path / "torch", tmp_path / "onnx"
    args = ("--tile", tile, *(("--tile-overlap", "8") if tile != "0" else ()))  # no overlap without tiles
    assert _upscale(MODEL, photos, ref, *args).exit_code == 0
    res = _upscale(exported, photos, got, *args)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in ref.iterdir())
    assert names == sorted(p.name for p in got.iterdir()) == ["cutout_x4.png", "grey16_x4.png", "photo_x4.png"]
    for name in names:
        assert _levels(ref / name, got / name) <= 1, name
    assert Image.open(got / "grey16_x4.png").mode.startswith("I") and Image.open(got / "cutout_x4.png").mode == "RGBA"


def test_the_python_api_runs_an_onnx_file_as_upscale_does(exported, photos, tmp_path):
    """lway_rt.api.Upscaler given an exported file runs it in ONNX Runtime: the command's pixels, alpha included."""
    from lway_rt.api import Upscaler

    assert _upscale(exported, photos, tmp_path / "up").exit_code == 0
    up = Upscaler(exported)
    for name in ("photo", "cutout"):
        arr = np.asarray(Image.open(photos / f"{name}.png"))
        assert np.array_equal(up(arr), np.asarray(Image.open(tmp_path / "up" / f"{name}_x4.png"))), name


def test_onnx_file_without_its_manifest_is_probed(exported, photos, tmp_path):
    """Exported elsewhere (no manifest): the scale comes from running it; the images are the same."""
    bare = tmp_path / "bare" / "model.onnx"
    bare.parent.mkdir()
    shutil.copy(exported, bare)
    assert _upscale(exported, photos, tmp_path / "a", "--tile", "0").exit_code == 0
    res = _upscale(bare, photos, tmp_path / "b", "--tile", "0", "--scale", "4")
    assert res.exit_code == 0, res.output
    assert _levels(tmp_path / "a" / "photo_x4.png", tmp_path / "b" / "photo_x4.png") == 0
    # said which of the two it is: moved from its manifest, or not lwayrt's at all (review 48F F4)
    assert "note: model.onnx runs without its manifest" in " ".join(res.output.split()), res.output
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2)).eval()
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(foreign), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "H", 3: "W"}}, dynamo=False)
    res = _upscale(foreign, photos, tmp_path / "d", "--tile", "0")
    assert res.exit_code == 0 and "note: foreign.onnx has neither a manifest nor lway_rt's metadata" in \
        " ".join(res.output.split()), res.output
    # one exported elsewhere for fixed 32x32 inputs passed the 32x32 probe, then stopped on the first image with
    # ONNX Runtime's traceback: refused in one line
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2)).eval()
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(fixed), input_names=["x"], output_names=["y"], dynamo=False)
    res = _upscale(fixed, photos, tmp_path / "c")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "error: fixed.onnx takes 32x32 inputs only (its height and width are fixed in the graph)" in res.output


def test_manifest_mismatches_and_what_onnx_cannot_do_are_refused(exported, photos, tmp_path, anime_onnx):
    renamed = tmp_path / "anime.onnx"  # renamed with its manifest: the same bytes, run (it was refused by name)
    shutil.copy(exported, renamed)
    shutil.copy(exported.with_suffix(".json"), renamed.with_suffix(".json"))
    res = _upscale(renamed, photos, tmp_path / "renamed_out", "--tile", "0")
    assert res.exit_code == 0 and "note:" not in res.output, res.output
    other = tmp_path / "renamed.onnx"  # the manifest names another file: other bytes
    _edited_metadata(exported, other, scale="4 ")
    shutil.copy(exported.with_suffix(".json"), other.with_suffix(".json"))
    failed = tmp_path / "failed.onnx"  # a file whose export failed its gate
    shutil.copy(exported, failed)
    manifest = json.loads(exported.with_suffix(".json").read_text())
    manifest["artifact"]["file"], manifest["ready"] = failed.name, False
    failed.with_suffix(".json").write_text(json.dumps(manifest))
    edited = {}  # manifests edited by hand: each a refusal in one line, never a traceback
    for name, change in (("noverdict", lambda m: m.pop("ready")), ("static", lambda m: m["onnx"].update(dynamic=False, tile=[32, 32])),
                         ("jetson", lambda m: (m["onnx"].update(dynamic=False, tile=[256, 256]),
                                               m["profile"].update(name="jetson-orin-trt10")))):
        edited[name] = tmp_path / f"{name}.onnx"
        shutil.copy(exported, edited[name])
        m = json.loads(exported.with_suffix(".json").read_text())
        m["artifact"]["file"] = edited[name].name
        change(m)
        edited[name].with_suffix(".json").write_text(json.dumps(m))
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"\0" * 16)
    half = anime_onnx(tmp_path / "half", "fp16")
    folder = tmp_path / "x.onnx"  # what 'export --out x.onnx' makes: the files it holds are named, not "does not exist"
    folder.mkdir()
    for f in (exported, exported.with_suffix(".json")):
        shutil.copy(f, folder / f.name)
    (tmp_path / "empty.onnx").mkdir()
    plain = tmp_path / "exports"  # an export's folder by any name: its ONNX files are named, not weights it lacks
    shutil.copytree(folder, plain)
    for model, extra, needle in (
        (other, (), "describes another file than renamed.onnx"),
        (failed, (), "failed its parity gate when it was exported"),
        (edited["noverdict"], (), "has no parity verdict in its manifest"),
        (edited["static"], (), "was exported for fixed 32x32 tiles: export it without --static"),
        # its profile fixed the tiles: no --static to drop (review 54E E3)
        (edited["jetson"], (), "was exported for fixed 256x256 tiles: export it under a profile of dynamic sizes, such "
                               "as the default (its profile, jetson-orin-trt10, fixes them) to run it here"),
        (engine, (), "is a TensorRT engine, which runs under TensorRT only"),
        (tmp_path / "missing.onnx", (), "does not exist: export one with 'lwayrt export'"),
        (folder, (), f"x.onnx is a folder ('lwayrt export --out' names the folder it writes into): pass the ONNX file "
                     f"in it, {folder / exported.name}"),
        (tmp_path / "empty.onnx", (), "empty.onnx is a folder with no .onnx file in it"),
        (plain, (), f"exports holds exported ONNX files, not weights: upscale, upscale-video and serve-bench run one "
                    f"of them ({plain / exported.name}); adapt, export and models add take the weights"),
        (exported, ("--detail-cap", "1.2"), "a detail cap goes into the file at export"),
        (exported, ("--scale", "2"), "upscales x4, not x2"),
        (exported, ("--fp16",), "runs in the precision it was exported in: drop --fp16"),  # not "add --device cuda"
        # a half-precision file is not told to export one
        (half, ("--fp16",), f"{half.name} is a half-precision (fp16) file already, and runs as exported: drop --fp16"),
    ):
        res = _upscale(model, photos, tmp_path / "out", *extra)
        errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
        assert res.exit_code == 1 and len(errors) == 1 and needle in errors[0], (model, res.output)
        assert "Traceback" not in res.output


def test_a_manifest_with_another_scale_fails_per_image(exported, photos, tmp_path):
    """A manifest whose scale is not what the file computes: each image fails in one listed line (the batch goes
    on, nothing half-written), not a traceback that stops the batch."""
    wrong = tmp_path / "x8.onnx"
    shutil.copy(exported, wrong)
    m = json.loads(exported.with_suffix(".json").read_text())
    m["artifact"]["file"], m["source"]["scale"] = wrong.name, 8
    wrong.with_suffix(".json").write_text(json.dumps(m))
    res = _upscale(wrong, photos, tmp_path / "out")
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "the model does not upscale by the scale it records" in res.output
    assert not list((tmp_path / "out").glob("*.png"))


def test_capped_export_runs_whole_images_as_upscale_caps_them(capped_weights, exported, photos, tmp_path):
    """An export holding a detail cap gives the images upscale writes with the weights and their recorded cap;
    tiles, which would each be capped alone, are refused when asked for; by default images run whole."""
    path = _export(str(capped_weights), tmp_path / "exp")
    assert _upscale(capped_weights, photos, tmp_path / "torch", "--tile", "0").exit_code == 0
    res = _upscale(path, photos, tmp_path / "onnx", "--tile", "0")
    assert res.exit_code == 0, res.output
    plain = tmp_path / "plain"
    assert _upscale(capped_weights, photos, plain, "--tile", "0", "--detail-cap", "OFF").exit_code == 0  # any case (56C-4)
    for name in ("photo_x4.png", "grey16_x4.png"):
        assert _levels(tmp_path / "torch" / name, tmp_path / "onnx" / name) <= 1, name
    assert _levels(plain / "photo_x4.png", tmp_path / "onnx" / "photo_x4.png") > 3  # the cap binds here
    res = _upscale(path, photos, tmp_path / "tiled", "--tile", "128")  # tiles asked for: refused
    assert res.exit_code == 1 and "add --tile 0" in res.output
    res = _upscale(path, photos, tmp_path / "tiled", "--tile", "64")  # said first, not the moot overlap rule
    assert res.exit_code == 1 and "add --tile 0" in res.output and "twice --tile-overlap" not in res.output, res.output
    res = _upscale(exported, photos, tmp_path / "tiled", "--tile", "64")  # an uncapped file: the rule holds
    assert res.exit_code == 1 and "must be more than twice --tile-overlap 32" in res.output, res.output
    res = _upscale(path, photos, tmp_path / "default")  # --tile left at its default: whole images, with a note
    assert res.exit_code == 0 and "images run whole (--tile 0)" in res.output, res.output
    res = _upscale(path, photos, tmp_path / "overlap", "--tile-overlap", "300")  # no tiles: the overlap is moot
    assert res.exit_code == 0 and "images run whole (--tile 0)" in res.output, res.output
    for name in ("photo_x4.png", "grey16_x4.png"):
        assert _levels(tmp_path / "onnx" / name, tmp_path / "default" / name) == 0, name
    res = _upscale(path, photos, tmp_path / "off", "--tile", "0", "--detail-cap", "off")  # was run capped, unsaid
    assert res.exit_code == 1 and "holds a detail cap fixed at export, so --detail-cap off cannot apply" in res.output
    assert not (tmp_path / "off").exists()


def _edited_metadata(src: Path, dest: Path, **changes: str) -> Path:
    import onnx

    m = onnx.load(str(src))
    for entry in m.metadata_props:
        if entry.key.removeprefix("lway_rt.") in changes:
            entry.value = changes[entry.key.removeprefix("lway_rt.")]
    onnx.save(m, str(dest))
    return dest


def test_an_onnx_file_moved_from_its_manifest_says_what_it_is(capped_weights, exported, photos, tmp_path):
    """The exported file carries its scale, size rules, weights and detail cap in its metadata. Moved away from its
    manifest, a capped file was probed like a foreign one and cut into tiles, each capped alone; now it runs whole,
    as with its manifest. An encoder or a fixed-size file moved alone is named as such."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(exported), load_external_data=False).metadata_props}
    manifest = json.loads(exported.with_suffix(".json").read_text())
    assert manifest["cache_key_fields"]["metadata"] == 2  # files from before the metadata (or its last change) are not hits
    # lway_rt's release is in the key, its commit not: an edit of any file, or a pull, made every export again (57F-1)
    assert set(manifest["cache_key_fields"]["versions"]) == {"lway_rt", "torch", "onnx", "onnxscript"}
    assert meta["lway_rt.what"] == "sr" and meta["lway_rt.scale"] == "4" and meta["lway_rt.shape"] == "dynamic"
    assert meta["lway_rt.weights_sha256"] == manifest["source"]["weights_sha256"] and meta["lway_rt.precision"] == "fp32"
    # the output is what the network gives, not clipped: said so, where '[0, 1]' let a caller quantise it unclipped (57B-2)
    assert meta["lway_rt.output"] == "float32 NCHW, RGB, x4: about [0, 1] and not clipped (clip to [0, 1] before " \
        "quantising)", meta
    capped = _export(str(capped_weights), tmp_path / "exp")
    said = {p.key: p.value for p in onnx.load(str(capped), load_external_data=False).metadata_props}["lway_rt.output"]
    assert said == "float32 NCHW, RGB in [0, 1] (clipped, as the cap's blend is), x4", said  # (a capped graph clips: 57J-3)
    moved = tmp_path / "moved" / "capped.onnx"
    moved.parent.mkdir()
    shutil.copy(capped, moved)
    res = _upscale(moved, photos, tmp_path / "tiled", "--tile", "128")
    assert res.exit_code == 1 and "add --tile 0" in res.output, res.output
    res = _upscale(moved, photos, tmp_path / "moved_out")  # the default tile: whole images, as with the manifest
    assert res.exit_code == 0 and "images run whole (--tile 0)" in res.output, res.output
    assert _upscale(capped, photos, tmp_path / "with_manifest", "--tile", "0").exit_code == 0
    assert _levels(tmp_path / "with_manifest" / "photo_x4.png", tmp_path / "moved_out" / "photo_x4.png") == 0
    res = CliRunner().invoke(main, ["export", "--what", "encoder", "--out", str(tmp_path / "enc")])
    assert res.exit_code == 0, res.output
    (encoder,) = (tmp_path / "enc").glob("*.encoder.fp32.*.onnx")
    # the encoder reads the LR upsampled to the SR network's size, as lway_rt feeds it, not the LR (57B-9)
    said = {p.key: p.value for p in onnx.load(str(encoder), load_external_data=False).metadata_props}["lway_rt.input"]
    assert said.startswith("float32 NCHW, RGB in [0, 1]: the LR image upsampled by the SR network's scale (bicubic"), said
    for model, needle in (
        (shutil.copy(encoder, tmp_path / "moved" / "enc.onnx"), "holds stage 1's encoder, not an SR network"),
        (_edited_metadata(exported, tmp_path / "moved" / "x2.onnx", scale="2"), "says it upscales x2 but makes x4"),
        (_edited_metadata(exported, tmp_path / "moved" / "m0.onnx", size_multiple="0"),  # was a ZeroDivisionError
         "gives size_multiple 0 and min_size 1 (each must be 1 or more)"),
        (_edited_metadata(exported, tmp_path / "moved" / "static.onnx", shape="static 32x32"),
         "was exported for fixed 32x32 tiles: export it without --static"),
    ):
        res = _upscale(model, photos, tmp_path / "out")
        errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
        assert res.exit_code == 1 and len(errors) == 1 and needle in errors[0], (model, res.output)
        with pytest.raises(ModelError, match=re.escape(needle)):  # a model that does not load, as the API's docs say
            load_onnx_model(model)  # (the not-SR and fixed-shape refusals had stayed InputErrors: 48E E4's rest)


def test_other_commands_name_upscale_for_an_onnx_file(exported, photos, tmp_path):
    for args in (["export", "-m", str(exported), "--out", str(tmp_path)],
                 ["adapt", str(photos), "-m", str(exported), "-o", str(tmp_path / "a")]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and "is an exported ONNX file, which 'lwayrt upscale -m' and 'lwayrt serve-bench -m' run" in res.output, res.output


def test_an_onnx_file_without_onnx_runtime_names_the_extra_only(exported, photos, tmp_path, monkeypatch):
    """Without ONNX Runtime the line advised "use the torch backend", which upscale of an .onnx file (and export's
    parity gate) has none of (58F-2)."""
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = _upscale(exported, photos, tmp_path / "a", "--tile", "0")
    text = " ".join(res.output.split())
    assert res.exit_code != 0 and "needs the 'onnxruntime' package: install the 'onnx' extra (pip install " \
        "'lway_rt[onnx]')" in text and "torch backend" not in text, text
