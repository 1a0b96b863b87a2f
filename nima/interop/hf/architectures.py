"""One row per ``config.json`` ``model_type``: how a Hugging Face config becomes a Nima spec, and where
each Nima weight comes from in the checkpoint.

A row's ``spec`` reads the config keys it knows and refuses, naming the key, any value the spec
cannot express (a RoPE scaling kind, an activation, bias layouts Nima has no field for). Its
``weights`` list maps Nima parameter names to checkpoint tensors (``{i}``: the layer), with a
transform where the layouts differ (GPT-2's ``Conv1D`` stores (in, out) and stacks q, k, v).
Entries for parameters the spec does not have (biases of a bias-free model) are skipped; a
checkpoint tensor no entry reads, and no ``ignored`` pattern names, is an error, so no weight is
dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from nima.interop.hf.config import HfConfig
from nima.spec import ModelSpec

Transform = Callable[[list[torch.Tensor], ModelSpec], torch.Tensor]


@dataclass(frozen=True)
class Map:
    """Nima parameter ``nima`` from checkpoint tensor(s) ``hf`` (``{i}``: layer), through ``transform``."""

    nima: str
    hf: str
    transform: Transform | None = None


@dataclass(frozen=True)
class HfArchitecture:
    """How one ``model_type`` imports; see the module docstring."""

    body_prefix: str  # what the body's tensor names start with in a checkpoint of the model with its head
    spec: Callable[[HfConfig], dict[str, Any]]  # the spec's fields besides name and generation defaults
    weights: tuple[Map, ...]
    ignored: tuple[str, ...] = ()  # regexes of checkpoint tensors that hold no weight (cached buffers)


def _no_scaling(config: HfConfig, scaling: dict[str, Any] | None) -> float:
    """RoPE's linear scaling factor; every other scaling kind is refused by name."""
    if scaling is None:
        return 1.0
    kind = scaling.get("rope_type")
    if kind == "linear":
        return float(scaling["factor"])
    raise config.refuse(
        "rope_scaling" if "rope_scaling" in config.data else "rope_parameters",
        f"rope_type {kind!r} is not supported (Nima's rope takes linear scaling)",
    )


def _head_dim(config: HfConfig, d_model: int, heads: int) -> dict[str, int]:
    """``attention.head_dim`` where the config's differs from d_model / heads."""
    head_dim = config.integer("head_dim", 0) or d_model // heads
    return {} if head_dim * heads == d_model else {"head_dim": head_dim}


def _activation(config: HfConfig, key: str, gated: bool) -> dict[str, Any]:
    """The FFN section's kind (and GELU form) for the config's activation name."""
    name = config.get(key, "silu" if gated else "gelu_new")
    table: dict[str, dict[str, Any]] = {
        "silu": {"kind": "swiglu"},
        "swish": {"kind": "swiglu"},
        "gelu": {"kind": "geglu" if gated else "gelu", "approximate": "none"},
        "gelu_new": {"kind": "geglu" if gated else "gelu", "approximate": "tanh"},
        "gelu_pytorch_tanh": {"kind": "geglu" if gated else "gelu", "approximate": "tanh"},
        "relu": {"kind": "relu"},
    }
    chosen = table.get(str(name))
    if chosen is None or (chosen["kind"] == "relu" and gated) or (chosen["kind"] == "swiglu" and not gated):
        raise config.refuse(key, f"activation {name!r} is not supported here")
    return chosen


