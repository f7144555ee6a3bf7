"""``lwayrt models info``: what a model is, read from its file: the network and its scale, the sizes it takes, where
its weights came from (a packaged conversion, a file the user added, an ``lwayrt adapt`` run and its base), and the
weights hash that export manifests and exported ONNX files record (and the engine cache keys), so a user can tell
which weights an exported file holds before running anything.

It takes whatever ``-m`` takes: a store name, a weights file, an adapt run's folder, a per-group adaptation folder
(each group's model), an exported ``.onnx``. The model is loaded as ``-m`` loads it (every check that makes), so a
damaged file is refused here as it is there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lway_rt.runtime.onnx_model import ENGINE_SUFFIXES, ONNX_SUFFIX

__all__ = ["describe", "format_info"]


def _network(spec) -> str:
    """``SRVGGNetCompact x4, 16 convs, 64 features, prelu`` from an ``ArchSpec``'s hyperparameters."""
    hp = spec.hparams
    parts = [f"{spec.arch} x{spec.scale}"]
    if "num_block" in hp:
        parts.append(f"{hp['num_block']} blocks, {hp.get('num_feat')} features, growth {hp.get('num_grow_ch')}")
    elif "num_conv" in hp:
        parts.append(f"{hp['num_conv']} convs, {hp.get('num_feat')} features, {hp.get('act_type')}")
    return ", ".join(parts) + f"; {_channels(spec.in_channels)}"


def _channels(n: int) -> str:
    return {1: "grey (1 channel: it sharpens a colour image's luminance)", 3: "RGB"}.get(
        n, f"{n} channels (lwayrt upscale runs only RGB and grey networks: export it for a runtime of your own)")


def _sizes(spec) -> str:
    if spec.size_multiple <= 1 and spec.min_size <= 1:
        return "any size"
    multiple = f"sides a multiple of {spec.size_multiple}, " if spec.size_multiple > 1 else ""
    return f"{multiple}at least {spec.min_size} px a side (upscale pads smaller or other sizes)"


def _origin(meta: dict[str, str]) -> str:
    """Where the weights came from, as their file's metadata records it."""
    if meta.get("adapted_sha256"):
        try:
            inputs = len(json.loads(meta.get("inputs", "[]")))
        except ValueError:
            inputs = None
        try:
            loss = json.loads(meta.get("recipe", "{}")).get("loss")
        except (ValueError, AttributeError):
            loss = None
        base = meta.get("base_model") or "?"
        said = [f"lwayrt adapt of {base} (weights sha256 {meta.get('base_sha256', '?')[:12]}...)"]
        if inputs is not None:
            said.append(f"on {inputs} image(s)")
        if meta.get("iterations"):
            said.append(f"{meta['iterations']} iterations")
        if loss:
            said.append(f"{loss} loss")
        if meta.get("detail_cap"):
            said.append(f"detail cap {float(meta['detail_cap']):g} (upscale applies it)")
        return ", ".join(said)
    if meta.get("source_package"):
        version = f" {meta['source_version']}" if meta.get("source_version") else ""
        return f"converted from the package {meta['source_package']}{version} ('lwayrt models import')"
    if meta.get("added_from"):
        gone = "" if Path(meta["added_from"]).exists() else ", which is gone"
        return f"added from {meta['added_from']}{gone} ('lwayrt models add')"
    return "a weights file with no lway_rt record of where it came from"


def _weights_info(spec_given: str, desc) -> dict[str, Any]:
    from lway_rt.io.store import store_path
    from lway_rt.io.weights import state_dict_sha256

    meta = dict(desc.metadata or {})
    source = Path(desc.source) if desc.source else None
    stored = bool(desc.name and source is not None and source == store_path(desc.name))
    return {
        "model": spec_given,
        "kind": "adapted" if meta.get("adapted_sha256") else "packaged" if meta.get("source_package")
        else "added" if meta.get("added_from") else "file",
        "name": desc.name if stored else None,
        "file": str(source.absolute()) if source else None,
        "file_bytes": source.stat().st_size if source and source.is_file() else None,
        "arch": desc.arch,
        "scale": desc.scale,
        "hparams": dict(desc.spec.hparams),
        "in_channels": desc.spec.in_channels,
        "size_multiple": desc.size_multiple,
        "min_size": desc.min_size,
        "parameters": sum(int(p.numel()) for p in desc.model.parameters()),
        "weights_sha256": state_dict_sha256(desc.model.state_dict()),
        "origin": _origin(meta),
        "network": _network(desc.spec),
        "sizes": _sizes(desc.spec),
        "metadata": meta,
    }


