"""A stack of blocks with its position scheme, shared mask(s) and final norm (and optionally a norm of
the embeddings before the first block).

The decoder-only model is one causal stack; an encoder-decoder is a bidirectional stack plus
a causal stack with cross-attention. The stack derives positions, builds the mask its layers
share (one per pattern where the layers cycle through several: Gemma 2's local and global
layers), and threads the KV cache through the blocks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nima.builders.attention import KV
from nima.builders.blocks import Block
from nima.builders.masks import AttentionPatternRule, build_attention_mask, build_padding_mask
from nima.builders.positions import PositionScheme


def positions_from_mask(attention_mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Position ids of the last ``new_tokens`` columns: real tokens count 0, 1, 2, ... (HF rule)."""
    positions = attention_mask.long().cumsum(-1) - 1  # (B, P+T)
    return positions.clamp(min=0)[:, -new_tokens:]  # (B, T)


class Stack(nn.Module):
    """Blocks sharing a position scheme, a mask and (optionally) a final norm."""

    def __init__(
        self,
        blocks: list[Block],
        position: PositionScheme,
        patterns: list[AttentionPatternRule],
        causal: bool,
        final_norm: nn.Module | None,
        embedding_dropout: float,
        embedding_norm: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.position = position
        self.patterns = patterns  # a cycle: block i attends with patterns[i % len(patterns)]
        self.causal = causal
        self.final_norm = final_norm
        self.embedding_norm = embedding_norm  # BART's layernorm_embedding
        self.drop = nn.Dropout(embedding_dropout)
        self.gradient_checkpointing = False

    @property
    def limits_distance(self) -> bool:
        """Whether some layer's pattern hides keys by distance (so the mask cannot be causality alone)."""
        return any(pattern.limits_distance for pattern in self.patterns)

    def forward(
        self,
        h: torch.Tensor,  # (B, T, d_model) token embeddings
        attention_mask: torch.Tensor | None = None,  # (B, P+T), 1 = real token
        position_ids: torch.Tensor | None = None,  # (B, T)
        past_key_values: list[KV] | None = None,  # per layer, (B, H_kv, P, hd) each
        memory: torch.Tensor | None = None,  # (B, S, d_model) encoder output
        memory_mask: torch.Tensor | None = None,  # (B, S), 1 = real source token
        memory_key_values: list[KV] | None = None,  # per layer cross-attention keys/values
    ) -> tuple[torch.Tensor, list[KV], list[KV] | None]:
        b, t, _ = h.shape
        past = past_key_values[0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            if attention_mask is not None:
                position_ids = positions_from_mask(attention_mask, t)
            else:
                position_ids = torch.arange(past, past + t, device=h.device).expand(b, t)
        added = self.position.embed(position_ids)
        if added is not None:
            h = h + added.to(h.dtype)
        if self.embedding_norm is not None:
            h = self.embedding_norm(h)
        h = self.drop(h)
        rotary = self.position.rotary(position_ids)

        k_pos = torch.arange(past + t, device=h.device)  # cache indices of all keys
        q_pos = k_pos[past:]
        bias = self.position.bias(q_pos, k_pos, bidirectional=not self.causal)
        needs_mask = (
            attention_mask is not None or past_key_values is not None or bias is not None or self.limits_distance
        )
        masks: list[torch.Tensor | None] = [None] * len(self.patterns)
        if needs_mask:  # one mask per pattern of the cycle, shared by its layers
            masks = [
                build_attention_mask(pattern, q_pos, k_pos, self.causal, attention_mask, bias, h.dtype)
                for pattern in self.patterns
            ]
        is_causal = self.causal and not needs_mask  # the flash-kernel fast path
        cross_mask = build_padding_mask(memory_mask, h.dtype) if memory_mask is not None else None

        presents: list[KV] = []
        crosses: list[KV] = []
        for i, block in enumerate(self.blocks):
            args = (
                h,
                masks[i % len(masks)],
                is_causal,
                rotary,
                past_key_values[i] if past_key_values else None,
                memory,
                cross_mask,
                memory_key_values[i] if memory_key_values else None,
            )
            if self.gradient_checkpointing and self.training:
                h, kv, cross = checkpoint(block, *args, use_reentrant=False)
            else:
                h, kv, cross = block(*args)
            presents.append(kv)
            if cross is not None:
                crosses.append(cross)
        if self.final_norm is not None:
            h = self.final_norm(h)
        return h, presents, (crosses or None)
