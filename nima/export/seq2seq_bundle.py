"""The encoder-decoder bundle: ``encoder.onnx``, ``decoder.onnx``, ``nima.json``, ``seq2seq.json``,
``tokenizer.json`` and a model card, verified and written atomically like the decoder-only bundle.

``seq2seq.json`` is the runtime's side of the contract (`seq2seq_contract`): file names, tensor
name patterns, sizes, and the token ids generation needs — the decoder start token, the end
token and the padding token. Those ids come from the run folder's ``run.json`` (written by
`nima train` for pair data), else from a tokenizer's ``<s>``/``</s>``/``<pad>``, else 0.

There is no ``genai_config.json``: onnxruntime-genai 0.18 knows encoder-decoders only as
``whisper`` (float audio features into the encoder, through its audio processor) and
``marian-ssru`` (a recurrent SSRU decoder, greedy, one beam); neither fits token ids into a
transformer encoder and a self-attention decoder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from nima import __version__
from nima.builders.models import EncoderDecoderLM
from nima.builders.weights import SPEC_FILE
from nima.export.bundle import staged_folder
from nima.export.contract import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    PAST_KEY,
    PAST_VALUE,
    POSITION_IDS,
    PRESENT_KEY,
    PRESENT_VALUE,
)
from nima.export.quantize import quantize_in_place
from nima.export.seq2seq_contract import CROSS_KEY, CROSS_VALUE, ENCODER_ATTENTION_MASK, ENCODER_HIDDEN
from nima.export.seq2seq_graph import DECODER_FILE, ENCODER_FILE, export_encoder_decoder
from nima.export.seq2seq_verify import Seq2SeqParity, check_seq2seq_parity
from nima.export.source import TOKENIZER_FILE, ExportSource
from nima.export.verify import session_for
from nima.runtime.names import SEQ2SEQ_FILE
from nima.spec import ModelSpec, figures
from nima.summary import describe, si, size

RUNTIME_FILE = SEQ2SEQ_FILE
CARD_FILE = "README.md"
RUN_FILE = "run.json"  # nima train's record of a run; its "seq2seq" section holds the special ids
ID_KEYS = ("decoder_start_token_id", "eos_token_id", "pad_token_id")


def special_ids(folder: Path | None, tokenizer: Path | None) -> dict[str, int]:
    """Decoder start, end and padding ids: from the run's record, else the tokenizer's tokens, else 0."""
    try:
        record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8")).get("seq2seq") if folder else None
        if isinstance(record, dict):
            return {key: int(record[key]) for key in ID_KEYS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no run record (a nima build folder, a spec file): fall back to the tokenizer
    found: dict[str, int | None] = dict.fromkeys(ID_KEYS)
    if tokenizer is not None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer))
        names = {"decoder_start_token_id": "<s>", "eos_token_id": "</s>", "pad_token_id": "<pad>"}
        found = {key: tok.token_to_id(name) for key, name in names.items()}
    return {key: 0 if value is None else value for key, value in found.items()}


def runtime_config(spec: ModelSpec, ids: dict[str, int]) -> dict[str, Any]:
    """``seq2seq.json``: everything a generation loop reads besides the graphs and the tokenizer."""
    return {
        "format": 1,
        "architecture": spec.architecture,
        "encoder": {
            "filename": ENCODER_FILE,
            "inputs": {"input_ids": INPUT_IDS, "attention_mask": ATTENTION_MASK},
            "outputs": {"encoder_hidden_states": ENCODER_HIDDEN, "cross_key_names": CROSS_KEY},
            "num_hidden_layers": spec.encoder_layers,
        },
        "decoder": {
            "filename": DECODER_FILE,
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
        **ids,
    }


def _card(
    spec: ModelSpec,
    dtype: str,
    quantize: str | None,
    parity: Seq2SeqParity | None,
    has_tokenizer: bool,
    opset: int,
    ids: dict,
) -> str:
    fig = figures(spec)
    rows = [*describe(spec), ("parameters", f"{fig.parameters:,} ({si(fig.parameters)})")]
    rows.append(("KV cache / token", f"{size(fig.kv_cache_bytes_per_token_fp32)} fp32"))
    env = Environment(loader=PackageLoader("nima.export", "templates"), undefined=StrictUndefined, autoescape=False)
    env.keep_trailing_newline = True
    template = env.get_template("seq2seq_card.md.j2")
    values = {"spec": spec, "version": __version__, "dtype": dtype, "quantize": quantize, "rows": rows}
    values |= {"parity": parity, "opset": opset}
    return template.render(**values, has_tokenizer=has_tokenizer, ids=ids)


def export_seq2seq_bundle(
    src: ExportSource,
    folder: Path | None,
    out: Path,
    dtype: str,
    verify: bool,
    opset: int,
    progress: Callable[[str], None],
    quantize: str | None = None,
) -> tuple[Seq2SeqParity | None, list[str]]:
    """Export, verify and write the bundle of ``src`` (an encoder-decoder; ``folder`` the model folder it
    came from, None for a spec file) to ``out``: (parity, file names). A failed check writes nothing.

    ``quantize`` ("int8", "int4"): the MatMul weights of both graphs, as for a decoder-only bundle
    (`nima.export.quantize`); the fp32 graphs are exported first and replaced."""
    from nima.export.command import ParityFailure  # command dispatches here: imported at call time

    model = src.model
    if not isinstance(model, EncoderDecoderLM):
        raise TypeError("export_seq2seq_bundle needs an EncoderDecoderLM")
    ids = special_ids(folder, src.tokenizer)
    with staged_folder(out) as tmp:
        progress(f"exporting {ENCODER_FILE} and {DECODER_FILE} ({dtype})")
        encoder, decoder = export_encoder_decoder(model, src.spec, tmp, dtype=dtype, opset=opset)
        if quantize is not None:
            progress(f"quantizing MatMul weights to {quantize}")
            for graph in (encoder, decoder):
                quantize_in_place(graph, quantize)
        parity = None
        if verify:
            progress("checking ONNX Runtime against PyTorch")
            sessions = session_for(encoder), session_for(decoder)
            parity = check_seq2seq_parity(model, src.spec, *sessions, dtype=dtype, quantize=quantize)
            if not parity.passed:
                raise ParityFailure(parity)
        (tmp / SPEC_FILE).write_text(json.dumps(src.spec.model_dump(mode="json"), indent=2) + "\n")
        (tmp / RUNTIME_FILE).write_text(json.dumps(runtime_config(src.spec, ids), indent=2) + "\n")
        if src.tokenizer is not None:
            shutil.copyfile(src.tokenizer, tmp / TOKENIZER_FILE)
        (tmp / CARD_FILE).write_text(_card(src.spec, dtype, quantize, parity, src.tokenizer is not None, opset, ids))
        files = sorted(p.name for p in tmp.iterdir())
    return parity, files
