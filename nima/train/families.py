"""What training does differently per model family: one row per ``spec.architecture``.

A decoder trains on text (next-token windows); an encoder-decoder on source/target pairs
(teacher forcing, plus an exact-match check of greedy outputs at each evaluation). Each row
says what data it takes, how it reads, tokenizes and packs it, how a run folder's packed data
is opened, and the objective: `nima.train.run` calls the row and never branches on the family.
A test holds this table's keys equal to the spec's architectures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nima.spec import ModelSpec
from nima.train.data import Corpus, Source, check_sizes, encode_splits, open_corpus, read_text, split_text, write_corpus
from nima.train.errors import TrainError
from nima.train.objective import Objective, causal_lm_loss, seq2seq_loss
from nima.train.pairs import (
    SPECIALS,
    PairCorpus,
    encode_pairs,
    is_pair_file,
    open_pairs,
    read_pairs,
    split_pairs,
    start_ids,
    tokenizer_text,
    write_pairs,
)
from nima.train.seq2seq_eval import exact_match
from nima.train.tokenizer import TextTokenizer, train_tokenizer


@dataclass
class Tokenized:
    """Data read, checked and tokenized in memory; ``write`` packs it into a run folder."""

    tokenizer: TextTokenizer
    source: Source
    write: Callable[[Path], None]
    record: dict[str, object]  # what run.json says about the data


@dataclass(frozen=True)
class TrainFamily:
    """How one family trains; see the module docstring."""

    data: str  # what --data takes, for messages
    read: Callable[[Path], Source]  # the data's fingerprint, refusing data of the other family
    # read, check and tokenize (with the given tokenizer, or one trained on the data); writes nothing
    tokenize: Callable[[ModelSpec, Path, TextTokenizer | None], Tokenized]
    open: Callable[[Path], Corpus | PairCorpus]  # a run folder's packed data
    objective: Objective
    extra_eval: Callable[..., dict[str, Any]] | None = None  # more figures at each evaluation


def _refuse_pairs(data: Path) -> None:
    """A decoder's data is text: a pair file is an error, not text to train on."""
    if data.is_file() and is_pair_file(data):
        raise TrainError(
            f"{data}: source/target pairs train an encoder-decoder, and this spec has architecture: decoder; "
            "pass a text file or a folder of .txt files"
        )


def _read_text(data: Path) -> Source:
    _refuse_pairs(data)
    return read_text(data)[1]


def _tokenize_text(spec: ModelSpec, data: Path, given: TextTokenizer | None = None) -> Tokenized:
    tr = spec.training
    _refuse_pairs(data)
    text, source = read_text(data)
    tokenizer = given if given is not None else train_tokenizer(tr.tokenizer, text, spec.vocab_size)
    encoded = encode_splits(tokenizer, split_text(text, tr.val_fraction))
    check_sizes(encoded, spec.train_seq_len, tr.batch_size, str(data))
    record = {"tokens": {name: len(ids) for name, ids in encoded.ids.items()}}
    return Tokenized(
        tokenizer, source, lambda run_dir: write_corpus(run_dir, encoded, spec.vocab_size, tr.tokenizer, source), record
    )


def _tokenize_pairs(spec: ModelSpec, data: Path, given: TextTokenizer | None = None) -> Tokenized:
    """Pairs get a tokenizer trained with the specials, or ``given`` (a model folder's, `nima.train.start`) with
    the folder's special ids (`start_ids`, which `check_start` made sure exist)."""
    tr = spec.training
    pairs, source = read_pairs(data)
    if given is None:
        tokenizer, special = train_tokenizer(tr.tokenizer, tokenizer_text(pairs), spec.vocab_size, SPECIALS), None
    else:
        tokenizer, special = given, start_ids(spec, given)
        if special is None:
            raise TrainError("the model folder's tokenizer has no padding, start and end tokens")
    corpus = encode_pairs(tokenizer, split_pairs(pairs, tr.val_fraction), spec.vocab_size, special)
    record = {
        "pairs": {split: corpus.n_pairs(split) for split in ("train", "val")},
        "seq2seq": corpus.special.as_dict(),  # the special ids the export writes into the bundle
    }
    return Tokenized(tokenizer, source, lambda run_dir: write_pairs(run_dir, corpus, tr.tokenizer, source), record)


FAMILIES: dict[str, TrainFamily] = {
    "decoder": TrainFamily(
        data="a text file or a folder of .txt files",
        read=_read_text,
        tokenize=_tokenize_text,
        open=open_corpus,
        objective=causal_lm_loss,
    ),
    "encoder-decoder": TrainFamily(
        data="a .tsv or .jsonl file of pairs",
        read=lambda data: read_pairs(data)[1],
        tokenize=_tokenize_pairs,
        open=open_pairs,
        objective=seq2seq_loss,
        extra_eval=exact_match,
    ),
}
