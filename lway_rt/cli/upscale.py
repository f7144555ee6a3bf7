"""``lwayrt upscale``: super-resolve images and folders (the work is in :mod:`lway_rt.upscale`)."""

from __future__ import annotations

from pathlib import Path

import click

from lway_rt.cli._params import DEVICE, NAME, FiniteRange, PathParam, cap_word, on_a_terminal, typed
from lway_rt.errors import listing


def model_options(unit: str = "image"):
    """The options ``upscale`` and ``upscale-video`` share, the model and how it runs, said of an ``unit`` ("image" or
    "frame")."""
    options = [
        click.option("-m", "--model", default="realesr-animevideov3", show_default=True, type=NAME,
                     help="Store name (see 'lwayrt models list'), path to a .pth/.safetensors file, an .onnx file from "
                          "'lwayrt export' (run with ONNX Runtime), or the --out folder of 'lwayrt adapt'" +
                          (" (of --mode per-group: each image goes to its group's model)." if unit == "image" else
                           " (of --mode folder).")),
        click.option("--tile", default=512, show_default=True, type=click.IntRange(min=0),
                     help="Tile side in input pixels (at least 32, and more than twice --tile-overlap); 0 runs each "
                          f"{unit} in one pass."),
        click.option("--tile-overlap", default=32, show_default=True, type=click.IntRange(min=0),
                     help="Overlap between neighbouring tiles, input pixels."),
        click.option("--device", type=DEVICE, default="cpu", show_default=True, help="cpu or cuda[:N]."),
        click.option("--fp16", is_flag=True, help="Half precision (CUDA only, models marked fp16-safe)."),
        click.option("--suffix", default=None,
                     help="Added to output file names [default: _x<scale>, or _x<outscale>]."),
        click.option("--scale", type=click.IntRange(min=1), default=None, help="Fail unless the model has this scale."),
        click.option("-s", "--outscale", type=FiniteRange(min=0, min_open=True, max=64), default=None,
                     help="Final scale: resize the model's output (Lanczos) to this many times the input, e.g. 2 with "
                          "a x4 model [the model's scale]."),
        click.option("--detail-cap", default="auto", show_default=True, callback=cap_word,
                     help=f"Hold the fine detail an adapted model adds at this many times its base model's, per {unit} "
                          "(auto: the cap 'lwayrt adapt --detail-cap' recorded in the weights; off: none)."),
        click.option("--base-model", default=None, type=NAME,
                     help="The unadapted model --detail-cap compares with [the one the adapted weights name]."),
        click.option("-q", "--quiet", is_flag=True,
                     help="No progress bar or summary: print only warnings and failures."),
    ]

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply


def note_small_outscale(outscale: float | None, what: str = "images") -> None:
    """An ``--outscale`` under 1 is allowed (a x4 model, then resized), but rarely what was meant: said."""
    if outscale is not None and outscale < 1:
        click.echo(f"note: --outscale {outscale:g} writes {what} smaller than their inputs ({outscale:g} x their size)",
                   err=True)


NARROW_OVERLAP = 16  # input px: a --tile-overlap under it is noted (the README's seams: 4-18 levels at 16 px)


def check_tiles(tile: int, tile_overlap: int) -> None:
    """--tile-overlap given with --tile 0 is refused (it would be ignored); --tile-overlap 0, or under
    ``NARROW_OVERLAP``, is noted."""
    from lway_rt.errors import InputError

    ctx = click.get_current_context()
    default_overlap = next(p.default for p in ctx.command.params if p.name == "tile_overlap")
    if tile == 0 and typed(ctx, "tile_overlap") and tile_overlap not in (0, default_overlap):  # (no overlap, or a
        # script that passes the default with both: nothing is ignored)
        raise InputError("--tile-overlap is the overlap between tiles, and --tile 0 runs each image whole, in no tiles: "
                         "drop --tile-overlap, or give --tile N")
    from lway_rt.upscale import MIN_TILE

    if tile < max(MIN_TILE, 2 * tile_overlap + 1):  # refused as the run's settings are checked, a note no help there
        return
    if tile_overlap == 0:  # accepted (a model without context, or a test), but seams show on most networks
        click.echo("note: --tile-overlap 0 joins the tiles edge to edge, so their borders can show as seams in images "
                   "larger than one tile (each tile's edge pixels are made without their neighbours); the default overlap is "
                   "32", err=True)
    elif tile_overlap < NARROW_OVERLAP:  # (--tile 32 --tile-overlap 8: seams of 44 levels, review 49H H3)
        click.echo(f"note: --tile-overlap {tile_overlap} gives each tile only {tile_overlap} px of its neighbours, so "
                   "their borders can show as seams in images larger than one tile (a 16-px overlap leaves up to 4-18 "
                   "levels, a narrower one more); the default overlap is 32", err=True)


@click.command("upscale")
@click.argument("inputs", nargs=-1, required=True, type=PathParam(path_type=Path), metavar="INPUT...")
@click.option("-o", "--output", "--out", "out_dir", required=True, type=PathParam(path_type=Path, file_okay=False),
              help="Output folder (created if missing). Inputs are never overwritten.")
@model_options()
@click.option("--format", "fmt", type=click.Choice(["png", "same"]), default="png", show_default=True,
              help="png, or keep each input's format.")
@click.option("--alpha", type=click.Choice(["model", "bicubic"]), default="model", show_default=True,
              help="How an alpha channel is upscaled.")
@click.option("-r", "--recursive", is_flag=True, help="Also take images from sub-folders (layout kept).")
@click.option("--skip-existing", is_flag=True,
              help="Leave outputs already in the -o folder alone when newer than their input and of the model's "
                   "size: continues a stopped run.")
