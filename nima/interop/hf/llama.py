"""Llama and its descendants (Mistral, Qwen2, Qwen3): config <-> spec, and where each weight sits.

RMSNorm pre-norm, RoPE in the rotate-half layout, SwiGLU, grouped-query attention; Nima's RoPE
(``cat(freqs, freqs)``, ``rotate_half``) and RMSNorm (fp32 statistics, the weight applied after
the cast back) are transformers', operation for operation. Mistral adds a sliding window (a
``local`` pattern: keys at distance < window), Qwen2 biases on q, k and v only, Qwen3 a per-head
RMSNorm on q and k before RoPE and its own head size. Gemma scales the embeddings by
sqrt(d_model), applies its RMSNorm gain as 1 + w (``norm.offset: 1``) and gates with GELU's tanh
form (its configs' legacy ``"gelu"`` means that form too, as transformers reads it). Phi-3 is
Llama with q, k and v packed into one ``qkv_proj`` and gate and up into one ``gate_up_proj`` in its
checkpoint (`PHI3_WEIGHTS`), and a sliding window where its config sets one.
"""

from __future__ import annotations

from typing import Any

from nima.interop.hf.config import HfConfig
from nima.interop.hf.fields import activation, activation_name, head_dim, rope_config, rope_scaling
from nima.interop.hf.layouts import Map, Part, qkv_widths
from nima.spec import ModelSpec
from nima.spec.model import MAX_LAYERS

CLASSES = {
    "llama": "LlamaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "phi3": "Phi3ForCausalLM",
}


def spec(config: HfConfig, qkv_bias: bool | None = None, qk_norm: bool = False) -> dict[str, Any]:
    """The spec of a Llama-family config (Qwen2: ``qkv_bias``; Qwen3: ``qk_norm``)."""
    d_model, heads = config.integer("hidden_size"), config.integer("num_attention_heads")
    attention_bias, mlp_bias = bool(config.get("attention_bias", False)), bool(config.get("mlp_bias", False))
    if attention_bias != mlp_bias and qkv_bias is None:
        raise config.refuse("mlp_bias", f"{mlp_bias} with attention_bias {attention_bias}: Nima has one bias switch")
    theta, scaling = config.rope()
    max_seq_len = config.integer("max_position_embeddings")
    attention: dict[str, Any] = {
        "n_heads": heads,
        "n_kv_heads": config.integer("num_key_value_heads", heads),
        **head_dim(config, d_model, heads),
        "qk_norm": qk_norm,
    }
    if qkv_bias is not None:
        attention["qkv_bias"] = qkv_bias
    pattern = _patterns(config, max_seq_len)
    if pattern is not None:
        attention["pattern"] = pattern
    return {
        "architecture": "decoder",
        "vocab_size": config.integer("vocab_size"),
        "max_seq_len": max_seq_len,
        "d_model": d_model,
        "n_layers": config.integer("num_hidden_layers"),
        "attention": attention,
        "ffn": {
            **activation(config, "hidden_act", gated=True, default="silu"),
            "hidden": config.integer("intermediate_size"),
        },
        "position": {"kind": "rope", "theta": theta, **rope_scaling(config, scaling)},
        "norm": {"kind": "rmsnorm", "placement": "pre", "eps": config.number("rms_norm_eps", 1e-6)},
        "bias": attention_bias if qkv_bias is None else mlp_bias,
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
    }


