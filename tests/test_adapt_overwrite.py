"""``lwayrt adapt --overwrite`` and ``--restore`` at tiny size: a run replaced only once the new one is finished,
what a stop at any moment leaves, and how the kept run is put back."""

from __future__ import annotations

import json
import shutil
import signal
import sys

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lway_rt.adapt.loop import CHECKPOINT

from adapt_cli_common import (
    LONG_RUN, _digests, _long_run_stopped_after_a_checkpoint, _per_image_then_fewer, _replace_args, _run,
    _stop_before_the_first_step, _stopped_when, _stopping_on_call, make_files,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory, hr_crop):
    return make_files(tmp_path_factory, hr_crop)


def test_a_finished_run_is_kept_unless_overwritten(files, tmp_path):
    """A finished run is neither retrained by --resume nor replaced by a rerun: --resume keeps it when its inputs
    and settings are these (and refuses otherwise), --overwrite replaces it. An image given twice is adapted once."""
    out = tmp_path / "done"
    args = ["adapt", str(files / "lr"), str(files / "lr" / "rgb.png"), "-m", str(files / "tiny.safetensors"),
            "-o", str(out), "--stage1", str(files / "stage1.safetensors"), "--iterations", "3", "--patch-size", "16",
            "--batch-size", "1", "-q"]
    code, text = _run(args)
    assert code == 0, text
    assert [im["name"] for im in json.loads((out / "report.json").read_text())["images"]] == ["alpha", "grey", "rgb"]
    weights, config = (out / "adapted.safetensors").read_bytes(), (out / "config.json").read_bytes()

    code, text = _run(args)
    assert code == 1 and "holds a finished run" in text and "--overwrite" in text, text
    code, text = _run([*args, "--resume"])
    assert code == 0 and "3 iterations, completed" in text, text
    assert (out / "adapted.safetensors").read_bytes() == weights  # kept, not trained again
    code, text = _run([*args, "--resume", "--lr", "3e-4"])
    assert code == 1 and "made with other settings: --lr " in text and "(this command: 0.0003)" in text, text
    assert (out / "config.json").read_bytes() == config and (out / "adapted.safetensors").read_bytes() == weights
    # not quiet: a refused or kept run says so before any work (it embedded the images, and said so, first)
    code, text = _run([*args[:-1], "--resume", "--lr", "3e-4"])
    assert code == 1 and "made with other settings" in text and "embedded" not in text, text
    code, text = _run([*args[:-1], "--resume"])
    assert code == 0 and "kept as it is" in text and "embedded" not in text, text

    code, text = _run([*args, "--overwrite", "--lr", "3e-4"])
    assert code == 0, text
    assert (out / "adapted.safetensors").read_bytes() != weights
    assert json.loads((out / "config.json").read_text())["lr"] == 3e-4


def test_overwrite_removes_the_old_run_first_so_a_stopped_one_is_never_called_complete(files, tmp_path,
                                                                                      held_elsewhere):
    """--overwrite over a finished run, stopped mid-way: the old report (the mark of a finished run), weights and
    images are out of the folder, so --resume continues the new run from its checkpoint instead of calling the folder
    complete; they are kept in .lwayrt-replaced, as they lay, until the new run finishes (a stopped overwrite had left
    neither run: hours of adaptation lost to a Ctrl-C seconds in), and `adapt --restore OUT` puts them back; a
    finished overwrite with fewer inputs leaves none of the old run's images behind."""
    from lway_rt.adapt.loop import CHECKPOINT as CKPT
    from lway_rt.adapt.runfolder import ASIDE, ASIDE_MARK, _clear_previous_run, _make_aside, _mark_aside
    from lway_rt.errors import InputError

    out = tmp_path / "ow"
    base = ["adapt", str(files / "lr"), "-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1",
            str(files / "stage1.safetensors"), "--iterations", "3", "--patch-size", "16", "--batch-size", "1", "-q"]
    code, text = _run(base)
    assert code == 0 and sorted(p.name for p in (out / "sr").iterdir()) == ["alpha.png", "grey.png", "rgb.png"], text
    finished = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    args, proc, text = _long_run_stopped_after_a_checkpoint(files, out, signal.SIGINT, ["--overwrite"])
    assert proc.returncode == 130, text
    assert not (out / "report.json").exists() and not (out / "adapted.safetensors").exists()
    assert not (out / "sr").exists() or not list((out / "sr").iterdir())
    assert f"the finished run it replaces is kept in {out / ASIDE} until a run there finishes" in text, text
    assert {p.relative_to(out / ASIDE): p.read_bytes() for p in (out / ASIDE).rglob("*") if p.is_file()
            and p.name != ASIDE_MARK} == finished
    # a refused command there says where the finished run is kept, as the stop did
    code, said = _run([a for a in args if a != "--overwrite"])
    assert code == 1 and f"is kept in {out / ASIDE}" in said, said
    # upscale -m on the folder names the unfinished run, not the hidden one aside as "one adapted model"
    code, said = _run(["upscale", str(files / "lr" / "rgb.png"), "-m", str(out), "-o", str(tmp_path / "up")])
    assert code == 1 and ASIDE not in said and "--resume" in said, said
    # the way back it gives, done on a copy: the finished run as it was, and no checkpoint of the stopped one
    assert "(to have it back instead: lwayrt adapt --restore " in text, text
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    code, said = _run(["adapt", "--restore", str(copy)])
    assert code == 0 and f"put back the finished run kept aside in {copy}" in said, said
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == finished
    code, said = _run(["adapt", "--restore", str(copy)])  # nothing aside any more
    assert code == 1 and "holds no run that --overwrite kept aside" in said, said
    with held_elsewhere(out):  # as a run in another process holds it
        code, said = _run(["adapt", "--restore", str(out)])
    assert code == 1 and f"another run is writing to {out} right now: restore once it has finished" in said, said
    code, text = _run([a for a in args if a != "--overwrite"] + ["--resume"])
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    assert report["iterations_run"] == LONG_RUN and len(report["resumed_from"]) == 1  # continued, not called complete
    assert not (out / ASIDE).exists()  # the new run is finished: the old one goes
    # an overwrite stopped before, and then another: what is aside is the last finished run, and it stays
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    _mark_aside(_make_aside(stopped), complete=True)
    (stopped / ASIDE / "adapted.safetensors").write_bytes(b"the last finished run")
    (stopped / ASIDE / "report.json").write_text("{}")
    (stopped / CKPT).write_bytes(b"an unfinished run")
    assert _clear_previous_run(stopped, keep_finished=True) == stopped / ASIDE
    assert not (stopped / CKPT).exists()
    assert (stopped / ASIDE / "adapted.safetensors").read_bytes() == b"the last finished run"
    # a finished run beside one kept aside (from before a stopped command: a per-image command's finished run folders)
    # does not replace it; beside a folder, file or link of that name this command did not make, the overwrite is
    # refused and nothing moves (a folder of the user's had been deleted)
    for leftover in ("ours", "folder", "file", "link"):
        done = tmp_path / f"done-{leftover}"
        (done / "sr").mkdir(parents=True)
        (done / "adapted.safetensors").write_bytes(b"weights")
        (done / "report.json").write_text(json.dumps({"images": [{"sr": "sr/a.png"}]}))
        (done / "sr" / "a.png").write_bytes(b"image")
        if leftover == "ours":
            _mark_aside(_make_aside(done), complete=True)
            (done / ASIDE / "report.json").write_text("{}")
            (done / ASIDE / "adapted.safetensors").write_bytes(b"the run before a stopped command")
        elif leftover == "folder":
            (done / ASIDE).mkdir()
            (done / ASIDE / "notes.txt").write_text("mine")
        elif leftover == "file":
            (done / ASIDE).write_text("mine")
        else:
            (done / ASIDE).symlink_to(tmp_path)
        before = sorted(p.relative_to(done) for p in done.rglob("*"))
        if leftover == "ours":  # the run kept from before a stopped command stays; what that command made goes
            assert _clear_previous_run(done, keep_finished=True) == done / ASIDE
            assert (done / ASIDE / "adapted.safetensors").read_bytes() == b"the run before a stopped command"
            assert not (done / ASIDE / "sr").exists() and not (done / "report.json").exists()
        else:
            with pytest.raises(InputError, match=rf"{ASIDE} is a {leftover} this command did not make"):
                _clear_previous_run(done, keep_finished=True)
            assert sorted(p.relative_to(done) for p in done.rglob("*")) == before
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), *base[2:], "--overwrite"])
    assert code == 0, text
    assert [p.name for p in (out / "sr").iterdir()] == ["rgb.png"]


