"""Inference backends behind one interface, for serving and for ``lwayrt serve-bench``.

A backend takes an NCHW float32 numpy batch in [0, 1] and returns the upscaled batch as float32
numpy: the same contract for PyTorch eager (optionally channels-last, fp16/bf16 autocast or
``torch.compile``), ONNX Runtime (CPU, CUDA or TensorRT execution providers) and native TensorRT.
That host-to-host call is what a user's server pays, so it is what end-to-end latency measures;
on a GPU, ``compute_ms`` times the device work alone (CUDA events or a bound-I/O run), the split
trtexec reports as "GPU compute" vs "latency".

Backends are described by a frozen ``BackendSpec`` parsed from a short string
(``torch+cl+bf16``, ``ort-cpu+threads=1+noarena``, ``tensorrt+fp16``), built by ``load_backend``
(which times the load or engine build), and checked against the shapes they were built for:
a shape outside a TensorRT profile or a static ONNX graph is an ``InputError`` that says how to
rebuild, not a crash inside the runtime. ``skip_reason`` says why a backend cannot run here
(package missing, no GPU) so callers can list it as skipped instead of failing.

The loader-that-does-nothing-until-called shape follows Polygraphy; the provider fallback rule
(a GPU provider that silently became the CPU is an error) follows ``lway_rt.runtime.ort``.
onnxruntime and tensorrt are imported only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lway_rt.errors import InputError, ModelError

__all__ = [
    "KINDS", "BackendSpec", "ShapeProfile", "Backend", "parse_backend", "skip_reason", "load_backend",
    "export_onnx_for", "check_shape",
]

#: Backend kinds and what they are.
KINDS = {
    "torch": "PyTorch eager on --device (options: cl, compile, fp16, bf16)",
    "ort-cpu": "ONNX Runtime, CPUExecutionProvider",
    "ort-cuda": "ONNX Runtime, CUDAExecutionProvider",
    "ort-trt": "ONNX Runtime, TensorrtExecutionProvider (CUDA and CPU for unsupported nodes)",
    "tensorrt": "native TensorRT engine built from the ONNX export (strongly typed)",
}
_PRECISIONS = ("fp32", "fp16", "bf16")
_ORT_MODES = ("sequential", "parallel")
_ORT_OPT = ("disable", "basic", "extended", "all")


# --------------------------------------------------------------------------------------------
# Specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendSpec:
    """One backend configuration. Build it with ``parse_backend``; fields are validated here."""

    kind: str
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    allow_fallback: bool = False
    threads: int | None = None  # None: the caller's default (torch.get_num_threads() / ORT's)
    ort_opt_level: str = "all"
    ort_arena: bool = True
    ort_mode: str = "sequential"
    workspace_mb: int = 2048

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError(f"unknown backend {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.precision not in _PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; use one of {', '.join(_PRECISIONS)}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"unknown device {self.device!r}; use cpu or cuda")
        expected = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "cuda", "tensorrt": "cuda"}.get(self.kind)
        if expected and self.device != expected:
            raise InputError(f"backend {self.kind} runs on {expected}, not {self.device}")
        if self.kind != "torch" and (self.channels_last or self.compile):
            raise InputError(f"'cl' and 'compile' are torch options; {self.kind} does not take them")
        if self.kind != "torch" and self.precision == "bf16":
            raise InputError(f"{self.kind} supports fp32 and fp16 (a converted fp16 ONNX); bf16 is a torch autocast option")
        if self.device == "cpu" and self.precision == "fp16":
            # Emulated fp16 kernels on CPUs run many times slower than fp32; not a deployment option.
            raise InputError(f"fp16 on the CPU is emulated and slow: use fp32 (or torch+bf16) on the CPU, "
                             f"fp16 with {'torch+cuda' if self.kind == 'torch' else 'ort-cuda, ort-trt or tensorrt'}")
        if self.ort_opt_level not in _ORT_OPT:
            raise InputError(f"unknown ONNX Runtime optimisation level {self.ort_opt_level!r}; use one of {', '.join(_ORT_OPT)}")
        if self.ort_mode not in _ORT_MODES:
            raise InputError(f"unknown ONNX Runtime execution mode {self.ort_mode!r}; use sequential or parallel")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"threads must be >= 1, got {self.threads}")
        if self.workspace_mb < 16:
            raise InputError(f"TensorRT workspace of {self.workspace_mb} MB is too small; use at least 16")

    @property
    def is_ort(self) -> bool:
        return self.kind.startswith("ort-")

    @property
    def label(self) -> str:
        """Canonical short name, e.g. ``torch+cl+bf16`` or ``ort-cpu+threads=1+noarena``; parses back."""
        parts = [self.kind]
        if self.kind == "torch" and self.device == "cuda":
            parts.append("cuda")
        if self.channels_last:
            parts.append("cl")
        if self.compile:
            parts.append("compile")
        if self.precision != "fp32":
            parts.append(self.precision)
        if self.threads is not None:
            parts.append(f"threads={self.threads}")
        if self.is_ort:
            if self.ort_opt_level != "all":
                parts.append(f"opt={self.ort_opt_level}")
            if not self.ort_arena:
                parts.append("noarena")
            if self.ort_mode != "sequential":
                parts.append(self.ort_mode)
        if self.kind in ("tensorrt", "ort-trt") and self.workspace_mb != 2048:
            parts.append(f"ws={self.workspace_mb}")
        if self.allow_fallback:
            parts.append("fallback")
        return "+".join(parts)

    def options(self) -> dict[str, Any]:
        """The settings that matter for this kind (for reports)."""
        out: dict[str, Any] = {"threads": self.threads}
        if self.kind == "torch":
            out.update(channels_last=self.channels_last, compile=self.compile)
        if self.is_ort:
            out.update(opt_level=self.ort_opt_level, mem_arena=self.ort_arena, execution_mode=self.ort_mode,
                       allow_fallback=self.allow_fallback)
        if self.kind in ("tensorrt", "ort-trt"):
            out.update(workspace_mb=self.workspace_mb)
        return out


def parse_backend(text: str, *, device: str = "cpu", threads: int | None = None) -> BackendSpec:
    """``kind[+option...]`` -> ``BackendSpec``.

    Options: ``cuda`` (torch on the GPU), ``cl`` (channels-last), ``compile``, ``fp16``, ``bf16``,
    ``threads=N``, ``opt=disable|basic|extended|all``, ``noarena``, ``parallel``, ``fallback``
    (allow an ONNX Runtime GPU provider to fall back to the CPU, marked in the report),
    ``ws=MB`` (TensorRT workspace). ``device`` is the default device of ``torch``; ``threads``
    the default thread count.
    """
    head, *opts = [p.strip() for p in text.strip().split("+")]
    if head not in KINDS:
        raise InputError(f"unknown backend {head!r} in {text!r}; use one of {', '.join(KINDS)} (options after '+')")
    fields: dict[str, Any] = {"kind": head, "threads": threads}
    fields["device"] = device if head == "torch" else ("cpu" if head == "ort-cpu" else "cuda")
    given: dict[str, str] = {}  # what each option sets -> the option that set it: a second one would silently win
    slots = {"cuda": "device", "cpu": "device", "fp16": "precision", "bf16": "precision", "fp32": "precision",
             **{m: "execution mode" for m in _ORT_MODES}, "threads": "thread count", "opt": "optimisation level",
             "ws": "workspace"}
    for opt in opts:
        key, _, value = opt.partition("=")
        slot = slots.get(key, key)
        if slot in given:
            what = f"the {slot}" if slot in slots.values() else f"{opt!r}"
            raise InputError(f"{text!r} sets {what} twice ({given[slot]!r} and {opt!r}): keep one")
        given[slot] = opt
        # options of another kind of backend are refused, not ignored (whatever their value: 'opt=all' on torch
        # would read as if it did something)
        if key in ("opt", "noarena", *_ORT_MODES) and not head.startswith("ort-"):
            raise InputError(f"'opt=', 'noarena', 'sequential' and 'parallel' are ONNX Runtime options; {head} does "
                             f"not take {opt!r} (in {text!r})")
        if key == "fallback" and head not in ("ort-cuda", "ort-trt"):
            raise InputError(f"'fallback' lets ort-cuda / ort-trt fall back to the CPU; {head} does not take it")
        if key == "ws" and head not in ("tensorrt", "ort-trt"):
            raise InputError(f"'ws=' is the TensorRT workspace (tensorrt, ort-trt); {head} does not take it")
        if key in ("cuda", "cpu") and not value and head == "torch":
            fields["device"] = key
        elif key == "cl" and not value:
            fields["channels_last"] = True
        elif key == "compile" and not value:
            fields["compile"] = True
        elif key in ("fp16", "bf16", "fp32") and not value:
            fields["precision"] = key
        elif key == "noarena" and not value:
            fields["ort_arena"] = False
        elif key in _ORT_MODES and not value:
            fields["ort_mode"] = key
        elif key == "fallback" and not value:
            fields["allow_fallback"] = True
        elif key == "opt" and value:
            fields["ort_opt_level"] = value
        elif key in ("threads", "ws") and value:
            try:
                number = int(value)
            except ValueError:
                raise InputError(f"{key}= needs an integer in {text!r}, got {value!r}") from None
            fields["threads" if key == "threads" else "workspace_mb"] = number
        else:
            raise InputError(
                f"unknown backend option {opt!r} in {text!r}; options: cuda, cl, compile, fp16, bf16, threads=N, "
                "opt=LEVEL, noarena, parallel, fallback, ws=MB"
            )
    return BackendSpec(**fields)


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeProfile:
    """NCHW shapes a backend is built for: ``min <= shape <= max`` per dimension; ``opt`` is tuned for."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def __post_init__(self):
        for name in ("min", "opt", "max"):
            shape = getattr(self, name)
            if len(shape) != 4 or any(int(d) < 1 for d in shape):
                raise InputError(f"profile {name} shape must be 4 positive ints (N, C, H, W), got {shape}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise InputError(f"profile needs min <= opt <= max per dimension, got {self.min}, {self.opt}, {self.max}")

    @classmethod
    def covering(cls, shapes: Sequence[Sequence[int]]) -> ShapeProfile:
        """The smallest profile holding every shape; ``opt`` is the largest (what is timed most)."""
        arr = np.array([tuple(int(d) for d in s) for s in shapes])
        big = max(shapes, key=lambda s: int(np.prod(s)))
        return cls(tuple(arr.min(0).tolist()), tuple(int(d) for d in big), tuple(arr.max(0).tolist()))

    def text(self) -> str:
        fmt = lambda s: "x".join(str(d) for d in s)  # noqa: E731
        return f"{fmt(self.min)} .. {fmt(self.max)}"


def check_shape(shape: Sequence[int], lo: Sequence[int], hi: Sequence[int], *, what: str, fix: str) -> None:
    """Raise ``InputError`` when ``shape`` is outside ``lo..hi`` in any dimension (None = any size)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != len(lo):
        raise InputError(f"input has {len(shape)} dimensions {shape}; {what} expects {len(lo)} (N, C, H, W)")
    names = "NCHW"
    for i, (d, a, b) in enumerate(zip(shape, lo, hi)):
        if (a is not None and d < a) or (b is not None and d > b):
            def rng(a=a, b=b):
                return str(a) if a == b else f"{a if a is not None else 1}..{b if b is not None else 'any'}"
            raise InputError(
                f"input shape {'x'.join(map(str, shape))} is outside {what}: {names[i]}={d} not in {rng()}; {fix}"
            )


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def skip_reason(spec: BackendSpec, *, fp16_safe: bool = True) -> str | None:
    """Why ``spec`` cannot run on this machine (None: it can be tried)."""
    if spec.precision == "fp16" and not fp16_safe:
        return "the model is marked not fp16-safe (its activations overflow fp16); use fp32 or bf16"
    # torch and native TensorRT (whose buffers are torch CUDA tensors) need a CUDA build of torch;
    # ONNX Runtime brings its own CUDA, so its providers are checked instead.
    if spec.device == "cuda" and not spec.is_ort and not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch" + ("" if torch.version.cuda else " (this is a CPU-only torch build)")
    if spec.kind == "torch":
        if spec.precision == "bf16" and spec.device == "cuda" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16 support"
        if spec.compile:
            import shutil

            if spec.device == "cpu" and not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
                return "torch.compile on the CPU needs a C compiler (gcc or clang) on PATH"
        return None
    if not _has("onnx") or not _has("onnxscript"):
        return "ONNX export needs onnx and onnxscript: install the 'onnx' extra (pip install 'lway_rt[onnx]')"
    if spec.is_ort:
        if not _has("onnxruntime"):
            return "onnxruntime is not installed: install the 'onnx' extra (or 'gpu' for CUDA/TensorRT providers)"
        import onnxruntime as ort

        wanted = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}.get(spec.kind)
        if wanted and wanted not in ort.get_available_providers() and not spec.allow_fallback:
            return (f"this onnxruntime {ort.__version__} build has no {wanted}: install onnxruntime-gpu "
                    "(the 'gpu' extra) in place of onnxruntime, or add '+fallback' to run it on the CPU, marked")
        return None
    if not _has("tensorrt"):
        return "TensorRT is not installed: install the 'trt' extra, or use ort-cuda"
    return None


def export_onnx_for(model, out_path: Path, *, precision: str = "fp32", dynamic: bool = True) -> Path:
    """Export a ``ModelDescriptor`` (or image module) with the project's exporter (``lway_rt.export``).

    Its own parity check is skipped: serve-bench verifies every backend on photo crops anyway. A capped
    network's blend (``lway_rt.export.capped``) stays fp32 in an fp16 file, as ``lwayrt export`` keeps it.
    """
    from lway_rt.export import export_onnx
    from lway_rt.export.capped import fp32_nodes

    keep = fp32_nodes(getattr(model, "model", model))
    return Path(export_onnx(model, Path(out_path), precision=precision, dynamic=dynamic, check=False, keep_fp32_nodes=keep))


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


class Backend:
    """A loaded backend. ``run`` is host numpy -> host numpy; ``compute_ms`` is device-only time (GPU).

    ``load_s``: seconds to load or build it; ``details``: facts for reports (providers used, engine
    size ...); ``compute_method``: how ``compute_ms`` measures ("cuda_events", "iobinding_wall") or None.
    """

    def __init__(self, spec: BackendSpec):
        self.spec = spec
        self.load_s = 0.0
        self.details: dict[str, Any] = {}
        self.compute_method: str | None = None

    def run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_ms(self, x: np.ndarray) -> float | None:
        """Device compute time of one call with inputs already on the device (None on the CPU)."""
        return None

    def prepare(self, workers: int) -> None:
        """Be ready for ``workers`` threads calling ``run`` at once, before they are timed (what each call at once
        needs of its own is made here, not inside the timed loop)."""

    def describe(self) -> dict[str, Any]:
        return {"label": self.spec.label, "kind": self.spec.kind, "device": self.spec.device,
                "precision": self.spec.precision, "options": self.spec.options(), "load_s": self.load_s,
                **self.details}

    def close(self) -> None:
        """Release sessions, engines and device memory."""


def _as_batch(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise InputError(f"expected an NCHW batch (4 dimensions), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


class TorchBackend(Backend):
    """PyTorch eager, optionally channels-last, autocast (fp16 on CUDA, bf16) or ``torch.compile``."""

    def __init__(self, spec: BackendSpec, model: torch.nn.Module, profile: ShapeProfile):
        super().__init__(spec)
        self.profile = profile
        start = time.perf_counter()
        self.device = torch.device(spec.device)
        self._threads_before = torch.get_num_threads()  # (put back by close(): the count is the process's)
        # A private copy: channels-last and compile change the module, the caller's must stay as it was.
        net = copy.deepcopy(model).eval().to(self.device)
        self.memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
        if spec.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(spec.precision)
        if spec.compile:
            net = torch.compile(net, dynamic=False)
        self.net = net
        if spec.compile:
            # Compilation happens on the first call: do it now so it counts as build time, not latency.
            self._own_threads()
            self._forward_device(torch.rand(profile.opt, device=self.device))
            self.details["compiled_for"] = list(profile.opt)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.load_s = time.perf_counter() - start
        if self.device.type == "cuda":
            self.compute_method = "cuda_events"

    def _forward_device(self, xt: torch.Tensor) -> torch.Tensor:
        xt = xt.contiguous(memory_format=self.memory_format)
        with torch.inference_mode():
            if self.autocast_dtype is not None:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    return self.net(xt)
            return self.net(xt)

    def _own_threads(self) -> None:
        """On the CPU, torch's intra-op threads as the spec asks (``torch+threads=N``; the run's count otherwise, filled
        in by ``with_threads``): the count is the process's, which the backend timed before may have changed; a
        ``threads=1`` row had run on every thread while its label and options said one."""
        if self.device.type == "cpu" and self.spec.threads is not None and torch.get_num_threads() != self.spec.threads:
            torch.set_num_threads(self.spec.threads)

    def run(self, x: np.ndarray) -> np.ndarray:
        x = _as_batch(x)
        self._own_threads()
        if self.spec.compile:
            check_shape(x.shape, self.profile.min, self.profile.max, what=f"the compiled profile {self.profile.text()}",
                        fix="benchmark this size in the same run so it is compiled for, or drop +compile")
        xt = torch.from_numpy(x).to(self.device, non_blocking=False)
        out = self._forward_device(xt)
        return out.float().contiguous().cpu().numpy()

    def compute_ms(self, x: np.ndarray) -> float | None:
        if self.device.type != "cuda":
            return None
        xt = torch.from_numpy(_as_batch(x)).to(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        self._forward_device(xt)
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    def close(self) -> None:
        self.net = None
        if torch.get_num_threads() != self._threads_before:
            torch.set_num_threads(self._threads_before)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _static_bounds(shape: Sequence[Any]) -> tuple[list[int | None], list[int | None]]:
    """ONNX input dims -> (lo, hi): fixed ints bound both ways, symbolic names are free."""
    lo = [d if isinstance(d, int) and d > 0 else None for d in shape]
    return lo, list(lo)


class OrtBackend(Backend):
    """ONNX Runtime on the CPU, CUDA or TensorRT execution provider, with tunable session options."""

    _PROVIDERS = {"ort-cpu": ["CPUExecutionProvider"],
                  "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                  "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}

    def __init__(self, spec: BackendSpec, onnx_path: Path, profile: ShapeProfile):
        super().__init__(spec)
        from lway_rt.runtime.ort import ProviderFallbackError, create_session

        self.profile = profile
        start = time.perf_counter()
        providers: list[Any] = list(self._PROVIDERS[spec.kind])
        if spec.kind == "ort-trt":
            from lway_rt.export.onnx_export import INPUT_NAME

            fmt = lambda s: f"{INPUT_NAME}:" + "x".join(str(d) for d in s)  # noqa: E731
            # The graph carries its precision (fp16 ONNX or not), but ONNX Runtime's TensorRT provider builds weakly
            # typed networks, where TensorRT may run an fp16 graph's layers in fp32: its fp16 flag is set for fp16.
            providers[0] = ("TensorrtExecutionProvider", {
                "trt_fp16_enable": spec.precision == "fp16",
                "trt_max_workspace_size": spec.workspace_mb << 20,
                "trt_profile_min_shapes": fmt(profile.min),
                "trt_profile_opt_shapes": fmt(profile.opt),
                "trt_profile_max_shapes": fmt(profile.max),
            })
        asked = [p[0] if isinstance(p, tuple) else p for p in providers]
        # The session drops providers it cannot use; the check below decides whether that is allowed
        # and says so in serve-bench's terms.
        self.session = create_session(onnx_path, providers=providers, allow_fallback=True, threads=spec.threads,
                                      opt_level=spec.ort_opt_level, mem_arena=spec.ort_arena,
                                      execution_mode=spec.ort_mode)
        used = self.session.get_providers()
        dropped = [p for p in asked if p != "CPUExecutionProvider" and p not in used]
        if dropped and not spec.allow_fallback:
            raise ProviderFallbackError(
                f"ONNX Runtime fell back from {', '.join(dropped)} to {', '.join(used)}: the numbers would be the CPU's. "
                "Fix the GPU set-up (onnxruntime-gpu, CUDA/cuDNN/TensorRT libraries), or add '+fallback' to allow and mark it"
            )
        self.details["providers"] = used
        self.details["fell_back"] = bool(dropped)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        self.lo, self.hi = _static_bounds(inp.shape)
        self.details["onnx_input_shape"] = [d if isinstance(d, int) else str(d) for d in inp.shape]
        self.on_gpu = any(p in used for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        self.load_s = time.perf_counter() - start
        if self.on_gpu:
            self.compute_method = "iobinding_wall"

    def _check(self, shape):
        check_shape(shape, self.lo, self.hi, what="the ONNX graph's static input shape",
                    fix="export with dynamic shapes, or run at the exported size")
        if self.spec.kind == "ort-trt":
            check_shape(shape, self.profile.min, self.profile.max, what=f"the TensorRT profile {self.profile.text()}",
                        fix="include this size in the benchmark so the profile covers it")

    def run(self, x: np.ndarray) -> np.ndarray:
        x = _as_batch(x)
        self._check(x.shape)
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        return np.asarray(out, dtype=np.float32)

    def compute_ms(self, x: np.ndarray) -> float | None:
        if not self.on_gpu:
            return None
        import onnxruntime as ort

        x = _as_batch(x)
        self._check(x.shape)
        if getattr(self, "_bound_shape", None) != x.shape:
            self._binding = self.session.io_binding()
            self._x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
            self._binding.bind_ortvalue_input(self.input_name, self._x_dev)
            self._binding.bind_output(self.output_name, "cuda", 0)
            self._bound_shape = x.shape
        start = time.perf_counter()
        self.session.run_with_iobinding(self._binding)
        self._binding.synchronize_outputs()
        return (time.perf_counter() - start) * 1e3

    def close(self) -> None:
        self.session = None
        self._binding = None
        self._x_dev = None


class TensorRTBackend(Backend):
    """A native TensorRT engine with one optimisation profile, built from the ONNX export.

    The build uses the project's export stages (``NetworkFromOnnxPath`` -> ``EngineFromNetwork``,
    strongly typed: precision comes from the ONNX graph, TF32 off for fp32). Execution is here so
    the benchmark can time device compute with CUDA events and check shapes against the profile
    before TensorRT sees them. Device buffers are torch CUDA tensors; I/O stays fp32.

    An execution context holds its call's shapes and buffer addresses, and is not thread-safe: calls at once
    (``serve-bench --concurrency``) each take a context and stream of their own from a pool (``prepare`` fills it
    before timing), as a server would; one shared context let a call read another's input and return an unwritten
    buffer. Contexts that run at once on an engine of dynamic shapes must each have an optimisation profile of their
    own (TensorRT's rule), so the engine holds ``lanes`` copies of the one profile, one a context.
    """

    def __init__(self, spec: BackendSpec, onnx_path: Path, profile: ShapeProfile, *, optimization_level: int = 3,
                 lanes: int = 1):
        super().__init__(spec)
        import tensorrt as trt

        from lway_rt.export.onnx_export import INPUT_NAME
        from lway_rt.export.tensorrt import EngineFromNetwork, NetworkFromOnnxPath, check_float32_io, load_engine

        self.profile = profile
        start = time.perf_counter()
        self.lanes = max(1, lanes)
        plan = EngineFromNetwork(NetworkFromOnnxPath(onnx_path),
                                 profiles=[{INPUT_NAME: (profile.min, profile.opt, profile.max)}] * self.lanes,
                                 workspace_mib=spec.workspace_mb, optimization_level=optimization_level,
                                 fp32=spec.precision == "fp32")()
        handle = load_engine(plan)
        if handle is None:
            raise ModelError("TensorRT could not deserialize the engine it just built; check the TensorRT install")
        self._handle = handle
        self.engine = handle.engine
        self._lanes: queue.SimpleQueue = queue.SimpleQueue()  # idle (execution context, stream) pairs
        self._made: list = []  # every pair made, released by close()
        self._making = threading.Lock()
        self.prepare(1)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        check_float32_io(trt, self.engine, (self.input_name, self.output_name))
        self.details.update(tensorrt=trt.__version__, engine_bytes=len(plan), profile=profile.text(),
                            optimization_level=optimization_level)
        self.load_s = time.perf_counter() - start
        self.compute_method = "cuda_events"

    def _new_lane(self) -> tuple:
        with self._making:
            index = len(self._made)
            if index >= self.lanes:
                raise ModelError(f"the TensorRT engine was built for {self.lanes} call(s) at once (one optimisation "
                                 "profile each), and more came: build it for the most workers it serves")
            context = self.engine.create_execution_context()
            if context is None:
                raise ModelError("TensorRT could not make an execution context (out of GPU memory?)")
            stream = torch.cuda.Stream()
            if index and not context.set_optimization_profile_async(index, stream.cuda_stream):
                raise ModelError(f"TensorRT refused optimisation profile {index} for an execution context")
            stream.synchronize()
            lane = (context, stream)
            self._made.append(lane)
        return lane

    def prepare(self, workers: int) -> None:
        while len(self._made) < workers:
            self._lanes.put(self._new_lane())

    @contextlib.contextmanager
    def _lane(self):
        """A context and stream no other call uses meanwhile (a new one where all are busy)."""
        try:
            lane = self._lanes.get_nowait()
        except queue.Empty:
            lane = self._new_lane()
        try:
            yield lane
        finally:
            self._lanes.put(lane)

    def _enqueue(self, xt: torch.Tensor, context, stream: torch.cuda.Stream) -> torch.Tensor:
        check_shape(tuple(xt.shape), self.profile.min, self.profile.max, what=f"the engine's profile {self.profile.text()}",
                    fix="rebuild the engine with a profile that covers it (benchmark that size in the same run)")
        if not context.set_input_shape(self.input_name, tuple(xt.shape)):
            raise ModelError(f"TensorRT refused the input shape {tuple(xt.shape)} (profile {self.profile.text()})")
        out = torch.empty(tuple(context.get_tensor_shape(self.output_name)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(self.input_name, xt.data_ptr())
        context.set_tensor_address(self.output_name, out.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ModelError("TensorRT execution failed (see its log above)")
        return out

    def run(self, x: np.ndarray) -> np.ndarray:
        x = _as_batch(x)
        with self._lane() as (context, stream):
            with torch.cuda.stream(stream):
                xt = torch.from_numpy(x).to("cuda", non_blocking=False)
                out = self._enqueue(xt, context, stream).cpu()
            stream.synchronize()
        return out.numpy()

    def compute_ms(self, x: np.ndarray) -> float | None:
        xt = torch.from_numpy(_as_batch(x)).to("cuda")
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with self._lane() as (context, stream), torch.cuda.stream(stream):
            start.record(stream)
            self._enqueue(xt, context, stream)
            end.record(stream)
            end.synchronize()
        return float(start.elapsed_time(end))

    def close(self) -> None:
        self._made.clear()
        self._lanes = queue.SimpleQueue()
        self.engine = None
        self._handle = None
        torch.cuda.empty_cache()


def load_backend(spec: BackendSpec, model, profile: ShapeProfile, *, onnx: Callable[[str], Path] | None = None,
                 lanes: int = 1) -> Backend:
    """Build ``spec`` for ``model`` (a ``ModelDescriptor`` or image module) and the shapes in ``profile``.

    ``load_s`` of the result holds the build time. ``onnx(precision)`` returns an exported ONNX file
    for the ONNX-based kinds (callers cache one export across backends); by default a temporary
    export is made. ``lanes``: the most calls it takes at once (a native TensorRT engine is built with one
    optimisation profile for each).
    """
    if spec.kind == "torch":
        return TorchBackend(spec, getattr(model, "model", model), profile)
    if onnx is None:  # a temporary export, removed once the backend is built (both read the file only then)
        from lway_rt.io.weights import sweep_stale_temp_dirs

        sweep_stale_temp_dirs()  # what runs killed with kill -9 left
        with tempfile.TemporaryDirectory(prefix="lwayrt-backend-") as workdir:
            path = export_onnx_for(model, Path(workdir) / f"model_{spec.precision}.onnx", precision=spec.precision)
            return load_backend(spec, model, profile, onnx=lambda precision: path, lanes=lanes)
    path = onnx(spec.precision)
    if spec.is_ort:
        return OrtBackend(spec, path, profile)
    if not torch.cuda.is_available():
        raise InputError("native TensorRT needs a CUDA GPU visible to PyTorch (a CUDA build of torch); use ort-cpu here")
    return TensorRTBackend(spec, path, profile, lanes=lanes)


def with_threads(spec: BackendSpec, threads: int | None) -> BackendSpec:
    """``spec`` with a default thread count filled in (an explicit ``threads=`` wins)."""
    return spec if spec.threads is not None or threads is None else replace(spec, threads=threads)
