"""The serve-bench report schema (JSON Schema vocabulary) and a small checker for it.

``SCHEMA`` is a JSON Schema (draft 2020-12 subset) kept in Python so it ships with the package;
``lwayrt serve-bench --schema`` prints it as JSON for other tools. ``validate_report`` checks a
report with the keywords the schema uses (type, properties, required, additionalProperties,
items, enum, const, minimum, $ref), so no jsonschema dependency is needed; where jsonschema is
installed the tests also check the schema with it. Fields are documented in
``docs/serve-bench-schema.md``. Bump ``SCHEMA_VERSION`` (in ``runner``) when a field changes
meaning or disappears; adding an optional field is a minor bump.
"""

from __future__ import annotations

import math
from typing import Any

from lway_rt.bench.runner import SCHEMA_VERSION
from lway_rt.errors import OutputError, listing

__all__ = ["SCHEMA", "validate", "validate_report", "SchemaError"]

_NUM = {"type": "number"}
_NNUM = {"type": ["number", "null"]}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None, extra: bool = False, nullable: bool = False):
    return {"type": ["object", "null"] if nullable else "object", "properties": props,
            "required": list(props) if required is None else required, "additionalProperties": extra}


# p90 is null below 10 samples, p99 below 100 (they would be the maximum), std and cv with one sample
_STATS = _obj({k: {"type": "number", "minimum": 0} for k in ("mean", "min", "p50", "max", "wall_s", "requests_per_s")}
              | {k: {"type": ["number", "null"], "minimum": 0} for k in ("std", "p90", "p99", "cv")}
              | {"count": {"type": "integer", "minimum": 1}})
_COUNTS = {"type": "array", "items": {"type": "integer", "minimum": 1}}

