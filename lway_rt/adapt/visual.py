"""Pictures a person uses to judge an adaptation without ground truth.

``contact_sheet``: fixed crops (rows) over iterations (columns: bicubic, the unadapted model, the
snapshots, the final model), drawn with Pillow. ``save_curves``: training loss, the loss on a fixed
patch set and, with ground truth, Y-PSNR over iterations (matplotlib, imported only here).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["contact_sheet", "save_contact_sheet", "curves_figure", "save_curves", "can_plot"]


def label_font():
    """The font captions are drawn in: DejaVu Sans where matplotlib (the plot extra) ships it, which draws accented
    and most non-Latin-script names (Pillow's own font drew 'café' as 'caf□': 58G-3), else Pillow's."""
    import os

    from PIL import ImageFont

    if can_plot():
        import matplotlib

        path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(path):
            return ImageFont.truetype(path, 10)
    return ImageFont.load_default()


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], row_labels: Sequence[str] = (),
                  gap: int = 4) -> np.ndarray:
    """Grid of uint8 HxWx3 tiles with a caption strip on top of each column; returns HxWx3 uint8."""
    from PIL import Image, ImageDraw

    if not rows or not rows[0]:
        raise ValueError("contact sheet needs at least one row and one column")
    font = label_font()
    ncol = len(rows[0])
    col_w = [max(r[c].shape[1] for r in rows) for c in range(ncol)]
    row_h = [max(t.shape[0] for t in r) for r in rows]
    cap = 14
    left = 0
    if row_labels:  # (as wide as the widest label draws: 8 px a letter was a third too wide)
        left = max(int(np.ceil(font.getlength(str(s)))) for s in row_labels) + gap
    width = left + sum(col_w) + gap * (ncol + 1)
    height = cap + sum(row_h) + gap * (len(rows) + 1)
    sheet = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    x = left + gap
    for c, text in enumerate(labels):
        draw.text((x, 1), str(text), fill=(230, 230, 230), font=font)
        x += col_w[c] + gap
    y = cap + gap
    for r, tiles in enumerate(rows):
        if row_labels:
            draw.text((2, y + row_h[r] // 2 - 5), str(row_labels[r]), fill=(230, 230, 230), font=font)
        x = left + gap
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(np.ascontiguousarray(tile)), (x, y))
            x += col_w[c] + gap
        y += row_h[r] + gap
    return np.asarray(sheet)


def save_contact_sheet(path: Path, rows, labels, row_labels=()) -> Path:
    from lway_rt.io.images import write_image

    arr = contact_sheet(rows, labels, row_labels)
    return write_image(path, arr.astype(np.float32) / 255.0)


def can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def curves_figure(history: Sequence[dict], val: Sequence[dict], evals: Sequence[dict], title: str = "",
                  kept: int | None = None):
    """The matplotlib figure ``save_curves`` writes. ``kept``: the iteration whose weights were written where that is
    not the last one (with ground truth, the best; after bad steps, the last good one), drawn as a dashed line on
    each panel: the picture alone had read as if the last iteration's weights were the ones written (review 56A-3)."""
    from lway_rt.errors import require

    matplotlib = require("matplotlib", "plot", "the loss/PSNR curve picture")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ncols = 2 if evals else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 3.8), squeeze=False)
    ax = axes[0][0]
    its = [h["it"] for h in history if not h.get("skipped")]
    losses = [h["loss"] for h in history if not h.get("skipped")]
    if losses:
        few = len(losses) <= 10  # (a line of one point draws nothing, of three hardly anything: 56A-4)
        ax.plot(its, losses, lw=0.6, alpha=0.9 if few else 0.4, marker="o" if few else None, ms=3,
                label="step loss (every term)")
        k = max(1, len(losses) // 20)
        if k > 1:
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(its[k - 1:], smooth, lw=1.4, label=f"step loss, mean of {k}")
    handles, labels = ax.get_legend_handles_labels()
    if val:
        # on its own scale: the step loss carries the supervised term (most of it at the default weight), beside
        # which the fixed patches' adaptation loss, a tenth of a percent of it, was a flat line at zero
        right = ax.twinx()
        right.plot([v["it"] for v in val], [v["loss"] for v in val], "o-", ms=3, color="tab:red")
        right.set_ylabel("fixed-patch adaptation loss", color="tab:red")
        right.tick_params(axis="y", colors="tab:red")
        handles += right.get_lines()
        labels.append("fixed-patch loss (right axis)")
    panels = [ax] + ([axes[0][1]] if evals else [])
    if kept is not None:
        for panel in panels:
            line = panel.axvline(kept, ls="--", lw=1.0, color="0.25")
        handles.append(line)
        labels.append(f"weights written: iteration {kept}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("step loss")
    if handles:  # below the panel: a legend inside lay over the right axis' curve, which "best" cannot see (56A-5)
        ax.legend(handles, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    if evals:
        ax2 = axes[0][1]
        ax2.plot([e["it"] for e in evals], [e["psnr"] for e in evals], "o-", ms=3, color="tab:green")
        ax2.set_xlabel("iteration")
        ax2.set_ylabel("mean Y-PSNR (dB) vs ground truth")
        ax2.grid(alpha=0.3)
    for panel in panels:  # iterations are whole numbers (ticks at 2.5 or 0.2 were drawn)
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_curves(path: Path, history: Sequence[dict], val: Sequence[dict], evals: Sequence[dict], title: str = "",
                kept: int | None = None) -> Path:
    """Loss (per step, smoothed), fixed-patch loss and (if any) Y-PSNR against iterations, as PNG (``curves_figure``)."""
    import matplotlib.pyplot as plt

    from lway_rt.io.weights import atomic_path

    fig = curves_figure(history, val, evals, title, kept)
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")  # (the legend below the panel included)
    plt.close(fig)
    return Path(path)
