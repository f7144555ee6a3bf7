"""``AdaptConfig``: every knob of a stage-2 run, frozen and validated on construction.

Defaults follow DESIGN.md §2.4 (Adam, lr 5e-5, 200 iterations, SR-size target, all parameters).
A TOML file may supply defaults (``[adapt]`` table or top level); flags override it; the resolved
configuration is written next to every output as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lway_rt.errors import InputError
from lway_rt.export.encoder_backend import BACKENDS as ENCODER_BACKENDS  # torch, onnxruntime, tensorrt

__all__ = ["AdaptConfig", "LOSSES", "TARGETS", "MODES", "LR_SCHEDULES", "AUGMENTS", "PERCEPTUALS", "TRAINABLE_PRESETS",
           "load_toml_defaults"]

LOSSES = ("lway", "naive", "identity", "supervised")
TARGETS = ("sr", "lr", "lr-recon")
MODES = ("folder", "per-image", "per-group")
SUP_DEGRADATIONS = ("lr", "classic", "stage1")
LR_SCHEDULES = ("constant", "cosine")
AUGMENTS = ("none", "dihedral")
MIN_PATCH = 4  # the smallest LR patch the settings accept (16 or more to learn from)
PERCEPTUALS = ("none", "trunk-l1", "lpips")  # lway_rt.adapt.perceptual
DETAIL_GUARD_GATES = ("none", "trust")  # lway_rt.adapt.losses.guard_gates
# perceptual_weight when unset. trunk-l1: 1/14.6, so that on the unadapted backbone's output it equals LWay's
# wavelet-weighted L1 (the trunk-feature L1 was 14.6x the pixel L1 on the development split's 48 crops,
# realesr-animevideov3, shipped stage 1, 48-px patches). lpips: 1, the usual L1 + LPIPS weighting.
PERCEPTUAL_WEIGHTS = {"none": 0.0, "trunk-l1": 0.07, "lpips": 1.0}
TRAINABLE_PRESETS = ("all", "body")


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation recipe.

    loss: ``lway`` (x̂ = R(S(x), e) against the LR), ``naive`` (bicubic-downsampled S(x) against
      the LR, no reconstructor) or ``identity`` (the control of DESIGN §2.5: R replaced by the
      identity, S(x) against the bicubic-upsampled LR).
    target: ``sr`` compares at SR size with the bicubic-upsampled LR; ``lr`` downsamples the
      prediction by the scale and compares with the LR itself (``naive`` always works at LR size,
      ``identity`` always at SR size). ``lr-recon`` degrades at the LR's own scale: S's output is
      bicubic-downsampled to LR size, R degrades it with E's embedding of the LR itself (not of its
      upsampling), and x̂ is compared with the LR: the capture-scale model JPEG(down(x)) + n, with
      stage 1's degradations acting at the scale they were trained at (same-size pairs); ``naive``
      is this target with R replaced by the identity. R then runs on LR-size patches (16x fewer
      pixels at x4).
    trainable: ``all``, ``body`` (everything but the first and the last/upsampling layers) or a
      tuple of module or parameter names, each taking what lies under it (``body.1`` is ``body.1.*``,
      not ``body.10``).
    hf_source: ``pred`` takes the wavelet weight of the prediction (x̂, as LWay's figure draws it;
      the weight then moves as S learns), ``target`` of the LR-derived target (a fixed objective).
    hf_norm: ``patch`` min-max normalises each patch's wavelet weight on its own (LWay); ``batch``
      normalises a step's patches together, so a near-flat patch weighs less than a textured one.
    anchor_weight: weight of an L1 penalty tying S's output to the unadapted model's output on the
      same patch (the drift guard of DESIGN §2.5; 0 turns it off and saves a forward pass). It keeps
      what the backbone already does well where the self-supervised loss has nothing to say.
    sup_weight: weight of a supervised L1 between S(LR) and HR on synthetic pairs made from clean
      photos each step (``synthetic.py``; LWay's supervised pre-training kept alongside the
      self-supervised term, so S stays a restorer instead of learning to copy the input's noise).
      0 turns it off and saves a forward pass of S per step.
      Defaults sup_weight 3, anchor_weight 0.2: chosen by ``benchmarks/quality_sweep.py`` on the
      development split (seeds 3-4) by a rule fixed before the sweep (mean gain >= 0.3 dB and no
      crop below -0.1 dB, then the highest mean): +0.55 dB, worst crop -0.03 dB there; sup 1 without
      the anchor gave +0.49 / -0.77, sup 3 +0.62 / -0.63, anchor 0.1 +0.59 / -0.31, anchor 0.4
      +0.45 / -0.04. A second round (``quality_sweep.py --both``) scored recipes with one model per
      mixed folder *and* one per degradation folder, beside naive, by a rule fixed before it ran
      (both settings: mean >= 0.3 dB, worst >= -0.1 dB, above naive; then the higher smaller mean):
      anchor_trust 2 pooled over the run (``anchor_trust_scope='run'``) was chosen, +0.558 / -0.063
      mixed and +0.376 / -0.035 per folder against +0.548 / -0.033 and +0.325 / -0.035 without it.
      Without the supervised term LWay lost 2.35 dB on the benchmark (S learnt the
      LR's noise and JPEG blocks).
    anchor_pool: the anchor compares the two outputs after a ``k x k`` average pool (HR pixels): 1
      (default) ties every pixel; larger values tie only the coarse picture (colour, tone, layout)
      and leave detail finer than ``k`` pixels free, so S can remove artefacts the backbone adds
      (halos, blocks) while the anchor still stops drift.
    anchor_trust: how much the anchor trusts the backbone on each image, judged by stage 1 (``lway``
      loss only; 0 = off, every image anchored alike). Before adapting, the run's own
      self-supervised loss is measured on a centre crop of each image twice: for the unadapted
      output S0(x) and for plain bicubic upsampling. Where R(S0(x)) explains the LR worse than
      R(bicubic(x)) does, the backbone is adding something the degradation model cannot account
      for (sharpened JPEG blocks, halos), and that image's anchor is scaled by
      ``min(1, L_bicubic / L_S0) ** anchor_trust``; elsewhere it keeps its full weight. The other
      losses have no reconstructor to judge with and keep the plain anchor.
    anchor_trust_scope: ``image`` judges each image alone; ``run`` pools the losses of all the
      run's images (sum of L_bicubic over sum of L_S0) into one factor for every image, the
      footage-from-one-source reading (a single image's ratio is noisy).
    sup_data: folder of clean photos for those pairs; None uses the photos stage 1 trains on
      (``lway_rt.degae.data.BUNDLED_TRAIN``).
    sup_batch: synthetic pairs per step; None uses ``batch_size``.
    sup_degradation: how a pair's LR is made from its HR crop: ``lr`` = x4 bicubic down, then one
      draw of stage 1's sampler (blur, noise, JPEG, any order) at LR size; ``classic`` = the
      draw's blur at HR size, x4 bicubic down, then its noise and JPEG at LR size (the usual SR
      degradation model, JPEG((x * k) down + n); blur kernels then act at the scale SR networks are
      trained on). Default ``classic``: on the quality benchmark it lifted the supervised term alone
      from +0.37 to +0.72 dB and LWay from +0.35 to +0.42 dB (supervised x1, no anchor).
      ``stage1`` (lway loss only) = stage 1's own model of the inputs' degradation: R applied to the
      clean HR crop with the embedding of one of the run's images (drawn per pair), then x4 bicubic
      down and 8-bit rounding (with target ``lr-recon``, R on the downscaled crop, as that target's
      loss runs it), so the supervised term teaches S to undo the degradation the LWay term measures
      instead of a generic one. Measured worse than ``classic`` on the development split (README,
      round 8: mean gain +0.10 dB against +0.42 over six runs, worst crops down to -1.13 dB).
    strength: how far the written model moves from the base one: the final weights are
      base + strength * (adapted - base) (network interpolation, as ESRGAN's PSNR/GAN blend and
      Real-ESRGAN's denoise strength do it). 1 keeps the adapted weights; smaller values trade part
      of the gain for a smaller worst case (measured in ``benchmarks/quality.py --blend``).
    ema: 0 (default) writes S's weights as the last step left them; a decay in (0, 1) writes their
      exponential moving average instead, ``avg <- ema * avg + (1 - ema) * weights`` after every
      step, started from the base weights (Polyak averaging: the written model is the centre of the
      last ~1 / (1 - ema) steps rather than wherever the last noisy step stopped). Snapshots, the
      ground-truth evaluations and the written weights all use the average; training does not.
      Off by default: 0.98 lost more on the worst crop than the last step's weights on the
      development split (``quality_dev_sweep_round4.json``, ``adapt_variance.json``).
    lr_schedule: ``constant`` (default) keeps Adam's learning rate at ``lr`` for every step; ``cosine``
      scales the step taken after ``i`` steps by ``(1 + cos(pi i / iterations)) / 2`` (SGDR's cosine
      annealing without restarts): full steps at first, ever smaller ones towards the end, so the
      written weights are not wherever the last full-size noisy step left them. The drift guard's
      and the NaN handling's halvings multiply it. Off by default: over three adaptation seeds in
      both settings on the development split it passed the quality bar in 0 of 6 runs against the
      default's 3 (``quality_dev_sweep_round6.json``); it steadies a folder's gain across seeds but
      one sharpen+JPEG crop then loses 0.33-0.48 dB in every run.
    patch_size: the side of the LR patches S adapts on (and of the synthetic pairs' LR). Default 48,
      chosen by ``benchmarks/quality_sweep.py --round11`` on the development split (rule fixed before
      it ran, ``RULE_6``): over three adaptation seeds in both settings it passed the quality bar in
      5 of 6 runs against 3 of 6 for 32 px (the default until then), mean gain +0.408 dB against
      +0.418, worst crop -0.123 dB on average against -0.222. On the benchmark's 48-px crops a patch
      is a whole crop, so S and R never see a patch border inside the picture; on larger images it is
      a larger share of context. A step costs ~2.6x a 32-px one on a CPU; images smaller than the
      patch are refused with the largest size that fits (``--patch-size``).
    augment: ``none`` (default) feeds each test patch to S as cut; ``dihedral`` feeds it flipped and/or
      rotated by a multiple of 90 degrees (one of the 8, drawn per patch from the run's generator) and
      turns S's output back before R, the loss and the anchor see it, so every term still compares
      the picture in its own orientation (R's degradation, a motion blur's direction, is not turned).
      S then has to explain each patch in all orientations rather than fit the few patch positions
      a small image has (data augmentation, as SR training does it, kept consistent with the
      self-supervised loss). The synthetic pairs are flipped and rotated either way. Off by default: on
      the development split it passed the quality bar in 1 of 6 runs against 3 for the same 32-px
      recipe without it (README, round 12; the highest mean gain, +0.467 dB, but one crop lost up to
      0.31 dB under box downscaling in five runs).
    perceptual: the weighted perceptual term beside the L1 (DESIGN §2.4, ``perceptual.py``): ``none``
      (default), ``trunk-l1`` (an L1 between the features of the frozen pretrained trunk stage 1's
      encoder reads, available offline) or ``lpips`` (LPIPS-AlexNet from ``lpips_weights``, files the
      user supplies). It compares the same prediction and target as the L1, weighted by the same
      wavelet map, and joins the loss times ``perceptual_weight`` (unset: 0.07 for ``trunk-l1``, which
      makes it equal to the L1 on the unadapted output on the development split; 1 for ``lpips``).
      Off by default: with ``trunk-l1`` the worst crops lost more (README, round 13: 1 of 6 development
      runs passed the quality bar against 5 without it, mean gain +0.398 dB against +0.408).
    detail_cap: unset (default) writes each image as the adapted model makes it. A number C >= 1 holds the
      fine detail adaptation adds at C x the unadapted model's, per image: where the adapted image's
      Haar detail energy of Y (what ``detail_change`` compares) exceeds C x the unadapted image's, the
      written image is ``unadapted + s (adapted - unadapted)`` with the largest ``s`` that meets the cap
      (``wavelet.detail_cap``, no ground truth). The weights are not changed (it is not in the recipe, and
      ``--resume`` may change it); the weights file records C, and ``lwayrt upscale`` applies it again with
      the base model, so it reproduces the written images. Where adaptation made crops of the quality
      benchmark worse, it had added such detail (``detail_flag``); what the cap does there: README, round 14.
    detail_guard: weight of a training-side hold on added fine detail (0, the default, = off): per patch, the
      Haar detail energy of Y of S's output over that of the unadapted model's output on the same patch,
      ``r``, adds ``detail_guard * relu(r - detail_guard_ratio)`` (mean over the batch) to the loss. Unlike
      ``detail_cap``, which blends the written image back towards the unadapted one, this acts while S
      learns: S may still remove blocks and noise or change anything else, but is pushed back where it
      makes a patch's detail exceed the ratio (the crops adaptation made worse were those where it had
      added detail the truth lacks). It needs the unadapted model's output, so it costs the anchor's
      forward pass when ``anchor_weight`` is 0.
    detail_guard_ratio: the ratio ``r`` the detail guard allows before it acts (>= 1).
    detail_guard_gate: ``none`` (default): the guard acts alike on every image. ``trust`` (``lway`` loss only):
      each image's guard is scaled by ``1 - min(1, L_bicubic / L_S0) ** 2``, stage 1's judgement of the
      backbone on that image (the anchor trust's measure, ``losses.guard_gates``), always per image: 0 where
      R(S0(x)) explains the LR at least as well as R(bicubic(x)) (blurred or downscaled input, where S must
      add detail), growing where the backbone's output explains it worse (sharpened, JPEG-compressed input,
      where its added detail is false). Round 15 found the ungated guard does both: it removed the sharpen +
      JPEG crops' losses and took the blurred crops' gains. Round 16 (weight 8, ``quality_dev_sweep_round16.json``,
      development split, six runs): with one model per degradation folder the mean rose from +0.314 to +0.443 dB
      and two of three runs passed, as with the default (the third lost 0.19 dB on a box-downscaled crop, the
      default 0.49 on a sharpened one); with one model over a mixed folder all three runs failed on one
      box-downscaled crop whose gate is 0.01 (worst -0.31 to -0.73 dB; the default's -0.01 to -0.08): the shared
      model learns to add less detail to every input. 2 of 6 runs passed (the default 5), so off by default.
    guard_factor: roll back to the last good weights and halve the learning rate when the loss on the run's
      fixed centre patches (checked every ``guard_every`` steps; the wavelet weight taken from the target, no
      anchor or guard term, so it does not move with the step's random patches) exceeds this factor times its
      best value so far (0 = off).
    mode: ``folder`` (one model for all inputs), ``per-image`` (one model per input) or ``per-group``: the
      inputs grouped by stage 1's embedding of their degradation (``lway_rt.adapt.groups``), one model
      per group; ``groups`` is the number of groups or ``auto`` (chosen by silhouette, one group when the
      inputs show no clear groups). On the development split's mixed folders per-group gained +0.36 dB over
      three runs against one model's +0.50 (round 17's diagnostic, README), so ``folder`` is the default.
    sample: adapt on this many of the inputs, spread evenly over them in frame order (2 before 10), first and last
      included (the frames of a long clip: each costs memory and embedding time, and a sample spread
      over the clip shows its degradation); only those are super-resolved into ``sr/``. None: all.
    """

    iterations: int = 200
    lr: float = 5e-5
    lr_schedule: str = "constant"
    patch_size: int = 48  # LR pixels; see the docstring
    augment: str = "none"
    batch_size: int = 4
    trainable: str | tuple[str, ...] = "all"
    mode: str = "folder"
    groups: int | str = "auto"  # per-group mode only: a count, or auto (lway_rt.adapt.groups)
    sample: int | None = None  # adapt on this many of the inputs, spread evenly in frame order (None: all)
    target: str = "sr"
    loss: str = "lway"
    hf_weight: bool = True
    hf_mode: str = "luma"
    hf_source: str = "pred"
    hf_norm: str = "patch"
    anchor_weight: float = 0.2
    anchor_pool: int = 1  # HR pixels; 1 = pixel-wise
    anchor_trust: float = 2.0
    anchor_trust_scope: str = "run"
    sup_weight: float = 3.0
    sup_data: str | None = None
    sup_batch: int | None = None  # None = batch_size
    sup_degradation: str = "classic"
    strength: float = 1.0
    ema: float = 0.0  # 0 = off; else the decay of the weights' moving average
    perceptual: str = "none"
    perceptual_weight: float | None = None  # None: the kind's default (PERCEPTUAL_WEIGHTS)
    lpips_weights: tuple[str, ...] = ()
    detail_cap: float | None = None  # None = off; see the docstring
    detail_guard: float = 0.0  # 0 = off; see the docstring
    detail_guard_ratio: float = 1.2
    detail_guard_gate: str = "none"
    guard_factor: float = 2.0
    guard_every: int = 10
    max_bad_steps: int = 5
    eval_every: int = 20
    patience: int = 3
    snapshot_every: int = 20
    snapshot_crop: int = 48  # LR pixels, one fixed crop per image (up to 6 images)
    checkpoint_every: int = 20
    seed: int = 0
    device: str = "cpu"
    encoder_backend: str = "torch"
    tile: int | None = None  # whole-image inference as lwayrt upscale's: None = its 512-px tiles, 0 = one pass, N > 64
    adam_betas: tuple[float, float] = (0.9, 0.999)
    notes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        def bad(msg: str):
            raise InputError(f"adapt config: {msg}")

        def is_number(v) -> bool:  # an int or a float (a bool is not one)
            return not isinstance(v, bool) and isinstance(v, (int, float))

        def weight_ok(v) -> bool:  # a finite number >= 0
            return is_number(v) and math.isfinite(v) and v >= 0

        if isinstance(self.trainable, list):
            object.__setattr__(self, "trainable", tuple(self.trainable))
        if isinstance(self.adam_betas, list):
            object.__setattr__(self, "adam_betas", tuple(self.adam_betas))
        paths = [self.lpips_weights] if isinstance(self.lpips_weights, (str, Path)) else self.lpips_weights
        if paths != ():
            if not isinstance(paths, (list, tuple)) or not all(isinstance(p, (str, Path)) and str(p) for p in paths):
                bad(f"lpips_weights must be weight files (paths), got {self.lpips_weights!r}")
            object.__setattr__(self, "lpips_weights", tuple(str(p) for p in paths))
        if not isinstance(self.notes, dict):  # run notes (a --config table is a dict); 5 was written into config.json
            bad(f"notes must be a table of notes, got {self.notes!r}")
        if isinstance(self.sup_data, Path):
            object.__setattr__(self, "sup_data", str(self.sup_data))
        if isinstance(self.groups, str):  # a --config file's "AUTO" or "3", as the command line takes them
            word = self.groups.strip().lower()
            if word == "auto" or (word.isdigit() and word.isascii()):
                object.__setattr__(self, "groups", "auto" if word == "auto" else int(word))
        # the type of every plain setting first (a --config file can hold anything): a seed of 1.5 failed deep in
        # torch, and hf_weight = "false" was taken as true
        kinds = {"int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
                 "float": (is_number, "a number"), "bool": (lambda v: isinstance(v, bool), "true or false"),
                 "str": (lambda v: isinstance(v, str), "a string")}
        for f in dataclasses.fields(self):
            allowed = [t.strip() for t in str(f.type).split("|")]
            value = getattr(self, f.name)
            if not all(t in kinds or t == "None" for t in allowed) or (value is None and "None" in allowed):
                continue
            if not any(kinds[t][0](value) for t in allowed if t != "None"):
                wanted = " or ".join(kinds[t][1] for t in allowed if t != "None") + (" or unset" if "None" in allowed else "")
                bad(f"{f.name} must be {wanted}, got {value!r}")
        if not isinstance(self.trainable, (str, tuple)):
            bad(f"trainable must be all, body or a list of module or parameter names, got {self.trainable!r}")
        if not isinstance(self.adam_betas, tuple) or len(self.adam_betas) != 2 or \
                not all(is_number(b) and 0 <= b < 1 for b in self.adam_betas):
            bad(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        for name in ("iterations", "anchor_pool", "patch_size", "batch_size", "guard_every", "max_bad_steps", "eval_every",
                     "patience", "snapshot_every", "snapshot_crop", "checkpoint_every"):
            v = getattr(self, name)
            if v < 1:
                bad(f"{name} must be a positive integer, got {v!r}")
        if self.seed < 0:  # torch took -1 as 2**64 - 1, numpy refuses it
            bad(f"seed must be 0 or a positive whole number, got {self.seed!r}")
        if self.sample is not None and self.sample < 1:
            bad(f"sample must be a positive number of inputs, got {self.sample!r}")
        if not (0.0 < self.lr < 1.0):
            bad(f"lr must be in (0, 1), got {self.lr}; 5e-5 is the default")
        if self.lr_schedule not in LR_SCHEDULES:
            bad(f"unknown lr_schedule {self.lr_schedule!r}; use one of {', '.join(LR_SCHEDULES)}")
        if self.augment not in AUGMENTS:
            bad(f"unknown augment {self.augment!r}; use one of {', '.join(AUGMENTS)}")
        if self.patch_size < MIN_PATCH:
            bad(f"patch_size {self.patch_size} is too small: use {MIN_PATCH} or more LR pixels (16 or more to learn from)")
        if self.loss not in LOSSES:
            bad(f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        if self.loss == "supervised" and not self.sup_weight > 0:
            bad("the supervised loss (no self-supervised term: the control for LWay's supervised half) needs sup_weight > 0")
        if self.target not in TARGETS:
            bad(f"unknown target {self.target!r}; use one of {', '.join(TARGETS)}")
        if self.sup_degradation == "stage1" and self.loss != "lway" and self.sup_weight > 0:
            bad(f"sup_degradation 'stage1' degrades the synthetic pairs with stage 1's R, which the {self.loss} loss "
                "does not load: use the lway loss, or sup_degradation 'classic'")
        if self.mode not in MODES:
            bad(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if self.groups != "auto" and (isinstance(self.groups, str) or self.groups < 1):
            bad(f"groups must be a positive number of groups or auto, got {self.groups!r}")
        if self.groups != "auto" and self.mode != "per-group":
            bad(f"groups ({self.groups}) applies to per-group mode only: add --mode per-group, or leave --groups out")
        if self.hf_mode not in ("luma", "channel"):
            bad(f"unknown hf_mode {self.hf_mode!r}; use luma or channel")
        if self.hf_source not in ("pred", "target"):
            bad(f"unknown hf_source {self.hf_source!r}; use pred (the map of x̂, as LWay) or target")
        if self.hf_norm not in ("patch", "batch"):
            bad(f"unknown hf_norm {self.hf_norm!r}; use patch (each patch's map on its own, as LWay) or batch")
        if self.encoder_backend not in ENCODER_BACKENDS:
            bad(f"encoder backend {self.encoder_backend!r} is not available; use {', '.join(ENCODER_BACKENDS)}")
        if isinstance(self.trainable, str):
            if self.trainable not in TRAINABLE_PRESETS:
                bad(f"trainable must be all, body or a list of module or parameter names, got {self.trainable!r}")
        elif not self.trainable or not all(isinstance(p, str) and p for p in self.trainable):
            bad("trainable names must be non-empty strings")
        if self.tile is not None and (self.tile < 0 or 0 < self.tile <= 64):
            bad(f"tile must be 0 (one pass), above 64 (twice upscale's 32-px tile overlap) or unset (512), got {self.tile!r}")
        if not weight_ok(self.anchor_trust):
            bad(f"anchor_trust must be a finite number >= 0 (0: off), got {self.anchor_trust!r}")
        if self.anchor_trust_scope not in ("image", "run"):
            bad(f"anchor_trust_scope must be image or run, got {self.anchor_trust_scope!r}")
        # every number, from the command line or a --config file: nan passes every "< 0" check (and turned the
        # anchor and the guard silently off), inf reaches the optimiser
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                bad(f"{f.name} must be a finite number, got {value!r}")
        for name in ("anchor_weight", "guard_factor"):
            if getattr(self, name) < 0:
                bad(f"{name} must be >= 0 (0: off), got {getattr(self, name)!r}")
        if not weight_ok(self.sup_weight):
            bad(f"sup_weight must be a finite number >= 0 (0: off), got {self.sup_weight!r}")
        if self.sup_data is not None and (not isinstance(self.sup_data, str) or not self.sup_data):
            bad(f"sup_data must be a folder of clean photos or unset (the bundled ones), got {self.sup_data!r}")
        if self.sup_degradation not in SUP_DEGRADATIONS:
            bad(f"sup_degradation must be one of {', '.join(SUP_DEGRADATIONS)}, got {self.sup_degradation!r}")
        if self.sup_batch is not None and self.sup_batch < 1:
            bad(f"sup_batch must be a positive integer or unset (= batch_size), got {self.sup_batch!r}")
        if not 0.0 < self.strength <= 1.0:
            bad(f"strength must be in (0, 1] (1: the adapted weights as trained), got {self.strength!r}")
        if self.detail_cap is not None and not 1.0 <= self.detail_cap < float("inf"):
            bad(f"detail_cap must be a number >= 1 (1: no more fine detail than the unadapted image) or off (unset), "
                f"got {self.detail_cap!r}")
        if not weight_ok(self.detail_guard):
            bad(f"detail_guard must be a finite number >= 0 (0: off), got {self.detail_guard!r}")
        if not 1.0 <= self.detail_guard_ratio < float("inf"):
            bad(f"detail_guard_ratio must be a number >= 1 (1: no more fine detail than the unadapted output), "
                f"got {self.detail_guard_ratio!r}")
        if self.detail_guard_gate not in DETAIL_GUARD_GATES:
            bad(f"detail_guard_gate must be one of {', '.join(DETAIL_GUARD_GATES)}, got {self.detail_guard_gate!r}")
        if self.detail_guard_gate == "trust" and self.detail_guard > 0 and self.loss != "lway":
            bad(f"detail_guard_gate trust needs stage 1's judgement, which only the lway loss has (loss {self.loss!r}): "
                "use --detail-guard-gate none")
        if not 0.0 <= self.ema < 1.0:
            bad(f"ema must be in [0, 1) (0: off; 0.98 averages about the last 50 steps), got {self.ema!r}")
        if self.perceptual not in PERCEPTUALS:
            bad(f"unknown perceptual term {self.perceptual!r}; use one of {', '.join(PERCEPTUALS)}")
        if self.perceptual_weight is not None and not weight_ok(self.perceptual_weight):
            bad(f"perceptual_weight must be a finite number >= 0, got {self.perceptual_weight!r}")
        if self.perceptual != "none" and self.loss == "supervised":
            bad("the supervised loss has no self-supervised prediction for a perceptual term to compare: "
                "use perceptual none, or the lway loss")
        if self.perceptual == "none" and (self.perceptual_weight or self.lpips_weights):
            bad("a perceptual weight or LPIPS weights were given without a perceptual term: add --perceptual trunk-l1 "
                "or --perceptual lpips")
        if self.lpips_weights and self.perceptual != "lpips":
            bad(f"LPIPS weights were given for the {self.perceptual} perceptual term: use --perceptual lpips with them")
        if self.perceptual == "lpips" and not self.lpips_weights:
            bad("the lpips perceptual term needs its weights (they cannot be fetched offline): pass --lpips-weights "
                "FILE (AlexNet backbone and LPIPS linear layers), or use --perceptual trunk-l1")
        if self.guard_factor and self.guard_factor <= 1.0:
            bad(f"guard_factor {self.guard_factor} would roll back on noise; use > 1 (e.g. 2) or 0 to turn it off")

    def without_perceptual(self) -> AdaptConfig:
        """The same recipe with no perceptual term (and none of its settings)."""
        return self.replace(perceptual="none", perceptual_weight=None, lpips_weights=())

    @property
    def perceptual_scale(self) -> float:
        """The perceptual term's weight: ``perceptual_weight``, or the kind's default when it is unset."""
        return PERCEPTUAL_WEIGHTS[self.perceptual] if self.perceptual_weight is None else float(self.perceptual_weight)

    @property
    def sup_batch_size(self) -> int:
        """Synthetic pairs per step (``sup_batch``, or ``batch_size`` when unset)."""
        return self.batch_size if self.sup_batch is None else self.sup_batch

    def check_scale(self, scale: int) -> None:
        """The settings that depend on the model's scale: the anchor's pool must fit in an output patch."""
        if self.anchor_weight > 0 and self.anchor_pool > self.patch_size * scale:
            raise InputError(f"--anchor-pool {self.anchor_pool} (HR pixels) is larger than an output patch, --patch-size "
                             f"{self.patch_size} x the model's scale {scale} = {self.patch_size * scale} pixels: use "
                             f"{self.patch_size * scale} or less, or a larger --patch-size")

    def lr_factor(self, step: int) -> float:
        """The schedule's factor on ``lr`` for the step taken after ``step`` steps (0-based)."""
        if self.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * step / self.iterations))
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["trainable"] = self.trainable if isinstance(self.trainable, str) else list(self.trainable)
        d["adam_betas"] = list(self.adam_betas)
        d["lpips_weights"] = list(self.lpips_weights)
        return d

    def recipe_json(self) -> str:
        """Compact JSON of what shapes the weights (for checkpoint metadata)."""
        d = self.to_dict()
        for k in ("device", "notes", "eval_every", "snapshot_every", "snapshot_crop", "checkpoint_every", "tile",
                  "detail_cap"):  # the cap shapes the written images, not the weights
            d.pop(k, None)
        if not d["detail_guard"]:  # off: the recipe (and checkpoints' fingerprints) as before the option existed
            d.pop("detail_guard"), d.pop("detail_guard_ratio")
        if not d.get("detail_guard") or d["detail_guard_gate"] == "none":  # likewise for the gate
            d.pop("detail_guard_gate")
        if d["mode"] != "per-group":  # likewise for the grouping
            d.pop("groups")
        if d["hf_norm"] == "patch":  # likewise for the wavelet map's normalisation
            d.pop("hf_norm")
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdaptConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"adapt config: unknown keys {', '.join(unknown)}; known keys: {', '.join(sorted(names))}")
        return cls(**d)

    def replace(self, **changes) -> AdaptConfig:
        return dataclasses.replace(self, **changes)


