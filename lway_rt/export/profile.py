"""Export profiles: one small TOML per deployment target, parsed into frozen dataclasses.

A profile names what a target needs from an export: ONNX opset, precision, the shapes the
deployed model will see (a dynamic min/opt/max range, or a list of static tiles), and the
TensorRT build settings (workspace, optimisation level, builder flags). Profiles live in the
repository's ``export/`` folder (``cpu``, ``desktop-fp16``, ``jetson-orin-trt10``), installed as the
package ``lway_rt.profiles`` (see pyproject.toml); a path to any TOML file works too. Command-line
flags override fields with ``ExportProfile.replace``.

Shapes are given for the model *input* (the low-resolution image) as ``[batch, height, width]``;
the channel count comes from the model.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lway_rt.errors import InputError
from lway_rt.io.toml_files import read_toml

__all__ = [
    "ShapeProfile", "TensorRTSettings", "ExportProfile", "PRECISIONS", "ENGINES", "BUILDER_FLAGS",
    "profiles_dir", "list_profiles", "load_profile", "parse_tile",
]

PRECISIONS = ("fp32", "fp16")
ENGINES = ("none", "tensorrt")
#: Builder flags a profile may set (names of ``tensorrt.BuilderFlag`` members, lower case).
#: No ``fp16``: TensorRT 11 dropped it, precision lives in the ONNX graph (strongly typed networks).
#: Not offered: ``strip_plan`` (a plan without weights needs a refit before every use, which nothing here does: the parity
#: gate and a cache hit would run an engine without weights), ``direct_io`` (deprecated in TensorRT 10.7, gone from 11's
#: Python API), ``version_compatible`` / ``exclude_lean_runtime`` (engines are cached per exact TensorRT version anyway,
#: and such an engine needs host code allowed to load).
BUILDER_FLAGS = ("refit", "sparse_weights")
_WITHDRAWN_FLAGS = {
    "strip_plan": "a plan without weights would run the parity gate and serve cache hits without a refit",
    "direct_io": "deprecated in TensorRT 10.7 and removed from TensorRT 11's Python API",
    "version_compatible": "engines are built and cached per exact TensorRT version and GPU",
    "exclude_lean_runtime": "it applies only to version-compatible engines",
}
DEFAULT_KEEP_FP32_OPS = ("Resize", "Upsample", "GridSample", "AffineGrid", "RoiAlign")


def parse_tile(text: str) -> tuple[int, int]:
    """``"256x384"`` -> ``(256, 384)`` (height x width)."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"tile size {text!r} is not HxW (e.g. 256x256)") from None
    if h < 1 or w < 1:
        raise InputError(f"tile size {text!r} must be positive")
    return h, w


