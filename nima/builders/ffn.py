"""Position-wise feed-forward networks: plain two-layer MLPs and gated linear units."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class MLP(nn.Module):
    """``down(act(up(x)))``: the original transformer (ReLU), GPT-2 (GELU), Marian (SiLU)."""

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


# The closed table of FFN kinds: kind -> factory(sizes, hidden) (`nima.builders.sizes`).
FFNS: dict[str, Callable[..., nn.Module]] = {
    "relu": lambda sizes, hidden: MLP(sizes.d_model, hidden, nn.ReLU(), sizes.bias),
    "gelu": lambda sizes, hidden, approximate: MLP(sizes.d_model, hidden, nn.GELU(approximate), sizes.bias),
    "silu": lambda sizes, hidden: MLP(sizes.d_model, hidden, nn.SiLU(), sizes.bias),
    "glu": lambda sizes, hidden: GatedMLP(sizes.d_model, hidden, nn.Sigmoid(), sizes.bias),
    "swiglu": lambda sizes, hidden: GatedMLP(sizes.d_model, hidden, nn.SiLU(), sizes.bias),
    "geglu": lambda sizes, hidden, approximate: GatedMLP(sizes.d_model, hidden, nn.GELU(approximate), sizes.bias),
}
