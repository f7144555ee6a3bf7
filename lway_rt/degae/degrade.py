"""Degradation synthesis for stage 1, and named evaluation presets stage 1 never trains on.

Design origin: DegAE's data pipeline (``lyh-18/DegAE_DegradationAutoencoder``), itself close to
Real-ESRGAN's second-order pipeline (Wang et al., 2021, BSD-3): anisotropic / isotropic Gaussian
blur, Gaussian / Poisson / speckle noise, JPEG, shuffled order, a clean fraction. Written anew.

A draw is a ``Degradation``: an ordered tuple of ``Op`` (name + parameters), a noise seed and a
geometry. ``apply_degradation`` is a pure function of (image, draw), so one draw can be applied
again to another image (the cross-image training pairs) and a run is reproducible from its seed.

Geometry: ``roundtrip = 1`` degrades at the image's own size (DegAE, the LWay authors);
``roundtrip = s`` downscales by s (bicubic, antialiased), degrades, quantises to 8 bit, and
upsamples by s (bicubic) -- what E and R see in stage 2, where they read a bicubic-upsampled LR.

Images are float tensors (3, H, W) in [0, 1]; outputs are quantised to 8-bit levels.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["Op", "Degradation", "SynthConfig", "sample_degradation", "apply_degradation", "apply_batch", "quantise",
           "EVAL_PRESETS", "eval_preset", "TRAIN_OPS", "kinds_of"]

TRAIN_OPS = ("blur_aniso", "blur_iso", "noise_gauss", "noise_poisson", "noise_speckle", "jpeg")
_KIND = {"blur_aniso": "blur", "blur_iso": "blur", "motion_blur": "blur", "box_resample": "blur",
         "noise_gauss": "noise", "noise_poisson": "noise", "noise_speckle": "noise", "sensor_noise": "noise",
         "jpeg": "jpeg", "jpeg_subsampled": "jpeg", "sharpen": "sharpen"}


@dataclass(frozen=True)
class Op:
    name: str
    params: Mapping[str, float | int | str] = field(default_factory=dict)

    def describe(self) -> str:
        args = ",".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class Degradation:
    ops: tuple[Op, ...] = ()
    seed: int = 0
    roundtrip: int = 1

    @property
    def is_identity(self) -> bool:
        return not self.ops and self.roundtrip == 1

    def with_seed(self, seed: int) -> "Degradation":
        return replace(self, seed=seed)

    def with_roundtrip(self, roundtrip: int) -> "Degradation":
        return replace(self, roundtrip=roundtrip)

    def describe(self) -> str:
        body = " > ".join(op.describe() for op in self.ops) or "clean"
        return f"x{self.roundtrip} roundtrip[{body}]" if self.roundtrip > 1 else body

    def to_dict(self) -> dict:
        return {"ops": [{"name": o.name, **dict(o.params)} for o in self.ops], "seed": self.seed, "roundtrip": self.roundtrip}


def kinds_of(d: Degradation) -> str:
    """A short label of the degradation types in a draw: 'clean', 'blur', 'blur+noise+jpeg', ..."""
    kinds = sorted({_KIND[o.name] for o in d.ops})
    return "+".join(kinds) if kinds else "clean"


@dataclass(frozen=True)
class SynthConfig:
    """DegAE's synthesis probabilities (DESIGN.md section 2.3)."""

    p_clean: float = 0.3
    p_blur: float = 0.7
    p_aniso: float = 0.5
    p_gauss: float = 0.5
    p_poisson: float = 0.2
    p_speckle: float = 0.2
    p_jpeg: float = 0.5
    p_shuffle: float = 0.5
    gauss_sigma: tuple[float, float] = (2.0, 30.0)  # in 8-bit levels
    jpeg_quality: tuple[int, int] = (30, 95)
    p_roundtrip: float = 0.0  # fraction of draws degraded through a scale round trip
    roundtrip_scale: int = 4
    # beyond DegAE's family (0: off, and the draws are DegAE's exactly): of the blurred draws, the fraction whose
    # blur is a linear motion blur; of the degraded draws (those not drawn clean), the fraction sharpened (unsharp
    # mask), placed just before the draw's JPEG (or last without one) whatever the shuffle. Both are operations of
    # the evaluation presets, so a stage 1 trained with them no longer meets those as unseen.
    p_motion: float = 0.0
    p_sharpen: float = 0.0

    def __post_init__(self):
        for name in ("p_clean", "p_blur", "p_aniso", "p_gauss", "p_poisson", "p_speckle", "p_jpeg", "p_shuffle", "p_roundtrip",
                     "p_motion", "p_sharpen"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {v}")
        if self.roundtrip_scale < 1:
            raise ValueError("roundtrip_scale must be >= 1")


def sample_degradation(rng: np.random.Generator, cfg: SynthConfig = SynthConfig()) -> Degradation:
    """Draw one degradation (parameters only; apply with ``apply_degradation``)."""
    seed = int(rng.integers(0, 2**31 - 1))
    roundtrip = cfg.roundtrip_scale if rng.random() < cfg.p_roundtrip else 1
    if rng.random() < cfg.p_clean:
        return Degradation((), seed, roundtrip)
    blur: list[Op] = []
    noise: list[Op] = []
    jpeg: list[Op] = []
    if rng.random() < cfg.p_blur:
        # p_motion > 0 first: with it off no number is drawn, so DegAE's draws stay as they were
        if cfg.p_motion > 0 and rng.random() < cfg.p_motion:
            blur.append(Op("motion_blur", {"length": int(rng.choice(np.arange(5, 22, 2))),
                                           "angle": float(rng.uniform(-math.pi, math.pi))}))
        elif rng.random() < cfg.p_aniso:
            size = int(rng.choice(np.arange(7, 26, 2)))
            blur.append(Op("blur_aniso", {"size": size, "sx": float(rng.uniform(0.2, 5.0)), "sy": float(rng.uniform(0.2, 5.0)),
                                          "theta": float(rng.uniform(-math.pi, math.pi))}))
        else:
            blur.append(Op("blur_iso", {"sigma": float(rng.uniform(0.2, 2.2))}))
    if rng.random() < cfg.p_gauss:
        mode = str(rng.choice(["colour", "grey", "correlated"]))
        noise.append(Op("noise_gauss", {"sigma": float(rng.uniform(*cfg.gauss_sigma)), "mode": mode}))
    if rng.random() < cfg.p_poisson:
        noise.append(Op("noise_poisson", {"scale": float(rng.uniform(0.05, 3.0)), "grey": int(rng.random() < 0.4)}))
    if rng.random() < cfg.p_speckle:
        noise.append(Op("noise_speckle", {"sigma": float(rng.uniform(0.04, 0.2))}))
    sharpen: list[Op] = []
    if cfg.p_sharpen > 0 and rng.random() < cfg.p_sharpen:
        sharpen.append(Op("sharpen", {"amount": float(rng.uniform(0.3, 2.0))}))
    if rng.random() < cfg.p_jpeg:
        jpeg.append(Op("jpeg", {"quality": int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))}))
    ops = blur + noise + jpeg
    if rng.random() < cfg.p_shuffle:
        ops = [ops[i] for i in rng.permutation(len(ops))]
    if sharpen:  # outside the shuffle, so it always comes before the JPEG (as in a camera), else last
        at = next((i for i, o in enumerate(ops) if o.name == "jpeg"), len(ops))
        ops[at:at] = sharpen
    if not ops:  # every optional stage declined: count it as a clean draw
        return Degradation((), seed, roundtrip)
    return Degradation(tuple(ops), seed, roundtrip)


