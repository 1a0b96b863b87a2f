"""A Nima decoder as a Hugging Face transformers model with the very same weights.

Two spec shapes map onto a transformers class:

- LLaMA style (RMSNorm pre-norm, RoPE in the rotate-half layout, SwiGLU, any GQA, tied or
  untied head) -> ``LlamaForCausalLM``. Nima's RoPE (``cat(freqs, freqs)`` and
  ``rotate_half``) and RMSNorm (fp32 statistics, weight applied after the cast back) are
  HF's, operation for operation. Biases map to ``attention_bias`` / ``mlp_bias``.
- GPT-2 style (learned positions, LayerNorm pre-norm, GELU MLP, multi-head) ->
  ``GPT2LMHeadModel``. GPT-2's ``Conv1D`` stores weights as (in, out), the transpose of
  ``nn.Linear``, and ``c_attn`` is q, k, v stacked. Nima's ``nn.GELU()`` is the exact (erf)
  GELU, HF's ``"gelu"``, not GPT-2's default tanh approximation ``"gelu_new"``. A spec
  without biases maps too: HF's biases are then zero, which is exact.

Anything else (ALiBi, sliding windows, post-norm, qk-norm, scaled embeddings, encoder-decoder,
...) raises `ValueError` saying why neither shape fits.

bench/_genai.py uses this to hand onnxruntime-genai's model builder the weights Nima exports, and
bench/decode.py to time transformers' ``generate()`` on them.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from nima.builders.models import DecoderLM
from nima.spec import ModelSpec


def _common_problems(spec: ModelSpec) -> list[str]:
    """What neither transformers class can express."""
    problems = []
    if spec.is_encoder_decoder:
        problems.append("architecture is encoder-decoder (only decoders map)")
    if spec.attention.pattern.kind != "full":
        problems.append(f"attention.pattern.kind is {spec.attention.pattern.kind!r} (only 'full' maps)")
    if spec.attention.qk_norm:
        problems.append("attention.qk_norm is set (neither Llama nor GPT-2 normalises q/k)")
    if spec.scale_embeddings:
        problems.append("scale_embeddings is set (neither Llama nor GPT-2 scales embeddings)")
    if spec.norm.placement != "pre" or not spec.norm.final:
        problems.append("norm must be pre-norm with a final norm")
    return problems


def llama_problems(spec: ModelSpec) -> list[str]:
    """Why ``spec`` does not map onto ``LlamaForCausalLM``; empty when it does."""
    problems = _common_problems(spec)
    if spec.norm.kind != "rmsnorm":
        problems.append(f"norm.kind is {spec.norm.kind!r} (Llama needs 'rmsnorm')")
    if spec.position.kind != "rope":
        problems.append(f"position.kind is {spec.position.kind!r} (Llama needs 'rope')")
    if spec.ffn.kind != "swiglu":
        problems.append(f"ffn.kind is {spec.ffn.kind!r} (Llama needs 'swiglu')")
    return problems


def gpt2_problems(spec: ModelSpec) -> list[str]:
    """Why ``spec`` does not map onto ``GPT2LMHeadModel``; empty when it does."""
    problems = _common_problems(spec)
    if spec.norm.kind != "layernorm":
        problems.append(f"norm.kind is {spec.norm.kind!r} (GPT-2 needs 'layernorm')")
    if spec.position.kind != "learned":
        problems.append(f"position.kind is {spec.position.kind!r} (GPT-2 needs 'learned')")
    if spec.ffn.kind != "gelu":
        problems.append(f"ffn.kind is {spec.ffn.kind!r} (GPT-2 needs 'gelu')")
    if spec.n_kv_heads != spec.attention.n_heads:
        problems.append("grouped-query attention (GPT-2 has one kv head per query head)")
    if spec.head_dim * spec.attention.n_heads != spec.d_model:
        problems.append("head_dim * n_heads != d_model (GPT-2 derives head_dim from d_model)")
    return problems


def hf_config(spec: ModelSpec) -> LlamaConfig | GPT2Config:
    """The transformers config for ``spec``; `ValueError` listing the reasons when none fits."""
    llama, gpt2 = llama_problems(spec), gpt2_problems(spec)
    if not llama:
        rope: dict[str, object] = {"rope_type": "default", "rope_theta": spec.position.theta}
        if spec.position.scaling_factor != 1.0:  # Nima divides positions, HF divides inv_freq: the same angles
            rope = {"rope_type": "linear", "rope_theta": spec.position.theta, "factor": spec.position.scaling_factor}
        return LlamaConfig(
            vocab_size=spec.vocab_size,
            hidden_size=spec.d_model,
            intermediate_size=spec.ffn.hidden,
            num_hidden_layers=spec.n_layers,
            num_attention_heads=spec.attention.n_heads,
            num_key_value_heads=spec.n_kv_heads,
            head_dim=spec.head_dim,
            hidden_act="silu",
            max_position_embeddings=spec.max_seq_len,
            rms_norm_eps=spec.norm.eps,
            rope_parameters=rope,
            attention_bias=spec.bias,
            mlp_bias=spec.bias,
            tie_word_embeddings=spec.tie_embeddings,
            attention_dropout=0.0,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            architectures=["LlamaForCausalLM"],
        )
    if not gpt2:
        return GPT2Config(
            vocab_size=spec.vocab_size,
            n_positions=spec.max_seq_len,
            n_embd=spec.d_model,
            n_layer=spec.n_layers,
            n_head=spec.attention.n_heads,
            n_inner=spec.ffn.hidden,
            activation_function="gelu",  # exact erf GELU, as nn.GELU(); GPT-2's own is "gelu_new" (tanh)
            layer_norm_epsilon=spec.norm.eps,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=spec.tie_embeddings,
            bos_token_id=None,
            eos_token_id=None,
            architectures=["GPT2LMHeadModel"],
        )
    raise ValueError(
        f"spec {spec.name!r} maps onto no transformers class: "
        f"not Llama ({'; '.join(llama)}); not GPT-2 ({'; '.join(gpt2)})"
    )


def _llama_state(nima: dict[str, torch.Tensor], spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Nima parameter names -> LlamaForCausalLM names; the tensors are the same."""
    out = {
        "model.embed_tokens.weight": nima["embedding.weight"],
        "model.norm.weight": nima["decoder.final_norm.weight"],
    }
    out["lm_head.weight"] = nima["head.weight"]  # the embedding itself when tied
    kinds = ("weight", "bias") if spec.bias else ("weight",)
    for i in range(spec.n_layers):
        src, dst = f"decoder.blocks.{i}.", f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            for kind in kinds:
                out[f"{dst}self_attn.{proj}.{kind}"] = nima[f"{src}attention.{proj}.{kind}"]
        for theirs, ours in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
            for kind in kinds:
                out[f"{dst}mlp.{theirs}.{kind}"] = nima[f"{src}ffn.{ours}.{kind}"]
        out[f"{dst}input_layernorm.weight"] = nima[f"{src}attention_norm.weight"]
        out[f"{dst}post_attention_layernorm.weight"] = nima[f"{src}ffn_norm.weight"]
    return out


