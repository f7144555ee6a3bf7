"""The ``lwayrt`` command line. Thin by rule: parse, call the library, print.

Subcommands live one per module and are imported only when invoked, so ``lwayrt --help`` needs
only the base dependencies. Library errors (``LwayError``) become a one-line message and exit
status 1 (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP, saying what was kept); a traceback means a bug. click's
own usage errors (an unknown option, a bad value) keep their exit status 2 and come as one line too.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import re
import signal
import sys
import threading
import warnings

import click

from lway_rt import __version__
from lway_rt.errors import STOPS, Interrupted, LwayError, Notice, finishes_steps, finishing_words

# command name -> (module under lway_rt.cli, short help shown by `lwayrt --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("models", "List and import pretrained SR models into the local store."),
    "upscale": ("upscale", "Super-resolve images or folders with a model (tiled, any size)."),
    "upscale-video": ("upscale_video", "Super-resolve video files frame by frame, keeping their audio."),
    "train-degae": ("train_degae", "Train the stage-1 degradation encoder and reconstructor."),
    "eval-degae": ("eval_degae", "Evaluate a stage-1 checkpoint on held-out degradations."),
    "adapt": ("adapt", "Fine-tune an SR model on your own low-resolution images (LWay)."),
    "export": ("export", "Export a model to ONNX (fp32/fp16) and TensorRT, with parity checks."),
    "serve-bench": ("serve_bench", "Verified latency and throughput for each deployment backend."),
    "demo": ("demo", "Run the whole story on bundled photos: upscale, adapt, compare."),
}


def _one_line(exc: click.UsageError, where: str = "lwayrt") -> click.UsageError:
    """``exc`` shown as the library's errors are: one red ``error:`` line that names the command's help, instead of
    click's usage line, hint line, blank line and ``Error:`` line. The exception and its exit status (2) stay.
    ``where``: the command whose help to name when click gives the error no context (an option missing its value)."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):  # bare ``lwayrt``: the help is the answer
        return exc

    def show(file=None) -> None:
        command = exc.ctx.command_path if exc.ctx is not None else where
        message = re.sub(r"\s*\n\s*", " ", exc.format_message()).strip()  # its line breaks only: names keep their spaces
        hint = _model_flag_hint(exc) or _dash_name_hint(exc)
        message = (message.removesuffix(".") if hint else message) + hint
        click.secho(f"error: {message} (see '{command} --help')", fg="red", err=True, file=file)

    exc.show = show  # type: ignore[method-assign]
    return exc


def _model_flag_hint(exc: click.UsageError) -> str:
    """For a command that takes its model with -m and no argument (``export``, ``serve-bench``), given one as an
    argument (``lwayrt export adapted.safetensors``) and none with -m: how to give it. Empty for any other usage
    error, and for several extra arguments (click joins them with spaces, so which one is the model is a guess)."""
    from click.core import ParameterSource

    from lway_rt.errors import shell_word

    ctx = exc.ctx
    found = re.fullmatch(r"Got unexpected extra argument \((.+)\)", exc.message or "")
    if ctx is None or found is None:
        return ""
    params = ctx.command.params
    model = next((p for p in params if isinstance(p, click.Option) and "--model" in p.opts), None)
    if model is None or any(isinstance(p, click.Argument) for p in params):
        return ""
    if ctx.get_parameter_source(model.name) not in (None, ParameterSource.DEFAULT):  # -m given: the extra is not it
        return ""
    return f": the model goes after -m ({ctx.command_path} -m {shell_word(found[1])} ...)"


def _dash_name_hint(exc: click.UsageError) -> str:
    """For an unknown option that is the start of an argument naming a file (``lwayrt upscale -dash.png``: click
    reads ``-d``, then ``ash.png`` as its value): how to name that file. Empty for any other usage error. The
    argument is found in the command line as typed (``sys.argv``); a file there, or a name ending in a file
    suffix (``.png``, ``.safetensors``), counts as one."""
    if not isinstance(exc, click.NoSuchOption) or not exc.option_name:
        return ""
    flag = exc.option_name
    for word in _dash_words(sys.argv[1:]):
        named = word == flag if flag.startswith("--") else word.startswith(flag) and len(word) > len(flag)
        if named and (os.path.lexists(word) or re.search(r"\.[A-Za-z][A-Za-z0-9]{1,11}$", word)):
            return f": to name the file {word}, write {_dotted(word)}"
    return ""


def _dash_words(args: list[str], valued: set[str] = frozenset()):
    """The words of ``args`` that start with a dash, up to ``--`` (after which every word is an argument), leaving out
    the value of an option of ``valued`` (one that takes a value: ``-o -outdir``)."""
    for before, word in zip([None, *args], args):
        if word == "--":
            return
        if before not in valued and word.startswith("-"):
            yield word


def _dotted(word: str) -> str:
    """``./word`` as a shell takes it back (quoted where it holds a space or a quote)."""
    from lway_rt.errors import shell_word

    return shell_word(f"./{word}")


