"""spec -> nn.Module. The only place in the builders that reads a spec.

One closed table per variant family maps each ``kind`` to a factory, all called one way
(`make`: the model's `Sizes`, then the variant's own fields), and one table maps each
architecture to its model class (`nima.builders.models.MODELS`), whose stacks the spec lists
(`ModelSpec.stacks`). A test holds each table's keys equal to the spec's kinds and
architectures, so a variant or a family cannot be half-added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from nima.builders.attention import CrossAttention, SelfAttention
from nima.builders.blocks import Block
from nima.builders.ffn import FFNS
from nima.builders.init import INITS
from nima.builders.masks import PATTERNS
from nima.builders.models import MODELS, DecoderLM, EncoderDecoderLM
from nima.builders.norms import NORMS
from nima.builders.positions import POSITIONS
from nima.builders.sizes import Sizes
from nima.builders.stack import Stack
from nima.spec import ModelSpec
from nima.spec.model import StackShape


def sizes_of(spec: ModelSpec) -> Sizes:
    """The numbers every factory may read."""
    return Sizes(
        d_model=spec.d_model,
        n_heads=spec.attention.n_heads,
        n_kv_heads=spec.n_kv_heads,
        head_dim=spec.head_dim,
        max_seq_len=spec.max_seq_len,
        n_layers=spec.total_layers,
        bias=spec.bias,
    )


def make(table: dict[str, Callable[..., Any]], variant: BaseModel, sizes: Sizes, placed: tuple[str, ...] = ()) -> Any:
    """``table[variant.kind](sizes, **fields)``: the part a variant describes. ``placed``: fields that say
    where the part goes rather than what it is (a norm's placement), read by the builder instead."""
    fields = {name: getattr(variant, name) for name in type(variant).model_fields if name not in ("kind", *placed)}
    return table[variant.kind](sizes, **fields)  # type: ignore[attr-defined]


def _norm(spec: ModelSpec, sizes: Sizes) -> Callable[[int], nn.Module]:
    return make(NORMS, spec.norm, sizes, placed=("placement", "final", "embedding"))


def _attention_args(spec: ModelSpec, sizes: Sizes) -> dict[str, object]:
    att = spec.attention
    return {
        "d_model": sizes.d_model,
        "n_heads": sizes.n_heads,
        "n_kv_heads": sizes.n_kv_heads,
        "head_dim": sizes.head_dim,
        "bias": sizes.bias,
        "dropout": spec.dropout.attention,
        "backend": att.backend,
        "qk_norm": _norm(spec, sizes) if att.qk_norm else None,
        "qkv_bias": att.qkv_bias,
        "scale": att.scale,
        "softcap": att.softcap,
    }


def _block(spec: ModelSpec, sizes: Sizes, cross: bool) -> Block:
    norm = _norm(spec, sizes)
    return Block(
        attention=SelfAttention(**_attention_args(spec, sizes)),
        ffn=make(FFNS, spec.ffn, sizes),
        norm=lambda: norm(sizes.d_model),
        placement=spec.norm.placement,
        dropout=spec.dropout.residual,
        cross_attention=CrossAttention(**_attention_args(spec, sizes)) if cross else None,
    )


def _stack(spec: ModelSpec, sizes: Sizes, shape: StackShape) -> Stack:
    return Stack(
        blocks=[_block(spec, sizes, shape.cross) for _ in range(shape.layers)],
        position=make(POSITIONS, spec.position, sizes),
        patterns=[make(PATTERNS, pattern, sizes) for pattern in spec.attention.patterns],
        causal=shape.causal,
        final_norm=_norm(spec, sizes)(sizes.d_model) if spec.norm.final else None,
        embedding_norm=_norm(spec, sizes)(sizes.d_model) if spec.norm.embedding else None,
        embedding_dropout=spec.dropout.embedding,
    )


def build_model(spec: ModelSpec, seed: int | None = None) -> DecoderLM | EncoderDecoderLM:
    """Build and initialise the model ``spec`` describes, on the CPU, in fp32.

    With ``seed`` the weights are reproducible and the global RNG state is left untouched.
    """
    sizes = sizes_of(spec)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        embedding = nn.Embedding(spec.vocab_size, spec.d_model)
        head = nn.Linear(spec.d_model, spec.vocab_size, bias=spec.output_bias)
        scale = math.sqrt(spec.d_model) if spec.scale_embeddings else 1.0
        stacks = [_stack(spec, sizes, shape) for shape in spec.stacks]
        model = MODELS[spec.architecture](
            embedding, *stacks, head, spec.tie_embeddings, scale, spec.output_scale, spec.logit_softcap
        )
        make(INITS, spec.init, sizes)(model)
    model.set_gradient_checkpointing(spec.training.gradient_checkpointing)
    return model
