"""Small parts the frame and clip networks share: input normalisation and scaled widths."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


def scale_width(width: int, multiplier: float) -> int:
    """A layer width scaled for a smaller network of the same shape (rounded, at least 1)."""
    return max(1, round(width * multiplier))


class PixelNorm(nn.Module):
    """``(255 x - mean) / std`` per RGB channel, for inputs in [0, 1] with channels on axis 1
    ((B, 3, H, W) frames or (B, 3, T, H, W) clips). ``mean`` and ``std`` are in 0..255 units, the
    normalisation the network's published weights were trained with. They are not saved in state dicts
    (non-persistent buffers), so weights converted from elsewhere load without them."""

    def __init__(self, mean: Sequence[float], std: Sequence[float] = (1.0, 1.0, 1.0)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (255.0 * x - self.mean.view(shape)) / self.std.view(shape)


def he_init_convolutions(model: nn.Module) -> None:
    """He (fan-out) initialisation of every 2-d and 3-d convolution of ``model``, biases zero. The linear
    layers keep PyTorch's default (scaled by their width), which, unlike torchvision's N(0, 0.01), still
    passes gradients when a demo's fc layers are narrow."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
