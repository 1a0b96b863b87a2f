"""What a decoder bundle says about itself besides its graph: the manifest's sections
(`nima.manifest`), the special token ids (the tokenizer's), and ``genai_config.json`` for
onnxruntime-genai (`nima.export.decoder.genai`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from nima.export.decoder.genai import DECODER_IO, genai_config
from nima.export.extras import Extras
from nima.layout import (
    GENAI_CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_CONFIG_FILE,
    TokenIds,
)
from nima.spec import ModelSpec


def token_ids(spec: ModelSpec, folder: Path | None, tokenizer: Path | None) -> TokenIds:
    """The tokenizer's end, start and padding tokens (`TokenIds.from_tokenizer`); none without one."""
    if tokenizer is None:
        return TokenIds()
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


def extra_files(
    spec: ModelSpec, ids: TokenIds, share_buffer: bool, folder: Path | None, tokenizer: Path | None
) -> Extras:
    """Files for onnxruntime-genai: ``genai_config.json``, and ``tokenizer_config.json`` where its tokenizer
    can read the bundle's; notes for what cannot be written (`genai_end_token`, `genai_tokenizer_config`)."""
    extras = Extras()
    tok = _load_tokenizer(tokenizer)
    eos, note = genai_end_token(spec, ids, tok)
    if note:
        extras.notes.append(f"{GENAI_CONFIG_FILE}{' left out' if eos is None else ''}: {note}")
    if eos is not None:
        bos = eos if ids.bos is None else ids.bos
        pad = eos if ids.pad is None else ids.pad
        extras.files[GENAI_CONFIG_FILE] = genai_config(
            spec, MODEL_FILE, eos_token_id=eos, bos_token_id=bos, pad_token_id=pad, share_buffer=share_buffer
        )
    if tok is not None:
        config, why_not = genai_tokenizer_config(folder, tok)
        if config is None:
            extras.notes.append(f"{TOKENIZER_CONFIG_FILE} left out: {why_not}")
        else:
            extras.files[TOKENIZER_CONFIG_FILE] = config
    return extras


def _load_tokenizer(path: Path | None) -> Tokenizer | None:
    return None if path is None else Tokenizer.from_file(str(path))


def genai_end_token(spec: ModelSpec, ids: TokenIds, tokenizer: Tokenizer | None) -> tuple[int | None, str]:
    """The id onnxruntime-genai stops at (None: no config can be right), and a note when it is a guess.

    onnxruntime-genai needs an end token inside the vocabulary. The spec's ``generation.eos_token_ids``
    come first, then the tokenizer's end token; a tokenizer without one (a character-level one, say)
    gets an id past its vocabulary that the graph has (the model never learned to emit it). Where the
    tokenizer uses every id, any id would stop generation at a real token (id 0 is ``\\n`` in a
    character-level model), so there is none and the note says how to name one. Without a tokenizer
    nothing says which ids are tokens: id 0, as before, and a note."""
    if spec.generation.eos_token_ids:
        return spec.generation.eos_token_ids[0], ""
    if ids.eos is not None:
        return ids.eos, ""
    name_one = "set generation.eos_token_ids in the spec to the id that ends a text"
    if tokenizer is None:
        return 0, f"no tokenizer names an end token, so onnxruntime-genai stops at id 0; {name_one}"
    used = tokenizer.get_vocab_size(with_added_tokens=True)
    if used < spec.vocab_size:
        return used, ""
    return None, (
        f"onnxruntime-genai needs an end token; the tokenizer has none and uses all {spec.vocab_size} ids; {name_one}"
    )


def genai_tokenizer_config(folder: Path | None, tokenizer: Tokenizer) -> tuple[dict[str, Any] | Path | None, str]:
    """What onnxruntime-genai's tokenizer needs beside ``tokenizer.json``, or None and why.

    An imported model's own ``tokenizer_config.json`` is copied. Otherwise onnxruntime-genai reads
    BPE tokenizers (Nima's ``bpe`` and ``byte`` kinds: encodings equal to `tokenizers`', tested)
    with the generic class; it cannot read word-level ones (Nima's ``char`` and ``word`` kinds), and
    a config claiming otherwise would make it encode wrongly, so none is written for them."""
    if folder is not None and (folder / TOKENIZER_CONFIG_FILE).is_file():
        return folder / TOKENIZER_CONFIG_FILE, ""
    kind = json.loads(tokenizer.to_str()).get("model", {}).get("type")
    if kind == "BPE":
        return {"tokenizer_class": "PreTrainedTokenizerFast"}, ""
    return None, (
        f"onnxruntime-genai's tokenizer cannot read a {kind} tokenizer (character- or word-level); "
        "onnxruntime-genai runs this bundle on token ids"
    )
