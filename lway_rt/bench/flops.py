"""Model cost per image, and the machine's measured peak, for an efficiency figure.

Cost: multiply-accumulates of every convolution and linear layer, counted analytically from the
shapes each layer sees in one forward pass (forward hooks), FLOPs = 2 x MACs. Activations, pixel
shuffle and the nearest-upsampled skip are not counted: they are memory-bound and small next to
the convolutions (< 1 % for SRVGGNetCompact and RRDBNet).

Peak: a large square matrix multiply, and a 3x3 convolution (an implicit GEMM, which runs in a
different library), timed in the same process with the same thread count, best of several runs:
the practical ceiling dense kernels reach on this machine at this moment, in the spirit of the
"achieved vs peak" column of roofline reports. On a shared machine it moves with the load, which is
why it is measured in the same run as the model, at its start and its end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_macs", "measure_matmul_gflops", "measure_conv_gflops", "measure_peak", "PROBE_MAX_S"]

#: seconds after which a probe stops repeating (it always finishes the call it is in): a kernel on a slow fallback
#: path must not hold the run for minutes
PROBE_MAX_S = 10.0


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """MACs of one forward pass at ``input_shape`` (NCHW, batch included), by layer type.

    Conv2d: output elements x (in_channels / groups) x kernel area; ConvTranspose2d: input
    elements x (out_channels / groups) x kernel area; Linear: output elements x in_features.
    Returns ``{"Conv2d": ..., "Linear": ..., "total": ...}`` (types that ran).
    """
    counts: dict[str, int] = {}

    def hook(module, inputs, output):
        kind = type(module).__name__
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs = output.numel() * (module.in_channels // module.groups) * k
        elif isinstance(module, nn.ConvTranspose2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs = inputs[0].numel() * (module.out_channels // module.groups) * k
        else:  # nn.Linear
            macs = output.numel() * module.in_features
        counts[kind] = counts.get(kind, 0) + int(macs)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        # The count depends on shapes only, so a zero input of the real shape will do.
        with torch.inference_mode():
            model(torch.zeros(tuple(int(d) for d in input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
    counts["total"] = sum(counts.values())
    return counts


def _best_seconds(fn, device: str, repeats: int, max_s: float | None = None) -> float:
    """Best time of ``repeats`` calls after a warm-up call; once ``max_s`` has passed no further call starts (if the
    warm-up alone took that long, its own time is returned: a slow path measured, not an hour spent on it)."""
    best = float("inf")
    start = time.perf_counter()
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        took = time.perf_counter() - t0
        if i:  # the first call is the warm-up (allocator, kernel selection)
            best = min(best, took)
        if max_s is not None and time.perf_counter() - start >= max_s:
            return best if i else took
    return best


def _autocast(device: str, dtype: torch.dtype | None):
    import contextlib

    return contextlib.nullcontext() if dtype is None else torch.autocast(device, dtype=dtype)


def measure_matmul_gflops(*, n: int = 2048, dtype: torch.dtype = torch.float32, device: str = "cpu",
                          repeats: int = 5, threads: int | None = None, autocast: torch.dtype | None = None,
                          max_s: float | None = None) -> float:
    """Best-of-``repeats`` GFLOP/s of an ``n x n`` matrix product (2 n^3 FLOPs) on ``device``; ``autocast``: the
    product of ``dtype`` inputs runs under ``torch.autocast`` to that type, as an autocast backend computes it."""
    with _threads(threads):
        gen = torch.Generator(device="cpu").manual_seed(0)
        a = torch.rand(n, n, generator=gen).to(device=device, dtype=dtype)
        b = torch.rand(n, n, generator=gen).to(device=device, dtype=dtype)
        with torch.inference_mode(), _autocast(device, autocast):
            return 2.0 * n**3 / _best_seconds(lambda: torch.mm(a, b), device, repeats, max_s) / 1e9


def measure_conv_gflops(*, channels: int = 64, size: int = 128, batch: int = 1, dtype: torch.dtype = torch.float32,
                        device: str = "cpu", repeats: int = 5, threads: int | None = None, channels_last: bool = False,
                        autocast: torch.dtype | None = None, max_s: float | None = None) -> float:
    """Best-of-``repeats`` GFLOP/s of a 3x3 ``channels``->``channels`` convolution (an implicit GEMM), optionally
    channels-last and under ``torch.autocast`` to ``autocast``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with _threads(threads):
        x = torch.rand(batch, channels, size, size).to(device=device, dtype=dtype, memory_format=fmt)
        w = torch.rand(channels, channels, 3, 3).to(device=device, dtype=dtype, memory_format=fmt)
        flops = 2.0 * batch * channels * channels * 9 * size * size
        with torch.inference_mode(), _autocast(device, autocast):
            return flops / _best_seconds(lambda: torch.nn.functional.conv2d(x, w, padding=1), device, repeats,
                                         max_s) / 1e9


def measure_peak(*, device: str = "cpu", dtype: torch.dtype = torch.float32, threads: int | None = None,
                 max_s: float | None = PROBE_MAX_S) -> dict[str, float]:
    """The dense-kernel ceiling of this machine now: a large matmul (BLAS) and a 3x3 convolution
    (the convolution library), each best of 5 (fewer past ``max_s`` seconds); ``best`` is the larger. Both are
    reported because they can differ a lot (e.g. MKL's sgemm on AMD CPUs trails oneDNN's AVX-512 convolutions).

    bf16 is probed as the torch backends compute it: float32 tensors under ``torch.autocast`` to bf16, the
    convolution channels-last (oneDNN's fast bf16 layout). A plain bf16 NCHW convolution takes another, far slower
    path on some CPUs, and its peak would sit below what the model reaches."""
    big = device == "cuda"
    half = dtype == torch.bfloat16
    kw = {"dtype": torch.float32, "autocast": dtype} if half else {"dtype": dtype}
    probes = {
        f"matmul_{8192 if big else 2048}": measure_matmul_gflops(n=8192 if big else 2048, device=device,
                                                                 threads=threads, max_s=max_s, **kw),
        f"conv3x3_{256 if big else 64}ch": measure_conv_gflops(channels=256 if big else 64, size=256 if big else 128,
                                                                batch=8 if big else 1, device=device, threads=threads,
                                                                channels_last=half, max_s=max_s, **kw),
    }
    return {**probes, "best": max(probes.values())}


class _threads:
    """Context manager: torch intra-op threads set to ``n`` (None: unchanged), restored on exit."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)