def test_restore_after_an_overwrite_stopped_while_it_wrote_sr_into_a_linked_folder(files, tmp_path, hr_crop):
    """The way back a stopped --overwrite gave (cp -a of the folder kept aside) left the stopped run's sr/ images and
    list behind (a later overwrite with those inputs was refused), and failed half-way where sr/ is a link to another
    disk. `adapt --restore` removes the stopped run's files and puts the kept run back, sr/ images through the link."""
    clips = {}
    for clip, prefix in (("a", "f"), ("b", "g")):
        clips[clip] = tmp_path / clip
        clips[clip].mkdir()
        for i in range(6 if clip == "a" else 10):
            Image.fromarray(np.ascontiguousarray(hr_crop[i * 4:i * 4 + 96, :96])).save(clips[clip] / f"{prefix}{i}.png")
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    common = ["-m", str(files / "tiny.safetensors"), "-o", str(out), "--stage1", str(files / "stage1.safetensors"),
              "--patch-size", "16", "--batch-size", "2", "--checkpoint-every", "2", "-q"]
    code, text = _run(["adapt", str(clips["a"]), *common, "--iterations", "2"])
    assert code == 0, text
    shutil.move(out / "sr", elsewhere)
    (out / "sr").symlink_to(elsewhere)
    finished, images = _digests(out), _digests(elsewhere)
    proc, text = _stopped_when(["adapt", str(clips["b"]), *common, "--iterations", "4", "--overwrite"],
                               lambda: len(list(elsewhere.glob("g*.png"))) >= 3, "the third sr/ image")
    assert proc.returncode == 130 and f"lwayrt adapt --restore {out}" in text, text
    assert not list(elsewhere.glob("f*.png"))  # the replaced run's images are aside
    code, said = _run(["adapt", "--restore", str(out)])
    assert code == 0 and "put back the finished run" in said, said
    assert (out / "sr").is_symlink() and _digests(elsewhere) == images and _digests(out) == finished
    code, text = _run(["adapt", str(clips["b"]), *common, "--iterations", "2", "--overwrite"])
    assert code == 0, text  # (the stopped run's images left in sr/ had it refused)


def test_restore_after_a_per_image_overwrite_stopped_part_way(files, tmp_path):
    """A per-image --overwrite stopped in its second run had already removed the first run's replaced run (each was
    removed once its own new run finished), and the folder's summary and settings were the new command's. The runs
    are kept aside until every one is made; `adapt --restore` gives the folder back as it was, and the old command
    with --resume keeps it as it is."""
    out = tmp_path / "each"
    base = ["adapt", str(files / "lr"), "-o", str(out), "-m", str(files / "tiny.safetensors"), "--stage1",
            str(files / "stage1.safetensors"), "--patch-size", "16", "--batch-size", "1", "-q", "--mode", "per-image"]
    code, text = _run([*base, "--iterations", "2"])
    assert code == 0, text
    finished = _digests(out)
    proc, text = _stopped_when([*base, "--iterations", "300", "--checkpoint-every", "5", "--overwrite"],
                               lambda: (out / "grey" / CHECKPOINT).exists(), "the second run's checkpoint")
    assert proc.returncode == 130, text
    assert f"kept aside (in .lwayrt-replaced folders) until every run of the command finishes (to have them back " \
           f"instead: lwayrt adapt --restore {out})" in text, text
    code, said = _run(["adapt", "--restore", str(out)])
    assert code == 0 and "put back the finished runs kept aside" in said and "alpha, grey" in said, said
    assert _digests(out) == finished
    code, text = _run([*base, "--iterations", "2", "--resume"])
    assert code == 0 and _digests(out) == finished, text


def _move_aside_stopped_at(out: Path, n: int, monkeypatch) -> None:
    """Move ``out``'s finished run aside as --overwrite does, stopped (as by a Ctrl-C) on the ``n``-th file moved."""
    import lway_rt.adapt.runfolder as runfolder

    real, moves = shutil.move, []

    def stopping_move(src, dst, *args, **kwargs):
        moves.append(src)
        if len(moves) == n:
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(runfolder.shutil, "move", stopping_move)
    with pytest.raises(KeyboardInterrupt):
        runfolder._clear_previous_run(out, keep_finished=True)
    monkeypatch.setattr(runfolder.shutil, "move", real)


def test_a_stop_while_the_replaced_run_goes_never_puts_it_back(files, tmp_path, monkeypatch):
    """The overwriting run had finished and the kept run was being deleted (seconds for a clip's images) when a stop
    came: the half-deleted folder still read as a whole kept run, the stop message offered --restore, and --restore
    deleted the new, finished run and put back what was left of the old one. The mark now says the kept run is being
    removed before anything goes: --restore removes the rest and says there is nothing to restore, and the new run
    stays whole. An empty .lwayrt-replaced (a stop after its last file went) is not taken for the user's folder."""
    import lway_rt.adapt.runfolder as runfolder
    from lway_rt.adapt.runfolder import ASIDE

    out = tmp_path / "out"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
    real = shutil.rmtree

    def stop(path, *args, **kwargs):
        if ASIDE in Path(path).parts:
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runfolder.shutil, "rmtree", stop)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--seed", "7",
                       "--overwrite"])
    monkeypatch.setattr(runfolder.shutil, "rmtree", real)
    assert code == 130 and "interrupted after the adaptation finished" in text and "--restore" not in text, text
    new = {k: v for k, v in _digests(out).items() if not k.startswith(ASIDE)}
    assert json.loads((out / "report.json").read_text())["config"]["seed"] == 7
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 1 and "nothing to restore" in text and len(text.splitlines()) == 1, text
    assert not (out / ASIDE).exists() and _digests(out) == new
    (out / ASIDE).mkdir()  # what a stop after the mark's removal, before the folder's, leaves
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--overwrite"])
    assert code == 0 and not (out / ASIDE).exists(), text


def test_a_failed_move_aside_is_one_line_and_loses_nothing(files, tmp_path, monkeypatch):
    """A full disk while the finished run was moved aside (sr/ a link to another disk: each image is copied) was a
    traceback; and where the mark itself could not be written, the empty folder left behind was taken for the
    user's, refusing every later --overwrite after the user made room as told."""
    import errno

    import lway_rt.adapt.runfolder as runfolder
    from lway_rt.adapt.runfolder import ASIDE, ASIDE_MARK
    from lway_rt.errors import OutputError

    out = tmp_path / "out"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
    finished = _digests(out)
    args = ["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--overwrite"]
    real_write = runfolder.atomic_write_json

    def full(path, *a, **k):
        if Path(path).name == ASIDE_MARK:
            raise OutputError(f"cannot write {path}: No space left on device; make room")
        return real_write(path, *a, **k)

    monkeypatch.setattr(runfolder, "atomic_write_json", full)
    code, text = _run(args)
    monkeypatch.setattr(runfolder, "atomic_write_json", real_write)
    assert code == 1 and not (out / ASIDE).exists() and _digests(out) == finished, text
    real_move, moves = shutil.move, []

    def full_move(src, dst, *a, **k):
        moves.append(src)
        if Path(src).parent.name == "sr":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_move(src, dst, *a, **k)

    monkeypatch.setattr(runfolder.shutil, "move", full_move)
    code, text = _run(args)
    monkeypatch.setattr(runfolder.shutil, "move", real_move)
    error = text.splitlines()[-1]  # (after the note that the finished run is kept aside)
    assert code == 1 and error.startswith("error: cannot move ") and "No space left on device" in error, text
    assert "--restore" in error and "Traceback" not in text, text
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 0 and _digests(out) == finished, text


def test_a_rerun_after_a_stopped_move_aside_is_accepted(files, tmp_path, monkeypatch):
    """A stop once the finished run's records were moved aside (its sr/ images not yet, or all of it) left OUT
    looking like no run: the rerun the stop message asks for was refused as "OUT holds sr/ but no adaptation run"."""
    from lway_rt.adapt.runfolder import ASIDE, _clear_previous_run

    for n in (6, None):  # stopped on the first sr/ image's move (after config.json's), or once all of it moved
        out = tmp_path / f"out{n}"
        assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
        if n is None:
            _clear_previous_run(out, keep_finished=True)
        else:
            _move_aside_stopped_at(out, n, monkeypatch)
            assert (out / ASIDE / "config.json").is_file() and (out / "sr" / "alpha.png").is_file()
        code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--overwrite"])
        assert code == 0 and not (out / ASIDE).exists(), text


