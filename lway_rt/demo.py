"""The demo behind ``lwayrt demo``: real pretrained SR models on bundled photos, measured.

Takes crops of scikit-image's bundled photos as ground truth (HR), makes x4 low-resolution inputs
by bicubic downscaling (the classic SR benchmark degradation), upscales them with pretrained
models imported from the packaged ncnn weights, and scores each result against bicubic
upscaling with Y-channel PSNR/SSIM (border of ``scale`` pixels cropped, as the SR literature
does). Writes every image and a side-by-side comparison per photo, plus ``results.json``.

``run_demo`` tells the whole story: this comparison, then LWay adaptation of a real pretrained
model on the same bundled photos degraded with a preset stage 1 never trained on, scored against
the ground truth only afterwards, beside the identity-R control (``lway_rt.adapt.demo``), then the
adapted network exported to ONNX, run from that file with ONNX Runtime and timed against PyTorch
(``lway_rt.deploy_demo``). Each step is a function of its config.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lway_rt.errors import InputError, Interrupted, OutputError

__all__ = ["PHOTOS", "DemoConfig", "PhotoResult", "DemoResult", "sample_photo", "make_lr", "run_upscale_demo", "run_demo"]

#: bundled photos the demo knows, with the top-left corner of an interesting crop (row, col)
PHOTOS: dict[str, tuple[int, int]] = {
    "astronaut": (100, 150),  # face, hair, suit fabric
    "chelsea": (20, 110),  # cat fur and whiskers
    "coffee": (80, 170),  # cup rim, saucer, wood grain
    "rocket": (60, 200),  # gantry lattice, trees
}


@dataclass(frozen=True)
class DemoConfig:
    out_dir: Path = Path("demo_out")
    photos: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket")
    models: tuple[str, ...] = ("realsr-df2k-x4", "realesr-animevideov3")
    crop: int = 256
    scale: int = 4

    def __post_init__(self):
        unknown = [p for p in self.photos if p not in PHOTOS]
        if unknown:
            raise InputError(f"unknown demo photo(s) {', '.join(unknown)}: choose from {', '.join(PHOTOS)}")
        if not self.photos or not self.models:
            raise InputError("the demo needs at least one photo and one model")
        if self.crop % self.scale or self.crop < 16 * self.scale:
            raise InputError(f"--crop must be a multiple of {self.scale} and at least {16 * self.scale}")


@dataclass
class PhotoResult:
    photo: str
    psnr: dict[str, float] = field(default_factory=dict)  # method -> Y-PSNR (dB)
    ssim: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoResult:
    config: DemoConfig
    photos: list[PhotoResult]
    methods: list[str]

    def mean(self, metric: str, method: str) -> float:
        return float(np.mean([getattr(r, metric)[method] for r in self.photos]))


def sample_photo(name: str, crop: int) -> np.ndarray:
    """An HxWx3 uint8 crop of one of scikit-image's bundled photos."""
    from lway_rt.io.images import bundled_photo

    img = bundled_photo(name, feature="the demo's bundled photos")
    r, c = PHOTOS[name]
    r, c = min(r, img.shape[0] - crop), min(c, img.shape[1] - crop)
    if r < 0 or c < 0:
        raise InputError(f"photo {name} ({img.shape[1]}x{img.shape[0]}) is smaller than the {crop}px crop")
    return np.ascontiguousarray(img[r:r + crop, c:c + crop])