def _gpt2_state(nima: dict[str, torch.Tensor], spec: ModelSpec) -> dict[str, torch.Tensor]:
    """Nima parameter names -> GPT2LMHeadModel names; Conv1D weights are transposed, q/k/v stacked."""

    def bias(name: str, width: int) -> torch.Tensor:
        return nima[name] if name in nima else torch.zeros(width)  # bias: false -> exact zeros

    d = spec.d_model
    out = {
        "transformer.wte.weight": nima["embedding.weight"],
        "transformer.wpe.weight": nima["decoder.position.table.weight"],
        "transformer.ln_f.weight": nima["decoder.final_norm.weight"],
        "transformer.ln_f.bias": bias("decoder.final_norm.bias", d),
        "lm_head.weight": nima["head.weight"],
    }
    for i in range(spec.n_layers):
        src, dst = f"decoder.blocks.{i}.", f"transformer.h.{i}."
        att = f"{src}attention."
        qkv = [f"{att}{p}_proj" for p in ("q", "k", "v")]
        out[f"{dst}attn.c_attn.weight"] = torch.cat([nima[f"{p}.weight"] for p in qkv], dim=0).t()  # (d, 3d)
        out[f"{dst}attn.c_attn.bias"] = torch.cat([bias(f"{p}.bias", d) for p in qkv])
        out[f"{dst}attn.c_proj.weight"] = nima[f"{att}o_proj.weight"].t()
        out[f"{dst}attn.c_proj.bias"] = bias(f"{att}o_proj.bias", d)
        out[f"{dst}mlp.c_fc.weight"] = nima[f"{src}ffn.up.weight"].t()  # (d, hidden)
        out[f"{dst}mlp.c_fc.bias"] = bias(f"{src}ffn.up.bias", spec.ffn.hidden)
        out[f"{dst}mlp.c_proj.weight"] = nima[f"{src}ffn.down.weight"].t()
        out[f"{dst}mlp.c_proj.bias"] = bias(f"{src}ffn.down.bias", d)
        for theirs, ours in (("ln_1", "attention_norm"), ("ln_2", "ffn_norm")):
            out[f"{dst}{theirs}.weight"] = nima[f"{src}{ours}.weight"]
            out[f"{dst}{theirs}.bias"] = bias(f"{src}{ours}.bias", d)
    return out


def to_hf(model: nn.Module, spec: ModelSpec) -> PreTrainedModel:
    """A transformers model (fp32, eval mode) computing what the Nima decoder ``model`` computes.

    The weights are copied, so the returned model is independent of ``model``. Raises
    `ValueError` when ``spec`` maps onto neither ``LlamaForCausalLM`` nor ``GPT2LMHeadModel``.
    """
    if not isinstance(model, DecoderLM):
        raise ValueError(f"expected a Nima DecoderLM, got {type(model).__name__}")
    config = hf_config(spec)
    nima_state = {k: v.detach().float() for k, v in model.state_dict().items()}
    if isinstance(config, LlamaConfig):
        hf: PreTrainedModel = LlamaForCausalLM(config)
        state = _llama_state(nima_state, spec)
    else:
        hf = GPT2LMHeadModel(config)
        state = _gpt2_state(nima_state, spec)
    expected = set(hf.state_dict())
    if set(state) != expected:  # a transformers version that renamed something: fail loudly, not silently
        raise ValueError(
            f"parameter names differ from {type(hf).__name__}'s: "
            f"missing {sorted(expected - set(state))[:4]}, unexpected {sorted(set(state) - expected)[:4]}"
        )
    with torch.no_grad():
        for name, param in hf.state_dict().items():  # copy_ into every alias, so tied names stay tied
            param.copy_(state[name])
    return hf.float().eval()
