"""The ``lwayrt serve-bench`` command: a real tiny run, clean errors, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from lway_rt.bench.schema import validate
from lway_rt.cli import main

TINY = ["--threads", "1", "--min-iters", "3", "--min-time-s", "0", "--warmup-s", "0", "--warmup-iters", "1", "-q"]


def test_cli_writes_a_valid_report_and_chart(tmp_path):
    out, chart = tmp_path / "r.json", tmp_path / "r.png"
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-b", "torch", "-b", "ort-cpu",
                                    "-b", "tensorrt", "--no-peak", "--json", str(out), "--chart", str(chart), *TINY])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert validate(report) == [] and report["summary"]["ok"] == 2 and report["peak_gflops"] == {}
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert "ort-cpu" in res.output and "yes" in res.output and "report:" in res.output and "replaced" not in res.output
    again = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-b", "torch", "--no-peak",
                                      "--json", str(out), "--chart", str(chart), *TINY])
    assert again.exit_code == 0 and json.loads(out.read_text())["summary"]["ok"] == 1  # a rerun replaces its own,
    assert f"report: {out} (the earlier report there replaced)" in again.output  # saying so (review 52C C1)
    assert f"chart: {chart} (the earlier chart there replaced)" in again.output


def test_progress_lines_are_whole_in_a_log(tmp_path):
    """Rich cut serve-bench's progress at 80 columns where it was not on a terminal: a skipped backend's advice came
    on lines of its own in a log, away from "skipped" (review 52C C2)."""
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "16", "-b", "ort-cuda", "-b",
                                    "ort-cpu", "--no-peak", *TINY[:-1]])
    assert res.exit_code == 0, res.output
    skipped = [line for line in res.output.splitlines() if line.startswith("ort-cuda: skipped")]
    assert len(skipped) == 1 and len(skipped[0]) > 80 and skipped[0].rstrip().endswith(")"), res.output
    # and the notes under the table, which wrapped at the table's width as its caption (the first cut after "above its")
    legend = [line for line in res.output.splitlines() if line.startswith("verified = PSNR vs torch fp32")]
    assert len(legend) == 1 and "above its start)" in legend[0], res.output
    assert any(line.startswith("skipped: ort-cuda: ") and "to run it on the CPU, marked" in line
               for line in res.output.splitlines()), res.output


def test_json_dash_prints_the_report_on_stdout(tmp_path, monkeypatch):
    """--json - wrote a file named '-' in the current folder and printed the table on stdout, where eval-degae's
    --json - prints the report: a pipe (| jq) got a table. The report now goes to stdout, the table to stderr."""
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-b", "torch", "--no-peak",
                                    "--json", "-", "-q", *TINY])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert validate(report) == [] and report["summary"]["ok"] == 1 and not (tmp_path / "-").exists()
    assert "torch" in res.stderr
    # no row verified, with --chart: its 'not written' line went to stdout after the JSON (| jq broke)
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-b", "ort-cpu",
                                    "--no-peak", "--min-psnr", "199", "--json", "-", "--chart", str(tmp_path / "c.png"),
                                    *TINY])
    assert res.exit_code == 1 and json.loads(res.stdout)["summary"]["ok"] == 0, res.output
    assert "chart: not written" in res.stderr


def test_threads_default_to_omp_num_threads(tmp_path, monkeypatch):
    """The README tells jobs run side by side to set OMP_NUM_THREADS=1, as torch and ONNX Runtime take it; serve-bench
    without --threads timed every backend on all usable cores regardless. It takes OMP_NUM_THREADS now."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-b", "torch", "-b",
                                    "ort-cpu", "--no-peak", "--json", str(out), *TINY[2:]])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["settings"]["threads"] == 1, report["settings"]
    assert {r["options"].get("threads") for r in report["results"]} == {1}, [r["options"] for r in report["results"]]


def test_report_and_chart_never_replace_what_the_user_has(tmp_path, capped_weights):
    """--json / --chart naming the model, another file of the user's or each other are refused before anything is
    timed, and the file is left as it was."""
    import shutil

    from PIL import Image

    victim = tmp_path / "mine.safetensors"
    shutil.copy(capped_weights, victim)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8), "red").save(photo)
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    before = {p: p.read_bytes() for p in (victim, photo, notes)}
    for args, needle in (
        (["--json", victim], "is the model being measured"),
        (["--chart", victim], "is the model being measured"),
        (["--json", photo], "exists and is not a serve-bench report"),
        (["--json", notes], "exists and is not a serve-bench report"),
        (["--chart", photo], "exists and is not a serve-bench chart"),
        (["--chart", photo], "or delete it if it is a chart serve-bench wrote before it marked its charts"),
        (["--json", tmp_path / "r.out", "--chart", tmp_path / "r.out"], "both name"),
        (["--chart", tmp_path / "c.jpg"], "the chart is a PNG image; name a .png file"),  # PNG data under .jpg before
        (["--chart", tmp_path / "c"], "name a .png file"),
        (["--json", photo / "r.json"], "photo.png is a file, not a folder"),  # not after the whole run
        (["--chart", notes / "sub" / "c.png"], "notes.json is a file, not a folder"),
    ):
        res = CliRunner().invoke(main, ["serve-bench", "-m", str(victim), "-s", "24", "-b", "torch", "--no-peak",
                                        *map(str, args), *TINY])
        assert res.exit_code == 1 and res.output.startswith("error: ") and needle in res.output, (args, res.output)
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "r.out").exists()
    assert not (tmp_path / "c.jpg").exists() and not (tmp_path / "c").exists()


