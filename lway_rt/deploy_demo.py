"""The deployment step of ``lwayrt demo``: the adapted network exported, run from its ONNX file, and timed.

After the adaptation step, the adapted weights are exported to ONNX in fp32 and fp16 (``lwayrt export``'s
pipeline, with its parity gate against PyTorch), the demo's LR crops are super-resolved again from the fp32
file with ONNX Runtime (``lwayrt upscale -m file.onnx``'s path) and compared with the images adaptation wrote,
and ``lwayrt serve-bench``'s runner verifies and times PyTorch against ONNX Runtime on the CPU. Everything
lands in ``OUT/deploy/``: the ONNX files and manifests, ``serve_bench.json`` and ``serve_bench.png``,
``results.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DeployDemoConfig", "DeployDemoResult", "run_deploy_demo"]


@dataclass(frozen=True)
class DeployDemoConfig:
    weights: Path  # the adapted weights (the adaptation step's adapted.safetensors)
    lr_dir: Path  # the LR crops it was adapted on
    sr_dir: Path  # the images adaptation wrote for them
    out_dir: Path = Path("demo_out") / "deploy"
    bench_size: int = 128  # serve-bench's LR input side
    bench_seconds: float = 2.0  # timing per backend


@dataclass
class DeployDemoResult:
    config: DeployDemoConfig
    onnx: dict[str, str] = field(default_factory=dict)  # precision -> file
    parity: dict[str, str] = field(default_factory=dict)  # precision -> the gate's summary
    onnx_max_levels: int = 0  # largest 8-bit difference between the ONNX Runtime and the adapt images
    bench: list[dict[str, Any]] = field(default_factory=list)  # serve-bench rows that ran
    seconds: float = 0.0


def run_deploy_demo(config: DeployDemoConfig, log: Callable[[str], None] = print) -> DeployDemoResult:
    from lway_rt.bench.report import agreement, write_report
    from lway_rt.bench.runner import BenchConfig, run_bench
    from lway_rt.bench.timing import TimingPolicy
    from lway_rt.errors import LwayError
    from lway_rt.export.pipeline import export_artifacts, sr_exportable
    from lway_rt.export.profile import load_profile
    from lway_rt.io.images import read_image, to_uint8
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import atomic_write_json
    from lway_rt.runtime.onnx_model import load_onnx_model
    from lway_rt.runtime.tiling import TileConfig
    from lway_rt.upscale import upscale_rgb

    t0 = time.perf_counter()
    out = Path(config.out_dir)
    result = DeployDemoResult(config)
    desc = load_model(str(config.weights))
    log("exporting the adapted network to ONNX (fp32, fp16) with the parity gate against PyTorch ...")
    for r in export_artifacts(sr_exportable(desc, label="adapted"), load_profile("cpu"), precisions=("fp32", "fp16"),
                              out_dir=out, log=lambda m: None):
        result.onnx[r.precision] = str(r.onnx_path)
        result.parity[r.precision] = _gate_line(r.parity)
        log(f"  {r.precision}: {Path(r.onnx_path).name}, {result.parity[r.precision]}")

    onnx_model = load_onnx_model(result.onnx["fp32"])
    levels = []
    for lr_path in sorted(Path(config.lr_dir).glob("*.png")):
        got = to_uint8(upscale_rgb(onnx_model, read_image(lr_path).rgb, TileConfig(0))).astype(np.int16)
        want = to_uint8(read_image(Path(config.sr_dir) / lr_path.name).rgb).astype(np.int16)
        levels.append(int(np.abs(got - want).max()))
    result.onnx_max_levels = max(levels)
    log(f"upscaled the {len(levels)} LR crop(s) again from the fp32 ONNX file with ONNX Runtime: within "
        f"{result.onnx_max_levels} 8-bit level(s) of the images adaptation wrote")

    log(f"serve-bench: PyTorch against ONNX Runtime on this CPU, {config.bench_size}x{config.bench_size} input ...")
    bench_config = BenchConfig(model=str(config.weights), backends=("torch", "ort-cpu"),
                               sizes=((config.bench_size, config.bench_size),), measure_peak=False,
                               timing=TimingPolicy(warmup_s=0.5, warmup_iters=2, min_iters=5,
                                                   min_time_s=config.bench_seconds, max_time_s=4 * config.bench_seconds,
                                                   rounds=2))
    report = run_bench(bench_config, command="lwayrt demo (deploy step)")
    ok = [r for r in report["results"] if r["status"] == "ok"]
    from lway_rt.adapt.visual import can_plot

    chart = out / "serve_bench.png" if ok and can_plot() else None
    if ok and chart is None:  # the numbers are kept: the picture alone needs matplotlib (review 56B7)
        log("  (no serve_bench.png: matplotlib is not installed; pip install 'lway_rt[plot]' draws it)")
    write_report(report, out / "serve_bench.json", chart)  # renamed back to back
    torch_rate = next((r["images_per_s"] for r in ok if r["kind"] == "torch"), None)
    for r in report["results"]:
        if r["status"] != "ok":
            log(f"  {r['backend']}: {r['status']} ({r['reason']})")
            continue
        rate = r["images_per_s"]
        vs = f", {rate / torch_rate:.2f}x PyTorch" if torch_rate and r["kind"] != "torch" else ""
        log(f"  {r['backend']}: verified ({agreement(r['verification']['psnr_db'])} against PyTorch fp32), p50 "
            f"{r['latency_ms']['p50']:.1f} ms, {rate:.1f} images/s{vs}" + (f" ({r['note']})" if r.get("note") else ""))
        result.bench.append({"backend": r["backend"], "p50_ms": r["latency_ms"]["p50"], "images_per_s": rate,
                             "psnr_db": r["verification"]["psnr_db"], **({"note": r["note"]} if r.get("note") else {})})
    if not ok:
        raise LwayError("serve-bench verified no backend: see " + str(out / "serve_bench.json"))
    result.seconds = time.perf_counter() - t0
    summary = {"onnx": result.onnx, "parity": result.parity, "onnx_max_levels": result.onnx_max_levels,
               "serve_bench": result.bench, "serve_bench_json": str(out / "serve_bench.json"),
               "seconds": round(result.seconds, 1)}
    atomic_write_json(out / "results.json", summary)
    return result


def _gate_line(parity: dict[str, Any]) -> str:
    """The parity gate's verdict in a few words (the worst case the gate measured)."""
    cases = parity.get("cases") or []
    if not cases:
        return "parity recorded"
    metric = cases[0].get("metric", "")
    worst = min(c["value"] for c in cases) if metric == "psnr_db" else max(c["value"] for c in cases)
    unit = {"max_abs": " max abs", "psnr_db": " dB", "rel": " relative"}.get(metric, f" {metric}")
    return f"parity {'passed' if parity.get('passed') else 'FAILED'} ({worst:.3g}{unit} on {len(cases)} inputs)"
