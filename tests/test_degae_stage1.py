"""The stage-1 interface: fresh networks, checkpoint round trip, and the errors a user can hit."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from lway_rt.degae import FORMAT, Stage1, default_checkpoint_path, load_stage1, save_stage1
from lway_rt.errors import ModelError


@pytest.fixture(scope="module")
def tiny():
    return Stage1.fresh(embed_dim=32, width=8, blocks=2, head_widths=(16, 16, 32), seed=3)


def test_fresh_shapes_and_trunk_is_frozen(tiny):
    x = torch.rand(3, 3, 40, 36)
    e = tiny.encoder(x)
    assert e.shape == (3, 32) and tiny.embed_dim == 32
    assert tiny.reconstructor(x, e).shape == x.shape
    assert all(not p.requires_grad for p in tiny.encoder.trunk.parameters())
    assert any(p.requires_grad for p in tiny.encoder.head.parameters())
    assert tiny.meta["trunk_model"] == "realesr-animevideov3" and len(tiny.meta["trunk_sha256"]) == 64
    # the trunk is the real pretrained network's first layers, not a random init
    from lway_rt.io.store import load_model

    ref = load_model("realesr-animevideov3").model.body[0].weight
    torch.testing.assert_close(tiny.encoder.trunk[0].weight, ref)


def test_encoder_minimum_size(tiny):
    tiny.encoder(torch.rand(1, 3, 22, 22))
    with pytest.raises(ValueError, match="at least 22x22"):
        tiny.encoder(torch.rand(1, 3, 21, 40))


def test_round_trip_keeps_outputs_and_leaves_the_trunk_out(tiny, tmp_path):
    path = tmp_path / "s1.safetensors"
    save_stage1(path, tiny, {"recipe": {"iters": 1}})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert not any(k.startswith("encoder.trunk.") for k in keys)
    assert meta["format"] == FORMAT and json.loads(meta["recipe"]) == {"iters": 1}
    s1 = load_stage1(path)
    assert not s1.encoder.training and not s1.reconstructor.training
    assert all(not p.requires_grad for m in (s1.encoder, s1.reconstructor) for p in m.parameters())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(s1.reconstructor(x, s1.encoder(x)), tiny.reconstructor(x, tiny.encoder(x)))
    e = s1.encoder(x)
    torch.testing.assert_close(s1.reconstructor.apply(x, s1.reconstructor.prepare(e)), s1.reconstructor(x, e))


def test_wrong_embedding_width_is_refused(tiny, tmp_path):
    path = tmp_path / "s1.safetensors"
    save_stage1(path, tiny)
    with pytest.raises(ModelError, match="embedding width 32"):
        load_stage1(path, embed_dim=512)


def test_other_architecture_is_refused(tmp_path):
    from lway_rt.io.store import resolve_model_path

    with pytest.raises(ModelError, match="not a stage-1"):
        load_stage1(resolve_model_path("realesr-animevideov3"))
    with pytest.raises(ModelError, match=r"\.safetensors file"):
        load_stage1(tmp_path / "x.pth")


def test_mismatched_weights_and_trunk_hash_are_refused(tiny, tmp_path):
    from lway_rt.io.weights import save_safetensors

    state = tiny.state_dict()
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in tiny.meta.items()}
    bad = dict(meta, width="16")
    save_safetensors(tmp_path / "a.safetensors", state, bad)
    with pytest.raises(ModelError, match="do not match"):
        load_stage1(tmp_path / "a.safetensors")
    save_safetensors(tmp_path / "b.safetensors", state, dict(meta, trunk_sha256="0" * 64))
    with pytest.raises(ModelError, match="differs from the one"):
        load_stage1(tmp_path / "b.safetensors")


def test_default_checkpoint_loads_or_says_how_to_get_one(tmp_path, monkeypatch):
    """The shipped checkpoint loads (it ships: a missing one fails here); where it is missing (a source tree without
    it), loading the default says how to get one."""
    import lway_rt.degae as degae

    s1 = load_stage1()
    assert s1.embed_dim == s1.meta["embed_dim"]
    assert default_checkpoint_path().stat().st_size <= 25 * 2**20
    monkeypatch.setattr(degae, "_CHECKPOINT_DIR", tmp_path)
    with pytest.raises(ModelError, match=f"no shipped stage-1 checkpoint yet at {tmp_path}.*'lwayrt train-degae'"):
        load_stage1()


def test_the_trunk_says_why_it_needs_a_packaged_model_that_is_not_installed(tmp_path, monkeypatch):
    """Without the models extra, adapt with its default loss (given a weights file of the user's), eval-degae and
    train-degae said "model 'realesr-animevideov3' comes from ..." with nothing saying why that model (56B4)."""
    from lway_rt.degae.trunk import TrunkSpec, build_trunk
    from lway_rt.errors import ModelError
    from lway_rt.io.store import SOURCES

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "home"))  # an empty store: the package would be read
    monkeypatch.setitem(sys.modules, SOURCES["realesr-animevideov3"].package, None)  # as without the models extra
    with pytest.raises(ModelError) as err:
        build_trunk(TrunkSpec())
    said = str(err.value)
    assert said.startswith("stage 1's degradation encoder starts with the first layers of realesr-animevideov3, read "
                           "from the model store: model 'realesr-animevideov3' comes from the PyPI package "), said
    assert "pip install 'lway_rt[models]'" in said