def test_capped_weights_are_timed_as_export_ships_them(capped_weights, tmp_path):
    """Weights adapted with --detail-cap are timed with their cap by default (both networks and the blend, as
    lwayrt export ships them); the exported ONNX graph must reproduce that torch network to pass; --detail-cap off
    times the adapted network alone; a tiled run of a capped network is refused in one line."""
    from lway_rt.io.store import load_model

    n_base = sum(p.numel() for p in load_model("realesr-animevideov3").model.parameters())
    reports = {}
    for cap in ("auto", "off"):
        out = tmp_path / f"{cap}.json"
        res = CliRunner().invoke(main, ["serve-bench", "-m", str(capped_weights), "-s", "24x32", "-b", "torch", "-b", "ort-cpu",
                                        "--no-peak", "--detail-cap", cap, "--json", str(out), *TINY[:-1]])
        assert res.exit_code == 0, res.output
        reports[cap] = json.loads(out.read_text())
        assert ("detail cap 1: timing the unadapted model beside the adapted one" in res.output) == (cap == "auto")
        assert validate(reports[cap]) == [] and reports[cap]["summary"]["ok"] == 2
    capped, plain = reports["auto"], reports["off"]
    assert capped["model"]["detail_cap"]["cap"] == 1.0 and capped["model"]["detail_cap"]["base_model"] == "realesr-animevideov3"
    assert capped["model"]["params"] == 2 * n_base and plain["model"]["params"] == n_base
    assert plain["model"]["detail_cap"] is None
    for a, b in zip(capped["results"], plain["results"]):  # the capped graph does about twice the work
        assert a["flops_per_image"] == 2 * b["flops_per_image"] > 0
        assert a["verification"]["psnr_db"] >= 50
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(capped_weights), "--tile", "32", "--tile-overlap", "4", *TINY])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "time whole images (--tile 0)" in res.output
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(capped_weights), "--base-model", "realsr-df2k-x4", *TINY])
    assert res.exit_code == 1 and "is not the model these weights were adapted from" in res.output


def test_an_exported_file_is_timed_as_it_is(capped_weights, tmp_path):
    """serve-bench -m FILE.onnx times that file with the ONNX-based backends of its precision, verified against the
    weights its manifest names (with their cap when the file holds one); a file without a manifest is refused."""
    import shutil

    from lway_rt.export.cache import file_sha256

    files = {}
    for model in ("realesr-animevideov3", str(capped_weights)):
        res = CliRunner().invoke(main, ["export", "-m", model, "--out", str(tmp_path / "exp")])
        assert res.exit_code == 0, res.output
    for path in (tmp_path / "exp").glob("*.onnx"):
        files["capped" if "-cap1" in path.name else "plain"] = path
    for kind, path in files.items():
        out = tmp_path / f"{kind}.json"
        res = CliRunner().invoke(main, ["serve-bench", "-m", str(path), "-s", "24x32", "-b", "torch", "-b", "ort-cpu",
                                        "--no-peak", "--json", str(out), *TINY])
        assert res.exit_code == 0, res.output
        report = json.loads(out.read_text())
        assert validate(report) == [] and report["summary"]["ok"] == 2
        assert report["model"]["onnx"] == {"file": str(path), "sha256": file_sha256(path), "precision": "fp32"}
        assert (report["model"]["detail_cap"] is not None) == (kind == "capped")
        ort = next(r for r in report["results"] if r["kind"] == "ort-cpu")
        assert ort["verification"]["psnr_db"] >= 50 and ort["export_s"] is None  # the file itself, not a new export
        source = json.loads(path.with_suffix(".json").read_text())["source"]  # which weights: the file's own (57H-4)
        assert report["model"]["weights_sha256"] == (source["detail_cap"]["adapted_sha256"] if kind == "capped"
                                                     else source["weights_sha256"])
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(files["plain"]), "--json",
                                    str(files["plain"].with_suffix(".json")), *TINY])
    assert res.exit_code == 1 and "is the model being measured (or its manifest)" in res.output
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(files["capped"]), "--tile", "32", "--tile-overlap", "4",
                                    *TINY])
    assert res.exit_code == 1 and "time whole images (--tile 0)" in res.output, res.output
    # (any case: 56C-4)
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(files["capped"]), "--detail-cap", "Off", *TINY])
    assert res.exit_code == 1 and "so --detail-cap off cannot apply" in res.output, res.output  # it was timed capped
    renamed = tmp_path / "renamed.onnx"  # its manifest names another file: the advice must be one serve-bench takes
    shutil.copy(files["capped"], renamed)
    shutil.copy(files["plain"].with_suffix(".json"), renamed.with_suffix(".json"))
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(renamed), *TINY])
    assert res.exit_code == 1 and "describes another file" in res.output and "move the manifest away" not in res.output
    bare = tmp_path / "bare.onnx"
    shutil.copy(files["plain"], bare)
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(bare), *TINY])
    assert res.exit_code == 1 and "has no manifest" in res.output and "Traceback" not in res.output
    # which weights, and the other ways on (review 48F F3: "pass those weights instead" and no more)
    assert "-m the store name or weights file it was exported from" in " ".join(res.output.split()), res.output


