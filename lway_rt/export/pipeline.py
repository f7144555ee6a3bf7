"""The export pipeline behind ``lwayrt export``: cache lookup -> ONNX -> parity gate -> [engine] -> manifest.

For every artifact (SR network or encoder; one per static tile, or one dynamic):

1. compute the cache key (``cache.py``); a ready manifest with that key and an intact file is a
   **cache hit** and nothing is rebuilt;
2. run the stages of ``onnx_export.py`` (torch -> fp32 ONNX -> fp16 ONNX when asked) into a
   temporary file;
3. run the parity gate (``parity.py``) with ONNX Runtime against torch on a photo and on noise;
4. on a pass, rename the file to its final name and write the manifest with ``ready: true``; on a
   failure, delete the file, write the manifest with ``ready: false`` and the numbers, and raise
   ``ParityError`` (the CLI exits non-zero);
5. with ``engine = "tensorrt"``: the same for the engine (key per DESIGN.md section 5), parity
   measured on the engine's output.

``refit_engine`` swaps an adapted model's weights into an existing REFIT engine after checking
the names and shapes against the engine's manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from lway_rt.errors import InputError, ModelError, OutputError, ParityError, WriteFailed
from lway_rt.export.cache import (
    artifact_label, artifact_stem, engine_key_fields, file_sha256, make_key, onnx_key_fields, package_versions,
)
from lway_rt.export.manifest import manifest_path, read_manifest, ready_artifact, write_manifest
from lway_rt.export.parity import ParityGate, check_against_torch, check_onnx_against_torch, standard_inputs
from lway_rt.export.profile import ExportProfile
from lway_rt.io.weights import ensure_writable_dir, file_mode_for, os_folder, sweep_stale_temps, temp_prefix

__all__ = ["Exportable", "ExportResult", "sr_exportable", "encoder_exportable", "export_artifacts", "refit_engine",
           "DEFAULT_OUT_DIR"]

DEFAULT_OUT_DIR = Path("engines")
Log = Callable[[str], None]


def _nolog(_msg: str) -> None:
    pass


@dataclass(frozen=True)
class Exportable:
    """A network plus the facts the exporter needs about it (built by ``sr_exportable``/``encoder_exportable``)."""

    module: nn.Module
    what: str  # "sr" or "encoder"
    kind: str  # parity rule: "image" or "embedding"
    label: str  # file-name label, e.g. the store name
    arch: str
    hparams: dict[str, Any]
    weights_sha256: str
    in_channels: int = 3
    size_multiple: int = 1
    min_size: int = 1
    source: dict[str, Any] = field(default_factory=dict)


def sr_exportable(desc, *, label: str | None = None, model_spec: str | None = None) -> Exportable:
    """From a ``ModelDescriptor`` (``lway_rt.io.store.load_model``)."""
    from lway_rt.io.weights import state_dict_sha256

    label = label or desc.name or (Path(desc.source).stem if desc.source else desc.arch)
    digest = state_dict_sha256(desc.model.state_dict())
    meta = {k: v for k, v in desc.metadata.items() if k in ("name", "source_package", "source_version", "source_sha256",
                                                              "description", "adapted_from", "format")}
    # an absolute path: serve-bench finds the weights again from any folder (a relative one held only where export ran)
    path = str(Path(desc.source).resolve()) if desc.source and Path(desc.source).exists() else desc.source
    source = {"model": model_spec or desc.name or desc.source, "path": path, "weights_sha256": digest,
              "arch": desc.arch, "hparams": dict(desc.spec.hparams), "scale": desc.scale, "metadata": meta}
    return Exportable(desc.model, "sr", "image", label, desc.arch, dict(desc.spec.hparams), digest,
                      desc.in_channels, desc.size_multiple, desc.min_size, source)


def encoder_exportable(stage1, *, label: str, path: str | None = None) -> Exportable:
    """From a ``lway_rt.degae.Stage1``: the degradation encoder E, image -> (B, D) embedding."""
    from lway_rt.degae import MIN_ENCODER_SIDE
    from lway_rt.io.weights import state_dict_sha256

    enc = stage1.encoder.eval()
    digest = state_dict_sha256(enc.state_dict())
    hp = {k: stage1.meta.get(k) for k in ("embed_dim", "head_widths", "trunk_model", "trunk_layers", "trunk_sha256")}
    source = {"stage1": path, "weights_sha256": digest, "arch": "DegradationEncoder", "hparams": hp}
    return Exportable(enc, "encoder", "embedding", label, "DegradationEncoder", hp, digest, 3, 1, MIN_ENCODER_SIDE, source)


@dataclass(frozen=True)
class ExportResult:
    what: str
    precision: str
    onnx_path: Path
    cache_key: str
    cache_hit: bool
    parity: dict[str, Any] | None
    tile: tuple[int, int] | None = None
    engine_path: Path | None = None
    engine_cache_hit: bool | None = None

    @property
    def manifest_path(self) -> Path:
        return manifest_path(self.onnx_path)


def _io_shape(value_info) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]


def _fit(ex: Exportable, profile: ExportProfile) -> ExportProfile:
    """The profile with its shapes fitted to and checked against the network's size rules."""
    shapes = profile.shapes.fit_model(ex.size_multiple, ex.min_size)
    try:
        shapes.check_model(ex.size_multiple, ex.min_size)
    except InputError as exc:  # (the file to edit, where the sizes came from one)
        raise InputError(f"export profile {profile.source}: {exc}" if profile.source else str(exc)) from None
    return dataclasses.replace(profile, shapes=shapes)


