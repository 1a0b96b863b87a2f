"""Source/target pairs for encoder-decoder training: read a TSV or JSONL file, split, tokenize, pack.

``--data`` for an encoder-decoder spec is one file of pairs:

- ``.tsv``: ``source<TAB>target`` per line (exactly one tab);
- ``.jsonl``: ``{"source": "...", "target": "..."}`` per line.

Blank lines are skipped; any other line that does not parse is an error naming its line
number. The validation split is the last ``val_fraction`` of the pairs (rounded, at least
one), so a file whose tail is a chosen held-out set keeps it exactly.

One tokenizer is trained on both sides (the kinds of the decoder-only path), with three
special tokens added: ``<pad>``, ``<s>`` (the decoder start token) and ``</s>`` (the end of a
target). A run that fine-tunes a model folder (`nima.train.start`) encodes with the folder's
tokenizer instead — sources with its own special tokens, as the model was trained (T5's and
BART's append ``</s>``) — and takes the ids from the spec where it names them (an imported
model's ``generation`` section). Each split is packed as two ragged arrays (flat ids + row offsets) per side in
``data/``, memory-mapped afterwards like the decoder-only corpus.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nima.layout import DATA_DIR, TokenIds, write_atomic, write_json
from nima.spec import ModelSpec
from nima.train.batches import Batch
from nima.train.data import META_FILE, SPLITS, Source, token_dtype
from nima.train.errors import TrainError
from nima.train.pair_batches import Ragged, RandomPairs, collate, eval_rows
from nima.train.tokenizer import TextTokenizer

PAIR_SUFFIXES = (".tsv", ".jsonl")
PAD, START, END = "<pad>", "<s>", "</s>"
SPECIALS = (PAD, START, END)
SIDES = ("source", "target")


def token_ids(tokenizer: TextTokenizer) -> TokenIds:
    """The ids of `SPECIALS` in a tokenizer trained with them: padding, decoder start, end of target."""
    pad, start, end = (tokenizer.tokenizer.token_to_id(name) for name in SPECIALS)
    return TokenIds(eos=end, pad=pad, decoder_start=start)


def start_ids(spec: ModelSpec, tokenizer: TextTokenizer) -> TokenIds | None:
    """The padding, decoder start and end ids a run fine-tuning a model folder trains with: the spec's
    ``generation`` ids where it names all three (an imported model), else the tokenizer's `SPECIALS` (a
    folder `nima train` wrote); None when neither has them."""
    gen = spec.generation
    if gen.decoder_start_token_id is not None and gen.pad_token_id is not None and gen.eos_token_ids:
        return TokenIds(eos=gen.eos_token_ids[0], pad=gen.pad_token_id, decoder_start=gen.decoder_start_token_id)
    ids = token_ids(tokenizer)
    return None if None in (ids.eos, ids.pad, ids.decoder_start) else ids


def is_pair_file(path: Path) -> bool:
    return path.suffix.lower() in PAIR_SUFFIXES


def _parse(line: str, kind: str) -> tuple[str, str] | str:
    """(source, target) of one line, or the reason it is malformed."""
    if kind == ".tsv":
        fields = line.split("\t")
        if len(fields) != 2:
            return f"expected source<TAB>target (found {len(fields) - 1} tabs)"
        source, target = fields
    else:
        try:
            record = json.loads(line)
        except ValueError as err:
            return f"not JSON ({err})"
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in SIDES):
            return 'expected an object {"source": "...", "target": "..."} with string values'
        source, target = record["source"], record["target"]
    if not source.strip() or not target.strip():
        return "empty source or target"
    return source, target


def read_pairs(path: Path) -> tuple[list[tuple[str, str]], Source]:
    """The pairs of a ``.tsv`` or ``.jsonl`` file, in file order; bad input is a `TrainError` naming the line."""
    if not path.exists():
        raise TrainError(f"{path}: data not found (pass a .tsv or .jsonl file of source/target pairs)")
    if not path.is_file() or not is_pair_file(path):
        raise TrainError(f"{path}: an encoder-decoder trains on pairs: pass a .tsv or .jsonl file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TrainError(f"{path}: data is not UTF-8 text (bad byte at offset {err.start})") from None
    except OSError as err:
        raise TrainError(f"{path}: cannot read data ({err.strerror or err})") from None
    kind = path.suffix.lower()
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        parsed = _parse(line, kind)
        if isinstance(parsed, str):
            raise TrainError(f"{path}:{number}: {parsed}")
        pairs.append(parsed)
    if len(pairs) < 2:
        raise TrainError(f"{path}: needs at least 2 pairs (one for training, one for validation), found {len(pairs)}")
    return pairs, Source(str(path), [(path.name, path.stat().st_size)])


def split_pairs(pairs: list[tuple[str, str]], val_fraction: float) -> dict[str, list[tuple[str, str]]]:
    """The head (training) and the last ``round(n * val_fraction)`` pairs (validation, at least one)."""
    n_val = min(max(1, round(len(pairs) * val_fraction)), len(pairs) - 1)
    return {"train": pairs[:-n_val], "val": pairs[-n_val:]}


def tokenizer_text(pairs: list[tuple[str, str]]) -> str:
    """Both sides of every pair, one per line: what the shared tokenizer is trained on."""
    return "".join(f"{source}\n{target}\n" for source, target in pairs)


@dataclass
class PairCorpus:
    """Tokenized pairs per split (``rows[split][side]``), the special ids, and UTF-8 target sizes."""

    rows: dict[str, dict[str, Ragged]]
    special: TokenIds
    target_bytes: dict[str, int]

    def n_pairs(self, split: str) -> int:
        return len(self.rows[split]["source"])

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes per label token; each target's end token stands for its line break."""
        targets = self.rows[split]["target"]
        labels = len(targets.flat) + len(targets)  # + one end token per target
        return (self.target_bytes[split] + len(targets)) / max(labels, 1)

    def sampler(self, seq_len: int, seed: int) -> RandomPairs:
        rows = self.rows["train"]
        return RandomPairs(rows["source"], rows["target"], seq_len, self.special, seed)

    def val_batches(self, seq_len: int, n_rows: int, batch_size: int, rank: int, world: int) -> list[Batch]:
        """This rank's share of ``n_rows`` fixed validation pairs, in batches of ``batch_size``."""
        rows, chosen = self.rows["val"], eval_rows(self.n_pairs("val"), n_rows, rank, world)
        return [
            collate(rows["source"], rows["target"], chosen[i : i + batch_size], seq_len, self.special)
            for i in range(0, len(chosen), batch_size)
        ]

    def summary(self, global_batch: int, seq_len: int) -> str:
        return (
            f"{self.n_pairs('train'):,} train / {self.n_pairs('val'):,} val pairs, "
            f"{global_batch:,} pairs per step (up to {seq_len} tokens a side)"
        )


