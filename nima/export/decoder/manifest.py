"""What a decoder bundle says about itself besides its graph: the manifest's sections
(`nima.manifest`), the special token ids (the tokenizer's), and ``genai_config.json`` for
onnxruntime-genai (`nima.export.decoder.genai`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nima.export.decoder.genai import DECODER_IO, genai_config
from nima.layout import (
    GENAI_CONFIG_FILE,
    MODEL_FILE,
    TokenIds,
)
from nima.spec import ModelSpec


def token_ids(folder: Path | None, tokenizer: Path | None) -> TokenIds:
    """The tokenizer's end, start and padding tokens (`TokenIds.from_tokenizer`); none without one."""
    if tokenizer is None:
        return TokenIds()
    from tokenizers import Tokenizer

    return TokenIds.from_tokenizer(Tokenizer.from_file(str(tokenizer)))


def io(spec: ModelSpec) -> dict[str, Any]:
    """The manifest's sections: the graph's tensor names and layers, and the sizes a loop needs."""
    return {
        "decoder": {
            **DECODER_IO,
            "num_hidden_layers": spec.n_layers,
        },
        "num_attention_heads": spec.attention.n_heads,
        "num_key_value_heads": spec.n_kv_heads,
        "head_size": spec.head_dim,
        "hidden_size": spec.d_model,
        "vocab_size": spec.vocab_size,
        "context_length": spec.max_seq_len,
    }


def extra_files(spec: ModelSpec, ids: TokenIds, share_buffer: bool) -> dict[str, Any]:
    """``genai_config.json``; ids the tokenizer lacks are 0 (end), else the end token (start, padding)."""
    eos = 0 if ids.eos is None else ids.eos
    bos = eos if ids.bos is None else ids.bos
    pad = eos if ids.pad is None else ids.pad
    config = genai_config(
        spec, MODEL_FILE, eos_token_id=eos, bos_token_id=bos, pad_token_id=pad, share_buffer=share_buffer
    )
    return {GENAI_CONFIG_FILE: config}