def llama_spec(config: HfConfig, qkv_bias: bool | None = None, qk_norm: bool = False) -> dict[str, Any]:
    """Llama and its descendants: RMSNorm pre-norm, RoPE (rotate-half), SwiGLU, grouped-query attention."""
    d_model, heads = config.integer("hidden_size"), config.integer("num_attention_heads")
    attention_bias, mlp_bias = bool(config.get("attention_bias", False)), bool(config.get("mlp_bias", False))
    if attention_bias != mlp_bias:
        raise config.refuse("mlp_bias", f"{mlp_bias} with attention_bias {attention_bias}: Nima has one bias switch")
    theta, scaling = config.rope()
    max_seq_len = config.integer("max_position_embeddings")
    attention: dict[str, Any] = {
        "n_heads": heads,
        "n_kv_heads": config.integer("num_key_value_heads", heads),
        **_head_dim(config, d_model, heads),
        "qk_norm": qk_norm,
    }
    if qkv_bias is not None:
        attention["qkv_bias"] = qkv_bias
    window = config.get("sliding_window")
    kinds = set(config.get("layer_types", []))
    if kinds - {"full_attention", "sliding_attention"} or len(kinds) > 1:
        raise config.refuse(
            "layer_types", f"{sorted(kinds)}: layers of different attention kinds are not supported yet"
        )
    sliding = kinds == {"sliding_attention"} or (not kinds and config.get("use_sliding_window", window is not None))
    if sliding and window is not None and window < max_seq_len:
        attention["pattern"] = {"kind": "local", "window": config.integer("sliding_window")}
    return {
        "architecture": "decoder",
        "vocab_size": config.integer("vocab_size"),
        "max_seq_len": max_seq_len,
        "d_model": d_model,
        "n_layers": config.integer("num_hidden_layers"),
        "attention": attention,
        "ffn": {**_activation(config, "hidden_act", gated=True), "hidden": config.integer("intermediate_size")},
        "position": {"kind": "rope", "theta": theta, "scaling_factor": _no_scaling(config, scaling)},
        "norm": {"kind": "rmsnorm", "placement": "pre", "eps": config.number("rms_norm_eps", 1e-6)},
        "bias": attention_bias,
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
    }


def qwen2_spec(config: HfConfig) -> dict[str, Any]:
    """Qwen2: Llama with biases on q, k and v only; per-layer sliding windows are refused."""
    if config.get("use_sliding_window", False):
        raise config.refuse("use_sliding_window", "sliding windows on some layers only are not supported yet")
    return llama_spec(config, qkv_bias=True)


def qwen3_spec(config: HfConfig) -> dict[str, Any]:
    """Qwen3: Llama with per-head RMSNorm on queries and keys before RoPE."""
    if config.get("use_sliding_window", False):
        raise config.refuse("use_sliding_window", "sliding windows on some layers only are not supported yet")
    return llama_spec(config, qk_norm=True)


def gpt2_spec(config: HfConfig) -> dict[str, Any]:
    """GPT-2: learned positions, LayerNorm pre-norm, a GELU MLP, biases everywhere, a tied head."""
    if not config.get("scale_attn_weights", True):
        raise config.refuse("scale_attn_weights", "false (attention without 1/sqrt(head_dim)) is not supported yet")
    if config.get("scale_attn_by_inverse_layer_idx", False):
        raise config.refuse("scale_attn_by_inverse_layer_idx", "per-layer attention scales are not supported")
    d_model = config.integer("n_embd")
    return {
        "architecture": "decoder",
        "vocab_size": config.integer("vocab_size"),
        "max_seq_len": config.integer("n_positions"),
        "d_model": d_model,
        "n_layers": config.integer("n_layer"),
        "attention": {"n_heads": config.integer("n_head")},
        "ffn": {**_activation(config, "activation_function", gated=False), "hidden": config.integer("n_inner", 0)},
        "position": {"kind": "learned"},
        "norm": {"kind": "layernorm", "placement": "pre", "eps": config.number("layer_norm_epsilon", 1e-5)},
        "bias": True,
        "tie_embeddings": bool(config.get("tie_word_embeddings", True)),
    }


def _gpt2_ffn_hidden(spec_data: dict[str, Any]) -> dict[str, Any]:
    """GPT-2's ``n_inner`` of None (0 here) means 4 x n_embd."""
    if not spec_data["ffn"]["hidden"]:
        spec_data["ffn"]["hidden"] = 4 * spec_data["d_model"]
    return spec_data


def _qkv_part(part: int) -> Transform:
    """Part ``part`` (q, k or v) of GPT-2's stacked ``c_attn`` weight (d, 3d) or bias (3d,), as nn.Linear's."""

    def take(tensors: list[torch.Tensor], spec: ModelSpec) -> torch.Tensor:
        width = spec.d_model
        packed = tensors[0]
        if packed.dim() == 2:
            return packed[:, part * width : (part + 1) * width].t()  # Conv1D (in, out) -> Linear (out, in)
        return packed[part * width : (part + 1) * width]

    return take


