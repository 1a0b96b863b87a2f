"""Small random-weight Hugging Face models, one per supported architecture, built from configs and
saved with ``save_pretrained`` (no downloads): the references the import tests hold Nima to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    Gemma2Config,
    Gemma2ForCausalLM,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MarianConfig,
    MarianMTModel,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from nima.builders import build_model, load_weights
from nima.spec import ModelSpec, load_spec

VOCAB = 97
IDS = {"bos_token_id": 1, "eos_token_id": 2}
LLAMA_SIZES: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 96,
    **IDS,
}
GPT2_SIZES: dict[str, Any] = {"vocab_size": VOCAB, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 96, **IDS}

# case -> a function making the model; each case is one architecture, or one of its options
CASES: dict[str, Callable[[], PreTrainedModel]] = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(**GPT2_SIZES)),  # GELU's tanh form ("gelu_new")
    "gpt2-exact-gelu-untied-unscaled": lambda: GPT2LMHeadModel(
        GPT2Config(**GPT2_SIZES, activation_function="gelu", tie_word_embeddings=False, scale_attn_weights=False)
    ),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**LLAMA_SIZES)),
    "llama-tied-linear-rope": lambda: LlamaForCausalLM(
        LlamaConfig(**LLAMA_SIZES, tie_word_embeddings=True, rope_scaling={"rope_type": "linear", "factor": 2.0})
    ),
    "llama3-rope": lambda: LlamaForCausalLM(
        LlamaConfig(
            **LLAMA_SIZES,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        )
    ),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**LLAMA_SIZES, sliding_window=5)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**LLAMA_SIZES)),
    "qwen3": lambda: Qwen3ForCausalLM(Qwen3Config(**LLAMA_SIZES, head_dim=32)),  # head_dim != d_model / heads
    "gemma": lambda: GemmaForCausalLM(GemmaConfig(**LLAMA_SIZES, head_dim=24)),
    # soft-caps below the random logits' range, so that the caps act; layers alternate local (window 5) and full
    "gemma2": lambda: Gemma2ForCausalLM(
        Gemma2Config(
            **{**LLAMA_SIZES, "num_hidden_layers": 3},
            head_dim=16,
            query_pre_attn_scalar=24,
            sliding_window=5,
            attn_logit_softcapping=3.0,
            final_logit_softcapping=4.0,
        )
    ),
    "phi3-sliding": lambda: Phi3ForCausalLM(Phi3Config(**LLAMA_SIZES, sliding_window=6, pad_token_id=0)),
}


T5_SIZES: dict[str, Any] = {
    "vocab_size": VOCAB,
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 96,
    "num_heads": 4,
    "num_layers": 2,
    "num_decoder_layers": 2,  # transformers' T5 `generate` sizes its cache by num_layers (BART's cases differ)
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 20,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "decoder_start_token_id": 0,  # as T5's published configs say
}
BART_SIZES: dict[str, Any] = {
    "vocab_size": VOCAB,
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 3,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 96,
    "decoder_ffn_dim": 96,
    "max_position_embeddings": 96,
}
# encoder-decoder cases -> a function making the model
SEQ2SEQ_CASES: dict[str, Callable[[], PreTrainedModel]] = {
    "t5": lambda: T5ForConditionalGeneration(T5Config(**T5_SIZES)),  # v1.0: ReLU, tied head scaled by d^-0.5
    "t5-v1.1": lambda: T5ForConditionalGeneration(
        T5Config(**T5_SIZES, feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    ),
    "bart": lambda: BartForConditionalGeneration(
        BartConfig(  # forced first and last tokens as bart-large-cnn's (forced_eos_token_id 2 is the default)
            **BART_SIZES,
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_bos_token_id=0,
        )
    ),
    "marian": lambda: MarianMTModel(
        MarianConfig(
            **BART_SIZES,
            activation_function="swish",
            scale_embedding=True,
            eos_token_id=0,
            pad_token_id=VOCAB - 1,
            decoder_start_token_id=VOCAB - 1,
        )
    ),
}


def random_model(case: str, seed: int) -> PreTrainedModel:
    """The case's model in eval mode with Normal(0, 0.15) weights (wide logits: greedy choices far from
    ties) and unit norm gains, as a trained model's are near."""
    torch.manual_seed(seed)
    model = {**CASES, **SEQ2SEQ_CASES}[case]().float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.requires_grad:  # fixed tables (Marian's sinusoids), not weights
                continue
            if "norm" in name or ".ln_" in name:
                param.normal_(1.0, 0.1) if name.endswith("weight") else param.normal_(0.0, 0.1)
            else:
                param.normal_(0.0, 0.15)
        for name, buffer in model.named_buffers():
            if name == "final_logits_bias":  # zeros as built; a trained model's are not
                buffer.normal_(0.0, 0.5)
    return model


def import_cases(cases: list[str], root: Path, first_seed: int) -> dict[str, tuple[PreTrainedModel, Path]]:
    """Each case's random model (seeds from ``first_seed`` on, in order), saved under ``root`` and imported:
    case -> (the transformers model, the Nima model folder)."""
    from nima.interop.hf.importer import import_hf

    found = {}
    for seed, case in enumerate(cases, start=first_seed):
        hf = random_model(case, seed)
        import_hf(save(hf, root / case), root / f"{case}-nima")
        found[case] = (hf, root / f"{case}-nima")
    return found


def nima_model(folder: Path) -> tuple[ModelSpec, Any]:
    """The spec and the eval-mode model of an imported Nima model folder."""
    spec = load_spec(folder / "nima.json")
    return spec, load_weights(build_model(spec), folder / "model.safetensors").eval()


def save(model: PreTrainedModel, folder: Path, **options: Any) -> Path:
    model.save_pretrained(folder, **options)
    return folder


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch as `generate` derives them (transformers' forward would
    otherwise number padding too, which changes absolute positions such as GPT-2's)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
