"""``lwayrt demo``: pretrained SR on bundled photos, scored against bicubic (see :mod:`lway_rt.demo`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--out", "out_dir", default="demo_out", show_default=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the images, comparisons and results.json.")
@click.option("--photo", "photos", multiple=True, help="Bundled photo(s) to use [default: astronaut, chelsea, coffee, rocket].")
@click.option("--model", "models", multiple=True,
              help="Model(s) to compare [default: realsr-df2k-x4, realesr-animevideov3].")
@click.option("--crop", default=256, show_default=True, type=int, help="Side of the ground-truth crop (HR), pixels.")
def command(out_dir: Path, photos: tuple[str, ...], models: tuple[str, ...], crop: int) -> None:
    """Upscale x4-downscaled crops of bundled photos with real pretrained models; print PSNR/SSIM."""
    from rich.console import Console
    from rich.table import Table

    from lway_rt.demo import DemoConfig, run_upscale_demo

    defaults = DemoConfig()
    config = DemoConfig(out_dir=out_dir, photos=photos or defaults.photos, models=models or defaults.models, crop=crop)
    console = Console()
    result = run_upscale_demo(config, log=lambda msg: console.print(msg, highlight=False))

    table = Table(title=f"x{config.scale} super-resolution, Y-PSNR (dB) / SSIM, {config.scale}-px border cropped")
    table.add_column("photo")
    for m in result.methods:
        table.add_column(m, justify="right")
    for r in result.photos:
        table.add_row(r.photo, *(f"{r.psnr[m]:.2f} / {r.ssim[m]:.4f}" for m in result.methods))
    table.add_row("[b]mean[/b]", *(f"[b]{result.mean('psnr', m):.2f} / {result.mean('ssim', m):.4f}[/b]" for m in result.methods))
    console.print(table)
    console.print(f"images, side-by-side comparisons (*_compare.png) and results.json are in {out_dir.resolve()}",
                  highlight=False)
