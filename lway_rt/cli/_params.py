"""Parameter types and console helpers shared by the subcommands."""

from __future__ import annotations

import os

import click


class PathParam(click.Path):
    """``click.Path`` that refuses an empty value: ``-o ""`` (an unset shell variable) would otherwise mean the
    current folder, and an empty INPUT would upscale or adapt on whatever the current folder holds."""

    def __init__(self, *args, names_a_file: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.names_a_file = names_a_file  # a file's path whose folder case the command refuses itself, in its words

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            if not self.dir_okay or self.names_a_file:  # '.' would only fail next as "is a directory"
                self.fail("is empty: name a file", param, ctx)
            self.fail(f"is empty: name a {'file or folder' if self.file_okay else 'folder'} ('.' for the current folder)",
                      param, ctx)
        if isinstance(value, str) and value.startswith("~"):  # quoted, or after --opt= where the shell leaves it: the
            value = os.path.expanduser(value)  # home folder, as upscale's inputs and --sup-data already took it
        bare = value.rstrip("/" + os.sep) if isinstance(value, str) else ""
        if bare and bare != value and not os.path.isdir(value):  # pathlib drops the slash: "r dir/" became a file
            if not self.dir_okay or self.names_a_file:
                self.fail(f"{value} ends in /, which names a folder: name a file", param, ctx)
            if os.path.exists(bare):  # "photo.png/": the system would say "Not a directory"
                self.fail(f"{value} ends in /, but {bare} is a file, not a folder: drop the /", param, ctx)
        if self.dir_okay and not self.file_okay and isinstance(value, str) and os.path.isfile(value):
            # (click said "Directory 'a.png' is a file." and no more)
            self.fail(f"{value} is a file, and this option names a folder: name a folder", param, ctx)
        return super().convert(value, param, ctx)


class NameParam(click.ParamType):
    """A model or profile given by store name or path: refuses an empty value (an unset shell variable) with the same
    message as ``PathParam``, instead of whatever the lookup of "" would say."""

    name = "text"

    def __init__(self, what: str = "a model or its file"):
        self.what = what

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail(f"is empty: name {self.what}", param, ctx)
        return value


NAME = NameParam()
PROFILE = NameParam("a profile or its file")


class DeviceParam(click.ParamType):
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``, checked as the command line is read, so a misspelt one is a usage
    error (status 2) in every command, as serve-bench's choice of devices is (it was 1 in four commands: 56C-3).
    Whether the device is there is asked later, by the command."""

    name = "device"

    def convert(self, value, param, ctx):
        from lway_rt.errors import InputError
        from lway_rt.runtime.device import check_device_spelling

        try:
            return check_device_spelling(value)
        except InputError as exc:  # (its words, less the flag click names itself)
            self.fail(str(exc).removeprefix("--device "), param, ctx)


DEVICE = DeviceParam()


class FiniteFloat(click.ParamType):
    """A float option that refuses nan and inf: every comparison with nan is false, so a threshold of nan would pass
    (or fail) every check, and a weight of nan would reach the optimiser."""

    name = "float"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE = FiniteFloat()


class FiniteOrOff(FiniteFloat):
    """A finite float, or ``off`` (kept as the string "off", so that it overrides a value from a config file): an
    option whose default is off, spelt as the other commands take it."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == "off":
            return "off"
        return super().convert(value, param, ctx)


FINITE_OR_OFF = FiniteOrOff()


def cap_word(ctx, param, value):
    """``--detail-cap``'s ``auto`` / ``off`` in any case, as adapt's ``--detail-cap OFF`` is taken (review 56C-4); a
    number is left for the command's own check."""
    word = value.strip().lower() if isinstance(value, str) else value
    return word if word in ("auto", "off") else value


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that also refuses nan (every comparison with nan is false, so a range lets it through)."""

    def convert(self, value, param, ctx):
        return super().convert(FINITE.convert(value, param, ctx), param, ctx)


def typed(ctx: click.Context, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) that the user gave, not left at their defaults, as their flags
    (``--stage1``), in the order given: for refusing an option the chosen settings would ignore."""
    from click.core import ParameterSource

    flags = {p.name: p.opts[0] if p.opts[0].startswith("--") else max(p.opts, key=len) for p in ctx.command.params}
    return [flags[n] for n in names if ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT)]


def and_list(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def on_a_terminal(console) -> bool:
    """Whether a rich ``console`` writes to a real terminal (an animated bar, a width to fit). Rich calls any stream a
    terminal when FORCE_COLOR is set, as many CI configurations set it: its log file then got a bar's redraws (18 KB
    for a dozen images) and tables cut to 80 columns."""
    try:
        return bool(console.is_terminal and console.file.isatty())
    except (AttributeError, ValueError, OSError):  # a closed or replaced stream
        return False
