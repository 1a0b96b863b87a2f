"""GPT-2 as nanoGPT writes it: the reference model of the training benchmarks (bench/train.py on
the CPU, bench/cuda_check.py on a GPU), built from a Nima spec's sizes.

Against Nima's model of the same spec, with the same optimizer, batches and step code, it shows
what Nima's model costs over the plainest PyTorch that computes the same thing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nima.spec import ModelSpec


class CausalSelfAttention(nn.Module):
    """nanoGPT's attention: one fused qkv projection, SDPA with is_causal."""

    def __init__(self, d: int, n_heads: int, bias: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.c_attn = nn.Linear(d, 3 * d, bias=bias)
        self.c_proj = nn.Linear(d, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)  # (B, T, C) each
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class ReferenceBlock(nn.Module):
    """nanoGPT's block: pre-LayerNorm attention, then a pre-LayerNorm GELU MLP, each added to the residual."""

    def __init__(self, d: int, n_heads: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, bias=bias)
        self.attn = CausalSelfAttention(d, n_heads, bias)
        self.ln_2 = nn.LayerNorm(d, bias=bias)
        self.c_fc = nn.Linear(d, hidden, bias=bias)
        self.c_proj = nn.Linear(hidden, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class ReferenceGPT(nn.Module):
    """GPT-2 as nanoGPT writes it: learned positions, pre-LayerNorm, GELU MLP, tied head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        d = spec.d_model
        self.wte = nn.Embedding(spec.vocab_size, d)
        self.wpe = nn.Embedding(spec.max_seq_len, d)
        self.h = nn.ModuleList(
            ReferenceBlock(d, spec.attention.n_heads, spec.ffn.hidden, spec.bias) for _ in range(spec.n_layers)
        )
        self.ln_f = nn.LayerNorm(d, bias=spec.bias)
        self.lm_head = nn.Linear(d, spec.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))  # (B, T, C)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, V)
