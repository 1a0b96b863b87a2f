"""The portable target's model: a copy of a model (decoder-only or encoder-decoder) whose
projections are packed per layer.

A decode step multiplies one row by each weight matrix, so besides reading the weights it pays
a fixed cost per MatMul call. `packed_for_export` stacks each self-attention's q, k and v
weights into one matrix, and a gated FFN's gate and up weights into another, so the graph makes
one product of each group and splits the result: standard ops (MatMul, Split), so the graph
stays portable, with 4 weight products per layer instead of 7 (gated FFN) or 6. The ``ort`` target packs
the same way (`nima.export.targets.ort.model`). With grouped-query attention the query heads that
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

from nima.builders.attention import SelfAttention
from nima.builders.ffn import GatedMLP
from nima.builders.models import DecoderLM, EncoderDecoderLM
from nima.export.decoder.graph import export_decoder
from nima.spec import ModelSpec


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


class PackedSelfAttention(SelfAttention):
    """`SelfAttention` whose ``project`` step is one packed matrix for q, k and v, and whose ``core``
    step attends with grouped-query sharing without repeating the cache; same call and outputs.

    It shares the layer's output projection, qk-norms and kernel choice; the three separate
    projections are not kept, so the graph holds only the packed weights.
    """

    def __init__(self, attention: SelfAttention) -> None:
        self._init_from(attention)
        self.sizes = [p.out_features for p in (attention.q_proj, attention.k_proj, attention.v_proj)]
        self.qkv_proj = packed_qkv(attention)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv_proj(x).split(self.sizes, dim=-1)  # (B, T, H hd), (B, T, H_kv hd) x 2
        return self.query_heads(q), self.key_heads(k), self.value_heads(v)  # (B, H, T, hd), (B, H_kv, T, hd) x 2

    def core(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        if self.n_kv_heads == self.n_heads or is_causal:
            return self.attend(q, k, v, mask, is_causal)
        return self.o_proj(self._grouped(q, k, v, mask))

    def _grouped(
        self,
        q: torch.Tensor,  # (B, H, T, hd)
        k: torch.Tensor,  # (B, H_kv, S, hd)
        v: torch.Tensor,  # (B, H_kv, S, hd)
        mask: torch.Tensor | None,  # (B|1, H|1, T, S) additive
    ) -> torch.Tensor:
        """softmax(scale q k^T + mask) v with heads merged, (B, T, H hd), for grouped-query attention.

        `attend` repeats each cached key/value head for the query heads that share it, which in
        the graph is an Expand copying the whole cache in every layer at every step. Here the
        ``rep`` query heads of a group are stacked into one (B, H_kv, rep T, hd) query instead, so
        the products read the cache as it is. Query head ``g rep + r`` uses key/value head ``g``,
        as in `attend`.
        """
        n_kv = self.n_kv_heads
        rep = self.n_heads // n_kv
        grouped = q.unflatten(1, (n_kv, rep)).flatten(2, 3)  # (B, H_kv, rep T, hd)
        scores = (grouped @ k.transpose(-2, -1)) * self.scale  # (B, H_kv, rep T, S)
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
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
    for block in (block for stack in packed.stacks() for block in stack.blocks):
        block.attention = PackedSelfAttention(block.attention)
        if isinstance(block.ffn, GatedMLP):
            block.ffn = PackedGatedMLP(block.ffn)
    return packed.eval()


def export_portable(model: DecoderLM, spec: ModelSpec, path: Path, dtype: str = "fp32", opset: int = 18) -> Path:
    """Write the ``portable`` target's graph of ``model`` (its packed copy) at ``path``; return the path."""
    return export_decoder(packed_for_export(model), spec, path, dtype=dtype, opset=opset)
