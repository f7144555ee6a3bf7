"""What ``lwayrt upscale-video`` costs beyond the model: decoding, the YUV-RGB conversions, x264 and the mux.

A clip of a bundled photo panning (each frame differs), with a tone for audio, is upscaled twice per round, side by
side in one process: the model alone on its decoded frames (``upscale_image``, what ``upscale-video`` calls per
frame, with the frames decoded beforehand and not timed), and ``upscale_videos`` end to end (decoding, the model,
x264 at the default ``--crf 18 --preset medium``, segments and the mux with the audio). The rounds alternate which
goes first, so load drift on a shared machine falls on both; the medians are kept.

    .venv/bin/python benchmarks/video_overhead.py --force   # rewrites benchmarks/results/video_overhead_cpu.json

Without ``--out`` the script refuses to replace an existing default file unless given ``--force``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
from _args import add_out, add_threads, parse_run_args, positive_int  # noqa: E402

SIZES = ((320, 180), (480, 270))  # LR frame sizes: x4 gives 1280x720 and 1920x1080


def make_clip(path: Path, size: tuple[int, int], frames: int, rate: int = 25) -> None:
    from lway_rt.io.images import bundled_photo
    from lway_rt.io.video import ffmpeg_exe

    w, h = size
    photo = bundled_photo("astronaut")
    photo = np.kron(photo, np.ones((2, 2, 1), np.uint8)) if photo.shape[0] < h + 2 * frames else photo
    raw = b"".join(np.ascontiguousarray(photo[2 * i:2 * i + h, :w]).tobytes() for i in range(frames))
    subprocess.run([ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                    f"{w}x{h}", "-framerate", str(rate), "-i", "pipe:0", "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={frames / rate}", "-c:a", "aac", "-c:v", "libx264", "-crf", "18",
                    "-pix_fmt", "yuv420p", str(path)], input=raw, check=True)


def main(argv=None) -> int:
    from lway_rt.bench.machine import load_average, write_benchmark_record
    from lway_rt.io.images import LoadedImage
    from lway_rt.io.video import probe, read_frames
    from lway_rt.upscale import UpscaleConfig, prepare_run, upscale_image
    from lway_rt.video import VideoConfig, upscale_videos

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_out(ap, ROOT / "benchmarks/results/video_overhead_cpu.json")
    ap.add_argument("--model", default="realesr-animevideov3")
    ap.add_argument("--frames", type=positive_int, default=12)
    ap.add_argument("--rounds", type=positive_int, default=2)
    add_threads(ap)
    args = parse_run_args(ap, argv)
    load_start = load_average()
    config = UpscaleConfig(model=args.model)
    config, desc, _, cap, _ = prepare_run(config)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in SIZES:
            src = Path(tmp) / f"clip_{size[0]}x{size[1]}.mp4"
            make_clip(src, size, args.frames)
            frames = [f.astype(np.float32) / 255 for f in read_frames(src, probe(src))]
            times: dict[str, list[float]] = {"model": [], "video": []}
            for r in range(args.rounds):
                for what in (("model", "video") if r % 2 == 0 else ("video", "model")):
                    t0 = time.perf_counter()
                    if what == "model":
                        for f in frames:
                            upscale_image(desc, LoadedImage(f), config, cap)
                    else:
                        report = upscale_videos([src], Path(tmp) / f"out{r}", config, VideoConfig())
                        assert report.written and report.frames == len(frames), report
                    times[what].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"lr_size": list(size), "frames": len(frames), "rounds": args.rounds,
                   "median_s": {k: round(v, 3) for k, v in med.items()},
                   "per_frame_s": {k: round(v / len(frames), 3) for k, v in med.items()},
                   "video_over_model": round(med["video"] / med["model"], 3)}
            rows.append(row)
            print(f"{size[0]}x{size[1]} x{desc.scale}, {len(frames)} frames: model {row['per_frame_s']['model']:.2f} s "
                  f"a frame, upscale-video {row['per_frame_s']['video']:.2f} s ({row['video_over_model']:.2f}x)",
                  flush=True)
    write_benchmark_record(args.out, "lway_rt.video-overhead/1", load_start, {"torch_threads": torch.get_num_threads()},
                           model=args.model, encoder={"codec": "libx264", "crf": 18, "preset": "medium"}, rows=rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
