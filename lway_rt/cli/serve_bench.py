"""``lwayrt serve-bench``: verified latency and throughput of each deployment backend."""

from __future__ import annotations

import json
import shlex
import sys

import click

from lway_rt.cli._params import FINITE, NAME, PathParam, cap_word, on_a_terminal, typed
from lway_rt.errors import LwayError, OutputError

_BACKEND_HELP = ("Backend to compare (repeatable): torch, ort-cpu, ort-cuda, ort-trt, tensorrt, plus options after '+': "
                 "cuda, cl (channels-last), compile, fp16, bf16, threads=N, opt=disable|basic|extended|all, noarena, "
                 "parallel, fallback, ws=MB. 'all' = every kind with its fast variants (unavailable ones are listed as skipped). "
                 "Default: torch and ort-cpu on the CPU; torch+cuda, ort-cuda and tensorrt with --device cuda.")

_ALL = ("torch", "torch+cl", "torch+bf16", "torch+compile", "ort-cpu", "ort-cuda", "ort-cuda+fp16", "ort-trt",
        "ort-trt+fp16", "tensorrt", "tensorrt+fp16")
_ALL_CUDA = ("torch+cuda", "torch+cuda+cl", "torch+cuda+fp16", "torch+cuda+compile")


class BenchFailed(LwayError):
    """Some configuration failed verification or could not run."""


@click.command("serve-bench")
@click.option("--model", "-m", default=None, type=NAME,
              help="Store name (see 'lwayrt models list'), a .pth/.safetensors file, an 'lwayrt adapt' --out folder, "
                   "or an .onnx file from 'lwayrt export' (timed as it is with the ONNX backends of its precision, "
                   "verified against the weights its manifest names). Required.")
@click.option("--backend", "-b", "backends", multiple=True, help=_BACKEND_HELP)
@click.option("--size", "-s", "sizes", multiple=True,
              help="LR input size (repeatable): N, WxH or 360p/480p/540p/720p/1080p. Default: 128 and 256.")
@click.option("--batch", "batches", multiple=True, type=int, help="Batch size (repeatable). Default 1.")
@click.option("--tile", "tiles", multiple=True, type=int,
              help="0 = whole image, N = windows of at most NxN laid out as 'upscale --tile N' lays them, one per call "
                   "(repeatable). Default 0.")
@click.option("--tile-overlap", default=32, show_default=True, type=click.IntRange(min=0),
              help="Context pixels between windows (upscale's default, so tiled rows time what upscale runs).")
@click.option("--concurrency", "-c", "concurrency", multiple=True, type=int,
              help="Closed-loop worker threads (repeatable). Default 1.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Device of the torch backends and the reference (cuda: the first GPU; CUDA_VISIBLE_DEVICES=N "
                   "before the command picks another).")
@click.option("--threads", type=int, default=None,
              help="CPU threads per backend (default: OMP_NUM_THREADS where set, else all usable cores).")
@click.option("--warmup-s", default=1.0, type=FINITE, show_default=True, help="Minimum warm-up time per configuration.")
@click.option("--warmup-iters", default=3, show_default=True, help="Minimum warm-up iterations.")
@click.option("--min-iters", default=20, show_default=True, help="Minimum timed requests.")
@click.option("--min-time-s", default=3.0, type=FINITE, show_default=True, help="Minimum timing duration.")
@click.option("--max-time-s", default=60.0, type=FINITE, show_default=True, help="Stop timing a configuration after this long.")
@click.option("--rounds", default=3, show_default=True,
              help="Split timing into rounds that alternate between backends (fair on a machine with changing load).")
@click.option("--detail-cap", "detail_cap", default="auto", show_default=True, metavar="auto|off|C", callback=cap_word,
              help="auto: weights adapted with --detail-cap are timed with that cap, as lwayrt export ships them (the "
                   "unadapted model runs beside the adapted one); off: the adapted network alone; C: this cap.")
@click.option("--base-model", "base_model", metavar="M", type=NAME,
              help="The unadapted model a detail cap compares with [the one the weights name].")
@click.option("--min-psnr", type=FINITE, default=None,
              help="Verification threshold in dB vs torch fp32, tiled rows too (default: 50 fp32, 35 fp16, 30 bf16; "
                   "tiled at most 40).")
