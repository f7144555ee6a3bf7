"""Grouping a folder's inputs by stage 1's embedding of their degradation (``adapt --mode per-group``)."""

from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.groups import AUTO_MIN_SILHOUETTE, _silhouette, group_centres, group_embeddings, nearest_group
from lway_rt.cli import main
from lway_rt.errors import InputError, LwayError


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


def test_centres_and_nearest_group():
    x = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [0.0, 3.0]])
    centres, floors = group_centres(x, [0, 0, 1, 1])
    c0 = np.array([1.8, 0.6]) / np.hypot(1.8, 0.6)  # the mean of the unit-length members, made unit-length
    assert np.allclose(centres, [c0, [0.0, 1.0]]) and np.allclose(floors, [min(c0 @ [1, 0], c0 @ [0.8, 0.6]), 1.0])
    best, sim = nearest_group(np.array([[5.0, 0.1], [0.1, -0.2], [-1.0, 4.0]]), centres)
    assert best.tolist() == [0, 0, 1] and sim[2] == pytest.approx(4 / np.hypot(1, 4))
    g = group_embeddings(_clusters([5, 6]), "auto")  # a grouping carries its centres and floors
    assert len(g.centres) == 2 and all(0.9 < f <= 1 for f in g.floors)


def test_grouping_and_routing_agree_on_every_member():
    """An image adapt put in a group is routed back to that group: grouping and routing measure alike (k-means on the
    unit sphere, cosine to unit centres). With raw means, about 1 image in 500 of such random sets was routed to
    another group than the one it was adapted in."""
    moved = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        k, d = int(rng.integers(2, 5)), int(rng.integers(3, 10))
        e = rng.normal(0, 1, (int(rng.integers(8, 30)), d))
        g = group_embeddings(e, k)
        best, _ = nearest_group(e, np.array(g.centres))
        moved += int((best != np.array(g.labels)).sum())
    assert moved == 0


@pytest.mark.parametrize("h,w,scale,tol", [(300, 200, 4, 0.0), (40, 50, 4, 0.0), (600, 90, 4, 0.0), (257, 300, 3, 1e-4)])
def test_embedding_input_is_the_centre_of_the_whole_upsampled_image(h, w, scale, tol):
    """upscale embeds a new image from its LR window only; E must read what grouping read from the whole image."""
    from lway_rt.adapt.embed import EMBED_MAX_SIDE, _centre_crop, embedding_input
    from lway_rt.adapt.patches import bicubic_up

    lr = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h))
    whole = _centre_crop(bicubic_up(lr, scale), EMBED_MAX_SIDE)
    part = embedding_input(lr, scale)
    assert part.shape == whole.shape and (part - whole).abs().max().item() <= tol
    assert torch.equal(embedding_input(lr, scale, "lr-recon"), _centre_crop(lr, EMBED_MAX_SIDE))