def make_lr(hr: np.ndarray, scale: int) -> np.ndarray:
    """x``scale`` bicubic downscaling in 8 bits, the degradation of the classic SR benchmarks."""
    from lway_rt.io.images import resize_bicubic

    h, w = hr.shape[:2]
    return resize_bicubic(hr, (w // scale, h // scale))


def _labelled_strip(images: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Side-by-side images of equal size with a caption band above each."""
    from PIL import Image, ImageDraw

    h, w = images[0].shape[:2]
    band, gap = 22, 4
    canvas = Image.new("RGB", (len(images) * w + (len(images) - 1) * gap, h + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (img, label) in enumerate(zip(images, labels)):
        x = i * (w + gap)
        canvas.paste(Image.fromarray(img), (x, band))
        draw.text((x + 4, 4), label, fill=(0, 0, 0))
    return np.asarray(canvas)


def run_upscale_demo(config: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> DemoResult:
    """Upscale LR crops of bundled photos with each model; score against bicubic; write images."""
    import torch

    from lway_rt.io.images import resize_bicubic, to_uint8, write_image
    from lway_rt.io.store import SOURCES, load_model, store_path
    from lway_rt.io.weights import atomic_write_bytes
    from lway_rt.metrics import psnr_y, ssim_y
    from lway_rt.runtime.tiling import TileConfig
    from lway_rt.upscale import upscale_rgb

    out = Path(config.out_dir)
    descs = {}
    for name in config.models:
        if name in SOURCES and not store_path(name).exists():
            log(f"importing {name} into the model store ({store_path(name).parent}) ...")
        desc = load_model(name)
        if desc.scale != config.scale:
            raise InputError(f"model {name} is x{desc.scale}; the demo compares x{config.scale} models")
        descs[name] = desc
    s = config.scale
    results = []
    for photo in config.photos:
        hr = sample_photo(photo, config.crop)
        lr = make_lr(hr, s)
        res = PhotoResult(photo)
        t0 = time.perf_counter()
        outputs = {"bicubic": resize_bicubic(lr, (hr.shape[1], hr.shape[0]))}
        res.seconds["bicubic"] = time.perf_counter() - t0
        for name, desc in descs.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                outputs[name] = to_uint8(upscale_rgb(desc, lr.astype(np.float32) / 255.0, TileConfig(0)))
            res.seconds[name] = time.perf_counter() - t0
        for method, img in outputs.items():
            res.psnr[method] = psnr_y(img, hr, crop_border=s)
            res.ssim[method] = ssim_y(img, hr, crop_border=s)
        files = {"hr": hr, "lr": lr, **outputs}
        for key, img in files.items():
            path = out / f"{photo}_{key}.png"
            write_image(path, img.astype(np.float32) / 255.0)
            res.files[key] = str(path)
        lr_big = np.repeat(np.repeat(lr, s, axis=0), s, axis=1)  # nearest: show the input's real pixels
        labels = [f"LR x{s} (nearest)"] + [f"{m} {res.psnr[m]:.2f} dB" for m in outputs] + ["HR (ground truth)"]
        strip = _labelled_strip([lr_big, *outputs.values(), hr], labels)
        path = out / f"{photo}_compare.png"
        write_image(path, strip.astype(np.float32) / 255.0)
        res.files["compare"] = str(path)
        results.append(res)
        log(f"{photo}: " + ", ".join(f"{m} {res.psnr[m]:.2f} dB" for m in outputs))
    result = DemoResult(config, results, ["bicubic", *descs])
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "metric": f"Y-PSNR (dB) / SSIM, BT.601 luminance, {s}-pixel border cropped; LR = x{s} bicubic (Pillow)",
        "models": {n: {"source": d.source, "arch": d.arch, **{k: d.metadata[k] for k in ("source_package", "source_version")
                                                               if k in d.metadata}} for n, d in descs.items()},
        "photos": [asdict(r) for r in results],
        "mean": {m: {"psnr": result.mean("psnr", m), "ssim": result.mean("ssim", m)} for m in result.methods},
    }
    atomic_write_bytes(out / "results.json", json.dumps(summary, indent=2).encode())
    return result


# --------------------------------------------------------------------------------------------
# the demo's output folder

#: lists the files a demo wrote into its --out folder; marks the folder as the demo's own
MANIFEST = ".lwayrt-demo.json"


def _is_legacy_demo_folder(out: Path) -> bool:
    """A folder written by a demo from before the manifest: its results.json is the demo's."""
    try:
        summary = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"config", "metric", "photos", "mean"} <= summary.keys()


def claim_out_dir(out: Path, log: Callable[[str], None] = print) -> None:
    """Make ``out`` the demo's folder, or refuse it.

    A new or empty folder is taken. A folder an earlier demo wrote (its manifest, or a results.json of the demo's
    from before the manifest) is taken when it holds nothing but that demo's files, and those are removed first, so
    nothing of an older run with other options is left beside the new one. Any other file there is the user's, which
    the demo's fixed names (``results.json``, ``astronaut_hr.png`` ...) could replace: refused.

    Which files are a demo's: those its manifest lists. A demo that stopped (interrupt, error) listed every file it
    had written; one killed outright (``kill -9``) had listed what its finished steps wrote
    and, for the step it was in, the names (or the sub-folder) that step writes and when it began: a file there of
    that name written since is the demo's too; anything else (a file of the user's put in afterwards) is not.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder for the demo's images")
    present = {p for p in out.rglob("*") if p.is_file() or p.is_symlink()} if out.is_dir() else set()
    manifest = out / MANIFEST
    present.discard(manifest)
    listed: set[Path] = set()
    if manifest.is_file():
        try:
            record = json.loads(manifest.read_text())
            names = record["files"]
            assert isinstance(names, list) and all(isinstance(n, str) for n in names)
            pending = record.get("pending", [])
            assert isinstance(pending, list) and all(isinstance(n, str) for n in pending)
            since = float(record.get("since", manifest.stat().st_mtime))
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            raise InputError(f"{manifest} is unreadable, so which files in {out} are the demo's is unknown: "
                             "delete the folder or choose another --out") from None
        listed = {out / n for n in names if _inside(n)}
        if not record.get("complete", False):  # stopped part-way: what the step it was in wrote is its own too
            listed |= {p for p in present - listed if _written_by_step(p.relative_to(out), pending, since, p)}
    elif present and _is_legacy_demo_folder(out):
        listed = set(present)  # an older demo's folder: what is there is the demo's
    foreign = sorted(present - listed)
    if foreign:
        raise InputError(f"--out {out} holds {len(foreign)} file(s) that are not a demo's (e.g. "
                         f"{foreign[0].relative_to(out)}): the demo would write over same-named ones; choose a new "
                         "or empty folder, or move them out")
    removed = 0
    for path in sorted(listed & present):
        path.unlink()
        removed += 1
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if removed:
        log(f"removed the {removed} files of the earlier demo in {out}")
    out.mkdir(parents=True, exist_ok=True)
    begin_step(out, [])


def _inside(name: str) -> bool:
    return not Path(name).is_absolute() and ".." not in Path(name).parts


def _written_by_step(rel: Path, pending: list[str], since: float, path: Path) -> bool:
    """``rel`` is one of the names (a file, or anything under a folder) the stopped step writes, or the temporary
    file of one, and was written after the step began (a file moved in from elsewhere keeps its older date)."""
    try:
        if path.lstat().st_mtime < since - 2.0:  # 2 s: coarse file-system clocks
            return False
    except OSError:
        return False
    for name in filter(_inside, pending):
        p = Path(name)
        if rel == p or rel.parts[:len(p.parts)] == p.parts and len(rel.parts) > len(p.parts):
            return True
        if rel.parent == p.parent and rel.name.startswith(f".{p.name}.") and rel.name.endswith(".tmp"):
            return True  # an atomic write cut short
    return False


def _write_manifest(out: Path, record: dict) -> None:
    from lway_rt.io.weights import atomic_write_bytes

    atomic_write_bytes(out / MANIFEST, json.dumps(record, indent=1).encode())


def _demo_files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*")
                  if (p.is_file() or p.is_symlink()) and p != out / MANIFEST)


def begin_step(out: Path, pending: list[str]) -> None:
    """Before a step of the demo writes into ``out``: list what is there (the earlier steps' files: the folder was
    taken empty or the demo's own) and the names this step writes (a file, or a sub-folder), with the time."""
    out = Path(out)
    _write_manifest(out, {"files": _demo_files(out), "complete": False, "pending": list(pending), "since": time.time()})


def record_out_dir(out: Path, complete: bool = True) -> None:
    """List what the demo wrote into ``out`` (it took the folder empty or its own, so: everything there); a demo
    that stopped lists it as not complete (a rerun starts over), with no step pending."""
    out = Path(out)
    _write_manifest(out, {"files": _demo_files(out), "complete": complete} | ({} if complete else {"pending": []}))


def upscale_demo_files(config: "DemoConfig") -> list[str]:
    """The names ``run_upscale_demo`` writes into its folder."""
    keys = ("hr", "lr", "bicubic", *config.models, "compare")
    return [f"{photo}_{key}.png" for photo in config.photos for key in keys] + ["results.json"]


def _under(folder: Path, out: Path) -> list[str]:
    try:
        return [str(Path(folder).resolve().relative_to(Path(out).resolve()))]
    except ValueError:
        return []  # outside the demo's folder: not the demo folder's business


# --------------------------------------------------------------------------------------------
# the whole story


def run_demo(config: DemoConfig = DemoConfig(), adapt_config=None, log: Callable[[str], None] = print,
             deploy: bool = False):
    """Upscale comparison, then (unless ``adapt_config`` is None) the adaptation step, then (with ``deploy``) the
    adapted network exported, run from its ONNX file and timed (``lway_rt.deploy_demo``, into ``out_dir/deploy``).

    ``adapt_config`` is a ``lway_rt.adapt.demo.AdaptDemoConfig``; returns (DemoResult, AdaptDemoResult or None,
    DeployDemoResult or None).
    """
    from lway_rt.io.store import SOURCES, resolve_model_path, store_path
    from lway_rt.io.weights import check_file_destination, exclusive_run

    for name in dict.fromkeys((*config.models, *([adapt_config.model] if adapt_config is not None else []))):
        if name in SOURCES and not store_path(name).exists():
            log(f"importing {name} into the model store ({store_path(name).parent}) ...")
        resolve_model_path(name)  # an unknown model is refused before the folder is touched
    if adapt_config is not None and adapt_config.stage1:  # and a --stage1 that will not load, before the comparisons
        from lway_rt.degae import load_stage1

        load_stage1(adapt_config.stage1)
    check_file_destination(Path(config.out_dir), "--out")  # a file on the way: refused before any work
    out = Path(config.out_dir).resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out.parent}: {exc.strerror or exc}; choose another --out") from None
    with exclusive_run(out.parent / f".{out.name}.lock", "--out"):  # two demos into one folder: the second refused
        try:
            return _run_demo_locked(config, adapt_config, log, deploy)
        except (KeyboardInterrupt, Interrupted):  # the steps' own advice (adapt's --resume) is not the demo's
            raise Interrupted(f"demo interrupted: run it again with the same --out; it starts over and replaces what "
                              f"this one left in {config.out_dir}") from None


def _run_demo_locked(config, adapt_config, log, deploy):
    claim_out_dir(config.out_dir, log=log)
    try:
        return _run_demo_steps(config, adapt_config, log, deploy)
    except BaseException:
        # stopped (Ctrl-C, SIGTERM) or failed: under the lock, in a folder claimed as the demo's, everything there
        # now is the demo's; listing it by name means a file the user puts there afterwards is not taken for the
        # stopped step's (a whole sub-folder, matched by date, would take it and the rerun would delete it)
        record_out_dir(config.out_dir, complete=False)
        raise


def _run_demo_steps(config, adapt_config, log, deploy):
    begin_step(config.out_dir, upscale_demo_files(config))
    upscaled = run_upscale_demo(config, log=log)
    adapted = deployed = None
    if adapt_config is not None:
        from lway_rt.adapt.demo import run_adapt_demo

        log("")
        log(f"adaptation: {adapt_config.model} on {len(adapt_config.photos)} crops degraded with "
            f"'{adapt_config.preset}' (a degradation stage 1 never trained on)")
        begin_step(config.out_dir, _under(adapt_config.out_dir, config.out_dir))
        adapted = run_adapt_demo(adapt_config, log=log)
        if deploy:
            from lway_rt.deploy_demo import DeployDemoConfig, run_deploy_demo

            log("")
            log("deployment: the adapted network as ONNX, run with ONNX Runtime, timed against PyTorch")
            run_dir = Path(adapted.files["weights"]).parent
            begin_step(config.out_dir, _under(Path(config.out_dir) / "deploy", config.out_dir))
            deployed = run_deploy_demo(DeployDemoConfig(weights=Path(adapted.files["weights"]),
                                                        lr_dir=Path(adapt_config.out_dir) / "lr", sr_dir=run_dir / "sr",
                                                        out_dir=Path(config.out_dir) / "deploy"), log=log)
    record_out_dir(config.out_dir)
    return upscaled, adapted, deployed
