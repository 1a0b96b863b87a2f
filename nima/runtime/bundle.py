"""Reading an export bundle: the resolved spec, the graph's path and the tokenizer, checked on load."""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass
from pathlib import Path

from tokenizers import Tokenizer

from nima.runtime.errors import GenerateError
from nima.runtime.names import GENAI_CONFIG_FILE, MODEL_FILE, SEQ2SEQ_FILE, SPEC_FILE, TOKENIZER_FILE
from nima.spec import ModelSpec, SpecError, load_spec


@dataclass(frozen=True)
class Bundle:
    """What the runtime needs from a bundle folder."""

    path: Path
    spec: ModelSpec
    model: Path  # the decoder graph
    tokenizer: Tokenizer | None
    encoder: Path | None = None  # encoder-decoders only
    seq2seq: Seq2SeqIds | None = None
    share_buffer: bool = False  # the graph takes one KV buffer as past and present (`SharedBufferSession`)


@dataclass(frozen=True)
class Seq2SeqIds:
    """An encoder-decoder bundle's special ids (from its ``seq2seq.json``)."""

    decoder_start: int
    eos: int
    pad: int


def read_bundle(path: str | Path) -> Bundle:
    """Load ``path`` (a folder written by ``nima export``); `GenerateError` naming the bad file."""
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file, not a bundle folder" if folder.exists() else "no such bundle folder"
        raise GenerateError(f"{folder}: {what}")
    spec_path, model = folder / SPEC_FILE, folder / MODEL_FILE
    if not spec_path.is_file():
        raise GenerateError(f"{folder}: no {SPEC_FILE} here (expected a folder written by nima export)")
    try:
        spec = load_spec(spec_path)
    except SpecError as err:
        raise GenerateError(str(err).splitlines()[0]) from None
    encoder, ids = None, None
    if spec.is_encoder_decoder:
        encoder, model, ids = _read_seq2seq(folder, spec.vocab_size)
    if not model.is_file():
        raise GenerateError(f"{model}: graph file not found")
    tokenizer = None
    tokenizer_path = folder / TOKENIZER_FILE
    if tokenizer_path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as err:  # tokenizers raises a bare Exception for unreadable files
            raise GenerateError(f"{tokenizer_path}: not a readable tokenizer ({err})") from None
    return Bundle(folder, spec, model, tokenizer, encoder, ids, _shares_buffer(folder))


def _shares_buffer(folder: Path) -> bool:
    """Whether the bundle's ``genai_config.json`` marks the graph for a shared past/present buffer.

    The export writes the flag for ``--target ort`` graphs of plain models, the only ones that
    support it; a bundle without the file, or with one that does not parse, uses separate tensors.
    """
    path = folder / GENAI_CONFIG_FILE
    if not path.is_file():
        return False
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        return config["search"].get("past_present_share_buffer") is True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _read_seq2seq(folder: Path, vocab: int) -> tuple[Path, Path, Seq2SeqIds]:
    """The encoder and decoder graph paths and the special ids (each below ``vocab``) from ``seq2seq.json``."""
    path = folder / SEQ2SEQ_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        encoder = folder / config["encoder"]["filename"]
        decoder = folder / config["decoder"]["filename"]
        ids = Seq2SeqIds(
            int(config["decoder_start_token_id"]), int(config["eos_token_id"]), int(config["pad_token_id"])
        )
    except OSError as err:
        raise GenerateError(f"{path}: cannot read it ({err.strerror or err})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise GenerateError(f"{path}: not a valid encoder-decoder bundle description ({err!r})") from None
    if not encoder.is_file():
        raise GenerateError(f"{encoder}: graph file not found")
    for name, value in zip(("decoder_start_token_id", "eos_token_id", "pad_token_id"), astuple(ids), strict=True):
        if not 0 <= value < vocab:
            raise GenerateError(f"{path}: {name} {value} is outside the vocabulary (0..{vocab - 1})")
    return encoder, decoder, ids
