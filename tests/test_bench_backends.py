"""Backends behind one interface: parsing, parity with torch fp32, shape profiles, honest skips and fallbacks."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from lway_rt.errors import InputError, ModelError
from lway_rt.runtime.backends import (
    BackendSpec, ShapeProfile, check_shape, load_backend, parse_backend, skip_reason,
)


@pytest.fixture(scope="module")
def anime():
    from lway_rt.io.store import load_model

    return load_model("realesr-animevideov3")


@pytest.fixture(scope="module")
def dynamic_onnx(anime, tmp_path_factory):
    """One dynamic-shape fp32 export shared by the ONNX Runtime tests (exporting is the slow part)."""
    from lway_rt.export import export_onnx

    return export_onnx(anime, tmp_path_factory.mktemp("onnx") / "anime.onnx", check=False)


@pytest.fixture(scope="module")
def photo_batch(hr_crop):
    x = hr_crop[40:64, 60:92].astype(np.float32).transpose(2, 0, 1)[None] / 255.0  # 1x3x24x32 real photo crop
    return np.ascontiguousarray(x)


@pytest.fixture(scope="module")
def reference(anime, photo_batch):
    with torch.inference_mode():
        return anime.model(torch.from_numpy(photo_batch)).numpy()


@pytest.mark.parametrize("text", ["torch", "torch+cl", "torch+bf16", "torch+compile", "torch+cuda+fp16", "ort-cpu",
                                  "ort-cpu+threads=1+opt=basic+noarena+parallel", "ort-cuda+fp16+fallback",
                                  "ort-trt+ws=512", "tensorrt+fp16"])
def test_labels_parse_back_to_the_same_spec(text):
    spec = parse_backend(text)
    assert parse_backend(spec.label, device=spec.device) == spec


@pytest.mark.parametrize("text, message", [
    ("onnx", "unknown backend"),
    ("torch+fast", "unknown backend option"),
    ("ort-cpu+cl", "torch options"),
    ("torch+fp16", "fp16 on the CPU"),
    ("ort-cpu+fp16", "fp16 on the CPU"),
    ("ort-cpu+threads=two", "needs an integer"),
    ("ort-cpu+opt=max", "optimisation level"),
    ("ort-cpu+ws=100", "'ws=' is the TensorRT workspace"),  # accepted and ignored before: the user thought it applied
    ("torch+noarena", "ONNX Runtime options; torch does not take 'noarena'"),
    ("torch+opt=all", "ONNX Runtime options; torch does not take 'opt=all'"),  # the default value: still not torch's
    ("ort-cpu+ws=2048", "'ws=' is the TensorRT workspace"),
    ("ort-cpu+fallback", "'fallback' lets ort-cuda / ort-trt fall back"),
    ("tensorrt+bf16", "bf16"),
    # contradictory options: the last one won without a word ('torch+fp16+bf16' timed torch+bf16)
    ("torch+fp16+bf16", r"'torch\+fp16\+bf16' sets the precision twice \('fp16' and 'bf16'\): keep one"),
    ("torch+cuda+cpu", "sets the device twice"),
    ("ort-cpu+threads=1+threads=2", "sets the thread count twice"),
    ("ort-cpu+opt=basic+opt=all", "sets the optimisation level twice"),
    ("ort-cpu+sequential+parallel", "sets the execution mode twice"),
    ("torch+cl+cl", "sets 'cl' twice"),
])
def test_bad_backend_strings_say_what_to_use(text, message):
    with pytest.raises(InputError, match=message):
        parse_backend(text)


def test_shape_profile_covers_shapes_and_rejects_outside():
    prof = ShapeProfile.covering([(1, 3, 32, 48), (4, 3, 16, 16), (1, 3, 64, 8)])
    assert prof.min == (1, 3, 16, 8) and prof.max == (4, 3, 64, 48) and prof.opt == (1, 3, 32, 48)
    check_shape((2, 3, 20, 20), prof.min, prof.max, what="p", fix="f")
    with pytest.raises(InputError, match=r"W=49 not in 8\.\.48.*rebuild"):
        check_shape((1, 3, 20, 49), prof.min, prof.max, what="the profile", fix="rebuild")
    with pytest.raises(InputError, match="min <= opt <= max"):
        ShapeProfile((1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 16, 16))


@pytest.mark.parametrize("text", ["torch", "torch+cl", "ort-cpu", "ort-cpu+opt=disable+noarena"])
def test_cpu_backends_reproduce_torch_fp32(text, anime, photo_batch, reference, dynamic_onnx):
    spec = parse_backend(text, threads=1)
    assert skip_reason(spec) is None
    backend = load_backend(spec, anime, ShapeProfile.covering([photo_batch.shape]), onnx=lambda precision: dynamic_onnx)
    try:
        out = backend.run(photo_batch)
        assert out.shape == (1, 3, 96, 128) and out.dtype == np.float32
        assert np.abs(out - reference).max() < 1e-4
        assert backend.load_s > 0 and backend.compute_ms(photo_batch) is None  # no device timing on the CPU
        assert backend.describe()["label"] == spec.label
        if spec.is_ort:
            assert backend.details["providers"] == ["CPUExecutionProvider"] and not backend.details["fell_back"]
    finally:
        backend.close()


def test_a_backend_without_a_given_onnx_file_exports_its_own_and_leaves_no_temporary_folder(anime, photo_batch, reference,
                                                                                        tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    backend = load_backend(parse_backend("ort-cpu", threads=1), anime, ShapeProfile.covering([photo_batch.shape]))
    try:
        assert np.abs(backend.run(photo_batch) - reference).max() < 1e-4  # the session outlives its file
    finally:
        backend.close()
    assert list(tmp_path.iterdir()) == []


def test_torch_runs_on_the_threads_its_spec_names(anime, photo_batch):
    """torch+threads=1 ran on the process's thread count (every core), while its label and options said one; the
    count is set as each call runs (another backend may have changed it), and put back when the backend closes."""
    before = torch.get_num_threads()
    seen = []
    one = load_backend(parse_backend("torch+threads=1"), anime, ShapeProfile.covering([photo_batch.shape]))
    other = load_backend(parse_backend("torch", threads=2), anime, ShapeProfile.covering([photo_batch.shape]))
    hooks = [b.net.register_forward_hook(lambda *a: seen.append(torch.get_num_threads())) for b in (one, other)]
    try:
        one.run(photo_batch)
        other.run(photo_batch)
        one.run(photo_batch)
        assert seen == [1, 2, 1]
    finally:
        for h in hooks:
            h.remove()
        other.close()
        one.close()
    assert torch.get_num_threads() == before


def test_torch_bf16_autocast_is_close_but_not_exact(anime, photo_batch, reference):
    from lway_rt.metrics import psnr

    backend = load_backend(parse_backend("torch+bf16", threads=1), anime, ShapeProfile.covering([photo_batch.shape]))
    out = backend.run(photo_batch)
    value = psnr(np.clip(out, 0, 1), np.clip(reference, 0, 1), data_range=1.0)
    assert 30 < value < 150  # bf16 keeps 8 mantissa bits: visibly not bit-exact, still a faithful image


def test_static_onnx_refuses_another_shape_clearly(anime, photo_batch, tmp_path):
    from lway_rt.export import export_onnx
    from lway_rt.runtime.backends import OrtBackend

    path = export_onnx(anime, tmp_path / "static.onnx", dynamic=False, static_shape=(1, 24, 32), check=False)
    backend = OrtBackend(parse_backend("ort-cpu", threads=1), path, ShapeProfile.covering([photo_batch.shape]))
    assert backend.run(photo_batch).shape == (1, 3, 96, 128)
    with pytest.raises(InputError, match=r"outside the ONNX graph's static input shape: H=28 not in 24; export with dynamic"):
        backend.run(np.zeros((1, 3, 28, 32), np.float32))


def test_ort_gpu_provider_fallback_is_an_error_unless_allowed(photo_batch, reference, dynamic_onnx):
    import onnxruntime as ort

    from lway_rt.runtime.backends import OrtBackend
    from lway_rt.runtime.ort import ProviderFallbackError

    path = dynamic_onnx
    profile = ShapeProfile.covering([photo_batch.shape])
    strict, lenient = parse_backend("ort-cuda"), parse_backend("ort-cuda+fallback")
    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        backend = OrtBackend(strict, path, profile)  # a working GPU build: it must really run on CUDA
        assert backend.details["providers"][0] == "CUDAExecutionProvider" and not backend.details["fell_back"]
        return
    assert "onnxruntime-gpu" in skip_reason(strict) and skip_reason(lenient) is None
    with pytest.raises(ProviderFallbackError, match="fell back from CUDAExecutionProvider.*'\\+fallback'"):
        OrtBackend(strict, path, profile)
    backend = OrtBackend(lenient, path, profile)
    assert backend.details["fell_back"] and backend.details["providers"] == ["CPUExecutionProvider"]
    assert np.abs(backend.run(photo_batch) - reference).max() < 1e-4


def test_missing_packages_and_devices_are_skip_reasons():
    trt = skip_reason(parse_backend("tensorrt"))
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in trt and "no CUDA GPU" in skip_reason(parse_backend("torch+cuda"))
    elif importlib.util.find_spec("tensorrt") is None:
        assert "'trt' extra" in trt
    else:
        assert trt is None
    assert "not fp16-safe" in skip_reason(BackendSpec("tensorrt", device="cuda", precision="fp16"), fp16_safe=False)


@pytest.mark.gpu
def test_torch_cuda_matches_reference_and_times_device(anime, photo_batch, reference):
    backend = load_backend(parse_backend("torch+cuda"), anime, ShapeProfile.covering([photo_batch.shape]))
    torch.backends.cudnn.allow_tf32 = False
    assert np.abs(backend.run(photo_batch) - reference).max() < 1e-3
    assert backend.compute_method == "cuda_events" and backend.compute_ms(photo_batch) > 0


@pytest.mark.trt
def test_tensorrt_engine_rejects_a_shape_outside_its_profile(anime, photo_batch, reference):
    backend = load_backend(parse_backend("tensorrt"), anime, ShapeProfile.covering([photo_batch.shape]))
    assert np.abs(backend.run(photo_batch) - reference).max() < 1e-3
    assert backend.compute_ms(photo_batch) > 0
    with pytest.raises(InputError, match="outside the engine's profile"):
        backend.run(np.zeros((1, 3, 48, 48), np.float32))


@pytest.mark.trt
def test_tensorrt_calls_at_once_each_get_their_own_output(anime, photo_batch):
    """serve-bench --concurrency calls one engine from several threads: each call takes its own execution context (one
    shared context let a call read another's input and return a buffer nothing wrote), each on its own profile; a
    fifth call at once is refused by an engine built for four."""
    inputs = [np.ascontiguousarray(np.roll(photo_batch, 5 * k, axis=3)) for k in range(4)]
    with torch.inference_mode():
        expected = [anime.model(torch.from_numpy(x)).numpy() for x in inputs]
    backend = load_backend(parse_backend("tensorrt"), anime, ShapeProfile.covering([photo_batch.shape]), lanes=4)
    backend.prepare(4)  # (one optimisation profile a context: TensorRT's rule for contexts run at once)
    with ThreadPoolExecutor(4) as pool:
        for _ in range(25):
            for got, want in zip(pool.map(backend.run, inputs), expected):
                assert np.abs(got - want).max() < 1e-3
    with pytest.raises(ModelError, match="built for 4 call"):
        backend.prepare(5)
