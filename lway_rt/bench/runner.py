"""Run a serve-bench: verify, then time, every configuration of the matrix.

The matrix is backends x input sizes x batch sizes x (whole image | tiles) x concurrency. For each
backend that can run here the order is fixed by what makes a number trustworthy:

1. build it (the load or engine-build time is recorded);
2. **verify** its output on real photo crops against the torch fp32 reference (PSNR on [0, 1]
   RGB; tiled runs are compared with the *whole-image* reference, so seams count against them). A
   backend that fails is reported as failed and not timed;
3. warm up by time and iterations, then time a closed loop of 1..N workers;
4. record latency percentiles, throughput, memory, the model's FLOPs and the fraction of the
   machine's measured matmul peak they reach.

Backends stay loaded side by side; on each shape they are timed in interleaved rounds (the
``rounds`` timing setting), so the changing load of a shared machine falls on all of them alike. A backend that cannot run here (package or device
missing) is listed as skipped with the reason; one that fails to build or run is listed as an
error with the message. Neither stops the others.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from lway_rt.bench.timing import CUT_SHORT, TimingPolicy, summarise, time_closed_loop, warm_up
from lway_rt.errors import InputError, ModelError
from lway_rt.export.parity import PSNR_CAP  # bit-identical outputs, as export's gate records them (JSON has no inf)
from lway_rt.runtime.ort import check_onnx_file, env_threads

__all__ = ["SCHEMA_VERSION", "BenchConfig", "parse_size", "run_bench", "DEFAULT_MIN_PSNR"]

SCHEMA_VERSION = "1.3"

#: Verification thresholds (dB, RGB in [0, 1]) by precision; tiled runs also accept seams down to TILED_MIN_PSNR.
DEFAULT_MIN_PSNR = {"fp32": 50.0, "fp16": 35.0, "bf16": 30.0}
TILED_MIN_PSNR = 40.0

_NAMED_SIZES = {"360p": (360, 640), "480p": (480, 854), "540p": (540, 960), "720p": (720, 1280), "1080p": (1080, 1920)}


def parse_size(text: str) -> tuple[int, int]:
    """``128`` -> (128, 128); ``320x180`` (width x height) -> (180, 320); ``540p`` -> (540, 960)."""
    t = text.strip().lower()
    if t in _NAMED_SIZES:
        return _NAMED_SIZES[t]
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", t)
    if not m:
        raise InputError(f"bad size {text!r}: use N (square), WxH (e.g. 320x180) or one of {', '.join(_NAMED_SIZES)}")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) else w
    if w < 1 or h < 1:
        raise InputError(f"size {text!r} must be positive")
    return (h, w)


def _size_pair(size) -> tuple[int, int]:
    """One of ``BenchConfig.sizes`` as (height, width): a pair of positive integers (numpy's too), or a string as
    ``-s`` takes it."""
    if isinstance(size, str):
        return parse_size(size)
    if isinstance(size, (tuple, list)) and len(size) == 2 and not any(isinstance(v, bool) for v in size):
        try:
            pair = (operator.index(size[0]), operator.index(size[1]))
        except TypeError:
            pass
        else:
            if min(pair) >= 1:
                return pair
    raise InputError(f"bad size {size!r}: give (height, width) pairs of positive integers, e.g. (180, 320), or what "
                     f"-s takes, e.g. '320x180'")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Sizes are (height, width) of the low-resolution input."""

    model: str
    backends: tuple[str, ...] = ("torch", "ort-cpu")
    sizes: tuple[tuple[int, int], ...] = ((128, 128), (256, 256))
    batches: tuple[int, ...] = (1,)
    tiles: tuple[int, ...] = (0,)
    tile_overlap: int = 32  # upscale's default
    concurrency: tuple[int, ...] = (1,)
    device: str = "cpu"
    threads: int | None = None
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    min_psnr: float | None = None  # None: DEFAULT_MIN_PSNR by precision
    seed: int = 0
    measure_peak: bool = True
    detail_cap: str = "auto"  # as lwayrt export: auto (what adapted weights record), off, or a number >= 1
    base_model: str | None = None  # the unadapted model a cap compares with [the weights' metadata]

    def __post_init__(self):
        # a size from Python is checked as -s is, and may be a list, as a report's settings hold it (57M-4, 57K-6);
        # sizes is a list of them: one pair (180, 320), or '320x180', given as sizes is said so (58D-1)
        if isinstance(self.sizes, np.ndarray):  # (an (N, 2) array of sizes: 58E-1)
            object.__setattr__(self, "sizes", self.sizes.tolist())
        elif isinstance(self.sizes, (tuple, list)):  # (rows of an array, each a 1-D array: 58H-3)
            object.__setattr__(self, "sizes", [s.tolist() if isinstance(s, np.ndarray) else s for s in self.sizes])
        one_number = self.sizes is not None and not hasattr(self.sizes, "__iter__")  # (a TypeError: 58H-3)
        if one_number or isinstance(self.sizes, str) or (isinstance(self.sizes, (tuple, list)) and len(self.sizes) == 2
                                                         and all(isinstance(v, (int, float)) or
                                                                 hasattr(type(v), "__index__") for v in self.sizes)):
            raise InputError(f"sizes is a list of sizes, got {self.sizes!r}: give e.g. sizes=[(180, 320)] or "
                             "sizes=['320x180']")
        object.__setattr__(self, "sizes", [_size_pair(s) for s in (() if self.sizes is None else self.sizes)])
        for name in ("backends", "sizes", "batches", "tiles", "concurrency"):
            if not getattr(self, name):
                raise InputError(f"serve-bench needs at least one value for {name}")
            # a value given twice (-s 24 -s 24x24, -c 1 -c 1) is timed once, in the order given (57H-3, 57I-11)
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))
        def values(bad):  # the offending values as typed on the command line, not a Python tuple
            return ", ".join(str(v) for v in dict.fromkeys(bad))

        if bad := [b for b in self.batches if b < 1]:
            raise InputError(f"--batch must be at least 1, got {values(bad)}")
        if bad := [c for c in self.concurrency if c < 1]:
            raise InputError(f"--concurrency must be at least 1 worker, got {values(bad)}")
        if bad := [t for t in self.tiles if t < 0]:
            raise InputError(f"--tile must be 0 (whole image) or positive, got {values(bad)}")
        if self.tile_overlap < 0:
            raise InputError("--tile-overlap must be >= 0")
        from lway_rt.upscale import MIN_TILE

        if bad := [t for t in self.tiles if 0 < t < MIN_TILE]:  # upscale's own rule: tiled rows time what it runs, and
            # smaller tiles failed verification, the backend blamed for the layout's loss (57H-1)
            least = max(MIN_TILE, 2 * self.tile_overlap + 1)
            raise InputError(f"--tile {values(bad)} {'is' if len(set(bad)) == 1 else 'are'} too small: tiles under "
                             f"{MIN_TILE} px change the picture at their seams, and 'lwayrt upscale' refuses them: use "
                             f"--tile {least} or more, or 0 for whole images")
        if bad := [t for t in self.tiles if t and t <= 2 * self.tile_overlap]:
            raise InputError(f"every tile must be larger than twice the overlap ({2 * self.tile_overlap}); --tile "
                             f"{values(bad)} {'is' if len(set(bad)) == 1 else 'are'} not: raise --tile or lower --tile-overlap")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"device must be cpu or cuda, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if self.min_psnr is not None and not 0 < self.min_psnr <= PSNR_CAP:
            raise InputError(f"--min-psnr must be above 0 and at most {PSNR_CAP:g} dB (the PSNR of identical outputs), "
                             f"got {self.min_psnr:g}")
        self.cap_settings()  # validates detail_cap

    def cap_settings(self):
        """``detail_cap`` / ``base_model`` as ``upscale.prepare_detail_cap`` takes them (one rule for every command)."""
        from lway_rt.upscale import UpscaleConfig

        return UpscaleConfig(detail_cap=self.detail_cap, base_model=self.base_model)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sizes"] = [list(s) for s in self.sizes]
        for k in ("backends", "batches", "tiles", "concurrency"):
            d[k] = list(d[k])
        return d


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _psnr01(a: np.ndarray, b: np.ndarray) -> float:
    from lway_rt.metrics import psnr

    value = psnr(np.clip(a, 0, 1), np.clip(b, 0, 1), data_range=1.0)
    return min(value, PSNR_CAP)