def _triple(name: str, value: Any) -> tuple[int, int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise InputError(f"shapes.{name} must be three integers [batch, height, width], got {value!r}")
    if min(value) < 1:
        raise InputError(f"shapes.{name} must be positive, got {list(value)}")
    return tuple(value)  # type: ignore[return-value]


@dataclass(frozen=True)
class ShapeProfile:
    """Input shapes the exported model must serve.

    ``dynamic``: one ONNX with symbolic batch/H/W; ``min``/``opt``/``max`` (batch, H, W) become the
    TensorRT optimisation profile. ``static``: ``tiles`` (H, W) each exported at a fixed size,
    batch ``opt[0]``.
    """

    mode: str = "dynamic"
    min: tuple[int, int, int] = (1, 16, 16)
    opt: tuple[int, int, int] = (1, 256, 256)
    max: tuple[int, int, int] = (1, 1024, 1024)
    tiles: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        if self.mode not in ("dynamic", "static"):
            raise InputError(f"shapes.mode must be 'dynamic' or 'static', got {self.mode!r}")
        for name in ("min", "opt", "max"):
            object.__setattr__(self, name, _triple(name, getattr(self, name)))
        # (static: each tile at batch opt[0], min and max unused: a batch of 2 needed a max written for nothing)
        if self.mode == "dynamic" and not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise InputError(f"shapes must satisfy min <= opt <= max in every dimension, got min={list(self.min)} "
                             f"opt={list(self.opt)} max={list(self.max)}")
        def tile(t) -> tuple[int, ...]:
            if isinstance(t, str):
                return parse_tile(t)
            if isinstance(t, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in t):
                return tuple(t)
            raise InputError(f"static tile {t!r}: write it as \"HxW\" (e.g. \"256x256\") or [height, width]")

        tiles = tuple(dict.fromkeys(tile(t) for t in self.tiles))  # a tile listed twice is one export
        for t in tiles:
            if len(t) != 2 or min(t) < 1:
                raise InputError(f"static tile {t!r} must be (height, width), positive")
        object.__setattr__(self, "tiles", tiles)
        if self.mode == "static" and not tiles:
            raise InputError("shapes.mode = 'static' needs at least one tile (e.g. tiles = [\"256x256\"])")
        if self.mode == "dynamic" and tiles:  # they were ignored without a word
            raise InputError("shapes.tiles are for mode = 'static' (fixed-size exports), and this profile is dynamic: "
                             "drop tiles, or set mode = \"static\"")

    def fit_model(self, size_multiple: int, min_size: int) -> ShapeProfile:
        """Dynamic shapes with min/opt/max raised to the model's minimum side where below it.

        (A profile serves several networks: the encoder needs >= 22 px where the SR network
        takes 16 px.) Static tiles are never changed: ``check_model`` refuses unsuitable ones.
        """
        if self.mode != "dynamic":
            return self
        lo = size_multiple * math.ceil(min_size / size_multiple)

        def lift(t: tuple[int, int, int]) -> tuple[int, int, int]:
            return (t[0], max(t[1], lo), max(t[2], lo))

        return dataclasses.replace(self, min=lift(self.min), opt=lift(self.opt), max=lift(self.max))

    def check_model(self, size_multiple: int, min_size: int) -> None:
        """Refuse shapes the model cannot take (not a multiple of its size step, or too small)."""
        sizes = [(f"shapes.{k} {list(v)}", v[1:]) for k, v in (("min", self.min), ("opt", self.opt), ("max", self.max))] \
            if self.mode == "dynamic" else [(f"shapes.tiles \"{h}x{w}\"", (h, w)) for h, w in self.tiles]

        def near(n: int) -> str:  # the multiples either side, as the user would write them
            lo = n - n % size_multiple
            return " or ".join(str(m) for m in (lo, lo + size_multiple) if m >= max(min_size, 1))

        for label, (h, w) in sizes:
            for side in dict.fromkeys((h, w)):
                if side % size_multiple:
                    raise InputError(f"{label}: {side} is not a multiple of {size_multiple}, which this model needs; "
                                     f"write {near(side)}")
            if min(h, w) < min_size:
                raise InputError(f"{label}: a side of {min(h, w)} is below this model's minimum of {min_size} px")

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "min": list(self.min), "opt": list(self.opt), "max": list(self.max),
                "tiles": [f"{h}x{w}" for h, w in self.tiles]}


@dataclass(frozen=True)
class TensorRTSettings:
    """TensorRT builder settings (used only with ``engine = "tensorrt"``)."""

    workspace_mib: int = 4096
    optimization_level: int = 3
    flags: tuple[str, ...] = ()
    timing_cache: bool = True

    def __post_init__(self):
        if not isinstance(self.workspace_mib, int) or self.workspace_mib < 16:
            raise InputError(f"tensorrt.workspace_mib must be an integer >= 16, got {self.workspace_mib!r}")
        if not isinstance(self.optimization_level, int) or isinstance(self.optimization_level, bool) \
                or not 0 <= self.optimization_level <= 5:  # (true had been taken as level 1)
            raise InputError(f"tensorrt.optimization_level must be 0..5, got {self.optimization_level!r}")
        if not isinstance(self.timing_cache, bool):  # "no" read as true, and the cache was used
            raise InputError(f"tensorrt.timing_cache must be true or false (TOML booleans, unquoted), got "
                             f"{self.timing_cache!r}")
        flags = tuple(str(f).lower() for f in self.flags)
        if "fp16" in flags or "bf16" in flags:
            raise InputError("tensorrt.flags: 'fp16' is not a builder flag here: TensorRT 11 removed it and networks "
                             "are strongly typed; set precision = \"fp16\" instead (the ONNX itself is converted)")
        withdrawn = [f for f in flags if f in _WITHDRAWN_FLAGS]
        if withdrawn:
            raise InputError(f"tensorrt.flags: {withdrawn[0]!r} is not supported ({_WITHDRAWN_FLAGS[withdrawn[0]]}): "
                             f"remove it; allowed: {', '.join(BUILDER_FLAGS)}")
        bad = [f for f in flags if f not in BUILDER_FLAGS]
        if bad:
            raise InputError(f"unknown tensorrt.flags {bad}; allowed: {', '.join(BUILDER_FLAGS)}")
        object.__setattr__(self, "flags", tuple(dict.fromkeys(flags)))


