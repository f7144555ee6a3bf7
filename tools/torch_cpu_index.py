"""Print pip arguments that select a CPU-only build of torch, when the PyTorch CPU index is reachable.

Used by the Makefile on machines without a working NVIDIA GPU, so a fresh set-up never pulls the
multi-GB CUDA build. When the index cannot be reached it prints nothing on stdout (then pip takes
the registry's own build: on Linux from PyPI that is the CUDA build, on machines that mirror a CPU
wheel locally the CPU build) and says so in one line on stderr.

``--installed SPEC`` checks instead, without the network, whether the torch installed in this
interpreter meets the requirement SPEC (``torch`` for any version): exit status 0 if it does, 1 if not.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request

URL = "https://download.pytorch.org/whl/cpu/torch/"


def _installed_meets(spec: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # a fresh venv has pip, which carries its own copy
        from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    try:
        req = Requirement(spec)
    except InvalidRequirement:  # a URL or a file: install it
        return False
    try:
        have = version(req.name)
    except PackageNotFoundError:
        return False
    # a local label (2.13.0+cu128) meets ==2.13.0, so a CUDA build of the asked version stays
    return req.specifier.contains(have, prereleases=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--installed", metavar="SPEC", help="exit 0 if the installed torch meets SPEC, else 1")
    args = parser.parse_args(argv)  # --help exits here, before any network access
    if args.installed is not None:
        return 0 if _installed_meets(args.installed) else 1
    try:
        urllib.request.urlopen(URL, timeout=4).close()
    except Exception as exc:
        print(f"warning: the PyTorch CPU index ({URL}) is unreachable ({exc.__class__.__name__}: "
              f"{getattr(exc, 'reason', exc)}); pip installs the torch build it finds first instead: a CPU build "
              "where this machine keeps one, else PyPI's, which on Linux is the multi-GB CUDA build", file=sys.stderr)
        return 0
    print(f"--index-url {URL.rsplit('/torch/', 1)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
