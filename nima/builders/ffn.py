"""Position-wise feed-forward networks: plain two-layer MLPs and gated linear units."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class MLP(nn.Module):
    """``down(act(up(x)))``: the original transformer (ReLU) and GPT-2 (GELU)."""

    def __init__(self, d_model: int, hidden: int, activation: nn.Module, bias: bool) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.act = activation
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self.down.nima_residual = True  # GPT-2 scaled init applies to this projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model)
        return self.down(self.act(self.up(x)))  # (B, T, d_model)


class GatedMLP(nn.Module):
    """``down(act(gate(x)) * up(x))``: GLU variants (Shazeer 2020): GLU, SwiGLU, GeGLU."""

    def __init__(self, d_model: int, hidden: int, activation: nn.Module, bias: bool) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=bias)
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.act = activation
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self.down.nima_residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model)
        return self.down(self.act(self.gate(x)) * self.up(x))  # (B, T, d_model)


# The closed table of FFN kinds: kind -> factory(d_model, hidden, bias).
FFNS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "relu": lambda d, h, b: MLP(d, h, nn.ReLU(), b),
    "gelu": lambda d, h, b: MLP(d, h, nn.GELU(), b),
    "glu": lambda d, h, b: GatedMLP(d, h, nn.Sigmoid(), b),
    "swiglu": lambda d, h, b: GatedMLP(d, h, nn.SiLU(), b),
    "geglu": lambda d, h, b: GatedMLP(d, h, nn.GELU(), b),
}
