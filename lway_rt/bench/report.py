"""Present a serve-bench report: a terminal table, the JSON file and an optional PNG chart.

The JSON is the record (machine, versions, command, every number; schema in ``lway_rt/bench/schema.py``,
documented in ``docs/serve-bench-schema.md``); the table and chart are views of it. matplotlib is imported only
when a chart is asked for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lway_rt.bench.timing import CUT_SHORT
from lway_rt.export.parity import PSNR_CAP
from lway_rt.errors import MissingDependencyError, OutputError
from lway_rt.io.weights import atomic_path

__all__ = ["render_table", "write_json", "write_chart", "write_report", "config_name"]

_STATUS_STYLE = {"ok": "green", "failed": "bold red", "error": "bold red", "skipped": "yellow"}


def config_name(row: dict[str, Any]) -> str:
    """``256x256 b1``, ``540x960 b1 tile128``: the shape part of a configuration."""
    if row["input"] is None:
        return "-"
    inp = row["input"]
    text = f"{inp['width']}x{inp['height']} b{inp['batch']}"
    return text + (f" tile{row['tile']}" if row["tile"] else "")


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _threads(report: dict[str, Any]) -> str:
    n = report["settings"]["threads"]
    return f"{n} thread{'' if n == 1 else 's'}"


def _rss(mem: dict[str, Any]) -> str:
    if mem.get("rss_peak_mb") is None:
        return "-"
    extra = mem.get("rss_peak_above_start_mb")
    return f"{mem['rss_peak_mb']:.0f}" + ("" if extra is None else f" (+{extra:.0f})")


def render_table(report: dict[str, Any]):
    """A ``rich.table.Table`` with one row per measured configuration; skipped backends in the caption."""
    from rich.markup import escape
    from rich.table import Table

    m = report["machine"]
    gpu = ", ".join(g["name"] for g in m["gpus"]) or "no GPU"
    load = lambda key: m[key][0] if m[key] else "?"  # noqa: E731
    title = (f"serve-bench {escape(str(report['model']['spec']))} (x{report['model']['scale']}) on {m['cpu_model']}, "
             f"{_threads(report)}, {gpu}; load avg {load('load_average_start')}->{load('load_average_end')}")
    rows = [r for r in report["results"] if r["input"] is not None]
    has_gpu_time = any(r["compute_ms"] for r in rows)
    table = Table(title=title, title_justify="left")
    columns = ["backend", "input", "workers", "verified", "p50 ms", "p90 ms", "p99 ms", "img/s", "out MP/s"]
    columns += ["GPU ms"] if has_gpu_time else []
    columns += ["GFLOP/s", "% peak", "load s", "RSS MB (+run)"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("backend", "input", "verified") else "right")
    for row in rows:
        status = row["status"]
        style = _STATUS_STYLE[status]
        v = row["verification"]
        if status == "ok":
            verified = f"[{style}]yes{',' if v['psnr_db'] >= PSNR_CAP else ''} {agreement(v['psnr_db'])}[/]"
        else:
            verified = f"[{style}]{status.upper()}: {escape(str(row['reason']))}[/]"  # (a path's brackets kept)
        lat = row["latency_ms"] or {}
        mem = row["memory"] or {}
        shaky = "*" if _unsteady(row) else ""  # the caption says what the mark means
        name = row["backend"] + (" [yellow](fallback)[/]" if row["fell_back"] else "")
        load_s = "-" if row["load_s"] is None else (
            f"{row['load_s']:.2f}" if row["export_s"] is None else f"{row['load_s']:.2f}+{row['export_s']:.1f}")
        cells = [name, config_name(row), str(row["concurrency"]), verified,
                 _fmt(lat.get("p50")) + shaky, _fmt(lat.get("p90")), _fmt(lat.get("p99")),
                 _fmt(row["images_per_s"], 2), _fmt(row["output_mp_per_s"], 2)]
        if has_gpu_time:
            cells.append(_fmt((row["compute_ms"] or {}).get("p50"), 2))
        cells += [_fmt(row["achieved_gflops"], 0),
                  _fmt(None if row["peak_fraction"] is None else 100 * row["peak_fraction"], 0),
                  load_s, _rss(mem)]
        table.add_row(*cells)
    peaks = ", ".join(f"{key} {value['best']:.0f}" for key, value in report["peak_gflops"].items())
    source = report["settings"].get("input_source", "")
    crops = "synthetic crops (the 'samples' extra gives photo crops: pip install 'lway_rt[samples]')" \
        if source == "synthetic" else "photo crops"  # (58F-1: said of synthetic ones too)
    notes = [f"verified = PSNR vs torch fp32 on {crops}; load s = build (+ONNX export); RSS = process peak "
             "(+ what this configuration added above its start); "
             "% peak = share of the measured dense-kernel peak " + (
                 f"(peak GFLOP/s: {peaks})" if peaks else "(no peak measured: --no-peak)"
                 if not report["settings"].get("measure_peak") else "(no peak measured: no backend was built)")
             ] if rows else []  # (the columns' legend: none without a row)
    for row in report["results"]:
        if row["input"] is None:
            notes.append(f"{row['status']}: {row['backend']}: {escape(str(row['reason']))}")
    usable = (report.get("machine") or {}).get("usable_cores")
    crowded = sorted({r["backend"] for r in report["results"]
                      if usable and (r.get("options") or {}).get("threads") and r["options"]["threads"] > usable})
    if crowded:  # also said while it ran, but not under --quiet
        notes.append(f"{', '.join(crowded)} ran more threads than the {usable} usable core(s): the threads contended, "
                     "and the times show it")
    unsteady = sum(1 for r in rows if _unsteady(r))
    if unsteady:
        notes.append(f"{unsteady} configuration(s) had unsteady timings (std/mean > 0.15; p50 marked *): the machine "
                     "was busy or the run too short")  # (as each row's note says: 57H-5)
    m = report.get("machine") or {}
    start = (m.get("load_average_start") or [None])[0]  # (as it began: the end's counts this run's own threads)
    timed = any(r["status"] == "ok" for r in rows)  # (with none, "these times" are none: a rerun when idle times none)
    if timed and usable and start is not None and start > usable:  # steady but shared: every time is longer than on an idle
        # machine, and by more for backends that use every core (review 48F F6: torch rows 10-50x slower, no note)
        notes.append(f"the load average was {start:g} on {usable} usable core(s) as the run began: other processes "
                     "shared the CPU, so these times are longer than on an idle machine, and by more for some rows than "
                     "others (PyTorch's threads, timed alone or beside other workers, most of all: 6-30x apart on a "
                     "2-core machine at load 4-7), so not even their ratios hold: run again when it is idle")
    cut = sum(1 for r in rows if CUT_SHORT in (r["note"] or ""))
    if cut:
        notes.append(f"{cut} configuration(s) {CUT_SHORT} before the --min-iters requests or --warmup-iters calls asked "
                     "for (see each row's note): raise --max-time-s")
    single = sum(1 for r in rows if "one timed request" in (r["note"] or "") and CUT_SHORT not in (r["note"] or ""))
    if single:
        notes.append(f"{single} configuration(s) timed one request: no spread to judge steadiness by (raise --min-iters)")
    unpeaked = sorted({r["backend"] for r in rows if "no bf16 peak" in (r["note"] or "")})
    if unpeaked:
        notes.append(f"{', '.join(unpeaked)}: no % peak, this CPU has no native bf16 (avx512_bf16, amx_bf16) to probe a "
                     "fair bf16 peak with")
    table.caption = "\n".join(notes)
    table.caption_justify = "left"
    return table


def agreement(psnr_db: float) -> str:
    """How close a backend's output is to the reference, in words: the PSNR is capped at ``PSNR_CAP``, which means
    bit-identical (torch fp32 against its own reference), so it reads "identical" rather than "200 dB"."""
    return "identical" if psnr_db >= PSNR_CAP else f"{psnr_db:.0f} dB"


#: the PNG text chunk that marks a chart as serve-bench's: an existing file without it is not replaced
CHART_SOFTWARE = "lwayrt serve-bench"


def check_output_paths(json_path: str | Path | None, chart_path: str | Path | None, keep: Sequence[Path]) -> None:
    """Refuse, before anything is measured, a --json / --chart path that would replace something the user has: the
    model file or its manifest (``keep``), the other output, or an existing file that is not an earlier
    serve-bench report / chart (an earlier report or chart of the same name is replaced, as a rerun expects)."""
    kept = {Path(k).expanduser().resolve() for k in keep}
    given = [(opt, Path(p).expanduser()) for opt, p in (("--json", json_path), ("--chart", chart_path)) if p]
    if len(given) == 2 and given[0][1].resolve() == given[1][1].resolve():
        raise OutputError(f"--json and --chart both name {given[0][1]}: give them different files")
    from lway_rt.io.weights import check_file_destination

    for opt, p in given:
        check_file_destination(p, opt)
        _check_folder_takes_files(p, opt)
        if p.resolve() in kept:
            raise OutputError(f"{opt} {p} is the model being measured (or its manifest): choose another file")
        if p.is_file() and not (_is_report(p) if opt == "--json" else _is_chart(p)):
            what = "serve-bench report" if opt == "--json" else "serve-bench chart"
            unmarked = "" if opt == "--json" else (", or delete it if it is a chart serve-bench wrote before it "
                                                   "marked its charts")
            raise OutputError(f"{opt} {p} exists and is not a {what}: choose another file{unmarked} (it is left as "
                              "it is)")
        if opt == "--chart" and p.suffix.lower() != ".png":  # it was written as PNG data under any name
            raise OutputError(f"--chart {p}: the chart is a PNG image; name a .png file")
    if chart_path:  # not after the measuring (and the report and chart are written together: ``write_report``)
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise MissingDependencyError("matplotlib", "plot", "the serve-bench chart", "leave out --chart")


def _check_folder_takes_files(path: Path, option: str) -> None:
    """Refuse now, not after the measuring, a destination whose folder takes no new file (``/proc``, a read-only
    mount): a probe file is made and removed in the folder, or where it is missing in its nearest existing parent
    (the folders the user asked for are made only when the report is written)."""
    from lway_rt.io.weights import write_probe

    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        write_probe(folder)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write to {folder}: {exc.strerror or exc}; choose another "
                          f"{option}") from None


def _is_report(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"results", "summary", "machine"} <= data.keys()


def _is_chart(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format == "PNG" and im.info.get("Software") == CHART_SOFTWARE
    except Exception:  # noqa: BLE001 - not an image at all
        return False


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Validate against the schema, then write atomically (indent 1, sorted as built)."""
    return write_report(report, path, None)[0]


