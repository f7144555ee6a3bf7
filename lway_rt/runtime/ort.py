"""ONNX Runtime sessions that fail loudly instead of silently running on the CPU.

``onnxruntime-gpu`` lists the CUDA and TensorRT providers even on a machine without a usable GPU,
and a session asked for them quietly falls back to ``CPUExecutionProvider``: a benchmark then
measures the wrong thing and nobody notices. ``create_session`` compares what was asked for with
``session.get_providers()`` and raises unless the caller allowed the fallback.

``onnxruntime`` is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lway_rt.errors import InputError, LwayError, MissingDependencyError, ModelError

__all__ = ["create_session", "run_session", "available_providers", "ProviderFallbackError", "OPT_LEVELS"]

#: ``opt_level`` names -> onnxruntime.GraphOptimizationLevel attribute names.
OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

# Short aliases users type on the command line.
_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


class ProviderFallbackError(LwayError):
    """A requested execution provider was not used by the session (ONNX Runtime fell back)."""


def _ort(feature: str = "running ONNX models"):
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime", "onnx", feature) from exc  # (no "use the torch backend": export's
        # parity gate and upscale of an .onnx file have none to choose, 58F-2)
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers (not a promise that they work)."""
    return list(_ort().get_available_providers())


def _provider_name(p: str | tuple[str, dict[str, Any]]) -> str:
    name = p[0] if isinstance(p, tuple) else p
    return _PROVIDER_ALIASES.get(name.lower(), name)


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive count, else None (unset, or not a count)."""
    import os

    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n > 0 else None


def create_session(
    onnx_path: str | Path,
    *,
    providers: Sequence[str | tuple[str, dict[str, Any]]] = ("CPUExecutionProvider",),
    allow_fallback: bool = False,
    threads: int | None = None,
    opt_level: str = "all",
    mem_arena: bool = True,
    execution_mode: str = "sequential",
    cpu_advice: str | None = None,
):
    """Open ``onnx_path`` in an ``onnxruntime.InferenceSession`` and check it runs where asked.

    ``providers``: names (or ``(name, options)`` pairs, or aliases ``cpu``/``cuda``/``tensorrt``) in
    priority order. Raises ``ProviderFallbackError`` when a requested non-CPU provider is not
    among ``session.get_providers()`` and ``allow_fallback`` is false. ``threads`` sets the intra-op
    thread count (None: ``OMP_NUM_THREADS`` where it is set, as torch takes it, else ONNX Runtime's default, every
    core: jobs run side by side, each told one thread, had each taken every core with an exported model). ``opt_level``: disable, basic, extended or all.
    ``mem_arena``: ONNX Runtime's CPU memory arena. ``execution_mode``: sequential or parallel
    (parallel also uses ``threads`` inter-op threads). ``cpu_advice``: how the caller's user asks for the CPU, which a
    missing or dropped provider's error advises (a command's option, an API keyword; None: the CPU provider).
    """
    ort = _ort()
    path = Path(onnx_path)
    check_onnx_file(path)
    if opt_level not in OPT_LEVELS:
        raise InputError(f"unknown ONNX Runtime optimisation level {opt_level!r}; use one of {', '.join(OPT_LEVELS)}")
    if execution_mode not in ("sequential", "parallel"):
        raise InputError(f"unknown ONNX Runtime execution mode {execution_mode!r}; use sequential or parallel")
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if not providers:
        raise InputError("no execution provider given; use e.g. CPUExecutionProvider")

    resolved: list[str | tuple[str, dict[str, Any]]] = []
    for p in providers:
        name = _provider_name(p)
        resolved.append((name, dict(p[1])) if isinstance(p, tuple) else name)
    wanted = [_provider_name(p) for p in resolved]

    offered = set(ort.get_available_providers())
    missing = [w for w in wanted if w not in offered]
    if missing and not allow_fallback:
        raise ProviderFallbackError(
            f"ONNX Runtime {ort.__version__} has no {', '.join(missing)} (it offers {', '.join(sorted(offered))}): "
            f"install onnxruntime-gpu (the 'gpu' extra) in place of onnxruntime, or {cpu_advice or 'run on the CPU provider'}"
        )
    if missing:
        resolved = [p for p in resolved if _provider_name(p) in offered] or ["CPUExecutionProvider"]

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[opt_level])
    so.enable_cpu_mem_arena = mem_arena
    parallel = execution_mode == "parallel"
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is None:
        threads = env_threads()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = int(threads) if parallel else 1
    # ORT logs warnings (e.g. unused initializers) at level 2; keep the console for errors.
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=resolved)
    except Exception as exc:  # onnxruntime raises its own exception classes (Fail, InvalidGraph, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"ONNX Runtime cannot load {path}: {first}; re-export it with 'lwayrt export'") from exc

    used = session.get_providers()
    dropped = [w for w in wanted if w != "CPUExecutionProvider" and w not in used]
    if dropped and not allow_fallback:
        raise ProviderFallbackError(
            f"ONNX Runtime silently fell back from {', '.join(dropped)} to {', '.join(used)} for {path.name} "
            "(no usable GPU, or the CUDA/cuDNN/TensorRT libraries are missing): fix the GPU set-up, "
            f"or {cpu_advice or 'ask for the CPU provider explicitly'}"
        )
    return session


def check_onnx_file(path: Path) -> None:
    """Refuse ``path`` unless it is a file, in words that say what to pass instead: ``lwayrt export --out x.onnx``
    makes a *folder* x.onnx (``--out`` names the folder for the files and their manifests), so that name given back to
    ``-m`` names the files in it rather than saying it does not exist."""
    if path.is_file():
        return
    if path.is_dir():
        if advice := onnx_in_folder(path):
            raise ModelError(f"{path} is a folder ('lwayrt export --out' names the folder it writes into): pass the "
                             f"ONNX file in it, {advice}")
        raise ModelError(f"{path} is a folder with no .onnx file in it: pass an ONNX file 'lwayrt export' wrote")
    raise ModelError(f"ONNX file {path} does not exist: export one with 'lwayrt export'")


def onnx_in_folder(folder: Path) -> str | None:
    """The ONNX file to pass instead of ``folder`` where it holds some (an export's ``--out``), the SR network's first,
    with how many others there are; None where it holds none."""
    files = sorted((f for f in folder.glob("*.onnx") if f.is_file()), key=lambda f: (".sr." not in f.name, f.name))
    if not files:
        return None
    more = f" (or one of the {len(files) - 1} other .onnx files there)" if len(files) > 1 else ""
    return f"{files[0]}{more}"


def run_session(session, x: np.ndarray) -> np.ndarray:
    """Run a single-input, single-output image model: NCHW float32 in, first output (float32) out."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise InputError(f"expected an NCHW batch (4 dimensions), got shape {x.shape}")
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise InputError(f"run_session handles single-input models; this one has {len(inputs)} inputs")
    x = np.ascontiguousarray(x, dtype=np.float32)
    (out, *_) = session.run(None, {inputs[0].name: x})
    return np.asarray(out, dtype=np.float32)
