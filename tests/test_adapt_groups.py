"""Grouping a folder's inputs by stage 1's embedding of their degradation (``adapt --mode per-group``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.groups import AUTO_MIN_SILHOUETTE, _silhouette, group_embeddings
from lway_rt.cli import main
from lway_rt.errors import InputError


def _clusters(sizes, dim=16, spread=0.05, seed=0):
    """Points around ``len(sizes)`` far-apart unit directions, ``sizes[k]`` of them around the k-th, in that order."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(dim, dim)))[0][: len(sizes)]
    return np.concatenate([c + spread * rng.normal(size=(n, dim)) for c, n in zip(centres, sizes)])


def test_silhouette_matches_a_hand_computed_case():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    # point 0: a = 1, b = (10 + 11) / 2; point 1: a = 1, b = (9 + 10) / 2; the others mirror them
    expected = np.mean([1 - 1 / 10.5, 1 - 1 / 9.5, 1 - 1 / 9.5, 1 - 1 / 10.5])
    assert _silhouette(x, np.array([0, 0, 1, 1])) == pytest.approx(expected)
    assert _silhouette(x, np.array([0, 1, 0, 1])) < 0  # a bad split scores below 0


def test_auto_finds_clear_groups_and_numbers_them_by_first_image():
    x = _clusters([5, 6, 5])
    order = np.random.default_rng(1).permutation(len(x))
    g = group_embeddings(torch.from_numpy(x[order]), "auto")
    truth = np.repeat([0, 1, 2], [5, 6, 5])[order]
    assert g.count == 3 and max(g.silhouettes, key=g.silhouettes.get) == 3
    for k in range(3):  # each found group is exactly one true cluster
        assert len({int(truth[i]) for i in g.members()[k]}) == 1
    assert g.labels[0] == 0 and g.labels == group_embeddings(x[order], "auto").labels  # deterministic


def test_auto_keeps_one_group_without_structure_and_respects_the_minimum_size():
    noise = np.random.default_rng(2).normal(size=(16, 32))
    g = group_embeddings(noise, "auto")
    assert g.count == 1 and max(g.silhouettes.values()) < AUTO_MIN_SILHOUETTE
    # a far cluster of 2 images may not become its own group under a minimum of 4...
    g = group_embeddings(_clusters([6, 6, 2]), "auto")
    assert min(len(m) for m in g.members()) >= 4 and g.count == 2
    # ...and too few images for two groups of 4 stay one group
    assert group_embeddings(_clusters([3, 3]), "auto").count == 1
    assert group_embeddings(_clusters([3, 3]), "auto", min_size=3).count == 2


def test_a_given_number_of_groups_and_bad_ones():
    g = group_embeddings(_clusters([2, 2, 1]), 3)
    assert g.labels == (0, 0, 1, 1, 2) and g.silhouettes == {}
    assert group_embeddings(_clusters([2, 2]), 1).labels == (0, 0, 0, 0)
    with pytest.raises(InputError, match="use at most 4 groups"):
        group_embeddings(_clusters([2, 2]), 5)
    with pytest.raises(InputError, match="positive number of groups"):
        group_embeddings(_clusters([2, 2]), 0)


def test_config_groups_validation_and_recipe():
    assert "groups" not in json.loads(AdaptConfig().recipe_json())  # fingerprints of other modes unchanged
    assert json.loads(AdaptConfig(mode="per-group", groups=3).recipe_json())["groups"] == 3
    with pytest.raises(InputError, match="per-group mode only"):
        AdaptConfig(groups=2)
    with pytest.raises(InputError, match="positive number of groups or auto"):
        AdaptConfig(mode="per-group", groups="two")


def test_shipped_stage1_groups_real_photos_by_their_degradation():
    """The shipped stage 1 tells sharpened JPEGs from box-downscaled crops of the bundled photos."""
    from lway_rt.adapt.embed import compute_embeddings
    from lway_rt.adapt.patches import bicubic_up
    from lway_rt.degae import load_stage1
    from lway_rt.degae.degrade import apply_degradation, eval_preset
    from lway_rt.io.images import bundled_photo, resize_bicubic

    ups, kinds = [], []
    for k, (name, top, left) in enumerate([("astronaut", 60, 140), ("chelsea", 40, 200), ("coffee", 100, 180),
                                           ("rocket", 120, 160), ("motorcycle", 100, 300)]):
        hr = np.ascontiguousarray(bundled_photo(name)[top:top + 192, left:left + 192])
        x = torch.from_numpy(np.array(resize_bicubic(hr, (48, 48)))).permute(2, 0, 1).float() / 255.0
        for preset in ("sharpen-jpeg420", "box-downscale"):
            ups.append(bicubic_up(apply_degradation(x, eval_preset(preset, seed=k))[None], 4))
            kinds.append(preset)
    g = group_embeddings(compute_embeddings(ups, load_stage1(None)), "auto")
    assert g.count == 2
    assert sorted(sorted({kinds[i] for i in m}) for m in g.members()) == [["box-downscale"], ["sharpen-jpeg420"]]