def load_toml_defaults(path: str | Path) -> dict[str, Any]:
    """Read adapt defaults from a TOML file (``[adapt]`` table if present, else the top level), or from the
    ``config.json`` a run wrote (its resolved settings: ``--config OUT/config.json`` runs the same recipe again)."""
    from lway_rt.io.toml_files import read_toml

    p = Path(path)
    if p.suffix.lower() == ".json" and p.is_file():
        import json

        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(f"config file {p} is not readable JSON ({exc}): give the config.json an adapt run "
                             "wrote, or a TOML file") from None
        if not isinstance(data, dict):
            raise InputError(f"config file {p} is not an object of settings: give the config.json an adapt run "
                             "wrote, or a TOML file")
        if ({"history", "images"} <= data.keys() or {"format", "mode", "runs"} <= data.keys()) \
                and (p.parent / "config.json").is_file():  # an easy slip (a run's report, or a per-image/group one's)
            raise InputError(f"{p} is a run's report, not its settings: pass the config.json beside it "
                             f"(--config {p.parent / 'config.json'})")
        return {k.replace("-", "_"): v for k, v in data.items()}
    data = read_toml(p, "config file")
    table = data.get("adapt", data)
    if not isinstance(table, dict):
        raise InputError(f"config file {p}: [adapt] must be a table")
    if "adapt" in data and (outside := sorted(k for k in data if k != "adapt")):  # they were dropped without a word
        raise InputError(f"config file {p} has settings both at its top level ({', '.join(outside)}) and in [adapt]: "
                         "put them all in one place")
    return {k.replace("-", "_"): v for k, v in table.items()}
