"""What an adaptation's --out folder holds, and how a run there is kept, replaced, resumed or put back.

A run writes its checkpoint, weights, report, configuration, pictures and ``sr/`` images under fixed names
(``_RUN_FILES``, ``_RUN_NAMES``); anything else in the folder is the user's and is never written over or removed.
This module answers, without loading a model:

- what a folder holds (``run_mode``, ``finished_report``, ``run_damage``) and whether this command may write there
  (``_check_out_folder``, ``_existing_run``, ``_refuse_foreign``);
- which ``sr/`` images a stopped run wrote: its ledger (``SR_WRITTEN``, one JSON line per image, with its bytes'
  SHA-256 and the replaced file's, written just before the image takes the file's place);
- where ``--overwrite`` keeps the finished run it replaces until the new one finishes (``ASIDE``, a folder holding
  ``ASIDE_MARK``), and how ``lwayrt adapt --restore`` puts it back (``restore_replaced``).

The training itself is in ``loop.py``, which calls these before it writes and when it finishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from lway_rt.adapt.config import AdaptConfig
from lway_rt.errors import InputError, OutputError, listing
from lway_rt.io.weights import atomic_write_json, exclusive_run, finite, sweep_stale_probes

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "adapted.safetensors"
_REPORT_FORMAT = "lway_rt.adapt-report/1"  # report.json of one run
_SUMMARY_FORMAT = "lway_rt.adapt-summary/1"  # report.json of a per-image / per-group adaptation


def _existing_run(out_dir: Path, resume: bool, overwrite: bool, top: Path | None = None) -> dict | None:
    """What ``out_dir`` holds, checked against ``resume`` / ``overwrite``: the report of a finished run there, else
    None (nothing, or an unfinished run that ``resume`` continues). A run there is refused unless one of the two
    flags says what to do with it, and whatever they say while a --restore there (into ``top``, the folder of a
    per-image or per-group run folder) that a stop cut short has not finished: its half-restored files had been judged
    as a run ("its adapted.safetensors is missing ... made with other settings")."""
    _refuse_a_restore_under_way(top or out_dir, out_dir / ASIDE)
    if (out_dir / CHECKPOINT).exists():
        if not (resume or overwrite):
            raise InputError(f"{out_dir} holds an unfinished run ({CHECKPOINT}): pass --resume to continue it, "
                             "--overwrite to start again, or choose another --out folder")
        return None
    if not (resume or overwrite) and _aside_state(out_dir / ASIDE) not in (None, "discarding"):  # a run here would
        # remove it when it finished
        raise InputError(f"{out_dir} holds a run a stopped --overwrite replaced, kept in {out_dir / ASIDE}: run "
                         f"{restore_words(out_dir)} to have it back, pass --overwrite to replace it, or choose another "
                         "--out folder")
    finished = finished_report(out_dir)
    if finished is not None and not (resume or overwrite):
        raise InputError(f"{out_dir} holds a finished run ({WEIGHTS}): choose another --out folder, or pass --overwrite "
                         "to replace it")
    if finished is None and (out_dir / WEIGHTS).exists():  # weights without a report beside them
        if _read_json_dict(out_dir / "config.json") is None:  # no run started here: the user's own file of that name,
            raise InputError(f"{out_dir} holds {WEIGHTS} but no run that wrote it, so nothing says what it is: "
                             "move it, or choose another --out folder")  # which --overwrite (of runs) does not replace
        if not (resume or overwrite):  # a run stopped while it wrote its outputs, or whose report is gone
            raise InputError(f"{out_dir} holds a run that did not finish writing its outputs ({WEIGHTS}, no "
                             "report.json): pass --resume or --overwrite to run it again, or choose another --out folder")
    elif finished is None and (out_dir / "report.json").is_file() and not (resume or overwrite):
        raise InputError(f"{out_dir} holds the report of a run whose {WEIGHTS} is missing: pass --resume or "
                         "--overwrite to run it again, or choose another --out folder")
    return finished


# the sr/ images a run has written so far, one JSON line each (name, the file's SHA-256, its record), appended as each
# is written (a file rewritten whole per image had cost the square of a clip's frames): a resumed run keeps only those
# still as written (not edited since); removed when the run finishes. ".sr-written.json" is the earlier version's.
SR_WRITTEN = ".sr-written.jsonl"
SR_KEY = b"lwayrt-adapt"  # the PNG text keyword each sr/ image records what made it under (loop's ``_sr_record``)
_SR_WRITTEN_BEFORE = ".sr-written.json"
_RUN_FILES = (CHECKPOINT, WEIGHTS, "report.json", "config.json", "curves.png", "contact_sheet.png", SR_WRITTEN,
              _SR_WRITTEN_BEFORE)


def _read_ledger(path: Path) -> dict[str, dict]:
    """The entries of an ``SR_WRITTEN`` ledger by name (a later line for a name wins: the image written last, or an
    earlier version's name alone, about to be written); a line a kill cut short, or anything else that is not an entry, is passed
    over: its image is made again."""
    entries: dict[str, dict] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    entries[entry["name"]] = entry
    except OSError:
        pass
    return entries


def _ledger_line(name: str, sha256: str | None = None, record: dict | None = None, was: str | None = None) -> str:
    """A ledger line: with ``sha256``, the image of ``name`` with those bytes (written just before they take the
    file's place, with ``was``, the SHA-256 of the file they replace, if any: a stop in between leaves that one);
    without it, a name alone (an earlier version's line before each write: whatever the file holds is the run's)."""
    entry = {"name": name} if sha256 is None else {"name": name, "sha256": sha256, "record": record,
                                                    **({"was": was} if was else {})}
    return json.dumps(finite(entry), allow_nan=False) + "\n"


def _remove_killed_writes(out_dir: Path) -> None:
    """The hidden temporary files (``.NAME.*.tmp``, of ``atomic_path``) of the names a run writes into ``out_dir`` and
    its ``sr/``: under the run's lock none is being written, so each is what a run killed mid-write (``kill -9``)
    left, a checkpoint's tens of MB among them. Elsewhere such files wait a day (``sweep_stale_temps``)."""
    from lway_rt.io.weights import is_temp_name, temp_target

    sweep_stale_probes(out_dir)  # (a probe whose process lives is another command's, checking the folder now)
    found = [f for name in (*_RUN_FILES, "groups.json") for f in out_dir.glob(f".{name}.*.tmp")
             if is_temp_name(f.name, name)]
    if (out_dir / "sr").is_dir():  # (a hidden file of the user's that merely ends in .tmp is not one)
        found += [f for f in (out_dir / "sr").glob(".*.png.*.tmp") if (temp_target(f.name) or "").endswith(".png")]
    for f in found:
        try:
            if f.is_file() and not f.is_symlink():
                f.unlink()
        except OSError:
            pass


def run_damage(out_dir: Path, report: dict, names: Sequence[str] = (), missing_ok: Sequence[str] = ()) -> str | None:
    """What is wrong with the files of a finished run in ``out_dir`` (None: nothing found): its weights must load and
    hash to what its report records, and the images and pictures the report lists, and the image of each input
    named in ``names``, must be there (but those in ``missing_ok``). ``--resume`` runs a damaged run again rather than
    call it complete, or writes its missing images again from intact weights (``_rewrite_missing_images``)."""
    from lway_rt.errors import LwayError
    from lway_rt.io.weights import load_state_file, state_dict_sha256

    try:
        state, _ = load_state_file(out_dir / WEIGHTS)
    except LwayError:
        return f"its {WEIGHTS} cannot be read"
    model = report.get("model")
    recorded = model.get("adapted_sha256") if isinstance(model, dict) else None
    from lway_rt.archs.registry import our_names

    if not recorded or state_dict_sha256(our_names(state)) != recorded:  # (the network's names, as adapt hashes them)
        return f"its {WEIGHTS} is not the file its report records"
    for rel in [*report_images(report), *(f"sr/{n}.png" for n in names), report.get("contact_sheet"), report.get("curves")]:
        if isinstance(rel, str) and rel and rel not in missing_ok and not (out_dir / rel).is_file():
            return f"its {rel} is missing"
    return None


# where --overwrite keeps the finished run it replaces until the new one finishes (a stopped overwrite had left neither).
# Only a folder holding ASIDE_MARK is this command's: anything else of that name is the user's, never removed
ASIDE = ".lwayrt-replaced"
ASIDE_MARK = "lwayrt-replaced.json"
_ASIDE_FORMAT = "lway_rt.adapt-replaced/1"


def _is_aside(path: Path) -> bool:
    """Whether ``path`` is a folder (not a link) this command made to keep a replaced run in (it holds the mark)."""
    return path.is_dir() and not path.is_symlink() and (path / ASIDE_MARK).is_file()


def _aside_mark(aside: Path) -> dict:
    return _read_json_dict(aside / ASIDE_MARK) or {}


def _mark_aside(aside: Path, complete: bool, runs: Sequence[str] | None = None, restoring: bool = False,
                discarding: bool = False, drop: Sequence[str] = (), replacing: str | None = None,
                planned: Sequence[str] | None = None, removing: Sequence[str] | None = None,
                joined: Sequence[str] | None = None, fingerprints: dict[str, str] | None = None) -> None:
    """Write the mark: ``complete`` once every file of the replaced run is in (a stop part-way leaves it false, and
    the move is finished, never taken for a whole run with the rest deleted); ``runs``: the run folders a per-image
    or per-group command makes, which --restore removes where the replaced summary does not list them;
    ``restoring``: --restore has removed the stopped run's files and is moving the kept ones back (run again, it
    only goes on moving); ``discarding``: the new run finished, and what is kept here is being removed (a stop
    part-way leaves a folder that is only ever removed, never put back), with the run folders ``drop`` names (a
    per-image or per-group command's replaced runs it did not make again); ``replacing``: the fingerprint of the run
    that replaces it (its inputs, model and settings), which a --resume with no checkpoint to take up must match;
    ``planned``: in a per-image or per-group folder, the run folders of the command replacing the runs kept (every one,
    made or not), which a --resume must adapt, no other and none fewer, to take that command up; ``removing``: the
    stopped command's run folders that --restore removes, as it found them before it changed anything (run again
    after a stop, a run folder it had put back meanwhile was taken for the stopped command's); ``joined``: the run
    folders the command that ``replacing`` fingerprints has reached (``runs`` keeps those of the stopped commands before
    it too); ``fingerprints``: that command's run fingerprint of each of its run folders (a --resume that is not that
    command is told which run folders' inputs differ)."""
    before = _aside_mark(aside)
    runs = list(runs) if runs is not None else before.get("runs")
    planned = list(planned) if planned is not None else before.get("planned")
    removing = list(removing) if removing is not None else before.get("removing")
    joined = list(joined) if joined is not None else before.get("joined")
    replacing = replacing if replacing is not None else before.get("replacing")
    fingerprints = dict(fingerprints) if fingerprints is not None else before.get("fingerprints")
    atomic_write_json(aside / ASIDE_MARK, {"format": _ASIDE_FORMAT, "folder": str(aside.parent.absolute()),
                                           "complete": complete, "restoring": restoring,
                                           **({"runs": runs} if runs is not None else {}),
                                           **({"replacing": replacing} if isinstance(replacing, str) else {}),
                                           **({"planned": planned} if isinstance(planned, list) else {}),
                                           **({"removing": removing} if isinstance(removing, list) else {}),
                                           **({"joined": joined} if isinstance(joined, list) else {}),
                                           **({"fingerprints": fingerprints} if isinstance(fingerprints, dict) else {}),
                                           **({"discarding": True, "drop": list(drop)} if discarding else {})})


def refuse_another_resume(out_dir: Path, names: Sequence[str]) -> None:
    """Refuse a --resume into the per-image or per-group folder ``out_dir`` that a stopped --overwrite replaces runs in,
    where it adapts other inputs than that overwrite (run folders ``names``): it would remove the runs kept aside when
    it finished, those of run folders it does not make again among them, and --restore would take its own new runs
    for the overwrite's. The mark names the overwrite's run folders (an earlier version's names only those it
    started, which the --resume must then make again)."""
    aside = out_dir / ASIDE
    if _aside_state(aside) not in ("kept", "cut short"):
        return
    mark = _aside_mark(aside)
    planned, started = mark.get("planned"), mark.get("runs")
    ours = set(map(str, planned)) if isinstance(planned, list) else None
    if ours is None and isinstance(started, list):
        ours = set(map(str, started)) | set(names)  # (no more than it started is known: any others may join)
    if ours is None or ours == set(names):
        return
    missing, extra = sorted(ours - set(names)), sorted(set(names) - ours)
    differs = "; ".join(([f"it does not adapt {listing(missing, 4)}"] if missing else [])
                        + ([f"{listing(extra, 4)} {'is' if len(extra) == 1 else 'are'} not among its inputs"]
                           if extra else []))
    raise InputError(f"{out_dir} holds the runs a stopped --overwrite replaces, kept aside until it finishes, and this "
                     f"--resume adapts other inputs than that overwrite ({differs}): run that --overwrite command "
                     f"again, --resume it with its inputs, or {restore_words(out_dir)} to have the runs back")


def _refuse_a_restore_under_way(out_dir: Path, aside: Path) -> None:
    """No run may write into ``out_dir`` while a --restore there that a stop cut short has not finished: one stopped
    while it put a run back (``aside``, a folder's ``.lwayrt-replaced``, says "restoring"), or, in a per-image or
    per-group folder, between two run folders (the folder's own mark names the run folders the --restore removes)."""
    state = _aside_state(aside)
    if state == "restoring" or (state in ("kept", "cut short") and isinstance(_aside_mark(aside).get("removing"), list)):
        raise InputError(f"a --restore into {out_dir} was stopped part-way: run {restore_words(out_dir)} again to "
                         "finish it first")


def refuse_while_restoring(out_dir: Path) -> None:
    """``_refuse_a_restore_under_way`` for the per-image or per-group folder ``out_dir`` and each of its run folders:
    no command may use or judge the folder (a half-restored run folder's run, a half-restored grouping) first."""
    folders = [d for d in out_dir.iterdir() if d.is_dir() and not d.is_symlink()] if out_dir.is_dir() else []
    for folder in (out_dir, *folders):
        _refuse_a_restore_under_way(out_dir, folder / ASIDE)


def _aside_state(path: Path) -> str | None:
    """What ``path`` (a folder's ``.lwayrt-replaced``) is: None (not this command's), "cut short" (a move aside a stop
    cut short), "restoring" (a --restore a stop cut short), "discarding" (the new run finished and the kept one was
    being removed when a stop came) or "kept" (a whole run kept aside)."""
    if not _is_aside(path):
        return None
    mark = _aside_mark(path)
    if mark.get("discarding"):
        return "discarding"
    return "cut short" if mark.get("complete") is False else "restoring" if mark.get("restoring") else "kept"


def _drop_unmarked_aside(aside: Path) -> bool:
    """Remove ``aside`` where it holds nothing but what a kill during its first mark's write left (that write's
    temporary file; under the lock no one writes it now), or nothing at all (what a stop left as its last file went):
    it holds nothing of anyone's, and blocked the next --overwrite as a folder the command did not make. Returns
    whether it was removed."""
    if not aside.is_dir() or aside.is_symlink() or (aside / ASIDE_MARK).exists():
        return False
    with contextlib.suppress(OSError):
        for f in [f for f in aside.iterdir() if _mark_temp(f, aside) and f.is_file() and not f.is_symlink()]:
            f.unlink()
        if not any(aside.iterdir()):
            aside.rmdir()
            return True
    return False


def _make_aside(out_dir: Path, runs: Sequence[str] | None = None, replacing: str | None = None,
                planned: Sequence[str] | None = None, joined: Sequence[str] | None = None,
                fingerprints: dict[str, str] | None = None) -> Path:
    """``out_dir/.lwayrt-replaced``, empty but for its mark (not yet complete), for the finished run in ``out_dir``
    that is replaced. Called where no folder of this command's is there (``_aside_state`` None): anything of that
    name is the user's, and refused before anything moves."""
    aside = out_dir / ASIDE
    _drop_unmarked_aside(aside)
    if os.path.lexists(aside):
        kind = "link" if aside.is_symlink() else "folder" if aside.is_dir() else "file"
        raise InputError(f"{aside} is a {kind} this command did not make, where --overwrite keeps the run it "
                         "replaces until the new one finishes: move it, then run the command again")
    aside.mkdir()
    try:
        _mark_aside(aside, complete=False, runs=runs, replacing=replacing, planned=planned, joined=joined,
                    fingerprints=fingerprints)
    except BaseException:  # (a full disk): no unmarked folder is left behind, to be taken for the user's
        with contextlib.suppress(OSError):
            aside.rmdir()
        raise
    return aside


def _clear_previous_run(out_dir: Path, keep_finished: bool = False, replacing: str | None = None) -> Path | None:
    """Clear what an earlier run left in ``out_dir`` once ``--overwrite`` has been accepted, its report (the mark of a
    finished run) first: an overwrite stopped before it finished must not leave the new weights beside the old report
    (which ``--resume`` would call complete), the old run's images beside the new ones, or its checkpoint for
    ``--resume`` to continue under the new settings. With ``keep_finished``, a finished run is moved into
    ``out_dir/.lwayrt-replaced`` (as it lay: report, config, weights, pictures, sr/ images) rather than removed: it is
    removed when the new run finishes (``_finish_replacing``), or put back with ``lwayrt adapt --restore``. A move
    into it that a stop cut short is finished first, whatever else is asked (the files still in ``out_dir`` are the
    replaced run's). Returns the folder where a finished run is kept aside (this one, or the last one when
    ``out_dir`` holds none: an overwrite stopped before), else None."""
    report_path = out_dir / "report.json"
    aside = out_dir / ASIDE
    state = _aside_state(aside)
    _refuse_a_restore_under_way(out_dir, aside)
    cut_short = state == "cut short"
    # a run kept aside already is the one from before a stopped command, and stays: what that command made is not kept
    keep = cut_short or (keep_finished and state is None and finished_report(out_dir) is not None)
    if keep and not cut_short:
        aside = _make_aside(out_dir, replacing=replacing)
    # the replaced run's images: its report's list (moved aside already, where a stop cut that move short)
    sources = (report_path, aside / "report.json") if cut_short else (report_path,)
    listed = next((report_images(r) for r in map(_read_json_dict, sources) if r is not None), [])

    def clear(path: Path) -> None:
        if not keep:
            path.unlink()
            return
        try:
            (aside / path.relative_to(out_dir)).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, aside / path.relative_to(out_dir))  # (sr/ may be a link to another file system)
        except OSError as exc:  # (a full disk, where sr/ links to another one): what moved stays aside, marked
            raise OutputError(f"cannot move {path} aside into {aside} ({exc.strerror or exc}): nothing of the "
                              f"finished run is lost; make room, then run the command again (it finishes the move), "
                              f"or {restore_words(out_dir)} to have the run back as it was") from None

    if report_path.is_file():
        clear(report_path)
    if not keep:  # a stopped run's images, which its list names, go with it
        for path in _stopped_run_files(out_dir):
            if path.parent == out_dir / "sr":
                path.unlink()
    for name in (WEIGHTS, CHECKPOINT, "contact_sheet.png", "curves.png", SR_WRITTEN, _SR_WRITTEN_BEFORE) + \
            (("config.json",) if keep else ()):
        if (out_dir / name).is_file():
            clear(out_dir / name)
    sr_dir = (out_dir / "sr").resolve()
    for name in listed:  # the old run's images: only where a run writes them, whatever an edited report says
        target = (out_dir / str(name)).resolve()
        if target.parent == sr_dir and target.suffix.lower() == ".png" and target.is_file():
            clear(out_dir / "sr" / target.name)
    if keep or (keep_finished and state == "kept"):  # (kept from before: this overwrite replaces it now, and a
        _mark_aside(aside, complete=True, replacing=replacing if keep_finished else None)  # --resume may take it up)
    return _aside_run(out_dir)


def _aside_run(out_dir: Path) -> Path | None:
    """``out_dir/.lwayrt-replaced`` when this command made it and it holds a finished run (or a per-image or per-group
    folder's summary), else None."""
    aside = Path(out_dir) / ASIDE
    return aside if _aside_state(aside) in ("kept", "cut short") and (aside / "report.json").is_file() else None


def restore_words(out_dir: Path) -> str:
    """The command that puts back what an --overwrite stopped in ``out_dir`` had replaced."""
    from lway_rt.errors import shell_word

    return f"lwayrt adapt --restore {shell_word(str(out_dir))}"


def _replaced_when_done(out_dir: Path) -> str | None:
    """What to say where the run(s) an --overwrite into ``out_dir`` made are complete (its report, or a per-image or
    per-group command's summary, written) and a stop came before the runs they replace, kept aside, were removed:
    rerun, the whole adaptation was done again; --resume finishes the removal."""
    if _written_summary(out_dir) is None and not _replacing_run_done(out_dir):
        return None
    return (f"the new run(s) in {out_dir} are complete, and the run(s) they "
            f"replace are still kept aside (in {ASIDE} folders): run the same command with --resume in place of "
            f"--overwrite to remove them, or {restore_words(out_dir)} to have them back instead")


def _replacing_run_done(out_dir: Path) -> bool:
    """Whether the finished run in ``out_dir`` is the one replacing the run kept aside there (its report's fingerprint
    is the mark's ``replacing``): an --overwrite stopped after its report, before it removed what it replaced."""
    replacing = _aside_mark(out_dir / ASIDE).get("replacing")
    return _aside_state(out_dir / ASIDE) == "kept" and isinstance(replacing, str) \
        and replacing == (finished_report(out_dir) or {}).get("fingerprint")


def _written_summary(out_dir: Path) -> list | None:
    """The runs of the summary a per-image or per-group command wrote in ``out_dir`` while it keeps aside the runs it
    replaces (it writes it once every run is made), else None."""
    if _aside_state(out_dir / ASIDE) != "kept":
        return None
    summary = _read_json_dict(out_dir / "report.json") or {}
    runs = summary.get("runs")
    return runs if summary.get("format") == _SUMMARY_FORMAT and isinstance(runs, list) else None


def _aside_words(out_dir: Path) -> str:
    """Where the finished run an --overwrite replaces is kept and how to have it back; empty when none is."""
    aside = _aside_run(out_dir)
    if aside is None:
        return ""
    if (done := _replaced_when_done(out_dir)) is not None:
        return done
    return (f"the finished run it replaces is kept in {aside} until a run there finishes (to have it back instead: "
            f"{restore_words(out_dir)})")


def _finish_replacing(out_dir: Path, drop: Sequence[str] = ()) -> None:
    """The run that --overwrite started has finished: the run it replaced, kept aside until now, goes (only a folder
    this command made: one of the user's of that name stays). The mark says so before anything goes, and goes last:
    a stop part-way (a clip's images take seconds) leaves a folder that is only removed, by the next command into
    ``out_dir`` or --restore, never put back as a whole run. ``drop``: a per-image or per-group folder's run folders
    that the replaced summary lists and the new command did not make again, removed after the mark says so."""
    aside = out_dir / ASIDE
    if not _is_aside(aside):
        _drop_unmarked_aside(aside)  # (a kill after the mark went, before the folder: it holds nothing now)
        return
    mark = _aside_mark(aside)
    if not mark.get("discarding"):
        _mark_aside(aside, complete=True, discarding=True, drop=drop)
    else:
        drop = [str(n) for n in mark.get("drop") or () if isinstance(n, str)]
    for name in drop:
        _remove_run_folder(out_dir, name)
    runs = mark.get("runs")  # a per-image or per-group folder's: the run folders the command started, whose own
    for name in runs if isinstance(runs, list) else ():  # replaced runs go too
        sub = out_dir / str(name)
        if Path(str(name)).name == name and name not in ("", ".", "..", ASIDE) and sub.is_dir() and not sub.is_symlink():
            _finish_replacing(sub)
    with contextlib.suppress(OSError):  # (what cannot go now is removed by the next command)
        for path in aside.iterdir():
            if path.name != ASIDE_MARK:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        (aside / ASIDE_MARK).unlink()
        aside.rmdir()


def _runs_aside_words(out_dir: Path) -> str:
    """"; " and where the finished runs a per-image or per-group --overwrite replaces are kept and how to have them
    back; empty when none is."""
    kept = ("kept", "cut short")
    if not (_aside_state(out_dir / ASIDE) in kept or any(_aside_state(d / ASIDE) in kept for d in out_dir.iterdir()
                                                          if d.is_dir())):
        return ""
    return (f"; the finished runs it replaces are kept aside (in {ASIDE} folders) until every run of the command "
            f"finishes (to have them back instead: {restore_words(out_dir)})")


def stop_words(out_dir: Path, overwrite: bool = False) -> str | None:
    """What a stop that no run's own message covers (between runs, or after the last one) left in ``out_dir``, where
    an --overwrite keeps or was removing what it replaced; None where it was neither. ``overwrite``: the stopped
    command is that --overwrite (its --resume keeps the runs it finished; run again, it makes them anew)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    top = _aside_state(out_dir / ASIDE)
    states = {top, *(_aside_state(d / ASIDE) for d in out_dir.iterdir() if d.is_dir() and not d.is_symlink()
                     and d.name != ASIDE)}
    if top == "discarding" or ("discarding" in states and not states & {"kept", "cut short"}):
        return (f"interrupted after the adaptation finished: the new run(s) in {out_dir} are complete; the run(s) it "
                f"replaced were being removed, and what is left of them (in {ASIDE} folders) goes with the next "
                f"--overwrite into {out_dir}, or delete it")
    if (done := _replaced_when_done(out_dir)) is not None:
        return f"interrupted after the adaptation finished: {done}"
    if states & {"kept", "cut short"}:
        again = ("run the same command with --resume in place of --overwrite to go on (the runs it finished are "
                 "kept)" if overwrite else "run the same command again")
        return (f"interrupted; the finished run(s) it replaces are kept aside in {out_dir} (in {ASIDE} folders): "
                f"{again}, or {restore_words(out_dir)} to have them back")
    return None


_SHA_READ: dict[tuple, str] = {}


def image_sha256(path: Path) -> str:
    """The SHA-256 of an ``sr/`` image, read once a command: a resumed run, or an overwrite of a stopped one, checks
    each listed image against the user's edits, then again as it decides what to keep or clear (three reads of every
    frame of a clip). Known by the file's identity and state (device, inode, size, modification and change times in
    ns), so a file edited or replaced since is read again."""
    from lway_rt.export.cache import file_sha256

    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _SHA_READ:
        _SHA_READ[key] = file_sha256(path)
    return _SHA_READ[key]


def _ledger_images(folder: Path) -> set[str]:
    """The names of ``folder``'s sr/ images that its run's ledger holds as the run's: as written (or, a stop before
    they took the file's place, as the file they were to replace), or named alone by an earlier version's line; one
    the user has edited since is the user's."""
    mine = set()
    for name, entry in _read_ledger(folder / SR_WRITTEN).items():
        path = folder / "sr" / f"{name}.png"
        if Path(name).name != name or name in ("", ".", ".."):
            continue
        if "sha256" not in entry or not path.is_file() or image_sha256(path) in (entry.get("sha256"), entry.get("was")):
            mine.add(name)
    return mine


