"""The ONNX contract of an exported encoder-decoder: two graphs, their names and shapes, and their wrappers.

``encoder.onnx`` runs once per source:

| name                                  | shape                                        |
|---------------------------------------|----------------------------------------------|
| input_ids                             | [batch, encoder_seq] int64                   |
| attention_mask                        | [batch, encoder_seq] int64 (1 = real token)  |
| encoder_hidden_states                 | [batch, encoder_seq, d_model]                |
| cross_key_values.{i}.key / .value     | [batch, kv_heads, encoder_seq, head_dim]     |

``decoder.onnx`` runs once per step, prefill (past_seq = 0) and cached steps alike:

| name                                  | shape                                        |
|---------------------------------------|----------------------------------------------|
| input_ids, position_ids               | [batch, seq] int64                           |
| attention_mask                        | [batch, past_seq + seq] int64                |
| encoder_attention_mask                | [batch, encoder_seq] int64                   |
| past_key_values.{i}.key / .value      | [batch, kv_heads, past_seq, head_dim]        |
| cross_key_values.{i}.key / .value     | [batch, kv_heads, encoder_seq, head_dim]     |
| logits                                | [batch, seq, vocab]                          |
| present.{i}.key / .value              | [batch, kv_heads, past_seq + seq, head_dim]  |

``i`` counts decoder layers. The decoder's own names are the decoder-only contract's
(`nima.export.decoder.contract`), so one generation loop drives both families.

Why the cross-attention keys/values come out of the encoder graph: they depend on the source
only, so they belong with the one call per source. The decoder graph then takes them as
plain inputs at every step and holds no cross-attention key/value projection at all, so no
step can recompute them; and one decoder graph serves prefill and cached steps, with no
``If`` node and no second "first step" decoder file. A runtime copies the encoder's
``cross_key_values.*`` outputs into the decoder's inputs of the same names, as it does with
``present.*`` -> ``past_key_values.*``. (onnxruntime-genai's Whisper layout splits the work
the same way.) ``encoder_hidden_states`` is an output for callers that want the encoder's
representation; generation does not need it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.export import Dim

from nima.builders.attention import KV
from nima.builders.models import EncoderDecoderLM
from nima.export.decoder.contract import input_names as decoder_only_inputs
from nima.export.decoder.contract import output_names as decoder_only_outputs
from nima.layout import ATTENTION_MASK, CROSS_KEY, CROSS_VALUE, ENCODER_ATTENTION_MASK, ENCODER_HIDDEN, INPUT_IDS


def cross_names(n_layers: int) -> list[str]:
    return [name % i for i in range(n_layers) for name in (CROSS_KEY, CROSS_VALUE)]


def encoder_input_names() -> list[str]:
    return [INPUT_IDS, ATTENTION_MASK]


def encoder_output_names(n_layers: int) -> list[str]:
    return [ENCODER_HIDDEN, *cross_names(n_layers)]


def decoder_input_names(n_layers: int) -> list[str]:
    ids, mask, positions, *past = decoder_only_inputs(n_layers)
    return [ids, mask, positions, ENCODER_ATTENTION_MASK, *past, *cross_names(n_layers)]


def decoder_output_names(n_layers: int) -> list[str]:
    return decoder_only_outputs(n_layers)


def cross_key_values(model: EncoderDecoderLM, hidden: torch.Tensor) -> list[KV]:
    """Each decoder layer's cross-attention keys/values of encoder output ``hidden`` (B, S, d_model)."""
    return [block.cross_attention.key_value(hidden) for block in model.decoder.blocks]  # (B, H_kv, S, hd) each


class EncoderForExport(nn.Module):
    """Source -> encoder hidden states and every decoder layer's cross-attention keys/values."""

    def __init__(self, model: EncoderDecoderLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.model.encode(input_ids, attention_mask)  # (B, S, d_model)
        flat = [t for kv in cross_key_values(self.model, hidden) for t in kv]
        return (hidden, *flat)


class CrossDecoderForExport(nn.Module):
    """One decoder step from the self-attention cache and the precomputed cross-attention keys/values."""

    def __init__(self, model: EncoderDecoderLM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, P+T)
        position_ids: torch.Tensor,  # (B, T)
        encoder_attention_mask: torch.Tensor,  # (B, S)
        past: list[KV],  # per layer, (B, H_kv, P, hd) each
        cross: list[KV],  # per layer, (B, H_kv, S, hd) each
    ) -> tuple[torch.Tensor, ...]:
        logits, presents, _ = self.model.decode(
            input_ids, None, encoder_attention_mask, attention_mask, position_ids, past, cross
        )
        return (logits, *[t for kv in presents for t in kv])


def _kv(n_layers: int, shape: tuple[int, ...], dtype: torch.dtype) -> list[KV]:
    # distinct tensors: the exporter would merge one tensor passed twice into a single graph input
    return [(torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)) for _ in range(n_layers)]


def encoder_example(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Trace inputs with batch 2 and source length 5 (sizes above 1, so none is specialised)."""
    return torch.randint(0, vocab, (2, 5)), torch.ones(2, 5, dtype=torch.long)


def decoder_example(
    n_layers: int, n_kv_heads: int, head_dim: int, vocab: int, dtype: torch.dtype
) -> tuple[object, ...]:
    """Trace inputs with batch 2, seq 3, past 4, source 5: all distinct, so no two dimensions are unified."""
    b, t, p, s = 2, 3, 4, 5
    ids = torch.randint(0, vocab, (b, t))
    mask = torch.ones(b, p + t, dtype=torch.long)
    pos = torch.arange(p, p + t).expand(b, t).contiguous()
    source_mask = torch.ones(b, s, dtype=torch.long)
    past = _kv(n_layers, (b, n_kv_heads, p, head_dim), dtype)
    cross = _kv(n_layers, (b, n_kv_heads, s, head_dim), dtype)
    return ids, mask, pos, source_mask, past, cross


def encoder_shapes() -> dict[str, object]:
    batch, source = Dim("batch_size"), Dim("encoder_sequence_length")
    return {"input_ids": {0: batch, 1: source}, "attention_mask": {0: batch, 1: source}}


def decoder_shapes(n_layers: int) -> dict[str, object]:
    batch, seq = Dim("batch_size"), Dim("sequence_length")
    past, total, source = Dim("past_sequence_length"), Dim("total_sequence_length"), Dim("encoder_sequence_length")
    kv, cross = {0: batch, 2: past}, {0: batch, 2: source}
    return {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: total},
        "position_ids": {0: batch, 1: seq},
        "encoder_attention_mask": {0: batch, 1: source},
        "past": [(kv, kv) for _ in range(n_layers)],
        "cross": [(cross, cross) for _ in range(n_layers)],
    }
