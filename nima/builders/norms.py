"""Normalisation layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * g``: LayerNorm without centring or bias.

    Written out rather than ``nn.RMSNorm`` so the ONNX graph uses ops every runtime has;
    the statistics are computed in fp32 so fp16/bf16 activations do not overflow.
    """

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        # x / sqrt(.) rather than x * rsqrt(.): ONNX Runtime fuses this form into one
        # SimplifiedLayerNormalization kernel; the rsqrt form stays five separate ops.
        x32 = x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.to(x.dtype) * self.weight


def layer_norm(width: int, eps: float, bias: bool) -> nn.Module:
    return nn.LayerNorm(width, eps=eps, bias=bias)


def rms_norm(width: int, eps: float, bias: bool) -> nn.Module:
    return RMSNorm(width, eps)  # RMSNorm has no bias by definition


# The closed table of norm kinds: kind -> factory(width, eps, bias).
NORMS: dict[str, Callable[[int, float, bool], nn.Module]] = {
    "layernorm": layer_norm,
    "rmsnorm": rms_norm,
}