def _preset_crops(folder, presets, photos, offset, seed):
    from lway_rt.degae.degrade import apply_degradation, eval_preset
    from lway_rt.io.images import bundled_photo, resize_bicubic

    folder.mkdir()
    for k, name in enumerate(photos):
        hr = np.ascontiguousarray(bundled_photo(name)[offset + 10 * k:offset + 10 * k + 192, offset:offset + 192])
        x = torch.from_numpy(np.array(resize_bicubic(hr, (48, 48)))).permute(2, 0, 1).float() / 255.0
        for preset in presets:
            y = apply_degradation(x, eval_preset(preset, seed=seed + k)).clamp(0, 1)
            Image.fromarray((y.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(folder / f"{name}-{preset}.png")


def test_upscale_sends_new_images_to_their_sources_model(files, tmp_path):
    """Real photos, the shipped stage 1: new sharpened JPEGs go to the sharpened JPEGs' model, new box-downscaled
    crops to theirs; an old adaptation without centres, a wrong --stage1 and an unfinished group are refused."""
    presets = ("sharpen-jpeg420", "box-downscale")
    _preset_crops(tmp_path / "lr", presets, ["astronaut", "chelsea", "coffee", "rocket", "motorcycle"], 60, 0)
    _preset_crops(tmp_path / "new", presets, ["astronaut", "coffee"], 150, 20)  # other crops, other draws
    out = tmp_path / "grouped"
    res = CliRunner().invoke(main, ["adapt", str(tmp_path / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out),
                                    "--mode", "per-group", "--iterations", "1", "--patch-size", "16", "--batch-size", "2"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "groups.json").read_text())
    source = {g: {n.split("-", 1)[1] for n in names} for g, names in record["members"].items()}
    assert sorted(map(sorted, source.values())) == [["box-downscale"], ["sharpen-jpeg420"]]
    assert record["routing"]["stage1"] == "shipped" and len(record["routing"]["centres"]["group-1"]) > 100

    from lway_rt.upscale import UpscaleConfig, upscale_files

    report = upscale_files([tmp_path / "new"], tmp_path / "up", UpscaleConfig(model=str(out)))
    assert report.ok and len(report.written) == 4
    for route in report.routes:
        assert source[route.group] == {route.path.stem.split("-", 1)[1]}, route
        assert -1 <= route.similarity <= 1
    # an image with alpha goes by what shows: the colour under fully transparent pixels is filled as adapt fills it
    # (it went by the hidden colour: here a sharpened JPEG crop under all but a strip of a box-downscaled one)
    shown = np.asarray(Image.open(tmp_path / "new" / "astronaut-box-downscale.png"))
    rgba = np.dstack([np.asarray(Image.open(tmp_path / "new" / "coffee-sharpen-jpeg420.png")), np.zeros((48, 48), np.uint8)])
    rgba[:, :16, :3], rgba[:, :16, 3] = shown[:, :16], 255
    Image.fromarray(rgba).save(tmp_path / "cut.png")
    report = upscale_files([tmp_path / "cut.png"], tmp_path / "up_cut", UpscaleConfig(model=str(out)))
    assert source[report.routes[0].group] == {"box-downscale"}, report.routes
    # a store name means the store, even where the current folder holds a per-group folder of that name
    import os
    import shutil

    here = os.getcwd()
    shutil.copytree(out, tmp_path / "cwd" / "realesr-animevideov3")
    os.chdir(tmp_path / "cwd")
    try:
        report = upscale_files([tmp_path / "new"], tmp_path / "up_store", UpscaleConfig(model="realesr-animevideov3"))
        assert report.ok and not report.routes
        report = upscale_files([tmp_path / "new"], tmp_path / "up_dot", UpscaleConfig(model="./realesr-animevideov3"))
        assert report.ok and len(report.routes) == 4  # "./NAME" reaches the folder
    finally:
        os.chdir(here)
    report = upscale_files([tmp_path / "lr"], tmp_path / "own", UpscaleConfig(model=str(out)))  # the inputs themselves
    assert {r.path.stem: r.group for r in report.routes} == {n: g for g, names in record["members"].items() for n in names}
    assert all(r.inside for r in report.routes)
    noise = tmp_path / "noise.png"  # like no group's images: still upscaled, with a warning
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(noise)
    res = CliRunner().invoke(main, ["upscale", str(noise), "-m", str(out), "-o", str(tmp_path / "up1")])
    assert res.exit_code == 0 and "noise.png is unlike the images every group was adapted on" in res.output
    assert f"note: {noise} is unlike" in res.output  # in every command's style of note
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "new"), "-m", str(out), "-o", str(tmp_path / "up2"),
                                    "--stage1", str(files / "stage1.safetensors")])
    assert res.exit_code != 0 and "is not the stage-1 checkpoint the groups" in res.output
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "new"), "-m", str(files / "tiny.safetensors"), "-o",
                                    str(tmp_path / "up2"), "--stage1", str(files / "stage1.safetensors")])
    assert res.exit_code != 0 and "--stage1 is for a per-group adaptation folder" in res.output
    old = {k: v for k, v in record.items() if k != "routing"}
    (out / "groups.json").write_text(json.dumps(old))
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "new"), "-m", str(out), "-o", str(tmp_path / "up3")])
    assert res.exit_code != 0 and "recorded their groups' centres: pass one of its models (group-1/" in res.output
    broken = {**record, "routing": {k: v for k, v in record["routing"].items() if k != "centres"}}
    (out / "groups.json").write_text(json.dumps(broken))
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "new"), "-m", str(out), "-o", str(tmp_path / "up3")])
    assert res.exit_code != 0 and "groups.json is incomplete (KeyError" in res.output
    # centres cut short (a traceback from the matrix product) or not numbers (every image went there): refused (58C-4)
    for centres, said in (({g: c[:10] for g, c in record["routing"]["centres"].items()}, "its centres have 10 "
                           f"numbers, stage 1 embeds in {len(next(iter(record['routing']['centres'].values())))}"),
                          ({g: [float("nan")] * len(c) for g, c in record["routing"]["centres"].items()},
                           "ValueError: a centre is not a number")):
        (out / "groups.json").write_text(json.dumps({**record, "routing": {**record["routing"], "centres": centres}}))
        res = CliRunner().invoke(main, ["upscale", str(tmp_path / "new"), "-m", str(out), "-o", str(tmp_path / "up3")])
        assert res.exit_code == 1 and f"groups.json is incomplete ({said})" in " ".join(res.output.split()), res.output
    (out / "groups.json").write_text(json.dumps(record))
    (out / "group-2" / "adapted.safetensors").rename(out / "group-2" / "held.safetensors")
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "new"), "-m", str(out), "-o", str(tmp_path / "up4")])
    assert res.exit_code != 0 and "group-2 not adapted yet" in res.output and "--resume" in res.output


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
    out = tmp_path / "my groups"  # the hint's path is shell-quoted
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2")
    assert code == 0, text
    assert "grouped 3 image(s) into 2 by stage 1's embedding" in text
    hint = next(ln for ln in text.splitlines() if ln.startswith("new images go each to its group's model with: "))
    assert shlex.split(hint.split(": ", 1)[1])[3:5] == ["-m", str(out)], hint
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
    # given whole to upscale, the folder sends each image to its group's model: the adapted images come back
    res = CliRunner().invoke(main, ["upscale", str(files / "lr"), "-m", str(out), "-o", str(tmp_path / "up")])
    assert res.exit_code == 0, res.output
    counts = "; ".join(f"{g} {len(m)} image(s) ({', '.join(f'{n}.png' for n in m)})" for g, m in sorted(members.items()))
    assert f"sent by stage 1's embedding to: {counts}" in res.output and "unlike" not in res.output
    for group, names in members.items():
        for name in names:
            written = np.asarray(Image.open(out / group / "sr" / f"{name}.png"))  # adapt wrote it as upscale runs
            assert np.array_equal(np.asarray(Image.open(tmp_path / "up" / f"{name}_x4.png")), written), name
    # export and other commands that take one model still say which models the folder holds
    res = CliRunner().invoke(main, ["export", "--model", str(out), "--out", str(tmp_path / "exp")])
    assert res.exit_code != 0 and f"holds 2 adapted models ({out / 'group-1' / 'adapted.safetensors'}, {out / 'group-2'}" in res.output
    # ... as a per-group adaptation, whose routing only upscale and the API apply; its groups.json is no model (58C-7)
    assert "a per-group adaptation, whose routing of each image to its group's model only 'lwayrt upscale -m' and " \
        "lway_rt.api.Upscaler apply; here pass one group's model" in " ".join(res.output.split()), res.output
    res = CliRunner().invoke(main, ["upscale", str(files / "lr"), "-m", str(out / "groups.json"), "-o", str(tmp_path / "g")])
    assert res.exit_code != 0 and f"is the grouping of a per-group adaptation, not a model: 'lwayrt upscale -m' and " \
        f"lway_rt.api.Upscaler take its folder ({out}); elsewhere pass one group's model" in " ".join(res.output.split()), \
        res.output
    # a finished grouping resumes as skipped; other inputs than the interrupted run's are refused
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--resume")
    assert code == 0 and text.count("already adapted with these inputs and settings, skipped") == 2, text
    # the same images named one by one in another order: the same run (58C-6: refused, "an image's pixels changed?")
    res = CliRunner().invoke(main, ["adapt", *(str(files / "lr" / f"im{k}.png") for k in (2, 0, 1)), "-m",
                                    str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
                                    str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16",
                                    "--batch-size", "2", "--mode", "per-group", "--groups", "2", "--resume"])
    assert res.exit_code == 0 and res.output.count("already adapted with these inputs and settings, skipped") == 2, \
        res.output
    (files / "lr" / "im2.png").rename(files / "im2.png")
    try:
        res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                        str(out), "--stage1", str(files / "stage1.safetensors"), "--mode", "per-group",
                                        "--groups", "2", "--resume", "--patch-size", "16"])
    finally:
        (files / "im2.png").rename(files / "lr" / "im2.png")
    assert res.exit_code != 0 and f"group differently from the run in {out} (im2 of its inputs is not given): give " \
        "the inputs it was adapted on" in " ".join(res.output.split()), res.output  # (it guessed, "interrupted run")
    (files / "lr" / "im9.png").write_bytes((files / "lr" / "im2.png").read_bytes())  # one more (review 52D D2)
    try:
        res = CliRunner().invoke(main, ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o",
                                        str(out), "--stage1", str(files / "stage1.safetensors"), "--mode", "per-group",
                                        "--groups", "2", "--resume", "--patch-size", "16"])
    finally:
        (files / "lr" / "im9.png").unlink()
    assert res.exit_code != 0 and f"from the run in {out} (im9 is new to it)" in " ".join(res.output.split()), \
        res.output
    # another --groups is named as the cause (it was "images added, removed or changed?" of unchanged inputs)
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "3", "--resume")
    assert code == 1 and f"the run in {out} was made with --groups 2 (this command: --groups 3): rerun " \
        "with --groups 2 to continue it" in " ".join(text.split()), text
    # an unreadable record of the grouping is a one-line error, not a traceback
    (out / "groups.json").write_text("{")
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--resume")
    assert code == 1 and "groups.json cannot be read" in text and "--overwrite" in text, text


