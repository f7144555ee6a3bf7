"""serve-bench's bookkeeping on one tiny run: notes, peak fractions, build memory, thresholds, CUDA peaks."""

from __future__ import annotations

import pytest
import torch

from lway_rt.bench.runner import BenchConfig, run_bench
from lway_rt.bench.schema import validate_report
from lway_rt.bench.timing import TimingPolicy
from lway_rt.runtime.backends import Backend

FAST = TimingPolicy(warmup_s=0.0, warmup_iters=1, min_iters=2, min_time_s=0.0, max_time_s=10, rounds=1)


@pytest.fixture(scope="module")
def fallen_back(tmp_path_factory):
    """``ort-cuda+fp16+fallback`` on the CPU (the CUDA provider dropped, on any onnxruntime build), with an unsteady timing, fake cheap peak
    probes, and an export that raises the (fake) RSS by 1000 MiB."""
    import lway_rt.bench.flops as flops
    import lway_rt.bench.machine as machine
    import lway_rt.bench.runner as runner
    import lway_rt.runtime.backends as backends
    from lway_rt.io.store import load_model

    import onnxruntime as ort

    mp = pytest.MonkeyPatch()
    # an onnxruntime build with no CUDA provider (as here), on a machine with onnxruntime-gpu too
    mp.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
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
    assert row["device"] == "cpu" and row["backend"] == "ort-cuda+fp16+fallback"  # where it ran, what was asked
    assert row["note"].startswith("ONNX Runtime fell back to CPUExecutionProvider (allowed by +fallback); unsteady timing")
    from lway_rt.bench.report import render_table

    table = render_table(fallen_back)
    assert "1 configuration(s) had unsteady timings (std/mean > 0.15; p50 marked *)" in table.caption  # counted behind the other
    # the row it means is marked: with several rows the caption alone did not say which
    p50 = next(c for c in table.columns if c.header == "p50 ms")
    assert list(p50.cells)[0].endswith("*")


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
        backend = Backend(spec)  # (the interface alone: runs nothing, compute_method None)
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
    backend = Backend(spec)  # (the interface alone: runs nothing, compute_method None)
    item = runner._Timed(spec, backend, lambda x: x, runner._row_base(spec, case, 1, 0), None, None)
    (row,) = runner._time_interleaved([item], case, np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, lambda m: None)
    assert row["memory"]["cuda_peak_allocated_mb"] is None


@pytest.fixture()
def real_timing(monkeypatch):
    """The real timing loop (the module-scoped ``fallen_back`` fixture fakes it until the module ends)."""
    from lway_rt.bench import runner, timing

    monkeypatch.setattr(runner, "time_closed_loop", timing.time_closed_loop)


def _fake_item(runner, text, run, case, device="cpu"):
    from lway_rt.runtime.backends import parse_backend

    spec = parse_backend(text, device=device)
    backend = Backend(spec)  # (the interface alone: runs nothing, compute_method None)
    return runner._Timed(spec, backend, run, runner._row_base(spec, case, 1, 0), None, None)


