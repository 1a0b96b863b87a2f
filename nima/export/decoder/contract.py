"""The ONNX contract of an exported decoder: names, shapes and the wrapper that produces them.

Names follow ONNX Runtime GenAI and Optimum, so other tools load the graph:

| name                                  | shape                                   |
|---------------------------------------|-----------------------------------------|
| input_ids, position_ids               | [batch, seq] int64                      |
| attention_mask                        | [batch, past_seq + seq] int64           |
| past_key_values.{i}.key / .value      | [batch, kv_heads, past_seq, head_dim]   |
| logits                                | [batch, seq, vocab]                     |
| present.{i}.key / .value              | [batch, kv_heads, past_seq + seq, head_dim] |
| logits_to_keep (optional, default 0)  | [] int64: logits of the last k positions only; 0 keeps all |

One graph serves prefill (past_seq = 0) and cached decode. ``logits_to_keep`` is added after
the export (`nima.export.logits_to_keep`); with it fed, the logits' sequence axis is k.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.export import Dim

from nima.layout import (  # one definition, shared with the torch-free runtime
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    PAST_KEY,
    PAST_VALUE,
    POSITION_IDS,
    PRESENT_KEY,
    PRESENT_VALUE,
)


def input_names(n_layers: int) -> list[str]:
    names = [INPUT_IDS, ATTENTION_MASK, POSITION_IDS]
    for i in range(n_layers):
        names += [PAST_KEY % i, PAST_VALUE % i]
    return names


def output_names(n_layers: int) -> list[str]:
    names = [LOGITS]
    for i in range(n_layers):
        names += [PRESENT_KEY % i, PRESENT_VALUE % i]
    return names


class DecoderForExport(nn.Module):
    """A decoder (a `DecoderLM`, or a target's form of one) with the cache as tensors in and out, in
    the contract's order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, P+T)
        position_ids: torch.Tensor,  # (B, T)
        past: list[tuple[torch.Tensor, torch.Tensor]],  # per layer, (B, H_kv, P, hd) each
    ) -> tuple[torch.Tensor, ...]:
        logits, presents = self.model(input_ids, attention_mask, position_ids, past)
        flat = [t for kv in presents for t in kv]
        return (logits, *flat)


def example_inputs(
    n_layers: int, n_kv_heads: int, head_dim: int, vocab: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Trace inputs with batch 2, seq 3, past 4: sizes above 1 so no dimension is specialised."""
    b, t, p = 2, 3, 4
    ids = torch.randint(0, vocab, (b, t))
    mask = torch.ones(b, p + t, dtype=torch.long)
    pos = torch.arange(p, p + t).expand(b, t).contiguous()
    # distinct tensors: the exporter would merge one tensor passed twice into a single graph input
    shape = (b, n_kv_heads, p, head_dim)
    past = [(torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)) for _ in range(n_layers)]
    return ids, mask, pos, past


def dynamic_shapes(n_layers: int) -> dict[str, object]:
    batch = Dim("batch_size")
    seq = Dim("sequence_length")
    past = Dim("past_sequence_length")
    total = Dim("total_sequence_length")
    kv = {0: batch, 2: past}
    return {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: total},
        "position_ids": {0: batch, 1: seq},
        "past": [(kv, kv) for _ in range(n_layers)],
    }
