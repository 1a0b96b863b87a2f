"""Where a Nima weight sits in a Hugging Face checkpoint: `Map` entries and the layout changes between them.

A map names a Nima parameter and the checkpoint tensor it comes from (``{i}``: the layer), and
optionally how the layouts differ. Every change is written both ways — ``take`` (checkpoint ->
Nima, for `nima import`) and ``give`` (Nima -> checkpoint, for `nima export --hf`) — so one table
serves both directions. Where several Nima parameters come from one packed tensor (GPT-2's q, k
and v in ``c_attn``), each map takes its `Part`, and exporting joins the parts in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from nima.spec import ModelSpec


class Layout:
    """The same layout: the tensor as it is."""

    def take(self, tensor: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
        return tensor

    def give(self, parts: list[torch.Tensor], spec: ModelSpec) -> torch.Tensor:
        (tensor,) = parts
        return tensor


class Transposed(Layout):
    """GPT-2's ``Conv1D`` stores a weight as (in, out), the transpose of ``nn.Linear``'s (out, in)."""

    def take(self, tensor: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
        return tensor.t()

    def give(self, parts: list[torch.Tensor], spec: ModelSpec) -> torch.Tensor:
        (tensor,) = parts
        return tensor.t().contiguous()


@dataclass(frozen=True)
class Part(Layout):
    """Part ``index`` of a packed tensor whose parts are ``widths(spec)`` outputs wide, in order. A weight
    packs its parts' rows (``conv1d``: its columns, each part then transposed); a bias its elements."""

    index: int
    widths: Callable[[ModelSpec], list[int]]
    conv1d: bool = False

    def take(self, tensor: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
        widths = self.widths(spec)
        start, end = sum(widths[: self.index]), sum(widths[: self.index + 1])
        if tensor.dim() == 2 and self.conv1d:
            return tensor[:, start:end].t()  # (in, out) columns -> (out, in)
        return tensor[start:end]

    def give(self, parts: list[torch.Tensor], spec: ModelSpec) -> torch.Tensor:
        packed = torch.cat(parts, dim=0)  # rows of (out, in) weights, or elements of biases
        return packed.t().contiguous() if packed.dim() == 2 and self.conv1d else packed


SAME = Layout()
TRANSPOSED = Transposed()


@dataclass(frozen=True)
class Map:
    """Nima parameter ``nima`` from checkpoint tensor ``hf`` (``{i}``: the layer), in ``layout``."""

    nima: str
    hf: str
    layout: Layout = SAME


def qkv_widths(spec: ModelSpec) -> list[int]:
    """The q, k and v projections' widths in a packed tensor."""
    return [spec.attention.n_heads * spec.head_dim, *[spec.n_kv_heads * spec.head_dim] * 2]