def _targets(profile: ExportProfile) -> list[tuple[int, int] | None]:
    return list(profile.shapes.tiles) if profile.shapes.mode == "static" else [None]


def export_artifacts(ex: Exportable, profile: ExportProfile, *, precisions: tuple[str, ...] | None = None,
                     out_dir: str | Path = DEFAULT_OUT_DIR, gate: ParityGate = ParityGate(), force: bool = False,
                     log: Log = _nolog) -> list[ExportResult]:
    """Export ``ex`` as ``profile`` says; returns one result per artifact (cache hits included).

    ``precisions`` (default: the profile's) may name both ``fp32`` and ``fp16``: the torch export
    and the torch reference outputs are then computed once and shared.
    """
    out_dir = Path(out_dir)
    if profile.engine == "tensorrt":  # fail before a long ONNX export if engines cannot be built here
        from lway_rt.export.tensorrt import require_tensorrt

        require_tensorrt()
    where = Path(os.path.realpath(out_dir))  # (nx/../mine: mine, the user's, not a folder made, 56G3; link/../new:
    # new beside the link's target, where the folder is made, 56I-5)
    made = [p for p in (where, *where.parents) if not p.exists()]  # (the folders it makes, deepest first)
    unwritable = _unwritable(out_dir)  # said before a long export; a read-only folder still serves its cache hits
    try:
        return _export_each(ex, _fit(ex, profile), precisions, out_dir, gate, force, log, unwritable)
    except BaseException:  # a refused or stopped export leaves no empty folder it made (a missing package: 56B2), nor
        for folder in made:  # their parents (56D-4)
            try:
                folder.rmdir()  # (only while empty)
            except OSError:
                break
        raise


def _export_each(ex: Exportable, profile: ExportProfile, precisions, out_dir: Path, gate: ParityGate, force: bool,
                 log: Log, unwritable: OutputError | None) -> list[ExportResult]:
    """``export_artifacts``' exports, each target tile and precision."""
    from lway_rt.export.onnx_export import Memo, OnnxFromTorch

    results = []
    for tile in _targets(profile):
        static_shape = _static_shape(profile, tile)
        fp32_stage = Memo(OnnxFromTorch(
            ex.module, in_channels=ex.in_channels, dynamic=tile is None, static_shape=static_shape,
            size_multiple=ex.size_multiple, min_size=ex.min_size, opset=profile.opset,
        ))
        refs: dict = {}
        for precision in precisions or (profile.precision,):
            prof = profile.replace(precision=precision)
            res = _export_onnx_artifact(ex, prof, tile, fp32_stage, refs, out_dir=out_dir, gate=gate, force=force, log=log,
                                        unwritable=unwritable)
            if prof.engine == "tensorrt":
                engine_path, hit = build_engine_cached(ex, res, prof, out_dir=out_dir, gate=gate, force=force, log=log,
                                                       unwritable=unwritable)
                res = dataclasses.replace(res, engine_path=engine_path, engine_cache_hit=hit)
            results.append(res)
    return results


