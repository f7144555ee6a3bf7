"""Video in and out through ffmpeg: what ``lwayrt upscale-video`` reads and writes.

Frames come out of an ffmpeg process as raw RGB (8 bits, or 16 for a source of more than 8 bits), at the stream's
nominal frame rate (a variable-rate phone clip becomes constant-rate: frames are repeated or dropped as ffmpeg's ``fps``
filter does), turned upright by the rotation the file records. The upscaled frames go into another ffmpeg process,
H.264 (libx264) in MP4 segments, which are joined and muxed with the source's audio, subtitles, chapters and
metadata at the end. The YUV <-> RGB conversions name their matrix on both sides, the source's where it records one,
else the one a player assumes for a video of its size (BT.709 from 720 lines, else BT.601), and the output records it,
so colours come back as the source showed them rather than shifted by a player's guess for the larger picture.

The design follows Real-ESRGAN's video script (frames piped through ffmpeg, audio copied from the source); the
segments, which let a stopped run go on, are this project's. ffmpeg comes from the ``imageio-ffmpeg`` package (the
``video`` extra, a static build with libx264) or the ``PATH``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from lway_rt.errors import InputError, MissingDependencyError, OutputError, shell_word

__all__ = ["VideoInfo", "ffmpeg_exe", "probe", "read_frames", "SegmentWriter", "mux", "OUT_SUFFIXES", "PRESETS",
           "CONTAINERS", "to_float"]

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")  # x264's
CONTAINERS = ("same", "mp4", "mkv", "mov")  # --container: the source's, or one of these
OUT_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v")  # containers an output keeps; any other source is written as .mkv
_PLAYER_HD_LINES = 720  # a player takes an untagged video of this many lines or more for BT.709, a smaller one BT.601
_MATRIX = {"bt709": "bt709", "bt470bg": "bt601", "smpte170m": "bt601", "bt2020nc": "bt2020", "bt2020c": "bt2020",
           "fcc": "fcc", "smpte240m": "smpte240m"}  # a stream's colorspace -> the scale filter's colour matrix
_TAG = {"bt709": "bt709", "bt601": "smpte170m", "bt2020": "bt2020nc", "fcc": "fcc", "smpte240m": "smpte240m"}


def ffmpeg_exe() -> str:
    """The ffmpeg program: imageio-ffmpeg's (which honours ``IMAGEIO_FFMPEG_EXE``), else one on the ``PATH``."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found:
            _check_version(found)
            return found
    raise MissingDependencyError("imageio-ffmpeg", "video", "reading and writing video (ffmpeg)",
                                 "put an ffmpeg program on the PATH")


FFMPEG_LEAST = (5, 1)  # -fps_mode, which the frames are read with