def _transposed(tensors: list[torch.Tensor], spec: ModelSpec) -> torch.Tensor:
    return tensors[0].t()  # Conv1D (in, out) -> Linear (out, in)


LLAMA_WEIGHTS = (
    Map("embedding.weight", "model.embed_tokens.weight"),
    Map("head.weight", "lm_head.weight"),
    Map("decoder.final_norm.weight", "model.norm.weight"),
    *(
        Map(f"decoder.blocks.{{i}}.attention.{proj}.{kind}", f"model.layers.{{i}}.self_attn.{proj}.{kind}")
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj")
        for kind in ("weight", "bias")
    ),
    Map("decoder.blocks.{i}.attention.q_norm.weight", "model.layers.{i}.self_attn.q_norm.weight"),
    Map("decoder.blocks.{i}.attention.k_norm.weight", "model.layers.{i}.self_attn.k_norm.weight"),
    Map("decoder.blocks.{i}.attention_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    Map("decoder.blocks.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    *(
        Map(f"decoder.blocks.{{i}}.ffn.{ours}.{kind}", f"model.layers.{{i}}.mlp.{theirs}.{kind}")
        for ours, theirs in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj"))
        for kind in ("weight", "bias")
    ),
)

GPT2_WEIGHTS = (
    Map("embedding.weight", "transformer.wte.weight"),
    Map("head.weight", "lm_head.weight"),
    Map("decoder.position.table.weight", "transformer.wpe.weight"),
    Map("decoder.final_norm.weight", "transformer.ln_f.weight"),
    Map("decoder.final_norm.bias", "transformer.ln_f.bias"),
    *(
        Map(f"decoder.blocks.{{i}}.attention.{proj}.{kind}", f"transformer.h.{{i}}.attn.c_attn.{kind}", _qkv_part(n))
        for n, proj in enumerate(("q_proj", "k_proj", "v_proj"))
        for kind in ("weight", "bias")
    ),
    Map("decoder.blocks.{i}.attention.o_proj.weight", "transformer.h.{i}.attn.c_proj.weight", _transposed),
    Map("decoder.blocks.{i}.attention.o_proj.bias", "transformer.h.{i}.attn.c_proj.bias"),
    Map("decoder.blocks.{i}.ffn.up.weight", "transformer.h.{i}.mlp.c_fc.weight", _transposed),
    Map("decoder.blocks.{i}.ffn.up.bias", "transformer.h.{i}.mlp.c_fc.bias"),
    Map("decoder.blocks.{i}.ffn.down.weight", "transformer.h.{i}.mlp.c_proj.weight", _transposed),
    Map("decoder.blocks.{i}.ffn.down.bias", "transformer.h.{i}.mlp.c_proj.bias"),
    *(
        Map(f"decoder.blocks.{{i}}.{ours}.{kind}", f"transformer.h.{{i}}.{theirs}.{kind}")
        for ours, theirs in (("attention_norm", "ln_1"), ("ffn_norm", "ln_2"))
        for kind in ("weight", "bias")
    ),
)

ROTARY_BUFFERS = (r"rotary_emb\.inv_freq$",)

ARCHITECTURES: dict[str, HfArchitecture] = {
    "gpt2": HfArchitecture(
        "transformer.", lambda c: _gpt2_ffn_hidden(gpt2_spec(c)), GPT2_WEIGHTS, (r"\.attn\.(masked_)?bias$",)
    ),
    "llama": HfArchitecture("model.", llama_spec, LLAMA_WEIGHTS, ROTARY_BUFFERS),
    "mistral": HfArchitecture("model.", llama_spec, LLAMA_WEIGHTS, ROTARY_BUFFERS),
    "qwen2": HfArchitecture("model.", qwen2_spec, LLAMA_WEIGHTS, ROTARY_BUFFERS),
    "qwen3": HfArchitecture("model.", qwen3_spec, LLAMA_WEIGHTS, ROTARY_BUFFERS),
}