def _stopped_run_files(folder: Path, also: Iterable[str] = (), summary: str | None = None) -> list[Path]:
    """The files in ``folder`` of a run that was stopped and is given up: those a run writes, ``also``, and the sr/
    images its ledger names or, finished (a per-image command's earlier
    run folders), its report lists. With ``summary`` (the --mode of a per-image or per-group folder, at its top) only
    the summary, configuration and (per group) routing a command writes there, and ``also``. Other files are the user's, a copy of an earlier
    run's image among them."""
    found = [folder / name for name in (*(_RUN_NAMES.get(summary, ()) if summary else _RUN_FILES), *also)]
    images = [] if summary else list(_ledger_images(folder))
    images += [] if summary else [Path(rel).stem for rel in report_images(_read_json_dict(folder / "report.json"))
                                  if Path(rel).parent == Path("sr")]
    found += [folder / "sr" / f"{name}.png" for name in images if Path(name).name == name and name not in ("", ".", "..")]
    return [p for p in dict.fromkeys(found) if p.is_file() and not p.is_symlink()]


def _remove_stopped_run(folder: Path, files: Sequence[Path] | None = None) -> None:
    """Remove the stopped run's ``files`` (``_stopped_run_files``, found here when not given), the two that name its
    sr/ images last: its report, then its ledger. A kill part-way then leaves every file still here known as the
    stopped run's (the report went first, and the --restore run again took a finished run's own sr/ image for one of
    the user's, "in the way")."""
    def last(p: Path) -> tuple[bool, bool]:
        return p.name in ("report.json", SR_WRITTEN) and p.parent == folder, p.name == SR_WRITTEN

    for path in sorted(_stopped_run_files(folder) if files is None else files, key=last):
        path.unlink()


