"""The adaptation losses: LWay, the naive self-supervised baseline and the identity-R control.

All three are an L1 between a prediction made from S's output and something computed from the LR
alone, optionally weighted by the Haar high-frequency map of the prediction (``wavelet.hf_weight``,
detached, as LWay weights x̂; or of the target, ``hf_source='target'``):

- ``lway``: x̂ = R(S(x), e). Target ``sr``: x̂ against the bicubic-upsampled LR. Target ``lr``:
  bicubic-downsampled x̂ against the LR.
- ``naive``: bicubic-downsampled S(x) against the LR (no reconstructor).
- ``identity``: S(x) against the bicubic-upsampled LR (R replaced by the identity; DESIGN §2.5).

An optional anchor term ties S(x) to the unadapted model's output on the same patch (pixel-wise, or
after a ``k x k`` average pool with ``anchor_pool = k``: the coarse picture only; scaled per image
by ``backbone_trust`` with ``anchor_trust > 0``); an optional detail guard penalises each patch's fine detail
above ``detail_guard_ratio`` x the unadapted output's (``wavelet.detail_ratio``; scaled per image by
``guard_gates`` with ``detail_guard_gate='trust'``); and an
optional supervised term (LWay's supervised half, ``synthetic.py``) is the L1 between S's output on
the step's synthetic LR patches and their clean HR, weighted by ``sup_weight``; and an optional
perceptual term (``perceptual.py``) between the same prediction and target as the L1, with its weight map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.patches import Batch, bicubic_down, bicubic_up
from lway_rt.adapt.perceptual import Perceptual
from lway_rt.adapt.wavelet import detail_energy, detail_ratio, hf_weight

__all__ = ["weighted_l1", "loss_terms", "adaptation_loss", "supervised_l1", "wants_supervised", "upcast", "backbone_trust",
           "TRUST_MAX_SIDE", "trust_losses", "guard_gates"]

# backbone_trust measures each image on a centre crop of at most this many LR pixels a side (the
# encoder reads 512 SR-size pixels, the same area at x4)
TRUST_MAX_SIDE = 128

Reconstruct = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    diff = (pred - target).abs()
    return (diff * weight).mean() if weight is not None else diff.mean()


def wants_supervised(config: AdaptConfig, batch: Batch) -> bool:
    """Whether a step adds the supervised term: a positive weight and synthetic pairs in the batch."""
    return config.sup_weight > 0 and batch.sup_lr is not None and batch.sup_hr is not None


def supervised_l1(sup_sr: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Plain L1 between S's output on the synthetic LR patches and their clean HR."""
    return (sup_sr - batch.sup_hr).abs().mean()


