"""``lwayrt upscale-video`` end to end: real clips made by ffmpeg (imageio-ffmpeg's, the ``video`` extra), the real
realesr-animevideov3 model, real ffmpeg processes. The frames written are checked against the model run on the
source's own frames (order, count, rate, colour), and a stopped run against one that was never stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lway_rt import errors
from lway_rt.cli import main
from lway_rt.errors import InputError, Interrupted
from lway_rt.io.video import ffmpeg_exe, probe, read_frames, video_packets
from lway_rt.upscale import UpscaleConfig, prepare_model, upscale_rgb
from lway_rt.video import VideoConfig, parts_folder, upscale_videos

MODEL = "realesr-animevideov3"


def make_clip(path: Path, size="64x48", rate="30000/1001", seconds=0.4, audio=True, extra=()) -> Path:
    """A clip of a photo panning down 3 px a frame (each frame differs from the next), with a tone where ``audio``."""
    from skimage import data

    w, h = (int(v) for v in size.split("x"))
    photo = data.astronaut()
    n = max(1, round(seconds * float(Fraction(rate))))
    if h + 3 * n > photo.shape[0] or w > photo.shape[1]:  # (an HD probe: the photo stretched)
        photo = np.kron(photo, np.ones((4, 4, 1), np.uint8))
    frames = b"".join(np.ascontiguousarray(photo[40 + 3 * i:40 + 3 * i + h, 100:100 + w]).tobytes() for i in range(n))
    args = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", size,
            "-framerate", rate, "-i", "pipe:0"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={n / float(Fraction(rate))}", "-c:a",
                 "aac" if path.suffix != ".avi" else "pcm_s16le"]
    subprocess.run([*args, "-c:v", "libx264", "-pix_fmt", "yuv420p", *extra, str(path)], input=frames, check=True)
    return path


def _stream_line(path: Path) -> str:
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    return next(line for line in text.splitlines() if "Video:" in line)


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def y_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of the luma: H.264's 4:2:0 halves the chroma's resolution, which no setting of ours changes."""
    luma = np.array([0.299, 0.587, 0.114])
    mse = np.mean((a.astype(np.float64) @ luma - b.astype(np.float64) @ luma) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


@pytest.fixture(scope="module")
def model():
    return prepare_model(UpscaleConfig(model=MODEL))


def model_frames(model, src: Path) -> list[np.ndarray]:
    """What the model makes of each of ``src``'s frames, as 8-bit samples."""
    out = []
    for f in read_frames(src, probe(src)):
        out.append(np.round(upscale_rgb(model, f.astype(np.float32) / 255) * 255).astype(np.uint8))
    return out


def check_frames(dest: Path, expected: list[np.ndarray], least_db: float = 40.0) -> None:
    """``dest`` holds ``expected``'s frames, in order: each within ``least_db`` (luma PSNR) of its own and far nearer
    to it than to its neighbours."""
    got = list(read_frames(dest, probe(dest)))
    assert len(got) == len(expected)
    for i, frame in enumerate(got):
        own = y_psnr(frame, expected[i])
        assert own >= least_db, (i, own)
        for j in (i - 1, i + 1):
            if 0 <= j < len(expected):
                assert y_psnr(frame, expected[j]) < own - 10, (i, j)


def test_a_clip_is_upscaled_frame_by_frame_with_its_rate_and_audio(tmp_path, model):
    src = make_clip(tmp_path / "clip.mp4")
    result = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "--crf", "8")
    dest = tmp_path / "out" / "clip_x4.mp4"
    assert result.exit_code == 0 and f"wrote {dest}" in result.output and "note:" not in result.output, result.output
    info = probe(dest)
    assert (info.width, info.height, info.rate, info.audio) == (256, 192, Fraction(30000, 1001), 1)
    # an encoder's clock for 29.97 fps (1/30000 s): one of 1000 ticks a frame (30 MHz) needs 64-bit MP4 headers past 143 s
    assert " 30k tbn" in _stream_line(dest), _stream_line(dest)
    check_frames(dest, model_frames(model, src))
    assert not parts_folder(dest).exists() and [p.name for p in dest.parent.iterdir()] == ["clip_x4.mp4"]


def test_other_containers_keep_their_audio_in_mkv_and_ten_bits_stay_ten(tmp_path, model):
    avi = make_clip(tmp_path / "old.avi", rate="25")  # PCM audio, which an .mp4 holds only re-encoded
    deep = make_clip(tmp_path / "deep.mkv", rate="25", audio=False, extra=["-pix_fmt", "yuv420p10le"])
    assert probe(deep).depth == 16 and probe(avi).depth == 8
    result = run("upscale-video", avi, deep, "-o", tmp_path / "out", "-m", MODEL, "--crf", "8")
    assert result.exit_code == 0, result.output
    out_avi, out_deep = tmp_path / "out" / "old_x4.mkv", tmp_path / "out" / "deep_x4.mkv"
    assert probe(out_avi).audio == 1 and probe(out_avi).rate == 25
    assert probe(out_deep).depth == 16 and probe(out_deep).audio == 0
    check_frames(out_avi, model_frames(model, avi))
    # WMA audio and SRT subtitles, which an .mp4 holds only converted: converted, and said
    srt = tmp_path / "words.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,300\nhello\n")
    mixed = tmp_path / "mixed.mkv"
    plain = make_clip(tmp_path / "plain.mp4")
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(plain), "-i", str(srt), "-map", "0", "-map", "1",
                    "-c:v", "copy", "-c:a", "wmav2", "-c:s", "srt", str(mixed)], check=True)
    again = run("upscale-video", mixed, "-o", tmp_path / "mp4", "-m", MODEL, "--container", "mp4", "--frames", "3")
    assert again.exit_code == 0 and "audio is re-encoded to AAC" in again.output and \
        "subtitles are converted to mov_text" in again.output, again.output
    info = probe(tmp_path / "mp4" / "mixed_x4.mp4")
    assert (info.audio, info.subtitles) == (1, 1)
    kept = run("upscale-video", mixed, "-o", tmp_path / "mkv", "-m", MODEL, "--frames", "3")  # .mkv holds them
    assert kept.exit_code == 0 and "note:" not in kept.output, kept.output
    assert probe(tmp_path / "mkv" / "mixed_x4.mkv").subtitles == 1
    # PCM audio into an .mp4: ffmpeg 9 copies it as 'ipcm', which few players play; encoded to AAC, and said (53C C3)
    pcm = run("upscale-video", avi, "-o", tmp_path / "pcm", "-m", MODEL, "--container", "mp4", "--frames", "3")
    assert pcm.exit_code == 0 and "uncompressed (PCM) audio is encoded to AAC" in pcm.output, pcm.output
    # only the PCM track: an AAC one beside it is copied, not encoded again (review 53D D8)
    two = tmp_path / "two.mov"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(plain), "-i", str(avi), "-map", "0:v", "-map", "0:a",
                    "-map", "1:a", "-c:v", "copy", "-c:a:0", "copy", "-c:a:1", "pcm_s16le", "-shortest", str(two)], check=True)
    both = run("upscale-video", two, "-o", tmp_path / "pcm", "-m", MODEL, "--container", "mp4", "--frames", "3")
    assert both.exit_code == 0 and "uncompressed (PCM) audio is encoded to AAC" in both.output, both.output

    def first_packets(path, k):
        return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", f"0:a:{k}", "-c", "copy", "-frames:a",
                               "3", "-f", "framecrc", "-"], capture_output=True, text=True).stdout.splitlines()[-3:]

    out = tmp_path / "pcm" / "two_x4.mp4"
    assert [line.split(",")[-1] for line in first_packets(out, 0)] == [line.split(",")[-1] for line in first_packets(two, 0)]
    assert "Audio: aac" in subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True,
                                           text=True).stderr.split("Stream #0:2")[-1]
    assert re.search(r"Audio: aac", subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / "pcm" / "old_x4.mp4")],
                                                   capture_output=True, text=True).stderr)


def test_a_start_timecode_not_carried_is_said_with_the_command_that_gives_it_back(tmp_path):
    """A camera's or an editor's start timecode (an .mp4's tmcd track), by which an edit relinks the upscaled file,
    was dropped unsaid (review 53C C2). The note's command puts it back."""
    import shlex

    src = make_clip(tmp_path / "tc.mp4", rate="25", seconds=0.2, audio=False, extra=["-timecode", "01:00:00:00"])
    assert probe(src).timecode == "01:00:00:00" and probe(make_clip(tmp_path / "no.mp4", audio=False)).timecode is None
    res = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL)
    assert res.exit_code == 0, res.output
    note = next(line for line in res.output.splitlines() if line.startswith("note:") and "start timecode" in line)
    assert note.startswith(f"note: {src}'s start timecode 01:00:00:00 is not carried: give it back with ffmpeg "), note
    cmd = shlex.split(note.split("give it back with ", 1)[1])
    subprocess.run([ffmpeg_exe(), "-v", "error", *cmd[1:]], check=True)
    assert probe(Path(cmd[-1])).timecode == "01:00:00:00"
    # a drop-frame timecode (29.97 fps footage) is quoted: its ';' had ended the command in a shell (review 53D D5)
    drop = make_clip(tmp_path / "drop.mp4", seconds=0.2, audio=False, extra=["-timecode", "01:00:00;00"])
    res = run("upscale-video", drop, "-o", tmp_path / "out", "-m", MODEL)
    assert res.exit_code == 0 and "-timecode '01:00:00;00' " in res.output, res.output


def test_names_ffmpeg_could_misread_are_files(tmp_path, monkeypatch):
    """A colon in a bare name (``take2:final.mp4``) read as a protocol; a quote in a folder's name must survive the
    mux's list of segments."""
    folder = tmp_path / "Bob's clips"
    folder.mkdir()
    make_clip(folder / "take2:final.mp4", seconds=0.12)
    monkeypatch.chdir(folder)
    result = run("upscale-video", "take2:final.mp4", "-o", "up:1")
    assert result.exit_code == 0, result.output
    assert probe(Path("up:1") / "take2:final_x4.mp4").audio == 1


