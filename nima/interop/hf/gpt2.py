"""GPT-2: config <-> spec, and where each weight sits.

Learned positions, LayerNorm pre-norm, a GELU MLP (``gelu_new``, GPT-2's own: the tanh form),
biases everywhere, a tied head. GPT-2's ``Conv1D`` stores weights as (in, out), the transpose of
``nn.Linear``'s, and ``c_attn`` packs q, k and v side by side.
"""

from __future__ import annotations

from typing import Any

from nima.interop.hf.config import HfConfig
from nima.interop.hf.fields import activation, activation_name
from nima.interop.hf.layouts import TRANSPOSED, Map, Part, qkv_widths
from nima.spec import ModelSpec


def spec(config: HfConfig) -> dict[str, Any]:
    if config.get("scale_attn_by_inverse_layer_idx", False):
        raise config.refuse("scale_attn_by_inverse_layer_idx", "per-layer attention scales are not supported")
    d_model = config.integer("n_embd")
    ffn = activation(config, "activation_function", gated=False, default="gelu_new")
    return {
        "architecture": "decoder",
        "vocab_size": config.integer("vocab_size"),
        "max_seq_len": config.integer("n_positions"),
        "d_model": d_model,
        "n_layers": config.integer("n_layer"),
        # scale_attn_weights false: scores without 1/sqrt(head_dim)
        "attention": {
            "n_heads": config.integer("n_head"),
            **({} if config.get("scale_attn_weights", True) else {"scale": 1.0}),
        },
        "ffn": {**ffn, "hidden": config.integer("n_inner", 0) or 4 * d_model},  # n_inner None: 4 x n_embd
        "position": {"kind": "learned"},
        "norm": {"kind": "layernorm", "placement": "pre", "eps": config.number("layer_norm_epsilon", 1e-5)},
        "bias": True,
        "tie_embeddings": bool(config.get("tie_word_embeddings", True)),
    }


def config(model: ModelSpec, model_type: str) -> dict[str, Any]:
    """The nearest GPT-2 config to ``model`` (whether it is the same model, the caller checks)."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": model.vocab_size,
        "n_positions": model.max_seq_len,
        "n_embd": model.d_model,
        "n_layer": model.n_layers,
        "n_head": model.attention.n_heads,
        "n_inner": model.ffn.hidden,
        "activation_function": activation_name(model, tanh="gelu_new"),
        "layer_norm_epsilon": model.norm.eps,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": model.tie_embeddings,
        "scale_attn_weights": model.attention.scale != 1.0,
    }


WEIGHTS = (
    Map("embedding.weight", "transformer.wte.weight"),
    Map("head.weight", "lm_head.weight"),
    Map("decoder.position.table.weight", "transformer.wpe.weight"),
    Map("decoder.final_norm.weight", "transformer.ln_f.weight"),
    Map("decoder.final_norm.bias", "transformer.ln_f.bias"),
    *(
        Map(
            f"decoder.blocks.{{i}}.attention.{proj}.{kind}",
            f"transformer.h.{{i}}.attn.c_attn.{kind}",
            Part(n, qkv_widths, conv1d=True),
        )
        for n, proj in enumerate(("q_proj", "k_proj", "v_proj"))
        for kind in ("weight", "bias")
    ),
    Map("decoder.blocks.{i}.attention.o_proj.weight", "transformer.h.{i}.attn.c_proj.weight", TRANSPOSED),
    Map("decoder.blocks.{i}.attention.o_proj.bias", "transformer.h.{i}.attn.c_proj.bias"),
    Map("decoder.blocks.{i}.ffn.up.weight", "transformer.h.{i}.mlp.c_fc.weight", TRANSPOSED),
    Map("decoder.blocks.{i}.ffn.up.bias", "transformer.h.{i}.mlp.c_fc.bias"),
    Map("decoder.blocks.{i}.ffn.down.weight", "transformer.h.{i}.mlp.c_proj.weight", TRANSPOSED),
    Map("decoder.blocks.{i}.ffn.down.bias", "transformer.h.{i}.mlp.c_proj.bias"),
    *(
        Map(f"decoder.blocks.{{i}}.{ours}.{kind}", f"transformer.h.{{i}}.{theirs}.{kind}")
        for ours, theirs in (("attention_norm", "ln_1"), ("ffn_norm", "ln_2"))
        for kind in ("weight", "bias")
    ),
)