def _patterns(config: HfConfig, max_seq_len: int) -> dict[str, Any] | list[dict[str, Any]] | None:
    """The attention pattern(s) of ``layer_types`` (``sliding_attention`` / ``full_attention`` per layer), or of
    ``sliding_window`` where a config has no list: one pattern, or the shortest cycle that repeats to the list
    (Gemma 2: [local, full]); None: full attention everywhere."""
    window = config.integer("sliding_window", 0) or None
    layer_types = config.get("layer_types", [])
    if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types):
        raise config.refuse("layer_types", "expected a list of attention kinds")
    unknown = sorted(set(layer_types) - {"full_attention", "sliding_attention"})
    if unknown:
        raise config.refuse("layer_types", f"{unknown}: attention kinds Nima does not have")
    if layer_types and len(layer_types) != _layers(config):  # checked first: the cycle search is quadratic
        raise config.refuse("layer_types", f"{len(layer_types):,} entries for {_layers(config):,} layers")
    if not layer_types:
        sliding = config.get("use_sliding_window", window is not None)
        layer_types = ["sliding_attention" if sliding else "full_attention"]
    if "sliding_attention" in layer_types and window is None:
        raise config.refuse("sliding_window", "required by sliding_attention layers, and missing")
    local = {"kind": "local", "window": window} if window is not None and window < max_seq_len else {"kind": "full"}
    cycle = [local if kind == "sliding_attention" else {"kind": "full"} for kind in layer_types]
    period = next(p for p in range(1, len(cycle) + 1) if all(cycle[i] == cycle[i % p] for i in range(len(cycle))))
    cycle = cycle[:period]
    if len(cycle) == 1:
        return None if cycle[0]["kind"] == "full" else cycle[0]
    return cycle


def _layers(config: HfConfig) -> int:
    """``num_hidden_layers``, within the spec's bound before anything is built per layer."""
    layers = config.integer("num_hidden_layers")
    if not 0 < layers <= MAX_LAYERS:
        raise config.refuse("num_hidden_layers", f"{layers:,}; expected 1 to {MAX_LAYERS:,}")
    return layers


def qwen2_spec(config: HfConfig) -> dict[str, Any]:
    """Qwen2: Llama with biases on q, k and v only; per-layer sliding windows are refused."""
    if config.get("use_sliding_window", False):
        raise config.refuse("use_sliding_window", "sliding windows on some layers only are not supported yet")
    return spec(config, qkv_bias=True)


def qwen3_spec(config: HfConfig) -> dict[str, Any]:
    """Qwen3: Llama with per-head RMSNorm on queries and keys before RoPE."""
    if config.get("use_sliding_window", False):
        raise config.refuse("use_sliding_window", "sliding windows on some layers only are not supported yet")
    return spec(config, qk_norm=True)


def gemma_spec(config: HfConfig) -> dict[str, Any]:
    """Gemma: Llama with scaled embeddings, a 1 + w RMSNorm gain and a GELU (tanh) gate, a tied head."""
    if config.get("use_bidirectional_attention", False):
        raise config.refuse("use_bidirectional_attention", "bidirectional attention is not supported")
    data = spec(config)
    if config.get("hidden_act") == "gelu":  # Gemma's legacy name for the tanh form (transformers reads it so)
        data["ffn"] = {**data["ffn"], "approximate": "tanh"}
    data["scale_embeddings"] = True
    data["norm"] = {**data["norm"], "offset": 1.0}
    data["tie_embeddings"] = bool(config.get("tie_word_embeddings", True))
    return data


