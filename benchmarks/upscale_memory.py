"""Peak memory of ``lwayrt upscale`` on the CPU: how it grows with the image, tiled and in one pass.

What a user sees is the peak resident set (RSS) of the whole ``lwayrt upscale`` process: Python, torch, the model,
the image read, the network's activations, the output assembled and written. This script measures exactly that,
one fresh child process per run (``lwayrt upscale IMAGE -o OUT --tile T -q``, from the console script beside this
interpreter), for one model (realesr-animevideov3 by default) and a real photo (scikit-image's astronaut, resized
with Lanczos to each ``--sizes`` entry and written as PNG), at each ``--tiles`` entry (0: one pass).

The peak of a run is the kernel's ``ru_maxrss`` of that one child, taken from ``os.wait4`` when it ends: the figure
``getrusage(RUSAGE_CHILDREN)`` and ``/usr/bin/time -f %M`` report, but for that child alone (RUSAGE_CHILDREN in
this process would be the largest child so far, not the latest). A baseline child does what ``lwayrt upscale``
does before its first image (imports the command and the library, loads and lays out the model) and stops, so each
run's memory above the baseline is what the image itself costs; it is given per output pixel, and per tile setting
the least-squares slope of peak over output pixels (what one more output pixel costs, free of the fixed part).
Each run checks that its output PNG exists and has the model's size. Runs go round by round (the baseline, then
every case), ``--repeats`` rounds; medians are kept.

    .venv/bin/python benchmarks/upscale_memory.py --force   # rewrites benchmarks/results/upscale_memory_cpu.json

The default run (4 sizes x 2 tile settings, 2 rounds) took 4.6 minutes on a 2-core EPYC beside another job.

Without ``--out`` the script refuses to replace an existing default file unless given ``--force``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, command_line, nonnegative_int, positive_int, resolve_out, write_json  # noqa: E402

FORMAT = "lway_rt.upscale-memory/1"
PHOTO = "astronaut"
# the baseline child: what `lwayrt upscale` does before its first image (the entry point and the command's module,
# the library and rich's progress bar imported; the model loaded, laid out and checked for a detail cap), then a
# line of JSON about the model and the threads
BASELINE_CODE = """\
import json, sys
import torch
import lway_rt.cli, lway_rt.cli.upscale
from rich.progress import Progress
from lway_rt.upscale import UpscaleConfig, prepare_detail_cap, prepare_model
config = UpscaleConfig(model=sys.argv[1])
desc = prepare_model(config)
prepare_detail_cap(config, desc)
print(json.dumps({"scale": desc.scale, "size_multiple": desc.size_multiple, "torch_threads": torch.get_num_threads()}))
"""
MEASUREMENT = ("peak resident set (ru_maxrss) of each child process, from os.wait4 when it ends: the kernel's figure "
               "that getrusage(RUSAGE_CHILDREN) and /usr/bin/time -f %M report, for that one child; a fresh process "
               "per run")


def image_size(value: str) -> tuple[int, int]:
    """argparse type: ``N`` (N x N) or ``WxH``, each side a whole number >= 1 -> (width, height)."""
    parts = value.lower().split("x")
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{value!r} is not a size: give N (a square) or WxH")
    w, h = (positive_int(p) for p in (parts * 2)[:2])
    return w, h


def peak_kb(rusage) -> int:
    """``ru_maxrss`` in KiB (Linux reports KiB, macOS bytes)."""
    return rusage.ru_maxrss // 1024 if platform.system() == "Darwin" else rusage.ru_maxrss


def measure(argv: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run ``argv`` as one child process in ``cwd``; its exit status, peak RSS, wall and CPU seconds, and output."""
    out, err = cwd / ".stdout", cwd / ".stderr"
    with open(out, "wb") as so, open(err, "wb") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=so, stderr=se)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return {"returncode": proc.returncode, "peak_rss_kb": peak_kb(usage), "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "stdout": out.read_text(errors="replace"), "stderr": err.read_text(errors="replace")}


def tile_layout(w: int, h: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """How many tiles ``lway_rt.runtime.tiling.upscale_tensor`` cuts a ``w`` x ``h`` input into, and their size
    ([height, width], input px), by its rule: (1, the padded image) for a one-pass run."""
    from lway_rt.runtime.tiling import axis_tile, tile_starts

    hp, wp = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    if tile == 0 or (tile >= hp and tile >= wp):
        return 1, [hp, wp]
    t = max(multiple, tile // multiple * multiple)
    ov = max(0, min(overlap, t // 2 - 1, t - multiple)) if t > 2 else 0
    th, tw = axis_tile(hp, t, ov, multiple), axis_tile(wp, t, ov, multiple)
    return len(tile_starts(hp, th, ov, multiple)) * len(tile_starts(wp, tw, ov, multiple)), [th, tw]


def slope(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares line y = a x + b through ``points`` -> (a, b); None with fewer than two distinct x."""
    xs = [x for x, _ in points]
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(y for _, y in points)
    a = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return a, my - a * mx


def _mb(kb: float) -> float:
    return round(kb / 1024, 1)


def _spread(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv=None) -> int:
    from PIL import Image

    from lway_rt.bench.machine import load_average, machine_info, package_versions
    from lway_rt.errors import InputError, LwayError
    from lway_rt.io.images import bundled_photo
    from lway_rt.io.store import is_store_name, resolve_model_path, store_dir, store_path
    from lway_rt.upscale import UpscaleConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/upscale_memory_cpu.json")
    ap.add_argument("--model", default="realesr-animevideov3", help="store name or weights file [%(default)s]")
    ap.add_argument("--sizes", type=image_size, nargs="+", default=[(150, 150), (300, 300), (600, 600), (900, 900)],
                    metavar="N|WxH", help="input sizes (the photo resized to each) [150 300 600 900]")
    ap.add_argument("--tiles", type=nonnegative_int, nargs="+", default=[128, 0], metavar="T",
                    help="--tile values to run at each size; 0 is one pass [128 0]")
    ap.add_argument("--tile-overlap", type=nonnegative_int, default=None,
                    help="--tile-overlap for the tiled runs [upscale's default]")
    ap.add_argument("--repeats", type=positive_int, default=2, help="rounds of every run; medians are kept [2]")
    args = ap.parse_args(argv)
    resolve_out(ap, args)
    overlap = UpscaleConfig().tile_overlap if args.tile_overlap is None else args.tile_overlap
    for t in args.tiles:
        if t:
            try:
                UpscaleConfig(tile=t, tile_overlap=overlap)
            except InputError as exc:  # upscale's own refusal, as a usage error before any run
                ap.error(f"--tiles {t}: {exc}")

    cli = Path(sys.executable).parent / "lwayrt"
    lwayrt = [str(cli)] if cli.exists() else [sys.executable, "-c", "import sys; from lway_rt.cli import main; "
                                                                    "sys.argv[0] = 'lwayrt'; sys.exit(main())"]
    model = args.model
    if not is_store_name(model):
        model = str(Path(model).expanduser().resolve())  # the children run in another folder
    imported_now = is_store_name(model) and not store_path(model).exists()
    try:
        model_file = resolve_model_path(model)  # a packaged model is imported now, not inside a measured run
    except LwayError as exc:
        raise SystemExit(f"error: {exc}") from None
    env = dict(os.environ)
    if "LWAYRT_HOME" in env:  # a relative one would mean another store in the children's folder
        env["LWAYRT_HOME"] = str(store_dir().parent)
    photo = bundled_photo(PHOTO)
    load_start = load_average()
    started = datetime.datetime.now(datetime.timezone.utc)
    t_all = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="upscale_memory_") as tmp:
        tmp = Path(tmp)
        inputs = {}
        for w, h in dict.fromkeys(args.sizes):
            name = f"{PHOTO}_{w}x{h}.png"
            Image.fromarray(photo).resize((w, h), Image.Resampling.LANCZOS).save(tmp / name)
            inputs[w, h] = name
        cases = [{"input_size": [w, h], "tile": t} for (w, h) in inputs for t in dict.fromkeys(args.tiles)]
        base_argv = [sys.executable, "-c", BASELINE_CODE, model]
        base_runs, info, failed = [], None, []
        for r in range(args.repeats):
            run = measure(base_argv, tmp, env)
            if run["returncode"]:
                raise SystemExit(f"error: the baseline run failed (exit {run['returncode']}):\n{run['stderr'][-2000:]}")
            info = json.loads(run["stdout"].strip().splitlines()[-1])
            base_runs.append({k: run[k] for k in ("peak_rss_kb", "wall_s", "cpu_s")})
            for case in cases:
                (w, h), t = case["input_size"], case["tile"]
                out_dir = f"out_{w}x{h}_tile{t}_round{r}"
                upscale = ["upscale", inputs[w, h], "-o", out_dir, "-m", model, "--tile", str(t)]
                upscale += ["--tile-overlap", str(args.tile_overlap)] if t and args.tile_overlap is not None else []
                upscale += ["-q"]
                case["command"] = shlex.join(["lwayrt", *upscale])
                run = measure([*lwayrt, *upscale], tmp, env)
                written = tmp / out_dir / f"{Path(inputs[w, h]).stem}_x{info['scale']}.png"
                row = {k: run[k] for k in ("returncode", "peak_rss_kb", "wall_s", "cpu_s")}
                if written.exists():
                    with Image.open(written) as im:
                        row["output_file"] = {"name": written.name, "size": list(im.size),
                                              "bytes": written.stat().st_size}
                    written.unlink()
                if run["returncode"] or "output_file" not in row:
                    row["stderr_tail"] = run["stderr"][-2000:]
                    failed.append(f"{case['command']} (round {r}): exit {run['returncode']}")
                case.setdefault("runs", []).append(row)
                print(f"round {r + 1}/{args.repeats} {w}x{h} tile {t}: {_mb(run['peak_rss_kb'])} MB, "
                      f"{run['wall_s']:.1f} s" + (f", exit {run['returncode']}" if run["returncode"] else ""), flush=True)

    scale, multiple = info["scale"], info["size_multiple"]
    base_kb = statistics.median(r["peak_rss_kb"] for r in base_runs)
    rows = []
    for case in cases:
        (w, h), t, runs = case["input_size"], case["tile"], case["runs"]
        ok = [r for r in runs if r["returncode"] == 0 and "output_file" in r]
        n_tiles, tile_px = tile_layout(w, h, t, overlap, multiple)
        out_px = w * scale * h * scale
        row = {"input_size": [w, h], "output_size": [w * scale, h * scale], "tile": t,
               "tile_overlap": overlap if t else None, "tiles": n_tiles, "tile_px": tile_px,
               "command": case["command"], "ok": len(ok) == len(runs),
               "outputs_checked": all(r.get("output_file", {}).get("size") == [w * scale, h * scale] for r in runs)}
        if ok:
            peak = _spread(ok, "peak_rss_kb")
            row.update(peak_rss_mb=_mb(peak["median"]), peak_rss_mb_range=[_mb(peak["min"]), _mb(peak["max"])],
                       baseline_mb=_mb(base_kb), above_baseline_mb=_mb(peak["median"] - base_kb),
                       bytes_per_output_pixel_above_baseline=round((peak["median"] - base_kb) * 1024 / out_px, 2),
                       wall_s=round(_spread(ok, "wall_s")["median"], 2), cpu_s=round(_spread(ok, "cpu_s")["median"], 2))
        row["runs"] = [{**r, "wall_s": round(r["wall_s"], 3), "cpu_s": round(r["cpu_s"], 3)} for r in runs]
        rows.append(row)

    per_tile = {}
    for t in dict.fromkeys(args.tiles):
        fit = slope([(r["output_size"][0] * r["output_size"][1], r["peak_rss_mb"] * 2**20)
                     for r in rows if r["tile"] == t and "peak_rss_mb" in r])
        per_tile["one_pass" if t == 0 else f"tile_{t}"] = None if fit is None else {
            "marginal_bytes_per_output_pixel": round(fit[0], 2), "intercept_mb": round(fit[1] / 2**20, 1)}

    write_json(args.out, {
        "benchmark": "lway_rt: peak RSS of lwayrt upscale runs on the CPU (benchmarks/upscale_memory.py)",
        "format": FORMAT,
        "command": command_line("upscale_memory.py", argv),
        "date": started.isoformat(timespec="seconds"),
        "machine": {**machine_info(), "load_average_start": load_start, "load_average_end": load_average(),
                    "torch_threads": info["torch_threads"]},
        "packages": package_versions(("lway_rt", "torch", "numpy", "Pillow", "scikit-image")),
        "measurement": MEASUREMENT,
        "units": "MB = 2^20 bytes (the kernel counts KiB); bytes per output pixel above the baseline = (median peak - "
                 "median baseline peak) / (output width x height)",
        "model": {"name": args.model, "file": model_file.name, "scale": scale, "imported_by_this_run": imported_now},
        "photo": {"name": PHOTO, "source": "skimage.data.astronaut() (512x512), resized with Lanczos to each input "
                                           "size, written as 8-bit RGB PNG"},
        "repeats": args.repeats,
        "baseline": {"what": "a child that imports lwayrt upscale's modules and loads and lays out the model, as the "
                             "command does before its first image, then exits", "code": BASELINE_CODE,
                     "peak_rss_mb": _mb(base_kb),
                     "peak_rss_mb_range": [_mb(min(r["peak_rss_kb"] for r in base_runs)),
                                           _mb(max(r["peak_rss_kb"] for r in base_runs))],
                     "wall_s": round(statistics.median(r["wall_s"] for r in base_runs), 2),
                     "runs": [{k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in base_runs]},
        "per_tile_setting": per_tile,
        "rows": rows,
        "failures": failed,
        "total_seconds": round(time.perf_counter() - t_all, 1),
    })
    print(f"baseline (imports + model): {_mb(base_kb)} MB")
    print(f"{'input':>10} {'output':>11} {'tile':>5} {'tiles':>5} {'peak MB':>8} {'above':>7} {'B/px':>6} {'wall s':>7}")
    for r in rows:
        if "peak_rss_mb" in r:
            print(f"{'x'.join(map(str, r['input_size'])):>10} {'x'.join(map(str, r['output_size'])):>11} {r['tile']:>5} "
                  f"{r['tiles']:>5} {r['peak_rss_mb']:>8} {r['above_baseline_mb']:>7} "
                  f"{r['bytes_per_output_pixel_above_baseline']:>6} {r['wall_s']:>7}")
    for name, fit in per_tile.items():
        if fit:
            print(f"{name}: {fit['marginal_bytes_per_output_pixel']} bytes per more output pixel, "
                  f"{fit['intercept_mb']} MB at none")
    print(f"wrote {args.out}")
    if failed:
        print("failed runs:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
