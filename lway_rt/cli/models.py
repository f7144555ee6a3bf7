"""``lwayrt models``: the local model store."""

from __future__ import annotations

import click

from lway_rt.io import store


@click.group("models")
def command() -> None:
    """List and import pretrained SR models (converted from packaged ncnn weights)."""


@command.command("list")
def list_cmd() -> None:
    """Show imported and importable models."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model store: {store.store_dir()}")
    for col in ("name", "arch", "scale", "status", "source"):
        table.add_column(col)
    for row in store.list_models():
        table.add_row(row["name"], row["arch"], row["scale"], row["status"], row["source"])
    Console().print(table)


@command.command("import")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Convert again even if already in the store.")
def import_cmd(names: tuple[str, ...], force: bool) -> None:
    """Convert packaged models into the store (all of them when no NAMES are given)."""
    for name in names or tuple(store.SOURCES):
        path = store.import_model(name, force=force)
        click.echo(f"{name}: {path}")


@command.command("path")
def path_cmd() -> None:
    """Print the store folder (set LWAYRT_HOME to move it)."""
    click.echo(store.store_dir())