@dataclass(frozen=True)
class ExportProfile:
    """Everything that decides what an export produces (and so enters its cache key)."""

    name: str = "default"  # the built-in shapes, not export/cpu.toml's
    description: str = ""
    opset: int = 18
    precision: str = "fp32"
    engine: str = "none"
    shapes: ShapeProfile = field(default_factory=ShapeProfile)
    tensorrt: TensorRTSettings = field(default_factory=TensorRTSettings)
    keep_fp32_ops: tuple[str, ...] = DEFAULT_KEEP_FP32_OPS
    keep_fp32_nodes: tuple[str, ...] = ()
    source: str | None = None  # file the profile came from

    def __post_init__(self):
        for key in ("name", "description"):  # written into every manifest: 5 or a table there is a profile mistake
            if not isinstance(getattr(self, key), str):
                raise InputError(f"{key} must be a string (in quotes), got {getattr(self, key)!r}")
        if not isinstance(self.opset, int) or not 17 <= self.opset <= 23:
            raise InputError(f"opset must be an integer from 17 to 23 (the dynamo exporter's range), got {self.opset!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.engine not in ENGINES:
            raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        object.__setattr__(self, "keep_fp32_ops", tuple(str(o) for o in self.keep_fp32_ops))
        object.__setattr__(self, "keep_fp32_nodes", tuple(str(o) for o in self.keep_fp32_nodes))

    def replace(self, **changes: Any) -> ExportProfile:
        """A copy with command-line overrides applied (``None`` values are ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        shape_changes = {k: changes.pop(k) for k in ("mode", "min", "opt", "max", "tiles") if k in changes}
        trt_changes = {k: changes.pop(k) for k in ("workspace_mib", "optimization_level", "flags") if k in changes}
        if shape_changes:
            changes["shapes"] = dataclasses.replace(self.shapes, **shape_changes)
        if trt_changes:
            changes["tensorrt"] = dataclasses.replace(self.tensorrt, **trt_changes)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "opset": self.opset, "precision": self.precision,
            "engine": self.engine, "shapes": self.shapes.as_dict(),
            "tensorrt": {"workspace_mib": self.tensorrt.workspace_mib, "optimization_level": self.tensorrt.optimization_level,
                         "flags": list(self.tensorrt.flags), "timing_cache": self.tensorrt.timing_cache},
            "keep_fp32_ops": list(self.keep_fp32_ops), "keep_fp32_nodes": list(self.keep_fp32_nodes),
            "source": self.source,
        }


_TOP_KEYS = {"name", "description", "opset", "precision", "engine", "shapes", "tensorrt", "fp16"}
_SHAPE_KEYS = {"mode", "min", "opt", "max", "tiles"}
_TRT_KEYS = {"workspace_mib", "optimization_level", "flags", "timing_cache"}
_FP16_KEYS = {"keep_fp32_ops", "keep_fp32_nodes"}


def profiles_dir() -> Path:
    """The profiles folder: ``$LWAYRT_PROFILES`` if set, else the package ``lway_rt.profiles``.

    pyproject.toml maps that package to the repository's ``export/`` folder: a wheel carries the
    profiles as ``lway_rt/profiles/*.toml``, an editable install imports the package from ``export/``.
    Only a source tree run without installing (``PYTHONPATH=.``), where the package cannot be
    imported, falls back to ``export/`` beside ``lway_rt/``, and only with a pyproject.toml there
    (a checkout; an installed wheel always has the package, so an unrelated ``export/`` in
    site-packages is never taken).
    """
    env = os.environ.get("LWAYRT_PROFILES")
    if env:
        return Path(env).expanduser()
    try:
        package = importlib.import_module("lway_rt.profiles")
    except ImportError:
        package = None
    if package is not None and getattr(package, "__file__", None):
        return Path(package.__file__).resolve().parent
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "export").is_dir():
        return checkout / "export"
    return Path(__file__).resolve().parents[1] / "profiles"  # where an installed wheel has them


def list_profiles() -> list[str]:
    folder = profiles_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def _check_keys(section: str, table: dict, allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        where = f"[{section}]" if section else "the top level"
        raise InputError(f"unknown key(s) {', '.join(unknown)} in {where} of the profile; allowed: {', '.join(sorted(allowed))}")


def profile_from_dict(data: dict[str, Any], *, source: str | None = None) -> ExportProfile:
    """Validate a parsed TOML table into an ``ExportProfile`` (unknown keys are errors, not ignored)."""
    _check_keys("", data, _TOP_KEYS)
    shapes = data.get("shapes", {})
    trt = data.get("tensorrt", {})
    fp16 = data.get("fp16", {})
    for section, table, allowed in (("shapes", shapes, _SHAPE_KEYS), ("tensorrt", trt, _TRT_KEYS), ("fp16", fp16, _FP16_KEYS)):
        if not isinstance(table, dict):
            raise InputError(f"[{section}] must be a table in the profile")
        _check_keys(section, table, allowed)
    kwargs: dict[str, Any] = {k: data[k] for k in ("name", "description", "opset", "precision", "engine") if k in data}
    for section, table, key, example in (("shapes", shapes, "tiles", '["256x256"]'), ("tensorrt", trt, "flags", '["refit"]')):
        if key in table and not isinstance(table[key], list):  # (a string was split into letters, a number failed)
            raise InputError(f"[{section}] {key} must be a list, e.g. {key} = {example}, not {table[key]!r}")
    try:
        kwargs["shapes"] = ShapeProfile(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in shapes.items()})
        kwargs["tensorrt"] = TensorRTSettings(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in trt.items()})
    except TypeError as exc:
        raise InputError(f"bad profile value: {exc}") from exc
    for key in ("keep_fp32_ops", "keep_fp32_nodes"):
        if key in fp16:  # a list of names: a string was split into letters, a number failed in a traceback
            value = fp16[key]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise InputError(f"[fp16] {key} must be a list of names, e.g. [\"Resize\"], not {value!r}")
            if key == "keep_fp32_ops" and (unknown := _unknown_ops(value)):  # (a misspelt one was ignored, unsaid)
                name, like = unknown[0]
                raise InputError(f"[fp16] keep_fp32_ops: {name!r} is not an ONNX operator"
                                 + (f" (did you mean {like!r}?)" if like else " (they are named as ONNX names them, "
                                                                              "e.g. \"Resize\")"))
            kwargs[key] = tuple(value)
    return ExportProfile(source=source, **kwargs)


def _unknown_ops(names) -> list[tuple[str, str | None]]:
    """The names among ``names`` that are no ONNX operator type, each with the one it differs from only in case (or
    None); none where onnx is not installed (the export then says what to install)."""
    try:
        from onnx import defs
    except ImportError:
        return []
    known = {s.name for s in defs.get_all_schemas()}
    by_case = {n.lower(): n for n in known}
    return [(n, by_case.get(n.lower())) for n in names if n not in known]


def load_profile(name_or_path: str | Path | None) -> ExportProfile:
    """A profile by name (``cpu`` -> ``export/cpu.toml``) or by path; ``None`` gives the built-in defaults."""
    if name_or_path is None:
        return ExportProfile()
    text = str(name_or_path)
    path = Path(text).expanduser()
    shipped = profiles_dir() / f"{text}.toml"
    # a profile's name wins over a file or folder of that name in the working folder (a 'cpu' folder of the user's
    # was read as the profile: "is a folder"); a path names a file (ending .toml, or with a folder in it)
    if path.suffix != ".toml" and (("/" not in text and shipped.is_file()) or not path.exists()):
        path = shipped
        if not path.is_file():
            known = ", ".join(list_profiles()) or "none found"
            raise InputError(f"unknown export profile '{text}' (profiles in {profiles_dir()}: {known}); "
                             "give a name from that list or a path to a .toml file")
    if not path.exists() and path.suffix == ".toml" and "/" not in text and (profiles_dir() / path.name).is_file():
        raise InputError(f"export profile {path} does not exist here; the shipped profile of that name is given "
                         f"without its ending: --profile {path.stem}")
    data = read_toml(path, "export profile")
    data.setdefault("name", path.stem)
    try:
        return profile_from_dict(data, source=str(path.absolute()))  # (a manifest read from another folder names it)
    except InputError as exc:
        raise InputError(f"export profile {path}: {exc}") from exc