def test_a_fixed_shape_export_is_timed_at_its_shape(tmp_path):
    """A file exported with --static was refused ("export it without --static"): it is timed at its one shape, whole
    (the default sizes become its shape) or as the tiles of a larger image; any other shape is a one-line refusal
    that names the options that fit."""
    res = CliRunner().invoke(main, ["export", "-m", "realesr-animevideov3", "--static", "32x32", "--out", str(tmp_path / "exp")])
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "exp").glob("*.32x32.*.onnx")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(path), "-b", "torch", "-b", "ort-cpu", "--no-peak",
                                    "--json", str(out), *TINY])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert validate(report) == [] and report["summary"]["ok"] == 2
    assert {(r["input"]["height"], r["input"]["width"], r["input"]["batch"], r["tile"]) for r in report["results"]} \
        == {(32, 32, 1, 0)}
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(path), "-s", "48", "--tile", "32", "--tile-overlap", "4",
                                    "-b", "ort-cpu", "--no-peak", "--json", str(out), *TINY])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())["results"]
    assert row["status"] == "ok" and row["tile"] == 32 and row["verification"]["psnr_db"] >= 40
    for extra in (["-s", "48"], ["-s", "32", "--batch", "2"]):
        res = CliRunner().invoke(main, ["serve-bench", "-m", str(path), *extra, "--no-peak", *TINY])
        assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
        assert "was exported for fixed 1x3x32x32 inputs (batch, channels, height, width)" in res.output, res.output
        assert "--size 32x32 (width x height) --batch 1, or --size 33x33 --tile 32 --tile-overlap 8" in res.output
    # the suggestion is one serve-bench takes: a size whose windows, as upscale lays them, are the file's (windows are
    # as small as still overlap well, so 'any larger image' was not)
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(path), "-s", "33", "--tile", "32", "--tile-overlap", "8",
                                    "-b", "ort-cpu", "--no-peak", *TINY])
    assert res.exit_code == 0, res.output


def test_an_exported_file_timed_with_torch_alone_names_an_onnx_backend(tmp_path, anime_onnx):
    """-b torch with -m FILE.onnx said "reasons in the table", and the table had none: torch times the weights."""
    path = anime_onnx(tmp_path / "exp")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(path), "-s", "24", "-b", "torch", "--no-peak",
                                    "--json", str(out), *TINY])
    assert res.exit_code == 1 and "only torch was asked for" in res.output and "-b ort-cpu" in res.output, res.output
    # and said before torch's rounds, which time nothing of the file (56B3)
    (row,) = json.loads(out.read_text())["results"]
    assert row["status"] == "skipped" and row["reason"].startswith("not timed: torch times the weights"), row


def test_an_fp16_file_nothing_here_can_time_is_not_a_success(tmp_path, anime_onnx):
    fp16 = anime_onnx(tmp_path / "exp", "fp16")
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", str(fp16), "-s", "24", "--no-peak", "--json", str(out), *TINY])
    assert res.exit_code == 1 and f"{fp16.name} itself was not timed" in res.output, res.output
    assert "ort-cuda+fp16+fallback" in res.output
    # the default torch row is not timed either: it would time the weights the file came from, and nothing of it (56B3)
    report = json.loads(out.read_text())
    assert report["summary"]["ok"] == 0 and {r["status"] for r in report["results"]} == {"skipped"}, report["results"]
    assert "reference 24x24" not in res.output, res.output


