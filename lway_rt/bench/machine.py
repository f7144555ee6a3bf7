"""What machine a benchmark ran on, with which packages, and how much memory it used.

Recorded with every report because absolute times only mean something on the machine that
produced them (and, on a shared machine, at the load it had then).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import shutil
import subprocess
from pathlib import Path

import torch

__all__ = ["cpu_model", "machine_info", "package_versions", "load_average", "rss_mb", "reset_peak_rss", "peak_rss_mb", "PACKAGES",
           "write_benchmark_record", "native_bf16"]

PACKAGES = ("lway_rt", "torch", "numpy", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorrt",
            "polygraphy", "safetensors", "click", "rich", "matplotlib")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    """The SIMD extensions that decide which kernels run (AVX2, AVX-512, AMX, NEON ...)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "asimd", "sve",
                          "bf16")
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


#: CPU flags of bf16 arithmetic instructions: x86's AVX512-BF16 and AMX-BF16, Arm's BF16 (FEAT_BF16)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def native_bf16() -> bool:
    """Whether /proc/cpuinfo lists a bf16 arithmetic extension; False where it lists none or cannot be read. Without
    one, bf16 kernels run on slow emulation paths (a bf16 matmul peak probe took ~10 minutes on an AVX2 EPYC)."""
    return any(f in NATIVE_BF16_FLAGS for f in _cpu_flags())


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_gb(meminfo: Path = Path("/proc/meminfo"), limits=CGROUP_LIMITS) -> float | None:
    """The memory this process may use, GiB: the machine's (MemTotal), or its control group's limit where lower (a
    container given 8 GiB of a 64 GiB host has 8: the host's size said more than a run here could have); None where
    /proc/meminfo is not there."""
    total = None
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if total is None:
        return None
    for path in limits:  # cgroup v2's file, then v1's ("max", or a huge number, where there is no limit)
        try:
            limit = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        total = min(total, limit)
    return round(total / 2**30, 1)


def _gpus() -> list[dict]:
    if not torch.cuda.is_available():
        return []
    driver = None
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout.split()
            driver = out[0] if out else None
        except (OSError, subprocess.SubprocessError):
            driver = None
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                     "memory_mb": int(p.total_memory // 2**20), "driver": driver, "cuda_runtime": torch.version.cuda})
    return gpus


def machine_info() -> dict:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "memory_gb": memory_gb(),
        "gpus": _gpus(),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the distributions ``names`` (None where absent), via importlib.metadata; with lway_rt,
    also ``lway_rt_commit``, the code that ran (``source_commit``)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if "lway_rt" in names:
        out["lway_rt_commit"] = source_commit()
    return out


def source_commit() -> str | None:
    """The commit of the lway_rt source that is running (``git describe --always --dirty``: ``-dirty`` with changes
    not committed), where it runs from a git checkout; None otherwise (an installed wheel). The version number alone
    is the same for every commit, and an editable install reports the installed tree's, not a clone's on PYTHONPATH."""
    import lway_rt

    root = Path(lway_rt.__file__).resolve().parent.parent
    try:
        done = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                              capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode or not (root / ".git").exists():  # (a wheel unpacked inside someone's repository is not it)
        return None
    return done.stdout.strip() or None


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0, writing 5 to clear_refs). False if unsupported,
    in which case ``peak_rss_mb`` is the peak of the whole process so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:  # no /proc: getrusage's maximum (kilobytes on Linux, bytes on macOS)
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if platform.system() == "Darwin":
            kb //= 1024
    return kb / 1024


def write_benchmark_record(path: str | Path, fmt: str, load_start: list[float], machine_extra: dict | None = None,
                           **fields) -> dict:
    """Write a benchmark script's JSON: its format, the command that ran it, the machine (with the load average at
    the start and now), package versions and Python, then ``fields``. Returns what was written.

    Strict JSON: a non-finite number (NaN, infinity: a ratio over a zero time, say) is written as null, which every
    JSON reader takes. The file is written beside its destination and renamed over it, so a killed run leaves the
    earlier record or this one, never half of one."""
    import json
    import shlex
    import sys

    from lway_rt.io.weights import atomic_path, finite

    out = {"format": fmt, "command": shlex.join([sys.executable.split("/")[-1], *sys.argv]),
           "machine": {**machine_info(), "load_average_start": load_start, "load_average_end": load_average(),
                       **(machine_extra or {})},
           "packages": package_versions(), "python": platform.python_version(), **fields}
    out = finite(out)
    text = json.dumps(out, indent=1, allow_nan=False) + "\n"  # before the temporary file: a bad value leaves no trace
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out

