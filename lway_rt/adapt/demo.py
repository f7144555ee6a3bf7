"""The adaptation step of ``lwayrt demo``: LWay on bundled photos with a degradation stage 1 never saw.

Ground-truth crops of scikit-image's bundled photos are downscaled x4 (bicubic) and degraded with
one of stage 1's evaluation presets; the LR crops are written as files and adapted with exactly
what ``lwayrt adapt`` runs (fixed iterations, no ground truth during adaptation). The identity-R
control (``--loss identity``: the same loop with R replaced by the identity, which pulls S towards
bicubic) runs beside it, so a gain that is only a pull towards bicubic shows as such. Only
afterwards are the outputs scored against the ground truth, and a comparison strip
(LR | bicubic | unadapted | identity control | LWay | HR) is written per photo beside the run's
contact sheet.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lway_rt.errors import InputError, stopping_at_once

__all__ = ["AdaptDemoConfig", "AdaptDemoResult", "DEMO_CROPS", "adapt_demo_files", "check_adapt_model",
           "run_adapt_demo"]

#: bundled photo -> top-left (row, col) of a textured crop (hair, fur, foliage, fabric)
DEMO_CROPS: dict[str, tuple[int, int]] = {
    "astronaut": (40, 160),  # hair, face
    "chelsea": (20, 110),  # cat fur and whiskers
    "coffee": (80, 170),  # cup rim, saucer, wood grain
    "rocket": (60, 200),  # gantry lattice, trees
}


@dataclass(frozen=True)
class AdaptDemoConfig:
    out_dir: Path = Path("demo_out") / "adapt"
    photos: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket")
    preset: str = "motion-blur"
    model: str = "realesr-animevideov3"
    crop: int = 192  # HR side; LR = crop / 4
    iterations: int = 100
    stage1: str | None = None  # None: the shipped checkpoint
    seed: int = 0
    control: bool = True  # also adapt with R replaced by the identity (DESIGN §2.5), for comparison

    def __post_init__(self):
        from lway_rt.degae.degrade import EVAL_PRESETS

        object.__setattr__(self, "photos", tuple(dict.fromkeys(self.photos)))  # a photo given twice is one
        unknown = [p for p in self.photos if p not in DEMO_CROPS]
        if unknown:
            raise InputError(f"unknown demo photo(s) {', '.join(unknown)}: choose from {', '.join(DEMO_CROPS)}")
        if self.preset not in EVAL_PRESETS:
            raise InputError(f"unknown degradation preset {self.preset!r}: choose from {', '.join(EVAL_PRESETS)}")
        if self.crop % 4 or self.crop < 128:
            raise InputError(f"--adapt-crop must be a multiple of 4 and at least 128 px, got {self.crop}")
        if self.iterations < 1:
            raise InputError("iterations must be positive")
        from lway_rt.io.images import bundled_photo

        for name in self.photos:  # checked before any work: the crop is cut from each photo
            h, w = bundled_photo(name, feature="the demo's bundled photos").shape[:2]
            if self.crop > min(h, w):
                most = min(h, w) // 4 * 4
                raise InputError(f"--adapt-crop {self.crop} is larger than photo {name} ({w}x{h}): use at most {most}")


@dataclass
class AdaptDemoResult:
    config: AdaptDemoConfig
    psnr: dict[str, dict[str, float]] = field(default_factory=dict)  # photo -> method -> dB
    ssim: dict[str, dict[str, float]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    report: dict = field(default_factory=dict)

    @property
    def methods(self) -> list[str]:
        return list(next(iter(self.psnr.values()))) if self.psnr else []

    def mean(self, method: str, metric: str = "psnr") -> float:
        table = self.psnr if metric == "psnr" else self.ssim
        return float(np.mean([v[method] for v in table.values()]))


def check_adapt_model(name: str, desc) -> None:
    """Refuse a model the step cannot adapt: its LR crops are x4 downscaled and scored at x4."""
    if desc.scale != 4:
        raise InputError(f"--adapt-model {name} is x{desc.scale}; the adaptation step adapts x4 models: pass an x4 "
                         "one (e.g. realesr-animevideov3)")


def adapt_demo_files(photos) -> list[str]:
    """The names ``run_adapt_demo`` writes into its folder: files, and the folders of its two adapt runs."""
    photos = list(dict.fromkeys(photos))
    return ["results.json", *(f"{p}_compare.png" for p in photos),
            *(f"{d}/{p}.png" for d in ("hr", "lr") for p in photos), "run", "identity_control"]


def _crop(name: str, side: int) -> np.ndarray:
    from lway_rt.io.images import bundled_photo

    img = bundled_photo(name, feature="the demo's bundled photos")
    r, c = DEMO_CROPS[name]
    r, c = max(0, min(r, img.shape[0] - side)), max(0, min(c, img.shape[1] - side))
    return np.ascontiguousarray(img[r:r + side, c:c + side])


def supervised_photos_apart(scored: tuple[str, ...], folder: Path) -> list[str]:
    """Stage 1's training photos (the supervised term's default clean photos) but those the demo scores, written as
    PNGs into ``folder``; returns their names. The default set holds astronaut and rocket, so the term fitted the
    network to clean crops of the very photos whose ground truth then scored it (rocket's gain mostly that)."""
    from PIL import Image

    from lway_rt.degae.data import BUNDLED_TRAIN
    from lway_rt.io.images import bundled_photo

    def same(name: str) -> str:
        return "motorcycle" if name.startswith("motorcycle") else name  # the stereo pair is one scene

    names = [n for n in BUNDLED_TRAIN if same(n) not in {same(p) for p in scored}]
    for name in names:
        Image.fromarray(bundled_photo(name, feature="the supervised term's clean photos")).save(folder / f"{name}.png")
    return names


def run_adapt_demo(config: AdaptDemoConfig | None = None, log: Callable[[str], None] = print) -> AdaptDemoResult:
    import torch

    from lway_rt.adapt.config import AdaptConfig
    from lway_rt.adapt.loop import adapt, super_resolve
    from lway_rt.adapt.patches import bicubic_up
    from lway_rt.degae.degrade import apply_degradation, eval_preset
    from lway_rt.io.images import read_image, resize_bicubic, to_tensor, write_image
    from lway_rt.io.store import load_model
    from lway_rt.io.weights import atomic_write_json
    from lway_rt.metrics import psnr_y, ssim_y

    config = config if config is not None else AdaptDemoConfig()
    base = load_model(config.model)
    check_adapt_model(config.model, base)  # before any work, not after both adaptations
    out = Path(config.out_dir)
    t0 = time.perf_counter()
    hr_dir, lr_dir, run_dir = out / "hr", out / "lr", out / "run"
    hrs = {}
    for k, name in enumerate(config.photos):
        hr = _crop(name, config.crop)
        lr8 = resize_bicubic(hr, (config.crop // 4, config.crop // 4))
        x = torch.from_numpy(np.array(lr8)).permute(2, 0, 1).float() / 255.0
        lr = apply_degradation(x, eval_preset(config.preset, seed=config.seed * 100 + k)).permute(1, 2, 0).numpy()
        write_image(hr_dir / f"{name}.png", hr.astype(np.float32) / 255.0)
        write_image(lr_dir / f"{name}.png", lr)
        hrs[name] = hr
    log(f"{len(hrs)} LR crops ({config.crop // 4} px, x4 bicubic + unseen preset '{config.preset}') in {lr_dir}")
    log(f"adapting {config.model} for {config.iterations} iterations (LWay loss, no ground truth) ...")
    control_dir = out / "identity_control"
    # (a Ctrl-C stops at once: the demo is run again from the start, never resumed, so a step's save is no use)
    with tempfile.TemporaryDirectory(prefix="lwayrt-demo-sup-") as sup_dir, stopping_at_once():
        sup = supervised_photos_apart(config.photos, Path(sup_dir))
        cfg = AdaptConfig(iterations=config.iterations, seed=config.seed, snapshot_every=max(1, config.iterations // 5),
                          patch_size=min(AdaptConfig.patch_size, config.crop // 4),  # --crop 128: 32-px LR crops
                          **({"sup_data": sup_dir} if sup else {"sup_weight": 0.0}))
        (run,) = adapt([lr_dir], config.model, run_dir, cfg, stage1=config.stage1, overwrite=True,  # the demo's own
                       log=lambda m: log("  " + m) if m.startswith(("iteration", "embedded", "rolled", "non-finite"))
                       else None)  # folder
        if config.control:
            log(f"adapting the identity-R control for {config.iterations} iterations ...")
            adapt([lr_dir], config.model, control_dir, cfg.replace(loss="identity"), log=lambda m: None, overwrite=True)
    result = AdaptDemoResult(config, report=run.report)
    for name, hr in hrs.items():
        lr_img = read_image(lr_dir / f"{name}.png").rgb
        x = to_tensor(lr_img)
        outs = {
            "bicubic": bicubic_up(x, 4)[0].permute(1, 2, 0).numpy(),
            "unadapted": super_resolve(base.model, x, 4, base.size_multiple, 0)[0].permute(1, 2, 0).numpy(),
        }
        if config.control:
            outs["identity control"] = read_image(control_dir / "sr" / f"{name}.png").rgb
        outs["adapted"] = read_image(run_dir / "sr" / f"{name}.png").rgb
        result.psnr[name] = {m: psnr_y(v, hr, 4) for m, v in outs.items()}
        result.ssim[name] = {m: ssim_y(v, hr, 4) for m, v in outs.items()}
        from lway_rt.adapt.visual import save_contact_sheet

        lr_big = np.repeat(np.repeat(lr_img, 4, axis=0), 4, axis=1)
        tiles = [(np.clip(t, 0, 1) * 255 + 0.5).astype(np.uint8) for t in (lr_big, *outs.values(), hr / 255.0)]
        labels = ["LR (nearest x4)"] + [f"{m} {result.psnr[name][m]:.2f} dB" for m in outs] + ["HR (ground truth)"]
        path = save_contact_sheet(out / f"{name}_compare.png", [tiles], labels)
        result.files[name] = str(path)
        log(f"{name}: " + ", ".join(f"{m} {result.psnr[name][m]:.2f} dB" for m in outs))
    result.files["contact_sheet"] = str(run_dir / "contact_sheet.png")
    result.files["weights"] = str(run.weights)
    result.seconds = time.perf_counter() - t0
    summary = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "metric": "Y-PSNR (dB) / SSIM, BT.601, 4-px border; ground truth used only for scoring, after adaptation",
        "supervised_photos": sup,  # the supervised term's clean photos: none of the scored ones
        "psnr": result.psnr, "ssim": result.ssim,
        "mean_psnr": {m: result.mean(m) for m in result.methods},
        "files": result.files, "seconds": round(result.seconds, 1), "stopped": run.report["stopped"],
    }
    atomic_write_json(out / "results.json", summary)
    return result
