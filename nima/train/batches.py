"""Batches of contiguous token windows: random ones for training, evenly spaced ones for evaluation.

Training draws the offsets of the whole *global* batch (every micro-batch of every rank) from
one `torch.Generator` seeded by ``training.seed``, and each rank keeps its slice. So the
sequence of global batches depends only on the seed, not on the number of processes or on
how a batch is split into micro-batches: one process with ``grad_accum 2`` sees exactly the
data of two processes with ``grad_accum 1``. The generator state (a uint8 tensor) is all a
checkpoint needs to resume the data order.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

Batch = dict[str, torch.Tensor]  # "input_ids", "labels": (B, T) int64 (seq2seq batches add masks and decoder inputs)
IGNORE_INDEX = -100  # a label the loss skips (target padding)


class Sampler(Protocol):
    """Draws each step's training batches from one seeded generator whose state a checkpoint keeps."""

    def step_batches(self, batch_size: int, grad_accum: int, rank: int, world: int) -> list[Batch]: ...

    def state(self) -> torch.Tensor: ...

    def load_state(self, state: torch.Tensor) -> None: ...


def label_count(batch: Batch) -> int:
    """Labels the loss counts: every one for text windows, the real target tokens for pairs."""
    return int((batch["labels"] != IGNORE_INDEX).sum())


def windows(tokens: np.ndarray, offsets: torch.Tensor, seq_len: int) -> Batch:
    """Inputs and next-token labels for windows starting at ``offsets`` (B,)."""
    rows = np.stack([tokens[o : o + seq_len + 1] for o in offsets.tolist()]).astype(np.int64)  # (B, T+1)
    x = torch.from_numpy(rows)
    return {"input_ids": x[:, :-1], "labels": x[:, 1:]}  # (B, T) each


class RandomWindows:
    """nanoGPT-style sampling: each window starts at a uniformly random offset of the training tokens."""

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        self.generator = torch.Generator().manual_seed(seed)

    def step_batches(self, batch_size: int, grad_accum: int, rank: int, world: int) -> list[Batch]:
        """This rank's ``grad_accum`` micro-batches of the next global batch (one generator draw per step)."""
        n_starts = len(self.tokens) - self.seq_len  # a window needs seq_len + 1 tokens
        offsets = torch.randint(n_starts, (grad_accum * world, batch_size), generator=self.generator)  # (A*W, B)
        return [windows(self.tokens, offsets[m * world + rank], self.seq_len) for m in range(grad_accum)]

    def state(self) -> torch.Tensor:
        return self.generator.get_state()  # uint8

    def load_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def eval_batches(
    tokens: np.ndarray, seq_len: int, n_windows: int, batch_size: int, rank: int, world: int
) -> list[Batch]:
    """This rank's share of ``n_windows`` evenly spaced validation windows, in batches of ``batch_size``.

    Fixed windows make successive evaluations comparable (no sampling noise between them) and
    make the validation loss independent of the number of processes; they never touch the
    training generator, so evaluating does not change the training data order.
    """
    last_start = len(tokens) - seq_len - 1
    offsets = torch.linspace(0, last_start, n_windows).round().long()[rank::world]  # (n / W,)
    return [windows(tokens, chunk, seq_len) for chunk in offsets.split(batch_size)]
