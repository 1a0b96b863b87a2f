"""Multi-head attention with grouped-query sharing, optional qk-norm, and a KV cache.

`SelfAttention` runs four steps, each a method: **project** the input to query, key and value
heads (qk-normed), apply the **position** scheme's rotation, **append** the new keys/values to
the cache, and the **core**: softmax(q k^T / sqrt(hd) + mask) v and the output projection. It
returns the whole cache. The export forms of the layer (`nima.export.targets`) replace only
``project`` (one packed matrix for q, k and v) and ``core`` (a grouped product, a fused kernel),
so the position and cache steps exist once. `CrossAttention` projects the encoder output once
and returns those keys/values so a decoder can reuse them at every step. Both run through
torch's scaled_dot_product_attention (``sdpa``, flash kernels where the mask allows) or an
explicit softmax (``eager``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nima.builders.positions import Rotary, apply_rotary

KV = tuple[torch.Tensor, torch.Tensor]  # (B, H_kv, S, hd) each


class _Attention(nn.Module):
    """Projections and the attention kernel shared by self- and cross-attention."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        bias: bool,
        dropout: float,
        backend: str,
        qk_norm: Callable[[int], nn.Module] | None,
        qkv_bias: bool | None = None,
        scale: float | None = None,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        if backend not in ("sdpa", "eager"):
            raise ValueError(f"unknown attention backend {backend!r}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.backend = backend
        self.dropout = dropout
        self.scale = head_dim**-0.5 if scale is None else scale  # what q.k is multiplied by
        self.softcap = softcap  # scores -> softcap * tanh(scores / softcap) before the mask (Gemma 2)
        qkv_bias = bias if qkv_bias is None else qkv_bias  # None: as the other projections
        self.q_proj = nn.Linear(d_model, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        self.o_proj.nima_residual = True  # GPT-2 scaled init applies to this projection
        self.q_norm = qk_norm(head_dim) if qk_norm else None
        self.k_norm = qk_norm(head_dim) if qk_norm else None

    def _init_from(self, other: _Attention) -> None:
        """Initialise as a form of ``other`` with its sizes, kernel, output projection and qk-norms
        (shared, not copied), and no q/k/v projections: for subclasses that project differently."""
        nn.Module.__init__(self)
        self.n_heads, self.n_kv_heads, self.head_dim = other.n_heads, other.n_kv_heads, other.head_dim
        self.backend, self.dropout, self.scale, self.softcap = other.backend, other.dropout, other.scale, other.softcap
        self.o_proj, self.q_norm, self.k_norm = other.o_proj, other.q_norm, other.k_norm

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)  # (B, n, T, hd)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return self.query_heads(self.q_proj(x))

    def key_value(self, x: torch.Tensor) -> KV:
        return self.key_heads(self.k_proj(x)), self.value_heads(self.v_proj(x))

    def query_heads(self, q: torch.Tensor) -> torch.Tensor:
        """Projected queries (B, T, H*hd) as heads, qk-normed: (B, H, T, hd)."""
        q = self._heads(q, self.n_heads)  # (B, H, T, hd)
        return self.q_norm(q) if self.q_norm is not None else q

    def key_heads(self, k: torch.Tensor) -> torch.Tensor:
        """Projected keys (B, S, H_kv*hd) as heads, qk-normed: (B, H_kv, S, hd)."""
        k = self._heads(k, self.n_kv_heads)  # (B, H_kv, S, hd)
        return self.k_norm(k) if self.k_norm is not None else k

    def value_heads(self, v: torch.Tensor) -> torch.Tensor:
        """Projected values (B, S, H_kv*hd) as heads: (B, H_kv, S, hd)."""
        return self._heads(v, self.n_kv_heads)

    def _repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        """Share each key/value head across n_heads / n_kv_heads query heads (GQA, MQA)."""
        rep = self.n_heads // self.n_kv_heads
        if rep == 1:
            return x
        b, h, s, d = x.shape
        return x[:, :, None].expand(b, h, rep, s, d).reshape(b, h * rep, s, d)  # (B, H, S, hd)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        """softmax(cap(scale q k^T) + mask) v, then the output projection: (B, T, d_model); cap is the
        identity without a soft-cap (sdpa cannot apply one: a capped layer computes its scores itself)."""
        k, v = self._repeat_kv(k), self._repeat_kv(v)  # (B, H, S, hd)
        p = self.dropout if self.training else 0.0
        if self.backend == "sdpa" and self.softcap is None:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal, scale=self.scale
            )
        else:
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T, S)
            if self.softcap is not None:
                scores = torch.tanh(scores / self.softcap) * self.softcap
            if is_causal:
                t, s = scores.shape[-2:]
                # top-left aligned, as sdpa's is_causal; callers use it only without a cache (S == T)
                causal = torch.ones(t, s, dtype=torch.bool, device=q.device).tril()
                scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
            if mask is not None:
                scores = scores + mask
            probs = scores.float().softmax(-1).to(q.dtype)
            out = F.dropout(probs, p) @ v  # (B, H, T, hd)
        b, _, t, _ = out.shape
        # An explicit copy, not reshape/contiguous(): CPU sdpa may return a (B, T, H, hd)-strided
        # tensor, making the transpose look contiguous while tracing, so the exporter records a
        # view that is invalid once sdpa is decomposed into plain ops. A clone is always recorded.
        merged = out.transpose(1, 2).clone(memory_format=torch.contiguous_format)  # (B, T, H, hd)
        return self.o_proj(merged.view(b, t, self.n_heads * self.head_dim))


class SelfAttention(_Attention):
    """Self-attention over the cache plus the new tokens: project -> position -> append -> core."""

    def forward(
        self,
        x: torch.Tensor,  # (B, T, d_model)
        mask: torch.Tensor | None,  # (B|1, H|1, T, P+T) additive
        is_causal: bool = False,
        rotary: Rotary | None = None,
        past: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        q, k, v = self.project(x)  # (B, H, T, hd), (B, H_kv, T, hd) x 2
        q, k = self.position(q, k, rotary)
        k, v = self.append(k, v, past)  # (B, H_kv, P+T, hd) each
        return self.core(q, k, v, mask, is_causal), (k, v)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Query, key and value heads of ``x`` (B, T, d_model), qk-normed: (B, H, T, hd), (B, H_kv, T, hd) x 2."""
        if self.training:
            return self._packed_projections(x)
        return self.query(x), *self.key_value(x)

    @staticmethod
    def position(q: torch.Tensor, k: torch.Tensor, rotary: Rotary | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys rotated by ``rotary`` (the stack's position scheme's, None where it does not rotate)."""
        if rotary is None:
            return q, k
        return apply_rotary(q, rotary), apply_rotary(k, rotary)

    @staticmethod
    def append(k: torch.Tensor, v: torch.Tensor, past: KV | None) -> KV:
        """The new keys and values after the cached ones: (B, H_kv, P+T, hd) each."""
        if past is None:
            return k, v
        return torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)

    def core(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        """Attention of ``q`` over the whole cache and the output projection: (B, T, d_model)."""
        return self.attend(q, k, v, mask, is_causal)

    def _packed_projections(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What `query` and `key_value` give, from one matrix product over the three weights stacked.

        Training only: on a GPU one large product runs faster than three (a GPT-2 small bf16
        step on an H200 went from 0.95x to 0.995x of nanoGPT's, which packs them in its
        parameters). The parameters stay three, so checkpoints, exports and imported weights
        keep their layout; inference (and so export) uses the separate products, which need no
        copy of the weights per call. Memory: under autocast the product keeps the stacked
        bf16/fp16 copy for backward, as the three products kept theirs; in fp32 it keeps the
        stacked fp32 copy, one more copy of every layer's q/k/v weights until backward (85 MB
        for GPT-2 small; under FSDP the copy is of the unsharded weights).
        """
        projections = (self.q_proj, self.k_proj, self.v_proj)
        weight = torch.cat([p.weight for p in projections])  # (H*hd + 2*H_kv*hd, d_model)
        bias = torch.cat([p.bias for p in projections]) if self.q_proj.bias is not None else None
        sizes = [p.out_features for p in projections]
        q, k, v = F.linear(x, weight, bias).split(sizes, dim=-1)  # (B, T, H*hd), (B, T, H_kv*hd) x2
        return self.query_heads(q), self.key_heads(k), self.value_heads(v)  # (B, H, T, hd), (B, H_kv, T, hd) x2


class CrossAttention(_Attention):
    """Decoder-to-encoder attention; keys/values come from ``memory`` or from a cache of them."""

    def forward(
        self,
        x: torch.Tensor,  # (B, T, d_model)
        mask: torch.Tensor | None,  # (B, 1, 1, S) additive
        memory: torch.Tensor | None = None,  # (B, S, d_model)
        memory_kv: KV | None = None,
    ) -> tuple[torch.Tensor, KV]:
        if memory_kv is None:
            if memory is None:
                raise ValueError("cross-attention needs the encoder output or its cached keys/values")
            memory_kv = self.key_value(memory)
        return self.attend(self.query(x), *memory_kv, mask, False), memory_kv
