"""Transformer blocks: self-attention, optional cross-attention, FFN, each a residual sublayer.

Pre-norm: ``x + drop(f(norm(x)))`` (GPT-2, LLaMA). Post-norm: ``norm(x + drop(f(x)))``
(the original transformer). Sandwich: ``x + drop(norm'(f(norm(x))))``, a second norm of its own on
each sublayer's output (Gemma 2). The block takes its parts ready-made; the builder picks them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nima.builders.attention import KV, CrossAttention, SelfAttention
from nima.builders.positions import Rotary


class Block(nn.Module):
    """One layer of an encoder (no cross-attention) or a decoder (with it)."""

    def __init__(
        self,
        attention: SelfAttention,
        ffn: nn.Module,
        norm: Callable[[], nn.Module],
        placement: str,
        dropout: float,
        cross_attention: CrossAttention | None = None,
    ) -> None:
        super().__init__()
        if placement not in ("pre", "post", "sandwich"):
            raise ValueError(f"unknown norm placement {placement!r}")
        self.pre_norm = placement != "post"
        sandwich = placement == "sandwich"
        self.attention = attention
        self.attention_norm = norm()
        self.attention_post_norm = norm() if sandwich else None
        self.cross_attention = cross_attention
        self.cross_norm = norm() if cross_attention is not None else None
        self.cross_post_norm = norm() if cross_attention is not None and sandwich else None
        self.ffn = ffn
        self.ffn_norm = norm()
        self.ffn_post_norm = norm() if sandwich else None
        self.drop = nn.Dropout(dropout)

    def _residual(
        self,
        x: torch.Tensor,
        norm: nn.Module,
        sublayer: Callable[[torch.Tensor], torch.Tensor],
        post_norm: nn.Module | None = None,
    ) -> torch.Tensor:
        if not self.pre_norm:
            return norm(x + self.drop(sublayer(x)))
        out = sublayer(norm(x))
        return x + self.drop(out if post_norm is None else post_norm(out))

    def forward(
        self,
        x: torch.Tensor,  # (B, T, d_model)
        mask: torch.Tensor | None,
        is_causal: bool,
        rotary: Rotary | None,
        past: KV | None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        memory_kv: KV | None = None,
    ) -> tuple[torch.Tensor, KV, KV | None]:
        present: list[KV] = []
        cross: list[KV] = []

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            out, kv = self.attention(h, mask, is_causal, rotary, past)
            present.append(kv)
            return out

        x = self._residual(x, self.attention_norm, self_attention, self.attention_post_norm)
        if self.cross_attention is not None:

            def cross_attention(h: torch.Tensor) -> torch.Tensor:
                out, kv = self.cross_attention(h, memory_mask, memory, memory_kv)
                cross.append(kv)
                return out

            x = self._residual(x, self.cross_norm, cross_attention, self.cross_post_norm)
        x = self._residual(x, self.ffn_norm, self.ffn, self.ffn_post_norm)
        return x, present[0], (cross[0] if cross else None)