def test_fonts_attached_for_styled_subtitles_are_kept_and_transparency_is_said(tmp_path):
    """A Matroska file's attachments (the fonts its ASS subtitles name: anime releases carry both) were dropped with no
    word, so the subtitles showed in a fallback font; an alpha channel was dropped unsaid. An .mkv keeps the fonts,
    an .mp4 says it cannot; transparency is said. A source name with a new line in it is joined as any other."""
    ass = tmp_path / "styled.ass"
    ass.write_text("[Script Info]\nScriptType: v4.00+\n\n[V4+ Styles]\nFormat: Name, Fontname, Fontsize\n"
                   "Style: Default,Mine,20\n\n[Events]\nFormat: Layer, Start, End, Style, Text\n"
                   "Dialogue: 0,0:00:00.00,0:00:00.30,Default,hello\n")
    (tmp_path / "mine.ttf").write_bytes(b"\x00\x01\x00\x00" + bytes(60))
    src = tmp_path / "anime\nep1.mkv"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(make_clip(tmp_path / "plain.mp4")), "-i",
                    str(ass), "-attach", str(tmp_path / "mine.ttf"), "-metadata:s:t", "mimetype=font/ttf", "-map", "0",
                    "-map", "1", "-c", "copy", str(src)], check=True)
    assert probe(src).attachments == 1
    kept = run("upscale-video", src, "-o", tmp_path / "mkv", "-m", MODEL, "--frames", "3")
    assert kept.exit_code == 0 and "attachment" not in kept.output, kept.output
    out = probe(tmp_path / "mkv" / "anime\nep1_x4.mkv")
    assert (out.attachments, out.subtitles, out.audio) == (1, 1, 1)
    movie = run("upscale-video", src, "-o", tmp_path / "mp4", "-m", MODEL, "--frames", "3", "--container", "mp4")
    assert movie.exit_code == 0 and "1 attachment(s) (the fonts of styled subtitles) are not carried: a .mp4 file " \
        "cannot hold them (--container mkv keeps them)" in " ".join(movie.output.split()), movie.output
    clear = tmp_path / "clear.mov"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:d=0.3",
                    "-vf", "format=rgba", "-c:v", "png", str(clear)], check=True)
    assert probe(clear).alpha and not probe(src).alpha
    vp9 = tmp_path / "clear.webm"  # VP9 keeps its alpha in a side stream: yuv420p with the tag alpha_mode 1
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:d=0.3",
                    "-vf", "format=yuva420p", "-c:v", "libvpx-vp9", str(vp9)], check=True)
    assert probe(vp9).alpha
    # ffmpeg reads every GIF with an alpha channel: an opaque one (Pillow's; ffmpeg's own, which marks unchanged pixels
    # clear) was said to carry transparency (58B-1); one with clear pixels still is
    from PIL import Image

    frames = [Image.new("RGBA", (48, 32), (40 * i, 100, 200, 255)) for i in range(3)]
    frames[0].convert("RGB").save(tmp_path / "opaque.gif", save_all=True, append_images=[f.convert("RGB") for f in
                                                                                          frames[1:]], duration=100)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=48x32:rate=10:d=0.5",
                    str(tmp_path / "ffmpeg.gif")], check=True)
    for frame in frames:
        frame.paste((0, 0, 0, 0), (0, 0, 8, 8))  # (a corner clear)
    frames[0].save(tmp_path / "clear.gif", save_all=True, append_images=frames[1:], duration=100, disposal=2)
    for k, frame in enumerate(frames):  # the first frame opaque, the later ones clear in a corner: Pillow loads those
        # without alpha, so the note was lost (58D-6)
        frame.paste((0, 0, 0, 255 * (k == 0)), (0, 0, 8, 8))
        frame.save(tmp_path / f"later{k}.png")
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-framerate", "5", "-i", str(tmp_path / "later%d.png"),
                    "-vf", "split[a][b];[a]palettegen=reserve_transparent=1[p];[b][p]paletteuse=alpha_threshold=128",
                    "-gifflags", "-offsetting-transdiff", str(tmp_path / "later.gif")], check=True)
    assert [probe(tmp_path / f"{n}.gif").alpha for n in ("opaque", "ffmpeg", "clear", "later")] == \
        [False, False, True, True]
    from lway_rt.io.video import _gif_decoded_clear  # decoded once for a file as it is (58H-5: each probe did)

    hits = _gif_decoded_clear.cache_info().hits
    assert probe(tmp_path / "later.gif").alpha and _gif_decoded_clear.cache_info().hits == hits + 1
    said = run("upscale-video", clear, "-o", tmp_path / "clear", "-m", MODEL)
    assert said.exit_code == 0 and "carries transparency (an alpha channel), which clear_x4.mov cannot hold" in \
        " ".join(said.output.split()), said.output


def test_a_rotated_phone_clip_comes_out_upright(tmp_path):
    plain = make_clip(tmp_path / "plain.mp4", audio=False)
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-display_rotation", "90", "-i", str(plain), "-c", "copy",
                    str(turned)], check=True)
    assert (probe(turned).width, probe(turned).height) == (48, 64)
    assert run("upscale-video", turned, "-o", tmp_path / "out", "-m", MODEL, "--frames", "2").exit_code == 0
    out = probe(tmp_path / "out" / "turned_x4.mp4")
    assert (out.width, out.height) == (192, 256)


def test_colours_come_back_as_the_source_showed_them(tmp_path, model):
    """A flat colour, encoded with BT.709 and so recorded, or with BT.601 and no record (as a player takes a small
    video), is read back as that colour and keeps it through the upscale: a mismatched matrix moves this blue by
    10-20 levels."""
    blue = np.array([0x33, 0x66, 0xCC], np.uint8)
    for name, matrix, tags in (("tagged.mp4", "bt709", ["-colorspace", "bt709", "-color_primaries", "bt709",
                                                        "-color_trc", "bt709"]), ("plain.mp4", "bt601", [])):
        src = tmp_path / name
        subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x48",
                        "-framerate", "25", "-i", "pipe:0", "-vf", f"scale=out_color_matrix={matrix}:out_range=tv,"
                        "setparams=color_primaries=bt709:color_trc=bt709" if tags  # (ffmpeg 9 takes the frames' tags
                        else "null",  # over -color_*) (ffmpeg's own conversion: BT.601, recorded nowhere)
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", *tags, str(src)],
                       input=np.tile(blue, (3, 48, 64, 1)).tobytes(), check=True)
        assert probe(src).matrix == matrix and probe(src).tagged == bool(tags)
        assert (probe(src).primaries, probe(src).transfer) == (("bt709", "bt709") if tags else (None, None))
        first = next(read_frames(src, probe(src)))
        before = first[8:-8, 8:-8].reshape(-1, 3).mean(0)
        assert np.abs(before - blue).max() < 2, (name, before)
        made = upscale_rgb(model, first.astype(np.float32) / 255)[32:-32, 32:-32].reshape(-1, 3).mean(0) * 255
        assert run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL).exit_code == 0
        dest = tmp_path / "out" / name.replace(".mp4", "_x4.mp4")
        after = next(read_frames(dest, probe(dest)))[32:-32, 32:-32].reshape(-1, 3).mean(0)
        assert np.abs(after - made).max() < 1.5, (name, made, after)  # (the model lifts this blue by 1-2 levels)
        if tags:  # its primaries and transfer recorded too (the matrix alone was: review 52G G1)
            assert (probe(dest).primaries, probe(dest).transfer) == ("bt709", "bt709"), probe(dest)


def test_an_hdr_clip_keeps_its_colour_tags(tmp_path):
    """HDR10 and HLG clips came out tagged BT.2020 matrix with unknown primaries and transfer (the scale filter marks
    the frames unspecified, and they win over the encoder's options): a player showed them as SDR (review 52G G1)."""
    for name, trc in (("pq.mp4", "smpte2084"), ("hlg.mp4", "arib-std-b67")):
        src = tmp_path / name
        subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:d=0.2",
                        "-vf", f"setparams=color_primaries=bt2020:color_trc={trc}:colorspace=bt2020nc", "-c:v",
                        "libx264", "-pix_fmt", "yuv420p10le", str(src)], check=True)
        assert (probe(src).primaries, probe(src).transfer) == ("bt2020", trc)
        assert run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "--frames", "2").exit_code == 0
        out = probe(tmp_path / "out" / name.replace(".mp4", "_x4.mp4"))
        assert (out.matrix, out.primaries, out.transfer, out.depth) == ("bt2020", "bt2020", trc, 16), out
    src = tmp_path / "bare.mp4"  # primaries and transfer without a matrix tag: they were dropped (review 52M M1)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:d=0.2",
                    "-vf", "setparams=color_primaries=bt2020:color_trc=smpte2084", "-c:v", "libx264", "-pix_fmt",
                    "yuv420p10le", str(src)], check=True)
    assert (probe(src).tagged, probe(src).primaries, probe(src).transfer) == (False, "bt2020", "smpte2084")
    assert run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "--frames", "2").exit_code == 0
    out = probe(tmp_path / "out" / "bare_x4.mp4")
    assert (out.primaries, out.transfer) == ("bt2020", "smpte2084"), out
    # a tagged source's unfinished parts record its tags: those of a release that did not tag its segments are not
    # joined with tagged ones into a file of mixed tags (52M M2); an untagged source's record is as it was
    from lway_rt.upscale import UpscaleConfig
    from lway_rt.video import VideoConfig, _fingerprint

    prints = [_fingerprint(s, probe(s), (256, 192), "k", VideoConfig(), UpscaleConfig(model=MODEL))
              for s in (src, make_clip(tmp_path / "plain.mp4", audio=False))]
    assert prints[0]["tags"] == ["bt2020", "smpte2084"] and "tags" not in prints[1]
    src = tmp_path / "ycgco.mp4"  # a matrix this ffmpeg cannot convert: said so, not "re-encode or re-copy" (52M M4)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:d=0.2",
                    "-vf", "setparams=colorspace=ycgco", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src)], check=True)
    said = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL)
    assert said.exit_code == 1 and "this ffmpeg cannot convert its colours (colour space ycgco) to RGB" in " ".join(
        said.output.split()) and "re-copy" not in said.output, said.output
    src = tmp_path / "log.mp4"  # a transfer ffmpeg 9's scaler refuses to convert: it failed at frame 0 (52N N3)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:d=0.2",
                    "-vf", "setparams=color_primaries=bt709:color_trc=log100:colorspace=bt709", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(src)], check=True)
    said = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "--frames", "2")
    assert said.exit_code == 0, said.output
    assert probe(tmp_path / "out" / "log_x4.mp4").transfer == "log100"


def test_an_hd_clip_without_colour_tags_is_read_as_bt709(tmp_path):
    src = make_clip(tmp_path / "hd.mp4", size="1280x720", rate="25", seconds=0.04, audio=False)
    info = probe(src)
    assert (info.matrix, info.tagged, info.frames_estimate) == ("bt709", False, 1)
    assert probe(make_clip(tmp_path / "sd.mp4", size="720x480", rate="25", seconds=0.04, audio=False)).matrix == "bt601"


def test_frames_takes_the_first_ones_and_their_audio(tmp_path, model):
    src = make_clip(tmp_path / "clip.mp4", seconds=1.0)
    result = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "--frames", "5", "--crf", "8")
    assert result.exit_code == 0, result.output
    dest = tmp_path / "out" / "clip_x4.mp4"
    check_frames(dest, model_frames(model, src)[:5])
    assert probe(dest).duration == pytest.approx(5 * 1001 / 30000, abs=0.03)


