"""Stage 1 on the CPU in NCHW against channels-last (NHWC) memory layout: ``eval-degae``'s whole evaluation, and a
``train-degae`` step, side by side in one process.

``evaluate_stage1`` holds E's and R's weights channels-last on the CPU while it runs (``channels_last=None``, the
default; ``lway_rt.degae.evaluate._held_channels_last``), as ``lwayrt upscale`` holds its networks: oneDNN's
convolutions then skip a layout reorder around every layer. Training keeps NCHW: this script times a real
``train_step`` (the default recipe on the bundled training photos, the shipped checkpoint's architecture) both ways to
show why.

The evaluation runs both ways each round (the first round warms both up and is not timed; who goes first alternates),
and the two reports must agree: every number of the report is compared and the largest difference recorded (the
reports round to 3-4 decimals, so float rounding shows as a last-digit difference at most). A round is eval-degae's
protocol at ``--draws`` draws (its time is nearly proportional to them; 24 by default in the command), so that many
short rounds pair the two layouts closely in time on a shared machine: the headline is the median over rounds of
the ratio within a round. The training step runs ``--steps`` steps per layout per round on the same batches from the
same weights, likewise paired.

    .venv/bin/python benchmarks/stage1_eval_layout.py --force   # rewrites benchmarks/results/stage1_eval_layout.json

Without ``--out`` the script refuses to replace an existing default file unless given ``--force``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, add_threads, parse_run_args, positive_int  # noqa: E402


def _numbers(obj, path=""):
    """Every number in a report, by its path (lists and dicts walked)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        yield path, float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")


def report_difference(a: dict, b: dict) -> tuple[float, str, int]:
    """The largest absolute difference between two reports' numbers (NaN equal to NaN), where, and how many
    differ at all; two reports of another shape raise ValueError."""
    na, nb = dict(_numbers(a)), dict(_numbers(b))
    if na.keys() != nb.keys():
        raise ValueError(f"the reports hold different numbers: {sorted(na.keys() ^ nb.keys())[:5]}")
    worst, where, differ = 0.0, "", 0
    for k, x in na.items():
        y = nb[k]
        if np.isnan(x) and np.isnan(y) or x == y:
            continue
        differ += 1
        d = abs(x - y)
        if not d <= worst:  # (an inf against a number counts as the largest)
            worst, where = d, k
    return worst, where, differ


def main(argv=None) -> int:
    from lway_rt.bench.machine import load_average, write_benchmark_record
    from lway_rt.degae import load_stage1
    from lway_rt.degae.data import load_images
    from lway_rt.degae.evaluate import EvalConfig, _held_channels_last, evaluate_stage1
    from lway_rt.degae.train import TrainConfig, batch_rng, make_batch, train_step

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/stage1_eval_layout.json")
    ap.add_argument("--rounds", type=positive_int, default=6, help="timed rounds of each part (after one warm-up round)")
    ap.add_argument("--draws", type=positive_int, default=6,
                    help=f"the evaluation's draws per round [6; eval-degae's default is {EvalConfig.draws}]")
    ap.add_argument("--crops-per-image", type=positive_int, default=EvalConfig.crops_per_image)
    ap.add_argument("--steps", type=positive_int, default=5, help="training steps per layout per round")
    add_threads(ap)
    args = parse_run_args(ap, argv)
    load_start = load_average()
    s1 = load_stage1()
    cfg = EvalConfig(draws=args.draws, crops_per_image=args.crops_per_image)
    ways = {"nchw": False, "channels_last": True}
    times: dict[str, list[float]] = {k: [] for k in ways}
    reports = {}
    for r in range(args.rounds + 1):
        for k in (list(ways) if r % 2 else list(ways)[::-1]):
            t0 = time.perf_counter()
            reports[k] = evaluate_stage1(s1, cfg, channels_last=ways[k])
            if r:
                times[k].append(time.perf_counter() - t0)
        print(f"evaluation round {r}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items() if r), flush=True)
    worst, where, differ = report_difference(reports["nchw"], reports["channels_last"])
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [c / n for c, n in zip(times["channels_last"], times["nchw"])]
    evaluation = {"settings": {"draws": cfg.draws, "crops_per_image": cfg.crops_per_image, "crop": cfg.crop,
                               "geometries": list(cfg.geometries), "batch": cfg.batch},
                  "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
                  "median_s": {k: round(v, 2) for k, v in med.items()},
                  "channels_last_over_nchw_per_round": [round(r, 3) for r in ratios],
                  "channels_last_over_nchw": round(statistics.median(ratios), 3),
                  "report_numbers_differing": differ, "report_max_abs_difference": worst,
                  "report_max_difference_at": where,
                  "gain_db": {k: rep["gain_db"] for k, rep in reports.items()}}
    print(f"evaluation: NCHW {med['nchw']:.1f}s, channels-last {med['channels_last']:.1f}s (median), per round "
          f"({evaluation['channels_last_over_nchw']:.2f}x); {differ} report numbers differ, at most by {worst:.3g} "
          f"({where or 'none'})", flush=True)

    tcfg = TrainConfig(width=s1.reconstructor.width, embed_dim=s1.embed_dim)
    images = list(load_images(None, tcfg.crop).values())  # the bundled training photos, as train-degae reads them
    batches = [make_batch(batch_rng(tcfg.seed, i), images, tcfg) for i in range(args.steps)]
    nets = {k: load_stage1(trainable=True) for k in ways}
    for net in nets.values():
        net.encoder.train()
        net.reconstructor.train()
    opts = {k: torch.optim.Adam([p for m in (n.encoder, n.reconstructor) for p in m.parameters() if p.requires_grad],
                                lr=tcfg.lr, betas=(0.9, 0.99)) for k, n in nets.items()}
    held = _held_channels_last(nets["channels_last"].encoder, nets["channels_last"].reconstructor)
    held.__enter__()  # held for the rest of the run (this process ends after)
    ttimes: dict[str, list[float]] = {k: [] for k in ways}
    losses: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(args.rounds + 1):
        for k in (list(ways) if r % 2 else list(ways)[::-1]):
            t0 = time.perf_counter()
            for b in batches:
                loss = train_step(nets[k], opts[k], b, tcfg)["loss"]
                if r == 0:
                    losses[k].append(loss)
            if r:
                ttimes[k].append((time.perf_counter() - t0) / len(batches))
    tmed = {k: statistics.median(v) for k, v in ttimes.items()}
    tratios = [c / n for c, n in zip(ttimes["channels_last"], ttimes["nchw"])]
    training = {"settings": {"batch": tcfg.batch, "crop": tcfg.crop, "width": tcfg.width, "steps": args.steps},
                "seconds_per_step": {k: [round(t, 3) for t in v] for k, v in ttimes.items()},
                "median_s_per_step": {k: round(v, 3) for k, v in tmed.items()},
                "channels_last_over_nchw_per_round": [round(r, 3) for r in tratios],
                "channels_last_over_nchw": round(statistics.median(tratios), 3),
                "first_losses_max_abs_difference": max(abs(a - b) for a, b in zip(losses["nchw"], losses["channels_last"]))}
    print(f"training step: NCHW {tmed['nchw']:.2f}s, channels-last {tmed['channels_last']:.2f}s (median), per round "
          f"({training['channels_last_over_nchw']:.2f}x)", flush=True)
    write_benchmark_record(args.out, "lway_rt.stage1-eval-layout/1", load_start, {"torch_threads": torch.get_num_threads()},
                           evaluation=evaluation, training=training)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
