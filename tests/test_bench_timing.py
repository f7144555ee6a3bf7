"""Timing loops, statistics, FLOP counting and tiling of serve-bench."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from lway_rt.bench.flops import count_macs, measure_conv_gflops, measure_matmul_gflops
from lway_rt.bench.timing import TimingPolicy, summarise, time_closed_loop, warm_up
from lway_rt.bench.workload import sample_batch, tiled_run
from lway_rt.errors import InputError


def test_summary_matches_numpy_percentiles():
    lat = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0, 2.5, 3.5, 1.5, 2.2]
    s = summarise(lat, wall_s=2.0)
    assert (s.p50, s.p90) == tuple(np.percentile(lat, [50, 90])) and s.p99 is None  # p99 needs 100 samples
    assert s.std == pytest.approx(np.std(lat, ddof=1)) and s.min == 1.0 and s.max == 100.0
    assert s.requests_per_s == 5.0 and s.count == 10 and s.cv == pytest.approx(s.std / s.mean)
    many = np.random.default_rng(0).uniform(1, 2, 100)
    assert summarise(many, 1.0).p99 == np.percentile(many, 99)


def test_a_zero_wall_time_gives_a_finite_throughput():
    """A clock too coarse to see the timed run (wall 0) gave requests_per_s NaN, which the strict JSON writer then
    refused after the whole measurement: the requests back to back are the least the run took."""
    import json

    s = summarise([2.0, 3.0, 5.0], wall_s=0.0)
    assert s.requests_per_s == pytest.approx(3 / 0.010) and s.wall_s == pytest.approx(0.010)
    json.dumps(s.as_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="the clock did not advance"):
        summarise([0.0, 0.0], wall_s=0.0)


def test_percentiles_need_enough_samples_and_one_sample_has_no_spread():
    """p99 of 20 samples is nearly the maximum, and one sample gave cv 0 (a perfectly steady look): they are None."""
    few = summarise([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], wall_s=1.0)
    assert few.p90 is None and few.p99 is None and few.p50 == 5.0 and few.cv is not None
    assert summarise(list(range(1, 21)), 1.0).p99 is None and summarise(list(range(1, 21)), 1.0).p90 is not None
    one = summarise([3.0], wall_s=0.003)
    assert one.std is None and one.cv is None and one.as_dict()["cv"] is None and one.p50 == one.max == 3.0


def test_warm_up_needs_both_iterations_and_time():
    calls = []
    n, secs = warm_up(lambda: calls.append(1), TimingPolicy(warmup_s=0.05, warmup_iters=3))
    assert n == len(calls) and n > 3 and secs >= 0.05  # a no-op reaches 3 calls long before 50 ms
    n, _ = warm_up(lambda: time.sleep(0.03), TimingPolicy(warmup_s=0.0, warmup_iters=2))
    assert n == 2


def test_closed_loop_throughput_scales_with_workers_that_release_the_gil():
    policy = TimingPolicy(min_iters=12, min_time_s=0.15, max_time_s=5)
    one, wall1 = time_closed_loop(lambda i: (lambda: time.sleep(0.01)), policy, workers=1)
    four, wall4 = time_closed_loop(lambda i: (lambda: time.sleep(0.01)), policy, workers=4)
    t1, t4 = summarise(one, wall1).requests_per_s, summarise(four, wall4).requests_per_s
    assert len(one) >= 12 and wall1 >= 0.15 and min(one) >= 10.0
    assert t4 > 2.5 * t1  # four sleeping clients overlap; a serialising loop would give ~1x


def test_closed_loop_stops_at_max_iters_and_surfaces_worker_errors():
    lat, _ = time_closed_loop(lambda i: (lambda: None), TimingPolicy(min_iters=1, min_time_s=10, max_iters=50), 2)
    assert 50 <= len(lat) <= 51  # the other worker's request in flight still completes

    def boom():
        raise RuntimeError("backend crashed")

    with pytest.raises(RuntimeError, match="backend crashed"):
        time_closed_loop(lambda i: boom, TimingPolicy(), workers=2)


def test_timing_policy_validates():
    with pytest.raises(InputError, match="--min-iters"):
        TimingPolicy(min_iters=0)


def test_conv_macs_of_the_real_compact_model_match_the_formula():
    from lway_rt.io.store import load_model

    desc = load_model("realesr-animevideov3")
    per_pixel = 3 * 64 * 9 + 16 * 64 * 64 * 9 + 64 * 48 * 9
    counts = count_macs(desc.model, (2, 3, 12, 20))
    assert counts["Conv2d"] == counts["total"] == 2 * 12 * 20 * per_pixel


def test_macs_of_grouped_transposed_and_linear_layers():
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ConvTranspose2d(8, 6, 2, stride=2),
                        nn.Flatten(), nn.Linear(6 * 10 * 12, 5))
    c = count_macs(net, (1, 4, 5, 6))
    assert c["Conv2d"] == 8 * 5 * 6 * (4 // 2) * 9
    assert c["ConvTranspose2d"] == 8 * 5 * 6 * 6 * 4
    assert c["Linear"] == 5 * 720 and c["total"] == c["Conv2d"] + c["ConvTranspose2d"] + c["Linear"]


def test_a_peak_probe_stops_repeating_at_its_time_cap():
    """A kernel on a slow fallback path (bf16 on a CPU without it: ~100 s a call) must not be repeated for minutes."""
    from lway_rt.bench.flops import _best_seconds

    calls = []
    t0 = time.perf_counter()
    best = _best_seconds(lambda: (calls.append(1), time.sleep(0.02)), "cpu", repeats=1000, max_s=0.1)
    assert time.perf_counter() - t0 < 1.0 and 2 <= len(calls) <= 10 and best >= 0.02
    calls.clear()
    assert _best_seconds(lambda: (calls.append(1), time.sleep(0.05)), "cpu", repeats=5, max_s=0.01) >= 0.05
    assert len(calls) == 1  # the warm-up alone passed the cap: its own time, no further call


def test_the_bf16_peak_is_probed_as_torch_computes_it(monkeypatch):
    """The bf16 probe ran bf16 tensors in NCHW, a far slower path than the autocast, channels-last convolution the
    model reaches (peak fraction 3.3); it now probes autocast on float32 tensors, the convolution channels-last."""
    import lway_rt.bench.flops as flops

    seen = {}
    monkeypatch.setattr(flops, "measure_matmul_gflops", lambda **kw: seen.setdefault("mm", kw) and 1.0)
    monkeypatch.setattr(flops, "measure_conv_gflops", lambda **kw: seen.setdefault("conv", kw) and 2.0)
    assert flops.measure_peak(dtype=torch.bfloat16, threads=1)["best"] == 2.0
    assert seen["mm"]["autocast"] == seen["conv"]["autocast"] == torch.bfloat16
    assert seen["mm"]["dtype"] == seen["conv"]["dtype"] == torch.float32 and seen["conv"]["channels_last"]
    assert seen["mm"]["max_s"] == seen["conv"]["max_s"] == flops.PROBE_MAX_S
    seen.clear()
    flops.measure_peak(dtype=torch.float32, threads=1)
    assert seen["conv"]["dtype"] == torch.float32 and not seen["conv"].get("autocast") and not seen["conv"]["channels_last"]
    small = measure_conv_gflops(channels=8, size=16, threads=1, repeats=1, channels_last=True, autocast=torch.bfloat16)
    assert 0 < small < 1e5


def test_peak_probes_measure_something_plausible():
    mm = measure_matmul_gflops(n=256, threads=1, repeats=2)
    conv = measure_conv_gflops(channels=16, size=32, threads=1, repeats=2)
    assert 0.05 < mm < 1e5 and 0.05 < conv < 1e5
    assert torch.get_num_threads() >= 1


def test_tiled_rows_run_upscales_tiling_call_for_call():
    """serve-bench --tile times what 'lwayrt upscale --tile' runs: the same windows (sizes, starts on the size
    multiple, blended seams), so the same output, one window per call, each of the shape the engine profile is built
    for. It had cut full-size windows stepping by tile - 2 x overlap: 1.9x the pixels of a 1080p image at --tile 512,
    where upscale computes 1.2x."""
    from lway_rt.bench import runner
    from lway_rt.io.store import load_model
    from lway_rt.runtime.tiling import TileConfig
    from lway_rt.upscale import upscale_rgb

    desc = load_model("realesr-animevideov3")
    x, _ = sample_batch(2, 72, 100)
    shapes = []

    def run(a):
        shapes.append(a.shape)
        with torch.inference_mode():
            return desc.model(torch.from_numpy(a)).numpy()

    tiled = tiled_run(run, x, tile=48, overlap=8, scale=4)
    assert tiled.shape == (2, 3, 288, 400)
    for b in range(2):
        want = upscale_rgb(desc, np.ascontiguousarray(x[b].transpose(1, 2, 0)), TileConfig(48, 8))
        assert np.abs(tiled[b].clip(0, 1).transpose(1, 2, 0) - want).max() < 1e-6  # (upscale clips to [0, 1])
    assert set(shapes) == {runner._Case(72, 100, 2, 48, 8, 1).call_shape} and len(shapes) == 2 * 2 * 3
    hd = runner._Case(1080, 1920, 1, 512, 32, 1).call_shape  # 3 x 4 windows of 403 x 512
    assert hd == (1, 3, 403, 512) and 12 * hd[2] * hd[3] / (1080 * 1920) < 1.2
    assert runner._Case(96, 96, 1, 40, 8, 4).call_shape[2:] == (40, 40)  # starts and sizes on the size multiple
    with pytest.raises(InputError, match="too small for an overlap"):
        tiled_run(run, x, tile=16, overlap=8, scale=4)


def test_sample_batch_gives_distinct_real_crops():
    x, source = sample_batch(3, 40, 56, seed=1)
    assert x.shape == (3, 3, 40, 56) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert source.startswith("skimage:")
    assert np.abs(x[0] - x[1]).mean() > 0.01 and x.std() > 0.05
    big, _ = sample_batch(1, 600, 900)  # larger than the photos: upscaled to cover, still real content
    assert big.shape == (1, 3, 600, 900) and big.std() > 0.05