def _reference(model: torch.nn.Module, x: np.ndarray, device: str) -> np.ndarray:
    """Torch fp32 output (TF32 off on CUDA, so 'fp32' means fp32)."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = model.to(device)
        with torch.inference_mode():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@dataclass(frozen=True)
class _Case:
    height: int
    width: int
    batch: int
    tile: int  # 0: whole image
    overlap: int = 0  # --tile-overlap, of tiled cases
    multiple: int = 1  # the model's size multiple, on which tiles start

    @property
    def call_shape(self) -> tuple[int, int, int, int]:
        """What each call to a backend gets: the batch, or one of its windows (``lwayrt upscale``'s layout)."""
        if self.tile:
            from lway_rt.runtime.tiling import TileConfig, tile_layout

            th, tw, _ = tile_layout(self.height, self.width, TileConfig(self.tile, self.overlap), self.multiple)
            return (1, 3, th, tw)
        return (self.batch, 3, self.height, self.width)


def _cases(config: BenchConfig, size_multiple: int, min_size: int, scale: int = 1) -> list[_Case]:
    from lway_rt.bench.machine import memory_gb

    cases = []
    total = memory_gb()
    for h, w in config.sizes:
        if h % size_multiple or w % size_multiple or min(h, w) < min_size:
            raise InputError(f"size {w}x{h} does not suit this model: sides must be multiples of {size_multiple} "
                             f"and at least {min_size}")
        for b in config.batches:
            need = b * 3 * h * w * 4 * (1 + 2 * scale * scale) / 2**30  # input, reference and one backend's output
            if total is not None and need > total:
                raise InputError(f"size {w}x{h} at batch {b} needs {need:.3g} GiB for its input and outputs alone, more "
                                 f"than the {total:g} GiB this process may use: use a smaller --size or --batch")
            for t in config.tiles:
                if t and t >= h and t >= w:
                    continue  # one window covers the image: the same as the whole-image case
                if t and t % size_multiple:
                    raise InputError(f"tile {t} must be a multiple of {size_multiple} for this model")
                cases.append(_Case(h, w, b, t, config.tile_overlap if t else 0, size_multiple))
    if not cases:
        raise InputError("every tile size covers every image size: nothing tiled to measure; use smaller tiles")
    return cases


def _measure_peaks(specs, threads: int) -> dict[str, dict[str, float]]:
    """Dense-kernel peaks for every (device, precision) the backends ``specs`` (those built) use, and the CPU's fp32
    (a fallen-back row's); none for a key ``_unprobed`` refuses."""
    from lway_rt.bench.flops import measure_peak

    if not specs:
        return {}
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    keys = {_peak_key(s) for s in specs} | {"cpu_fp32"}
    peaks = {}
    for key in sorted(keys):
        device, precision = key.split("_")
        if device == "cuda" and not torch.cuda.is_available() or _unprobed(key):
            continue
        peaks[key] = measure_peak(device=device, dtype=dtypes[precision], threads=threads if device == "cpu" else None)
    return peaks


def _unprobed(key: str) -> str | None:
    """Why the peak of ``key`` is not measured (its rows' peak_fraction is then null and says why), or None."""
    from lway_rt.bench.machine import native_bf16

    if key == "cpu_bf16" and not native_bf16():
        return ("no bf16 peak: this CPU has no native bf16 (no avx512_bf16 or amx_bf16), so bf16 runs on slow fallback "
                "kernels a peak probe cannot measure fairly (it took minutes and read below the model)")
    return None


def _peak_key(spec) -> str:
    # Torch autocast computes convolutions in the autocast type; fp16 ONNX graphs compute in fp16.
    return f"{spec.device}_{spec.precision}"


def _row_base(spec, case: _Case | None, scale: int, overlap: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "backend": spec.label, "kind": spec.kind, "device": spec.device, "precision": spec.precision,
        "options": spec.options(), "status": "ok", "reason": None, "note": None, "verified": False, "verification": None,
        "input": None, "output": None, "tile": None, "tile_overlap": None, "concurrency": None,
        "load_s": None, "export_s": None, "providers": None, "fell_back": False,
        "warmup": None, "latency_ms": None, "compute_ms": None, "images_per_s": None, "output_mp_per_s": None,
        "flops_per_image": None, "achieved_gflops": None, "peak_fraction": None, "memory": None,
    }
    if case is not None:
        row.update(input={"batch": case.batch, "height": case.height, "width": case.width},
                   output={"height": case.height * scale, "width": case.width * scale},
                   tile=case.tile, tile_overlap=overlap if case.tile else 0)
    return row


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def _with_detail_cap(desc, config: BenchConfig, say: Callable[[str], None]):
    """``desc`` as ``lwayrt export`` ships it: weights adapted with ``--detail-cap`` (or a cap asked for) become the
    unadapted and the adapted network with the blend (``export.capped``), so the times are those of the engine a
    user deploys. Returns it and the report's ``detail_cap`` record (None: uncapped)."""
    from lway_rt.io.weights import state_dict_sha256
    from lway_rt.upscale import prepare_detail_cap

    cap = prepare_detail_cap(config.cap_settings(), desc)
    if cap is None:
        if "detail_cap" in (desc.metadata or {}):
            say(f"note: these weights were adapted with --detail-cap {float(desc.metadata['detail_cap']):g}; with "
                "--detail-cap off the timed network is the uncapped model")
        return desc, None
    _refuse_capped_tiles(cap.cap, config, "or pass --detail-cap off")
    from lway_rt.export.capped import capped_descriptor

    say(f"detail cap {cap.cap:g}: timing the unadapted model beside the adapted one and the blend, as lwayrt export "
        "ships them (--detail-cap off for the adapted network alone)")
    record = {"cap": cap.cap, "base_model": config.base_model or cap.base.name or cap.base.source,
              "base_sha256": state_dict_sha256(cap.base.model.state_dict())}
    return capped_descriptor(desc, cap.base, cap.cap), record


def _refuse_capped_tiles(cap: float, config: BenchConfig, other: str) -> None:
    """A capped network measures its cap on each input it is given: tiled, each tile would be capped on its own, which
    no deployment does (upscale refuses it too)."""
    if any(config.tiles):
        raise InputError(f"the detail cap ({cap:g}) is measured on each input the network is given, so tiles would "
                         f"each be capped on their own: time whole images (--tile 0), {other}")


@dataclass(frozen=True)
class _ExportedFile:
    """An ONNX file from ``lwayrt export`` to time as it is, and the torch network it must reproduce."""

    path: Any  # Path
    precision: str
    sha256: str
    reference: Any  # ModelDescriptor: the weights it was exported from (with their cap, if it holds one)
    cap: dict[str, Any] | None
    weights_sha256: str  # of the weights it was exported from (the adapted ones, where it holds a cap)
    static: tuple[int, int, int] | None = None  # (batch, height, width) of a file exported with --static


def exported_static_shape(manifest: dict[str, Any] | None) -> tuple[int, int, int] | None:
    """(batch, height, width) of an ONNX export made for one fixed shape (``lwayrt export --static``), from its
    manifest; None for a dynamic one (or no readable shape)."""
    onnx = (manifest or {}).get("onnx") or {}
    try:
        if onnx.get("dynamic") is False:
            b, _, h, w = (int(d) for d in onnx["input"]["shape"])
            return b, h, w
    except (KeyError, TypeError, ValueError):
        pass
    return None


def _check_static_cases(exported: _ExportedFile, cases: list[_Case]) -> None:
    """A fixed-shape file runs only at its shape: every call the matrix makes must be (batch, 3, height, width)."""
    b, h, w = exported.static  # type: ignore[misc]
    wrong = [c for c in cases if c.call_shape != (b, 3, h, w)]
    if wrong:
        c = wrong[0]
        asked = f"--tile {c.tile} on {c.width}x{c.height}" if c.tile else f"{c.width}x{c.height} at batch {c.batch}"
        # tiles must be more than twice the overlap; a quarter of the tile keeps the seams within the tiled gate; the
        # windows are as small as still overlap well (upscale's layout): a size whose windows are h x h is named
        tiled = ""
        from lway_rt.upscale import MIN_TILE

        if h == w and b == 1 and h >= MIN_TILE:  # (a smaller tile is one upscale and serve-bench refuse: 57I-1)
            from lway_rt.runtime.tiling import TileConfig, tile_layout

            k = cases[0].multiple  # (the sizes are multiples of the model's)
            side = next((n for n in range(h + k, 8 * h, k) if tile_layout(n, n, TileConfig(h, h // 4), k)[:2] == (h, h)),
                        None)
            tiled = f", or --size {side}x{side} --tile {h} --tile-overlap {h // 4}" if side else ""
        raise InputError(f"{exported.path.name} was exported for fixed {b}x3x{h}x{w} inputs (batch, channels, height, "
                         f"width), so it cannot time {asked}: time it with --size {w}x{h} (width x height) --batch {b}"
                         f"{tiled} (or export one without --static)")


def _exported_file(config: BenchConfig, say: Callable[[str], None]) -> _ExportedFile:
    """Read ``config.model`` (an .onnx path) through its manifest (``runtime.onnx_model``'s checks) and load the
    weights it names, checked by their sha256, as the reference every backend is verified against."""
    from pathlib import Path

    from lway_rt.export.capped import capped_descriptor
    from lway_rt.export.manifest import find_manifest
    from lway_rt.io.store import load_recorded_model
    from lway_rt.upscale import cap_off_refused
    from lway_rt.runtime.onnx_model import spec_from_manifest

    path = Path(config.model).expanduser()
    check_onnx_file(path)
    manifest = find_manifest(path)
    if manifest is None:
        raise InputError(f"{path.name} has no manifest ({path.with_suffix('.json').name}) naming the weights it was exported "
                         "from, which serve-bench verifies it against: put the manifest back beside it, or pass those "
                         "weights instead (-m the store name or weights file it was exported from; `lwayrt upscale` runs "
                         "the file as it is)")
    # the file the manifest describes, gate passed, SR; a fixed-shape file is timed at its shape (_check_static_cases)
    spec_from_manifest(path, manifest, runs_unchecked=False, static_ok=True)
    if config.detail_cap not in ("auto", "off") or config.base_model:
        raise InputError(f"{path.name} is timed as exported: a detail cap goes into the file at export, so drop "
                         "--detail-cap / --base-model")
    source = manifest["source"]

    def weights(spec_or_path: str | None, path_: str | None, sha: str, what: str):
        desc, reasons = load_recorded_model([path_, spec_or_path], sha)
        if desc is None:
            found = "which now holds other weights (sha256 differs)" if any(r.endswith("(sha256 differs)") for r in reasons) \
                else "which is not found"
            raise InputError(f"{path.name} was exported from {what} {path_ or spec_or_path}, {found}: serve-bench needs those "
                             "weights to verify the file; put them back there, or time the weights themselves with -m "
                             "WEIGHTS (serve-bench exports its own ONNX of them)")
        return desc

    cap = source.get("detail_cap")
    if cap and config.detail_cap == "off":  # the cap is in the graph: 'off' cannot be honoured, so it is not ignored
        raise cap_off_refused(path.name, "time")
    weights_sha256 = cap["adapted_sha256"] if cap else source["weights_sha256"]
    adapted = weights(source.get("model"), source.get("path"), weights_sha256, "the weights")
    if cap:
        _refuse_capped_tiles(float(cap["cap"]), config, "or time a file exported with --detail-cap off")
        base = weights(cap.get("base_model"), None, cap["base_sha256"], "the unadapted model")
        reference = capped_descriptor(adapted, base, float(cap["cap"]))
        say(f"{path.name} holds detail cap {float(cap['cap']):g}: verified against the unadapted and the adapted network")
        cap = {"cap": float(cap["cap"]), "base_model": cap.get("base_model"), "base_sha256": cap["base_sha256"]}
    else:
        reference = adapted
    return _ExportedFile(path, str(manifest["onnx"]["precision"]), str(manifest["artifact"]["sha256"]), reference, cap,
                         weights_sha256, exported_static_shape(manifest))


def _case_tag(case) -> str:
    """A case as -s and the table name it: ``48x32 b1`` (width x height), `` tile40`` after a tiled one's."""
    return f"{case.width}x{case.height} b{case.batch}" + (f" tile{case.tile}" if case.tile else "")


def run_bench(config: BenchConfig, *, model=None, reference: torch.nn.Module | None = None, command: str | None = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the matrix of ``config``; returns the report (a JSON-ready dict, see ``lway_rt.bench.schema``).

    ``model``: a ``ModelDescriptor`` to deploy (default: ``load_model(config.model)``).
    ``reference``: the network whose fp32 output is the truth (default: ``model.model``); passing
    a different one checks a deployed network against the one it should reproduce.
    """
    import tempfile
    from pathlib import Path

    from lway_rt.bench import machine
    from lway_rt.bench.flops import count_macs
    from lway_rt.bench.workload import sample_batch, tiled_run
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import state_dict_sha256
    from lway_rt.runtime.backends import (
        ShapeProfile, export_onnx_for, load_backend, parse_backend, skip_reason, with_threads,
    )

    say = progress or (lambda msg: None)
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_start = machine.load_average()
    exported = None  # an exported ONNX file timed as it is (ONNX-based backends of its precision only)
    if model is None and str(config.model).lower().endswith(".onnx"):
        exported = _exported_file(config, say)
        desc, cap, weights_sha256 = exported.reference, exported.cap, exported.weights_sha256
    else:
        desc = model if model is not None else load_model(config.model, device="cpu")
        weights_sha256 = state_dict_sha256(desc.model.state_dict())  # (the adapted weights', before a cap joins them)
        desc, cap = _with_detail_cap(desc, config, say)
    desc.require_rgb(str(config.model), "serve-bench times")  # the timed inputs are RGB photos
    ref_model = reference if reference is not None else desc.model
    scale = desc.scale
    threads = config.threads or env_threads() or _usable_cores()  # (OMP_NUM_THREADS: as torch and ORT take it)
    specs = []
    for text in config.backends:
        spec = parse_backend(text, device=config.device)
        if spec.label not in {s.label for s in specs}:
            specs.append(spec)
    crowded = [f"--threads {threads}"] if threads > _usable_cores() else []
    crowded += [s.label for s in specs if s.threads is not None and s.threads > _usable_cores()]
    if crowded:
        say(f"note: {', '.join(crowded)} asks for more threads than the {_usable_cores()} usable core(s): the threads "
            "will contend, and the times show it")
    cases = _cases(config, desc.size_multiple, desc.min_size, desc.scale)
    for h, w in config.sizes:  # (such a case is the whole-image one: not timed twice, and said, not dropped unsaid)
        if covering := [t for t in config.tiles if t and t >= h and t >= w]:
            say(f"note: --tile {', '.join(map(str, covering))} covers all of {w}x{h} (one window): that size is "
                "timed as whole images" + ("" if 0 in config.tiles else " only if --tile 0 is asked for too"))
    if exported is not None and exported.static:
        _check_static_cases(exported, cases)
    profile = ShapeProfile.covering([c.call_shape for c in cases])

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    backends: dict[str, Any] = {}
    load_info: dict[str, dict[str, Any]] = {}
    from lway_rt.io.weights import sweep_stale_temp_dirs

    sweep_stale_temp_dirs()  # what runs killed with kill -9 left
    workdir = Path(tempfile.mkdtemp(prefix="lwayrt-bench-"))
    onnx_cache: dict[str, tuple[Path, float]] = {}

    def onnx_for(precision: str) -> Path:
        import time

        if exported is not None:
            return exported.path
        if precision not in onnx_cache:
            say(f"exporting ONNX ({precision})")
            t0 = time.perf_counter()
            path = export_onnx_for(desc, workdir / f"model_{precision}.onnx", precision=precision)
            onnx_cache[precision] = (path, time.perf_counter() - t0)
        return onnx_cache[precision][0]

    try:
        # Build every backend that can run here.
        for spec in specs:
            reason = skip_reason(spec, fp16_safe=desc.fp16_safe)
            if not reason and exported is not None and spec.kind != "torch" and spec.precision != exported.precision:
                reason = (f"{exported.path.name} is an {exported.precision} file, which {spec.label} does not time"
                          + (": time it on a GPU with ort-cuda+fp16, or here with -b ort-cuda+fp16+fallback (ONNX "
                             "Runtime's CPU kernels, not what a GPU would time)" if exported.precision == "fp16" and spec.device == "cpu"
                             else f": export an {spec.precision} one to time {spec.precision}"))
            if reason:
                row = _row_base(spec, None, scale, config.tile_overlap)
                row.update(status="skipped", reason=reason)
                rows.append(row)
                say(f"{spec.label}: skipped ({reason})")
                continue
            say(f"{spec.label}: building")
            try:
                if spec.kind != "torch":  # the shared export is timed apart (export_s): not part of this build's memory
                    onnx_for(spec.precision)
                rss_before = machine.rss_mb()
                backend = load_backend(with_threads(spec, threads), desc, profile, onnx=onnx_for,
                                       lanes=max(config.concurrency))
            except Exception as exc:  # noqa: BLE001 - one backend's failure is reported, the others still run
                row = _row_base(spec, None, scale, config.tile_overlap)
                row.update(status="error", reason=_error_text(exc))
                rows.append(row)
                say(f"{spec.label}: error ({row['reason']})")
                continue
            finally:  # (a torch backend compiled at build sets its own thread count: the next build gets the run's)
                torch.set_num_threads(threads)
            backends[spec.label] = backend
            rss_after = machine.rss_mb()
            load_info[spec.label] = {
                "load_s": backend.load_s,
                "export_s": onnx_cache[spec.precision][1] if spec.kind != "torch" and exported is None else None,
                "providers": backend.details.get("providers"),
                "fell_back": bool(backend.details.get("fell_back", False)),
                "load_rss_delta_mb": None if rss_before is None or rss_after is None else rss_after - rss_before,
            }
        if exported is not None and all(s.kind == "torch" for s in specs if s.label in backends):
            # the file itself runs on none of them: torch alone would time the weights it was exported from, minutes
            # of rounds before the command says the file was not timed (56B3)
            for spec in [s for s in specs if s.label in backends]:
                backends.pop(spec.label).close()
                row = _row_base(spec, None, scale, config.tile_overlap)
                row.update(status="skipped", reason=f"not timed: torch times the weights {exported.path.name} was "
                                                    "exported from, and the file itself runs on no backend asked for here")
                rows.append(row)
        # Peak probes at the start, before each shape and at the end: on a shared machine the load
        # moves, and the best probe is the closest to what the hardware can do. Only for what was built.
        built = [s for s in specs if s.label in backends]
        peaks_start = _measure_peaks(built, threads) if config.measure_peak else {}
        peak_samples = [peaks_start]

        flops_cache: dict[tuple[int, int], int] = {}
        input_source = "none"
        # the truth is computed where PyTorch can: with --device cuda on a machine without a GPU the CUDA backends
        # were skipped, and what runs (ONNX Runtime falling back to the CPU, say) is checked against the CPU's
        ref_device = config.device if config.device == "cpu" or torch.cuda.is_available() else "cpu"
        if ref_device != config.device:
            say("note: no CUDA GPU visible to PyTorch: the torch fp32 reference runs on the CPU")
        for n_case, case in enumerate(cases if backends else ()):  # nothing built: nothing to verify or time
            if config.measure_peak and n_case:
                peak_samples.append(_measure_peaks(built, threads))
            x, input_source = sample_batch(case.batch, case.height, case.width, seed=config.seed)
            say(f"reference {_case_tag(case)}")
            ref = _reference(ref_model, x, ref_device)
            if (case.height, case.width) not in flops_cache:
                flops_cache[(case.height, case.width)] = 2 * count_macs(ref_model, (1, 3, case.height, case.width))["total"]
            flops = flops_cache[(case.height, case.width)]
            ready = []
            for spec in specs:
                if spec.label not in backends:
                    continue
                backend = backends[spec.label]
                run = backend.run if not case.tile else \
                    (lambda xb, b=backend, c=case: tiled_run(b.run, xb, tile=c.tile, overlap=c.overlap, scale=scale,
                                                             multiple=c.multiple))
                load = load_info[spec.label]
                verdict = _verify(spec, run, case, x, ref, config, scale, load, say)
                if isinstance(verdict, list):
                    rows.extend(verdict)  # failed or error: reported, never timed
                else:
                    base, verify_rss_above = verdict
                    ready.append(_Timed(spec, backend, run, base, load["load_rss_delta_mb"], verify_rss_above))
            rows.extend(_time_interleaved(ready, case, x, flops, config, scale, say))
        peaks_end = _measure_peaks(built, threads) if config.measure_peak else {}
        peak_samples.append(peaks_end)
    finally:
        for backend in backends.values():
            backend.close()
        torch.set_num_threads(old_threads)
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)

    peaks = {k: {"start": peaks_start[k], "end": peaks_end.get(k), "samples": len(peak_samples),
                 "best": max(sample[k]["best"] for sample in peak_samples if k in sample)} for k in peaks_start}
    spec_by_label = {s.label: s for s in specs}
    for row in rows:
        row["options"] = with_threads(spec_by_label[row["backend"]], threads).options()  # the threads it ran with
        if row["achieved_gflops"] is not None and peaks:
            spec = spec_by_label[row["backend"]]
            # ONNX Runtime's CPU provider computes most fp16 operators in fp32 (after inserted casts), and the CPU has no
            # fast fp16 matmul to compare with: a fallen-back row is measured against the CPU's fp32 peak
            key = "cpu_fp32" if row["fell_back"] else _peak_key(spec)
            if key in peaks:
                row["peak_fraction"] = row["achieved_gflops"] / peaks[key]["best"]
        if row["achieved_gflops"] is not None and config.measure_peak and not row["fell_back"]:
            unprobed = _unprobed(_peak_key(spec_by_label[row["backend"]]))
            if unprobed:
                row["note"] = "; ".join(n for n in (row["note"], unprobed) if n)

    n_params = sum(p.numel() for p in desc.model.parameters())
    summary = {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "skipped", "error")}
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "lwayrt serve-bench",
        "created_utc": created,
        "command": command,
        "machine": {**machine.machine_info(), "load_average_start": load_start, "load_average_end": machine.load_average()},
        "packages": machine.package_versions(),
        # which weights were timed, whatever file they came from, and where (57H-4: a .pth or an adapt run had no hash,
        # and a relative path, against a folder the report does not record)
        "model": {"spec": config.model, "name": desc.name, "arch": desc.arch, "scale": scale, "params": n_params,
                  "hparams": dict(desc.spec.hparams),
                  "source": str(Path(desc.source).absolute()) if desc.source and Path(desc.source).exists() else desc.source,
                  "source_sha256": desc.metadata.get("source_sha256"),
                  "weights_sha256": weights_sha256, "detail_cap": cap,
                  "onnx": None if exported is None else {"file": str(exported.path.absolute()), "sha256": exported.sha256,
                                                         "precision": exported.precision}},
        "settings": {**config.as_dict(), "threads": threads, "input_source": input_source, "reference_device": ref_device,
                     "min_psnr_db": dict(DEFAULT_MIN_PSNR) if config.min_psnr is None
                     else dict.fromkeys(DEFAULT_MIN_PSNR, config.min_psnr),
                     "tiled_min_psnr_db": TILED_MIN_PSNR if config.min_psnr is None else config.min_psnr,
                     "flops_counted": "2 x MACs of Conv2d/ConvTranspose2d/Linear"},
        "peak_gflops": {k: {**v, "threads": threads if k.startswith("cpu") else None} for k, v in peaks.items()},
        "results": rows,
        "summary": summary,
    }


@dataclass
class _Timed:
    """A verified backend on one case, and what its timing rounds have gathered."""

    spec: Any
    backend: Any
    run: Callable[[np.ndarray], np.ndarray]
    base: dict[str, Any]
    load_rss_delta: float | None
    verify_rss_above: float | None
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    warmup: tuple[int, float] = (0, 0.0)
    rss_above: float | None = None
    rss_peak: float = 0.0
    rss_end: float | None = None  # RSS right after this configuration's last timing round
    rss_scope: str = "configuration"
    cuda_peak: float | None = None  # MiB: the largest torch CUDA peak over this configuration's own rounds


def _verify(spec, run, case: _Case, x: np.ndarray, ref: np.ndarray, config: BenchConfig, scale: int,
            load: dict[str, Any], say) -> tuple[dict[str, Any], float | None] | list[dict[str, Any]]:
    """Check one backend's output on one case.

    Returns (row base, RSS peak above start during the check) if verified, else its failed/error rows.
    """
    from lway_rt.bench import machine

    base = _row_base(spec, case, scale, config.tile_overlap)
    base.update(load_s=load["load_s"], export_s=load["export_s"], providers=load["providers"], fell_back=load["fell_back"])
    if load["fell_back"]:  # where it ran: a script grouping rows by device counted these as GPU rows
        base["note"] = f"ONNX Runtime fell back to {', '.join(load['providers'] or [])} (allowed by +fallback)"
        base["device"] = "cpu"
    threshold = config.min_psnr if config.min_psnr is not None else DEFAULT_MIN_PSNR[spec.precision]
    if case.tile and config.min_psnr is None:  # (a --min-psnr given is the one applied, tiled rows too)
        threshold = min(threshold, TILED_MIN_PSNR)
    # Backends stay loaded side by side, so the process's RSS holds all of them: what belongs to one
    # configuration is its peak above the RSS it started from. First-call allocations (ONNX
    # Runtime's arena, workspaces) happen here, so they are counted from here.
    rss_start = machine.rss_mb()
    reset_ok = machine.reset_peak_rss()
    try:
        out = run(x)
    except Exception as exc:  # noqa: BLE001 - reported in the row
        return [{**base, "concurrency": c, "status": "error", "reason": _error_text(exc)} for c in config.concurrency]
    rss_above = machine.peak_rss_mb() - rss_start if reset_ok and rss_start is not None else None
    if out.shape != ref.shape:
        reason = f"output shape {tuple(out.shape)} differs from the reference {tuple(ref.shape)}"
        return [{**base, "concurrency": c, "status": "failed", "reason": reason} for c in config.concurrency]
    finite = bool(np.isfinite(out).all())
    psnr = _psnr01(out, ref) if finite else float("nan")
    max_err = float(np.max(np.abs(out - ref))) if finite else None
    verified = finite and psnr >= threshold
    base.update(verified=verified, verification={"psnr_db": psnr if finite else None, "max_abs_err": max_err,
                                                 "min_psnr_db": threshold, "finite": finite})
    if not verified:
        reason = "output has NaN/inf" if not finite else f"PSNR {psnr:.1f} dB vs torch fp32 is below {threshold:.0f} dB"
        say(f"{spec.label} {_case_tag(case)}: FAILED verification ({reason})")
        return [{**base, "concurrency": c, "status": "failed", "reason": reason} for c in config.concurrency]
    return base, rss_above


def _time_interleaved(ready: list[_Timed], case: _Case, x: np.ndarray, flops: int, config: BenchConfig, scale: int,
                      say) -> list[dict[str, Any]]:
    """Time every verified backend on one case, at every concurrency level, in interleaved rounds.

    With ``rounds`` > 1 each backend's iterations are split into rounds and the backends take turns
    (the starting backend rotates), so a shared machine's changing load falls on all of them alike
    instead of on whichever ran during a busy minute. The warm-up runs once, before a backend's
    first round.
    """
    rows: dict[tuple[int, int], dict[str, Any]] = {}  # (concurrency level, backend): the report's order
    policy = config.timing
    rounds = policy.rounds
    round_iters = max(1, math.ceil(policy.min_iters / rounds))
    per_round = TimingPolicy(warmup_s=0, warmup_iters=0, min_iters=round_iters, min_time_s=policy.min_time_s / rounds,
                             max_iters=max(round_iters, policy.max_iters // rounds), max_time_s=policy.max_time_s / rounds)
    out_mp = case.batch * case.height * scale * case.width * scale / 1e6
    tag = _case_tag(case)
    order = {id(item): n for n, item in enumerate(ready)}
    ready = list(ready)  # a backend that raises while timed leaves it (the caller's list is left as it is)

    def fail(item: _Timed, level: int, exc: Exception) -> None:
        """``item`` raised while timed at concurrency ``level``: an error row for this and every later level of the
        case (it is not timed again on it), and the others carry on."""
        reason = _error_text(exc)
        workers = config.concurrency[level]
        say(f"{item.spec.label} {tag} x{workers} workers: error while timing ({reason})")
        for n, c in enumerate(config.concurrency[level:], level):
            rows[(n, order[id(item)])] = {**item.base, "concurrency": c, "status": "error", "reason": reason if n == level
                                          else f"not timed: it raised at {workers} worker(s): {reason}"}
        ready.remove(item)

    for level, workers in enumerate(config.concurrency):
        for item in list(ready):
            item.latencies, item.wall_s, item.rss_peak, item.rss_scope, item.cuda_peak = [], 0.0, 0.0, "configuration", None
            item.rss_above = item.verify_rss_above if workers == config.concurrency[0] else None
            try:  # (a TensorRT engine's execution context per worker: made here, not inside the timed calls)
                item.backend.prepare(workers)
                if workers > 1:
                    _check_at_once(item, x, workers)
            except Exception as exc:  # noqa: BLE001 - its error rows, as a failure in its rounds
                fail(item, level, exc)
        inputs = [x.copy() for _ in range(workers)]
        for r in range(rounds):
            if not ready:  # every backend failed on this case (its later levels are error rows already): no "round
                break  # k/N" line for rounds nothing runs in
            say(f"{tag} x{workers} workers: round {r + 1}/{rounds}")
            shift = r % max(1, len(ready))
            for item in ready[shift:] + ready[:shift]:
                try:
                    _time_round(item, x, inputs, policy, per_round, workers, warm=r == 0)
                except Exception as exc:  # noqa: BLE001 - one backend's failure is its error row; Ctrl-C still stops
                    fail(item, level, exc)
        for item in list(ready):
            try:
                rows[(level, order[id(item)])] = _timed_row(item, case, x, flops, workers, out_mp, policy)
            except Exception as exc:  # noqa: BLE001 - e.g. the device-time samples of compute_ms
                fail(item, level, exc)
    return [rows[key] for key in sorted(rows)]


AT_ONCE_TOLERANCE = 1e-3  # largest difference between a call's output made alone and made among others at once


def _check_at_once(item: _Timed, x: np.ndarray, workers: int) -> None:
    """``workers`` calls at once give what one call gives: the verification runs one call at a time, and a backend
    unsafe for threads (one TensorRT execution context shared by all) returned another call's output, or a buffer
    nothing wrote, while its row said ok. Checked once a concurrency level, before it is timed."""
    from concurrent.futures import ThreadPoolExecutor

    alone = item.run(x)
    with ThreadPoolExecutor(workers) as pool:
        outs = list(pool.map(lambda _: item.run(x), range(workers)))
    worst = max(float(np.abs(np.asarray(out) - alone).max()) for out in outs)
    if not worst <= AT_ONCE_TOLERANCE:  # (NaN included)
        raise ModelError(f"{workers} calls at once gave outputs {worst:.3g} off what one call gives: the backend is not "
                         "safe to call from several threads")


def _time_round(item: _Timed, x: np.ndarray, inputs: list[np.ndarray], policy: TimingPolicy, per_round: TimingPolicy,
                workers: int, warm: bool) -> None:
    """One timing round of one backend (after its warm-up, on its first round), gathered into ``item``. torch's thread
    count, the process's, is put back after it: a torch row sets its own, and an ONNX Runtime row's tiles are cut and
    blended with torch (on the run's threads, not on those of the torch row timed before it)."""
    threads = torch.get_num_threads()
    try:
        _time_round_on(item, x, inputs, policy, per_round, workers, warm)
    finally:
        torch.set_num_threads(threads)


def _time_round_on(item: _Timed, x: np.ndarray, inputs: list[np.ndarray], policy: TimingPolicy,
                   per_round: TimingPolicy, workers: int, warm: bool) -> None:
    from lway_rt.bench import machine

    if warm:
        item.warmup = warm_up(lambda: item.run(x), policy)
    on_cuda = item.spec.device == "cuda" and torch.cuda.is_available()  # not so after an ORT fallback
    if on_cuda:  # the peak mark is the process's: reset it before each of this backend's rounds
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_start = machine.rss_mb()
    reset_ok = machine.reset_peak_rss()
    lat, wall = time_closed_loop(lambda i, run=item.run: (lambda: run(inputs[i])), per_round, workers)
    item.latencies += lat
    item.wall_s += wall
    if on_cuda:
        torch.cuda.synchronize()
        item.cuda_peak = max(item.cuda_peak or 0.0, torch.cuda.max_memory_allocated() / 2**20)
    peak = machine.peak_rss_mb()
    item.rss_end = machine.rss_mb()  # now, not when the rows are made after every backend has run
    peak = max(peak, item.rss_end or 0.0)  # (read after the mark: the process may have grown in between)
    item.rss_peak = max(item.rss_peak, peak)
    if reset_ok and rss_start is not None:
        item.rss_above = max(item.rss_above or 0.0, peak - rss_start)
    else:
        item.rss_scope = "process"


def _timed_row(item: _Timed, case: _Case, x: np.ndarray, flops: int, workers: int, out_mp: float,
               policy: TimingPolicy) -> dict[str, Any]:
    stats = summarise(item.latencies, item.wall_s)
    compute = None
    if item.backend.compute_method is not None and not case.tile:
        samples = [item.backend.compute_ms(x) for _ in range(min(stats.count, 50))]
        compute = {**summarise(samples, sum(samples) / 1e3).as_dict(), "method": item.backend.compute_method}
    memory = {"rss_mb": item.rss_end, "rss_peak_mb": item.rss_peak,
              "rss_peak_above_start_mb": item.rss_above if item.rss_scope == "configuration" else None,
              "rss_peak_scope": item.rss_scope, "load_rss_delta_mb": item.load_rss_delta,
              "cuda_peak_allocated_mb": None, "cuda_used_mb": None}
    if item.spec.device == "cuda" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        memory.update(cuda_peak_allocated_mb=item.cuda_peak, cuda_used_mb=(total - free) / 2**20)
    images_per_s = stats.requests_per_s * case.batch
    row = {**item.base, "concurrency": workers, "warmup": {"iterations": item.warmup[0], "seconds": item.warmup[1]},
           "latency_ms": stats.as_dict(), "compute_ms": compute, "images_per_s": images_per_s,
           "output_mp_per_s": stats.requests_per_s * out_mp, "flops_per_image": flops,
           "achieved_gflops": flops * images_per_s / 1e9, "memory": memory}
    # --max-time-s stops the warm-up and the timing before the counts asked for: said, where it had been silent, and the
    # limit to raise named (57H-2: --min-iters 100 timed one request, and the note advised raising --min-iters)
    cut = []
    if stats.count < policy.min_iters:
        cut.append(f"{stats.count} of the {policy.min_iters} requests --min-iters asks for")
    if item.warmup[0] < policy.warmup_iters:
        cut.append(f"a warm-up of {item.warmup[0]} of the {policy.warmup_iters} calls --warmup-iters asks for")
    stopped = f"{CUT_SHORT} {policy.max_time_s:g} s after {' and '.join(cut)}: raise --max-time-s" if cut else None
    if stats.cv is None:  # one request: no spread to judge, which must not read as a perfectly steady run
        unsteady = "one timed request: no spread (std/mean) to tell steady timing from a busy machine" + \
            ("" if cut else "; raise --min-iters")
    elif not math.isfinite(stats.cv) or stats.cv > 0.15:
        unsteady = f"unsteady timing (std/mean = {stats.cv:.2f}): the machine was busy or the run too short"
    else:
        unsteady = None
    row["note"] = "; ".join(n for n in (row["note"], unsteady, stopped) if n) or None  # beside a fallback note
    return row
