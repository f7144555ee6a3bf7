"""``lwayrt export`` end to end: real pretrained models, real ONNX files, ONNX Runtime and Polygraphy.

The Done-when of the export work: ``realesr-animevideov3``, ``realsr-df2k-x4`` and an adapted
model export to fp32 and fp16 ONNX that pass the parity gate with dynamic H/W; Polygraphy's
ONNX Runtime runner accepts the files; a second export is a cache hit and a changed weight a miss.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lway_rt.cli import main

POLYGRAPHY = Path(sys.executable).with_name("polygraphy")


def _run(*args: str):
    return CliRunner().invoke(main, ["export", *args], catch_exceptions=False)


def _exported(out: str, what: str = "sr") -> dict[str, Path]:
    """precision -> ONNX path, from the command's stdout lines '<what> <precision>: <status> <path>'."""
    found = {}
    for line in out.splitlines():
        if line.startswith(f"{what} ") and (": exported " in line or ": cache hit " in line):
            head, path = line.rsplit(" ", 1)
            found[head.split()[1].rstrip(":")] = Path(path)
    return found


def _manifest(onnx_path: Path) -> dict:
    return json.loads(onnx_path.with_suffix(".json").read_text())


def _check_dynamic(path: Path, scale: int):
    """Two different, non-square sizes through the same file: the H/W really are symbolic."""
    from lway_rt.runtime.ort import create_session, run_session

    s = create_session(path, threads=1)
    for h, w in ((12, 20), (28, 16)):
        y = run_session(s, np.random.default_rng(h).random((1, 3, h, w), dtype=np.float32))
        assert y.shape == (1, 3, h * scale, w * scale)
        assert np.isfinite(y).all()


def _polygraphy_accepts(path: Path):
    res = subprocess.run([str(POLYGRAPHY), "run", "--onnxrt", str(path), "--input-shapes", "input:[1,3,16,24]"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "PASSED" in res.stdout + res.stderr, res.stdout[-2000:] + res.stderr[-2000:]


@pytest.fixture(scope="module")
def compact_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    res = _run("--model", "realesr-animevideov3", "--out", str(out), "--precision", "both")
    assert res.exit_code == 0, res.output
    return out, _exported(res.stdout)


def test_json_lists_the_files_for_scripts(compact_export):
    """The file names hold their cache key, and the line that names one said "exported" on a miss and "cache hit" on
    a hit: a script had to scrape the last word of it. --json prints the files as one JSON list on stdout."""
    out, files = compact_export
    res = _run("--model", "realesr-animevideov3", "--out", str(out), "--precision", "both", "--json")
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)
    assert {(m["what"], m["precision"]) for m in made} == {("sr", "fp32"), ("sr", "fp16")}, made
    assert all(m["cache_hit"] and m["engine"] is None for m in made)
    assert {m["precision"]: Path(m["onnx"]) for m in made} == files


def test_compact_model_exports_fp32_and_fp16(compact_export):
    out, files = compact_export
    assert set(files) == {"fp32", "fp16"}
    for precision, path in files.items():
        assert path.is_file() and path.parent == out
        m = _manifest(path)
        assert m["ready"] is True and m["parity"]["passed"] is True
        assert m["onnx"]["precision"] == precision and m["onnx"]["dynamic"] is True and m["onnx"]["io_dtype"] == "float32"
        assert m["source"]["model"] == "realesr-animevideov3" and len(m["source"]["weights_sha256"]) == 64
        assert m["versions"]["torch"] and m["versions"]["onnxruntime"]
        assert m["onnx"]["opset"] == 18
        cases = {c["name"].split()[0]: c for c in m["parity"]["cases"]}
        assert set(cases) == {"astronaut", "random"}  # a real photo and noise
        if precision == "fp32":
            assert all(c["value"] <= 1e-4 for c in cases.values())
        else:
            assert all(c["value"] >= 45.0 for c in cases.values())
        assert m["onnx"]["input"]["shape"][1] == 3 and isinstance(m["onnx"]["input"]["shape"][2], str)
        _check_dynamic(path, 4)
    assert not list(out.glob(".*.tmp"))  # no temporary leftovers


def test_a_read_only_out_folder_serves_its_cache_hits(compact_export, unwritable):
    """Finished exports on a read-only mount (a deployment image): the same export answers from the cache (it was
    refused before looking); one the folder lacks is refused, in one line, before it starts."""
    out, files = compact_export
    undo = unwritable(out)
    try:
        res = _run("--model", "realesr-animevideov3", "--out", str(out), "--precision", "both")
        assert res.exit_code == 0 and res.stdout.count("cache hit") == 2, res.output
        assert _exported(res.stdout) == files
        res = _run("--model", "realesr-animevideov3", "--out", str(out), "--opset", "17")
        assert res.exit_code == 1 and "exporting" not in res.output, res.output
        assert re.fullmatch(r"error: realesr-animevideov3\S*\.onnx is not in the --out folder's cache and must be made, "
                            r"but cannot write to \S+: .+; choose another --out folder\n", res.output), res.output
        res = _run("--model", "realesr-animevideov3", "--out", str(out), "--force")  # (in the cache: it said not,
        assert res.exit_code == 1 and "exporting" not in res.output, res.output  # review 52C C3)
        assert re.fullmatch(r"error: --force makes realesr-animevideov3\S*\.onnx again, but cannot write to \S+: .+; "
                            r"choose another --out folder; or drop --force to use the folder's cache\n", res.output), \
            res.output
        res = _run("--model", "realesr-animevideov3", "--out", str(out), "--force", "--opset", "17")  # not cached:
        assert "is not in the --out folder's cache and must be made" in res.output, res.output  # no cache to use
    finally:
        undo()


def test_polygraphy_accepts_the_exports(compact_export):
    for path in compact_export[1].values():
        _polygraphy_accepts(path)


def test_quiet_prints_only_the_files(compact_export):
    """The README says -q silences progress for scripts; export had no -q ("No such option"), and its progress (the
    cache look-up, the export and gate steps, the upscale hint) always went to stderr."""
    out, files = compact_export
    res = _run("--model", "realesr-animevideov3", "--out", str(out), "--precision", "both")
    assert "cache hit: " in res.stderr and "run it with ONNX Runtime" in res.stderr, res.stderr
    res = _run("--model", "realesr-animevideov3", "--out", str(out), "--precision", "both", "-q")
    assert res.exit_code == 0 and res.stderr == "", res.stderr
    assert _exported(res.stdout) == files


def test_second_export_is_a_cache_hit(compact_export):
    out, files = compact_export
    before = {p: p.stat().st_mtime_ns for p in files.values()}
    res = _run("--model", "realesr-animevideov3", "--out", str(out), "--precision", "both")
    assert res.exit_code == 0, res.output
    assert res.stdout.count("cache hit") == 2 and "exported" not in res.stdout
    assert _exported(res.stdout) == files
    assert {p: p.stat().st_mtime_ns for p in files.values()} == before


def test_links_in_out_are_replaced_never_the_files_they_name(compact_export, tmp_path):
    """An --out holding links of an export's names (to an earlier export kept elsewhere, or to a user's files): the
    ONNX file replaced its link, but the manifest was written through, changing a file outside --out (review 54E E1).
    Both replace their links now."""
    import hashlib
    import shutil

    _, files = compact_export
    onnx = files["fp32"]
    kept, out = tmp_path / "kept", tmp_path / "out"
    kept.mkdir()
    out.mkdir()
    for p in (onnx, onnx.with_suffix(".json")):
        shutil.copy(p, kept / p.name)
        (out / p.name).symlink_to(kept / p.name)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in kept.iterdir()}
    res = _run("--model", "realesr-animevideov3", "--out", str(out), "--force")
    assert res.exit_code == 0, res.output
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in kept.iterdir()} == digests
    written = out / onnx.name
    assert not written.is_symlink() and not written.with_suffix(".json").is_symlink()
    assert _manifest(written)["ready"] is True