def test_an_input_named_like_the_kept_run_folder_is_refused_per_image(files, tmp_path):
    """--mode per-image gave an input named .lwayrt-replaced.png the run folder OUT/.lwayrt-replaced, the folder where
    --overwrite keeps what it replaces: every later --overwrite was refused. Hidden run folders are refused too."""
    src = tmp_path / "in"
    src.mkdir()
    for name in (".lwayrt-replaced.png", ".hidden.png"):
        shutil.copy(files / "lr" / "rgb.png", src / name)
        out = tmp_path / name
        code, text = _run(["adapt", str(src / name), "-o", str(out), *_replace_args(files), "--mode", "per-image"])
        assert code == 1 and "rename that image" in text and not out.exists(), text


def test_a_stop_at_the_end_of_a_per_image_overwrite_is_finished_not_restored(files, tmp_path, monkeypatch):
    """Per image, the runs a replaced summary listed and the new command did not make again were deleted before the
    new summary was written, and each run folder's kept run was removed one after the other: a stop there left a mix
    that --restore put back as the old folder, with a run its summary listed gone, or old runs beside new ones. The
    folder's mark now says, once the new summary is written, that what was replaced goes; a stop after it leaves the
    rest to be removed, and --restore removes it instead of putting anything back."""
    import lway_rt.adapt.runfolder as runfolder
    from lway_rt.adapt.runfolder import ASIDE

    out, fewer = _per_image_then_fewer(files, tmp_path)
    monkeypatch.setattr(runfolder, "_remove_run_folder", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    code, text = _run(["adapt", str(fewer), "-o", str(out), *_replace_args(files), "--mode", "per-image",
                       "--overwrite", "--seed", "5"])
    monkeypatch.undo()
    assert code == 130 and "interrupted after the adaptation finished" in text, text
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 1 and "nothing to restore" in text, text
    summary = json.loads((out / "report.json").read_text())
    assert sorted(e["name"] for e in summary["runs"]) == ["grey", "rgb"] and not (out / "alpha").exists()
    assert not list(out.rglob(ASIDE)), list(out.rglob(ASIDE))
    for name in ("grey", "rgb"):
        assert json.loads((out / name / "report.json").read_text())["config"]["seed"] == 5


def test_a_stopped_restore_run_again_removes_the_stopped_commands_new_runs(files, tmp_path, monkeypatch):
    """A per-image --restore stopped after it had put the folder's own summary back lost the list of run folders the
    stopped command had started: run again as told, it left those folders (an input the replaced run never had)."""
    import lway_rt.adapt.loop as loop
    import lway_rt.adapt.runfolder as runfolder

    out = tmp_path / "each"
    two = tmp_path / "two"
    two.mkdir()
    for name in ("rgb.png", "grey.png"):
        shutil.copy(files / "lr" / name, two / name)
    assert _run(["adapt", str(two), "-o", str(out), *_replace_args(files), "--mode", "per-image"])[0] == 0
    before = _digests(out)
    _stopping_on_call(monkeypatch, loop, "adapt_images", 3)  # alpha (new), grey (replaced), then rgb: stopped there
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image",
                       "--overwrite"])
    monkeypatch.undo()
    assert code == 130 and (out / "alpha").is_dir(), text
    _stopping_on_call(monkeypatch, runfolder, "_put_back", 2)
    with pytest.raises(KeyboardInterrupt):
        runfolder.restore_replaced(out)
    monkeypatch.undo()
    assert "put back" in runfolder.restore_replaced(out)
    assert _digests(out) == before and not (out / "alpha").exists()


def test_a_run_after_a_stopped_restore_says_to_finish_it(files, tmp_path, monkeypatch):
    """After a --restore stopped part-way, a --resume with other settings judged the half-restored run ("its
    adapted.safetensors is missing ... made with other settings") instead of saying to finish the --restore."""
    from lway_rt.adapt import runfolder

    out = tmp_path / "out"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
    before = _digests(out)
    other = [*_replace_args(files)[:-1], "3"]
    _stop_before_the_first_step(monkeypatch, [str(files / "lr"), "-o", str(out), *other, "--overwrite"])
    _stopping_on_call(monkeypatch, runfolder.shutil, "move", 3)
    with pytest.raises(KeyboardInterrupt):
        runfolder.restore_replaced(out)
    monkeypatch.undo()
    assert runfolder._aside_state(out / runfolder.ASIDE) == "restoring"
    for args in (other, _replace_args(files)):
        for flag in ("--resume", "--overwrite"):
            code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *args, flag])
            assert code == 1 and f"a --restore into {out} was stopped part-way" in text, text
    assert "put back" in runfolder.restore_replaced(out)
    assert _digests(out) == before


def test_a_restore_taken_up_after_a_stop_refuses_what_is_in_the_way(files, tmp_path, monkeypatch):
    """A --restore stopped part-way and run again moved the kept files over whatever stood at their names: an image of
    the user's was replaced, a file named sr was a traceback, a folder under an image's name got the image inside it.
    They are refused as the first --restore refuses them, before anything moves; the mark's own write that a kill cut
    short is not put back as a file of the run."""
    from lway_rt.adapt import runfolder
    from lway_rt.io.weights import temp_prefix

    out = tmp_path / "out"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
    before = _digests(out)
    _stop_before_the_first_step(monkeypatch, [str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1], "3",
                                              "--overwrite"])
    aside = out / runfolder.ASIDE
    (aside / f"{temp_prefix(runfolder.ASIDE_MARK)}k1ll3d.tmp").write_text("{")
    _stopping_on_call(monkeypatch, runfolder.shutil, "move", 2)
    with pytest.raises(KeyboardInterrupt):
        runfolder.restore_replaced(out)
    monkeypatch.undo()
    assert runfolder._aside_state(aside) == "restoring"
    name = sorted(p.name for p in (aside / "sr").iterdir())[0]  # an image still aside
    users = out / "sr" / name
    users.parent.mkdir(exist_ok=True)
    users.write_bytes(b"mine")
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 1 and f"{users} is in the way" in text and users.read_bytes() == b"mine", text
    users.unlink()
    shutil.rmtree(out / "sr")
    (out / "sr").write_text("mine")
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 1 and f"{out / 'sr'} is in the way" in text and len(text.splitlines()) == 1, text
    (out / "sr").unlink()
    (users / "album").mkdir(parents=True)
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 1 and f"{users} is in the way" in text and (users / "album").is_dir(), text
    shutil.rmtree(out / "sr")
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 0 and _digests(out) == before and not aside.exists(), text


def test_a_mark_whose_first_write_a_kill_cut_short_does_not_block_overwrite(files, tmp_path):
    """A kill while --overwrite wrote the kept run's first mark left .lwayrt-replaced holding only that write's
    temporary file: every --overwrite after called it "a folder this command did not make", and --restore found
    nothing to restore."""
    from lway_rt.adapt import runfolder
    from lway_rt.io.weights import temp_prefix

    out = tmp_path / "out"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
    (out / runfolder.ASIDE).mkdir()
    (out / runfolder.ASIDE / f"{temp_prefix(runfolder.ASIDE_MARK)}k1ll3d.tmp").write_text("{")
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1], "3", "--overwrite"])
    assert code == 0 and not (out / runfolder.ASIDE).exists(), text
    (out / runfolder.ASIDE).mkdir()  # a hidden file of the user's there is the user's all the same
    (out / runfolder.ASIDE / ".notes.tmp").write_text("mine")
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--overwrite"])
    assert code == 1 and "a folder this command did not make" in text, text