@click.option("--no-peak", is_flag=True, help="Skip measuring the machine's matmul/conv peak.")
@click.option("--json", "json_path", type=PathParam(dir_okay=False), default=None,
              help="Write the JSON report here; - prints it on standard output (the table goes to standard error).")
@click.option("--chart", "chart_path", type=PathParam(dir_okay=False), default=None, help="Write a PNG chart here.")
@click.option("--schema", "print_schema", is_flag=True, help="Print the report's JSON Schema and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def command(model, backends, sizes, batches, tiles, tile_overlap, concurrency, device, threads, warmup_s, warmup_iters,
            min_iters, min_time_s, max_time_s, rounds, detail_cap, base_model, min_psnr, no_peak, json_path, chart_path, print_schema, quiet):
    """Verify each backend against torch fp32, then time it: percentiles, throughput, memory, FLOP efficiency."""
    if print_schema:
        from lway_rt.bench.schema import SCHEMA

        click.echo(json.dumps(SCHEMA, indent=1))
        return
    if not model:
        raise click.UsageError("Missing option '--model' / '-m' (a store name, a weights file, or an .onnx file from "
                               "'lwayrt export').")
    given = typed(click.get_current_context(), "min_time_s", "max_time_s", "warmup_s")
    if max_time_s <= 0 or min_time_s < 0:  # (said as such, not as a clash of the two whose advice could not help)
        from lway_rt.errors import InputError

        raise InputError(f"--min-time-s must be >= 0 and --max-time-s > 0, got {min_time_s:g} and {max_time_s:g}")
    if min_time_s > max_time_s and "--min-time-s" not in given:  # a cap below the default minimum: the cap is the time
        min_time_s = max_time_s
    if warmup_s > max_time_s and "--warmup-s" not in given:  # and the warm-up's (57K-3: a cap under 1 s was refused
        warmup_s = max_time_s  # for the default --warmup-s 1 the user never typed)
    for option, value in (("--min-time-s", min_time_s), ("--warmup-s", warmup_s)):  # (the warm-up's too: 57I-10)
        if value > max_time_s:  # the stop rule would win, and the minimum asked for would not be met, unsaid
            from lway_rt.errors import InputError

            raise InputError(f"{option} {value:g} is above --max-time-s {max_time_s:g}"
                             f"{'' if '--max-time-s' in given else ' (the default)'}, which stops "
                             f"{'the timing' if option == '--min-time-s' else 'the warm-up'} first: lower {option} or "
                             "raise --max-time-s")
    import torch
    from lway_rt.cli._console import PipeConsole as Console
    from rich.markup import escape

    from pathlib import Path

    from lway_rt.bench.report import check_output_paths, render_table, write_report
    from lway_rt.bench.runner import BenchConfig, parse_size, run_bench
    from lway_rt.bench.timing import TimingPolicy
    from lway_rt.export.manifest import manifest_path

    given = Path(model).expanduser()
    exported = given.suffix.lower() == ".onnx"  # timed as it is, by the ONNX backends of its precision
    # the report for a pipe (| jq) as eval-degae gives it, the table to stderr; the string as typed, so ./- is a file
    to_stdout = json_path is not None and str(json_path) == "-"
    json_file = None if to_stdout else json_path
    check_output_paths(json_file, chart_path, [given, manifest_path(given)] if exported else [given])  # before minutes of timing, not after

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not backends:
        backends = ("torch", "ort-cpu") if device == "cpu" else ("torch+cuda", "ort-cuda", "tensorrt")
    expanded: list[str] = []
    for b in backends:
        expanded += (list(_ALL) + (list(_ALL_CUDA) if device == "cuda" else [])) if b == "all" else [b]
    default_sizes, default_batches = ("128", "256"), (1,)
    if exported:  # a file exported for one fixed shape: timed at that shape unless sizes are given
        from lway_rt.bench.runner import exported_static_shape
        from lway_rt.export.manifest import find_manifest

        static = exported_static_shape(find_manifest(given)) if given.is_file() else None
        if static:
            default_sizes, default_batches = (f"{static[2]}x{static[1]}",), (static[0],)
    config = BenchConfig(
        model=model, backends=tuple(expanded), sizes=tuple(parse_size(s) for s in (sizes or default_sizes)),
        batches=tuple(batches or default_batches), tiles=tuple(tiles or (0,)), tile_overlap=tile_overlap,
        concurrency=tuple(concurrency or (1,)), device=device, threads=threads, min_psnr=min_psnr,
        timing=TimingPolicy(warmup_s=warmup_s, warmup_iters=warmup_iters, min_iters=min_iters, min_time_s=min_time_s,
                            max_time_s=max_time_s, rounds=rounds),
        measure_peak=not no_peak, detail_cap=detail_cap, base_model=base_model,
    )
    console = Console(stderr=True)
    progress = None if quiet else (lambda msg: console.print(f"[dim]{escape(msg)}[/]", soft_wrap=True))  # (one line each in a
    # log: rich cut them at 80 columns, a skip's advice on another line than "skipped")
    try:
        report = run_bench(config, command=shlex.join(["lwayrt", *sys.argv[1:]]), progress=progress)
    except KeyboardInterrupt:  # the generic line speaks of finished files and "the rest": a benchmark has neither
        from lway_rt.errors import Interrupted

        raise Interrupted("serve-bench interrupted: nothing was written (--json and --chart are written once every "
                          "configuration is measured); run it again to measure") from None
    out, table, notes = Console(stderr=to_stdout), render_table(report), ""
    measured = any(r["input"] is not None for r in report["results"])  # (none: a table of no rows, its notes only)
    if not on_a_terminal(out) or not measured:  # logs and files: wide enough that no column is cut, and the notes
        out = Console(width=200, stderr=to_stdout)  # under the table one line each (a caption wraps at the table's
        notes, table.caption = table.caption or "", None  # width, a note cut in two where a grep finds neither half)
    if measured:
        out.print(table)
    for note in notes.splitlines():
        out.print(note, soft_wrap=True, markup=False, highlight=False)
    charted = chart_path if report["summary"]["ok"] else None
    try:  # again: a file made at either path while it measured (minutes) is not the earlier run's to replace
        check_output_paths(json_file, chart_path, [given, manifest_path(given)] if exported else [given])
    except OutputError as exc:
        raise OutputError(f"{exc} — found as the report was to be written: nothing was written" + (
            ", this run's numbers are in the table above" if measured else "")) from None
    replaced = [p for p in (json_file, charted) if p is not None and Path(p).is_file()]  # (earlier runs': checked)
    write_report(report, json_file, charted)  # renamed back to back: a kill leaves one run's pair
    # a report with no chart: an earlier run's chart (checked as one, as --chart is) would be read as this report's
    stale = json_file is not None and chart_path and not charted and Path(chart_path).is_file()
    if stale:
        Path(chart_path).unlink()
    if to_stdout:
        from lway_rt.bench.schema import validate_report

        validate_report(report)
        click.echo(json.dumps(report, indent=1, allow_nan=False))
    elif json_path:
        click.echo(f"report: {json_path}" + (" (the earlier report there replaced)" if json_file in replaced else ""))
    if charted:
        click.echo(f"chart: {charted}" + (" (the earlier chart there replaced)" if charted in replaced else ""),
                   err=to_stdout)
    elif chart_path:
        click.echo("chart: not written (no configuration passed verification)"
                   + (f"; the earlier run's chart {chart_path} is removed, as its report was replaced" if stale else ""),
                   err=to_stdout)  # (--json -: JSON only)
    bad = [r for r in report["results"] if r["status"] in ("failed", "error")]
    if exported and not bad and not any(r["status"] == "ok" and r["kind"] != "torch" for r in report["results"]):
        asked_onnx = any(r["kind"] != "torch" for r in report["results"])
        raise BenchFailed(f"{given.name} itself was not timed: " + ("no backend asked for runs it here (reasons "
                          "above)" if asked_onnx else "only torch was asked for, which times the weights it was "
                          "exported from; add an ONNX backend, e.g. -b ort-cpu"))
    if not report["summary"]["ok"] and not bad:  # every backend skipped: a script must not read this as a result
        raise BenchFailed("nothing was measured: every backend asked for was skipped on this machine (reasons "
                          "above); choose backends this machine can run")
    if bad:
        raise BenchFailed(f"{len(bad)} configuration(s) failed verification or could not run "
                          f"({', '.join(sorted({r['backend'] for r in bad}))}): see the table")
