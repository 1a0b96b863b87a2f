"""Figures computed from a spec alone, without building it: parameters, FLOPs, memory.

The parameter count is exact: a test holds it equal to the built module's count for every
example spec, so it doubles as a check that builders and this file agree on the architecture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nima.spec.model import ModelSpec

CHINCHILLA_TOKENS_PER_PARAM = 20
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def _norm_params(spec: ModelSpec, width: int) -> int:
    if spec.norm.kind == "layernorm":
        return width * (2 if spec.bias else 1)
    return width  # rmsnorm: a gain only


def _linear_params(spec: ModelSpec, n_in: int, n_out: int, bias: bool | None = None) -> int:
    use_bias = spec.bias if bias is None else bias
    return n_in * n_out + (n_out if use_bias else 0)


def attention_params(spec: ModelSpec) -> int:
    """One attention sublayer (self or cross): q, k, v, o projections and optional qk-norms."""
    d, hd = spec.d_model, spec.head_dim
    q_width, kv_width = spec.attention.n_heads * hd, spec.n_kv_heads * hd
    qkv_bias = spec.attention.qkv_bias
    n = _linear_params(spec, d, q_width, qkv_bias) + 2 * _linear_params(spec, d, kv_width, qkv_bias)
    n += _linear_params(spec, q_width, d)
    if spec.attention.qk_norm:
        n += 2 * _norm_params(spec, hd)
    return n


def ffn_params(spec: ModelSpec) -> int:
    d, h = spec.d_model, spec.ffn.hidden
    n_in = 2 if spec.ffn.gated else 1
    return n_in * _linear_params(spec, d, h) + _linear_params(spec, h, d)


def position_params(spec: ModelSpec) -> int:
    """Parameters of one stack's position module."""
    pos = spec.position
    if pos.kind == "learned":
        return (spec.max_seq_len + pos.offset) * spec.d_model
    if pos.kind == "relative":
        return pos.num_buckets * spec.attention.n_heads
    return 0


def parameter_count(spec: ModelSpec) -> int:
    """Exact number of distinct trainable parameters of the built model."""
    d = spec.d_model
    norm = _norm_params(spec, d)
    final = norm if spec.norm.final else 0
    att, ffn = attention_params(spec), ffn_params(spec)
    total = spec.vocab_size * d  # token embedding (shared by encoder and decoder)
    if not spec.tie_embeddings:
        total += d * spec.vocab_size  # output head
    if spec.output_bias:
        total += spec.vocab_size
    embedding_norm = norm if spec.norm.embedding else 0
    per_sublayer = 2 * norm if spec.norm.placement == "sandwich" else norm  # sandwich: a norm before and after
    for stack in spec.stacks:  # each stack has its own position table (if any), embedding norm and final norm
        total += position_params(spec) + stack.layers * (att + ffn + 2 * per_sublayer) + final + embedding_norm
        if stack.cross:
            total += stack.layers * (att + per_sublayer)  # cross-attention and its norm(s) in each block
    return total


def _attended(spec: ModelSpec, seq: int) -> int:
    """Average keys a query attends to at context ``seq`` (causal, pattern-limited), over the pattern cycle."""
    patterns = spec.attention.patterns
    return sum(seq if p.kind == "full" else min(p.window, seq) for p in patterns) // len(patterns)


def forward_flops_per_token(spec: ModelSpec, seq: int | None = None) -> int:
    """Forward FLOPs per token: 2 per matmul weight, plus QK^T and AV over the attended context.

    Kaplan et al. (2020) counting, with the LM head included and embeddings excluded. For an
    encoder-decoder, one source token per target token is assumed.
    """
    seq = seq or spec.train_seq_len
    d_attn = spec.attention.n_heads * spec.head_dim
    att, ffn = attention_params(spec), ffn_params(spec)
    matmul = spec.d_model * spec.vocab_size  # the head
    attn = 0
    for stack in spec.stacks:
        matmul += stack.layers * (att + ffn + (att if stack.cross else 0))
        attn += stack.layers * 2 * 2 * d_attn * _attended(spec, seq)  # QK^T and AV over the attended keys
    return 2 * matmul + attn


def training_flops_per_token(spec: ModelSpec, seq: int | None = None) -> int:
    """Forward + backward: the backward pass costs about twice the forward."""
    return 3 * forward_flops_per_token(spec, seq)


def kv_cache_bytes_per_token(spec: ModelSpec, dtype: str = "fp16") -> int:
    """Bytes of self-attention keys and values stored per generated token, all layers."""
    return 2 * spec.n_layers * spec.n_kv_heads * spec.head_dim * DTYPE_BYTES[dtype]


def training_memory_bytes(spec: ModelSpec, batch_size: int | None = None, seq: int | None = None) -> dict[str, int]:
    """Training memory estimate for one process: fp32 weights, grads, AdamW moments, activations.

    Activations follow Korthikanti et al. (2022) for 16-bit mixed precision with a fused
    attention kernel: about 34 * d_model bytes per token per layer, plus fp32 logits and their
    gradient. Gradient checkpointing keeps one d_model-wide input per layer instead.
    """
    n = parameter_count(spec)
    batch = batch_size or spec.training.batch_size
    seq = seq or spec.train_seq_len
    tokens = batch * seq
    layers = spec.total_layers
    per_layer = 2 * spec.d_model if spec.training.gradient_checkpointing else 34 * spec.d_model
    activations = tokens * layers * per_layer + tokens * spec.vocab_size * 4 * 2
    parts = {"weights": 4 * n, "gradients": 4 * n, "optimizer": 8 * n, "activations": activations}
    parts["total"] = sum(parts.values())
    return parts


@dataclass(frozen=True)
class Figures:
    """The derived figures `nima build` prints."""

    parameters: int
    forward_flops_per_token: int
    training_flops_per_token: int
    kv_cache_bytes_per_token_fp16: int
    kv_cache_bytes_per_token_fp32: int
    training_memory_bytes: dict[str, int]
    chinchilla_tokens: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def figures(spec: ModelSpec) -> Figures:
    """All derived figures for ``spec``."""
    n = parameter_count(spec)
    return Figures(
        parameters=n,
        forward_flops_per_token=forward_flops_per_token(spec),
        training_flops_per_token=training_flops_per_token(spec),
        kv_cache_bytes_per_token_fp16=kv_cache_bytes_per_token(spec, "fp16"),
        kv_cache_bytes_per_token_fp32=kv_cache_bytes_per_token(spec, "fp32"),
        training_memory_bytes=training_memory_bytes(spec),
        chinchilla_tokens=CHINCHILLA_TOKENS_PER_PARAM * n,
    )