def test_a_resume_after_a_stopped_per_image_overwrite_takes_it_up_or_is_refused(files, tmp_path, monkeypatch):
    """After a per-image --overwrite stopped part-way, a --resume of other inputs finished and deleted the runs kept
    aside, or got its own new runs recorded as the overwrite's, for --restore to delete. It is refused, and --restore
    gives the folder back. The run folders the overwrite had not reached hold runs of other settings: the --resume of
    its inputs with other settings is refused there, and leaves every run as it was; the --resume of that overwrite (its
    inputs, model and settings, which the folder's mark records) replaces them as the overwrite would have, where it
    had been refused ("made with other settings") though the stop message advises it."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out = tmp_path / "each"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"])[0] == 0
    before = _digests(out)
    other = [*_replace_args(files)[:-1], "3"]
    _stopping_on_call(monkeypatch, loop, "adapt_images", 2)  # alpha made anew, grey stopped, rgb not begun
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *other, "--mode", "per-image", "--overwrite"])
    monkeypatch.undo()
    assert code == 130 and "--resume in place of --overwrite" in text, text
    # the first command rerun plainly: it named --resume (which is that overwrite's alone, refused when tried), not the
    # stopped overwrite and --restore (review 48D D1)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"])
    assert code == 1 and "holds runs a stopped --overwrite was replacing: run that command with --resume in place of " \
        "--overwrite to finish it where it stopped, or" in " ".join(text.split()) and "--restore" in text, text
    fewer, more = tmp_path / "fewer", tmp_path / "more"
    fewer.mkdir()
    shutil.copy(files / "lr" / "rgb.png", fewer / "rgb.png")
    shutil.copytree(files / "lr", more)
    shutil.copy(files / "lr" / "rgb.png", more / "new.png")
    for folder, said in ((fewer, "it does not adapt alpha, grey"), (more, "new is not among its inputs")):
        code, text = _run(["adapt", str(folder), "-o", str(out), *other, "--mode", "per-image", "--resume"])
        assert code == 1 and "this --resume adapts other inputs than that overwrite" in text and said in text, text
    assert not (out / "new").exists()
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    assert "put back" in runfolder.restore_replaced(copy) and _digests(copy) == before
    stopped = _digests(out)
    for change in (["--seed", "5"], ["--iterations", "4"]):  # not that overwrite: the runs it replaces stay
        code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *other, "--mode", "per-image", "--resume",
                           *change])
        assert code == 1 and "made with other settings" in text and _digests(out) == stopped, text
        assert "this --resume is not that overwrite" in text and "--restore" in text, text
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *other, "--mode", "per-image", "--resume"])
    assert code == 0 and text.count("3 iterations, completed") == 3, text
    assert not any(p.name == runfolder.ASIDE for p in out.rglob("*")), sorted(out.rglob("*"))
    again = tmp_path / "again"  # what the --overwrite, run again instead, makes
    shutil.copytree(copy, again, symlinks=True)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(again), *other, "--mode", "per-image", "--overwrite"])
    assert code == 0 and _digests(again).keys() == _digests(out).keys(), text
    made = [k for k in _digests(out) if k.endswith(".safetensors") or "/sr/" in k]  # (reports hold times and paths)
    assert len(made) == 6 and all(_digests(again)[k] == _digests(out)[k] for k in made)


def test_a_resume_after_an_inputs_pixels_changed_names_that_input(files, tmp_path, monkeypatch):
    """A --resume of a stopped per-image --overwrite, typed as the overwrite but with one input's pixels changed since,
    was refused as "not that overwrite (its inputs' pixels, model or settings differ)", beside a run folder "made with
    other settings" (the replaced run's): it did not say which input. The mark records each run's fingerprint: the
    refusal names the input that changed."""
    import shutil

    import lway_rt.adapt.loop as loop

    lr = tmp_path / "lr"
    shutil.copytree(files / "lr", lr)
    out = tmp_path / "each"
    args = ["adapt", str(lr), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    assert _run(args)[0] == 0
    other = [*args[:-3], "3", "--mode", "per-image"]  # (--iterations 3)
    _stopping_on_call(monkeypatch, loop, "adapt_images", 2)  # alpha made anew, grey and rgb not begun
    code, text = _run([*other, "--overwrite"])
    monkeypatch.undo()
    assert code == 130, text
    stopped = _digests(out)
    pixels = np.asarray(Image.open(lr / "rgb.png")).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(lr / "rgb.png")
    code, text = _run([*other, "--resume"])
    said = " ".join(text.split())
    assert code == 1 and "this --resume is not that overwrite (the inputs of rgb differ from that overwrite's: their " \
        "pixels or alpha changed since)" in said and "--restore" in said, text
    assert _digests(out) == stopped


def test_a_resume_finishes_the_replacing_an_overwrite_killed_at_its_end_left(files, tmp_path, monkeypatch):
    """An --overwrite stopped after its report was written, before it removed the run it replaced: --resume called
    the new run complete and left the old one kept aside for good (every plain rerun refused, as if a run there had
    not finished). It removes it now."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out = tmp_path / "out"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
    other = [*_replace_args(files)[:-1], "3"]
    _stopping_on_call(monkeypatch, loop, "_finish_replacing", 1)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *other, "--overwrite"])
    monkeypatch.undo()
    assert code == 130 and runfolder._aside_state(out / runfolder.ASIDE) == "kept", text
    # (it said "kept ... until a run there finishes": rerun, the whole adaptation was done again)
    assert f"the new run(s) in {out} are complete" in text and "--resume in place of --overwrite" in text, text
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *other, "--resume"])
    assert code == 0 and "3 iterations, completed" in text and not (out / runfolder.ASIDE).exists(), text
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *other])
    assert code == 1 and "holds a finished run" in text, text


def test_an_overwrite_after_one_stopped_at_its_end_keeps_its_finished_run(files, tmp_path, monkeypatch):
    """An --overwrite stopped after its new run's report, before it removed the run it replaced: the next --overwrite
    deleted that finished run outright and kept the older one, so a --restore of that one brought back the older run
    and the newer was gone. The finished run is the one kept now."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out = tmp_path / "out"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)])[0] == 0
    _stopping_on_call(monkeypatch, loop, "_finish_replacing", 1)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1], "3", "--overwrite"])
    monkeypatch.undo()
    assert code == 130 and runfolder._aside_state(out / runfolder.ASIDE) == "kept", text
    newer = {k: v for k, v in _digests(out).items() if not k.startswith(runfolder.ASIDE)}
    _stop_before_the_first_step(monkeypatch, [str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1], "4",
                                              "--overwrite"])
    assert "put back" in runfolder.restore_replaced(out)
    assert _digests(out) == newer


def test_a_per_image_restore_stopped_at_its_very_end_and_run_again_keeps_the_runs(files, tmp_path, monkeypatch):
    """A per-image --restore stopped after it had put the folder's summary back, before it removed the folder it was
    kept in: run again, it read the summary only there, took every run folder the stopped command had started for
    that command's, and deleted them, the runs it had just put back among them."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out = tmp_path / "each"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"])[0] == 0
    before = _digests(out)
    _stopping_on_call(monkeypatch, loop, "adapt_images", 3)
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1], "3", "--mode",
                       "per-image", "--overwrite"])
    monkeypatch.undo()
    assert code == 130, text
    real = runfolder.shutil.rmtree

    def stop_at_the_top(path, *a, **k):
        if Path(path) == out / runfolder.ASIDE:
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(runfolder.shutil, "rmtree", stop_at_the_top)
    with pytest.raises(KeyboardInterrupt):
        runfolder.restore_replaced(out)
    monkeypatch.undo()
    assert (out / "report.json").is_file()  # (put back)
    assert "put back" in runfolder.restore_replaced(out)
    assert _digests(out) == before


def test_a_per_image_overwrite_after_one_stopped_at_its_end_keeps_its_finished_runs(files, tmp_path, monkeypatch):
    """A per-image --overwrite stopped after its summary (every run made), before it removed the runs it replaced:
    the next --overwrite deleted those finished runs and kept the older ones, for --restore to bring back."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1]]
    assert _run(["adapt", *args, "2", "--mode", "per-image"])[0] == 0
    _stopping_on_call(monkeypatch, loop, "_finish_replacing", 1)
    code, text = _run(["adapt", *args, "3", "--mode", "per-image", "--overwrite"])
    monkeypatch.undo()
    assert code == 130 and runfolder._aside_state(out / runfolder.ASIDE) == "kept", text
    assert f"the new run(s) in {out} are complete" in text and "--resume in place of --overwrite" in text, text
    newer = {k: v for k, v in _digests(out).items() if runfolder.ASIDE not in k}
    _stop_before_the_first_step(monkeypatch, [*args, "4", "--mode", "per-image", "--overwrite"])
    assert "put back" in runfolder.restore_replaced(out)
    assert _digests(out) == newer


def _per_image_without_a_summary(files, tmp_path, monkeypatch) -> tuple[Path, list[str], dict]:
    """A per-image folder whose command was stopped after its first run (alpha made, grey stopped: no summary); the
    arguments of a command into it but its --iterations, and its files' digests."""
    import lway_rt.adapt.loop as loop

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1]]
    _stopping_on_call(monkeypatch, loop, "adapt_images", 2)
    assert _run(["adapt", *args, "2", "--mode", "per-image"])[0] == 130
    monkeypatch.undo()
    return out, args, _digests(out)


