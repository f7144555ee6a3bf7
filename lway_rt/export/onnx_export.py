"""torch -> ONNX as small, lazily evaluated stages (the Polygraphy loader pattern).

Each stage is a callable object that does nothing until called, and takes the previous stage (or
a ready value) as its input, so steps compose and can be tested one at a time::

    model = OnnxFromTorch(desc.model, dynamic=True, size_multiple=desc.size_multiple)
    SaveOnnx(Fp16FromOnnx(model), "engines/x.fp16.onnx")()

``OnnxFromTorch`` uses the dynamo exporter (``torch.export`` + onnxscript) with
``torch.export.Dim(...) * k`` for "H and W a multiple of k", the onnxscript optimiser (constant
folding, dead-code removal) and ``onnx.checker``. Graph input ``input`` and output ``output`` are
NCHW float32 RGB in [0, 1].

``export_onnx`` is the one-call version for other parts of the project (benchmarks, tests).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lway_rt.errors import InputError, ModelError, MissingDependencyError, ParityError

__all__ = [
    "OnnxFromTorch", "Memo", "Fp16FromOnnx", "DescribeOnnx", "read_onnx_metadata", "SaveOnnx", "LoadOnnx", "export_onnx", "onnx_initializers",
    "INPUT_NAME", "OUTPUT_NAME", "MAX_SIDE",
]

INPUT_NAME = "input"
OUTPUT_NAME = "output"
MAX_SIDE = 16384  # upper bound of the symbolic H/W (TensorRT profiles narrow it further)
MAX_BATCH = 256


def _onnx(feature: str = "ONNX export"):
    for module in ("onnx", "onnxscript"):  # (onnxscript: the dynamo exporter's; the missing one is named, 56B8)
        try:
            __import__(module)
        except ImportError as exc:
            raise MissingDependencyError(module, "onnx", feature, "keep using the torch backend") from exc
    import onnx

    return onnx


def _resolve(value_or_loader):
    """Polygraphy's ``invoke_if_callable``: stages accept a value or a stage that makes it."""
    return value_or_loader() if callable(value_or_loader) else value_or_loader


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress and warns about torchvision ops we never use: keep the console clean."""
    names = ["torch.onnx._internal.exporter._registration", "torch.onnx", "torch.export", "torch._dynamo",
             "onnxscript.version_converter"]
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)



def _interrupted(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt lies in ``exc``'s chain of causes (torch.onnx.export re-raises it as its own error)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False

class OnnxFromTorch:
    """Export an image->tensor ``nn.Module`` to an fp32 ``onnx.ModelProto``.

    ``dynamic``: symbolic batch and H/W (H, W multiples of ``size_multiple``, at least
    ``min_size``); otherwise fixed at ``static_shape`` = (batch, H, W).
    """

    def __init__(self, module: nn.Module, *, in_channels: int = 3, dynamic: bool = True,
                 static_shape: tuple[int, int, int] | None = None, size_multiple: int = 1, min_size: int = 1,
                 opset: int = 18, dynamic_batch: bool = True):
        if not dynamic and static_shape is None:
            raise InputError("a static export needs a shape (batch, height, width)")
        if size_multiple < 1 or min_size < 1:
            raise InputError("size_multiple and min_size must be >= 1")
        self.module = module
        self.in_channels = in_channels
        self.dynamic = dynamic
        self.static_shape = static_shape
        self.size_multiple = size_multiple
        self.min_size = min_size
        self.opset = opset
        self.dynamic_batch = dynamic_batch

    def example_shape(self) -> tuple[int, int, int, int]:
        if not self.dynamic:
            b, h, w = self.static_shape  # type: ignore[misc]
            return (b, self.in_channels, h, w)
        k = self.size_multiple
        # Distinct, non-trivial sizes so nothing gets specialised to 1 or to H == W.
        h = k * max(math.ceil(max(self.min_size, 24) / k), 2)
        w = h + k * max(1, math.ceil(8 / k))
        return (2 if self.dynamic_batch else 1, self.in_channels, h, w)

    def _dynamic_shapes(self) -> dict[str, Any]:
        from torch.export import Dim

        k = self.size_multiple
        lo = max(1, math.ceil(self.min_size / k))
        hi = MAX_SIDE // k
        if k == 1:
            h, w = Dim("height", min=lo, max=hi), Dim("width", min=lo, max=hi)
        else:
            h, w = Dim("height_blocks", min=lo, max=hi) * k, Dim("width_blocks", min=lo, max=hi) * k
        spec: dict[int, Any] = {2: h, 3: w}
        if self.dynamic_batch:
            spec[0] = Dim("batch", min=1, max=MAX_BATCH)
        return spec

    def __call__(self):
        onnx = _onnx()
        module = self.module
        tensors = [*module.parameters(), *module.buffers()]
        if module.training or any(t.device.type != "cpu" or t.is_floating_point() and t.dtype != torch.float32
                                  for t in tensors):  # exported as fp32 on the CPU: a copy, the caller's is left as is
            module = copy.deepcopy(module).eval().float().cpu()
        x = torch.rand(self.example_shape())
        arg_name = next(iter(_forward_params(module)), "x")
        kwargs: dict[str, Any] = dict(
            # the exporter's own opset: one below it is converted here, keeping what the converter drops (below)
            dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=max(self.opset, _EXPORTER_OPSET),
            optimize=True, verify=False, external_data=False, verbose=False,
        )
        if self.dynamic:
            kwargs["dynamic_shapes"] = {arg_name: self._dynamic_shapes()}
        try:
            with torch.no_grad(), _quiet_exporter(), _out_of_place(module, x):
                program = torch.onnx.export(module, (x,), None, **kwargs)
        except Exception as exc:  # torch.export raises many unrelated types for untraceable code
            from lway_rt.errors import STOPS

            # the exporter wraps a Ctrl-C in its own error, at times without keeping it among the causes (a SIGHUP
            # came out as "Failed to decompose the FX graph": 56J1): a stop the command recorded is still a stop
            if _interrupted(exc) or STOPS:
                raise KeyboardInterrupt from exc
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"torch could not export {type(module).__name__} to ONNX: {msg}") from exc
        model = program.model_proto
        if self.opset < _EXPORTER_OPSET:
            model = _down_convert(model, self.opset)
        onnx.checker.check_model(model, full_check=True)
        return model


#: the lowest opset torch's dynamo exporter writes itself; a lower one it converts with ONNX's version converter
_EXPORTER_OPSET = 18


def _down_convert(model, opset: int):
    """``model`` (at ``_EXPORTER_OPSET``, the exporter's own) converted to ``opset`` by ONNX's version converter, as
    ``torch.onnx.export`` converts it, each node keeping its metadata: the converter drops the torch module paths
    (``pkg.torch.onnx.name_scopes``) that ``keep_fp32_nodes`` patterns and a capped export's fp32 blend are matched
    by, so at opset 17 (the Jetson profile's) no pattern matched and the blend ran in fp16."""
    from onnx import version_converter

    props = {n.name: list(n.metadata_props) for n in model.graph.node if n.name and n.metadata_props}
    converted = version_converter.convert_version(model, opset)
    for node in converted.graph.node:  # (node names survive the conversion; a node it adds has none to take)
        if node.name in props and not node.metadata_props:
            node.metadata_props.extend(props[node.name])
    return converted


def _inplace(module: nn.Module) -> list[nn.Module]:
    """The submodules of ``module`` set to work in place (``nn.LeakyReLU(inplace=True)`` ...)."""
    return [m for m in module.modules() if getattr(m, "inplace", False) is True]


@contextlib.contextmanager
def _out_of_place(module: nn.Module, x: torch.Tensor):
    """``module``'s in-place submodules set out of place while the block runs, where that leaves its output on ``x``
    as it was; set back in place after it (without a copy: one of a model with weight norm taken just after a training
    step cannot be made, review 53A A3).
    The exporter rewrites each in-place op into its out-of-place form plus a copy through torch's reference
    implementation, with symbolic shape checks on every element-wise step: for RRDBNet's 279 activations at dynamic H/W
    about half of a two-minute export on a CPU; out of place they export as the same operators (LeakyRelu) at once.
    A forward that reads an activation's input again after it (counting on the change in place) would compute
    something else: such a module keeps them in place (review 53A A1), as does one whose ``inplace`` cannot be set."""
    flipped = []
    for m in _inplace(module):
        try:
            m.inplace = False
        except (AttributeError, TypeError):  # a read-only property: left as it is
            continue
        flipped.append(m)
    try:
        if flipped:
            with torch.no_grad():
                out_of_place = module(x.clone())
                for m in flipped:
                    m.inplace = True
                if _same_outputs(out_of_place, module(x.clone())):
                    for m in flipped:
                        m.inplace = False
        yield
    finally:
        for m in flipped:
            m.inplace = True


def _same_outputs(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b):
        return all(_same_outputs(p, q) for p, q in zip(a, b))
    return False


def _forward_params(module: nn.Module) -> list[str]:
    import inspect

    params = list(inspect.signature(module.forward).parameters)
    return params


class Memo:
    """Run a stage once and hand out the same result afterwards (one torch export for fp32 and fp16)."""

    def __init__(self, stage):
        self.stage = stage
        self._done = False
        self._value = None

    def __call__(self):
        if not self._done:
            self._value = _resolve(self.stage)
            self._done = True
        return self._value


class Fp16FromOnnx:
    """fp32 ModelProto (or a stage making one) -> fp16 ModelProto with fp32 I/O (see ``fp16.py``)."""

    def __init__(self, model, *, keep_fp32_ops: Iterable[str] | None = None, keep_fp32_nodes: Iterable[str] = ()):
        from lway_rt.export.fp16 import DEFAULT_KEEP_FP32_OPS

        self.model = model
        self.keep_fp32_ops = tuple(DEFAULT_KEEP_FP32_OPS if keep_fp32_ops is None else keep_fp32_ops)
        self.keep_fp32_nodes = tuple(keep_fp32_nodes)

    def __call__(self):
        from lway_rt.export.fp16 import convert_to_fp16

        _onnx()
        return convert_to_fp16(_resolve(self.model), keep_fp32_ops=self.keep_fp32_ops, keep_fp32_nodes=self.keep_fp32_nodes)


class LoadOnnx:
    """Read an ONNX file (checked) into a ModelProto."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __call__(self):
        onnx = _onnx()
        if not self.path.is_file():
            raise InputError(f"ONNX file {self.path} does not exist")
        try:
            model = onnx.load(str(self.path))
            onnx.checker.check_model(model)
        except Exception as exc:
            raise InputError(f"{self.path} is not a valid ONNX model ({exc}); export it again") from exc
        return model


METADATA_PREFIX = "lway_rt."


class DescribeOnnx:
    """A copy of a ModelProto that describes itself: ``metadata`` as the file's ``metadata_props`` under
    ``lway_rt.`` keys (what ONNX Runtime's ``get_modelmeta().custom_metadata_map``, Netron and other readers show),
    and lway_rt as its producer. A file moved away from its manifest still says its scale and size rules."""

    def __init__(self, model, metadata: dict[str, Any]):
        self.model = model
        self.metadata = metadata

    def __call__(self):
        from importlib.metadata import PackageNotFoundError, version

        onnx = _onnx()
        model = onnx.ModelProto()
        model.CopyFrom(_resolve(self.model))
        del model.metadata_props[:]
        for key, value in self.metadata.items():
            if value is not None:
                entry = model.metadata_props.add()
                entry.key, entry.value = METADATA_PREFIX + key, str(value)
        model.producer_name = "lway_rt"
        try:
            model.producer_version = version("lway_rt")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
            model.producer_version = ""
        return model


def read_onnx_metadata(metadata_props: dict[str, str]) -> dict[str, str]:
    """The ``lway_rt.`` entries of a file's metadata (``DescribeOnnx``), without the prefix."""
    return {k[len(METADATA_PREFIX):]: v for k, v in metadata_props.items() if k.startswith(METADATA_PREFIX)}


class SaveOnnx:
    """Write a ModelProto atomically (temporary name, then rename); returns the path."""

    def __init__(self, model, path: str | Path):
        self.model = model
        self.path = Path(path)

    def __call__(self) -> Path:
        from lway_rt.io.weights import atomic_write_bytes

        onnx = _onnx()
        model = _resolve(self.model)
        # the exporter writes its own IR version whatever the opset: opset 23 needs IR 11, and a file claiming 10 is
        # one stricter readers refuse (57B-6)
        least = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
        model.ir_version = max(model.ir_version, least)
        onnx.checker.check_model(model)
        atomic_write_bytes(self.path, model.SerializeToString())
        return self.path


def onnx_initializers(model_or_path) -> dict[str, dict[str, Any]]:
    """``{name: {"shape": [...], "dtype": "float16"}}`` for every initializer (refit matches on these)."""
    from onnx import helper

    model = LoadOnnx(model_or_path)() if isinstance(model_or_path, (str, Path)) else model_or_path
    return {
        i.name: {"shape": [int(d) for d in i.dims], "dtype": helper.tensor_dtype_to_np_dtype(i.data_type).name}
        for i in model.graph.initializer
    }


def export_onnx(desc_or_module, out_path: str | Path, *, precision: str = "fp32", dynamic: bool = True,
                static_shape: tuple[int, int, int] | None = None, opset: int = 18,
                keep_fp32_ops: Sequence[str] | None = None, keep_fp32_nodes: Sequence[str] = (),
                size_multiple: int | None = None, min_size: int | None = None, in_channels: int | None = None,
                check: bool = True) -> Path:
    """Export an SR ``ModelDescriptor`` (or any image ``nn.Module``) to ONNX at ``out_path``.

    ``precision`` ``fp32`` or ``fp16`` (fp16 compute, fp32 I/O). ``dynamic``: symbolic batch and
    H/W; else fixed at ``static_shape`` (batch, H, W). Size rules come from the descriptor unless
    given. With ``check`` (default) ONNX Runtime must reproduce torch on a random input within the
    parity gate (fp32: max abs diff <= 1e-4; fp16: PSNR >= 45 dB), else ``ParityError`` and nothing
    is written. Returns ``out_path``.
    """
    from lway_rt.archs.descriptor import ModelDescriptor

    if precision not in ("fp32", "fp16"):
        raise InputError(f"precision must be fp32 or fp16, got {precision!r}")
    if isinstance(desc_or_module, ModelDescriptor):
        module = desc_or_module.model
        size_multiple = size_multiple or desc_or_module.size_multiple
        min_size = min_size or desc_or_module.min_size
        in_channels = in_channels or desc_or_module.in_channels
    else:
        module = desc_or_module
    stage: Callable[[], Any] = OnnxFromTorch(
        module, in_channels=in_channels or 3, dynamic=dynamic, static_shape=static_shape,
        size_multiple=size_multiple or 1, min_size=min_size or 1, opset=opset,
    )
    if precision == "fp16":
        stage = Fp16FromOnnx(stage, keep_fp32_ops=keep_fp32_ops, keep_fp32_nodes=keep_fp32_nodes)
    model = stage()
    out_path = Path(out_path)
    if check:
        from lway_rt.export.parity import check_onnx_against_torch, random_input

        shape = static_shape or None
        x = random_input(in_channels or 3, size_multiple or 1, min_size or 1, shape=shape, seed=0)
        report = check_onnx_against_torch(model, module, [("random", x)], precision=precision)
        if not report.passed:
            raise ParityError(f"ONNX export of {type(module).__name__} failed the parity gate: {report.summary()}")
    return SaveOnnx(model, out_path)()