def encode_pairs(
    tokenizer: TextTokenizer,
    splits: dict[str, list[tuple[str, str]]],
    vocab_size: int,
    special: TokenIds | None = None,
) -> PairCorpus:
    """Tokenize both sides of every split (the Rust tokenizer, batched) into an in-memory corpus. ``special``:
    a model folder's ids (`start_ids`), its sources encoded with the tokenizer's own special tokens; else
    the ids of `SPECIALS` in a tokenizer trained with them."""
    dtype = token_dtype(vocab_size)
    rows: dict[str, dict[str, Ragged]] = {}
    for split, pairs in splits.items():
        rows[split] = {}
        for side, texts in zip(SIDES, zip(*pairs, strict=True), strict=True):
            own = special is not None and side == "source"  # the targets get the start and end ids in `collate`
            encoded = tokenizer.tokenizer.encode_batch(list(texts), add_special_tokens=own)
            rows[split][side] = Ragged.from_rows([e.ids for e in encoded], dtype)
    target_bytes = {split: sum(len(t.encode("utf-8")) for _, t in pairs) for split, pairs in splits.items()}
    return PairCorpus(rows, special or token_ids(tokenizer), target_bytes)


def write_pairs(run_dir: Path, corpus: PairCorpus, kind: str, source: Source) -> None:
    """Write ``data/{split}.{side}.npy`` and ``.offsets.npy``, and ``data/meta.json``, each via a rename."""
    folder = run_dir / DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"format": 1, "kind": "pairs", "tokenizer": kind, "source": source.as_dict()}
    meta["special"] = corpus.special.as_dict()
    for split in SPLITS:
        for side in SIDES:
            ragged = corpus.rows[split][side]
            for name, array in ((f"{split}.{side}", ragged.flat), (f"{split}.{side}.offsets", ragged.offsets)):
                write_atomic(folder / f"{name}.npy", lambda tmp, a=array: np.save(tmp, a, allow_pickle=False))
        meta[split] = {"pairs": corpus.n_pairs(split), "target_bytes": corpus.target_bytes[split]}
    write_json(folder / META_FILE, meta)


def open_pairs(run_dir: Path) -> PairCorpus:
    """Memory-map the packed pairs of a run; anything missing or inconsistent is a `TrainError`."""
    folder = run_dir / DATA_DIR
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        rows = {
            split: {
                side: Ragged(
                    np.load(folder / f"{split}.{side}.npy", mmap_mode="r", allow_pickle=False),
                    np.load(folder / f"{split}.{side}.offsets.npy", allow_pickle=False),
                )
                for side in SIDES
            }
            for split in SPLITS
        }
        special = TokenIds.from_dict(meta["special"])
        target_bytes = {split: int(meta[split]["target_bytes"]) for split in SPLITS}
        consistent = all(
            len(rows[s][side]) == int(meta[s]["pairs"]) and rows[s][side].offsets[-1] == len(rows[s][side].flat)
            for s in SPLITS
            for side in SIDES
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"packed pairs are missing or corrupt ({err})"
        raise TrainError(f"{folder}: {problem}; start a new run with --force") from None
    if not consistent:
        raise TrainError(f"{folder}: packed pairs do not match {META_FILE}; start a new run with --force")
    return PairCorpus(rows, special, target_bytes)
