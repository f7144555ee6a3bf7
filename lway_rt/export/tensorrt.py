"""ONNX -> TensorRT engine, engine cache and refit (TensorRT 10.x and 11.x).

Written against the documented TensorRT Python API; ``tensorrt`` is imported inside the
functions and its absence (or a machine without a CUDA GPU) raises a one-line error that names
the ``trt`` extra and the ONNX Runtime alternative.

The stages follow Polygraphy's loaders (``NetworkFromOnnxPath``, ``EngineFromNetwork``,
``SaveEngine``: NVIDIA, Apache-2.0), written anew and smaller:

* ``NetworkFromOnnxPath`` parses the ONNX into a **strongly typed** network: the precision is
  the ONNX graph's (our fp16 ONNX), as TensorRT 11 requires (it has no FP16 builder flag) and as
  TensorRT 10.x allows with the ``STRONGLY_TYPED`` creation flag;
* ``EngineFromNetwork`` adds one optimisation profile per input shape set, the workspace limit,
  the optimisation level, builder flags (``refit`` ...), a timing cache per GPU and TensorRT
  version, and reports build progress through ``IProgressMonitor`` where TensorRT offers it;
* ``SaveEngine`` writes the plan atomically.

``refit_engine_bytes`` swaps new weights into a ``REFIT`` engine with
``OnnxParserRefitter.refit_from_file``. The engine cache and the parity gate around these stages
live in ``pipeline.py`` (``build_engine_cached``, ``refit_engine``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lway_rt.errors import LwayError, MissingDependencyError, ModelError, OutputError

__all__ = [
    "require_tensorrt", "tensorrt_status", "DeviceInfo", "device_info", "NetworkFromOnnxPath", "EngineFromNetwork",
    "SaveEngine", "EngineHandle", "load_engine", "refittable_weight_names", "TrtRunner", "refit_engine_bytes", "timing_cache_path", "ENGINE_ALTERNATIVE",
]

ENGINE_ALTERNATIVE = "use --engine none and run the ONNX file with ONNX Runtime"
Log = Callable[[str], None]


def _nolog(_msg: str) -> None:
    pass


def require_tensorrt(feature: str = "building TensorRT engines", alternative: str = ENGINE_ALTERNATIVE):
    """Import tensorrt and check for a CUDA GPU, or raise a one-line error naming the fix."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "trt", feature, alternative) from exc
    major = str(getattr(trt, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 10:  # 8.x: implicit-batch networks by default, no execute_async_v3 ...
        raise LwayError(f"{feature} needs TensorRT 10 or later, and {getattr(trt, '__version__', 'an unknown version')} "
                        f"is installed: pip install 'tensorrt>=10.3' (the 'trt' extra), or {alternative}")
    import torch

    if not torch.cuda.is_available():
        raise LwayError(f"{feature} needs an NVIDIA GPU with CUDA, and none is visible (torch.cuda.is_available() is "
                        f"False): run on a GPU machine with a CUDA build of torch, or {alternative}")
    return trt


def tensorrt_status() -> str | None:
    """None when engines can be built here, else the reason (for messages and test skips)."""
    try:
        require_tensorrt()
    except LwayError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class DeviceInfo:
    trt_version: str
    gpu_name: str
    compute_capability: str

    def slug(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-")
        return f"{gpu}_sm{self.compute_capability.replace('.', '')}_trt{self.trt_version}"


def device_info(device: int = 0) -> DeviceInfo:
    trt = require_tensorrt()
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return DeviceInfo(trt.__version__, torch.cuda.get_device_name(device), f"{major}.{minor}")


def timing_cache_path(cache_dir: str | Path, info: DeviceInfo) -> Path:
    """One timing cache per GPU model and TensorRT version (timings do not transfer between them)."""
    return Path(cache_dir) / "timing" / f"{info.slug()}.cache"


def _logger(trt):
    return trt.Logger(trt.Logger.WARNING)


class NetworkFromOnnxPath:
    """Parse an ONNX file into a strongly typed network; returns (builder, network, parser)."""

    def __init__(self, path: str | Path, *, strongly_typed: bool = True):
        self.path = Path(path)
        self.strongly_typed = strongly_typed

    def __call__(self):
        trt = require_tensorrt()
        logger = _logger(trt)
        builder = trt.Builder(logger)
        flags = 0
        creation = trt.NetworkDefinitionCreationFlag
        if self.strongly_typed and hasattr(creation, "STRONGLY_TYPED"):
            # Required on 10.x to honour the ONNX's fp16 types; 11.x networks are strongly typed anyway.
            flags |= 1 << int(creation.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(self.path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ModelError(f"TensorRT {trt.__version__} cannot parse {self.path.name}: "
                             f"{errors[0] if errors else 'unknown error'}" + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""))
        return builder, network, parser


def _progress_monitor(trt, log: Log):
    """An IProgressMonitor that logs phase starts and every ~10% of a phase's steps (None where unsupported)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self):
            base.__init__(self)
            self._steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self._steps[phase_name] = max(int(num_steps), 1)
            indent = "  " if parent_phase else ""
            log(f"{indent}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            n = self._steps.get(phase_name, 1)
            if n >= 10 and (step + 1) % max(n // 10, 1) == 0:
                log(f"    {phase_name}: {step + 1}/{n}")
            return True  # never cancel

        def phase_finish(self, phase_name):
            self._steps.pop(phase_name, None)

    return _Monitor()


class EngineFromNetwork:
    """Build a serialized engine (bytes) from a ``NetworkFromOnnxPath`` stage.

    ``profiles``: a list of input-shape sets, each ``{input_name: (min, opt, max)}`` with full NCHW
    shapes. ``flags``: lower-case ``tensorrt.BuilderFlag`` names. TF32 is switched off for fp32
    graphs so the fp32 parity gate (1e-4) measures TensorRT, not TF32 rounding.
    """

    def __init__(self, network, *, profiles: Sequence[dict[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]],
                 workspace_mib: int, optimization_level: int, flags: Sequence[str] = (), fp32: bool = True,
                 timing_cache: Path | None = None, log: Log = _nolog):
        self.network = network
        self.profiles = list(profiles)
        self.workspace_mib = workspace_mib
        self.optimization_level = optimization_level
        self.flags = tuple(flags)
        self.fp32 = fp32
        self.timing_cache = Path(timing_cache) if timing_cache else None
        self.log = log

    def __call__(self) -> bytes:
        trt = require_tensorrt()
        builder, network, _parser = self.network() if callable(self.network) else self.network
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.workspace_mib) << 20)
        if hasattr(config, "builder_optimization_level"):
            config.builder_optimization_level = int(self.optimization_level)
        for name in self.flags:
            flag = getattr(trt.BuilderFlag, name.upper(), None)
            if flag is None:
                raise ModelError(f"TensorRT {trt.__version__} has no builder flag {name!r}; remove it from the profile")
            config.set_flag(flag)
        if self.fp32 and hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        for shapes in self.profiles:
            profile = builder.create_optimization_profile()
            for name, (lo, opt, hi) in shapes.items():
                profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
            config.add_optimization_profile(profile)

        cache = None
        if self.timing_cache is not None:
            blob = self.timing_cache.read_bytes() if self.timing_cache.is_file() else b""
            try:
                cache = config.create_timing_cache(blob)  # None (not an exception) for a cache it cannot read
            except Exception:
                cache = None
            if cache is None and blob:  # an unreadable cache file is rebuilt, not fatal
                self.log(f"timing cache {self.timing_cache.name} unreadable: starting a new one")
            if cache is None:
                cache = config.create_timing_cache(b"")
            # False where the cache is another GPU's (a copied folder): build without it rather than fail
            if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
                self.log(f"timing cache {self.timing_cache.name} does not fit this GPU: building without it")
                cache = None

        monitor = _progress_monitor(trt, self.log)
        if monitor is not None and hasattr(config, "progress_monitor"):
            config.progress_monitor = monitor
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise ModelError("TensorRT failed to build the engine (see the TensorRT messages above); try a larger "
                             "workspace_mib or a smaller shapes.max in the profile")
        if cache is not None:
            from lway_rt.io.weights import atomic_write_bytes

            try:
                atomic_write_bytes(self.timing_cache, bytes(memoryview(cache.serialize())))
            except OutputError as exc:
                self.log(f"timing cache not saved: {exc}")
        return bytes(memoryview(plan))


class SaveEngine:
    """Write engine bytes (or a stage making them) atomically; returns the path."""

    def __init__(self, engine, path: str | Path):
        self.engine = engine
        self.path = Path(path)

    def __call__(self) -> Path:
        from lway_rt.io.weights import atomic_write_bytes

        data = self.engine() if callable(self.engine) else self.engine
        atomic_write_bytes(self.path, data, through_links=False)  # a link of its name in --out is replaced, as the
        return self.path  # ONNX file and the manifest beside it replace theirs (54F F3)


@dataclass
class EngineHandle:
    """A deserialized engine and the runtime that must outlive it."""

    engine: Any
    runtime: Any


def load_engine(data: bytes) -> EngineHandle | None:
    """Deserialize an engine; None when TensorRT refuses it (another version or GPU: a stale engine)."""
    trt = require_tensorrt("loading TensorRT engines")
    runtime = trt.Runtime(_logger(trt))
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception:
        engine = None
    if engine is None:
        return None
    return EngineHandle(engine, runtime)


class TrtRunner:
    """Run a single-input, single-output engine on numpy NCHW float32 arrays (torch CUDA buffers), one call at a time
    (its one execution context is not thread-safe; ``runtime.backends.TensorRTBackend`` takes calls at once)."""

    def __init__(self, handle: EngineHandle):
        import torch

        self.torch = torch
        self.handle = handle
        engine = handle.engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ModelError("TensorRT could not make an execution context (out of GPU memory?)")
        # a stream of its own: on the legacy default stream TensorRT warns on every call and synchronises more
        self.stream = torch.cuda.Stream()
        trt = require_tensorrt("running TensorRT engines")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        ins = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"expected one input and one output, the engine has {ins} -> {outs}")
        self.input_name, self.output_name = ins[0], outs[0]
        check_float32_io(trt, engine, (self.input_name, self.output_name))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.cuda.stream(self.stream):  # (the copies, buffers and the engine's run, in order on one stream)
            xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
            if not self.context.set_input_shape(self.input_name, tuple(xt.shape)):
                raise ModelError(f"input shape {tuple(xt.shape)} is outside the engine's optimisation profile")
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32,
                              device="cuda")
            self.context.set_tensor_address(self.input_name, xt.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ModelError("TensorRT execution failed")
            result = out.cpu()
        self.stream.synchronize()
        return result.numpy()


def check_float32_io(trt, engine, names) -> None:
    """The runners feed and read float32 buffers; a strongly typed engine takes its I/O types from the ONNX, so an
    engine of another I/O type would read and write the wrong bytes: refused."""
    for name in names:
        dtype = engine.get_tensor_dtype(name)
        if dtype != trt.float32:
            raise ModelError(f"engine tensor {name!r} is {dtype}, not float32: export the ONNX with float32 inputs and "
                             "outputs (lwayrt export does; fp16 lives inside the graph)")


def refittable_weight_names(handle: EngineHandle) -> set[str]:
    trt = require_tensorrt("refitting TensorRT engines")
    refitter = trt.Refitter(handle.engine, _logger(trt))
    return set(refitter.get_all_weights())


def refit_engine_bytes(engine_data: bytes, onnx_path: str | Path) -> tuple[EngineHandle, bytes]:
    """Swap the weights of ``onnx_path`` into a REFIT engine; returns (engine handle, serialized bytes)."""
    trt = require_tensorrt("refitting TensorRT engines")
    handle = load_engine(engine_data)
    if handle is None:
        raise ModelError("the engine cannot be loaded by this TensorRT/GPU (built elsewhere or by another version): "
                         "rebuild it with 'lwayrt export --engine tensorrt' instead of refitting")
    engine = handle.engine
    if hasattr(engine, "refittable") and not engine.refittable:
        raise ModelError("the engine was built without the REFIT flag: rebuild it with tensorrt.flags = [\"refit\"] "
                         "(or --refittable), or export the adapted model with a full build")
    logger = _logger(trt)
    refitter = trt.Refitter(engine, logger)
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_file(str(onnx_path)):
        errors = [str(parser_refitter.get_error(i)) for i in range(parser_refitter.num_errors)]
        raise ModelError(f"ONNX parser refit failed: {errors[0] if errors else 'unknown error'}")
    if not refitter.refit_cuda_engine():
        missing = refitter.get_missing_weights() if hasattr(refitter, "get_missing_weights") else []
        raise ModelError(f"TensorRT refit incomplete: weights still missing {list(missing)[:5]}")
    return handle, bytes(memoryview(engine.serialize()))