@functools.lru_cache(maxsize=None)
def _check_version(exe: str) -> None:
    """Refuse an ffmpeg older than ``FFMPEG_LEAST`` (a distribution's 4.4 on the PATH): it refuses an option the frames
    are read with, which had been said as the video's damage ("re-encode or re-copy the video"). A build that names
    no release (a git snapshot) is taken."""
    done = _run([exe, "-hide_banner", "-version"], "checking ffmpeg")
    found = re.search(rb"ffmpeg version n?(\d+)\.(\d+)", done.stdout)
    if found and (int(found[1]), int(found[2])) < FFMPEG_LEAST:
        least = ".".join(map(str, FFMPEG_LEAST))
        raise MissingDependencyError("imageio-ffmpeg", "video", "reading and writing video (ffmpeg)",
                                     f"put ffmpeg {least} or newer on the PATH ({exe} is {int(found[1])}."
                                     f"{int(found[2])})")


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` reads of the video stream it takes (``stream``). ``width`` x ``height``: its frames as decoded, upright.
    ``rate``: frames per second the frames are read at. ``matrix``: the scale filter's name of the YUV matrix the
    frames are converted with (``tagged``: the file records it). ``depth``: 8, or 16 for a source of more bits."""

    width: int
    height: int
    rate: Fraction
    duration: float | None
    matrix: str
    tagged: bool
    primaries: str | None
    transfer: str | None
    depth: int
    sar: tuple[int, int]
    codec: str
    audio: int
    subtitles: int
    interlaced: bool = False  # the stream records its frames as two fields ("top first", "bottom first")
    video_delay: float = 0.0  # seconds from the file's start (its earliest stream's) to its first video frame
    average: Fraction | None = None  # the stream's average rate (ffmpeg's "fps"), where it says one
    stream: int = 0  # which of the file's video streams (``0:v:N``): the default one, else the first, never a cover
    tags: tuple[tuple[str, str], ...] = ()  # that stream's language and title, carried to the output's video
    video_streams: int = 1  # the file's video streams, cover pictures included (one is upscaled)
    video_duration: float | None = None  # the video stream's own length, where the file records it (Matroska)
    attachments: int = 0  # Matroska attachments: the fonts its styled (ASS) subtitles name
    alpha: bool = False  # the video's pixels carry transparency (ProRes 4444, PNG or QuickTime RLE in MOV, VP9 ...)
    pcm_audio: tuple[int, ...] = ()  # which audio streams (``a:N``) are uncompressed PCM (an AVI's, a camera's MOV)
    timecode: str | None = None  # the start timecode a camera or editor recorded ("01:00:00:00"), not carried
    turned: bool = False  # recorded turned a quarter (a phone's portrait clip): the decoder's frames are height x width

    @property
    def raw_format(self) -> str:
        """The pixel format frames travel in between ffmpeg and the model: 8 or 16 bits a sample."""
        return "rgb48le" if self.depth == 16 else "rgb24"

    @property
    def frames_estimate(self) -> int | None:
        """The frames read at ``rate``, by the video's own length where known, else the file's (which may be its
        audio's)."""
        seconds = self.video_duration if self.video_duration is not None else \
            None if self.duration is None else self.duration - self.video_delay
        return None if seconds is None else max(1, round(seconds * float(self.rate)))


def _run(args: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, process_group=0)
    except OSError as exc:
        raise MissingDependencyError("imageio-ffmpeg", "video", what,
                                     f"put a working ffmpeg on the PATH ({args[0]}: {exc.strerror})") from None


#: what ffmpeg says of a file that ends before its data does: MP4 / MOV, Matroska / WebM, and packets cut short
_TRUNCATED = ("partial file", "File ended prematurely", "Truncating packet")


def damage_summary(lines: list[str]) -> tuple[int, str, bool]:
    """ffmpeg's decoding errors (``Decoding.errors``) in brief: how many (its "Last message repeated K times"
    counted as K), the first without its ``[h264 @ 0x...]`` prefixes, and whether they say the file is cut short."""
    repeats = [re.match(r"Last message repeated (\d+) times?", line) for line in lines]
    said = [line for line, again in zip(lines, repeats) if not again]
    first = re.sub(r"^(\[[^]]*\] ?)+", "", said[0]).rstrip(".") if said else "no message"
    count = len(said) + sum(int(again.group(1)) for again in repeats if again)
    return count, first, any(words in line for line in said for words in _TRUNCATED)


@dataclass
class Decoding:
    """What ``read_frames`` met decoding a video to its end: ffmpeg's errors (a truncated file: "partial file",
    "Invalid NAL unit size"), one line each, and how many frames its rate filter repeated where the stream had none
    (a stretch it could not decode, or the gaps of a variable-rate clip), and the frame sizes ("64x32") the stream
    changed to part-way (each such frame is scaled to the first size)."""

    errors: list[str] = field(default_factory=list)
    repeated: int = 0
    sizes: list[str] = field(default_factory=list)


def size_changes(info: VideoInfo, decoding: Decoding) -> list[str]:
    """The frame sizes, as shown ("32x48"), other than the first that ``decoding`` met part-way through the video
    ``info`` describes (the decoder's are unturned where the video is turned: 58D-7, 58D-10)."""
    def shown(size: str) -> str:
        w, h = size.split("x")
        return f"{h}x{w}" if info.turned else size

    return [shown(size) for size in decoding.sizes if shown(size) != f"{info.width}x{info.height}"]


def _decoding(lines: list[str]) -> tuple[list[str], int, list[str]]:
    """ffmpeg's stderr at ``level+verbose``: its error lines (the level tag dropped, each "Last message repeated"
    line after one kept), the frames its ``fps`` filter duplicated (its closing count) and the frame sizes its
    filters were set up again for (a stream that changes size part-way: 58B-4)."""
    errors, keep, repeated = [], False, 0
    sizes = list(dict.fromkeys(m.group(1) for line in lines if (m := re.search(
        r"Reconfiguring filter graph because video parameters changed to .*?, (\d+x\d+)", line))))
    for line in lines:
        level = re.search(r"(?:^|(?<=\] ))\[(error|fatal|warning|info|verbose|debug|trace|quiet|panic)\] ", line)
        if level is None:
            if keep and line.startswith("Last message repeated"):
                errors.append(line)
            continue
        keep = level.group(1) in ("error", "fatal", "panic")
        if keep:
            errors.append(line[:level.start()] + line[level.end():])
        elif stats := re.search(r"\d+ frames in, \d+ frames out; \d+ frames dropped, (\d+) frames duplicated", line):
            repeated = int(stats.group(1))  # (the last graph's: an earlier one is ffmpeg's probe of the chain)
    return errors, repeated, sizes


def damage_words(src: Path, lines: list[str]) -> tuple[str, bool]:
    """"ffmpeg reported N error(s) decoding SRC (first: ...)" and whether the file is cut short, from ``lines``."""
    count, first, truncated = damage_summary(lines)
    return f"ffmpeg reported {count} error(s) decoding {src} (first: {first})", truncated


def _last_line(stderr: bytes) -> str:
    lines = [s.strip() for s in stderr.decode("utf-8", "replace").splitlines() if s.strip()]
    return lines[-1] if lines else "no message"


def _rate(text: str) -> Fraction | None:
    """ffmpeg's printed rate ("25", "29.97", "59.94", "1k") as an exact fraction: the NTSC rates it rounds are
    N * 1000/1001, for any whole N (14.99 is 15000/1001, as 29.97 is 30000/1001: it had been read as 1499/100, and
    a 10-minute clip as three frames more than it holds)."""
    try:
        value = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
    except ValueError:
        return None
    if value <= 0:
        return None
    base = round(value * 1.001)
    ntsc = Fraction(base * 1000, 1001)
    if base and value != base and abs(value - float(ntsc)) < 0.006:
        return ntsc
    return Fraction(text if "." in text or text.isdigit() else str(value)).limit_denominator(1001)


def _frame_rate(average: Fraction | None, nominal: Fraction | None, densest=None) -> Fraction | None:
    """The rate frames are read at: the stream's nominal rate (ffmpeg's ``tbr``), as a phone's variable-rate clip
    (29.83 fps, 30 tbr) is meant at 30 and a file whose last frame lasts long (25.69 fps, 29.97 tbr) at 29.97; but
    the average (``fps``) where the nominal rate is a multiple of it: a raw H.264 stream or field-coded broadcast,
    "25 fps, 50 tbr", holds 25 pictures a second, and read at 50 each went through the model twice. ``densest()``
    (the rate of the clip's closely spaced frames, from its packets' times) overrides the nominal rate where frames
    come closer than it allows, or where it is no rate the frames use (1.5 times theirs or more, or none): ffmpeg
    guesses it from the first packets or the timestamps' units, and a clip joined from 24 and 30 fps pieces says
    "26.78 fps, 120 tbr" in an .mp4 (each picture read four or five times), "27 fps, 27 tbr" in an .mkv or "27 fps,
    24 tbr" once longer than ffmpeg's first look (pictures dropped): read at 30 (reviews 53C C1, 53D D1-D3, 53E)."""
    if average is not None and nominal is not None:
        k = round(float(nominal) / float(average))
        if k >= 2 and abs(float(nominal) - k * float(average)) <= 0.01 * float(nominal):
            return average
    known = nominal if nominal is not None else average
    rate = densest() if densest is not None else None
    if rate is None or (average is not None and float(rate) < 0.99 * float(average)):
        return known
    if known is None or float(rate) > 1.03 * float(known) or nominal is None or float(nominal) >= 1.5 * float(rate):
        return rate
    return known


#: frame rates footage is made at: a rate measured from timestamps near one (within 3%) is taken as it
_COMMON_RATES = (Fraction(12), Fraction(25, 2), Fraction(15000, 1001), Fraction(15), Fraction(24000, 1001), Fraction(24),
                 Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(48), Fraction(50), Fraction(60000, 1001),
                 Fraction(60), Fraction(100), Fraction(120000, 1001), Fraction(120))


def _densest_rate(src: Path, stream: int) -> Fraction | None:
    """The rate of video stream ``stream``'s closely spaced frames, from its packets' timestamps (copied, not decoded):
    of the gaps between frames that follow one another (not across a missing frame: under 1.5 times the 5th
    percentile gap), the mean of those about as short as their lower quartile (a phone's jitter, 29.97 fps in whole
    milliseconds: gaps of 33 and 34 ms), as the common rate it is near. None where ffmpeg gives too few timestamps (a
    raw H.264 stream has none)."""
    done = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", _url(src), "-map", f"0:v:{stream}",
                 "-c", "copy", "-f", "framecrc", "-"], "reading video")
    text = done.stdout.decode("ascii", "replace")
    tb = re.search(r"^#tb 0: (\d+)/(\d+)", text, re.M)
    pts = sorted({int(f[2]) for line in text.splitlines() if not line.startswith("#")
                  and len(f := [v.strip() for v in line.split(",")]) >= 4 and re.fullmatch(r"-?\d+", f[2])
                  and int(f[2]) > -2 ** 62})  # (ffmpeg's "no timestamp" is the lowest 64-bit number)
    gaps = sorted(b - a for a, b in zip(pts, pts[1:]))
    if done.returncode or tb is None or len(gaps) < 4:
        return None
    steps = [g for g in gaps if g < 1.5 * gaps[len(gaps) // 20]]
    low = steps[len(steps) // 4]
    near = [g for g in steps if g <= max(1.05 * low, low + 1)]  # (a tick more: 60 fps in ms, gaps of 16 and 17)
    rate = Fraction(len(near) * int(tb.group(2)), sum(near) * int(tb.group(1)))
    common = min(_COMMON_RATES, key=lambda r: abs(float(rate) / float(r) - 1))
    return common if abs(float(rate) / float(common) - 1) <= 0.03 else rate.limit_denominator(1001)


def _h264_timing_rate(src: Path, stream: int) -> Fraction | None:
    """A raw H.264 stream's frame rate as its sequence parameter set records it: time_scale / (2 num_units_in_tick),
    as the standard defines it for a stream of frames (read with ffmpeg's ``trace_headers``, no decoding). ffmpeg's
    reader of such a stream (a dashcam's, a CCTV recorder's, an encoder's ``-f h264``) says "25 fps" whatever it was
    made at and gives the tick rate, twice the frame rate, as its tbr: one made at 24 fps ("25 fps, 48 tbr") was read
    at 48, each picture twice, and one at 12.5 ("25 fps, 25 tbr") at 25 (review 53D D7). None where the stream
    records no timing (ffmpeg's 25 is then all there is); a rate outside one frame an hour to 1000 a second is refused
    with the command that rewrites it (ffmpeg's decoder times the frames by it whatever rate they are read at). The
    first of its parameter sets within 60 packets is read (a recording cut mid-stream may not start with one)."""
    text = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", _url(src), "-map", f"0:v:{stream}", "-c", "copy",
                 "-bsf:v", "trace_headers", "-frames:v", "60", "-f", "null", "-"], "reading video"
                ).stderr.decode("ascii", "replace")

    def field(name: str) -> int | None:
        m = re.search(rf"\s{name}\s.*=\s*(\d+)\s*$", text, re.M)
        return int(m.group(1)) if m else None

    ticks, scale = field("num_units_in_tick"), field("time_scale")
    if field("timing_info_present_flag") != 1 or not ticks or not scale:
        return None
    rate = Fraction(scale, 2 * ticks)
    if not Fraction(1, 3600) <= rate <= 1000:  # (ffmpeg times its frames by it all the same: 25 read none of them)
        fixed = src.with_name(f"{src.stem}_25fps.h264")  # (its parameter set's rate rewritten: tick_rate 2 x; named
        # .h264 whatever the source's ending, .avc or a misnamed .mp4, which ffmpeg could not write by: 56G2)
        raise InputError(f"{src}: its stream records {float(rate):g} frames a second, a rate no camera makes: give it "
                         f"its real rate first, e.g. 25: ffmpeg -i {shell_word(str(src))} -c copy -bsf:v "
                         f"h264_metadata=tick_rate=50 -f h264 {shell_word(str(fixed))}, and upscale that")
    return rate  # (a time-lapse's or a CCTV recorder's 0.5 fps too: 56E1)


def probe(src: Path) -> VideoInfo:
    """Read ``src``'s streams as ``ffmpeg -i`` describes them; a file that is no video (an image, audio only, not a
    format ffmpeg reads) is a one-line ``InputError``. A file that fails later in its decoding fails in
    ``read_frames``, naming the frame."""
    exe = ffmpeg_exe()
    if not src.is_file():
        raise InputError(f"{src} does not exist" if not src.exists() else f"{src} is not a file")
    if src.stat().st_size == 0:  # (ffmpeg: "Invalid data found when processing input")
        raise InputError(f"{src} is empty (0 bytes): re-copy or re-export the video")
    text = _run([exe, "-hide_banner", "-nostdin", "-i", _url(src)], "reading video").stderr.decode("utf-8", "replace")
    videos = re.findall(r"Stream #0:\d+[^:]*: Video: (.*)", text)
    moving = [k for k, v in enumerate(videos) if "(attached pic)" not in v]  # not a cover picture
    if not moving:
        if "Stream #" not in text and re.search(r"^Input #0, ", text, re.M) and "Invalid data found" not in text:
            raise InputError(f"{src} holds no streams at all (a header without frames: the recording or export wrote "
                             "none): nothing to upscale")  # (ffmpeg's words were its usage complaint: 58B-3)
        if "Invalid data found" in text or "Stream #" not in text:
            with open(src, "rb") as f:  # an MP4 / MOV (its 'ftyp' box first) whose index, written last, is missing
                cut = "moov atom not found" in text and f.read(8)[4:] == b"ftyp"
            raise InputError(f"{src} is cut short (its MP4 index is missing): re-copy it, or let the recording finish"
                             if cut else f"{src} is not a video ffmpeg can read ({_last_line(text.encode())})")
        raise InputError(f"{src} holds no video stream (only audio, data or a cover picture): nothing to upscale")
    moving.sort(key=lambda k: "(default)" not in videos[k])  # the default one first, as a player picks it
    line = videos[moving[0]]
    codec = line.split(" ", 1)[0].rstrip(",")
    demuxer = re.search(r"Input #0, (.+?), from ", text)
    if demuxer and (demuxer.group(1).endswith("_pipe") or demuxer.group(1) == "image2"):
        raise InputError(f"{src} is an image, not a video: 'lwayrt upscale' upscales images")
    fmt = re.search(r", (\w+)(?:\(([^)]*)\))?, \d+x\d+", line)
    pix_fmt, props = (fmt.group(1), fmt.group(2) or "") if fmt else ("", "")
    size = re.search(r", (\d+)x(\d+)", line)
    if size is None:
        raise InputError(f"{src}: ffmpeg gives no frame size for its video stream; re-encode it")
    rates = {unit: _rate(m.group(1)) if (m := re.search(rf"([\d.]+k?) {unit}", line)) else None
             for unit in ("fps", "tbr")}
    raw_h264 = demuxer is not None and demuxer.group(1) == "h264" and codec == "h264"
    if raw_h264 and (recorded := _h264_timing_rate(src, moving[0])) is not None:
        rate = rates["fps"] = recorded  # (its "25 fps" is ffmpeg's reader's default, not the stream's)
    else:
        rate = _frame_rate(rates["fps"], rates["tbr"], lambda: _densest_rate(src, moving[0]))
    if rate is None:
        raise InputError(f"{src}: ffmpeg gives no frame rate for its video stream; re-encode it with one (-r 25)")
    dur = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None
    # the container's pixel shape (Matroska's display size: ", SAR a:b DAR c:d" after the codec's brackets, or alone)
    # is the one players show, over the codec's (58B-2: an anamorphic MKV came out stretched)
    sar = re.search(r"(?<!\[)SAR (\d+):(\d+)", line) or re.search(r"\[SAR (\d+):(\d+)", line)
    sar = (int(sar.group(1)), int(sar.group(2))) if sar and int(sar.group(1)) and int(sar.group(2)) else (1, 1)
    sar = (sar[0] // math.gcd(*sar), sar[1] // math.gcd(*sar))  # (a GIF's 64:64 is square)
    colour = [p.strip() for p in props.split(",") if "/" in p or p.strip() in _MATRIX]
    space, primaries, transfer = ((colour[0].split("/") + [None, None])[:3] if colour else (None, None, None))
    if colour and "/" not in colour[0]:
        primaries = transfer = space  # ffmpeg prints one name where the three agree
    matrix = _MATRIX.get(space or "")
    width, height = int(size.group(1)), int(size.group(2))
    turned = bool(re.search(r"rotation of -?(90|270)\.0+ degrees", text))
    if turned:
        width, height = height, width
        sar = (sar[1], sar[0])  # a pixel's shape turns with the picture
    tagged = matrix is not None
    if matrix is None:
        matrix = "bt709" if min(width, height) >= _PLAYER_HD_LINES else "bt601"
    bits = re.search(r"(?:p|le|be)(\d\d)(?:le|be)?$", pix_fmt) or re.search(r"(\d\d)(?:le|be)$", pix_fmt)
    depth = 16 if bits and int(bits.group(1)) > 8 else 8
    return VideoInfo(width, height, rate, duration, matrix, tagged, _known(primaries), _known(transfer), depth, sar,
                     codec, len(re.findall(r"Stream #0:\d+[^:]*: Audio:", text)),
                     len(re.findall(r"Stream #0:\d+[^:]*: Subtitle:", text)),
                     interlaced=bool(re.search(r"\b(top|bottom)( coded)? first\b", props)),
                     video_delay=_delay(text, line), average=rates["fps"], video_duration=_stream_duration(text, line),
                     stream=moving[0], tags=_video_tags(text, line), video_streams=len(videos),
                     attachments=len(re.findall(r"Stream #0:\d+[^:]*: Attachment:", text)),
                     pcm_audio=tuple(k for k, codec in enumerate(re.findall(r"Stream #0:\d+[^:]*: Audio: (\w+)", text))
                                     if codec.startswith("pcm_")),
                     turned=turned, timecode=(tc.group(1) if (tc := re.search(r"^\s+timecode\s*: (\d\d:\d\d:\d\d[:;.]\d\d)\s*$", text,
                                                              re.M)) else None),
                     alpha=(bool(re.match(r"(yuva|rgba|bgra|argb|abgr|gbrap|ya\d)", pix_fmt))  # (VP9 in WebM: a tag)
                            or bool(re.search(r"^\s+alpha_mode\s*: 1\s*$", _stream_block(text, line), re.M)))
                     and (codec != "gif" or _gif_shows_clear_pixels(src)))  # (ffmpeg reads every GIF as bgra: 58B-1)


def _gif_shows_clear_pixels(src: Path) -> bool:
    """``_gif_decoded_clear``, once for a file as it is now: upscale-video probes its source several times (58H-5)."""
    st = src.stat()
    return _gif_decoded_clear(str(src), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _gif_decoded_clear(src: str, mtime_ns: int, size: int) -> bool:
    """Whether a frame of the GIF ``src``, as ffmpeg decodes it, has a pixel that is not opaque: ffmpeg decodes every
    GIF with an alpha channel, opaque ones too (58B-1). Read from ffmpeg's own frames, not Pillow's, which load the
    frames after an opaque first one without alpha (58D-6); the decoding stops at the first clear pixel."""
    proc = subprocess.Popen([ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", _url(Path(src)), "-map",
                             "0:v:0", "-vf", "format=rgba,alphaextract", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            process_group=0)
    try:
        while chunk := proc.stdout.read(1 << 20):
            if np.frombuffer(chunk, np.uint8).min() < 255:
                return True
        return proc.wait() != 0  # (a GIF ffmpeg cannot decode to the end: what its pixel format says stands)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.wait()


def _stream_block(text: str, line: str) -> str:
    """The indented metadata lines ffmpeg prints under the stream ``line`` (its tags)."""
    block = re.search(re.escape(line) + r".*\n((?:    .*\n)*)", text)
    return block.group(1) if block else ""


def _video_tags(text: str, line: str) -> tuple[tuple[str, str], ...]:
    """The video stream's language (``Stream #0:1(jpn): Video``) and title, as ffmpeg prints them."""
    tags = []
    header = re.search(r"Stream #0:\d+(?:\[\w+\])?\((\w+)\): Video: " + re.escape(line), text)
    if header and header.group(1) != "und":
        tags.append(("language", header.group(1)))
    title = re.search(r"^\s+title\s*: (.+)$", _stream_block(text, line), re.M)
    if title:
        tags.append(("title", title.group(1).strip()))
    return tuple(tags)


def _stream_tags(info: VideoInfo) -> list[str]:
    """The output video's language and title. Set one by one: a per-stream ``-map_metadata`` would stop ffmpeg
    copying every other stream's own tags (the audio's and subtitles' languages, by which players pick them)."""
    return [arg for key, value in info.tags for arg in ("-metadata:s:v:0", f"{key}={value}")]


def _stream_duration(text: str, line: str) -> float | None:
    """The video stream's DURATION tag (Matroska records one a stream), in seconds."""
    tag = re.search(r"^\s+DURATION\s*: (\d+):(\d\d):(\d\d(?:\.\d+)?)", _stream_block(text, line), re.M)
    return int(tag.group(1)) * 3600 + int(tag.group(2)) * 60 + float(tag.group(3)) if tag else None


def _delay(text: str, line: str) -> float:
    """How long after the file's start its video begins: ffmpeg prints a stream's own start where it differs from
    the file's (a camcorder's MPEG-TS, a clip cut from a longer one)."""
    file_start = re.search(r", start: (-?[\d.]+)", text)
    own = re.search(r", start (-?[\d.]+)", line)
    if not (file_start and own):
        return 0.0
    return max(0.0, float(own.group(1)) - float(file_start.group(1)))


def leading_gap(src: Path, info: VideoInfo) -> float:
    """Seconds from the video stream's start to its first frame that decodes: 0, but for a recording that starts
    mid-stream (a capture or a cut file beginning before its first key frame), whose leading packets cannot be decoded
    and are dropped. The mux places the video by its stream's start, so without this its frames would come that
    much ahead of their sound. Times as the file records them (``-copyts``), both from one run of ffmpeg."""
    text = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-copyts", "-i", _url(src), "-map", f"0:v:{info.stream}",
                 "-vf", "showinfo", "-frames:v", "1", "-f", "null", "-"], "reading video").stderr.decode("utf-8", "replace")
    first = re.search(r"pts_time:(-?[\d.]+)", text)
    videos = re.findall(r"Stream #0:\d+[^:]*: Video: (.*)", text)
    own = re.search(r", start (-?[\d.]+)", videos[info.stream]) if len(videos) > info.stream else None
    start = own or re.search(r", start: (-?[\d.]+)", text)
    if not (first and start):
        return 0.0
    return max(0.0, float(first.group(1)) - float(start.group(1)))


def _url(path: Path) -> str:
    """``path`` as ffmpeg must be given it: as a file, whatever its name holds (``take2:final.mp4`` was read as the
    protocol ``take2``)."""
    return f"file:{os.fspath(path)}"


def _unconvertible(lines: list[str]) -> str | None:
    """The colours ffmpeg's last lines say it cannot convert to RGB (its scaler's "Unsupported input", or a filter
    link with no colour space in common: a YCgCo or a constant-luminance BT.2020 source), in its words; else None."""
    text = "\n".join(lines)
    if m := re.search(r"Unsupported input .*?fmt:\S+ (csp:\S+ prim:\S+ trc:\S+)", text):
        return m.group(1)
    if "Impossible to convert between the formats" in text:
        m = re.search(r"Color spaces:\s*src: (\S+)", text)
        return f"colour space {m.group(1)}" if m else "colour space"
    return None


def _known(name: str | None) -> str | None:
    return None if name in (None, "", "unknown", "reserved") else name


def _decode_args(exe: str, src: Path, info: VideoInfo, start: int, count: int | None, deinterlace: bool,
                 pick: list[int] | None = None, levels: bool = False) -> list[str]:
    """ffmpeg's command for ``read_frames``; ``levels``: every stderr line tagged with its level, verbose ones
    included, for the fps filter's closing count (``_decoding``), else errors only."""
    pix = info.raw_format
    chain = ("bwdif=mode=send_frame:deint=all," if deinterlace else "") + f"fps={info.rate}"
    chain += f",select=gte(n\\,{start})" if start else ""
    chain += ",select=" + "+".join(f"eq(n\\,{i})" for i in pick) if pick else ""
    # the frames' transfer is not the reader's (it carries the samples as they are, and the output takes the tags from
    # the probe): ffmpeg 9's scaler refuses some (log100, log316), and a clip so tagged failed at its first frame
    chain += (f",setparams=color_trc=unknown,scale=in_color_matrix={info.matrix}:flags=bicubic+accurate_rnd"
              f"+full_chroma_int,format={pix}")
    log = ["-loglevel", "level+verbose", "-nostats"] if levels else ["-v", "error"]
    args = [exe, "-hide_banner", "-nostdin", *log, "-i", _url(src), "-map", f"0:v:{info.stream}", "-an", "-sn", "-dn",
            "-vf", chain, "-fps_mode", "passthrough"]
    if count is not None:
        args += ["-frames:v", str(count)]
    return args + ["-f", "rawvideo", "-pix_fmt", pix, "pipe:1"]


def read_frames(src: Path, info: VideoInfo, start: int = 0, count: int | None = None, deinterlace: bool = False,
                pick: list[int] | None = None, decoding: Decoding | None = None) -> Iterator[np.ndarray]:
    """``src``'s frames from number ``start`` on (``count`` of them at most), or only those numbered in ``pick``
    (in order; fewer where the video is shorter): HxWx3 uint8, or uint16 for a source of more than 8 bits;
    ``deinterlace``: each frame's two fields made into one picture first (bwdif, a frame a frame). A decoder that stops with an error part-way is an ``InputError`` naming the frame, never
    an early end taken for the video's. ffmpeg runs in a process group of its own: a Ctrl-C meant for this command
    does not end it (which would read as the end of the video). ``decoding``: where given, filled with what ffmpeg met
    once it has decoded to the end (``Decoding``): it leaves out what it cannot decode, so a damaged file ends early
    or skips frames without failing."""
    exe = ffmpeg_exe()
    dtype = np.uint16 if info.depth == 16 else np.uint8
    frame_bytes = info.width * info.height * 3 * np.dtype(dtype).itemsize
    args = _decode_args(exe, src, info, start, count, deinterlace, pick, levels=decoding is not None)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, process_group=0,
                                bufsize=0)
        n = start
        try:
            while True:
                buf = _read_exactly(proc.stdout, frame_bytes)
                if len(buf) < frame_bytes:
                    rc = proc.wait()
                    err.seek(0)
                    lines = [line for line in (s.strip() for s in err.read().decode("utf-8", "replace").splitlines())
                             if line]
                    repeated, sizes = 0, []
                    if decoding is not None:
                        lines, repeated, sizes = _decoding(lines)
                    if rc or buf:
                        # (not ffmpeg's word on its own output, "Nothing was written into output file")
                        said = [line for line in lines if not line.startswith("[out#")] or lines
                        _, first, truncated = damage_summary(said)
                        if truncated:
                            raise InputError(f"{src} is cut short (truncated): ffmpeg stopped decoding at frame {n} "
                                             f"({first}); re-copy the source")
                        refused = _unconvertible(said)
                        if refused:  # (a YCgCo or constant-luminance BT.2020 matrix: no fault of the file's)
                            raise InputError(f"{src}: this ffmpeg cannot convert its colours ({refused}) to RGB: "
                                             "convert the video to BT.709 or BT.2020 (non-constant luminance) with a "
                                             "tool that can, then upscale that")
                        raise InputError(f"{src}: ffmpeg stopped decoding at frame {n} "
                                         f"({_last_line(chr(10).join(said).encode())}); re-encode or re-copy the video")
                    if decoding is not None:
                        decoding.errors, decoding.repeated, decoding.sizes = lines, repeated, sizes
                    return
                yield np.frombuffer(buf, dtype).reshape(info.height, info.width, 3)
                n += 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def _count(src: Path, stream: int, how: list[str]) -> tuple[int | None, subprocess.CompletedProcess]:
    """The frames ffmpeg counts of video stream ``stream`` sent ``how`` into its null output (None: it says none)."""
    done = _run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", _url(src), "-map", f"0:v:{stream}", *how,
                 "-f", "null", "-"], "reading video")
    counts = re.findall(rb"frame=\s*(\d+)", done.stderr)
    return (int(counts[-1]) if counts and not done.returncode else None), done


def count_packets(src: Path, info: VideoInfo) -> int | None:
    """The video stream's packets (its frames, for the codecs footage comes in), read without decoding: seconds for
    hours of video. The progress bar's total; None where ffmpeg says none."""
    return _count(src, info.stream, ["-c", "copy"])[0] or None


def video_packets(path: Path) -> int | None:
    """The packets of the first video stream of ``path`` (a segment, or an output this tool made: one per frame),
    read without decoding; None where ffmpeg cannot read the file."""
    return _count(path, 0, ["-c", "copy"])[0]


def count_frames(src: Path, info: VideoInfo) -> int:
    """How many frames ``read_frames`` gives of ``src``, by decoding it (no conversion): for a file that records no
    duration."""
    count, done = _count(src, info.stream, ["-vf", f"fps={info.rate}"])
    if count is None:
        raise InputError(f"{src}: ffmpeg could not decode it ({_last_line(done.stderr)}); re-encode or re-copy it")
    return count


def to_float(frame: np.ndarray) -> np.ndarray:
    """A frame's 8- or 16-bit samples as float32 in [0, 1], as the model takes them."""
    return frame.astype(np.float32) / float(np.iinfo(frame.dtype).max)


def _disk_full(message: str) -> bool:
    """Whether ffmpeg's last line says the output's disk or quota is full (its errno, printed as text)."""
    return any(words in message for words in ("No space left", "Disk quota", "File too large"))


def _read_exactly(stream, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        chunk = stream.read(size - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def colour_args(info: VideoInfo) -> list[str]:
    """The output's matrix and range tags: the matrix the source records, else the one its frames were read with.
    Its primaries and transfer go on the frames (``_frame_tags``)."""
    return ["-colorspace", _TAG[info.matrix], "-color_range", "tv"]


def _frame_tags(info: VideoInfo) -> str:
    """The source's primaries and transfer, where it records them (whether or not its matrix is tagged: an RGB
    source's, or one tagged without it), as a ``setparams`` filter put last in the encoder's chain, or "". They go on
    the frames: the scale filter marks them unspecified, and a frame's own tags win over the encoder's
    ``-color_primaries`` / ``-color_trc``, so HDR came out tagged as SDR."""
    tags = [f"{key}={value}" for key, value in (("color_primaries", info.primaries), ("color_trc", info.transfer))
            if value]
    return f",setparams={':'.join(tags)}" if tags else ""


class SegmentWriter:
    """One MP4 segment of H.264 made from frames given one at a time (``write``), finished by ``close`` (which
    raises if ffmpeg failed) or dropped by ``abort``. ``dest`` is written whole or not at all."""

    def __init__(self, dest: Path, info: VideoInfo, size: tuple[int, int], crf: int, preset: str) -> None:
        self.dest, self.frames = dest, 0
        self.tmp = dest.with_name(f".{dest.name}.p{os.getpid()}.tmp")
        pix_in = info.raw_format
        pix_out = "yuv420p10le" if info.depth == 16 else "yuv420p"
        chain = (f"scale=out_color_matrix={info.matrix}:out_range=tv:flags=bicubic+accurate_rnd+full_chroma_int,"
                 f"format={pix_out}" + (f",setsar={info.sar[0]}/{info.sar[1]}" if info.sar != (1, 1) else "")
                 + _frame_tags(info))
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", pix_in,
                "-s", f"{size[0]}x{size[1]}", "-framerate", str(info.rate), "-i", "pipe:0", "-vf", chain,
                "-c:v", "libx264", "-crf", str(crf), "-preset", preset, *colour_args(info), "-f", "mp4",
                _url(self.tmp)]
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.err,
                                     process_group=0)

    def write(self, frame: np.ndarray) -> None:
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except BrokenPipeError:
            self.abort()
            raise OutputError(f"cannot write {self.dest}: ffmpeg's encoder stopped ({self._message()})") from None
        self.frames += 1

    def _message(self) -> str:
        self.err.seek(0)
        return _last_line(self.err.read())

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = self.proc.wait()
        try:
            if rc:
                message = self._message()
                self.tmp.unlink(missing_ok=True)
                raise OutputError(f"cannot write {self.dest}: ffmpeg's encoder failed ({message}); make room or "
                                  "choose another -o folder" if _disk_full(message) else
                                  f"cannot write {self.dest}: ffmpeg's encoder failed ({message})")
            from lway_rt.io.weights import sync_file, sync_folder

            sync_file(self.tmp)  # on the disk before parts.json lists it (a power cut after the record is written must
            os.replace(self.tmp, self.dest)  # not leave it listed and empty, nor lose the name it was given)
            sync_folder(self.dest.parent)
        finally:
            self.err.close()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.tmp.unlink(missing_ok=True)
        self.err.close()


_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def mux(segments: list[Path], src: Path, info: VideoInfo, dest: Path, into: Path, duration: float | None) -> list[str]:
    """Join ``segments`` into ``into`` (a temporary file that becomes ``dest``) with ``src``'s audio,
    subtitles, chapters and metadata, copied as they are; where ``dest``'s container cannot hold them so, the
    subtitles are converted to mov_text (.mp4, .mov) or left out, then the audio is re-encoded to AAC with them, then
    left out, each said in the notes returned.
    ``duration``: the seconds of video written, where fewer than the source's (the rest of the audio is cut)."""
    exe = ffmpeg_exe()
    listing = segments[0].with_name("segments.txt")  # in the parts folder, which goes with the run's end
    # the segments by their own names, beside the list (a path of the user's, with a new line in it, broke the list)
    listing.write_text("".join(f"file '{_concat_quote(p.name)}'\n" for p in segments), encoding="utf-8")
    # the video placed where it began in the source, after its audio's start: what the mux keeps in sync
    delay = ["-itsoffset", f"{info.video_delay:.6f}"] if info.video_delay >= 0.0005 else []
    base = [exe, "-hide_banner", "-nostdin", "-v", "error", "-y", *delay, "-f", "concat", "-safe", "0", "-i", _url(listing),
            "-i", _url(src), "-map", "0:v:0", "-map_metadata", "1", "-map_chapters", "1", "-c:v", "copy",
            "-bsf:v", _even_timestamps(info), *_stream_tags(info), "-disposition:v:0", "default"]
    tail = (["-t", f"{info.video_delay + duration:.6f}"] if duration is not None else []) + \
        (["-movflags", "+faststart"] if dest.suffix.lower() != ".mkv" else []) + \
        ["-f", _MUXERS[dest.suffix.lower()], _url(into)]
    movie = dest.suffix.lower() != ".mkv"
    # PCM in an .mp4: ffmpeg 9 writes it (ISO 23003-5 'ipcm'), which few players, browsers and editors play (53C C3)
    pcm = info.pcm_audio if dest.suffix.lower() in (".mp4", ".m4v") else ()
    audio_ways = ([("copy", None)] if not pcm else [("pcm", f"{src}'s uncompressed (PCM) audio is encoded to AAC: few "
                                                           f"players play PCM in a {dest.suffix} file (--container mkv "
                                                           "or mov keeps it)")]) + [(
        "aac", f"{src}'s audio is re-encoded to AAC: a {dest.suffix} file cannot hold it as it is (--container mkv "
               "keeps it)")] if info.audio else [(None, None)]
    subtitle_ways = [("copy", None)] + ([("mov_text", f"{src}'s subtitles are converted to mov_text, the text "
                                                      f"subtitles a {dest.suffix} file holds")] if movie else []) \
        if info.subtitles else [(None, None)]
    tries = []
    for audio, said_audio in audio_ways:
        for subs, said_subs in subtitle_ways + ([(None, f"{src}'s subtitles are not carried: a {dest.suffix} file "
                                                       "cannot hold them (--container mkv keeps them)")]
                                                if info.subtitles else []):
            extra = (["-map", "1:a?", "-c:a", "copy" if audio == "pcm" else audio] + (["-b:a", "192k"] if audio == "aac" else [])
                     + [a for k in pcm for a in (f"-c:a:{k}", "aac", f"-b:a:{k}", "192k")] * (audio == "pcm")
                     if audio else []) + \
                (["-map", "1:s?", "-c:s", subs] if subs else []) + \
                (["-map", "1:t?", "-c:t", "copy"] if info.attachments and not movie else [])
            tries.append((extra, "; ".join(n for n in (said_audio, said_subs) if n) or None))
    if info.audio:
        tries.append(([], f"{src}'s audio is not carried: ffmpeg could not write it into {dest.name}"))
    notes = [f"{src}'s {info.attachments} attachment(s) (the fonts of styled subtitles) are not carried: a "
             f"{dest.suffix} file cannot hold them (--container mkv keeps them)"] if info.attachments and movie else []
    if info.timecode:  # (53C C2: dropped unsaid; an edit relinks the upscaled file by it)
        notes.append(f"{src}'s start timecode {info.timecode} is not carried: give it back with ffmpeg -i {shell_word(str(dest))} "
                     f"-map 0 -c copy -timecode {shell_word(info.timecode)} {shell_word(str(dest.with_stem(dest.stem + '_tc')))}")
    try:
        for extra, note in tries:
            done = _run(base + extra + tail, "writing video")
            if done.returncode == 0:
                if note:
                    notes.append(note)
                return notes
            last = _last_line(done.stderr)
            if _disk_full(last):
                raise OutputError(f"cannot write {dest}: {last}; make room, or choose another output folder")
        raise OutputError(f"cannot write {dest}: ffmpeg could not join the upscaled video ({last})")
    finally:
        listing.unlink(missing_ok=True)


def _even_timestamps(info: VideoInfo) -> str:
    """The bitstream filter that gives the joined video one decoding time a frame: where a segment reorders its frames
    less than the one before it (a segment of one or two frames has no B-frames, x264's others delay two), the
    segments' decoding times overlapped at the joint, and ffmpeg's repairs left uneven frame durations (12 frames
    at 29.97 fps read as 25.69 fps on average). The presentation times, right already, stay; decoding times run
    three frames behind frame by frame (x264 reorders by two at most), from where the video begins.

    The clock is the one an encoder gives such a rate, 1/30000 s at 30000/1001 (1001 ticks a frame), and 1000 ticks
    a frame at a whole rate (1/25000 s at 25 fps): fine enough to place the video's start. A clock of 1000 ticks a
    frame at 29.97 fps (1/29970029.97 s, a 30 MHz MP4 time scale) needed 64-bit MP4 header fields past 143 s (71 s
    at 59.94 fps), which some players do not read."""
    per = info.rate.denominator * -(-1000 // info.rate.denominator)  # ticks a frame: a multiple of the denominator
    tick = 1 / (info.rate * per)  # 1 / (numerator * whole number): a whole-number time scale
    start = round(info.video_delay * float(info.rate) * per)
    return (f"setts=prescale=1:time_base={tick.numerator}/{tick.denominator}:pts=PTS:dts=(N-3)*{per}+{start}:"
            f"duration={per}")


def _concat_quote(path: str | Path) -> str:
    """A path inside single quotes in ffmpeg's concat list: a quote is closed, escaped and reopened."""
    return str(path).replace("'", "'\\''")