def test_cli_user_mistakes_are_one_line_errors():
    runner = CliRunner()
    for args, needle in (
        (["-b", "onnx"], "unknown backend 'onnx'"),
        (["-s", "0"], "must be positive"),
        (["--tile", "40", "--tile-overlap", "20"], "larger than twice the overlap (40); --tile 40 is not: raise --tile or "
                                                   "lower --tile-overlap"),
        (["--tile", "48", "--tile", "96", "--tile", "40"], "(64); --tile 48, 40 are not"),  # which ones, not a Python tuple
        # upscale's own rule, so the tiled rows time what it runs (57H-1: --tile 12 was timed, and failed verification
        # with the backend blamed for the layout's loss)
        (["--tile", "8", "--tile", "16", "--tile-overlap", "4"], "--tile 8, 16 are too small: tiles under 32 px change "
                                                                 "the picture at their seams, and 'lwayrt upscale' refuses "
                                                                 "them: use --tile 32 or more, or 0 for whole images"),
        (["--batch", "0", "--batch", "2"], "--batch must be at least 1, got 0\n"),
        (["--tile", "64"], "larger than twice the overlap (64)"),  # the default overlap is upscale's 32 px
        (["-b", "torch+fp16"], "fp16 on the CPU"),
        (["--concurrency", "0"], "--concurrency must be at least 1 worker, got 0\n"),
        (["--min-iters", "0"], "--min-iters must be between 1 and 10000, got 0"),  # named the dataclass's fields
        (["--warmup-iters", "-1"], "--warmup-iters must be >= 0"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--max-time-s", "0"], "--max-time-s > 0"),
        (["--max-time-s", "-1", "--min-time-s", "0.1"], "--max-time-s > 0, got 0.1 and -1"),  # not a clash (48C C11)
        (["--min-time-s", "5", "--max-time-s", "1"], "--min-time-s 5 is above --max-time-s 1, which stops the timing "
                                                     "first: lower --min-time-s or raise --max-time-s"),  # max won, unsaid
        (["--min-time-s", "90"], "--min-time-s 90 is above --max-time-s 60 (the default)"),
        (["--warmup-s", "4", "--max-time-s", "1"], "--warmup-s 4 is above --max-time-s 1, which stops the warm-up first: "
                                                   "lower --warmup-s or raise --max-time-s"),  # (it was cut, unsaid: 57I-10)
        (["--threads", "0"], "--threads must be >= 1"),
        (["--min-psnr", "500"], "--min-psnr must be above 0 and at most 200 dB"),  # the reference failed against itself
        (["--min-psnr", "0"], "--min-psnr must be above 0"),
    ):
        res = runner.invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "--device", "cpu", *TINY, *args])
        assert res.exit_code == 1, (args, res.output)
        assert res.output.startswith("error: ") and needle in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["serve-bench", "--device", "cpu", *TINY])  # every kind of model it takes is named
    assert res.exit_code == 2 and "(a store name, a weights file, or an .onnx file from 'lwayrt export')" in res.output
    res = runner.invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "100000", "--no-peak", *TINY])
    assert res.exit_code == 1 and "needs 3.69e+03 GiB for its input and outputs alone" in res.output, res.output
    res = runner.invoke(main, ["serve-bench", "-m", "no-such-model", *TINY])
    assert res.exit_code == 1 and "unknown model 'no-such-model'" in res.output


def test_a_time_cap_below_the_default_minimum_is_the_time(tmp_path):
    """--max-time-s 2 alone was refused as below --min-time-s 3, a default the user never typed."""
    at = TINY.index("--min-time-s")
    tiny = TINY[:at] + TINY[at + 2:]  # --min-time-s left at its default, 3 s
    dest = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "--device", "cpu", "-s", "16",
                                    "--no-peak", *tiny, "--max-time-s", "0.2", "--json", str(dest)])
    assert res.exit_code == 0, res.output
    timing = json.loads(dest.read_text())["settings"]["timing"]
    assert timing["max_time_s"] == 0.2 and timing["min_time_s"] == 0.2  # the minimum follows the cap down


def test_nothing_measured_is_a_failure(tmp_path, monkeypatch):
    """Every backend asked for skipped on this machine (here: CUDA ones without a GPU): the table says why, and the
    exit status says that no number came out, so a script cannot take an empty report for a result."""
    import torch

    import lway_rt.bench.machine as machine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(machine, "load_average", lambda: [64.0, 64.0, 64.0])  # a busy machine: nothing was timed,
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-b", "torch+cuda",
                                    "--device", "cuda", "--no-peak", "--json", str(tmp_path / "r.json"), *TINY])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "nothing was measured" in res.output and "no CUDA GPU visible to PyTorch" in res.output
    # so neither a table of no rows nor "run again when it is idle" (which would time nothing either: review 55I I2)
    assert "p50 ms" not in res.output and "when it is idle" not in res.output, res.output
    assert "verified = PSNR" not in res.output and "(reasons above)" in res.output, res.output  # (55J J4)
    report = json.loads((tmp_path / "r.json").read_text())
    assert validate(report) == [] and report["summary"] == {"ok": 0, "failed": 0, "skipped": 1, "error": 0}
    assert report["settings"]["device"] == "cuda" and report["settings"]["reference_device"] == "cpu"


