"""The portable target's model: a copy of a model (decoder-only or encoder-decoder) whose
projections are packed per layer.

A decode step multiplies one row by each weight matrix, so besides reading the weights it pays
a fixed cost per MatMul call. `packed_for_export` stacks each self-attention's q, k and v
weights into one matrix, and a gated FFN's gate and up weights into another, so the graph makes
one product of each group and splits the result: standard ops (MatMul, Split), so the graph
stays portable, with 4 weight products per layer instead of 7 (gated FFN) or 6. The ``ort`` target packs
the same way (`nima.export.fused_model`). With grouped-query attention the query heads that
share a cached key/value head attend as one group (`PackedSelfAttention._grouped`) instead of
the cache being repeated per query head. Everything else is the model's own code; the caller's
model is not modified.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from nima.builders.attention import KV, SelfAttention
from nima.builders.ffn import GatedMLP
from nima.builders.models import DecoderLM, EncoderDecoderLM
from nima.builders.positions import Rotary, apply_rotary
from nima.export.fused_model import PackedGatedMLP, packed_qkv
from nima.export.onnx_graph import export_decoder
from nima.spec import ModelSpec


class PackedSelfAttention(nn.Module):
    """`SelfAttention` with its q, k and v projections as one packed matrix; same call and outputs.

    The wrapped attention keeps its output projection, qk-norms and kernel (`attend`); its three
    projections are dropped, so the graph holds only the packed weights.
    """

    def __init__(self, attention: SelfAttention) -> None:
        super().__init__()
        self.sizes = [p.out_features for p in (attention.q_proj, attention.k_proj, attention.v_proj)]
        self.qkv_proj = packed_qkv(attention)
        del attention.q_proj, attention.k_proj, attention.v_proj
        self.attention = attention

    def forward(
        self,
        x: torch.Tensor,  # (B, T, d_model)
        mask: torch.Tensor | None,  # (B|1, H|1, T, P+T) additive
        is_causal: bool = False,
        rotary: Rotary | None = None,
        past: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        attention = self.attention
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)  # (B, T, H hd), (B, T, H_kv hd) x 2
        q = attention._query_heads(q)  # (B, H, T, hd)
        k, v = attention._key_value_heads(k, v)  # (B, H_kv, T, hd) each
        if rotary is not None:
            q, k = apply_rotary(q, rotary), apply_rotary(k, rotary)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)  # (B, H_kv, P+T, hd)
            v = torch.cat((past[1], v), dim=2)
        if attention.n_kv_heads == attention.n_heads or is_causal:
            return attention.attend(q, k, v, mask, is_causal), (k, v)
        return attention.o_proj(self._grouped(q, k, v, mask)), (k, v)

    def _grouped(
        self,
        q: torch.Tensor,  # (B, H, T, hd)
        k: torch.Tensor,  # (B, H_kv, S, hd)
        v: torch.Tensor,  # (B, H_kv, S, hd)
        mask: torch.Tensor | None,  # (B|1, H|1, T, S) additive
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(hd) + mask) v with heads merged, (B, T, H hd), for grouped-query attention.

        `attend` repeats each cached key/value head for the query heads that share it, which in
        the graph is an Expand copying the whole cache in every layer at every step. Here the
        ``rep`` query heads of a group are stacked into one (B, H_kv, rep T, hd) query instead, so
        the products read the cache as it is. Query head ``g rep + r`` uses key/value head ``g``,
        as in `attend`.
        """
        n_kv, head_dim = self.attention.n_kv_heads, self.attention.head_dim
        rep = self.attention.n_heads // n_kv
        grouped = q.unflatten(1, (n_kv, rep)).flatten(2, 3)  # (B, H_kv, rep T, hd)
        scores = (grouped @ k.transpose(-2, -1)) * head_dim**-0.5  # (B, H_kv, rep T, S)
        scores = scores.unflatten(2, (rep, -1))  # (B, H_kv, rep, T, S)
        if mask is not None:
            # (B|1, H_kv, rep, T, S) or (B|1, 1, 1, T, S): the head axis split as the queries'
            scores = scores + (mask.unflatten(1, (n_kv, rep)) if mask.shape[1] != 1 else mask.unsqueeze(2))
        probs = scores.float().softmax(-1).to(q.dtype).flatten(2, 3)  # (B, H_kv, rep T, S)
        out = (probs @ v).unflatten(2, (rep, -1))  # (B, H_kv, rep, T, hd)
        out = out.flatten(1, 2).transpose(1, 2)  # (B, T, H, hd)
        return out.reshape(out.shape[0], out.shape[1], -1)  # (B, T, H hd)


Model = TypeVar("Model", DecoderLM, EncoderDecoderLM)


def packed_for_export(model: Model) -> Model:
    """A copy of ``model`` in eval mode with packed self-attention and gated-FFN projections in
    every block (an encoder-decoder's encoder and decoder alike; cross-attention keeps its own)."""
    packed = copy.deepcopy(model)
    stacks = [packed.decoder] + ([packed.encoder] if isinstance(packed, EncoderDecoderLM) else [])
    for block in (block for stack in stacks for block in stack.blocks):
        block.attention = PackedSelfAttention(block.attention)
        if isinstance(block.ffn, GatedMLP):
            block.ffn = PackedGatedMLP(block.ffn)
    return packed.eval()


def export_portable(model: DecoderLM, spec: ModelSpec, path: Path, dtype: str = "fp32", opset: int = 18) -> Path:
    """Write the ``portable`` target's graph of ``model`` (its packed copy) at ``path``; return the path."""
    return export_decoder(packed_for_export(model), spec, path, dtype=dtype, opset=opset)