def upcast(t: torch.Tensor) -> torch.Tensor:
    """Autocast outputs (fp16/bf16) back to fp32 for the loss; fp32 and fp64 pass unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def loss_terms(sr: torch.Tensor, batch: Batch, reconstruct: Callable[[torch.Tensor], torch.Tensor] | None,
               config: AdaptConfig, sup_sr: torch.Tensor | None = None,
               perceptual: Perceptual | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of S's output ``sr`` for ``batch`` and its parts as detached tensors (no host sync).

    ``reconstruct(sr)`` is R applied to the batch's patches with their images' embeddings (needed
    by ``lway`` only). ``sup_sr`` is S's output on ``batch.sup_lr``: with ``sup_weight > 0`` it
    adds ``sup_weight * supervised_l1`` (part ``sup``). ``perceptual`` is the run's perceptual term
    (needed when ``config.perceptual`` is not ``none``): it compares the L1's prediction and target,
    with the L1's weight map, and adds ``perceptual_weight`` times it (part ``perc``). Autocast
    outputs are upcast to fp32 first. Both step paths (``adaptation_loss``,
    ``fast.fast_adaptation_loss``) compute through here.
    """
    scale = sr.shape[-1] // batch.lr.shape[-1]
    sr = upcast(sr)
    if config.loss == "lway":
        if reconstruct is None:
            raise ValueError("the lway loss needs the prepared stage-1 reconstructor")
        if config.target == "lr-recon":  # R degrades the downsampled output at the LR's own scale
            pred, target = upcast(reconstruct(bicubic_down(sr, scale))), batch.lr
        else:
            x_hat = upcast(reconstruct(sr))
            pred, target = (x_hat, batch.up) if config.target == "sr" else (bicubic_down(x_hat, scale), batch.lr)
    elif config.loss == "naive":
        pred, target = bicubic_down(sr, scale), batch.lr
    elif config.loss == "identity":
        pred, target = sr, batch.up
    elif config.loss == "supervised":  # control: the synthetic-pair term alone, no self-supervised term
        pred = target = None
    else:  # AdaptConfig validates this; kept for direct callers
        raise ValueError(f"unknown loss {config.loss!r}")
    if pred is None:
        main = sr.sum() * 0.0  # keeps the graph (and the dtype) of S's output
    else:
        weight = hf_weight(pred if config.hf_source == "pred" else target, config.hf_mode,
                           norm=config.hf_norm) if config.hf_weight else None
        main = weighted_l1(pred, target, weight)
    parts = {"l1": main.detach()}
    loss = main
    if config.perceptual != "none" and pred is not None:
        if perceptual is None:
            raise ValueError(f"the {config.perceptual} perceptual term needs its network (perceptual.build_perceptual)")
        perc = perceptual(pred, target, weight)
        parts["perc"] = perc.detach()
        loss = loss + config.perceptual_scale * perc
    if config.anchor_weight > 0 and batch.anchor is not None:
        out, ref = sr, upcast(batch.anchor)
        if config.anchor_pool > 1:  # tie the coarse picture only: detail finer than k pixels is left free
            out, ref = F.avg_pool2d(out, config.anchor_pool), F.avg_pool2d(ref, config.anchor_pool)
        diff = (out - ref).abs()
        anchor = diff.mean() if batch.anchor_scale is None else (diff.mean(dim=(1, 2, 3)) * batch.anchor_scale).mean()
        parts["anchor"] = anchor.detach()
        loss = loss + config.anchor_weight * anchor
    if config.detail_guard > 0 and batch.anchor is not None:
        over = F.relu(detail_ratio(sr, upcast(batch.anchor)) - config.detail_guard_ratio)
        guard = over.mean() if batch.guard_scale is None else (over * batch.guard_scale).mean()
        parts["detail"] = guard.detach()
        loss = loss + config.detail_guard * guard
    if sup_sr is not None and wants_supervised(config, batch):
        sup = supervised_l1(upcast(sup_sr), batch)
        parts["sup"] = sup.detach()
        loss = loss + config.sup_weight * sup
    return loss, parts


