"""The ``ort`` target's model: a copy of a `DecoderLM` whose self-attention is one fused kernel.

`fused_for_ort` deep-copies the model and replaces every block's `SelfAttention` with a
`FusedSelfAttention` holding the same weights: the q, k and v projections packed into one
matrix (one MatMul instead of three) and the attention arithmetic in ONNX Runtime's
GroupQueryAttention (see `nima.export.targets.ort.gqa_op`). The stack, the FFNs, norms and head are
untouched, so every variant exports through it.

The kernel applies causality itself and takes everything else as an additive
``attention_bias``. Where attention is plain (full pattern, no position bias) that is only the
left padding, which `PaddingBias` computes once per call from ``attention_mask`` in a handful
of ops; the stack's own mask (causal, padding and self terms over cache indices, a few dozen
small ops) is then unused and drops out of the graph. Other variants pass the stack's mask,
which carries their patterns and position biases. The caller's model is not modified.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from nima.builders.attention import KV, SelfAttention
from nima.builders.ffn import GatedMLP
from nima.builders.models import DecoderLM
from nima.builders.positions import Rotary
from nima.export.targets.ort import gqa_op, padding_op
from nima.export.targets.ort.gqa_op import group_query_attention
from nima.export.targets.ort.padding_op import padding_allowed
from nima.export.targets.portable import PackedGatedMLP, packed_qkv

# How the dynamo exporter writes the custom ops these modules call.
TRANSLATION_TABLE = {**gqa_op.TRANSLATION_TABLE, **padding_op.TRANSLATION_TABLE}


class RotaryTables(nn.Module):
    """cos/sin of every cache index below ``max_seq_len`` (`PositionScheme.cache_rotary`), the tables
    GroupQueryAttention rotates with; one module shared by every layer."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("cos", cos, persistent=False)  # (L, hd/2)
        self.register_buffer("sin", sin, persistent=False)


class PaddingBias(nn.Module):
    """The additive bias of left padding for the current call, shared by every attention layer.

    `FusedDecoderLM` sets it from ``attention_mask`` before running the model; each
    `FusedSelfAttention` reads it. A real query sees only real keys; a padding query sees every
    key (the kernel's causal mask still applies), so no softmax row is empty: its output is
    never used, but a NaN there would reach real tokens through the next layer's cache.
    """

    def __init__(self) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None  # (B, 1, T, P+T)

    def update(self, attention_mask: torch.Tensor, input_ids: torch.Tensor, dtype: torch.dtype) -> None:
        allowed = padding_allowed(attention_mask, input_ids)  # (B, 1, T, P+T)
        zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
        self.value = torch.where(allowed, zero, torch.finfo(dtype).min)


