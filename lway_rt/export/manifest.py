"""Manifests: the JSON written beside every exported artifact.

A manifest says where the artifact came from (model, weights hash, architecture), how it was made
(opset, precision, shapes, profile, package versions), what the parity gate measured, the cache
key, and whether the artifact is ``ready``. Only a manifest with ``ready: true`` whose cache key
and file hash match lets the artifact be reused or deployed; a failed gate writes ``ready:
false`` with the numbers, and the artifact itself is not left under its final name.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

from lway_rt.errors import InputError

__all__ = ["FORMAT", "manifest_path", "write_manifest", "read_manifest", "find_manifest", "ready_artifact"]

FORMAT = "lway_rt.export/1"


def manifest_path(artifact: str | Path) -> Path:
    """``x.onnx`` -> ``x.json``; ``x.engine`` -> ``x.json``."""
    return Path(artifact).with_suffix(".json")


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN/infinite float as None: JSON has no infinity (Python wrote ``Infinity``, which other
    readers refuse). A parity case keeps ``finite`` and ``passed`` beside its value, so nothing is lost."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_manifest(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as a manifest: strict JSON, a number that is not finite written as null. A link of its name is
    replaced, as the exported file beside it replaces its own (written through, it changed a file outside ``-o``)."""
    from lway_rt.io.weights import atomic_write_bytes

    body = _json_safe({"format": FORMAT, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       **data})
    text = json.dumps(body, indent=2, sort_keys=False, default=str, allow_nan=False)
    atomic_write_bytes(Path(path), (text + "\n").encode(), through_links=False)
    return Path(path)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"manifest {path} is unreadable ({exc}); export again") from exc


def _is_manifest(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == FORMAT


def read_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist: the artifact was not made by 'lwayrt export' (or was moved "
                         "without its .json)")
    data = _load(path)
    if not _is_manifest(data):
        raise InputError(f"{path} is not an lway_rt export manifest (format {data.get('format') if isinstance(data, dict) else None!r})")
    return data


def find_manifest(artifact: str | Path) -> dict[str, Any] | None:
    """The manifest beside ``artifact``, or None when there is none (no .json, or a .json that is not an lway_rt
    export manifest: a file exported elsewhere); an unreadable one is an error."""
    path = manifest_path(artifact)
    if not path.is_file():
        return None
    data = _load(path)
    return data if _is_manifest(data) else None


def ready_artifact(artifact: str | Path, key: str) -> dict[str, Any] | None:
    """The manifest if ``artifact`` is a ready, intact export for cache key ``key``; else None.

    Anything off (missing file, unreadable or foreign manifest, other key, not ready, file hash
    changed since it was written) is a cache miss, never an error: the artifact is rebuilt.
    """
    from lway_rt.export.cache import file_sha256

    artifact = Path(artifact)
    try:
        data = read_manifest(manifest_path(artifact))
    except InputError:
        return None
    if not data.get("ready") or data.get("cache_key") != key or not artifact.is_file():
        return None
    if data.get("artifact", {}).get("sha256") != file_sha256(artifact):
        return None
    return data
