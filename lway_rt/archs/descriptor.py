"""The typed wrapper every caller gets instead of a bare ``nn.Module`` (idea from spandrel).

``upscale``, ``adapt``, ``export`` and ``serve-bench`` read scale, size rules and precision
safety from here, never from the network's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """What the registry knows about one architecture (filled in by each arch's ``detect``)."""

    arch: str
    hparams: dict[str, Any]
    scale: int
    in_channels: int
    out_channels: int
    size_multiple: int = 1
    min_size: int = 1
    fp16_safe: bool = True
    tiling_safe: bool = True


@dataclass(frozen=True)
class ModelDescriptor:
    """A loaded SR network plus the facts callers need about it."""

    model: nn.Module
    spec: ArchSpec
    name: str | None = None  # store name, if it came from the store
    source: str | None = None  # file it was loaded from
    metadata: dict[str, str] = field(default_factory=dict)
    # the file's own name of each tensor whose name differs from the network's ({ours: theirs}; weights under
    # ESRGAN's own names): weights written for this model (adapt's) take the names it came with
    file_names: dict[str, str] = field(default_factory=dict)

    def in_file_names(self, state: dict) -> dict:
        """``state`` (the network's names) with the names of the file the model came from."""
        return {self.file_names.get(k, k): v for k, v in state.items()}

    @property
    def arch(self) -> str:
        return self.spec.arch

    @property
    def scale(self) -> int:
        return self.spec.scale

    @property
    def size_multiple(self) -> int:
        return self.spec.size_multiple

    @property
    def min_size(self) -> int:
        return self.spec.min_size

    @property
    def fp16_safe(self) -> bool:
        return self.spec.fp16_safe

    @property
    def tiling_safe(self) -> bool:
        return self.spec.tiling_safe

    @property
    def in_channels(self) -> int:
        return self.spec.in_channels

    def require_rgb(self, label: str, who: str, error: type[Exception] | None = None) -> None:
        """Refuse a grey or 4-channel network where RGB photos go in; ``who`` says which part needs RGB ("adapt
        fine-tunes"). ``lwayrt upscale`` runs grey networks as well (``upscale.refuse_channels``)."""
        from lway_rt.errors import InputError

        if self.in_channels != 3:
            raise (error or InputError)(f"{who} RGB (3-channel) models, and {label} takes {self.in_channels}-channel "
                                        "input: pick an RGB model ('lwayrt upscale' runs this one)")

    def describe(self) -> str:
        label = self.name or self.source or self.spec.arch
        hp = ", ".join(f"{k}={v}" for k, v in self.spec.hparams.items())
        return f"{label}: {self.spec.arch} x{self.spec.scale} ({hp})"
