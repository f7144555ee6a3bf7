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
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lway_rt.errors import InputError, Interrupted, OutputError

__all__ = ["PHOTOS", "DemoConfig", "PhotoResult", "DemoResult", "sample_photo", "make_lr", "model_labels",
           "run_upscale_demo", "run_demo"]

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
        # a photo or model given twice is one (a second pass wrote over the first's files and counted twice)
        object.__setattr__(self, "photos", tuple(dict.fromkeys(self.photos)))
        object.__setattr__(self, "models", tuple(dict.fromkeys(str(m) for m in self.models)))
        unknown = [p for p in self.photos if p not in PHOTOS]
        if unknown:
            raise InputError(f"unknown demo photo(s) {', '.join(unknown)}: choose from {', '.join(PHOTOS)}")
        if not self.photos or not self.models:
            raise InputError("the demo needs at least one photo and one model")
        if self.crop % self.scale or self.crop < 16 * self.scale:
            raise InputError(f"--crop must be a multiple of {self.scale} and at least {16 * self.scale}")
        from lway_rt.io.images import bundled_photo

        for name in self.photos:  # checked before any work (and before an earlier demo's files are removed)
            h, w = bundled_photo(name, feature="the demo's bundled photos").shape[:2]
            if self.crop > min(h, w):
                most = min(h, w) // self.scale * self.scale
                raise InputError(f"--crop {self.crop} is larger than photo {name} ({w}x{h}): use at most {most}")


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


#: the names besides the models' in the upscale step's file names (PHOTO_KEY.png) and tables
_RESERVED_KEYS = ("hr", "lr", "bicubic", "compare")


def model_labels(models) -> dict[str, str]:
    """Each model (a store name or a path to weights) -> its label in the demo's file names, tables and results:
    a store name as it is, a file its stem (``/x/tiny_x4.pth`` -> ``tiny_x4``), made safe as a file name and unique
    (``-2``, ``-3`` ...). results.json records which model each label stands for."""
    import re

    from lway_rt.io.store import WEIGHT_SUFFIXES

    taken = {k.lower() for k in _RESERVED_KEYS}
    labels: dict[str, str] = {}
    for spec in dict.fromkeys(str(m) for m in models):
        base = re.split(r"[\\/]", spec.rstrip("/\\"))[-1]  # a path: its file (or folder)
        if Path(base).suffix.lower() in WEIGHT_SUFFIXES:  # ... without the suffix
            base = base[:-len(Path(base).suffix)]
        base = re.sub(r"[^A-Za-z0-9._+-]", "_", base).lstrip(".")[:64] or "model"
        label, n = base, 1
        while label.lower() in taken:  # lower: one file on a file system that folds case
            n += 1
            label = f"{base}-{n}"
        taken.add(label.lower())
        labels[spec] = label
    return labels


def _load_logged(name: str, log: Callable[[str], None]):
    """``load_model``, saying so when a packaged model is imported into the store first."""
    from lway_rt.io.store import SOURCES, load_model, store_path

    if name in SOURCES and not store_path(name).exists():
        log(f"importing {name} into the model store ({store_path(name).parent}) ...")
    return load_model(name)


def _load_demo_model(name: str, scale: int, log: Callable[[str], None], desc=None):
    """Load a model the demo compares (``desc``: loaded already), refusing one of another scale."""
    desc = desc if desc is not None else _load_logged(name, log)
    if desc.scale != scale:
        raise InputError(f"model {name} is x{desc.scale}; the demo compares x{scale} models: pass x{scale} ones "
                         "(e.g. realesr-animevideov3)")
    return desc


def _label_lines(draw, label: str, width: int) -> list[str]:
    """``label`` in lines that fit ``width`` pixels: broken at spaces, a word wider than a line after its hyphens
    and then where it must (every letter kept: two models' names cut short could read alike)."""
    def fits(text: str) -> bool:
        return draw.textlength(text) <= width

    pieces: list[tuple[str, bool]] = []  # (text, whether a space goes before it)
    for word in label.split():
        parts = [p for p in re.split(r"(?<=-)", word) if p] if not fits(word) else [word]
        for k, part in enumerate(parts):
            spaced = k == 0
            while not fits(part) and len(part) > 1:  # the longest head that fits, then the rest
                cut = max((n for n in range(1, len(part)) if fits(part[:n])), default=1)
                pieces.append((part[:cut], spaced))
                part, spaced = part[cut:], False
            pieces.append((part, spaced))
    lines: list[str] = []
    for text, spaced in pieces:
        joined = f"{lines[-1]}{' ' if spaced else ''}{text}" if lines else text
        if lines and fits(joined):
            lines[-1] = joined
        else:
            lines.append(text)
    return lines or [""]


