"""One adaptation step, as a pure function of (model, optimizer, batch, stage-1 constants, config).

Nothing non-finite reaches the weights: a NaN/inf loss or gradient skips the update (the driver
then lowers the learning rate, and stops with the last good weights if it persists).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lway_rt.adapt.config import AdaptConfig
from lway_rt.adapt.losses import Reconstruct, adaptation_loss, wants_supervised
from lway_rt.adapt.patches import Batch, dihedral, undo_dihedral
from lway_rt.adapt.perceptual import Perceptual

__all__ = ["adapt_step", "trainable_params"]


def trainable_params(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for g in optimizer.param_groups for p in g["params"]]


def adapt_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch,
               stage1_prepared: Reconstruct | None, config: AdaptConfig,
               perceptual: Perceptual | None = None) -> dict[str, float | bool | str]:
    """Forward S on the batch, compute the configured loss, and update S's trainable parameters.

    Returns ``loss`` (float), ``skipped`` (bool), ``grad_norm`` and the loss parts; a skipped step
    says why in ``reason``. Only the parameters the optimizer holds can change. With
    ``config.sup_weight > 0`` and synthetic pairs in the batch (``batch.sup_lr``/``sup_hr``, drawn
    by the driver), S also runs on the synthetic LR and the supervised L1 joins the loss. With
    ``batch.turn`` set (``augment='dihedral'``) S sees each patch turned and its output is turned back.
    ``perceptual`` is the run's perceptual term when ``config.perceptual`` names one.
    """
    params = trainable_params(optimizer)
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        sr = undo_dihedral(model(dihedral(batch.lr, batch.turn)), batch.turn)
        sup_sr = model(batch.sup_lr) if wants_supervised(config, batch) else None
        loss, parts = adaptation_loss(sr, batch, stage1_prepared, config, sup_sr, perceptual)
        value = float(loss.detach())
        if not math.isfinite(value):
            return {"loss": value, "skipped": True, "reason": "non-finite loss", **parts}
        loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=float("inf")))
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return {"loss": value, "skipped": True, "reason": "non-finite gradient", "grad_norm": grad_norm, **parts}
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": value, "skipped": False, "grad_norm": grad_norm, **parts}
