"""An end-to-end serve-bench on the real compact model: verification, timing fields, schema, views."""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lway_rt.bench.runner import SCHEMA_VERSION, BenchConfig, parse_size, run_bench
from lway_rt.bench.schema import SCHEMA, SchemaError, validate, validate_report
from lway_rt.bench.timing import TimingPolicy
from lway_rt.errors import InputError

FAST = TimingPolicy(warmup_s=0.0, warmup_iters=1, min_iters=4, min_time_s=0.0, max_time_s=10, rounds=2)
PER_PIXEL_MACS = 3 * 64 * 9 + 16 * 64 * 64 * 9 + 64 * 48 * 9  # realesr-animevideov3


@pytest.fixture(scope="module")
def anime():
    from lway_rt.io.store import load_model

    return load_model("realesr-animevideov3")


@pytest.fixture(scope="module")
def report(anime):
    config = BenchConfig(model="realesr-animevideov3", backends=("torch", "ort-cpu", "tensorrt", "ort-cuda"),
                         sizes=((24, 40),), tiles=(0, 32), tile_overlap=4, concurrency=(1, 2), threads=1, timing=FAST)
    return run_bench(config, model=anime, command="pytest")


def test_report_validates_and_counts(report):
    validate_report(report)
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN or infinity anywhere
    s = report["summary"]
    assert s["ok"] == 2 * 2 * 2 and s["failed"] == s["error"] == 0  # torch, ort-cpu x whole/tiled x 1/2 workers
    assert s["skipped"] == sum(r["status"] == "skipped" for r in report["results"])
    # the installed distribution's version: PyPI's CUDA wheel is '2.13.0' there while torch.__version__ says
    # '2.13.0+cu130' (a GPU's CUDA runtime is recorded under machine.gpus)
    assert report["machine"]["cpu_model"] and report["packages"]["torch"] == importlib.metadata.version("torch")
    assert report["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert report["command"] == "pytest" and report["settings"]["threads"] == 1


def test_every_timed_row_was_verified_first_and_is_consistent(report):
    ok = [r for r in report["results"] if r["status"] == "ok"]
    for r in ok:
        v, lat = r["verification"], r["latency_ms"]
        assert r["verified"] and v["finite"] and v["psnr_db"] >= v["min_psnr_db"]
        assert v["min_psnr_db"] == (40.0 if r["tile"] else 50.0)
        assert lat["count"] >= FAST.min_iters and lat["min"] <= lat["p50"] <= lat["max"]
        assert (lat["p90"] is None) == (lat["count"] < 10) and (lat["p99"] is None) == (lat["count"] < 100)
        assert r["images_per_s"] == pytest.approx(lat["requests_per_s"] * r["input"]["batch"])
        assert r["output_mp_per_s"] == pytest.approx(r["images_per_s"] * 96 * 160 / 1e6)
        assert r["flops_per_image"] == 2 * 24 * 40 * PER_PIXEL_MACS
        assert r["achieved_gflops"] == pytest.approx(r["flops_per_image"] * r["images_per_s"] / 1e9)
        mem = r["memory"]
        assert 0 < r["peak_fraction"] < 3 and mem["rss_peak_mb"] > 100 and mem["rss_mb"] > 100
        assert mem["rss_peak_scope"] == "configuration" and mem["rss_peak_above_start_mb"] > -5  # Linux resets the mark
        assert mem["rss_mb"] <= mem["rss_peak_mb"] + 1  # sampled when this configuration finished, not after the others
        assert r["warmup"]["iterations"] >= 1 and r["load_s"] > 0 and r["compute_ms"] is None
    whole = {r["backend"]: r for r in ok if r["tile"] == 0 and r["concurrency"] == 1}
    assert whole["torch"]["verification"]["psnr_db"] == 200.0  # eager torch is the reference itself
    assert whole["ort-cpu"]["verification"]["psnr_db"] > 80 and whole["ort-cpu"]["export_s"] > 0
    peaks = report["peak_gflops"]["cpu_fp32"]
    assert peaks["best"] >= max(peaks["start"]["best"], peaks["end"]["best"]) > 0


def test_unavailable_backends_are_skipped_with_a_reason(report):
    skipped = {r["backend"]: r["reason"] for r in report["results"] if r["status"] == "skipped"}
    if not torch.cuda.is_available():
        assert "tensorrt" in skipped and "CUDA" in skipped["tensorrt"]
    for reason in skipped.values():
        assert len(reason) > 20 and "\n" not in reason


def test_a_backend_that_does_not_reproduce_the_reference_is_failed_not_timed(anime):
    broken = copy.deepcopy(anime)
    with torch.no_grad():
        broken.model.body[4].weight.mul_(1.5)  # e.g. an engine built from stale weights
    config = BenchConfig(model="realesr-animevideov3", backends=("torch",), sizes=((24, 24),), threads=1,
                         timing=FAST, measure_peak=False)
    rep = run_bench(config, model=broken, reference=anime.model)
    validate_report(rep)
    (row,) = rep["results"]
    assert row["status"] == "failed" and not row["verified"] and row["latency_ms"] is None
    assert row["verification"]["psnr_db"] < 50 and "below 50 dB" in row["reason"]
    assert rep["summary"] == {"ok": 0, "failed": 1, "skipped": 0, "error": 0}


def test_schema_checker_catches_broken_reports(report):
    bad = copy.deepcopy(report)
    del bad["machine"]["cpu_model"]
    bad["results"][0]["status"] = "great"
    bad["results"][-1]["latency_ms"] = {"p50": "fast"}
    bad["results"][0]["surprise"] = 1
    bad["schema_version"] = "0.1"
    errors = validate(bad)
    joined = "\n".join(errors)
    for needle in ("missing required field 'cpu_model'", "'great' is not one of", "unexpected field 'surprise'",
                   f"must be '{SCHEMA_VERSION}'", "$.results["):
        assert needle in joined
    with pytest.raises(SchemaError, match="does not match schema"):
        validate_report(bad)
    if importlib.util.find_spec("jsonschema") is not None:  # the schema is standard JSON Schema too
        import jsonschema

        jsonschema.validate(report, SCHEMA)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, SCHEMA)