@pytest.fixture(scope="module")
def adapted_dir(tmp_path_factory):
    """What ``lwayrt adapt`` writes: the base model's weights, changed, in a folder with one .safetensors."""
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import save_safetensors, state_dict_sha256

    desc = load_model("realesr-animevideov3")
    torch.manual_seed(0)
    state = {k: v + 1e-3 * torch.randn_like(v) if k.startswith("body.") and v.dim() == 4 else v.clone()
             for k, v in desc.model.state_dict().items()}
    folder = tmp_path_factory.mktemp("adapt_out") / "astronaut-run"
    folder.mkdir()
    meta = {"format": "lway_rt.sr/1", "name": "realesr-animevideov3-lway", "arch": desc.arch, "scale": "4",
            "hparams": json.dumps(desc.spec.hparams), "base_model": "realesr-animevideov3",
            "adapted_sha256": state_dict_sha256(state)}
    save_safetensors(folder / "adapted.safetensors", state, meta)
    return folder


def test_changed_weights_are_a_cache_miss_and_adapt_output_exports(compact_export, adapted_dir):
    out, files = compact_export
    res = _run("--model", str(adapted_dir), "--out", str(out), "--precision", "both")
    assert res.exit_code == 0, res.output
    assert "cache hit" not in res.stdout
    new = _exported(res.stdout)
    assert set(new) == {"fp32", "fp16"}
    for precision, path in new.items():
        assert path != files[precision] and path.name.startswith("astronaut-run.sr.")
        m = _manifest(path)
        assert m["ready"] and m["parity"]["passed"]
        assert m["source"]["weights_sha256"] != _manifest(files[precision])["source"]["weights_sha256"]
        _check_dynamic(path, 4)
    # Same folder again: hits.
    again = _run("--model", str(adapted_dir), "--out", str(out), "--precision", "both")
    assert again.stdout.count("cache hit") == 2
    # the weights file inside it (another label, the same weights and settings): hits the folder's files
    before = sorted(out.iterdir())
    by_file = _run("--model", str(adapted_dir / "adapted.safetensors"), "--out", str(out), "--precision", "both")
    assert by_file.exit_code == 0 and by_file.stdout.count("cache hit") == 2, by_file.output
    assert _exported(by_file.stdout) == new and sorted(out.iterdir()) == before
    assert "exported as astronaut-run: the same weights and settings" in by_file.output
    # a cached file changed since its export is said to be so, and not used
    new["fp32"].write_bytes(new["fp32"].read_bytes()[:-8])
    again = _run("--model", str(adapted_dir / "adapted.safetensors"), "--out", str(out))
    assert again.exit_code == 0 and f"{new['fp32'].name} is not the file its manifest describes" in again.output
    assert _exported(again.stdout)["fp32"] != new["fp32"] and "cache hit" not in again.stdout


def test_failed_gate_exits_nonzero_and_leaves_nothing_ready(tmp_path):
    out = tmp_path / "engines"
    res = CliRunner().invoke(main, ["export", "--model", "realesr-animevideov3", "--out", str(out),
                                    "--max-abs-diff", "1e-12"])
    assert res.exit_code == 1
    assert "parity FAILED" in res.output and "> 1e-12" in res.output and "nothing was marked ready" in res.output
    assert not list(out.glob("*.onnx")) and not list(out.glob(".*tmp"))
    (manifest,) = out.glob("*.json")
    m = json.loads(manifest.read_text())
    assert m["ready"] is False and m["parity"]["passed"] is False
    assert all(c["value"] > 1e-12 for c in m["parity"]["cases"])  # says by how much
    # A later export with the normal gate is not fooled by the failed manifest.
    ok = _run("--model", "realesr-animevideov3", "--out", str(out))
    assert ok.exit_code == 0 and "exported" in ok.stdout and "cache hit" not in ok.stdout


def test_a_stricter_gate_that_fails_leaves_the_earlier_export_alone(compact_export, tmp_path):
    """The gate is not in the cache key: a stricter run rebuilds under the same name, and when it fails, the file
    made earlier (which passed its own gate) and its manifest stay as they were; this run's numbers go beside."""
    import shutil

    src, files = compact_export
    out = tmp_path / "engines"
    out.mkdir()
    for f in (files["fp32"], files["fp32"].with_suffix(".json")):
        shutil.copy(f, out / f.name)
    kept = out / files["fp32"].name
    before = (kept.read_bytes(), kept.with_suffix(".json").read_bytes())
    res = CliRunner().invoke(main, ["export", "--model", "realesr-animevideov3", "--out", str(out), "--max-abs-diff", "1e-12"])
    assert res.exit_code == 1 and "made earlier under a looser gate, is left as it was" in res.output, res.output
    assert (kept.read_bytes(), kept.with_suffix(".json").read_bytes()) == before
    failed = json.loads((out / f"{kept.stem}.failed.json").read_text())
    assert failed["ready"] is False and all(c["value"] > 1e-12 for c in failed["parity"]["cases"])
    assert not list(out.glob(".*tmp"))
    # a forced rebuild under the normal gate replaces the file: the failed numbers, about the old one, go with it
    res = CliRunner().invoke(main, ["export", "--model", "realesr-animevideov3", "--out", str(out), "--force",
                                    "--precision", "fp32"])
    assert res.exit_code == 0 and not (out / f"{kept.stem}.failed.json").exists(), res.output