def _is_prefix(part: Path, whole: Path) -> bool:
    """Whether the bytes of ``part`` begin ``whole``'s: a copy to another disk that a stop cut short."""
    import filecmp

    size = part.stat().st_size
    if size > whole.stat().st_size:
        return False
    if size == whole.stat().st_size:
        return filecmp.cmp(part, whole, shallow=False)
    with open(part, "rb") as a, open(whole, "rb") as b:
        while chunk := a.read(1 << 20):
            if b.read(len(chunk)) != chunk:
                return False
    return True


def _check_put_back(folder: Path) -> list[Path]:
    """The stopped run's files in ``folder``, which --restore removes before it puts back the run kept in
    ``folder/.lwayrt-replaced``; refuses, before anything changes, where a file that is not the stopped run's is in
    the way of a kept one. None are removed where the move aside was cut short or a --restore is under way (the
    stopped run's files went before the first file was put back). Under way, a file in the way is the user's unless it
    is a kept file's copy back to another disk that a stop cut short; cut short, ``_put_back`` checks each file as it
    goes (what is still in ``folder`` is the replaced run's own)."""
    aside = folder / ASIDE
    state = _aside_state(aside)
    if state not in ("kept", "restoring", "cut short"):
        return []
    stopped: list[Path] = []
    if state == "kept":
        kept_top = (p.name for p in aside.iterdir() if p.is_file() and p.name != ASIDE_MARK)
        # (the top of a per-image or per-group folder: its mark lists the run folders the command started, and its
        # summary says which mode; a stopped first command left none, and then only its own configuration is its)
        mode = (_read_json_dict(aside / "report.json") or _read_json_dict(folder / "config.json") or {}).get("mode")
        summary = (mode if mode in ("per-image", "per-group") else "per-image") if "runs" in _aside_mark(aside) else None
        stopped = _stopped_run_files(folder, also=kept_top, summary=summary)
    theirs = set(stopped)
    for path in aside.rglob("*"):
        dest = folder / path.relative_to(aside)
        if not path.is_file() or path.name == ASIDE_MARK or _mark_temp(path, aside):
            continue
        # a file or a link where a kept file's folder goes (a file named sr) is in the way too
        parent = next((p for p in reversed(dest.relative_to(folder).parents[:-1])
                       if os.path.lexists(folder / p) and not (folder / p).is_dir()), None)
        if state == "cut short" and parent is None:
            continue
        if state == "restoring" and parent is None and os.path.lexists(dest) and dest.is_file() \
                and not dest.is_symlink() and _is_prefix(dest, path):
            continue  # (a copy back to another disk that a stop cut short: the kept file goes over it)
        if parent is not None or (os.path.lexists(dest) and dest not in theirs):
            what = dest if parent is None else folder / parent
            raise OutputError(f"{what} is in the way of the kept run's file{'s' if parent is not None else ''} of "
                              f"that name (in {aside}), and it is not the stopped run's: move it, then run lwayrt adapt "
                              "--restore again (nothing was changed)")
    return stopped


