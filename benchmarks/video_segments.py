"""What ``lwayrt upscale-video``'s resumable segments cost in file size: the same frames encoded as one segment and
as segments of fewer frames.

Each segment is a file of its own, so it starts with a key (IDR) frame; x264 would otherwise place one every 250
frames (its default ``keyint``) or at a scene cut. ``upscale-video`` closes a segment after about 30 s of work
(``SEGMENT_SECONDS``) or 600 frames: on a CPU that is some 40-100 frames of HD output (0.3-0.7 s a frame,
``video_overhead_cpu.json``), on a fast GPU 600. The frames here are what such a run writes: a bundled photo enlarged
with bicubic (soft, like an SR network's output) panning 2 px a frame, 1280x720 at 30 fps, through
``lway_rt.io.video.SegmentWriter`` at the default ``--crf 18 --preset medium``, clean ("soft": the worst case, where
key frames are most of the bits) and with a fresh grain in every frame ("grain"). Per content and segment length: the
total size, its ratio to one segment, the encoding time and the Y-PSNR of the decoded frames against those given.

    .venv/bin/python benchmarks/video_segments.py --force   # rewrites benchmarks/results/video_segments_cpu.json

Without ``--out`` the script refuses to replace an existing default file unless given ``--force``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, parse_run_args, positive_int  # noqa: E402

LENGTHS = (0, 250, 150, 100, 50, 25)  # frames a segment; 0: all of them in one (250: x264's own key-frame interval)
CONTENTS = ("soft", "grain")


def make_frames(n: int, size: tuple[int, int] = (1280, 720), grain: float = 0.0) -> list[np.ndarray]:
    """``n`` frames of a bundled photo enlarged (bicubic) panning down 2 px a frame; ``grain``: the standard deviation
    of Gaussian noise added to each frame anew (8-bit levels), detail no frame predicts from the last."""
    from PIL import Image

    from lway_rt.io.images import bundled_photo

    w, h = size
    photo = Image.fromarray(bundled_photo("astronaut"))
    side = max(w, h + 2 * n)
    big = np.asarray(photo.resize((side, side), Image.BICUBIC))
    rng = np.random.default_rng(0)
    frames = [np.ascontiguousarray(big[2 * i:2 * i + h, :w]) for i in range(n)]
    if grain:
        frames = [np.clip(f + rng.normal(0, grain, f.shape), 0, 255).round().astype(np.uint8) for f in frames]
    return frames


def _decoded(path: Path, size: tuple[int, int]) -> np.ndarray:
    from lway_rt.io.video import ffmpeg_exe

    raw = subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt",
                          "rgb24", "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size[1], size[0], 3)


def _y_psnr(a: np.ndarray, b: np.ndarray) -> float:
    luma = np.array([0.299, 0.587, 0.114])
    mse = float(np.mean((a.astype(np.float64) @ luma - b.astype(np.float64) @ luma) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def encode(frames: list[np.ndarray], length: int, folder: Path, crf: int, preset: str) -> dict:
    """``frames`` through ``SegmentWriter`` in segments of ``length`` (0: one); their sizes, time and quality."""
    from lway_rt.io.video import SegmentWriter, VideoInfo

    h, w = frames[0].shape[:2]
    info = VideoInfo(width=w, height=h, rate=Fraction(30), duration=None, matrix="bt709", tagged=True,
                     primaries="bt709", transfer="bt709", depth=8, sar=(1, 1), codec="h264", audio=0, subtitles=0)
    folder.mkdir()
    per = length or len(frames)
    t0 = time.perf_counter()
    paths = []
    for start in range(0, len(frames), per):
        writer = SegmentWriter(folder / f"segment_{len(paths):05d}.mp4", info, (w, h), crf, preset)
        for f in frames[start:start + per]:
            writer.write(f)
        writer.close()
        paths.append(writer.dest)
    seconds = time.perf_counter() - t0
    decoded = np.concatenate([_decoded(p, (w, h)) for p in paths])
    assert len(decoded) == len(frames), (len(decoded), len(frames))
    psnr = float(np.mean([_y_psnr(d, f) for d, f in zip(decoded, frames)]))
    return {"segment_frames": per, "segments": len(paths), "bytes": sum(p.stat().st_size for p in paths),
            "encode_s": round(seconds, 2), "y_psnr_db": round(psnr, 3)}


def main(argv=None) -> int:
    from lway_rt.bench.machine import load_average, write_benchmark_record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/video_segments_cpu.json")
    ap.add_argument("--frames", type=positive_int, default=500)
    ap.add_argument("--grain", type=float, default=3.0, help="the grain content's noise (8-bit levels)")
    ap.add_argument("--width", type=positive_int, default=1280)
    ap.add_argument("--height", type=positive_int, default=720)
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--preset", default="medium")
    ap.set_defaults(threads=None)  # (x264 takes the cores itself)
    args = parse_run_args(ap, argv)
    load_start = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for content in CONTENTS:
            frames = make_frames(args.frames, (args.width, args.height), args.grain if content == "grain" else 0.0)
            first = None
            for length in LENGTHS:
                if length >= args.frames:
                    continue
                row = {"content": content, **encode(frames, length, Path(tmp) / f"{content}{length}", args.crf,
                                                    args.preset)}
                first = first or row
                row["size_over_one_segment"] = round(row["bytes"] / first["bytes"], 4)
                rows.append(row)
                print(f"{content}, segments of {row['segment_frames']} frames ({row['segments']}): "
                      f"{row['bytes'] / 1e6:.2f} MB ({row['size_over_one_segment']:.3f}x), {row['encode_s']:.1f} s, "
                      f"Y-PSNR {row['y_psnr_db']:.2f} dB", flush=True)
    write_benchmark_record(args.out, "lway_rt.video-segments/1", load_start, {},
                           frames=args.frames, size=[args.width, args.height], rate=30, grain=args.grain,
                           encoder={"codec": "libx264", "crf": args.crf, "preset": args.preset}, rows=rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