def gemma2_spec(config: HfConfig) -> dict[str, Any]:
    """Gemma 2: Gemma with soft-capped attention scores and logits, a norm before and after each sublayer
    (``sandwich``), attention scaled by query_pre_attn_scalar^-1/2, and alternating sliding-window and global
    layers (``layer_types``; older configs: even layers slide)."""
    read = {"hidden_act": config.get("hidden_activation", "gelu_pytorch_tanh")}  # Gemma 2's name for it
    if "layer_types" not in config.data:
        layers = _layers(config)
        read["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
    config = HfConfig(config.path, {**config.data, **read})
    data = gemma_spec(config)
    data["attention"]["scale"] = config.number("query_pre_attn_scalar", 256) ** -0.5  # transformers' default
    softcap = config.get("attn_logit_softcapping")
    if softcap is not None:
        data["attention"]["softcap"] = config.number("attn_logit_softcapping")
    if config.get("final_logit_softcapping") is not None:
        data["logit_softcap"] = config.number("final_logit_softcapping")
    data["norm"] = {**data["norm"], "placement": "sandwich"}
    return data


def phi3_spec(config: HfConfig) -> dict[str, Any]:
    """Phi-3: Llama; a rotation of part of each head (``partial_rotary_factor``) is refused."""
    partial = (config.get("rope_parameters") or {}).get(
        "partial_rotary_factor", config.get("partial_rotary_factor", 1.0)
    )
    if partial != 1.0:
        raise config.refuse("partial_rotary_factor", f"{partial}: rotating part of each head is not supported yet")
    return spec(config)


def config(model: ModelSpec, model_type: str) -> dict[str, Any]:
    """The nearest ``model_type`` config to ``model`` (whether it is the same model, the caller checks)."""
    data: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [CLASSES[model_type]],
        "vocab_size": model.vocab_size,
        "hidden_size": model.d_model,
        "intermediate_size": model.ffn.hidden,
        "num_hidden_layers": model.n_layers,
        "num_attention_heads": model.attention.n_heads,
        "num_key_value_heads": model.n_kv_heads,
        "head_dim": model.head_dim,
        "hidden_act": activation_name(model, tanh="gelu_pytorch_tanh"),
        "max_position_embeddings": model.max_seq_len,
        "rms_norm_eps": model.norm.eps,
        **rope_config(model),
        "attention_bias": model.bias,
        "tie_word_embeddings": model.tie_embeddings,
        "attention_dropout": 0.0,
    }
    if model_type == "llama":
        data["mlp_bias"] = model.bias
    if model_type in ("qwen2", "qwen3"):
        data["use_sliding_window"] = False
    if model_type in ("mistral", "phi3"):
        pattern = model.attention.patterns[0]  # a cycle of several: no such config; the export's check says so
        data["sliding_window"] = getattr(pattern, "window", None) if pattern.kind == "local" else None
    if model_type == "gemma2":
        patterns = model.attention.patterns
        windows = [p.window for p in patterns if p.kind == "local"]
        data["sliding_window"] = windows[0] if windows else None
        data["layer_types"] = [
            "sliding_attention" if patterns[i % len(patterns)].kind == "local" else "full_attention"
            for i in range(model.n_layers)
        ]
        scalar = (model.attention.scale or model.head_dim**-0.5) ** -2
        data["query_pre_attn_scalar"] = round(scalar) if abs(scalar - round(scalar)) < 1e-6 else scalar  # an int
        data["attn_logit_softcapping"] = model.attention.softcap
        data["final_logit_softcapping"] = model.logit_softcap
        data["hidden_activation"] = data.pop("hidden_act")
    return data


def _gate_up_widths(model: ModelSpec) -> list[int]:
    return [model.ffn.hidden, model.ffn.hidden]


WEIGHTS = (
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

GEMMA2_WEIGHTS = (
    *(m for m in WEIGHTS if not m.nima.endswith("ffn_norm.weight")),
    Map("decoder.blocks.{i}.attention_post_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    Map("decoder.blocks.{i}.ffn_norm.weight", "model.layers.{i}.pre_feedforward_layernorm.weight"),
    Map("decoder.blocks.{i}.ffn_post_norm.weight", "model.layers.{i}.post_feedforward_layernorm.weight"),
)

PHI3_WEIGHTS = (
    *(m for m in WEIGHTS if ".self_attn." not in m.hf or "o_proj" in m.hf),
    *(
        Map(
            f"decoder.blocks.{{i}}.attention.{proj}.weight",
            "model.layers.{i}.self_attn.qkv_proj.weight",
            Part(n, qkv_widths),
        )
        for n, proj in enumerate(("q_proj", "k_proj", "v_proj"))
    ),
)
PHI3_WEIGHTS = (
    *(m for m in PHI3_WEIGHTS if ".mlp.gate_proj." not in m.hf and ".mlp.up_proj." not in m.hf),
    *(
        Map(
            f"decoder.blocks.{{i}}.ffn.{part}.weight",
            "model.layers.{i}.mlp.gate_up_proj.weight",
            Part(n, _gate_up_widths),
        )
        for n, part in enumerate(("gate", "up"))
    ),
)