def test_a_per_image_restore_run_again_keeps_the_run_folders_it_put_back(files, tmp_path, monkeypatch):
    """The replaced folder had no summary (its own command stopped after its first run): a --restore stopped after
    it put back that run folder, run again, took it for the stopped command's and deleted it. The folders to remove
    are recorded before anything changes."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out, args, before = _per_image_without_a_summary(files, tmp_path, monkeypatch)
    _stopping_on_call(monkeypatch, loop, "_finish_replacing", 1)
    assert _run(["adapt", *args, "3", "--mode", "per-image", "--overwrite"])[0] == 130
    monkeypatch.undo()
    _stopping_on_call(monkeypatch, runfolder, "_put_back", 2)  # alpha's run put back, the folder's own not
    with pytest.raises(KeyboardInterrupt):
        runfolder.restore_replaced(out)
    monkeypatch.undo()
    said = runfolder.restore_replaced(out)
    assert "put back" in said and "alpha" not in said.partition("removed")[2], said
    assert _digests(out) == before


def test_restore_removes_the_empty_run_folder_a_stopped_overwrite_made_for_a_new_input(files, tmp_path, monkeypatch):
    """A per-image --overwrite stopped after it made a new input's run folder, before that folder joined the command
    (its run had not begun): --restore put every run back and left the empty folder."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out, two = tmp_path / "each", tmp_path / "two"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"])[0] == 0
    before = _digests(out)
    two.mkdir()
    shutil.copy(files / "lr" / "rgb.png", two / "rgb.png")
    shutil.copy(files / "lr" / "grey.png", two / "zz.png")
    _stopping_on_call(monkeypatch, loop, "_joins_the_command", 2)  # zz (after rgb) made its folder, then the stop
    code, text = _run(["adapt", str(two), "-o", str(out), *_replace_args(files), "--mode", "per-image", "--overwrite",
                       "--seed", "1"])
    monkeypatch.undo()
    assert code == 130 and (out / "zz").is_dir() and not any((out / "zz").iterdir()), text
    assert "put back" in runfolder.restore_replaced(out)
    assert _digests(out) == before and not (out / "zz").exists()


def test_a_refused_command_leaves_the_runs_a_finished_overwrite_still_keeps_aside(files, tmp_path, monkeypatch):
    """A per-image --overwrite stopped after its summary, before it removed the runs it replaced: its message offers
    --resume (to remove them) or --restore (to have them back). Any command into the folder removed them first, one
    then refused among them, and --restore found nothing."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    assert _run(["adapt", *args])[0] == 0
    before = _digests(out)
    _stopping_on_call(monkeypatch, loop, "_finish_replacing", 1)
    code, text = _run(["adapt", *args, "--seed", "7", "--overwrite"])
    monkeypatch.undo()
    assert code == 130 and "to have them back instead" in text, text
    for extra in ([], ["--seed", "9"], ["--seed", "9", "--resume"], ["--mode", "folder", "--overwrite"]):
        code, text = _run(["adapt", *args, *extra])
        assert code == 1, text
    assert "put back" in runfolder.restore_replaced(out) and _digests(out) == before


def test_a_resume_takes_up_the_second_of_two_stopped_overwrites(files, tmp_path, monkeypatch):
    """Two per-image --overwrites with other settings, each stopped: the --resume the second one's message advises was
    refused in a run folder the first had started ("made with other settings"): that folder counted as reached by the
    second. The mark lists the run folders the command it records has reached, apart from those of the ones before."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt.runfolder import ASIDE

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image", "--checkpoint-every", "1"]
    assert _run(["adapt", *args])[0] == 0
    with monkeypatch.context() as m:
        _stopping_on_call(m, loop, "fast_adapt_step", 4)  # alpha made anew, grey stopped after its first checkpoint
        assert _run(["adapt", *args, "--seed", "7", "--overwrite"])[0] == 130
    with monkeypatch.context() as m:
        _stopping_on_call(m, loop, "fast_adapt_step", 2)  # alpha stopped after its first checkpoint
        code, text = _run(["adapt", *args, "--seed", "9", "--overwrite"])
    assert code == 130 and "run the same command with --resume" in text, text
    code, text = _run(["adapt", *args, "--seed", "9", "--resume"])
    assert code == 0 and not list(out.rglob(ASIDE)), text
    assert all(json.loads((out / n / "config.json").read_text())["seed"] == 9 for n in ("alpha", "grey", "rgb"))


def test_a_stop_after_every_run_of_an_overwrite_advises_the_resume_that_keeps_them(files, tmp_path, monkeypatch):
    """A per-image --overwrite stopped after its last run, before its summary: the message said "run the same command
    again", the --overwrite, which adapts every input anew; its --resume keeps the runs it made."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt.runfolder import ASIDE

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image", "--seed", "7"]
    assert _run(["adapt", *args[:-2]])[0] == 0
    real = loop.atomic_write_json

    def write(path, obj, *a, **k):
        if Path(path) == out / "report.json":
            raise KeyboardInterrupt
        return real(path, obj, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(loop, "atomic_write_json", write)
        code, text = _run(["adapt", *args, "--overwrite"])
    assert code == 130 and "run the same command with --resume in place of --overwrite to go on" in text, text
    made = {n: (out / n / "adapted.safetensors").read_bytes() for n in ("alpha", "grey", "rgb")}
    code, text = _run(["adapt", *args, "--resume"])
    assert code == 0 and not list(out.rglob(ASIDE)), text
    assert made == {n: (out / n / "adapted.safetensors").read_bytes() for n in made}


def test_restore_removes_the_probe_files_a_kill_left_in_the_folder_and_its_run_folders(files, tmp_path):
    """A kill while a command probed a folder for writing left an empty hidden file; --restore left it at the top
    (saying "nothing to restore") and in a run folder it did not put back."""
    import subprocess

    from lway_rt.adapt import runfolder
    from lway_rt.io import weights

    out = tmp_path / "each"
    assert _run(["adapt", str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"])[0] == 0
    before = _digests(out)
    code = "from lway_rt.io.weights import temp_prefix; print(temp_prefix('write-probe'))"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    left = [out / f"{dead}a1.tmp", out / "grey" / f"{dead}b2.tmp"]
    for f in left:
        f.write_bytes(b"")
    weights._stale_by_folder.clear()  # (--restore is a command of its own: this process listed the folders before)
    with pytest.raises(Exception, match="nothing to restore"):
        runfolder.restore_replaced(out)
    assert _digests(out) == before


def test_a_restore_killed_while_it_removed_a_stopped_run_finishes_when_run_again(files, tmp_path, monkeypatch):
    """A --restore stopped after it removed a run folder's finished stopped run's report, before its sr/ image: run
    again, it took that image for one of the user's ("in the way ... not the stopped run's"); the report goes last
    now. A plain rerun meanwhile names the unfinished --restore (it advised --resume or --overwrite, both refused)."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    assert _run(["adapt", *args])[0] == 0
    before = _digests(out)
    with monkeypatch.context() as m:
        _stopping_on_call(m, loop, "adapt_images", 3)  # alpha and grey made anew, rgb not begun
        assert _run(["adapt", *args, "--seed", "3", "--overwrite"])[0] == 130
    with monkeypatch.context() as m:
        _stopping_on_call(m, runfolder.Path, "unlink", 3)  # two of alpha's stopped run's files removed
        with pytest.raises(KeyboardInterrupt):
            runfolder.restore_replaced(out)
    code, text = _run(["adapt", *args])
    assert code == 1 and f"a --restore into {out} was stopped part-way" in text, text
    assert "put back" in runfolder.restore_replaced(out) and _digests(out) == before
    (out / runfolder.ASIDE).mkdir()  # what a kill at the very end leaves: the emptied folder, its mark gone
    assert "nothing left to restore" in runfolder.restore_replaced(out) and _digests(out) == before


def test_finishing_a_replacement_drops_the_empty_folder_a_kill_left(tmp_path):
    """A kill while a run folder's kept run was removed, after its mark went, left the emptied folder: the --resume that
    finished the removal left it for good. One that holds a file of the user's (no mark) stays."""
    from lway_rt.adapt.runfolder import ASIDE, _finish_replacing

    empty, mine = tmp_path / "a", tmp_path / "b"
    (empty / ASIDE).mkdir(parents=True)
    (mine / ASIDE).mkdir(parents=True)
    (mine / ASIDE / "notes.txt").write_text("mine")
    _finish_replacing(empty)
    _finish_replacing(mine)
    assert not (empty / ASIDE).exists() and (mine / ASIDE / "notes.txt").read_text() == "mine"