def test_a_stage1_file_trained_further_since_the_groups_is_said_so(files, tmp_path):
    """The groups' stage-1 file replaced in place (a train-degae --resume of it): upscale said the checkpoint was "not
    at" that path, where a file is, and to pass it there (review 52E E2); it says the file holds another one now."""
    from lway_rt.degae import Stage1, save_stage1

    s1 = tmp_path / "s1.safetensors"
    shutil.copy(files / "stage1.safetensors", s1)
    out = tmp_path / "g"
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--stage1", str(s1))
    assert code == 0, text
    save_stage1(s1, Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16), seed=9).freeze())
    res = CliRunner().invoke(main, ["upscale", str(files / "lr"), "-m", str(out), "-o", str(tmp_path / "up")])
    said = " ".join(res.output.split())
    assert res.exit_code == 1 and f"were made with the stage-1 checkpoint {s1} as it was then" in said and \
        "that file holds another one now" in said and "not at" not in said, said


def test_the_python_api_routes_arrays_to_their_groups_models(files, tmp_path):
    """lway_rt.api.Upscaler given a per-group folder sends each array to its group's model, as upscale sends files:
    the adapted images come back."""
    from lway_rt.api import Upscaler

    out = tmp_path / "grouped"
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2")
    assert code == 0, text
    members = json.loads((out / "groups.json").read_text())["members"]
    up = Upscaler(out)
    assert up.last_route is None
    for group, names in members.items():
        for name in names:
            lr = np.asarray(Image.open(files / "lr" / f"{name}.png"))
            assert np.array_equal(up(lr), np.asarray(Image.open(out / group / "sr" / f"{name}.png"))), name
            assert up.last_route.group == group and up.last_route.inside  # where it went: the command tells it
    up._router.floors[:] = 0.999999  # every group drawn tight about its centre: the array is unlike every group
    with pytest.warns(UserWarning, match=r"the array is unlike the images every group was adapted on .* its model may "
                                         r"not suit it"):
        up(np.random.default_rng(0).integers(0, 256, (36, 36, 3), dtype=np.uint8))  # (no group's own image)
    assert not up.last_route.inside
    with pytest.raises(LwayError):  # a call that raises leaves no earlier array's route to be read as its own
        up(np.zeros((36, 36, 5), np.uint8))
    assert up.last_route is None
    # an array too small for stage 1 to read is said in its own size and what it takes (it was "an encoder input of
    # 36x20 px", a size no one gave; review 48E E6)
    with pytest.raises(InputError, match=r"is 9x5 px, below the 6 px a side that a per-group folder's routing"):
        up(np.zeros((5, 9, 3), np.uint8))


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


