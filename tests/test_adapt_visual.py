"""adapt's pictures: the loss / PSNR curves (what they mark and where their legend goes) and the run's word where
matplotlib is missing."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from lway_rt.adapt.visual import curves_figure
from lway_rt.cli import main

from adapt_cli_common import make_files


@pytest.fixture(scope="module")
def files(tmp_path_factory, hr_crop):
    return make_files(tmp_path_factory, hr_crop)


def _history(n):
    return [{"it": i, "loss": 0.2 + 0.01 * (i % 3)} for i in range(1, n + 1)]


def test_the_curves_mark_the_iteration_whose_weights_were_written_and_keep_the_legend_off_the_data():
    """With ground truth the best iteration's weights are written: the picture ran to the last one and read as if
    those were written (56A-3); the legend lay over the right axis' curve (56A-5); iterations got ticks at 2.5."""
    import matplotlib.pyplot as plt

    val = [{"it": i, "loss": 0.01 - 1e-4 * i} for i in (0, 5, 10, 15, 20)]
    evals = [{"it": i, "psnr": 20.3 + (0.1 if i == 5 else 0.05)} for i in (0, 5, 10, 15, 20)]
    fig = curves_figure(_history(20), val, evals, "t", kept=5)
    try:
        loss_ax, psnr_ax = fig.axes[0], fig.axes[1]
        for ax in (loss_ax, psnr_ax):
            assert any(list(line.get_xdata()) == [5, 5] and line.get_linestyle() == "--" for line in ax.get_lines())
            assert all(float(t).is_integer() for t in ax.get_xticks())
        legend = loss_ax.get_legend()
        assert "weights written: iteration 5" in [t.get_text() for t in legend.get_texts()]
        fig.canvas.draw()
        below = legend.get_window_extent().y1 <= loss_ax.get_window_extent().y0
        assert below, "the legend lies on the panel"
    finally:
        plt.close(fig)
    fig = curves_figure(_history(20), val, [], "t")  # the last iteration's weights: nothing marked
    try:
        assert not any(line.get_linestyle() == "--" for line in fig.axes[0].get_lines())
    finally:
        plt.close(fig)


def test_a_run_of_one_iteration_draws_its_step_loss():
    """One point on a thin line without a marker drew nothing, though the legend named it (56A-4)."""
    import matplotlib.pyplot as plt

    fig = curves_figure(_history(1), [], [], "t")
    try:
        (line,) = fig.axes[0].get_lines()
        assert line.get_marker() == "o" and line.get_alpha() > 0.5
    finally:
        plt.close(fig)


def test_adapt_without_matplotlib_says_it_writes_no_curves(files, tmp_path, monkeypatch):
    """The picture was left out with a line in report.json's events only: the run said nothing (56A-1)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as an install without the plot extra has it
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out),
                                    "--stage1", str(files / "stage1.safetensors"), "--iterations", "1",
                                    "--patch-size", "16", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())
    assert "note: matplotlib is not installed: this run writes no curves.png" in said, said
    assert "pip install 'lway_rt[plot]'" in said
    assert not (out / "curves.png").exists() and (out / "contact_sheet.png").is_file()
    assert json.loads((out / "report.json").read_text())["curves"] is None


def test_labels_are_drawn_in_a_font_with_accented_letters_and_sized_to_their_text():
    """Pillow's own font drew 'café' as 'caf□' on the contact sheet (58G-3): with matplotlib there, captions are drawn
    in DejaVu Sans; the row-label margin is as wide as the widest label draws, not 8 px a letter."""
    import numpy as np

    from lway_rt.adapt.visual import contact_sheet, label_font

    font = label_font()
    absent = list(font.getmask("\U000F0000"))  # (a private-use letter no font draws: the missing-glyph box)
    for letter in "éñøßЖ":
        assert list(font.getmask(letter)) != absent, letter
    tile = np.zeros((16, 16, 3), np.uint8)
    sheet = contact_sheet([[tile]], ["x"], ["café" * 5])
    assert sheet.shape[1] == 4 + 16 + 4 * 2 + int(np.ceil(font.getlength("café" * 5))) < 8 * 20