def test_schema_checker_catches_what_the_doc_rules_out(report):
    """The checker let through reports the doc rules out: settings of any type, NaN and negative numbers, a p90 of six
    requests, an ok row with no timing, a failed row with no reason, a summary that miscounts."""
    ok = next(i for i, r in enumerate(report["results"]) if r["status"] == "ok")
    other = next(i for i, r in enumerate(report["results"]) if r["status"] != "ok")
    cases = {
        "settings.sizes": lambda r: r["settings"].update(sizes="x"),
        "settings.concurrency": lambda r: r["settings"].update(concurrency=None),
        "settings.timing": lambda r: r["settings"].update(timing={}),
        "not a finite number": lambda r: r["results"][ok]["latency_ms"].update(mean=float("nan")),
        "below the minimum": lambda r: r["results"][ok]["latency_ms"].update(p50=-1.0),
        "p90: must be null": lambda r: r["results"][ok]["latency_ms"].update(count=6, p90=1.0, p99=None),
        "an ok row must be verified and timed": lambda r: r["results"][ok].update(latency_ms=None),
        "must give its reason": lambda r: r["results"][other].update(reason=None),
        "does not count the results' statuses": lambda r: r["summary"].update(ok=r["summary"]["ok"] + 1),
    }
    assert validate(report) == []
    for needle, spoil in cases.items():
        bad = copy.deepcopy(report)
        spoil(bad)
        assert any(needle in e for e in validate(bad)), (needle, validate(bad))