def test_each_groups_run_reuses_the_groupings_embeddings(files, tmp_path, monkeypatch):
    """Per group, E runs once per image (for the grouping), and each group's run takes those rows: its weights equal
    those of the same group adapted alone, where E runs inside the run."""
    from safetensors.torch import load_file

    import lway_rt.adapt.embed as embed
    import lway_rt.adapt.loop as loop

    calls = []
    real = embed.compute_embeddings

    def counting(images, *a, **k):
        calls.append(len(images))
        return real(images, *a, **k)

    monkeypatch.setattr(loop, "compute_embeddings", counting)
    out = tmp_path / "grouped"
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2")
    assert code == 0, text
    assert calls == [3] and text.count("took the grouping's embeddings of") == 2
    members = json.loads((out / "groups.json").read_text())["members"]
    group, names = max(members.items(), key=lambda kv: len(kv[1]))
    alone = files / "alone"
    alone.mkdir()
    for name in names:
        (alone / f"{name}.png").write_bytes((files / "lr" / f"{name}.png").read_bytes())
    args = ["adapt", str(alone), "-m", str(files / "tiny.safetensors"), "-o", str(tmp_path / "alone"), "--stage1",
            str(files / "stage1.safetensors"), "--iterations", "2", "--patch-size", "16", "--batch-size", "2"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert calls == [3, len(names)]  # E ran inside the folder run
    a, b = load_file(out / group / "adapted.safetensors"), load_file(tmp_path / "alone" / "adapted.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_group_of_one_image_is_judged_by_the_widest_groups_spread(files, tmp_path):
    """With --groups N a group can hold one image: it lies at its centre, so every other image routed there was
    flagged as unlike it ('whose own images lie within 0'). It takes the widest other group's spread, or is not
    judged when every group is of one image; a --stage1 that does not exist is said so."""
    from lway_rt.upscale import Route, route_floors

    floors, borrowed = route_floors([0.99, 1.0, 0.95], [3, 1, 2])
    assert floors.tolist() == [0.99, 0.95, 0.95] and borrowed.tolist() == [False, True, False]
    floors, borrowed = route_floors([1.0, 1.0], [1, 1])
    assert np.isnan(floors).all() and borrowed.all()
    # copies of one image lie at their centre too: each other image was flagged, the spread "-4.4e-16" (58C-3)
    floors, borrowed = route_floors([1.0000000000000004, 0.9], [2, 3])
    assert floors.tolist() == [0.9, 0.9] and borrowed.tolist() == [True, False]
    from lway_rt.adapt.groups import group_centres

    twin = np.random.default_rng(0).normal(size=(1, 512))
    assert group_centres(np.concatenate([twin, twin, twin]), [0, 0, 0])[1].tolist() == [1.0]
    assert Route(tmp_path, "group-1", 0.5, float("nan"), True).inside
    assert not Route(tmp_path, "group-1", 0.5, 0.99).inside and Route(tmp_path, "group-1", 0.995, 0.99).inside
    out = tmp_path / "grouped"
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2")
    assert code == 0, text
    record = json.loads((out / "groups.json").read_text())
    single = next(g for g, names in record["members"].items() if len(names) == 1)
    assert record["routing"]["floors"][single] == pytest.approx(1.0)
    new = tmp_path / "new"  # the lone image turned over: near it, farther than 0 from its centre
    new.mkdir()
    Image.open(files / "lr" / f"{record['members'][single][0]}.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        new / "turned.png")
    res = CliRunner().invoke(main, ["upscale", str(new), "-m", str(out), "-o", str(tmp_path / "up"), "--stage1",
                                    str(files / "stage1.safetensors")])
    assert res.exit_code == 0 and f"{single} 1 image(s)" in res.output, res.output
    assert "whose own images lie within" not in res.output, res.output  # flagged or not, by another group's spread
    res = CliRunner().invoke(main, ["upscale", str(files / "lr"), "-m", str(out), "-o", str(tmp_path / "up2"),
                                    "--stage1", str(tmp_path / "gone.safetensors")])
    assert res.exit_code == 1 and "gone.safetensors does not exist: pass the stage-1 checkpoint" in res.output, res.output


def test_groups_auto_in_any_case(tmp_path):
    """The help shows N|AUTO as click prints metavars; 'AUTO' was 'neither a number of groups nor auto'."""
    from click.testing import CliRunner

    from lway_rt.cli import main

    res = CliRunner().invoke(main, ["adapt", str(tmp_path / "x.png"), "-m", "realesr-animevideov3", "-o",
                                    str(tmp_path / "out"), "--mode", "per-group", "--groups", "AUTO"])
    assert res.exit_code == 1 and "x.png does not exist" in res.output, res.output  # past --groups AUTO


def test_auto_grouping_into_one_says_why(files, tmp_path):
    """It printed "grouped 3 image(s) into 1" and nothing more: no split was even scored (groups of 4 at least)."""
    code, text = _adapt(files, tmp_path / "auto", "--mode", "per-group")
    assert code == 0, text
    assert "grouped 3 image(s) into 1 by stage 1's embedding: no split into groups of at least 4 images each; " \
           "--groups N splits them into N" in text, text


def test_fewer_groups_than_asked_says_why(files, tmp_path):
    """Copies of one image with --groups 2 made one group, said as "into 1" only, as if --groups were ignored (58C-2)."""
    twins = tmp_path / "twins"
    twins.mkdir()
    for name in ("a.png", "b.png"):
        (twins / name).write_bytes((files / "lr" / "im0.png").read_bytes())
    res = CliRunner().invoke(main, ["adapt", str(twins), "-m", str(files / "tiny.safetensors"), "-o", str(tmp_path / "o"),
                                    "--stage1", str(files / "stage1.safetensors"), "--iterations", "1", "--patch-size",
                                    "16", "--mode", "per-group", "--groups", "2"])
    assert res.exit_code == 0 and "grouped 2 image(s) into 1 by stage 1's embedding, not the 2 asked for: stage 1's " \
        "embedding tells only 1 kind(s) apart among them" in " ".join(res.output.split()), res.output


def test_a_resume_of_a_stopped_per_group_overwrite_finishes_it_and_no_other_does(files, tmp_path, monkeypatch):
    """A per-group --overwrite with other settings, stopped before its second group: the --resume its stop message
    advises was refused there ("made with other settings": the group's run is the replaced one). The folder's mark
    records the overwrite's inputs, model and settings: its --resume replaces that run as the overwrite would have; a
    --resume with other settings (group names say nothing of them) is refused and leaves every run where it was."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt.runfolder import ASIDE

    out = tmp_path / "groups"
    assert _adapt(files, out, "--mode", "per-group", "--groups", "2")[0] == 0
    real, calls = loop.adapt_images, []

    def stopping(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # group-1 made anew, group-2 not begun
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(loop, "adapt_images", stopping)
        code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--iterations", "3", "--overwrite")
    assert code == 130 and "--resume in place of --overwrite" in text, text
    stopped = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--iterations", "3", "--resume", "--seed", "5")
    assert code == 1 and "made with other settings" in text, text
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == stopped
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--iterations", "3", "--resume")
    assert code == 0 and not list(out.rglob(ASIDE)), text
    for name in ("group-1", "group-2"):
        assert json.loads((out / name / "report.json").read_text())["final_iteration"] == 3


def test_an_overwrite_after_a_stopped_one_removes_the_run_folders_that_one_started(files, tmp_path, monkeypatch):
    """A per-group --overwrite with fewer groups, after one with more was stopped in its last group: the stopped
    command's started run folder (its config.json, a checkpoint) stayed beside the new runs."""
    import lway_rt.adapt.loop as loop

    out = tmp_path / "groups"
    assert _adapt(files, out, "--mode", "per-group", "--groups", "2")[0] == 0
    real, calls = loop.fast_adapt_step, []

    def stopping(*a, **k):
        calls.append(1)
        if len(calls) == 5:  # group-1 and group-2 made anew (2 steps each), group-3 begun
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(loop, "fast_adapt_step", stopping)
        code, text = _adapt(files, out, "--mode", "per-group", "--groups", "3", "--overwrite")
    assert code == 130 and (out / "group-3" / "config.json").is_file(), text
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "1", "--overwrite")
    assert code == 0, text
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "group-1", "groups.json", "report.json"]


def test_upscale_refuses_a_folder_a_stopped_per_group_overwrite_left_half_replaced(files, tmp_path, monkeypatch):
    """A per-group --overwrite into another number of groups writes its groups.json first and replaces the runs one by
    one: stopped before them, upscale sent images by the new groups' centres to the old runs' models, silently. It is
    refused, saying how to finish the overwrite or have the runs back; a group whose run was made on other images
    than groups.json lists for it is refused too."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt.runfolder import restore_replaced

    out = tmp_path / "groups"
    assert _adapt(files, out, "--mode", "per-group", "--groups", "3")[0] == 0
    real, calls = loop.adapt_images, []

    def stopping(*a, **k):
        calls.append(1)
        if len(calls) == 1:  # no run replaced yet
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(loop, "adapt_images", stopping)
        assert _adapt(files, out, "--mode", "per-group", "--groups", "2", "--overwrite")[0] == 130
    up = ["upscale", str(files / "lr"), "-m", str(out), "-o", str(tmp_path / "up")]
    res = CliRunner().invoke(main, up)
    assert res.exit_code == 1 and "holds a per-group --overwrite that was stopped part-way" in res.output, res.output
    assert "--restore" in res.output and not (tmp_path / "up").exists()
    copy = tmp_path / "copy"  # a group whose run was made on other images: refused by the reports alone
    shutil.copytree(out, copy)
    restore_replaced(copy)
    record = json.loads((copy / "groups.json").read_text())
    record["members"]["group-1"], record["members"]["group-2"] = record["members"]["group-2"], record["members"]["group-1"]
    (copy / "groups.json").write_text(json.dumps(record))
    res = CliRunner().invoke(main, [*up[:3], str(copy), *up[4:]])
    said = " ".join(res.output.split())  # nothing kept aside: no --resume or --restore, which both refuse (52D D1)
    assert res.exit_code == 1 and "group-1's model was adapted on other images than groups.json lists for it (edited " \
        f"since?): put back the members {copy / 'group-1' / 'report.json'} names, or adapt again" in said, said
    assert "--restore" not in said and "--resume" not in said
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--resume")
    assert code == 0, text
    res = CliRunner().invoke(main, up)
    assert res.exit_code == 0, res.output


def test_a_resume_takes_up_a_per_group_overwrite_stopped_while_it_moved_the_summary_aside(files, tmp_path,
                                                                                       monkeypatch):
    """A per-group --overwrite into another number of groups, stopped while it moved the folder's summary aside
    (groups.json goes last): the --resume it advises was judged against the replaced run's groups.json ("made with
    --groups 3"), and the --resume with --groups 3 that refusal advised was refused as another command's."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt.runfolder import ASIDE

    out = tmp_path / "groups"
    assert _adapt(files, out, "--mode", "per-group", "--groups", "3")[0] == 0
    real, calls = loop.shutil.move, []

    def stopping(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # report.json moved aside, config.json and groups.json not
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(loop.shutil, "move", stopping)
        code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--overwrite")
    assert code == 130 and "--resume in place of --overwrite" in text, text
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "2", "--resume")
    assert code == 0 and not list(out.rglob(ASIDE)), text
    assert sorted(json.loads((out / "groups.json").read_text())["members"]) == ["group-1", "group-2"]
    assert not (out / "group-3").exists()


def test_per_group_refusals_in_a_folder_a_stopped_overwrite_or_restore_holds_say_the_way_on(files, tmp_path,
                                                                                             monkeypatch):
    """A --resume with other inputs into a per-group folder a stopped --overwrite holds was told only "adapt them into
    a new --out folder"; after a --restore stopped part-way a --resume was judged by the half-restored grouping
    ("rerun with --groups 2"), and upscale used the folder; a kept-aside folder whose first mark a kill cut short
    stayed after --restore."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder
    from lway_rt.io.weights import temp_prefix

    out = tmp_path / "groups"
    assert _adapt(files, out, "--mode", "per-group", "--groups", "3")[0] == 0
    real, calls = loop.adapt_images, []

    def stopping(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # group-1 made anew
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(loop, "adapt_images", stopping)
        assert _adapt(files, out, "--mode", "per-group", "--groups", "2", "--overwrite")[0] == 130
    code, text = _adapt(files, out, "--mode", "per-group", "--groups", "3", "--resume")
    assert code == 1 and "a stopped --overwrite replaces: run that --overwrite again, or lwayrt adapt --restore" in \
        " ".join(text.split()), text
    real_put, puts = runfolder._put_back, []

    def put_once(*a, **k):
        puts.append(1)
        if len(puts) == 2:  # one run folder's run put back
            raise KeyboardInterrupt
        return real_put(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(runfolder, "_put_back", put_once)
        with pytest.raises(KeyboardInterrupt):
            runfolder.restore_replaced(out)
    for args in (["--groups", "3", "--resume"], ["--groups", "2", "--resume"], ["--groups", "3"]):
        code, text = _adapt(files, out, "--mode", "per-group", *args)
        assert code == 1 and f"a --restore into {out} was stopped part-way" in text, text
    res = CliRunner().invoke(main, ["upscale", str(files / "lr"), "-m", str(out), "-o", str(tmp_path / "up")])
    assert res.exit_code == 1 and "was stopped part-way" in res.output, res.output
    gone = tmp_path / "gone"  # the stopped command's groups.json removed, the kept one not yet back: "holds 3 models"
    shutil.copytree(out, gone)
    (gone / "groups.json").unlink()
    res = CliRunner().invoke(main, ["upscale", str(files / "lr"), "-m", str(gone), "-o", str(tmp_path / "up")])
    assert res.exit_code == 1 and "was stopped part-way" in res.output, res.output
    assert "put back" in runfolder.restore_replaced(out)
    aside = out / runfolder.ASIDE  # what a kill during the first write of the mark leaves: its temporary file alone
    aside.mkdir()
    (aside / f"{temp_prefix(runfolder.ASIDE_MARK)}k1ll3d.tmp").write_text("{")
    assert "nothing left to restore" in runfolder.restore_replaced(out) and not aside.exists()
