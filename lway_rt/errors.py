"""One error family for the whole library.

Every error a user can cause (bad input, missing model, missing optional package) is a
`LwayError`; the CLI turns it into a one-line message and a non-zero exit. Anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import shlex


def listing(items, first: int, sep: str = ", ") -> str:
    """The first ``first`` of ``items`` joined by ``sep``, then "and K more" for the rest: what a one-line message
    names of a long list."""
    items = [str(i) for i in items]
    return sep.join(items[:first]) + (f" and {len(items) - first} more" if len(items) > first else "")


def duration(seconds: float) -> str:
    """A time for a person: "45 s", "3 min 20 s", "1 h 05 min"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def shell_word(text) -> str:
    """``text`` (a path) quoted as one word of a suggested shell command. A name that is not valid UTF-8 (the file
    system's bytes, held by Python as surrogate escapes) is written in bash's $'...' form, byte by byte, so the
    command reaches the file; shlex.quote printed it as an unusable \\udcXX."""
    text = str(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(text)
        return "$'" + "".join(chr(b) if 32 <= b < 127 and b not in b"\\'" else f"\\x{b:02x}" for b in raw) + "'"
    return shlex.quote(text)


class LwayError(Exception):
    """Base class: a problem the user can fix. The message says how."""


class InputError(LwayError):
    """An input file or folder is missing, unreadable, corrupt or unsuitable."""


class ModelError(LwayError):
    """A model name, checkpoint or state dict cannot be used."""


class DamagedFileError(ModelError):
    """A weights file is empty or cut: it cannot be read at all (``io.weights.load_state_file``)."""


class MissingDependencyError(LwayError):
    """An optional package is needed for this feature."""

    def __init__(self, package: str, extra: str, feature: str, alternative: str | None = None):
        msg = f"{feature} needs the '{package}' package: install the '{extra}' extra (pip install 'lway_rt[{extra}]')"
        if alternative:
            msg += f", or {alternative}"
        super().__init__(msg)
        self.package = package
        self.extra = extra


class OutputError(LwayError):
    """An output path cannot be written."""


class WriteFailed(OutputError):
    """Writing ``path`` failed part-way (a full disk, a quota, a file-size limit). The system's words (``reason``) and
    the advice's ``folder`` are kept apart from the message, so a caller can say it of the file the user asked for
    (not a temporary one) or add what was kept."""

    def __init__(self, path, reason: str, folder: str = "output folder"):
        super().__init__(f"cannot write {path}: {reason}; make room, or choose another {folder}")
        self.path, self.reason, self.folder = path, reason, folder

    def __reduce__(self):  # (pickled as it was made: across processes, as any error)
        return type(self), (self.path, self.reason, self.folder)


class TrainingError(LwayError):
    """Training or adaptation cannot go on (diverged, NaN, interrupted beyond recovery)."""


class Interrupted(LwayError):
    """The user stopped a long run (Ctrl-C); the message says what was kept and how to continue. Exit status 130."""

    exit_code = 130


STOPS: list[int] = []  # the signals that asked this command to stop (SIGINT, SIGTERM, SIGHUP), in order


class _Steps:
    """What ``finishing_steps`` yields: the loop sets ``unsaved`` while it holds steps no checkpoint has saved;
    ``step`` and ``kept`` are the words the stop's message uses for them (a video's frames and segments)."""

    unsaved = False
    step = "step"
    kept = "the last checkpoint"


_FINISHING: list[_Steps] = []  # the loops running inside ``finishing_steps``, innermost last


@contextlib.contextmanager
def finishing_steps():
    """Within this, while the loop says it holds unsaved steps (``.unsaved`` of what it yields), the first stop signal
    does not cut the step in hand short: the CLI's handler records it in ``STOPS`` and returns (``finishes_steps``),
    and the loop, which checks ``STOPS`` between steps, saves the state of the last whole step and stops. A run killed
    a step in had lost every step since its last periodic checkpoint (up to ``--checkpoint-every`` of them). A second
    signal, or one while nothing is unsaved (setting up, just after a checkpoint), stops at once, as before."""
    steps = _Steps()
    _FINISHING.append(steps)
    try:
        yield steps
    finally:
        _FINISHING.remove(steps)


def finishing_words() -> tuple[str, str]:
    """(what a step is, what a stop at once keeps) in the words of the innermost loop that finishes its steps."""
    steps = _FINISHING[-1] if _FINISHING else _Steps()
    return steps.step, steps.kept


def finishes_steps() -> bool:
    """Whether a loop inside ``finishing_steps`` holds unsaved steps (and no ``stopping_at_once`` is around it): a
    first stop then waits for the step in hand."""
    return bool(_FINISHING) and all(steps.unsaved for steps in _FINISHING)


@contextlib.contextmanager
def stopping_at_once():
    """Within this, a stop never waits for a step: for runs nobody resumes (the demo's adaptation, which starts over).
    (An entry whose ``unsaved`` stays false, so ``finishes_steps`` is false whatever a loop inside it says.)"""
    with finishing_steps():
        yield


def stop_if_asked() -> None:
    """Raise ``KeyboardInterrupt`` if a signal has asked the command to stop (``STOPS``; the CLI's handlers record it).

    The handler raises it as the signal arrives, but CPython raises it wherever the main thread runs Python code next,
    and that may be a finalizer (a ``__del__``, a weakref callback, a generator the garbage collector closes), where it
    is printed as "Exception ignored" and dropped: the run went on to its end as if no signal had come. A long loop
    calls this once a step, so a stop asked for stops it within a step."""
    if STOPS:
        raise KeyboardInterrupt


class ParityError(LwayError):
    """An exported model does not reproduce the reference output within tolerance."""


class Notice(UserWarning):
    """Something the user should know that does not stop the work (a store file of the user's under a packaged
    model's name, say): raised with ``warnings.warn``; the CLI prints it once as a one-line note."""


def note(message: str) -> None:
    """Warn with a ``Notice`` attributed to the first caller outside lway_rt (the line of a script that made an
    ``Upscaler``, say), however deep in the package it is raised: a fixed ``stacklevel`` pointed at a line inside
    lway_rt where the API called it (57E-3). Python's own rules then apply as to any warning of that line (once per
    line by default, the caller's filters)."""
    import os
    import sys
    import warnings

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    level, frame = 2, sys._getframe(1)  # (level 1 is this function: its caller is 2)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        level, frame = level + 1, frame.f_back
    warnings.warn(Notice(message), stacklevel=level)


def require(module: str, extra: str, feature: str, alternative: str | None = None):
    """Import an optional package, or raise an error that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, feature, alternative) from exc
