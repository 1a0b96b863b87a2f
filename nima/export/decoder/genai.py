"""`genai_config.json`: what onnxruntime-genai needs to load a Nima decoder.

Nima graphs use standard ops and the GenAI/Optimum names, so the generic ``decoder`` model
type fits every Nima decoder — including GPT-2 style ones that GenAI's own builder refuses.
"""

from __future__ import annotations

from typing import Any

from nima.layout import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    PAST_KEY,
    PAST_VALUE,
    POSITION_IDS,
    PRESENT_KEY,
    PRESENT_VALUE,
)
from nima.spec import ModelSpec

# The decoder graph's tensor names as onnxruntime-genai's config (and Nima's manifest) lists them.
DECODER_IO = {
    "inputs": {
        "input_ids": INPUT_IDS,
        "attention_mask": ATTENTION_MASK,
        "position_ids": POSITION_IDS,
        "past_key_names": PAST_KEY,
        "past_value_names": PAST_VALUE,
    },
    "outputs": {"logits": LOGITS, "present_key_names": PRESENT_KEY, "present_value_names": PRESENT_VALUE},
}


def genai_config(
    spec: ModelSpec,
    filename: str,
    eos_token_id: int,
    bos_token_id: int,
    pad_token_id: int,
    share_buffer: bool = False,
) -> dict:
    """The config dict; token ids come from the tokenizer (or 0 when there is none).

    ``share_buffer``: the graph runs with one preallocated cache buffer as both past and present
    (``ort`` target graphs of plain attention), so onnxruntime-genai appends in place instead of
    copying the whole cache every step.
    """
    gen = spec.generation
    eos = gen.eos_token_ids or [eos_token_id]
    search: dict[str, Any] = {
        "do_sample": gen.do_sample,
        "early_stopping": gen.early_stopping is True,  # genai's is a boolean; "never" is false there
        "length_penalty": gen.length_penalty,
        "max_length": spec.max_seq_len,
        "min_length": 0,
        "no_repeat_ngram_size": gen.no_repeat_ngram_size,
        "num_beams": gen.num_beams,
        "num_return_sequences": gen.num_return_sequences,
        "past_present_share_buffer": share_buffer,
        "repetition_penalty": gen.repetition_penalty,
        "temperature": gen.temperature if gen.temperature > 0 else 1.0,
        "top_k": gen.top_k if gen.top_k > 0 else 50,
        "top_p": gen.top_p,
    }
    return {
        "model": {
            "bos_token_id": bos_token_id,
            "context_length": spec.max_seq_len,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename,
                "head_size": spec.head_dim,
                "hidden_size": spec.d_model,
                **DECODER_IO,
                "num_attention_heads": spec.attention.n_heads,
                "num_hidden_layers": spec.n_layers,
                "num_key_value_heads": spec.n_kv_heads,
            },
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": pad_token_id,
            "type": "decoder",
            "vocab_size": spec.vocab_size,
        },
        "search": search,
    }