def _unwritable(out_dir: Path) -> OutputError | None:
    """Why ``out_dir`` (an existing folder) takes no new file, or None; raised at once where the folder cannot be made.
    A read-only folder of finished exports (a deployment image) still answers from its cache; what it lacks is
    refused before its export starts (``_must_write``)."""
    try:
        ensure_writable_dir(out_dir, "--out folder")
    except OutputError as exc:
        if not out_dir.is_dir():
            raise
        return exc
    return None


def _must_write(unwritable: OutputError | None, what: str, forced: Callable[[], bool] = lambda: False) -> None:
    """Refuse the export of ``what`` into an --out folder that cannot be written; ``forced``: whether the folder's
    cache holds it (asked only then), so that --force, not a cache miss, is why it must be made."""
    if unwritable is not None and forced():
        raise OutputError(f"--force makes {what} again, but {unwritable}; or drop --force to use the folder's cache")
    if unwritable is not None:
        raise OutputError(f"{what} is not in the --out folder's cache and must be made, but {unwritable}")


def onnx_metadata(ex: Exportable, precision: str, tile: tuple[int, int] | None) -> dict[str, Any]:
    """What an exported ONNX file says of itself (``DescribeOnnx``): enough for ``upscale`` and other tools to run a
    file moved away from its manifest (scale, size rules, whether tiles may be cut), and which weights it holds."""
    from lway_rt.adapt.embed import EMBED_MAX_SIDE

    cap = ex.source.get("detail_cap") if isinstance(ex.source.get("detail_cap"), dict) else None
    return {
        "what": ex.what, "arch": ex.arch, "scale": ex.source.get("scale"),
        "weights_sha256": ex.source.get("weights_sha256", ex.weights_sha256),  # as the manifest's source names them
        "precision": precision,
        # what a deployment must feed and expect, as lway_rt does (57B-2, 57B-9): an SR network's output is not
        # clipped, and the encoder reads the LR image upsampled to the SR network's size, not the LR itself
        "input": "float32 NCHW, RGB in [0, 1]" if ex.kind == "image" else (
            "float32 NCHW, RGB in [0, 1]: the LR image upsampled by the SR network's scale (bicubic as PyTorch's "
            "interpolate with align_corners=False, clipped to [0, 1]); lway_rt embeds its centred crop of at most "
            f"{EMBED_MAX_SIDE} px a side"),
        "output": ("float32 (batch, dim) degradation embedding" if ex.kind != "image" else
                   f"float32 NCHW, RGB in [0, 1] (clipped, as the cap's blend is), x{ex.source.get('scale')}" if cap else
                   f"float32 NCHW, RGB, x{ex.source.get('scale')}: about [0, 1] and not clipped (clip to [0, 1] before "
                   "quantising)"),  # (a capped graph clips: 57J-3)
        "size_multiple": ex.size_multiple, "min_size": ex.min_size,
        "shape": f"static {tile[0]}x{tile[1]}" if tile else "dynamic",
        "detail_cap": cap["cap"] if cap else None, "detail_cap_base_sha256": cap.get("base_sha256") if cap else None,
        "tiling": "whole images only: the detail cap is computed over the whole image" if cap else None,
    }


def _static_shape(profile: ExportProfile, tile: tuple[int, int] | None) -> tuple[int, int, int] | None:
    return (profile.shapes.opt[0], *tile) if tile else None


