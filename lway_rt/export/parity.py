"""The parity gate: an exported model must reproduce PyTorch before it is called ready.

Inputs: a real photo (a crop of scikit-image's ``astronaut``, downscaled to a low-resolution size;
a synthetic pattern of edges, gradients and noise where scikit-image is not installed) and
uniform random noise of a different, non-square size (which also proves the H/W really are
dynamic). Thresholds (``ParityGate``):

* SR, fp32: max |onnx - torch| <= 1e-4 on the raw output;
* SR, fp16: PSNR(onnx, torch fp32) >= 45 dB on the output clipped to [0, 1] (data range 1), and no
  NaN/inf anywhere; identical outputs read ``PSNR_CAP`` (200 dB, as serve-bench), so manifests stay JSON;
* encoder embeddings: max |onnx - torch| / max |torch| <= 1e-4 (fp32) or 1e-2 (fp16).

The same comparison serves ONNX Runtime and TensorRT: ``check_against_torch`` takes any function
``np.ndarray -> np.ndarray``.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lway_rt.errors import InputError

__all__ = [
    "PSNR_CAP", "ParityGate", "ParityCase", "ParityReport", "random_input", "photo_input", "standard_inputs",
    "check_against_torch", "check_onnx_against_torch", "compare",
]


#: PSNR recorded for identical outputs (JSON has no infinity); serve-bench's verification uses this one too.
PSNR_CAP = 200.0


@dataclass(frozen=True)
class ParityGate:
    fp32_max_abs: float = 1e-4
    fp16_min_psnr: float = 45.0
    embed_rel: float = 1e-4
    embed_fp16_rel: float = 1e-2

    def __post_init__(self):
        if min(self.fp32_max_abs, self.embed_rel, self.embed_fp16_rel) < 0:
            raise InputError("parity tolerances must be >= 0")
        if self.fp16_min_psnr > PSNR_CAP:
            raise InputError(f"--min-psnr must be at most {PSNR_CAP:g} dB (the PSNR recorded for identical outputs), "
                             f"got {self.fp16_min_psnr:g}")


@dataclass(frozen=True)
class ParityCase:
    name: str
    shape: tuple[int, ...]
    metric: str  # "max_abs", "psnr_db" or "rel"
    value: float
    threshold: float
    passed: bool
    max_abs: float
    finite: bool = True
    expected_shape: tuple[int, ...] | None = None  # torch's output shape, when the backend's differs

    def describe(self) -> str:
        shape = "x".join(str(d) for d in self.shape)
        if self.expected_shape is not None and tuple(self.expected_shape) != tuple(self.shape):
            return f"{self.name}: output shape {shape} differs from torch's {'x'.join(str(d) for d in self.expected_shape)}"
        if not self.finite:
            return f"{self.name} (output {shape}): output has NaN/inf"
        if self.metric == "psnr_db":
            rel = "<" if not self.passed else ">="
            return f"{self.name} (output {shape}): PSNR {self.value:.2f} dB {rel} {self.threshold:g} dB (max abs {self.max_abs:.3g})"
        rel = ">" if not self.passed else "<="
        what = "max abs diff" if self.metric == "max_abs" else "relative diff"
        return f"{self.name} (output {shape}): {what} {self.value:.3g} {rel} {self.threshold:g}"


@dataclass(frozen=True)
class ParityReport:
    backend: str
    precision: str
    kind: str
    cases: tuple[ParityCase, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def summary(self) -> str:
        worst = [c for c in self.cases if not c.passed] or list(self.cases)
        head = "passed" if self.passed else "FAILED"
        return f"{self.backend} {self.precision} parity {head}: " + "; ".join(c.describe() for c in worst)

    def as_dict(self) -> dict:
        return {"backend": self.backend, "precision": self.precision, "kind": self.kind, "passed": self.passed,
                "cases": [asdict(c) | {"shape": list(c.shape),
                                       "expected_shape": None if c.expected_shape is None else list(c.expected_shape)}
                          for c in self.cases]}


def _legal_size(side: int, size_multiple: int, min_size: int) -> int:
    side = max(side, min_size)
    return size_multiple * math.ceil(side / size_multiple)


def random_input(channels: int, size_multiple: int = 1, min_size: int = 1, *, shape: tuple[int, int, int] | None = None,
                 seed: int = 0, side: int = 40) -> np.ndarray:
    """Uniform noise, NCHW float32; a non-square legal size unless ``shape`` (batch, H, W) is given."""
    if shape is None:
        h = _legal_size(side, size_multiple, min_size)
        w = _legal_size(side + max(size_multiple, 8), size_multiple, min_size)
        shape = (1, h, w)
    b, h, w = shape
    return np.random.default_rng(seed).random((b, channels, h, w), dtype=np.float32)


def photo_input(size_multiple: int = 1, min_size: int = 1, *, side: int = 64,
                shape: tuple[int, int, int] | None = None) -> tuple[str, np.ndarray]:
    """A real photo as a low-resolution input, NCHW float32 in [0, 1]; returns (label, array).

    A 256x256 crop of scikit-image's astronaut (face, hair, suit: edges and texture), bicubic
    downscaled to ``side`` (or to ``shape``'s H x W). Without scikit-image: a synthetic pattern.
    """
    from PIL import Image

    b, h, w = shape if shape is not None else (1, _legal_size(side, size_multiple, min_size), _legal_size(side, size_multiple, min_size))
    try:
        from skimage import data

        crop = np.ascontiguousarray(data.astronaut()[100:356, 150:406])
        label = "astronaut"
    except ImportError:
        yy, xx = np.mgrid[0:256, 0:256] / 255.0
        rng = np.random.default_rng(1)
        pattern = np.stack([np.sin(xx * 40) * 0.5 + 0.5, yy, ((xx + yy) > 1).astype(float)], -1)
        crop = np.clip(pattern * 0.8 + rng.normal(0, 0.05, pattern.shape), 0, 1)
        crop = (crop * 255).astype(np.uint8)
        label = "synthetic"
    img = Image.fromarray(crop).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    return f"{label} {h}x{w}", np.ascontiguousarray(np.repeat(arr, b, axis=0))


def standard_inputs(channels: int, size_multiple: int, min_size: int, *,
                    static_shape: tuple[int, int, int] | None = None, photo_side: int = 64,
                    random_side: int = 40) -> list[tuple[str, np.ndarray]]:
    """The gate's two inputs: the photo and random noise (both at ``static_shape`` for a static export)."""
    label, photo = photo_input(size_multiple, min_size, side=photo_side, shape=static_shape)
    if channels != 3:
        photo = photo[:, :1].repeat(channels, axis=1)
    noise = random_input(channels, size_multiple, min_size, shape=static_shape, seed=0, side=random_side)
    return [(label, photo), ("random", noise)]


def compare(name: str, ref: np.ndarray, out: np.ndarray, *, precision: str, kind: str,
            gate: ParityGate = ParityGate()) -> ParityCase:
    """One comparison under the gate's rule for this precision and output kind."""
    ref = np.asarray(ref, np.float64)
    out = np.asarray(out, np.float64)
    if ref.shape != out.shape:
        metric, value, thr = ("rel", math.inf, gate.embed_rel if precision == "fp32" else gate.embed_fp16_rel) \
            if kind == "embedding" else ("max_abs", math.inf, gate.fp32_max_abs) if precision == "fp32" \
            else ("psnr_db", -math.inf, gate.fp16_min_psnr)
        return ParityCase(name, tuple(out.shape), metric, value, thr, False, math.inf,
                          finite=bool(np.isfinite(out).all()), expected_shape=tuple(ref.shape))
    finite = bool(np.isfinite(out).all())
    max_abs = float(np.abs(ref - out).max()) if finite else math.inf
    if kind == "embedding":
        scale = max(float(np.abs(ref).max()), 1e-12)
        value = max_abs / scale
        thr = gate.embed_rel if precision == "fp32" else gate.embed_fp16_rel
        return ParityCase(name, tuple(ref.shape), "rel", value, thr, finite and value <= thr, max_abs, finite)
    if precision == "fp32":
        return ParityCase(name, tuple(ref.shape), "max_abs", max_abs, gate.fp32_max_abs,
                          finite and max_abs <= gate.fp32_max_abs, max_abs, finite)
    if not finite:
        return ParityCase(name, tuple(ref.shape), "psnr_db", -math.inf, gate.fp16_min_psnr, False, max_abs, False)
    mse = float(np.mean((np.clip(ref, 0, 1) - np.clip(out, 0, 1)) ** 2))
    psnr = PSNR_CAP if mse == 0 else min(10.0 * math.log10(1.0 / mse), PSNR_CAP)
    return ParityCase(name, tuple(ref.shape), "psnr_db", psnr, gate.fp16_min_psnr, psnr >= gate.fp16_min_psnr, max_abs)


def check_against_torch(run: Callable[[np.ndarray], np.ndarray], module: nn.Module,
                        inputs: Sequence[tuple[str, np.ndarray]], *, precision: str, kind: str = "image",
                        backend: str = "onnxruntime", gate: ParityGate = ParityGate(),
                        refs: dict[str, np.ndarray] | None = None) -> ParityReport:
    """Run every input through ``run`` and through ``module`` (fp32) and compare.

    ``refs``: a dict to reuse torch outputs across calls (keyed by input name; filled as computed).
    """
    module = module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    refs = {} if refs is None else refs
    cases = []
    for name, x in inputs:
        ref = refs.get(name)
        if ref is None or ref.shape[0] != x.shape[0]:
            with torch.no_grad():
                ref = module(torch.from_numpy(np.ascontiguousarray(x)).to(device).float()).float().cpu().numpy()
            refs[name] = ref
        out = run(x)
        cases.append(compare(name, ref, out, precision=precision, kind=kind, gate=gate))
    return ParityReport(backend=backend, precision=precision, kind=kind, cases=tuple(cases))


def check_onnx_against_torch(model_or_path, module: nn.Module, inputs: Sequence[tuple[str, np.ndarray]], *,
                             precision: str, kind: str = "image", gate: ParityGate = ParityGate(),
                             threads: int | None = None, refs: dict[str, np.ndarray] | None = None) -> ParityReport:
    """ONNX Runtime (CPU provider) on an ONNX file or ModelProto vs the torch module."""
    from lway_rt.io.weights import sweep_stale_temp_dirs
    from lway_rt.runtime.ort import create_session, run_session

    sweep_stale_temp_dirs()  # what runs killed with kill -9 left
    with tempfile.TemporaryDirectory(prefix="lwayrt-parity-") as tmp:
        if isinstance(model_or_path, (str, Path)):
            path = Path(model_or_path)
        else:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(model_or_path.SerializeToString())
        session = create_session(path, threads=threads)
        return check_against_torch(lambda x: run_session(session, x), module, inputs, precision=precision,
                                   kind=kind, backend="onnxruntime", gate=gate, refs=refs)
