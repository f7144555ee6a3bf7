"""fp32 ONNX -> fp16 ONNX with fp32 inputs and outputs: a small, explicit conversion pass.

Why our own pass: TensorRT 11 removed the FP16 builder flag (networks are strongly typed, the
precision is whatever the ONNX graph says), so the fp16 graph must be made before the engine is
built. The idea follows onnxconverter-common's ``float16`` converter (MIT), reduced to what SR and
encoder graphs need and written anew:

* every float32 tensor computed inside the graph becomes float16, and float32 weights are
  rounded to float16 (clamped to the fp16 range: an out-of-range weight becomes +-65504, not inf);
* the graph's inputs and outputs stay float32: a ``Cast`` follows each input and precedes each
  output, so callers feed and receive the same arrays as with the fp32 model;
* "kept" nodes run in float32 with ``Cast`` nodes around them: by default the Resize-type ops
  (their scales/ROI inputs are float and nearest/linear sampling coordinates lose accuracy in
  fp16), plus any node whose name or torch module path matches ``keep_fp32_nodes``
  (``fnmatch`` patterns such as ``conv_last`` or ``body.0.*``);
* attributes that fix a float type inside an fp16 region (``Cast(to=FLOAT)``, float
  ``Constant``/``ConstantOfShape`` values) are switched to float16.

Weights read only by kept nodes stay float32. The result is re-checked with ``onnx.checker``.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["convert_to_fp16", "DEFAULT_KEEP_FP32_OPS", "node_module_paths", "fp16_summary", "matched_patterns"]

DEFAULT_KEEP_FP32_OPS = ("Resize", "Upsample", "GridSample", "AffineGrid", "RoiAlign")
_FP16_MAX = float(np.finfo(np.float16).max)


def node_module_paths(node) -> list[str]:
    """The torch module paths a node came from (dynamo exporter metadata), e.g. ``['body', 'body.0']``."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [s for s in ast.literal_eval(prop.value) if s]
            except (ValueError, SyntaxError):
                return []
    return []


def _matching(names: Iterable[str], patterns: Iterable[str]) -> set[str]:
    """The patterns that match one of a node's ``names`` (its name and module paths)."""
    names = [n for n in names if n]
    return {p for p in patterns if any(fnmatch.fnmatchcase(n, p) for n in names)}


def _matches(node, patterns: Iterable[str]) -> bool:
    return bool(_matching([node.name, *node_module_paths(node)], patterns))


def matched_patterns(model, patterns: Iterable[str]) -> tuple[set[str], list[str]]:
    """Which of ``patterns`` match a node of ``model``, and the graph's top-level module paths (for a hint)."""
    patterns = tuple(patterns)
    matched: set[str] = set()
    tops: dict[str, None] = {}
    for node in model.graph.node:
        scopes = node_module_paths(node)
        if scopes and not re.search(r"_\d+$", scopes[0]):  # not a numbered functional op such as add_185
            tops.setdefault(scopes[0].split(".")[0], None)
        matched |= _matching([node.name, *scopes], [p for p in patterns if p not in matched])
    return matched, list(tops)