def _export_onnx_artifact(ex: Exportable, profile: ExportProfile, tile, fp32_stage, refs: dict, *, out_dir: Path,
                          gate: ParityGate, force: bool, log: Log, unwritable: OutputError | None = None) -> ExportResult:
    from lway_rt.export.fp16 import fp16_summary
    from lway_rt.export.onnx_export import DescribeOnnx, Fp16FromOnnx, SaveOnnx, onnx_initializers

    static_shape = _static_shape(profile, tile)
    fields = onnx_key_fields(
        what=ex.what, arch=ex.arch, hparams=ex.hparams, weights_sha256=ex.weights_sha256, precision=profile.precision,
        opset=profile.opset, shape_mode=profile.shapes.mode, tile=tile, keep_fp32_ops=profile.keep_fp32_ops,
        keep_fp32_nodes=profile.keep_fp32_nodes, batch=static_shape[0] if static_shape else None,
    )
    key = make_key(fields)
    stem = artifact_stem(ex.label, ex.what, profile.precision, key, tile)
    final = out_dir / f"{stem}.onnx"
    if not force:
        # the same weights and settings exported under another label (a run's folder, then its weights file) hit too
        tail = stem[len(artifact_label(ex.label)):]
        others = sorted(p for p in out_dir.glob(f"*{tail}.onnx") if p != final) if out_dir.is_dir() else []
        for cand in (final, *others):
            hit = ready_artifact(cand, key)
            if hit is None and _claims_ready(cand, key):  # its manifest says ready, the file is not what it describes
                log(f"{cand.name} is not the file its manifest describes (changed or cut since it was exported): "
                    "not used" + ("; exporting again" if cand == final else ""))
            if hit is not None and not _recorded_parity_passes(hit.get("parity"), gate, profile.precision, ex.kind):
                if cand == final:
                    log(f"{final.name} was accepted under a looser parity gate than this one: rebuilding")
                hit = None
            if hit is not None:
                # what an export killed midway left (its hidden .onnx.tmp): a hit never reached the sweep
                with contextlib.suppress(OSError):
                    sweep_stale_temps(out_dir, ".", ".onnx.tmp")
                named = "" if cand == final else f", exported as {hit.get('label', '?')}: the same weights and settings"
                log(f"cache hit: {cand} (key {key[:12]}, parity passed when it was made{named})")
                return ExportResult(ex.what, profile.precision, cand, key, True, hit.get("parity"), tile)

    _must_write(unwritable, final.name, lambda: force and ready_artifact(final, key) is not None)
    where = f"{tile[0]}x{tile[1]} static" if tile else "dynamic H/W"
    log(f"exporting {ex.label} {ex.what} to ONNX ({profile.precision}, opset {profile.opset}, {where})")
    stage: Callable[[], Any] = fp32_stage
    if profile.precision == "fp16":
        stage = Fp16FromOnnx(stage, keep_fp32_ops=profile.keep_fp32_ops, keep_fp32_nodes=profile.keep_fp32_nodes)
    model = DescribeOnnx(stage, onnx_metadata(ex, profile.precision, tile))()

    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(out_dir, ".", ".onnx.tmp")  # every export's killed one, not only this file's (it stayed, the
    # size of a model, when the next export had other settings)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(final.stem), suffix=".onnx.tmp", dir=os_folder(out_dir))
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            SaveOnnx(model, tmp)()
        except WriteFailed as exc:  # (a full disk: said of the file asked for, not of its hidden temporary name)
            raise WriteFailed(final, exc.reason, exc.folder) from None
        inputs = standard_inputs(ex.in_channels, ex.size_multiple, ex.min_size, static_shape=static_shape)
        log("parity gate: ONNX Runtime vs torch on " + " and ".join(name for name, _ in inputs))
        report = check_onnx_against_torch(tmp, ex.module, inputs, precision=profile.precision, kind=ex.kind, gate=gate,
                                          refs=refs)
        manifest = {
            "ready": report.passed,
            "what": ex.what,
            "label": ex.label,
            "cache_key": key,
            "cache_key_fields": fields,
            "artifact": {"type": "onnx", "file": final.name, "sha256": file_sha256(tmp), "bytes": tmp.stat().st_size},
            "source": ex.source,
            "onnx": {
                "opset": profile.opset, "precision": profile.precision, "io_dtype": "float32",
                "dynamic": tile is None, "tile": list(tile) if tile else None,
                "size_multiple": ex.size_multiple, "min_size": ex.min_size,
                "input": {"name": model.graph.input[0].name, "shape": _io_shape(model.graph.input[0])},
                "output": {"name": model.graph.output[0].name, "shape": _io_shape(model.graph.output[0])},
                "fp16": fp16_summary(model) if profile.precision == "fp16" else None,
                "keep_fp32_ops": list(profile.keep_fp32_ops) if profile.precision == "fp16" else [],
                "keep_fp32_nodes": list(profile.keep_fp32_nodes) if profile.precision == "fp16" else [],
                "initializers": onnx_initializers(model),
            },
            "shapes": profile.shapes.as_dict(),
            "profile": profile.as_dict(),
            "parity": report.as_dict(),
            "parity_gate": gate.__dict__,
            "versions": package_versions(),
        }
        if not report.passed:
            if ready_artifact(final, key) is not None:
                # made earlier under a looser gate (or before --force): still what its manifest says; keep both
                failed = out_dir / f"{final.stem}.failed.json"
                write_manifest(failed, manifest)
                raise ParityError(f"{report.summary()}; {final.name}, made earlier under a looser gate, is left as it was "
                                  f"(this run's numbers in {failed})")
            write_manifest(manifest_path(final), manifest)
            final.unlink(missing_ok=True)  # a stale file of the same name must not look ready either
            raise ParityError(f"{report.summary()}; nothing was marked ready (details in {manifest_path(final)})")
        # mkstemp's file is private, and the save over it kept that (every export was 0600, whatever the umask): the
        # mode a new file gets, or the replaced one's, set once written (a read-only mode first would refuse the save)
        os.chmod(tmp, file_mode_for(final))
        os.replace(tmp, final)
        write_manifest(manifest_path(final), manifest)
        # a stricter gate's failed numbers were about the file this one replaces
        (out_dir / f"{final.stem}.failed.json").unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)
    log(f"wrote {final} ({report.summary()})")
    return ExportResult(ex.what, profile.precision, final, key, False, report.as_dict(), tile)