@pytest.fixture(scope="module")
def files(tmp_path_factory, hr_crop):
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.degae import Stage1, save_stage1
    from lway_rt.io.weights import save_safetensors

    root = tmp_path_factory.mktemp("adapt_groups")
    torch.manual_seed(0)
    save_safetensors(root / "tiny.safetensors", SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).state_dict(), {})
    save_stage1(root / "stage1.safetensors", Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16),
                                                          seed=3).freeze())
    lr = root / "lr"
    lr.mkdir()
    for k in range(3):
        Image.fromarray(hr_crop[40 * k:40 * k + 144:4, 40 * k:40 * k + 144:4]).save(lr / f"im{k}.png")  # 36x36
    return root


def _adapt(files, out, *extra):
    args = ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
            str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16", "--batch-size", "2", *extra]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res.exit_code, res.output


def test_per_group_end_to_end_and_resume(files, tmp_path):
    out = tmp_path / "grouped"
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2")
    assert code == 0, text
    assert "grouped 3 image(s) into 2 by stage 1's embedding" in text
    members = json.loads((out / "groups.json").read_text())["members"]
    assert sorted(members) == ["group-1", "group-2"]
    assert sorted(n for names in members.values() for n in names) == ["im0", "im1", "im2"]  # each image once
    summary = json.loads((out / "report.json").read_text())
    assert summary["mode"] == "per-group"
    for run in summary["runs"]:
        assert sorted(run["images"]) == sorted(members[run["name"]])
        assert (out / run["weights"]).is_file()
        rep = json.loads((out / run["name"] / "report.json").read_text())
        assert sorted(im["name"] for im in rep["images"]) == sorted(members[run["name"]])
        assert json.loads((out / run["name"] / "config.json").read_text())["groups"] == 2
        for name in members[run["name"]]:
            assert (out / run["name"] / "sr" / f"{name}.png").is_file()
    # the folder names its models when given whole to upscale
    res = CliRunner().invoke(main, ["upscale", str(files / "lr" / "im0.png"), "-m", str(out), "-o", str(tmp_path / "up")])
    assert res.exit_code != 0 and "holds 2 adapted models (group-1/adapted.safetensors, group-2/" in res.output
    # a finished grouping resumes as skipped; other inputs than the interrupted run's are refused
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--resume")
    assert code == 0 and text.count("already adapted, skipped") == 2, text
    (files / "lr" / "im2.png").rename(files / "im2.png")
    try:
        res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                        str(out), "--stage1", str(files / "stage1.safetensors"), "--mode", "per-group",
                                        "--groups", "2", "--resume", "--patch-size", "16"])
    finally:
        (files / "im2.png").rename(files / "lr" / "im2.png")
    assert res.exit_code != 0 and "group differently from the interrupted run" in res.output


def test_per_group_with_ground_truth_scores_each_group_on_its_own_images(files, tmp_path, hr_crop):
    gt = tmp_path / "gt"
    gt.mkdir()
    for k in range(3):  # the HR each input was taken from (x4)
        Image.fromarray(np.ascontiguousarray(hr_crop[40 * k:40 * k + 144, 40 * k:40 * k + 144])).save(gt / f"im{k}.png")
    out = tmp_path / "gt_groups"
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--gt", str(gt), "--eval-every", "1")
    assert code == 0 and "Y-PSNR" in text, text
    members = json.loads((out / "groups.json").read_text())["members"]
    for name, names in members.items():
        rep = json.loads((out / name / "report.json").read_text())
        assert sorted(im["name"] for im in rep["images"]) == sorted(names)
        assert all("before" in im and "after" in im for im in rep["images"]) and rep["mean"]["psnr_before"] > 10
    assert all(r["mean"] for r in json.loads((out / "report.json").read_text())["runs"])


@pytest.mark.parametrize("extra,message", [
    (["--groups", "2"], "applies to per-group mode only"),
    (["--mode", "per-group", "--groups", "two"], "neither a number of groups nor auto"),
    (["--mode", "per-group", "--groups", "4"], "use at most 3 groups"),
])
def test_bad_grouping_options_give_one_line_errors(files, tmp_path, extra, message):
    code, text = _adapt(files, tmp_path / "bad", *extra)
    assert code != 0 and message in text