def write_report(report: dict[str, Any], json_path: str | Path | None, chart_path: str | Path | None) -> list[Path]:
    """The JSON report and its chart (each where given), both written to temporary files first and then renamed
    back to back: a run killed while writing them leaves the earlier run's pair or this run's, not one of each."""
    import contextlib

    from lway_rt.bench.schema import validate_report

    written = []
    with contextlib.ExitStack() as renames:
        if json_path is not None:
            validate_report(report)
            written.append(Path(json_path))
            tmp = renames.enter_context(atomic_path(Path(json_path)))
            tmp.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        if chart_path is not None:
            written.append(Path(chart_path))
            _draw_chart(report, renames.enter_context(atomic_path(Path(chart_path))))
    return written


def write_chart(report: dict[str, Any], path: str | Path) -> Path:
    """Two bar charts per verified configuration: latency (bar p50, whisker to p99, or to the slowest request where
    p99 is null) and images/s."""
    return write_report(report, None, path)[0]


def _unsteady(row: dict[str, Any]) -> bool:
    """The row's timings were unsteady (the runner's note says so; it may follow a fallback note)."""
    return "unsteady timing" in (row.get("note") or "")


def _draw_chart(report: dict[str, Any], target: Path) -> None:
    """``write_chart``'s picture, saved as PNG at ``target``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "plot", "the serve-bench chart", "leave out --chart") from exc

    rows = [r for r in report["results"] if r["status"] == "ok"]
    if not rows:
        raise OutputError("no configuration passed verification and timing: nothing to chart")
    shaky = [_unsteady(r) for r in rows]  # marked as the table marks them: hatched, '*' (review 56A-2)
    labels = [f"{r['backend']}{' *' if s else ''}\n{config_name(r)}" + (f" x{r['concurrency']}" if r["concurrency"] > 1
                                                                         else "") for r, s in zip(rows, shaky)]
    p50 = [r["latency_ms"]["p50"] for r in rows]
    # p99 is null below 100 requests (it would be the maximum): the whisker then reaches the slowest request
    p99 = [r["latency_ms"]["p99"] if r["latency_ms"]["p99"] is not None else r["latency_ms"]["max"] for r in rows]
    ips = [r["images_per_s"] for r in rows]
    kinds = sorted({r["backend"] for r in rows})
    colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(kinds)}
    colour = [colours[r["backend"]] for r in rows]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.45 * len(rows) + 2.0), sharey=True)
    y = range(len(rows))
    hatch = ["//" if s else None for s in shaky]
    ax1.barh(y, p50, color=colour, xerr=[[0] * len(rows), [b - a for a, b in zip(p50, p99)]], capsize=3, hatch=hatch,
             edgecolor="white")
    ax1.set_xlabel("latency per request, ms (bar p50, whisker to p99" +
                   (", or the slowest request below 100)" if any(r["latency_ms"]["p99"] is None for r in rows) else ")"))
    ax1.set_yticks(list(y), labels, fontsize=8)
    ax1.invert_yaxis()
    ax2.barh(y, ips, color=colour, hatch=hatch, edgecolor="white")
    ax2.set_xlabel("images / s")
    for i, r in enumerate(rows):
        if r["peak_fraction"] is not None:
            ax2.text(ips[i], i, f" {100 * r['peak_fraction']:.0f}% peak", va="center", fontsize=7)
    m = report["machine"]
    # the GPU is named where a row shown ran on it (a CPU-only run on a machine with a GPU had its title name it)
    gpu = ", " + m["gpus"][0]["name"] if m["gpus"] and any(r["device"] == "cuda" for r in rows) else ""
    fig.suptitle(f"{report['model']['spec']} x{report['model']['scale']} on {m['cpu_model']} "
                 f"({_threads(report)}{gpu}), "
                 f"load avg {m['load_average_start'][0] if m['load_average_start'] else '?'}", fontsize=10)
    left_out = Counter(r["status"] for r in report["results"] if r["status"] != "ok")
    footnotes = []  # said on the picture, which travels without the table: it had left these out unsaid
    if any(shaky):
        footnotes.append(f"* hatched: unsteady timing ({sum(shaky)} configuration(s), std/mean > 0.15): the machine "
                         "was busy or the run too short; measure again before comparing them")
    if left_out:
        footnotes.append("not shown: " + ", ".join(f"{n} {status}" for status, n in sorted(left_out.items()))
                         + " configuration(s) (reasons in the report's table and JSON)")
    height = fig.get_size_inches()[1]
    for k, line in enumerate(reversed(footnotes)):
        fig.text(0.01, (0.05 + 0.2 * k) / height, line, fontsize=8, color="firebrick")
    fig.tight_layout(rect=(0, (0.1 + 0.2 * len(footnotes)) / height if footnotes else 0, 1, 1))
    try:
        fig.savefig(target, format="png", dpi=110, metadata={"Software": CHART_SOFTWARE})
    finally:
        plt.close(fig)