@pytest.fixture
def small_segments(monkeypatch):
    import lway_rt.video as video

    monkeypatch.setattr(video, "SEGMENT_FRAMES", 3)
    yield
    errors.STOPS.clear()


def test_a_stop_finishes_its_frame_and_the_same_command_goes_on_from_there(tmp_path, model, small_segments):
    """The stop the CLI's handler records (``STOPS``) after the fifth frame: the frame in hand is finished and its
    segment closed, so the run keeps five frames; run again, it decodes from the sixth and the output holds every
    frame once, in order."""
    src = make_clip(tmp_path / "clip.mp4", seconds=0.4)
    out = tmp_path / "out"
    config, video = UpscaleConfig(model=MODEL), VideoConfig(crf=8)
    count = []

    def stop_after_five() -> None:
        count.append(1)
        if len(count) == 5:
            errors.STOPS.append(signal.SIGTERM)

    with pytest.raises(Interrupted, match=r"interrupted: 5 frame\(s\) of clip.mp4 are kept in .*run the same command"):
        upscale_videos([src], out, config, video, progress=stop_after_five)
    parts = parts_folder(out / "clip_x4.mp4")
    assert sorted(p.name for p in parts.iterdir()) == ["parts.json", "segment_00000.mp4", "segment_00001.mp4"]
    assert not (out / "clip_x4.mp4").exists()
    errors.STOPS.clear()
    (parts / "segment_00002.mp4").write_bytes(b"cut short by a kill")  # a segment a killed run was writing
    (parts / "segments.txt").write_text("file 'gone.mp4'\n")  # the list of a mux a kill cut short
    report = upscale_videos([src], out, config, video)  # segments of 3, 3 and 1 frames: joined evenly
    assert probe(out / "clip_x4.mp4").rate == Fraction(30000, 1001)
    assert "29.97 fps" in _stream_line(out / "clip_x4.mp4")  # the average too: no gaps
    assert report.frames == 7 and "clip_x4.mp4: went on from frame 5, where an earlier run had stopped" in report.notes
    check_frames(out / "clip_x4.mp4", model_frames(model, src))
    assert not parts.exists()


def test_a_damaged_kept_segment_is_found_and_upscaled_again_not_joined_short(tmp_path, model, small_segments):
    """A kept segment emptied or damaged on the disk since (a power cut before it was on the disk, a bad sector): the
    join stopped at it with status 0, so the output came out with the frames before it only, said written, and the
    frames kept were removed with the parts (a first segment emptied failed every rerun). Now nothing is written, the
    damaged segment and those after it are dropped, and the same command upscales their frames again."""
    src = make_clip(tmp_path / "clip.mp4", seconds=0.4)  # 12 frames
    config, video = UpscaleConfig(model=MODEL), VideoConfig(crf=8)
    # the second segment cut short (the join stopped there), the first emptied (the join failed)
    for n, first, last in ((1, 3, 4), (0, 0, 2)):
        out, count = tmp_path / f"out{n}", []

        def stop_after_five() -> None:
            count.append(1)
            if len(count) == 5:
                errors.STOPS.append(signal.SIGTERM)

        with pytest.raises(Interrupted):  # five frames kept: segments of 3 and 2
            upscale_videos([src], out, config, video, progress=stop_after_five)
        errors.STOPS.clear()
        segment = parts_folder(out / "clip_x4.mp4") / f"segment_{n:05d}.mp4"
        segment.write_bytes(segment.read_bytes()[:len(segment.read_bytes()) // 3] if n else b"")
        report = upscale_videos([src], out, config, video)
        assert not report.written and not (out / "clip_x4.mp4").exists()
        (_, why), = report.failures
        assert f"{segment} (frames {first} to {last}) is damaged, so clip_x4.mp4 was not written; it and the " \
            f"segments after it are dropped: run the same command again to upscale from frame {first} on" in why, why
        report = upscale_videos([src], out, config, video)
        assert report.written and report.frames == 12 - first, report.failures
        check_frames(out / "clip_x4.mp4", model_frames(model, src))
    # a join short of frames with every segment whole: said as the join's, not advised to run again (it would repeat)
    import lway_rt.video as video_module

    out, count = tmp_path / "short", []
    with pytest.raises(Interrupted):
        upscale_videos([src], out, config, video, progress=lambda: count.append(1) or (
            len(count) == 5 and errors.STOPS.append(signal.SIGTERM)))
    errors.STOPS.clear()
    real = video_module.video_packets
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(video_module, "video_packets", lambda p: real(p) - (0 if "segment_" in p.name else 1))
        report = upscale_videos([src], out, config, video)
    (_, why), = report.failures
    assert "ffmpeg joined 11 of the 12 frames the segments in" in why and "which are whole: nothing was written" in why


def test_parts_of_other_settings_are_refused_not_mixed_in(tmp_path, small_segments, monkeypatch):
    src = make_clip(tmp_path / "clip.mp4", audio=False)
    out = tmp_path / "out"
    errors.STOPS.append(signal.SIGINT)  # a stop as the first frame is done
    with pytest.raises(Interrupted):
        upscale_videos([src], out, UpscaleConfig(model=MODEL), VideoConfig())
    errors.STOPS.clear()
    result = run("upscale-video", src, "-o", out, "-m", MODEL, "--crf", "23")
    parts = parts_folder(out / "clip_x4.mp4")
    assert result.exit_code == 1 and "made with another --crf (18 there, 23 now): run that command again to finish " \
        "it, or pass --overwrite to start clip_x4.mp4 again" in result.output, result.output
    assert (parts / "segment_00000.mp4").is_file()
    # another model: both named, so the command that finishes the stopped run can be told (it said "another model")
    import torch

    from lway_rt.archs.srvgg import SRVGGNetCompact

    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2).state_dict(), tmp_path / "tiny.pth")
    result = run("upscale-video", src, "-o", out, "-m", tmp_path / "tiny.pth")
    assert result.exit_code == 1 and f"made with another model (or --detail-cap) ({MODEL} there, {tmp_path / 'tiny.pth'} " \
        "now): run that command again" in result.output, result.output
    # a file's -m is kept by its absolute path: two spellings of one file are one model, and the named command can be
    # followed from another folder (56I-1)
    from lway_rt.video import _model_said

    monkeypatch.chdir(tmp_path)
    assert _model_said("tiny.pth") == str(tmp_path / "tiny.pth") == _model_said(str(tmp_path / "tiny.pth"))
    assert _model_said(MODEL) == MODEL
    from lway_rt.video import _model_words  # a file moved since: said gone, its command cannot be run (56J2)

    gone = str(tmp_path / "gone.pth")
    assert _model_words({"model": gone}, {"model": MODEL}) == f" ({gone}, which is gone, there, {MODEL} now)"
    # under another name (another container) it starts anew, and says what is left of the stopped run
    other = run("upscale-video", src, "-o", out, "-m", MODEL, "--container", "mkv")
    assert other.exit_code == 0 and f"{parts} holds the frames of an unfinished upscale of clip.mp4" in other.output, \
        other.output
    fresh = run("upscale-video", src, "-o", out, "-m", MODEL, "--crf", "23", "--overwrite")  # its frames go
    assert fresh.exit_code == 0 and "went on" not in fresh.output and not parts.exists(), fresh.output


def test_sigterm_keeps_the_frames_done_and_exits_143(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", size="96x64", seconds=2.0)
    out = tmp_path / "out"
    args = ["upscale-video", str(src), "-o", str(out), "-m", MODEL, "--tile", "0"]
    proc = subprocess.Popen([sys.executable, "-c", "from lway_rt.cli import main; main()", *args],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    parts = parts_folder(out / "clip_x4.mp4")
    try:
        deadline = time.monotonic() + 120
        while not parts.is_dir():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.02)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        text = proc.communicate(timeout=120)[0].decode()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    kept = int(text.split("interrupted: ", 1)[1].split(" frame(s)", 1)[0]) if "interrupted: " in text else -1
    assert proc.returncode == 143 and 0 < kept < 60 and "run the same command again" in text, text
    assert "stopping after the frame in hand, to save it (SIGTERM again: stop now, keeping the frames of the " \
        "segments closed before it)" in text, text
    again = run(*args)
    assert again.exit_code == 0 and f"went on from frame {kept}" in again.output, again.output
    assert len(list(read_frames(out / "clip_x4.mp4", probe(out / "clip_x4.mp4")))) == 60


def test_refusals_are_one_line_and_write_nothing(tmp_path, monkeypatch):
    src = make_clip(tmp_path / "clip.mp4", audio=False, seconds=0.12)
    out = tmp_path / "out"
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    bad = run("upscale-video", text, "-o", out, "-m", MODEL)
    assert bad.exit_code == 1 and f"{text} is not a video ffmpeg can read" in bad.output, bad.output
    # empty, or an MP4 cut before its index: said so, with what to do, not ffmpeg's words (review 48C C6)
    (tmp_path / "empty.mp4").write_bytes(b"")
    whole = src.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[:whole.find(b"moov") - 4])  # (the index, written last)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(src), "-frames:v", "0", "-c:v", "libx264",
                    str(tmp_path / "header.mp4")], check=True)  # (a header, no stream: 'At least one output file must
    # be specified', ffmpeg's usage complaint, was quoted as its reason: 58B-3)
    for name, said in (("empty.mp4", "is empty (0 bytes): re-copy or re-export the video"),
                       ("cut.mp4", "is cut short (its MP4 index is missing): re-copy it, or let the recording finish"),
                       ("header.mp4", "holds no streams at all (a header without frames: the recording or export wrote "
                                      "none): nothing to upscale")):
        bad = run("upscale-video", tmp_path / name, "-o", out, "-m", MODEL)
        assert bad.exit_code == 1 and f"{tmp_path / name} {said}" in " ".join(bad.output.split()), bad.output
    photo = tmp_path / "photo.jpg"
    from PIL import Image

    Image.new("RGB", (64, 48), (10, 20, 30)).save(photo)
    image = run("upscale-video", photo, "-o", out, "-m", MODEL)
    assert image.exit_code == 1 and f"{photo} is an image, not a video: 'lwayrt upscale' upscales images" in \
        image.output, image.output
    odd = run("upscale-video", src, "-o", out, "-m", MODEL, "-s", "1.5", "--frames", "1")  # 96x72: even
    assert odd.exit_code == 0, odd.output
    odd = run("upscale-video", src, "-o", out, "-m", MODEL, "-s", "1.25", "--suffix", "_odd")  # 80x60: even too
    assert odd.exit_code == 0, odd.output
    odd = run("upscale-video", src, "-o", out, "-m", MODEL, "-s", "1.3", "--suffix", "_odd2")  # 83x62
    assert odd.exit_code == 1 and "needs even sides: choose another --outscale" in odd.output, odd.output
    there = run("upscale-video", src, "-o", out, "-m", MODEL, "-s", "1.5")
    assert there.exit_code == 1 and "clip_x1.5.mp4 exists: pass --overwrite" in there.output, there.output
    before = (out / "clip_x1.5.mp4").read_bytes()
    assert run("upscale-video", src, "-o", out, "-m", MODEL, "-s", "1.5", "--overwrite").exit_code == 0
    assert (out / "clip_x1.5.mp4").read_bytes() != before  # one frame before, three now
    # an output name that is a folder: said before any frame, with or without --overwrite (which cannot replace it:
    # every frame was upscaled first, then the join failed 'Is a directory', its parts left behind; review 48C C4)
    (out / "clip_x2.mp4").mkdir()
    for extra in ([], ["--overwrite"]):
        folder_out = run("upscale-video", src, "-o", out, "-m", MODEL, "-s", "2", *extra)
        assert folder_out.exit_code == 1 and f"output {out / 'clip_x2.mp4'} is a folder: move it, or choose another " \
            "-o folder or --suffix" in " ".join(folder_out.output.split()), folder_out.output
    assert not any(p.name.startswith(".clip_x2") and "parts" in p.name for p in out.iterdir())
    ts = make_clip(tmp_path / "take.ts", audio=False, seconds=0.12)  # take.ts and take.mpg both make take_x4.mkv
    (tmp_path / "take.mpg").write_bytes(ts.read_bytes())
    first = run("upscale-video", ts, "-o", out, "-m", MODEL)
    assert first.exit_code == 0, first.output
    namesake = run("upscale-video", tmp_path / "take.mpg", "-o", out, "-m", MODEL)
    assert namesake.exit_code == 1 and "take_x4.mkv exists (take.ts beside it is written to that name too: it may " \
        "be the output of that video): pass --overwrite" in namesake.output, namesake.output
    same = run("upscale-video", src, "-o", tmp_path, "-m", MODEL, "--suffix", "")
    assert same.exit_code == 1 and "is the input itself" in same.output, same.output
    folder = run("upscale-video", tmp_path, "-o", out, "-m", MODEL)
    assert folder.exit_code == 2 and "is a directory" in folder.output, folder.output
    # an output name longer than a file name may be: that video's failure, said before any frame (57A-1: the system's
    # error had stopped the command, the videos after it left undone)
    long = tmp_path / f"{'v' * 249}.mp4"
    long.write_bytes(src.read_bytes())
    too_long = run("upscale-video", long, src, "-o", tmp_path / "long", "-m", MODEL, "--frames", "1")
    assert too_long.exit_code == 1 and "1 video(s) failed" in too_long.output, too_long.output
    assert "would be 256 bytes, more than the 255 a file name may have" in " ".join(too_long.output.split())
    assert [p.name for p in (tmp_path / "long").iterdir()] == ["clip_x4.mp4"]
    # no ffmpeg anywhere: the extra to install is named
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    missing = run("upscale-video", src, "-o", tmp_path / "none", "-m", MODEL)
    assert missing.exit_code == 1 and "pip install 'lway_rt[video]'" in missing.output, missing.output
    assert not (tmp_path / "none").exists()


