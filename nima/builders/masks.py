"""Attention patterns and the additive mask every attention layer of a stack shares.

A pattern says which key distances a query may see; the mask combines it with causality,
the padding mask and a position bias into one float tensor (0 / bias where allowed, the
dtype's minimum where not). Everything is tensor arithmetic on positions, so the same code
traces to one ONNX graph for prefill and cached decode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class AttentionPatternRule:
    """Full attention: every distance is allowed (causality is applied separately)."""

    limits_distance = False

    def allowed(self, distance: torch.Tensor) -> torch.Tensor:  # (T, S) int64 -> (T, S) bool
        return torch.ones_like(distance, dtype=torch.bool)


class LocalWindow(AttentionPatternRule):
    """Sliding window: keys at distance < window (the query itself included)."""

    limits_distance = True

    def __init__(self, window: int) -> None:
        self.window = window

    def allowed(self, distance: torch.Tensor) -> torch.Tensor:
        return distance < self.window


class StridedSparse(AttentionPatternRule):
    """Sparse Transformer's strided pattern: a local band plus every stride-th earlier key."""

    limits_distance = True

    def __init__(self, window: int, stride: int) -> None:
        self.window = window
        self.stride = stride

    def allowed(self, distance: torch.Tensor) -> torch.Tensor:
        return (distance < self.window) | (distance % self.stride == 0)


# The closed table of pattern kinds: kind -> factory(sizes, **pattern fields) (`nima.builders.sizes`).
PATTERNS: dict[str, Callable[..., AttentionPatternRule]] = {
    "full": lambda sizes: AttentionPatternRule(),
    "local": lambda sizes, window: LocalWindow(window),
    "sparse": lambda sizes, window, stride: StridedSparse(window, stride),
}


def build_attention_mask(
    pattern: AttentionPatternRule,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    causal: bool,
    key_padding: torch.Tensor | None,
    bias: torch.Tensor | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Additive attention mask, (B or 1, H or 1, T, S).

    ``q_pos`` (T,) and ``k_pos`` (S,) are cache indices; ``key_padding`` (B, S) is 1 for real
    tokens. A query always sees itself, so a padding query never has an empty row (which would
    make softmax produce NaN); real tokens never see padding, so this changes nothing for them.
    """
    distance = (q_pos[:, None] - k_pos[None, :]).abs()  # (T, S)
    allowed = pattern.allowed(distance)
    if causal:
        allowed = allowed & (k_pos[None, :] <= q_pos[:, None])
    allowed = allowed[None, None]  # (1, 1, T, S)
    if key_padding is not None:
        allowed = allowed & key_padding[:, None, None, :].bool()  # (B, 1, T, S)
    allowed = allowed | (k_pos[None, :] == q_pos[:, None])[None, None]
    zero = torch.zeros((), dtype=dtype, device=q_pos.device)
    keep = zero if bias is None else bias.to(dtype)
    return torch.where(allowed, keep, torch.finfo(dtype).min)


def build_padding_mask(key_padding: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask from a (B, S) padding mask, for cross-attention: (B, 1, 1, S)."""
    allowed = key_padding[:, None, None, :].bool()
    return torch.where(allowed, torch.zeros((), dtype=dtype, device=key_padding.device), torch.finfo(dtype).min)
