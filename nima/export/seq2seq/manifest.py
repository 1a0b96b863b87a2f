"""What an encoder-decoder bundle says about itself besides its graphs: the manifest's sections
(`nima.manifest`) and the special token ids generation needs.

The ids — the decoder start token, the end token and the padding token — come from the spec's
``generation`` section where it names them (`nima import` writes them from the Hugging Face
config), else the run folder's ``run.json`` (written by `nima train` for pair data), else from a
tokenizer's ``<s>``/``</s>``/``<pad>``, else 0.

There is no ``genai_config.json``: onnxruntime-genai 0.18 knows encoder-decoders only as
``whisper`` (float audio features into the encoder, through its audio processor) and
``marian-ssru`` (a recurrent SSRU decoder, greedy, one beam); neither fits token ids into a
transformer encoder and a self-attention decoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nima.export.extras import Extras
from nima.layout import (
    ATTENTION_MASK,
    CROSS_KEY,
    CROSS_VALUE,
    ENCODER_ATTENTION_MASK,
    ENCODER_HIDDEN,
    INPUT_IDS,
    LOGITS,
    PAST_KEY,
    PAST_VALUE,
    POSITION_IDS,
    PRESENT_KEY,
    PRESENT_VALUE,
    RUN_FILE,
    TokenIds,
)
from nima.spec import ModelSpec

TOKEN_NAMES = {"decoder_start": "<s>", "eos": "</s>", "pad": "<pad>"}  # what `nima train` adds for pair data


def token_ids(spec: ModelSpec, folder: Path | None, tokenizer: Path | None) -> TokenIds:
    """Decoder start, end and padding ids: from the spec's generation section where it names the start and
    padding tokens (an imported model), else the run's record, else the tokenizer's tokens, else 0."""
    gen = spec.generation
    if gen.decoder_start_token_id is not None and gen.pad_token_id is not None and gen.eos_token_ids:
        return TokenIds(eos=gen.eos_token_ids[0], pad=gen.pad_token_id, decoder_start=gen.decoder_start_token_id)
    try:
        record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("seq2seq") if folder else None
        if isinstance(record, dict):
            ids = TokenIds.from_dict(record)
            if None not in (ids.decoder_start, ids.eos, ids.pad):
                return ids
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # no run record (a nima build folder, a spec file): fall back to the tokenizer
    found: dict[str, int | None] = dict.fromkeys(TOKEN_NAMES)
    if tokenizer is not None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer))
        found = {key: tok.token_to_id(name) for key, name in TOKEN_NAMES.items()}
    return TokenIds(**{key: 0 if value is None else value for key, value in found.items()})


def io(spec: ModelSpec) -> dict[str, Any]:
    """The manifest's sections: each graph's tensor names and layers, and the sizes a loop needs."""
    return {
        "encoder": {
            "inputs": {"input_ids": INPUT_IDS, "attention_mask": ATTENTION_MASK},
            "outputs": {"encoder_hidden_states": ENCODER_HIDDEN, "cross_key_names": CROSS_KEY},
            "num_hidden_layers": spec.encoder_layers,
        },
        "decoder": {
            "inputs": {
                "input_ids": INPUT_IDS,
                "attention_mask": ATTENTION_MASK,
                "position_ids": POSITION_IDS,
                "encoder_attention_mask": ENCODER_ATTENTION_MASK,
                "past_key_names": PAST_KEY,
                "past_value_names": PAST_VALUE,
                "cross_key_names": CROSS_KEY,
                "cross_value_names": CROSS_VALUE,
            },
            "outputs": {"logits": LOGITS, "present_key_names": PRESENT_KEY, "present_value_names": PRESENT_VALUE},
            "num_hidden_layers": spec.n_layers,
        },
        "num_key_value_heads": spec.n_kv_heads,
        "head_size": spec.head_dim,
        "hidden_size": spec.d_model,
        "vocab_size": spec.vocab_size,
        "context_length": spec.max_seq_len,  # longest source, and longest decoder input
    }


def extra_files(
    spec: ModelSpec, ids: TokenIds, share_buffer: bool, folder: Path | None, tokenizer: Path | None
) -> Extras:
    """Files for other runtimes: none (see the module docstring)."""
    return Extras()