def _mark_temp(path: Path, aside: Path) -> bool:
    """Whether ``path`` is a temporary file of a write of ``aside``'s mark that a kill cut short."""
    from lway_rt.io.weights import is_temp_name

    return path.parent == aside and is_temp_name(path.name, ASIDE_MARK)


def _put_back(folder: Path, stopped: Sequence[Path]) -> int:
    """Move the run kept in ``folder/.lwayrt-replaced`` back into ``folder`` (its sr/ images into ``folder/sr``, which
    may be a link), after the stopped run's files there (``stopped``, as ``_check_put_back`` found and checked them)
    are removed; returns how many files were put back. A move aside that a stop cut short is only undone (what is
    still in ``folder`` is the replaced run's own), and a --restore a stop cut short goes on moving."""
    aside = folder / ASIDE
    state = _aside_state(aside)
    kept = [p for p in aside.rglob("*") if p.is_file() and p.relative_to(aside) != Path(ASIDE_MARK)
            and not _mark_temp(p, aside)]  # (the mark's own write that a kill cut short goes with the folder)
    if state == "kept":
        _remove_stopped_run(folder, stopped)
        _mark_aside(aside, complete=True, restoring=True)
    for path in kept:
        dest = folder / path.relative_to(aside)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if state == "cut short" and os.path.lexists(dest):
            if not (dest.is_file() and _is_prefix(path, dest)):
                raise OutputError(f"{dest} is in the way of the kept run's file of that name (in {aside}): move it, "
                                  "then run lwayrt adapt --restore again")
            path.unlink()  # the move stopped while it copied this file to another disk: the original is in place
            continue
        shutil.move(path, dest)  # (restoring: over a copy back that a stop cut short)
    shutil.rmtree(aside)
    return len(kept)