def _exported_info(spec_given: str, path: Path, manifest: dict) -> dict[str, Any]:
    """An export ``lwayrt upscale`` does not run (fixed-size tiles, a TensorRT engine), from its manifest, once the file
    is checked to be the one the manifest describes (a cut or changed file was described as sound: 56G1)."""
    from lway_rt.errors import ModelError
    from lway_rt.export.cache import file_sha256

    recorded = (manifest.get("artifact") or {}).get("sha256")
    if not recorded:  # (nothing compared: not said to differ, 56I-4)
        raise ModelError(f"{path.stem}.json records no sha256 of {path.name}, so nothing says the file is the one it "
                         "describes: export it again")
    if recorded != file_sha256(path):
        raise ModelError(f"{path.name} is not the file its manifest {path.stem}.json describes (its sha256 differs: "
                         "changed or damaged since it was exported): export it again")
    source = manifest.get("source") or {}
    sha = source.get("weights_sha256")
    what = manifest.get("what", "sr")
    shapes = manifest.get("shapes") or {}
    engine = path.suffix.lower() in ENGINE_SUFFIXES
    cap = (source.get("detail_cap") or {}).get("cap") if isinstance(source.get("detail_cap"), dict) else None
    named = source.get("model") or (f"the stage-1 checkpoint {source['stage1']}" if source.get("stage1") else
                                    "the shipped stage-1 checkpoint" if what == "encoder" else "weights")
    origin = (f"exported by lwayrt export from {named} (weights sha256 {sha})" if sha else
              "exported by lwayrt export (its manifest records no weights hash)")
    if cap is not None:
        origin += f"; detail cap {float(cap):g} inside the graph"
    static = shapes.get("mode") == "static"
    tiles = ", ".join(map(str, shapes.get("tiles") or ())) or "?"
    kind = "a TensorRT engine (runs under TensorRT only; upscale runs the .onnx beside it)" if engine else \
        f"fixed-size tiles, {tiles} (upscale runs dynamic exports only)" if static else "an export upscale does not run"
    if what == "encoder":  # stage 1's E: no scale, and no -m takes it (56I-2, 56I-3)
        kind = "stage 1's degradation encoder (an image in, its embedding out): no SR network, no -m takes it" + (
            f"; fixed-size tiles, {tiles}" if static else "")
    sizes = f"fixed tiles {tiles} px (H x W)" if static else \
        f"{shapes['min'][1]} to {shapes['max'][1]} px a side" if shapes.get("min") and shapes.get("max") else \
        "as its manifest records"
    return {
        "model": spec_given, "kind": "engine" if engine else "onnx", "name": None, "file": str(path.absolute()),
        "file_bytes": path.stat().st_size, "arch": source.get("arch"), "scale": source.get("scale"), "hparams":
        source.get("hparams"), "in_channels": None, "size_multiple": None, "min_size": None, "parameters": None,
        "weights_sha256": sha, "precision": (manifest.get("profile") or {}).get("precision"), "origin": origin,
        "network": f"{source.get('arch') or what}" + (f" x{source['scale']}" if source.get("scale") else "") + f": {kind}",
        "sizes": sizes, "metadata": {"manifest": manifest},
    }