def test_ctrl_c_inside_the_exporter_is_an_interrupt_not_an_export_failure(tmp_path, monkeypatch):
    """torch.onnx.export turns a Ctrl-C into its own error; it must still read as an interrupt (exit 130), not as
    "torch could not export" the model."""
    import torch

    def export(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Failed to export the model with torch.export. Next steps:") from exc

    monkeypatch.setattr(torch.onnx, "export", export)
    res = CliRunner().invoke(main, ["export", "--model", "realesr-animevideov3", "--out", str(tmp_path / "e")])
    assert res.exit_code == 130 and "interrupted" in res.output and "could not export" not in res.output, res.output
    assert "none is left half-written; run the same command again" in res.output, res.output


def test_unwritable_out_folder_is_one_line_before_any_export(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    res = CliRunner().invoke(main, ["export", "--model", "realesr-animevideov3", "--out", str(blocker / "sub")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.startswith("error: cannot create output folder ") and "choose another --out folder" in res.output, res.output


def test_manifest_names_the_weights_by_absolute_path(adapted_dir, tmp_path, monkeypatch):
    """serve-bench finds the weights again from a manifest written in another working folder."""
    monkeypatch.chdir(adapted_dir.parent)
    res = _run("--model", adapted_dir.name, "--out", str(tmp_path / "e"))
    assert res.exit_code == 0, res.output
    (path,) = _exported(res.stdout).values()
    recorded = Path(_manifest(path)["source"]["path"])
    assert recorded.is_absolute() and recorded == (adapted_dir / "adapted.safetensors").resolve()


def test_engine_without_tensorrt_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    res = CliRunner().invoke(main, ["export", "--model", "realesr-animevideov3", "--out", str(tmp_path),
                                    "--engine", "tensorrt"])
    assert res.exit_code == 1
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "'trt' extra" in line and "--engine none" in line and "ONNX Runtime" in line
    assert not list(tmp_path.iterdir())  # failed before exporting anything
    res = CliRunner().invoke(main, ["export", "--model", "realesr-animevideov3", "--out", str(tmp_path),
                                    "--profile", "desktop-fp16"])
    assert res.exit_code == 1 and "'trt' extra" in res.output


def test_bad_cli_input_gives_one_line_errors(tmp_path):
    for args, match in (
        (["--model", "no-such-model"], "unknown model"),
        (["--model", "realesr-animevideov3", "--profile", "no-such-profile"], "unknown export profile"),
        (["--model", "realesr-animevideov3", "--static", "64by64"], "not HxW"),
        (["--model", "realesr-animevideov3", "--refit", str(tmp_path / "none.engine")], "does not exist; build a refittable one with 'lwayrt export --engine tensorrt --refittable'"),
        (["--model", "realesr-animevideov3", "--keep-fp32", "conv_last"], "in an fp16 export: add --precision fp16"),
        # with no --profile the built-in shapes are not export/cpu.toml's, so they are not named after it
        (["--model", "realesr-animevideov3", "--refittable"], "this export builds none (profile 'default' has engine = "
                                                               "'none'): add --engine tensorrt"),  # it was ignored
        (["--model", "realesr-animevideov3", "--min-psnr", "300"], "--min-psnr must be at most 200 dB"),
    ):
        res = CliRunner().invoke(main, ["export", "--out", str(tmp_path), *args])
        assert res.exit_code == 1, (args, res.output)
        assert res.output.startswith("error: ") and match in res.output, (args, res.output)
        assert "Traceback" not in res.output
    for args in (["--precision", "fp32"], ["--what", "both"], ["-o", str(tmp_path / "x.onnx")]):
        # a command line without its model: a usage error (2), as in serve-bench and adapt, not a failed export (56C-2)
        res = CliRunner().invoke(main, ["export", *args])
        assert res.exit_code == 2 and res.output.startswith("error: Missing option '--model' / '-m'"), (args, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output  # (not the --out note first)


def test_options_the_chosen_export_does_not_use_are_refused(tmp_path):
    """--what sr exported with a --stage1 that does not exist, --what encoder with --model, --detail-cap or
    --base-model, each ignored without a word."""
    for args, match in (
        (["--model", "realesr-animevideov3", "--stage1", str(tmp_path / "none.safetensors")],
         "--stage1 is for --what encoder or both"),
        (["--what", "sr", "--model", "realesr-animevideov3", "--stage1", str(tmp_path / "none.safetensors")],
         "--stage1 is for --what encoder or both"),
        (["--what", "encoder", "--model", "no-such-model", "--detail-cap", "1.5"],
         "--model and --detail-cap are for the SR network, and --what encoder exports the stage-1 encoder alone"),
        (["--what", "encoder", "--base-model", "realesr-animevideov3"], "--base-model is for the SR network"),
        (["--what", "encoder", "--min-psnr", "30"], "--min-psnr is for the SR network"),  # was ignored without a word
        (["--what", "encoder", "--max-abs-diff", "1e-3"], "embeddings are gated by their relative difference"),
    ):
        res = CliRunner().invoke(main, ["export", "--out", str(tmp_path / "out"), *args])
        assert res.exit_code == 1 and res.output.startswith("error: ") and match in res.output, (args, res.output)
        assert not (tmp_path / "out").exists()


def test_refit_refuses_the_settings_it_takes_from_the_manifest_before_needing_tensorrt(tmp_path, monkeypatch):
    """--refit read neither --what nor --precision (nor the other export settings): `--refit E --what encoder
    --precision fp16` refitted the SR network at the manifest's precision."""
    from lway_rt.export import pipeline

    def refit(*args, **kwargs):
        raise AssertionError("refused options must not reach the refit")

    monkeypatch.setattr(pipeline, "refit_engine", refit)
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"")
    base = ["export", "--refit", str(engine), "--model", "realesr-animevideov3"]
    for args, named in (
        (["--what", "encoder", "--precision", "fp16"], "--what and --precision"),
        (["--engine", "tensorrt", "--profile", "cpu", "--opset", "17"], "--engine, --profile and --opset"),
        (["--static", "64x64", "--keep-fp32", "conv_last", "--refittable", "--force"],
         "--static, --keep-fp32, --refittable and --force"),
        (["--stage1", str(tmp_path / "s1.safetensors")], "--stage1"),
    ):
        res = CliRunner().invoke(main, [*base, *args])
        assert res.exit_code == 1, (args, res.output)
        assert res.output == f"error: --refit takes its settings from the engine's manifest: leave out {named} (or " \
                             "build a new engine without --refit)\n", (args, res.output)


def test_static_tiles(tmp_path):
    res = _run("--model", "realesr-animevideov3", "--out", str(tmp_path), "--static", "24x32", "--static", "16x16",
               "--static", "24x32")
    assert res.exit_code == 0, res.output
    assert "cache hit" not in res.output  # the repeated size is exported once (it was exported, then a 'cache hit')
    paths = sorted(tmp_path.glob("*.onnx"))
    assert len(paths) == 2 and {p.name.split(".")[3] for p in paths} == {"24x32", "16x16"}
    import onnx

    for p in paths:
        dims = [d.dim_value for d in onnx.load(str(p)).graph.input[0].type.tensor_type.shape.dim]
        assert dims[2:] == [int(v) for v in p.name.split(".")[3].split("x")]


def _fake_built_engine(onnx_path: Path, engine_path: Path, *, refit: bool = True):
    """The files a refittable TensorRT build leaves (the manifest as ``pipeline`` writes it), built elsewhere.

    The plan bytes are never read before the weight check, which is what these tests exercise.
    """
    from lway_rt.export.manifest import write_manifest
    from lway_rt.export.profile import ExportProfile

    m = _manifest(onnx_path)
    profile = ExportProfile(precision=m["onnx"]["precision"], engine="tensorrt").replace(flags=("refit",) if refit else ())
    engine_path.write_bytes(b"serialized plan from another machine")
    write_manifest(engine_path.with_suffix(".json"), {
        "ready": True, "what": "sr", "label": m["label"], "cache_key": "0" * 64, "cache_key_fields": {},
        "artifact": {"type": "tensorrt-engine", "file": engine_path.name, "sha256": None},
        "onnx_initializers": m["onnx"]["initializers"],
        "onnx_settings": {k: m["onnx"][k] for k in ("opset", "precision", "dynamic", "tile", "keep_fp32_ops",
                                                    "keep_fp32_nodes")},
        "tensorrt": profile.as_dict()["tensorrt"], "profile": profile.as_dict(),
    })


def test_refit_checks_weight_names_before_needing_tensorrt(compact_export, adapted_dir, tmp_path, monkeypatch):
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import save_safetensors

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = tmp_path / "compact.engine"
    _fake_built_engine(compact_export[1]["fp16"], engine)

    # Same architecture, adapted weights: names and shapes match, then TensorRT is needed.
    res = CliRunner().invoke(main, ["export", "--refit", str(engine), "--model", str(adapted_dir)])
    assert res.exit_code == 1 and "weights match the engine" in res.output and "'trt' extra" in res.output
    # said of a refit, not of a build, whose way out (--engine none) --refit refuses (57B-1)
    assert "refitting TensorRT engines needs" in res.output and "--engine none" not in res.output, res.output

    # Another width: refused with the offending weights named, before any TensorRT call.
    torch.manual_seed(0)
    other = tmp_path / "narrow" / "adapted.safetensors"
    save_safetensors(other, SRVGGNetCompact(num_feat=32, num_conv=16).state_dict(), {})
    res = CliRunner().invoke(main, ["export", "--refit", str(engine), "--model", str(other)])
    assert res.exit_code == 1 and "cannot be refitted" in res.output and "body.0.weight" in res.output
    assert "[64, 3, 3, 3]" in res.output and "[32, 3, 3, 3]" in res.output

    # Weights with a recorded detail cap export as two networks: refused for an engine of one, with the way out
    capped = tmp_path / "capped.safetensors"
    save_safetensors(capped, load_model(str(adapted_dir)).model.state_dict(),
                     {"base_model": "realesr-animevideov3", "detail_cap": "1.2"})
    res = CliRunner().invoke(main, ["export", "--refit", str(engine), "--model", str(capped)])
    assert res.exit_code == 1 and "cannot be refitted" in res.output and "pass --detail-cap off" in res.output
    res = CliRunner().invoke(main, ["export", "--refit", str(engine), "--model", str(capped), "--detail-cap", "off"])
    assert res.exit_code == 1 and "weights match the engine" in res.output and "'trt' extra" in res.output

    # --out is the refitted engine's folder: one that cannot be made is refused before the export, not ignored
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    res = CliRunner().invoke(main, ["export", "--refit", str(engine), "--model", str(adapted_dir), "--out",
                                    str(blocker / "sub")])
    assert res.exit_code == 1 and "cannot create output folder" in res.output and "choose another --out" in res.output
    assert "weights match" not in res.output, res.output

    # An engine built without the refit flag is refused up front.
    plain = tmp_path / "plain.engine"
    _fake_built_engine(compact_export[1]["fp16"], plain, refit=False)
    res = CliRunner().invoke(main, ["export", "--refit", str(plain), "--model", str(adapted_dir)])
    assert res.exit_code == 1 and "without the refit flag" in res.output and "--refittable" in res.output, res.output


def test_refit_writes_where_out_says_and_beside_the_engine_without_it(tmp_path, monkeypatch):
    import lway_rt.export.pipeline as pipeline

    seen = []

    def refit(engine_path, ex, *, out_dir=None, gate=None, log=None):
        seen.append(out_dir)
        return Path(engine_path)

    monkeypatch.setattr(pipeline, "refit_engine", refit)
    engine = tmp_path / "x.engine"
    for extra in ([], ["--out", str(tmp_path / "refitted")]):
        res = CliRunner().invoke(main, ["export", "--refit", str(engine), "--model", "realesr-animevideov3", *extra])
        assert res.exit_code == 0, res.output
    assert seen == [None, tmp_path / "refitted"]  # None: the original engine's folder, not ./engines


def test_parity_says_when_shapes_differ_and_manifests_are_strict_json(tmp_path):
    """A shape mismatch read 'max abs diff inf > 0'; identical fp16 outputs and failed cases wrote Infinity, which
    is not JSON; readers take null (and an older manifest's infinite PSNR) without a TypeError."""
    import math

    from lway_rt.export.manifest import read_manifest, write_manifest
    from lway_rt.export.parity import ParityGate, ParityReport, compare
    from lway_rt.export.pipeline import _recorded_parity_passes

    ref = np.random.default_rng(0).random((1, 3, 16, 16))
    case = compare("photo", ref, ref[..., :8, :8], precision="fp32", kind="image")
    assert not case.passed and case.describe() == "photo: output shape 1x3x8x8 differs from torch's 1x3x16x16"
    same = compare("noise", ref, ref, precision="fp16", kind="image")
    assert same.passed and same.value == 200.0
    nan = compare("nan", ref, ref * np.nan, precision="fp16", kind="image")
    path = write_manifest(tmp_path / "m.json", {"parity": ParityReport("onnxruntime", "fp16", "image",
                                                                       (case, same, nan)).as_dict()})

    def refuse(token):
        raise AssertionError(f"{token} is not JSON")

    cases = json.loads(path.read_text(), parse_constant=refuse)["parity"]["cases"]
    assert [c["value"] for c in cases] == [None, 200.0, None] and cases[0]["expected_shape"] == [1, 3, 16, 16]
    assert read_manifest(path)["parity"]["cases"][1]["value"] == 200.0
    gate = ParityGate()
    assert _recorded_parity_passes({"cases": [cases[1]]}, gate, "fp16", "image")
    assert not _recorded_parity_passes({"cases": cases}, gate, "fp16", "image")
    older = {"cases": [{**cases[1], "value": None}]}  # an infinite PSNR, as an older manifest held it, read back
    assert _recorded_parity_passes(older, gate, "fp16", "image")
    assert not _recorded_parity_passes({"cases": [{**cases[0], "finite": True}]}, gate, "fp32", "image")
    assert math.isinf(case.value)  # in memory the failed case still reads as infinitely off


# ---------------------------------------------------------------- the stage-1 encoder

@pytest.fixture(scope="module")
def stage1_file(tmp_path_factory):
    from lway_rt.degae import Stage1, save_stage1

    s1 = Stage1.fresh(embed_dim=64, width=16, blocks=2, head_widths=(32, 48, 64)).freeze()
    path = tmp_path_factory.mktemp("stage1") / "stage1-small.safetensors"
    save_stage1(path, s1)
    return path


def test_encoder_export_matches_torch_embeddings(stage1_file, tmp_path):
    from lway_rt.degae import load_stage1
    from lway_rt.runtime.ort import create_session, run_session

    res = _run("--what", "encoder", "--stage1", str(stage1_file), "--out", str(tmp_path), "--precision", "both")
    assert res.exit_code == 0, res.output
    files = _exported(res.stdout, "encoder")
    assert set(files) == {"fp32", "fp16"}
    s1 = load_stage1(stage1_file)
    x = np.random.default_rng(0).random((2, 3, 40, 56), dtype=np.float32)
    with torch.no_grad():
        ref = s1.encoder(torch.from_numpy(x)).numpy()
    for precision, path in files.items():
        m = _manifest(path)
        assert m["ready"] and m["what"] == "encoder" and m["parity"]["kind"] == "embedding"
        out = run_session(create_session(path, threads=1), x)
        rel = np.abs(out - ref).max() / np.abs(ref).max()
        assert out.shape == (2, 64) and rel <= (1e-4 if precision == "fp32" else 1e-2), (precision, rel)
    again = _run("--what", "encoder", "--stage1", str(stage1_file), "--out", str(tmp_path), "--precision", "both")
    assert again.stdout.count("cache hit") == 2
    assert "note:" not in res.output + again.output


def test_an_unfinished_stage1_checkpoint_is_said_as_its_encoder_is_exported(tmp_path):
    """adapt, eval-degae and demo say a stage-1 checkpoint was written part-way through its training; export said
    nothing and marked its encoder ready (review 49K K2)."""
    from lway_rt.degae import Stage1, save_stage1

    path = tmp_path / "stopped.safetensors"
    save_stage1(path, Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16)).freeze(),
                {"iterations": 24, "recipe": {"iters": 40}})
    res = _run("--what", "encoder", "--stage1", str(path), "--out", str(tmp_path / "e"), "--precision", "fp32")
    assert res.exit_code == 0, res.output
    assert f"note: the stage-1 checkpoint {path} was written at iteration 24 of 40: a run that had not finished" \
        in res.stderr, res.output


def test_encoder_backends_agree(stage1_file, tmp_path, monkeypatch):
    from lway_rt.degae import load_stage1
    from lway_rt.errors import MissingDependencyError
    from lway_rt.export.encoder_backend import make_encoder_fn

    s1 = load_stage1(stage1_file)
    ref_fn = make_encoder_fn(s1, "torch")
    ort_fn = make_encoder_fn(s1, "onnxruntime", cache_dir=tmp_path, threads=1)
    for shape in ((1, 3, 22, 22), (3, 3, 64, 48)):  # the minimum side, and a batch of another size
        x = torch.rand(shape)
        ref, out = ref_fn(x), ort_fn(x)
        assert isinstance(out, torch.Tensor) and out.shape == ref.shape
        assert ((out - ref).abs().max() / ref.abs().max()).item() <= 1e-4
    assert isinstance(ort_fn(x.numpy()), np.ndarray)
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    make_encoder_fn(s1, "onnxruntime", cache_dir=tmp_path)  # reuses the cached export
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match="onnxruntime or torch encoder backend"):
        make_encoder_fn(s1, "tensorrt", cache_dir=tmp_path)


# ---------------------------------------------------------------- the big one, once

@pytest.mark.slow
def test_realsr_df2k_exports_fp32_and_fp16(tmp_path_factory):
    out = tmp_path_factory.mktemp("engines_realsr")
    res = _run("--model", "realsr-df2k-x4", "--out", str(out), "--precision", "both")
    assert res.exit_code == 0, res.output
    files = _exported(res.stdout)
    assert set(files) == {"fp32", "fp16"}
    for precision, path in files.items():
        m = _manifest(path)
        assert m["ready"] and m["parity"]["passed"] and m["source"]["arch"] == "RRDBNet"
        _check_dynamic(path, 4)
        _polygraphy_accepts(path)
    fp16 = _manifest(files["fp16"])["onnx"]["fp16"]
    assert fp16["fp32_initializers"] <= 2 and fp16["fp16_initializers"] > 300
    shutil.rmtree(out, ignore_errors=True)


def test_capped_adaptation_exports_with_its_cap(capped_weights, tmp_path):
    """By default the cap the weights record goes into the graph: ONNX Runtime gives the image upscale writes
    (wavelet.detail_cap of the unadapted and the adapted output, clamped to [0, 1]), in fp32 and fp16 (whose blend stays fp32);
    --detail-cap off exports the adapted network alone, under another cache key, and says so."""
    from lway_rt.adapt.wavelet import detail_cap
    from lway_rt.io.images import bundled_photo
    from lway_rt.io.store import load_model
    from lway_rt.runtime.ort import create_session, run_session

    res = _run("--model", str(capped_weights), "--out", str(tmp_path / "capped"), "--precision", "both")
    assert res.exit_code == 0, res.output
    assert "detail cap 1: the graph runs the unadapted model beside the adapted one" in res.output
    assert "run it with ONNX Runtime: lwayrt upscale INPUT... -o OUT -m " in res.output and res.output.rstrip().endswith(" --tile 0")
    files = _exported(res.stdout)
    assert set(files) == {"fp32", "fp16"}
    x = torch.from_numpy(bundled_photo("chelsea")[40:200:4, 60:284:4].astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():  # a 40x56 crop: not square, not the parity gate's size
        base = load_model("realesr-animevideov3").model(x).clamp(0, 1)  # the images upscale caps are clamped
        adapted = load_model(str(capped_weights)).model(x).clamp(0, 1)
    want, s = detail_cap(base, adapted, 1.0, 4)
    assert float(s[0]) < 0.9  # the cap binds on this crop: the check below can tell capped from uncapped
    for precision, tol in (("fp32", 1e-5), ("fp16", 2e-3)):
        m = _manifest(files[precision])
        assert m["ready"] and m["source"]["detail_cap"]["cap"] == 1.0
        assert m["source"]["detail_cap"]["base_model"] == "realesr-animevideov3"
        y = run_session(create_session(files[precision], threads=1), x.numpy())
        assert np.abs(y - want.numpy()).max() <= tol, precision
        assert np.abs(y - adapted.numpy()).max() > 0.1
    assert "cap" in _manifest(files["fp16"])["profile"]["keep_fp32_nodes"]
    off = _run("--model", str(capped_weights), "--out", str(tmp_path / "capped"), "--detail-cap", " Off")  # (56C-4)
    assert off.exit_code == 0, off.output
    assert "adapted with --detail-cap 1; with --detail-cap off the exported network is the uncapped model" in off.output
    (plain,) = _exported(off.stdout).values()
    assert plain != files["fp32"] and "detail_cap" not in _manifest(plain)["source"]
    y = run_session(create_session(plain, threads=1), x.numpy())
    assert np.abs(y.clip(0, 1) - adapted.numpy()).max() <= 1e-4  # the network alone: unclamped, as exported
    # an RGBA picture: the graph caps whatever it is given, alpha too, and upscale's torch path does the same
    from PIL import Image

    rgba = np.dstack([(x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), np.full(x.shape[-2:], 200, np.uint8)])
    rgba[:12, :20, 3] = 0
    rgba[20:, 30:, 3] = (np.arange(rgba[20:, 30:].shape[1]) * 9).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    written = {}
    for name, model in (("torch", str(capped_weights)), ("onnx", str(files["fp32"]))):
        up = CliRunner().invoke(main, ["upscale", str(tmp_path / "cut.png"), "-m", model, "-o", str(tmp_path / name),
                                       "--tile", "0"])
        assert up.exit_code == 0, up.output
        written[name] = np.asarray(Image.open(tmp_path / name / "cut_x4.png")).astype(int)
    assert np.abs(written["torch"] - written["onnx"]).max() <= 1
    other = _run("--model", "realesr-animevideov3", "--out", str(tmp_path / "plain"))
    assert other.exit_code == 0 and "detail cap" not in other.output
    assert "lwayrt upscale INPUT... -o OUT -m " in other.output and "--tile 0" not in other.output


def test_capped_export_needs_the_base_model(capped_weights, tmp_path):
    """A cap needs the unadapted model: weights that do not name it, or a wrong --base-model, are refused in one line."""
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import save_safetensors

    adapted = load_model(str(capped_weights))
    nameless = tmp_path / "nameless.safetensors"
    save_safetensors(nameless, adapted.model.state_dict(), {"name": "nameless", "detail_cap": "1.2"})
    for args, match in (([str(nameless)], "these weights do not name one: add --base-model"),
                        ([str(capped_weights), "--base-model", "realsr-df2k-x4"], "is not the model these weights were adapted from"),
                        ([str(capped_weights), "--detail-cap", "0.5"], "must be auto, off or a number >= 1"),
                        (["realesr-animevideov3", "--detail-cap", "1.2"], "these weights are not lwayrt adapt's: drop")):
        res = CliRunner().invoke(main, ["export", "--out", str(tmp_path), "--model", *args])
        assert res.exit_code == 1 and res.output.startswith("error: ") and match in res.output, (args, res.output)
        assert "Traceback" not in res.output


def test_keep_fp32_pattern_that_matches_nothing_is_named(tmp_path):
    """A typo in --keep-fp32 kept nothing and said nothing; a pattern that matches is honoured and not named."""
    import onnx
    from onnx import TensorProto

    res = _run("--model", "realesr-animevideov3", "--out", str(tmp_path), "--precision", "fp16",
               "--keep-fp32", "body.1", "--keep-fp32", "bdy.*")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning: --keep-fp32")]
    assert len(warnings) == 1 and "'bdy.*'" in warnings[0] and "'body.1'" not in warnings[0], res.stderr
    assert "body" in warnings[0].split("names at the top of this graph:")[1]
    model = onnx.load(str(_exported(res.stdout)["fp16"]))
    kept = [i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and i.dims and len(i.dims) == 4]
    assert kept, "body.1's convolution weights should stay fp32"
    again = _run("--model", "realesr-animevideov3", "--out", str(tmp_path), "--precision", "fp16",
                 "--keep-fp32", "body.1", "--keep-fp32", "bdy.*")
    assert "cache hit" in again.stdout and "'bdy.*' matched no node" in again.stderr  # checked on a cache hit too


def test_keep_fp32_adds_to_the_profiles_nodes(tmp_path):
    """A profile's keep_fp32_nodes (kept in fp32 against an overflow) were dropped when --keep-fp32 named others."""
    import onnx
    from onnx import TensorProto

    profile = tmp_path / "mine.toml"
    profile.write_text('precision = "fp16"\nengine = "none"\n[fp16]\nkeep_fp32_nodes = ["body.1"]\n')
    res = _run("--model", "realesr-animevideov3", "--out", str(tmp_path / "out"), "--profile", str(profile),
               "--keep-fp32", "body.3")
    assert res.exit_code == 0, res.output
    path = _exported(res.stdout)["fp16"]
    assert _manifest(path)["profile"]["keep_fp32_nodes"] == ["body.1", "body.3"]
    kept = [list(i.dims) for i in onnx.load(str(path)).graph.initializer if i.data_type == TensorProto.FLOAT]
    assert kept.count([1, 64, 1, 1]) == 2, kept  # both PReLU slopes (the exporter renames initializers)


def test_the_upscale_hint_quotes_a_path_with_spaces(tmp_path):
    out = tmp_path / "my exports"
    res = _run("--model", "realesr-animevideov3", "--out", str(out), "--precision", "fp32")
    assert res.exit_code == 0, res.output
    hint = next(ln for ln in res.output.splitlines() if ln.startswith("run it with ONNX Runtime: "))
    path = Path(shlex.split(hint.split(": ", 1)[1])[-1])
    assert path.parent == out and path.suffix == ".onnx" and path.is_file(), hint


def test_an_out_named_like_a_file_is_said_to_be_a_folder(tmp_path):
    """'--out x.onnx' makes a folder x.onnx; the export says so once, when it makes it."""
    out = tmp_path / "x.onnx"
    res = _run("--model", "realesr-animevideov3", "--out", str(out), "-q")
    assert res.exit_code == 0, res.output
    assert f"note: --out names a folder, and {out} will be one" in res.stderr
    assert _exported(res.stdout)["fp32"].parent == out
    again = _run("--model", "realesr-animevideov3", "--out", str(out), "-q")  # the folder it made: nothing to say
    assert again.exit_code == 0 and "note:" not in again.stderr, again.output


def test_a_four_channel_model_exports_with_a_note_instead_of_the_upscale_hint(tmp_path):
    """An SRVGGNetCompact on 4 channels is a valid network to export, but lwayrt upscale refuses it: the export says
    so rather than suggest an upscale command that fails."""
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors

    torch.manual_seed(0)
    weights = tmp_path / "rgbn.safetensors"
    save_safetensors(weights, SRVGGNetCompact(num_in_ch=4, num_out_ch=4, num_feat=8, num_conv=2, upscale=2).state_dict(), {})
    res = CliRunner().invoke(main, ["export", "-m", str(weights), "--out", str(tmp_path / "onnx"), "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    assert "4-channel input" in res.output and "run it with ONNX Runtime" not in res.output
    (fp32,) = _exported(res.output).values()
    from lway_rt.runtime.ort import create_session, run_session

    y = run_session(create_session(fp32, threads=1), np.random.default_rng(0).random((1, 4, 8, 12), dtype=np.float32))
    assert y.shape == (1, 4, 16, 24)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    up = CliRunner().invoke(main, ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "up"), "-m", str(fp32)])
    assert up.exit_code != 0 and "4-channel" in up.output, up.output


def test_a_killed_exports_temporary_file_of_a_long_name_is_swept(tmp_path):
    """An output name of 220-255 bytes (legal) gets a shortened temporary name; the sweep of a killed export's
    temporary file must look for that shortened name, or the file (tens of MB for a real model) waits a day."""
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io import weights as w

    torch.manual_seed(0)
    model = tmp_path / ("m" * 200 + ".safetensors")
    w.save_safetensors(model, SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).state_dict(), {})
    out = tmp_path / "onnx"
    res = CliRunner().invoke(main, ["export", "-m", str(model), "--out", str(out), "--precision", "fp32"])
    assert res.exit_code == 0, res.output
    (final,) = _exported(res.output).values()
    assert len(final.name.encode()) + w._TEMP_EXTRA > w.NAME_MAX  # (its temporary file's name is shortened)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = out / f".{w.temp_stem(final.stem)}.lw{w._host_tag()}p{dead.pid}.abcdefgh.onnx.tmp"  # as a killed run left it
    left.write_bytes(b"x" * 1000)
    w._stale_by_folder.clear()  # a new process lists the folder afresh
    res = CliRunner().invoke(main, ["export", "-m", str(model), "--out", str(out), "--precision", "fp32", "--force"])
    assert res.exit_code == 0, res.output
    assert not left.exists()


def test_a_model_of_the_longest_name_a_file_takes_exports_and_hits_its_cache(tmp_path, monkeypatch):
    """A store name of 230-243 bytes (``models add`` takes it: its .safetensors is a legal file name) made every
    export of it fail: its files' names (the label, ".sr.fp32.", the key, ".onnx") passed 255 bytes, and the error
    blamed the output path (review 49D M2). The label is cut in the names; a second export is a cache hit, and the
    same weights under a shorter name hit it too."""
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io import weights as w

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    plain = tmp_path / "m.safetensors"
    w.save_safetensors(plain, SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2).state_dict(), {})
    name = "ä" * 100 + "b" * 43  # 243 bytes, 143 characters
    assert CliRunner().invoke(main, ["models", "add", str(plain), "--name", name]).exit_code == 0
    out = tmp_path / "onnx"
    for _ in range(2):
        res = CliRunner().invoke(main, ["export", "-m", name, "--out", str(out), "--precision", "fp32"])
        assert res.exit_code == 0, res.output
        (final,) = _exported(res.output).values()
        assert final.name.startswith("ä" * 95 + ".sr.fp32.") and len(final.name.encode()) <= w.NAME_MAX
    assert "cache hit" in res.output, res.output
    res = CliRunner().invoke(main, ["export", "-m", str(plain), "--out", str(out), "--precision", "fp32"])
    assert res.exit_code == 0 and "cache hit" in res.output and _exported(res.output) == {"fp32": final}, \
        res.output


