"""What the benchmark scripts share about their command lines and their result files.

- Argument types (``positive_int``, ``nonnegative_int``): a bad value is argparse's one-line usage error, not a
  traceback from deep inside the run.
- The output rule (``add_out`` / ``resolve_out``), the same in every script: a file named with ``--out`` is written
  (replaced if it exists: naming it is asking for it); without ``--out`` the script writes its default file, most of
  them committed results under ``benchmarks/results/``, and refuses, before any work, to replace one that exists
  unless given ``--force``.
- ``write_json``: strict JSON (NaN / infinity as null) written beside its destination and renamed over it, so a
  killed run leaves the earlier file or the new one, never half of one.
- ``command_line``: the command a script records, shell-quoted so that it can be pasted back.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _whole_number(value: str, least: int, what: str) -> int:
    """``value`` as an int of at least ``least``, or argparse's usage error saying ``what`` it must be."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"{value!r} is {what}")
    return n


def positive_int(value: str) -> int:
    """argparse type: a whole number >= 1."""
    return _whole_number(value, 1, "not a positive whole number (1 or more)")


def nonnegative_int(value: str) -> int:
    """argparse type: a whole number >= 0."""
    return _whole_number(value, 0, "negative (0 or more)")


def _shown(path: Path | str) -> str:
    p = Path(path)
    return str(p.relative_to(ROOT)) if p.is_absolute() and p.is_relative_to(ROOT) else str(p)


def add_out(ap: argparse.ArgumentParser, default: Path | str | None, what: str = "the results") -> None:
    """``--out FILE`` and ``--force`` by the output rule; ``default`` is where the results go without ``--out``
    (None: the script chooses it later and passes it to ``resolve_out``)."""
    shown = f" [{_shown(default)}]" if default is not None else ""
    ap.add_argument("--out", default=None, metavar="FILE",
                    help=f"write {what} here (replaced if it exists){shown}")
    ap.add_argument("--force", action="store_true",
                    help="without --out: replace the default output file if it exists (otherwise the script refuses)")
    if default is not None:
        ap.set_defaults(default_out=str(default))


def resolve_out(ap: argparse.ArgumentParser, args: argparse.Namespace, default: Path | str | None = None,
                resumed=()) -> Path:
    """Set and return ``args.out``: the file named with ``--out``, else the default, which must not exist unless
    ``--force`` was given or it is among ``resumed`` (files the run reads back and carries on, quality_sweep.py's
    ``--reuse``). Stops with a usage error otherwise, before anything has run."""
    if args.out is not None:
        args.out = str(Path(args.out))
        return Path(args.out)
    path = Path(default if default is not None else args.default_out)
    again = {Path(p).resolve() for p in resumed or ()}
    if path.exists() and not args.force and path.resolve() not in again:
        ap.error(f"{_shown(path)} exists (a committed result?): give --force to replace it, or --out FILE to write "
                 "elsewhere")
    args.out = str(path)
    return path


def write_json(path: Path | str, obj, indent: int | None = 1) -> Path:
    """``obj`` as strict JSON (NaN / infinity as null) at ``path``, written atomically; its folder is made."""
    from lway_rt.io.weights import atomic_path, finite

    text = json.dumps(finite(obj), indent=indent, allow_nan=False) + "\n"  # first: a bad value leaves no trace
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def command_line(script: str, argv=None) -> str:
    """``python benchmarks/SCRIPT ARGS...``, shell-quoted; ARGS are ``argv`` (a call from Python) or the process's."""
    return shlex.join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])


def add_threads(ap: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's intra-op threads for the run (default: torch's own choice)."""
    ap.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's choice)")


def parse_run_args(ap: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """The arguments of a script built with ``add_out`` and ``add_threads``: parsed, its output resolved by the output
    rule before any work, and ``--threads`` applied."""
    args = ap.parse_args(argv)
    resolve_out(ap, args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return args