def _labelled_strip(images: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Side-by-side images of equal size with a caption band above each (a caption wider than its image on as many
    lines as it needs)."""
    from PIL import Image, ImageDraw

    h, w = images[0].shape[:2]
    gap, line = 4, 12
    from lway_rt.adapt.visual import label_font

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    measure.font = label_font()  # (the contact sheet's font: 58G-3; model labels are ASCII, as they name files)
    wrapped = [_label_lines(measure, label, w - 8) for label in labels]
    band = 10 + line * max(len(lines) for lines in wrapped)
    canvas = Image.new("RGB", (len(images) * w + (len(images) - 1) * gap, h + band), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.font = measure.font
    for i, (img, lines) in enumerate(zip(images, wrapped)):
        x = i * (w + gap)
        canvas.paste(Image.fromarray(img), (x, band))
        for k, text in enumerate(lines):
            draw.text((x + 4, 4 + line * k), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def run_upscale_demo(config: DemoConfig | None = None, log: Callable[[str], None] = print,
                     loaded: dict | None = None) -> DemoResult:
    """Upscale LR crops of bundled photos with each model; score against bicubic; write images.

    ``loaded``: model -> descriptor of models already loaded and checked (``run_demo`` loads them before it takes
    the folder); the others are loaded here. Methods, files and results are keyed by ``model_labels``."""
    import torch

    from lway_rt.io.images import resize_bicubic, to_uint8, write_image
    from lway_rt.io.weights import atomic_write_json
    from lway_rt.metrics import psnr_y, ssim_y
    from lway_rt.runtime.tiling import TileConfig
    from lway_rt.upscale import upscale_rgb

    config = config if config is not None else DemoConfig()
    out = Path(config.out_dir)
    label_of = model_labels(config.models)
    descs = {}  # label -> descriptor
    for name in config.models:
        desc = _load_demo_model(name, config.scale, log, (loaded or {}).get(name))
        descs[label_of[name]] = desc
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
        "models": {label: {"model": name, "source": descs[label].source, "arch": descs[label].arch,
                           **{k: descs[label].metadata[k] for k in ("source_package", "source_version")
                              if k in descs[label].metadata}} for name, label in label_of.items()},
        "photos": [asdict(r) for r in results],
        "mean": {m: {"psnr": result.mean("psnr", m), "ssim": result.mean("ssim", m)} for m in result.methods},
    }
    atomic_write_json(out / "results.json", summary)
    return result


# --------------------------------------------------------------------------------------------
# the demo's output folder

#: lists the files a demo wrote into its --out folder; marks the folder as the demo's own
MANIFEST = ".lwayrt-demo.json"


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _strings(value) -> list[str]:
    """The strings of a list (or the keys of a dict) read from a JSON file; nothing for anything else."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, (list, dict)) else []


def _is_legacy_demo_folder(out: Path) -> bool:
    """A folder written by a demo from before the manifest: its results.json is the demo's."""
    summary = _read_json(out / "results.json")
    return isinstance(summary, dict) and {"config", "metric", "photos", "mean"} <= summary.keys()


def _legacy_demo_names(out: Path) -> list[str]:
    """The names a demo from before the manifest wrote into ``out``, by what its results.json records: the upscale
    step's images of its photos and models (named by label, or by the model as given, as older demos did), and in
    ``adapt/`` and ``deploy/``, where their results.json are the demo's steps', the names those steps write."""
    from lway_rt.adapt.demo import adapt_demo_files

    summary = _read_json(out / "results.json")
    config = summary.get("config") if isinstance(summary.get("config"), dict) else {}
    models = _strings(config.get("models"))
    photos, keys = set(_strings(config.get("photos"))), {*_RESERVED_KEYS, *models, *model_labels(models).values()}
    for entry in summary.get("photos") if isinstance(summary.get("photos"), list) else []:
        if isinstance(entry, dict):
            photos |= set(_strings([entry.get("photo")]))
            keys |= set(_strings(entry.get("psnr"))) | set(_strings(entry.get("files")))
    names = ["results.json", *(f"{p}_{k}.png" for p in sorted(photos) for k in sorted(keys))]
    adapt = _read_json(out / "adapt" / "results.json")
    if isinstance(adapt, dict) and {"config", "metric", "psnr", "mean_psnr"} <= adapt.keys():
        a_config = adapt.get("config") if isinstance(adapt.get("config"), dict) else {}
        a_photos = sorted(set(_strings(a_config.get("photos"))) | set(_strings(adapt.get("psnr"))))
        names += [f"adapt/{n}" for n in adapt_demo_files(a_photos)]
    deploy = _read_json(out / "deploy" / "results.json")
    if isinstance(deploy, dict) and {"onnx", "parity", "serve_bench"} <= deploy.keys():
        onnx = [Path(p).name for p in _strings(list(deploy["onnx"].values()) if isinstance(deploy["onnx"], dict)
                                                else [])]
        names += [f"deploy/{n}" for n in ("results.json", "serve_bench.json", "serve_bench.png",
                                           *onnx, *(str(Path(n).with_suffix(".json")) for n in onnx))]
    return [n for n in names if _inside(n)]


def _is_manifest_temp(rel: Path) -> bool:
    return len(rel.parts) == 1 and rel.name.startswith(f".{MANIFEST}.") and rel.name.endswith(".tmp")


def claim_out_dir(out: Path, log: Callable[[str], None] = print, check_only: bool = False) -> None:
    """Make ``out`` the demo's folder, or refuse it (the caller holds the folder's lock: no other demo writes there).

    A new or empty folder is taken. A folder an earlier demo wrote (its manifest, or a results.json of the demo's
    from before the manifest) is taken when it holds nothing but that demo's files, and those are removed first, so
    nothing of an older run with other options is left beside the new one. Any other file there is the user's, which
    the demo's fixed names (``results.json``, ``astronaut_hr.png`` ...) could replace: refused.

    Which files are a demo's: those its manifest lists. A demo that stopped (interrupt, error) listed every file it
    had written; one killed outright (``kill -9``) had listed what its finished steps wrote
    and, for the step it was in, the names (or the sub-folder) that step writes and when it began: a file there of
    that name written since is the demo's too; anything else (a file of the user's put in afterwards) is not. A
    folder without a manifest: the names that demo writes (``_legacy_demo_names``), nothing else. Folders the removal
    empties go too; a folder that was empty already (the user's) stays. ``check_only``: the refusal alone, nothing
    removed (said before the minutes of loading models, without the lock; the claim under the lock checks again).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder for the demo's images")
    if out.is_dir():  # the manifest's temporary file of a demo killed (kill -9) while it wrote it
        from lway_rt.io.weights import sweep_stale_temps, temp_stem

        sweep_stale_temps(out, f".{temp_stem(MANIFEST)}.", ".tmp")
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
        # under the lock no demo writes the manifest now: a temporary file of it is a killed demo's (one whose writer
        # the sweep above could not tell gone: a process id in use again)
        listed |= {p for p in present if _is_manifest_temp(p.relative_to(out))}
    elif present and _is_legacy_demo_folder(out):  # an older demo's folder: the names that demo writes
        names = _legacy_demo_names(out)
        listed = {p for p in present if _matches(p.relative_to(out), names)}
    foreign = sorted(present - listed)
    if foreign:
        raise InputError(f"--out {out} holds {len(foreign)} file(s) that are not a demo's (e.g. "
                         f"{foreign[0].relative_to(out)}): the demo would write over same-named ones; choose a new "
                         "or empty folder, or move them out")
    if check_only:
        return
    removed, emptied = 0, set()
    for path in sorted(listed & present):
        path.unlink()
        removed += 1
        emptied.add(path.parent)
    for d in sorted(emptied, key=lambda p: len(p.parts), reverse=True):  # the folders this removal emptied
        while d != out and out in d.parents and d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
    if removed:
        log(f"removed the {removed} files of the earlier demo in {out}")
    out.mkdir(parents=True, exist_ok=True)
    _write_manifest(out, {"files": [], "complete": False, "pending": [], "since": time.time()})


def _inside(name: str) -> bool:
    return not Path(name).is_absolute() and ".." not in Path(name).parts


def _matches(rel: Path, names: list[str]) -> bool:
    """``rel`` is one of ``names`` (a file, or anything under a folder), or the temporary file of one."""
    for name in filter(_inside, names):
        p = Path(name)
        if rel == p or rel.parts[:len(p.parts)] == p.parts and len(rel.parts) > len(p.parts):
            return True
        if rel.parent == p.parent and rel.name.startswith(f".{p.name}.") and rel.name.endswith(".tmp"):
            return True  # an atomic write cut short
    return False


def _written_by_step(rel: Path, pending: list[str], since: float, path: Path) -> bool:
    """``rel`` is one of the names (a file, or anything under a folder) the stopped step writes, or the temporary
    file of one, and was written after the step began (a file moved in from elsewhere keeps its older date)."""
    try:
        if path.lstat().st_mtime < since - 2.0:  # 2 s: coarse file-system clocks
            return False
    except OSError:
        return False
    return _matches(rel, pending)


def _write_manifest(out: Path, record: dict) -> None:
    from lway_rt.io.weights import atomic_write_bytes

    atomic_write_bytes(out / MANIFEST, json.dumps(record, indent=1).encode())


def _demo_files(out: Path) -> list[str]:
    """What the demo has written into ``out``: the files its manifest lists (the finished steps') and those of the
    names the step it is in writes (a file of such a name: the step wrote it into a folder it took empty; in a
    sub-folder of such a name, or a temporary file of one: written since the step began). Not a file the user put
    there meanwhile under another name (or moved into the step's sub-folder, with its older date): that stays the
    user's, so the next demo refuses the folder rather than deleting it."""
    record = _read_json(out / MANIFEST)
    record = record if isinstance(record, dict) else {}
    names, pending, since = set(_strings(record.get("files"))), _strings(record.get("pending")), record.get("since")
    files = set()
    for p in out.rglob("*"):
        if not (p.is_file() or p.is_symlink()) or p == out / MANIFEST:
            continue
        rel = p.relative_to(out)
        if str(rel) in names or str(rel) in pending \
                or isinstance(since, (int, float)) and _written_by_step(rel, pending, since, p):
            files.add(str(rel))
    return sorted(files)


def begin_step(out: Path, pending: list[str]) -> None:
    """Before a step of the demo writes into ``out``: list what the earlier steps wrote there and the names this
    step writes (a file, or a sub-folder), with the time."""
    out = Path(out)
    _write_manifest(out, {"files": _demo_files(out), "complete": False, "pending": list(pending), "since": time.time()})


def record_out_dir(out: Path, complete: bool = True) -> None:
    """List what the demo's steps wrote into ``out`` (``_demo_files``); a demo that stopped lists it as not complete
    (a rerun starts over), with no step pending."""
    out = Path(out)
    _write_manifest(out, {"files": _demo_files(out), "complete": complete} | ({} if complete else {"pending": []}))


def upscale_demo_files(config: "DemoConfig") -> list[str]:
    """The names ``run_upscale_demo`` writes into its folder."""
    keys = ("hr", "lr", "bicubic", *model_labels(config.models).values(), "compare")
    return [f"{photo}_{key}.png" for photo in config.photos for key in keys] + ["results.json"]


def _under(folder: Path, out: Path, names: list[str] | None = None) -> list[str]:
    """``folder`` (or ``names`` in it) relative to ``out``."""
    try:
        rel = Path(folder).resolve().relative_to(Path(out).resolve())
    except ValueError:
        return []  # outside the demo's folder: not the demo folder's business
    return [str(rel)] if names is None else [str(rel / n) for n in names]


# --------------------------------------------------------------------------------------------
# the whole story


def run_demo(config: DemoConfig | None = None, adapt_config=None, log: Callable[[str], None] = print,
             deploy: bool = False):
    """Upscale comparison, then (unless ``adapt_config`` is None) the adaptation step, then (with ``deploy``) the
    adapted network exported, run from its ONNX file and timed (``lway_rt.deploy_demo``, into ``out_dir/deploy``).

    ``adapt_config`` is a ``lway_rt.adapt.demo.AdaptDemoConfig``; returns (DemoResult, AdaptDemoResult or None,
    DeployDemoResult or None).
    """
    from lway_rt.io.weights import check_file_destination, exclusive_run

    config = config if config is not None else DemoConfig()
    check_file_destination(Path(config.out_dir), "--out")  # a file on the way: refused before any work
    claim_out_dir(Path(config.out_dir), log, check_only=True)  # a folder of the user's files: before the models load
    # every model loaded and checked (a file that does not load, an ONNX file, another scale) before the folder is
    # touched: an earlier demo's files are removed only for a run that can go ahead
    loaded = {name: _load_demo_model(name, config.scale, log) for name in config.models}
    if adapt_config is not None:
        from lway_rt.adapt.demo import check_adapt_model

        name = adapt_config.model
        check_adapt_model(name, loaded[name] if name in loaded else _load_logged(name, log))
    if deploy and adapt_config is not None:  # the deploy step's packages, before minutes of the other steps (56B6)
        _check_deploy_packages()
    if adapt_config is not None:  # and a stage 1 that will not load (a --stage1, or the shipped one's trunk without
        from lway_rt.degae import default_checkpoint_path, load_stage1, unfinished_note  # the models extra: 56K1),
        from lway_rt.io.store import PackageNotInstalled  # before the comparisons

        try:
            stage1 = load_stage1(adapt_config.stage1 or default_checkpoint_path())
        except PackageNotInstalled as exc:
            raise PackageNotInstalled(f"the adaptation step: {exc}, or pass --no-adapt") from None
        if adapt_config.stage1 and (note := unfinished_note(stage1, str(adapt_config.stage1))):  # as adapt says it
            log(note)
    out = Path(config.out_dir).resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out.parent}: {exc.strerror or exc}; choose another --out") from None
    with exclusive_run(out.parent / f".{out.name}.lock", "--out"):  # two demos into one folder: the second refused
        try:
            return _run_demo_locked(config, adapt_config, log, deploy, loaded)
        except (KeyboardInterrupt, Interrupted):  # the steps' own advice (adapt's --resume) is not the demo's
            raise Interrupted(f"demo interrupted: run it again with the same --out; it starts over and replaces what "
                              f"this one left in {config.out_dir}") from None


def _check_deploy_packages() -> None:
    """The packages the deploy step runs (the ONNX export, its parity gate and ONNX Runtime): a one-line refusal naming
    the missing one and --no-deploy, where the demo had run its upscale and adaptation steps first and then advised
    export's own alternative ("keep using the torch backend"), no option of the demo's."""
    import importlib.util

    from lway_rt.errors import MissingDependencyError

    for module in ("onnx", "onnxscript", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(module, "onnx", "the demo's deploy step (ONNX export, ONNX Runtime)",
                                         "pass --no-deploy")


def _run_demo_locked(config, adapt_config, log, deploy, loaded=None):
    claim_out_dir(config.out_dir, log=log)
    try:
        return _run_demo_steps(config, adapt_config, log, deploy, loaded)
    except BaseException:
        # stopped (Ctrl-C, SIGTERM) or failed: the files the steps wrote are listed by name, so a file the user puts
        # there afterwards is not taken for the stopped step's (a whole sub-folder, matched by date, would take it
        # and the rerun would delete it)
        record_out_dir(config.out_dir, complete=False)
        raise


def _run_demo_steps(config, adapt_config, log, deploy, loaded=None):
    begin_step(config.out_dir, upscale_demo_files(config))
    upscaled = run_upscale_demo(config, log=log, loaded=loaded)
    if loaded:
        loaded.clear()  # not held through the next steps
    adapted = deployed = None
    if adapt_config is not None:
        from lway_rt.adapt.demo import adapt_demo_files, run_adapt_demo

        log("")
        log(f"adaptation: {adapt_config.model} on {len(adapt_config.photos)} crops degraded with "
            f"'{adapt_config.preset}' (a degradation stage 1 never trained on)")
        begin_step(config.out_dir, _under(adapt_config.out_dir, config.out_dir, adapt_demo_files(adapt_config.photos)))
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
