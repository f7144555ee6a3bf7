"""``lwayrt demo``: the whole story on bundled photos (see :mod:`lway_rt.demo`)."""

from __future__ import annotations

from pathlib import Path

import click

from lway_rt.cli._params import NAME, PathParam, and_list, on_a_terminal, typed

_PRESETS = ("motion-blur", "box-downscale", "sharpen-jpeg420", "resize-sensor-noise")


@click.command("demo")
@click.option("-o", "--out", "--output", "out_dir", default="demo_out", show_default=True, type=PathParam(path_type=Path, file_okay=False),
              help="Folder for the images, comparisons and results.json: new, empty, or an earlier demo's (its files are replaced).")
@click.option("--photo", "photos", multiple=True,
              help="Bundled photo to use, repeatable or comma-separated [default: astronaut, chelsea, coffee, rocket].")
@click.option("-m", "--model", "models", multiple=True, type=NAME,
              help="Model(s) to compare, repeatable or comma-separated [default: realsr-df2k-x4, realesr-animevideov3].")
@click.option("--crop", default=256, show_default=True, type=int,
              help="Side of the ground-truth crop (HR), pixels (a multiple of 4, at least 64).")
@click.option("--adapt/--no-adapt", default=True, show_default=True, help="Run the LWay adaptation step.")
@click.option("--deploy/--no-deploy", default=True, show_default=True,
              help="Export the adapted network to ONNX, run it with ONNX Runtime and time it against PyTorch.")
@click.option("--adapt-model", default="realesr-animevideov3", show_default=True, type=NAME, help="Model to adapt.")
@click.option("--preset", type=click.Choice(_PRESETS), default="motion-blur", show_default=True,
              help="Degradation of the adaptation step's LR crops (one stage 1 never trained on).")
@click.option("--iterations", "--iters", "iterations", default=100, show_default=True, type=click.IntRange(min=1), help="Adaptation steps.")
@click.option("--adapt-crop", default=192, show_default=True, type=int, help="Ground-truth crop side for adaptation (a multiple of 4, at least 128).")
@click.option("--stage1", type=PathParam(dir_okay=False), default=None, help="Stage-1 checkpoint [the shipped one].")
def command(out_dir: Path, photos: tuple[str, ...], models: tuple[str, ...], crop: int, adapt: bool, deploy: bool,
            adapt_model: str, preset: str, iterations: int, adapt_crop: int, stage1: str | None) -> None:
    """Upscale x4-downscaled crops of bundled photos with real pretrained models, then adapt one of them
    (LWay) to crops with a degradation stage 1 never saw; print PSNR/SSIM before and after; then export the
    adapted network to ONNX, run it with ONNX Runtime and time it against PyTorch."""
    from lway_rt.cli._console import PipeConsole as Console
    from rich.markup import escape
    from rich.table import Table

    from lway_rt.demo import DemoConfig, run_demo
    from lway_rt.errors import InputError

    ctx = click.get_current_context()
    if not adapt and (unused := typed(ctx, "preset", "iterations", "adapt_model", "adapt_crop", "stage1")):
        raise InputError(f"{and_list(unused)} {'is' if len(unused) == 1 else 'are'} for the adaptation step, which "
                         f"--no-adapt leaves out: drop {'it' if len(unused) == 1 else 'them'}, or drop --no-adapt")
    photos = tuple(p.strip() for text in photos for p in text.split(",") if p.strip())  # --photo a,b as --photo a --photo b
    models = tuple(m.strip() for text in models  # so --model a,b (a file whose name holds a comma is taken whole)
                   for m in ([text] if Path(text).expanduser().exists() else text.split(",")) if m.strip())
    for option, given, left in (("--photo", typed(ctx, "photos"), photos), ("--model", typed(ctx, "models"), models)):
        if given and not left:  # "--model ,," named nothing: it had run the defaults, unsaid
            raise InputError(f"{option} names nothing (only commas): name one or more, or leave {option} out")
    config = DemoConfig(out_dir=out_dir, photos=photos or DemoConfig.photos, models=models or DemoConfig.models, crop=crop)
    adapt_config = None
    if adapt:
        from lway_rt.adapt.demo import AdaptDemoConfig

        adapt_config = AdaptDemoConfig(out_dir=out_dir / "adapt", photos=photos or AdaptDemoConfig.photos,
                                       preset=preset, model=adapt_model, crop=adapt_crop, iterations=iterations,
                                       stage1=stage1)
    console = Console()
    if not on_a_terminal(console):  # a log or a pipe: lines and tables whole, not wrapped at 80 columns
        console = Console(width=200)
    err = Console(stderr=True)  # progress and notes, as every command prints them (they went to stdout: 56K3)
    if not on_a_terminal(err):
        err = Console(stderr=True, width=200)
    if deploy and not adapt and typed(ctx, "deploy"):  # deploy exports the adapted network: nothing to do
        click.echo("note: --deploy exports the adapted network, so with --no-adapt it does not run: drop --no-adapt "
                   "to run it", err=True)
    # (markup off: a step's advice, pip install 'lway_rt[plot]', and a folder named out[1] lost their brackets: 56E4)
    result, adapted, deployed = run_demo(config, adapt_config, deploy=deploy,
                                         log=lambda msg: err.print(msg, highlight=False, markup=False))

    table = Table(title=f"x{config.scale} super-resolution, Y-PSNR (dB) / SSIM, {config.scale}-px border cropped")
    table.add_column("photo")
    for m in result.methods:
        table.add_column(escape(m), justify="right")
    for r in result.photos:
        table.add_row(r.photo, *(f"{r.psnr[m]:.2f} / {r.ssim[m]:.4f}" for m in result.methods))
    table.add_row("[b]mean[/b]", *(f"[b]{result.mean('psnr', m):.2f} / {result.mean('ssim', m):.4f}[/b]" for m in result.methods))
    console.print(table)
    if adapted is not None:
        t2 = Table(title=f"adaptation of {escape(str(adapted.config.model))} to '{adapted.config.preset}' LR crops, "
                         f"{adapted.config.iterations} iterations, no ground truth used: Y-PSNR (dB) / SSIM")
        t2.add_column("photo")
        for m in adapted.methods:
            t2.add_column(escape(m), justify="right")
        for photo in adapted.psnr:
            t2.add_row(photo, *(f"{adapted.psnr[photo][m]:.2f} / {adapted.ssim[photo][m]:.4f}" for m in adapted.methods))
        t2.add_row("[b]mean[/b]", *(f"[b]{adapted.mean(m):.2f} / {adapted.mean(m, 'ssim'):.4f}[/b]" for m in adapted.methods))
        console.print(t2)
        console.print("identity control = the same adaptation with R replaced by the identity (it pulls the model "
                      "towards bicubic); LWay's value is what it adds over that control.", highlight=False)
        console.print(f"contact sheet of the adaptation: {adapted.files['contact_sheet']}", highlight=False, markup=False)
    if deployed is not None:
        where = Path(deployed.config.out_dir).resolve()
        chart = " / .png" if (where / "serve_bench.png").is_file() else ""  # (none without matplotlib: 56E5)
        console.print(f"ONNX files, serve_bench.json{chart} of the deployment step: {where}", highlight=False,
                      markup=False)
    console.print(f"images, side-by-side comparisons (*_compare.png) and results.json are in {out_dir.resolve()}",
                  highlight=False, markup=False)
