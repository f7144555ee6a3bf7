"""TensorRT engines: build, cache, stale-engine rebuild and refit (runs only where TensorRT and a GPU exist), and
the pure-Python choices behind them (which run everywhere)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("lo, opt, hi", [
    ((1, 256, 256), (1, 256, 256), (1, 256, 256)),  # jetson-orin-trt10: one size, far from the ONNX gate's 64 and 40x48
    ((1, 16, 16), (1, 24, 32), (2, 32, 32)),  # max side below the photo's 64
    ((1, 48, 48), (2, 128, 96), (4, 512, 512)),  # min side above the noise's 40
    ((1, 16, 16), (1, 64, 64), (2, 128, 128)),
])
def test_engine_gate_inputs_lie_inside_the_optimisation_profile(lo, opt, hi):
    """The engine's parity gate ran the ONNX gate's 64x64 photo and 40x48 noise whatever the engine's min/opt/max, so
    an engine built for sides above 40 or below 64 failed after its whole build. Both inputs now lie inside the
    profile, the photo at its opt shape."""
    from lway_rt.export.pipeline import engine_gate_shapes
    from lway_rt.export.profile import ExportProfile

    profile = ExportProfile(engine="tensorrt").replace(min=lo, opt=opt, max=hi)
    photo, noise = engine_gate_shapes(profile, None, 8)
    assert photo == opt
    for shape in (photo, noise):
        assert all(a <= s <= b for a, s, b in zip(lo, shape, hi)), shape
        assert shape[1] % 8 == 0 and shape[2] % 8 == 0
    if lo[1] <= 40 and hi[2] >= 48:
        assert noise == (1, 40, 48)  # the usual non-square size where it fits
    static = ExportProfile(engine="tensorrt").replace(mode="static", tiles=((64, 96),), opt=(1, 64, 64))
    assert engine_gate_shapes(static, (64, 96), 1) == ((1, 64, 96), (1, 64, 96))


@pytest.fixture(scope="module")
def compact():
    from lway_rt.export.pipeline import sr_exportable
    from lway_rt.io.store import load_model

    return sr_exportable(load_model("realesr-animevideov3"))


def _profile(**changes):
    from lway_rt.export.profile import ExportProfile

    base = ExportProfile(engine="tensorrt").replace(min=(1, 16, 16), opt=(1, 64, 64), max=(2, 128, 128),
                                                   workspace_mib=1024, optimization_level=2)
    return base.replace(**changes)


def _run_engine(path, x):
    from lway_rt.export.tensorrt import TrtRunner, load_engine

    handle = load_engine(path.read_bytes())
    assert handle is not None
    runner = TrtRunner(handle)
    # a stream of its own, not the legacy default one (TensorRT warns on it and synchronises more: review 50D D1)
    assert runner.stream.cuda_stream != torch.cuda.default_stream().cuda_stream
    return runner(x)


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_build_cache_and_stale_rebuild(compact, tmp_path, precision):
    from lway_rt.export.cache import file_sha256
    from lway_rt.export.pipeline import export_artifacts

    (res,) = export_artifacts(compact, _profile(precision=precision), out_dir=tmp_path)
    assert res.engine_path.is_file() and res.engine_cache_hit is False
    m = json.loads(res.engine_path.with_suffix(".json").read_text())
    assert m["ready"] and m["parity"]["backend"] == "tensorrt" and m["parity"]["passed"]
    assert list((tmp_path / "timing").glob("*.cache"))  # timing cache per GPU + TensorRT version

    x = np.random.default_rng(0).random((2, 3, 40, 72), dtype=np.float32)  # inside min..max, not opt
    with torch.no_grad():
        ref = compact.module(torch.from_numpy(x)).numpy()
    out = _run_engine(res.engine_path, x)
    if precision == "fp32":
        assert np.abs(out - ref).max() <= 1e-4
    else:
        mse = np.mean((np.clip(out, 0, 1) - np.clip(ref, 0, 1)) ** 2)
        assert 10 * np.log10(1 / mse) >= 45

    (again,) = export_artifacts(compact, _profile(precision=precision), out_dir=tmp_path)
    assert again.cache_hit and again.engine_cache_hit and again.engine_path == res.engine_path

    (other,) = export_artifacts(compact, _profile(precision=precision, workspace_mib=2048), out_dir=tmp_path)
    assert other.cache_hit and other.engine_cache_hit is False and other.engine_path != res.engine_path

    # A stale engine (unloadable, but its manifest still matches) is rebuilt, not fatal.
    res.engine_path.write_bytes(b"engine from an older TensorRT")
    m["artifact"]["sha256"] = file_sha256(res.engine_path)
    res.engine_path.with_suffix(".json").write_text(json.dumps(m))
    (rebuilt,) = export_artifacts(compact, _profile(precision=precision), out_dir=tmp_path)
    assert rebuilt.engine_cache_hit is False and _run_engine(rebuilt.engine_path, x).shape == ref.shape


@pytest.mark.trt
def test_refit_swaps_adapted_weights(compact, tmp_path):
    from lway_rt.archs.registry import from_state_dict
    from lway_rt.export.pipeline import export_artifacts, refit_engine, sr_exportable

    (res,) = export_artifacts(compact, _profile(precision="fp16", flags=("refit",)), out_dir=tmp_path)
    torch.manual_seed(0)
    state = {k: v + 2e-3 * torch.randn_like(v) if v.dim() == 4 else v for k, v in compact.module.state_dict().items()}
    adapted = sr_exportable(from_state_dict(state, name="adapted"))
    new_engine = refit_engine(res.engine_path, adapted)
    m = json.loads(new_engine.with_suffix(".json").read_text())
    assert m["ready"] and m["parity"]["passed"] and m["refitted_from"] == res.engine_path.name

    x = np.random.default_rng(1).random((1, 3, 32, 48), dtype=np.float32)
    with torch.no_grad():
        ref_new = adapted.module(torch.from_numpy(x)).numpy()
    old_out, new_out = _run_engine(res.engine_path, x), _run_engine(new_engine, x)
    assert np.abs(new_out - ref_new).max() < np.abs(old_out - ref_new).max()