def _float_tensor_names(model) -> set[str]:
    """Names of every float32 tensor in the graph, from shape inference plus initializers and Constants."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=False)
    g = inferred.graph
    floats = set()
    for vi in [*g.input, *g.output, *g.value_info]:
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            floats.add(vi.name)
    for init in g.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            floats.add(init.name)
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT:
                    floats.update(node.output)
    return floats


#: inputs that take float32 whatever the precision of the node's data (ONNX: Resize's ``scales``, Upsample's)
_FLOAT_ONLY_INPUTS = {"Resize": (2,), "Upsample": (1,)}


def _to_fp16_tensor(t):
    from onnx import numpy_helper

    arr = numpy_helper.to_array(t).astype(np.float32)
    arr16 = np.clip(arr, -_FP16_MAX, _FP16_MAX).astype(np.float16)
    return numpy_helper.from_array(arr16, t.name)


def convert_to_fp16(model, *, keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS,
                    keep_fp32_nodes: Iterable[str] = ()):
    """Return a new ``onnx.ModelProto``: float16 compute, float32 I/O, kept ops/nodes in float32.

    ``model`` is an fp32 ``ModelProto`` (not modified). Subgraphs (If/Loop bodies) are not
    converted: SR and encoder graphs have none, and a graph that has them is refused.
    """
    import onnx
    from onnx import TensorProto, helper

    keep_ops = set(keep_fp32_ops)
    keep_patterns = tuple(keep_fp32_nodes)
    src = model
    for node in src.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"node {node.name} ({node.op_type}) has a subgraph; fp16 conversion handles flat graphs only")
    floats = _float_tensor_names(src)

    out = onnx.ModelProto()
    out.CopyFrom(src)
    g = out.graph
    del g.value_info[:]  # element types change; shape inference re-derives them

    graph_inputs = {i.name for i in g.input}
    graph_outputs = [o.name for o in g.output]
    inits = {i.name: i for i in g.initializer}

    # Which nodes stay fp32. A Constant feeding only fp32 inputs is kept too (its value stays fp32).
    consumers: dict[str, list[tuple[int, int]]] = {}  # tensor -> (node, input position) reading it
    for idx, node in enumerate(g.node):
        for j, name in enumerate(node.input):
            if name:
                consumers.setdefault(name, []).append((idx, j))
    kept = {idx for idx, n in enumerate(g.node) if n.op_type in keep_ops or (keep_patterns and _matches(n, keep_patterns))}

    def reads_fp32(idx: int, j: int) -> bool:
        """Input ``j`` of node ``idx`` takes fp32: the node is kept, or the input is float-only (Resize's scales)."""
        return idx in kept or j in _FLOAT_ONLY_INPUTS.get(g.node[idx].op_type, ())

    for idx, node in enumerate(g.node):
        if node.op_type == "Constant" and node.output and consumers.get(node.output[0]):
            if all(reads_fp32(c, j) for c, j in consumers[node.output[0]]):
                kept.add(idx)

    # dtype of each float tensor after conversion: fp32 if made by a kept node, a graph input or a
    # weight read only by kept nodes; fp16 otherwise.
    producer = {o: idx for idx, n in enumerate(g.node) for o in n.output}
    dtype: dict[str, int] = {}
    for name in floats:
        if name in graph_inputs:
            dtype[name] = TensorProto.FLOAT
        elif name in inits:
            users = consumers.get(name, [])
            dtype[name] = TensorProto.FLOAT if users and all(reads_fp32(u, j) for u, j in users) else TensorProto.FLOAT16
        elif name in producer:
            dtype[name] = TensorProto.FLOAT if producer[name] in kept else TensorProto.FLOAT16

    # Weights.
    for i, init in enumerate(g.initializer):
        if dtype.get(init.name) == TensorProto.FLOAT16:
            g.initializer[i].CopyFrom(_to_fp16_tensor(init))

    # Attributes that pin a float type inside fp16 nodes.
    for idx, node in enumerate(g.node):
        if idx in kept:
            continue
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
            elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(_to_fp16_tensor(attr.t))

    # Insert casts where a node reads a float tensor of the other precision.
    new_nodes: list[Any] = []
    cast_cache: dict[tuple[str, int], str] = {}
    suffix = {TensorProto.FLOAT16: "fp16", TensorProto.FLOAT: "fp32"}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_cache:
            new = f"{name}__to_{suffix[to]}"
            new_nodes.append(helper.make_node("Cast", [name], [new], name=f"cast_{new}", to=to))
            cast_cache[key] = new
        return cast_cache[key]

    body: list[Any] = []
    for idx, node in enumerate(g.node):
        # Cast's own input keeps its type: the op converts whatever it gets.
        if node.op_type != "Cast":
            for j, name in enumerate(node.input):
                want = TensorProto.FLOAT if reads_fp32(idx, j) else TensorProto.FLOAT16
                have = dtype.get(name)
                if name and have is not None and have != want:
                    node.input[j] = cast(name, want)
        body.extend(new_nodes)
        new_nodes.clear()
        body.append(node)

    # Graph outputs stay fp32: rename the fp16 tensor and cast it back under the output's name.
    tail = []
    for name in graph_outputs:
        if dtype.get(name) == TensorProto.FLOAT16:
            inner = f"{name}__fp16"
            for node in body:
                for j, n in enumerate(node.output):
                    if n == name:
                        node.output[j] = inner
                for j, n in enumerate(node.input):
                    if n == name:
                        node.input[j] = inner
            tail.append(helper.make_node("Cast", [inner], [name], name=f"cast_{name}_to_fp32", to=TensorProto.FLOAT))
    del g.node[:]
    g.node.extend(body + tail)

    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    onnx.checker.check_model(out)
    return out


def fp16_summary(model) -> dict[str, int]:
    """Counts that show what a conversion did: fp16/fp32 weights and the nodes left in fp32."""
    from onnx import TensorProto

    g = model.graph
    casts = [n for n in g.node if n.op_type == "Cast"]
    return {
        "fp16_initializers": sum(i.data_type == TensorProto.FLOAT16 for i in g.initializer),
        "fp32_initializers": sum(i.data_type == TensorProto.FLOAT for i in g.initializer),
        "casts": len(casts),
        "nodes": len(g.node),
    }
