"""A faster stage-2 step: per-image constants folded into weights, channels-last, one sync per step.

Same arithmetic as ``step.adapt_step`` with ``embed.PreparedReconstructor`` (tested against them),
arranged to waste less:

- **Per-image constants folded once.** DegAE's modulated conv scales the input channels by the
  image's style and the output channels by its demodulation factor. Both depend only on the
  embedding, which is fixed per image (LWay computes E once per image), so when a batch comes from
  one image the two scalings are folded into that image's 3x3 kernel once
  (``W * style[i] * demod[o]``, StyleGAN2's fused form computed ahead of time): the step then runs
  only plain convolutions, with no element-wise passes over 64-channel HR feature maps. Batches
  that mix images keep the non-fused form (per-patch factors, still computed once per image).
- **Channels-last** (NHWC) weights and activations for S and R: oneDNN runs NHWC convolutions
  without reordering every tensor to its blocked layout and back.
- **One host-device sync per step** instead of one per logged number: the loss, its parts and the
  gradient norm are fetched together, once, to decide whether the update is finite.
- **R one patch at a time** on the CPU: a patch's HR feature maps (2 MB at width 32 and 128 px)
  stay in the cache from one layer to the next, where the whole batch's (8 MB each) do not; R's
  convolutions then run ~15 % faster and the step ~4 % (1 thread, shipped width-32 R).
- **PReLU's backward in vectorised passes**: ATen's ``_prelu_kernel_backward`` took ~1.1 ms per
  call on S's 64-channel LR maps (4 x 32 x 32), 17 calls a step; the same gradients from a compare,
  a lerp and a reduction take ~0.14 ms (the step: ~3 % faster). S is not modified: its ``F.prelu``
  calls are redirected while the step runs S (``_FastPReLUMode``).
- **Autocast** (bf16/fp16) and ``torch.compile`` are options, off by default; measure them with
  ``benchmarks/adapt_speed.py`` on the target machine. On a CPU with native bf16 dot products
  (AVX512-BF16, AMX) bf16 doubles the speed of the fp32 fast step, but moves the loss by ~5e-3
  relative (realesr-animevideov3, the shipped stage 1, four 48-px patches: S and R in bf16; the weight map and
  the reductions stay fp32), so it stays opt-in until the quality benchmark has been run with it; compiling S did
  not pay on the CPU (S is under 10 % of the step).

R's forward is written here functionally over R's own weights (an equivalence test guards it
against changes to ``lway_rt.degae.nets.Reconstructor``). R's module is never modified.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.losses import loss_terms, wants_supervised
from lway_rt.adapt.patches import Batch, dihedral, undo_dihedral
from lway_rt.adapt.perceptual import Perceptual
from lway_rt.adapt.step import trainable_params
from lway_rt.errors import InputError

__all__ = ["SpeedOptions", "FastReconstructor", "prepare_backbone", "make_optimizer", "fast_adaptation_loss",
           "fast_adapt_step", "AUTOCAST"]

AUTOCAST = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class SpeedOptions:
    """How the fast step runs. Defaults are what measured fastest on CPUs at fp32 (see benchmarks/README.md).

    channels_last: NHWC weights and activations for R, and NHWC patches into S.
    backbone_channels_last: also convert S's weights to NHWC in ``prepare_backbone`` (off by default:
      S is a small share of the step, and its full-image outputs then round differently from the
      unadapted model's).
    fold_constants: fold each image's modulation and demodulation into its R kernels (single-image batches).
    autocast: ``off``, ``bf16`` or ``fp16`` for the forward passes of S and R (loss and weight map stay fp32).
    compile: wrap S in ``torch.compile`` (the first steps then pay the compilation).
    fused_adam: Adam's fused kernel where the device supports it (one kernel for all parameters).
    recon_chunk: R runs over this many patches at a time (``torch.cat`` of the parts; the same
      arithmetic). ``None`` (default): one on the CPU, where a patch's feature maps then stay in the
      cache between layers, the whole batch elsewhere (a GPU wants large launches). ``0``: whole batch.
    fast_prelu: S's ``F.prelu`` calls get the vectorised backward of ``_FastPReLU`` during the
      step (without autocast or compile; otherwise ATen's PReLU runs). ``None`` (default): on the
      CPU only, whose ATen kernel is the slow one (a GPU would pay four launches for one).
    fp16_loss_scale: with fp16 autocast, the loss is multiplied by this before the backward pass and
      the gradients divided by it after (static loss scaling, as ``torch.amp.GradScaler`` does
      dynamically): the per-pixel gradients of a mean over 10^5 pixels are below fp16's smallest
      normal number otherwise. An overflow shows as a non-finite gradient and skips the step.
    """

    channels_last: bool = True
    backbone_channels_last: bool = False
    fold_constants: bool = True
    autocast: str = "off"
    compile: bool = False
    fused_adam: bool = True
    recon_chunk: int | None = None
    fast_prelu: bool | None = None
    fp16_loss_scale: float = 2.0**14

    def __post_init__(self):
        if self.autocast not in AUTOCAST:
            raise InputError(f"autocast {self.autocast!r} is not known; use one of {', '.join(AUTOCAST)}")
        if self.recon_chunk is not None and self.recon_chunk < 0:
            raise InputError(f"recon_chunk must be None or >= 0, got {self.recon_chunk}")
        if not (self.fp16_loss_scale >= 1 and math.isfinite(self.fp16_loss_scale)):
            raise InputError(f"fp16_loss_scale must be a finite number >= 1, got {self.fp16_loss_scale}")

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def chunk_for(self, device: torch.device) -> int:
        """Patches per R pass on ``device`` (0: the whole batch)."""
        if self.recon_chunk is not None:
            return self.recon_chunk
        return 1 if device.type == "cpu" else 0


def _autocast(device: torch.device, mode: str):
    dtype = AUTOCAST[mode]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class _FastPReLU(torch.autograd.Function):
    """``F.prelu`` with the same forward and exactly the same input gradient, in vectorised passes.

    d/dx = 1 where x > 0, else the channel's slope; d/dslope = sum of x * grad over x <= 0 (ATen's
    convention at x == 0). The slope map is ``lerp(slope, 1, [x > 0])``, exact at both ends.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        per_channel = weight.numel() > 1
        shape = [1] * x.dim()
        if per_channel:
            shape[1] = weight.numel()
        w = weight.reshape(shape)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            positive = torch.gt(x, 0, out=torch.empty_like(x))
            grad_x = torch.lerp(w, torch.ones((), dtype=x.dtype, device=x.device), positive).mul_(grad)
        if ctx.needs_input_grad[1]:
            dims = [d for d in range(x.dim()) if not (per_channel and d == 1)]
            grad_w = (grad * x.clamp_max(0)).sum(dims).reshape(weight.shape)
        return grad_x, grad_w


