"""Warm-up and timing loops, and the statistics reported for them.

Conventions from trtexec: warm up for a minimum *time* as well as a number of iterations (clocks,
caches, allocators and lazy initialisation settle by time), then time until both a minimum number
of iterations and a minimum duration are reached, capped so a slow configuration cannot run away.
Under concurrency, N worker threads run a closed loop (each sends its next request as soon as the
previous one returns), which measures throughput under load; onnxruntime and torch release the GIL
while they compute, so threads are real parallel clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["TimingPolicy", "LatencyStats", "warm_up", "time_closed_loop", "summarise", "P90_MIN_COUNT", "P99_MIN_COUNT"]


@dataclass(frozen=True)
class TimingPolicy:
    """How long to warm up and to measure. Measuring stops at whichever cap comes first."""

    warmup_s: float = 1.0
    warmup_iters: int = 3
    min_iters: int = 20
    min_time_s: float = 3.0
    max_iters: int = 10_000
    max_time_s: float = 60.0
    rounds: int = 1  # split the timed iterations into this many rounds, interleaved across backends

    def __post_init__(self):
        from lway_rt.errors import InputError

        if self.warmup_s < 0 or self.min_time_s < 0 or self.max_time_s <= 0:
            raise InputError(f"--warmup-s and --min-time-s must be >= 0 and --max-time-s > 0, got {self.warmup_s:g}, "
                             f"{self.min_time_s:g}, {self.max_time_s:g}")
        if self.rounds < 1:
            raise InputError(f"--rounds must be >= 1, got {self.rounds}")
        if self.warmup_iters < 0:
            raise InputError(f"--warmup-iters must be >= 0, got {self.warmup_iters}")
        if not 1 <= self.min_iters <= self.max_iters:
            raise InputError(f"--min-iters must be between 1 and {self.max_iters}, got {self.min_iters}")


@dataclass(frozen=True)
class LatencyStats:
    """Per-request latency in milliseconds, and throughput in requests per second."""

    count: int
    wall_s: float
    mean: float
    std: float | None  # None: one sample has no spread
    min: float
    p50: float
    p90: float | None  # None below P90_MIN_COUNT samples (it would be the maximum)
    p99: float | None  # None below P99_MIN_COUNT samples
    max: float
    requests_per_s: float

    @property
    def cv(self) -> float | None:
        """Coefficient of variation (std / mean): above ~0.1 the machine was busy or the run too short. None with
        fewer than two samples (no spread to measure, which is not the same as a steady run)."""
        return self.std / self.mean if self.std is not None and self.mean > 0 else None

    def as_dict(self) -> dict[str, float | None]:
        return {**asdict(self), "cv": self.cv}


#: fewest samples for which a percentile is reported: with fewer, p90 / p99 would only be the largest sample or an
#: interpolation towards it (p99 of 20 samples is 0.81 of the way from the second largest to the maximum)
P90_MIN_COUNT = 10
P99_MIN_COUNT = 100


def summarise(latencies_ms: list[float] | np.ndarray, wall_s: float) -> LatencyStats:
    """Percentiles (linear interpolation, as numpy), mean, sample std and throughput. p90 is None below
    ``P90_MIN_COUNT`` samples, p99 below ``P99_MIN_COUNT``, std (and so cv) with a single sample."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latencies to summarise")
    if not wall_s > 0:  # a clock too coarse to see the run: the requests back to back are the least it took
        wall_s = float(a.sum()) / 1e3
    if not wall_s > 0:
        raise ValueError("the clock did not advance over the timed requests: no throughput to report")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    std = float(a.std(ddof=1)) if a.size > 1 else None
    return LatencyStats(count=int(a.size), wall_s=float(wall_s), mean=float(a.mean()), std=std, min=float(a.min()),
                        p50=float(p50), p90=float(p90) if a.size >= P90_MIN_COUNT else None,
                        p99=float(p99) if a.size >= P99_MIN_COUNT else None, max=float(a.max()),
                        requests_per_s=float(a.size / wall_s))


#: how a row's note starts where --max-time-s stopped its warm-up or its timing before the counts asked for
CUT_SHORT = "stopped by --max-time-s"


def warm_up(fn: Callable[[], object], policy: TimingPolicy) -> tuple[int, float]:
    """Call ``fn`` until ``warmup_iters`` calls *and* ``warmup_s`` seconds are done (capped at
    ``max_time_s``). Returns (calls, seconds)."""
    start = time.perf_counter()
    n = 0
    while True:
        elapsed = time.perf_counter() - start
        if (n >= policy.warmup_iters and elapsed >= policy.warmup_s) or elapsed >= policy.max_time_s:
            return n, elapsed
        fn()
        n += 1


def time_closed_loop(make_worker_fn: Callable[[int], Callable[[], object]], policy: TimingPolicy,
                     workers: int = 1) -> tuple[list[float], float]:
    """Run ``workers`` closed-loop clients; returns (latencies in ms of every request, wall seconds).

    ``make_worker_fn(i)`` gives worker ``i`` its own callable (own input buffer). Measuring stops
    when ``min_iters`` requests in total and ``min_time_s`` have passed, or at ``max_iters`` /
    ``max_time_s``. Requests in flight when the stop is decided still complete and are counted, and
    the wall time runs until the last one returns, so throughput is requests / wall time.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    fns = [make_worker_fn(i) for i in range(workers)]
    lock = threading.Lock()
    latencies: list[float] = []
    stop = threading.Event()
    errors: list[BaseException] = []
    start = time.perf_counter()

    def should_stop() -> bool:
        elapsed = time.perf_counter() - start
        n = len(latencies)
        return (n >= policy.min_iters and elapsed >= policy.min_time_s) or n >= policy.max_iters \
            or elapsed >= policy.max_time_s

    def loop(fn):
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                fn()
                dt = (time.perf_counter() - t0) * 1e3
                with lock:
                    latencies.append(dt)
                    if should_stop():
                        stop.set()
        except BaseException as exc:  # surfaced in the calling thread below
            errors.append(exc)
            stop.set()

    if workers == 1:
        loop(fns[0])
    else:
        threads = [threading.Thread(target=loop, args=(f,), daemon=True) for f in fns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return latencies, wall