class FusedSelfAttention(SelfAttention):
    """`SelfAttention` as a packed QKV projection and one GroupQueryAttention node, then the output projection.

    The kernel does three of the layer's four steps in one node: it rotates queries and keys
    with the position scheme's cache tables (`PositionScheme.cache_rotary`), appends the new
    keys/values to the cache, and attends. Where it cannot rotate — the scheme gives no tables,
    or qk-norm has to come first, so q and k are split into heads anyway — the layer's own
    ``position`` step rotates them by ``rotary`` before they are packed again; so every scheme
    that rotates through ``rotary`` keeps its rotation, whether or not a kernel can do it.
    """

    def __init__(self, attention: SelfAttention, tables: RotaryTables | None, padding: PaddingBias | None) -> None:
        self._init_from(attention)
        self.padding = padding  # None: the stack's mask is the bias
        self.qkv_proj = packed_qkv(attention)
        self.tables = tables if self.q_norm is None else None  # qk-norm: rotated here, after the norm

    def forward(
        self,
        x: torch.Tensor,  # (B, T, d_model)
        mask: torch.Tensor | None,  # (B|1, H|1, T, P+T) additive
        is_causal: bool = False,
        rotary: Rotary | None = None,
        past: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        if mask is None or past is None:
            raise ValueError("the fused attention is for export: it needs the mask and a (possibly empty) cache")
        qkv = self.qkv_proj(x)  # (B, T, (H + 2 H_kv) hd)
        if self.q_norm is not None or (rotary is not None and self.tables is None):
            qkv = self._normed_and_rotated(qkv, rotary)
        cos = sin = None
        if self.tables is not None:
            cos, sin = self.tables.cos.to(x.dtype), self.tables.sin.to(x.dtype)
        bias = mask if self.padding is None or self.padding.value is None else self.padding.value
        out, key, value = group_query_attention(
            qkv,
            past[0],
            past[1],
            bias.to(x.dtype),
            cos,
            sin,
            self.n_heads,
            self.n_kv_heads,
            self.scale,
            self.softcap or 0.0,  # 0: none, as the kernel reads it
        )  # (B, T, H hd), (B, H_kv, P+T, hd) x 2
        return self.o_proj(out), (key, value)

    def _normed_and_rotated(self, qkv: torch.Tensor, rotary: Rotary | None) -> torch.Tensor:
        """The packed projection with q and k qk-normed and rotated by ``rotary`` (the ``position`` step)."""
        b, t, _ = qkv.shape
        q, k, v = qkv.split([self.n_heads * self.head_dim, *[self.n_kv_heads * self.head_dim] * 2], dim=-1)
        q, k = self.position(self.query_heads(q), self.key_heads(k), rotary)  # (B, H, T, hd), (B, H_kv, T, hd)
        q = q.transpose(1, 2).reshape(b, t, -1)  # (B, T, H hd)
        k = k.transpose(1, 2).reshape(b, t, -1)  # (B, T, H_kv hd)
        return torch.cat((q, k, v), dim=-1)


class FusedDecoderLM(nn.Module):
    """A `DecoderLM` with fused attention; same call and outputs. Sets the `PaddingBias` before each call."""

    def __init__(self, model: DecoderLM, padding: PaddingBias | None) -> None:
        super().__init__()
        self.model = model
        self.padding = padding

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None = None,  # (B, P+T)
        position_ids: torch.Tensor | None = None,  # (B, T)
        past_key_values: list[KV] | None = None,  # per layer, (B, H_kv, P, hd) each
    ) -> tuple[torch.Tensor, list[KV]]:
        if self.padding is not None:
            if attention_mask is None:
                raise ValueError("the fused model is for export: it needs the attention mask")
            self.padding.update(attention_mask, input_ids, self.model.embedding.weight.dtype)
        try:
            return self.model(input_ids, attention_mask, position_ids, past_key_values)
        finally:
            if self.padding is not None:
                self.padding.value = None


def plain_attention(model: DecoderLM) -> bool:
    """Full pattern, no position bias: the kernel's causal mask plus left padding is all there is to apply.

    Such a graph reads lengths only from ``attention_mask``, never from the cache's shape, so it
    also runs with a preallocated cache buffer shared by past and present (onnxruntime-genai's
    ``past_present_share_buffer``).
    """
    stack = model.decoder
    return not stack.limits_distance and not stack.position.biases_scores


def fused_for_ort(model: DecoderLM, max_seq_len: int) -> FusedDecoderLM:
    """A copy of ``model`` with fused self-attention and packed gated FFNs in every block."""
    fused = copy.deepcopy(model)
    stack = fused.decoder
    rotation = stack.position.cache_rotary(max_seq_len)
    tables = RotaryTables(*rotation) if rotation is not None else None
    padding = PaddingBias() if plain_attention(model) else None
    for block in stack.blocks:
        block.attention = FusedSelfAttention(block.attention, tables, padding)
        if isinstance(block.ffn, GatedMLP):
            block.ffn = PackedGatedMLP(block.ffn)
    return FusedDecoderLM(fused, padding).eval()
