"""Greedy and sampled decoding of a batch of rows, one token per row per step.

Prompts of different lengths are left-padded into one prefill; afterwards every step feeds one
token per running row. A row that finishes leaves the batch (its cache rows are dropped), so the
remaining rows stop paying for it. The loop yields after each step, which is what streaming needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from nima.runtime.grammar import RowGrammar
from nima.runtime.rows import (
    Limits,
    Row,
    draws,
    left_pad,
    presence,
    process_scores,
    row_draws,
    sample_tokens,
    scores_changed,
)
from nima.runtime.session import DecoderSession, RowStepper, Value
from nima.spec.generation import GenerationSpec


def decode_rows(
    session: DecoderSession,
    rows: list[Row],
    options: GenerationSpec,
    limits: Limits,
    rngs: list[np.random.Generator],
    pad_id: int,
    greedy: bool,
    fixed: dict[str, Value] | None = None,
    grammars: list[RowGrammar] | None = None,
) -> Iterator[list[tuple[int, int]]]:
    """Extend every row until it finishes; yield the (row index, token) pairs added at each step.

    ``rngs``: each row's random stream (`nima.runtime.rows.row_rngs`; unused when greedy).
    ``fixed``: per-row inputs fed at every step (an encoder-decoder's source mask and cross K/V).
    ``grammars``: each row's place in the schema it follows (`nima.runtime.grammar`), if any."""
    ids, mask, positions = left_pad([row.prompt for row in rows], pad_id)
    capacity = limits.capacity([len(row.prompt) for row in rows])
    # The mask of every position the generation can reach, filled with ones ahead: each step's
    # mask is a prefix of it (for one row, a view: no copy per step).
    masks = np.ones((len(rows), capacity), dtype=np.int64)  # (B, capacity)
    masks[:, : mask.shape[1]] = mask
    length = mask.shape[1]
    active = list(range(len(rows)))  # batch position -> index into rows
    running = list(rows)
    streams = list(rngs)  # the running rows' random streams
    places = list(grammars) if grammars else None  # the running rows' grammars
    cache = session.empty_cache(len(rows), fixed, capacity)
    penalise = options.repetition_penalty != 1.0
    seen = None
    prefilled = False
    while active:
        if prefilled and len(active) == 1:  # one row left: the same steps with less work each
            stepper = session.row_stepper(cache)
            token, position = int(ids[0, 0]), int(positions[0, 0])
            place = places[0] if places else None
            yield from _decode_row(
                stepper,
                running[0],
                active[0],
                token,
                position,
                masks,
                length,
                options,
                limits,
                streams[0],
                greedy,
                place,
            )
            return
        prefilled = True
        logits, cache = session.step(ids, masks[:, :length], positions, cache)  # (A, V)
        if places:
            for b, place in enumerate(places):
                place.forbid(logits[b])
        if penalise:
            seen = presence([row.history for row in running], logits.shape[-1])
        process_scores(logits, running, seen, options, limits.eos_ids)
        chosen = (
            logits.argmax(axis=-1) if greedy else sample_tokens(logits, options, row_draws(streams), limits.eos_ids)
        )
        finished = False
        for row, token in zip(running, chosen.tolist(), strict=True):
            row.tokens.append(token)
            row.finish_reason = limits.finish_reason(row)
            finished = finished or row.finish_reason is not None
        if places:
            for place, token in zip(places, chosen.tolist(), strict=True):
                place.take(token)
        yield [(i, row.tokens[-1]) for i, row in zip(active, running, strict=True)]
        if finished:
            keep = [n for n, row in enumerate(running) if row.finish_reason is None]
            active, running, streams = [active[n] for n in keep], [running[n] for n in keep], [streams[n] for n in keep]
            places = [places[n] for n in keep] if places else None
            chosen, masks, positions = chosen[keep], masks[keep], positions[keep]
            if active:
                cache = session.select(cache, np.array(keep, dtype=np.int64))
        ids = chosen[:, None]  # (A, 1); the session converts it to int64 where it is not
        positions = positions[:, -1:] + 1
        length += 1


def _decode_row(
    stepper: RowStepper,
    row: Row,
    index: int,
    token: int,
    position: int,
    masks: np.ndarray,  # (1, capacity)
    length: int,
    options: GenerationSpec,
    limits: Limits,
    rng: np.random.Generator,
    greedy: bool,
    place: RowGrammar | None = None,
) -> Iterator[list[tuple[int, int]]]:
    """`decode_rows` for its last row after the prefill: feed ``token`` at ``position`` (the mask
    ``length`` long), choose the next token, until the row finishes.

    The same processors, choice and random draws as the batch loop, so a row gives the same tokens
    either way; only the bookkeeping a batch needs is left out. Streaming one prompt, the most
    common call, runs here for all but its first step."""
    penalise = options.repetition_penalty != 1.0
    score = scores_changed(options)
    while True:
        logits = stepper(token, position, masks[:, :length])  # (V,)
        if place is not None:
            place.forbid(logits)
        if score:
            seen = presence([row.history], logits.shape[-1]) if penalise else None
            process_scores(logits[None], [row], seen, options, limits.eos_ids)  # in place, through a (1, V) view
        token = (
            int(logits.argmax()) if greedy else int(sample_tokens(logits[None], options, draws(rng), limits.eos_ids)[0])
        )
        row.tokens.append(token)
        row.finish_reason = limits.finish_reason(row)
        if place is not None:
            place.take(token)
        yield [(index, token)]
        if row.finish_reason is not None:
            return
        position += 1
        length += 1