class _FastPReLUMode(torch.overrides.TorchFunctionMode):
    """Sends ``F.prelu`` / ``torch.prelu`` calls with matching floating dtypes to ``_FastPReLU``."""

    _PRELU = (F.prelu, torch.prelu)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._PRELU and len(args) == 2 and not kwargs:
            x, weight = args
            if (x.dtype == weight.dtype and x.is_floating_point() and x.dim() >= 2
                    and weight.dim() == 1 and weight.numel() in (1, x.shape[1])):
                return _FastPReLU.apply(x, weight)
        return func(*args, **kwargs)


def _backbone_mode(options: SpeedOptions, device: torch.device):
    """The context S's forward runs in during a step."""
    wanted = device.type == "cpu" if options.fast_prelu is None else options.fast_prelu
    if wanted and options.autocast == "off" and not options.compile:
        return _FastPReLUMode()
    return contextlib.nullcontext()


class FastReconstructor:
    """The frozen R with each image's constants precomputed, callable as ``recon(clean, index)``.

    A drop-in for ``embed.PreparedReconstructor``: same inputs, same output (to float rounding).
    When every patch of a batch comes from one image (always the case with one image per run,
    LWay's per-image mode, or when the caller names the image), each modulated block runs that
    image's kernel with its style and demodulation folded in, computed once and kept (about
    0.15 MB per block and image at width 64); ``index`` is then not read, so a CUDA step needs no
    sync to pick the path. Mixed batches scale by the per-patch factors instead.
    """

    def __init__(self, reconstructor: nn.Module, embeddings: torch.Tensor, options: SpeedOptions = SpeedOptions()):
        mf = options.memory_format
        r = reconstructor
        self.skip = bool(getattr(r, "skip", False))
        self.count = int(embeddings.shape[0])
        self.embeddings = embeddings.detach()  # (a checkpoint keeps them: a resumed run does not embed again)

        def w(conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor | None]:
            weight = conv.weight.detach().contiguous(memory_format=mf)
            return weight, None if conv.bias is None else conv.bias.detach()

        with torch.no_grad():
            self.first = w(r.conv_first)
            self.hr = w(r.conv_hr)
            self.last = w(r.conv_last)
            self.blocks = []
            for block in r.blocks:
                mod = block.mod
                style, demod = mod.factors(embeddings)  # (N, C_in), (N, C_out): once per image
                kernel = (mod.weight * mod.scale).detach()
                self.blocks.append({
                    "conv1": w(block.res.conv1), "conv2": w(block.res.conv2), "tail": w(mod.conv_last),
                    "kernel": kernel.contiguous(memory_format=mf), "style": style, "demod": demod, "folded": {},
                    "pad": mod.kernel_size // 2,
                })
        self.memory_format = mf
        self.fold = options.fold_constants
        self.chunk = options.chunk_for(embeddings.device)
        if self.fold and self.count == 1:
            for b in self.blocks:
                self._folded(b, 0)

    def _folded(self, b: dict, image: int) -> torch.Tensor:
        """Block ``b``'s kernel for ``image``: W[o, i] * style[i] * demod[o] (computed on first use)."""
        k = b["folded"].get(image)
        if k is None:
            with torch.no_grad():
                k = b["kernel"] * b["style"][image][None, :, None, None] * b["demod"][image][:, None, None, None]
            k = b["folded"][image] = k.contiguous(memory_format=self.memory_format)
        return k

    def _single_image(self) -> int | None:
        return 0 if self.count == 1 else None

    def __call__(self, clean: torch.Tensor, index: torch.Tensor, image: int | None = None) -> torch.Tensor:
        """R(clean) with the constants of each patch's image. ``image`` says all patches are from that image."""
        if image is None:
            image = self._single_image()
        if 0 < self.chunk < clean.shape[0]:
            return torch.cat([self._run(c, i, image) for c, i in zip(clean.split(self.chunk), index.split(self.chunk))])
        return self._run(clean, index, image)

    def _run(self, clean: torch.Tensor, index: torch.Tensor, image: int | None) -> torch.Tensor:
        x = clean.contiguous(memory_format=self.memory_format)
        h = F.leaky_relu(F.conv2d(x, *self.first, padding=1), 0.1, inplace=True)
        for b in self.blocks:
            r = F.conv2d(F.relu(F.conv2d(h, *b["conv1"], padding=1), inplace=True), *b["conv2"], padding=1)
            h = r.add_(h)
            if self.fold and image is not None:
                y = F.conv2d(h, self._folded(b, image), padding=b["pad"])
            else:
                style = b["style"].index_select(0, index)[:, :, None, None]
                demod = b["demod"].index_select(0, index)[:, :, None, None]
                y = F.conv2d(h * style, b["kernel"], padding=b["pad"]).mul_(demod)
            h = F.leaky_relu(F.conv2d(y, *b["tail"], padding=1), 0.1, inplace=True)
        out = F.conv2d(F.leaky_relu(F.conv2d(h, *self.hr, padding=1), 0.1, inplace=True), *self.last, padding=1)
        return out + clean if self.skip else out