def _owning_folder(folder: Path) -> Path | None:
    """The per-image or per-group folder ``folder`` is a run of (its summary, kept or not, or its --overwrite's mark
    lists it), else None."""
    folder = folder.resolve()
    parent = folder.parent
    if parent == folder:
        return None
    names: set[str] = set()
    for report in (parent / "report.json", parent / ASIDE / "report.json"):
        summary = _read_json_dict(report) or {}
        if summary.get("format") == _SUMMARY_FORMAT and isinstance(summary.get("runs"), list):
            names |= {str(e.get("name")) for e in summary["runs"] if isinstance(e, dict)}
    mark = _aside_mark(parent / ASIDE) if _is_aside(parent / ASIDE) else {}
    for key in ("runs", "planned"):
        if isinstance(mark.get(key), list):
            names |= set(map(str, mark[key]))
    return parent if folder.name in names else None


def restore_replaced(out_dir: Path) -> str:
    """``lwayrt adapt --restore OUT``: put back the finished run(s) an ``--overwrite`` into ``out_dir`` replaced and
    kept aside, where that overwrite was stopped before it finished: the stopped run's files go (its checkpoint, so
    --resume does not continue it), and the folder is as the replaced run left it. In a per-image or per-group folder,
    each run folder's kept run and the folder's own summary and routing are put back, and the run folders the stopped
    command made for other names are removed (files of the user's in them stay). Returns what was done, in a line."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a folder: give the --out folder of the stopped --overwrite")
    if (owner := _owning_folder(out_dir)) is not None:  # (its command locks the folder above, not this run's)
        raise InputError(f"{out_dir} is one run of the {run_mode(owner) or 'per-image'} adaptation in {owner}: "
                         f"{restore_words(owner)} puts back every run its --overwrite kept aside (one run put back "
                         "alone would be put back under a command still writing there, or leave its summary "
                         "describing another run)")
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive_run(out_dir, "--out folder"))
        except OutputError:
            raise OutputError(f"another run is writing to {out_dir} right now: restore once it has finished or been "
                              "stopped") from None
        if _aside_state(out_dir / ASIDE) == "discarding":
            _finish_replacing(out_dir)
            raise InputError(f"nothing to restore in {out_dir}: the --overwrite there had finished (its new run is "
                             "complete), and what it replaced was being removed when it was stopped; that is done now")
        emptied = _drop_unmarked_aside(out_dir / ASIDE)  # (an aside whose first mark a kill cut short, or one a
        # --restore had emptied, its mark gone, when a kill came: it holds nothing)
        sweep_stale_probes(out_dir)  # (and what a kill while a command probed a folder left: any that ran there)
        for d in out_dir.iterdir():  # (and a run folder's)
            if d.is_dir() and not d.is_symlink() and d.name != ASIDE:
                _drop_unmarked_aside(d / ASIDE)
                sweep_stale_probes(d)
        subs = sorted(d for d in out_dir.iterdir() if d.name != ASIDE and d.is_dir() and not d.is_symlink()
                      and _is_aside(d / ASIDE))
        for sub in [d for d in subs if _aside_state(d / ASIDE) == "discarding"]:  # its own run had finished
            _finish_replacing(sub)
            subs.remove(sub)
        if not _is_aside(out_dir / ASIDE) and not subs and emptied:
            return (f"nothing left to restore in {out_dir}: the folder kept aside there held nothing more (a --restore "
                    "had put everything back, or an --overwrite was stopped before it kept anything aside)")
        if not _is_aside(out_dir / ASIDE) and not subs:
            raise InputError(f"{out_dir} holds no run that --overwrite kept aside ({ASIDE}/): there is nothing to "
                             "restore (it is removed when the overwriting run finishes)")
        top = [out_dir] if _is_aside(out_dir / ASIDE) else []
        # every folder first: nothing changes while a file is in the way
        stopped = {folder: _check_put_back(folder) for folder in (*subs, *top)}
        summary = _read_json_dict(out_dir / ASIDE / "report.json") if top else None
        if summary is None and top and _aside_state(out_dir / ASIDE) == "restoring":  # put back already, by the
            summary = _read_json_dict(out_dir / "report.json")  # --restore a stop cut short (its runs are the kept ones)
        mark = _aside_mark(out_dir / ASIDE) if top else {}
        made = mark.get("runs") if isinstance(mark.get("runs"), list) else []
        removed = []
        runs = (summary or {}).get("runs")  # (none: the replaced folder's first command had been stopped too)
        names = {str(e.get("name")) for e in runs if isinstance(e, dict)} if isinstance(runs, list) else set()
        # a per-image or per-group folder: the stopped command's run folders of names the kept summary does not list
        # go, first; which they are is recorded in the folder's mark before anything changes, and read from there by
        # a --restore run again after a stop (the run folders put back meanwhile are no longer told apart)
        removing = mark.get("removing")
        if top and not isinstance(removing, list):
            removing = [str(n) for n in made if str(n) not in names and out_dir / str(n) not in subs]
            _mark_aside(out_dir / ASIDE, complete=mark.get("complete") is not False,
                        restoring=bool(mark.get("restoring")), removing=removing)
        for name in removing if isinstance(removing, list) else ():
            sub = out_dir / str(name)
            if Path(str(name)).name == name and name not in names and sub.is_dir() \
                    and not sub.is_symlink() and ((sub / CHECKPOINT).is_file() or _run_started_in(sub)):
                _remove_stopped_run(sub)
                for folder in (sub / "sr", sub):
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only when empty
                removed.append(sub.name)
        planned = mark.get("planned")  # a run folder the stopped command made and was stopped in before its run began
        for name in planned if isinstance(planned, list) else ():  # (it joins the runs only then): empty, it goes
            sub = out_dir / str(name)
            if Path(str(name)).name == name and name not in names and sub not in subs and sub.is_dir() \
                    and not sub.is_symlink() and not any(sub.iterdir()):
                sub.rmdir()
        for folder in stopped:  # what a kill left half-written (under the lock none is being written)
            _remove_killed_writes(folder)
        put = sum(_put_back(folder, files) for folder, files in stopped.items())  # the folder's own last
    what = f"put back the finished run kept aside in {out_dir} ({put} file(s))"
    if subs:
        what = f"put back the finished runs kept aside in {out_dir}: {', '.join(s.name for s in subs)} ({put} file(s))"
    if removed:
        what += f"; removed the stopped command's run(s) of {', '.join(removed)}"
    return what


def finished_report(out_dir: Path) -> dict | None:
    """The report of a finished single run in ``out_dir`` (its weights and report.json are there), else None."""
    path = Path(out_dir) / "report.json"
    if not ((Path(out_dir) / WEIGHTS).is_file() and path.is_file()):
        return None
    report = _read_json_dict(path)
    return {} if report is None else report  # unreadable: a finished run all the same, which no fingerprint matches


_GROUP_FOLDER = re.compile(r"group-\d+")  # a per-group run's folder
# what a run writes at the top of its --out folder, per --mode (per-image and per-group add a folder per run)
_RUN_NAMES = {"folder": ("report.json", "config.json", "curves.png", "contact_sheet.png", WEIGHTS, CHECKPOINT, "sr"),
              "per-image": ("report.json", "config.json"), "per-group": ("report.json", "config.json", "groups.json")}


def _read_json_dict(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def report_images(report: dict | None) -> list[str]:
    """The ``sr/`` images a run's report lists, as it records them (paths relative to the run folder, "sr/NAME.png");
    none for a report without a readable list (an edited or damaged one). Callers that act on a path check it is
    where a run writes its images."""
    entries = (report or {}).get("images")
    if not isinstance(entries, list):
        return []
    return [e["sr"] for e in entries if isinstance(e, dict) and isinstance(e.get("sr"), str) and e["sr"]]


def _weights_with_records(folder: Path) -> bool:
    """Whether ``folder`` holds a run's weights with a record of the run beside them (a report or config.json): a
    lone weights file is the user's, under the name a run writes."""
    return (folder / WEIGHTS).is_file() and ((folder / "report.json").exists() or (folder / "config.json").exists())