def test_restore_keeps_a_run_folder_the_stopped_overwrite_never_touched(files, tmp_path, monkeypatch):
    """A run folder joined the mark as its run began, before its checks: a stop there left a finished run of an
    earlier command listed as the stopped command's, and --restore (the way back it advises) deleted it."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out, args, before = _per_image_without_a_summary(files, tmp_path, monkeypatch)
    _stopping_on_call(monkeypatch, loop, "_accept_run", 1)  # alpha's run checked, nothing of it moved yet
    assert _run(["adapt", *args, "3", "--mode", "per-image", "--overwrite"])[0] == 130
    monkeypatch.undo()
    said = runfolder.restore_replaced(out)
    assert "alpha" not in said, said
    assert _digests(out) == before


def test_a_run_into_a_folder_whose_other_run_folder_is_being_restored_is_refused(files, tmp_path, monkeypatch):
    """A --restore stopped inside a run folder that the next command does not adapt: an --overwrite of the other
    inputs ran every run, then failed on it, and the run that --restore of that folder put back was deleted after."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1]]
    assert _run(["adapt", *args, "2", "--mode", "per-image"])[0] == 0
    _stopping_on_call(monkeypatch, loop, "fast_adapt_step", 7)  # (three steps a run): in rgb's, the last
    assert _run(["adapt", *args, "3", "--mode", "per-image", "--overwrite"])[0] == 130
    monkeypatch.undo()
    subs = sorted(d for d in out.iterdir() if runfolder._is_aside(d / runfolder.ASIDE))
    assert [d.name for d in subs] == ["alpha", "grey", "rgb"]
    moves = sum(1 for d in subs[:2] for p in (d / runfolder.ASIDE).rglob("*")
                if p.is_file() and p.name != runfolder.ASIDE_MARK)
    _stopping_on_call(monkeypatch, runfolder.shutil, "move", moves + 2)
    with pytest.raises(KeyboardInterrupt):
        runfolder.restore_replaced(out)
    monkeypatch.undo()
    assert runfolder._aside_state(out / "rgb" / runfolder.ASIDE) == "restoring"
    two = tmp_path / "two"
    two.mkdir()
    for name in ("alpha.png", "grey.png"):
        shutil.copy(files / "lr" / name, two / name)
    code, text = _run(["adapt", str(two), *args[1:], "3", "--mode", "per-image", "--overwrite"])
    assert code == 1 and f"a --restore into {out} was stopped part-way" in text, text


def test_restore_clears_a_run_folders_aside_whose_first_mark_a_kill_cut_short(files, tmp_path, monkeypatch):
    """A kill while a per-image --overwrite wrote a run folder's first mark left that folder's .lwayrt-replaced
    holding only that write's temporary file; --restore left it there."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder
    from lway_rt.io.weights import temp_prefix

    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files)[:-1]]
    assert _run(["adapt", *args, "2", "--mode", "per-image"])[0] == 0
    before = _digests(out)
    _stopping_on_call(monkeypatch, loop, "adapt_images", 2)
    assert _run(["adapt", *args, "3", "--mode", "per-image", "--overwrite"])[0] == 130
    monkeypatch.undo()
    killed = out / "grey" / runfolder.ASIDE
    killed.mkdir()
    (killed / f"{temp_prefix(runfolder.ASIDE_MARK)}k1ll3d.tmp").write_text("{")
    assert "put back" in runfolder.restore_replaced(out)
    assert not killed.exists() and _digests(out) == before


def test_a_run_after_a_stopped_per_image_restore_says_to_finish_it(files, tmp_path, monkeypatch):
    """The same in a per-image folder, the --restore stopped inside a run folder's: that run folder was judged as a
    run."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    other = [*_replace_args(files)[:-1], "3"]
    each = tmp_path / "each"
    assert _run(["adapt", str(files / "lr"), "-o", str(each), *_replace_args(files), "--mode", "per-image"])[0] == 0
    before = _digests(each)
    _stopping_on_call(monkeypatch, loop, "adapt_images", 3)  # two runs made anew, the third stopped
    code, text = _run(["adapt", str(files / "lr"), "-o", str(each), *other, "--mode", "per-image", "--overwrite"])
    monkeypatch.undo()
    assert code == 130, text
    first = sorted(d for d in each.iterdir() if (d / runfolder.ASIDE).is_dir())[0]
    moves = len([p for p in (first / runfolder.ASIDE).rglob("*") if p.is_file() and p.suffix != ".json"])
    _stopping_on_call(monkeypatch, runfolder.shutil, "move", moves + 2)
    with pytest.raises(KeyboardInterrupt):
        runfolder.restore_replaced(each)
    monkeypatch.undo()
    states = {d.name: runfolder._aside_state(d / runfolder.ASIDE) for d in each.iterdir() if d.is_dir()}
    assert "restoring" in states.values(), states
    for flag in ("--resume", "--overwrite"):
        code, text = _run(["adapt", str(files / "lr"), "-o", str(each), *other, "--mode", "per-image", flag])
        assert code == 1 and f"a --restore into {each} was stopped part-way" in text, text
    assert "put back" in runfolder.restore_replaced(each)
    assert _digests(each) == before


def test_a_run_after_a_restore_stopped_between_run_folders_says_to_finish_it(files, tmp_path, monkeypatch):
    """A --restore stopped after one run folder's run was put back, before the next one's: no run folder was being
    restored, so a --resume or --overwrite ran over the half-restored folder (and the folder's list of the stopped
    command's run folders, kept for the --restore, went stale). The folder's mark, which names that list once a
    --restore begins, makes every run wait for the --restore."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt import runfolder

    other = [*_replace_args(files)[:-1], "3"]
    each = tmp_path / "each"
    assert _run(["adapt", str(files / "lr"), "-o", str(each), *_replace_args(files), "--mode", "per-image"])[0] == 0
    before = _digests(each)
    _stopping_on_call(monkeypatch, loop, "adapt_images", 3)  # two runs made anew, the third stopped
    assert _run(["adapt", str(files / "lr"), "-o", str(each), *other, "--mode", "per-image", "--overwrite"])[0] == 130
    monkeypatch.undo()
    _stopping_on_call(monkeypatch, runfolder, "_put_back", 2)  # the first run folder's run put back, no more
    with pytest.raises(KeyboardInterrupt):
        runfolder.restore_replaced(each)
    monkeypatch.undo()
    states = {d.name: runfolder._aside_state(d / runfolder.ASIDE) for d in each.iterdir() if d.is_dir()}
    assert "restoring" not in states.values() and None in states.values(), states  # (between run folders)
    for flag in ("--resume", "--overwrite"):
        code, text = _run(["adapt", str(files / "lr"), "-o", str(each), *other, "--mode", "per-image", flag])
        assert code == 1 and f"a --restore into {each} was stopped part-way" in text, text
    assert "put back" in runfolder.restore_replaced(each)
    assert _digests(each) == before


def test_restore_keeps_the_users_files_at_the_top_of_a_per_image_folder(files, tmp_path, monkeypatch):
    """--restore took the names a single run writes (curves.png, checkpoint.pt, adapted.safetensors ...) for the
    stopped command's files at the top of a per-image folder, where such a command writes only its summary and
    configuration, and deleted the user's files of those names there."""
    out = tmp_path / "each"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    assert _run(["adapt", *args])[0] == 0
    for name in ("curves.png", "checkpoint.pt", "adapted.safetensors"):
        (out / name).write_text("mine")
    before = _digests(out)
    _stop_before_the_first_step(monkeypatch, [*args, "--overwrite"])
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 0 and _digests(out) == before, text


def test_resume_after_an_overwrite_stopped_before_its_first_checkpoint_is_refused(files, tmp_path, monkeypatch):
    """With nothing to resume, --resume started a run of whatever it was given (other inputs, other settings) and,
    finished, deleted the run the stopped --overwrite had kept aside: a command that was never asked to replace it."""
    from lway_rt.adapt.runfolder import ASIDE

    out = tmp_path / "out"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files)]
    assert _run(["adapt", *args])[0] == 0
    _stop_before_the_first_step(monkeypatch, [*args, "--overwrite"])
    kept = _digests(out / ASIDE)
    code, text = _run(["adapt", *args, "--resume", "--seed", "9"])
    assert code == 1 and "no checkpoint to resume" in text and "--restore" in text, text
    assert _digests(out / ASIDE) == kept
    # a file where the kept run's sr/ folder goes is in the way, said before anything moves
    sr = out / "sr"
    if sr.is_dir():
        sr.rmdir()
    sr.write_text("my notes")
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 1 and f"{sr} is in the way" in text and "Traceback" not in text, text
    assert _digests(out / ASIDE) == kept and sr.read_text() == "my notes"
    sr.unlink()
    code, text = _run(["adapt", "--restore", str(out)])
    assert code == 0 and not (out / ASIDE).exists(), text


