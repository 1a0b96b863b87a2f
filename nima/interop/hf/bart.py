"""BART and Marian: config <-> spec, and where each weight sits.

Both are post-norm encoder-decoders (``norm(x + f(x))``, LayerNorm, no final norm) with biases
everywhere, a tied head plus a learned bias on the logits (``final_logits_bias``:
``output_bias``), and embeddings multiplied by sqrt(d_model) where ``scale_embedding`` says so.
BART learns its positions in a table whose first two rows come before position 0
(``position.offset: 2``) and normalises the embeddings before the first block
(``layernorm_embedding``: ``norm.embedding``). Marian's positions are fixed sinusoids laid out
sines first, then cosines (``layout: split``), and it has no embedding norm; its checkpoints
store no position table. Encoder and decoder must share sizes (heads, FFN width) and, for
Marian, the vocabulary.
"""

from __future__ import annotations

from typing import Any

from nima.interop.hf.config import HfConfig
from nima.interop.hf.fields import activation, activation_name
from nima.interop.hf.layouts import ROW, Map
from nima.spec import ModelSpec

CLASSES = {"bart": "BartForConditionalGeneration", "marian": "MarianMTModel"}


def _same(config: HfConfig, encoder: str, decoder: str) -> int:
    """A size encoder and decoder must share in a Nima spec."""
    value = config.integer(decoder)
    if config.integer(encoder, value) != value:
        raise config.refuse(encoder, f"{config.get(encoder)} with {decoder} {value}: Nima's stacks share this size")
    return value


def spec(config: HfConfig) -> dict[str, Any]:
    marian = config.model_type == "marian"
    if marian and config.get("share_encoder_decoder_embeddings", True) is not True:
        raise config.refuse("share_encoder_decoder_embeddings", "separate source and target embeddings: not supported")
    vocab = config.integer("vocab_size")
    if marian and config.integer("decoder_vocab_size", vocab) != vocab:
        raise config.refuse("decoder_vocab_size", f"{config.get('decoder_vocab_size')} differs from vocab_size {vocab}")
    if config.get("normalize_before", False) or config.get("add_final_layer_norm", False):
        raise config.refuse("normalize_before", "pre-norm BART variants (mBART's) are not supported")
    ffn = activation(config, "activation_function", gated=False, default="gelu")
    position: dict[str, Any] = {"kind": "sinusoidal", "layout": "split"} if marian else {"kind": "learned", "offset": 2}
    return {
        "architecture": "encoder-decoder",
        "vocab_size": vocab,
        "max_seq_len": config.integer("max_position_embeddings"),
        "d_model": config.integer("d_model"),
        "n_layers": config.integer("decoder_layers"),
        "n_encoder_layers": config.integer("encoder_layers"),
        "attention": {"n_heads": _same(config, "encoder_attention_heads", "decoder_attention_heads")},
        "ffn": {**ffn, "hidden": _same(config, "encoder_ffn_dim", "decoder_ffn_dim")},
        "position": position,
        "norm": {"kind": "layernorm", "placement": "post", "eps": 1e-5, "final": False, "embedding": not marian},
        "bias": True,
        "tie_embeddings": config.get("tie_word_embeddings", True) is not False,
        "scale_embeddings": bool(config.get("scale_embedding", False)),
        "output_bias": True,
    }


def config(model: ModelSpec, model_type: str) -> dict[str, Any]:
    """The nearest ``model_type`` config to ``model`` (whether it is the same model, the caller checks)."""
    data: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [CLASSES[model_type]],
        "vocab_size": model.vocab_size,
        "max_position_embeddings": model.max_seq_len,
        "d_model": model.d_model,
        "encoder_layers": model.encoder_layers or model.n_layers,
        "decoder_layers": model.n_layers,
        "encoder_attention_heads": model.attention.n_heads,
        "decoder_attention_heads": model.attention.n_heads,
        "encoder_ffn_dim": model.ffn.hidden,
        "decoder_ffn_dim": model.ffn.hidden,
        "activation_function": activation_name(model, tanh="gelu_new"),
        "scale_embedding": model.scale_embeddings,
        "tie_word_embeddings": model.tie_embeddings,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "is_encoder_decoder": True,
        "forced_eos_token_id": None,
    }
    if model_type == "marian":
        data["decoder_vocab_size"] = model.vocab_size
        data["share_encoder_decoder_embeddings"] = True
    return data


def _attention(stack: str, ours: str, hf: str) -> tuple[Map, ...]:
    return tuple(
        Map(f"{stack}.blocks.{{i}}.{ours}.{proj}.{kind}", f"model.{stack}.layers.{{i}}.{hf}.{theirs}.{kind}")
        for proj, theirs in (("q_proj", "q_proj"), ("k_proj", "k_proj"), ("v_proj", "v_proj"), ("o_proj", "out_proj"))
        for kind in ("weight", "bias")
    )


def _norms(stack: str, pairs: tuple[tuple[str, str], ...]) -> tuple[Map, ...]:
    return tuple(
        Map(f"{stack}.blocks.{{i}}.{ours}.{kind}", f"model.{stack}.layers.{{i}}.{theirs}.{kind}")
        for ours, theirs in pairs
        for kind in ("weight", "bias")
    )


def _stack(stack: str, cross: bool) -> tuple[Map, ...]:
    norms = (("attention_norm", "self_attn_layer_norm"), ("ffn_norm", "final_layer_norm"))
    return (
        *_attention(stack, "attention", "self_attn"),
        *(_attention(stack, "cross_attention", "encoder_attn") if cross else ()),
        *_norms(stack, (*norms, *((("cross_norm", "encoder_attn_layer_norm"),) if cross else ()))),
        *(
            Map(f"{stack}.blocks.{{i}}.ffn.{ours}.{kind}", f"model.{stack}.layers.{{i}}.{theirs}.{kind}")
            for ours, theirs in (("up", "fc1"), ("down", "fc2"))
            for kind in ("weight", "bias")
        ),
        Map(f"{stack}.position.table.weight", f"model.{stack}.embed_positions.weight"),
        Map(f"{stack}.embedding_norm.weight", f"model.{stack}.layernorm_embedding.weight"),
        Map(f"{stack}.embedding_norm.bias", f"model.{stack}.layernorm_embedding.bias"),
    )


WEIGHTS = (
    Map("embedding.weight", "model.shared.weight"),
    Map("head.weight", "lm_head.weight"),
    Map("head.bias", "final_logits_bias", ROW),
    *_stack("encoder", cross=False),
    *_stack("decoder", cross=True),
)
# the stacks' copies of the shared embedding, which some checkpoints store as well
IGNORED = (r"^model\.(encoder|decoder)\.embed_tokens\.weight$",)
# Marian's sinusoid tables where a checkpoint stores them: fixed values, computed from the spec
MARIAN_IGNORED = (*IGNORED, r"^model\.(encoder|decoder)\.embed_positions\.weight$")
