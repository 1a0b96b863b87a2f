"""spec -> nn.Module. The only place in the builders that reads a spec.

One closed table per variant family maps each ``kind`` to a factory that reads the variant's
fields and returns a module taking plain numbers; a test holds each table's keys equal to the
spec's kinds, so a variant cannot be half-added.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from nima.builders.attention import CrossAttention, SelfAttention
from nima.builders.blocks import Block
from nima.builders.ffn import FFNS
from nima.builders.init import INITS
from nima.builders.masks import PATTERNS, AttentionPatternRule
from nima.builders.models import DecoderLM, EncoderDecoderLM
from nima.builders.norms import NORMS
from nima.builders.positions import (
    AlibiPositions,
    LearnedPositions,
    PositionScheme,
    RelativePositions,
    RotaryPositions,
    SinusoidalPositions,
)
from nima.builders.stack import Stack
from nima.spec import ModelSpec

# position kind -> factory(spec)
POSITIONS: dict[str, Callable[[ModelSpec], PositionScheme]] = {
    "sinusoidal": lambda s: SinusoidalPositions(s.d_model, s.position.base),
    "learned": lambda s: LearnedPositions(s.max_seq_len, s.d_model),
    "relative": lambda s: RelativePositions(s.attention.n_heads, s.position.num_buckets, s.position.max_distance),
    "rope": lambda s: RotaryPositions(s.head_dim, s.position.theta, s.position.scaling_factor),
    "alibi": lambda s: AlibiPositions(s.attention.n_heads),
    "none": lambda s: PositionScheme(),
}


def _pattern(spec: ModelSpec) -> AttentionPatternRule:
    fields = spec.attention.pattern.model_dump(exclude={"kind"})
    return PATTERNS[spec.attention.pattern.kind](**fields)


def _norm_factory(spec: ModelSpec) -> Callable[[int], nn.Module]:
    return partial(NORMS[spec.norm.kind], eps=spec.norm.eps, bias=spec.bias)


def _attention_args(spec: ModelSpec) -> dict[str, object]:
    att = spec.attention
    return {
        "d_model": spec.d_model,
        "n_heads": att.n_heads,
        "n_kv_heads": spec.n_kv_heads,
        "head_dim": spec.head_dim,
        "bias": spec.bias,
        "dropout": spec.dropout.attention,
        "backend": att.backend,
        "qk_norm": _norm_factory(spec) if att.qk_norm else None,
    }


def _block(spec: ModelSpec, cross: bool) -> Block:
    norm = _norm_factory(spec)
    return Block(
        attention=SelfAttention(**_attention_args(spec)),
        ffn=FFNS[spec.ffn.kind](spec.d_model, spec.ffn.hidden, spec.bias),
        norm=lambda: norm(spec.d_model),
        placement=spec.norm.placement,
        dropout=spec.dropout.residual,
        cross_attention=CrossAttention(**_attention_args(spec)) if cross else None,
    )


def _stack(spec: ModelSpec, n_layers: int, causal: bool, cross: bool) -> Stack:
    return Stack(
        blocks=[_block(spec, cross) for _ in range(n_layers)],
        position=POSITIONS[spec.position.kind](spec),
        pattern=_pattern(spec),
        causal=causal,
        final_norm=_norm_factory(spec)(spec.d_model) if spec.norm.final else None,
        embedding_dropout=spec.dropout.embedding,
    )


def _initialise(model: nn.Module, spec: ModelSpec) -> None:
    init = spec.init
    if init.kind == "normal":
        INITS["normal"](model, init.std, init.scaled_residual, spec.n_layers + spec.encoder_layers)
    else:
        INITS[init.kind](model, init.gain, spec.d_model)


def build_model(spec: ModelSpec, seed: int | None = None) -> DecoderLM | EncoderDecoderLM:
    """Build and initialise the model ``spec`` describes, on the CPU, in fp32.

    With ``seed`` the weights are reproducible and the global RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        embedding = nn.Embedding(spec.vocab_size, spec.d_model)
        head = nn.Linear(spec.d_model, spec.vocab_size, bias=False)
        scale = math.sqrt(spec.d_model) if spec.scale_embeddings else 1.0
        model: DecoderLM | EncoderDecoderLM
        if spec.is_encoder_decoder:
            encoder = _stack(spec, spec.encoder_layers, causal=False, cross=False)
            decoder = _stack(spec, spec.n_layers, causal=True, cross=True)
            model = EncoderDecoderLM(embedding, encoder, decoder, head, spec.tie_embeddings, scale)
        else:
            decoder = _stack(spec, spec.n_layers, causal=True, cross=False)
            model = DecoderLM(embedding, decoder, head, spec.tie_embeddings, scale)
        _initialise(model, spec)
    model.set_gradient_checkpointing(spec.training.gradient_checkpointing)
    return model
