"""``import lway_rt`` and every ``--help`` stay light (the Polygraphy rule): no onnx, onnxruntime,
tensorrt, polygraphy, matplotlib, scikit-image, and no stage-1/stage-2 training code. Each check
runs in a fresh interpreter, so what other tests imported cannot hide a heavy import."""

from __future__ import annotations

import importlib.util
import json
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lway_rt
from lway_rt.cli import COMMANDS

HEAVY = ("onnx", "onnxruntime", "onnxscript", "tensorrt", "polygraphy", "matplotlib", "skimage")
TRAINING = ("lway_rt.degae", "lway_rt.adapt")

_PROBE = r"""
import json, sys
heavy, training, args = json.loads(sys.argv[1])
if args is None:
    import lway_rt
else:
    from click.testing import CliRunner
    from lway_rt.cli import main
    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        print(json.dumps({"error": result.output + repr(result.exception)}))
        sys.exit(0)
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in heavy or any(m == t or m.startswith(t + ".") for t in training))
print(json.dumps({"loaded": loaded}))
"""


def _probe(args: list[str] | None) -> dict:
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps([HEAVY, TRAINING, args])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _existing_commands() -> list[str]:
    return [name for name, (module, _) in COMMANDS.items()
            if importlib.util.find_spec(f"lway_rt.cli.{module}") is not None]


def test_import_lway_rt_is_light():
    assert _probe(None) == {"loaded": []}


@pytest.mark.parametrize("args", [["--help"], ["--version"]] + [[c, "--help"] for c in _existing_commands()],
                         ids=lambda a: " ".join(a))
def test_help_is_light(args):
    out = _probe(args)
    assert "error" not in out, out.get("error")
    assert out["loaded"] == [], f"`lwayrt {' '.join(args)}` imported {out['loaded']}"


def test_group_subcommands_help_is_light():
    """Sub-subcommands (``lwayrt models list --help`` …) obey the same rule."""
    import click

    from lway_rt.cli import main

    ctx = click.Context(main)
    for name in _existing_commands():
        cmd = main.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            for sub in cmd.list_commands(click.Context(cmd)):
                out = _probe([name, sub, "--help"])
                assert "error" not in out, out.get("error")
                assert out["loaded"] == [], f"`lwayrt {name} {sub} --help` imported {out['loaded']}"


def test_console_script_help_runs():
    exe = Path(sys.executable).with_name("lwayrt")
    exe = str(exe) if exe.exists() else shutil.which("lwayrt")
    assert exe, "the lwayrt console script is not installed (pip install -e .)"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert name in proc.stdout


def test_every_submodule_imports():
    """A module that fails to import (syntax error, optional package at module top) is a bug."""
    names = [m.name for m in pkgutil.walk_packages(lway_rt.__path__, "lway_rt.")]
    code = ("import importlib, json, sys, traceback\nbad = {}\n"
            "for n in json.loads(sys.argv[1]):\n"
            "    try:\n        importlib.import_module(n)\n"
            "    except Exception as e:\n        bad[n] = f'{type(e).__name__}: {e}'\n"
            "print(json.dumps(bad))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(names)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}
    assert "lway_rt.upscale" in names and "lway_rt.runtime.tiling" in names


def test_every_path_parameter_refuses_an_empty_value():
    """Each subcommand's file/folder parameters use PathParam, so ``""`` (an unset shell variable) is refused rather
    than read as the current folder."""
    import click

    from lway_rt.cli import main
    from lway_rt.cli._params import PathParam

    ctx = click.Context(main)
    seen = 0
    for name in COMMANDS:
        cmd = main.get_command(ctx, name)
        for sub in (cmd.commands.values() if isinstance(cmd, click.Group) else [cmd]):
            for param in sub.params:
                if isinstance(param.type, click.Path):
                    seen += 1
                    assert isinstance(param.type, PathParam), f"{name} {param.name}"
                    with pytest.raises(click.BadParameter, match="is empty"):
                        param.type.convert("", param, ctx)
    assert seen >= 20
