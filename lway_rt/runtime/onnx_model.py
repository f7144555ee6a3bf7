"""An ONNX file as an SR model that ``lwayrt upscale`` runs with ONNX Runtime.

``lwayrt export`` writes ``x.onnx`` beside a manifest ``x.json`` (what it holds, its scale and size rules, the
file's sha256, whether it passed the parity gate). ``load_onnx_model`` reads that manifest and refuses a file it
does not describe (another file's manifest, one that failed its gate, an encoder export, fixed-shape tiles); an
ONNX file without a manifest (exported elsewhere) is probed instead: its scale from the output of a 32 x 32 input,
its size multiple from whether a 33 x 33 input runs. The network runs in an ``OnnxSR`` module, so the tiling, grey
and alpha handling of ``upscale`` are the same as with a torch network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lway_rt.archs.descriptor import ArchSpec, ModelDescriptor
from lway_rt.errors import InputError, ModelError

__all__ = ["OnnxSR", "load_onnx_model", "spec_from_manifest", "ONNX_SUFFIX", "ENGINE_SUFFIXES"]

ONNX_SUFFIX = ".onnx"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # TensorRT engines: upscale points to the .onnx beside them


class OnnxSR(nn.Module):
    """An ONNX Runtime session of an image-to-image network as a module: NCHW float tensor in, float32 out
    (on the CPU: ONNX Runtime takes and gives host arrays)."""

    def __init__(self, session, path: Path):
        super().__init__()
        self.session, self.path = session, Path(path)
        (inp,) = session.get_inputs()
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (y, *_) = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy(), self.input_dtype)})
        return torch.from_numpy(np.asarray(y, dtype=np.float32))


def _providers(device: str) -> tuple[str, ...]:
    if device == "cpu":
        return ("CPUExecutionProvider",)
    if device.startswith("cuda"):
        index = device.partition(":")[2] or "0"
        return (("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider")  # type: ignore[return-value]
    raise InputError(f"--device must be 'cpu' or 'cuda[:N]', not {device!r}")


def _not_sr(path: Path, held: str) -> ModelError:
    return ModelError(f"{path.name} holds {held}, not an SR network: pass an SR export")


def _fixed_shape(path: Path, fixed: str, profile: object = None) -> ModelError:
    """The refusal of a file exported at fixed sizes; ``profile``, its manifest's profile name: where that profile
    fixes them itself (jetson-orin-trt10's tiles), it is named, since dropping --static would change nothing."""
    fix = "export it without --static (any size)"
    if isinstance(profile, str) and profile:
        try:
            from lway_rt.export.profile import load_profile

            if load_profile(profile).shapes.mode == "static":
                fix = (f"export it under a profile of dynamic sizes, such as the default (its profile, {profile}, "
                       "fixes them)")
        except Exception:  # noqa: BLE001 - a profile file gone or changed since: the general advice
            pass
    return ModelError(f"{path.name} was exported for {fixed}: {fix} to run it here")


def spec_from_manifest(path: Path, manifest: dict[str, Any], *, runs_unchecked: bool = True, static_ok: bool = False
                       ) -> tuple[ArchSpec, dict[str, str]]:
    """Check that ``manifest`` describes ``path`` (name, sha256), a passed gate, an SR export with dynamic H/W; returns
    its size rules and scale as an ``ArchSpec`` and what ``upscale`` records of it. ``runs_unchecked``: the caller
    runs a file without a manifest (upscale does, serve-bench does not), so a mismatch may suggest moving it away.
    ``static_ok``: a file exported for fixed tiles is accepted (serve-bench times it at its one shape)."""
    from lway_rt.export.cache import file_sha256
    from lway_rt.export.manifest import manifest_path

    mpath = manifest_path(path)
    artifact, onnx, source = manifest.get("artifact") or {}, manifest.get("onnx") or {}, manifest.get("source") or {}
    if manifest.get("what") != "sr":
        raise _not_sr(path, f"stage 1's {manifest['what']}" if manifest.get("what") else "no SR network its manifest names")
    if artifact.get("sha256") != file_sha256(path):  # the bytes decide: a file renamed with its manifest is the same
        what = f"describes another file than {path.name}" if artifact.get("file") != path.name else \
            f"records another sha256 than {path.name}'s (the file changed since it was exported)"
        raise ModelError(f"{mpath} {what}: re-export with "
                         "'lwayrt export'" + (", or move the manifest away to run the file unchecked" if runs_unchecked
                                             else " (the file is verified against the weights its manifest names)"))
    if manifest.get("ready") is not True:
        why = "failed its parity gate when it was exported" if manifest.get("ready") is False else \
            "has no parity verdict in its manifest"
        raise ModelError(f"{path.name} {why} (see {mpath.name}): re-export it with 'lwayrt export'")
    if onnx.get("dynamic") is not True and not static_ok:
        tile = onnx.get("tile")
        raise _fixed_shape(path, f"fixed {tile[0]}x{tile[1]} tiles" if isinstance(tile, list) and len(tile) == 2
                           else "fixed sizes", manifest["profile"].get("name") if isinstance(manifest.get("profile"), dict)
                           else None)
    try:
        scale, channels = int(source["scale"]), int(onnx["input"]["shape"][1])
        spec = ArchSpec(f"onnx:{source.get('arch', 'unknown')}", dict(source.get("hparams") or {}), scale, channels, channels,
                        int(onnx.get("size_multiple", 1)), int(onnx.get("min_size", 1)), fp16_safe=False,
                        tiling_safe="detail_cap" not in source)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelError(f"{mpath} is incomplete ({type(exc).__name__}: {exc}): re-export with 'lwayrt export'") from None
    meta = {"onnx_precision": str(onnx.get("precision")), "exported_from": str(source.get("model"))}
    if source.get("weights_sha256"):  # the exported weights' tensors: the same network as those weights in PyTorch
        meta["exported_sha256"] = str(source["weights_sha256"])
    if "detail_cap" in source:  # already in the graph: not a cap for upscale to apply again
        meta["exported_detail_cap"] = str(source["detail_cap"].get("cap"))
        meta["exported_base_sha256"] = str(source["detail_cap"].get("base_sha256"))
    return spec, meta


def _probe_spec(module: OnnxSR, path: Path) -> ArchSpec:
    """Scale and size multiple of an ONNX file without a manifest, from two runs on small inputs."""
    shape = module.session.get_inputs()[0].shape
    channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else 3
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):  # a probe of that size would pass
        raise ModelError(f"{path.name} takes {shape[2]}x{shape[3]} inputs only (its height and width are fixed in the "
                         "graph): upscale takes image-to-image networks with any input size (export them with dynamic "
                         "height and width)")
    try:
        y = module(torch.rand(1, channels, 32, 32))
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own error classes
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path.name} does not run on a 1x{channels}x32x32 image ({first}): upscale takes image-to-image "
                         "networks with any input size (export them with dynamic height and width)") from None
    if y.ndim != 4 or y.shape[-1] % 32 or y.shape[-1] != y.shape[-2] or y.shape[-1] < 32:
        raise ModelError(f"{path.name} turns a 32x32 image into {tuple(y.shape)}: not an SR network upscale can use")
    multiple = 1
    try:
        module(torch.rand(1, channels, 33, 33))
    except Exception:  # noqa: BLE001 - pixel-unshuffle networks need sides divisible by 2 or 4
        multiple = 4
    return ArchSpec("onnx", {}, y.shape[-1] // 32, channels, int(y.shape[1]), multiple, multiple, fp16_safe=False)


def load_onnx_model(path: str | Path, *, device: str = "cpu", threads: int | None = None) -> ModelDescriptor:
    """``path`` (an ONNX file) as a ``ModelDescriptor`` whose network runs in ONNX Runtime on ``device``."""
    from lway_rt.export.manifest import find_manifest
    from lway_rt.runtime.ort import ProviderFallbackError, check_onnx_file, create_session

    path = Path(path).expanduser()
    if path.suffix.lower() in ENGINE_SUFFIXES:
        raise ModelError(f"{path.name} is a TensorRT engine, which runs under TensorRT only: pass the .onnx file "
                         "'lwayrt export' wrote beside it")
    check_onnx_file(path)
    manifest = find_manifest(path)
    spec, meta = spec_from_manifest(path, manifest) if manifest is not None else (None, {})
    try:
        session = create_session(path, providers=_providers(device), threads=threads, cpu_advice="use --device cpu")
    except ProviderFallbackError as exc:  # a setting this machine cannot honour, said as the torch models' is, naming
        # the option (57E-1: the API's callers catch InputError for a bad setting)
        raise InputError(f"--device {device} asked for, but {exc}") from None
    module = OnnxSR(session, path).eval()
    if spec is None:
        spec, meta = _spec_without_manifest(module, path)
    return ModelDescriptor(module, spec, name=None, source=str(path), metadata=meta)


def _spec_without_manifest(module: OnnxSR, path: Path) -> tuple[ArchSpec, dict[str, str]]:
    """An ONNX file with no manifest beside it: what it says of itself (``lwayrt export`` writes its scale and size
    rules into the file's metadata), checked against a probe run, else the probe alone (a file exported elsewhere)."""
    import dataclasses

    from lway_rt.export.onnx_export import read_onnx_metadata

    info = read_onnx_metadata(module.session.get_modelmeta().custom_metadata_map or {})
    if info.get("what", "sr") != "sr":
        raise _not_sr(path, f"stage 1's {info['what']}")
    if info.get("shape", "dynamic") != "dynamic":
        raise _fixed_shape(path, f"{info['shape'].replace('static ', 'fixed ')} tiles")
    spec = _probe_spec(module, path)
    if not info:
        return spec, {"onnx_precision": "unknown (no manifest)"}
    try:
        scale, multiple, least = int(info["scale"]), int(info["size_multiple"]), int(info["min_size"])
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{path.name}'s lway_rt metadata is incomplete ({type(exc).__name__}: {exc}): export it again "
                         "with 'lwayrt export'") from None
    if multiple < 1 or least < 1:  # edited by hand: 0 divided by zero in the tiler
        raise ModelError(f"{path.name}'s lway_rt metadata gives size_multiple {multiple} and min_size {least} (each must "
                         "be 1 or more): it was changed after 'lwayrt export' wrote it; export it again")
    if scale != spec.scale:
        raise ModelError(f"{path.name} says it upscales x{scale} but makes x{spec.scale} images: it was changed after "
                         "'lwayrt export' wrote it; export it again")
    spec = dataclasses.replace(spec, arch=f"onnx:{info.get('arch', 'unknown')}", size_multiple=multiple, min_size=least,
                               tiling_safe="detail_cap" not in info)
    meta = {"onnx_precision": info.get("precision", "unknown"), "described_by": "the file's metadata (no manifest)"}
    if info.get("weights_sha256"):
        meta["exported_sha256"] = info["weights_sha256"]
    if "detail_cap" in info:  # already in the graph: not a cap for upscale to apply again
        meta["exported_detail_cap"] = info["detail_cap"]
        meta["exported_base_sha256"] = info.get("detail_cap_base_sha256", "")
    return spec, meta