_PEAK = {"type": "object", "required": ["best"], "properties": {"best": _NUM},
         "additionalProperties": {"type": ["number", "null"]}}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://lway-rt.invalid/schemas/serve-bench.json",
    "title": "lwayrt serve-bench report",
    "$defs": {"stats": _STATS},
    **_obj({
        "schema_version": {"const": SCHEMA_VERSION},
        "tool": {"const": "lwayrt serve-bench"},
        "created_utc": _STR,
        "command": _NSTR,
        "machine": _obj({
            "hostname": _STR, "os": _STR, "python": _STR, "cpu_model": _STR,
            "cpu_flags": {"type": "array", "items": _STR},
            "logical_cores": {"type": ["integer", "null"]}, "usable_cores": {"type": ["integer", "null"]},
            "memory_gb": _NNUM,
            "gpus": {"type": "array", "items": _obj({"name": _STR, "compute_capability": _STR, "memory_mb": _INT,
                                                     "driver": _NSTR, "cuda_runtime": _NSTR})},
            "load_average_start": {"type": "array", "items": _NUM},
            "load_average_end": {"type": "array", "items": _NUM},
        }),
        "packages": {"type": "object", "additionalProperties": _NSTR, "required": ["lway_rt", "torch"]},
        "model": _obj({"spec": _STR, "name": _NSTR, "arch": _STR, "scale": _INT, "params": _INT,
                       "hparams": {"type": "object"}, "source": _NSTR, "source_sha256": _NSTR, "weights_sha256": _STR,
                       "detail_cap": _obj({"cap": _NUM, "base_model": _NSTR, "base_sha256": _STR}, nullable=True),
                       "onnx": _obj({"file": _STR, "sha256": _STR, "precision": {"enum": ["fp32", "fp16"]}}, nullable=True)},
                      required=["spec", "name", "arch", "scale", "params", "hparams", "source", "source_sha256"]),
        "settings": {"type": "object", "additionalProperties": True,
                     "required": ["model", "backends", "sizes", "batches", "tiles", "tile_overlap", "concurrency",
                                  "device", "threads", "timing", "min_psnr", "min_psnr_db", "tiled_min_psnr_db",
                                  "measure_peak", "detail_cap", "base_model", "input_source", "seed", "flops_counted",
                                  "reference_device"],
                     "properties": {"model": _STR, "threads": {"type": "integer", "minimum": 1},
                                    "min_psnr": _NNUM,
                                    "min_psnr_db": {"type": "object", "required": ["fp32", "fp16", "bf16"],
                                                    "additionalProperties": _NUM},
                                    "tiled_min_psnr_db": _NUM, "measure_peak": {"type": "boolean"},
                                    "detail_cap": _STR, "base_model": _NSTR, "input_source": _STR, "seed": _INT,
                                    "flops_counted": _STR, "reference_device": {"enum": ["cpu", "cuda"]},
                                    "backends": {"type": "array", "items": _STR},
                                    "sizes": {"type": "array", "items": {"type": "array", "items": {
                                        "type": "integer", "minimum": 1}}},
                                    "batches": _COUNTS, "concurrency": _COUNTS,
                                    "tiles": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                                    "tile_overlap": {"type": "integer", "minimum": 0},
                                    "device": {"enum": ["cpu", "cuda"]},
                                    "timing": _obj({k: {"type": "number", "minimum": 0} for k in (
                                        "warmup_s", "warmup_iters", "min_iters", "min_time_s", "max_iters",
                                        "max_time_s", "rounds")})}},
        "peak_gflops": {"type": "object", "additionalProperties": _obj(
            {"start": _PEAK, "end": {"anyOf": [_PEAK, {"type": "null"}]}, "best": _NUM, "samples": {"type": "integer", "minimum": 1},
             "threads": {"type": ["integer", "null"]}})},
        "results": {"type": "array", "items": _obj({
            "backend": _STR,
            "kind": {"enum": ["torch", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt"]},
            "device": {"enum": ["cpu", "cuda"]},
            "precision": {"enum": ["fp32", "fp16", "bf16"]},
            "options": {"type": "object"},
            "status": {"enum": ["ok", "failed", "skipped", "error"]},
            "reason": _NSTR,
            "note": _NSTR,
            "verified": {"type": "boolean"},
            "verification": _obj({"psnr_db": _NNUM, "max_abs_err": _NNUM, "min_psnr_db": _NUM, "finite": {"type": "boolean"}},
                                 nullable=True),
            "input": _obj({"batch": {"type": "integer", "minimum": 1}, "height": {"type": "integer", "minimum": 1},
                           "width": {"type": "integer", "minimum": 1}}, nullable=True),
            "output": _obj({"height": _INT, "width": _INT}, nullable=True),
            "tile": {"type": ["integer", "null"], "minimum": 0},
            "tile_overlap": {"type": ["integer", "null"], "minimum": 0},
            "concurrency": {"type": ["integer", "null"], "minimum": 1},
            "load_s": _NNUM, "export_s": _NNUM,
            "providers": {"type": ["array", "null"], "items": _STR},
            "fell_back": {"type": "boolean"},
            "warmup": _obj({"iterations": _INT, "seconds": _NUM}, nullable=True),
            "latency_ms": {"anyOf": [{"$ref": "#/$defs/stats"}, {"type": "null"}]},
            "compute_ms": {"anyOf": [{"type": "null"}, {
                "type": "object", "required": ["p50", "method"], "additionalProperties": True,
                "properties": {"p50": _NUM, "method": {"enum": ["cuda_events", "iobinding_wall"]}}}]},
            "images_per_s": _NNUM, "output_mp_per_s": _NNUM,
            "flops_per_image": {"type": ["integer", "null"], "minimum": 0},
            "achieved_gflops": _NNUM, "peak_fraction": _NNUM,
            "memory": _obj({"rss_mb": _NNUM, "rss_peak_mb": _NNUM, "rss_peak_above_start_mb": _NNUM, "rss_peak_scope": {"enum": ["configuration", "process"]},
                            "load_rss_delta_mb": _NNUM, "cuda_peak_allocated_mb": _NNUM, "cuda_used_mb": _NNUM},
                           nullable=True),
        })},
        "summary": _obj({k: {"type": "integer", "minimum": 0} for k in ("ok", "failed", "skipped", "error")}),
    }),
}


class SchemaError(OutputError):
    """A report does not match the schema (a bug in the producer, or a hand-edited file)."""


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _errors(value: Any, schema: dict[str, Any], path: str, root: dict[str, Any]) -> list[str]:
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/"):
            raise ValueError(f"unsupported $ref {ref}")
        return _errors(value, root["$defs"][ref.removeprefix("#/$defs/")], path, root)
    if "anyOf" in schema:
        branches = [_errors(value, s, path, root) for s in schema["anyOf"]]
        if all(branches):
            return [f"{path}: matches none of the allowed forms ({'; '.join(b[0] for b in branches)})"]
        return []
    if "const" in schema and value != schema["const"]:
        return [f"{path}: must be {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(_is_type(value, t) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {type(value).__name__}"]
    errs: list[str] = []
    if isinstance(value, float) and not math.isfinite(value):  # (json.dumps(allow_nan=False) would fail on it later)
        return [f"{path}: {value} is not a finite number"]
    if "minimum" in schema and _is_type(value, "number") and value < schema["minimum"]:
        errs.append(f"{path}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errs.append(f"{path}: missing required field '{key}'")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            sub = f"{path}.{key}"
            if key in props:
                errs += _errors(item, props[key], sub, root)
            elif extra is False:
                errs.append(f"{path}: unexpected field '{key}'")
            elif isinstance(extra, dict):
                errs += _errors(item, extra, sub, root)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errs += _errors(item, schema["items"], f"{path}[{i}]", root)
    return errs


def validate(instance: Any, schema: dict[str, Any] | None = None) -> list[str]:
    """All schema violations of ``instance`` as readable strings (empty: valid); for a report (``SCHEMA``), also the
    rules that tie fields together, which docs/serve-bench-schema.md states."""
    errs = _errors(instance, SCHEMA if schema is None else schema, "$", SCHEMA if schema is None else schema)
    if schema is None and not errs and isinstance(instance, dict):
        errs = _rules(instance)
    return errs


def _rules(report: dict[str, Any]) -> list[str]:
    """The report's rules across fields: an ok row is verified and timed, any other says why; p90 / p99 are null
    below 10 / 100 requests, std and cv with one; the summary counts the rows by status."""
    errs: list[str] = []
    counts = {k: 0 for k in ("ok", "failed", "skipped", "error")}
    for i, row in enumerate(report.get("results", [])):
        where, status = f"$.results[{i}]", row.get("status")
        counts[status] = counts.get(status, 0) + 1
        if status == "ok" and (not row.get("verified") or row.get("latency_ms") is None):
            errs.append(f"{where}: an ok row must be verified and timed (latency_ms)")
        if status != "ok" and not row.get("reason"):
            errs.append(f"{where}: a {status} row must give its reason")
        stats = row.get("latency_ms") or {}
        n = stats.get("count")
        for key, least in (("p90", 10), ("p99", 100), ("std", 2), ("cv", 2)):
            if isinstance(n, int) and n < least and stats.get(key) is not None:
                errs.append(f"{where}.latency_ms.{key}: must be null with {n} request(s) (fewer than {least})")
    if isinstance(report.get("summary"), dict) and report["summary"] != counts:
        errs.append(f"$.summary: {report['summary']} does not count the results' statuses {counts}")
    return errs


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``SchemaError`` listing the first violations, if ``report`` does not match ``SCHEMA``."""
    errs = validate(report)
    if errs:
        raise SchemaError(f"serve-bench report does not match schema {SCHEMA_VERSION}: {listing(errs, 5, '; ')}")