def test_a_file_made_at_the_report_path_while_it_measured_is_not_replaced(tmp_path, monkeypatch):
    """--json and --chart are checked before the measuring (minutes), and again as they are written: a file of the
    user's saved there meanwhile was replaced, and called "the earlier report" (review 55I I1)."""
    import lway_rt.bench.runner as runner

    measure = runner.run_bench
    for option, name, made in (("--json", "r.json", b'{"mine": 1}'), ("--chart", "c.png", b"my own picture")):
        dest = tmp_path / option.strip("-") / name
        dest.parent.mkdir()

        def measure_while_a_file_is_saved(*args, dest=dest, made=made, **kwargs):
            report = measure(*args, **kwargs)
            dest.write_bytes(made)  # (saved by the user while the backends were timed)
            return report

        monkeypatch.setattr(runner, "run_bench", measure_while_a_file_is_saved)
        res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "16", "-b", "torch",
                                        "--no-peak", option, str(dest), *TINY])
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert dest.read_bytes() == made, option
        assert f"{dest} exists and is not a serve-bench" in res.output and "nothing was written" in res.output
        assert "replaced" not in res.output, res.output
        assert [p.name for p in dest.parent.iterdir()] == [name]  # (no temporary file left either)


def test_cli_prints_schema_and_help():
    res = CliRunner().invoke(main, ["serve-bench", "--schema"])
    from lway_rt.bench.runner import SCHEMA_VERSION

    assert res.exit_code == 0 and json.loads(res.output)["properties"]["schema_version"] == {"const": SCHEMA_VERSION}
    res = CliRunner().invoke(main, ["serve-bench", "--help"])
    assert res.exit_code == 0 and "--concurrency" in res.output


def test_bench_modules_do_not_import_heavy_optional_packages():
    code = ("import sys, lway_rt.bench.runner, lway_rt.bench.report, lway_rt.bench.schema, lway_rt.bench.workload, "
            "lway_rt.runtime.backends, lway_rt.cli.serve_bench; "
            "print([m for m in ('onnx', 'onnxruntime', 'tensorrt', 'matplotlib') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_nan_and_inf_numbers_are_refused_where_options_are_read(tmp_path):
    """A threshold of nan passes or fails every comparison (the gate reported '... > nan'); a weight of inf would reach
    the optimiser."""
    for args in (["export", "-m", "realesr-animevideov3", "--max-abs-diff", "nan"],
                 ["export", "-m", "realesr-animevideov3", "--min-psnr", "NaN"],
                 ["serve-bench", "-m", "realesr-animevideov3", "--min-psnr", "nan"],
                 ["serve-bench", "-m", "realesr-animevideov3", "--warmup-s", "nan"],
                 ["serve-bench", "-m", "realesr-animevideov3", "--min-time-s", "inf"],
                 ["adapt", str(tmp_path), "-m", "realesr-animevideov3", "-o", str(tmp_path / "o"), "--anchor-weight", "inf"],
                 ["train-degae", "--out", str(tmp_path / "s1.safetensors"), "--lr", "nan"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2 and "is not a finite number" in res.output, (args, res.output)


def test_tiled_rows_default_to_the_overlap_upscale_runs():
    """serve-bench times tiles with upscale's default overlap (the README advises 32 px; 16 leaves seams)."""
    from lway_rt.bench.runner import BenchConfig
    from lway_rt.cli.serve_bench import command as bench_command
    from lway_rt.cli.upscale import command as upscale_command

    def default(cmd):
        return next(p.default for p in cmd.params if p.name == "tile_overlap")

    assert default(bench_command) == default(upscale_command) == BenchConfig(model="m").tile_overlap


def test_ctrl_c_says_nothing_was_written(tmp_path, monkeypatch):
    """Ctrl-C printed the generic line about finished files kept and 'the rest', which a benchmark has neither of."""
    import lway_rt.bench.runner as runner

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_reference", ctrl_c)
    dest = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "16", "-b", "torch",
                                    "--json", str(dest), *TINY])
    assert res.exit_code == 130 and "serve-bench interrupted: nothing was written" in res.output, res.output
    assert "for the rest" not in res.output and not dest.exists()


def test_a_backend_that_raises_while_timed_is_an_error_row_and_the_report_is_written(tmp_path, monkeypatch):
    """Verified, then raising while timed (a provider error under load, say): its rows are errors, the other backend
    is timed, the report is written and the exit status is 1; it aborted the run with a traceback and no report."""
    import lway_rt.runtime.backends as backends

    load = backends.load_backend

    def flaky_load(spec, *args, **kwargs):
        backend = load(spec, *args, **kwargs)
        if spec.channels_last:
            run, calls = backend.run, [0]

            def flaky(x):
                calls[0] += 1
                if calls[0] > 1:  # the verification call passes
                    raise RuntimeError("simulated provider failure during timing")
                return run(x)

            backend.run = flaky
        return backend

    monkeypatch.setattr(backends, "load_backend", flaky_load)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "16", "-b", "torch", "-b",
                                    "torch+cl", "-c", "1", "-c", "2", "--no-peak", "--rounds", "1", "--json", str(out),
                                    *TINY])
    assert res.exit_code == 1 and "Traceback" not in res.output and "could not run (torch+cl)" in res.output, res.output
    report = json.loads(out.read_text())
    assert validate(report) == [] and report["summary"] == {"ok": 2, "failed": 0, "skipped": 0, "error": 2}
    errors = [r for r in report["results"] if r["status"] == "error"]
    assert {r["backend"] for r in errors} == {"torch+cl"} and [r["concurrency"] for r in errors] == [1, 2]
    assert errors[0]["reason"] == "RuntimeError: simulated provider failure during timing" and errors[0]["verified"]