def _claims_ready(artifact: Path, key: str) -> bool:
    """Whether ``artifact``'s manifest (readable) marks it ready for ``key``, whatever the file itself is now."""
    try:
        data = read_manifest(manifest_path(artifact))
    except InputError:
        return False
    return bool(data.get("ready")) and data.get("cache_key") == key


def _recorded_parity_passes(parity: dict | None, gate: ParityGate, precision: str, kind: str) -> bool:
    """Would the numbers recorded when an artifact was made pass today's gate? (The gate is not in the key.)"""
    if not parity or not parity.get("cases"):
        return False
    # a value written as null was not finite (a failed case), or an older manifest's infinite PSNR of identical outputs
    def value(c: dict, infinite: float) -> float:
        return infinite if c.get("value") is None else float(c["value"])

    if kind == "embedding":
        thr = gate.embed_rel if precision == "fp32" else gate.embed_fp16_rel
        return all(c["finite"] and value(c, math.inf) <= thr for c in parity["cases"])
    if precision == "fp32":
        return all(c["finite"] and value(c, math.inf) <= gate.fp32_max_abs for c in parity["cases"])
    return all(c["finite"] and value(c, math.inf) >= gate.fp16_min_psnr for c in parity["cases"])


def _trt_profiles(ex: Exportable, profile: ExportProfile, tile, input_name: str):
    c = ex.in_channels
    if tile:
        shape = (profile.shapes.opt[0], c, *tile)
        return [{input_name: (shape, shape, shape)}], {"static": [shape[0], c, *tile]}
    s = profile.shapes
    lo, opt, hi = ((b, c, h, w) for b, h, w in (s.min, s.opt, s.max))
    return [{input_name: (lo, opt, hi)}], {"min": list(lo), "opt": list(opt), "max": list(hi)}


