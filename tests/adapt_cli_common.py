"""What the ``lwayrt adapt`` command-line tests share: the tiny model, stage 1 and inputs, and the ways a run is
stopped part way (``test_adapt_cli.py``, ``test_adapt_overwrite.py``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner
from PIL import Image

from lway_rt.adapt.loop import CHECKPOINT
from lway_rt.archs.srvgg import SRVGGNetCompact
from lway_rt.cli import main
from lway_rt.io.weights import save_safetensors


def make_files(tmp_path_factory, hr_crop) -> Path:
    """A tiny random SRVGGNetCompact, a tiny stage-1 checkpoint and a folder of mixed LR inputs: each
    test module's ``files`` fixture."""
    from lway_rt.degae import Stage1, save_stage1

    root = tmp_path_factory.mktemp("adapt_cli")
    torch.manual_seed(0)
    s = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    save_safetensors(root / "tiny.safetensors", s.state_dict(), {"name": "tiny"})
    s1 = Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=3).freeze()
    save_stage1(root / "stage1.safetensors", s1)
    lr = root / "lr"
    lr.mkdir()
    Image.fromarray(hr_crop[:160:4, :192:4]).save(lr / "rgb.png")  # 40x48
    Image.fromarray(hr_crop[64:208:4, 64:208:4]).convert("L").save(lr / "grey.png")  # 36x36
    rgba = np.dstack([hr_crop[100:228:4, 0:176:4], np.full((32, 44), 200, np.uint8)])
    rgba[:8, :8, 3] = 0
    Image.fromarray(rgba, "RGBA").save(lr / "alpha.png")  # 44x32
    return root


def _run(args):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res.exit_code, res.output


LONG_RUN = 40  # steps of a run stopped at its first checkpoint (every 5 steps) by the signal it sends itself (below)
RACE_RUN = 1200  # steps of one stopped from outside: 400 once finished (a CI-like idle machine) before the signal came


def _signals_as_a_terminal_sends_them() -> None:
    # a test runner started in the background of a non-interactive shell, or under nohup, passes SIGINT or SIGHUP on
    # ignored, and the child would then never see them
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


# ``lwayrt`` whose first checkpoint, once on disk, is followed by the signal given first: a stop at a known point, so a
# test's --resume has few steps left to run
_STOPPED_AT_ITS_FIRST_CHECKPOINT = """
import os, sys
import lway_rt.adapt.loop as loop
sig, real = int(sys.argv.pop(1)), loop._save_checkpoint
def save(*args, **kwargs):
    real(*args, **kwargs)
    loop._save_checkpoint = real
    os.kill(os.getpid(), sig)
loop._save_checkpoint = save
from lway_rt.cli import main
main()
"""


def _long_run_stopped_after_a_checkpoint(files, out, sig, extra=(), *, from_outside=False
                                         ) -> tuple[list[str], subprocess.Popen, str]:
    """Start a ``lwayrt adapt`` into ``out`` in a subprocess, stopped by ``sig`` once its first checkpoint is on disk:
    the run sends it itself at once (``LONG_RUN`` steps), or, ``from_outside``, the test does when it sees the file
    (``RACE_RUN`` steps, the signal landing wherever the run is by then); returns its arguments, the process (ended)
    and what it printed."""
    steps = RACE_RUN if from_outside else LONG_RUN
    args = ["adapt", str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"), "-o", str(out),
            "--stage1", str(files / "stage1.safetensors"), "--iterations", str(steps), "--patch-size", "16",
            "--batch-size", "2", "--checkpoint-every", "5", "--snapshot-every", "100", "-q", *extra]
    code = ["-c", "from lway_rt.cli import main; main()"] if from_outside else \
        ["-c", _STOPPED_AT_ITS_FIRST_CHECKPOINT, str(int(sig))]
    proc = subprocess.Popen([sys.executable, *code, *args],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=_signals_as_a_terminal_sends_them)
    try:
        deadline = time.monotonic() + 120
        while from_outside and not (out / CHECKPOINT).exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        if from_outside:
            os.kill(proc.pid, sig)
        text = proc.communicate(timeout=120)[0].decode()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return args, proc, text


def _stopped_when(args, ready, what: str) -> tuple[subprocess.Popen, str]:
    """Run ``lwayrt *args`` in a subprocess and send it SIGINT (a Ctrl-C) once ``ready()`` holds."""
    proc = subprocess.Popen([sys.executable, "-c", "from lway_rt.cli import main; main()", *args],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=_signals_as_a_terminal_sends_them)
    try:
        deadline = time.monotonic() + 180
        while not ready():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, f"{what} never came"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        text = proc.communicate(timeout=60)[0].decode()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return proc, text


def _stopping_on_call(monkeypatch, owner, name: str, n: int) -> None:
    """Patch ``owner.name`` to raise KeyboardInterrupt (a Ctrl-C) on its ``n``-th call; the calls before go through."""
    real, calls = getattr(owner, name), []

    def stopping(*a, **k):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(owner, name, stopping)


def _per_image_then_fewer(files, tmp_path) -> tuple[Path, Path]:
    """A finished per-image adaptation of the three test inputs in ``tmp_path/each``, and a folder of two of them."""
    out, fewer = tmp_path / "each", tmp_path / "fewer"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"])[0] == 0
    fewer.mkdir()
    for name in ("rgb.png", "grey.png"):
        shutil.copy(files / "lr" / name, fewer / name)
    return out, fewer


def _replace_args(files):
    return ["-m", str(files / "tiny.safetensors"), "--stage1", str(files / "stage1.safetensors"), "--patch-size", "16",
            "--batch-size", "1", "-q", "--iterations", "2"]


def _stop_before_the_first_step(monkeypatch, args) -> str:
    """Run ``lwayrt adapt *args`` stopped (a Ctrl-C) at its first step, before any checkpoint; returns its output."""
    import lway_rt.adapt.loop as loop

    with monkeypatch.context() as m:
        m.setattr(loop, "fast_adapt_step", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        code, text = _run(["adapt", *args])
    assert code == 130, text
    return text


def _digests(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

