"""Training text: read a file or a folder of .txt files, split off validation, pack token ids.

The ids are packed once into ``data/train.npy`` and ``data/val.npy`` in the run folder (uint16
while the vocabulary fits, else uint32) and memory-mapped afterwards, so a resumed or
distributed run never re-tokenizes and the data set need not fit in RAM twice. ``.npy`` files
carry their own dtype and length and load with ``allow_pickle=False``.

The validation split is the tail ``val_fraction`` of the text (as in nanoGPT), cut before
tokenizing, so no token straddles the cut and bits per byte can use the split's exact size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nima.layout import DATA_DIR, write_atomic, write_json
from nima.train.batches import Batch, RandomWindows, eval_batches
from nima.train.errors import TrainError
from nima.train.tokenizer import TextTokenizer

META_FILE = "meta.json"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Source:
    """The text ``--data`` named: the files in reading order with their sizes (a fingerprint for resume)."""

    path: str
    files: list[tuple[str, int]]

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "files": [list(f) for f in self.files]}


def read_text(path: Path) -> tuple[str, Source]:
    """All text under ``path`` (a file, or the .txt files of a folder in sorted order), one newline apart."""
    if not path.exists():
        raise TrainError(f"{path}: data not found (pass a text file or a folder of .txt files)")
    if path.is_dir():
        found = sorted(path.rglob("*.txt"))
        broken = [p for p in found if p.is_symlink() and not p.exists()]
        if broken:  # skipping it would train on less text than the folder claims to hold
            raise TrainError(f"{broken[0]}: a link to a file that does not exist")
        files = [p for p in found if p.is_file()]  # a folder named *.txt is searched, not read
        if not files:
            raise TrainError(f"{path}: data folder holds no .txt files")
    elif not path.is_file():  # a FIFO would block the read, /dev/zero never end it
        raise TrainError(f"{path}: data is not a regular file (pass a text file or a folder of .txt files)")
    else:
        files = [path]
    texts: list[str] = []
    for file in files:
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise TrainError(f"{file}: data is not UTF-8 text (bad byte at offset {err.start})") from None
        except OSError as err:
            raise TrainError(f"{file}: cannot read data ({err.strerror or err})") from None
    # Separate files by a newline unless one already ends with it; a single file is used as is.
    text = "".join(t if t.endswith("\n") else t + "\n" for t in texts[:-1]) + texts[-1]
    if not text.strip():
        raise TrainError(f"{path}: data is empty")
    names = [(str(f.relative_to(path)) if path.is_dir() else f.name, f.stat().st_size) for f in files]
    return text, Source(str(path), names)


def split_text(text: str, val_fraction: float) -> dict[str, str]:
    """The head (training) and the tail ``val_fraction`` (validation) of ``text``, cut by characters."""
    cut = int(len(text) * (1.0 - val_fraction))
    return {"train": text[:cut], "val": text[cut:]}


@dataclass
class Encoded:
    """Token ids and UTF-8 size of each split, in memory, before anything is written."""

    ids: dict[str, np.ndarray]  # split -> (N,) int64
    n_bytes: dict[str, int]


def encode_splits(tokenizer: TextTokenizer, splits: dict[str, str]) -> Encoded:
    return Encoded(
        ids={name: tokenizer.encode(text) for name, text in splits.items()},
        n_bytes={name: len(text.encode("utf-8")) for name, text in splits.items()},
    )


def check_sizes(encoded: Encoded, seq_len: int, batch_size: int, source: str) -> None:
    """A training split shorter than one batch, or a validation split shorter than one window, is an error."""
    n_train, n_val = len(encoded.ids["train"]), len(encoded.ids["val"])
    need = batch_size * seq_len + 1
    if n_train < need:
        raise TrainError(
            f"{source}: data has {n_train:,} training tokens, fewer than one batch (training.batch_size "
            f"{batch_size} x seq_len {seq_len} + 1 = {need:,}); use more data or a smaller batch_size / seq_len"
        )
    if n_val < seq_len + 1:
        raise TrainError(
            f"{source}: the validation split has {n_val:,} tokens, fewer than one window of seq_len + 1 = "
            f"{seq_len + 1}; raise training.val_fraction or use more data"
        )


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def write_corpus(run_dir: Path, encoded: Encoded, vocab_size: int, kind: str, source: Source) -> None:
    """Write ``data/{train,val}.npy`` and ``data/meta.json``, each via a temporary file and a rename."""
    folder = run_dir / DATA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    meta: dict[str, Any] = {"format": 1, "tokenizer": kind, "dtype": dtype.name, "source": source.as_dict()}
    for name in SPLITS:
        ids = encoded.ids[name]
        write_atomic(folder / f"{name}.npy", lambda tmp, ids=ids: np.save(tmp, ids.astype(dtype), allow_pickle=False))
        meta[name] = {"tokens": len(ids), "bytes": encoded.n_bytes[name]}
    write_json(folder / META_FILE, meta)


@dataclass
class Corpus:
    """The packed splits, memory-mapped, and the figures evaluation needs."""

    tokens: dict[str, np.ndarray]  # split -> (N,) uint16/uint32, memory-mapped
    n_bytes: dict[str, int]
    meta: dict[str, Any]

    def bytes_per_token(self, split: str) -> float:
        return self.n_bytes[split] / max(len(self.tokens[split]), 1)

    def sampler(self, seq_len: int, seed: int) -> RandomWindows:
        return RandomWindows(self.tokens["train"], seq_len, seed)

    def val_batches(self, seq_len: int, n_rows: int, batch_size: int, rank: int, world: int) -> list[Batch]:
        """This rank's share of ``n_rows`` fixed validation windows, in batches of ``batch_size``."""
        return eval_batches(self.tokens["val"], seq_len, n_rows, batch_size, rank, world)

    def summary(self, global_batch: int, seq_len: int) -> str:
        return (
            f"{len(self.tokens['train']):,} train / {len(self.tokens['val']):,} val tokens, "
            f"{global_batch * seq_len:,} tokens per step"
        )


def open_corpus(run_dir: Path) -> Corpus:
    """Memory-map the packed splits of a run; anything missing or inconsistent is a `TrainError`."""
    folder = run_dir / DATA_DIR
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        tokens = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in SPLITS}
        n_bytes = {name: int(meta[name]["bytes"]) for name in SPLITS}
        consistent = all(len(tokens[n]) == int(meta[n]["tokens"]) and tokens[n].ndim == 1 for n in SPLITS)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TrainError(f"{folder}: packed data is missing or corrupt ({err}); start a new run with --force") from None
    if not consistent:
        raise TrainError(f"{folder}: packed data does not match {META_FILE}; start a new run with --force")
    return Corpus(tokens, n_bytes, meta)
