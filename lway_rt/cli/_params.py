"""Parameter types shared by the subcommands."""

from __future__ import annotations

import click


class PathParam(click.Path):
    """``click.Path`` that refuses an empty value: ``-o ""`` (an unset shell variable) would otherwise mean the
    current folder, and an empty INPUT would upscale or adapt on whatever the current folder holds."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty: name a file or folder ('.' for the current folder)", param, ctx)
        return super().convert(value, param, ctx)


class NameParam(click.ParamType):
    """A model or profile given by store name or path: refuses an empty value (an unset shell variable) with the same
    message as ``PathParam``, instead of whatever the lookup of "" would say."""

    name = "text"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty: name a model, a profile or a file", param, ctx)
        return value


NAME = NameParam()
