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
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the tables are read without torch (`nima info` previews an import); moving weights needs it
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
        import torch

        packed = torch.cat(parts, dim=0)  # rows of (out, in) weights, or elements of biases
        return packed.t().contiguous() if packed.dim() == 2 and self.conv1d else packed


SAME = Layout()
TRANSPOSED = Transposed()


class Row(Layout):
    """A vector stored as a (1, n) matrix (BART's ``final_logits_bias``)."""

    def take(self, tensor: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
        return tensor.reshape(-1)

    def give(self, parts: list[torch.Tensor], spec: ModelSpec) -> torch.Tensor:
        (tensor,) = parts
        return tensor.reshape(1, -1)


ROW = Row()


def always(spec: ModelSpec) -> bool:
    return True


@dataclass(frozen=True)
class Map:
    """Nima parameter ``nima`` from checkpoint tensor ``hf`` (``{i}``: the layer), in ``layout``; only for
    specs where ``when`` holds (T5's up projection is ``wi`` in a plain MLP, ``wi_1`` in a gated one)."""

    nima: str
    hf: str
    layout: Layout = SAME
    when: Callable[[ModelSpec], bool] = always

    def expand(self, spec: ModelSpec) -> list[Map]:
        """This map once per layer of its stack where it names a layer (``{i}``), else once; none where
        ``when`` does not hold for ``spec``."""
        if not self.when(spec):
            return []
        if "{i}" not in self.nima:
            return [self]
        layers = spec.encoder_layers if self.nima.startswith("encoder.") else spec.n_layers
        return [
            Map(self.nima.replace("{i}", str(i)), self.hf.replace("{i}", str(i)), self.layout) for i in range(layers)
        ]


def qkv_widths(spec: ModelSpec) -> list[int]:
    """The q, k and v projections' widths in a packed tensor."""
    return [spec.attention.n_heads * spec.head_dim, *[spec.n_kv_heads * spec.head_dim] * 2]
