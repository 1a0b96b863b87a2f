"""The running decode batch of a server: rows are prefilled alone, join between steps, and leave when done.

Every row of the batch feeds one token per step. A new row's prompt is prefilled on its own (batch
1, exactly as `nima.runtime.Generator` prefills one prompt), then its cache is merged into the
batch's: the rows share one cache index space, each right-aligned at the newest index and padded
with masked zeros on the left (`nima.serve.cache_shift`). Rows that finish or are cancelled leave
through `DecoderSession.select`; columns that no remaining row uses are trimmed when they are half
the cache, or when the next step would pass the context. A row's span (its prompt and tokens) never
exceeds the context, so after a trim the batch fits again.

Encoder-decoder rows carry their encoder outputs (``fixed``: the source mask and cross-attention
keys/values); joining pads them to the longest source with masked zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nima.layout import ENCODER_ATTENTION_MASK
from nima.runtime.session import DecoderSession, KVCache
from nima.serve.cache_shift import place_rows


@dataclass
class Prefilled:
    """A prompt run alone: its last position's logits (V,), its batch-1 cache and the tokens it holds."""

    logits: np.ndarray
    cache: KVCache
    length: int


class RunningBatch:
    """The rows decoding together; see the module docstring. Row order is join order."""

    def __init__(self, session: DecoderSession, context: int, angles: np.ndarray | None) -> None:
        self.session = session
        self.context = context
        self.angles = angles  # per-index key rotation (`nima.serve.cache_shift.key_angles`), or None
        self.cache: KVCache | None = None
        self.mask = np.zeros((0, 0), dtype=np.int64)  # (B, L) 1 where a row has a real token
        self.positions = np.zeros(0, dtype=np.int64)  # (B,) the position of each row's next token

    @property
    def size(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def prefill(self, start: list[int], fixed: dict[str, object] | None = None) -> Prefilled:
        """Run one row's starting tokens alone (its encoder outputs ``fixed`` for an encoder-decoder)."""
        ids = np.array([start], dtype=np.int64)  # (1, T)
        mask = np.ones_like(ids)
        positions = np.arange(len(start), dtype=np.int64)[None]  # (1, T)
        cache = self.session.empty_cache(1, fixed, len(start) + 1)  # type: ignore[arg-type]
        logits, cache = self.session.step(ids, mask, positions, cache)  # (1, V)
        return Prefilled(np.array(logits[0]), cache, len(start))

    def join(self, newcomers: list[tuple[Prefilled, int]]) -> None:
        """Add rows: each a prefilled prompt and how many rows it becomes (``n`` completions share a prefill)."""
        session = self.session
        groups = []
        if self.cache is not None:
            groups.append((session.cache_arrays(self.cache), self.length, self._fixed(self.cache)))
        masks = [self.mask] if self.cache is not None else []
        positions = [self.positions]
        for prefilled, copies in newcomers:
            rows = np.zeros(copies, dtype=np.int64)
            arrays = [np.repeat(a, copies, axis=0) for a in session.cache_arrays(prefilled.cache)]
            fixed = {name: np.repeat(v, copies, axis=0) for name, v in self._fixed(prefilled.cache).items()}
            groups.append((arrays, prefilled.length, fixed))
            masks.append(np.ones((copies, prefilled.length), dtype=np.int64))
            positions.append(rows + prefilled.length)
        total = max(length for _, length, _ in groups)
        shifts = np.concatenate([np.full(len(m), total - m.shape[1], dtype=np.int64) for m in masks])
        mask = np.zeros((len(shifts), total), dtype=np.int64)
        start = 0
        for m in masks:
            mask[start : start + len(m), total - m.shape[1] :] = m
            start += len(m)
        self._rebuild(groups, total, shifts)
        self.mask = mask
        self.positions = np.concatenate(positions)

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed each row's newest token (B,); the next logits (B, V), valid until the next call."""
        if self.cache is None:
            raise RuntimeError("step on an empty batch")
        if self.length + 1 > self.context:
            self._trim(force=True)
        self.mask = np.concatenate((self.mask, np.ones((self.size, 1), dtype=np.int64)), axis=1)  # (B, L + 1)
        ids = np.asarray(tokens, dtype=np.int64)[:, None]  # (B, 1)
        logits, self.cache = self.session.step(ids, self.mask, self.positions[:, None], self.cache)
        self.positions = self.positions + 1
        return logits

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (indices into the batch, in order); an empty list empties the batch."""
        if not rows:
            self.cache, self.mask, self.positions = None, np.zeros((0, 0), dtype=np.int64), np.zeros(0, dtype=np.int64)
            return
        if len(rows) == self.size or self.cache is None:
            return
        chosen = np.array(rows, dtype=np.int64)
        self.cache = self.session.select(self.cache, chosen)
        self.mask, self.positions = self.mask[chosen], self.positions[chosen]
        self._trim(force=False)

    # --- helpers ------------------------------------------------------------------------------

    def _trim(self, force: bool) -> None:
        """Drop the leading columns no row uses: when they are half the cache, or (``force``) any."""
        used = np.flatnonzero(self.mask.any(axis=0))
        unused = int(used[0]) if len(used) else self.length
        if unused == 0 or (not force and unused * 2 < self.length):
            return
        assert self.cache is not None
        arrays = [a[:, :, unused:] for a in self.session.cache_arrays(self.cache)]
        shifts = np.full(self.size, -unused, dtype=np.int64)
        self._rebuild([(arrays, self.length - unused, self._fixed(self.cache))], self.length - unused, shifts)
        self.mask = self.mask[:, unused:]

    def _rebuild(
        self, groups: list[tuple[list[np.ndarray], int, dict[str, np.ndarray]]], total: int, shifts: np.ndarray
    ) -> None:
        """The cache of ``groups`` (each: per-tensor arrays, filled length, fixed inputs) right-aligned at ``total``."""
        tensors = len(groups[0][0])
        arrays = [
            place_rows([g[0][i] for g in groups], [g[1] for g in groups], total, shifts, self.angles, key=i % 2 == 0)
            for i in range(tensors)
        ]
        self.cache = self.session.cache_from_arrays(arrays, _merged_fixed([g[2] for g in groups]), self.context)

    @staticmethod
    def _fixed(cache: KVCache) -> dict[str, np.ndarray]:
        return {name: value.numpy() for name, value in cache.fixed}


def _merged_fixed(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-row encoder outputs stacked, sources padded to the longest with masked zeros (axis -1 of the
    source mask, axis 2 of each (B, H_kv, S, hd) cross-attention tensor)."""
    if not parts or not parts[0]:
        return {}
    longest = max(part[ENCODER_ATTENTION_MASK].shape[-1] for part in parts)
    merged = {}
    for name in parts[0]:
        padded = []
        for part in parts:
            value = part[name]
            axis = value.ndim - 1 if name == ENCODER_ATTENTION_MASK else 2
            width = [(0, 0)] * value.ndim
            width[axis] = (0, longest - value.shape[axis])
            padded.append(np.pad(value, width))
        merged[name] = np.concatenate(padded, axis=0)
    return merged
