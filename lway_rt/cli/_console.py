"""The rich console the commands print tables and progress with."""

from __future__ import annotations

import errno

from rich.console import Console


class PipeConsole(Console):
    """A rich console whose reader going away (``| head``, a pipe closed) is said as the command group says it for
    any output, with a line and status 141: rich's own ends the run with status 1 and no word."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")