def engine_gate_shapes(profile: ExportProfile, tile, size_multiple: int = 1) -> tuple[tuple[int, int, int], ...]:
    """(batch, H, W) of the engine gate's two inputs, each inside the engine's optimisation profile.

    A static tile: that tile (at the profile's batch) for both. Dynamic: the photo at the profile's ``opt`` shape
    (what the engine was tuned for) and the noise at the gate's usual non-square size (40x48, batch 1) moved inside
    ``min``..``max``, so a profile whose sides start above 40 or stop below 64 is gated, not refused after the build.
    ``profile`` has been fitted to the model (``_fit``): its sides are multiples of ``size_multiple``.
    """
    if tile:
        shape = _static_shape(profile, tile)
        return shape, shape
    s = profile.shapes

    def inside(i: int, want: int) -> int:
        step = size_multiple if i else 1  # the batch has no step
        want = step * math.ceil(want / step)
        return min(max(want, s.min[i]), s.max[i])

    noise = (inside(0, 1), inside(1, 40), inside(2, 48))
    return tuple(s.opt), noise


def _engine_gate_inputs(ex: Exportable, profile: ExportProfile, tile):
    from lway_rt.export.parity import photo_input, random_input

    photo_shape, noise_shape = engine_gate_shapes(profile, tile, ex.size_multiple)
    label, photo = photo_input(ex.size_multiple, ex.min_size, shape=photo_shape)
    if ex.in_channels != 3:
        photo = photo[:, :1].repeat(ex.in_channels, axis=1)
    noise = random_input(ex.in_channels, ex.size_multiple, ex.min_size, shape=noise_shape, seed=0)
    return [(label, photo), ("random", noise)]


def build_engine_cached(ex: Exportable, res: ExportResult, profile: ExportProfile, *, out_dir: Path,
                        gate: ParityGate, force: bool, log: Log,
                        unwritable: OutputError | None = None) -> tuple[Path, bool]:
    """TensorRT engine for an exported ONNX, reused from the cache when the key matches and it still loads."""
    from lway_rt.export.tensorrt import EngineFromNetwork, NetworkFromOnnxPath, device_info, load_engine, timing_cache_path

    info = device_info()
    onnx_manifest = read_manifest(manifest_path(res.onnx_path))
    input_name = onnx_manifest["onnx"]["input"]["name"]
    trt_profiles, shapes = _trt_profiles(ex, profile, res.tile, input_name)
    t = profile.tensorrt
    fields = engine_key_fields(
        onnx_sha256=onnx_manifest["artifact"]["sha256"], shapes=shapes, precision=profile.precision,
        workspace_mib=t.workspace_mib, optimization_level=t.optimization_level, flags=t.flags,
        trt_version=info.trt_version, gpu_name=info.gpu_name, compute_capability=info.compute_capability,
    )
    key = make_key(fields)
    final = res.onnx_path.with_name(f"{res.onnx_path.stem}.{key[:12]}.engine")
    cached = None if force else ready_artifact(final, key)
    if cached is not None and not _recorded_parity_passes(cached.get("parity"), gate, profile.precision, ex.kind):
        log(f"{final.name} was accepted under a looser parity gate than this one: rebuilding")
        cached = None
    if cached is not None:
        if load_engine(final.read_bytes()) is not None:
            log(f"engine cache hit: {final}")
            return final, True
        log(f"cached engine {final.name} no longer loads (TensorRT or driver changed): rebuilding")

    _must_write(unwritable, final.name, lambda: force and ready_artifact(final, key) is not None)
    log(f"building TensorRT {info.trt_version} engine on {info.gpu_name} (sm {info.compute_capability}); "
        f"timing cache {timing_cache_path(out_dir, info).name}")
    plan = EngineFromNetwork(
        NetworkFromOnnxPath(res.onnx_path), profiles=trt_profiles, workspace_mib=t.workspace_mib,
        optimization_level=t.optimization_level, flags=t.flags, fp32=profile.precision == "fp32",
        timing_cache=timing_cache_path(out_dir, info) if t.timing_cache else None, log=log,
    )()
    return _gate_and_save_engine(ex, plan, final, key, fields, onnx_manifest, profile, res.tile, gate, log,
                                 extra={"onnx": res.onnx_path.name}), False


