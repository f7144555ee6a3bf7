"""``lwayrt adapt --encoder-backend onnxruntime``: E exported once, embeddings equal to torch's."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from lway_rt.adapt.embed import compute_embeddings
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.cli import main
from lway_rt.io.weights import save_safetensors


def _stage1():
    from lway_rt.degae import Stage1

    return Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=5).freeze()


def test_onnxruntime_embeddings_match_torch(hr_crop, model_store):
    s1 = _stage1()
    ups = [torch.from_numpy(hr_crop[:96, :128]).permute(2, 0, 1).float() / 255,
           torch.from_numpy(hr_crop[100:164, 50:114]).permute(2, 0, 1).float() / 255]
    ref = compute_embeddings(ups, s1, backend="torch")
    got = compute_embeddings(ups, s1, backend="onnxruntime")
    assert got.shape == ref.shape
    rel = (got - ref).norm(dim=1) / ref.norm(dim=1)
    assert float(rel.max()) <= 1e-4, rel
    # The exported encoder is cached beside the model store and reused.
    assert list((model_store / "engines").glob("*.encoder.fp32.*.onnx"))


def test_adapt_cli_runs_with_the_onnxruntime_encoder(tmp_path, hr_crop):
    from lway_rt.degae import save_stage1

    torch.manual_seed(0)
    save_safetensors(tmp_path / "tiny.safetensors", SRVGGNetCompact(num_feat=8, num_conv=2).state_dict(), {"name": "tiny"})
    save_stage1(tmp_path / "stage1.safetensors", _stage1())
    lr = tmp_path / "lr"
    lr.mkdir()
    Image.fromarray(np.ascontiguousarray(hr_crop[:160:4, :192:4])).save(lr / "a.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["adapt", str(lr), "-m", str(tmp_path / "tiny.safetensors"), "-o", str(out),
                                    "--stage1", str(tmp_path / "stage1.safetensors"), "--iterations", "2",
                                    "--patch-size", "16", "--batch-size", "2", "--encoder-backend", "onnxruntime"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    config = json.loads((out / "config.json").read_text())
    assert config.get("encoder_backend", config.get("adapt", {}).get("encoder_backend")) == "onnxruntime"
    assert (out / "adapted.safetensors").is_file()