def test_json_chart_and_table(report, tmp_path):
    from rich.console import Console

    from lway_rt.bench.report import render_table, write_chart, write_json

    path = write_json(report, tmp_path / "out" / "r.json")
    assert validate(json.loads(path.read_text())) == []
    png = write_chart(report, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    console = Console(record=True, width=220)
    console.print(render_table(report))
    text = console.export_text()
    assert "ort-cpu" in text and "40x24 b1 tile32" in text and "yes, identical" in text and "skipped: tensorrt" in text
    assert "more threads than" not in text  # threads=1
    assert ", 1 thread, " in text and "1 threads" not in text, text  # (it said "1 threads")
    assert ("(peak GFLOP/s: cpu_fp32 " in text) == bool(report["peak_gflops"]), text
    assert "on photo crops;" in " ".join(text.split()) and report["settings"]["input_source"].startswith("skimage")
    synthetic = copy.deepcopy(report)  # without the samples extra the crops are synthetic: said so (58F-1)
    synthetic["settings"]["input_source"] = "synthetic"
    console = Console(record=True, width=220)
    console.print(render_table(synthetic))
    assert "verified = PSNR vs torch fp32 on synthetic crops (the 'samples' extra gives photo crops" in \
        " ".join(console.export_text().split())
    unmeasured = copy.deepcopy(report)
    unmeasured["peak_gflops"] = {}  # --no-peak: it said "GFLOP/s: not measured", as if that column were not
    unmeasured["settings"]["measure_peak"] = False
    console = Console(record=True, width=220)
    console.print(render_table(unmeasured))
    assert "(no peak measured: --no-peak)" in console.export_text() and "not measured" not in console.export_text()
    unmeasured["settings"]["measure_peak"] = True  # asked for, but no backend was built to probe for (it said --no-peak)
    console = Console(record=True, width=220)
    console.print(render_table(unmeasured))
    assert "(no peak measured: no backend was built)" in console.export_text()
    busy = copy.deepcopy(report)  # a machine others shared: said, steady timings or not (review 48F F6)
    busy["machine"].update(usable_cores=2, load_average_start=[5.0, 3.0, 1.0], load_average_end=[5.5, 3.0, 1.0])
    console = Console(record=True, width=220)
    console.print(render_table(busy))
    said = " ".join(console.export_text().split())
    assert "the load average was 5 on 2 usable core(s) as the run began: other processes shared the CPU" in said
    assert "so not even their ratios hold: run again when it is idle" in said, said  # (review 50F F3)
    # the end's load counts the run's own threads: an idle machine a long run kept busy is not said to be shared
    busy["machine"].update(load_average_start=[0.5, 0.4, 0.3], load_average_end=[5.0, 3.0, 1.0])
    console = Console(record=True, width=220)
    console.print(render_table(busy))
    assert "the load average was" not in console.export_text()
    crowded = copy.deepcopy(report)
    crowded["machine"]["usable_cores"] = 1
    for row in crowded["results"]:
        if row["backend"] == "ort-cpu" and row.get("options"):
            row["options"]["threads"] = 3  # as --threads 3 on one core ran it (said while it ran, not under --quiet)
    console = Console(record=True, width=220)
    console.print(render_table(crowded))
    assert "ort-cpu ran more threads than the 1 usable core(s)" in console.export_text()
    bad = copy.deepcopy(report)
    bad["results"][0]["status"] = "unknown"
    with pytest.raises(SchemaError):
        write_json(bad, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_schema_is_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "serve-bench-schema.md").read_text()
    row_fields = SCHEMA["properties"]["results"]["items"]["properties"]
    for name in list(SCHEMA["properties"]) + list(row_fields):
        assert f"`{name}`" in doc, f"field {name} is not documented"


def test_config_and_sizes_are_validated(anime):
    assert parse_size("540p") == (540, 960) and parse_size("320x180") == (180, 320) and parse_size("64") == (64, 64)
    with pytest.raises(InputError, match="bad size"):
        parse_size("big")
    with pytest.raises(InputError, match="larger than twice the overlap"):
        BenchConfig(model="m", tiles=(40,), tile_overlap=20)
    with pytest.raises(InputError, match="concurrency"):
        BenchConfig(model="m", concurrency=(0,))
    with pytest.raises(InputError, match="nothing tiled"):
        run_bench(BenchConfig(model="m", sizes=((24, 24),), tiles=(32,), tile_overlap=4, timing=FAST), model=anime)


def test_report_and_chart_are_renamed_together(report, tmp_path, monkeypatch):
    """kill -9 between the two writes left a new report beside the earlier run's chart: both now go to temporary
    files first, and a failure while drawing the chart leaves neither replaced."""
    import lway_rt.bench.report as report_mod

    rep = report
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    report_mod.write_report(rep, js, png)
    before = js.read_bytes(), png.read_bytes()

    def broken(report, target):
        Path(target).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(report_mod, "_draw_chart", broken)
    changed = json.loads(js.read_text())
    changed["settings"]["threads"] = changed["settings"]["threads"] + 1
    with pytest.raises(KeyboardInterrupt):
        report_mod.write_report(changed, js, png)
    assert (js.read_bytes(), png.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]  # no temporary file left


def test_settings_fields_the_doc_promises_are_required(report):
    """The doc says the settings fields are null, never missing; the schema required none of these."""
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "serve-bench-schema.md").read_text()
    settings_line = next(line for line in doc.splitlines() if line.startswith("| `settings` |"))
    documented = set(re.findall(r"`([a-z_0-9]+)`", settings_line)) - {"settings", "fp32", "fp16", "bf16", "cuda"}
    for name in ("seed", "model", "min_psnr", "tiled_min_psnr_db", "measure_peak", "detail_cap", "base_model",
                 "flops_counted", "reference_device"):
        assert name in documented
    assert documented <= set(report["settings"])  # the runner writes every one
    for name in sorted(documented):
        bad = copy.deepcopy(report)
        del bad["settings"][name]
        assert f"$.settings: missing required field '{name}'" in validate(bad), name