def test_a_mode_switch_is_refused_while_the_run_is_kept_aside(files, tmp_path):
    """With the folder's run all moved aside by a stopped --overwrite, the folder looked empty: --mode per-image
    --overwrite was accepted (refused in every other state) and, finished, deleted the kept run."""
    from lway_rt.adapt.runfolder import ASIDE, _clear_previous_run

    out = tmp_path / "out"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files)]
    assert _run(["adapt", *args])[0] == 0
    _clear_previous_run(out, keep_finished=True)
    kept = _digests(out / ASIDE)
    code, text = _run(["adapt", *args, "--mode", "per-image", "--overwrite"])
    assert code == 1 and "holds a --mode folder adaptation" in text and _digests(out / ASIDE) == kept, text


def test_resume_does_not_write_over_an_image_edited_since_the_stop(files, tmp_path, monkeypatch):
    """An sr/ image the user edited after a stop is theirs (--overwrite and --restore refuse it), but --resume wrote
    over it. And a resumed run that begins its list of images again (their records changed) dropped the images it had
    not yet written again: stopped once more, they were taken for the user's."""
    import lway_rt.adapt.visual as visual
    import lway_rt.io.images as images
    from lway_rt.adapt.runfolder import SR_WRITTEN, _ledger_images, _ledger_line, _read_ledger

    out = tmp_path / "out"
    args = [str(files / "lr"), "-o", str(out), *_replace_args(files)]
    with monkeypatch.context() as m:  # stopped after sr/ is written, before the contact sheet
        m.setattr(visual, "save_contact_sheet", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        assert _run(["adapt", *args])[0] == 130
    assert _ledger_images(out) == {"alpha", "grey", "rgb"}
    edited = out / "sr" / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(edited)
    mine = edited.read_bytes()
    code, text = _run(["adapt", *args, "--resume"])
    assert code == 1 and f"{edited} is not an image of the run" in text and edited.read_bytes() == mine, text
    edited.unlink()
    # records that no longer match (as after other weights): the list begins again, and keeps naming the others
    ledger = out / SR_WRITTEN
    ledger.write_text("".join(_ledger_line(n, e["sha256"], {"other": 1}) for n, e in _read_ledger(ledger).items()
                              if "sha256" in e and (out / "sr" / f"{n}.png").is_file()))
    with monkeypatch.context() as m:
        m.setattr(images, "write_image", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        assert _run(["adapt", *args, "--resume"])[0] == 130
    assert _ledger_images(out) == {"alpha", "grey"}  # (rgb's image was deleted above: it is made again)
    # ... each with its SHA-256, the one being written when the stop came (alpha) too: edited now, they are the user's
    for name in ("grey", "alpha"):
        edited = out / "sr" / f"{name}.png"
        edited.write_bytes(edited.read_bytes() + b"edited")
        code, text = _run(["adapt", *args, "--resume"])
        assert code == 1 and f"{edited} is not an image of the run" in text, text
    assert _ledger_images(out) == set()
    for name in ("grey", "alpha"):
        (out / "sr" / f"{name}.png").unlink()
    code, text = _run(["adapt", *args, "--resume"])
    assert code == 0, text


def test_resume_in_place_of_a_stopped_per_image_overwrite(files, tmp_path, monkeypatch):
    """A per-image --overwrite stopped part-way says to go on with --resume in place of --overwrite: the runs it
    finished are kept, the run folder it was replacing is made with its settings. --resume with other settings (or other
    inputs) had started anew there and, finished, deleted the run kept aside for --restore: it is refused. The --resume
    of that overwrite (its inputs, model and settings, which the folder's mark records) finishes it as the overwrite
    would have: the replaced command's run of an input the overwrite lacks goes too."""
    import lway_rt.adapt.loop as loop
    from lway_rt.adapt.runfolder import ASIDE

    out, fewer = _per_image_then_fewer(files, tmp_path)
    args = [str(fewer), "-o", str(out), *_replace_args(files), "--mode", "per-image"]
    with monkeypatch.context() as m:
        _stopping_on_call(m, loop, "fast_adapt_step", 3)  # (grey's run takes 2 steps; rgb's first step stops)
        code, text = _run(["adapt", *args, "--overwrite"])
    assert code == 130 and "with --resume in place of --overwrite" in text and (out / "rgb" / ASIDE).is_dir(), text
    kept = _digests(out / "rgb" / ASIDE)
    one = tmp_path / "one"  # (the finished grey run is checked against the command as any finished run is)
    one.mkdir()
    shutil.copy(files / "lr" / "rgb.png", one / "rgb.png")
    code, text = _run(["adapt", str(one), *args[1:], "--resume", "--seed", "3"])
    assert code == 1 and "this --resume adapts other inputs than that overwrite" in text and "--restore" in text, text
    code, text = _run(["adapt", *args, "--resume", "--seed", "3"])  # (its finished run of grey says it first)
    assert code == 1 and "made with other settings: --seed 0 (this command: 3)" in text, text
    assert _digests(out / "rgb" / ASIDE) == kept
    code, text = _run(["adapt", *args, "--resume"])
    assert code == 0 and not list(out.rglob(ASIDE)), text
    summary = json.loads((out / "report.json").read_text())
    assert sorted(e["name"] for e in summary["runs"]) == ["grey", "rgb"] and not (out / "alpha").exists()


def test_restore_removes_only_what_the_stopped_run_wrote(files, tmp_path, monkeypatch):
    """--restore removed every sr/ image that records a run (a copy the user kept of an earlier image went too), every
    run folder of a per-image folder its summary did not list (a finished run the user put there went too), and after
    a stop while the old run was being moved aside, the part still in OUT as the stopped run's. Now only the stopped
    run's own images (its list, or its weights in their record) and run folders go, and a move cut short is only
    undone (or finished by the next run), never taken for a whole run kept aside."""
    import lway_rt.adapt.runfolder as runfolder
    from lway_rt.adapt.runfolder import ASIDE

    common = ["-m", str(files / "tiny.safetensors"), "--stage1", str(files / "stage1.safetensors"), "--patch-size",
              "16", "--batch-size", "1", "-q"]
    out = tmp_path / "out"
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *common, "--iterations", "2"])
    assert code == 0, text
    shutil.copy(out / "sr" / "rgb.png", out / "sr" / "rgb-keep.png")  # the user's copy of an image
    finished = _digests(out)
    proc, text = _stopped_when(["adapt", str(files / "lr"), "-o", str(out), *common, "--iterations", "300",
                                "--checkpoint-every", "5", "--overwrite"], lambda: (out / CHECKPOINT).exists(),
                               "the first checkpoint")
    assert proc.returncode == 130, text
    code, said = _run(["adapt", "--restore", str(out)])
    assert code == 0 and _digests(out) == finished, said
    # a stop while the finished run was being moved aside (on the second move): --restore gives it back whole
    _move_aside_stopped_at(out, 2, monkeypatch)
    assert (out / ASIDE / "report.json").is_file() and (out / "adapted.safetensors").is_file()
    assert "put back" in runfolder.restore_replaced(out) and _digests(out) == finished
    # ... and the next run finishes that move instead of deleting what is still in OUT
    _move_aside_stopped_at(out, 2, monkeypatch)
    assert runfolder._clear_previous_run(out) == out / ASIDE and not (out / "adapted.safetensors").exists()
    assert {k: v for k, v in _digests(out / ASIDE).items() if k != runfolder.ASIDE_MARK} == \
        {k: v for k, v in finished.items() if k != "sr/rgb-keep.png"}
    # per-image: a finished run the user keeps in a sub-folder the summary does not list stays
    each = tmp_path / "each"
    code, text = _run(["adapt", str(files / "lr"), "-o", str(each), *common, "--iterations", "2", "--mode",
                       "per-image"])
    assert code == 0, text
    shutil.copytree(out / ASIDE, each / "extra", ignore=shutil.ignore_patterns(runfolder.ASIDE_MARK))
    finished = _digests(each)
    proc, text = _stopped_when(["adapt", str(files / "lr"), "-o", str(each), *common, "--iterations", "300",
                                "--checkpoint-every", "5", "--overwrite", "--mode", "per-image"],
                               lambda: (each / "grey" / CHECKPOINT).exists(), "the second run's checkpoint")
    assert proc.returncode == 130, text
    code, said = _run(["adapt", "--restore", str(each)])
    assert code == 0 and _digests(each) == finished, said