def test_upscale_given_a_video_names_upscale_video(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", audio=False, seconds=0.12)
    result = run("upscale", src, "-o", tmp_path / "out", "-m", MODEL)
    assert result.exit_code == 1 and "give the video file itself to 'lwayrt upscale-video'" in result.output, \
        result.output
    folder = run("adapt", tmp_path, "-o", tmp_path / "run", "-m", MODEL)  # a folder of video: the file is named
    assert folder.exit_code == 1 and "or 'lwayrt adapt' (frames spread over it)" in folder.output, folder.output


def test_an_interlaced_source_is_named_and_deinterlace_makes_whole_pictures(tmp_path):
    plain = make_clip(tmp_path / "plain.mp4", audio=False)
    src = tmp_path / "fields.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(plain), "-c:v", "libx264", "-flags",
                    "+ilme+ildct", "-x264-params", "tff=1", str(src)], check=True)
    assert probe(src).interlaced and not probe(plain).interlaced
    result = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "--frames", "2")
    assert result.exit_code == 0 and f"{src} is interlaced" in result.output and "--deinterlace" in result.output, \
        result.output
    fields = list(read_frames(src, probe(src), count=3))
    whole = list(read_frames(src, probe(src), count=3, deinterlace=True))
    assert len(whole) == 3 and any(np.abs(a.astype(int) - b).max() > 8 for a, b in zip(fields, whole))
    again = run("upscale-video", src, "-o", tmp_path / "out2", "-m", MODEL, "--frames", "2", "--deinterlace")
    assert again.exit_code == 0 and "is interlaced" not in again.output, again.output


def test_the_overhead_benchmark_times_both_ways_on_the_same_frames(tmp_path, load_benchmark):
    import json

    bench = load_benchmark("video_overhead")
    out = tmp_path / "overhead.json"
    assert bench.main(["--frames", "2", "--rounds", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["lr_size"] for r in rows] == [[320, 180], [480, 270]] and all(r["frames"] == 2 for r in rows)
    assert all(r["median_s"]["video"] > 0 and r["video_over_model"] == pytest.approx(
        r["median_s"]["video"] / r["median_s"]["model"], rel=0.01) for r in rows)


def test_the_segments_benchmark_encodes_every_frame_in_segments_of_the_lengths_named(tmp_path, load_benchmark):
    import json

    bench = load_benchmark("video_segments")
    out = tmp_path / "segments.json"
    assert bench.main(["--frames", "60", "--width", "96", "--height", "64", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["content"], r["segment_frames"], r["segments"]) for r in rows] == [
        (c, n, k) for c in ("soft", "grain") for n, k in ((60, 1), (50, 2), (25, 3))]
    for content in ("soft", "grain"):
        mine = [r for r in rows if r["content"] == content]
        assert all(r["size_over_one_segment"] == pytest.approx(r["bytes"] / mine[0]["bytes"], abs=1e-4) for r in mine)
    assert all(r["y_psnr_db"] > 30 for r in rows) and rows[3]["bytes"] > rows[0]["bytes"]  # grain costs bits


def test_adapt_takes_frames_spread_over_a_video_and_resumes_on_the_same_ones(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", seconds=1.0)  # 30 frames; the container says 1.0 s of the 29.97 fps
    out = tmp_path / "run"
    args = ["adapt", src, "-m", MODEL, "-o", out, "--iterations", "2", "--sample", "4", "--patch-size", "32"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "sr").iterdir()) == ["clip_f000000.png", "clip_f000010.png",
                                                               "clip_f000019.png", "clip_f000029.png"]
    assert f"lwayrt upscale-video {src} -m {out} -o OUT" in result.output, result.output
    assert json.loads((out / "config.json").read_text())["sample"] == 4  # --config repeats the run
    again = run(*args, "--resume")
    assert again.exit_code == 0 and "complete with these inputs and settings: kept as it is" in again.output, \
        again.output
    other = run(*args[:-4], "--sample", "3", "--patch-size", "32", "--resume")
    assert other.exit_code == 1 and "--sample 4 (this command: 3)" in other.output, other.output
    # the adapted weights take the clip whole
    assert run("upscale-video", src, "-m", out, "-o", tmp_path / "up", "--frames", "2").exit_code == 0
    mixed = run("adapt", src, tmp_path / "run" / "sr", "-m", MODEL, "-o", tmp_path / "run2")
    assert mixed.exit_code == 1 and "adapt takes one video alone" in mixed.output, mixed.output


def test_frames_a_shorter_stream_lacks_are_counted_not_missed(tmp_path):
    """A container whose duration runs past its video (the audio is longer): the frames are spread over the video's
    own frames, the last one included."""
    from lway_rt.video import sample_frames

    video = make_clip(tmp_path / "short.mp4", rate="25", seconds=0.4, audio=False)  # 10 frames
    src = tmp_path / "long_audio.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(video), "-f", "lavfi", "-i",
                    "sine=duration=2", "-c:v", "copy", "-c:a", "aac", str(src)], check=True)
    assert probe(src).frames_estimate == 50
    frames = sample_frames(src, 3)
    assert [f.name for f in frames] == ["long_audio_f000000", "long_audio_f000004", "long_audio_f000009"]
    last = list(read_frames(video, probe(video)))[9]
    assert np.array_equal(np.round(frames[2].image.rgb * 255).astype(np.uint8), last)


def test_a_second_run_into_the_same_output_is_refused_while_one_runs(tmp_path, held_elsewhere):
    src = make_clip(tmp_path / "clip.mp4", audio=False, seconds=0.12)
    out = tmp_path / "out"
    out.mkdir()
    with held_elsewhere(out / ".clip_x4.mp4.lock"):
        result = run("upscale-video", src, "-o", out, "-m", MODEL)
    assert result.exit_code == 1 and f"another run is writing to {out / 'clip_x4.mp4'} right now" in result.output, \
        result.output
    assert not (out / "clip_x4.mp4").exists() and not parts_folder(out / "clip_x4.mp4").exists()
    # a long name's shortened lock file: the refusal names the output, not the lock's shortened name (review 55J J3)
    long = make_clip(tmp_path / f"{'c' * 246}.mp4", audio=False, seconds=0.12)
    from lway_rt.video import _hidden_beside

    dest = out / f"{'c' * 246}_x4.mp4"
    lock = _hidden_beside(dest, ".lock")
    assert "~" in lock.name  # (shortened: the name itself would not fit)
    with held_elsewhere(lock):
        result = run("upscale-video", long, "-o", out, "-m", MODEL)
    assert result.exit_code == 1 and f"another run is writing to {dest} right now" in result.output, result.output