# ---------------------------------------------------------------------------------------------
# kernels and single operations (all on (3, H, W) float tensors)

def _gauss_kernel(size: int, sx: float, sy: float, theta: float) -> torch.Tensor:
    r = size // 2
    ax = torch.arange(-r, r + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return (k / k.sum()).float()


def _motion_kernel(length: int, angle: float) -> torch.Tensor:
    size = length if length % 2 else length + 1
    k = torch.zeros(size, size, dtype=torch.float64)
    r = size // 2
    # Supersampled line through the centre.
    for t in np.linspace(-(length - 1) / 2, (length - 1) / 2, 8 * length):
        x, y = r + t * math.cos(angle), r + t * math.sin(angle)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                k[y0 + dy, x0 + dx] += w
    return (k / k.sum()).float()


def _filter(img: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    r = k.shape[-1] // 2
    x = F.pad(img[None], (r, r, r, r), mode="replicate")
    return F.conv2d(x, k[None, None].expand(3, 1, -1, -1).to(img.dtype), groups=3)[0]


_LUMA = torch.tensor([0.299, 0.587, 0.114])


def _jpeg(img: torch.Tensor, quality: int, subsampling: int = -1) -> torch.Tensor:
    from PIL import Image

    arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    kwargs = {"quality": int(quality)}
    if subsampling >= 0:
        kwargs["subsampling"] = int(subsampling)
    Image.fromarray(arr).save(buf, format="JPEG", **kwargs)
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float() / 255


def _apply_op(img: torch.Tensor, op: Op, gen: torch.Generator, shared: dict | None = None, index: int = 0) -> torch.Tensor:
    """``op`` (the ``index``-th of its draw) on ``img``; ``shared``: see ``apply_degradation``."""
    p = op.params
    n = op.name
    if n == "blur_aniso":
        return _filter(img, _gauss_kernel(int(p["size"]), float(p["sx"]), float(p["sy"]), float(p["theta"])))
    if n == "blur_iso":
        sigma = float(p["sigma"])
        size = min(21, 2 * math.ceil(3 * sigma) + 1)
        return _filter(img, _gauss_kernel(size, sigma, sigma, 0.0))
    if n == "noise_gauss":
        sigma = float(p["sigma"]) / 255
        h, w = img.shape[-2:]
        if p["mode"] == "grey":
            z = torch.randn(1, h, w, generator=gen).expand(3, h, w)
        elif p["mode"] == "correlated":
            drawn = torch.rand(3, 3, generator=gen)  # (drawn either way: the noise after it stays the realisation's)
            if shared is not None:  # the first realisation's channel mix, for every realisation of the draw
                drawn = shared.setdefault(index, drawn)
            mix = torch.eye(3) * 0.6 + 0.4 * drawn
            mix = mix / mix.norm(dim=1, keepdim=True)
            z = torch.einsum("ij,jhw->ihw", mix, torch.randn(3, h, w, generator=gen))
        else:
            z = torch.randn(3, h, w, generator=gen)
        return img + sigma * z
    if n == "noise_poisson":
        levels = 256.0  # 8-bit photon scale as in Real-ESRGAN's generator
        base = (img * _LUMA[:, None, None]).sum(0, keepdim=True) if p["grey"] else img
        noisy = torch.poisson(base.clamp(0, 1) * levels, generator=gen) / levels
        return img + float(p["scale"]) * (noisy - base)
    if n == "noise_speckle":
        return img + img * float(p["sigma"]) * torch.randn(img.shape, generator=gen)
    if n == "jpeg":
        return _jpeg(img, int(p["quality"]))
    # evaluation-only operations
    if n == "motion_blur":
        return _filter(img, _motion_kernel(int(p["length"]), float(p["angle"])))
    if n == "box_resample":  # down by exactly ``factor`` and back: a side not a multiple of it is padded (edge
        f = int(p["factor"])  # pixels) and cut back, where a pooled remainder had stretched the image by up to 2/3 px
        h, w = img.shape[-2:]
        ph, pw = (-h) % f, (-w) % f
        small = F.avg_pool2d(F.pad(img[None], (0, pw, 0, ph), mode="replicate") if ph or pw else img[None], f)
        return F.interpolate(small, size=(h + ph, w + pw), mode="bilinear", align_corners=False)[0, :, :h, :w]
    if n == "sharpen":
        blurred = _filter(img, _gauss_kernel(7, 1.2, 1.2, 0.0))
        return img + float(p["amount"]) * (img - blurred)
    if n == "jpeg_subsampled":
        return _jpeg(img, int(p["quality"]), subsampling=2)  # 4:2:0
    if n == "sensor_noise":
        # Resize (sensor binning / ISP scaling), then signal-dependent shot + read noise in luma and
        # chroma with row-correlated banding.
        h, w = img.shape[-2:]
        f = float(p["resize"])
        # down and back by the same size ratio: a scale factor down and a size back had stretched a side that is
        # not a multiple of it (up to 0.9 px across a 33-px side; sides of 8n, the benchmarks', were exact and are
        # unchanged)
        size = (max(1, round(h / f)), max(1, round(w / f)))
        small = F.interpolate(img[None], size=size, mode="bilinear", antialias=True, align_corners=False)
        img = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)
        shot = torch.sqrt(img * float(p["shot"])) * torch.randn(img.shape, generator=gen)
        read = float(p["read"]) * torch.randn(1, h, w, generator=gen)
        rows = 0.5 * float(p["read"]) * torch.randn(1, h, 1, generator=gen)
        return img + shot + read + rows
    raise ValueError(f"unknown degradation op {n!r}")


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels (what saving as an 8-bit image does)."""
    return (x.clamp(0, 1) * 255).round() / 255


def apply_degradation(img: torch.Tensor, d: Degradation, shared: dict | None = None) -> torch.Tensor:
    """Apply draw ``d`` to ``img`` (3, H, W) float in [0, 1]; same size, 8-bit levels, deterministic.

    ``shared``: a dict given to every realisation of one draw (its seed changed, ``d.with_seed``; another image),
    which then shares what the draw sets up as it is applied, the channel mix of its correlated noise (drawn from
    the realisation's generator, it differed between realisations; DESIGN 2.3's pairs are degraded with identical
    parameters): the first realisation fills it, as without it, the others use it. Only the noise samples differ."""
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got {tuple(img.shape)}")
    gen = torch.Generator().manual_seed(int(d.seed))
    x = img.float()
    h, w = x.shape[-2:]
    s = d.roundtrip
    if s > 1:
        if h % s or w % s:
            raise ValueError(f"round-trip degradation by x{s} needs image sides divisible by {s}, got {h}x{w}")
        x = quantise(F.interpolate(x[None], size=(h // s, w // s), mode="bicubic", antialias=True, align_corners=False)[0])
    for index, op in enumerate(d.ops):
        x = _apply_op(x, op, gen, shared, index).clamp(0, 1)
    x = quantise(x)
    if s > 1:
        x = quantise(F.interpolate(x[None], size=(h, w), mode="bicubic", align_corners=False)[0])
    return x


def apply_batch(imgs: torch.Tensor, draws: list[Degradation]) -> torch.Tensor:
    """Apply one draw per image of a (B, 3, H, W) batch."""
    return torch.stack([apply_degradation(im, d) for im, d in zip(imgs, draws)])


# ---------------------------------------------------------------------------------------------
# evaluation presets: each holds an operation the training sampler never draws (motion blur, a box downscale,
# sharpening, a sensor's resize and noise); the colour noise after the motion blur and the JPEG after the sharpening
# are ones it draws (Pillow's JPEG is 4:2:0 by default, as jpeg_subsampled's, and quality 45 is in its range)

EVAL_PRESETS: dict[str, tuple[Op, ...]] = {
    "motion-blur": (Op("motion_blur", {"length": 11, "angle": 0.6}), Op("noise_gauss", {"sigma": 4.0, "mode": "colour"})),
    "box-downscale": (Op("box_resample", {"factor": 3}),),
    "sharpen-jpeg420": (Op("sharpen", {"amount": 1.2}), Op("jpeg_subsampled", {"quality": 45})),
    "resize-sensor-noise": (Op("sensor_noise", {"resize": 1.6, "shot": 0.004, "read": 0.02}),),
}


def eval_preset(name: str, seed: int = 0, roundtrip: int = 1) -> Degradation:
    """A named evaluation degradation (an operation of it never drawn in training)."""
    if name not in EVAL_PRESETS:
        raise KeyError(f"unknown preset {name!r}; presets: {', '.join(EVAL_PRESETS)}")
    return Degradation(EVAL_PRESETS[name], seed, roundtrip)