def _a_file_read_as_an_option(args: list[str], valued: set[str]) -> str | None:
    """An argument that names an existing file and reads as a short option with its value (``lwayrt upscale a.png
    -out.png -o x``: click takes ``-o ut.png``, then ``-o x``, and the file is dropped without a word): the one-line
    refusal, else None. Up to ``--``, after which every word is an argument; a word after an option of ``valued``
    (those that take a value: ``-o -outdir``) is that value."""
    for word in _dash_words(args, valued):
        if len(word) > 2 and word[1] != "-" and os.path.lexists(word):
            return (f"{word} names a file, and reads as the option {word[:2]} with the value {word[2:]}: to name the "
                    f"file, write {_dotted(word)}")
    return None


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and name not in COMMANDS and not name.startswith("-"):
            close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
            if close:
                ctx.fail(f"No such command {name!r}. Did you mean {close[0]!r}?")
        return super().resolve_command(ctx, args)

    def make_context(self, info_name, args, parent=None, **extra):
        sub = next((a for a in args if a in COMMANDS), None)
        command = self.get_command(None, sub) if sub else None
        valued = {name for p in (command.params if command else []) if isinstance(p, click.Option) and not p.is_flag
                  and not p.count for name in (*p.opts, *p.secondary_opts)}
        if said := _a_file_read_as_an_option(list(args), valued):
            raise _one_line(click.UsageError(said), f"lwayrt {sub}" if sub else "lwayrt")
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:  # ``lwayrt --bogus``
            raise _one_line(exc) from exc.__cause__

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"lway_rt.cli.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx, formatter):
        # Short help without importing every subcommand module.
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        _names_as_bytes()
        previous = _stop_on_signals()
        try:
            with warnings.catch_warnings():  # the library's notices as one-line notes, each once
                warnings.simplefilter("default", Notice)
                shown = warnings.showwarning

                def show(message, category, filename, lineno, file=None, line=None):
                    if issubclass(category, Notice):
                        click.secho(f"note: {message}", fg="yellow", err=True)
                    else:
                        shown(message, category, filename, lineno, file, line)

                warnings.showwarning = show
                return super().invoke(ctx)
        except click.UsageError as exc:  # a subcommand's options and arguments, or an unknown subcommand
            sub = ctx.invoked_subcommand  # (click names it before it parses the subcommand's options)
            raise _one_line(exc, f"{ctx.command_path} {sub}" if sub else ctx.command_path) from exc.__cause__
        except Interrupted as exc:
            _say(str(exc))
            ctx.exit(128 + ended if (ended := _terminated()) else exc.exit_code)
        except LwayError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:  # Ctrl-C outside a resumable loop: nothing half-written is left (atomic writes)
            _say("interrupted: the files it had finished are kept and none is left half-written; run the same command "
                 "again for the rest")
            ctx.exit(128 + ended if (ended := _terminated()) else 130)
        except Exception as exc:  # noqa: BLE001 - only running out of memory and unusable paths become a message here
            if (ended := _terminated()) and isinstance(exc, OSError):
                # the hangup that stopped the run closed the terminal, so a progress bar's last redraw there failed
                # (EIO) and replaced the stop; the stop is what happened
                _say(str(_stop_behind(exc) or "interrupted: the files it had finished are kept and none is left "
                     "half-written; run the same command again for the rest"))
                ctx.exit(128 + ended)
            if _reader_gone(exc):
                _say_the_reader_is_gone()
                ctx.exit(141)  # 128 + SIGPIPE, as a shell reports a program stopped by a closed pipe
            if _output_failed(exc):  # standard output on a full disk (> /dev/full) or a failing device: a line
                with contextlib.suppress(OSError, ValueError):
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the final flush fails no more)
                click.secho(f"error: cannot write the output ({exc.strerror}): make room where it goes, or send it "
                            "elsewhere", fg="red", err=True)
                ctx.exit(1)
            if path := _unusable_path(exc):
                click.secho(f"error: {path}", fg="red", err=True)
                ctx.exit(1)
            if not _out_of_memory(exc):
                raise
            click.secho(f"error: out of memory ({_first_line(exc)}): use smaller images or sizes, --tile, or a smaller "
                        "batch", fg="red", err=True)
            ctx.exit(1)
        finally:
            for signum, handler in previous.items():
                if handler is not None:  # (None: a handler not set from Python, which cannot be put back)
                    signal.signal(signum, handler)
            STOPS.clear()  # (the library, called after the command in the same process, is not stopped by it)


def _names_as_bytes() -> None:
    """A file name that is not valid UTF-8 (held by Python as surrogate escapes) reaches standard error as the bytes
    it is, as standard output writes it: stderr's 'backslashreplace' had printed bad\\udcff.png for bad\\xff.png, a
    name no one can type back."""
    import codecs

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError, LookupError):  # (a replaced stream: a test's)
            # UTF-8 streams only: on another encoding (cp1252, latin-1) a character it cannot hold would fail
            if getattr(stream, "errors", None) in ("strict", "backslashreplace") and \
                    codecs.lookup(stream.encoding).name == "utf-8":
                stream.reconfigure(errors="surrogateescape")