def test_a_video_that_starts_after_its_audio_stays_in_sync(tmp_path):
    """A camcorder's MPEG-TS or a clip cut from a longer one: the video's first frame comes some time after the file's
    start (its audio's). The output's video starts as long after its audio; it had been moved to the start."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.4)
    late = tmp_path / "late.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(clip), "-itsoffset", "0.5", "-i", str(clip),
                    "-map", "1:v", "-map", "0:a", "-c", "copy", str(late)], check=True)
    assert probe(late).video_delay == pytest.approx(0.5, abs=0.001) and probe(late).frames_estimate == 12
    for extra in ([], ["--frames", "6", "--suffix", "_six"]):
        assert run("upscale-video", late, "-o", tmp_path / "out", "-m", MODEL, *extra).exit_code == 0
    out = probe(tmp_path / "out" / "late_x4.mp4")
    assert out.video_delay == pytest.approx(0.5, abs=0.01) and out.audio == 1
    six = probe(tmp_path / "out" / "late_six.mp4")
    assert six.video_delay == pytest.approx(0.5, abs=0.01) and six.duration == pytest.approx(0.5 + 6 * 1001 / 30000,
                                                                                             abs=0.03)


def test_a_clip_joined_from_pieces_of_two_rates_is_read_at_the_higher_not_at_ffmpegs_guess(tmp_path):
    """A clip joined from 24 and 30 fps pieces says "26.78 fps, 120 tbr": read at 120, each of its 54 pictures went
    through the model four or five times (240 frames) and the output was a 120 fps file of repeated frames (review
    53C C1). It is read at the rate its closest frames reach, 30: 60 frames, none of the 30 fps piece dropped."""
    pieces = [make_clip(tmp_path / f"p{r}.mp4", size="32x24", rate=r, seconds=1, audio=False,
                        extra=["-video_track_timescale", "600"]) for r in ("24", "30")]
    (tmp_path / "list.txt").write_text("".join(f"file '{p}'\n" for p in pieces))
    joined = tmp_path / "joined.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"),
                    "-c", "copy", str(joined)], check=True)
    assert " 120 tbr" in _stream_line(joined)  # (ffmpeg's guess)
    info = probe(joined)
    assert info.rate == 30 and 26 < float(info.average) < 28
    frames = list(read_frames(joined, info))
    assert len(frames) == 60
    # the 30 fps piece's 30 pictures are all there, each once: its frames differ from one another
    tail = [np.asarray(f, np.float32) for f in frames[-30:]]
    assert all(np.abs(a - b).mean() > 0.3 for a, b in zip(tail, tail[1:]))  # (a repeated frame: 0)
    assert probe(pieces[0]).rate == 24 and probe(pieces[1]).rate == 30  # (one rate each: read as before)
    # the same clip in an .mkv says "27 fps, 27 tbr" (1 ms timestamps), one ffmpeg joins itself into an .mkv says
    # "120 tbr" and no average, and a join longer than ffmpeg's first look "27 fps, 24 tbr" (review 53D D1-D3); a
    # 29.97 fps piece in whole milliseconds is 29.97, not 30 (D4)
    ff = [ffmpeg_exe(), "-nostdin", "-v", "error"]
    subprocess.run([*ff, "-i", str(joined), "-c", "copy", str(tmp_path / "joined.mkv")], check=True)
    subprocess.run([*ff, "-f", "lavfi", "-i", "testsrc=s=32x24:r=24:d=1", "-f", "lavfi", "-i",
                    "testsrc=s=32x24:r=30000/1001:d=1", "-filter_complex", "[0][1]concat=n=2", "-fps_mode", "vfr",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(tmp_path / "vfr.mkv")], check=True)
    long = []
    for r in ("24", "30"):
        long.append(tmp_path / f"l{r}.mp4")
        subprocess.run([*ff, "-f", "lavfi", "-i", f"testsrc=s=32x24:r={r}:d=30", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        "-video_track_timescale", "600", str(long[-1])], check=True)
    (tmp_path / "long.txt").write_text("".join(f"file '{p}'\n" for p in long))
    subprocess.run([*ff, "-f", "concat", "-safe", "0", "-i", str(tmp_path / "long.txt"), "-c", "copy",
                    str(tmp_path / "long.mp4")], check=True)
    assert " 24 tbr" in _stream_line(tmp_path / "long.mp4")
    assert [probe(tmp_path / n).rate for n in ("joined.mkv", "vfr.mkv", "long.mp4")] == [30, Fraction(30000, 1001), 30]
    # and clips of one rate with frames missing (a phone's, with jitter; a screen recording's bursts) stay at it: the
    # first measure, over runs of frames, was lowered by the gaps, and pictures were dropped (review 53E E1, E2)
    for vf, rate in (("select='gt(random(0),0.3)',setpts='PTS+0.003*random(1)/TB'", 30), ("select='gt(random(0),0.5)'", 60),
                     ("select='lt(mod(t,1.5),0.26)'", 30)):
        clip = tmp_path / "gaps.mp4"
        subprocess.run([*ff, "-y", "-f", "lavfi", "-i", f"testsrc=s=32x24:r={rate}:d=6", "-vf", vf, "-fps_mode", "vfr",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-video_track_timescale", "90000", str(clip)], check=True)
        assert probe(clip).rate == rate, vf


def test_a_raw_h264_stream_is_read_at_its_picture_rate_once_a_frame(tmp_path, capsys):
    """A raw H.264 stream (a dashcam's, CCTV's) says "25 fps, 50 tbr" and no duration: read at 50, each picture went
    through the model twice; and a log showed no progress without a total."""
    from lway_rt.cli.upscale import _ProgressLines
    from lway_rt.io.video import _frame_rate, _rate

    clip = make_clip(tmp_path / "clip.mp4", rate="25", seconds=0.4, audio=False)
    raw = tmp_path / "cam.h264"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(clip), "-c", "copy", "-bsf:v",
                    "h264_mp4toannexb", str(raw)], check=True)
    info = probe(raw)
    assert info.rate == 25 and info.frames_estimate is None
    twice = run("upscale-video", raw, str(raw.parent / "." / raw.name), "-o", tmp_path / "out", "-m", MODEL)
    assert twice.exit_code == 0 and twice.output.count("wrote ") == 1, twice.output  # one file named twice: one job
    out = probe(tmp_path / "out" / "cam_x4.mkv")
    assert out.rate == 25 and len(list(read_frames(tmp_path / "out" / "cam_x4.mkv", out))) == 10
    # made at another rate, such a stream still says "25 fps" ("25 fps, 48 tbr" at 24; "25 fps, 25 tbr" at 12.5): read
    # at its tick rate, each picture went through twice; its parameter set records the rate (53D D7)
    for rate, made in (("24", 24), ("25/2", Fraction(25, 2)), ("30000/1001", Fraction(30000, 1001))):
        other = make_clip(tmp_path / f"at{float(made):.2f}.mp4", rate=rate, seconds=0.8, audio=False)
        stream = other.with_suffix(".h264")
        subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(other), "-c", "copy", "-bsf:v",
                        "h264_mp4toannexb", str(stream)], check=True)
        info = probe(stream)
        frames = len(list(read_frames(other, probe(other))))
        assert info.rate == made and len(list(read_frames(stream, info))) == frames == round(0.8 * made), (rate, info)
    # a time-lapse's half a frame a second is taken as recorded (56E1); a rate no camera makes is refused, with the
    # command that rewrites it, which then reads (56E2: it was read at 25 and gave no frames)
    lapse = tmp_path / "lapse.h264"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=1/2:duration=6",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "h264", str(lapse)], check=True)
    info = probe(lapse)
    assert info.rate == Fraction(1, 2) and len(list(read_frames(lapse, info))) == 3
    odd = tmp_path / "odd.avc"  # (an ending ffmpeg writes by no format: the advice names its own, 56G2)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(stream), "-c", "copy", "-bsf:v",
                    "h264_metadata=tick_rate=90000/1", "-f", "h264", str(odd)], check=True)
    with pytest.raises(InputError) as err:
        probe(odd)
    said = str(err.value)
    assert "records 45000 frames a second, a rate no camera makes" in said, said
    advice = said.split("e.g. 25: ")[1].split(", and upscale that")[0].split()
    assert advice[0] == "ffmpeg"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", *advice[1:]], check=True)
    fixed = tmp_path / "odd_25fps.h264"
    assert probe(fixed).rate == 25 and len(list(read_frames(fixed, probe(fixed)))) == frames
    # adapt takes such a stream as the video it is (it was "not a readable image": 56E3)
    adapted = run("adapt", raw, "-m", MODEL, "-o", tmp_path / "run", "--iterations", "1", "--sample", "2",
                  "--patch-size", "32")
    assert adapted.exit_code == 0, adapted.output
    assert sorted(p.name for p in (tmp_path / "run" / "sr").iterdir()) == ["cam_f000000.png", "cam_f000009.png"]
    assert _frame_rate(Fraction(2983, 100), Fraction(30)) == 30  # a phone's variable rate: its nominal one
    # every NTSC rate N * 1000/1001 ffmpeg prints rounded is read exact (14.99 was 1499/100: frames repeated)
    assert [_rate(t) for t in ("14.99", "29.97", "23.98", "59.94", "11.99", "25", "12.5", "1k", "30")] == [
        Fraction(15000, 1001), Fraction(30000, 1001), Fraction(24000, 1001), Fraction(60000, 1001),
        Fraction(12000, 1001), 25, Fraction(25, 2), 1000, 30]
    fifteen = make_clip(tmp_path / "fifteen.mp4", rate="15000/1001", seconds=0.5, audio=False)
    assert probe(fifteen).rate == Fraction(15000, 1001)
    lines = _ProgressLines("frame(s)")
    lines.PERIOD = 0.0
    lines.begin(0)  # no total known
    lines.step(raw)
    assert "upscaled 1 frame(s) (cam.h264)" in capsys.readouterr().err
    lines.begin(1)  # fewer counted than come (a variable rate): it goes on saying how many
    lines.step(raw)
    lines.step(raw)
    assert capsys.readouterr().err.startswith("upscaled 2 frame(s) (cam.h264)")


def test_a_stop_before_any_frame_is_kept_leaves_no_parts(tmp_path, small_segments):
    src = make_clip(tmp_path / "clip.mp4", audio=False, seconds=0.12)
    out = tmp_path / "out"

    def stop_at_once() -> None:  # a stop that does not wait (a second signal), in the first frame
        raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=r"interrupted before a frame of clip.mp4 was kept: run the same command"):
        upscale_videos([src], out, UpscaleConfig(model=MODEL), VideoConfig(), progress=stop_at_once)
    assert not parts_folder(out / "clip_x4.mp4").exists()


def test_the_bar_counts_the_video_s_frames_not_the_container_s_duration(tmp_path):
    """Audio four times as long as the video: the total is the video's 10 frames, not 2 s of them."""
    video = make_clip(tmp_path / "short.mp4", rate="25", seconds=0.4, audio=False)
    src = tmp_path / "long_audio.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(video), "-f", "lavfi", "-i",
                    "sine=duration=1.6", "-c:v", "copy", "-c:a", "aac", str(src)], check=True)
    totals = []
    upscale_videos([src], tmp_path / "out", UpscaleConfig(model=MODEL), VideoConfig(),
                   on_start=lambda s, total, done: totals.append(total))
    assert totals == [10] and probe(src).frames_estimate == 40


def test_a_turned_anamorphic_clip_keeps_its_pixel_shape(tmp_path):
    plain = make_clip(tmp_path / "plain.mp4", audio=False, seconds=0.12)
    wide = tmp_path / "wide.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(plain), "-vf", "setsar=2/1", str(wide)],
                   check=True)
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-display_rotation", "90", "-i", str(wide), "-c", "copy",
                    str(turned)], check=True)
    assert probe(wide).sar == (2, 1) and probe(turned).sar == (1, 2)
    assert run("upscale-video", turned, "-o", tmp_path / "out", "-m", MODEL).exit_code == 0
    out = probe(tmp_path / "out" / "turned_x4.mp4")
    assert (out.width, out.height, out.sar) == (192, 256, (1, 2))


