"""``lwayrt upscale-video``: a video through an SR model, frame by frame, into an H.264 file with the source's audio.

Long runs go on where they stopped: the upscaled frames are encoded in segments of ``SEGMENT_FRAMES`` frames (or
``SEGMENT_SECONDS`` of work, whichever comes first), kept with a small record in a hidden folder beside the output
(``.NAME.lwayrt-parts``); the same command run again checks that the record matches the source and the settings and
continues after the last whole segment. A first Ctrl-C (or SIGTERM) finishes the frame in hand and closes the
segment, so nothing done is lost; the output appears, atomically, only once every frame is in it, and the parts
folder then goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lway_rt.errors import STOPS, InputError, Interrupted, LwayError, OutputError, finishing_steps, listing, shell_word
from lway_rt.io.images import VIDEO_SUFFIXES, LoadedImage, _quantise
from lway_rt.io.video import (CONTAINERS, OUT_SUFFIXES, PRESETS, Decoding, SegmentWriter, VideoInfo, count_packets,
                              damage_words, ffmpeg_exe, leading_gap, mux, probe, read_frames, size_changes, to_float,
                              video_packets)
from lway_rt.io.weights import NAME_MAX, atomic_path, atomic_write_json, ensure_writable_dir, exclusive_run, temp_stem
from lway_rt.upscale import UpscaleConfig, output_name_too_long, prepare_run, run_key, scaled_size, upscale_image

# Each segment starts with a key frame, which x264 would otherwise place every 250 frames (its keyint): segments of
# that length cost nothing in size, shorter ones do, up to 1.6x the bytes at 100 frames and 2.6x at 50 on clean
# footage (benchmarks/video_segments.py, video_segments_cpu.json; 30 s segments on this CPU had been 40-100 frames).
SEGMENT_FRAMES = 250  # a segment is closed after this many frames ...
SEGMENT_SECONDS = 300.0  # ... or this much work: a kill -9 loses at most about this much (a stop asked for, nothing)
_RECORD = "parts.json"


@dataclass(frozen=True)
class VideoConfig:
    """How frames become a file: x264's ``crf`` and ``preset``, the output's ``container`` ("same": the source's
    where it is one of ``OUT_SUFFIXES``, else mkv), ``frames`` (the first N only: a quick look), ``overwrite``,
    ``skip_existing`` (an output already there, newer than its source and of the output's size, is left alone)."""

    crf: int = 18
    preset: str = "medium"
    container: str = "same"
    frames: int | None = None
    overwrite: bool = False
    deinterlace: bool = False
    skip_existing: bool = False

    def __post_init__(self):
        if not 0 <= self.crf <= 51:
            raise InputError(f"--crf must be 0-51 (lower: better and larger; 18 looks like the source), not {self.crf}")
        if self.preset not in PRESETS:
            raise InputError(f"--preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if self.container not in CONTAINERS:
            raise InputError(f"--container must be one of {', '.join(CONTAINERS)}, not {self.container!r}")
        if self.frames is not None and self.frames < 1:
            raise InputError(f"--frames must be 1 or more, not {self.frames}")
        if self.overwrite and self.skip_existing:
            raise InputError("--overwrite replaces the outputs already there and --skip-existing leaves them: give one")


@dataclass
class VideoReport:
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # outputs already there, left alone (skip_existing)
    failures: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    frames: int = 0  # frames upscaled by this run (not those of earlier runs' segments)


def output_path(src: Path, out_dir: Path, suffix: str, container: str) -> Path:
    ext = src.suffix.lower() if container == "same" else f".{container}"
    return out_dir / f"{src.stem}{suffix}{ext if ext in OUT_SUFFIXES else '.mkv'}"


def _namesakes(src: Path, dest: Path, container: str) -> str:
    """Which other videos beside ``src`` are written to ``dest`` too (``a.ts`` and ``a.mpg`` both make ``a_x4.mkv``):
    an output one of them left is not ``src``'s, and the refusal says whose it may be."""
    suffix = dest.stem[len(src.stem):]
    others = [q.name for q in sorted(src.parent.glob(f"{glob.escape(src.stem)}.*")) if q != src and
              q.suffix.lower() in VIDEO_SUFFIXES and output_path(q, dest.parent, suffix, container) == dest]
    if not others:
        return ""
    one = len(others) == 1
    return (f" ({listing(others, 3)} beside it {'is' if one else 'are'} written to that name too: it may be the output "
            f"of {'that video' if one else 'one of them'})")


def parts_folder(dest: Path) -> Path:
    """The hidden folder of ``dest``'s kept frames."""
    return _hidden_beside(dest, ".lwayrt-parts")


def _hidden_beside(dest: Path, ending: str) -> Path:
    """``.NAME<ending>`` beside ``dest``, or where that is longer than a file name may be (an output name that fits,
    241-255 bytes, had been refused for it) with NAME shortened as a temporary file's is."""
    name = f".{dest.name}{ending}"
    return dest.with_name(name if len(os.fsencode(name)) <= NAME_MAX else f".{temp_stem(dest.name)}{ending}")


def _fingerprint(src: Path, info: VideoInfo, size: tuple[int, int], key: str, video: VideoConfig,
                 config: UpscaleConfig) -> dict:
    """What the parts of an unfinished run must share with this one to be continued: the source file (its path,
    size and time), how it is read, the model's run key, the output size and the encoder's settings."""
    st = src.stat()
    return {"source": str(src.resolve()), "source_bytes": st.st_size, "source_mtime_ns": st.st_mtime_ns,
            "rate": str(info.rate), "depth": info.depth, "matrix": info.matrix, "size": list(size), "run_key": key,
            "crf": video.crf, "preset": video.preset, "frames": video.frames, "outscale": config.outscale,
            "deinterlace": video.deinterlace,
            "model": _model_said(config.model),  # (said, not compared: the run key is the model's identity; 56H-2)
            # a tagged source's segments record its primaries and transfer (those a release before 2026-12-07 made
            # do not, and joined with later ones they made a file of mixed tags): only then, so others' go on
            **({"tags": [info.primaries, info.transfer]} if info.primaries or info.transfer else {})}


_SETTING = {"source": "source file", "source_bytes": "source file (it changed since)",  # a fingerprint's keys, as said
            "source_mtime_ns": "source file (it changed since)", "rate": "frame rate", "depth": "bit depth",
            "matrix": "colour matrix", "size": "output size", "run_key": "model (or --detail-cap)", "crf": "--crf",
            "preset": "--preset", "frames": "--frames", "outscale": "--outscale", "deinterlace": "--deinterlace",
            "tags": "colour tagging (segments made without the source's primaries and transfer)"}


_SHOWN = ("crf", "preset", "frames", "outscale", "deinterlace", "size")  # settings a refusal says both values of
_SAID_ONLY = ("model",)  # the -m a run was given, said where its run key differs (a record before it has none)


def _model_said(spec) -> str:
    """``-m`` as a parts record keeps it: a store name as typed, a file or folder by its absolute path (a relative one
    could not be followed from another folder, and two spellings of one file read as two models: 56I-1)."""
    from lway_rt.io.store import is_store_name

    path = Path(str(spec)).expanduser()
    return str(spec) if is_store_name(spec) or not path.exists() else str(path.resolve())


def _model_words(record: dict, print_of: dict) -> str:
    """Both runs' -m where the models' run keys differ and the record names its -m (it said only "another model", and
    the command that finishes the stopped run could not be told)."""
    there, now = record.get("model"), print_of["model"]
    if there and Path(there).is_absolute() and not Path(there).exists():  # (moved: its command cannot be run: 56J2)
        there = f"{there}, which is gone,"
    return f" ({there} there, {now} now)" if there and there != now else \
        " (the same -m: its weights or --detail-cap changed since)" if there else ""


def _shown(value) -> str:
    return "none" if value is None else "x".join(map(str, value)) if isinstance(value, list) else str(value)


def upscale_videos(inputs: Sequence[Path], out_dir: Path, config: UpscaleConfig, video: VideoConfig, *,
                   on_start: Callable[[Path, int | None, int], None] | None = None,
                   progress: Callable[[], None] | None = None,
                   on_written: Callable[[Path], None] | None = None) -> VideoReport:
    """Upscale each video of ``inputs`` into ``out_dir``; a failing video does not stop the others (its failure is
    in the report). ``on_start(src, frames_estimate, frames_already_done)`` opens a video, ``progress()`` counts a
    frame, ``on_written(dest)`` tells of a finished output as it is made (a later stop does not hide it)."""
    out_dir = Path(out_dir).expanduser()
    srcs = _once(inputs)
    for src in srcs:
        if src.is_dir():
            raise InputError(f"{src} is a folder: give the video files (e.g. {shell_word(str(src))}/*.mp4)")
        if not src.exists():
            raise InputError(f"{src} does not exist")
    ffmpeg_exe()  # (before the model loads and -o is made: nothing is written without it)
    config, desc, router, cap, _ = prepare_run(config)
    if router is not None:
        raise InputError(f"{config.model} is a per-group adaptation: each image goes to its group's model, and a "
                         "video's frames would flip between models; give one group's folder as -m (its sub-folders)")
    factor = config.outscale if config.outscale is not None else desc.scale
    suffix = f"_x{factor:g}" if config.suffix is None else config.suffix
    plan = [(src, output_path(src, out_dir, suffix, video.container)) for src in srcs]
    for src, dest in plan:
        if dest.resolve() == src.resolve():
            raise InputError(f"{dest} is the input itself: choose another -o folder or --suffix")
    made_of = {dest.resolve(): src for src, dest in plan}
    report = VideoReport()
    for src, dest in list(plan):  # (a glob run again with -o its folder: the earlier output, upscaled again, had
        if (of := made_of.get(src.resolve())) is None:  # been a 16x video)
            continue
        if _output_of(src, of, factor):
            plan.remove((src, dest))
            report.notes.append(f"{src} is left out: it is where this command writes {of.name}'s output (an earlier "
                                "run's, by its size, time and length)")
        elif video.overwrite:  # (a video of the user's that merely bears that name)
            raise InputError(f"{src} is an input, and where this command writes {of}'s output, which --overwrite "
                             "would put in its place: choose another -o folder or --suffix")
    seen: dict[Path, Path] = {}
    for src, dest in plan:
        if (other := seen.setdefault(dest, src)) != src:
            raise InputError(f"{other} and {src} would both be written to {dest}: upscale them into separate -o folders")
    made = not out_dir.exists()
    ensure_writable_dir(out_dir, "-o folder")
    key = run_key(config, desc, cap, None, alpha=False)
    for src, dest in plan:
        try:
            if too_long := output_name_too_long(dest):
                raise InputError(too_long)
            _upscale_video(src, dest, config, video, desc, cap, key, report, on_start, progress)
            if on_written and dest in report.written:
                on_written(dest)
        except (Interrupted, KeyboardInterrupt) as exc:  # (a stop between two videos, or as one opens, too)
            stop = exc if isinstance(exc, Interrupted) else Interrupted(
                f"interrupted before a frame of {src.name} was kept: run the same command again")
            if made and not report.written:  # nothing kept (a kept frame's parts folder keeps -o from going)
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
            done = [d.name for d in report.written]
            if done and video.overwrite:  # (--skip-existing would also keep the outputs it had not replaced yet)
                raise Interrupted(f"{stop}; it makes {listing(done, 3)} again, finished before the stop") from exc
            if done and not video.skip_existing:  # the same command again would refuse them: "exists"
                raise Interrupted(f"{stop}, adding --skip-existing to leave the video(s) finished before the stop as "
                                  f"they are ({listing(done, 3)})") from exc
            if stop is not exc:
                raise stop from exc
            raise
        except LwayError as exc:
            msg = str(exc)
            report.failures.append((src, msg if str(src) in msg else f"{src}: {msg}"))
    if made and not report.written:  # every video failed before its first frame: no empty folder of ours is left
        with contextlib.suppress(OSError):
            out_dir.rmdir()
    return report


def _once(inputs: Sequence[str | Path]) -> list[Path]:
    """The inputs in order, a file named twice (overlapping globs, a relative and an absolute path) taken once."""
    seen: set[Path] = set()
    srcs = []
    for p in inputs:
        src = Path(p).expanduser()
        if src.resolve() not in seen:
            seen.add(src.resolve())
            srcs.append(src)
    return srcs


def _upscale_video(src: Path, dest: Path, config: UpscaleConfig, video: VideoConfig, desc, cap, key: str,
                   report: VideoReport, on_start, progress) -> None:
    """One video, while no other run writes the same output (a second one is refused in one line: both would add
    segments to one parts folder)."""
    with exclusive_run(_hidden_beside(dest, ".lock"), "-o folder or --suffix", shown=dest):
        _upscale_locked(src, dest, config, video, desc, cap, key, report, on_start, progress)


def _upscale_locked(src: Path, dest: Path, config: UpscaleConfig, video: VideoConfig, desc, cap, key: str,
                    report: VideoReport, on_start, progress) -> None:
    if dest.is_dir():  # (found at the end, after every frame, even with --overwrite, which cannot replace a folder)
        raise InputError(f"output {dest} is a folder: move it, or choose another -o folder or --suffix")
    if dest.exists() and not video.overwrite and not video.skip_existing:
        raise InputError(f"{dest} exists{_namesakes(src, dest, video.container)}: pass --overwrite to replace it, "
                         "--skip-existing to leave it (a finished output of this command), or choose another -o folder "
                         "or --suffix")
    info = probe(src)
    factor = config.outscale if config.outscale is not None else desc.scale
    size = scaled_size((info.width, info.height), factor)
    noted = len(report.notes)  # (the notes about the source below are not said of an output left as it is)
    if size[0] % 2 or size[1] % 2:
        near = min((f for f in (round(factor * 100 + d) / 100 for d in range(-50, 51)) if f > 0 and
                    not any(v % 2 for v in scaled_size((info.width, info.height), f))),
                   key=lambda f: abs(f - factor), default=2)
        raise InputError(f"{src} ({info.width}x{info.height}) upscaled {factor:g}x is {size[0]}x{size[1]}, and H.264 "
                         f"in 4:2:0 needs even sides: choose another --outscale, such as {near:g}")
    if min(info.width, info.height) < desc.min_size:
        raise InputError(f"{src} is {info.width}x{info.height}, smaller than the model's minimum side of "
                         f"{desc.min_size} px")
    if info.interlaced and not video.deinterlace:
        report.notes.append(f"{src} is interlaced (each frame two fields a moment apart): its frames were upscaled as "
                            "they are, and moving edges show combs the model sharpens; --deinterlace makes each a "
                            "whole picture first")
    gap_noted = (gap := leading_gap(src, info)) >= 0.5 / float(info.rate)
    if gap_noted:  # its first frames do not decode: the picture starts after them, in sync with the sound
        info = dataclasses.replace(info, video_delay=info.video_delay + gap)
        lost = round(gap * float(info.rate))
        report.notes.append(f"{src} starts mid-stream: its first {lost} frame(s) ({gap:.2f} s) "
                            "cannot be decoded (no key frame before them), so the picture starts after them, in sync "
                            "with its sound")
    if info.alpha:  # (decoded as RGB: H.264 holds no alpha)
        report.notes.append(f"{src} carries transparency (an alpha channel), which {dest.name} cannot hold (H.264): it "
                            "is left out, and its clear areas show the colour stored under them")
    if info.video_streams > 1:
        report.notes.append(f"{src} holds {info.video_streams} video streams (another angle, a cover picture): only "
                            f"its default one is upscaled into {dest.name}, the others are left out")
    if dest.exists() and not video.overwrite:  # --skip-existing
        least, most = _length_bounds(src, info, video.frames)
        if _finished(src, dest, size, least, most):
            report.kept.append(dest)
            del report.notes[noted:]
            return
        frames = "" if least is None else f" of {least} frame(s)"
        raise InputError(f"{dest} exists, and is not an output of {src.name} at {size[0]}x{size[1]}{frames} made since "
                         f"it last changed{_namesakes(src, dest, video.container)}: pass --overwrite to replace it, or "
                         "choose another -o folder or --suffix")
    # the video's own packets where frames are read at their average rate (the container's duration can be its
    # audio's); a variable-rate clip, read at its nominal rate with frames repeated, by its duration
    steady = info.average is not None and abs(float(info.average) - float(info.rate)) <= 0.005 * float(info.rate)
    count = count_packets(src, info) if steady else None
    if count and info.video_duration is not None and abs(count - info.frames_estimate) > max(1, count // 100):
        count = None  # (a Matroska stream's average is its nominal rate: gaps show only against its own length)
    count = count or info.frames_estimate
    total = count if video.frames is None else min(video.frames, count or video.frames)
    parts = parts_folder(dest)
    print_of = _fingerprint(src, info, size, key, video, config)
    segments, complete, decoding = _resume(parts, print_of, src, dest, discard=video.overwrite)
    done = sum(s["frames"] for s in segments)
    if on_start:
        on_start(src, total, done)
    if done:
        report.notes.append(f"{dest.name}: went on from frame {done}, where an earlier run had stopped" +
                            (" (every frame was done: only the file is made)" if complete else ""))
    left = None if video.frames is None else video.frames - done
    writer: SegmentWriter | None = None
    started = time.monotonic()

    def close_segment() -> None:
        nonlocal writer
        if writer is None:
            return
        w, writer = writer, None
        if w.frames == 0:
            w.abort()
            return
        w.close()
        segments.append({"file": w.dest.name, "frames": w.frames})
        atomic_write_json(parts / _RECORD, {**print_of, "segments": segments})

    try:
        with finishing_steps() as steps:
            steps.step, steps.kept = "frame", "the frames of the segments closed before it"
            if not complete and (left is None or left > 0):
                for frame in read_frames(src, info, start=done, count=left, deinterlace=video.deinterlace,
                                         decoding=decoding):
                    if writer is None:
                        writer = SegmentWriter(parts / f"segment_{len(segments):05d}.mp4", info, size, video.crf,
                                               video.preset)
                        started = time.monotonic()
                    writer.write(_upscale_frame(frame, info, desc, cap, config))
                    done += 1
                    report.frames += 1
                    steps.unsaved = True
                    if progress:
                        progress()
                    if STOPS:
                        raise KeyboardInterrupt
                    if writer.frames >= SEGMENT_FRAMES or time.monotonic() - started >= SEGMENT_SECONDS:
                        close_segment()
                        steps.unsaved = False
            close_segment()
            if segments and not complete:  # a stop in the mux does not decode the whole source again to find its end
                atomic_write_json(parts / _RECORD, {**print_of, "segments": segments, "complete": True,  # (said
                                                    "damage": decoding.errors, "repeated": decoding.repeated,  # again)
                                                    "sizes": decoding.sizes})
    except KeyboardInterrupt as exc:
        if writer is not None and STOPS and len(STOPS) == 1:  # a first stop: the frame in hand was finished
            close_segment()
        elif writer is not None:
            writer.abort()
        kept = sum(s["frames"] for s in segments)
        if not kept:
            shutil.rmtree(parts, ignore_errors=True)
            raise Interrupted(f"interrupted before a frame of {src.name} was kept: run the same command again") from exc
        raise Interrupted(f"interrupted: {kept} frame(s) of {src.name} are kept in {parts}; run the same command again "
                          "to go on from there") from exc
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if not segments:
        raise InputError(f"{src} gave no frames to upscale")
    written = sum(s["frames"] for s in segments)
    cut = written / float(info.rate) if video.frames is not None and written >= video.frames else None
    if decoding.errors and (note := _damage_note(src, dest, decoding, written, info.frames_estimate, gap_noted)):
        report.notes.append(note)  # (ffmpeg leaves out what it cannot decode: a cut file ends early with status 0)
    if other := size_changes(info, decoding):
        first = f"{info.width}x{info.height}"
        report.notes.append(f"{src} changes its frame size part-way (to {listing(other, 3)} from {first}): those "
                            f"frames were scaled to {first} first, changing their shape in {dest.name}; cut the video "
                            "where its size changes and upscale each part")  # (58B-4)
    if video.frames is not None and written < video.frames:  # the clip is shorter: all of it, its sound too
        report.notes.append(f"{src} has {written} frame(s), fewer than --frames {video.frames}: all of them upscaled")
    try:
        with atomic_path(dest) as tmp:
            try:
                notes = mux([parts / s["file"] for s in segments], src, info, dest, tmp, cut)
            except OutputError:  # (a first segment it cannot read stops the join: said as the segment's)
                _drop_damaged(dest, parts, segments, print_of)
                raise
            if (got := video_packets(tmp)) != written:
                _drop_damaged(dest, parts, segments, print_of)
                raise OutputError(f"ffmpeg joined {got or 0} of the {written} frames the segments in {parts} hold, "
                                  "which are whole: nothing was written, and the frames stay kept there (a rerun "
                                  "joins them the same way: try --container mkv)")
            report.notes += notes
    except KeyboardInterrupt as exc:
        raise Interrupted(f"interrupted while {dest.name} was made: its {written} frame(s) are kept in {parts}; run the "
                          "same command again to make it") from exc
    shutil.rmtree(parts, ignore_errors=True)
    report.written.append(dest)
    for other in _unfinished_of(src, dest.parent):  # a stopped run of it under another name (--container, --suffix)
        report.notes.append(f"{other} holds the frames of an unfinished upscale of {src.name} (another --container, "
                            f"--suffix or --outscale): remove it if that run will not be finished (rm -r "
                            f"{shell_word(str(other))})")


def _drop_damaged(dest: Path, parts: Path, segments: list[dict], print_of: dict) -> None:
    """Where a kept segment no longer holds the frames it records (emptied or damaged on the disk since), raise naming
    it, with it and the segments after it dropped from the record, so that the same command upscales their frames
    again. ffmpeg's join stops at such a segment and exits 0: the file had come out short, said written, and the
    frames kept were removed with the parts (a first segment it cannot read failed every rerun)."""
    bad = next((n for n, seg in enumerate(segments) if video_packets(parts / seg["file"]) != seg["frames"]), None)
    if bad is None:
        return
    for seg in segments[bad:]:
        (parts / seg["file"]).unlink(missing_ok=True)
    atomic_write_json(parts / _RECORD, {**print_of, "segments": segments[:bad]})
    start = sum(seg["frames"] for seg in segments[:bad])
    raise OutputError(f"{parts / segments[bad]['file']} (frames {start} to {start + segments[bad]['frames'] - 1}) is "
                      f"damaged, so {dest.name} was not written; it and the segments after it are dropped: run the same "
                      f"command again to upscale from frame {start} on")


def _damage_note(src: Path, dest: Path, decoding: Decoding, written: int, promised: int | None,
                 gap: bool) -> str | None:
    """What ffmpeg's decoding errors mean for ``dest``, in the case they are: a file cut short ends early; frames the
    decoder could not make are missing (at the end) or stand repeated (inside: the rate filter fills the gap with the
    frame before); otherwise it made every frame, concealing what it could not decode. None for a recording that
    starts mid-stream (``gap``, said in its own note) and lost nothing after: its errors are those of the frames
    before its first key frame."""
    said, truncated = damage_words(src, decoding.errors)
    of = f" of the {promised} its length promises" if promised else ""
    if truncated:
        return (f"{said}: the file is cut short (truncated), and {dest.name} ends where its data does ({written} "
                f"frame(s) written{of}); re-copy the source for the whole video")
    if promised and written < promised:
        return (f"{said}, and what it could not decode is missing from {dest.name} ({written} frame(s) written{of}); "
                "re-copy the source for the whole video")
    if decoding.repeated:
        return (f"{said}, and what it could not decode is missing: {decoding.repeated} frame(s) of {dest.name} repeat "
                "the frame before them in its place; re-copy the source for the whole video")
    if gap:
        return None
    return (f"{said}: any frame it decoded with errors was upscaled as decoded (damaged blocks concealed by the "
            f"decoder); check {dest.name}, or re-copy the source")


def _output_of(video_file: Path, source: Path, factor: float) -> bool:
    """Whether ``video_file`` looks like ``source``'s output at ``factor`` (whole, or a --frames quick look): made since
    ``source`` last changed, its size scaled, and no longer (an input that bears that name and is not such a video is
    the user's: a longer video of that size, another upscaler's, too)."""
    try:
        info = probe(source)
    except LwayError:
        return False
    size = scaled_size((info.width, info.height), factor)  # (a frame at least, however short a quick look)
    return _finished(source, video_file, size, 1, _length_bounds(source, info, None)[1])


def _length_bounds(src: Path, info: VideoInfo, frames: int | None) -> tuple[int | None, int | None]:
    """The least and the most frames an output of ``src`` (with ``--frames`` ``frames``) may hold, as its packets, its
    duration and ``frames`` say: a truncated source decodes fewer frames than its packets, and its duration may be its
    sound's, longer than its picture; a variable-rate one is read at its nominal rate with gaps filled, more frames
    than packets, so without a duration (a Matroska file written to a pipe, whose average rate is its nominal one) it
    has no most."""
    known = [n for n in (video_packets(src), info.frames_estimate) if n]
    least = min(known + ([frames] if frames else []), default=None)
    most = max(known) if info.frames_estimate else None
    if frames is not None:
        most = frames if most is None else min(most, frames)
    return least, most


#: how much longer than the source's packets or duration say an output of it may be (a variable-rate clip is read at
#: its nominal rate, gaps filled), and how much shorter a finished one (a truncated source's last frames do not decode)
_LONGER, _SHORTER = 1.1, 0.9


def _finished(src: Path, dest: Path, size: tuple[int, int], least: int | None, most: int | None) -> bool:
    """Whether ``dest`` can be ``src``'s finished output of ``size`` and about ``least`` to ``most`` frames (90 % of
    the one to 110 % of the other, and one: a --frames quick look is shorter, a longer video not this one's), made
    since ``src`` last changed (outputs are written whole, renamed into place once joined). Which settings made it
    cannot be told (a video records no run)."""
    try:
        if dest.stat().st_mtime < src.stat().st_mtime:
            return False
        info = probe(dest)
    except (OSError, LwayError):
        return False
    if (info.width, info.height) != tuple(size):
        return False
    got = video_packets(dest) or 0
    return (least is None or got >= _SHORTER * least) and (most is None or got <= _LONGER * most + 1)


def _unfinished_of(src: Path, folder: Path) -> list[Path]:
    """The parts folders in ``folder`` whose record names ``src``: unfinished runs of it."""
    found = []
    for parts in sorted(folder.glob(".*.lwayrt-parts")):
        with contextlib.suppress(OSError, ValueError, TypeError):
            if json.loads((parts / _RECORD).read_text()).get("source") == str(src.resolve()):
                found.append(parts)
    return found


def _resume(parts: Path, print_of: dict, src: Path, dest: Path,
            discard: bool = False) -> tuple[list[dict], bool, Decoding]:
    """The segments an earlier, unfinished run of the same source and settings left in ``parts`` (whole ones only:
    a segment file the record does not list, one being written when a run was killed, is removed), whether they
    hold every frame (the run stopped while it made the file), and then the decoding errors it met (a rerun reads no
    frame to meet them again); a folder of another source or settings is refused, naming what differs, or with
    ``discard`` (--overwrite) removed."""
    record_path = parts / _RECORD
    if not parts.exists():
        parts.mkdir(parents=True)
        return [], False, Decoding()
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:  # made, and killed before its first segment was finished
        record = {**print_of, "segments": []}
    except (OSError, ValueError) as exc:
        raise InputError(f"{record_path} cannot be read ({exc}): remove {parts} to start {dest.name} again") from None
    compared = {k: v for k, v in print_of.items() if k not in _SAID_ONLY}
    if discard and any(record.get(k) != v for k, v in compared.items()):  # --overwrite: that run is replaced too
        shutil.rmtree(parts)
        parts.mkdir(parents=True)
        return [], False, Decoding()
    differs = list(dict.fromkeys(_SETTING[k] + (f" ({_shown(record.get(k))} there, {_shown(v)} now)" if k in _SHOWN
                                                else _model_words(record, print_of) if k == "run_key" else "")
                                 for k, v in compared.items() if record.get(k) != v))
    if differs:
        raise InputError(f"{parts} holds an unfinished upscale of {record.get('source', '?')} made with another "
                         f"{', '.join(differs)}: run that command again to finish it, or pass --overwrite to start "
                         f"{dest.name} again (its frames are then lost)")
    segments = [s for s in record.get("segments", []) if (parts / s["file"]).is_file()]
    if len(segments) != len(record.get("segments", [])):
        raise InputError(f"{parts} misses segment files it records: remove it (rm -r {shell_word(str(parts))}) to "
                         f"start {dest.name} again")
    listed = {s["file"] for s in segments} | {_RECORD}  # (segments.txt, a mux's list, is made anew: removed too)
    for stray in parts.iterdir():  # a segment being written (or its temporary file) when a run was killed
        if stray.name not in listed:
            stray.unlink(missing_ok=True)
    complete = bool(record.get("complete")) and bool(segments)
    kept = Decoding([str(line) for line in record.get("damage", [])], int(record.get("repeated", 0)),
                    [str(size) for size in record.get("sizes", [])])
    return segments, complete, kept if complete else Decoding()


def _upscale_frame(frame: np.ndarray, info: VideoInfo, desc, cap, config: UpscaleConfig) -> np.ndarray:
    up = upscale_image(desc, LoadedImage(to_float(frame), bit_depth=info.depth), config, cap)
    return _quantise(up.rgb, info.depth)



ADAPT_FRAMES = 32  # frames of a video 'lwayrt adapt' takes without --sample


def sample_frames(src: Path, n: int | None, deinterlace: bool = False, info: VideoInfo | None = None,
                  decoding: Decoding | None = None) -> list:
    """``n`` (``ADAPT_FRAMES`` where None) frames spread evenly over the video ``src``, first and last included, read
    as ``upscale-video`` reads them (so adaptation sees the pictures the adapted model will be given), as
    ``InputImage``s named ``<stem>_f<frame number>``: what ``lwayrt adapt VIDEO`` adapts on. ``info``: ``probe``'s,
    where the caller has it; ``decoding``: where given, what ffmpeg met reading them (``read_frames``')."""
    from lway_rt.adapt._imageio import InputImage
    from lway_rt.io.video import count_frames

    info = info or probe(src)
    decoding = decoding if decoding is not None else Decoding()  # (read to the end: a second read fills it anew)
    total = info.frames_estimate
    for _ in range(2):  # the container's duration first; where it promised frames the stream lacks, their count
        total = total or count_frames(src, info)
        want = min(n or ADAPT_FRAMES, total)
        pick = [total // 2] if want == 1 else sorted({round(i * (total - 1) / (want - 1)) for i in range(want)})
        read = list(read_frames(src, info, pick=pick, deinterlace=deinterlace, decoding=decoding))  # (to its end)
        frames = [InputImage(f"{src.stem}_f{i:06d}", LoadedImage(to_float(f), bit_depth=info.depth))
                  for i, f in zip(pick, read)]
        if len(frames) == len(pick):
            return frames
        total = None
    if not frames:
        raise InputError(f"{src} gave no frames to adapt on")
    return frames
