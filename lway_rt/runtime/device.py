"""The torch device a command was asked for: spelled right, and present on this machine."""

from __future__ import annotations

import re

from lway_rt.errors import InputError

__all__ = ["check_device_spelling", "check_torch_device"]


def check_device_spelling(device: str, flag: str = "--device") -> str:
    """``device`` when it is spelled ``cpu``, ``cuda`` or ``cuda:N`` (whether it is present is not asked here)."""
    device = str(device)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise InputError(f"{flag} must be 'cpu' or 'cuda[:N]', not {device!r}")
    return device


def check_torch_device(device: str, flag: str = "--device") -> str:
    """``device`` when it is ``cpu``, ``cuda`` or ``cuda:N`` and this PyTorch can use it; else a one-line
    ``InputError`` saying what to pass (instead of torch's assertion deep inside the first ``.to()``)."""
    import torch

    device = check_device_spelling(device, flag)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"{flag} {device} asked for, but PyTorch sees no CUDA GPU: use {flag} cpu")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise InputError(f"{flag} {device}: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    return device
