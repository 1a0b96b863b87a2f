"""The ``ort`` target's model: a copy of a `DecoderLM` whose self-attention is one fused kernel.

`fused_for_ort` deep-copies the model and replaces every block's `SelfAttention` with a
`FusedSelfAttention` holding the same weights: the q, k and v projections packed into one
matrix (one MatMul instead of three) and the attention arithmetic in ONNX Runtime's
GroupQueryAttention (see `nima.export.gqa_op`). The stack, the FFNs, norms and head are
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
from nima.builders.positions import PositionScheme, Rotary, RotaryPositions, apply_rotary
from nima.export import gqa_op, padding_op
from nima.export.gqa_op import group_query_attention
from nima.export.padding_op import padding_allowed

# How the dynamo exporter writes the custom ops these modules call.
TRANSLATION_TABLE = {**gqa_op.TRANSLATION_TABLE, **padding_op.TRANSLATION_TABLE}


class RotaryTables(nn.Module):
    """cos/sin of every cache index up to ``max_seq_len``, the tables GroupQueryAttention rotates with."""

    def __init__(self, position: RotaryPositions, max_seq_len: int) -> None:
        super().__init__()
        index = torch.arange(max_seq_len, dtype=torch.float32) / position.scaling_factor  # (L,)
        angles = index[:, None] * position.inv_freq[None, :]  # (L, hd/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)


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


def packed_qkv(attention: SelfAttention) -> nn.Linear:
    """One projection holding ``attention``'s q, k and v weights (and biases) stacked: (H + 2 H_kv) hd outputs."""
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    has_bias = attention.q_proj.bias is not None
    width = sum(p.out_features for p in projections)
    packed = nn.Linear(attention.q_proj.in_features, width, bias=has_bias)
    with torch.no_grad():
        packed.weight.copy_(torch.cat([p.weight for p in projections], dim=0))  # (H + 2 H_kv) hd rows
        if has_bias:
            packed.bias.copy_(torch.cat([p.bias for p in projections]))
    return packed.to(attention.q_proj.weight.dtype)


class FusedSelfAttention(nn.Module):
    """`SelfAttention`'s computation as a packed QKV projection, one GroupQueryAttention, the output projection."""

    def __init__(self, attention: SelfAttention, tables: RotaryTables | None, padding: PaddingBias | None) -> None:
        super().__init__()
        self.padding = padding  # None: the stack's mask is the bias
        self.n_heads, self.n_kv_heads, self.head_dim = attention.n_heads, attention.n_kv_heads, attention.head_dim
        self.qkv_proj = packed_qkv(attention)
        self.o_proj = attention.o_proj
        self.q_norm, self.k_norm = attention.q_norm, attention.k_norm
        # With qk-norm the rotation must follow the norm, so it is done here rather than in the kernel.
        self.tables = tables if self.q_norm is None else None

    def forward(
        self,
        x: torch.Tensor,  # (B, T, d_model)
        mask: torch.Tensor | None,  # (B|1, H|1, T, P+T) additive
        is_causal: bool = False,
        rotary: Rotary | None = None,
        past: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        b, t, _ = x.shape
        if mask is None or past is None:
            raise ValueError("the fused attention is for export: it needs the mask and a (possibly empty) cache")
        qkv = self.qkv_proj(x)  # (B, T, (H + 2 H_kv) hd)
        if self.q_norm is not None and self.k_norm is not None:
            q, k, v = qkv.split([self.n_heads * self.head_dim, *[self.n_kv_heads * self.head_dim] * 2], dim=-1)
            q = self.q_norm(q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2))  # (B, H, T, hd)
            k = self.k_norm(k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2))  # (B, H_kv, T, hd)
            if rotary is not None:
                q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
            q = q.transpose(1, 2).reshape(b, t, -1)
            k = k.transpose(1, 2).reshape(b, t, -1)
            qkv = torch.cat((q, k, v), dim=-1)
        cos = sin = None
        if self.tables is not None:
            cos, sin = self.tables.cos.to(x.dtype), self.tables.sin.to(x.dtype)
        bias = mask if self.padding is None or self.padding.value is None else self.padding.value
        out, key, value = group_query_attention(
            qkv, past[0], past[1], bias.to(x.dtype), cos, sin, self.n_heads, self.n_kv_heads
        )  # (B, T, H hd), (B, H_kv, P+T, hd) x 2
        return self.o_proj(out), (key, value)


class PackedGatedMLP(nn.Module):
    """`GatedMLP` with its gate and up projections packed into one matrix: one MatMul, not two.

    A decode step multiplies one row by each weight matrix, so it is bound by reading the
    weights and by the fixed cost of each kernel call; one (d_model, 2 hidden) product reads
    the same bytes as two (d_model, hidden) ones and saves a call per layer.
    """

    def __init__(self, mlp: GatedMLP) -> None:
        super().__init__()
        self.hidden = mlp.gate.out_features
        has_bias = mlp.gate.bias is not None
        self.gate_up = nn.Linear(mlp.gate.in_features, 2 * self.hidden, bias=has_bias)
        with torch.no_grad():
            self.gate_up.weight.copy_(torch.cat([mlp.gate.weight, mlp.up.weight], dim=0))  # (2 hidden, d_model)
            if has_bias:
                self.gate_up.bias.copy_(torch.cat([mlp.gate.bias, mlp.up.bias]))
        self.gate_up.to(mlp.gate.weight.dtype)
        self.act, self.down = mlp.act, mlp.down

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model)
        gate, up = self.gate_up(x).split(self.hidden, dim=-1)  # (B, T, hidden) x 2
        return self.down(self.act(gate) * up)  # (B, T, d_model)


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
    return not stack.pattern.limits_distance and type(stack.position).bias is PositionScheme.bias


def fused_for_ort(model: DecoderLM, max_seq_len: int) -> FusedDecoderLM:
    """A copy of ``model`` with fused self-attention and packed gated FFNs in every block."""
    fused = copy.deepcopy(model)
    stack = fused.decoder
    tables = RotaryTables(stack.position, max_seq_len) if isinstance(stack.position, RotaryPositions) else None
    padding = PaddingBias() if plain_attention(model) else None
    for block in stack.blocks:
        block.attention = FusedSelfAttention(block.attention, tables, padding)
        if isinstance(block.ffn, GatedMLP):
            block.ffn = PackedGatedMLP(block.ffn)
    return FusedDecoderLM(fused, padding).eval()
