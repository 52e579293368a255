"""`--device auto|cuda|cpu` to a torch device, refused in one sentence when it cannot be had (nnU-Net and baselines)."""

from __future__ import annotations

from .choices import one_of
from .errors import InputError

DEVICES = ("auto", "cuda", "cpu")


def torch_device(device: str):
    """auto: cuda when torch sees a GPU, else cpu."""
    import torch

    one_of("--device", device, DEVICES)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA GPU; pass --device cpu or auto.")
    return torch.device(device)