@click.option("--stage1", type=PathParam(dir_okay=False), default=None,
              help="With a per-group adaptation folder: the stage-1 checkpoint its groups were made with "
                   "[the one its groups.json records].")
def command(inputs, out_dir, model, tile, tile_overlap, device, fp16, suffix, fmt, alpha, recursive, skip_existing, scale,
            outscale, detail_cap, base_model, stage1, quiet):
    """Upscale INPUT images and folders into the -o folder with an SR model.

    Folders contribute their PNG/JPEG/WebP/AVIF/TIFF/BMP/GIF/ICO/PPM/PGM/PBM/PNM/TGA files (sub-folders with
    --recursive).
    Outputs are PNG named <stem><suffix>.png unless --format same; grey, 16-bit and alpha are
    kept. A failing image does not stop the others; the command then exits with status 1 and
    lists the failures.
    """
    from lway_rt.cli._console import PipeConsole as Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lway_rt.upscale import UpscaleConfig, upscale_files

    check_tiles(tile, tile_overlap)
    tile_chosen = bool(typed(click.get_current_context(), "tile"))
    config = UpscaleConfig(model=model, tile=tile, tile_chosen=tile_chosen, tile_overlap=tile_overlap, device=device,
                           fp16=fp16, suffix=suffix, format=fmt, alpha=alpha, recursive=recursive, scale=scale,
                           detail_cap=detail_cap, base_model=base_model, stage1=stage1, skip_existing=skip_existing,
                           outscale=outscale)
    err = Console(stderr=True)
    note_small_outscale(outscale)
    lines = _ProgressLines() if not quiet and not on_a_terminal(err) else None  # a log file, nohup, a pipe
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=quiet or not on_a_terminal(err)) as bar:
        task = bar.add_task("upscaling", total=None)

        def on_start(n: int) -> None:
            bar.update(task, total=n)
            if lines:
                lines.begin(n)

        def progress(p: Path) -> None:
            bar.update(task, advance=1, description=escape(p.name))
            if lines:
                lines.step(p)

        def tiles(done: int, total: int) -> None:  # within one large image
            bar.update(task, description=f"tile {done + 1} of {total}")
            if lines:
                lines.tile(done, total)

        from lway_rt.runtime.tiling import tile_progress

        with tile_progress(tiles):
            report = upscale_files(inputs, out_dir, config, on_start=on_start, progress=progress)
    said = ([f"{len(report.kept)} already there, left as they were"] if report.kept else []) + \
        ([f"{len(report.remade)} of those written replace outputs there of another model or settings"]
         if report.remade else [])
    if not quiet and not report.written and not report.kept:  # every input failed: -o may not even have been made
        click.echo("no image was written")
    elif not quiet:
        click.echo(f"{len(report.written)} image(s) written to {out_dir}" + (f" ({'; '.join(said)})" if said else ""))
    if report.routes and not quiet:
        sent: dict[str, list[str]] = {}  # each group's images named, the first few (58C-1: only counted)
        for r in report.routes:
            sent.setdefault(r.group, []).append(r.path.name)
        click.echo("sent by stage 1's embedding to: " + "; ".join(f"{g} {len(names)} image(s) ({listing(names, 3)})"
                                                                  for g, names in sorted(sent.items())))
    for r in report.routes:  # warnings: also with -q
        if said_unlike := r.unlike_note():
            click.secho(f"note: {said_unlike}", fg="yellow", err=True)
    for note in report.notes:  # one style with every command's notes
        click.secho(f"note: {note}", fg="yellow", err=True)
    if report.failures:
        click.secho(f"{len(report.failures)} image(s) failed:", fg="red", err=True)
        for f in report.failures:
            click.echo(f"  {f.message}", err=True)
        raise click.exceptions.Exit(1)


class _ProgressLines:
    """Progress where standard error is no terminal (a batch of frames under nohup, into a log): a line at most every
    ``PERIOD`` seconds, with the images done and the time left; a short run prints none."""

    PERIOD = 30.0

    def __init__(self, noun: str = "image(s)") -> None:
        import time

        self.clock = time.monotonic
        self.noun = noun
        self.begin(0)

    def begin(self, total: int) -> None:
        """Timed from here: the model is loaded, and its loading is no image's time."""
        self.start = self.last = self.clock()
        self.total, self.done = total, 0

    def tile(self, done: int, total: int) -> None:
        """``done`` of the ``total`` tiles of the image in hand are made: said at most every ``PERIOD`` seconds, as
        images are (one large image on a CPU takes minutes)."""
        from lway_rt.errors import duration

        now = self.clock()
        if now - self.last < self.PERIOD:
            return
        self.last = now
        of = f" of {self.total}" if self.total else ""
        click.echo(f"image {self.done + 1}{of}: {done} of {total} tiles made, {duration(now - self.start)} so far",
                   err=True)

    def step(self, path: Path) -> None:
        from lway_rt.errors import duration

        self.done += 1
        now = self.clock()
        if now - self.last < self.PERIOD or (self.total and self.done == self.total):
            return
        self.last = now
        if not self.total or self.done > self.total:  # a video of no recorded length, or more frames than it said
            click.echo(f"upscaled {self.done} {self.noun} ({path.name}), {duration(now - self.start)} so far", err=True)
            return
        left = (now - self.start) / self.done * (self.total - self.done)
        click.echo(f"upscaled {self.done} of {self.total} {self.noun} ({path.name}), {duration(now - self.start)} so far, "
                   f"about {duration(left)} left", err=True)