def adaptation_loss(sr: torch.Tensor, batch: Batch, recon: Reconstruct | None, config: AdaptConfig,
                    sup_sr: torch.Tensor | None = None,
                    perceptual: Perceptual | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of S's output ``sr`` for ``batch``; returns (loss tensor, its parts as floats).

    ``recon(sr, batch.index)`` is the prepared reconstructor; see ``loss_terms``.
    """
    reconstruct = None if recon is None else (lambda x: recon(x, batch.index))
    loss, parts = loss_terms(sr, batch, reconstruct, config, sup_sr, perceptual)
    return loss, {k: float(v) for k, v in parts.items()}


def trust_losses(images, backbone, recon, config: AdaptConfig, scale: int, multiple: int = 1,
                 max_side: int = TRUST_MAX_SIDE, progress=None) -> list[dict[str, float]]:
    """Stage 1's judgement of the backbone on each image, before adapting: per image, the run's
    self-supervised loss (no anchor, guard, supervised or perceptual term) on a centre crop of at most
    ``max_side`` LR pixels, for the unadapted output (``loss_unadapted``) and for the bicubic upsampling
    of the same crop (``loss_bicubic``); and the unadapted output's fine detail there (``detail_unadapted``,
    ``wavelet.detail_energy`` of it clamped to [0, 1], as ``loop.detail_change`` measures it).

    ``images`` are ``patches.AdaptImage``; ``backbone`` the unadapted S; ``recon(clean, index)`` the
    prepared R. Where R(S0(x)) explains the LR worse than R(bicubic(x)) (``loss_bicubic /
    loss_unadapted < 1``), the backbone adds something the degradation model cannot account for. ``progress`` is
    called with the number of images done after each one.
    """
    plain = config.without_perceptual().replace(anchor_weight=0.0, sup_weight=0.0, detail_guard=0.0)
    info = []
    with torch.no_grad():
        for i, im in enumerate(images):
            t, l, side = im.centre_window(max_side, multiple)
            lr = im.lr[..., t:t + side, l:l + side]
            up = im.up_window(t, l, side, side)
            batch = Batch(lr=lr, up=up, index=torch.full((1,), i, dtype=torch.long, device=lr.device))
            reconstruct = (lambda x, b=batch: recon(x, b.index))
            s0 = backbone(lr)
            # its fine detail too, which the run's detail_change compares the adapted output's with (one pass less)
            e_s0 = float(detail_energy(s0.clamp(0, 1), scale)[0])
            l_s0 = float(loss_terms(s0, batch, reconstruct, plain)[0])
            # bicubic of the crop itself, so both predictions see the same borders
            l_bic = float(loss_terms(bicubic_up(lr, scale), batch, reconstruct, plain)[0])
            info.append({"loss_unadapted": l_s0, "loss_bicubic": l_bic, "detail_unadapted": e_s0})
            if progress is not None:
                progress(len(info))
    return info


def backbone_trust(info: list[dict[str, float]], config: AdaptConfig,
                   among: Sequence[int] | None = None) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Per-image anchor factors ``min(1, L_bicubic / L_S0) ** config.anchor_trust`` (see AdaptConfig;
    with ``anchor_trust_scope='run'`` the losses are summed over the images first, those of the indices ``among``
    when given (the run's training images), one factor for all).

    ``info`` is ``trust_losses``'s list. Returns the factors ``(N,)`` and, per image, both losses
    (rounded) and the factor, for the report.
    """
    pooled = info if among is None else [info[k] for k in among]
    pairs = ([(sum(d["loss_bicubic"] for d in pooled), sum(d["loss_unadapted"] for d in pooled))] * len(info)
             if config.anchor_trust_scope == "run" else [(d["loss_bicubic"], d["loss_unadapted"]) for d in info])
    factors, out = [], []
    for d, (l_bic, l_s0) in zip(info, pairs):
        factors.append(capped_ratio(l_bic, l_s0) ** config.anchor_trust)
        out.append({"loss_unadapted": round(d["loss_unadapted"], 6), "loss_bicubic": round(d["loss_bicubic"], 6),
                    "anchor_factor": round(factors[-1], 4)})
    return torch.tensor(factors, dtype=torch.float32), out


# the detail guard's gate: 1 - min(1, r) ** GATE_POWER, r = L_bicubic / L_S0 of the image (trust_losses)
GATE_POWER = 2


def guard_gates(info: list[dict[str, float]]) -> torch.Tensor:
    """Per-image factors on the detail guard (``detail_guard_gate='trust'``): ``1 - min(1, r) ** 2`` with
    ``r = loss_bicubic / loss_unadapted`` of each image alone (``trust_losses``).

    0 where stage 1 finds the backbone's output at least as consistent with the LR as bicubic's
    (its added detail is explained by the degradation: blurred or downscaled input, where S must add
    detail); it grows as the backbone's output explains the LR worse than plain bicubic (sharpened,
    JPEG-compressed input, where the added detail is false). The power 2 is the anchor trust's
    default: the gate is the share of the anchor that trust takes away from a fully trusted backbone.
    Always per image: a mixed folder holds images of both kinds.
    """
    return torch.tensor([1.0 - capped_ratio(d["loss_bicubic"], d["loss_unadapted"]) ** GATE_POWER for d in info],
                        dtype=torch.float32)


def capped_ratio(l_bic: float, l_s0: float) -> float:
    """``min(1, L_bicubic / L_S0)`` (1 when L_S0 is 0): stage 1's trust in the backbone, shared by the anchor trust
    and the guard's gate."""
    return min(1.0, l_bic / l_s0) if l_s0 > 0 else 1.0
