"""``lwayrt upscale-video``: super-resolve video files (the work is in :mod:`lway_rt.video`)."""

from __future__ import annotations

from pathlib import Path

import click

from lway_rt.cli._params import PathParam, on_a_terminal, typed
from lway_rt.errors import listing
from lway_rt.cli.upscale import _ProgressLines, check_tiles, model_options, note_small_outscale
from lway_rt.io.video import CONTAINERS, PRESETS


@click.command("upscale-video")
@click.argument("inputs", nargs=-1, required=True, type=PathParam(path_type=Path, dir_okay=False), metavar="VIDEO...")
@click.option("-o", "--output", "--out", "out_dir", required=True, type=PathParam(path_type=Path, file_okay=False),
              help="Output folder (created if missing). Inputs are never overwritten.")
@model_options("frame")
@click.option("--crf", default=18, show_default=True, type=click.IntRange(0, 51),
              help="H.264 quality: lower is better and larger (18 looks like the source, 23 is x264's default).")
@click.option("--preset", default="medium", show_default=True, type=click.Choice(PRESETS),
              help="x264's speed against file size.")
@click.option("--container", default="same", show_default=True, type=click.Choice(CONTAINERS),
              help="Output file type: the input's (.mp4, .mkv, .mov, .m4v; others become .mkv), or this one.")
@click.option("--frames", type=click.IntRange(min=1), default=None,
              help="Only the first N frames (and the audio with them): a quick look before a long run.")
@click.option("--deinterlace", is_flag=True,
              help="Make each frame of an interlaced source one picture first (bwdif), so combs are not upscaled.")
@click.option("--overwrite", is_flag=True,
              help="Replace an output file already there, and the kept frames of a stopped run of it made with other "
                   "settings.")
@click.option("--skip-existing", is_flag=True,
              help="Leave an output already in the -o folder alone when newer than its video, of the output's size and "
                   "about the video's length (whatever settings made it): continues a stopped run of several videos.")
def command(inputs, out_dir, model, tile, tile_overlap, device, fp16, suffix, scale, outscale, detail_cap, base_model,
            quiet, crf, preset, container, frames, deinterlace, overwrite, skip_existing):
    """Upscale VIDEO files into the -o folder with an SR model, frame by frame.

    Each video becomes <stem><suffix> in the -o folder, H.264 with the source's frame rate, audio,
    subtitles, chapters and metadata. A stopped run (Ctrl-C, kill) goes on where it stopped when
    the same command is run again. Needs ffmpeg: the 'video' extra installs one.
    """
    from lway_rt.cli._console import PipeConsole as Console
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from lway_rt.upscale import UpscaleConfig
    from lway_rt.video import VideoConfig, upscale_videos

    if overwrite and skip_existing:  # (two flags that exclude each other: a usage error, as adapt's --resume --overwrite)
        raise click.UsageError("--overwrite replaces the outputs already there and --skip-existing leaves them: give one")
    check_tiles(tile, tile_overlap)
    note_small_outscale(outscale, "videos")
    config = UpscaleConfig(model=model, tile=tile, tile_chosen=bool(typed(click.get_current_context(), "tile")),
                           tile_overlap=tile_overlap, device=device, fp16=fp16, suffix=suffix, scale=scale,
                           detail_cap=detail_cap, base_model=base_model, outscale=outscale)
    video = VideoConfig(crf=crf, preset=preset, container=container, frames=frames, overwrite=overwrite,
                        deinterlace=deinterlace, skip_existing=skip_existing)
    err = Console(stderr=True)
    lines = _ProgressLines("frame(s)") if not quiet and not on_a_terminal(err) else None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, transient=True,
                  disable=quiet or not on_a_terminal(err)) as bar:
        task = bar.add_task("upscaling", total=None)
        current: list = []  # the video in hand, its total and the frames done

        def on_start(src: Path, total: int | None, done: int) -> None:
            current[:] = [src, total, done]
            bar.reset(task, total=total, completed=done, description=escape(src.name))
            if lines:
                lines.begin((total or 0) - done)

        def progress() -> None:
            current[2] += 1
            if current[1] is not None and current[2] > current[1]:  # more frames than counted (a variable rate)
                current[1] = None
                bar.update(task, total=None)
            bar.update(task, advance=1)
            if lines:
                lines.step(current[0])

        def on_written(dest: Path) -> None:  # (as each is made: a later stop does not hide which are finished; on a
            if not quiet:  # terminal, rich's bar shows the line above itself)
                click.echo(f"wrote {dest}")

        report = upscale_videos(inputs, out_dir, config, video, on_start=on_start, progress=progress,
                                on_written=on_written)
    if not quiet:
        if report.kept:
            click.echo(f"{len(report.kept)} already there, left as they were: {listing(report.kept, 3)}")
        elif not report.written:
            click.echo("no video was written")
    for note in report.notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    if report.failures:
        click.secho(f"{len(report.failures)} video(s) failed:", fg="red", err=True)
        for _, message in report.failures:
            click.echo(f"  {message}", err=True)
        raise click.exceptions.Exit(1)
