"""``lwayrt models``: the local model store."""

from __future__ import annotations

import os
from pathlib import Path

import click

from lway_rt.cli._params import NameParam, PathParam, on_a_terminal
from lway_rt.errors import ModelError, listing, shell_word
from lway_rt.io import store


@click.group("models")
def command() -> None:
    """List, import and add pretrained SR models (packaged ncnn weights converted, or files of your own)."""


@command.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="Print the rows as one JSON list (name, arch, scale, status, source; scale a number, arch "
                   "and scale null where not known) for scripts, not a table.")
def list_cmd(as_json: bool) -> None:
    """Show imported and importable models."""
    from lway_rt.cli._console import PipeConsole as Console
    from rich.markup import escape
    from rich.table import Table

    store.refuse_a_store_past_a_file()
    if note := store.misplaced_home_note():
        click.echo(note, err=True)
    rows = store.list_models()
    if as_json:  # (a table is cut to the terminal's width, or COLUMNS', and grep then finds nothing)
        import json

        def typed(row: dict) -> dict:  # (the table's cells are text: a script compares scale == 4)
            scale, arch = row["scale"], row["arch"]
            return {"name": row["name"], "arch": arch if arch not in ("", "?", "unreadable") else None,  # (status says)
                    "scale": int(scale) if str(scale).isdigit() else None, "status": row["status"],
                    "source": row["source"]}

        click.echo(json.dumps([typed(row) for row in rows], indent=1))
        return
    table = Table(title=f"model store: {store.store_dir()}")
    # names are what users copy into -m: never cut, however narrow the terminal (or a pipe's 80 columns)
    table.add_column("name", no_wrap=True, min_width=max(len(r["name"]) for r in rows) if rows else None)
    table.add_column("arch", no_wrap=True, min_width=max(len(r["arch"]) for r in rows) if rows else None)
    for col in ("scale", "status"):
        table.add_column(col)
    table.add_column("source", overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(row[k])) for k in ("name", "arch", "scale", "status", "source")))  # (a name's
        # brackets as typed: rich's markup took 'x[red]' for a style and listed the name as 'x')
    console = Console()
    if not on_a_terminal(console) and "COLUMNS" not in os.environ:
        console = Console(width=200)  # piped into a script: whole rows, one line each
    console.print(table)


@command.command("import")
@click.argument("names", nargs=-1, type=NameParam("a packaged model"))
@click.option("--force", is_flag=True, help="Convert again even if already in the store.")
def import_cmd(names: tuple[str, ...], force: bool) -> None:
    """Convert packaged models into the store (all of them when no NAMES are given)."""
    failed = []
    for name in dict.fromkeys(names or tuple(store.SOURCES)):  # a name given twice is converted once
        try:
            path = store.import_model(name, force=force)
        except ModelError as exc:  # one model refused (a file of the user's under its name): the others still come
            if names:
                raise
            click.secho(f"error: {exc}", fg="red", err=True)
            failed.append(name)
            continue
        click.echo(f"{name}: {path}")
    if failed:
        others = len(dict.fromkeys(names or tuple(store.SOURCES))) - len(failed)
        raise ModelError(f"{listing(failed, 4)} not imported (said above)" + (
            "; the other packaged models are in the store" if others else ": none of the packaged models is in the "
            "store"))  # (it said "the others are" where there were none: 56B1)


@command.command("add")
@click.argument("file", type=PathParam(path_type=Path))
@click.option("--name", default=None, help="Name to use with -m [the file's name without its ending, or the folder's].")
@click.option("--force", is_flag=True, help="Replace a model of that name already in the store.")
def add_cmd(file: Path, name: str | None, force: bool) -> None:
    """Put a weights file of your own (a community .pth, adapted weights, an adapt run's folder) into the store, as
    safetensors, so that -m NAME finds it from any folder."""
    dest, desc = store.add_model(file, name, force=force)
    hp = desc.spec.hparams
    size = f", {hp['num_block']} blocks" if "num_block" in hp else f", {hp['num_conv']} convs" if "num_conv" in hp else ""
    grey = ", grey (1-channel: it sharpens a colour image's luminance)" if desc.in_channels == 1 else \
        "" if desc.in_channels == 3 else f", {desc.in_channels}-channel (lwayrt upscale runs only RGB and grey " \
        f"networks: 'lwayrt export -m {shell_word(dest.stem)}' makes an ONNX file of it for a runtime of your own)"
    click.echo(f"added {dest.stem}: {desc.arch} x{desc.scale}{size}{grey}, from {file} ({dest}); "
               f"use -m {shell_word(dest.stem)}")


@command.command("remove")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def remove_cmd(names: tuple[str, ...]) -> None:
    """Take models out of the store (a link there is removed, not the file it names; a packaged model can be
    imported again)."""
    store.refuse_a_store_past_a_file()  # (not "not imported": models list, which that advises, refuses it: 57G-3)
    entries: dict = {}
    for name in names:  # every name checked first: one refused removes none
        entries.setdefault(store.store_entry(name), name)  # (an entry named twice, in two Unicode forms too: once)
    for name in entries.values():
        path, said = store.remove_model(name)
        click.echo(f"removed {name} ({path})" + (f"; {said}" if said else ""))


@command.command("info")
@click.argument("model", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every field, the file's metadata too) "
                                                      "for scripts.")
def info_cmd(model: str, as_json: bool) -> None:
    """What a model is: its network, scale and the sizes it takes, where its weights came from (a packaged conversion,
    a file you added, an adapt run and its base) and their sha256, as export manifests and exported ONNX files record
    it. MODEL is anything -m takes: a store name, a weights file, an adapt run's folder, an exported .onnx or engine."""
    from lway_rt.io.model_info import describe, format_info

    info = describe(model)
    if as_json:
        import json

        click.echo(json.dumps(info, indent=1))
    else:
        click.echo(format_info(info))


@command.command("path")
def path_cmd() -> None:
    """Print the store folder: LWAYRT_HOME/models (set LWAYRT_HOME to move it)."""
    store.refuse_a_store_past_a_file()
    if note := store.misplaced_home_note():
        click.echo(note, err=True)
    click.echo(store.store_dir())
