"""serve-bench's bookkeeping on one tiny run: notes, peak fractions, build memory, thresholds, CUDA peaks."""

from __future__ import annotations

import pytest
import torch

from lway_rt.bench.runner import BenchConfig, run_bench
from lway_rt.bench.schema import validate_report
from lway_rt.bench.timing import TimingPolicy

FAST = TimingPolicy(warmup_s=0.0, warmup_iters=1, min_iters=2, min_time_s=0.0, max_time_s=10, rounds=1)


@pytest.fixture(scope="module")
def fallen_back(tmp_path_factory):
    """``ort-cuda+fp16+fallback`` on the CPU (the CUDA provider dropped), with an unsteady timing, fake cheap peak
    probes, and an export that raises the (fake) RSS by 1000 MiB."""
    import lway_rt.bench.flops as flops
    import lway_rt.bench.machine as machine
    import lway_rt.bench.runner as runner
    import lway_rt.runtime.backends as backends
    from lway_rt.io.store import load_model

    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider: nothing falls back")
    mp = pytest.MonkeyPatch()
    rss = [500.0]
    export = backends.export_onnx_for

    def heavy_export(*args, **kwargs):
        rss[0] += 1000.0  # what torch.onnx.export leaves resident
        return export(*args, **kwargs)

    def unsteady(make_worker_fn, policy, workers=1):
        make_worker_fn(0)()
        return [1.0, 1.0, 1.0, 9.0], 0.012

    mp.setattr(torch.cuda, "is_available", lambda: False)
    mp.setattr(backends, "export_onnx_for", heavy_export)
    mp.setattr(machine, "rss_mb", lambda: rss[0])
    mp.setattr(flops, "measure_peak", lambda **kw: {"matmul_64": 100.0, "best": 100.0})
    mp.setattr(runner, "time_closed_loop", unsteady)
    try:
        config = BenchConfig(model="realesr-animevideov3", backends=("ort-cuda+fp16+fallback",), sizes=((16, 16),),
                             threads=1, timing=FAST, min_psnr=30.0)
        yield run_bench(config, model=load_model("realesr-animevideov3"))
    finally:
        mp.undo()


def test_a_fallback_row_keeps_both_notes(fallen_back):
    (row,) = fallen_back["results"]
    assert row["status"] == "ok" and row["fell_back"], row["reason"]
    assert row["note"].startswith("ONNX Runtime fell back to CPUExecutionProvider (allowed by +fallback); unsteady timing")
    from lway_rt.bench.report import render_table

    assert "1 configuration(s) had unsteady timings" in render_table(fallen_back).caption  # counted behind the other


def test_a_fallback_row_gets_the_cpu_fp32_peak_fraction(fallen_back):
    (row,) = fallen_back["results"]
    assert set(fallen_back["peak_gflops"]) == {"cpu_fp32"}
    assert row["peak_fraction"] == pytest.approx(row["achieved_gflops"] / 100.0)


def test_the_build_memory_leaves_out_the_shared_export(fallen_back):
    (row,) = fallen_back["results"]
    assert row["export_s"] > 0 and row["memory"]["load_rss_delta_mb"] == 0.0


def test_min_psnr_db_is_per_precision_with_min_psnr_too(fallen_back):
    validate_report(fallen_back)
    assert fallen_back["settings"]["min_psnr_db"] == {"fp32": 30.0, "fp16": 30.0, "bf16": 30.0}
    assert fallen_back["results"][0]["verification"]["min_psnr_db"] == 30.0


def test_cuda_peak_is_each_configurations_own(monkeypatch):
    """Two CUDA backends timed in interleaved rounds: each row's cuda_peak_allocated_mb is the peak of its own rounds,
    not of everything since its first round (here faked: the allocator's peak mark as torch keeps it)."""
    import numpy as np

    from lway_rt.bench import runner
    from lway_rt.runtime.backends import parse_backend

    mark = {"peak": 0.0}

    def allocating(mib):
        def run(x):
            mark["peak"] = max(mark["peak"], mib * 2**20)
            return x
        return run

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: mark.update(peak=0.0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: mark["peak"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1 << 30, 2 << 30))
    config = BenchConfig(model="m", backends=("torch+cuda", "torch+cuda+fp16"), sizes=((8, 8),), device="cuda",
                         timing=TimingPolicy(warmup_s=0.0, warmup_iters=1, min_iters=4, min_time_s=0.0, max_time_s=10,
                                             rounds=2), measure_peak=False)
    case = runner._Case(8, 8, 1, 0)
    ready = []
    for text, mib in (("torch+cuda", 100), ("torch+cuda+fp16", 500)):
        spec = parse_backend(text, device="cuda")
        backend = type("FakeBackend", (), {"compute_method": None})()
        ready.append(runner._Timed(spec, backend, allocating(mib), runner._row_base(spec, case, 1, 0), None, None))
    x = np.zeros((1, 3, 8, 8), np.float32)
    rows = runner._time_interleaved(ready, case, x, 1, config, 1, lambda msg: None)
    assert {r["backend"]: r["memory"]["cuda_peak_allocated_mb"] for r in rows} == {"torch+cuda": 100.0,
                                                                                    "torch+cuda+fp16": 500.0}


def test_the_cpu_path_reads_no_cuda_peak(monkeypatch):
    """Without a CUDA backend nothing touches the CUDA allocator (a CPU-only torch has none)."""
    import numpy as np

    from lway_rt.bench import runner
    from lway_rt.runtime.backends import parse_backend

    def refuse(*args, **kwargs):
        raise AssertionError("CUDA allocator touched on the CPU path")

    for name in ("synchronize", "reset_peak_memory_stats", "max_memory_allocated", "mem_get_info"):
        monkeypatch.setattr(torch.cuda, name, refuse)
    config = BenchConfig(model="m", backends=("torch",), sizes=((8, 8),), timing=FAST, measure_peak=False)
    case = runner._Case(8, 8, 1, 0)
    spec = parse_backend("torch")
    backend = type("FakeBackend", (), {"compute_method": None})()
    item = runner._Timed(spec, backend, lambda x: x, runner._row_base(spec, case, 1, 0), None, None)
    (row,) = runner._time_interleaved([item], case, np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, lambda m: None)
    assert row["memory"]["cuda_peak_allocated_mb"] is None
