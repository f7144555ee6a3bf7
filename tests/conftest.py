"""Shared fixtures. Every test session gets its own model store (never the user's cache)."""

from __future__ import annotations

import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch

# One intra-op thread by default: on small CI machines two threads contend badly with the
# test runner itself. LWAYRT_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("LWAYRT_TEST_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def model_store(tmp_path_factory):
    """A private LWAYRT_HOME for the whole session; pretrained models are imported into it on demand."""
    home = tmp_path_factory.mktemp("lwayrt_home")
    old = os.environ.get("LWAYRT_HOME")
    os.environ["LWAYRT_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("LWAYRT_HOME", None)
    else:
        os.environ["LWAYRT_HOME"] = old
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's bundled astronaut photo, HxWx3 uint8."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def hr_crop(astronaut) -> np.ndarray:
    """A 256x256 textured crop (face, hair, suit) of the astronaut photo."""
    return np.ascontiguousarray(astronaut[100:356, 150:406])


@pytest.fixture(scope="session")
def recon_net():
    """A small random stage-1 reconstructor (embedding 24, width 16, 2 blocks), frozen: the adaptation step tests' R."""
    from lway_rt.degae.nets import Reconstructor

    torch.manual_seed(0)
    return Reconstructor(embed_dim=24, width=16, blocks=2).eval().requires_grad_(False)


@pytest.fixture(scope="session")
def lpips_file():
    """``lpips_file(path, seed)`` writes random LPIPS-AlexNet weights under the ``lpips`` package's names (linear layers
    non-negative, as trained ones are) and returns the path: the real loader and network, without the real weights."""
    from lway_rt.degae.lpips import LPIPSAlex

    def write(path, seed=0):
        torch.manual_seed(seed)
        state = {k.replace("lin.", "lin").replace(".weight", ".model.1.weight") if k.startswith("lin.") else k:
                 v.abs() if k.startswith("lin.") else v
                 for k, v in LPIPSAlex().state_dict().items() if k not in ("shift", "scale")}
        torch.save(state, path)
        return str(path)

    return write


@pytest.fixture(scope="session")
def capped_weights(tmp_path_factory):
    """Weights as ``lwayrt adapt --detail-cap 1`` writes them: realesr-animevideov3 changed, the cap and the base model
    (name and hash) in the metadata."""
    import json

    from lway_rt.io.store import load_model
    from lway_rt.io.weights import save_safetensors, state_dict_sha256

    base = load_model("realesr-animevideov3")
    torch.manual_seed(0)
    state = {k: v + 1e-2 * torch.randn_like(v) if k.startswith("body.") and v.dim() == 4 else v.clone()
             for k, v in base.model.state_dict().items()}
    path = tmp_path_factory.mktemp("capped") / "capped.safetensors"
    save_safetensors(path, state, {"format": "lway_rt.sr/1", "name": "capped", "arch": base.arch, "scale": "4",
                                   "hparams": json.dumps(base.spec.hparams), "base_model": "realesr-animevideov3",
                                   "base_sha256": state_dict_sha256(base.model.state_dict()), "detail_cap": "1.0"})
    return path


@pytest.fixture(scope="session")
def anime_onnx(tmp_path_factory):
    """``lwayrt export -m realesr-animevideov3 --precision both`` made once for the tests that take its files as they
    are (exporting is the slow part): ``anime_onnx(dest, "fp32")`` copies that precision's ``.onnx`` and its manifest
    into ``dest`` (made if missing) and returns the copy's path. Tests of export itself run it themselves."""
    import shutil

    from click.testing import CliRunner

    from lway_rt.cli import main

    made = tmp_path_factory.mktemp("anime_onnx")
    res = CliRunner().invoke(main, ["export", "-m", "realesr-animevideov3", "--precision", "both", "--out", str(made)])
    assert res.exit_code == 0, res.output

    def copy(dest, precision: str = "fp32"):
        from pathlib import Path

        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        (onnx,) = made.glob(f"*.sr.{precision}.*.onnx")
        shutil.copy2(onnx.with_suffix(".json"), dest)
        return Path(shutil.copy2(onnx, dest))

    return copy


@pytest.fixture
def unwritable(monkeypatch):
    """``unwritable(folder)`` makes ``folder`` refuse new files the way this machine allows: mode 0555 for a normal
    user, the immutable flag for root (which ignores modes); where neither is possible, new files in it fail as they
    would. Returns an undo (call it before the test's folder is removed)."""
    import subprocess
    import tempfile
    from pathlib import Path

    def make(folder):
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return lambda: folder.chmod(0o755)
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
            return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
        real = tempfile.mkstemp

        def refuse(*args, dir=None, **kw):
            if dir is not None and Path(dir).resolve() == folder.resolve():
                raise PermissionError(1, "Operation not permitted")
            return real(*args, dir=dir, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        return lambda: None

    return make


@pytest.fixture
def held_elsewhere():
    """``held_elsewhere(path)``: a context manager that holds ``path``'s run lock (a folder, or a lock file made for the
    time) as a run in another process would: a flock of its own, since ``exclusive_run`` is re-entrant within its
    thread."""
    import contextlib
    import fcntl
    from pathlib import Path

    @contextlib.contextmanager
    def hold(path):
        path = Path(path)
        folder, made = path.is_dir(), not path.exists()
        fd = os.open(path, os.O_RDONLY) if folder else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            if made and not folder:
                path.unlink(missing_ok=True)
            os.close(fd)

    return hold


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "trt" in item.keywords and not (has_cuda and has_trt):
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and a CUDA GPU"))


@pytest.fixture(scope="session")
def load_benchmark():
    """A loader of ``benchmarks/<name>.py`` as a module (the scripts are not a package): ``load_benchmark("quality")``."""
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="session")
def to_esrgan():
    """A function: an RRDBNet x4 state dict renamed to a layout of ESRGAN's own code: ``"first"`` (``model.0``,
    ``model.1.sub.N.RDBj.convk.0``, ``model.3`` ...: most community x4 ESRGAN models) or ``"second"`` (``conv_first``,
    ``RRDB_trunk.N.RDBj.convk``, ``trunk_conv``, ``upconv1`` ...: the ESRGAN repository's RRDB_ESRGAN_x4.pth)."""
    import re

    first = {"conv_first": 0, "conv_up1": 3, "conv_up2": 6, "conv_hr": 8, "conv_last": 10}
    second = {"conv_first": "conv_first", "conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
              "conv_hr": "HRconv", "conv_last": "conv_last"}

    def rename(state, layout="first"):
        blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
        out = {}
        for k, v in state.items():
            if m := re.fullmatch(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(weight|bias)", k):
                out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}" if layout == "first"
                    else f"RRDB_trunk.{m[1]}.RDB{m[2]}.conv{m[3]}.{m[4]}"] = v
            elif layout == "first":
                layer, kind = k.split(".")
                out[f"model.1.sub.{blocks}.{kind}" if layer == "conv_body" else f"model.{first[layer]}.{kind}"] = v
            else:
                layer, kind = k.split(".")
                out[f"{second[layer]}.{kind}"] = v
        return out

    return rename


@pytest.fixture
def unprivileged():
    """``unprivileged(cmd)``: ``cmd`` run as this user without root's power to read, write and enter anything, so a
    file's or folder's permissions apply (root: through setpriv, dropping the capabilities that bypass them)."""
    import shutil

    def wrap(cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        if shutil.which("setpriv") is None:
            pytest.fail("this test needs setpriv (util-linux) when run as root")
        return ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search",
                "--", *cmd]

    return wrap
