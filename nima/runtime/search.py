"""Greedy and sampled decoding of a batch of rows, one token per row per step.

Prompts of different lengths are left-padded into one prefill; afterwards every step feeds one
token per running row. A row that finishes leaves the batch (its cache rows are dropped), so the
remaining rows stop paying for it. The loop yields after each step, which is what streaming needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nima.runtime.processors import sample
from nima.runtime.rows import Limits, Row, left_pad, presence, process_scores, warp
from nima.runtime.session import DecoderSession, Value
from nima.spec.sections import GenerationSpec


def decode_rows(
    session: DecoderSession,
    rows: list[Row],
    options: GenerationSpec,
    limits: Limits,
    rng: np.random.Generator,
    pad_id: int,
    greedy: bool,
    fixed: dict[str, Value] | None = None,
) -> Iterator[list[tuple[int, int]]]:
    """Extend every row until it finishes; yield the (row index, token) pairs added at each step.

    ``fixed``: per-row inputs fed at every step (an encoder-decoder's source mask and cross K/V)."""
    ids, mask, positions = left_pad([row.prompt for row in rows], pad_id)
    active = np.arange(len(rows))  # batch position -> index into rows
    cache = session.empty_cache(len(rows), fixed, limits.capacity(ids.shape[1]))
    penalise = options.repetition_penalty != 1.0
    seen = None
    while len(active):
        logits, cache = session.step(ids, mask, positions, cache)  # (A, V)
        running = [rows[i] for i in active]
        if penalise:
            seen = presence([row.history for row in running], logits.shape[-1])
        process_scores(logits, running, seen, options, limits.eos_ids)
        chosen = logits.argmax(axis=-1) if greedy else sample(warp(logits, options), rng)  # (A,)
        for row, token in zip(running, chosen.tolist(), strict=True):
            row.tokens.append(token)
            row.finish_reason = limits.finish_reason(row)
        added = [(int(i), row.tokens[-1]) for i, row in zip(active, running, strict=True)]
        yield added
        keep = np.array([row.finish_reason is None for row in running])
        if not keep.all():
            active, chosen, mask, positions = active[keep], chosen[keep], mask[keep], positions[keep]
            if len(active):
                cache = session.select(cache, np.flatnonzero(keep))
        ids = chosen[:, None].astype(np.int64)  # (A, 1)
        positions = positions[:, -1:] + 1
        mask = np.concatenate([mask, np.ones((len(active), 1), dtype=np.int64)], axis=1)