def _onnx_info(spec_given: str, path: Path) -> dict[str, Any]:
    from lway_rt.errors import ModelError
    from lway_rt.export.manifest import find_manifest
    from lway_rt.runtime.onnx_model import load_onnx_model

    if not path.exists():
        raise ModelError(f"{path} does not exist" + (": export one with 'lwayrt export'" if path.suffix.lower() ==
                                                     ONNX_SUFFIX else ""))
    manifest = find_manifest(path)
    if path.suffix.lower() in ENGINE_SUFFIXES and manifest is None:
        raise ModelError(f"{path.name} is a TensorRT engine with no manifest beside it ({path.stem}.json): models "
                         "info reads what lwayrt export recorded of it")
    if manifest is not None and (path.suffix.lower() in ENGINE_SUFFIXES or (manifest.get("shapes") or {}).get("mode")
                                 == "static" or manifest.get("what", "sr") != "sr"):  # (upscale runs none of these
        return _exported_info(spec_given, path, manifest)  # exports: their manifests still say what they hold)
    desc = load_onnx_model(path)
    meta = dict(desc.metadata or {})
    sha = meta.get("exported_sha256")
    cap = meta.get("exported_detail_cap")
    origin = ("exported by lwayrt export from weights of sha256 " + sha if sha else
              "an ONNX file with no lway_rt record of the weights it holds")
    if cap:
        origin += f"; detail cap {float(cap):g} inside the graph"
    arch = desc.arch.removeprefix("onnx:")
    probed = meta.get("onnx_precision") == "unknown (no manifest)"  # (a file exported elsewhere: probed, 56D-5)
    return {
        "model": spec_given, "kind": "onnx", "name": None, "file": str(path.absolute()),
        "file_bytes": path.stat().st_size, "arch": arch, "scale": desc.scale, "hparams": None,
        "in_channels": desc.spec.in_channels, "size_multiple": desc.size_multiple, "min_size": desc.min_size,
        "parameters": None, "weights_sha256": sha, "precision": meta.get("onnx_precision"),
        "origin": origin, "network": f"{arch} x{desc.scale}, exported ONNX ({meta.get('onnx_precision', '?')}); "
                   f"{_channels(desc.spec.in_channels)}",
        "sizes": _sizes(desc.spec) + (" (found by a probe run: the file records no size rule)" if probed else ""),
        "metadata": meta,
    }


def describe(spec: str) -> dict[str, Any]:
    """What ``-m spec`` would run, as a JSON-able dict (``format_info`` prints it); a per-group adaptation folder gives
    ``kind: "per-group"`` and one such dict per group under ``groups``."""
    from lway_rt.adapt.loop import WEIGHTS
    from lway_rt.errors import ModelError
    from lway_rt.io.store import load_model
    from lway_rt.upscale import per_group_record

    found = per_group_record(spec)
    if found is not None:
        folder, record = found
        groups = []
        for name, members in record["members"].items():
            weights = folder / str(name) / WEIGHTS
            if not weights.is_file():
                raise ModelError(f"{folder}: group {name} is not adapted yet (no {WEIGHTS}): finish the run with "
                                 "'lwayrt adapt ... --resume'")
            info = describe(str(weights))
            info["group"], info["images"] = str(name), len(members)
            groups.append(info)
        stage1 = (record.get("routing") or {}).get("stage1") or "shipped"
        return {"model": spec, "kind": "per-group", "folder": str(folder.absolute()), "stage1": stage1,
                "groups": groups}
    path = Path(spec).expanduser()
    if path.suffix.lower() in (ONNX_SUFFIX, *ENGINE_SUFFIXES):  # a file, as upscale takes -m X.onnx (a store entry so
        return _onnx_info(spec, path)  # named, from before such names were refused, is not what upscale runs: 56D-1)
    return _weights_info(spec, load_model(spec))


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def format_info(info: dict[str, Any]) -> str:
    """The lines ``lwayrt models info`` prints for ``describe``'s dict."""
    if info["kind"] == "per-group":
        n = len(info["groups"])
        lines = [f"{info['model']}: a per-group adaptation ({n} group{'s' if n != 1 else ''}; upscale -m sends each image "
                 f"to its group's model; stage 1: {info['stage1']})"]
        for g in info["groups"]:
            body = format_info(g).splitlines()
            lines.append(f"{g['group']} ({g['images']} image(s)): {body[0]}")
            lines.extend("  " + line for line in body[1:])
        return "\n".join(lines)
    where = f"store name {info['name']}, " if info["name"] else ""
    rows = [("network", info["network"]),
            ("sizes", info["sizes"]),
            ("weights", (f"{info['parameters']:,} parameters, " if info["parameters"] is not None else "") +
             (f"sha256 {info['weights_sha256']}" if info["weights_sha256"] else "no recorded hash")),
            ("origin", info["origin"])]
    width = max(len(k) for k, _ in rows)
    head = f"{info['file']} ({where}{_size(info['file_bytes'])})"
    return "\n".join([head] + [f"  {k + ':':<{width + 1}} {v}" for k, v in rows])
