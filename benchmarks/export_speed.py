"""ONNX export time with the activations in place, as torch's exporter used to see them, and out of place, as
``lwayrt export`` gives them now.

torch's dynamo exporter rewrites each in-place op (Real-ESRGAN's ``nn.LeakyReLU(inplace=True)``: 279 of them in
RRDBNet) through torch's reference implementation with symbolic shape checks at every element-wise step.
``OnnxFromTorch`` sets them out of place for the export (``lway_rt.export.onnx_export._out_of_place``). This script
times the fp32 export stage (``OnnxFromTorch``: torch export, optimisation, ONNX check) of each model both ways, side
by side, after a round that warms both up, alternating which goes first round by round (the median of the rounds is
kept), and checks that the two ONNX files compute the same outputs under ONNX Runtime.

    .venv/bin/python benchmarks/export_speed.py --force   # rewrites benchmarks/results/export_speed.json

Without ``--out`` the script refuses to replace an existing default file unless given ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
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

MODELS = ("realsr-df2k-x4", "realesr-animevideov3")  # an RRDBNet (in-place LeakyReLUs), an SRVGG (PReLU: none)


def main(argv=None) -> int:
    import onnxruntime as ort

    import lway_rt.export.onnx_export as onnx_export
    from lway_rt.bench.machine import load_average, write_benchmark_record
    from lway_rt.io.store import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/export_speed.json")
    ap.add_argument("--rounds", type=positive_int, default=1)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    add_threads(ap)
    args = parse_run_args(ap, argv)
    from lway_rt.errors import LwayError

    descs = {}
    for name in args.models:  # every model loaded before any timing; one that does not load is a usage error (56F6)
        try:
            descs[name] = load_model(name)
        except LwayError as exc:
            ap.error(f"--models {name}: {exc}")
    load_start = load_average()
    real = onnx_export._out_of_place
    ways = {"in_place": lambda module, x: contextlib.nullcontext(), "out_of_place": real}
    rows = []
    for name, desc in descs.items():
        net = desc.model.eval()
        times: dict[str, list[float]] = {k: [] for k in ways}
        protos = {}
        for r in range(args.rounds + 1):  # round 0 warms up both (the first export in a process loads the exporter)
            for k in (list(ways) if r % 2 else list(ways)[::-1]):  # alternate who goes first
                onnx_export._out_of_place = ways[k]
                try:
                    t0 = time.perf_counter()
                    protos[k] = onnx_export.OnnxFromTorch(net, size_multiple=desc.size_multiple,
                                                          min_size=desc.min_size)()
                    if r:
                        times[k].append(time.perf_counter() - t0)
                finally:
                    onnx_export._out_of_place = real
        x = np.random.default_rng(0).random((1, 3, 37, 53), dtype=np.float32)
        outs = {k: ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                for k, p in protos.items()}
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"model": name, "arch": type(net).__name__, "rounds": args.rounds,
               "in_place_modules": len(onnx_export._inplace(net)),
               "median_s": {k: round(v, 2) for k, v in med.items()},
               "out_of_place_over_in_place": round(med["out_of_place"] / med["in_place"], 3),
               "max_abs_output_diff": float(np.abs(outs["in_place"] - outs["out_of_place"]).max())}
        rows.append(row)
        print(f"{name}: in place {med['in_place']:.1f}s, out of place {med['out_of_place']:.1f}s "
              f"({row['out_of_place_over_in_place']:.2f}x), outputs differ by {row['max_abs_output_diff']:.3g}", flush=True)
    write_benchmark_record(args.out, "lway_rt.export-speed/1", load_start, {"torch_threads": torch.get_num_threads()},
                           rows=rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