def test_an_unwritable_report_folder_is_refused_before_measuring(tmp_path, monkeypatch):
    """--json /proc/x.json was refused only when the report was written, after the whole run; a missing folder is
    still accepted (made when the report is written) and is not made beforehand."""
    import os

    import lway_rt.bench.runner as runner

    def measured(*args, **kwargs):
        raise RuntimeError("measuring started")

    monkeypatch.setattr(runner, "run_bench", measured)
    if os.path.isdir("/proc/self"):
        for opt, dest in (("--json", "/proc/x.json"), ("--chart", "/proc/sub/x.png")):
            res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", opt, dest, *TINY])
            assert res.exit_code == 1 and res.output.startswith("error: ") and "cannot write to /proc" in res.output, \
                res.output
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "--json",
                                    str(tmp_path / "new" / "sub" / "r.json"), *TINY])
    assert isinstance(res.exception, RuntimeError) and str(res.exception) == "measuring started"
    assert list(tmp_path.iterdir()) == []  # neither the folders nor a probe file left


def test_the_cpu_script_can_replace_the_committed_results():
    """``benchmarks/serve_bench_cpu.sh`` writes over the committed reports and charts (the README says a rerun
    replaces them): each must read as serve-bench's own, or the script stops at its first step. Charts written
    before serve-bench marked its PNGs carry no mark and stopped it ("exists and is not a serve-bench chart")."""
    import re
    from pathlib import Path

    from lway_rt.bench.report import check_output_paths

    root = Path(__file__).resolve().parents[1]
    script = (root / "benchmarks" / "serve_bench_cpu.sh").read_text()
    pairs = re.findall(r'--json "\$OUT/([^"]+)" --chart "\$OUT/([^"]+)"', script)
    assert len(pairs) == 3, pairs  # compare, tuning, load
    for json_name, chart_name in pairs:
        paths = [root / "benchmarks" / "results" / name for name in (json_name, chart_name)]
        assert all(p.is_file() for p in paths), paths  # committed, as the README's numbers cite them
        check_output_paths(*paths, keep=())


