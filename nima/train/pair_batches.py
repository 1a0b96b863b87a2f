"""Batches of source/target pairs: padding on both sides, teacher forcing, random and fixed row choices.

A pair becomes (right padding, ``L`` = the training seq_len)::

    input_ids           source[:L]                       + <pad>...   attention_mask 1...1 0...0
    decoder_input_ids   (<s> + target)[:L]               + <pad>...   decoder_attention_mask
    labels              (target + </s>)[:L]              + -100...    (ignored by the loss)

Each micro-batch is padded to its own longest row, not to ``L``. Training rows are drawn like
the decoder-only windows (`nima.train.batches`): the indices of the whole global batch come
from one generator seeded by ``training.seed``, each rank keeps its slice, and the generator
state is all a checkpoint carries.
"""

from __future__ import annotations

import numpy as np
import torch

from nima.layout import TokenIds
from nima.train.batches import IGNORE_INDEX, Batch


class Ragged:
    """Rows of different lengths stored as one flat id array and ``n + 1`` offsets."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray) -> None:
        self.flat = flat  # (N,) uint16/uint32
        self.offsets = offsets  # (n + 1,) int64

    @classmethod
    def from_rows(cls, rows: list[list[int]], dtype: np.dtype) -> Ragged:
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.fromiter((i for r in rows for i in r), dtype=dtype, count=int(offsets[-1]))
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]


def _padded(rows: list[np.ndarray], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows right-padded with ``fill`` to the longest, and the mask of real tokens: (B, T) int64 each."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), fill, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def collate(sources: Ragged, targets: Ragged, rows: list[int], seq_len: int, special: TokenIds) -> Batch:
    """The batch of pairs ``rows`` (see the module docstring for the layout)."""
    src = [np.asarray(sources[i][:seq_len], dtype=np.int64) for i in rows]
    tgt = [np.asarray(targets[i], dtype=np.int64) for i in rows]
    input_ids, attention_mask = _padded(src, special.pad)
    decoder_inputs = [np.concatenate([[special.decoder_start], t])[:seq_len] for t in tgt]
    decoder_input_ids, decoder_mask = _padded(decoder_inputs, special.pad)
    labels, _ = _padded([np.concatenate([t, [special.eos]])[:seq_len] for t in tgt], IGNORE_INDEX)
    return {
        "input_ids": input_ids,  # (B, S)
        "attention_mask": attention_mask,  # (B, S)
        "decoder_input_ids": decoder_input_ids,  # (B, T)
        "decoder_attention_mask": decoder_mask,  # (B, T)
        "labels": labels,  # (B, T), IGNORE_INDEX at padding
    }


class RandomPairs:
    """Uniformly random training pairs, drawn per global batch (see the module docstring)."""

    def __init__(self, sources: Ragged, targets: Ragged, seq_len: int, special: TokenIds, seed: int) -> None:
        self.sources, self.targets = sources, targets
        self.seq_len = seq_len
        self.special = special
        self.generator = torch.Generator().manual_seed(seed)

    def step_batches(self, batch_size: int, grad_accum: int, rank: int, world: int) -> list[Batch]:
        """This rank's ``grad_accum`` micro-batches of the next global batch (one generator draw per step)."""
        rows = torch.randint(len(self.sources), (grad_accum * world, batch_size), generator=self.generator)  # (A*W, B)
        return [
            collate(self.sources, self.targets, rows[m * world + rank].tolist(), self.seq_len, self.special)
            for m in range(grad_accum)
        ]

    def state(self) -> torch.Tensor:
        return self.generator.get_state()  # uint8

    def load_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def eval_rows(n_pairs: int, n_rows: int, rank: int, world: int) -> list[int]:
    """This rank's share of ``n_rows`` evenly spaced validation pairs (all of them if there are fewer).

    Fixed rows make successive evaluations comparable and independent of the number of processes.
    """
    chosen = torch.linspace(0, n_pairs - 1, min(n_rows, n_pairs)).round().long().unique()  # sorted, distinct
    return chosen[rank::world].tolist()