def test_a_backend_that_raises_while_timed_gets_error_rows_and_the_others_carry_on(real_timing):
    """An exception in one backend's warm-up or timing loop aborted the whole run (no report); now that backend's rows
    for the case (this and the later concurrency levels) are errors and the others are timed."""
    import numpy as np

    from lway_rt.bench import runner

    calls = [0]

    def flaky(x):
        calls[0] += 1
        if calls[0] > 3:  # warm-up passes, the second timed round fails
            raise RuntimeError("provider lost\nsecond line")
        return x

    config = BenchConfig(model="m", backends=("torch", "torch+cl"), sizes=((8, 8),), concurrency=(1, 2), measure_peak=False,
                         timing=TimingPolicy(warmup_s=0.0, warmup_iters=1, min_iters=4, min_time_s=0.0, max_time_s=10,
                                             rounds=2))
    case = runner._Case(8, 8, 1, 0)
    ready = [_fake_item(runner, "torch", lambda x: x, case), _fake_item(runner, "torch+cl", flaky, case)]
    rows = runner._time_interleaved(ready, case, np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, lambda m: None)
    assert [(r["backend"], r["concurrency"], r["status"]) for r in rows] == [
        ("torch", 1, "ok"), ("torch+cl", 1, "error"), ("torch", 2, "ok"), ("torch+cl", 2, "error")]
    assert rows[1]["reason"] == "RuntimeError: provider lost" and rows[1]["latency_ms"] is None
    assert rows[3]["reason"] == "not timed: it raised at 1 worker(s): RuntimeError: provider lost"
    assert len(ready) == 2  # the caller's list is left alone
    said = []  # every backend failed: no round lines for rounds and levels nothing runs in (review 47I I9)
    calls[0] = 2  # the warm-up passes, the first timed round fails
    rows = runner._time_interleaved([_fake_item(runner, "torch+cl", flaky, case)], case,
                                    np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, said.append)
    assert [r["status"] for r in rows] == ["error", "error"]
    assert [m for m in said if "round" in m] == ["8x8 b1 x1 workers: round 1/2"], said

    def interrupted(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops the run
        runner._time_interleaved([_fake_item(runner, "torch", interrupted, case)], case,
                                 np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, lambda m: None)


def test_each_concurrency_level_is_prepared_before_it_is_timed(real_timing):
    """A TensorRT engine makes an execution context per worker (one shared context is not thread-safe): ``prepare``
    is called with each level's worker count before its calls are timed, and a backend that cannot prepare gets error
    rows while the others are timed."""
    import numpy as np

    from lway_rt.bench import runner

    log = []

    class Lanes(Backend):
        def prepare(self, workers):
            log.append(("prepare", workers))
            if workers > 2:
                raise RuntimeError("out of GPU memory")

    config = BenchConfig(model="m", backends=("torch", "torch+cl"), sizes=((8, 8),), concurrency=(1, 2, 3),
                         measure_peak=False, timing=FAST)
    case = runner._Case(8, 8, 1, 0)
    lanes = _fake_item(runner, "torch+cl", lambda x: log.append(("run", None)) or x, case)
    lanes.backend = Lanes(lanes.spec)
    ready = [_fake_item(runner, "torch", lambda x: x, case), lanes]
    rows = runner._time_interleaved(ready, case, np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, lambda m: None)
    firsts = [n for n, entry in enumerate(log) if entry[0] == "prepare"]
    assert [log[n][1] for n in firsts] == [1, 2, 3] and all(log[n + 1] == ("run", None) for n in firsts[:2]), log
    assert [(r["backend"], r["concurrency"], r["status"]) for r in rows] == [
        ("torch", 1, "ok"), ("torch+cl", 1, "ok"), ("torch", 2, "ok"), ("torch+cl", 2, "ok"), ("torch", 3, "ok"),
        ("torch+cl", 3, "error")]
    assert rows[-1]["reason"] == "RuntimeError: out of GPU memory"


def test_calls_at_once_must_give_what_one_call_gives(real_timing):
    """The verification runs one call at a time: a backend unsafe for threads (one TensorRT execution context shared
    by every worker) returned another call's output at --concurrency 2 while its row said ok. Each level above one
    worker now checks calls at once against one call first; one that differs gets error rows, the others are timed."""
    import threading

    import numpy as np

    from lway_rt.bench import runner

    config = BenchConfig(model="m", backends=("torch", "torch+cl"), sizes=((8, 8),), concurrency=(1, 2),
                         measure_peak=False, timing=FAST)
    case = runner._Case(8, 8, 1, 0)
    inside = threading.Semaphore(1)

    def shared_buffer(x):  # a second call in flight writes over the first's result
        if inside.acquire(blocking=False):
            try:
                threading.Event().wait(0.05)
                return x
            finally:
                inside.release()
        return x + 1

    ready = [_fake_item(runner, "torch", lambda x: x, case), _fake_item(runner, "torch+cl", shared_buffer, case)]
    rows = runner._time_interleaved(ready, case, np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, lambda m: None)
    assert [(r["backend"], r["concurrency"], r["status"]) for r in rows] == [
        ("torch", 1, "ok"), ("torch+cl", 1, "ok"), ("torch", 2, "ok"), ("torch+cl", 2, "error")]
    assert "2 calls at once gave outputs 1 off what one call gives" in rows[-1]["reason"], rows[-1]["reason"]


def test_a_rows_own_thread_count_does_not_carry_into_the_next_rows_rounds(real_timing):
    """A torch row sets the process's thread count to its own; the ONNX Runtime row timed after it then cut and
    blended its tiles (with torch) on that row's threads. The runner puts the count back after each round."""
    import numpy as np

    from lway_rt.bench import runner

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    try:
        config = BenchConfig(model="m", backends=("torch", "ort-cpu"), sizes=((8, 8),), measure_peak=False,
                             timing=FAST.__class__(**{**FAST.__dict__, "rounds": 2}))
        case = runner._Case(8, 8, 1, 0)
        ready = [_fake_item(runner, "torch", lambda x: torch.set_num_threads(1) or x, case),
                 _fake_item(runner, "ort-cpu", lambda x: seen.append(torch.get_num_threads()) or x, case)]
        runner._time_interleaved(ready, case, np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, lambda m: None)
        assert seen and set(seen) == {2}, seen
    finally:
        torch.set_num_threads(before)


def test_a_single_timed_request_has_no_spread_and_says_so(real_timing):
    """--min-iters 1 gave cv 0 (a perfectly steady look) and no note; p90/p99 of a few samples were the maximum."""
    import numpy as np

    from lway_rt.bench import runner
    from lway_rt.bench.schema import SCHEMA, validate

    config = BenchConfig(model="m", backends=("torch",), sizes=((8, 8),), measure_peak=False,
                         timing=TimingPolicy(warmup_s=0.0, warmup_iters=0, min_iters=1, min_time_s=0.0, max_time_s=10,
                                             rounds=1))
    case = runner._Case(8, 8, 1, 0)
    (row,) = runner._time_interleaved([_fake_item(runner, "torch", lambda x: x, case)], case,
                                      np.zeros((1, 3, 8, 8), np.float32), 1, config, 1, lambda m: None)
    lat = row["latency_ms"]
    assert lat["count"] == 1 and lat["cv"] is None and lat["std"] is None and lat["p90"] is None and lat["p99"] is None
    assert "one timed request" in row["note"]
    from lway_rt.bench.report import render_table

    row["verification"] = {"psnr_db": 200.0, "max_abs_err": 0.0, "min_psnr_db": 50.0, "finite": True}
    report = {"machine": {"gpus": [], "cpu_model": "cpu", "load_average_start": [], "load_average_end": []},
              "model": {"spec": "m", "scale": 1}, "settings": {"threads": 1}, "peak_gflops": {}, "results": [row]}
    assert "1 configuration(s) timed one request" in render_table(report).caption
    assert validate(lat, SCHEMA["$defs"]["stats"]) == []


@pytest.fixture()
def peak_calls(monkeypatch):
    """``measure_peak`` faked (cheap): the dtypes it was asked for."""
    import lway_rt.bench.flops as flops

    calls = []

    def fake_peak(**kw):
        calls.append(kw["dtype"])
        return {"matmul_64": 100.0, "best": 100.0}

    monkeypatch.setattr(flops, "measure_peak", fake_peak)
    return calls


def test_no_bf16_peak_probe_on_a_cpu_without_native_bf16(peak_calls, monkeypatch):
    """On an AVX2 CPU the bf16 probe took ~10 minutes per round and read 0.33 GFLOP/s against the model's 1.1 (a peak
    fraction of 3.3): it is not run there, and the bf16 rows say why their peak fraction is null."""
    import lway_rt.bench.machine as machine
    from lway_rt.io.store import load_model

    monkeypatch.setattr(machine, "native_bf16", lambda: False)
    config = BenchConfig(model="realesr-animevideov3", backends=("torch", "torch+bf16"), sizes=((16, 16),), threads=1,
                         timing=FAST, min_psnr=20.0)
    report = run_bench(config, model=load_model("realesr-animevideov3"))
    validate_report(report)
    assert torch.bfloat16 not in peak_calls and set(report["peak_gflops"]) == {"cpu_fp32"}
    rows = {r["backend"]: r for r in report["results"]}
    assert rows["torch"]["peak_fraction"] == pytest.approx(rows["torch"]["achieved_gflops"] / 100.0)
    assert rows["torch+bf16"]["status"] == "ok" and rows["torch+bf16"]["peak_fraction"] is None
    assert "this CPU has no native bf16" in rows["torch+bf16"]["note"]
    from lway_rt.bench.report import render_table

    assert "torch+bf16: no % peak, this CPU has no native bf16" in render_table(report).caption


def test_peaks_are_probed_only_for_backends_that_were_built(peak_calls, monkeypatch):
    import lway_rt.bench.machine as machine
    import lway_rt.runtime.backends as backends
    from lway_rt.io.store import load_model

    monkeypatch.setattr(machine, "native_bf16", lambda: True)
    skip = backends.skip_reason
    monkeypatch.setattr(backends, "skip_reason", lambda spec, **kw: "skipped by the test" if spec.precision == "bf16"
                        else skip(spec, **kw))
    config = BenchConfig(model="realesr-animevideov3", backends=("torch", "torch+bf16"), sizes=((16, 16),), threads=1,
                         timing=FAST)
    report = run_bench(config, model=load_model("realesr-animevideov3"))
    assert peak_calls and torch.bfloat16 not in peak_calls and set(report["peak_gflops"]) == {"cpu_fp32"}
    assert report["summary"]["skipped"] == 1


def test_the_peak_rss_is_never_below_the_rss_read_after_it(monkeypatch):
    """The resident memory is read just after the peak mark; a process that grew in between reported a peak below its
    own RSS (348.578 against 348.582 MB), and a consumer checking peak >= current failed."""
    import lway_rt.bench.machine as machine
    from lway_rt.io.store import load_model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(machine, "rss_mb", lambda: machine.peak_rss_mb() + 50.0)  # grown since the mark was read
    config = BenchConfig(model="realesr-animevideov3", backends=("torch",), sizes=((16, 16),), threads=1, timing=FAST,
                         measure_peak=False)
    (row,) = run_bench(config, model=load_model("realesr-animevideov3"))["results"]
    assert row["status"] == "ok" and row["memory"]["rss_peak_mb"] >= row["memory"]["rss_mb"], row["memory"]


def test_a_long_thin_workload_is_cut_from_the_photos_without_enlarging_them_to_its_length():
    """serve-bench -s 99999x1 was killed for memory: the photo was enlarged in proportion until its short side
    covered the crop's long one (30 GB to cut one row). Now the part of it the crop needs is cut first, enlarged 16x,
    and what that still lacks is mirrored in."""
    import subprocess
    import sys

    # (the peak of this process's own memory, VmHWM: ru_maxrss is carried over from the parent, the test runner)
    code = ("import re; from lway_rt.bench.workload import sample_batch; x, _ = sample_batch(2, 1, 30000); "
            "import numpy as np; assert x.shape == (2, 3, 1, 30000) and np.isfinite(x).all() and x.std() > 0.01; "
            "print(int(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read()).group(1)) // 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) < 400, done.stdout  # MB at peak (8.7 GB before; 0.7 GB enlarging it whole)


def test_memory_is_the_control_groups_limit_where_lower(tmp_path):
    """A container limited to 2 GiB on a 24 GiB host was said to have 24 (review 47I I9): serve-bench's size check
    and its report's machine.memory_gb read the limit too; 'max' (cgroup v2) and v1's huge number mean none."""
    from lway_rt.bench.machine import memory_gb

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:        1000 kB\n")
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert memory_gb(meminfo, (v2, v1)) == 24.0  # no control group files
    v2.write_text("max\n")
    v1.write_text("9223372036854771712\n")
    assert memory_gb(meminfo, (v2, v1)) == 24.0
    v2.write_text(f"{2 * 2**30}\n")
    assert memory_gb(meminfo, (v2, v1)) == 2.0
    assert memory_gb(tmp_path / "none", (v2,)) is None