def _gate_and_save_engine(ex: Exportable, plan: bytes, final: Path, key: str, fields: dict, onnx_manifest: dict,
                          profile: ExportProfile, tile, gate: ParityGate, log: Log, extra: dict) -> Path:
    from lway_rt.export.tensorrt import SaveEngine, TrtRunner, load_engine

    handle = load_engine(plan)
    if handle is None:
        raise ModelError("TensorRT built an engine it cannot load again; rebuild with a lower optimization_level")
    inputs = _engine_gate_inputs(ex, profile, tile)  # inside the engine's optimisation profile, its opt shape included
    log("parity gate: TensorRT vs torch on " + " and ".join(name for name, _ in inputs))
    report = check_against_torch(TrtRunner(handle), ex.module, inputs, precision=profile.precision, kind=ex.kind,
                                 backend="tensorrt", gate=gate)
    manifest = {
        "ready": report.passed, "what": ex.what, "label": ex.label, "cache_key": key, "cache_key_fields": fields,
        "artifact": {"type": "tensorrt-engine", "file": final.name, "sha256": None, "bytes": len(plan)},
        "source": ex.source, **extra,
        "onnx_initializers": onnx_manifest["onnx"]["initializers"],
        "onnx_settings": {k: onnx_manifest["onnx"][k] for k in ("opset", "precision", "dynamic", "tile",
                                                              "keep_fp32_ops", "keep_fp32_nodes")},
        "tensorrt": {**profile.as_dict()["tensorrt"], "version": fields["tensorrt"], "gpu": fields["gpu"],
                     "compute_capability": fields["compute_capability"], "shapes": fields["shapes"]},
        "profile": profile.as_dict(), "parity": report.as_dict(), "parity_gate": gate.__dict__,
        "versions": package_versions(("tensorrt",)),
    }
    if not report.passed:
        final.unlink(missing_ok=True)
        write_manifest(manifest_path(final), manifest)
        raise ParityError(f"{report.summary()}; the engine was not marked ready (details in {manifest_path(final)})")
    SaveEngine(plan, final)()
    manifest["artifact"]["sha256"] = file_sha256(final)
    write_manifest(manifest_path(final), manifest)
    log(f"wrote {final} ({report.summary()})")
    return final