def _say(line: str) -> None:
    """The line that says why a run stopped and what it kept. A terminal that was closed (the SIGHUP that stopped the
    run) cannot show it: the write fails there (as it does on a closed standard error), and the exit status and the kept
    files still tell."""
    with contextlib.suppress(OSError, ValueError):
        click.secho(line, fg="yellow", err=True)


def _stop_behind(exc: BaseException) -> Interrupted | None:
    """The ``Interrupted`` that ``exc`` was raised while handling (its context chain), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, Interrupted):
            return exc
        exc = exc.__context__
    return None


def _reader_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is standard output closed under the run (``lwayrt adapt ... | head``), which click would end
    with status 1 and no word."""
    import errno

    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


def _output_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed write to standard output (no file named: a file's failure names it) for want of
    room, or of a working device."""
    import errno

    return isinstance(exc, OSError) and exc.filename is None and exc.errno in (
        errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _say_the_reader_is_gone() -> None:
    """Say why the run stops, on standard error (where it can), and point standard output at /dev/null, so that the
    final flush raises nothing more."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    _say("stopped: the program reading lwayrt's output ended (a pipe such as '| head'); send the output to a file "
         "(> log.txt) to keep a long run going")


def _out_of_memory(exc: BaseException) -> bool:
    """numpy's and Python's MemoryError, PyTorch's CUDA out-of-memory error and its CPU allocator's failure."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")  # not imported for it: a command that never loaded torch cannot have raised it
    if torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc))


def _unusable_path(exc: BaseException) -> str | None:
    """A path the system cannot use, wherever a command first touched it: one too long (Python 3.11's
    ``Path.exists()`` raises for it, not False) or a symbolic link that loops (``Path.resolve()`` raises). The
    message names it, shortened, and what to do; None for any other error."""
    import errno

    def short(name) -> str:
        name = str(name)
        return name if len(name) <= 80 else f"{name[:40]}...{name[-30:]} ({len(name)} characters)"

    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        from lway_rt.io.weights import NAME_MAX

        named = exc.filename if isinstance(exc.filename, (str, bytes, os.PathLike)) else ""
        longest = max(len(os.fsencode(part)) for part in os.fsdecode(named).split(os.sep))
        if longest > NAME_MAX:  # one name past the limit: a shorter folder for it (the advice had been) cannot help
            return (f"{short(exc.filename)}: a name in it is {longest} bytes, more than the {NAME_MAX} a file name "
                    "may have: use a shorter name")
        return f"{short(exc.filename)}: the name is too long for the file system: use a shorter path"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return f"{short(exc.filename)} is a symbolic link that loops: mend or remove the link"
    if isinstance(exc, PermissionError) and exc.filename is not None:  # (3.11's Path.is_dir() raises it for a path
        # in a folder this user may not enter, where a command first looks at an input, a model or an output folder)
        return f"cannot reach {exc.filename}: permission denied (the file, or a folder on its way, may not be " \
            "read or entered by this user): check its permissions, or name a path this user can use"
    text = str(exc)
    if isinstance(exc, RuntimeError) and text.startswith("Symlink loop from "):
        return f"{short(text[len('Symlink loop from '):].strip(chr(39)))} is a symbolic link that loops: mend or remove " \
            "the link"
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _terminated() -> int | None:
    """The signal other than Ctrl-C's (SIGTERM, SIGHUP) that stopped the command, if one did: its exit status is 128 +
    its number, as a shell reports a job it ended."""
    return next((s for s in STOPS if s != signal.SIGINT), None)


def _stop_on_signals() -> dict:
    """SIGTERM (``kill``, ``timeout``, a batch scheduler ending a job) and SIGHUP (the terminal or the ssh session
    closed) stop a run as Ctrl-C does: an adaptation keeps its checkpoint and every command says what was kept and how
    to continue, instead of ending where it stood. A SIGHUP already ignored (``nohup``) stays ignored. Each stop is
    recorded in ``STOPS`` (Ctrl-C too). Returns the handlers it replaced, by signal."""
    STOPS.clear()
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        STOPS.append(signum)  # kept: a loop stops on it even where the KeyboardInterrupt was lost (stop_if_asked)
        if len(STOPS) == 1 and finishes_steps():  # a training loop saves the step in hand first, then stops
            # (a terminal closed, the SIGHUP's; or the signal came while standard error was being written to)
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                step, kept = finishing_words()
                click.echo(f"\nstopping after the {step} in hand, to save it ({again} again: stop now, keeping "
                           f"{kept})", err=True)
            return
        raise KeyboardInterrupt

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, stop)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Ctrl-C as Python has it (not one ignored, in
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, stop)  # a background job, nor a caller's own), recorded
    hangup = getattr(signal, "SIGHUP", None)  # (none on Windows)
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        previous[hangup] = signal.signal(hangup, stop)
    return previous


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lwayrt")
def main() -> None:
    """Adapt pretrained super-resolution networks to your real images, and deploy them fast."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
