"""``export.capped``: the detail cap written as graph ops equals ``wavelet.detail_cap`` (the one adapt and upscale use)."""

from __future__ import annotations

import pytest
import torch

from lway_rt.adapt.wavelet import detail_cap
from lway_rt.export.capped import CappedSR, DetailCapBlend


@pytest.mark.parametrize("shape,border", [((3, 3, 36, 52), 4), ((2, 3, 17, 23), 0), ((1, 3, 31, 30), 2)])
def test_blend_equals_wavelet_detail_cap(shape, border):
    """Per image and for odd sizes: one image sharpened (held back), one softened (kept as is), one unchanged."""
    g = torch.Generator().manual_seed(sum(shape))
    base = torch.rand(shape, generator=g)
    soft = torch.nn.functional.avg_pool2d(base, 3, 1, 1, count_include_pad=False)
    new = torch.stack([base[0] + 0.3 * (base[0] - soft[0]), *soft[1:2], *base[2:3]])[: shape[0]]
    for cap in (1.0, 1.1, 2.0):
        want, s = detail_cap(base, new, cap, border)
        got = DetailCapBlend(cap, border)(base, new)
        assert torch.allclose(got, want.float(), atol=1e-5), (cap, s)
    assert float(detail_cap(base, new, 1.0, border)[1][0]) < 1  # the sharpened image is held at cap 1
    if shape[0] > 1:
        assert float(detail_cap(base, new, 1.0, border)[1][1]) == 1  # the softened one is within any cap


def test_capped_sr_blends_its_two_networks_outputs():
    """The blend of the two networks' outputs clamped to [0, 1], as adapt and upscale cap the images they write."""
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Upsample(scale_factor=2))
    adapted = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Upsample(scale_factor=2))
    x = torch.rand(2, 3, 12, 14)
    with torch.no_grad():
        b, a = base(x), adapted(x)
        assert b.min() < 0 and a.min() < 0  # outside [0, 1]: the clamp that adapt and upscale apply first matters
        want, _ = detail_cap(b.clamp(0, 1), a.clamp(0, 1), 1.05, 2)
        got = CappedSR(base, adapted, 1.05, 2)(x)
    assert torch.allclose(got, want.float(), atol=1e-5)
    assert set(CappedSR(base, adapted, 1.05, 2).state_dict()) == {f"{n}.{k}" for n in ("base", "adapted")
                                                                   for k in base.state_dict()}
    with pytest.raises(ValueError, match="at least 1"):
        DetailCapBlend(0.9, 0)


class _Sharper(torch.nn.Module):
    """``net``'s output with its detail raised: an adapted network the cap holds back."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        y = self.net(x)
        return 1.6 * y - 0.6 * torch.nn.functional.avg_pool2d(y, 3, 1, 1, count_include_pad=False)


def test_the_exported_graph_holds_a_binding_cap(tmp_path):
    """The export's parity gate compares the graph with torch on a photo and noise, where a mildly adapted network's
    cap may never bind (the blend factor s = 1 on both), so the blend path could pass untested. Here the cap binds
    (s < 1 on every image) and the ONNX graph, run by ONNX Runtime at odd sizes and a batch, equals
    ``wavelet.detail_cap`` in float64."""
    import numpy as np
    import onnxruntime as ort

    from lway_rt.export.onnx_export import OnnxFromTorch, SaveOnnx

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Upsample(scale_factor=2))
    capped = CappedSR(base, _Sharper(base), 1.05, 2).eval()
    path = SaveOnnx(OnnxFromTorch(capped, opset=17)(), tmp_path / "capped.onnx")()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in ((2, 3, 17, 23), (1, 3, 40, 32)):
        x = torch.rand(shape)
        with torch.no_grad():
            b, a = base(x).clamp(0, 1), _Sharper(base)(x).clamp(0, 1)
        want, s = detail_cap(b.double(), a.double(), 1.05, 2)
        assert bool((s < 0.99).all()), s  # the cap binds on every image
        assert float((a.double() - want).abs().max()) > 1e-3  # so a graph that skipped the blend would fail below
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert np.abs(got - want.numpy()).max() < 1e-5, shape


def test_a_capped_export_names_a_base_that_loads_again(tmp_path):
    """The export's record of the unadapted model is what -m loads: its store name, else its file. Weights adapted
    from adapted weights have as their base a file whose metadata names it "<base>-lway", which the record held, and
    serve-bench (which loads the base by that record) could not find it."""
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.export.capped import capped_sr_exportable
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import save_safetensors

    torch.manual_seed(0)
    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    save_safetensors(tmp_path / "adapted.safetensors", net.state_dict(),
                     {"name": "tiny-lway", "arch": "SRVGGNetCompact", "scale": "4"})
    base = load_model(str(tmp_path / "adapted.safetensors"))
    assert base.name == "tiny-lway"  # (the name its metadata gives)
    again = load_model(str(tmp_path / "adapted.safetensors"))
    recorded = capped_sr_exportable(again, base, 1.2).source["detail_cap"]["base_model"]
    assert recorded == str((tmp_path / "adapted.safetensors").absolute())
    assert torch.equal(load_model(recorded).model.body[0].weight, net.body[0].weight)
    store_model = load_model("realesr-animevideov3")
    assert capped_sr_exportable(store_model, store_model, 1.2).source["detail_cap"]["base_model"] == "realesr-animevideov3"


def test_module_paths_survive_an_opset_17_export(tmp_path):
    """At opset 17 (the Jetson profile's) the exporter's conversion dropped every node's torch module path, so no
    keep_fp32_nodes pattern matched ("matched no node") and a capped graph's blend, kept in fp32 by such a pattern,
    ran in fp16 (review 50P P5). The paths are kept through the conversion, and the patterns match as at opset 18."""
    from lway_rt.export.capped import fp32_nodes
    from lway_rt.export.fp16 import matched_patterns
    from lway_rt.export.onnx_export import OnnxFromTorch

    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Upsample(scale_factor=2))
    capped = CappedSR(base, _Sharper(base), 1.05, 2).eval()
    keep = fp32_nodes(capped)
    assert keep
    for opset in (18, 17):
        model = OnnxFromTorch(capped, opset=opset)()
        assert model.opset_import[0].version == opset
        matched, _ = matched_patterns(model, keep)
        assert matched == set(keep), (opset, keep, matched)