def run_mode(out_dir: Path) -> str | None:
    """The --mode of the adaptation (finished or not) that ``out_dir`` holds, or None when it holds none."""
    from lway_rt.adapt.config import MODES

    report = _read_json_dict(out_dir / "report.json") or {}
    if report.get("format") == _SUMMARY_FORMAT and report.get("mode") in MODES:
        return report["mode"]
    if report.get("format") == _REPORT_FORMAT or (out_dir / CHECKPOINT).is_file():
        return "folder"
    if _weights_with_records(out_dir):  # (a lone weights file is not a run)
        return "folder"
    if (out_dir / "groups.json").is_file():
        return "per-group"
    config = _read_json_dict(out_dir / "config.json") or {}  # written when a run starts: one killed before its checkpoint
    if config.get("mode") in MODES and {"iterations", "patch_size"} <= set(config):
        return config["mode"]
    # its records unreadable: the runs in its sub-folders still say what it is (each records its mode; a run of
    # --mode folder there, an adaptation of the user's kept in a sub-folder, is not one of them)
    runs = {}
    for p in out_dir.iterdir():
        if p.is_dir() and not p.name.startswith(".") and ((p / CHECKPOINT).is_file() or _weights_with_records(p)):
            recorded = (_read_json_dict(p / "report.json") or {}).get("config")
            mode = (recorded.get("mode") if isinstance(recorded, dict) else None) \
                or (_read_json_dict(p / "config.json") or {}).get("mode")
            runs[p.name] = mode if mode in MODES else None
    runs = {name: mode for name, mode in runs.items() if mode != "folder"}
    if runs:
        return "per-group" if all(mode == "per-group" or (mode is None and _GROUP_FOLDER.fullmatch(name))
                                  for name, mode in runs.items()) else "per-image"
    return None