def test_a_display_aspect_the_container_sets_is_kept(tmp_path):
    """Matroska's display size (mkvmerge --aspect-ratio; ffmpeg -aspect with a stream copy) is what players show, and
    ffmpeg prints it after the codec's own ("[SAR 1:1 DAR 3:2], SAR 32:27 DAR 16:9"): it was dropped, so the
    anamorphic clip came out stretched (58B-2). A square-pixel GIF's 64:64 stays square."""
    plain = make_clip(tmp_path / "plain.mp4", audio=False, seconds=0.12)
    wide = tmp_path / "wide.mkv"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(plain), "-c", "copy", "-aspect", "16:9",
                    str(wide)], check=True)
    assert probe(plain).sar == (1, 1) and probe(wide).sar == (4, 3)  # (64x48 shown 16:9)
    assert run("upscale-video", wide, "-o", tmp_path / "out", "-m", MODEL).exit_code == 0
    assert probe(tmp_path / "out" / "wide_x4.mkv").sar == (4, 3)
    gif = tmp_path / "clip.gif"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(plain), str(gif)], check=True)
    assert probe(gif).sar == (1, 1)


def test_a_stream_that_changes_size_part_way_is_said(tmp_path):
    """Two H.264 streams of 48x32 and 64x32 spliced (a broadcast recording switching formats): the 64x32 frames were
    scaled into 48x32, squeezed, without a word (58B-4). One size throughout says nothing."""
    parts = []
    for size in ("48x32", "64x32"):
        parts.append(tmp_path / f"{size}.h264")
        subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:"
                        "d=0.16", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-f", "h264", str(parts[-1])], check=True)
    spliced = tmp_path / "spliced.h264"
    spliced.write_bytes(b"".join(p.read_bytes() for p in parts))
    said = run("upscale-video", spliced, parts[0], "-o", tmp_path / "out", "-m", MODEL)
    assert said.exit_code == 0, said.output
    text = " ".join(said.output.split())
    assert f"{spliced} changes its frame size part-way (to 64x32 from 48x32): those frames were scaled to 48x32 " \
        "first, changing their shape in spliced_x4.mkv; cut the video where its size changes and upscale each part" \
        in text, text
    assert text.count("changes its frame size") == 1, text
    # landscape to portrait (it was taken for a turned video's frames: 58D-7), and a turned video's sizes as shown
    # (58D-10); adapt on such a video is told too (58D-8)
    for size in ("32x48",):
        parts.append(tmp_path / f"{size}.h264")
        subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:"
                        "d=0.16", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-f", "h264", str(parts[-1])], check=True)
    upright = tmp_path / "upright.h264"
    upright.write_bytes(parts[0].read_bytes() + parts[2].read_bytes())
    turned = tmp_path / "turned.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-display_rotation", "90", "-fflags", "+genpts", "-i",
                    str(spliced), "-c", "copy", str(turned)], check=True)
    assert probe(turned).turned and (probe(turned).width, probe(turned).height) == (32, 48)
    said = run("upscale-video", upright, turned, "-o", tmp_path / "out2", "-m", MODEL)
    assert said.exit_code == 0, said.output
    text = " ".join(said.output.split())
    assert f"{upright} changes its frame size part-way (to 32x48 from 48x32)" in text, text
    assert f"{turned} changes its frame size part-way (to 32x64 from 32x48)" in text, text
    said = run("adapt", spliced, "-m", MODEL, "-o", tmp_path / "adapted", "--iterations", "1", "--patch-size", "16",
               "--sample", "4")
    assert said.exit_code == 0 and f"{spliced} changes its frame size part-way (to 64x32 from 48x32): those frames " \
        "were scaled to 48x32 first, and adapted on so" in " ".join(said.output.split()), said.output


def test_adapt_on_an_interlaced_or_unusual_video(tmp_path):
    """adapt takes an MPEG-TS file as a video; names an interlaced one and makes whole pictures with --deinterlace
    (as upscale-video does, which its closing line then carries); refuses the modes whose models upscale-video cannot
    take, and frames smaller than the patch, in words about the video."""
    plain = make_clip(tmp_path / "plain.mp4", seconds=0.4)
    ts = tmp_path / "cam.ts"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(plain), "-c:v", "libx264", "-flags",
                    "+ilme+ildct", "-x264-params", "tff=1", "-c:a", "copy", str(ts)], check=True)
    base = ["adapt", ts, "-m", MODEL, "--iterations", "1", "--patch-size", "32"]
    combed = run(*base, "-o", tmp_path / "a", "--sample", "2")
    assert combed.exit_code == 0 and f"{ts} is interlaced: its frames were adapted on as they are" in combed.output, \
        combed.output
    whole = run(*base, "-o", tmp_path / "b", "--sample", "2", "--deinterlace")
    assert whole.exit_code == 0 and "is interlaced" not in whole.output, whole.output
    assert f"-m {tmp_path / 'b'} -o OUT --deinterlace" in whole.output, whole.output
    many = run(*base, "-o", tmp_path / "c", "--sample", "100")
    assert many.exit_code == 0 and f"{ts} has 12 frame(s), fewer than the 100 asked for" in many.output, many.output
    for mode in ("per-image", "per-group"):
        refused = run(*base, "-o", tmp_path / "d", "--mode", mode)
        assert refused.exit_code == 1 and f"--mode {mode} makes models it cannot use: drop --mode" in refused.output
    tiny = make_clip(tmp_path / "tiny.mp4", size="40x32", audio=False, seconds=0.12)
    small = run("adapt", tiny, "-m", MODEL, "-o", tmp_path / "e")
    assert small.exit_code == 1 and f"the frames of {tiny} are 40x32, smaller than the 48-px patch: use " \
        "--patch-size 32 or less" in small.output, small.output
    stray = run("adapt", plain.parent / "a" / "sr", "-m", MODEL, "-o", tmp_path / "f", "--deinterlace")
    assert stray.exit_code == 1 and "--deinterlace is for a video given as the input" in stray.output


def test_video_stream_tags_and_a_variable_rate_total(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", rate="25", seconds=0.8)
    tagged = tmp_path / "tagged.mkv"
    srt = tmp_path / "words.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,300\nhello\n")
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(src), "-i", str(srt), "-f", "lavfi", "-i",
                    "sine=frequency=880:duration=0.8", "-map", "0:v", "-map", "0:a", "-map", "2:a", "-map", "1",
                    "-c:v", "copy", "-c:a", "aac", "-c:s", "srt", "-metadata:s:v:0", "language=jpn", "-metadata:s:v:0",
                    "title=Main", "-metadata:s:a:1", "language=fra", "-metadata:s:s:0", "language=eng", str(tagged)],
                   check=True)
    for container in ("mkv", "mp4"):
        assert run("upscale-video", tagged, "-o", tmp_path / "out", "-m", MODEL, "--frames", "2", "--container",
                   container).exit_code == 0
        text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(tmp_path / "out" / f"tagged_x4.{container}")],
                              capture_output=True, text=True).stderr
        assert re.search(r"#0:0(\[\w+\])?\(jpn\): Video.*\(default\)", text) and "Main" in text, text
        assert re.search(r"#0:2(\[\w+\])?\(fra\): Audio", text) and re.search(r"#0:3(\[\w+\])?\(eng\): Subtitle",
                                                                               text), text
    # frames 10 on spaced further apart: read at 25 fps with the gaps filled, more frames come than its 20 packets
    vfr = tmp_path / "vfr.mkv"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(src), "-map", "0:v", "-c", "copy", "-bsf:v",
                    "setts=ts=if(gte(N\\,10)\\,PTS*2-10*40\\,PTS)", str(vfr)], check=True)
    info = probe(vfr)
    assert info.rate == 25 and info.video_duration is not None and info.frames_estimate > 20, info
    totals = []
    report = upscale_videos([vfr], tmp_path / "v", UpscaleConfig(model=MODEL), VideoConfig(),
                            on_start=lambda s, total, done: totals.append(total))
    assert abs(totals[0] - report.frames) <= 1, (totals, report.frames)
    again = upscale_videos([vfr], tmp_path / "v", UpscaleConfig(model=MODEL), VideoConfig(skip_existing=True))
    assert again.kept == [tmp_path / "v" / "vfr_x4.mkv"] and not again.written  # (review 55M M2)


def test_an_odd_outscale_is_told_one_that_works_and_a_stop_leaves_no_empty_folder(tmp_path, small_segments):
    src = make_clip(tmp_path / "clip.mp4", audio=False, seconds=0.12)  # 64x48
    odd = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "-s", "1.3")
    assert odd.exit_code == 1 and "choose another --outscale, such as 1.34" in odd.output, odd.output
    assert run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "-s", "1.34").exit_code == 0  # 86x64

    def stop_at_once() -> None:
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        upscale_videos([src], tmp_path / "made", UpscaleConfig(model=MODEL), VideoConfig(), progress=stop_at_once)
    assert not (tmp_path / "made").exists()


def test_a_cover_picture_is_not_taken_for_the_video(tmp_path):
    """An .mkv whose first video stream is a one-frame picture (cover art muxed as a stream) and an .mp4 with an
    attached cover: the moving video is the one upscaled."""
    from PIL import Image

    clip = make_clip(tmp_path / "clip.mp4", seconds=0.2)
    cover = tmp_path / "cover.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(cover)
    for name, first in (("covered.mp4", False), ("covered.mkv", True)):
        dest = tmp_path / name
        order = ["-map", "1", "-map", "0"] if first else ["-map", "0", "-map", "1"]
        subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(clip), "-i", str(cover), *order, "-c", "copy",
                        *([] if first else ["-disposition:v:1", "attached_pic"]), str(dest)], check=True)
        info = probe(dest)
        assert info.codec == "h264" and info.stream == (0 if not first else 1), info
        result = run("upscale-video", dest, "-o", tmp_path / "out", "-m", MODEL)
        assert result.exit_code == 0 and f"{dest} holds 2 video streams" in result.output, result.output
        out = tmp_path / "out" / dest.name.replace(".", "_x4.")
        assert len(list(read_frames(out, probe(out)))) == 6


