"""T5 (v1.0 and v1.1 / Flan): config <-> spec, and where each weight sits.

An encoder-decoder with RMSNorm pre-norm (T5's ``T5LayerNorm``: no centring, no bias, fp32
statistics), no biases anywhere, bucketed relative position biases (one table per stack, in the
first block's self-attention; none in cross-attention), and attention *without* the 1/sqrt(d)
scale (``attention.scale: 1``: T5 folds it into its weights' initialisation). v1.0 has a ReLU
MLP (``feed_forward_proj: relu``), v1.1 and Flan a GELU-tanh gate (``gated-gelu``: ``wi_0`` is the
gate, ``wi_1`` the up projection). Where the config says so (``scale_decoder_outputs``, else
a tied head) the decoder's output is multiplied by d_model^-0.5 before the head
(``output_scale``). The decoder starts from the padding token.
"""

from __future__ import annotations

import math
from typing import Any

from nima.interop.hf.config import HfConfig
from nima.interop.hf.fields import ACTIVATIONS, activation_name
from nima.interop.hf.layouts import Map
from nima.spec import ModelSpec

# T5's own activation names after "gated-" (transformers reads "gated-gelu" as GELU's tanh form)
GATED_KINDS = {"gelu": "geglu", "gelu_new": "geglu", "silu": "swiglu", "swish": "swiglu"}


def _ffn(config: HfConfig) -> dict[str, Any]:
    name = str(config.get("feed_forward_proj", "relu"))
    gated, _, act = name.rpartition("-")
    if gated not in ("", "gated"):
        raise config.refuse("feed_forward_proj", f"{name!r} is not an activation transformers' T5 reads")
    if gated:
        act = "gelu_new" if act == "gelu" else act  # transformers' backwards-compatible reading
        kind = GATED_KINDS.get(act)
        if kind is None:
            raise config.refuse("feed_forward_proj", f"{name!r}: a gate of {act!r} is not supported here")
        fields = ACTIVATIONS[act]
        return {"kind": kind, **({"approximate": fields["approximate"]} if "approximate" in fields else {})}
    if act not in ("relu", "gelu", "gelu_new"):
        raise config.refuse("feed_forward_proj", f"{name!r} is not supported here")
    return dict(ACTIVATIONS[act])


def spec(config: HfConfig) -> dict[str, Any]:
    d_model = config.integer("d_model")
    heads = config.integer("num_heads")
    tie = config.get("tie_word_embeddings", True) is not False
    scaled = bool(config.get("scale_decoder_outputs", tie))
    layers = config.integer("num_layers")
    attention: dict[str, Any] = {"n_heads": heads, "scale": 1.0}
    if config.integer("d_kv") * heads != d_model:
        attention["head_dim"] = config.integer("d_kv")
    return {
        "architecture": "encoder-decoder",
        "vocab_size": config.integer("vocab_size"),
        # relative positions have no table to outgrow: T5's 512 is what it was trained on
        "max_seq_len": config.integer("n_positions", 512),
        "d_model": d_model,
        "n_layers": config.integer("num_decoder_layers", layers),
        "n_encoder_layers": layers,
        "attention": attention,
        "ffn": {**_ffn(config), "hidden": config.integer("d_ff")},
        "position": {
            "kind": "relative",
            "num_buckets": config.integer("relative_attention_num_buckets", 32),
            "max_distance": config.integer("relative_attention_max_distance", 128),
        },
        "norm": {"kind": "rmsnorm", "placement": "pre", "eps": config.number("layer_norm_epsilon", 1e-6)},
        "bias": False,
        "tie_embeddings": tie,
        "output_scale": d_model**-0.5 if scaled else 1.0,
    }


def config(model: ModelSpec, model_type: str) -> dict[str, Any]:
    """The nearest T5 config to ``model`` (whether it is the same model, the caller checks)."""
    act = activation_name(model, tanh="gelu")  # "gated-gelu" is read as the tanh form
    position = model.position
    return {
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "vocab_size": model.vocab_size,
        "d_model": model.d_model,
        "d_kv": model.head_dim,
        "d_ff": model.ffn.hidden,
        "num_layers": model.encoder_layers or model.n_layers,
        "num_decoder_layers": model.n_layers,
        "num_heads": model.attention.n_heads,
        "n_positions": model.max_seq_len,
        "relative_attention_num_buckets": getattr(position, "num_buckets", 32),
        "relative_attention_max_distance": getattr(position, "max_distance", 128),
        "feed_forward_proj": f"gated-{act}" if model.ffn.gated else act,
        "layer_norm_epsilon": model.norm.eps,
        "dropout_rate": 0.0,
        "tie_word_embeddings": model.tie_embeddings,
        "scale_decoder_outputs": not math.isclose(model.output_scale, 1.0),
        "is_encoder_decoder": True,
    }


def plain(spec: ModelSpec) -> bool:
    return not spec.ffn.gated


def gated(spec: ModelSpec) -> bool:
    return spec.ffn.gated


def _stack(stack: str, hf: str, cross: bool) -> tuple[Map, ...]:
    """One stack's blocks: self-attention in layer 0, cross-attention in layer 1 (decoder), the FFN last."""
    ours, theirs = f"{stack}.blocks.{{i}}", f"{hf}.block.{{i}}.layer"
    ffn = f"{theirs}.{2 if cross else 1}"
    crossing = (
        *(Map(f"{ours}.cross_attention.{p}_proj.weight", f"{theirs}.1.EncDecAttention.{p}.weight") for p in "qkvo"),
        Map(f"{ours}.cross_norm.weight", f"{theirs}.1.layer_norm.weight"),
    )
    return (
        *(Map(f"{ours}.attention.{p}_proj.weight", f"{theirs}.0.SelfAttention.{p}.weight") for p in "qkvo"),
        *(crossing if cross else ()),
        Map(f"{ours}.attention_norm.weight", f"{theirs}.0.layer_norm.weight"),
        Map(f"{ours}.ffn_norm.weight", f"{ffn}.layer_norm.weight"),
        Map(f"{ours}.ffn.up.weight", f"{ffn}.DenseReluDense.wi.weight", when=plain),
        Map(f"{ours}.ffn.gate.weight", f"{ffn}.DenseReluDense.wi_0.weight"),
        Map(f"{ours}.ffn.up.weight", f"{ffn}.DenseReluDense.wi_1.weight", when=gated),
        Map(f"{ours}.ffn.down.weight", f"{ffn}.DenseReluDense.wo.weight"),
        Map(f"{stack}.position.table.weight", f"{hf}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
        Map(f"{stack}.final_norm.weight", f"{hf}.final_layer_norm.weight"),
    )


WEIGHTS = (
    Map("embedding.weight", "shared.weight"),
    Map("head.weight", "lm_head.weight"),
    *_stack("encoder", "encoder", cross=False),
    *_stack("decoder", "decoder", cross=True),
)
# the stacks' copies of the shared embedding, which some checkpoints store as well
IGNORED = (r"^(encoder|decoder)\.embed_tokens\.weight$",)
