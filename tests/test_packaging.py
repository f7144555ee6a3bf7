"""What a non-editable install gets: the packages, the export profiles and the stage-1 checkpoint; Python 3.10 support."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROFILES = sorted(p.name for p in (ROOT / "export").glob("*.toml"))
CHECKPOINTS = sorted(p.name for p in (ROOT / "lway_rt" / "degae" / "checkpoints").iterdir()
                     if p.suffix in (".safetensors", ".md"))


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _subpackages() -> set[str]:
    """Every folder with an __init__.py under lway_rt/, as dotted names."""
    return {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lway_rt").rglob("__init__.py")
            if "__pycache__" not in p.parts}


def test_the_repository_has_what_the_wheel_must_carry():
    assert {"cpu.toml", "desktop-fp16.toml", "jetson-orin-trt10.toml"} <= set(PROFILES)
    assert any(n.endswith(".safetensors") for n in CHECKPOINTS) and "README.md" in CHECKPOINTS


def test_pyproject_lists_every_package_and_maps_the_profiles():
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    packages = setuptools_cfg["packages"]
    assert isinstance(packages, list), "packages are listed by hand (packages.find cannot map export/)"
    assert _subpackages() <= set(packages), f"add {sorted(_subpackages() - set(packages))} to pyproject.toml"
    assert {"lway_rt.profiles", "lway_rt.degae.checkpoints"} <= set(packages)
    assert setuptools_cfg["package-dir"] == {"lway_rt.profiles": "export"}
    assert setuptools_cfg["package-data"]["lway_rt.profiles"] == ["*.toml"]
    # an editable install imports lway_rt.profiles from export/ only when it is a regular package
    assert (ROOT / "export" / "__init__.py").is_file()


def test_profiles_come_from_the_package_and_the_variable_overrides(tmp_path, monkeypatch):
    from lway_rt.export.profile import list_profiles, load_profile, profiles_dir

    monkeypatch.delenv("LWAYRT_PROFILES", raising=False)
    import lway_rt.profiles

    assert profiles_dir() == Path(lway_rt.profiles.__file__).resolve().parent
    assert set(list_profiles()) == {Path(n).stem for n in PROFILES}
    (tmp_path / "mine.toml").write_text('precision = "fp16"\n', encoding="utf-8")
    monkeypatch.setenv("LWAYRT_PROFILES", str(tmp_path))
    assert profiles_dir() == tmp_path and list_profiles() == ["mine"]
    assert load_profile("mine").precision == "fp16"


def test_an_uninstalled_source_tree_finds_export(tmp_path):
    """PYTHONPATH=<checkout> without installing (-S: no site-packages, so no editable install): export/ is used."""
    env = {k: v for k, v in os.environ.items() if k != "LWAYRT_PROFILES"}
    env["PYTHONPATH"] = str(ROOT)
    if sys.version_info < (3, 11):  # TOML comes from tomli there, a dependency in site-packages, which -S leaves out
        import tomli

        env["PYTHONPATH"] += os.pathsep + str(Path(tomli.__file__).parent.parent)
    res = subprocess.run([sys.executable, "-S", "-c", "import lway_rt.export.profile as p, sys; "
                          "print(p.profiles_dir()); print(sys.modules['lway_rt'].__file__)"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    found, package = res.stdout.splitlines()
    assert Path(package) == ROOT / "lway_rt" / "__init__.py"
    assert Path(found) == ROOT / "export"


# ---------------------------------------------------------------- Python 3.10: tomli when tomllib is missing

def test_tomli_is_a_dependency_below_python_3_11():
    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    (tomli,) = [r for r in reqs if r.name == "tomli"]
    assert tomli.marker is not None
    assert tomli.marker.evaluate({"python_version": "3.10"}) and not tomli.marker.evaluate({"python_version": "3.11"})
    assert _pyproject()["project"]["requires-python"] == ">=3.10"


def test_toml_reading_falls_back_to_tomli(tmp_path, monkeypatch):
    """lway_rt/io/toml_files.py run as on Python 3.10: no tomllib, a tomli module (here tomllib's functions)."""
    from lway_rt.errors import InputError

    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` raises ModuleNotFoundError, as on 3.10
    calls = []
    fake = types.ModuleType("tomli")
    fake.TOMLDecodeError = tomllib.TOMLDecodeError
    fake.loads = lambda text: calls.append(text) or tomllib.loads(text)
    monkeypatch.setitem(sys.modules, "tomli", fake)
    spec = importlib.util.spec_from_file_location("_toml_files_py310", ROOT / "lway_rt" / "io" / "toml_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # a fresh copy: the imported lway_rt.io.toml_files is left alone
    assert module.tomllib is fake
    good = tmp_path / "good.toml"
    good.write_text("opset = 18\n", encoding="utf-8")
    assert module.read_toml(good, "export profile") == {"opset": 18} and calls
    bad = tmp_path / "bad.toml"
    bad.write_text("opset = \n", encoding="utf-8")
    with pytest.raises(InputError, match="is not valid TOML"):
        module.read_toml(bad, "export profile")


# ---------------------------------------------------------------- the wheel

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built offline from a copy of the sources (building in place would leave build/ behind)."""
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("lway_rt", "export"):
        shutil.copytree(ROOT / name, src / name, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                          str(out), str(src)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (path,) = out.glob("lway_rt-*.whl")
    return path


@pytest.mark.slow
def test_wheel_carries_packages_profiles_and_checkpoint(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in _subpackages():
        assert f"{pkg.replace('.', '/')}/__init__.py" in names, f"{pkg} is missing from the wheel"
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lway_rt").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    for profile in PROFILES:
        assert f"lway_rt/profiles/{profile}" in names, f"export/{profile} is missing from the wheel"
    for ckpt in CHECKPOINTS:
        assert f"lway_rt/degae/checkpoints/{ckpt}" in names
    assert not any(n.startswith("export/") for n in names)  # no top-level `export` package in site-packages
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: tomli>=1.1; python_version < \"3.11\"" in metadata


@pytest.mark.slow
def test_installed_wheel_finds_its_profiles(wheel, tmp_path):
    """The wheel unpacked as into site-packages, beside an unrelated export/ folder that must not be taken."""
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    (site / "export").mkdir()
    (site / "export" / "unrelated.toml").write_text("opset = 18\n", encoding="utf-8")
    script = """
import json, sys
import lway_rt
from lway_rt.export.profile import list_profiles, load_profile, profiles_dir
from lway_rt.cli import main
out = {"package": lway_rt.__file__, "dir": str(profiles_dir()), "names": list_profiles(),
       "cpu": load_profile("cpu").source}
print(json.dumps(out))
sys.argv = ["lwayrt", "export", "--profile", "nonexistent", "--model", "realesr-animevideov3", "--out", sys.argv[1]]
main()
"""
    env = {k: v for k, v in os.environ.items() if k not in ("LWAYRT_PROFILES", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), LWAYRT_HOME=str(tmp_path / "home"))
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert res.stdout.strip(), res.stderr
    found = json.loads(res.stdout.splitlines()[0])
    assert Path(found["package"]).parent == site / "lway_rt"  # the wheel's copy, not the editable one
    assert Path(found["dir"]) == site / "lway_rt" / "profiles"
    assert found["names"] == sorted(Path(n).stem for n in PROFILES)
    assert Path(found["cpu"]) == site / "lway_rt" / "profiles" / "cpu.toml"
    assert res.returncode == 1
    assert "unknown export profile 'nonexistent'" in res.stderr + res.stdout
    assert "cpu, desktop-fp16, jetson-orin-trt10" in res.stderr + res.stdout


# ---------------------------------------------------------------- make setup

def _torch_cpu_index(monkeypatch, urlopen):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    spec = importlib.util.spec_from_file_location("_torch_cpu_index", ROOT / "tools" / "torch_cpu_index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing it probes nothing
    return module


def test_torch_cpu_index_warns_when_unreachable_and_help_stays_offline(monkeypatch, capsys):
    import urllib.error

    def unreachable(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    module = _torch_cpu_index(monkeypatch, unreachable)
    assert module.main([]) == 0
    out, err = capsys.readouterr()
    assert out == ""  # pip gets no extra arguments
    assert err.startswith("warning: ") and "unreachable" in err and len(err.strip().splitlines()) == 1

    class Reachable:
        def close(self):
            pass

    module = _torch_cpu_index(monkeypatch, lambda url, timeout=None: Reachable())
    assert module.main([]) == 0
    assert capsys.readouterr().out.strip() == "--index-url https://download.pytorch.org/whl/cpu"

    def no_network(url, timeout=None):
        raise AssertionError("--help must not touch the network")

    module = _torch_cpu_index(monkeypatch, no_network)
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0 and "CPU-only build of torch" in capsys.readouterr().out
    assert module.main(["--installed", "torch"]) == 0  # this interpreter has torch
    assert module.main(["--installed", "torch==0.0.1"]) == 1
    assert module.main(["--installed", "no-such-package-here"]) == 1


def _make_n(tmp_path, *settings) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    res = subprocess.run(["make", "-n", "-C", str(ROOT), "setup", f"VENV={tmp_path / 'venv'}", *settings],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_make_setup_reinstalls_when_extras_or_torch_change(tmp_path):
    def stamp(text):
        (line,) = [ln for ln in text.splitlines() if ln.startswith("printf ")]
        return line.rsplit(" > ", 1)[1]

    plain = _make_n(tmp_path)
    gpu = _make_n(tmp_path, "EXTRAS=models,samples,gpu,plot,dev")
    torch = _make_n(tmp_path, "TORCH=torch==2.12.0")
    assert len({stamp(plain), stamp(gpu), stamp(torch)}) == 3  # another stamp: installed again
    assert stamp(plain) == stamp(_make_n(tmp_path))
    assert '-e ".[models,samples,gpu,plot,dev]"' in gpu
    assert "nvidia-smi -L" in plain and "command -v nvidia-smi" not in plain  # a driver and a GPU, not the tool
    assert f"/usr/bin/python3.10 -m venv {tmp_path / 'venv'}" in _make_n(tmp_path, "PYTHON=/usr/bin/python3.10")
    assert '--installed "torch"' in plain and '--installed "torch==2.12.0"' in torch  # an asked-for torch replaces
    # the ONNX Runtime build the extras do not ask for goes first (the two share one module): the recipe's line run
    # with pip replaced by echo
    def removed(text):
        start = text.index('case ",')
        line = text[start:text.index("esac", start) + 4].replace("\\\n", "")
        pip = f"{tmp_path / 'venv'}/bin/python -m pip"
        line = line.replace(pip, "echo").replace(">/dev/null 2>&1", "")
        return subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=10).stdout.split()
    assert removed(gpu) == ["uninstall", "-y", "-q", "onnxruntime"]
    assert removed(plain) == ["uninstall", "-y", "-q", "onnxruntime-gpu"]


def test_the_tensorrt_extra_installs_what_an_engine_is_built_from():
    """An engine is built from the ONNX export, which needs onnx and onnxscript: the trt extra lacked both, and the
    onnx extra that has them brings CPU onnxruntime, which conflicts with the gpu extra's."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=;\[ ]", req, maxsplit=1)[0] for req in extras["trt"]}
    assert {"tensorrt", "onnx", "onnxscript"} <= names and "onnxruntime" not in names, extras["trt"]