def test_a_tile_that_covers_a_size_is_said_not_dropped(tmp_path):
    """A --tile as large as a size gives that size one window, the whole image: the tiled case was dropped, with no
    row and no word."""
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-s", "48", "--tile", "0",
                                    "--tile", "32", "--tile-overlap", "8", "-b", "torch", "--no-peak", "--json",
                                    str(tmp_path / "r.json"),
                                    *TINY[:-1]])
    assert res.exit_code == 0, res.output
    assert "note: --tile 32 covers all of 24x24 (one window): that size is timed as whole images" in \
        " ".join(res.output.split()), res.output
    tiles = {(r["input"]["height"], r["tile"]) for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert tiles == {(24, 0), (48, 0), (48, 32)}, tiles


def test_a_min_psnr_given_is_applied_to_tiled_rows_too(tmp_path):
    """--min-psnr 100 with --tile passed a tiled row at 68 dB, exit 0: tiled rows took at most 40 dB whatever was
    given, while the report said 100 was applied (review 50F F1). A threshold given is the one every row meets."""
    args = ["serve-bench", "-m", "realesr-animevideov3", "-s", "64x32", "--tile", "40", "--tile-overlap", "8", "-b",
            "ort-cpu", "--no-peak", *TINY]
    res = CliRunner().invoke(main, [*args[:-1], "--min-psnr", "100", "--json", str(tmp_path / "strict.json")])
    report = json.loads((tmp_path / "strict.json").read_text())
    (row,) = report["results"]
    assert row["tile"] == 40 and row["verification"]["min_psnr_db"] == 100
    assert row["verification"]["psnr_db"] < 100 and row["status"] != "ok" and res.exit_code == 1, res.output
    # the line names the tiled row, not the whole-image one (review 50L L2)
    assert "ort-cpu 64x32 b1 tile40: FAILED verification" in res.output and "reference 64x32 b1 tile40" in res.output
    assert report["settings"]["tiled_min_psnr_db"] == 100
    res = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "default.json")])  # the default caps it at 40
    (row,) = json.loads((tmp_path / "default.json").read_text())["results"]
    assert res.exit_code == 0 and row["status"] == "ok" and row["verification"]["min_psnr_db"] == 40, res.output


def test_a_report_with_no_chart_takes_the_earlier_runs_chart_away(tmp_path):
    """A run where nothing passed replaced the --json report and left the earlier run's --chart beside it: a report
    and a chart of two runs (review 50F F2). The earlier chart goes, and the line says so."""
    report, chart = tmp_path / "r.json", tmp_path / "r.png"
    args = ["serve-bench", "-m", "realesr-animevideov3", "-s", "16", "--no-peak", "--json", str(report), "--chart",
            str(chart), *TINY]
    res = CliRunner().invoke(main, [*args, "-b", "torch"])
    assert res.exit_code == 0 and chart.is_file(), res.output
    res = CliRunner().invoke(main, [*args[:-1], "-b", "ort-cpu", "--min-psnr", "200"])  # nothing passes (200: exact)
    assert res.exit_code == 1 and json.loads(report.read_text())["summary"]["ok"] == 0, res.output
    assert not chart.exists() and f"the earlier run's chart {chart} is removed" in " ".join(res.output.split()), res.output


def test_progress_lines_give_sizes_as_the_table_does():
    """-s 48x32 (width x height) was said back as 'reference 1x3x32x48' and '1x32x48 x1 workers' before the table's
    '48x32 b1': the other order, the very mix-up the README warns of (review 50F F4)."""
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "48x32", "-b", "torch",
                                    "--no-peak", *TINY[:-1]])
    assert res.exit_code == 0, res.output
    assert "reference 48x32 b1" in res.output and "48x32 b1 x1 workers" in res.output, res.output
    assert "32x48" not in res.output, res.output


def test_counts_max_time_cut_short_are_said_with_the_limit_to_raise(tmp_path):
    """--max-time-s stopped the warm-up and the timing before --warmup-iters and --min-iters without a word, and a row
    of one request advised raising --min-iters, which was 100 (57H-2); the table's note on unsteady rows named a busy
    machine alone, where each row's says 'or the run too short' (57H-5)."""
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-b", "torch", "--no-peak",
                                    "--json", str(out), *TINY, "--warmup-iters", "3", "--min-iters", "100",
                                    "--rounds", "1", "--max-time-s", "0.001"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(out.read_text())["results"]
    assert row["latency_ms"]["count"] < 100 and row["warmup"]["iterations"] < 3, row
    assert f"stopped by --max-time-s 0.001 s after {row['latency_ms']['count']} of the 100 requests --min-iters asks " \
        f"for and a warm-up of {row['warmup']['iterations']} of the 3 calls --warmup-iters asks for: raise " \
        "--max-time-s" in row["note"], row["note"]
    assert "raise --min-iters" not in row["note"], row["note"]
    from rich.console import Console

    from lway_rt.bench.report import render_table

    console = Console(record=True, width=300)
    report = json.loads(out.read_text())
    row["note"] = "unsteady timing (std/mean = 0.50): the machine was busy or the run too short"
    row["latency_ms"]["count"], row["warmup"]["iterations"] = 100, 3
    report["results"] = [row, {**row, "note": f"{row['note']}; stopped by --max-time-s 0.001 s after 1 of the 100 "
                                              "requests --min-iters asks for: raise --max-time-s"}]
    console.print(render_table(report))
    text = " ".join(console.export_text().split())
    assert "2 configuration(s) had unsteady timings (std/mean > 0.15; p50 marked *): the machine was busy or the run " \
        "too short" in text, text
    assert "1 configuration(s) stopped by --max-time-s before the --min-iters requests or --warmup-iters calls asked " \
        "for (see each row's note): raise --max-time-s" in text, text