def test_frames_beyond_the_clip_keep_its_sound_and_small_outscale_and_help_are_said(tmp_path):
    video = make_clip(tmp_path / "short.mp4", rate="25", seconds=0.24, audio=False)  # 6 frames
    src = tmp_path / "talk.mp4"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(video), "-f", "lavfi", "-i",
                    "sine=duration=1.0", "-c:v", "copy", "-c:a", "aac", str(src)], check=True)
    result = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "--frames", "100", "-s", "0.5")
    assert result.exit_code == 0 and f"{src} has 6 frame(s), fewer than --frames 100: all of them upscaled" in \
        result.output and "--outscale 0.5 writes videos smaller than their inputs" in result.output, result.output
    assert probe(tmp_path / "out" / "talk_x0.5.mp4").duration == pytest.approx(1.0, abs=0.05)  # the sound, whole
    helped = " ".join(run("upscale-video", "--help").output.split())
    assert "per-group" not in helped and "each frame in one pass" in helped and "per image" not in helped
    assert "each image goes to its group's model" in " ".join(run("upscale", "--help").output.split())


def test_a_stop_while_the_file_is_made_does_not_upscale_or_decode_again(tmp_path, monkeypatch):
    """Every frame done, the run stopped in the mux (a long film's last minute): the rerun makes the file from the
    kept segments without reading a frame of the source (it had decoded the whole film again to find its end)."""
    import lway_rt.video as video_mod

    src = make_clip(tmp_path / "clip.mp4", seconds=0.2)
    out = tmp_path / "out"

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(video_mod, "mux", stopped)
    with pytest.raises(Interrupted, match=r"interrupted while clip_x4.mp4 was made: its 6 frame\(s\) are kept"):
        upscale_videos([src], out, UpscaleConfig(model=MODEL), VideoConfig())
    monkeypatch.undo()

    def no_decoding(*args, **kwargs):
        raise AssertionError("the source was decoded again")

    monkeypatch.setattr(video_mod, "read_frames", no_decoding)
    report = upscale_videos([src], out, UpscaleConfig(model=MODEL), VideoConfig())
    assert report.written and report.frames == 0 and "every frame was done" in report.notes[0], report.notes
    assert len(list(read_frames(out / "clip_x4.mp4", probe(out / "clip_x4.mp4")))) == 6