def test_a_cache_hit_removes_what_a_killed_export_of_the_file_left(tmp_path):
    """kill -9 during the parity gate leaves a hidden .onnx.tmp (2.5-68 MB); later runs were cache hits, which never
    reached the sweep, so it stayed for ever."""
    from lway_rt.io.weights import temp_stem

    out = tmp_path / "exp"
    res = CliRunner().invoke(main, ["export", "-m", "realesr-animevideov3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    (onnx,) = out.glob("*.onnx")
    left = out / f".{temp_stem(onnx.stem)}.lwdeadbeefp999999999.abc.onnx.tmp"  # a writer on no machine now: gone
    left.write_bytes(b"cut short")
    import os
    import time

    old = time.time() - 2 * 86400
    os.utime(left, (old, old))  # untouched for two days, whichever machine wrote it
    mine = out / ".my-notes.tmp"
    mine.write_text("mine")
    from lway_rt.io import weights

    other = out / ".realesr-animevideov3.sr.fp32.0123456789ab.lwdeadbeefp999999999.xyz.onnx.tmp"  # another key's
    other.write_bytes(b"cut short")  # (an export killed, then run with other settings: it stayed; review 54E E2)
    os.utime(other, (old, old))
    weights._stale_by_folder.clear()  # a new process lists the folder afresh
    res = CliRunner().invoke(main, ["export", "-m", "realesr-animevideov3", "--out", str(out)])
    assert res.exit_code == 0 and "cache hit" in res.output, res.output
    assert not left.exists() and not other.exists() and mine.read_text() == "mine"


def test_an_onnx_session_takes_omp_num_threads_as_torch_does(tmp_path, monkeypatch):
    """OMP_NUM_THREADS=1 held torch to one thread, but an exported model in ONNX Runtime took every core: jobs run
    side by side (make -j, xargs -P), each told one thread, oversubscribed the machine."""
    import torch

    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.runtime.ort import create_session

    path = tmp_path / "tiny.onnx"
    torch.onnx.export(SRVGGNetCompact(num_feat=4, num_conv=1).eval(), torch.zeros(1, 3, 8, 8), str(path),
                      input_names=["x"], output_names=["y"], dynamo=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert create_session(path).get_session_options().intra_op_num_threads == 1
    assert create_session(path, threads=2).get_session_options().intra_op_num_threads == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert create_session(path).get_session_options().intra_op_num_threads == 0  # ONNX Runtime's default


def test_an_exported_file_gets_the_permissions_a_new_file_gets(tmp_path, unprivileged):
    """Every .onnx file was private (0600) whatever the umask, its manifest 0644: the save over mkstemp's temporary
    file kept its mode (review 48B B5). A new file gets 0666 less the umask; one written over keeps the old one's."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        res = _run("--model", "realesr-animevideov3", "--out", str(tmp_path / "e"))
        assert res.exit_code == 0, res.output
        onnx_file = _exported(res.stdout)["fp32"]
        assert stat.S_IMODE(onnx_file.stat().st_mode) == 0o644
        onnx_file.chmod(0o640)
        res = _run("--model", "realesr-animevideov3", "--out", str(tmp_path / "e"), "--force")
        assert res.exit_code == 0, res.output
        assert stat.S_IMODE(_exported(res.stdout)["fp32"].stat().st_mode) == 0o640
        # a read-only file is replaced and stays read-only (its mode set on the temporary file before the save had
        # refused the save: review 48G G3)
        onnx_file.chmod(0o444)
        import subprocess
        import sys

        cmd = [sys.executable, "-c", "import sys; from lway_rt.cli import main; sys.exit(main())", "export", "--model",
               "realesr-animevideov3", "--out", str(tmp_path / "e"), "--force"]
        done = subprocess.run(unprivileged(cmd), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(onnx_file.stat().st_mode) == 0o444
    finally:
        os.umask(old)


@pytest.mark.parametrize("missing", ["onnx", "onnxscript"])
def test_a_missing_onnx_package_is_named_and_leaves_no_folder(tmp_path, monkeypatch, missing):
    """With onnx installed and onnxscript not, export said it needed 'onnx' (a user who had just installed it got the
    same line again: 56B8); and either way it left an empty --out folder behind (56B2)."""
    monkeypatch.setitem(sys.modules, missing, None)  # as an install without it has it
    out = tmp_path / "deploy" / "engines"  # (its parent made too: both gone, 56D-4)
    res = CliRunner().invoke(main, ["export", "-m", "realesr-animevideov3", "--out", str(out)])
    assert res.exit_code == 1 and f"needs the '{missing}' package: install the 'onnx' extra" in res.output, res.output
    assert not (tmp_path / "deploy").exists()
    (tmp_path / "mine").mkdir()  # a folder of the user's stays, however empty, and named through a missing one (56G3)
    for given in (tmp_path / "mine", tmp_path / "nx" / ".." / "mine"):
        res = CliRunner().invoke(main, ["export", "-m", "realesr-animevideov3", "--out", str(given)])
        assert res.exit_code == 1 and (tmp_path / "mine").is_dir()
    (tmp_path / "a" / "b").mkdir(parents=True)  # through a link: the folder made beside its target goes too (56I-5)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "b")
    res = CliRunner().invoke(main, ["export", "-m", "realesr-animevideov3", "--out", str(tmp_path / "link" / ".." / "new")])
    assert res.exit_code == 1 and not (tmp_path / "a" / "new").exists() and (tmp_path / "a" / "b").is_dir()


def test_a_fixed_size_export_of_capped_weights_says_it_caps_each_call(tmp_path):
    """export --static of weights adapted with a detail cap wrote a fixed-size file, made for tiles, whose graph caps
    each call on its own, without a word, where upscale and serve-bench refuse to tile a capped file (57B-7)."""
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors

    torch.manual_seed(0)
    save_safetensors(tmp_path / "base.safetensors", SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).state_dict(),
                     {"name": "tiny", "arch": "SRVGGNetCompact", "scale": "4"})
    save_safetensors(tmp_path / "adapted.safetensors", SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).state_dict(),
                     {"name": "tiny-lway", "arch": "SRVGGNetCompact", "scale": "4",
                      "base_model": str(tmp_path / "base.safetensors"), "detail_cap": "1.2"})
    args = ["export", "-m", str(tmp_path / "adapted.safetensors"), "-q"]
    res = CliRunner().invoke(main, [*args, "--static", "32x32", "--out", str(tmp_path / "fixed")])
    assert res.exit_code == 0, res.output
    assert "note: a capped graph caps each call on its own, so a fixed-size (32x32) file gives lwayrt upscale's " \
        "images only for whole images of that size" in " ".join(res.output.split()), res.output
    dynamic = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "dyn")])
    assert dynamic.exit_code == 0 and "caps each call" not in dynamic.output, dynamic.output
    plain = CliRunner().invoke(main, [*args, "--static", "32x32", "--detail-cap", "off", "--out", str(tmp_path / "off")])
    assert plain.exit_code == 0 and "caps each call" not in plain.output, plain.output