def test_a_report_names_the_weights_timed_and_times_a_value_given_twice_once(tmp_path, monkeypatch):
    """A .pth timed had no hash of its weights in the report, and its path as typed, against a folder the report does
    not record (57H-4); -s 24 -s 24x24 -c 1 -c 1 timed each twice, rows of the same keys (57H-3)."""
    import torch

    from lway_rt.io.store import load_model, resolve_model_path
    from lway_rt.io.weights import load_state_file, state_dict_sha256

    state, _ = load_state_file(resolve_model_path("realesr-animevideov3"))
    torch.save(state, tmp_path / "mine.pth")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["serve-bench", "-m", "mine.pth", "-s", "24", "-s", "24x24", "-c", "1", "-c", "1",
                                    "--batch", "1", "--batch", "1", "-b", "torch", "--no-peak", "--json", str(out), *TINY])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert validate(report) == [] and len(report["results"]) == 1, report["results"]
    assert report["model"]["source"] == str(tmp_path / "mine.pth")
    assert report["model"]["weights_sha256"] == state_dict_sha256(load_model("mine.pth").model.state_dict())


def test_a_small_fixed_size_file_is_not_told_to_time_tiles_serve_bench_refuses():
    """A 24x24 fixed-size export was told '--size 25x25 --tile 24 --tile-overlap 6', a tile under the 32 px serve-bench
    and upscale refuse (57I-1); a 32x32 one keeps its tiled way. Values given twice from Python are timed once too
    (57I-11: only the command's were)."""
    from pathlib import Path

    import pytest

    from lway_rt.bench.runner import BenchConfig, _cases, _check_static_cases, _ExportedFile
    from lway_rt.errors import InputError

    config = BenchConfig(model="m", sizes=((48, 48), (48, 48)), batches=(1, 1), concurrency=(1, 1), tiles=(0, 0))
    assert (config.sizes, config.batches, config.concurrency, config.tiles) == (((48, 48),), (1,), (1,), (0,))
    assert BenchConfig(model="m", sizes=[[48, 48], [48, 48]]).sizes == ((48, 48),)  # as a report holds them (57K-6)
    # from Python a size is checked as -s checks it: a pair of integers (numpy's too), or a string as -s reads it
    # (57M-4, 58D-2); one size given as the list of sizes is said so, not timed as two squares (58D-1)
    import numpy as np

    assert BenchConfig(model="m", sizes=["48", "320x180", (24, 32), [np.int64(16), np.int32(8)]]).sizes == \
        ((48, 48), (180, 320), (24, 32), (16, 8))
    for bad in ((48, 0), (48,), (1.5, 2), "tiny", (True, 4), 48, None):
        with pytest.raises(InputError, match=r"^bad size"):
            BenchConfig(model="m", sizes=[bad])
    assert BenchConfig(model="m", sizes=np.array([[8, 8], [16, 24]])).sizes == ((8, 8), (16, 24))  # (58E-1)
    assert BenchConfig(model="m", sizes=list(np.array([[8, 8]]))).sizes == ((8, 8),)  # (its rows: 58H-3)
    for bad in ((180, 320), "32x48", [np.int64(48), 64], np.array([180, 320]), 32, np.array(32),
                np.array([32.0, 48.0])):
        with pytest.raises(InputError, match=r"^sizes is a list of sizes"):
            BenchConfig(model="m", sizes=bad)
    for none in (None, (), []):
        with pytest.raises(InputError, match="needs at least one value for sizes"):
            BenchConfig(model="m", sizes=none)
    cases = _cases(config, 1, 1, 4)
    for side, tiled in ((24, False), (32, True)):
        exported = _ExportedFile(Path("x.onnx"), "fp32", "", None, None, "", (1, side, side))
        with pytest.raises(InputError) as err:
            _check_static_cases(exported, cases)
        assert (f"--tile {side} --tile-overlap" in str(err.value)) == tiled, err.value


def test_a_time_cap_under_the_default_warm_up_lowers_it_as_it_lowers_the_default_minimum(tmp_path):
    """--max-time-s 0.5 was refused for the default --warmup-s 1, which the user never typed (57K-3, a regression of
    the refusal 76bed06 added for --warmup-s above --max-time-s); a typed --warmup-s above it is still refused."""
    args = ["serve-bench", "-m", "realesr-animevideov3", "-s", "24", "-b", "torch", "--no-peak", "--threads", "1",
            "--min-iters", "2", "--rounds", "1", "-q", "--max-time-s", "0.5"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, [*args, "--warmup-s", "1"])
    assert res.exit_code == 1 and "--warmup-s 1 is above --max-time-s 0.5, which stops the warm-up first" in res.output