def _check_out_folder(out_dir: Path, config: AdaptConfig, images, paths, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is loaded, a run that would write over what it must not: an earlier adaptation of
    another --mode (its report and config would be replaced, its weights orphaned), one of the same --mode that
    neither --resume nor --overwrite accounts for, files of the user's under the names a run writes, or the inputs
    themselves (in ``out_dir``, its ``sr/`` or a run's folder)."""
    from lway_rt.io.weights import NAME_MAX

    for img in images:  # refused now, not after the training when its image is written
        size = len(os.fsencode(f"{img.name}.png"))
        if size > NAME_MAX:
            raise InputError(f"input {img.path or img.name} would give the SR image a name of {size} bytes, more than "
                             f"the {NAME_MAX} a file name may have: rename it shorter")
    names = {img.name for img in images} if config.mode == "per-image" else set()
    own = _RUN_NAMES[config.mode]
    taken = {o.casefold() for o in (*own, ASIDE)}  # (macOS's and Windows' file systems take Report.json for it)
    clash = sorted(n for n in names if n.casefold() in taken)
    if clash:
        raise InputError(f"an input named {clash[0]} would get the run folder {out_dir / clash[0]}, a name the "
                         "adaptation's own files use: rename that image")
    hidden = sorted(n for n in names if n.startswith("."))
    if hidden:  # (listings, lwayrt upscale -m FOLDER's among them, pass hidden folders over)
        raise InputError(f"an input named {hidden[0]} would get the hidden run folder {out_dir / hidden[0]}, which "
                         "folder listings pass over: rename that image without the leading dot")
    root = out_dir.resolve()
    # where the run writes, links followed: the top of --out, and below it sr/ (folder) or each run's folder
    groups = sorted(p.name for p in out_dir.glob("group-*") if _GROUP_FOLDER.fullmatch(p.name)) \
        if config.mode == "per-group" else []
    below = [(out_dir / n).resolve() for n in (["sr"] if config.mode == "folder" else [*sorted(names), *groups])]
    for path in paths:
        where = Path(path).resolve()
        if where.parent == root or any(where.is_relative_to(b) for b in below):
            raise InputError(f"{path} lies where the run in --out {out_dir} writes its files (its pictures and run "
                             "folders would replace it or be read as inputs next time): choose another --out folder")
    if not out_dir.is_dir():
        return
    previous = run_mode(out_dir)
    if previous is None and _aside_state(out_dir / ASIDE) in ("kept", "cut short"):  # all of it moved aside, or its
        previous = run_mode(out_dir / ASIDE)  # records: a stopped overwrite (sr/ may still hold the images of either)
    if previous is not None and previous != config.mode:
        raise InputError(f"{out_dir} holds a --mode {previous} adaptation, not --mode {config.mode}: rerun with --mode "
                         f"{previous} to continue or replace it, or choose another --out folder")
    if previous is not None and config.mode != "folder" and not (resume or overwrite):
        if _aside_state(out_dir / ASIDE) in ("kept", "cut short"):  # (--resume is that overwrite's alone: it was named
            raise InputError(f"{out_dir} holds runs a stopped --overwrite was replacing: run that command with --resume "
                             f"in place of --overwrite to finish it where it stopped, or {restore_words(out_dir)} to "
                             "have the earlier runs back")  # (and refused: review 48D D1, 48H H1)
        raise InputError(f"{out_dir} holds the runs of an earlier --mode {config.mode} adaptation: pass --resume to keep "
                         "those made with these inputs and settings and finish the rest, --overwrite to replace them, "
                         "or choose another --out folder")
    if config.mode == "folder" and (out_dir / "sr").exists() and not (out_dir / "sr").is_dir():
        raise InputError(f"{out_dir / 'sr'} is a file, where the run writes its images: move it, or choose another "
                         "--out folder")
    if previous == "folder":
        refuse_users_images(out_dir, [img.name for img in images])
    if previous is None:
        theirs = _present(out_dir, (*own, *sorted(names), *groups))
        if theirs:
            shown = listing(theirs, 4)
            raise InputError(f"{out_dir} holds {shown} but no adaptation run: the run would write over "
                             f"{'it' if len(theirs) == 1 else 'them'}; choose another --out folder")


def refuse_users_images(folder: Path, names: Iterable[str]) -> None:
    """Refuse where ``folder``'s ``sr/`` holds an image under the name of one of ``names`` (the inputs whose images
    the run there writes) that is not the run's: the run's report and its list of images written name its images,
    and one they do not name, or one edited since, is the user's, which any run there (--resume, --overwrite or a
    rerun) would write over. Where neither names any image (a run stopped before its first; a report gone), an image
    without the record each ``sr/`` image carries in its PNG text (``SR_KEY``) is the user's."""
    from lway_rt.io.images import png_text

    present = [n for n in names if (folder / "sr" / f"{n}.png").exists()]
    if not present:
        return
    listed = {Path(rel) for rel in report_images(finished_report(folder))}
    listed |= {Path("sr", f"{name}.png") for name in _ledger_images(folder)}
    if _aside_state(folder / ASIDE) == "cut short":  # the images of the run being moved aside, not moved yet
        listed |= {Path(rel) for rel in report_images(_read_json_dict(folder / ASIDE / "report.json"))}
    recorded = bool(listed) or (folder / SR_WRITTEN).is_file()
    for name in sorted(present):
        rel = Path("sr", f"{name}.png")
        if rel in listed or (not recorded and png_text(folder / rel, SR_KEY) is not None):
            continue
        raise InputError(f"{folder / rel} is not an image of the run in {folder} (neither its report nor its list of "
                         "images written names it), and this run would write its image of that input there (one edited "
                         "since the run wrote it is yours too): move it, or choose another --out folder")


def _present(folder: Path, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that exist in ``folder``, a folder's with a trailing "/", as the refusals show them."""
    return [n + ("/" if (folder / n).is_dir() else "") for n in names if (folder / n).exists()]


def _remove_run_folder(out_dir: Path, name: str) -> None:
    """Remove the run folder ``name`` of an earlier per-image or per-group adaptation in ``out_dir`` that --overwrite
    replaced: the files a run writes there (its listed sr/ images among them) and then the folder, where nothing else
    is left in it (a file of the user's keeps it). A name that is not one folder directly in ``out_dir`` is left."""
    sub = out_dir / name
    if not name or Path(name).name != name or name in (".", "..") or sub.is_symlink() or not sub.is_dir():
        return
    _clear_previous_run(sub)
    _finish_replacing(sub)  # (a run an earlier overwrite stopped in had kept one aside)
    (sub / "config.json").unlink(missing_ok=True)
    for folder in (sub / "sr", sub):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def _run_started_in(folder: Path) -> bool:
    """Whether a run of this command started in ``folder``: it left its config.json (one of the user's of that name
    is not taken for it)."""
    config = _read_json_dict(folder / "config.json")
    return config is not None and {"mode", "loss", "iterations", "lr"} <= config.keys()


def _refuse_foreign(sub: Path, finished: dict | None) -> None:
    """Refuse a per-image or per-group run folder that holds no run of this command but files under the names a run
    writes (the user's own folder that happens to bear an input's or a group's name): neither --resume nor
    --overwrite, which are about runs, may write over them. A run that started there left its config.json."""
    if finished is not None or not sub.is_dir() or (sub / CHECKPOINT).exists():
        return
    if _aside_state(sub / ASIDE) in ("kept", "cut short"):
        return  # a stopped overwrite was replacing the run here (its sr/ may still hold the replaced run's images)
    if _run_started_in(sub):
        return  # a run of this command started here (stopped before its first checkpoint)
    theirs = _present(sub, _RUN_NAMES["folder"])
    if theirs:
        raise InputError(f"{sub} holds {', '.join(theirs)} but no adaptation run: the run would write over "
                         f"{'it' if len(theirs) == 1 else 'them'}; move {'it' if len(theirs) == 1 else 'them'}, or "
                         "choose another --out folder")