def test_restore_is_safe_to_run_again_and_after_any_later_command(files, tmp_path, monkeypatch):
    """Holes in --restore: a file in the way stopped it half-way, and the rerun its message asked for deleted the kept
    run's files put back so far as the stopped run's; a move aside cut short and then a --resume left the resumed
    run's config and checkpoint beside the kept run, whose weights --restore then deleted; a second per-image
    overwrite replaced the kept original with what the first stopped command made. Each ends with the folder as the
    first run left it."""
    from lway_rt.adapt.runfolder import ASIDE

    common = ["-m", str(files / "tiny.safetensors"), "--stage1", str(files / "stage1.safetensors"), "--patch-size",
              "16", "--batch-size", "1", "-q"]
    long = ["--iterations", "300", "--checkpoint-every", "5"]
    out = tmp_path / "out"
    base = ["adapt", str(files / "lr"), "-o", str(out), *common]
    code, text = _run([*base, "--iterations", "2"])
    assert code == 0, text
    finished = _digests(out)
    proc, text = _stopped_when([*base, *long, "--overwrite"], lambda: (out / CHECKPOINT).exists(), "a checkpoint")
    assert proc.returncode == 130, text
    (out / "sr").mkdir(exist_ok=True)
    (out / "sr" / "rgb.png").write_bytes(b"mine")  # in the way of a kept image, and not the stopped run's
    before = _digests(out)
    code, said = _run(["adapt", "--restore", str(out)])
    assert code == 1 and "is in the way" in said and "nothing was changed" in said and _digests(out) == before, said
    (out / "sr" / "rgb.png").unlink()
    code, said = _run(["adapt", "--restore", str(out)])
    assert code == 0 and _digests(out) == finished, said
    # a move aside cut short, then a --resume of another run: refused (there is no checkpoint to take up), and
    # --restore gives the run back
    _move_aside_stopped_at(out, 3, monkeypatch)
    code, text = _run([*base, *long, "--lr", "1e-3", "--resume"])
    assert code == 1 and "no checkpoint to resume" in text and (out / ASIDE).is_dir(), text
    code, said = _run(["adapt", "--restore", str(out)])
    assert code == 0 and _digests(out) == finished, said
    # the user's copy of an image, recording the same run as the stopped run's images: not in its list, so it stays
    from lway_rt.adapt.runfolder import _ledger_line, _stopped_run_files

    stopped = tmp_path / "stopped"
    (stopped / "sr").mkdir(parents=True)
    for name in ("g0", "keep"):
        shutil.copy(out / "sr" / "rgb.png", stopped / "sr" / f"{name}.png")
    (stopped / ".sr-written.jsonl").write_text(_ledger_line("g0"))
    assert sorted(p.name for p in _stopped_run_files(stopped)) == [".sr-written.jsonl", "g0.png"]
    # per-image: two overwrites stopped in a row, the second with an input more, then --restore
    each = tmp_path / "each"
    three = tmp_path / "three"
    shutil.copytree(files / "lr", three)
    shutil.copy(three / "rgb.png", three / "more.png")
    per = ["-o", str(each), *common, "--mode", "per-image"]
    code, text = _run(["adapt", str(files / "lr"), *per, "--iterations", "2"])
    assert code == 0, text
    finished = _digests(each)
    def new_checkpoint(path: Path):
        was = path.stat().st_mtime_ns if path.exists() else None
        return lambda: path.exists() and path.stat().st_mtime_ns != was

    for inputs, lr in ((files / "lr", "1e-3"), (three, "2e-3")):
        proc, text = _stopped_when(["adapt", str(inputs), *per, *long, "--lr", lr, "--overwrite"],
                                   new_checkpoint(each / "grey" / CHECKPOINT), "the grey run's checkpoint")
        assert proc.returncode == 130, text
    code, said = _run(["adapt", "--restore", str(each)])
    assert code == 0 and _digests(each) == finished, said


def test_a_stopped_overwrite_leaves_no_way_to_lose_the_kept_run_or_a_users_file(files, tmp_path):
    """After an --overwrite stopped (the finished run's report aside): a user's sr/ image the kept run does not list
    was written over by the next --overwrite (the check read only the report in OUT), and a plain command there was
    accepted and removed the kept run when it finished. In per-image mode, a run folder the user had filled for a new
    input was put back by --restore and then removed as the stopped command's."""
    common = ["-m", str(files / "tiny.safetensors"), "--stage1", str(files / "stage1.safetensors"), "--patch-size",
              "16", "--batch-size", "1", "-q"]
    long = ["--iterations", "300", "--checkpoint-every", "5"]
    more = tmp_path / "more"
    shutil.copytree(files / "lr", more)
    shutil.copy(more / "rgb.png", more / "x.png")
    out = tmp_path / "out"
    code, text = _run(["adapt", str(files / "lr"), "-o", str(out), *common, "--iterations", "2"])
    assert code == 0, text
    (out / "sr" / "x.png").write_bytes(b"mine")
    finished = _digests(out)
    proc, text = _stopped_when(["adapt", str(files / "lr"), "-o", str(out), *common, *long, "--overwrite"],
                               lambda: (out / CHECKPOINT).exists(), "a checkpoint")
    assert proc.returncode == 130, text
    code, text = _run(["adapt", str(more), "-o", str(out), *common, "--iterations", "2", "--overwrite"])
    assert code == 1 and "sr/x.png is not an image of the run" in text and (out / "sr" / "x.png").read_bytes() == \
        b"mine", text
    (out / CHECKPOINT).unlink()  # (as a stop before the first checkpoint leaves it)
    code, text = _run(["adapt", str(files / "lr" / "rgb.png"), "-o", str(out), *common, "--iterations", "2"])
    assert code == 1 and f"lwayrt adapt --restore {out} to have it back" in text, text
    code, said = _run(["adapt", "--restore", str(out)])
    assert code == 0 and _digests(out) == finished, said
    # per-image: a folder x/ holding a finished run of the user's, and a new input x
    each = tmp_path / "each"
    per = ["-o", str(each), *common, "--mode", "per-image"]
    code, text = _run(["adapt", str(files / "lr"), *per, "--iterations", "2"])
    assert code == 0, text
    shutil.copytree(each / "rgb", each / "x")
    finished = _digests(each)
    proc, text = _stopped_when(["adapt", str(more), *per, *long, "--overwrite"],
                               lambda: (each / "grey" / CHECKPOINT).exists(), "the grey run's checkpoint")
    assert proc.returncode == 130, text
    code, said = _run(["adapt", "--restore", str(each)])
    assert code == 0 and _digests(each) == finished, said


def test_an_overwrite_after_a_move_aside_cut_short_and_an_edited_image(files, tmp_path, monkeypatch):
    """The same --overwrite, run again after a stop that cut its move aside short, called the finished run's own sr/
    images (their report already aside) the user's and refused; and an image the stopped run's list names but the user
    has edited since was deleted as the stopped run's. Now the kept report counts, and an edited image is the user's."""
    from lway_rt.adapt.runfolder import _ledger_images, _ledger_line
    from lway_rt.export.cache import file_sha256

    out = tmp_path / "out"
    args = ["adapt", str(files / "lr"), "-o", str(out), "-m", str(files / "tiny.safetensors"), "--stage1",
            str(files / "stage1.safetensors"), "--patch-size", "16", "--batch-size", "1", "-q", "--iterations", "2"]
    code, text = _run(args)
    assert code == 0, text
    _move_aside_stopped_at(out, 3, monkeypatch)  # report and weights aside, the sr/ images not yet
    code, text = _run([*args, "--overwrite"])
    assert code == 0, text
    folder = tmp_path / "stopped"
    (folder / "sr").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (folder / "sr" / f"{name}.png").write_bytes(name.encode())
    (folder / ".sr-written.jsonl").write_text(
        _ledger_line("a") + _ledger_line("a", file_sha256(folder / "sr" / "a.png"), {}) + _ledger_line("b")
        + _ledger_line("b", file_sha256(folder / "sr" / "b.png"), {}) + _ledger_line("c"))
    (folder / "sr" / "b.png").write_bytes(b"edited")  # by the user, after the run wrote it
    assert _ledger_images(folder) == {"a", "c"}