def refit_engine(engine_path: str | Path, ex: Exportable, *, out_dir: str | Path | None = None,
                 gate: ParityGate = ParityGate(), log: Log = _nolog) -> Path:
    """Swap ``ex``'s weights into the REFIT engine at ``engine_path``; returns the new engine's path.

    Order: read the engine's manifest, export ``ex`` exactly as the engine's ONNX was exported,
    check weight names/shapes/dtypes against the manifest (no TensorRT needed, so a mismatch is
    reported anywhere), then refit with ``OnnxParserRefitter.refit_from_file`` and run the parity
    gate on the refitted engine. The original engine is left untouched.
    """
    from lway_rt.export.onnx_export import Fp16FromOnnx, OnnxFromTorch, SaveOnnx, onnx_initializers
    from lway_rt.export.profile import profile_from_dict
    from lway_rt.export.refit import match_refit_weights

    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise InputError(f"engine {engine_path} does not exist; build a refittable one with 'lwayrt export --engine "
                         "tensorrt --refittable' (or a profile whose tensorrt.flags hold \"refit\")")
    manifest = read_manifest(manifest_path(engine_path))
    if manifest.get("artifact", {}).get("type") != "tensorrt-engine":
        raise InputError(f"{engine_path}: its manifest does not describe a TensorRT engine")
    if "refit" not in manifest.get("tensorrt", {}).get("flags", []):
        raise InputError(f"{engine_path} was built without the refit flag; rebuild it with 'lwayrt export --engine "
                         "tensorrt --refittable' (or a profile whose tensorrt.flags hold \"refit\", e.g. --profile "
                         "jetson-orin-trt10) before refitting")
    if manifest.get("what") != ex.what:
        raise InputError(f"{engine_path} holds the {manifest.get('what')} network, not the {ex.what} network")
    out_dir = Path(out_dir) if out_dir else engine_path.parent
    ensure_writable_dir(out_dir, "--out folder")  # before the export and the refit: a folder that cannot take it is one line
    settings = manifest["onnx_settings"]
    prof_dict = {k: v for k, v in manifest["profile"].items() if k != "source"}
    prof_dict["fp16"] = {"keep_fp32_ops": prof_dict.pop("keep_fp32_ops"), "keep_fp32_nodes": prof_dict.pop("keep_fp32_nodes")}
    profile = profile_from_dict(prof_dict)
    tile = tuple(settings["tile"]) if settings.get("tile") else None
    static_shape = _static_shape(profile, tile)

    log(f"exporting {ex.label} as {engine_path.name}'s ONNX was exported ({settings['precision']}, opset {settings['opset']})")
    stage: Callable[[], Any] = OnnxFromTorch(ex.module, in_channels=ex.in_channels, dynamic=tile is None,
                                             static_shape=static_shape, size_multiple=ex.size_multiple,
                                             min_size=ex.min_size, opset=settings["opset"])
    if settings["precision"] == "fp16":
        stage = Fp16FromOnnx(stage, keep_fp32_ops=settings["keep_fp32_ops"], keep_fp32_nodes=settings["keep_fp32_nodes"])
    model = stage()
    match = match_refit_weights(manifest["onnx_initializers"], onnx_initializers(model))
    if not match.ok:
        raise ModelError(f"{ex.label} cannot be refitted into {engine_path.name}: {match.describe()}; "
                         "export it with a full build instead")
    log(f"weights match the engine: {match.describe()}")

    from lway_rt.export.tensorrt import (
        device_info, load_engine, refit_engine_bytes, refittable_weight_names, require_tensorrt,
    )

    # (after the match, which needs no TensorRT; a build's advice, --engine none, is an option --refit refuses: 57B-1)
    require_tensorrt("refitting TensorRT engines", "run the refit on a GPU machine with TensorRT (the weights match "
                     "the engine, as checked here)")
    info = device_info()
    from lway_rt.io.weights import sweep_stale_temp_dirs

    sweep_stale_temp_dirs()  # what runs killed with kill -9 left
    with tempfile.TemporaryDirectory(prefix="lwayrt-refit-") as tmp:
        onnx_file = SaveOnnx(model, Path(tmp) / "refit.onnx")()
        original = load_engine(engine_path.read_bytes())
        if original is None:
            raise ModelError(f"{engine_path} does not load with TensorRT {info.trt_version} on this GPU: rebuild it")
        refittable = refittable_weight_names(original)
        del original  # the refit deserialises its own copy: not two engines in GPU memory at once
        match = match_refit_weights(manifest["onnx_initializers"], onnx_initializers(model), refittable=refittable)
        if not match.ok:
            raise ModelError(f"{ex.label} cannot be refitted into {engine_path.name}: {match.describe()}")
        _, plan = refit_engine_bytes(engine_path.read_bytes(), onnx_file)
        onnx_sha = file_sha256(onnx_file)
    fields = {**manifest["cache_key_fields"], "onnx_sha256": onnx_sha, "refitted_from": manifest["cache_key"]}
    key = make_key(fields)
    final = out_dir / f"{artifact_stem(ex.label, ex.what, settings['precision'], key, tile)}.refit.engine"
    onnx_manifest = {"onnx": {"initializers": manifest["onnx_initializers"], **settings}}
    return _gate_and_save_engine(ex, plan, final, key, fields, onnx_manifest, profile, tile, gate, log,
                                 extra={"refitted_from": engine_path.name})