def prepare_backbone(model: nn.Module, options: SpeedOptions = SpeedOptions()) -> nn.Module:
    """S laid out for speed, in place (channels-last weights if asked); returns the module to call (compiled if asked).

    Parameters stay the same objects, so an optimizer built on ``model.parameters()`` before or after
    this call updates them; state dicts keep their names (``save_safetensors`` writes contiguous copies).
    """
    if options.backbone_channels_last:
        model.to(memory_format=torch.channels_last)
    if options.compile:
        return torch.compile(model)
    return model


def make_optimizer(params, config: AdaptConfig, options: SpeedOptions = SpeedOptions()) -> torch.optim.Adam:
    """Adam as the loop builds it (lr, betas from ``config``), fused where the device supports it."""
    params = list(params)
    fused = options.fused_adam and bool(params) and params[0].device.type in ("cpu", "cuda")
    return torch.optim.Adam(params, lr=config.lr, betas=config.adam_betas, fused=fused or None)


def fast_adaptation_loss(sr: torch.Tensor, batch: Batch, recon, config: AdaptConfig, image: int | None = None,
                         sup_sr: torch.Tensor | None = None, perceptual: Perceptual | None = None,
                         autocast: str = "off") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``losses.adaptation_loss`` with the parts left as detached tensors (no sync); same value.

    ``recon`` is a ``FastReconstructor`` (``image``: all patches come from that image) or any
    callable ``recon(clean, index)``. ``autocast``: R's forward pass runs under it; the weight map, the
    perceptual term and the reductions stay fp32."""
    if recon is None:
        run = None
    elif isinstance(recon, FastReconstructor):
        run = lambda x: recon(x, batch.index, image)  # noqa: E731
    else:
        run = lambda x: recon(x, batch.index)  # noqa: E731

    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        with _autocast(x.device, autocast):
            return run(x)

    return loss_terms(sr, batch, None if run is None else reconstruct, config, sup_sr, perceptual)


def fast_adapt_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, recon, config: AdaptConfig,
                    options: SpeedOptions = SpeedOptions(), image: int | None = None,
                    perceptual: Perceptual | None = None) -> dict[str, float | bool | str]:
    """``step.adapt_step`` (same contract and returned keys), with the speed options applied.

    ``model`` should have gone through ``prepare_backbone``; ``recon`` is a ``FastReconstructor``
    (or any callable ``recon(clean, index)``); ``image`` says all patches come from that image.
    The synthetic supervised patches (``sup_weight > 0``) go through S in the same forward pass as
    the test patches when their sizes match (one batch, one launch per layer).
    Nothing non-finite reaches the weights: the loss and the gradient norm are checked, in one
    host-device sync, before the optimizer steps.
    """
    params = trainable_params(optimizer)
    optimizer.zero_grad(set_to_none=True)
    mf = options.memory_format
    lr = dihedral(batch.lr, batch.turn).contiguous(memory_format=mf)  # S sees the patch turned (augment)
    supervised = wants_supervised(config, batch)
    with torch.enable_grad():
        with _autocast(lr.device, options.autocast):
            sup_sr = None
            with _backbone_mode(options, lr.device):
                if supervised and batch.sup_lr.shape[1:] == lr.shape[1:]:
                    out = model(torch.cat([lr, batch.sup_lr]).contiguous(memory_format=mf))
                    sr, sup_sr = out[:lr.shape[0]], out[lr.shape[0]:]
                else:
                    sr = model(lr)
                    if supervised:
                        sup_sr = model(batch.sup_lr.contiguous(memory_format=mf))
            sr = undo_dihedral(sr, batch.turn)  # and R, the loss and the anchor see it turned back
        # outside S's autocast: R runs under it, the weight map, perceptual term and reductions in fp32
        loss, parts = fast_adaptation_loss(sr, batch, recon, config, image, sup_sr, perceptual, options.autocast)
        scale = options.fp16_loss_scale if options.autocast == "fp16" else 1.0
        (loss * scale if scale != 1.0 else loss).backward()
    grads = [p.grad for p in params if p.grad is not None]
    if scale != 1.0 and grads:
        torch._foreach_mul_(grads, 1.0 / scale)
    grad_norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=loss.device)
    names = list(parts)
    values = torch.stack([loss.detach().float(), grad_norm.float(), *(parts[n].float() for n in names)]).tolist()
    value, gnorm = values[0], values[1]
    out = {"loss": value, **dict(zip(names, values[2:]))}
    if not math.isfinite(value):
        optimizer.zero_grad(set_to_none=True)
        return {**out, "skipped": True, "reason": "non-finite loss"}
    if not math.isfinite(gnorm):
        optimizer.zero_grad(set_to_none=True)
        return {**out, "skipped": True, "reason": "non-finite gradient", "grad_norm": gnorm}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {**out, "skipped": False, "grad_norm": gnorm}
