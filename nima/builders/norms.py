"""Normalisation layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * (offset + g)``: LayerNorm without centring or bias.

    Written out rather than ``nn.RMSNorm`` so the ONNX graph uses ops every runtime has;
    the statistics are computed in fp32 so fp16/bf16 activations do not overflow.
    """

    def __init__(self, width: int, eps: float, offset: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.offset = offset  # the gain is offset + weight (Gemma: 1 + weight); it starts at 1 either way
        self.weight = nn.Parameter(torch.full((width,), 1.0 - offset))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        # x / sqrt(.) rather than x * rsqrt(.): ONNX Runtime fuses this form into one
        # SimplifiedLayerNormalization kernel; the rsqrt form stays five separate ops.
        x32 = x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        gain = self.weight + self.offset if self.offset else self.weight  # a constant in an exported graph
        return x32.to(x.dtype) * gain


Norm = Callable[[int], nn.Module]  # width -> a norm of that width


# The closed table of norm kinds: kind -> factory(sizes, eps) (`nima.builders.sizes`). A factory gives
# a function of the width, not a module: one spec's norms come at two widths (d_model; head_dim for
# qk-norm). ``placement`` and ``final``, the norm section's other fields, place the norms: the
# builder reads them.
NORMS: dict[str, Callable[..., Norm]] = {
    "layernorm": lambda sizes, eps: lambda width: nn.LayerNorm(width, eps=eps, bias=sizes.bias),
    "rmsnorm": lambda sizes, eps, offset=0.0: lambda width: RMSNorm(width, eps, offset),  # no bias by definition
}