def test_report_module_names_files_that_exist():
    """report.py's docstring pointed to lway_rt/bench/schema.json, which does not exist."""
    import re

    import lway_rt.bench.report as report_mod

    root = Path(__file__).resolve().parents[1]
    named = re.findall(r"``((?:lway_rt|docs)/[\w./-]+)``", report_mod.__doc__)
    assert named and all((root / name).is_file() for name in named), named


def test_the_chart_and_table_cope_with_null_percentiles(report, tmp_path):
    """p90 / p99 / cv are null with few requests: the chart drew its whiskers from p99 and failed on null."""
    from rich.console import Console

    from lway_rt.bench.report import render_table, write_report

    few = copy.deepcopy(report)
    for row in few["results"]:
        if row["latency_ms"]:
            row["latency_ms"].update(p90=None, p99=None, std=None, cv=None)
    validate_report(few)
    write_report(few, tmp_path / "r.json", tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    console = Console(record=True, width=220)
    console.print(render_table(few))
    assert "ort-cpu" in console.export_text()


def test_benchmark_records_are_strict_json_and_replaced_whole(tmp_path):
    """write_benchmark_record wrote NaN and Infinity (not JSON) straight over the earlier file; non-finite numbers are
    now null and the file is written beside and renamed over the old one."""
    import os

    from lway_rt.bench.machine import write_benchmark_record

    dest = tmp_path / "rec.json"
    dest.write_text("{}")
    before = os.stat(dest).st_ino

    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    out = write_benchmark_record(dest, "x/1", [], rows=[{"ratio": float("nan"), "ms": float("inf"), "ok": 1.5}],
                                 pair=(float("-inf"), 2.0))
    data = json.loads(dest.read_text(), parse_constant=refuse)
    assert data["rows"] == [{"ratio": None, "ms": None, "ok": 1.5}] and data["pair"] == [None, 2.0] and out == data
    assert os.stat(dest).st_ino != before and sorted(p.name for p in tmp_path.iterdir()) == ["rec.json"]
    write_benchmark_record(tmp_path / "new" / "r.json", "x/1", [])  # the folder is made as before
    assert json.loads((tmp_path / "new" / "r.json").read_text())["format"] == "x/1"


def test_the_report_names_the_commit_that_ran():
    """packages.lway_rt gave the version number, the same for every commit (and an editable install's, not a clone's
    on PYTHONPATH): a report could not tell which code made it. lway_rt_commit names it."""
    import subprocess

    import lway_rt
    from lway_rt.bench.machine import package_versions

    root = Path(lway_rt.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        assert package_versions()["lway_rt_commit"] is None  # (an installed wheel)
        return
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert head[:12] in package_versions()["lway_rt_commit"]


def test_the_chart_counts_the_rows_it_leaves_out_and_names_a_gpu_only_where_a_row_ran_on_it(report, tmp_path,
                                                                                              monkeypatch):
    """The picture travels without the table: it left out failed and skipped rows unsaid, and named the machine's GPU
    in its title when every row shown ran on the CPU (review 47I I9)."""
    import matplotlib
    from matplotlib.figure import Figure

    from lway_rt.bench.report import write_chart

    matplotlib.use("Agg")
    seen = []
    real = Figure.savefig

    def spy(fig, *args, **kwargs):
        seen.append([fig._suptitle.get_text()] + [t.get_text() for t in fig.texts if t is not fig._suptitle])
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    gpu = copy.deepcopy(report)
    gpu["machine"]["gpus"] = [{"name": "Some GPU 9000"}]
    for row in gpu["results"]:
        row["device"] = "cpu" if row["status"] == "ok" else row["device"]  # (a skipped TensorRT row names cuda)
    write_chart(gpu, tmp_path / "cpu.png")
    title, *notes = seen[-1]
    assert "Some GPU 9000" not in title
    statuses = [r["status"] for r in report["results"] if r["status"] != "ok"]
    notes = [n for n in notes if not n.startswith("* hatched")]  # (the fixture's short run may have unsteady rows)
    assert statuses and len(notes) == 1 and f"{statuses.count('skipped')} skipped" in notes[0], notes
    for row in gpu["results"]:
        row["device"] = "cuda" if row["status"] == "ok" else row["device"]
    gpu["results"] = [r for r in gpu["results"] if r["status"] == "ok"]
    write_chart(gpu, tmp_path / "gpu.png")
    title, *notes = seen[-1]
    assert "Some GPU 9000" in title and [n for n in notes if not n.startswith("* hatched")] == []


def test_the_chart_marks_unsteady_timings_as_the_table_does(report, tmp_path, monkeypatch):
    """The table marks an unsteady row's p50 with '*' and says why; the chart drew it as an ordinary bar, a busy run's
    684 ms bar beside 30 ms ones with nothing on the picture to say so (review 56A-2)."""
    import matplotlib
    from matplotlib.figure import Figure

    from lway_rt.bench.report import write_chart

    matplotlib.use("Agg")
    seen = []
    real = Figure.savefig

    def spy(fig, *args, **kwargs):
        ax1 = fig.axes[0]
        seen.append(([t.get_text() for t in ax1.get_yticklabels()], [p.get_hatch() for p in ax1.patches],
                     [t.get_text() for t in fig.texts if t is not fig._suptitle]))
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    steady = copy.deepcopy(report)
    ok = [r for r in steady["results"] if r["status"] == "ok"]
    assert len(ok) >= 2
    for r in ok:  # (the fixture's short run may itself be unsteady)
        r["note"] = None
    shaky = copy.deepcopy(steady)
    ok = [r for r in shaky["results"] if r["status"] == "ok"]
    ok[1]["note"] = "unsteady timing (std/mean = 0.57): the machine was busy or the run too short"
    write_chart(shaky, tmp_path / "shaky.png")
    labels, hatches, notes = seen[-1]
    assert [" *" in label.split("\n")[0] for label in labels] == [r is ok[1] for r in ok], labels
    assert [bool(h) for h in hatches] == [r is ok[1] for r in ok], hatches
    assert any(n.startswith("* hatched: unsteady timing (1 configuration(s)") for n in notes), notes
    write_chart(steady, tmp_path / "steady.png")
    labels, hatches, notes = seen[-1]
    assert not any(" *" in label for label in labels) and not any(hatches) and not any("unsteady" in n for n in notes)