def test_a_truncated_file_is_upscaled_as_far_as_it_goes_and_said_to_be_cut_short(tmp_path, monkeypatch):
    """ffmpeg decodes a cut-off file as far as its data goes and exits 0: the output is shorter, and says why, in MP4
    ("partial file") and Matroska ("File ended prematurely") alike, again after a stop while the file was made (which
    reads no frame to meet the errors again), and adapt says it too; a file of which no frame decodes is refused as
    cut short, quoting ffmpeg's error, not its word on its own output."""
    import lway_rt.video as video_mod

    cut = {}
    for suffix, extra in ((".mp4", ("-movflags", "+faststart")), (".mkv", ())):
        whole = make_clip(tmp_path / f"whole{suffix}", rate="25", seconds=1.2, audio=False, extra=extra)
        data = whole.read_bytes()  # (MP4: its index first, as a web-ready file has it: the data ends early, not it)
        cut[suffix] = tmp_path / f"cut{suffix}"
        cut[suffix].write_bytes(data[:len(data) * 2 // 3])
        if suffix == ".mp4":
            (tmp_path / "noframe.mp4").write_bytes(data[:data.find(b"mdat") + 60])  # the index, no whole frame

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(video_mod, "mux", stopped)  # the first .mp4 run stops while it makes the file
    with pytest.raises(Interrupted):
        upscale_videos([cut[".mp4"]], tmp_path / "out", UpscaleConfig(model=MODEL, outscale=1), VideoConfig())
    monkeypatch.undo()
    for suffix in (".mp4", ".mkv"):
        result = run("upscale-video", cut[suffix], "-o", tmp_path / "out", "-m", MODEL, "-s", "1")
        assert result.exit_code == 0, result.output
        note = " ".join(line for line in result.output.splitlines() if "ffmpeg reported" in line)
        written = int(re.search(r"\((\d+) frame\(s\) written of the 30 its length promises\)", note).group(1))
        assert f"decoding {cut[suffix]} (first: " in note and "the file is cut short (truncated)" in note, result.output
        assert 0 < written < 30 and written == probe(tmp_path / "out" / f"cut_x1{suffix}").frames_estimate
        # --skip-existing takes it for finished: the frames the source's data holds are there (review 55M M1)
        again = run("upscale-video", cut[suffix], "-o", tmp_path / "out", "-m", MODEL, "-s", "1", "--skip-existing")
        assert again.exit_code == 0 and "1 already there, left as they were" in again.output, again.output
    holes = tmp_path / "holes.mkv"  # damaged inside: the stretches lost stand repeated, not "concealed"
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25:duration=3",
                    "-f", "lavfi", "-i", "sine=duration=3", "-c:v", "libx264", "-g", "25", "-c:a", "aac", str(holes)],
                   check=True)
    data = bytearray(holes.read_bytes())
    for at in (len(data) // 3, len(data) // 2):
        data[at:at + 300] = bytes(300)
    holes.write_bytes(bytes(data))
    result = run("upscale-video", holes, "-o", tmp_path / "out", "-m", MODEL, "-s", "1")
    assert result.exit_code == 0 and re.search(r"what it could not decode is missing: \d+ frame\(s\) of holes_x1.mkv "
                                               "repeat the frame before them", result.output), result.output
    result = run("adapt", cut[".mkv"], "-o", tmp_path / "adapted", "-m", MODEL, "--iterations", "1", "--sample", "2",
                 "--patch-size", "32")
    assert result.exit_code == 0 and f"error(s) decoding {cut['.mkv']}" in result.output and \
        "the file is cut short (truncated); the frames adapted on are those it decoded" in result.output, result.output
    result = run("upscale-video", tmp_path / "noframe.mp4", "-o", tmp_path / "out", "-m", MODEL, "-s", "1")
    assert result.exit_code == 1 and "noframe.mp4 is cut short (truncated): ffmpeg stopped decoding at frame 0 (" in \
        result.output and "Nothing was written" not in result.output, result.output


def test_decoding_errors_are_counted_and_named_in_brief():
    from lway_rt.io.video import damage_summary

    lines = ["[mpeg2video @ 0x55] Invalid frame dimensions 0x0.", "Last message repeated 31 times",
             "[h264 @ 0x1] [dec:h264 @ 0x2] Decoding error: Invalid data found when processing input"]
    assert damage_summary(lines) == (33, "Invalid frame dimensions 0x0", False)
    assert damage_summary(["[in#0/matroska,webm @ 0x3] File ended prematurely"])[2]


def test_a_recording_that_starts_mid_stream_stays_in_sync_with_its_sound(tmp_path):
    """A capture that begins before its first key frame: ffmpeg drops the frames it cannot decode, and the picture
    must start after them, as in the source (it was placed at the stream's first packet, ahead of its sound)."""
    whole = make_clip(tmp_path / "whole.ts", rate="25", seconds=2.4, extra=("-g", "25", "-bf", "2"))
    data = whole.read_bytes()
    src = tmp_path / "capture.ts"
    src.write_bytes(data[len(data) // 4 // 188 * 188:])  # from a packet a quarter in: mid-way through a GOP

    def lead(path: Path) -> float:  # the first decoded frame after the first sound, as a player shows them
        def first(kind: str, flt: str) -> float:
            text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-copyts", "-i", str(path), "-map", f"0:{kind}:0",
                                   f"-{kind[0]}f", flt, "-f", "null", "-"], capture_output=True, text=True).stderr
            return float(re.search(r"pts_time:(-?[\d.]+)", text).group(1))
        return first("v", "showinfo") - first("a", "ashowinfo")

    result = run("upscale-video", src, "-o", tmp_path / "out", "-m", MODEL, "-s", "1")
    assert result.exit_code == 0 and "capture.ts starts mid-stream: its first" in result.output, result.output
    assert "ffmpeg reported" not in result.output  # (its errors are those frames': no second note of damage)
    assert lead(src) > 0.2 and lead(tmp_path / "out" / "capture_x1.mkv") == pytest.approx(lead(src), abs=0.045)



def test_an_ffmpeg_too_old_on_the_path_is_named_not_blamed_on_the_video(tmp_path, monkeypatch):
    """Without the video extra the PATH's ffmpeg is used; a distribution's 4.4 refuses -fps_mode, which was said as
    the video's damage ('re-encode or re-copy the video')."""
    import sys

    from lway_rt.errors import MissingDependencyError
    from lway_rt.io import video as io_video

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # the extra not installed
    for version, ok in (("4.4.2-0ubuntu0.22.04.1", False), ("n6.1.1", True), ("N-112233-gabcdef", True)):
        folder = tmp_path / version
        folder.mkdir()
        fake = folder / "ffmpeg"
        fake.write_text(f"#!/bin/sh\necho 'ffmpeg version {version} Copyright (c) 2000-2024'\n")
        fake.chmod(0o755)
        monkeypatch.setenv("PATH", str(folder))
        io_video._check_version.cache_clear()
        if ok:
            assert io_video.ffmpeg_exe() == str(fake)
        else:
            with pytest.raises(MissingDependencyError, match=rf"put ffmpeg 5.1 or newer on the PATH \({fake} is 4.4\)"):
                io_video.ffmpeg_exe()


def test_a_stopped_run_of_several_videos_goes_on_with_skip_existing_leaving_the_finished_ones(tmp_path, small_segments):
    """A batch stopped in its second video: the same command again had refused the first, finished, as "exists" (exit
    1), and --overwrite upscaled it again. The stop names the finished videos and --skip-existing; with it a rerun
    leaves them (same bytes) and finishes the rest; an output older than its video, or of another size, is not
    taken for finished (review 55G G2)."""
    first = make_clip(tmp_path / "a.mp4", audio=False, seconds=0.12)
    second = make_clip(tmp_path / "b.mp4", audio=False, seconds=0.3)
    out = tmp_path / "out"
    count = []

    def stop_in_the_second() -> None:
        count.append(1)
        if len(count) == len(read_frames_of(first)) + 4:
            errors.STOPS.append(signal.SIGINT)

    with pytest.raises(Interrupted, match=r"of b.mp4 are kept in .*run the same command again to go on from there, "
                                          r"adding --skip-existing to leave the video\(s\) finished before the stop as "
                                          r"they are \(a_x4.mp4\)"):
        upscale_videos([first, second], out, UpscaleConfig(model=MODEL), VideoConfig(), progress=stop_in_the_second)
    errors.STOPS.clear()
    done = (out / "a_x4.mp4").read_bytes()
    again = run("upscale-video", first, "-o", out, "-m", MODEL, "-q")  # (the first alone: the second is for below)
    assert again.exit_code == 1 and "--skip-existing to leave it" in again.output, again.output
    both = run("upscale-video", first, "-o", out, "-m", MODEL, "--skip-existing", "--overwrite")
    assert both.exit_code == 2 and "give one" in both.output, both.output  # a usage error, as adapt's clash (56C-3)
    res = run("upscale-video", first, second, "-o", out, "-m", MODEL, "--skip-existing")
    assert res.exit_code == 0, res.output
    assert f"wrote {out / 'b_x4.mp4'}" in res.output and "1 already there, left as they were: " in res.output
    assert (out / "a_x4.mp4").read_bytes() == done and len(read_frames_of(out / "b_x4.mp4")) == 9
    # an output older than its video (the video edited since) is not finished
    os.utime(out / "a_x4.mp4", (time.time() - 3600,) * 2)
    res = run("upscale-video", first, "-o", out, "-m", MODEL, "--skip-existing")
    assert res.exit_code == 1 and "is not an output of a.mp4 at 256x192 of 4 frame(s) made since it last changed" in res.output
    assert (out / "a_x4.mp4").read_bytes() == done
    # nor one of another size (another --outscale under the same --suffix)
    res = run("upscale-video", second, "-o", out, "-m", MODEL, "--skip-existing", "--outscale", "2", "--suffix", "_x4")
    assert res.exit_code == 1 and "is not an output of b.mp4 at 128x96" in res.output, res.output


def read_frames_of(path: Path) -> list:
    return list(read_frames(path, probe(path)))


def test_the_same_glob_again_with_o_its_folder_leaves_the_earlier_output_out(tmp_path):
    """`upscale-video clips/*.mp4 -o clips` run again: the earlier output clip_x4.mp4 is among the inputs, and it was
    upscaled again into clip_x4_x4.mp4 (a 16x video); it is left out with a note, as upscale leaves its outputs out
    (review 55G G3)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    src = make_clip(folder / "clip.mp4", audio=False, seconds=0.12)
    assert run("upscale-video", src, "-o", folder, "-m", MODEL, "-q").exit_code == 0
    res = run("upscale-video", *sorted(folder.glob("*.mp4")), "-o", folder, "-m", MODEL, "--skip-existing")
    assert res.exit_code == 0, res.output
    assert f"{folder / 'clip_x4.mp4'} is left out: it is where this command writes clip.mp4's output" in res.output
    assert sorted(p.name for p in folder.iterdir()) == ["clip.mp4", "clip_x4.mp4"]


def test_a_video_whose_output_name_is_long_but_legal_is_upscaled_and_resumed(tmp_path, small_segments):
    """An output name of 247 bytes fits the file system's 255, but its hidden parts folder (15 more) did not: such a
    video was refused as "too long ... use a shorter path" (review 55G G1). The parts folder's name is shortened as a
    temporary file's, and a stopped run still goes on from there."""
    src = make_clip(tmp_path / f"{'a' * 240}.mp4", audio=False, seconds=0.2)
    out = tmp_path / "out"
    dest = out / f"{'a' * 240}_x4.mp4"
    count = []

    def stop_after_three() -> None:
        count.append(1)
        if len(count) == 3:
            errors.STOPS.append(signal.SIGTERM)

    with pytest.raises(Interrupted, match=r"3 frame\(s\) of a+\.mp4 are kept"):
        upscale_videos([src], out, UpscaleConfig(model=MODEL), VideoConfig(), progress=stop_after_three)
    errors.STOPS.clear()
    parts = parts_folder(dest)
    assert parts.is_dir() and len(parts.name) <= 255
    fits = f"{'b' * 230}_x4.mp4"  # (a name whose parts folder fits keeps it as earlier versions named it: resumable)
    assert parts_folder(out / fits).name == f".{fits}.lwayrt-parts"
    report = upscale_videos([src], out, UpscaleConfig(model=MODEL), VideoConfig())
    assert report.written == [dest] and report.frames == len(read_frames_of(src)) - 3 and not parts.exists()


def test_skip_existing_takes_no_quick_look_for_the_video_and_overwrite_never_replaces_an_input(tmp_path, small_segments):
    """Review 55J: a --frames quick look has the output's name and size, and --skip-existing kept it as the finished
    video (J1); an input that is where another input's output goes is never written over with --overwrite (J2: the
    rule that leaves earlier outputs out had skipped the "input itself" check, and a user's a.mp4 was replaced); a
    stopped --overwrite run says to put --skip-existing in its place, not beside it (J5)."""
    src = make_clip(tmp_path / "a.mp4", audio=False, seconds=0.3)
    out = tmp_path / "out"
    assert run("upscale-video", src, "-o", out, "-m", MODEL, "--frames", "3", "-q").exit_code == 0
    look = (out / "a_x4.mp4").read_bytes()
    res = run("upscale-video", src, "-o", out, "-m", MODEL, "--skip-existing")
    assert res.exit_code == 1 and "is not an output of a.mp4 at 256x192 of 9 frame(s)" in res.output, res.output
    assert (out / "a_x4.mp4").read_bytes() == look
    res = run("upscale-video", src, "-o", out, "-m", MODEL, "--skip-existing", "--frames", "3")  # (what it is)
    assert res.exit_code == 0 and "1 already there, left as they were" in res.output, res.output
    # J2: a.mkv's output, with no suffix and an .mp4 container, is a.mp4, which is also an input
    other = make_clip(tmp_path / "a.mkv", audio=False, seconds=0.12)
    mine = src.read_bytes()
    res = run("upscale-video", src, other, "-o", tmp_path, "--suffix", "", "--container", "mp4", "--overwrite")
    assert res.exit_code == 1 and f"{src} is the input itself" in res.output, res.output
    twin = tmp_path / "a_x4.mp4"  # a video of the user's that bears the name a.mp4's output would have
    twin.write_bytes(mine)
    res = run("upscale-video", src, twin, "-o", tmp_path, "-m", MODEL, "--overwrite")
    assert res.exit_code == 1 and f"{twin} is an input, and where this command writes {src}'s output" in res.output
    assert src.read_bytes() == twin.read_bytes() == mine
    # J5
    count = []

    def stop_in_the_second() -> None:
        count.append(1)
        if len(count) == 9 + 2:
            errors.STOPS.append(signal.SIGINT)

    # (--skip-existing there would also keep the outputs the --overwrite run had not replaced yet: review 55M M3)
    with pytest.raises(Interrupted, match=r"run the same command again to go on from there; it makes a_x4.mp4 again, "
                                          r"finished before the stop$"):
        upscale_videos([src, make_clip(tmp_path / "b.mp4", audio=False, seconds=0.3)], out, UpscaleConfig(model=MODEL),
                       VideoConfig(overwrite=True), progress=stop_in_the_second)


def test_a_stop_between_two_videos_names_the_finished_ones_and_an_overwrite_goes_on_in_their_folder(tmp_path):
    """Review 55O: a stop as the second video opened (before its frame loop) had the generic "run the same command
    again for the rest", without --skip-existing, and a rerun then failed on the first as "exists" (O3); a finished
    video is told as it is made, so a stop cannot hide it; --overwrite run again over the clips' own folder, whose
    earlier outputs are among the inputs, leaves them out (they are the sources' outputs by size and time) rather than
    refusing the command (O2)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    first = make_clip(folder / "a.mp4", audio=False, seconds=0.12)
    second = make_clip(folder / "b.mp4", audio=False, seconds=0.12)
    told, opened = [], []

    def stop_as_the_second_opens(src, total, done) -> None:
        opened.append(src)
        if src == second:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=r"interrupted before a frame of b.mp4 was kept: run the same command again, "
                                          r"adding --skip-existing .* \(a_x4.mp4\)"):
        upscale_videos([first, second], folder, UpscaleConfig(model=MODEL), VideoConfig(),
                       on_start=stop_as_the_second_opens, on_written=told.append)
    assert told == [folder / "a_x4.mp4"]
    res = run("upscale-video", *sorted(folder.glob("*.mp4")), "-o", folder, "-m", MODEL, "--overwrite")
    assert res.exit_code == 0, res.output
    assert f"{folder / 'a_x4.mp4'} is left out: it is where this command writes a.mp4's output" in res.output
    assert sorted(p.name for p in folder.iterdir()) == ["a.mp4", "a_x4.mp4", "b.mp4", "b_x4.mp4"]


def test_a_longer_video_of_the_users_bearing_an_outputs_name_is_never_taken_for_that_output(tmp_path):
    """Review 55P: a video of the user's at 4x the source's size, copied in after it as a_x4.mp4, was taken for a.mp4's
    output by size and time alone: --overwrite replaced it (P1, HIGH), and --skip-existing left both out as done (P2).
    Its length (30 frames against the source's 4) says it is not, so it is refused with --overwrite and never kept."""
    folder = tmp_path / "clips"
    folder.mkdir()
    src = make_clip(folder / "a.mp4", audio=False, seconds=0.12)
    mine = make_clip(folder / "a_x4.mp4", size="256x192", seconds=1.0, audio=False)
    kept = mine.read_bytes()
    res = run("upscale-video", src, mine, "-o", folder, "-m", MODEL, "--overwrite")
    assert res.exit_code == 1 and f"{mine} is an input, and where this command writes {src}'s output" in res.output
    res = run("upscale-video", src, "-o", folder, "-m", MODEL, "--skip-existing")
    assert res.exit_code == 1 and "already there" not in res.output and "is not an output of a.mp4" in res.output
    assert mine.read_bytes() == kept and sorted(p.name for p in folder.iterdir()) == ["a.mp4", "a_x4.mp4"]


def test_a_variable_rate_clip_without_a_duration_has_its_output_kept_and_left_out(tmp_path):
    """A variable-rate Matroska file written to a pipe records no duration: its output, read at the nominal rate with
    the gaps filled, holds more frames than it has packets, and the length bound of 38cd32c refused it as not its
    output and upscaled it again when among the inputs (review 55Q Q2)."""
    folder = tmp_path / "clips"
    folder.mkdir()
    src = make_clip(tmp_path / "clip.mp4", rate="25", seconds=0.8, audio=False)
    piped = subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(src), "-map", "0:v", "-c", "copy",
                            "-bsf:v", "setts=ts=if(gte(N\\,10)\\,PTS*2-10*40\\,PTS)", "-f", "matroska", "pipe:1"],
                           capture_output=True, check=True).stdout
    vfr = folder / "s.mkv"
    vfr.write_bytes(piped)
    assert probe(vfr).frames_estimate is None  # (no duration)
    assert run("upscale-video", vfr, "-o", folder, "-m", MODEL, "-q").exit_code == 0
    assert (video_packets(folder / "s_x4.mkv") or 0) > 20  # (more frames than the 20 packets)
    res = run("upscale-video", *sorted(folder.glob("*.mkv")), "-o", folder, "-m", MODEL, "--skip-existing")
    assert res.exit_code == 0 and "1 already there, left as they were" in res.output, res.output
    assert f"{folder / 's_x4.mkv'} is left out" in res.output and sorted(p.name for p in folder.iterdir()) == [
        "s.mkv", "s_x4.mkv"]
