"""Reading the TOML files users write (export profiles, adapt settings): every way it can go wrong is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lway_rt.errors import InputError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package (a dependency there)
    import tomli as tomllib

__all__ = ["read_toml"]


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The table in ``path``; ``what`` names the file in messages ("export profile", "config file")."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a folder: give a .toml file")
    try:
        text = p.read_text(encoding="utf-8-sig")  # (a byte-order mark, as Notepad writes, is not TOML's)
    except FileNotFoundError:
        raise InputError(f"{what} {p} does not exist") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {p} is not UTF-8 text (TOML files are): save it as UTF-8, or check that it is the "
                         "file you meant") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{what} {p} is not valid TOML: {exc}") from None
